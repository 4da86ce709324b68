"""Export a training checkpoint as a canonical model directory.

  reference/.venv/bin/python reference/export.py reference/runs/mini/best.pt \
      models/emcoder-mini --dtype f16

Writes model.safetensors (canonical names, the given dtype), config.json (canonical
keys, labels from data/goemotions/emotions.txt) and a copy of the tokenizer.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emcoder_ref.data import REPO, TOKENIZER  # noqa: E402
from emcoder_ref.io import save_model_dir  # noqa: E402
from emcoder_ref.model import EmCoder, EmCoderConfig  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--dtype", default="f16", choices=["f32", "f16", "bf16"])
    args = ap.parse_args()
    ck = torch.load(args.checkpoint, map_location="cpu")
    cfg = EmCoderConfig.from_dict(ck["config"])
    with open(os.path.join(REPO, "data", "goemotions", "emotions.txt")) as f:
        names = [line.strip() for line in f if line.strip()]
    cfg.id2label = {str(i): n for i, n in enumerate(names)}
    cfg.label2id = {n: i for i, n in enumerate(names)}
    model = EmCoder(cfg)
    model.load_state_dict(ck["model"])
    save_model_dir(model, cfg, args.out, dtype=args.dtype)
    shutil.copyfile(TOKENIZER, os.path.join(args.out, "tokenizer.json"))
    print(f"exported epoch {ck['epoch']} (dev macro F1@0.5 {ck['dev_macro_f1']:.4f}) "
          f"to {args.out} as {args.dtype}")


if __name__ == "__main__":
    main()
