#!/usr/bin/env bash
# Opens the container the QEMU self-test packed, with the real keepsync CLI.
#
#   firmware-sim/qemu/check-container.sh QEMU_OUTPUT KEEPSYNC_BINARY [--refresh-fixture]
#
# QEMU_OUTPUT is the file firmware-sim/qemu-selftest.sh saved. This script
#  1. extracts the hex between KS-CONTAINER-BEGIN and KS-CONTAINER-END into a .ks file and
#     checks its length and CRC-32 against the firmware's `container:` line,
#  2. writes the firmware's key ([0x42; 32]) as a CLI key file (`KEEPSYNC-KEY-1 <64 hex>`),
#  3. runs `keepsync unpack FILE.ks -o OUT -k KEYFILE` and checks OUT's length and CRC-32
#     against the firmware's `plaintext:` line.
# With --refresh-fixture it also packs OUT with the CLI into fixtures/host-lz4-4k.ks, the
# host-made container the firmware unpacks on the device (rebuild and rerun the self-test).
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ] || { [ $# = 3 ] && [ "$3" != --refresh-fixture ]; }; then
  echo "usage: $0 QEMU_OUTPUT KEEPSYNC_BINARY [--refresh-fixture]" >&2
  exit 2
fi
output="$1"
keepsync="$2"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Everything the check needs from the firmware's output, parsed in one place.
python3 - "$output" "$work" <<'EOF'
import re, sys, zlib
text = open(sys.argv[1], encoding="utf-8", errors="replace").read().splitlines()
work = sys.argv[2]
def field(prefix):
    for line in text:
        m = re.fullmatch(prefix + r": len=(\d+) crc32=([0-9a-f]{8})", line.strip())
        if m:
            return int(m.group(1)), int(m.group(2), 16)
    sys.exit(f"check-container: no `{prefix}: len=.. crc32=..` line in {sys.argv[1]}")
try:
    begin = text.index("KS-CONTAINER-BEGIN")
    end = text.index("KS-CONTAINER-END", begin)
except ValueError:
    sys.exit(f"check-container: no KS-CONTAINER-BEGIN/END markers in {sys.argv[1]}")
container = bytes.fromhex("".join(l.strip() for l in text[begin + 1:end]))
length, crc = field("container")
if len(container) != length or zlib.crc32(container) != crc:
    sys.exit(f"check-container: hex dump is {len(container)} bytes, crc32 {zlib.crc32(container):08x}; "
             f"the firmware said {length} bytes, crc32 {crc:08x}")
open(f"{work}/device.ks", "wb").write(container)
plain_len, plain_crc = field("plaintext")
open(f"{work}/expected", "w").write(f"{plain_len} {plain_crc:08x}\n")
print(f"container: {len(container)} bytes, crc32 {crc:08x} (matches the firmware)")
EOF

# The firmware's master key: 32 bytes of 0x42.
printf '# key of firmware-sim/qemu (test only)\nKEEPSYNC-KEY-1 %s\n' \
  "$(printf '42%.0s' $(seq 32))" >"$work/key"

"$keepsync" unpack "$work/device.ks" -o "$work/plain" -k "$work/key" -q

read -r want_len want_crc <"$work/expected"
read -r got_len got_crc < <(python3 -c '
import sys, zlib
b = open(sys.argv[1], "rb").read()
print(len(b), format(zlib.crc32(b), "08x"))' "$work/plain")
if [ "$got_len" != "$want_len" ] || [ "$got_crc" != "$want_crc" ]; then
  echo "check-container: FAIL: keepsync unpacked $got_len bytes, crc32 $got_crc; the firmware packed $want_len bytes, crc32 $want_crc" >&2
  exit 1
fi
echo "plaintext: $got_len bytes, crc32 $got_crc (matches the firmware)"
head -n 2 "$work/plain"

if [ "${3:-}" = --refresh-fixture ]; then
  mkdir -p "$here/fixtures"
  "$keepsync" pack "$work/plain" -o "$here/fixtures/host-lz4-4k.ks" -k "$work/key" \
    --codec lz4 --for-device --chunk-size 4KiB --force -q
  echo "fixture: wrote $here/fixtures/host-lz4-4k.ks ($(wc -c <"$here/fixtures/host-lz4-4k.ks") bytes); rebuild and rerun the self-test"
fi
echo "check-container: PASS"
