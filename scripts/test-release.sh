#!/usr/bin/env bash
# The release artifacts as users install them: makes dist/ (scripts/release.sh), then for each
# target installs and uses every artifact on a PATH without cargo or rustc:
#
# - the wheel: into a fresh virtual environment (pip, binary packages only), then imports it,
#   checks that the library and the model are the wheel's own, and predicts;
# - the tarball, unpacked: the CLI (`emcoder --version`, `emcoder predict` with the model it
#   ships, also through a link to bin/emcoder); the CMake project tests/cmake (find_package(emcoder) through CMAKE_PREFIX_PATH,
#   one program linked against emcoder::emcoder and one against emcoder::emcoder_static, run
#   by ctest); tests/c/app.c linked through the pkg-config files, static and shared;
# - the wheel's _libemcoder.so is the tarball's libemcoder.so, byte for byte;
# - the versions: Cargo.toml's, the CLI's, emcoder_version() (C and Python), the .pc and CMake
#   files', the wheel's and the tarball's names agree; the header's EMCODER_ABI_VERSION is the
#   library's emcoder_abi_version() (the header carries no version string);
# - SHA256SUMS.
#
# AArch64 (under qemu-aarch64, user mode, as scripts/test-aarch64.sh runs it): the CLI predicts,
# the CMake project is cross-built (tests/cmake/aarch64-linux-gnu.cmake; ctest runs it under
# qemu) and app.c is cross-linked through the pkg-config files; the wheel is checked by
# auditwheel (release.sh) and by a loader test: tests/c/app.c linked against the wheel's own
# _libemcoder.so predicts with the wheel's model. (No AArch64 Python runs: Debian's arm64
# python3 cannot be installed next to the amd64 one.)
#
#   bash scripts/test-release.sh [x86_64|aarch64|all]      (default all)
#
# EMCODER_RELEASE_BUILT=1 tests the dist/ already there instead of running release.sh first.
#
# Measured on a 2-core Debian 12 machine (AMD EPYC Zen 3), the aarch64 packages installed,
# another cargo build running meanwhile (load average 3.5-4.5), clean clone of c69fa57 (the CLI
# with emcoder serve): 15.3 min (918 s): x86-64 build 6.5 min (libemcoder 2.0, then the CLI
# 4.5: it compiles the runtime again with the CLI's dependency features), aarch64 cross build
# 7.3 min, packaging 15 s, tests 58 s (x86-64 11 s, aarch64 under qemu 46 s). In CI,
# scripts/test-bindings.sh has already built libemcoder (the same cargo command), so the
# x86-64 part costs the CLI's build and about 30 s. Nothing to rebuild: 1.7 min (packaging
# 20 s; the emulated tests take longer on a loaded machine, up to 1.7 min).
# Needs what release.sh needs, plus cmake, a C compiler, pkg-config and network access to the
# Python package index (numpy, the wheel's dependency).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
WHICH=${1:-all}
DIST=${EMCODER_DIST:-$ROOT/dist}
OUT=$ROOT/target/release-test
PYTHON=${PYTHON:-python3}
CC=${CC:-cc}
TEXT="I am so happy you are here!"
export QEMU_CPU=max RUST_BACKTRACE=0

fail() { echo "test-release.sh: $*" >&2; exit 1; }
step() { printf '\n==> %s (%ss)\n' "$*" "$SECONDS"; }
SECONDS=0

case $WHICH in
    x86_64) ARCHS=(x86_64) ;;
    aarch64) ARCHS=(aarch64) ;;
    all) ARCHS=(x86_64 aarch64) ;;
    *) fail "unknown target '$WHICH': give x86_64, aarch64 or all" ;;
esac
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)

if [[ ${EMCODER_RELEASE_BUILT:-} != 1 ]]; then
    step "scripts/release.sh $WHICH"
    EMCODER_DIST=$DIST bash scripts/release.sh "$WHICH"
fi
[[ -f $DIST/SHA256SUMS ]] || fail "no $DIST/SHA256SUMS: run scripts/release.sh first"
step "SHA256SUMS"
(cd "$DIST" && sha256sum --check --strict SHA256SUMS)

# A PATH without cargo, rustc or a compiler: the artifacts' users need none.
BARE=$OUT/bare-bin
rm -rf "$OUT"
mkdir -p "$BARE"
bare() { env PATH="$BARE" "$@"; }
if bare sh -c 'command -v cargo || command -v rustc' >/dev/null 2>&1; then
    fail "cargo or rustc is on the bare PATH"
fi

# expect_joy FILE: the shipped model reads $TEXT as joy (its README's example).
expect_joy() { grep -q 'joy' "$1" || { cat "$1"; fail "$1: no 'joy' in the prediction"; }; }

test_wheel_x86_64() {
    local whl venv=$OUT/venv
    whl=$(ls "$DIST"/emcoder-"$VERSION"-py3-none-manylinux_*_x86_64.whl) ||
        fail "no manylinux x86_64 wheel of $VERSION in $DIST"
    step "wheel: ${whl##*/} into a fresh virtual environment, PATH without cargo or rustc"
    "$PYTHON" -m venv "$venv"
    env PATH="$venv/bin" "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        --no-input --only-binary :all: "$whl"
    (cd "$OUT" && env PATH="$venv/bin" EMCODER_VERSION="$VERSION" TEXT="$TEXT" "$venv/bin/python" - <<'EOF'
import os, shutil
from importlib.metadata import version
from pathlib import Path
import emcoder

assert shutil.which("cargo") is None and shutil.which("rustc") is None, os.environ["PATH"]
v = os.environ["EMCODER_VERSION"]
assert emcoder.version() == v and emcoder.__version__ == v and version("emcoder") == v, (
    emcoder.version(), emcoder.__version__, version("emcoder"), v)
pkg = Path(emcoder.__file__).resolve().parent
assert "site-packages" in pkg.parts, pkg
assert Path(emcoder.library_path()).resolve().parent == pkg, emcoder.library_path()
assert Path(emcoder.default_model_path()).resolve() == pkg / "models" / "emcoder-mini"
with emcoder.Model.load(threads=2) as m:
    [p] = m.predict([os.environ["TEXT"]], samples=20, seed=1)
print(f"emcoder {emcoder.version()} from {pkg}: {p.predicted}")
assert "joy" in p.predicted, p.predicted
EOF
    )
}

# unpack ARCH: sets PFX, the unpacked tarball.
unpack() {
    local tgz=$DIST/emcoder-$VERSION-$1-unknown-linux-gnu.tar.gz
    [[ -f $tgz ]] || fail "no $tgz"
    step "tarball: ${tgz##*/}"
    mkdir -p "$OUT/$1"
    tar -xzf "$tgz" -C "$OUT/$1"
    PFX=$OUT/$1/emcoder-$VERSION-$1-unknown-linux-gnu
    local so=libemcoder.so.0.${VERSION#*.}
    for f in bin/emcoder "lib/$so" lib/libemcoder.a include/emcoder.h lib/pkgconfig/emcoder.pc \
        lib/pkgconfig/emcoder-static.pc lib/cmake/emcoder/emcoderConfig.cmake \
        lib/cmake/emcoder/emcoderConfigVersion.cmake LICENSE README.md \
        share/emcoder/models/emcoder-mini/model.safetensors; do
        [[ -f $PFX/$f ]] || fail "the tarball has no $f"
    done
    [[ $(readlink "$PFX/lib/libemcoder.so.0") == "$so" && $(readlink "$PFX/lib/libemcoder.so") == libemcoder.so.0 ]] ||
        fail "lib/libemcoder.so -> libemcoder.so.0 -> $so: wrong links"
    local pcv
    pcv=$(PKG_CONFIG_PATH=$PFX/lib/pkgconfig pkg-config --modversion emcoder)
    [[ $pcv == "$VERSION" ]] || fail "emcoder.pc says version $pcv, expected $VERSION"
}

# same_lib FILE: the wheel's library is the tarball's (release.sh builds one per target).
same_lib() {
    cmp -s "$1" "$PFX/lib/libemcoder.so.0.${VERSION#*.}" ||
        fail "the wheel's $1 differs from the tarball's libemcoder.so"
}

# Checks the CLI's output: its version, and a prediction of $TEXT. Runner: "" or qemu-aarch64.
test_cli() {
    local v
    v=$("$@" --version)
    [[ $v == "emcoder $VERSION" ]] || fail "the CLI says '$v', expected 'emcoder $VERSION'"
    "$@" predict --threads 2 "$TEXT" >"$OUT/predict.txt"
    cat "$OUT/predict.txt"
    expect_joy "$OUT/predict.txt"
    # The default model is the tarball's own (found from the binary's place), not the
    # checkout's the binary was built in: eval --json names the model it loaded.
    printf '%s\t17\tx\n' "$TEXT" >"$OUT/one.tsv"
    local dir
    dir=$(unset EMCODER_MODEL; "$@" eval --data "$OUT/one.tsv" --deterministic --json | sed -n 's/.*"model":"\([^"]*\)".*/\1/p')
    [[ $dir == "$(realpath "$PFX")/share/emcoder/models/emcoder-mini" ]] ||
        fail "the CLI's default model is '$dir', expected the tarball's $PFX/share/emcoder/models/emcoder-mini"
}

# test_cmake ARCH [cmake args...]: configure, build and run tests/cmake against $PFX.
test_cmake() {
    local b=$OUT/$1/cmake
    shift
    step "CMake: tests/cmake with find_package(emcoder), CMAKE_PREFIX_PATH=$PFX"
    cmake -S tests/cmake -B "$b" -DCMAKE_PREFIX_PATH="$PFX" -DCMAKE_BUILD_TYPE=Release "$@" >"$b.log" ||
        { cat "$b.log"; fail "cmake could not configure tests/cmake"; }
    grep 'emcoder ' "$b.log"
    cmake --build "$b" -j 2 >"$b-build.log" || { cat "$b-build.log"; fail "tests/cmake did not build"; }
    (cd "$b" && ctest --output-on-failure -V >"$b-ctest.log" 2>&1) ||
        { cat "$b-ctest.log"; fail "tests/cmake: ctest failed"; }
    grep -E '^[0-9]+: (libemcoder|  [a-z])|tests passed' "$b-ctest.log" || true
}

# test_pkgconfig CC RUNNER...: tests/c/app.c through emcoder-static.pc and emcoder.pc.
test_pkgconfig() {
    local cc=$1 flags
    shift
    export PKG_CONFIG_PATH=$PFX/lib/pkgconfig
    step "pkg-config: tests/c/app.c with $cc, static and shared"
    # shellcheck disable=SC2046 # word splitting of pkg-config's output is intended
    "$cc" -std=c11 -Wall -Werror tests/c/app.c -o "$OUT/app_static" $(pkg-config --cflags --libs emcoder-static)
    if readelf -d "$OUT/app_static" | grep -q 'libemcoder'; then fail "app_static needs libemcoder.so"; fi
    "$@" "$OUT/app_static" "$PFX/share/emcoder/models/emcoder-mini" "$TEXT" | tee "$OUT/app.txt"
    expect_joy "$OUT/app.txt"
    flags=$(pkg-config --cflags --libs emcoder)
    # shellcheck disable=SC2086 # word splitting of pkg-config's output is intended
    "$cc" -std=c11 -Wall -Werror tests/c/app.c -o "$OUT/app_shared" $flags -Wl,-rpath,"$PFX/lib"
    readelf -d "$OUT/app_shared" | grep -q 'NEEDED.*\[libemcoder\.so\.0\]' ||
        fail "app_shared does not load libemcoder.so.0"
    "$@" "$OUT/app_shared" "$PFX/share/emcoder/models/emcoder-mini" "$TEXT" >"$OUT/app.txt"
    expect_joy "$OUT/app.txt"
    unset PKG_CONFIG_PATH
}

for ARCH in "${ARCHS[@]}"; do
    case $ARCH in
        x86_64)
            unpack x86_64
            test_wheel_x86_64
            same_lib "$(ls "$OUT"/venv/lib/python3*/site-packages/emcoder/_libemcoder.so)"
            step "CLI: bin/emcoder, PATH without cargo or rustc"
            test_cli bare "$PFX/bin/emcoder"
            ln -s "$PFX/bin/emcoder" "$OUT/emcoder-link"
            "$OUT/emcoder-link" predict --threads 2 --samples 2 "$TEXT" >"$OUT/predict.txt"
            expect_joy "$OUT/predict.txt"
            test_cmake x86_64
            test_pkgconfig "$CC"
            ;;
        aarch64)
            whl=$(ls "$DIST"/emcoder-"$VERSION"-py3-none-manylinux_*_aarch64.whl) ||
                fail "no manylinux aarch64 wheel of $VERSION in $DIST"
            step "wheel: ${whl##*/}: its library loads and predicts under qemu-aarch64"
            wdir=$OUT/aarch64/wheel
            mkdir -p "$wdir"
            "$PYTHON" -m zipfile -e "$whl" "$wdir"
            grep -qx "Version: $VERSION" "$wdir/emcoder-$VERSION.dist-info/METADATA" ||
                fail "the aarch64 wheel's METADATA is not version $VERSION"
            # The library records its SONAME, so the program asks the loader for
            # libemcoder.so.0: a link to the wheel's file serves it (ctypes dlopens the file).
            mkdir -p "$wdir/soname"
            ln -sf ../emcoder/_libemcoder.so "$wdir/soname/libemcoder.so.0"
            aarch64-linux-gnu-gcc -std=c11 -Wall -Werror -Iinclude tests/c/app.c -o "$wdir/app" \
                "$wdir/emcoder/_libemcoder.so" -Wl,-rpath,"$wdir/soname"
            qemu-aarch64 "$wdir/app" "$wdir/emcoder/models/emcoder-mini" "$TEXT" | tee "$OUT/app.txt"
            expect_joy "$OUT/app.txt"
            unpack aarch64
            same_lib "$wdir/emcoder/_libemcoder.so"
            step "CLI: bin/emcoder under qemu-aarch64 (its default model: share/emcoder/models/emcoder-mini)"
            test_cli qemu-aarch64 "$PFX/bin/emcoder"
            test_cmake aarch64 -DCMAKE_TOOLCHAIN_FILE="$ROOT/tests/cmake/aarch64-linux-gnu.cmake"
            test_pkgconfig aarch64-linux-gnu-gcc qemu-aarch64
            ;;
    esac
done
step "release artifacts: every test passed for ${ARCHS[*]}"
