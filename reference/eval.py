"""Evaluate a model directory on a GoEmotions TSV with the reference.

  reference/.venv/bin/python reference/eval.py models/emcoder-mini data/goemotions/test.tsv \
      [--n-samples 50 --seed 1234 | --torch-rng | --deterministic] [--json] [--out F.json]

MC uses philox masks (docs/dropout-masks.md) by default, so numbers can be compared
number for number with the Rust engine; --torch-rng uses torch's RNG (seeded with --seed);
--deterministic runs one pass with dropout off (std and epistemic are 0).
Metric definitions: reference/README.md, "Evaluation metrics".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emcoder_ref.data import TOKENIZER, encode, load_tokenizer, read_tsv  # noqa: E402
from emcoder_ref.evaluate import metrics, rejection_curve, run_dataset  # noqa: E402
from emcoder_ref.io import load_model_dir  # noqa: E402
from emcoder_ref.mc import threshold_arrays  # noqa: E402


def labels_of(cfg):
    return [cfg.id2label[str(i)] for i in range(cfg.num_labels)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("tsv")
    ap.add_argument("--n-samples", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1234)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--torch-rng", action="store_true")
    g.add_argument("--deterministic", action="store_true")
    ap.add_argument("--json", action="store_true", help="print JSON instead of tables")
    ap.add_argument("--out", help="also write the JSON report to this file")
    ap.add_argument("--dump", help="write per-text statistics to this .npz")
    ap.add_argument("--stats-from", help="reuse the statistics of an earlier --dump (same "
                    "data, mode, N, seed) instead of running the model; decisions are "
                    "recomputed with the model's current thresholds.json")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model, cfg, thr = load_model_dir(args.model_dir)
    labels = labels_of(cfg)
    tokp = os.path.join(args.model_dir, "tokenizer.json")
    tok = load_tokenizer(tokp if os.path.exists(tokp) else TOKENIZER)
    texts, y, _ = read_tsv(args.tsv, cfg.num_labels)
    if args.limit:
        texts, y = texts[:args.limit], y[:args.limit]
    seqs = encode(tok, texts)

    mode = "off" if args.deterministic else ("torch" if args.torch_rng else "philox")
    if mode == "torch":
        torch.manual_seed(args.seed)
    t0 = time.time()
    err = (lambda m: print(m, file=sys.stderr)) if args.json else print
    if args.stats_from:
        d = np.load(args.stats_from)
        st = {k: d[k] for k in d.files if k != "y"}
        assert st["mean"].shape == y.shape, "--stats-from was dumped for other data"
        p_thr, u_thr = threshold_arrays(thr, labels, cfg.num_labels)
        st["predicted"] = (st["mean"] >= p_thr) & (st["std"] <= u_thr)
    else:
        st = run_dataset(model, seqs, args.n_samples, mode, args.seed, thr, labels, log=err)
    secs = time.time() - t0
    n = 1 if mode == "off" else args.n_samples

    with_thr = metrics(y, st["predicted"])
    at_half = metrics(y, st["mean"] >= 0.5)
    report = {
        "model": args.model_dir, "data": args.tsv, "texts": len(texts), "mode": mode,
        "n_samples": n, "seed": None if mode == "off" else args.seed,
        "thresholds": "thresholds.json" if thr else "0.5",
        "seconds": None if args.stats_from else round(secs, 1),
        "labels": labels,
        "macro": with_thr["macro"], "micro": with_thr["micro"],
        "weighted": with_thr["weighted"], "samples": with_thr["samples"],
        "per_label": with_thr["per_label"],
        "at_0_5": {k: at_half[k] for k in ("macro", "micro", "weighted", "samples",
                                          "per_label")},
        "rejection_curve": rejection_curve(y, st["predicted"], st["epistemic"]),
    }
    if args.dump:
        np.savez_compressed(args.dump, y=y, **st)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"{args.model_dir} on {args.tsv}: {len(texts)} texts, mode {mode}, N={n}"
          f"{'' if mode == 'off' else f', seed {args.seed}'}, {secs:.0f}s")
    pl, ph = with_thr["per_label"], at_half["per_label"]
    print(f"\n{'label':15s} {'P':>6s} {'R':>6s} {'F1':>6s} | {'P@.5':>6s} {'R@.5':>6s} "
          f"{'F1@.5':>6s} {'support':>7s}")
    for c, name in enumerate(labels):
        print(f"{name:15s} {pl['precision'][c]:6.3f} {pl['recall'][c]:6.3f} {pl['f1'][c]:6.3f}"
              f" | {ph['precision'][c]:6.3f} {ph['recall'][c]:6.3f} {ph['f1'][c]:6.3f} "
              f"{int(pl['support'][c]):7d}")
    print()
    for avg in ("micro", "macro", "weighted", "samples"):
        a, b = with_thr[avg], at_half[avg]
        print(f"{avg + ' avg':15s} {a['precision']:6.3f} {a['recall']:6.3f} {a['f1']:6.3f}"
              f" | {b['precision']:6.3f} {b['recall']:6.3f} {b['f1']:6.3f}")
    print("\nrejection curve (epistemic, per (text,label) pair), macro F1 / micro F1:")
    print("  " + "  ".join(f"{r['reject_fraction']:.0%}:{r['macro_f1']:.3f}/{r['micro_f1']:.3f}"
                           for r in report["rejection_curve"]))


if __name__ == "__main__":
    main()
