#!/usr/bin/env bash
# Edge builds: libemcoder (static and shared) and the emcoder CLI with the `edge` profile
# (Cargo.toml: opt-level 3, fat LTO, one codegen unit, stripped, panic = unwind so that the C
# ABI's catch_unwind still works), for x86-64 and for AArch64 (cross-built with Debian's
# toolchain as scripts/test-aarch64.sh does). Prints the file sizes and the peak resident
# memory of `emcoder predict` with the default model at N=1 and N=50 (docs/targets.md, "Edge builds").
#
#   bash scripts/edge-build.sh [x86_64|aarch64|all]        (default all)
#
# The AArch64 memory is measured under qemu-aarch64 (user mode): the figure is the emulator
# process's peak, an upper bound on what the program needs on a real Arm core (qemu adds its
# translated-code cache, tens of MB); qemu gives no speed figures. Needs: cargo, GNU time
# (/usr/bin/time); for aarch64 the packages scripts/test-aarch64.sh installs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
WHICH=${1:-all}
TEXT="I am so happy you are here!"
MODEL=$ROOT/models/emcoder-mini
export CARGO_TERM_COLOR=never
[ -x /usr/bin/time ] || { echo "GNU time (/usr/bin/time) is needed: apt-get install time" >&2; exit 1; }

sizes() {  # dir
    for f in libemcoder.a libemcoder.so emcoder; do
        awk -v f="$f" -v b="$(stat -c %s "$1/$f")" 'BEGIN { printf "  %-14s %8.2f MB\n", f, b / 1e6 }'
    done
}

peak_mb() {  # runner... -- prints the peak RSS in MB of `emcoder predict` at N=1 and N=50
    for n in 1 50; do
        kb=$(/usr/bin/time -f '%M' "$@" predict --model "$MODEL" --threads 2 --samples "$n" \
            "$TEXT" 2>&1 >/dev/null | tail -n 1)
        awk -v n="$n" -v kb="$kb" 'BEGIN { printf "  N=%-3s peak RSS %7.1f MB\n", n, kb / 1000 }'
    done
}

if [[ $WHICH == all || $WHICH == x86_64 ]]; then
    echo "==> x86-64 ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
    cargo build --locked --profile edge -p emcoder-ffi --lib -p emcoder-cli --bin emcoder
    sizes target/edge
    peak_mb target/edge/emcoder
fi

if [[ $WHICH == all || $WHICH == aarch64 ]]; then
    TARGET=aarch64-unknown-linux-gnu
    [[ -x /usr/bin/cargo && -d /usr/lib/rustlib/$TARGET/lib ]] && command -v qemu-aarch64 >/dev/null ||
        { echo "the aarch64 toolchain is missing: run scripts/test-aarch64.sh once (it installs it)" >&2; exit 1; }
    echo "==> aarch64 (cross-built with $(/usr/bin/rustc -V), run under $(qemu-aarch64 --version | head -n1))"
    RUSTC=/usr/bin/rustc CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
        CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
        /usr/bin/cargo build --locked --profile edge --target "$TARGET" \
        --target-dir target/aarch64-edge -p emcoder-ffi --lib -p emcoder-cli --bin emcoder
    sizes "target/aarch64-edge/$TARGET/edge"
    QEMU_CPU=max peak_mb qemu-aarch64 "target/aarch64-edge/$TARGET/edge/emcoder"
fi
