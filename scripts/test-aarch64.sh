#!/usr/bin/env bash
# AArch64 under emulation: cross-builds the kernels', runtime's and C ABI's tests for
# aarch64-unknown-linux-gnu and runs them under qemu-aarch64 (user mode, `-cpu max`: NEON and
# FEAT_BF16, so the neon and neon-bf16 levels and the bfdot kernel all run), then the C test
# (tests/c/test_emcoder.c) against the cross-built libemcoder.so and libemcoder.a. CI runs it
# after the x86-64 steps (.ci/run); so can you:
#
#   bash scripts/test-aarch64.sh
#
# Needs Debian 12 (bookworm) on x86-64: the packages below come from Debian because rustup's
# toolchain here cannot add targets. The script installs what is missing (apt, as root or
# through sudo; nothing when everything is there). Pitfalls it avoids: Debian's
# /usr/bin/cargo and /usr/bin/rustc, not rustup's proxies (which come first on PATH and have
# no aarch64 std); runner plain `qemu-aarch64` WITHOUT `-L /usr/aarch64-linux-gnu` (with it
# the guest pairs the cross ld.so with the multiarch libc of another build and every test
# binary hangs at its first pthread_create).
#
# What runs emulated, and how the builds share work:
# - One `cargo test --no-run` builds the three packages' test binaries (dependencies compiled
#   once), and one `cargo build --profile test` the cdylib, the staticlib and the
#   expected-values example from the same artifacts. Every cargo command names the same
#   packages (another set unifies other features and rebuilds: 5 of 27 minutes in a first
#   version). Own target dir (target/aarch64): no lock contention with the x86 builds.
# - Profile overrides for this build only (--config; the x86 builds are unchanged): no debug
#   info; no incremental compilation; the crates whose speed the tests never feel (proc
#   macros and their support crates, build helpers, criterion, cbindgen) at opt-level 0
#   (Cargo.toml's `package."*"` opt-level 2 outranks build-override; proc macros alone were
#   a third of the compile time); dependencies without debug assertions and overflow checks
#   (the gemm crate's and the tokenizer's UB checks slowed the emulated runs). Our own crates
#   keep opt-level 2 with debug assertions, as in the x86 tests. The tokenizer and regex
#   crates stay at opt-level 2: every model load parses the 3.5 MB built-in tokenizer.
# - The kernels' tests run in full at every level (generic, neon, neon-bf16) except
#   matmul::invariance: it checks the third-party gemm crate's batch invariance (the engine
#   does not use that crate), took 7 of 9 emulated minutes, and runs on x86.
# - The runtime's tests (unit, golden, invariance, limits, bad input) and the C ABI's unit
#   tests run at the best level (neon-bf16), except golden's MC means against torch's
#   Bernoulli masks (a 2-minute statistical check of the mask distribution; the seeded golden
#   test matches the reference's masks bit for bit here, which implies it) and the
#   decision-stopping rule's test (statistics over the shipped model's samples, 145 emulated
#   seconds; it runs on x86-64, and its batch invariance is the other tests'). Golden and
#   invariance run again at neon (bf16 weights widened instead of bfdot; f32 products are the
#   same code at both levels), without the arena-bound test (76 emulated seconds; it ran at
#   neon-bf16). Generic is portable
#   Rust and runs in the x86 job.
# - The C test runs against both libraries; no valgrind under qemu (the x86 job runs it).
#
# Measured on a 2-core Debian 12 machine (AMD EPYC Zen 3, qemu 7.2, rustc 1.96), packages
# installed, empty target/aarch64: idle, 10.0 min (598 s: build 5.5 min, tests 4.4 min; a
# clean clone's whole .ci/run took 36 min before the x86 part lost a needless rebuild); with
# another job loading the machine (load average 3.5-4) 18 min. Warm (nothing to rebuild)
# 5-8 min. Installing the packages on a fresh machine adds about a minute (not measured).
# Clean clone of ac48743 on an idle Zen 3 (CI's whole .ci/run 40.8 min): 12.6 min (753 s:
# build 6.1 min; runtime and C ABI tests at neon-bf16 5.5 min, of which the invariance tests
# 203 s, mostly the arena-bound test; neon 0.3 min; C tests 0.7 min). Clean clone of e8e14e6
# (whole .ci/run 40.6 min), without the decision-stopping test here: 10.8 min (650 s: build
# 6.1 min; tests at neon-bf16 3.8 min; neon 0.2 min; C tests 0.7 min).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
TARGET=aarch64-unknown-linux-gnu
OUT_DIR=$ROOT/target/aarch64
BUILD=$OUT_DIR/$TARGET/debug
MODEL=$ROOT/tests/fixtures/tiny-vocab-bf16
CC_A64=aarch64-linux-gnu-gcc

step() { printf '\n==> %s (%ss)\n' "$*" "$SECONDS"; }
SECONDS=0

step "packages: Debian's rustc with the aarch64 std, the cross gcc, qemu-user"
installed() {
    [[ -x /usr/bin/rustc && -x /usr/bin/cargo && -d /usr/lib/rustlib/$TARGET/lib ]] &&
        command -v "$CC_A64" >/dev/null && command -v qemu-aarch64 >/dev/null
}
if installed; then
    echo "installed: $(/usr/bin/rustc -V), $(qemu-aarch64 --version | head -n1)"
else
    SUDO=
    [[ $(id -u) -eq 0 ]] || SUDO=sudo
    # libstd-rust-web-dev is Multi-Arch: same, so apt keeps the arm64 std at exactly the
    # compiler's version, as it must be.
    $SUDO dpkg --add-architecture arm64
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        rustc-web cargo-web libstd-rust-web-dev:arm64 \
        gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null
    installed || { echo "the aarch64 toolchain is still incomplete" >&2; exit 1; }
    echo "installed now: $(/usr/bin/rustc -V)"
fi

export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=$CC_A64
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64
export CC_aarch64_unknown_linux_gnu=$CC_A64 AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export CARGO_TERM_COLOR=never
# A clean CI build gains nothing from incremental compilation (it only costs time and disk).
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
# Every architectural feature qemu emulates (qemu 7.2's user-mode default is also `max`; set
# so that a change of default cannot silently drop the neon-bf16 level).
export QEMU_CPU=max
# emcoder_debug_panic prints its (expected) panic message; a backtrace would only add noise.
export RUST_BACKTRACE=0
CARGO=/usr/bin/cargo

# Crates whose speed does not matter to the tests, built at opt-level 0: proc macros and
# their support crates, build-script helpers, criterion's stack (benches only), cbindgen's
# parser stack (one run, in the header-drift test).
COLD=(proc-macro2 quote syn unicode-ident darling darling_core darling_macro
    derive_builder_core derive_builder_macro ident_case strsim fnv serde_derive thiserror-impl
    zerocopy zerocopy-derive bytemuck_derive dyn-stack-macros macro_rules_attribute-proc_macro
    monostate-impl paste pastey rustversion seq-macro cc shlex find-msvc-tools
    criterion criterion-plot clap clap_builder clap_lex anstyle ciborium ciborium-io
    ciborium-ll tinytemplate oorandom anes cast walkdir same-file page_size alloca
    cbindgen heck indexmap toml toml_parser toml_datetime serde_spanned)
ARGS=(--locked -j "$(nproc)" --target "$TARGET" --target-dir "$OUT_DIR"
    --config 'profile.test.debug=false'
    --config 'profile.test.package."*".opt-level=2'
    --config 'profile.test.package."*".debug-assertions=false'
    --config 'profile.test.package."*".overflow-checks=false')
for c in "${COLD[@]}"; do
    ARGS+=(--config "profile.test.package.$c.opt-level=0")
done

# The same packages in every cargo command (features are unified over the package set).
PKGS=(-p emcoder-kernels -p emcoder -p emcoder-ffi)
step "build: test binaries of emcoder-kernels, emcoder, emcoder-ffi"
"$CARGO" test --no-run "${ARGS[@]}" "${PKGS[@]}" --lib --tests
step "build: libemcoder.so, libemcoder.a and the expected-values generator"
"$CARGO" build --profile test "${ARGS[@]}" "${PKGS[@]}" --lib --example expected_values
# Where libemcoder.so records a SONAME (libemcoder.so.0), programs load that name at run time.
ln -sf libemcoder.so "$BUILD/libemcoder.so.0"

step "kernels: levels under qemu"
"$CARGO" test "${ARGS[@]}" "${PKGS[@]}" --lib -- --exact cpu::tests::detection_is_consistent \
    --nocapture 2>&1 | grep ' levels '
# Skipped here: the gemm crate's own invariance (see above) and the MC means against torch's
# Bernoulli masks (a statistical check of the mask distribution; the seeded golden test
# already matches the reference's masks bit for bit on this architecture).
# Also the decision-stopping rule's test (statistics of the shipped model's samples over 300
# forward passes: 145 emulated seconds, a third of the tests' time; its batch and chunk
# invariance is the other invariance tests', which run here): it runs on x86-64 at the best
# level.
SKIP=(--skip matmul::invariance --skip mc_means_agree_with_torch_bernoulli_masks
    --skip stopping_on_decisions_settles_every_label_and_reuses_the_fixed_n_samples)
# The CUDA kernels' CPU emulation (tests/kernels/cuda_emulated.rs, tests/runtime/
# gpu_emulated.rs) tests no CPU code and runs on x86-64 in every CI run: off here.
export EMCODER_CUDA_EMULATION=off
step "kernels (every level), runtime and C ABI tests at the best level"
"$CARGO" test "${ARGS[@]}" "${PKGS[@]}" --lib --tests -- "${SKIP[@]}"
step "runtime golden and invariance tests at EMCODER_ISA=neon"
EMCODER_ISA=neon "$CARGO" test "${ARGS[@]}" "${PKGS[@]}" --test golden --test invariance -- \
    "${SKIP[@]}" --skip scratch_stays_within_its_bound_for_many_long_texts

OUT=$OUT_DIR/c-test
mkdir -p "$OUT"
step "C: expected values of the Rust API (under qemu)"
qemu-aarch64 "$BUILD/examples/expected_values" "$MODEL" "$OUT/expected.txt"
CFLAGS_TEST=(-std=c11 -Wall -Wextra -Werror -pedantic -O1 -g)
step "C: tests/c/test_emcoder.c against libemcoder.so"
"$CC_A64" "${CFLAGS_TEST[@]}" -Iinclude tests/c/test_emcoder.c -o "$OUT/test_c_shared" \
    -L"$BUILD" -lemcoder -Wl,-rpath,"$BUILD" -lpthread -lm
EMCODER_EXPECTED=$OUT/expected.txt qemu-aarch64 "$OUT/test_c_shared" "$MODEL" "$OUT/expected.txt"
step "C: tests/c/test_emcoder.c against libemcoder.a"
"$CC_A64" "${CFLAGS_TEST[@]}" -Iinclude tests/c/test_emcoder.c -o "$OUT/test_c_static" \
    "$BUILD/libemcoder.a" -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
EMCODER_EXPECTED=$OUT/expected.txt qemu-aarch64 "$OUT/test_c_static" "$MODEL" "$OUT/expected.txt"

step "all aarch64 tests passed"
