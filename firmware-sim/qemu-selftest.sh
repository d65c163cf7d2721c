#!/usr/bin/env bash
# Builds the keepsync-core self-test firmware (firmware-sim/qemu) for thumbv7em-none-eabihf,
# runs it on an emulated Cortex-M4 (qemu-system-arm -machine mps2-an386) and reports its size.
#
#   firmware-sim/qemu-selftest.sh [--defmt] [OUTPUT_FILE]
#
# OUTPUT_FILE (optional) receives the firmware's semihosting output, which holds the finished
# container as hex between KS-CONTAINER-BEGIN/KS-CONTAINER-END: feed it to
# firmware-sim/qemu/check-container.sh to open that container with the keepsync CLI.
#
# --defmt builds the image with `--features defmt` (log lines as defmt frames, keepsync-core's
# `defmt::Format` impls included; target dir firmware-sim/qemu/target/defmt) and decodes its
# output with `defmt-print` (installed with cargo when missing). OUTPUT_FILE then receives the
# decoded log; that build prints no container hex dump.
#
# Exits 0 only if QEMU exited 0 *and* the firmware printed `selftest: ok`. Works from any
# directory; installs the Rust target and (as root, via apt) QEMU and binutils when missing.
# Environment: KS_QEMU_TIMEOUT (seconds, default 60).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
crate="$here/qemu"
defmt=0
if [ "${1:-}" = "--defmt" ]; then
  defmt=1
  shift
fi
out_file="${1:-}"
# The build runs from the crate's directory: make the output path absolute first.
if [ -n "$out_file" ]; then
  out_file="$(realpath -m -- "$out_file")"
fi
timeout_s="${KS_QEMU_TIMEOUT:-60}"
target=thumbv7em-none-eabihf
if [ "$defmt" = 1 ]; then
  target_dir="$crate/target/defmt"
  features=(--features defmt)
else
  target_dir="$crate/target"
  features=()
fi
elf="$target_dir/$target/release/keepsync-qemu-selftest"
started=$SECONDS

log() { printf '== %s\n' "$*" >&2; }

apt_updated=0
apt_install() {
  # apt_install PACKAGE...: as root only; runs `apt-get update` once if the first try fails.
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    return 1
  fi
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; then
    return 0
  fi
  if [ "$apt_updated" = 0 ]; then
    apt_updated=1
    apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    return 1
  fi
}

# Cargo and rustup read .cargo/config.toml and rust-toolchain.toml from the working directory,
# so everything runs from the crate's directory; --manifest-path keeps the intent explicit.
cd "$crate"

log "rust target $target"
rustup target add "$target" >/dev/null 2>&1 || rustup target add "$target"

if ! command -v qemu-system-arm >/dev/null; then
  log "installing qemu-system-arm"
  apt_install qemu-system-arm || {
    echo "error: qemu-system-arm is missing (install it: apt-get install qemu-system-arm)" >&2
    exit 1
  }
fi

if [ "$defmt" = 1 ] && ! command -v defmt-print >/dev/null; then
  log "installing defmt-print (decodes the image's defmt frames)"
  cargo install --locked defmt-print --version 1.2.0
fi

log "cargo build --release ${features[*]:-} (board mps2-an386)"
# Its own workspace and target dir (firmware-sim/qemu/target), whatever the caller's env says.
env -u CARGO_TARGET_DIR KEEPSYNC_BOARD=mps2-an386 \
  cargo build --release --manifest-path "$crate/Cargo.toml" --target-dir "$target_dir" "${features[@]}"

log "qemu-system-arm -machine mps2-an386 (timeout ${timeout_s}s)"
output="$(mktemp)"
trap 'rm -f "$output"' EXIT
set +e
timeout "$timeout_s" qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic \
  -semihosting-config enable=on,target=native -kernel "$elf" </dev/null >"$output" 2>&1
qemu_status=$?
set -e
if [ "$defmt" = 1 ]; then
  # The semihosting stdout is defmt frames: decode them with the image's string table.
  decoded="$(mktemp)"
  trap 'rm -f "$output" "$decoded"' EXIT
  defmt-print -e "$elf" stdin <"$output" >"$decoded" 2>&1 || true
  echo "(defmt: $(wc -c <"$output") bytes of frames from the image, decoded by defmt-print)"
  cp "$decoded" "$output"
fi
if [ -n "$out_file" ]; then
  cp "$output" "$out_file"
fi
# The hex dump is long: show everything else (the full output is in OUTPUT_FILE).
grep -v -E '^[0-9a-f]{2,64}$' "$output" || true
if [ "$qemu_status" = 124 ]; then
  echo "error: the firmware did not finish within ${timeout_s}s" >&2
fi

log "image size"
size_tool=""
for t in llvm-size arm-none-eabi-size size; do
  if command -v "$t" >/dev/null; then size_tool="$t"; break; fi
done
if [ -z "$size_tool" ] && apt_install binutils-arm-none-eabi; then
  size_tool=arm-none-eabi-size
fi
if [ -n "$size_tool" ]; then
  # Sections with their sizes in bytes; flash = vector table + .text + .rodata + .data image.
  "$size_tool" -A "$elf" | awk '
    $1 ~ /^\.(vector_table|text|rodata|data|bss|uninit)$/ { printf "%-14s %8d\n", $1, $2; s[$1] = $2 }
    END {
      printf "%-14s %8d\n", "flash total", s[".vector_table"] + s[".text"] + s[".rodata"] + s[".data"]
      printf "%-14s %8d\n", "static RAM", s[".data"] + s[".bss"] + s[".uninit"]
    }'
else
  echo "(no size tool found: install llvm or binutils-arm-none-eabi for section sizes)"
fi

log "done in $((SECONDS - started)) s"
if [ "$qemu_status" = 0 ] && grep -qx 'selftest: ok' "$output"; then
  echo "qemu-selftest: PASS"
  exit 0
fi
echo "qemu-selftest: FAIL (qemu exit status $qemu_status)" >&2
if [ "$qemu_status" = 0 ]; then
  exit 1
fi
exit "$qemu_status"
