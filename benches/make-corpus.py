#!/usr/bin/env python3
"""Deterministic, seeded benchmark corpus for keepsync (python3 stdlib only).

    make-corpus.py [--size 256MiB] [--seed 1] [--kind mixed|random|text] -o PATH

Kinds:
  mixed   blocks of 64 KiB..4 MiB (log-uniform sizes) interleaving, by share of bytes:
            ~25% English-like text       Zipf-distributed vocabulary, punctuation, paragraphs
            ~12% structured logs         timestamps, levels, paths, numbers, request ids
             ~8% JSON lines              nested objects with ids, floats, enums
             ~5% CSV                     ids, dates, names, amounts, coordinates
            ~32% executable-like binary  opcode-like byte patterns, little-endian integer
                                         tables, zero padding, embedded symbol/path strings
            ~18% random bytes            stands in for already-compressed / encrypted data
          zstd -1 lands at ~0.51 of the input, gzip -6 ~0.48, lz4 -1 ~0.65.
  random  incompressible bytes only.
  text    English-like text only.

The same (size, seed, kind) always produces byte-identical output: every choice comes from
one random.Random(seed), and the SHA-256 is printed on stdout at the end. A composition
summary goes to stderr. Generation builds whole blocks with C-level helpers (random.choices,
randbytes, bytes.join, array) rather than per-byte Python loops: 256 MiB takes ~10-15 s.
"""

import argparse
import array
import hashlib
import itertools
import math
import random
import re
import sys
import time

KiB = 1024
MiB = 1024 * KiB

MIN_BLOCK = 64 * KiB
MAX_BLOCK = 4 * MiB

# Share of bytes per kind for --kind mixed (sums to 1).
MIXED_SHARES = {
    "text": 0.25,
    "log": 0.12,
    "jsonl": 0.08,
    "csv": 0.05,
    "binary": 0.32,
    "random": 0.18,
}

COMMON_WORDS = (
    "the of and to a in is that it was for on are as with his they be at one have this from "
    "or had by not word but what some we can out other were all there when up use your how "
    "said an each she which do their time if will way about many then them write would like "
    "so these her long make thing see him two has look more day could go come did number "
    "sound no most people my over know water than call first who may down side been now find"
).split()


def parse_size(text):
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 256MiB, 1G, 1048576)")
    num, unit, _ = m.groups()
    mult = {"": 1, "k": KiB, "m": MiB, "g": 1024 * MiB, "t": 1024 * 1024 * MiB}[unit.lower()]
    return int(float(num) * mult)


def zipf_cum_weights(n, s=1.1, q=2.7):
    """Cumulative Zipf-Mandelbrot weights 1/(rank+q)^s for ranks 1..n."""
    return list(itertools.accumulate(1.0 / (r + q) ** s for r in range(1, n + 1)))


class Corpus:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        rng = self.rng
        # --- English-like vocabulary: real function words first, then pseudo-words ---------
        onsets = "b c d f g h j k l m n p r s t v w y z bl br ch cl cr dr fl fr gl gr pl pr sc sh sk sl sm sn sp st str sw th tr wh".split()
        nuclei = "a e i o u a e i o u ai ea ee ie oa oo ou y".split()
        codas = ["", "", "", "n", "r", "s", "t", "l", "d", "m", "ng", "nd", "st", "ck", "rt", "ll", "ss", "nt", "ght"]
        suffixes = ["", "", "", "", "", "", "s", "ed", "ing", "er", "ly", "tion", "ment", "ness", "able", "al"]
        words = list(COMMON_WORDS)
        seen = set(words)
        while len(words) < 12000:
            nsyl = rng.choices((1, 2, 3, 4), weights=(45, 40, 12, 3))[0]
            w = "".join(rng.choice(onsets) + rng.choice(nuclei) + rng.choice(codas) for _ in range(nsyl))
            w += rng.choice(suffixes)
            if w not in seen:
                seen.add(w)
                words.append(w)
        # Punctuation tokens ride along in the vocabulary so they come out of random.choices.
        self.vocab = words
        self.vocab_cw = zipf_cum_weights(len(words))
        self.text_tokens = [",", ";", "(1)", "--"] + words
        tok_w = [0.045, 0.004, 0.0008, 0.002]
        base_total = self.vocab_cw[-1]
        self.text_tokens_cw = list(
            itertools.accumulate(tok_w + [w * (1.0 - sum(tok_w)) / base_total for w in self._weights(self.vocab_cw)])
        )
        self.capitalized = {}

        # --- identifiers for logs / json / csv -----------------------------------------------
        self.services = ["api", "auth", "billing", "worker", "scheduler", "gateway", "search", "cache", "ingest"]
        self.levels = ["INFO"] * 70 + ["DEBUG"] * 20 + ["WARN"] * 7 + ["ERROR"] * 3
        self.methods = ["GET"] * 6 + ["POST"] * 3 + ["PUT", "DELETE"]
        self.routes = [
            "/api/v1/users/{}", "/api/v1/orders/{}", "/api/v1/items/{}/reviews", "/healthz", "/static/js/app.{}.js",
            "/api/v2/search?q={}", "/login", "/api/v1/carts/{}/checkout", "/metrics", "/api/v1/files/{}/chunks",
        ]
        self.statuses = [200] * 80 + [201] * 5 + [204] * 3 + [304] * 4 + [400, 401, 403, 404, 404, 500, 502, 503]
        self.events = ["page_view", "click", "add_to_cart", "purchase", "search", "login", "logout", "scroll", "share"]
        self.countries = ["US", "DE", "FR", "GB", "JP", "BR", "IN", "CA", "NL", "SE", "ES", "IT", "PL", "AU"]
        self.categories = ["books", "electronics", "garden", "toys", "grocery", "clothing", "sports", "music", "tools"]
        self.first = [w.capitalize() for w in words[120:520]]
        self.last = [w.capitalize() for w in words[520:1520]]
        self.clock = 1_700_000_000.0  # advances through log/json blocks

        # --- executable-like building blocks --------------------------------------------------
        self.idioms, self.idioms_cw = self._make_idioms()

    @staticmethod
    def _weights(cw):
        prev = 0.0
        for c in cw:
            yield c - prev
            prev = c

    def _make_idioms(self):
        """x86-64-like instruction encodings, grouped into Zipf-ranked instruction sequences."""
        rng = self.rng
        regs_modrm = list(range(0xC0, 0x100))
        ops = []
        fixed = [
            b"\x55", b"\x48\x89\xe5", b"\x5d", b"\xc3", b"\x90", b"\x0f\x1f\x44\x00\x00", b"\x0f\x1f\x40\x00",
            b"\x66\x0f\x1f\x44\x00\x00", b"\xcc", b"\x41\x57", b"\x41\x56", b"\x41\x55", b"\x41\x54", b"\x53",
            b"\x41\x5f", b"\x41\x5e", b"\x41\x5d", b"\x41\x5c", b"\x5b", b"\x48\x31\xc0", b"\x31\xc0", b"\x31\xd2",
            b"\xc9", b"\x0f\x0b", b"\x48\x85\xc0", b"\x85\xc0", b"\x74\x05", b"\x75\x0a",
        ]
        ops.extend(fixed)
        # reg-reg moves / alu ops with REX prefixes
        for _ in range(600):
            rex = rng.choice((b"\x48", b"\x49", b"\x4c", b"\x4d", b""))
            op = rng.choice((b"\x89", b"\x8b", b"\x01", b"\x29", b"\x31", b"\x39", b"\x85", b"\x21", b"\x09"))
            ops.append(rex + op + bytes([rng.choice(regs_modrm)]))
        # stack-relative loads/stores with disp8
        for _ in range(900):
            rex = rng.choice((b"\x48", b"\x4c", b""))
            op = rng.choice((b"\x89", b"\x8b", b"\x8d", b"\xc7"))
            modrm = rng.choice((0x45, 0x4D, 0x55, 0x5D, 0x75, 0x7D, 0x44, 0x4C, 0x54))
            disp = bytes([rng.choice(range(0x08, 0x100, 8))])
            tail = b"\x24" if modrm in (0x44, 0x4C, 0x54) else b""
            ops.append(rex + op + bytes([modrm]) + tail + disp + (rng.randbytes(4) if op == b"\xc7" else b""))
        # add/sub/cmp with imm8
        for _ in range(300):
            ops.append(rng.choice((b"\x48\x83", b"\x83", b"\x49\x83")) + bytes([rng.choice(regs_modrm), rng.choice(range(0, 0x80, 8))]))
        # calls / jumps / rip-relative loads with 32-bit displacements (the entropy of real code)
        for _ in range(2400):
            kind = rng.random()
            if kind < 0.45:
                ops.append(b"\xe8" + rng.randbytes(3) + rng.choice((b"\x00", b"\xff")))
            elif kind < 0.65:
                ops.append(b"\x0f" + bytes([rng.choice(range(0x80, 0x90))]) + rng.randbytes(2) + b"\x00\x00")
            elif kind < 0.85:
                ops.append(rng.choice((b"\x48\x8b\x05", b"\x48\x8d\x3d", b"\x48\x8d\x35", b"\x4c\x8d\x05")) + rng.randbytes(3) + b"\x00")
            else:
                ops.append(rng.choice((b"\x74", b"\x75", b"\xeb", b"\x7e", b"\x7f")) + bytes([rng.randrange(256)]))
        tail = ops[len(fixed):]
        rng.shuffle(tail)
        ops[len(fixed):] = tail
        # Compilers emit the same idioms over and over (prologues, spills, call sequences):
        # code is drawn as Zipf-ranked short instruction sequences, not single instructions.
        op_cw = zipf_cum_weights(len(ops), s=1.1, q=4.0)
        idioms = [b"".join(rng.choices(ops, cum_weights=op_cw, k=rng.randint(2, 9))) for _ in range(20000)]
        return idioms, zipf_cum_weights(len(idioms), s=0.95, q=10.0)

    # ------------------------------------------------------------------------------ kinds --
    def text(self, n):
        rng = self.rng
        out = []
        have = 0
        ends = (". ", ". ", ". ", ". ", "? ", "! ", ": ")
        while have < n:
            k = max(2000, (n - have) // 5)
            toks = rng.choices(self.text_tokens, cum_weights=self.text_tokens_cw, k=k)
            lens = rng.choices(range(4, 30), k=k // 8 + 2)
            i = 0
            para = []
            for L in lens:
                if i >= k:
                    break
                s = " ".join(toks[i:i + L])
                i += L
                s = s[:1].upper() + s[1:] + rng.choice(ends)
                para.append(s)
                if len(para) >= 3 and rng.random() < 0.25:
                    para.append("\n\n")
            chunk = "".join(para).replace(" ,", ",").replace(" ;", ";").replace(",.", ".").encode()
            out.append(chunk)
            have += len(chunk)
        return b"".join(out)[:n]

    def log(self, n):
        rng = self.rng
        lines = []
        have = 0
        rnd, gbits, choice = rng.random, rng.getrandbits, rng.choice
        svc_hosts = [f"{s}-{i}" for s in self.services for i in range(4)]
        while have < n:
            self.clock += rnd() * 0.05
            t = self.clock
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"
            lvl = choice(self.levels)
            host = choice(svc_hosts)
            r = rnd()
            if r < 0.7:
                route = choice(self.routes).format(gbits(20))
                line = (f"{ts} {lvl:<5} [{host}] http: {choice(self.methods)} {route} status={choice(self.statuses)} "
                        f"dur_ms={rnd() * 250:.1f} bytes={gbits(14)} req_id={gbits(64):016x}\n")
            elif r < 0.9:
                line = (f"{ts} {lvl:<5} [{host}] db: query={choice(('select','update','insert'))}_{choice(self.categories)} "
                        f"rows={gbits(9)} dur_ms={rnd() * 40:.2f} pool={gbits(3)}/8\n")
            else:
                line = (f"{ts} {lvl:<5} [{host}] gc: heap_mb={gbits(11)} paused_us={gbits(12)} "
                        f"gen={gbits(1)} msg=\"{' '.join(rng.choices(self.vocab[:400], k=5))}\"\n")
            lines.append(line)
            have += len(line)
        return "".join(lines).encode()[:n]

    def jsonl(self, n):
        rng = self.rng
        lines = []
        have = 0
        rnd, gbits, choice = rng.random, rng.getrandbits, rng.choice
        while have < n:
            self.clock += rnd() * 0.2
            ev = choice(self.events)
            line = (
                f'{{"ts":{self.clock:.3f},"event":"{ev}","user_id":{gbits(22)},"session":"{gbits(48):012x}",'
                f'"country":"{choice(self.countries)}","props":{{"page":"/{choice(self.categories)}/{gbits(12)}",'
                f'"ms":{gbits(10)},"value":{rnd() * 100:.2f},"ab":"{choice("ABCD")}"}},'
                f'"ok":{"true" if rnd() < 0.97 else "false"},"v":3}}\n'
            )
            lines.append(line)
            have += len(line)
        return "".join(lines).encode()[:n]

    def csv(self, n):
        rng = self.rng
        rows = ["id,date,first_name,last_name,category,amount,qty,lat,lon,country\n"]
        have = len(rows[0])
        rnd, gbits, choice, randint = rng.random, rng.getrandbits, rng.choice, rng.randint
        rid = gbits(20)
        while have < n:
            rid += 1 + gbits(2)
            row = (
                f"{rid},2023-{randint(1, 12):02d}-{randint(1, 28):02d},{choice(self.first)},{choice(self.last)},"
                f"{choice(self.categories)},{rnd() * 500:.2f},{randint(1, 20)},{rnd() * 180 - 90:.5f},"
                f"{rnd() * 360 - 180:.5f},{choice(self.countries)}\n"
            )
            rows.append(row)
            have += len(row)
        return "".join(rows).encode()[:n]

    def random(self, n):
        return self.rng.randbytes(n)

    def binary(self, n):
        """An executable-like image: header, code, integer tables, strings, zero padding."""
        rng = self.rng
        parts = [b"\x7fELF\x02\x01\x01\x00" + bytes(8) + b"\x03\x00\x3e\x00\x01\x00\x00\x00" + rng.randbytes(8) + bytes(32)]
        have = len(parts[0])
        while have < n:
            r = rng.random()
            size = min(n - have, int(2 ** rng.uniform(math.log2(2 * KiB), math.log2(256 * KiB))))
            if r < 0.56:
                part = self._code(size)
            elif r < 0.76:
                part = self._table(size)
            elif r < 0.90:
                part = self._strings(size)
            else:
                part = bytes(min(size, rng.choice((512, 1024, 4096, 4096, 8192))))  # section alignment
            parts.append(part)
            have += len(part)
        return b"".join(parts)[:n]

    def _code(self, n):
        rng = self.rng
        k = n // 12 + 16
        ops = rng.choices(self.idioms, cum_weights=self.idioms_cw, k=k)
        # Function boundaries: int3/nop padding to 16 bytes every ~40 instructions.
        pads = (b"\xcc" * 7, b"\x90" * 5, b"\x66\x2e\x0f\x1f\x84\x00\x00\x00\x00\x00", b"\xcc" * 12)
        for i in range(0, k, rng.randint(5, 15)):
            ops[i] = rng.choice(pads)
        return b"".join(ops)[:n]

    def _table(self, n):
        rng = self.rng
        r = rng.random()
        count = n // 4 + 1
        if r < 0.35:  # relocation/offset table: increasing u32 offsets
            deltas = array.array("B", rng.randbytes(count))
            vals = array.array("I", itertools.accumulate(deltas, initial=rng.getrandbits(20)))
        elif r < 0.6:  # pointer table: u64 pointers into one mapping
            base = 0x0000_5555_5555_0000 + (rng.getrandbits(16) << 16)
            small = array.array("H", rng.randbytes((n // 8 + 1) * 2))
            vals = array.array("Q", (base + (v << 3) for v in small))
        elif r < 0.85:  # small u32 values (enum tables, lengths): upper half zero
            small = array.array("H", rng.randbytes(count * 2))
            vals = array.array("I", small)
        else:  # f32 constants table with many repeats
            pool = [rng.uniform(-10, 10) for _ in range(64)]
            vals = array.array("f", rng.choices(pool, k=count))
        if sys.byteorder != "little":  # keep output identical on big-endian hosts
            vals.byteswap()
        data = vals.tobytes()
        return data[:n]

    def _strings(self, n):
        rng = self.rng
        out = []
        have = 0
        prefixes = ["_ZN4core3fmt", "_ZN3std2io", "_ZN5alloc3vec", "_ZN9keepsync", "/usr/lib/x86_64-linux-gnu/",
                    "/rustc/3f5fd8dd4/library/", "called `Option::unwrap()` on a `None` value", "GLIBC_2.", ".text",
                    ".rodata", "index out of bounds: the len is ", "src/"]
        while have < n:
            k = 200
            ws = rng.choices(self.vocab, cum_weights=self.vocab_cw, k=k * 3)
            for i in range(0, k * 3, 3):
                s = rng.choice(prefixes) + "".join(f"{len(w)}{w}" for w in ws[i:i + 3]) + f"17h{rng.getrandbits(64):016x}E\x00"
                out.append(s)
                have += len(s)
        return "".join(out).encode()[:n]


def block_sizes(rng, total):
    lo, hi = math.log2(MIN_BLOCK), math.log2(MAX_BLOCK)
    left = total
    while left > 0:
        n = min(left, int(2 ** rng.uniform(lo, hi)))
        yield n
        left -= n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=parse_size, default=256 * MiB, help="bytes to write (256MiB, 1G, 12345); default 256MiB")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--kind", choices=("mixed", "random", "text"), default="mixed")
    ap.add_argument("-o", "--output", required=True, help="file to write")
    ap.add_argument("-q", "--quiet", action="store_true", help="no composition summary on stderr")
    args = ap.parse_args()

    started = time.monotonic()
    c = Corpus(args.seed)
    plan_rng = random.Random(f"plan-{args.seed}")  # block sizes and kinds, independent of content
    gens = {"text": c.text, "log": c.log, "jsonl": c.jsonl, "csv": c.csv, "binary": c.binary, "random": c.random}
    shares = MIXED_SHARES if args.kind == "mixed" else {args.kind: 1.0}
    produced = {k: 0 for k in shares}
    blocks = {k: 0 for k in shares}
    sha = hashlib.sha256()
    written = 0
    with open(args.output, "wb") as f:
        for n in block_sizes(plan_rng, args.size):
            # Pick the next kind in proportion to its unfilled quota, so the final shares are
            # close to the targets while the order stays random.
            quota = [max(0.0, shares[k] * (written + n) - produced[k]) + 1e-9 for k in shares]
            kind = plan_rng.choices(list(shares), weights=quota)[0]
            data = gens[kind](n)
            assert len(data) == n, (kind, n, len(data))
            f.write(data)
            sha.update(data)
            produced[kind] += n
            blocks[kind] += 1
            written += n
    digest = sha.hexdigest()
    if not args.quiet:
        print(f"corpus: kind={args.kind} size={written} seed={args.seed} blocks={sum(blocks.values())} "
              f"in {time.monotonic() - started:.1f}s", file=sys.stderr)
        for k in shares:
            print(f"  {k:<7} {produced[k]:>12} bytes  {100.0 * produced[k] / max(written, 1):5.1f}%  "
                  f"{blocks[k]:>4} blocks", file=sys.stderr)
    print(f"{digest}  {args.output}")


if __name__ == "__main__":
    main()
