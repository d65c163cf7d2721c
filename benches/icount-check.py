#!/usr/bin/env python3
"""Compare instruction counts of `cargo bench --bench icount` with the committed baseline.

    cargo bench -p keepsync-benches --bench icount -- --output-format=json > icount.json
    python3 benches/icount-check.py icount.json            # exit 1 if anything grew > 3%
    python3 benches/icount-check.py icount.json --update   # accept the counts as the baseline

Instruction counts (callgrind's Ir) are deterministic for the same binary, input and CPU
features, so any growth is a code change, not noise. The threshold covers toolchain drift.
"""
import json
import os
import sys

BASELINE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "icount-baseline.json")
THRESHOLD = 3.0  # percent
# CPU features that change which code paths the crypto, hashing and compression libraries take.
FEATURES = ["aes", "pclmulqdq", "sse4_1", "avx", "avx2", "bmi2", "avx512f", "avx512vl", "vaes", "vpclmulqdq", "sha_ni"]


def cpu_features():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [f for f in FEATURES if f in flags]
    except OSError:
        pass
    return []


def counts(path):
    out = {}
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        bench = json.loads(line)
        name = f"{bench['function_name']}.{bench['id']}"
        total = bench["profiles"][0]["summaries"]["total"]["summary"]["Callgrind"]["Ir"]["metrics"]
        value = total.get("Left") or total.get("Both", [None])[0]
        out[name] = int(value["Int"])
    if not out:
        sys.exit(f"{path}: no benchmark results (run cargo bench ... -- --output-format=json)")
    return out


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    now = counts(sys.argv[1])
    if "--update" in sys.argv[2:]:
        with open(BASELINE, "w") as f:
            json.dump({"cpu_features": cpu_features(), "counts": dict(sorted(now.items()))}, f, indent=2)
            f.write("\n")
        print(f"baseline updated: {len(now)} benchmarks -> {BASELINE}")
        return 0
    recorded = json.load(open(BASELINE))
    base = recorded["counts"]
    here = cpu_features()
    if here != recorded["cpu_features"]:
        # Different instructions available means different code paths: counts are not
        # comparable. Say so loudly rather than failing every change or passing silently.
        print(f"WARNING: the baseline was recorded with CPU features {recorded['cpu_features']}, this machine has "
              f"{here}; instruction counts are not comparable, so the regression gate is not applied here. "
              f"Record a baseline on this machine kind with --update.")
        for name in sorted(now):
            print(f"  {name}: {now[name]:,} Ir")
        return 0
    failed = []
    print(f"| benchmark | baseline Ir | now Ir | change |")
    print(f"|---|---:|---:|---:|")
    for name in sorted(set(base) | set(now)):
        b, n = base.get(name), now.get(name)
        if b is None or n is None:
            print(f"| {name} | {b or '-'} | {n or '-'} | {'new' if b is None else 'missing'} |")
            if n is None:
                failed.append(f"{name} is in the baseline but was not run")
            continue
        change = (n - b) * 100.0 / b
        flag = " REGRESSION" if change > THRESHOLD else ""
        print(f"| {name} | {b:,} | {n:,} | {change:+.2f}%{flag} |")
        if change > THRESHOLD:
            failed.append(f"{name} grew {change:+.2f}% (> {THRESHOLD}%)")
    if failed:
        print("\ninstruction-count regressions:\n  " + "\n  ".join(failed), file=sys.stderr)
        print("If the growth is intended, run with --update and commit benches/icount-baseline.json.", file=sys.stderr)
        return 1
    print(f"\n{len(now)} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
