#!/usr/bin/env bash
# Smoke-fuzz every target (the core's, and the host's path handling) for a short time each.
#
# Usage: fuzz/smoke.sh [SECONDS_PER_TARGET]   (default 20)
# Exits non-zero if any target fails to build or finds a crash; crashing inputs are left in
# fuzz/artifacts/<target>/. Corpora live in fuzz/corpus/<target>/ and are created on demand.
set -euo pipefail

SECS="${1:-20}"
if ! [[ "$SECS" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [seconds-per-target]" >&2
    exit 2
fi

cd "$(dirname "${BASH_SOURCE[0]}")"

TARGETS=(header unpacker checkpoint frame sender paths)
failed=()

for target in "${TARGETS[@]}"; do
    mkdir -p "corpus/$target"
    echo "==> fuzzing $target for ${SECS}s"
    start=$SECONDS
    if cargo +nightly fuzz run "$target" -- -max_total_time="$SECS" -rss_limit_mb=2048; then
        echo "ok      $target ($((SECONDS - start))s)"
    else
        rc=$?
        echo "FAILED  $target (exit $rc, $((SECONDS - start))s); see fuzz/artifacts/$target/" >&2
        failed+=("$target")
    fi
done

if ((${#failed[@]} > 0)); then
    echo "fuzz smoke failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz smoke passed: ${TARGETS[*]} (${SECS}s each)"
