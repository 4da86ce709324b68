#!/usr/bin/env bash
# Compile-checks the CUDA kernels (kernels/cuda/emcoder.cu) on a machine without a GPU, as
# CI does on every run: NVRTC of the GPU machine's CUDA version (13.0, pip's
# nvidia-cuda-nvrtc) compiles them the way a model load does (machine code for sm_90,
# Hopper, and sm_80) and to PTX, through the runtime's own code (the `cuda` feature's unit
# test `kernels_compile_with_nvrtc`, which fails here when the library cannot be loaded);
# then pip's ptxas (nvidia-cuda-nvcc) assembles the PTX for sm_90 and prints each kernel's
# registers, shared memory and spills.
#
#   bash scripts/cuda-compile-check.sh
#
# The tools go to target/cuda-tools (a virtual environment, ~130 MB of wheels, reused).
# The test binary is the runtime's unit-test binary that scripts/test.sh builds (the
# workspace's test build has the `cuda` feature); it is built here when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CUDA_VERSION=${EMCODER_CUDA_TOOLS_VERSION:-13.0}
venv=target/cuda-tools
if [[ ! -x $venv/bin/python ]]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import importlib.metadata as m; v = m.version('nvidia-cuda-nvrtc'); assert v.startswith('$CUDA_VERSION.'), v; m.version('nvidia-cuda-nvcc')" 2>/dev/null; then
    echo "==> installing NVRTC and ptxas $CUDA_VERSION.* into $venv"
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps \
        "nvidia-cuda-nvrtc==$CUDA_VERSION.*" "nvidia-cuda-nvcc==$CUDA_VERSION.*"
fi
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
lib=$(dirname "$(find "$site/nvidia" -name 'libnvrtc.so.*' | head -n 1)")
ptxas=$(find "$site/nvidia" -name ptxas -type f | head -n 1)
[[ -d $lib && -x $ptxas ]] || { echo "NVRTC or ptxas not found under $site/nvidia" >&2; exit 1; }

echo "==> NVRTC ($lib) compiles the kernels through the runtime's loader code"
# The runtime's unit-test binary of the workspace test build (same features as scripts/test.sh).
bin=$(cargo test --workspace --locked --features emcoder-cli/cuda --no-run --message-format=json 2>/dev/null |
    grep '"manifest_path":"[^"]*/runtime/Cargo.toml"' | grep '"kind":\["lib"\]' |
    grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | head -n 1)
[[ -n $bin ]] || { echo "the runtime's unit-test binary was not built" >&2; exit 1; }
ptx=target/cuda-tools/ptx
rm -rf "$ptx"
EMCODER_REQUIRE_NVRTC=1 EMCODER_PTX_DIR=$PWD/$ptx LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
    "$bin" --exact cuda::tests::kernels_compile_with_nvrtc --nocapture

echo "==> ptxas ($("$ptxas" --version | tail -n 1)) for sm_90"
for f in "$ptx"/*-sm90.ptx; do
    echo "--- $(basename "$f")"
    "$ptxas" -arch=sm_90 -v -o /dev/null "$f" 2>&1 |
        awk '/Compiling entry function/ { sub(/.*function ./, ""); sub(/. for.*/, ""); k = $0 }
             /Used [0-9]+ registers/ { sub(/.*Used /, ""); printf "  %-22s %s\n", k, $0 }
             /bytes spill/ && !/0 bytes spill stores, 0 bytes spill loads/ { printf "  %-22s %s\n", k, $0 }'
done
echo "CUDA kernels: NVRTC $CUDA_VERSION and ptxas compile them for sm_90 (and sm_80)."
