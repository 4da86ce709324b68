"""Metric definitions (reference/README.md, "Evaluation metrics") on hand-made cases."""

import numpy as np

from emcoder_ref.data import read_tsv
from emcoder_ref.evaluate import best_thresholds, metrics, rejection_curve


def test_metrics_small():
    y = np.array([[1, 0], [1, 1], [0, 0]])
    pred = np.array([[1, 1], [0, 1], [0, 0]])
    m = metrics(y, pred)
    # label 0: TP1 FP0 FN1 -> P1 R.5 F.667; label 1: TP1 FP1 FN0 -> P.5 R1 F.667
    assert np.allclose(m["per_label"]["f1"], [2 / 3, 2 / 3])
    assert np.isclose(m["macro"]["precision"], 0.75)
    assert np.isclose(m["micro"]["f1"], 2 * 2 / (4 + 1 + 1))
    # samples: text0 F1 2/3, text1 2/3, text2 (nothing true or predicted) 0
    assert np.isclose(m["samples"]["f1"], (2 / 3 + 2 / 3 + 0) / 3)


def test_rejection_curve_order_and_ties():
    y = np.array([[1, 0], [0, 1]])
    pred = np.array([[1, 1], [0, 0]])  # pairs: TP, FP, TN, FN
    e = np.array([[0.5, 0.0], [0.5, 0.9]])
    c = rejection_curve(y, pred, e, steps=4)  # P = 4 pairs, reject 0, 1, 2, 3
    f = [r["macro_f1"] for r in c]
    assert np.isclose(f[0], 0.5)  # label0 {TP, TN} -> 1; label1 {FP, FN} -> 0
    assert np.isclose(f[1], 0.5)  # (1,1) FN rejected first (e 0.9)
    # tie at 0.5: (0,0) flat index 0 goes before (1,0) index 2 -> label0 keeps only TN
    assert np.isclose(f[2], 0.0)
    assert np.isclose(f[3], 0.0)  # only (0,1) FP is left
    assert [r["reject_fraction"] for r in c] == [0, 0.25, 0.5, 0.75]


def test_best_thresholds():
    y = np.array([[1], [1], [0], [0]])
    mean = np.array([[0.95], [0.6], [0.55], [0.1]])
    thr, f1 = best_thresholds(y, mean)
    assert 0.55 < thr[0] <= 0.6 and f1[0] == 1.0


def test_read_tsv_unquotes(tmp_path):
    p = tmp_path / "x.tsv"
    p.write_text('"""We need more content."" ok"\t4,27\tid1\nplain "q" text\t0\tid2\n')
    texts, y, ids = read_tsv(str(p))
    assert texts == ['"We need more content." ok', 'plain "q" text']
    assert y[0, 4] == 1 and y[0, 27] == 1 and y[1, 0] == 1 and ids == ["id1", "id2"]
