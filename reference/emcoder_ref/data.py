"""GoEmotions TSV reading and tokenization."""

from __future__ import annotations

import csv
import os

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKENIZER = os.path.join(REPO, "..", "shared", "assets", "tokenizer.json")


def read_tsv(path: str, num_labels: int = 28):
    """-> (texts list[str], labels (n, num_labels) float32 0/1, ids list[str]).

    Lines are `text<TAB>label ids<TAB>comment id`. A text wrapped in double quotes is
    CSV-quoted (inner quotes doubled); csv's default dialect unquotes it exactly as
    pandas read_csv(sep="\\t") does. Unquoted fields keep their quotes literally.
    """
    texts, labels, ids = [], [], []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.reader(f, delimiter="\t", quotechar='"'):
            if not row:
                continue
            if len(row) != 3:
                raise ValueError(f"{path}: bad row {row!r}")
            texts.append(row[0])
            y = np.zeros(num_labels, dtype=np.float32)
            for c in row[1].split(","):
                y[int(c)] = 1.0
            labels.append(y)
            ids.append(row[2])
    return texts, np.stack(labels), ids


def load_tokenizer(path: str = TOKENIZER):
    from tokenizers import Tokenizer
    return Tokenizer.from_file(path)


def encode(tok, texts):
    """-> list of id lists, each `[CLS] ... [SEP]` (the tokenizer's template)."""
    return [e.ids for e in tok.encode_batch(texts)]
