#!/usr/bin/env bash
# Benchmarks keepsync pack/unpack against zstd (compression only) and age (encryption only)
# on a deterministic mixed corpus. See benches/README.md for what each number means.
#
# Environment (all optional):
#   SIZE=256MiB          corpus size (make-corpus.py --size syntax)
#   SEED=1               corpus seed
#   RUNS=5               hyperfine --runs
#   WARMUP=1             hyperfine --warmup
#   CARGO_TARGET_DIR     where keepsync is built (default /tmp/ks-bench-target)
#   BENCH_DATA           corpus, keys, results (default <repo>/bench-data, gitignored)
#   WORK_DIR             where outputs are written (default $BENCH_DATA/work); try /dev/shm
#                        to take the disk (and the cost of keepsync's fsyncs) out of the picture
#   SKIP_BUILD=1         use the existing binary in $CARGO_TARGET_DIR/release
#   KS_REV=<git rev>     build that commit (exported with `git archive` into /tmp) instead of
#                        the working tree, e.g. KS_REV=HEAD to leave uncommitted work out
#   DURABLE_PEERS=1      also time zstd/age followed by `sync FILE` (informational, default 1)
#   DEFLATE=1            also time `pack --codec deflate` once (informational, default 1)
#   BREAKDOWN=1          also time keepsync writing to stdout (no output file, no fsync), to
#                        split its time into crypto / compression / file+fsync (default 1)
#   PREPARE=sync         hyperfine --prepare command run before every timed run, so no run
#                        pays for writing back a previous run's dirty pages (empty: none)
#   INSTALL=1            apt-get install missing tools (default 1 when root)
set -euo pipefail

started_at=$(date +%s)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

SIZE=${SIZE:-256MiB}
SEED=${SEED:-1}
RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/ks-bench-target}
DATA=${BENCH_DATA:-$ROOT/bench-data}
WORK=${WORK_DIR:-$DATA/work}
DURABLE_PEERS=${DURABLE_PEERS:-1}
DEFLATE=${DEFLATE:-1}
BREAKDOWN=${BREAKDOWN:-1}
PREPARE=${PREPARE-sync}
if [[ $(id -u) == 0 ]]; then INSTALL=${INSTALL:-1}; else INSTALL=${INSTALL:-0}; fi

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'compare.sh: %s\n' "$*" >&2; exit 1; }

for p in "$DATA" "$WORK" "$CARGO_TARGET_DIR"; do
    [[ $p != *[[:space:]]* ]] || die "paths with spaces are not supported: $p"
done
mkdir -p "$DATA" "$WORK" "$DATA/json"

# --- tools -----------------------------------------------------------------------------------
need_pkgs=()
command -v zstd >/dev/null || need_pkgs+=(zstd)
command -v age >/dev/null && command -v age-keygen >/dev/null || need_pkgs+=(age)
command -v hyperfine >/dev/null || need_pkgs+=(hyperfine)
[[ -x /usr/bin/time ]] || need_pkgs+=(time)
command -v python3 >/dev/null || need_pkgs+=(python3)
if ((${#need_pkgs[@]})); then
    [[ $INSTALL == 1 ]] || die "missing tools: ${need_pkgs[*]} (apt-get install -y ${need_pkgs[*]})"
    log "installing ${need_pkgs[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}"
fi

# --- build -----------------------------------------------------------------------------------
KS=$CARGO_TARGET_DIR/release/keepsync
SRC=$ROOT
if [[ -n ${KS_REV:-} ]]; then
    rev=$(git -C "$ROOT" rev-parse --short "$KS_REV^{commit}")
    SRC=/tmp/ks-bench-src-$rev
    if [[ ! -d $SRC ]]; then
        rm -rf "$SRC.tmp" && mkdir -p "$SRC.tmp"
        git -C "$ROOT" archive "$rev" | tar -x -C "$SRC.tmp"
        mv "$SRC.tmp" "$SRC"
    fi
fi
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building keepsync (release) from $SRC into $CARGO_TARGET_DIR"
    (cd "$SRC" && cargo build --release -p keepsync)
fi
[[ -x $KS ]] || die "no keepsync binary at $KS"

# --- corpus and keys -------------------------------------------------------------------------
CORPUS=$DATA/mixed-$SIZE-seed$SEED
if [[ ! -f $CORPUS || ! -f $CORPUS.info ]]; then
    log "generating corpus $CORPUS"
    python3 "$HERE/make-corpus.py" --size "$SIZE" --seed "$SEED" --kind mixed -o "$CORPUS.tmp" \
        2>"$CORPUS.info.tmp" | sed "s#$CORPUS.tmp#$CORPUS#" >"$CORPUS.sha256"
    cat "$CORPUS.info.tmp" >&2
    mv "$CORPUS.tmp" "$CORPUS"
    mv "$CORPUS.info.tmp" "$CORPUS.info"
fi
IN_BYTES=$(stat -c %s "$CORPUS")
KEY=$DATA/bench.key
AGEKEY=$DATA/bench.agekey
[[ -f $KEY ]] || "$KS" keygen -o "$KEY" 2>/dev/null
[[ -f $AGEKEY ]] || age-keygen -o "$AGEKEY" 2>/dev/null
RECIPIENT=$(age-keygen -y "$AGEKEY")

# Outputs.
KS_AUTO=$WORK/out.ks
KS_NONE=$WORK/out-none.ks
KS_DEFL=$WORK/out-deflate.ks
ZST1=$WORK/out-t1.zst
ZST2=$WORK/out-t2.zst
AGE_OUT=$WORK/out.age
BACK=$WORK/back

# name|operation|command|output file (for its size; '-' for none)
BENCH=()
add() { BENCH+=("$1|$2|$3|$4"); }
add "keepsync auto"    pack   "$KS pack $CORPUS -o $KS_AUTO -k $KEY -f"             "$KS_AUTO"
add "keepsync auto -j1" pack  "$KS pack -j1 $CORPUS -o $KS_AUTO -k $KEY -f"         "$KS_AUTO"
add "keepsync none"    pack   "$KS pack --codec none $CORPUS -o $KS_NONE -k $KEY -f" "$KS_NONE"
add "zstd -1 -T1"      pack   "zstd -1 -T1 -f -q $CORPUS -o $ZST1"                   "$ZST1"
add "zstd -1 -T2"      pack   "zstd -1 -T2 -f -q $CORPUS -o $ZST2"                   "$ZST2"
add "age"              pack   "age -r $RECIPIENT -o $AGE_OUT $CORPUS"                "$AGE_OUT"
# rage (the Rust age) is optional: `cargo install rage` takes a few minutes.
if command -v rage >/dev/null; then
    add "rage"         pack   "rage -r $RECIPIENT -o $AGE_OUT.rage $CORPUS"          "$AGE_OUT.rage"
fi
if [[ $DURABLE_PEERS == 1 ]]; then
    add "zstd -1 -T1 + sync" pack "zstd -1 -T1 -f -q $CORPUS -o $ZST1 && sync $ZST1" "$ZST1"
    add "age + sync"         pack "age -r $RECIPIENT -o $AGE_OUT $CORPUS && sync $AGE_OUT" "$AGE_OUT"
fi
add "keepsync auto"    unpack "$KS unpack $KS_AUTO -o $BACK -k $KEY -f"              -
add "keepsync auto -j1" unpack "$KS unpack -j1 $KS_AUTO -o $BACK -k $KEY -f"         -
add "zstd -1"          unpack "zstd -d -f -q $ZST1 -o $BACK"                         -
add "age"              unpack "age -d -i $AGEKEY -o $BACK $AGE_OUT"                  -
if command -v rage >/dev/null; then
    add "rage"         unpack "rage -d -i $AGEKEY -o $BACK $AGE_OUT.rage"            -
fi
if [[ $DURABLE_PEERS == 1 ]]; then
    add "zstd -1 + sync" unpack "zstd -d -f -q $ZST1 -o $BACK && sync $BACK"         -
    add "age + sync"     unpack "age -d -i $AGEKEY -o $BACK $AGE_OUT && sync $BACK"  -
fi
if [[ $BREAKDOWN == 1 ]]; then # hyperfine discards the commands' stdout
    add "keepsync auto to stdout" pack   "$KS pack $CORPUS -o - -k $KEY"             -
    add "keepsync none to stdout" pack   "$KS pack --codec none $CORPUS -o - -k $KEY" -
    add "keepsync to stdout"      unpack "$KS unpack $KS_AUTO -o - -k $KEY"          -
fi

# --- correctness: one round trip per tool, before any timing --------------------------------
log "verifying round trips (cmp against the corpus)"
roundtrip() { # label, pack command, unpack command
    rm -f "$BACK"
    bash -c "$2"
    bash -c "$3"
    cmp "$CORPUS" "$BACK" || die "round trip failed: $1"
    printf '  ok  %s\n' "$1" >&2
}
"$KS" pack "$CORPUS" -o "$KS_AUTO" -k "$KEY" -f --json >"$DATA/json/pack-auto-summary.json"
roundtrip "keepsync auto" true "$KS unpack $KS_AUTO -o $BACK -k $KEY -f"
roundtrip "keepsync none" "$KS pack --codec none $CORPUS -o $KS_NONE -k $KEY -f" \
    "$KS unpack $KS_NONE -o $BACK -k $KEY -f"
roundtrip "zstd -1 -T1" "zstd -1 -T1 -f -q $CORPUS -o $ZST1" "zstd -d -f -q $ZST1 -o $BACK"
roundtrip "zstd -1 -T2" "zstd -1 -T2 -f -q $CORPUS -o $ZST2" "zstd -d -f -q $ZST2 -o $BACK"
roundtrip "age" "age -r $RECIPIENT -o $AGE_OUT $CORPUS" "age -d -i $AGEKEY -o $BACK $AGE_OUT"
if [[ $DEFLATE == 1 ]]; then
    "$KS" pack --codec deflate "$CORPUS" -o "$KS_DEFL" -k "$KEY" -f --json >"$DATA/json/pack-deflate-summary.json"
    roundtrip "keepsync deflate" true "$KS unpack $KS_DEFL -o $BACK -k $KEY -f"
fi

# --- peak RSS and user/sys CPU under /usr/bin/time -v ------------------------------------------
# RSS_RUNS runs each (default 3; 1 for deflate); the row kept is the run with the median wall time.
RSS_RUNS=${RSS_RUNS:-3}
log "peak RSS and CPU time (/usr/bin/time -v, $RSS_RUNS runs each, median-wall run kept)"
RSS_TSV=$DATA/json/rss.tsv
: >"$RSS_TSV"
time_v() { # name, op, runs, command...
    local name=$1 op=$2 runs=$3 k
    shift 3
    : >"$DATA/json/time-runs.tsv"
    for ((k = 0; k < runs; k++)); do
        sync
        /usr/bin/time -v -o "$DATA/json/time.txt" "$@"
        awk -F': ' '
            /Maximum resident set size/ {rss=$2}
            /User time/ {u=$2} /System time/ {s=$2}
            /Elapsed \(wall clock\)/ {n=split($2, p, ":"); w=0; for (i=1; i<=n; i++) w=w*60+p[i]}
            END {printf "%s\t%s\t%s\t%.2f\n", rss, u, s, w}' "$DATA/json/time.txt" >>"$DATA/json/time-runs.tsv"
    done
    sort -t$'\t' -k4,4n "$DATA/json/time-runs.tsv" | sed -n "$(((runs + 1) / 2))p" |
        awk -v n="$name" -v o="$op" -v r="$runs" -F'\t' '{printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n, o, $1, $2, $3, $4, r}' >>"$RSS_TSV"
}
for entry in "${BENCH[@]}"; do
    IFS='|' read -r name op cmd _ <<<"$entry"
    [[ $name == *"+ sync" || $name == *"to stdout" ]] && continue
    read -r -a argv <<<"$cmd"
    time_v "$name" "$op" "$RSS_RUNS" "${argv[@]}"
done
if [[ $DEFLATE == 1 ]]; then
    time_v "keepsync deflate" pack 1 "$KS" pack --codec deflate "$CORPUS" -o "$KS_DEFL" -k "$KEY" -f
fi

# --- timing ----------------------------------------------------------------------------------
log "timing: hyperfine --warmup $WARMUP --runs $RUNS${PREPARE:+ --prepare '$PREPARE'}"
HF=(hyperfine --style basic --warmup "$WARMUP" --runs "$RUNS")
[[ -n $PREPARE ]] && HF+=(--prepare "$PREPARE")
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
TIMINGS_TSV=$DATA/json/timings.tsv
: >"$TIMINGS_TSV"
i=0
for entry in "${BENCH[@]}"; do
    IFS='|' read -r name op cmd out <<<"$entry"
    i=$((i + 1))
    json=$DATA/json/$(printf '%02d' "$i")-$op-$(tr -c 'a-zA-Z0-9\n' '-' <<<"$name" | tr -s '-' | sed 's/-$//').json
    "${HF[@]}" --export-json "$json" -n "$name $op" "$cmd" >&2
    size=-
    [[ $out != - ]] && size=$(stat -c %s "$out")
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$op" "$json" "$size" "$RUNS" >>"$TIMINGS_TSV"
done
if [[ $DEFLATE == 1 ]]; then
    json=$DATA/json/99-pack-keepsync-deflate.json
    hyperfine --style basic --runs 1 ${PREPARE:+--prepare "$PREPARE"} --export-json "$json" -n "keepsync deflate pack" \
        "$KS pack --codec deflate $CORPUS -o $KS_DEFL -k $KEY -f" >&2
    printf '%s\t%s\t%s\t%s\t%s\n' "keepsync deflate" pack "$json" "$(stat -c %s "$KS_DEFL")" 1 >>"$TIMINGS_TSV"
fi
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
rm -f "$BACK"

# --- report ----------------------------------------------------------------------------------
elapsed=$(($(date +%s) - started_at))
RESULTS=$DATA/results.md
export R_TIMINGS=$TIMINGS_TSV R_RSS=$RSS_TSV R_IN_BYTES=$IN_BYTES R_CORPUS=$CORPUS R_JSON=$DATA/json
R_PREPARE=${PREPARE:+" --prepare '$PREPARE'"}
export R_PREPARE R_WORK=$WORK R_WARMUP=$WARMUP R_ELAPSED=$elapsed R_LOAD_BEFORE=$load_before R_LOAD_AFTER=$load_after
R_MACHINE="$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r)"
if [[ -n ${KS_REV:-} ]]; then
    R_GIT="$rev, built from git archive"
else
    R_GIT=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ -n $(cd "$ROOT" && git status --porcelain -- host core Cargo.toml Cargo.lock 2>/dev/null) ]]; then
        R_GIT="$R_GIT + uncommitted changes in the working tree"
    fi
fi
[[ ${SKIP_BUILD:-0} == 1 ]] && R_GIT="$R_GIT; SKIP_BUILD=1, so the binary may be older"
R_TOOLS="keepsync $("$KS" --version | awk '{print $2}') (git $R_GIT), zstd $(zstd -V | grep -oE 'v[0-9.]+' | head -1), age $(age --version), $(hyperfine --version)"
export R_MACHINE R_TOOLS
python3 - >"$RESULTS" <<'PY'
import json, os
E = os.environ
in_bytes, corpus, jdir = int(E["R_IN_BYTES"]), E["R_CORPUS"], E["R_JSON"]

rows = []
for line in open(E["R_TIMINGS"]):
    name, op, path, size, runs = line.rstrip("\n").split("\t")
    r = json.load(open(path))["results"][0]
    rows.append(dict(name=name, op=op, median=r["median"], min=r["min"], max=r["max"],
                     size=None if size == "-" else int(size), runs=int(runs)))
by = {(r["name"], r["op"]): r for r in rows}
mbps = lambda r: in_bytes / r["median"] / 1e6

print("# keepsync vs zstd / age")
print()
sha = open(corpus + ".sha256").read().split()[0]
print(f"- corpus: `{os.path.basename(corpus)}`, {in_bytes} bytes ({in_bytes / 2**20:.0f} MiB), sha256 `{sha}`")
print("- composition (bytes, share, blocks):")
print()
print("  ```")
for l in open(corpus + ".info").read().splitlines():
    print("  " + l)
print("  ```")
print()
print(f"- machine: {E['R_MACHINE']}; load average before timing {E['R_LOAD_BEFORE']}, after {E['R_LOAD_AFTER']}")
print(f"- tools: {E['R_TOOLS']}")
print(f"- method: hyperfine --warmup {E['R_WARMUP']} --runs N (N in the table){E['R_PREPARE']}, median wall-clock; input in the "
      f"page cache; outputs written to `{E['R_WORK']}`; MB/s = 10^6 plaintext bytes per second (pack and unpack alike)")
print(f"- script wall time: {E['R_ELAPSED']} s")
print()
print("| tool | operation | runs | median s | min..max s | MB/s | output bytes | output/input |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for r in rows:
    size = f"{r['size']:,}" if r["size"] is not None else ""
    ratio = f"{r['size'] / in_bytes:.3f}" if r["size"] is not None else ""
    info = any(w in r["name"] for w in (" + sync", "deflate", "to stdout"))
    name = r["name"] + (" (informational)" if info else "")
    print(f"| {name} | {r['op']} | {r['runs']} | {r['median']:.3f} | {r['min']:.3f}..{r['max']:.3f} | "
          f"{mbps(r):.0f} | {size} | {ratio} |")
print()
print("## keepsync throughput relative to peers (median vs median; > 1 means keepsync is faster)")
print()
print("| comparison | keepsync MB/s | peer MB/s | keepsync / peer |")
print("|---|---:|---:|---:|")
pairs = [
    (("keepsync auto", "pack"), ("keepsync auto -j1", "pack"), "pack: all cores vs one worker (-j1)"),
    (("keepsync auto", "unpack"), ("keepsync auto -j1", "unpack"), "unpack: all cores vs one worker (-j1)"),
    (("keepsync auto", "pack"), ("zstd -1 -T1", "pack"), "pack auto vs zstd -1 -T1"),
    (("keepsync auto", "pack"), ("zstd -1 -T2", "pack"), "pack auto vs zstd -1 -T2"),
    (("keepsync none", "pack"), ("age", "pack"), "pack --codec none vs age"),
    (("keepsync none", "pack"), ("rage", "pack"), "pack --codec none vs rage"),
    (("keepsync auto", "unpack"), ("zstd -1", "unpack"), "unpack vs zstd -d"),
    (("keepsync auto", "unpack"), ("age", "unpack"), "unpack vs age -d"),
    (("keepsync auto", "unpack"), ("rage", "unpack"), "unpack vs rage -d"),
    (("keepsync auto", "pack"), ("zstd -1 -T1 + sync", "pack"), "pack auto vs zstd -1 -T1 + sync (informational)"),
    (("keepsync none", "pack"), ("age + sync", "pack"), "pack --codec none vs age + sync (informational)"),
    (("keepsync auto", "unpack"), ("zstd -1 + sync", "unpack"), "unpack vs zstd -d + sync (informational)"),
    (("keepsync auto", "unpack"), ("age + sync", "unpack"), "unpack vs age -d + sync (informational)"),
]
for a, b, label in pairs:
    if a in by and b in by:
        print(f"| {label} | {mbps(by[a]):.0f} | {mbps(by[b]):.0f} | {mbps(by[a]) / mbps(by[b]):.2f} |")
b = lambda n, o: by.get((n, o), {}).get("median")
pn, pa, pf = b("keepsync none to stdout", "pack"), b("keepsync auto to stdout", "pack"), b("keepsync auto", "pack")
nf = b("keepsync none", "pack")
us, uf = b("keepsync to stdout", "unpack"), b("keepsync auto", "unpack")
if None not in (pn, pa, pf, nf, us, uf):
    print()
    print("## Where keepsync's time goes (differences of medians)")
    print()
    print("| step | seconds | share of pack auto to a file |")
    print("|---|---:|---:|")
    print(f"| read + AES-256-GCM + framing (`pack --codec none -o -`; stdout output skips the resume hash) | {pn:.3f} | {pn / pf:.0%} |")
    print(f"| + LZ4 per 64 KiB chunk (`pack -o -` minus the above) | {pa - pn:.3f} | {(pa - pn) / pf:.0%} |")
    print(f"| + output file: BLAKE3 source hash (for resume), page-cache writes, fsync every 64 MiB, final fsync, rename (`pack -o FILE` minus `-o -`) | {pf - pa:.3f} | {(pf - pa) / pf:.0%} |")
    print(f"| = pack auto to a file | {pf:.3f} | 100% |")
    print()
    print(f"Encrypt-only to a file costs {nf:.3f} s, of which {nf - pn:.3f} s is the file/fsync part. "
          f"Unpack: {us:.3f} s to stdout (authenticate + decrypt + LZ4 decode), {uf - us:.3f} s more to write, "
          f"fsync and rename the output file ({uf:.3f} s).")
print()
print("## Peak RSS and CPU time (/usr/bin/time -v; of the runs, the one with the median wall time)")
print()
print("| tool | operation | runs | peak RSS MiB | user s | sys s | wall s |")
print("|---|---|---:|---:|---:|---:|---:|")
for line in open(E["R_RSS"]):
    name, op, rss, u, s, w, n = line.rstrip("\n").split("\t")
    print(f"| {name} | {op} | {n} | {int(rss) / 1024:.1f} | {u} | {s} | {w} |")
print()
summ = os.path.join(jdir, "pack-auto-summary.json")
if os.path.exists(summ):
    s = json.load(open(summ))
    print(f"keepsync auto chunks by codec: {s['codec_chunks']} of {s['chunks']} "
          f"(ratio {s['ratio']:.3f}, chunk size 64 KiB).")
summ = os.path.join(jdir, "pack-deflate-summary.json")
if os.path.exists(summ):
    s = json.load(open(summ))
    print(f"keepsync deflate chunks by codec: {s['codec_chunks']} of {s['chunks']} (ratio {s['ratio']:.3f}).")
PY

log "results ($RESULTS)"
cat "$RESULTS"
printf '\ncompare.sh: done in %d s\n' "$elapsed" >&2
