#!/usr/bin/env bash
# A/B of two keepsync builds over loopback, alternating which goes first, on the corpora of
# net-compare.sh: one 256 MiB mixed file pushed into a fresh tree, 10,000 small files pushed
# into a fresh tree, and a no-op re-push of them. Prints each run and the medians per build.
#
#   benches/ab-net.sh OLD_KEEPSYNC NEW_KEEPSYNC  (RUNS=5, WORKLOADS="big small noop", BENCH_DATA,
#                                                 WORK_DIR, SMALL_TREE)
#
# Every run writes into a directory of its own and nothing is deleted until the end: ext4
# skips inodes freed within the last minute, so deleting trees between timed runs slows
# whichever run comes next.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OLD=$(realpath "$1")
NEW=$(realpath "$2")
RUNS=${RUNS:-5}
WORKLOADS=${WORKLOADS:-big small noop}
DATA=${BENCH_DATA:-$ROOT/bench-data}
W=${WORK_DIR:-$DATA/ab}
CORPUS=$DATA/mixed-256MiB-seed1

command -v python3 >/dev/null || apt-get install -y -qq python3 >/dev/null
mkdir -p "$DATA" "$W/src-big"
[[ -f $CORPUS ]] || python3 "$HERE/make-corpus.py" --size 256MiB --seed 1 -o "$CORPUS"
[[ -f $W/src-big/data.bin ]] || ln "$CORPUS" "$W/src-big/data.bin" 2>/dev/null || cp "$CORPUS" "$W/src-big/data.bin"
SMALL=${SMALL_TREE:-$DATA/net/src-small}
if [[ ! -d $SMALL ]]; then
    echo "no small-file tree at $SMALL: run benches/net-compare.sh once (it makes it), or set SMALL_TREE" >&2
    exit 2
fi
[[ -f $W/psk ]] || "$NEW" keygen -o "$W/psk" 2>/dev/null

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
port=7481
for build in old new; do
    bin=$OLD; [[ $build == new ]] && bin=$NEW
    rm -rf "$W/root-$build"; mkdir -p "$W/root-$build"
    "$bin" serve --root "$W/root-$build" --listen "127.0.0.1:$port" --psk-file "$W/psk" 2>"$W/serve-$build.log" &
    pids+=($!)
    eval "PORT_$build=$port"
    port=$((port + 1))
done
sleep 1

timed() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
: > "$W/ab.tsv"
one() { # one BUILD WORKLOAD RUN
    local build=$1 what=$2 i=$3 bin=$OLD port
    [[ $build == new ]] && bin=$NEW
    port=$(eval echo "\$PORT_$build")
    local ks=("$bin" sync -q --psk-file "$W/psk")
    case $what in
        big) t=$(timed "${ks[@]}" "$W/src-big" "ks://127.0.0.1:$port/big-$i") ;;
        small) t=$(timed "${ks[@]}" "$SMALL" "ks://127.0.0.1:$port/small-$i") ;;
        noop)
            # (Into the first small run's tree; made here when that workload did not run.)
            [[ -d $W/root-$build/small-1 ]] || "${ks[@]}" "$SMALL" "ks://127.0.0.1:$port/small-1"
            t=$(timed "${ks[@]}" "$SMALL" "ks://127.0.0.1:$port/small-1") ;;
    esac
    printf '%s\t%s\t%s\n' "$what" "$build" "$t" | tee -a "$W/ab.tsv"
}
for what in $WORKLOADS; do
    for i in $(seq 1 "$RUNS"); do
        sync
        if (( i % 2 )); then one old "$what" "$i"; one new "$what" "$i"; else one new "$what" "$i"; one old "$what" "$i"; fi
    done
done
python3 - "$W/ab.tsv" <<'PY'
import sys, statistics, collections
t = collections.defaultdict(list)
for line in open(sys.argv[1]):
    what, build, secs = line.split(); t[(what, build)].append(float(secs))
for what in ("big", "small", "noop"):
    if (what, "old") not in t:
        continue
    old, new = statistics.median(t[(what, "old")]), statistics.median(t[(what, "new")])
    print(f"{what:6} old {old:.3f} s  new {new:.3f} s  new/old {new / old:.3f}  (medians of {len(t[(what, 'old')])})")
PY
echo "==> cleaning up"
rm -rf "$W"/root-old "$W"/root-new
