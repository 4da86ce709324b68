#!/usr/bin/env python3
"""Thresholded decisions per second on real texts: the PyTorch reference vs emcoder.

What a user of EmCoder buys is the (text, label) decisions (mean >= p, and std <= u where the
thresholds give u), with their uncertainty. This script times, on the same GoEmotions texts,
the same model and the same number of threads:

- the PyTorch reference run the way the model card shows: `mc_forward` with torch's dropout
  RNG, N=50, f32, texts in their file order in padded batches of 32 (`--text-batch`), rows
  chunked by `max_batch_size` 64 (`--max-batch`), statistics as in the README;
- the same again with another torch seed: the agreement between the two PyTorch runs is the
  noise floor of MC dropout at N=50 (no engine can be expected to agree better);
- `emcoder predict --json` (the texts on stdin, one process: its model load is included in
  its time, PyTorch's is not) in each configuration of `--configs`.

Each configuration's decisions are compared with the first PyTorch run's: agreement is the
share of (text, label) decisions that are equal. Speed is decisions per second (texts x
labels / seconds) and the ratio to PyTorch's time. With `--rounds R` every engine runs R times
in turn (PyTorch, then every emcoder configuration, then again) and the median time counts;
agreements come from the first round (seeded runs are repeatable).

    reference/.venv/bin/python benches/decisions.py                     # 400 test texts
    reference/.venv/bin/python benches/decisions.py --texts 100 --rounds 1 --configs f32,decide-0.01
    reference/.venv/bin/python benches/decisions.py --markdown          # append to RESULTS.md

Needs the reference venv (reference/README.md) and `cargo build --release` (the CLI).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics as stat
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "reference"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from emcoder_ref.data import load_tokenizer, read_tsv  # noqa: E402
from emcoder_ref.io import load_model_dir  # noqa: E402
from emcoder_ref.mc import mc_forward, statistics  # noqa: E402
from emcoder_ref.model import pad_batch  # noqa: E402

# The default configurations; `--configs` also takes any name of the form
# [decide-A | tolerance-E | n-N | f32 | bf16 | int8], dash-joined, e.g. decide-0.2-n-30-bf16.
CONFIGS = ["f32", "bf16", "int8", "tolerance-0.01", "decide-0.01", "decide-0.05",
           "decide-0.01-bf16", "decide-0.01-int8"]


def config_options(name: str, n_samples: int) -> list:
    """`emcoder predict` options of a configuration name (see CONFIGS)."""
    words, opts, n = name.split("-"), [], n_samples
    i = 0
    while i < len(words):
        w = words[i]
        if w in ("f32", "bf16", "int8"):
            opts += ["--precision", w] if w != "f32" else []
            i += 1
        elif w in ("decide", "tolerance", "n") and i + 1 < len(words):
            try:
                v = float(words[i + 1])
            except ValueError:
                raise SystemExit(f"configuration {name!r}: {words[i + 1]!r} is not a number")
            if w == "n":
                n = int(v)
            else:
                opts += [f"--{w}", words[i + 1]]
            i += 2
        else:
            raise SystemExit(f"configuration {name!r}: unknown word {w!r} (use f32, bf16, int8, "
                             "decide-A, tolerance-E, n-N joined with dashes)")
    return ["-n", str(n), *opts]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def cpu_description() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            txt = f.read()
    except OSError:
        return "unknown CPU"

    def field(name):
        m = re.search(rf"^{name}\s*:\s*(.*)$", txt, re.M)
        return m.group(1).strip() if m else "?"

    flags = field("flags").split()
    isa = [x for x in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if x in flags]
    return (f"{field('model name')} (family {field('cpu family')}, model {field('model')}), "
            f"{os.cpu_count()} logical CPUs, {', '.join(isa) or 'no AVX2'}")


def pytorch_decisions(model, thresholds, labels, seqs, seed, args):
    """The model card's loop: batches of `text_batch` texts in order, padded, mc_forward
    with torch's dropout RNG. -> (predicted (n, C) bool, mean (n, C), seconds)."""
    torch.manual_seed(seed)
    preds, means = [], []
    t0 = time.perf_counter()
    for i in range(0, len(seqs), args.text_batch):
        ids, am = pad_batch(seqs[i:i + args.text_batch])
        z = mc_forward(model, ids, am, args.samples, max_batch_size=args.max_batch,
                       mode="torch")
        st = statistics(z, thresholds, labels)
        preds.append(st["predicted"])
        means.append(st["mean"])
    secs = time.perf_counter() - t0
    return np.concatenate(preds), np.concatenate(means), secs


def emcoder_decisions(exe, model_dir, texts, opts, threads, labels):
    """One `emcoder predict --json` process over all texts (stdin).
    -> (predicted (n, C) bool, samples per text (n,), seconds)."""
    cmd = [exe, "predict", "--json", "--model", model_dir, "--threads", str(threads), *opts]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, input="\n".join(texts) + "\n", capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    res = json.loads(r.stdout)["results"]
    if len(res) != len(texts):
        raise SystemExit(f"emcoder returned {len(res)} results for {len(texts)} texts")
    pred = np.zeros((len(res), len(labels)), dtype=bool)
    samples = np.zeros(len(res))
    for i, t in enumerate(res):
        by = {x["label"]: x["predicted"] for x in t["labels"]}
        pred[i] = [by[name] for name in labels]
        samples[i] = t.get("samples", int(opts[opts.index("-n") + 1]))  # adaptive runs print it
    return pred, samples, secs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(REPO, "models/emcoder-mini"))
    ap.add_argument("--data", default=os.path.join(REPO, "data/goemotions/test.tsv"))
    ap.add_argument("--texts", type=int, default=400, help="first TEXTS texts of --data")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=50, help="N for PyTorch and emcoder")
    ap.add_argument("--text-batch", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--seeds", default="1234,5678", help="the two PyTorch runs' torch seeds")
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help="emcoder configurations, comma-separated (see CONFIGS)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--emcoder", default=os.path.join(REPO, "target/release/emcoder"))
    ap.add_argument("--markdown", action="store_true", help="append to benches/RESULTS.md")
    ap.add_argument("--out", help="write every measurement as JSON")
    args = ap.parse_args()
    configs = [c for c in args.configs.split(",") if c]
    options = {c: config_options(c, args.samples) for c in configs}
    seeds = [int(s) for s in args.seeds.split(",")]
    if len(seeds) != 2:
        raise SystemExit("--seeds takes two seeds (the noise floor compares two runs)")
    if not os.path.exists(args.emcoder):
        raise SystemExit(f"{args.emcoder} missing: run `cargo build --release` first")

    torch.set_num_threads(args.threads)
    model, cfg, thresholds = load_model_dir(args.model)
    model.eval()
    labels = [cfg.id2label[str(i)] for i in range(cfg.num_labels)]
    tokp = os.path.join(args.model, "tokenizer.json")
    tok = load_tokenizer(tokp)
    texts, _, _ = read_tsv(args.data, cfg.num_labels)
    texts = [t.replace("\n", " ") for t in texts[:args.texts]]
    seqs = [e.ids for e in tok.encode_batch(texts)]
    n, C = len(texts), len(labels)
    log(f"{n} texts ({sum(map(len, seqs)) / n:.1f} tokens on average), {C} labels, "
        f"{args.threads} threads, N={args.samples}")

    times = {"pytorch": []}
    times.update({c: [] for c in configs})
    ref = noise = None
    results = {}
    for rnd in range(args.rounds):
        log(f"round {rnd + 1}/{args.rounds}: PyTorch (seed {seeds[0]})")
        pred, _, secs = pytorch_decisions(model, thresholds, labels, seqs, seeds[0], args)
        times["pytorch"].append(secs)
        if ref is None:
            ref = pred
            log(f"  {secs:.1f} s; PyTorch again (seed {seeds[1]}) for the noise floor")
            pred2, _, secs2 = pytorch_decisions(model, thresholds, labels, seqs, seeds[1], args)
            times["pytorch"].append(secs2)
            noise = float((pred2 == ref).mean())
        for c in configs:
            pred, samples, secs = emcoder_decisions(args.emcoder, args.model, texts,
                                                    options[c],
                                                    args.threads, labels)
            times[c].append(secs)
            if c not in results:
                diff = int((pred != ref).sum())
                results[c] = {"agreement": float((pred == ref).mean()), "differ": diff,
                              "samples_per_text": float(samples.mean())}
            log(f"  {c}: {secs:.1f} s, agreement {results[c]['agreement']:.5f}")

    pt = stat.median(times["pytorch"])
    rows = []
    for c in configs:
        t = stat.median(times[c])
        rows.append((c, " ".join(options[c]), t, n * C / t, pt / t, results[c]))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    when = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    md = [f"### {when} - commit {commit}: decisions per second, {n} GoEmotions test texts",
          "",
          f"- machine: {cpu_description()}; threads = {args.threads} for every engine; "
          f"torch {torch.__version__}",
          f"- model: {os.path.relpath(args.model, REPO)}; N = {args.samples}; PyTorch: "
          f"mc_forward with torch's RNG, batches of {args.text_batch} texts padded, "
          f"max_batch_size {args.max_batch}; medians of {args.rounds} round(s) "
          f"(PyTorch: {len(times['pytorch'])} runs)",
          f"- noise floor: two PyTorch runs (seeds {seeds[0]}, {seeds[1]}) agree on "
          f"{100 * noise:.3f}% of the {n * C} decisions",
          "",
          "| engine | options | seconds | decisions/s | vs PyTorch | agreement with PyTorch "
          "| decisions that differ | samples per text |",
          "|---|---|---|---|---|---|---|---|",
          f"| PyTorch f32 (reference) | N={args.samples} | {pt:.1f} | {n * C / pt:.0f} | 1.00x "
          f"| ({100 * noise:.3f}% between seeds) | - | {args.samples} |"]
    for c, opts, t, dps, ratio, r in rows:
        md.append(f"| emcoder {c} | `{opts}` | {t:.1f} | {dps:.0f} | {ratio:.2f}x "
                  f"| {100 * r['agreement']:.3f}% | {r['differ']} | "
                  f"{r['samples_per_text']:.1f} |")
    text = "\n".join(md) + "\n"
    print(text)
    if args.markdown:
        with open(os.path.join(REPO, "benches/RESULTS.md"), "a") as f:
            f.write("\n" + text)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"date": when, "commit": commit, "cpu": cpu_description(),
                       "texts": n, "labels": C, "threads": args.threads, "times": times,
                       "noise_floor": noise, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
