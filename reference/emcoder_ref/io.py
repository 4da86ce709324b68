"""Model directories: writer for the canonical / alt / fused layouts, loader.

Layouts (tensor names for layer i):
  canonical  encoder.token_embedding.weight, encoder.embed_norm.weight,
             encoder.layers.i.ln1.weight, encoder.layers.i.attn.{q,k,v,out}_proj.weight,
             encoder.layers.i.attn.rotary_emb.freqs, encoder.layers.i.ln2.weight,
             encoder.layers.i.ffn.{gate,up,down}_proj.weight, encoder.final_norm.weight,
             classifier.0.{weight,bias} (d,d), classifier.3.{weight,bias} (28,d)
  alt        model.* instead of encoder.*, attn.wq/wk/wv/wo, norm1/norm2, ffn.w1/w3/w2
             (w1 = gate, w3 = up, w2 = down), ONE shared model.rotary_emb.freqs,
             pre_classifier.* (d,d) and classifier.* (28,d)
  fused      encoder.layers.i.attn.Wqkv (3d,d) rows q,k,v; attn.Wo; ffn.w12 (2f,d) rows
             gate then up; ffn.w2; no freqs tensor (derived from rope_theta, head_dim);
             classifier.dense.* and classifier.out_proj.*
"""

from __future__ import annotations

import json
import os
import re

import torch
from safetensors.torch import load_file, save_file

from .model import EmCoder, EmCoderConfig

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}

ALT_LAYER = {"ln1": "norm1", "ln2": "norm2", "attn.q_proj": "attn.wq", "attn.k_proj": "attn.wk",
             "attn.v_proj": "attn.wv", "attn.out_proj": "attn.wo", "ffn.gate_proj": "ffn.w1",
             "ffn.up_proj": "ffn.w3", "ffn.down_proj": "ffn.w2"}
HEAD = {"alt": {"classifier.0": "pre_classifier", "classifier.3": "classifier"},
        "fused": {"classifier.0": "classifier.dense", "classifier.3": "classifier.out_proj"}}
HF_KEYS = {"d_model": "hidden_size", "n_head": "num_attention_heads",
           "n_layers": "num_hidden_layers", "d_ffn": "intermediate_size",
           "dropout": "hidden_dropout_prob", "norm_eps": "rms_norm_eps"}


def to_variant(sd: dict, n_layers: int, variant: str) -> dict:
    """Canonical state dict -> tensors named for `variant`."""
    if variant == "canonical":
        return dict(sd)
    out = {}
    if variant == "alt":
        freqs = [sd[f"encoder.layers.{i}.attn.rotary_emb.freqs"] for i in range(n_layers)]
        if any(not torch.equal(f, freqs[0]) for f in freqs):
            raise ValueError("alt layout stores one shared freqs tensor; layers differ")
        out["model.rotary_emb.freqs"] = freqs[0]
        for k, v in sd.items():
            if k.endswith("rotary_emb.freqs"):
                continue
            m = re.match(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$", k)
            if m:
                k = f"model.layers.{m[1]}.{ALT_LAYER[m[2]]}.{m[3]}"
            elif k.startswith("encoder."):
                k = "model." + k[len("encoder."):]
            else:
                k = _rename_head(k, HEAD["alt"])
            out[k] = v
        return out
    if variant == "fused":
        for k, v in sd.items():
            if k.endswith("rotary_emb.freqs") or re.search(r"(q_proj|k_proj|v_proj|up_proj)", k):
                continue
            m = re.match(r"(encoder\.layers\.\d+)\.(.+)\.(weight|bias)$", k)
            if m and m[2] == "attn.out_proj":
                k = f"{m[1]}.attn.Wo.{m[3]}"
            elif m and m[2] == "ffn.down_proj":
                k = f"{m[1]}.ffn.w2.{m[3]}"
            elif m and m[2] == "ffn.gate_proj":
                up = sd[f"{m[1]}.ffn.up_proj.{m[3]}"]
                k, v = f"{m[1]}.ffn.w12.{m[3]}", torch.cat([v, up], 0)  # (2f, d) gate, up
            elif not m:
                k = _rename_head(k, HEAD["fused"])
            out[k] = v
        for i in range(n_layers):
            for part in ("weight", "bias"):
                q = sd.get(f"encoder.layers.{i}.attn.q_proj.{part}")
                if q is None:
                    continue
                kv = [sd[f"encoder.layers.{i}.attn.{n}_proj.{part}"] for n in ("k", "v")]
                out[f"encoder.layers.{i}.attn.Wqkv.{part}"] = torch.cat([q] + kv, 0)  # (3d, d)
        return out
    raise ValueError(f"unknown variant {variant}")


def _rename_head(k: str, table: dict) -> str:
    for a, b in table.items():
        if k.startswith(a + "."):
            return b + k[len(a):]
    return k


def from_variant(t: dict, cfg: EmCoderConfig) -> dict:
    """Inverse of to_variant (detects the layout); missing freqs use the default."""
    from .model import default_freqs
    d, f, L = cfg.d_model, cfg.d_ffn, cfg.n_layers
    out = {}
    if "model.rotary_emb.freqs" in t:  # alt
        inv = {v: k for k, v in ALT_LAYER.items()}
        for k, v in t.items():
            m = re.match(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)$", k)
            if k == "model.rotary_emb.freqs":
                for i in range(L):
                    out[f"encoder.layers.{i}.attn.rotary_emb.freqs"] = v
                continue
            if m:
                k = f"encoder.layers.{m[1]}.{inv[m[2]]}.{m[3]}"
            elif k.startswith("model."):
                k = "encoder." + k[len("model."):]
            else:
                k = _rename_head(k, {b: a for a, b in HEAD["alt"].items()})
            out[k] = v
        return out
    for k, v in t.items():
        m = re.match(r"(encoder\.layers\.\d+)\.(attn\.Wqkv|attn\.Wo|ffn\.w12|ffn\.w2)\.(\w+)$", k)
        if not m:
            out[_rename_head(k, {b: a for a, b in HEAD["fused"].items()})] = v
        elif m[2] == "attn.Wqkv":
            for n, part in zip("qkv", v.split(d, 0)):
                out[f"{m[1]}.attn.{n}_proj.{m[3]}"] = part
        elif m[2] == "ffn.w12":
            out[f"{m[1]}.ffn.gate_proj.{m[3]}"], out[f"{m[1]}.ffn.up_proj.{m[3]}"] = v.split(f, 0)
        else:
            out[f"{m[1]}.{'attn.out_proj' if m[2] == 'attn.Wo' else 'ffn.down_proj'}.{m[3]}"] = v
    for i in range(L):
        out.setdefault(f"encoder.layers.{i}.attn.rotary_emb.freqs",
                       default_freqs(cfg.rotary_dim, cfg.rope_theta))
    return out


def config_dict(cfg: EmCoderConfig, family: str = "canonical") -> dict:
    d = {"model_type": "emcoder", **cfg.to_dict()}
    if family == "hf":
        d = {HF_KEYS.get(k, k): v for k, v in d.items()}
        d.pop("rot_dim", None)  # the HF family has no such key; freqs length tells it
    return d


def save_model_dir(model: EmCoder, cfg: EmCoderConfig, path: str, dtype: str = "f32",
                   variant: str = "canonical", thresholds: dict | None = None,
                   config_family: str = "canonical") -> dict:
    """Writes model.safetensors, config.json and (optional) thresholds.json.
    Returns the stored tensors (in the stored dtype)."""
    os.makedirs(path, exist_ok=True)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tensors = {k: v.to(DTYPES[dtype]).contiguous()
               for k, v in to_variant(sd, cfg.n_layers, variant).items()}
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config_dict(cfg, config_family), f, indent=2)
        f.write("\n")
    if thresholds is not None:
        with open(os.path.join(path, "thresholds.json"), "w") as f:
            json.dump(thresholds, f, indent=2)
            f.write("\n")
    return tensors


def load_config(path: str) -> EmCoderConfig:
    with open(os.path.join(path, "config.json")) as f:
        return EmCoderConfig.from_dict(json.load(f))


def load_thresholds(path: str):
    p = os.path.join(path, "thresholds.json")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def load_model_dir(path: str) -> tuple[EmCoder, EmCoderConfig, dict | None]:
    """Loads a model directory (canonical layout; alt and fused also recognised)
    with weights upcast to f32. -> (model in eval mode, config, thresholds or None)."""
    cfg = load_config(path)
    t = load_file(os.path.join(path, "model.safetensors"))
    sd = {k: v.float() for k, v in from_variant(t, cfg).items()}
    freqs = sd["encoder.layers.0.attn.rotary_emb.freqs"]
    if 2 * freqs.shape[0] != cfg.rotary_dim:
        cfg.rot_dim = 2 * freqs.shape[0]
    bias = "encoder.layers.0.attn.q_proj.bias" in sd
    model = EmCoder(cfg, bias=bias)
    model.load_state_dict(sd, strict=True)
    model.eval()
    return model, cfg, load_thresholds(path)
