#!/usr/bin/env python3
"""ksdecode: an independent reference decoder for KeepSync container format v1.

Written from docs/FORMAT.md alone (no look at the Rust sources), to test that the
specification is complete enough to decode real containers.

Usage:
    ksdecode.py CONTAINER -o OUT (--key-hex HEX | --key-file FILE | --passphrase-env VAR)
    ksdecode.py --verify-vectors tests/vectors/v1.json

Exit codes (mirroring the keepsync CLI):
    0   success
    1   --verify-vectors found a failing vector
    2   the command line is wrong (bad key hex, missing environment variable, ...)
    65  input rejected: not a container, damaged, tampered with, truncated, wrong key
    66  an input or key file cannot be opened / parsed
    74  reading or writing failed midway
"""

import argparse
import hashlib
import hmac
import json
import os
import struct
import sys
import tempfile
import zlib

# ---------------------------------------------------------------------------
# Constants (FORMAT.md sections 1, 3 and 4)
# ---------------------------------------------------------------------------

MAGIC = b"\x89KSYNC\r\n"
HEADER_LEN = 112
MAC_INPUT_LEN = 80
RECORD_HEADER_LEN = 12
TAG_LEN = 16
VERSION = 1

KEY_SOURCE_RAW = 1
KEY_SOURCE_PASSPHRASE = 2

CHUNK_LOG2_MIN = 12
CHUNK_LOG2_MAX = 22

CODEC_STORE = 0
CODEC_LZ4 = 1
CODEC_DEFLATE = 2
CODEC_ZSTD = 3
CODEC_NAMES = {CODEC_STORE: "store", CODEC_LZ4: "lz4", CODEC_DEFLATE: "deflate", CODEC_ZSTD: "zstd"}

FLAG_FINAL = 0x01

# Argon2id bounds for key_source = 2 (section 1).
KDF_LANES_MIN, KDF_LANES_MAX = 1, 16
KDF_MEMORY_MAX_KIB = 1048576
KDF_PASSES_MIN, KDF_PASSES_MAX = 1, 64
KDF_COST_MAX = 65536 * 64  # kdf_memory_kib * kdf_passes

INFO_HEADER = b"keepsync v1 header"
INFO_PAYLOAD = b"keepsync v1 payload"

KEY_FILE_PREFIX = "KEEPSYNC-KEY-1 "

EXIT_OK = 0
EXIT_VECTORS_FAILED = 1
EXIT_USAGE = 2
EXIT_DATAERR = 65
EXIT_NOINPUT = 66
EXIT_IOERR = 74


class Rejected(Exception):
    """The container is rejected (exit 65). The message names the fault."""


class UsageError(Exception):
    """Bad command line or key material (exit 2)."""


class NoInput(Exception):
    """An input or key file cannot be opened or is not a key file (exit 66)."""


# ---------------------------------------------------------------------------
# Key material
# ---------------------------------------------------------------------------


class RawKey:
    def __init__(self, key):
        if len(key) != 32:
            raise UsageError("raw key must be 32 bytes, got %d" % len(key))
        self.key = key

    def describe(self):
        return "raw key"


class Passphrase:
    def __init__(self, passphrase):
        self.passphrase = passphrase

    def describe(self):
        return "passphrase"


def parse_key_hex(text):
    text = text.strip()
    if len(text) != 64:
        raise UsageError("--key-hex needs 64 hex digits, got %d characters" % len(text))
    try:
        return RawKey(bytes.fromhex(text))
    except ValueError:
        raise UsageError("--key-hex is not valid hex")


def parse_key_file_text(text):
    """FORMAT.md section 2: at most 4096 bytes of UTF-8, an optional BOM, lines ended by LF,
    each trimmed of ASCII space, tab and CR; empty and '#' lines skipped; exactly one line
    left, 'KEEPSYNC-KEY-1', one space, 64 hex digits of either case."""
    if text.startswith("\ufeff"):
        text = text[1:]
    keys = []
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.strip(" \t\r")
        if line == "" or line.startswith("#"):
            continue
        if line.startswith(KEY_FILE_PREFIX):
            digits = line[len(KEY_FILE_PREFIX):]
            if len(digits) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise NoInput("key file line %d: expected one space and 64 hex digits after %r"
                              % (lineno, KEY_FILE_PREFIX.strip()))
            keys.append(bytes.fromhex(digits))
            continue
        raise NoInput("key file line %d: not a comment and not a %r line"
                      % (lineno, KEY_FILE_PREFIX.strip()))
    if len(keys) != 1:
        raise NoInput("key file must contain exactly one %r line, found %d"
                      % (KEY_FILE_PREFIX.strip(), len(keys)))
    return RawKey(keys[0])


def load_key_file(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise NoInput("cannot open key file %s: %s" % (path, e.strerror or e))
    if len(data) > 4096:
        raise NoInput("key file %s is over 4096 bytes" % path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise NoInput("key file %s is not UTF-8 text" % path)
    return parse_key_file_text(text)


def load_passphrase_env(var):
    # os.environb gives the exact bytes; the spec says "passphrase bytes" (section 2) and does not
    # say how a passphrase is normalised, so none is applied (no trimming, no Unicode
    # normalisation).
    env = os.environb if hasattr(os, "environb") else None
    if env is not None:
        value = env.get(os.fsencode(var))
    else:
        s = os.environ.get(var)
        value = None if s is None else s.encode("utf-8")
    if value is None:
        raise UsageError("environment variable %s is not set" % var)
    return Passphrase(value)


# ---------------------------------------------------------------------------
# Crypto primitives
# ---------------------------------------------------------------------------


def hkdf_extract(salt, ikm):
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def hkdf_expand(prk, info, length):
    out = b""
    t = b""
    counter = 1
    while len(out) < length:
        t = hmac.new(prk, t + info + bytes([counter]), hashlib.sha256).digest()
        out += t
        counter += 1
    return out[:length]


def argon2id(passphrase, salt, memory_kib, passes, lanes):
    try:
        from argon2.low_level import Type, hash_secret_raw
    except ImportError:
        raise UsageError("the argon2-cffi package is needed for passphrase containers "
                         "(pip install argon2-cffi)")
    return hash_secret_raw(secret=passphrase, salt=salt, time_cost=passes,
                           memory_cost=memory_kib, parallelism=lanes, hash_len=32,
                           type=Type.ID, version=19)


def aesgcm(key):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    return AESGCM(key)


# ---------------------------------------------------------------------------
# Header
# ---------------------------------------------------------------------------


class Header:
    pass


def parse_header(raw):
    """Check every header rule of section 1 before any key is derived."""
    if len(raw) == 0:
        raise Rejected("not a KeepSync container (empty input)")
    if raw[:8] != MAGIC[:len(raw[:8])]:
        raise Rejected("not a KeepSync container (bad magic)")
    # "A reader that finds another version must refuse the file (a later version may change
    # anything after byte 8)": so the version is judged before the rest, even on a short file.
    if len(raw) > 8 and raw[8] != VERSION:
        raise Rejected("unsupported container version %d (this decoder reads version 1)"
                       % raw[8])
    if len(raw) < HEADER_LEN:
        raise Rejected("truncated: header is %d of %d bytes" % (len(raw), HEADER_LEN))
    h = Header()
    h.raw = raw
    h.version = raw[8]
    h.key_source = raw[9]
    h.chunk_log2 = raw[10]
    h.codec_hint = raw[11]
    reserved1 = raw[12:16]
    h.file_salt = raw[16:48]
    h.kdf_salt = raw[48:64]
    h.kdf_memory_kib, h.kdf_passes, h.kdf_lanes = struct.unpack_from("<III", raw, 64)
    reserved2 = raw[76:80]
    h.header_mac = raw[80:112]

    if h.key_source not in (KEY_SOURCE_RAW, KEY_SOURCE_PASSPHRASE):
        raise Rejected("bad header: unknown key_source %d" % h.key_source)
    if not (CHUNK_LOG2_MIN <= h.chunk_log2 <= CHUNK_LOG2_MAX):
        raise Rejected("bad header: chunk_log2 %d outside %d..=%d"
                       % (h.chunk_log2, CHUNK_LOG2_MIN, CHUNK_LOG2_MAX))
    if h.codec_hint > 3:
        raise Rejected("bad header: codec_hint %d outside 0..=3" % h.codec_hint)
    if reserved1 != b"\0" * 4:
        raise Rejected("bad header: reserved bytes 12..16 are not zero")
    if reserved2 != b"\0" * 4:
        raise Rejected("bad header: reserved bytes 76..80 are not zero")
    if h.key_source == KEY_SOURCE_RAW:
        if h.kdf_salt != b"\0" * 16:
            raise Rejected("bad header: kdf_salt is not zero for a raw-key container")
        if h.kdf_memory_kib or h.kdf_passes or h.kdf_lanes:
            raise Rejected("bad header: KDF parameters are not zero for a raw-key container")
    else:
        if not (KDF_LANES_MIN <= h.kdf_lanes <= KDF_LANES_MAX):
            raise Rejected("bad header: kdf_lanes %d outside %d..=%d"
                           % (h.kdf_lanes, KDF_LANES_MIN, KDF_LANES_MAX))
        if not (8 * h.kdf_lanes <= h.kdf_memory_kib <= KDF_MEMORY_MAX_KIB):
            raise Rejected("bad header: kdf_memory_kib %d outside %d..=%d"
                           % (h.kdf_memory_kib, 8 * h.kdf_lanes, KDF_MEMORY_MAX_KIB))
        if not (KDF_PASSES_MIN <= h.kdf_passes <= KDF_PASSES_MAX):
            raise Rejected("bad header: kdf_passes %d outside %d..=%d"
                           % (h.kdf_passes, KDF_PASSES_MIN, KDF_PASSES_MAX))
        if h.kdf_memory_kib * h.kdf_passes > KDF_COST_MAX:
            raise Rejected("bad header: Argon2id cost %d KiB x %d passes above %d"
                           % (h.kdf_memory_kib, h.kdf_passes, KDF_COST_MAX))
    h.chunk_size = 1 << h.chunk_log2
    return h


# ---------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------


class FileKeys:
    pass


def derive_keys(header, key):
    if header.key_source == KEY_SOURCE_RAW:
        if not isinstance(key, RawKey):
            raise Rejected("wrong key kind: container was sealed with a raw key, "
                           "but a %s was given" % key.describe())
        master = key.key
    else:
        if not isinstance(key, Passphrase):
            raise Rejected("wrong key kind: container was sealed with a passphrase (Argon2id), "
                           "but a %s was given" % key.describe())
        master = argon2id(key.passphrase, header.kdf_salt, header.kdf_memory_kib,
                          header.kdf_passes, header.kdf_lanes)
    k = FileKeys()
    k.prk = hkdf_extract(header.file_salt, master)
    k.header_key = hkdf_expand(k.prk, INFO_HEADER, 32)
    k.payload_key = hkdf_expand(k.prk, INFO_PAYLOAD, 32)
    return k


def check_header_mac(header, keys):
    expected = hmac.new(keys.header_key, header.raw[:MAC_INPUT_LEN], hashlib.sha256).digest()
    if not hmac.compare_digest(expected, header.header_mac):
        raise Rejected("header authentication failed: wrong key or passphrase, "
                       "or the header was altered")


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------


def stream_nonce(index, final):
    # nonce = 00 00 00 || BE64(i) || (01 if final else 00)
    return b"\0\0\0" + struct.pack(">Q", index) + (b"\x01" if final else b"\x00")


def validate_record_header(rh, index, chunk_size):
    body_len, plain_len = struct.unpack_from("<II", rh, 0)
    codec, flags = rh[8], rh[9]
    reserved = rh[10:12]
    where = "record %d" % index
    if codec not in CODEC_NAMES:
        raise Rejected("%s: unknown codec id %d" % (where, codec))
    if flags & ~FLAG_FINAL:
        raise Rejected("%s: reserved flag bits set (flags 0x%02x)" % (where, flags))
    if reserved != b"\0\0":
        raise Rejected("%s: reserved bytes are not zero" % where)
    final = bool(flags & FLAG_FINAL)
    if not final:
        if plain_len != chunk_size:
            raise Rejected("%s: non-final record has plain_len %d, expected chunk size %d"
                           % (where, plain_len, chunk_size))
    else:
        if plain_len == 0:
            if index != 0:
                raise Rejected("%s: empty final record is allowed only as record 0" % where)
        elif plain_len > chunk_size:
            raise Rejected("%s: final record plain_len %d exceeds chunk size %d"
                           % (where, plain_len, chunk_size))
    if codec == CODEC_STORE:
        if body_len != plain_len:
            raise Rejected("%s: stored record has body_len %d != plain_len %d"
                           % (where, body_len, plain_len))
    else:
        if not body_len < plain_len:
            raise Rejected("%s: %s record has body_len %d, not smaller than plain_len %d"
                           % (where, CODEC_NAMES[codec], body_len, plain_len))
    return body_len, plain_len, codec, final


def decode_body(codec, body, plain_len, index):
    where = "record %d" % index
    if codec == CODEC_STORE:
        out = body
    elif codec == CODEC_LZ4:
        import lz4.block
        try:
            out = lz4.block.decompress(body, uncompressed_size=plain_len)
        except Exception as e:  # lz4.block.LZ4BlockError
            raise Rejected("%s: lz4 block does not decode: %s" % (where, e))
    elif codec == CODEC_DEFLATE:
        d = zlib.decompressobj(-15)
        try:
            # Ask for one byte more than allowed, so an over-long stream is seen.
            out = d.decompress(body, plain_len + 1)
        except zlib.error as e:
            raise Rejected("%s: deflate stream does not decode: %s" % (where, e))
        if len(out) > plain_len:
            raise Rejected("%s: deflate stream decodes to more than plain_len %d bytes"
                           % (where, plain_len))
        if not d.eof:
            raise Rejected("%s: deflate stream is incomplete (no final block)" % where)
        if d.unused_data or d.unconsumed_tail:
            raise Rejected("%s: bytes follow the end of the deflate stream" % where)
    elif codec == CODEC_ZSTD:
        try:
            import zstandard
        except ImportError:
            raise Rejected("%s: codec zstd (3) is not supported by this decoder "
                           "(install the 'zstandard' package)" % where)
        # Section 4: exactly one non-skippable frame announcing Frame_Content_Size = plain_len,
        # Window_Size <= 4 MiB, ending at the end of the body. Feed small slices so that a
        # frame expanding far past plain_len is stopped early.
        try:
            params = zstandard.get_frame_parameters(body)
        except Exception as e:  # zstandard.ZstdError
            raise Rejected("%s: not a zstd frame: %s" % (where, e))
        if params.content_size != plain_len:
            raise Rejected("%s: zstd frame must announce content size %d" % (where, plain_len))
        if params.window_size > 4 * 1024 * 1024:
            raise Rejected("%s: zstd window larger than 4 MiB" % where)
        try:
            d = zstandard.ZstdDecompressor().decompressobj()
            parts, got = [], 0
            for pos in range(0, len(body), 64):
                piece = d.decompress(body[pos:pos + 64])
                parts.append(piece)
                got += len(piece)
                if got > plain_len or d.eof:
                    if d.eof and pos + 64 < len(body):
                        raise Rejected("%s: bytes follow the zstd frame" % where)
                    break
            out = b"".join(parts)
        except Rejected:
            raise
        except Exception as e:  # zstandard.ZstdError
            raise Rejected("%s: zstd frame does not decode: %s" % (where, e))
        if not d.eof:
            raise Rejected("%s: zstd frame is incomplete" % where)
        if d.unused_data:
            raise Rejected("%s: bytes follow the zstd frame" % where)
    else:  # pragma: no cover - rejected in validate_record_header
        raise Rejected("%s: unknown codec id %d" % (where, codec))
    if len(out) != plain_len:
        raise Rejected("%s: %s body decodes to %d bytes, expected plain_len %d"
                       % (where, CODEC_NAMES[codec], len(out), plain_len))
    return out


def read_exact(f, n):
    """Read up to n bytes; returns fewer only at end of input."""
    parts = []
    got = 0
    while got < n:
        b = f.read(n - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def decode_stream(f, key, sink):
    """Decode a container from binary file f, passing each authenticated, decoded chunk to
    sink(bytes). Raises Rejected on any fault. Returns a small summary dict."""
    # Step 1: header.
    raw = read_exact(f, HEADER_LEN)
    header = parse_header(raw)
    # Step 2: keys and header MAC.
    keys = derive_keys(header, key)
    check_header_mac(header, keys)
    cipher = aesgcm(keys.payload_key)
    # Step 3: records.
    index = 0
    total = 0
    codecs = {}
    while True:
        rh = read_exact(f, RECORD_HEADER_LEN)
        if len(rh) < RECORD_HEADER_LEN:
            if len(rh) == 0:
                raise Rejected("truncated: input ends after record %d, which is not final "
                               "(expected record %d)" % (index - 1, index) if index else
                               "truncated: input ends before record 0")
            raise Rejected("truncated: record %d header is %d of %d bytes"
                           % (index, len(rh), RECORD_HEADER_LEN))
        body_len, plain_len, codec, final = validate_record_header(rh, index, header.chunk_size)
        need = body_len + TAG_LEN
        sealed = read_exact(f, need)
        if len(sealed) < need:
            raise Rejected("truncated: record %d body and tag are %d of %d bytes"
                           % (index, len(sealed), need))
        try:
            compressed = cipher.decrypt(stream_nonce(index, final), sealed, rh)
        except Exception:  # cryptography.exceptions.InvalidTag
            raise Rejected("record %d failed authentication (altered, dropped, duplicated, "
                           "reordered or moved record)" % index)
        plain = decode_body(codec, compressed, plain_len, index)
        sink(plain)
        total += len(plain)
        codecs[CODEC_NAMES[codec]] = codecs.get(CODEC_NAMES[codec], 0) + 1
        if final:
            break
        index += 1
    # Step 4: trailing data.
    extra = f.read(1)
    if extra:
        raise Rejected("trailing data after the final record (record %d)" % index)
    return {"header": header, "keys": keys, "records": index + 1, "plain_bytes": total,
            "codecs": codecs}


def decode_bytes(container, key):
    import io
    out = []
    summary = decode_stream(io.BytesIO(container), key, out.append)
    return b"".join(out), summary


# ---------------------------------------------------------------------------
# File output: only after the whole container authenticated
# ---------------------------------------------------------------------------


def decode_to_path(container_path, out_path, key):
    try:
        if container_path == "-":
            inf = sys.stdin.buffer
            close_in = False
        else:
            inf = open(container_path, "rb")
            close_in = True
    except OSError as e:
        raise NoInput("cannot open %s: %s" % (container_path, e.strerror or e))
    try:
        if out_path == "-":
            # Standard output cannot be renamed into place: buffer everything, release at end.
            chunks = []
            decode_stream(inf, key, chunks.append)
            out = sys.stdout.buffer
            for c in chunks:
                out.write(c)
            out.flush()
            return
        out_dir = os.path.dirname(os.path.abspath(out_path))
        base = os.path.basename(out_path)
        try:
            fd, tmp = tempfile.mkstemp(prefix="." + base + ".", suffix=".ksdecode-partial",
                                       dir=out_dir)
        except OSError as e:
            raise IOError("cannot create a temporary file in %s: %s" % (out_dir, e.strerror or e))
        ok = False
        try:
            with os.fdopen(fd, "wb") as tf:
                decode_stream(inf, key, tf.write)
                tf.flush()
                os.fsync(tf.fileno())
            os.replace(tmp, out_path)
            ok = True
        finally:
            if not ok:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
    finally:
        if close_in:
            inf.close()


# ---------------------------------------------------------------------------
# Test vectors
# ---------------------------------------------------------------------------


def vector_key(spec):
    kind = spec.get("kind")
    if kind == "raw":
        return RawKey(bytes.fromhex(spec["key"]))
    if kind == "argon2id":
        return Passphrase(spec["passphrase"].encode("utf-8"))
    raise ValueError("unknown key kind %r" % kind)


def verify_vectors(path):
    with open(path, "r", encoding="utf-8") as f:
        doc = json.load(f)
    vectors = doc["vectors"]
    passed = failed = 0
    for n, v in enumerate(vectors):
        name = v.get("name", "#%d" % n)
        try:
            key = vector_key(v["key"])
            container = bytes.fromhex(v["container"])
            expected = bytes.fromhex(v["input"])
            plain, summary = decode_bytes(container, key)
            problems = []
            if plain != expected:
                problems.append("plaintext differs (%d bytes decoded, %d expected)"
                                % (len(plain), len(expected)))
            h = summary["header"]
            if "chunk_size" in v and h.chunk_size != v["chunk_size"]:
                problems.append("header chunk size %d != vector chunk_size %d"
                                % (h.chunk_size, v["chunk_size"]))
            if "file_salt" in v and h.file_salt.hex() != v["file_salt"]:
                problems.append("header file_salt differs from vector file_salt")
            ks = v["key"]
            if ks.get("kind") == "argon2id":
                if (h.kdf_salt.hex(), h.kdf_memory_kib, h.kdf_passes, h.kdf_lanes) != (
                        ks["kdf_salt"], ks["memory_kib"], ks["passes"], ks["lanes"]):
                    problems.append("header KDF parameters differ from the vector's")
            if "codec" in v:
                hint_name = {0: "store", 1: "lz4", 2: "deflate", 3: "zstd"}.get(h.codec_hint)
                if hint_name != v["codec"]:
                    problems.append("codec_hint %s != vector codec %s" % (hint_name, v["codec"]))
            if problems:
                failed += 1
                print("FAIL  %s: %s" % (name, "; ".join(problems)))
            else:
                passed += 1
                print("ok    %s (%d bytes, %d record(s), codecs %s)"
                      % (name, len(plain), summary["records"],
                         ",".join("%s x%d" % kv for kv in sorted(summary["codecs"].items()))))
        except Rejected as e:
            failed += 1
            print("FAIL  %s: rejected: %s" % (name, e))
        except Exception as e:  # noqa: BLE001 - report anything unexpected as a failure
            failed += 1
            print("FAIL  %s: %s: %s" % (name, type(e).__name__, e))
    print("%d passed, %d failed" % (passed, failed))
    return EXIT_OK if failed == 0 and passed > 0 else EXIT_VECTORS_FAILED


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="ksdecode.py",
        description="Independent reference decoder for KeepSync container format v1 "
                    "(written from docs/FORMAT.md alone).")
    p.add_argument("container", nargs="?", help="container to decode, or - for standard input")
    p.add_argument("-o", "--output", help="where to write the plaintext, or - for standard output")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--key-hex", metavar="HEX", help="raw 32-byte key as 64 hex digits")
    g.add_argument("-k", "--key-file", metavar="FILE", help="key file written by `keepsync keygen`")
    g.add_argument("--passphrase-env", metavar="VAR",
                   help="read the passphrase from this environment variable")
    p.add_argument("--verify-vectors", metavar="V1_JSON",
                   help="decode every vector in tests/vectors/v1.json and compare")
    args = p.parse_args(argv)

    if args.verify_vectors:
        if args.container or args.output or args.key_hex or args.key_file or args.passphrase_env:
            p.error("--verify-vectors takes no other arguments")
        try:
            return verify_vectors(args.verify_vectors)
        except (OSError, ValueError, KeyError) as e:
            print("ksdecode: cannot read vectors %s: %s" % (args.verify_vectors, e),
                  file=sys.stderr)
            return EXIT_NOINPUT

    if not args.container or not args.output:
        p.error("CONTAINER and -o OUT are required")
    if not (args.key_hex or args.key_file or args.passphrase_env):
        p.error("one of --key-hex, --key-file, --passphrase-env is required")

    try:
        if args.key_hex:
            key = parse_key_hex(args.key_hex)
        elif args.key_file:
            key = load_key_file(args.key_file)
        else:
            key = load_passphrase_env(args.passphrase_env)
        decode_to_path(args.container, args.output, key)
    except Rejected as e:
        print("ksdecode: rejected: %s" % e, file=sys.stderr)
        return EXIT_DATAERR
    except UsageError as e:
        print("ksdecode: %s" % e, file=sys.stderr)
        return EXIT_USAGE
    except NoInput as e:
        print("ksdecode: %s" % e, file=sys.stderr)
        return EXIT_NOINPUT
    except OSError as e:
        print("ksdecode: I/O error: %s" % e, file=sys.stderr)
        return EXIT_IOERR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
