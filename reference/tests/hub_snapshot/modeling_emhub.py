"""A stand-in for a published EmCoder checkpoint's remote code (`trust_remote_code=True`),
for the tests of reference/conformance.py. It is deliberately NOT built from emcoder_ref:
it is "someone else's" implementation whose undocumented choices the tool must discover.

The `publisher_*` config keys say how this publisher built the model (the details
docs/spec/EMCODER.md leaves open). emcoder never reads them: to emcoder they are unknown
keys, so the conformance tool has to find the matching loader options itself.

- publisher_names:    "canonical" (encoder.*, ln1, attn.q_proj, ffn.gate_proj, classifier.0/3)
                      or "llama" (model.*, attn_norm, attention.wq / Wqkv, feed_forward.w1 /
                      w12, pre_classifier / classifier, one shared rotary freqs)
- publisher_qkv:      None (split q, k, v) or the row order of a fused projection ("kqv", ...)
- publisher_gate_up:  None (split) or the row order of a fused one ("gate_up", "up_gate")
- publisher_w1_is_up: split tensors: the one named gate_proj / w1 is really the up projection
- publisher_eps:      the RMSNorm epsilon actually used (None: torch's default)
- publisher_gelu:     "none" (exact erf) or "tanh"
- publisher_rotary_pairs:    "interleaved" or "half" (rotate_half)
- publisher_rotary_channels: "first" or "last"
- publisher_attn_scale:      "sqrt" (q.k / sqrt(hd)) or "linear" (q.k / hd): no emcoder
                             option covers it (the "does not conform" case)
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class EmHubConfig(PretrainedConfig):
    model_type = "emhub"

    def __init__(self, vocab_size=50368, hidden_size=32, num_attention_heads=4,
                 num_hidden_layers=2, intermediate_size=64, hidden_dropout_prob=0.1,
                 rope_theta=10000.0, rotary_dim=None, publisher_names="canonical",
                 publisher_qkv=None, publisher_gate_up=None, publisher_w1_is_up=False,
                 publisher_eps=None, publisher_gelu="none", publisher_rotary_pairs="interleaved",
                 publisher_rotary_channels="first", publisher_attn_scale="sqrt", **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.num_hidden_layers = num_hidden_layers
        self.intermediate_size = intermediate_size
        self.hidden_dropout_prob = hidden_dropout_prob
        self.rope_theta = rope_theta
        self.rotary_dim = rotary_dim
        self.publisher_names = publisher_names
        self.publisher_qkv = publisher_qkv
        self.publisher_gate_up = publisher_gate_up
        self.publisher_w1_is_up = publisher_w1_is_up
        self.publisher_eps = publisher_eps
        self.publisher_gelu = publisher_gelu
        self.publisher_rotary_pairs = publisher_rotary_pairs
        self.publisher_rotary_channels = publisher_rotary_channels
        self.publisher_attn_scale = publisher_attn_scale
        super().__init__(**kwargs)


class Rotary(nn.Module):
    def __init__(self, c):
        super().__init__()
        hd = c.hidden_size // c.num_attention_heads
        self.rot = c.rotary_dim or hd
        self.hd = hd
        self.half = c.publisher_rotary_pairs == "half"
        self.last = c.publisher_rotary_channels == "last"
        f = 1.0 / (c.rope_theta ** (torch.arange(0, self.rot, 2, dtype=torch.float32) / self.rot))
        self.freqs = nn.Parameter(f, requires_grad=False)

    def forward(self, x):  # (B, H, T, hd)
        T, r = x.shape[-2], self.rot
        ang = torch.arange(T, dtype=torch.float32)[:, None] * self.freqs[None, :]
        cos, sin = ang.cos(), ang.sin()
        lo = self.hd - r if self.last else 0
        part = x[..., lo:lo + r]
        if self.half:
            a, b = part[..., : r // 2], part[..., r // 2:]
            rot = torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)
        else:
            p = part.reshape(*part.shape[:-1], r // 2, 2)
            a, b = p[..., 0], p[..., 1]
            rot = torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2)
        return torch.cat([x[..., :lo], rot, x[..., lo + r:]], dim=-1)


class Attention(nn.Module):
    def __init__(self, c, names, rotary):
        super().__init__()
        d = c.hidden_size
        self.h, self.names, self.order = c.num_attention_heads, names, c.publisher_qkv
        self.linear_scale = c.publisher_attn_scale == "linear"
        if self.order:
            setattr(self, "Wqkv" if names == "llama" else "qkv", nn.Linear(d, 3 * d))
        else:
            for n in (["wq", "wk", "wv"] if names == "llama" else ["q_proj", "k_proj", "v_proj"]):
                setattr(self, n, nn.Linear(d, d))
        setattr(self, "wo" if names == "llama" else "out_proj", nn.Linear(d, d))
        if rotary is not None:
            self.rotary_emb = rotary
        self.shared_rotary = None

    def forward(self, x, mask, rotary):
        B, T, d = x.shape
        if self.order:
            fused = getattr(self, "Wqkv" if self.names == "llama" else "qkv")(x)
            parts = dict(zip(self.order, fused.split(d, dim=-1)))
            q, k, v = parts["q"], parts["k"], parts["v"]
        else:
            n = ["wq", "wk", "wv"] if self.names == "llama" else ["q_proj", "k_proj", "v_proj"]
            q, k, v = (getattr(self, m)(x) for m in n)
        heads = lambda y: y.view(B, T, self.h, d // self.h).transpose(1, 2)
        q, k, v = rotary(heads(q)), rotary(heads(k)), heads(v)
        hd = d // self.h
        scale = 1.0 / hd if self.linear_scale else 1.0 / math.sqrt(hd)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :], scale=scale)
        return getattr(self, "wo" if self.names == "llama" else "out_proj")(
            a.transpose(1, 2).reshape(B, T, d))


class FeedForward(nn.Module):
    def __init__(self, c, names):
        super().__init__()
        d, f = c.hidden_size, c.intermediate_size
        self.names, self.order, self.f = names, c.publisher_gate_up, f
        self.w1_is_up = c.publisher_w1_is_up
        g, u, dn = ("w1", "w3", "w2") if names == "llama" else ("gate_proj", "up_proj", "down_proj")
        self.n = (g, u, dn)
        if self.order:
            setattr(self, "w12", nn.Linear(d, 2 * f))
        else:
            setattr(self, g, nn.Linear(d, f))
            setattr(self, u, nn.Linear(d, f))
        setattr(self, dn, nn.Linear(f, d))

    def forward(self, x):
        g, u, dn = self.n
        if self.order:
            a, b = self.w12(x).split(self.f, dim=-1)
            gate, up = (a, b) if self.order == "gate_up" else (b, a)
        else:
            gate, up = getattr(self, g)(x), getattr(self, u)(x)
            if self.w1_is_up:
                gate, up = up, gate
        return getattr(self, dn)(F.silu(gate) * up)


class Layer(nn.Module):
    def __init__(self, c, rotary):
        super().__init__()
        names = c.publisher_names
        eps = c.publisher_eps
        n1, n2 = ("attn_norm", "ffn_norm") if names == "llama" else ("ln1", "ln2")
        self.n1, self.n2 = n1, n2
        setattr(self, n1, nn.RMSNorm(c.hidden_size, eps=eps))
        setattr(self, n2, nn.RMSNorm(c.hidden_size, eps=eps))
        self.attn_name = "attention" if names == "llama" else "attn"
        self.ffn_name = "feed_forward" if names == "llama" else "ffn"
        setattr(self, self.attn_name, Attention(c, names, rotary))
        setattr(self, self.ffn_name, FeedForward(c, names))
        self.drop1 = nn.Dropout(c.hidden_dropout_prob)
        self.drop2 = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, h, mask, rotary):
        h = h + self.drop1(getattr(self, self.attn_name)(getattr(self, self.n1)(h), mask, rotary))
        return h + self.drop2(getattr(self, self.ffn_name)(getattr(self, self.n2)(h)))


class Body(nn.Module):
    def __init__(self, c):
        super().__init__()
        llama = c.publisher_names == "llama"
        self.emb_name = "tok_embeddings" if llama else "token_embedding"
        setattr(self, self.emb_name, nn.Embedding(c.vocab_size, c.hidden_size))
        self.embed_norm = nn.RMSNorm(c.hidden_size, eps=c.publisher_eps)
        # llama: one rotary module shared by every layer; canonical: one per layer.
        self.rotary_emb = Rotary(c) if llama else None
        self.layers = nn.ModuleList(
            [Layer(c, None if llama else Rotary(c)) for _ in range(c.num_hidden_layers)])
        self.final_norm = nn.RMSNorm(c.hidden_size, eps=c.publisher_eps)

    def forward(self, ids, mask):
        h = self.embed_norm(getattr(self, self.emb_name)(ids))
        for layer in self.layers:
            attn = getattr(layer, layer.attn_name)
            rotary = self.rotary_emb if self.rotary_emb is not None else attn.rotary_emb
            h = layer(h, mask, rotary)
        return self.final_norm(h)


class EmHubModel(PreTrainedModel):
    config_class = EmHubConfig
    base_model_prefix = ""

    def __init__(self, config):
        super().__init__(config)
        c = config
        d, nl = c.hidden_size, c.num_labels
        body = Body(c)
        act = nn.GELU(approximate="tanh" if c.publisher_gelu == "tanh" else "none")
        drop = nn.Dropout(c.hidden_dropout_prob)
        if c.publisher_names == "llama":
            self.model = body
            self.pre_classifier = nn.Linear(d, d)
            self.act, self.drop = act, drop
            self.classifier = nn.Linear(d, nl)
        else:
            self.encoder = body
            self.classifier = nn.Sequential(nn.Linear(d, d), act, drop, nn.Linear(d, nl))
        self.post_init()

    def _init_weights(self, module):
        pass  # the test sets every weight itself

    def forward(self, input_ids, attention_mask=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = attention_mask.bool()
        if self.config.publisher_names == "llama":
            h = self.model(input_ids, mask)
        else:
            h = self.encoder(input_ids, mask)
        m = mask.unsqueeze(-1).float()
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        if self.config.publisher_names == "llama":
            logits = self.classifier(self.drop(self.act(self.pre_classifier(pooled))))
        else:
            logits = self.classifier(pooled)
        return SequenceClassifierOutput(logits=logits)

    @torch.no_grad()
    def mc_forward(self, input_ids, attention_mask, n_samples=50, max_batch_size=None):
        """MC dropout as the published model card runs it: the dropout modules on, torch's
        RNG, the batch stacked sample-major (row s*B + b) and run in chunks of at most
        `max_batch_size` rows; logits (n_samples, B, num_labels)."""
        was = self.training
        self.eval()
        for m in self.modules():
            if isinstance(m, nn.Dropout):
                m.train()
        try:
            B = input_ids.shape[0]
            ids, mask = input_ids.repeat(n_samples, 1), attention_mask.repeat(n_samples, 1)
            step = max_batch_size or ids.shape[0]
            z = torch.cat([self(ids[i:i + step], mask[i:i + step]).logits
                           for i in range(0, ids.shape[0], step)])
            return z.view(n_samples, B, -1)
        finally:
            self.train(was)
