#!/usr/bin/env python3
"""Does emcoder compute what a published EmCoder checkpoint computes? (docs/conformance.md)

    python reference/conformance.py MODEL [--emcoder BIN] [--report FILE.json] [--samples N]

MODEL is a hub id (`yezdata/EmCoder`, downloaded with huggingface_hub) or a local snapshot
folder (config.json with `auto_map`, the model's `modeling_*.py`, weights as safetensors or
pytorch_model.bin, optional tokenizer.json and thresholds.json).

1. Loads the model the way its model card does (transformers, `trust_remote_code=True`) and
   runs it with dropout off, one text at a time, on GoEmotions test texts plus edge cases
   (empty, one token, long, non-ASCII), recording the hidden states after the embed norm,
   after every layer and after the final norm (forward hooks on `*embed_norm`, `*layers.N`,
   `*final_norm`) and the logits.
2. Gives emcoder the same checkpoint (a folder with the same weights and config.json;
   `emcoder inspect` of it goes into the report) and the same token ids
   (`emcoder trace`), and compares stage by stage: max |delta logit| per text against the
   1e-4 f32 tolerance is the verdict.
3. On a mismatch it tries the known unknowns, each an emcoder config.json key: the RMSNorm
   epsilon (`norm_eps`: the config's, f32 machine epsilon, 1e-5, 1e-6), the q/k/v order of a
   fused projection (`qkv_order`), the gate/up order (`gate_up_order`), interleaved or
   half-split rotary pairs (`rotary_pairs`), rotary on the first or last channels
   (`rotary_channels`) and erf or tanh GELU in the head (`head_activation`): the epsilon where
   the embed norm differs, every combination of the layer's structural options where layer 0
   differs, the activation where only the logits differ. It reports the keys that make
   emcoder match, or "does not conform" with the largest differences per layer.
4. MC check: the model's own `mc_forward` (torch's RNG) and emcoder's MC dropout (its Philox
   masks) with the same N and seed; the means must agree within 5 standard errors per label.

Exit status: 0 conforms (possibly with options to set), 1 does not conform, 2 could not run.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4  # max |delta logit|, f32 (the golden tests' tolerance)
STAGE_RTOL = 1e-4  # hidden states: max |delta| <= STAGE_RTOL * max(1, max |ref|)
MACHINE_EPS = float(np.finfo(np.float32).eps)
EPS_CANDIDATES = [None, MACHINE_EPS, 1e-5, 1e-6]  # None: what config.json says (or the default)
QKV_ORDERS = ["qkv", "qvk", "kqv", "kvq", "vqk", "vkq"]
MAX_TOKENS = 512


class Fail(Exception):
    """A setup problem (exit status 2), with what to do about it."""


# ---- inputs ------------------------------------------------------------------------------


def texts() -> list[str]:
    lines = (ROOT / "reference" / "conformance_texts.txt").read_text(encoding="utf-8")
    out = [l for l in lines.splitlines() if l and not l.startswith("#")]
    long = ("I waited three hours at the clinic and nobody told me anything, which was "
            "frustrating, but the nurse who finally saw me was so kind that I almost cried. ") * 6
    return out + ["", "ok", long, "Ünïcödé naïve café — 😀🙃 你好, merci beaucoup ❤️"]


def tokenize(snapshot: Path, items: list[str]) -> tuple[list[list[int]], str]:
    from tokenizers import Tokenizer

    path = snapshot / "tokenizer.json"
    if not path.is_file():
        path = ROOT / "assets" / "tokenizer.json"
    tok = Tokenizer.from_file(str(path))
    ids = []
    for t in items:
        e = tok.encode(t).ids
        if len(e) > MAX_TOKENS:
            e = e[: MAX_TOKENS - 1] + e[-1:]
        ids.append(e)
    return ids, str(path)


def resolve_snapshot(model: str) -> Path:
    p = Path(model)
    if p.is_dir():
        return p.resolve()
    if p.exists() or "/" not in model or model.startswith((".", "/")):
        raise Fail(f"{model}: not a snapshot folder, and not a hub id like yezdata/EmCoder")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise Fail("downloading from the hub needs huggingface_hub: pip install huggingface_hub") from e
    try:
        return Path(snapshot_download(model))
    except Exception as e:  # network, auth, missing repo
        raise Fail(f"could not download {model} from the hub: {e}") from e


# ---- the reference -----------------------------------------------------------------------


def load_reference(snapshot: Path):
    import torch
    import transformers

    errors = []
    for cls in ("AutoModel", "AutoModelForSequenceClassification"):
        try:
            m = getattr(transformers, cls).from_pretrained(
                str(snapshot), trust_remote_code=True, torch_dtype=torch.float32)
            return m.float().eval()
        except Exception as e:  # the next auto class, then a clear error
            errors.append(f"{cls}: {type(e).__name__}: {e}")
    raise Fail("transformers could not load the snapshot:\n  " + "\n  ".join(errors))


def _tensor(out):
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    raise Fail(f"cannot find a tensor in the model's output of type {type(out).__name__}")


def stage_modules(model) -> dict:
    """Stage name -> module: `embed`, `layer.N`, `final_norm` (by module names)."""
    found = {}
    for name, mod in model.named_modules():
        if re.search(r"(^|\.)embed_norm$", name):
            found.setdefault("embed", mod)
        elif m := re.search(r"(^|\.)layers\.(\d+)$", name):
            found.setdefault(f"layer.{int(m.group(2))}", mod)
        elif re.search(r"(^|\.)final_norm$", name):
            found.setdefault("final_norm", mod)
    return found


def reference_trace(model, ids: list[list[int]]) -> list[dict]:
    """Per text: stage -> (T, d) array, and `logits`."""
    import torch

    mods = stage_modules(model)
    captured = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, n=n: captured.__setitem__(n, _tensor(out)))
             for n, m in mods.items()]
    out = []
    try:
        with torch.no_grad():
            for seq in ids:
                captured.clear()
                x = torch.tensor([seq], dtype=torch.long)
                logits = _tensor(model(input_ids=x, attention_mask=torch.ones_like(x)))
                rec = {n: t.detach().float().reshape(len(seq), -1).numpy().copy()
                       for n, t in captured.items()}
                rec["logits"] = logits.detach().float().reshape(-1).numpy().copy()
                out.append(rec)
    finally:
        for h in hooks:
            h.remove()
    return out


def reference_mc(model, ids: list[list[int]], n: int, seed: int) -> list[tuple]:
    """Per text: (mean, std) of the sigmoid over n MC-dropout samples of the model's own
    `mc_forward` (or its dropout modules switched on when it has none)."""
    import torch

    torch.manual_seed(seed)
    out = []
    with torch.no_grad():
        for seq in ids:
            x = torch.tensor([seq], dtype=torch.long)
            mask = torch.ones_like(x)
            if hasattr(model, "mc_forward"):
                z = _tensor(model.mc_forward(x, mask, n_samples=n))
            else:
                model.eval()
                for m in model.modules():
                    if isinstance(m, torch.nn.Dropout):
                        m.train()
                z = torch.stack([_tensor(model(input_ids=x, attention_mask=mask)) for _ in range(n)])
                model.eval()
            p = torch.sigmoid(z.double().reshape(n, -1))
            out.append((p.mean(0).numpy(), p.std(0, unbiased=True).numpy() if n > 1 else np.zeros(p.shape[1])))
    return out


# ---- emcoder -----------------------------------------------------------------------------


def find_emcoder(given: str | None) -> str:
    if given is not None:
        if not Path(given).is_file():
            raise Fail(f"--emcoder {given}: no such file (build emcoder with "
                       "`cargo build --release -p emcoder-cli`)")
        return given
    for c in [os.environ.get("EMCODER_BIN"), ROOT / "target" / "release" / "emcoder"]:
        if c and Path(c).is_file():
            return str(c)
    if w := shutil.which("emcoder"):
        return w
    raise Fail("no emcoder binary: build it with `cargo build --release -p emcoder-cli` "
               "(or pass --emcoder PATH / set EMCODER_BIN)")


def prepare(snapshot: Path, work: Path) -> tuple[Path, dict]:
    """An emcoder model folder with the snapshot's weights (linked, or converted from
    pytorch_model.bin / shards), thresholds, and its config.json; returns it and the config."""
    mdir = work / "model"
    mdir.mkdir(parents=True, exist_ok=True)
    st = snapshot / "model.safetensors"
    if st.is_file():
        (mdir / "model.safetensors").symlink_to(st.resolve())
    else:
        import torch
        from safetensors.torch import save_file

        shards = sorted(snapshot.glob("model-*.safetensors"))
        state = {}
        if shards:
            from safetensors.torch import load_file
            for s in shards:
                state.update(load_file(str(s)))
        elif (snapshot / "pytorch_model.bin").is_file():
            state = torch.load(snapshot / "pytorch_model.bin", map_location="cpu", weights_only=True)
        else:
            raise Fail(f"{snapshot}: no model.safetensors, shards or pytorch_model.bin")
        save_file({k: v.contiguous() for k, v in state.items()}, str(mdir / "model.safetensors"))
    for name in ("thresholds.json",):
        if (snapshot / name).is_file():
            shutil.copy(snapshot / name, mdir / name)
    cfg_path = snapshot / "config.json"
    if not cfg_path.is_file():
        raise Fail(f"{snapshot}: no config.json")
    return mdir, json.loads(cfg_path.read_text())


def write_config(mdir: Path, base: dict, options: dict) -> None:
    cfg = dict(base)
    for k, v in options.items():
        if v is None:
            continue
        cfg[k] = v
        if k == "norm_eps":
            cfg.pop("rms_norm_eps", None)  # the override wins over the HF alias
    (mdir / "config.json").write_text(json.dumps(cfg, indent=1))


def run_emcoder(bin_: str, mdir: Path, ids_file: Path, out: Path, samples=None, seed=42) -> list[dict]:
    cmd = [bin_, "trace", str(mdir), "--ids", str(ids_file), "--out", str(out)]
    if samples:
        cmd += ["--samples", str(samples), "--seed", str(seed)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise Fail(f"emcoder trace failed ({' '.join(cmd)}):\n{r.stderr.strip()}")
    from safetensors.numpy import load_file

    flat = load_file(str(out))
    per = {}
    for k, v in flat.items():
        i, name = k.split(".", 1)
        per.setdefault(int(i), {})[name] = v
    return [per[i] for i in sorted(per)]


# ---- comparing ---------------------------------------------------------------------------


def compare(ref: list[dict], em: list[dict]) -> dict:
    """Max |delta| per stage (over all texts) and per text's logits."""
    stages = {}
    for r, e in zip(ref, em):
        for name, a in r.items():
            b = e.get(name)
            if b is None or b.shape != a.shape:
                d = math.inf
            else:
                d = float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
            s = stages.setdefault(name, {"max_abs_diff": 0.0, "max_abs_ref": 0.0})
            s["max_abs_diff"] = max(s["max_abs_diff"], d)
            s["max_abs_ref"] = max(s["max_abs_ref"], float(np.max(np.abs(a))) if a.size else 0.0)
    for s in stages.values():
        limit = TOLERANCE if s is stages.get("logits") else STAGE_RTOL * max(1.0, s["max_abs_ref"])
        s["ok"] = s["max_abs_diff"] <= limit
    per_text = [float(np.max(np.abs(r["logits"].astype(np.float64) - e["logits"])))
                if e["logits"].shape == r["logits"].shape else math.inf for r, e in zip(ref, em)]
    return {"stages": stages, "logits_per_text": per_text,
            "conforms": all(d <= TOLERANCE for d in per_text)}


def stage_order(stages: dict) -> list[str]:
    def key(n):
        if n == "embed":
            return (0, 0)
        if n.startswith("layer."):
            return (1, int(n.split(".")[1]))
        return (2, 0) if n == "final_norm" else (3, 0)
    return sorted(stages, key=key)


def err(c: dict, stage: str) -> float:
    s = c["stages"].get(stage)
    return math.inf if s is None else s["max_abs_diff"]


# ---- the search --------------------------------------------------------------------------


def inspect_facts(text: str) -> dict:
    m = re.search(r"head_dim (\d+)", text)
    r = re.search(r"rot_dim (\d+)", text)
    return {"head_dim": int(m.group(1)) if m else None, "rot_dim": int(r.group(1)) if r else None,
            "fused_qkv": "q,k,v (fused" in text}


def search(evaluate, facts: dict) -> tuple[dict, dict, list]:
    """Finds the options that make emcoder match: `evaluate(options)` runs and compares."""
    tried = []

    def ev(opts):
        c = evaluate(opts)
        tried.append({"options": {k: v for k, v in opts.items() if v is not None},
                      "max_abs_diff": {n: c["stages"][n]["max_abs_diff"] for n in stage_order(c["stages"])},
                      "conforms": c["conforms"]})
        return c

    opts = {}
    best = ev(opts)
    if best["conforms"]:
        return opts, best, tried

    def pick(candidates, stage):
        nonlocal best, opts
        results = []
        for cand in candidates:
            trial = {k: v for k, v in {**opts, **cand}.items() if v is not None}
            c = best if trial == opts else ev(trial)
            results.append((err(c, stage), len(results), trial, c))
        e, _, trial, c = min(results, key=lambda r: (r[0], r[1]))
        opts, best = trial, c

    def bad(stage):  # a stage the hooks did not find counts as bad while the logits are
        s = best["stages"].get(stage)
        return not best["conforms"] if s is None else not s["ok"]

    def target(stage):
        return stage if stage in best["stages"] else "logits"

    eps = [{"norm_eps": e} for e in EPS_CANDIDATES]
    # 1. The embed norm: only the epsilon can matter there.
    if bad("embed"):
        pick(eps, target("embed"))
    # 2. Layer 0: every combination of the layer's structural options.
    if bad("layer.0"):
        qkv = QKV_ORDERS if facts.get("fused_qkv") else [None]
        rot_partial = facts.get("rot_dim") and facts.get("head_dim") and facts["rot_dim"] < facts["head_dim"]
        channels = [None, "last"] if rot_partial else [None]
        grid = [{"qkv_order": q, "gate_up_order": g, "rotary_pairs": p, "rotary_channels": ch}
                for q, g, p, ch in itertools.product(qkv, [None, "up_gate"], [None, "half"], channels)]
        pick(grid, target("layer.0"))
        # An epsilon the embed norm could not tell apart may still show in the layers.
        if bad("layer.0"):
            pick(eps, target("layer.0"))
    # 3. The head: only the activation is open.
    if not best["conforms"]:
        pick([{"head_activation": None}, {"head_activation": "gelu_tanh"}], "logits")
    return opts, best, tried


def mc_check(ref_mc: list[tuple], em: list[dict], n: int) -> dict:
    worst, bad, total = 0.0, 0, 0
    for (mr, sr), e in zip(ref_mc, em):
        me, se = e["mc_mean"].astype(np.float64), e["mc_std"].astype(np.float64)
        stderr = np.sqrt((sr ** 2 + se ** 2) / n) + 1e-6
        z = np.abs(mr - me) / stderr
        worst = max(worst, float(z.max()))
        bad += int((z > 5).sum())
        total += z.size
    return {"samples": n, "labels_checked": total, "beyond_5_stderr": bad,
            "worst_in_stderr": worst, "passes": bad == 0}


# ---- main --------------------------------------------------------------------------------


def run(model: str, emcoder: str | None = None, samples: int = 50, seed: int = 42,
        work: Path | None = None) -> dict:
    """Runs the whole check; returns the report (a dict, JSON-serializable)."""
    bin_ = find_emcoder(emcoder)
    snapshot = resolve_snapshot(model)
    items = texts()
    ids, tok_path = tokenize(snapshot, items)
    reference = load_reference(snapshot)
    ref = reference_trace(reference, ids)
    tmp = tempfile.TemporaryDirectory(prefix="emcoder-conformance-") if work is None else None
    work = Path(tmp.name) if tmp else work
    try:
        mdir, base_cfg = prepare(snapshot, work)
        ids_file = work / "ids.json"
        ids_file.write_text(json.dumps(ids))
        write_config(mdir, base_cfg, {})
        ins = subprocess.run([bin_, "inspect", str(mdir)], capture_output=True, text=True)
        if ins.returncode != 0:
            raise Fail(f"emcoder cannot load the checkpoint:\n{ins.stderr.strip()}")
        facts = inspect_facts(ins.stdout)
        count = itertools.count()

        def evaluate(opts):
            write_config(mdir, base_cfg, opts)
            return compare(ref, run_emcoder(bin_, mdir, ids_file, work / f"trace{next(count)}.safetensors"))

        options, best, tried = search(evaluate, facts)
        report = {
            "model": model, "snapshot": str(snapshot), "tokenizer": tok_path,
            "emcoder": bin_, "texts": len(items), "tolerance": TOLERANCE,
            "verdict": ("conforms" if not options else "conforms with options") if best["conforms"]
            else "does not conform",
            "options": {k: v for k, v in options.items() if v is not None},
            "logits_max_abs_diff_per_text": best["logits_per_text"],
            "stages": {n: best["stages"][n] for n in stage_order(best["stages"])},
            "tried": tried, "inspect": ins.stdout,
        }
        if best["conforms"] and samples:
            write_config(mdir, base_cfg, options)
            em = run_emcoder(bin_, mdir, ids_file, work / "mc.safetensors", samples, seed)
            report["mc"] = mc_check(reference_mc(reference, ids, samples, seed), em, samples)
        return report
    finally:
        if tmp:
            tmp.cleanup()


def render(r: dict) -> str:
    lines = [f"# Conformance of emcoder with {r['model']}", "",
             f"snapshot: {r['snapshot']}", f"tokenizer: {r['tokenizer']}",
             f"texts: {r['texts']} (GoEmotions test texts and edge cases), one at a time, dropout off",
             "", f"## Verdict: {r['verdict'].upper()}", ""]
    if r["options"]:
        lines += ["emcoder matches with these keys in the model's config.json:", "",
                  "```json", json.dumps(r["options"], indent=1), "```", ""]
    worst = max(r["logits_max_abs_diff_per_text"])
    lines += [f"max |delta logit| over all texts: {worst:.3g} (tolerance {r['tolerance']:g})", "",
              "| stage | max abs diff | max abs reference | within tolerance |", "|---|---|---|---|"]
    for n, s in r["stages"].items():
        lines.append(f"| {n} | {s['max_abs_diff']:.3g} | {s['max_abs_ref']:.3g} | {'yes' if s['ok'] else 'NO'} |")
    lines += ["", "per text max |delta logit|: " + ", ".join(f"{d:.2g}" for d in r["logits_max_abs_diff_per_text"])]
    if "mc" in r:
        m = r["mc"]
        lines += ["", f"## MC check ({m['samples']} samples): {'passes' if m['passes'] else 'FAILS'}",
                  f"{m['beyond_5_stderr']} of {m['labels_checked']} (text, label) means beyond 5 standard "
                  f"errors; worst {m['worst_in_stderr']:.2f}"]
    lines += ["", f"## Variants tried ({len(r['tried'])})", ""]
    for t in r["tried"]:
        first_bad = next((n for n, d in t["max_abs_diff"].items() if n != "logits"
                          and d > STAGE_RTOL * 10), None)
        lines.append(f"- {json.dumps(t['options']) if t['options'] else 'config.json as is'}: "
                     f"logits {t['max_abs_diff'].get('logits', math.inf):.3g}"
                     + (f", first differing stage {first_bad}" if first_bad else ""))
    lines += ["", "## emcoder inspect", "", "```", r["inspect"].rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="hub id (yezdata/EmCoder) or a local snapshot folder")
    ap.add_argument("--emcoder", help="emcoder binary (default: $EMCODER_BIN, target/release/emcoder, PATH)")
    ap.add_argument("--report", type=Path, help="also write the report as JSON here")
    ap.add_argument("--samples", type=int, default=50, help="MC samples of the MC check (0: skip it)")
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args(argv)
    try:
        r = run(a.model, a.emcoder, a.samples, a.seed)
    except Fail as e:
        print(f"conformance: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(render(r))
    if a.report:
        a.report.write_text(json.dumps(r, indent=1, default=float))
    ok = r["verdict"] != "does not conform" and r.get("mc", {"passes": True})["passes"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
