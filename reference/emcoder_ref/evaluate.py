"""Running a model over a data set and the evaluation metrics (see reference/README.md,
"Evaluation metrics", for the exact definitions the Rust `emcoder eval` shares)."""

from __future__ import annotations

import numpy as np
import torch

from .mc import mc_forward, statistics
from .model import pad_batch


@torch.no_grad()
def run_dataset(model, seqs, n_samples: int = 50, mode: str = "philox", seed: int = 1234,
                thresholds=None, labels=None, text_batch: int = 64, log=None) -> dict:
    """MC statistics for every text: dict of (n_texts, C) arrays (mean, std,
    total_entropy, aleatoric, epistemic, predicted). mode "off" means one deterministic
    pass (N = 1). For mode "torch" the caller seeds torch beforehand."""
    model.eval()
    if mode == "off":
        n_samples = 1
    n, C = len(seqs), model.cfg.num_labels
    keys = ("mean", "std", "total_entropy", "aleatoric", "epistemic")
    out = {k: np.zeros((n, C)) for k in keys}
    out["predicted"] = np.zeros((n, C), dtype=bool)
    order = np.argsort([len(s) for s in seqs], kind="stable")  # length-sorted batches
    for bi, i in enumerate(range(0, n, text_batch)):
        sel = order[i:i + text_batch]
        ids, am = pad_batch([seqs[j] for j in sel])  # (b, T)
        z = mc_forward(model, ids, am, n_samples, max_batch_size=1024,
                       mode=mode, seed=seed)  # (N, b, C)
        st = statistics(z, thresholds, labels)
        for k in keys + ("predicted",):
            out[k][sel] = st[k]
        if log and bi % 20 == 0:
            log(f"  {i + len(sel)}/{n} texts")
    return out


def prf(tp, fp, fn):
    """Precision, recall, F1 with 0 where the denominator is 0 (arrays or scalars)."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    p = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    r = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
    f = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    return p, r, f


def counts(y, pred, keep=None):
    """Per-label TP, FP, FN (C,) over the (text, label) pairs where keep is True."""
    y, pred = y.astype(bool), pred.astype(bool)
    k = np.ones_like(y) if keep is None else keep
    return ((y & pred & k).sum(0), (~y & pred & k).sum(0), (y & ~pred & k).sum(0))


def metrics(y, pred) -> dict:
    """y, pred: (n, C) 0/1. Per-label and micro/macro/weighted/samples P/R/F1."""
    tp, fp, fn = counts(y, pred)
    p, r, f = prf(tp, fp, fn)
    support = tp + fn
    mp, mr, mf = prf(tp.sum(), fp.sum(), fn.sum())
    w = support / max(support.sum(), 1)
    yb, pb = y.astype(bool), pred.astype(bool)
    sp, sr, sf = prf((yb & pb).sum(1), (~yb & pb).sum(1), (yb & ~pb).sum(1))
    return {
        "per_label": {"precision": p.tolist(), "recall": r.tolist(), "f1": f.tolist(),
                      "support": support.tolist()},
        "macro": {"precision": float(p.mean()), "recall": float(r.mean()), "f1": float(f.mean())},
        "micro": {"precision": float(mp), "recall": float(mr), "f1": float(mf)},
        "weighted": {"precision": float((p * w).sum()), "recall": float((r * w).sum()),
                     "f1": float((f * w).sum())},
        "samples": {"precision": float(sp.mean()), "recall": float(sr.mean()),
                    "f1": float(sf.mean())},
    }


def rejection_curve(y, pred, epistemic, steps: int = 10) -> list:
    """Macro F1 after rejecting the floor(k * P / steps) most uncertain (text, label)
    pairs, k = 0..steps-1, P = n_texts * C. Pairs are ranked by epistemic descending,
    ties broken by the flat index i*C + c ascending; TP/FP/FN per label are counted
    over the remaining pairs; a label with 2TP+FP+FN = 0 scores F1 0; macro = mean
    over all C labels. Also micro F1 (from the counts summed over labels)."""
    n, C = y.shape
    P = n * C
    e = np.asarray(epistemic, dtype=np.float64).reshape(P)
    rank = np.lexsort((np.arange(P), -e))  # primary: -e ascending; secondary: index
    out = []
    for k in range(steps):
        r = (k * P) // steps
        keep = np.ones(P, dtype=bool)
        keep[rank[:r]] = False
        tp, fp, fn = counts(y, pred, keep.reshape(n, C))
        _, _, f = prf(tp, fp, fn)
        _, _, micro = prf(tp.sum(), fp.sum(), fn.sum())
        out.append({"reject_fraction": k / steps, "macro_f1": float(f.mean()),
                    "micro_f1": float(micro)})
    return out


def best_thresholds(y, mean, grid=np.linspace(0.1, 0.9, 15)):
    """Per label, the grid value maximizing F1 of (mean >= t); first on ties.
    -> (thresholds (C,), f1 (C,))."""
    y = y.astype(bool)
    C = y.shape[1]
    thr, best = np.zeros(C), np.zeros(C)
    for c in range(C):
        f1s = []
        for t in grid:
            pr = mean[:, c] >= t
            f1s.append(float(prf((y[:, c] & pr).sum(), (~y[:, c] & pr).sum(),
                                 (y[:, c] & ~pr).sum())[2]))
        j = int(np.argmax(f1s))
        thr[c], best[c] = grid[j], f1s[j]
    return thr, best
