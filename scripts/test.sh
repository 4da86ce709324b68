#!/usr/bin/env bash
# The project's test command (README, second command; .ci/run calls it too):
# every Rust test of the workspace, the runtime's tests again at every other
# instruction-set level this CPU runs, then the C, C++, Go and Python bindings.
set -euo pipefail
cd "$(dirname "$0")/.."
# With the CUDA backend's code (the `cuda` feature needs no CUDA toolkit to build; without a
# GPU its tests check the error paths and, where NVRTC is installed, the kernels' compile).
features=(--features emcoder-cli/cuda)
cargo test --workspace --locked "${features[@]}"

# The kernels' own tests already run every level this CPU has (each against the scalar
# references). The runtime's golden, invariance and bad-input tests ran above at the best
# level; here they run forced to each lower one through the EMCODER_ISA override, so that
# every path (generic, avx2, avx512, avx512-bf16, amx; neon and neon-bf16 on AArch64) runs
# end to end on every CI machine that has it. The binaries are the ones just built and run
# from the runtime's folder as cargo runs them: another cargo command (`cargo run`,
# `cargo test -p emcoder`) selects another package set, unifies other features and rebuilds
# for minutes.
target_dir=$(cargo metadata --locked --no-deps --format-version 1 |
  sed 's/.*"target_directory":"\([^"]*\)".*/\1/')
levels=$("$target_dir/debug/emcoder" cpu --levels)
best=$(echo "$levels" | tail -n 1)
runtime_tests=$(cargo test --workspace --locked "${features[@]}" --no-run --message-format=json 2>/dev/null |
  grep '"manifest_path":"[^"]*/runtime/Cargo.toml"' | grep -o '"executable":"[^"]*"' | cut -d'"' -f4)
[ -n "$runtime_tests" ] || { echo "no test binaries of the runtime found" >&2; exit 1; }
# Skipped at the lower levels: the decision-stopping rule's test (statistics over samples
# whose kernels the other tests check level by level; 53 of the generic level's 55 s of
# invariance tests, where every FMA is a libm call), and the GPU forward on the CUDA
# kernels' CPU emulation (tests/runtime/gpu_emulated.rs: no CPU kernel of its own).
level_free=(--skip stopping_on_decisions_settles_every_label_and_reuses_the_fixed_n_samples --skip gpu_)
for isa in $levels; do
  [ "$isa" = "$best" ] && continue
  echo "==> runtime tests at EMCODER_ISA=$isa (this CPU runs: $(echo $levels))"
  for t in $runtime_tests; do
    (cd runtime && EMCODER_ISA=$isa "$t" -q "${level_free[@]}")
  done
done

if [ -f scripts/test-bindings.sh ]; then
  bash scripts/test-bindings.sh
fi
