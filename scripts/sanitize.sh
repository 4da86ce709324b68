#!/usr/bin/env bash
# The test suites under the sanitizers (RUSTC_BOOTSTRAP=1 lets the stable toolchain take
# -Zsanitizer; the runtimes ship with it):
#
#   bash scripts/sanitize.sh [asan] [tsan]        (default: both)
#
# asan: the whole Rust workspace's tests (kernels at this CPU's level, golden, invariance,
#       bad input, limits, the C ABI's unit tests, the CLI tests) under AddressSanitizer with
#       leak detection, then tests/c/test_emcoder.c (gcc -fsanitize=address) against the
#       libemcoder.so of that build. Every SIMD kernel this CPU has runs under a memory
#       checker here (valgrind cannot decode AVX-512, so it never could).
# tsan: the concurrency tests (runtime invariance and limits: shared models, cancellation,
#       memory budget waits; the arenas' unit tests) under ThreadSanitizer, with the standard
#       library rebuilt instrumented (-Zbuild-std; rustup's rust-src component), since an
#       uninstrumented std hides its synchronization from TSan and gives false reports.
#       scripts/tsan.supp suppresses the benign races inside crossbeam-deque (rayon's work
#       stealing), as crossbeam's own CI does.
# What does not run under them, and why: see fuzz/README.md ("Sanitizers"). The CLI's
# ulimit -v test is skipped under ASan: its shadow memory needs terabytes of address space.
# allocator_may_return_null=1: the library asks for memory fallibly (try_reserve) and turns
# a refusal into EMCODER_ERR_OUT_OF_MEMORY, which tests check with impossible sizes; ASan's
# default is to abort on any allocation over its 1 TB limit instead of returning null.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
MODES=("$@")
[[ ${#MODES[@]} -gt 0 ]] || MODES=(asan tsan)
HOST=$(rustc -vV | sed -n 's/^host: //p')
export RUSTC_BOOTSTRAP=1 RUST_BACKTRACE=0
CC=${CC:-cc}

for mode in "${MODES[@]}"; do
    case $mode in
    asan)
        echo "==> AddressSanitizer: cargo test --workspace"
        export CARGO_TARGET_DIR=$ROOT/target/asan
        RUSTFLAGS="-Zsanitizer=address -Cforce-frame-pointers" \
            ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
            cargo test --workspace --target "$HOST" --locked --lib --bins --tests -- -q \
            --skip predict_under_a_memory_limit_fails_cleanly
        echo "==> AddressSanitizer: tests/c/test_emcoder.c against that libemcoder.so"
        lib=$CARGO_TARGET_DIR/$HOST/debug
        RUSTFLAGS="-Zsanitizer=address -Cforce-frame-pointers" \
            cargo build -p emcoder-ffi --lib --example expected_values --target "$HOST" --locked
        ln -sf libemcoder.so "$lib/libemcoder.so.0"
        "$lib/examples/expected_values" tests/fixtures/tiny-vocab-bf16 "$CARGO_TARGET_DIR/expected.txt"
        "$CC" -std=c11 -g -O1 -fsanitize=address -fno-omit-frame-pointer -Iinclude \
            tests/c/test_emcoder.c -o "$CARGO_TARGET_DIR/test_c_asan" -L"$lib" -lemcoder \
            -Wl,-rpath,"$lib" -lpthread -lm
        ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 EMCODER_EXPECTED=$CARGO_TARGET_DIR/expected.txt \
            "$CARGO_TARGET_DIR/test_c_asan" tests/fixtures/tiny-vocab-bf16 "$CARGO_TARGET_DIR/expected.txt"
        unset CARGO_TARGET_DIR
        ;;
    tsan)
        echo "==> ThreadSanitizer (std rebuilt instrumented): runtime concurrency tests"
        rustup component add rust-src >/dev/null 2>&1 || true
        export CARGO_TARGET_DIR=$ROOT/target/tsan
        RUSTFLAGS="-Zsanitizer=thread -Cforce-frame-pointers" \
            TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$ROOT/scripts/tsan.supp" \
            cargo test -Zbuild-std --target "$HOST" --locked -p emcoder \
            --lib --test invariance --test limits -- -q
        unset CARGO_TARGET_DIR
        ;;
    *)
        echo "unknown mode $mode (asan, tsan)" >&2
        exit 2
        ;;
    esac
done
echo "sanitizers: all passed"
