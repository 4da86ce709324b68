"""Self-consistency checks of the reference (dropout modes, layouts, statistics)."""

import os
import tempfile

import numpy as np
import torch
from safetensors.torch import load_file

from emcoder_ref.io import load_model_dir, save_model_dir
from emcoder_ref.mc import mc_forward, statistics
from emcoder_ref.model import EmCoder, EmCoderConfig, pad_batch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEQS = [[1, 2], [1, 5, 9, 30, 2], [1, 7, 7, 7, 7, 8, 11, 2]]


def tiny(dropout=0.1, bias=False, **kw):
    torch.manual_seed(0)
    cfg = EmCoderConfig(vocab_size=64, d_model=16, n_head=2, n_layers=2, d_ffn=40,
                        dropout=dropout, **kw)
    m = EmCoder(cfg, bias=bias).eval()
    for p in m.parameters():
        if not p.requires_grad:
            continue
        p.data = 0.3 * torch.randn(p.shape) + (1.0 if p.dim() == 1 and p.shape[0] == 16 else 0)
    return m, cfg


def test_philox_p0_equals_off():
    m, _ = tiny(dropout=0.0)
    ids, am = pad_batch(SEQS)
    off = m(ids, am, mode="off")
    z = mc_forward(m, ids, am, 3, mode="philox", seed=5)
    assert torch.allclose(z, off.expand(3, -1, -1))


def test_philox_independent_of_batch_and_chunking():
    m, _ = tiny()
    ids, am = pad_batch(SEQS)
    z = mc_forward(m, ids, am, 4, max_batch_size=64, mode="philox", seed=9)
    z2 = mc_forward(m, ids, am, 4, max_batch_size=5, mode="philox", seed=9)
    assert torch.allclose(z, z2, atol=1e-5)
    for b, s in enumerate(SEQS):  # each text alone gives the same samples
        i1, a1 = pad_batch([s])
        zs = mc_forward(m, i1, a1, 4, mode="philox", seed=9)
        assert torch.allclose(zs[:, 0], z[:, b], atol=1e-5)
    # prefix property: N=2 is a prefix of N=4
    assert torch.allclose(mc_forward(m, ids, am, 2, mode="philox", seed=9), z[:2], atol=1e-6)
    assert not torch.allclose(z[0], z[1])


def test_padding_does_not_change_deterministic_logits():
    m, _ = tiny()
    ids, am = pad_batch(SEQS)
    full = m(ids, am)
    for b, s in enumerate(SEQS):
        i1, a1 = pad_batch([s])
        assert torch.allclose(m(i1, a1)[0], full[b], atol=1e-5)


def test_statistics_single_sample_and_decomposition():
    z = np.random.default_rng(0).normal(size=(1, 2, 28))
    st = statistics(z)
    assert np.all(st["std"] == 0) and np.all(st["epistemic"] == 0)
    z = np.random.default_rng(1).normal(size=(20, 2, 28)) * 3
    st = statistics(z)
    assert np.all(st["epistemic"] > -1e-12)
    assert np.allclose(st["total_entropy"] - st["aleatoric"], st["epistemic"])
    p = 1 / (1 + np.exp(-z))
    assert np.allclose(st["std"], p.std(0, ddof=1))


def test_variants_reload_to_same_logits():
    ids, am = pad_batch(SEQS)
    for variant, bias, family, kw in [("canonical", False, "canonical", {}),
                                      ("alt", False, "hf", {"rot_dim": 4, "norm_eps": 1e-5}),
                                      ("fused", True, "canonical", {})]:
        m, cfg = tiny(bias=bias, **kw)
        want = m(ids, am)
        with tempfile.TemporaryDirectory() as d:
            t = save_model_dir(m, cfg, d, variant=variant, config_family=family)
            m2, cfg2, _ = load_model_dir(d)
            assert torch.allclose(m2(ids, am), want, atol=1e-6), variant
            if variant == "fused":
                assert not any("freqs" in k for k in t)
            assert set(load_file(os.path.join(d, "model.safetensors"))) == set(t)


def test_fixture_goldens_reproduce():
    """The committed fixtures reload (every layout) and give their golden logits."""
    root = os.path.join(REPO, "tests", "fixtures")
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        g = load_file(os.path.join(d, "golden.safetensors"))
        m, cfg, thr = load_model_dir(d)
        lens = g["lengths"].tolist()
        ids = g["input_ids"].split(lens)
        i, a = pad_batch([x.tolist() for x in ids])
        assert torch.allclose(m(i, a), g["logits"], atol=1e-4), name
        z = mc_forward(m, i, a, 8, mode="philox", seed=1234)
        assert torch.allclose(z, g["mc.logits"], atol=1e-4), name
        st = statistics(z, thr)
        assert np.array_equal(st["predicted"].astype(np.uint8), g["mc.predicted"].numpy())
