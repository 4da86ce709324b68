"""Choose per-label decision thresholds on dev and write thresholds.json.

  reference/.venv/bin/python reference/thresholds.py models/emcoder-mini \
      data/goemotions/dev.tsv [--n-samples 50 --seed 1234]

For each label, the value of linspace(0.1, 0.9, 15) that maximizes the label's F1 of
(MC mean probability >= t) on the given split (philox masks, N samples, seed; the
first such value on ties). Output format: {"admiration": {"p": .., "f1": ..}, ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emcoder_ref.data import TOKENIZER, encode, load_tokenizer, read_tsv  # noqa: E402
from emcoder_ref.evaluate import best_thresholds, run_dataset  # noqa: E402
from emcoder_ref.io import load_model_dir  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("tsv")
    ap.add_argument("--n-samples", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", help="default: <model_dir>/thresholds.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="smoke runs: first N texts")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, cfg, _ = load_model_dir(args.model_dir)
    labels = [cfg.id2label[str(i)] for i in range(cfg.num_labels)]
    texts, y, _ = read_tsv(args.tsv, cfg.num_labels)
    if args.limit:
        texts, y = texts[:args.limit], y[:args.limit]
    seqs = encode(load_tokenizer(TOKENIZER), texts)
    st = run_dataset(model, seqs, args.n_samples, "philox", args.seed, None, labels, log=print)
    thr, f1 = best_thresholds(y, st["mean"])
    out = {name: {"p": float(thr[c]), "f1": round(float(f1[c]), 4)}
           for c, name in enumerate(labels)}
    path = args.out or os.path.join(args.model_dir, "thresholds.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    print(f"wrote {path}; dev macro F1 at these thresholds {f1.mean():.4f}")


if __name__ == "__main__":
    main()
