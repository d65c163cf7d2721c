#!/usr/bin/env bash
# Check the independent reference decoder (ksdecode.py) against the test vectors and, when a
# keepsync binary is given, against containers that binary writes.
#
#   tools/reference-decoder/check.sh                      # vectors only
#   tools/reference-decoder/check.sh path/to/keepsync     # vectors + cross-check
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dec="$here/ksdecode.py"
vectors="$root/tests/vectors/v1.json"
py="${PYTHON:-python3}"

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok    $*"; }
fail() { failed=$((failed + 1)); echo "FAIL  $*"; }

# --- dependencies ----------------------------------------------------------------------------
if ! "$py" -c 'import cryptography.hazmat.primitives.ciphers.aead, lz4.block, argon2.low_level, zstandard' \
    2>/dev/null; then
    echo "installing $here/requirements.txt"
    "$py" -m pip install -q -r "$here/requirements.txt"
fi

# --- test vectors ----------------------------------------------------------------------------
echo "== test vectors: $vectors"
vec_rc=0
vec_out="$("$py" "$dec" --verify-vectors "$vectors")" || vec_rc=$?
echo "$vec_out" | sed 's/^/  /'
summary="$(echo "$vec_out" | tail -n 1)"
if [[ "$summary" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    passed=$((passed + BASH_REMATCH[1]))
    failed=$((failed + BASH_REMATCH[2]))
    if [[ $vec_rc -ne 0 && ${BASH_REMATCH[2]} -eq 0 ]]; then
        fail "--verify-vectors exited $vec_rc"
    fi
else
    fail "--verify-vectors printed no summary line (exit $vec_rc)"
fi

# --- cross-check against a keepsync binary -------------------------------------------------
if [[ $# -ge 1 ]]; then
    ks="$1"
    if [[ "$ks" != /* ]]; then ks="$(cd "$(dirname "$ks")" && pwd)/$(basename "$ks")"; fi
    if [[ ! -x "$ks" ]]; then
        echo "not an executable: $ks" >&2
        exit 2
    fi
    echo "== cross-check with $ks"
    work="$(mktemp -d "${TMPDIR:-/tmp}/ksdecode-check.XXXXXX")"
    trap 'rm -rf "$work"' EXIT

    "$ks" keygen -o "$work/test.key" 2>/dev/null
    keyhex="$(sed -n 's/^KEEPSYNC-KEY-1 //p' "$work/test.key")"

    # Inputs: empty, 1 byte, 5000 bytes of text, 300 KiB of random and text blocks.
    : > "$work/empty"
    printf 'x' > "$work/one"
    "$py" - "$work" <<'EOF'
import os, sys
work = sys.argv[1]
line = b"KeepSync reference decoder cross-check: the quick brown fox jumps over the lazy dog.\n"
text = (line * (5000 // len(line) + 1))[:5000]
open(os.path.join(work, "text5000"), "wb").write(text)
out = bytearray()
i = 0
while len(out) < 300 * 1024:
    # alternate incompressible and compressible stretches of uneven sizes
    out += os.urandom(3000 + (i * 7919) % 9000)
    out += (b"%06d " % i + line) * (40 + i % 60)
    i += 1
open(os.path.join(work, "mixed300k"), "wb").write(bytes(out[:300 * 1024]))
EOF

    decode_and_compare() { # name container original -- key args...
        local name="$1" container="$2" original="$3"
        shift 3
        local out="$work/out.$name" rc=0
        "$py" "$dec" "$container" -o "$out" "$@" 2>"$work/err" || rc=$?
        if [[ $rc -ne 0 ]]; then
            fail "$name: ksdecode exited $rc: $(cat "$work/err")"
        elif cmp -s "$original" "$out"; then
            pass "$name"
        else
            fail "$name: decoded bytes differ from the original"
        fi
        rm -f "$out"
    }

    for input in empty one text5000 mixed300k; do
        for codec in lz4 deflate none zstd; do
            for cs in 4KiB 64KiB; do
                name="$input.$codec.$cs"
                c="$work/$name.ks"
                if ! "$ks" pack "$work/$input" -o "$c" -k "$work/test.key" --codec "$codec" \
                    --chunk-size "$cs" -q 2>"$work/err"; then
                    fail "$name: keepsync pack failed: $(cat "$work/err")"
                    continue
                fi
                decode_and_compare "$name" "$c" "$work/$input" --key-file "$work/test.key"
            done
        done
    done

    # The same key given as hex, and the default codec (auto).
    "$ks" pack "$work/mixed300k" -o "$work/auto.ks" -k "$work/test.key" -q
    decode_and_compare "mixed300k.auto.64KiB.key-hex" "$work/auto.ks" "$work/mixed300k" \
        --key-hex "$keyhex"

    # Passphrase (Argon2id with the writer's default parameters).
    export KSDECODE_CHECK_PW="correct horse battery staple, check.sh"
    "$ks" pack "$work/mixed300k" -o "$work/pw.ks" --passphrase-env KSDECODE_CHECK_PW \
        --codec deflate --chunk-size 4KiB -q
    decode_and_compare "mixed300k.deflate.4KiB.passphrase" "$work/pw.ks" "$work/mixed300k" \
        --passphrase-env KSDECODE_CHECK_PW

    # Rejections: each must exit 65 and must not create the output file.
    expect_65() { # name container -- key args...
        local name="$1" container="$2" rc=0
        shift 2
        local out="$work/rejected.out"
        rm -f "$out"
        "$py" "$dec" "$container" -o "$out" "$@" 2>"$work/err" || rc=$?
        if [[ $rc -ne 65 ]]; then
            fail "$name: expected exit 65, got $rc"
        elif [[ -e "$out" ]]; then
            fail "$name: exit 65 but the output file was created"
        elif [[ $(wc -l < "$work/err") -ne 1 ]]; then
            fail "$name: exit 65 but the error is not one line"
        else
            pass "$name rejected: $(cat "$work/err")"
        fi
    }
    mutate() { # src dst python-expression-on-bytearray-b
        "$py" - "$1" "$2" "$3" <<'EOF'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
exec(sys.argv[3])
open(sys.argv[2], "wb").write(bytes(b))
EOF
    }
    src="$work/text5000.lz4.4KiB.ks"
    kf=(--key-file "$work/test.key")
    mutate "$src" "$work/flip.ks" 'b[112 + 12 + 5] ^= 0x01'            # a byte of record 0's body
    expect_65 "flipped body byte" "$work/flip.ks" "${kf[@]}"
    mutate "$src" "$work/tag.ks" 'b[-1] ^= 0x80'                       # last byte of the final tag
    expect_65 "flipped tag byte" "$work/tag.ks" "${kf[@]}"
    mutate "$src" "$work/hdr.ks" 'b[20] ^= 0x01'                       # file_salt
    expect_65 "flipped header byte" "$work/hdr.ks" "${kf[@]}"
    mutate "$src" "$work/trail.ks" 'b += b"\x00"'
    expect_65 "trailing byte" "$work/trail.ks" "${kf[@]}"
    mutate "$src" "$work/short.ks" 'del b[-1]'
    expect_65 "truncated inside a record" "$work/short.ks" "${kf[@]}"
    # drop the final record: walk the record headers to find where it starts
    mutate "$src" "$work/nofinal.ks" '
import struct
off, last = 112, 112
while off < len(b):
    last = off
    off += 12 + struct.unpack_from("<I", b, off)[0] + 16
del b[last:]'
    expect_65 "truncated at a record boundary" "$work/nofinal.ks" "${kf[@]}"
    expect_65 "wrong key" "$src" --key-hex "$(printf '%064d' 0)"
    expect_65 "passphrase container opened with a key" "$work/pw.ks" "${kf[@]}"
    KSDECODE_CHECK_PW="wrong" expect_65 "wrong passphrase" "$work/pw.ks" \
        --passphrase-env KSDECODE_CHECK_PW
fi

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
