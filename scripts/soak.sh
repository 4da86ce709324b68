#!/usr/bin/env bash
# Soak test through the C ABI (tests/c/soak.c): THREADS threads share a model and predict,
# cancel, time out, send invalid UTF-8, and load and free models of their own for SECONDS;
# every result must equal the serial one, no thread may hang, and the resident set must come
# back to its post-warm-up baseline. CI runs 30 s; the recorded long run is in fuzz/RESULTS.md.
#
#   bash scripts/soak.sh [SECONDS] [THREADS]        (default 30 s, 8 threads)
#
# Needs: cargo, a C compiler.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SECS=${1:-30}
THREADS=${2:-8}
CC=${CC:-cc}
LIB=$ROOT/target/release
OUT=$ROOT/target/soak
mkdir -p "$OUT"
cargo build --release -p emcoder-ffi --lib
ln -sf libemcoder.so "$LIB/libemcoder.so.0"
"$CC" -std=c11 -Wall -Wextra -Werror -O1 -g -Iinclude -Itests/c tests/c/soak.c -o "$OUT/soak" \
    -L"$LIB" -lemcoder -Wl,-rpath,"$LIB" -lpthread
"$OUT/soak" tests/fixtures/tiny-vocab-bf16 "$SECS" "$THREADS"
