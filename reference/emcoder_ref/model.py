"""EmCoder reference model: an independent PyTorch implementation of
docs/spec/EMCODER.md built from stock torch modules.

Module names produce the canonical state_dict names directly, e.g.
`encoder.layers.0.attn.q_proj.weight`, `classifier.3.bias`.

Three dropout modes at the 2*n_layers+1 sites (see docs/dropout-masks.md):
  - "off":    eval, no dropout;
  - "torch":  the nn.Dropout modules in train mode (torch's own RNG), the
              published `mc_forward` path;
  - "philox": counter-based masks from `masks.keep_mask(seed, p, sample, site, pos, width)`,
              with a per-row sample index.
Inputs are right-padded (B, T) ids plus a (B, T) attention mask; the positions of
each text are 0..len-1 (column index, since padding is on the right).
"""

from __future__ import annotations

from dataclasses import dataclass, field, asdict
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import masks

LABELS = [
    "admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion",
    "curiosity", "desire", "disappointment", "disapproval", "disgust", "embarrassment",
    "excitement", "fear", "gratitude", "grief", "joy", "love", "nervousness", "optimism",
    "pride", "realization", "relief", "remorse", "sadness", "surprise", "neutral",
]

MODES = ("off", "torch", "philox")


@dataclass
class EmCoderConfig:
    """Canonical config keys (config.json of the canonical layout)."""
    vocab_size: int = 50368
    d_model: int = 768
    n_head: int = 12
    n_layers: int = 12
    d_ffn: int = 2048
    dropout: float = 0.1
    num_labels: int = 28
    id2label: dict = field(default_factory=lambda: {str(i): l for i, l in enumerate(LABELS)})
    label2id: dict = field(default_factory=lambda: {l: i for i, l in enumerate(LABELS)})
    rope_theta: float = 10000.0
    norm_eps: Optional[float] = None  # None = torch default, f32 machine epsilon
    rot_dim: Optional[int] = None  # None = head_dim

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def rotary_dim(self) -> int:
        return self.rot_dim if self.rot_dim is not None else self.head_dim

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["norm_eps"] is None:
            del d["norm_eps"]
        if d["rot_dim"] is None:
            del d["rot_dim"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EmCoderConfig":
        """Accepts the canonical keys and the Hugging Face generic names."""
        hf = {"hidden_size": "d_model", "num_attention_heads": "n_head",
              "num_hidden_layers": "n_layers", "intermediate_size": "d_ffn",
              "hidden_dropout_prob": "dropout", "rms_norm_eps": "norm_eps"}
        kw = {}
        for k, v in d.items():
            k = hf.get(k, k)
            if k in cls.__dataclass_fields__:
                kw[k] = v
        if "id2label" in kw:
            kw["id2label"] = {str(k): v for k, v in kw["id2label"].items()}
        return cls(**kw)


def default_freqs(rot_dim: int, theta: float) -> torch.Tensor:
    """freqs[i] = 1 / theta^(2i/rot_dim), i < rot_dim/2; shape (rot_dim/2,), f32."""
    return 1.0 / (theta ** (torch.arange(0, rot_dim, 2, dtype=torch.float32) / rot_dim))


class RotaryEmbedding(nn.Module):
    """Interleaved (GPT-J) RoPE with a stored `freqs` parameter (rot_dim/2,)."""

    def __init__(self, rot_dim: int, theta: float):
        super().__init__()
        self.freqs = nn.Parameter(default_freqs(rot_dim, theta), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, H, T, hd); positions t = 0..T-1
        T = x.shape[-2]
        r = 2 * self.freqs.shape[0]
        t = torch.arange(T, dtype=torch.float32, device=x.device)
        ang = t[:, None] * self.freqs.float()[None, :]  # (T, r/2)
        cos, sin = ang.cos(), ang.sin()
        xr = x[..., :r].float().reshape(*x.shape[:-1], r // 2, 2)  # (B,H,T,r/2,2)
        x0, x1 = xr[..., 0], xr[..., 1]
        out = torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], dim=-1)
        out = out.reshape(*x.shape[:-1], r).to(x.dtype)
        return torch.cat([out, x[..., r:]], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: EmCoderConfig, bias: bool):
        super().__init__()
        d = cfg.d_model
        self.n_head = cfg.n_head
        self.q_proj = nn.Linear(d, d, bias=bias)
        self.k_proj = nn.Linear(d, d, bias=bias)
        self.v_proj = nn.Linear(d, d, bias=bias)
        self.out_proj = nn.Linear(d, d, bias=bias)
        self.rotary_emb = RotaryEmbedding(cfg.rotary_dim, cfg.rope_theta)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        # x: (B, T, d); key_mask: (B, T) bool, True = real token
        B, T, d = x.shape
        H = self.n_head

        def heads(y):  # (B, T, d) -> (B, H, T, hd)
            return y.view(B, T, H, d // H).transpose(1, 2)

        q = self.rotary_emb(heads(self.q_proj(x)))
        k = self.rotary_emb(heads(self.k_proj(x)))
        v = heads(self.v_proj(x))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :],
                                           dropout_p=0.0)  # (B, H, T, hd)
        return self.out_proj(a.transpose(1, 2).reshape(B, T, d))


class SwiGLU(nn.Module):
    def __init__(self, cfg: EmCoderConfig, bias: bool):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.d_ffn, bias=bias)
        self.up_proj = nn.Linear(cfg.d_model, cfg.d_ffn, bias=bias)
        self.down_proj = nn.Linear(cfg.d_ffn, cfg.d_model, bias=bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, cfg: EmCoderConfig, bias: bool):
        super().__init__()
        self.ln1 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = Attention(cfg, bias)
        self.drop1 = nn.Dropout(cfg.dropout)  # site attn_out (no parameters)
        self.ln2 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.ffn = SwiGLU(cfg, bias)
        self.drop2 = nn.Dropout(cfg.dropout)  # site ffn_out


class Encoder(nn.Module):
    def __init__(self, cfg: EmCoderConfig, bias: bool):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.embed_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.layers = nn.ModuleList([Layer(cfg, bias) for _ in range(cfg.n_layers)])
        self.final_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)


class EmCoder(nn.Module):
    def __init__(self, cfg: EmCoderConfig, bias: bool = False):
        super().__init__()
        self.cfg = cfg
        self.bias = bias
        self.encoder = Encoder(cfg, bias)
        d = cfg.d_model
        self.classifier = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Dropout(cfg.dropout),
                                        nn.Linear(d, cfg.num_labels))

    # ---- dropout at a site --------------------------------------------------
    def _drop(self, x, module: nn.Dropout, site: int, mode: str, seed: int,
              samples: Optional[np.ndarray]):
        """x: (B, T, w) or (B, w) for the classifier site (pos 0)."""
        p = float(np.float32(self.cfg.dropout))
        if mode == "off" or p == 0.0:
            return x
        if mode == "torch":
            return F.dropout(x, p=module.p, training=True)  # the module's p, torch RNG
        # philox: keep bits from the counter-based generator. A bit depends on
        # (seed, sample, site, pos, channel) only, not on the text, so a table
        # (samples, positions, width) per site is computed once and indexed.
        B = x.shape[0]
        smp = torch.as_tensor(np.asarray(samples, dtype=np.int64).reshape(B))
        T = x.shape[1] if x.dim() == 3 else 1  # the classifier site uses pos 0
        table = self._mask_table(seed, p, site, x.shape[-1], int(smp.max()) + 1, T)
        keep = table[smp, :T].reshape(x.shape)  # (B, T, w) or (B, w)
        scale = np.float32(1.0) / (np.float32(1.0) - np.float32(p))
        return x * keep.to(x.device, x.dtype) * float(scale)

    def _mask_table(self, seed, p, site, width, n_samples, T) -> torch.Tensor:
        """Cached keep bits (S >= n_samples, P >= T, width) for one site."""
        cache = self.__dict__.setdefault("_mask_cache", {})
        key = (seed, p, site, width)
        t = cache.get(key)
        if t is None or t.shape[0] < n_samples or t.shape[1] < T:
            S, P = (0, 64) if t is None else t.shape[:2]
            S = max(S, n_samples)
            P = P if T <= P else max(T, 2 * P)
            k = masks.keep_mask(seed, p, np.arange(S)[:, None], site, np.arange(P)[None, :],
                                width)  # (S, P, width) bool
            t = cache[key] = torch.from_numpy(k)
        return t

    # ---- forward --------------------------------------------------------------
    def forward_debug(self, input_ids, attention_mask, mode: str = "off", seed: int = 0,
                      samples=None) -> dict:
        """input_ids, attention_mask: (B, T). samples: (B,) sample index per row
        (philox mode). Returns hidden states, pooled vector and logits."""
        assert mode in MODES, mode
        cfg = self.cfg
        L = cfg.n_layers
        key_mask = attention_mask.bool()  # (B, T)
        enc = self.encoder
        out = {}
        h = enc.embed_norm(enc.token_embedding(input_ids))  # (B, T, d)
        out["embed"] = h
        layers = []
        for l, layer in enumerate(enc.layers):
            a = layer.attn(layer.ln1(h), key_mask)  # (B, T, d)
            h = h + self._drop(a, layer.drop1, 2 * l, mode, seed, samples)
            f = layer.ffn(layer.ln2(h))  # (B, T, d)
            h = h + self._drop(f, layer.drop2, 2 * l + 1, mode, seed, samples)
            layers.append(h)
        out["layers"] = layers
        h = enc.final_norm(h)
        out["final"] = h
        # masked mean pooling: (B, d)
        m = attention_mask.to(h.dtype).unsqueeze(-1)  # (B, T, 1)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        out["pooled"] = pooled
        c = self.classifier
        z = c[1](c[0](pooled))  # (B, d) Linear -> GELU
        z = self._drop(z, c[2], 2 * L, mode, seed, samples)
        out["logits"] = c[3](z)  # (B, num_labels)
        return out

    def forward(self, input_ids, attention_mask, mode: str = "off", seed: int = 0,
                samples=None) -> torch.Tensor:
        return self.forward_debug(input_ids, attention_mask, mode, seed, samples)["logits"]


def pad_batch(seqs, pad_id: int = 0):
    """List of id lists -> (ids (B, T) int64, mask (B, T) int64), right-padded."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids, mask
