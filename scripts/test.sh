#!/usr/bin/env bash
# The project's test command (README, second command; .ci/run calls it too):
# every Rust test of the workspace, then the C, C++, Go and Python bindings.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked
if [ -f scripts/test-bindings.sh ]; then
  bash scripts/test-bindings.sh
fi
