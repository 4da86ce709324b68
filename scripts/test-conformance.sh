#!/usr/bin/env bash
# The tests of reference/conformance.py (docs/conformance.md) on local hub-style snapshots:
# a virtual environment with torch and transformers (target/conformance-venv, made once from
# reference/requirements-conformance.txt), the release emcoder (or $EMCODER_BIN), then pytest.
#
#   bash scripts/test-conformance.sh             set up if needed, build, test
#   bash scripts/test-conformance.sh --prepare   only set up the environment (CI starts this
#                                                in the background while it builds Rust: the
#                                                ~4 GB download is network, not CPU)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${CONFORMANCE_VENV:-$PWD/target/conformance-venv}
PYTHON=${PYTHON:-python3}
REQ=reference/requirements-conformance.txt

ready() {
    [[ -x $VENV/bin/python ]] && cmp -s "$REQ" "$VENV/requirements.txt" &&
        "$VENV/bin/python" -c 'import torch, transformers, safetensors, tokenizers, pytest' 2>/dev/null
}

if ! ready; then
    echo "==> conformance environment: $VENV (torch, transformers; several minutes the first time)"
    SECONDS=0
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --no-cache-dir -r "$REQ"
    cp "$REQ" "$VENV/requirements.txt"
    echo "conformance environment ready in ${SECONDS}s"
fi
[[ ${1:-} == --prepare ]] && exit 0

# EMCODER_BIN set: that binary (.ci/run passes the one scripts/test.sh built).
if [[ -n ${EMCODER_BIN:-} ]]; then
    echo "==> emcoder: $EMCODER_BIN"
else
    echo "==> build the release emcoder"
    cargo build --release --locked -p emcoder-cli
    EMCODER_BIN=$PWD/target/release/emcoder
fi
[[ -x $EMCODER_BIN ]] || { echo "EMCODER_BIN=$EMCODER_BIN is not an executable" >&2; exit 1; }
echo "==> pytest reference/tests/test_conformance.py"
HF_HUB_OFFLINE=1 EMCODER_BIN=$EMCODER_BIN \
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider reference/tests/test_conformance.py
