#!/usr/bin/env python3
"""Latency of `keepsync sync --watch`: from a file written in SRC to the same file whole in DEST.

    python3 benches/watch-latency.py target/release/keepsync [--writes 50] [--tree-files 1000]

Runs once locally (SRC and DEST on this machine) and once over ks:// (a `keepsync serve` on
loopback). SRC holds --tree-files small files besides the ones written, since a pass re-checks
the whole tree. Each write is its own burst (the next one waits until the last arrived and
0.3 s more). Prints p50, p99 and max per mode; `--json` prints them as JSON.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def wait_for(path, content, limit=60.0):
    started = time.monotonic()
    while time.monotonic() - started < limit:
        try:
            with open(path, "rb") as f:
                if f.read() == content:
                    return
        except OSError:
            pass
        time.sleep(0.001)
    raise SystemExit(f"{path} did not arrive within {limit} s")


def measure(binary, work, dest_args, dest_dir, writes, env):
    src = os.path.join(work, "src")
    watch = subprocess.Popen(
        [binary, "sync", src, *dest_args, "--watch", "--json", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )
    try:
        watch.stdout.readline()  # the first pass is done: the watch is set up
        latencies = []
        for i in range(writes):
            content = os.urandom(4096) + f"write {i}\n".encode()
            path = os.path.join(src, f"w{i:04}.bin")
            started = time.monotonic()
            with open(path + ".tmp", "wb") as f:
                f.write(content)
            os.rename(path + ".tmp", path)
            wait_for(os.path.join(dest_dir, f"w{i:04}.bin"), content)
            latencies.append(time.monotonic() - started)
            time.sleep(0.3)
        return latencies
    finally:
        watch.send_signal(2)
        watch.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binary")
    ap.add_argument("--writes", type=int, default=50)
    ap.add_argument("--tree-files", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    env = dict(os.environ, KEEPSYNC_CONFIG="")
    results = {}
    with tempfile.TemporaryDirectory(prefix="keepsync-watch-") as work:
        src = os.path.join(work, "src")
        for i in range(args.tree_files):
            d = os.path.join(src, f"d{i % 20:02}")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, f"f{i:05}"), "wb") as f:
                f.write(os.urandom(1024))
        results["local"] = measure(binary, work, [os.path.join(work, "dst")], os.path.join(work, "dst"),
                                   args.writes, env)
        for name in os.listdir(src):
            if name.startswith("w"):
                os.remove(os.path.join(src, name))
        psk = os.path.join(work, "psk")
        subprocess.run([binary, "keygen", "-o", psk], check=True, stderr=subprocess.DEVNULL, env=env)
        os.makedirs(os.path.join(work, "srv"))
        server = subprocess.Popen(
            [binary, "serve", "--root", os.path.join(work, "srv"), "--listen", "127.0.0.1:0", "--psk-file", psk],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True,
        )
        try:
            addr = None
            for line in server.stderr:
                if " on " in line and "serving" in line:
                    addr = line.rsplit(" on ", 1)[1].strip()
                    break
            if addr is None:
                raise SystemExit("keepsync serve did not say where it listens")
            results["ks"] = measure(binary, work, [f"ks://{addr}/dst", "--psk-file", psk],
                                    os.path.join(work, "srv", "dst"), args.writes, env)
        finally:
            server.terminate()
            server.wait(timeout=60)
    report = {
        mode: {"writes": len(v), "p50_ms": 1000 * percentile(v, 50), "p99_ms": 1000 * percentile(v, 99),
               "max_ms": 1000 * max(v)}
        for mode, v in results.items()
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for mode, r in report.items():
            print(f"{mode:6} {r['writes']} writes: p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, "
                  f"max {r['max_ms']:.0f} ms")


if __name__ == "__main__":
    sys.exit(main())
