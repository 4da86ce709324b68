"""Train EmCoder-mini on GoEmotions with the reference model (CPU).

Weighted BCE (pos_weight w_c = clip(1 + ln((N_neg,c + eps)/(N_pos,c + eps)), 0.1, 20)),
AdamW (SparseAdam for the embedding), linear warm-up then cosine decay, length-bucketed batches padded per batch.
Each epoch: a checkpoint `epoch{E}.pt`; the best by dev macro F1 (deterministic, at 0.5)
is copied to `best.pt`. Progress goes to `<out>/train.log` with timestamps.

  reference/.venv/bin/python reference/train.py --out reference/runs/mini
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emcoder_ref.data import REPO, encode, load_tokenizer, read_tsv  # noqa: E402
from emcoder_ref.model import EmCoder, EmCoderConfig, pad_batch  # noqa: E402


def log(fh, msg):
    line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}"
    print(line, flush=True)
    fh.write(line + "\n")
    fh.flush()


def make_batches(lengths, batch, rng, bucket=50):
    """Shuffle, sort chunks of batch*bucket texts by length, cut into batches,
    shuffle the batches. -> list of index arrays."""
    idx = rng.permutation(len(lengths))
    out = []
    for i in range(0, len(idx), batch * bucket):
        chunk = idx[i:i + batch * bucket]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        out += [chunk[j:j + batch] for j in range(0, len(chunk), batch)]
    rng.shuffle(out)
    return out


@torch.no_grad()
def predict_probs(model, seqs, batch=128):
    """Deterministic sigmoid probabilities (n, C) for a list of id lists."""
    model.eval()
    order = np.argsort([len(s) for s in seqs])
    probs = np.zeros((len(seqs), model.cfg.num_labels), dtype=np.float32)
    for i in range(0, len(order), batch):
        sel = order[i:i + batch]
        ids, am = pad_batch([seqs[j] for j in sel])
        probs[sel] = torch.sigmoid(model(ids, am, mode="off")).numpy()
    return probs


def macro_f1(y, pred):
    tp = (y * pred).sum(0)
    fp = ((1 - y) * pred).sum(0)
    fn = (y * (1 - pred)).sum(0)
    f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    return float(f1.mean())


def main():
    ap = argparse.ArgumentParser()
    # Not committed (3.5 MB): data/goemotions/SOURCE.md says where to get it.
    ap.add_argument("--train", default=os.path.join(REPO, "data", "goemotions", "train.tsv"))
    ap.add_argument("--dev", default=os.path.join(REPO, "data", "goemotions", "dev.tsv"))
    ap.add_argument("--out", default=os.path.join(REPO, "reference", "runs", "mini"))
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--n-layers", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--d-ffn", type=int, default=688)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup", type=float, default=0.06, help="fraction of all steps")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--stop-after", type=int, default=0,
                    help="stop after this many epochs of the --epochs schedule (same checkpoints "
                         "as the full run up to there)")
    ap.add_argument("--limit", type=int, default=0, help="smoke runs: use N train texts")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)
    fh = open(os.path.join(args.out, "train.log"), "a")
    log(fh, f"args {vars(args)}")

    # ---- data: token ids per text, multi-hot labels (n, 28) ----
    tok = load_tokenizer()
    if not os.path.exists(args.train):
        sys.exit(f"{args.train}: no such file; the GoEmotions train split is not committed: "
                 "take it as data/goemotions/SOURCE.md says and pass --train PATH")
    tr_texts, tr_y, _ = read_tsv(args.train)
    dv_texts, dv_y, _ = read_tsv(args.dev)
    if args.limit:
        tr_texts, tr_y = tr_texts[:args.limit], tr_y[:args.limit]
    tr_seqs, dv_seqs = encode(tok, tr_texts), encode(tok, dv_texts)
    tr_len = np.array([len(s) for s in tr_seqs])
    log(fh, f"train {len(tr_seqs)} texts, {tr_len.sum()} tokens; dev {len(dv_seqs)}")

    # ---- pos_weight from train label counts ----
    eps = 1e-6
    n_pos = tr_y.sum(0)
    n_neg = len(tr_y) - n_pos
    pos_weight = torch.tensor(np.clip(1 + np.log((n_neg + eps) / (n_pos + eps)), 0.1, 20),
                              dtype=torch.float32)
    log(fh, f"pos_weight {np.round(pos_weight.numpy(), 3).tolist()}")

    # ---- model ----
    cfg = EmCoderConfig(d_model=args.d_model, n_head=args.n_head, n_layers=args.n_layers,
                        d_ffn=args.d_ffn, dropout=args.dropout)
    model = EmCoder(cfg)
    torch.nn.init.normal_(model.encoder.token_embedding.weight, std=0.02)
    n_params = sum(p.numel() for p in model.parameters())
    log(fh, f"config {cfg.to_dict()} params {n_params}")

    # The embedding (50368 x d, 80% of the parameters) gets sparse gradients and a lazy
    # SparseAdam (only the rows of the batch's tokens move; no weight decay); everything
    # else AdamW with weight decay on matrices. Keeps a CPU step cheap.
    model.encoder.token_embedding.sparse = True
    emb = [model.encoder.token_embedding.weight]
    named = [(n, p) for n, p in model.named_parameters()
             if p.requires_grad and "token_embedding" not in n]
    dense = [p for _, p in named]
    opt = torch.optim.AdamW([{"params": [p for _, p in named if p.dim() == 2],
                              "weight_decay": args.weight_decay},
                             {"params": [p for _, p in named if p.dim() < 2],
                              "weight_decay": 0.0}], lr=args.lr)
    opt_emb = torch.optim.SparseAdam(emb, lr=args.lr)
    steps_per_epoch = math.ceil(len(tr_seqs) / args.batch)
    total = steps_per_epoch * args.epochs
    warm = max(1, int(args.warmup * total))

    def lr_at(step):  # linear warm-up, cosine decay to 0
        if step < warm:
            return args.lr * (step + 1) / warm
        return args.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    # ---- train ----
    step, best, t_start = 0, -1.0, time.time()
    for epoch in range(1, args.epochs + 1):
        model.train()
        t_ep, run_loss = time.time(), 0.0
        batches = make_batches(tr_len, args.batch, rng)
        for bi, sel in enumerate(batches):
            ids, am = pad_batch([tr_seqs[j] for j in sel])  # (b, T)
            y = torch.from_numpy(tr_y[sel])  # (b, 28)
            for g in opt.param_groups + opt_emb.param_groups:
                g["lr"] = lr_at(step)
            logits = model(ids, am, mode="torch")  # dropout via torch RNG
            loss = F.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight)
            opt.zero_grad(set_to_none=True)
            opt_emb.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(dense, 1.0)  # dense parameters only
            opt.step()
            opt_emb.step()
            step += 1
            run_loss += loss.item()
            if (bi + 1) % 200 == 0:
                el = time.time() - t_ep
                eta = el / (bi + 1) * (len(batches) - bi - 1)
                log(fh, f"epoch {epoch} step {bi + 1}/{len(batches)} loss "
                        f"{run_loss / (bi + 1):.4f} lr {lr_at(step):.2e} "
                        f"{el:.0f}s elapsed, epoch ETA {eta:.0f}s")
        probs = predict_probs(model, dv_seqs)
        f1 = macro_f1(dv_y, (probs >= 0.5).astype(np.float32))
        ck = os.path.join(args.out, f"epoch{epoch}.pt")
        torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "epoch": epoch,
                    "dev_macro_f1": f1, "args": vars(args)}, ck)
        if f1 > best:
            best = f1
            shutil.copyfile(ck, os.path.join(args.out, "best.pt"))
        log(fh, f"epoch {epoch} done: train loss {run_loss / len(batches):.4f} dev macro F1@0.5 "
                f"{f1:.4f} (best {best:.4f}); epoch {time.time() - t_ep:.0f}s, "
                f"total {time.time() - t_start:.0f}s")
        if epoch == args.stop_after:
            log(fh, f"stopping after epoch {epoch} of {args.epochs} (--stop-after)")
            break
    log(fh, f"finished in {time.time() - t_start:.0f}s, best dev macro F1@0.5 {best:.4f}")


if __name__ == "__main__":
    main()
