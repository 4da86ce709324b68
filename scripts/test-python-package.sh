#!/usr/bin/env bash
# The Python package as a user gets it: builds the wheel (`pip wheel ./bindings/python`: cargo
# through setuptools-rust, the default model bundled), installs it with its bulk extras into a
# fresh virtual environment, and runs the Python tests against the installed package (not the
# source tree): the Pythonic API, the binding's own tests, and emcoder.bulk on a local Ray
# cluster (a head and two worker nodes) over the GoEmotions test split, compared row for row
# with `emcoder predict --json`. CI runs this (.ci/run); so can you:
#
#   bash scripts/test-python-package.sh
#
# Needs: cargo, python3 (>= 3.9, with venv), network access to the Python package index.
# EMCODER_BULK_SAMPLES (default 4) sets N of the cluster test; EMCODER_BULK_LIMIT=K scores only
# the first K texts of the split.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
OUT=$ROOT/target/python-package
# The wheel's cargo build shares the workspace's target folder with `make lib`, so it only
# relinks what an earlier release build already compiled.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SECONDS=0

rm -rf "$OUT"
mkdir -p "$OUT"
"$PYTHON" -m venv "$OUT/venv"
PIP=("$OUT/venv/bin/python" -m pip --disable-pip-version-check --no-input)

echo "==> pip wheel ./bindings/python"
"${PIP[@]}" wheel --no-deps -w "$OUT/wheels" ./bindings/python
wheel=$(ls "$OUT"/wheels/emcoder-*.whl)
echo "wheel: $wheel ($(du -h "$wheel" | cut -f1))"

echo "==> pip install the wheel with [bulk,test] into a fresh virtual environment"
"${PIP[@]}" install "$wheel[bulk,test]"

# EMCODER_CLI set: that binary (.ci/run passes the one scripts/test.sh built: a release build
# of the CLI alone would compile the runtime again, since `-p emcoder-cli` unifies other
# dependency features than the library's build; 2.4 of CI's minutes).
if [[ -n ${EMCODER_CLI:-} ]]; then
    echo "==> emcoder CLI, the reference of the bulk test: $EMCODER_CLI"
else
    echo "==> emcoder CLI (release), the reference of the bulk test"
    cargo build --release --locked -p emcoder-cli --bin emcoder
    EMCODER_CLI=$CARGO_TARGET_DIR/release/emcoder
fi
[[ -x $EMCODER_CLI ]] || { echo "EMCODER_CLI=$EMCODER_CLI is not an executable" >&2; exit 1; }
export EMCODER_CLI

echo "==> the tests, against the installed package [$((SECONDS / 60))m$((SECONDS % 60))s]"
# From a folder outside the checkout's Python path, so `import emcoder` can only find the
# installed copy (conftest.py adds the source tree unless EMCODER_TEST_INSTALLED=1).
expected=$ROOT/target/bindings-test/expected.txt
[ -f "$expected" ] && export EMCODER_EXPECTED=$expected
unset EMCODER_LIB EMCODER_MODEL
cd "$OUT"
EMCODER_TEST_INSTALLED=1 RAY_DISABLE_USAGE_STATS=1 "$OUT/venv/bin/pytest" -q -p no:cacheprovider \
    "$ROOT/bindings/python/tests/test_package.py" "$ROOT/bindings/python/tests/test_emcoder.py" \
    "$ROOT/bindings/python/tests/test_bulk.py"
echo "==> Python package: done in $((SECONDS / 60))m$((SECONDS % 60))s"
