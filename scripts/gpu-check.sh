#!/usr/bin/env bash
# The CUDA backend's check on a machine with an NVIDIA GPU (issue 17), as ONE command that
# needs no Rust there: it runs binaries built here and carried there.
#
#   bash scripts/gpu-check.sh --build   here: builds gpu-bundle/ (the release CLI with the
#                                       `cuda` feature and the GPU test binary, stripped;
#                                       carry the folder to the GPU machine)
#   bash scripts/gpu-check.sh [DIR]     on the GPU machine, from the repository root: writes
#                                       DIR/gpu-check.json and DIR/gpu-check.md (DIR: $OUT,
#                                       else target/gpu-check); about 8 minutes at most
#
# It runs, each step under a time limit so the whole stays within 8 minutes:
#   1. tests/runtime/gpu_device.rs with EMCODER_REQUIRE_GPU: every kernel against the CPU
#      references on odd sizes; the fixtures' f32 logits (1e-4) and bf16 means (0.01) against
#      the CPU engine, chunking and batch composition bit for bit; the shipped model on the
#      first 500 GoEmotions test texts, MC N=50, the same seed on both devices;
#   2. a published-size random model (`emcoder make-model`), `emcoder bench --device cuda`:
#      bf16 and f32, 256 texts of 8..64 tokens and one 16-token text, N=50, with the kernel
#      launches per call;
#   3. benches/gpu_reference.py: the PyTorch reference on the same GPU and inputs (bf16
#      autocast and f32, eager) and the card's measured bf16 matmul rate.
# The libraries come from the pip wheels (nvidia-cublas, nvidia-cuda-nvrtc) of the python3
# on PATH, or the system's. Without a GPU it stops at once with exit code 2 and says why.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUNDLE=gpu-bundle

if [[ ${1:-} == --build ]]; then
    cargo build --release --locked -p emcoder-cli --features cuda
    test_bin=$(cargo test --release --locked -p emcoder --features cuda --test gpu_device --no-run --message-format=json 2>/dev/null |
        grep -o '"executable":"[^"]*gpu_device[^"]*"' | cut -d'"' -f4 | head -n 1)
    [[ -n $test_bin ]] || { echo "the gpu_device test binary was not built" >&2; exit 1; }
    rm -rf "$BUNDLE"
    mkdir -p "$BUNDLE"
    cp target/release/emcoder "$BUNDLE/emcoder"
    cp "$test_bin" "$BUNDLE/gpu_device"
    strip "$BUNDLE/emcoder" "$BUNDLE/gpu_device"
    git rev-parse --short HEAD >"$BUNDLE/COMMIT"
    du -sh "$BUNDLE"/*
    echo "bundle ready: carry $BUNDLE/ and run 'bash scripts/gpu-check.sh' on the GPU machine"
    exit 0
fi

OUTDIR=${1:-${OUT:-target/gpu-check}}
mkdir -p "$OUTDIR"
LOG=$OUTDIR/gpu-check.log
: >"$LOG"
LIMIT=470 # seconds for all steps
SECONDS=0
fail() {
    echo "gpu-check: $*" | tee -a "$LOG" >&2
    printf '{"error": "%s"}\n' "$(echo "$*" | sed 's/"/\\"/g')" >"$OUTDIR/gpu-check.json"
    exit 2
}
[[ -x $BUNDLE/emcoder && -x $BUNDLE/gpu_device ]] ||
    fail "no bundle: run 'bash scripts/gpu-check.sh --build' where Rust is, and carry $BUNDLE/"
command -v nvidia-smi >/dev/null || fail "no NVIDIA GPU here: nvidia-smi is not installed"
nvidia-smi -L >>"$LOG" 2>&1 || fail "no NVIDIA GPU here: nvidia-smi -L failed ($(tail -n 1 "$LOG"))"
# The lib folders of the NVIDIA pip wheels (cuBLAS, NVRTC) of this python, if any.
libs=$(python3 - 2>/dev/null <<'PY' || true
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except Exception:
    roots = []
dirs = {os.path.dirname(p) for r in roots for p in glob.glob(os.path.join(r, "*", "lib", "lib*.so*"))}
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export EMCODER_REPO=$PWD EMCODER_REQUIRE_GPU=1 RUST_BACKTRACE=1
{
    echo "bundle commit: $(cat "$BUNDLE/COMMIT" 2>/dev/null || echo unknown)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
} >>"$LOG" 2>&1

# step NAME BUDGET CMD...: runs CMD with at most BUDGET seconds (and what is left of LIMIT),
# its output appended to the log; its status is recorded, never fatal.
declare -A STATUS
step() {
    local name=$1 budget=$2
    shift 2
    local left=$((LIMIT - SECONDS))
    ((left < budget)) && budget=$left
    if ((budget <= 5)); then
        STATUS[$name]="not run (time)"
        return
    fi
    echo "==> [$SECONDS s] $name (limit ${budget}s): $*" | tee -a "$LOG"
    local rc=0
    timeout "$budget" "$@" >>"$LOG" 2>&1 || rc=$?
    STATUS[$name]=$([[ $rc -eq 0 ]] && echo ok || echo "failed (exit $rc$([[ $rc -eq 124 ]] && echo ', time limit'))")
    echo "    ${STATUS[$name]}" | tee -a "$LOG"
}

step tests 200 "$BUNDLE/gpu_device" --test-threads=1 --nocapture
FULL=$OUTDIR/full-model
[[ -f $FULL/model.safetensors ]] || step make-model 60 "$BUNDLE/emcoder" make-model "$FULL"
for prec in bf16 f32; do
    step "bench-$prec-batch256" 45 sh -c "'$BUNDLE/emcoder' bench --model '$FULL' --device cuda --precision $prec --batch 256 --mixed -n 50 --iters 5 --json > '$OUTDIR/bench-$prec-batch256.json'"
    step "bench-$prec-one16" 30 sh -c "'$BUNDLE/emcoder' bench --model '$FULL' --device cuda --precision $prec --batch 1 --tokens 16 -n 50 --iters 50 --json > '$OUTDIR/bench-$prec-one16.json'"
done
step pytorch 130 sh -c "python3 benches/gpu_reference.py --model '$FULL' --iters 5 > '$OUTDIR/pytorch.json'"

status_json=$(for k in "${!STATUS[@]}"; do printf '%s\t%s\n' "$k" "${STATUS[$k]}"; done)
STATUS_TSV=$status_json SECONDS_USED=$SECONDS python3 - "$OUTDIR" "$LOG" <<'PY'
import json, os, sys
out, log = sys.argv[1], sys.argv[2]
def read(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.loads(f.read().strip().splitlines()[-1])
    except Exception as e:
        return {"missing": str(e)}
checks = [json.loads(l.split(" ", 1)[1]) for l in open(log, errors="replace") if l.startswith("GPU-CHECK ")]
status = dict(l.split("\t", 1) for l in os.environ["STATUS_TSV"].splitlines() if "\t" in l)
r = {"status": status, "seconds": int(os.environ["SECONDS_USED"]), "checks": checks,
     "bench": {f"{p}_{c}": read(f"bench-{p}-{c}.json") for p in ("bf16", "f32") for c in ("batch256", "one16")},
     "pytorch": read("pytorch.json")}
b, pt = r["bench"], r["pytorch"]
def ratio(a, b):
    try:
        return a / b
    except Exception:
        return None
t = {}
t["bf16_batch256_texts_per_s_vs_pytorch_bf16"] = ratio(b["bf16_batch256"].get("texts_per_s"), pt.get("pytorch_bf16_batch256", {}).get("texts_per_s"))
t["f32_batch256_texts_per_s_vs_pytorch_f32"] = ratio(b["f32_batch256"].get("texts_per_s"), pt.get("pytorch_f32_batch256", {}).get("texts_per_s"))
t["bf16_one16_median_ms"] = b["bf16_one16"].get("median_ms")
t["bf16_one16_launches_per_call"] = b["bf16_one16"].get("gpu_launches_per_call")
t["bf16_batch256_share_of_matmul_rate"] = ratio(b["bf16_batch256"].get("gflops"), (pt.get("matmul_bf16_tflops") or 0) * 1e3)
r["targets"] = t
with open(os.path.join(out, "gpu-check.json"), "w") as f:
    json.dump(r, f, indent=1)
md = ["# gpu-check", "", f"{len(checks)} check lines; {r['seconds']} s", "", "| step | status |", "|---|---|"]
md += [f"| {k} | {v} |" for k, v in sorted(status.items())]
md += ["", "| target | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in t.items()]
md += ["", "```"] + [json.dumps(c) for c in checks] + ["```"]
with open(os.path.join(out, "gpu-check.md"), "w") as f:
    f.write("\n".join(md) + "\n")
print("\n".join(md))
PY
for s in "${STATUS[@]}"; do [[ $s == ok ]] || exit 1; done
