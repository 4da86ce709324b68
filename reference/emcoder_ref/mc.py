"""MC-dropout inference and the statistics of docs/spec/EMCODER.md section 2."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch


@torch.no_grad()
def mc_forward(model, input_ids, attention_mask, n_samples: int, max_batch_size: int = 64,
               mode: str = "philox", seed: int = 0) -> torch.Tensor:
    """Runs n_samples stochastic passes; the batch is stacked sample-major
    (row r = s*B + b) and processed in chunks of max_batch_size rows.

    input_ids, attention_mask: (B, T). Returns logits (n_samples, B, num_labels) f32.
    mode: "philox" (masks from docs/dropout-masks.md, sample index s of row r),
    "torch" (nn.Dropout in train mode, torch RNG) or "off" (all samples equal).
    """
    B = input_ids.shape[0]
    rows = n_samples * B
    out = []
    for start in range(0, rows, max_batch_size):
        r = np.arange(start, min(rows, start + max_batch_size))
        s, b = r // B, r % B  # sample index and text index of each row
        ids, am = input_ids[b], attention_mask[b]
        # trim padding columns no row of this chunk uses (right padding)
        T = int(am.sum(1).max())
        out.append(model(ids[:, :T], am[:, :T], mode=mode, seed=seed, samples=s).float())
    return torch.cat(out).view(n_samples, B, -1)


def entropy(p: np.ndarray) -> np.ndarray:
    """Bernoulli entropy in nats, float64, with 0 ln 0 = 0."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        q = 1.0 - p
        b = np.where(q > 0, -q * np.log(np.where(q > 0, q, 1.0)), 0.0)
    return a + b


def statistics(logits, thresholds: Optional[dict] = None, labels=None) -> dict:
    """logits: (N, B, C). thresholds: {label: {"p": .., "u": ..}} or None (0.5).

    Returns float64 arrays (B, C): mean, std (unbiased, 0 when N == 1),
    total_entropy = H(mean), aleatoric = mean_s H(p_s), epistemic = total - aleatoric
    (0 when N == 1), and predicted (bool): mean >= p and (std <= u when u is given).
    """
    z = np.asarray(logits.detach().cpu() if torch.is_tensor(logits) else logits,
                   dtype=np.float64)
    N, B, C = z.shape
    probs = 1.0 / (1.0 + np.exp(-z))  # (N, B, C)
    mean = probs.mean(0)
    std = probs.std(0, ddof=1) if N > 1 else np.zeros((B, C))
    total = entropy(mean)
    aleatoric = entropy(probs).mean(0)
    epistemic = total - aleatoric if N > 1 else np.zeros((B, C))
    p_thr, u_thr = threshold_arrays(thresholds, labels, C)
    predicted = (mean >= p_thr) & (std <= u_thr)
    return {"mean": mean, "std": std, "total_entropy": total, "aleatoric": aleatoric,
            "epistemic": epistemic, "predicted": predicted, "probs": probs}


def threshold_arrays(thresholds: Optional[dict], labels, C: int):
    """-> (p (C,), u (C,)) arrays; p defaults to 0.5 and u to +inf."""
    p = np.full(C, 0.5)
    u = np.full(C, np.inf)
    if thresholds:
        from .model import LABELS
        labels = labels or LABELS
        for c, name in enumerate(labels):
            t = thresholds.get(name)
            if t is None:
                continue
            p[c] = float(t["p"])
            if "u" in t and t["u"] is not None:
                u[c] = float(t["u"])
    return p, u
