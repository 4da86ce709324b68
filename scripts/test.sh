#!/usr/bin/env bash
# The project's test command (README, second command; .ci/run calls it too):
# every Rust test of the workspace, the runtime's tests again at every other
# instruction-set level this CPU runs, then the C, C++, Go and Python bindings.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked

# The kernels' own tests already run every level this CPU has (each against the scalar
# references). The runtime's golden, invariance and bad-input tests ran above at the best
# level; here they run forced to each lower one through the EMCODER_ISA override, so that
# every path (generic, avx2, avx512, avx512-bf16, amx; neon and neon-bf16 on AArch64) runs
# end to end on every CI machine that has it.
levels=$(cargo run --quiet --locked -p emcoder-cli -- cpu --levels)
best=$(echo "$levels" | tail -n 1)
for isa in $levels; do
  [ "$isa" = "$best" ] && continue
  echo "==> runtime tests at EMCODER_ISA=$isa (this CPU runs: $(echo $levels))"
  EMCODER_ISA=$isa cargo test --locked -p emcoder --tests
done

if [ -f scripts/test-bindings.sh ]; then
  bash scripts/test-bindings.sh
fi
