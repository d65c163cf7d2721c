#!/usr/bin/env bash
# Network sync: keepsync serve + `keepsync sync ks://` against rsync's daemon, same data, same
# run. Loopback by default; SHAPED=1 adds a 100 Mbit/s link between two network namespaces
# (veth pair, tbf qdisc; needs root).
#
# Workloads
#   big      one 256 MiB mixed file (benches/make-corpus.py), initial transfer
#   small    10,000 small files (~150 MB, seeded), initial transfer and a no-op re-sync
#   resume   the big file interrupted at ~50% (kill -9 of the client), then resumed
#   shaped   the big file over the 100 Mbit/s link: rsync, rsync -z, keepsync (SHAPED=1)
#   delayed  the small files through benches/delay-proxy.py, DELAY_MS each way (DELAY_MS=25)
#
# Environment: RUNS=5 (big, no-op), SMALL_RUNS=3, SKIP_BUILD=1, BENCH_DATA, WORK_DIR, SHAPED=0,
# DELAY_MS=0 (off).
# keepsync fsyncs every file before renaming it into place; rsync does not. Both are timed as
# they come, and "rsync+sync" adds a `sync` after rsync for a like-for-like durability figure.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
RUNS=${RUNS:-5}
SMALL_RUNS=${SMALL_RUNS:-3}
SHAPED=${SHAPED:-0}
DELAY_MS=${DELAY_MS:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/ks-bench-target}
DATA=${BENCH_DATA:-$ROOT/bench-data}
W=${WORK_DIR:-$DATA/net}
KS=$CARGO_TARGET_DIR/release/keepsync
KPORT=7391
RPORT=8731

for tool in rsync hyperfine python3; do
    command -v "$tool" >/dev/null || { apt-get install -y -qq rsync hyperfine python3 >/dev/null; break; }
done
[[ ${SKIP_BUILD:-0} == 1 ]] || (cd "$ROOT" && cargo build --release -p keepsync)
mkdir -p "$DATA" "$W"
CORPUS=$DATA/mixed-256MiB-seed1
[[ -f $CORPUS ]] || python3 "$HERE/make-corpus.py" --size 256MiB --seed 1 -o "$CORPUS"

rm -rf "$W/src-big" "$W/ks-root" "$W/rs-root"
# ext4 passes over inodes freed within the last minute when it allocates new ones; the
# small-file runs wait that out after this clean-up (and the last run's), or whichever tool
# creates more directories pays for the other's deletions.
deleted_at=$(date +%s)
mkdir -p "$W/src-big" "$W/ks-root" "$W/rs-root"
ln "$CORPUS" "$W/src-big/data.bin" 2>/dev/null || cp "$CORPUS" "$W/src-big/data.bin"
[[ -f $W/psk ]] || "$KS" keygen -o "$W/psk" 2>/dev/null

if [[ ! -d $W/src-small ]]; then
    echo "==> generating 10,000 small files (seeded)"
    python3 - "$W/src-small" <<'PY'
import os, random, sys
root = sys.argv[1]
r = random.Random(7)
words = [b"status", b"ok", b"error", b"user", b"request", b"latency", b"cache", b"disk", b"sync"]
for i in range(10_000):
    d = os.path.join(root, f"d{i // 200:02d}")
    os.makedirs(d, exist_ok=True)
    size = r.randint(2_000, 28_000)
    if i % 4 == 3:   # binary-ish
        data = bytes(r.getrandbits(8) if r.random() < 0.5 else 0 for _ in range(size))
    else:            # text-ish
        out = bytearray()
        while len(out) < size:
            out += b" ".join(r.choice(words) for _ in range(8)) + b" %d\n" % r.randint(0, 10**6)
        data = bytes(out[:size])
    with open(os.path.join(d, f"f{i:05d}.dat"), "wb") as f:
        f.write(data)
PY
fi

cat > "$W/rsyncd.conf" <<CONF
port = $RPORT
address = 127.0.0.1
use chroot = no
pid file = $W/rsyncd.pid
log file = $W/rsyncd.log
[m]
path = $W/rs-root
read only = false
uid = root
gid = root
CONF
cleanup() {
    [[ -f $W/rsyncd.pid ]] && kill "$(cat "$W/rsyncd.pid")" 2>/dev/null || true
    [[ -n ${KS_PID:-} ]] && kill "$KS_PID" 2>/dev/null || true
}
trap cleanup EXIT
rsync --daemon --config="$W/rsyncd.conf"
"$KS" serve --root "$W/ks-root" --listen "127.0.0.1:$KPORT" --psk-file "$W/psk" 2>"$W/serve.log" &
KS_PID=$!
sleep 1

KSYNC="$KS sync -q --psk-file $W/psk"
median() { python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results']; [print(f\"{x['command']}\t{x['median']:.3f}\") for x in r]" "$1"; }

echo "==> big: 256 MiB mixed file, initial transfer (median of $RUNS)"
hyperfine --runs "$RUNS" --warmup 1 --export-json "$W/big.json" \
    --prepare "rm -rf $W/ks-root/big $W/rs-root/big; sync" \
    -n rsync "rsync -a $W/src-big/ rsync://127.0.0.1:$RPORT/m/big/" \
    -n rsync+sync "rsync -a $W/src-big/ rsync://127.0.0.1:$RPORT/m/big/ && sync" \
    -n keepsync "$KSYNC $W/src-big ks://127.0.0.1:$KPORT/big"
median "$W/big.json" | tee "$W/big.tsv"
full_bytes=$($KSYNC --json $W/src-big ks://127.0.0.1:$KPORT/big-bytes | python3 -c "import json,sys; print(json.load(sys.stdin)['bytes_sent'])")

# The small-file initial push into fresh directories, rsync then keepsync, SMALL_RUNS times:
# small_initial LABEL KEEPSYNC_PORT RSYNC_PORT DIR_PREFIX (medians go to $W/LABEL.tsv).
small_initial() {
    local label=$1 kport=$2 rport=$3 prefix=$4
    : > "$W/$label.tsv"
    # The order alternates: whichever runs first after a flush pays more of the filesystem's
    # leftovers (freed inodes the allocator skips for a minute, writeback).
    timed() { sync; local t0 t1; t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
    for i in $(seq 1 "$SMALL_RUNS"); do
        if (( i % 2 )); then
            r=$(timed rsync -a "$W/src-small/" "rsync://127.0.0.1:$rport/m/$prefix$i/")
            k=$(timed $KSYNC "$W/src-small" "ks://127.0.0.1:$kport/$prefix$i")
        else
            k=$(timed $KSYNC "$W/src-small" "ks://127.0.0.1:$kport/$prefix$i")
            r=$(timed rsync -a "$W/src-small/" "rsync://127.0.0.1:$rport/m/$prefix$i/")
        fi
        printf 'rsync\t%s\nkeepsync\t%s\n' "$r" "$k" >> "$W/$label.tsv"
    done
    python3 - "$W/$label.tsv" "$label" <<'PY'
import sys, statistics, collections
t = collections.defaultdict(list)
for line in open(sys.argv[1]):
    k, v = line.split(); t[k].append(float(v))
for k, v in t.items(): print(f"{sys.argv[2]} initial {k}\t{statistics.median(v):.3f}")
PY
}

left=$((deleted_at + 65 - $(date +%s)))
if ((left > 0)); then
    echo "==> waiting ${left} s for the freed inodes to age (see above)"
    sleep "$left"
fi
echo "==> small: 10,000 files, initial transfer into fresh directories (median of $SMALL_RUNS)"
small_initial small "$KPORT" "$RPORT" small-
echo "==> small: no-op re-sync (median of $RUNS)"
hyperfine --runs "$RUNS" --warmup 1 --export-json "$W/noop.json" \
    -n rsync "rsync -a $W/src-small/ rsync://127.0.0.1:$RPORT/m/small-1/" \
    -n keepsync "$KSYNC $W/src-small ks://127.0.0.1:$KPORT/small-1"
median "$W/noop.json"

echo "==> resume: kill -9 at ~50% of the big file, then resume (median of $SMALL_RUNS, each against a full run timed the same way)"
half=$(( $(stat -c %s "$CORPUS") / 2 ))
: > "$W/resume.tsv"
for i in $(seq 1 "$SMALL_RUNS"); do
    rm -rf "$W/ks-root/resume" "$W/ks-root/full"; sync
    t0=$(date +%s.%N); $KSYNC "$W/src-big" "ks://127.0.0.1:$KPORT/full"; t1=$(date +%s.%N)
    $KS sync -q --psk-file "$W/psk" --limit-rate 64MiB "$W/src-big" "ks://127.0.0.1:$KPORT/resume" &
    pid=$!
    while :; do
        # Allocated bytes, not the length: the parts of a split file are written at their offsets.
        # (Partials live in the served root's .keepsync-partial, whatever tree a push writes.)
        got=$(find "$W/ks-root/.keepsync-partial" -name '*.data' -printf '%b\n' 2>/dev/null | head -1 || true)
        [[ -n $got && $((got * 512)) -ge $half ]] && break
        sleep 0.02
    done
    kill -9 $pid; wait $pid 2>/dev/null || true
    sync
    # (The JSON is read after the clock stops: a Python start costs 0.1 s of CPU.)
    t2=$(date +%s.%N); $KSYNC --json "$W/src-big" "ks://127.0.0.1:$KPORT/resume" > "$W/resume.json"; t3=$(date +%s.%N)
    resumed=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['bytes_sent'], d['data_bytes'])" "$W/resume.json")
    printf '%s\t%s\t%s\t%s\n' "$(echo "$t1 - $t0" | bc)" "$(echo "$t3 - $t2" | bc)" $resumed >> "$W/resume.tsv"
done
# Link bytes depend on how much each run compressed; the file bytes carried do not.
python3 - "$W/resume.tsv" "$full_bytes" "$(stat -c %s "$CORPUS")" <<'PY'
import sys, statistics as st
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
fb, size = float(sys.argv[2]), float(sys.argv[3])
ft, rt, rb, rd = (st.median(r[k] for r in rows) for k in range(4))
print(f"resume: carried {rd/size:.2f} of the file's bytes again ({rd/2**20:.0f} of {size/2**20:.0f} MiB); "
      f"sent {rb/fb:.2f} of a full run's link bytes ({rb/1e6:.1f} of {fb/1e6:.1f} MB); "
      f"took {rt/ft:.2f} of a full run's time ({rt:.2f} s vs {ft:.2f} s; medians)")
PY

if [[ $DELAY_MS != 0 ]]; then
    echo "==> delayed: 10,000 files through a proxy adding $DELAY_MS ms each way (median of $SMALL_RUNS)"
    python3 "$HERE/delay-proxy.py" --listen 127.0.0.1:7393 --to "127.0.0.1:$KPORT" --delay-ms "$DELAY_MS" &
    KPROXY=$!
    python3 "$HERE/delay-proxy.py" --listen 127.0.0.1:8733 --to "127.0.0.1:$RPORT" --delay-ms "$DELAY_MS" &
    RPROXY=$!
    sleep 1
    small_initial delayed 7393 8733 small-d
    kill $KPROXY $RPROXY
fi

if [[ $SHAPED == 1 ]]; then
    echo "==> shaped: 100 Mbit/s between two network namespaces"
    ip netns del ksa 2>/dev/null || true; ip netns del ksb 2>/dev/null || true
    ip netns add ksa; ip netns add ksb
    ip link add ksva type veth peer name ksvb
    ip link set ksva netns ksa; ip link set ksvb netns ksb
    ip -n ksa addr add 10.77.0.1/24 dev ksva; ip -n ksb addr add 10.77.0.2/24 dev ksvb
    ip -n ksa link set ksva up; ip -n ksb link set ksvb up
    ip -n ksa link set lo up; ip -n ksb link set lo up
    for ns in ksa:ksva ksb:ksvb; do
        tc -n "${ns%%:*}" qdisc add dev "${ns##*:}" root tbf rate 100mbit burst 64kb latency 50ms
    done
    sed "s/address = 127.0.0.1/address = 10.77.0.2/; s/port = $RPORT/port = 8732/; s#pid file = .*#pid file = $W/rsyncd-ns.pid#" \
        "$W/rsyncd.conf" > "$W/rsyncd-ns.conf"
    ip netns exec ksb rsync --daemon --config="$W/rsyncd-ns.conf"
    ip netns exec ksb "$KS" serve --root "$W/ks-root" --listen 10.77.0.2:7392 --psk-file "$W/psk" 2>>"$W/serve.log" &
    NS_KS=$!
    sleep 1
    hyperfine --runs 3 --export-json "$W/shaped.json" \
        --prepare "rm -rf $W/ks-root/shaped $W/rs-root/shaped; sync" \
        -n rsync "ip netns exec ksa rsync -a $W/src-big/ rsync://10.77.0.2:8732/m/shaped/" \
        -n "rsync -z" "ip netns exec ksa rsync -az $W/src-big/ rsync://10.77.0.2:8732/m/shaped/" \
        -n keepsync "ip netns exec ksa $KSYNC $W/src-big ks://10.77.0.2:7392/shaped"
    median "$W/shaped.json"
    kill $NS_KS; kill "$(cat "$W/rsyncd-ns.pid")" 2>/dev/null || true
    ip netns del ksa; ip netns del ksb
fi

echo "==> cleaning up the small-file trees (outside the timed runs)"
rm -rf "$W"/ks-root/small-* "$W"/rs-root/small-* "$W/ks-root/big-bytes"
