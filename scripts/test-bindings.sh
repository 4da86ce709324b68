#!/usr/bin/env bash
# Builds libemcoder (release) and runs the tests of every binding: C (shared and static, under
# valgrind; cancellation, memory limits and fork; an old caller; dlopen/dlclose), the SONAME
# and the install step with pkg-config, C++, Go and Python. CI runs this; so can you:
#
#   bash scripts/test-bindings.sh          (or: make test-bindings)
#
# Needs: cargo, a C and a C++20 compiler, pkg-config, valgrind, go (>= 1.24), python3.
# EMCODER_SKIP_VALGRIND=1 skips the valgrind run (for machines without valgrind; CI must not).
# The header-drift check is a Rust test: `cargo test -p emcoder-ffi` (part of `cargo test`).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
CARGO=${CARGO:-cargo}
CC=${CC:-cc}
CXX=${CXX:-c++}
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
PYTHON=${PYTHON:-python3}
OUT=$ROOT/target/bindings-test
LIB=$ROOT/target/release
MODEL=$ROOT/tests/fixtures/tiny-vocab-bf16
EXPECTED=$OUT/expected.txt
# emcoder_debug_panic prints its (expected) panic message; a backtrace would only add noise.
export RUST_BACKTRACE=0
export EMCODER_EXPECTED=$EXPECTED

CFLAGS_TEST=(-std=c11 -Wall -Wextra -Werror -pedantic -O1 -g)
# -Wno-missing-field-initializers: g++ 12 warns on C++20 designated initializers that leave
# defaulted members out (GCC bug 96868), which is exactly how the options structs are meant
# to be used.
CXXFLAGS_TEST=(-std=c++20 -Wall -Wextra -Werror -pedantic -Wno-missing-field-initializers -O1 -g)

step() { printf '\n==> %s\n' "$*"; }
SECONDS=0

step "build libemcoder and the expected-values generator (cargo, release)"
"$CARGO" build --release -p emcoder-ffi --lib --example expected_values
# Programs linked against libemcoder.so record its SONAME, libemcoder.so.0, and load that name
# at run time (make lib makes the same link).
ln -sf libemcoder.so "$LIB/libemcoder.so.0"
mkdir -p "$OUT"
"$LIB/examples/expected_values" "$MODEL" "$EXPECTED"
echo "expected values of the Rust API: $EXPECTED"

step "header: compiles as C99 and C++ on its own"
echo '#include "emcoder.h"' | "$CC" -std=c99 -Wall -Wextra -Werror -pedantic -Iinclude -x c -fsyntax-only -
echo '#include "emcoder.h"' | "$CXX" -std=c++11 -Wall -Wextra -Werror -pedantic -Iinclude -x c++ -fsyntax-only -

step "C: tests/c/test_emcoder.c against libemcoder.so"
"$CC" "${CFLAGS_TEST[@]}" -Iinclude tests/c/test_emcoder.c -o "$OUT/test_c_shared" \
    -L"$LIB" -lemcoder -Wl,-rpath,"$LIB" -lpthread -lm
"$OUT/test_c_shared" "$MODEL" "$EXPECTED"

step "C: tests/c/test_limits.c (cancellation, timeouts, memory budget and limit, fork, log)"
"$CC" "${CFLAGS_TEST[@]}" -Iinclude tests/c/test_limits.c -o "$OUT/test_limits" \
    -L"$LIB" -lemcoder -Wl,-rpath,"$LIB" -lpthread
"$OUT/test_limits" "$MODEL"

step "C: an old caller (smaller structs) and dlopen/dlclose in a loop"
"$CC" "${CFLAGS_TEST[@]}" tests/c/test_old_caller.c -o "$OUT/test_old_caller" \
    -L"$LIB" -lemcoder -Wl,-rpath,"$LIB"
"$OUT/test_old_caller" "$MODEL"
"$CC" "${CFLAGS_TEST[@]}" -Iinclude tests/c/test_dlclose.c -o "$OUT/test_dlclose" -ldl -lpthread
"$OUT/test_dlclose" "$LIB/libemcoder.so" "$MODEL"

step "C: tests/c/test_emcoder.c against libemcoder.a"
"$CC" "${CFLAGS_TEST[@]}" -Iinclude tests/c/test_emcoder.c -o "$OUT/test_c_static" \
    "$LIB/libemcoder.a" -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
if ldd "$OUT/test_c_static" | grep libemcoder >/dev/null; then
    echo "test_c_static links libemcoder.so: expected the static library" >&2
    exit 1
fi
"$OUT/test_c_static" "$MODEL" "$EXPECTED"

step "C: valgrind (shared build)"
if [[ ${EMCODER_SKIP_VALGRIND:-0} == 1 ]]; then
    echo "skipped (EMCODER_SKIP_VALGRIND=1)"
else
    # Fails on any memory error and on definite/indirect leaks. tests/c/valgrind.supp
    # documents the few process-lifetime allocations of dependencies that valgrind calls
    # "possibly lost"; with it the summary must show 0 possibly lost.
    VALGRIND=(valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect
        --suppressions=tests/c/valgrind.supp)
    "${VALGRIND[@]}" --log-file="$OUT/valgrind.log" "$OUT/test_c_shared" "$MODEL" "$EXPECTED"
    sed -n '/LEAK SUMMARY/,/suppressed:/p; /ERROR SUMMARY/p' "$OUT/valgrind.log" | sed 's/^==[0-9]*== //'
    # Cancellation (flag, timeout), the memory budget and the log callback too; the fork and
    # RLIMIT_AS children are skipped there (tests/c/test_limits.c says why). --fair-sched=yes:
    # valgrind runs one thread at a time, and with its default lock a thread that wakes from a
    # sleep (the canceller, the budget holder's partner) can wait minutes behind the workers.
    EMCODER_TEST_UNDER_VALGRIND=1 "${VALGRIND[@]}" --fair-sched=yes --log-file="$OUT/valgrind-limits.log" \
        "$OUT/test_limits" "$MODEL"
    sed -n '/LEAK SUMMARY/,/suppressed:/p; /ERROR SUMMARY/p' "$OUT/valgrind-limits.log" | sed 's/^==[0-9]*== //'
fi

step "SONAME: libemcoder.so.0"
soname=$(readelf -d "$LIB/libemcoder.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
if [[ $soname != libemcoder.so.0 ]]; then
    echo "libemcoder.so has SONAME '$soname', expected libemcoder.so.0" >&2
    exit 1
fi
echo "SONAME $soname"

step "install + pkg-config: make install PREFIX=$OUT/prefix"
rm -rf "$OUT/prefix"
make --no-print-directory install PREFIX="$OUT/prefix" CARGO="$CARGO" >/dev/null
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
# The versioned file and its two links: libemcoder.so -> libemcoder.so.0 -> libemcoder.so.0.x.y.
SOFILE=libemcoder.so.0.${VERSION#*.}
if [[ ! -f $OUT/prefix/lib/$SOFILE || -L $OUT/prefix/lib/$SOFILE ||
    $(readlink "$OUT/prefix/lib/libemcoder.so.0") != "$SOFILE" ||
    $(readlink "$OUT/prefix/lib/libemcoder.so") != libemcoder.so.0 ]]; then
    echo "make install: expected $SOFILE with the links libemcoder.so.0 and libemcoder.so:" >&2
    ls -l "$OUT/prefix/lib" >&2
    exit 1
fi
echo "installed libemcoder.so -> $(readlink "$OUT/prefix/lib/libemcoder.so") -> $SOFILE"
export PKG_CONFIG_PATH=$OUT/prefix/lib/pkgconfig
# shellcheck disable=SC2046 # word splitting of pkg-config's output is intended
"$CC" -std=c11 -Wall -Werror tests/c/app.c -o "$OUT/app_shared" $(pkg-config --cflags --libs emcoder)
# shellcheck disable=SC2046
"$CC" -std=c11 -Wall -Werror tests/c/app.c -o "$OUT/app_static" $(pkg-config --cflags --libs emcoder-static)
# The program records the SONAME and runs against the installed links.
if ! readelf -d "$OUT/app_shared" | grep -q 'NEEDED.*\[libemcoder\.so\.0\]'; then
    echo "app_shared does not record libemcoder.so.0 (NEEDED):" >&2
    readelf -d "$OUT/app_shared" | grep NEEDED >&2
    exit 1
fi
LD_LIBRARY_PATH=$OUT/prefix/lib "$OUT/app_shared" "$MODEL" "I am so happy you are here!" >/dev/null
"$OUT/app_static" "$MODEL" "I am so happy you are here!"
echo "pkg-config emcoder: $(pkg-config --cflags --libs emcoder)"

step "C++: bindings/cpp/test_emcoder.cpp and example.cpp"
"$CXX" "${CXXFLAGS_TEST[@]}" -Iinclude -Ibindings/cpp bindings/cpp/test_emcoder.cpp \
    -o "$OUT/test_cpp" -L"$LIB" -lemcoder -Wl,-rpath,"$LIB" -pthread
"$OUT/test_cpp" "$MODEL" "$EXPECTED"
"$CXX" "${CXXFLAGS_TEST[@]}" -Iinclude -Ibindings/cpp bindings/cpp/example.cpp \
    -o "$OUT/example_cpp" -L"$LIB" -lemcoder -Wl,-rpath,"$LIB"
"$OUT/example_cpp" "$MODEL" "I am so happy you are here!" >/dev/null

step "Go: go vet, go test -race (binding + example server)"
(
    cd bindings/go
    export GOTOOLCHAIN=local GOFLAGS=-mod=mod GOPROXY=off
    unformatted=$("$(dirname "$GO")/gofmt" -l . 2>/dev/null || true)
    if [[ -n $unformatted ]]; then
        echo "gofmt needed: $unformatted" >&2
        exit 1
    fi
    "$GO" vet ./...
    "$GO" test -count=1 -race ./...
    # The pkg-config flavour links the installed copy.
    "$GO" vet -tags emcoder_pkgconfig ./...
    LD_LIBRARY_PATH=$OUT/prefix/lib "$GO" test -count=1 -tags emcoder_pkgconfig -run 'TestLabelsAndVersion|TestMatchesRustAPI' .
)

step "Python: pytest bindings/python/tests"
if ! "$PYTHON" -c 'import pytest' 2>/dev/null; then
    "$PYTHON" -m pip install --quiet pytest
fi
"$PYTHON" -m pytest -q -p no:cacheprovider bindings/python/tests
EMCODER_LIB=$OUT/prefix/lib/libemcoder.so PYTHONPATH=bindings/python "$PYTHON" -c \
    'import emcoder, sys; assert emcoder.library_path() == sys.argv[1]; print("EMCODER_LIB:", emcoder.version())' \
    "$OUT/prefix/lib/libemcoder.so"

step "all binding tests passed (${SECONDS}s)"
