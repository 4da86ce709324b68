#!/usr/bin/env bash
# Rebuilds models/emcoder-mini from scratch (CPU; about 1.5 h on 2 busy cores).
# Run from the repository root. Steps:
#   1. train 8 epochs (reference/runs/mini/{epoch*.pt,best.pt,train.log})
#   2. export best.pt as F16 to models/emcoder-mini (+ config.json, tokenizer.json)
#   3. thresholds on dev: MC mean, N=50, philox masks, seed 1234 (concurrently with
#      step 4's model run on test, which does not need the thresholds)
#   4. test evaluation, deterministic and MC N=50 philox seed 1234, JSON reports in
#      models/emcoder-mini/eval/
set -euo pipefail
PY=reference/.venv/bin/python
M=models/emcoder-mini
RUN=${RUN:-reference/runs/mini}
if [ "${SKIP_TRAIN:-0}" != 1 ]; then
  $PY reference/train.py --out "$RUN" --threads 1
fi
$PY reference/export.py "$RUN/best.pt" "$M" --dtype f16
mkdir -p "$M/eval"
$PY reference/thresholds.py "$M" data/goemotions/dev.tsv --n-samples 50 --seed 1234 --threads 1 &
T=$!
$PY reference/eval.py "$M" data/goemotions/test.tsv --n-samples 50 --seed 1234 --threads 1 \
    --dump "$RUN/test-mc50.npz" > /dev/null
wait $T
$PY reference/eval.py "$M" data/goemotions/test.tsv --n-samples 50 --seed 1234 \
    --stats-from "$RUN/test-mc50.npz" --out "$M/eval/test-mc50-philox-seed1234.json"
$PY reference/eval.py "$M" data/goemotions/test.tsv --deterministic \
    --out "$M/eval/test-deterministic.json"
# the small reports the Rust test tests/cli/eval_shipped_model.rs compares against
$PY reference/eval.py "$M" data/goemotions/test.tsv --limit 300 --deterministic \
    --out "$M/eval/test300-deterministic.json" > /dev/null
$PY reference/eval.py "$M" data/goemotions/test.tsv --limit 300 --n-samples 20 --seed 1234 \
    --out "$M/eval/test300-mc20-seed1234.json" > /dev/null
