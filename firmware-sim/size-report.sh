#!/usr/bin/env bash
# What each device role costs in flash and static RAM: builds firmware-sim/size-probe for
# thumbv7em-none-eabihf (opt-level s, LTO) once per role and prints a Markdown table.
#   firmware-sim/size-report.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/size-probe"
rustup target add thumbv7em-none-eabihf >/dev/null 2>&1 || true
size_tool="$(find "$(rustc --print sysroot)" -name llvm-size -type f 2>/dev/null | head -1)"
if [ -z "$size_tool" ]; then
  rustup component add llvm-tools >/dev/null 2>&1 || true
  size_tool="$(find "$(rustc --print sysroot)" -name llvm-size -type f 2>/dev/null | head -1)"
fi
[ -n "$size_tool" ] || { echo "size-report: llvm-size not found (rustup component add llvm-tools)" >&2; exit 1; }
echo "| role (4 KiB chunks, AES-256-GCM) | .text | .rodata | .bss + .data (static RAM) |"
echo "|---|---:|---:|---:|"
for role in pack-store pack-lz4 pack-lz4-checkpoint unpack sync-sender sync-receiver; do
  env -u CARGO_TARGET_DIR cargo build --release --quiet --features "$role"
  elf=target/thumbv7em-none-eabihf/release/keepsync-size-probe
  read -r text rodata data bss < <("$size_tool" -A "$elf" | awk '$1==".text"{t=$2} $1==".rodata"{r=$2} $1==".data"{d=$2} $1==".bss"{b=$2} END{print t+0, r+0, d+0, b+0}')
  echo "| $role | $text | $rodata | $((bss + data)) |"
done
