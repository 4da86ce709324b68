"""Tests of reference/conformance.py on local hub-style snapshots (no network).

Each snapshot is what a publisher would put on the hub: `modeling_emhub.py` (remote code,
tests/hub_snapshot/, an implementation independent of emcoder_ref), config.json with
`auto_map`, and random weights in one of two spellings, built with one of the undocumented
choices the tool must discover. scripts/test-conformance.sh runs these in CI with the
release `emcoder` binary (EMCODER_BIN).
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "reference"))
import conformance  # noqa: E402

MODELING = Path(__file__).resolve().parent / "hub_snapshot" / "modeling_emhub.py"
LABELS = ["admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion",
          "curiosity", "desire", "disappointment", "disapproval", "disgust", "embarrassment",
          "excitement", "fear", "gratitude", "grief", "joy", "love", "nervousness", "optimism",
          "pride", "realization", "relief", "remorse", "sadness", "surprise", "neutral"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def emcoder_bin():
    b = os.environ.get("EMCODER_BIN") or str(ROOT / "target" / "release" / "emcoder")
    if not Path(b).is_file():
        pytest.skip("no emcoder binary (cargo build --release -p emcoder-cli, or EMCODER_BIN)")
    return b


def make_snapshot(path: Path, seed=0, rotary_dim=None, dtype=torch.float32, stated_eps=None,
                  **publisher) -> Path:
    """Writes a snapshot folder; `publisher` sets the modeling file's publisher_* choices."""
    path.mkdir(parents=True)
    shutil.copy(MODELING, path / "modeling_emhub.py")
    cfg = {
        "model_type": "emhub", "architectures": ["EmHubModel"],
        "auto_map": {"AutoConfig": "modeling_emhub.EmHubConfig",
                     "AutoModel": "modeling_emhub.EmHubModel"},
        "vocab_size": 50368, "hidden_size": 32, "num_attention_heads": 4,
        "num_hidden_layers": 2, "intermediate_size": 64, "hidden_dropout_prob": 0.1,
        "rope_theta": 10000.0,
        "id2label": {str(i): l for i, l in enumerate(LABELS)},
        "label2id": {l: i for i, l in enumerate(LABELS)},
    }
    if rotary_dim:
        cfg["rotary_dim"] = rotary_dim
    if stated_eps is not None:
        cfg["rms_norm_eps"] = stated_eps
    cfg.update({f"publisher_{k}": v for k, v in publisher.items()})
    (path / "config.json").write_text(json.dumps(cfg, indent=1))

    spec = importlib.util.spec_from_file_location(f"emhub_{path.name}", path / "modeling_emhub.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.EmHubModel(mod.EmHubConfig(**{k: v for k, v in cfg.items()
                                               if k not in ("auto_map", "architectures")}))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("freqs"):
                continue
            if "norm" in name:  # RMSNorm weights near 1
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif "embed" in name:  # small embeddings: the norm's epsilon shows
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
    from safetensors.torch import save_file
    state = {k: v.to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path / "model.safetensors"))
    return path


def check(tmp_path, name, **kw):
    snap = make_snapshot(tmp_path / name, **kw)
    return conformance.run(str(snap), emcoder_bin(), samples=0, work=tmp_path / f"{name}-work")


def test_matching_layout_conforms_and_mc_agrees(tmp_path):
    snap = make_snapshot(tmp_path / "plain")
    r = conformance.run(str(snap), emcoder_bin(), samples=50, seed=7, work=tmp_path / "w")
    assert r["verdict"] == "conforms", conformance.render(r)
    assert r["options"] == {}
    assert max(r["logits_max_abs_diff_per_text"]) < 1e-4
    assert r["texts"] == len(r["logits_max_abs_diff_per_text"]) >= 20
    assert {"embed", "layer.0", "layer.1", "final_norm", "logits"} <= set(r["stages"])
    assert r["mc"]["passes"], r["mc"]
    assert r["mc"]["labels_checked"] == 28 * r["texts"]
    assert "layout: qkv_order qkv" in r["inspect"]


@pytest.mark.parametrize("name,publisher,extra,options", [
    ("fused-kqv-upgate", dict(names="llama", qkv="kqv", gate_up="up_gate"), {},
     {"qkv_order": "kqv", "gate_up_order": "up_gate"}),
    ("w1-is-up", dict(names="llama", w1_is_up=True), {}, {"gate_up_order": "up_gate"}),
    ("tanh-gelu", dict(gelu="tanh"), {}, {"head_activation": "gelu_tanh"}),
    ("eps-1e-6", dict(eps=1e-6), {}, {"norm_eps": 1e-6}),
    ("rotary-half", dict(rotary_pairs="half"), {}, {"rotary_pairs": "half"}),
    ("rotary-last-half", dict(names="llama", rotary_pairs="half", rotary_channels="last"),
     {"rotary_dim": 4}, {"rotary_pairs": "half", "rotary_channels": "last"}),
    ("bf16-tanh-vqk", dict(names="llama", qkv="vqk", gelu="tanh"), {"dtype": torch.bfloat16},
     {"qkv_order": "vqk", "head_activation": "gelu_tanh"}),
])
def test_each_variant_is_named(tmp_path, name, publisher, extra, options):
    r = check(tmp_path, name, **extra, **publisher)
    assert r["verdict"] == "conforms with options", conformance.render(r)
    assert r["options"] == options, conformance.render(r)
    assert max(r["logits_max_abs_diff_per_text"]) < 1e-4
    # Without the options, it did not conform: the first run is the config as is.
    assert not r["tried"][0]["conforms"] and r["tried"][0]["options"] == {}


def test_stated_epsilon_is_used_without_a_search(tmp_path):
    r = check(tmp_path, "stated-eps", eps=1e-5, stated_eps=1e-5)
    assert r["verdict"] == "conforms" and len(r["tried"]) == 1, conformance.render(r)


def test_uncovered_difference_does_not_conform_and_shows_where(tmp_path):
    r = check(tmp_path, "linear-scale", attn_scale="linear")
    assert r["verdict"] == "does not conform"
    st = r["stages"]
    assert st["embed"]["ok"], "the embedding is not what differs"
    assert not st["layer.0"]["ok"] and not st["logits"]["ok"]
    text = conformance.render(r)
    assert "DOES NOT CONFORM" in text and "| layer.0 |" in text and "| embed |" in text
    assert len(r["tried"]) > 1  # it searched before giving up


def test_command_line_exit_status_and_report(tmp_path, capsys):
    snap = make_snapshot(tmp_path / "cli", gelu="tanh")
    report = tmp_path / "report.json"
    p = subprocess.run([sys.executable, str(ROOT / "reference" / "conformance.py"), str(snap),
                        "--emcoder", emcoder_bin(), "--samples", "20", "--report", str(report)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "CONFORMS WITH OPTIONS" in p.stdout and '"head_activation": "gelu_tanh"' in p.stdout
    r = json.loads(report.read_text())
    assert r["options"] == {"head_activation": "gelu_tanh"} and r["mc"]["passes"]

    # The same entry point in this process (torch is already imported): status 1 and 2.
    bad = make_snapshot(tmp_path / "cli-bad", attn_scale="linear")
    assert conformance.main([str(bad), "--emcoder", emcoder_bin(), "--samples", "0"]) == 1
    assert "DOES NOT CONFORM" in capsys.readouterr().out
    assert conformance.main([str(tmp_path / "nothing-here"), "--emcoder", emcoder_bin()]) == 2
    assert "not a snapshot folder" in capsys.readouterr().err
    assert conformance.main([str(snap), "--emcoder", str(tmp_path / "no-such-binary")]) == 2
    assert "cargo build --release" in capsys.readouterr().err


def fake_compare(logits_err, stages=None):
    st = {n: {"max_abs_diff": e, "max_abs_ref": 1.0, "ok": e <= 1e-4}
          for n, e in (stages or {}).items()}
    st["logits"] = {"max_abs_diff": logits_err, "max_abs_ref": 1.0, "ok": logits_err <= 1e-4}
    return {"stages": st, "logits_per_text": [logits_err], "conforms": logits_err <= 1e-4}


def test_search_without_hidden_states_still_tries_every_option():
    """A model whose modules the hooks cannot find (only logits to compare): the search
    falls back to the logits for every step and still finds a combination."""
    truth = {"qkv_order": "vkq", "gate_up_order": "up_gate", "norm_eps": 1e-5}
    calls = []

    def evaluate(opts):
        calls.append(dict(opts))
        wrong = sum(opts.get(k) != v for k, v in truth.items())
        return fake_compare(0.5 * wrong)

    opts, best, tried = conformance.search(evaluate, {"fused_qkv": True, "rot_dim": 8, "head_dim": 8})
    assert opts == truth and best["conforms"], tried
    assert len(calls) == len(tried) < 70
