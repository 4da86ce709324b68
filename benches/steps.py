#!/usr/bin/env python3
"""What each optimization step bought: `emcoder bench` of several commits, side by side.

    python3 benches/steps.py [--rounds 3] [--iters 10] [--threads 2] \
        [--model bench-models/full-f32] COMMIT[=LABEL] ...

Each commit is checked out in a temporary worktree and built (`cargo build --release -p
emcoder-cli`, one shared target directory so dependencies build once); then the binaries
run the cases below in interleaved rounds (every binary once per round, so background load
hits all of them alike). A cell is the median over rounds of each run's median latency; the
table also shows each step's ratio to the previous commit. Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

CASES = [
    ("a f32: N=50, 16 tokens", ["--precision", "f32", "-n", "50", "--tokens", "16"]),
    ("a bf16: N=50, 16 tokens", ["--precision", "bf16", "-n", "50", "--tokens", "16"]),
    ("b bf16: N=50, 64 tokens", ["--precision", "bf16", "-n", "50", "--tokens", "64"]),
    ("d f32: N=1, 16 tokens", ["--precision", "f32", "-n", "0", "--tokens", "16"]),
    ("d bf16: N=1, 16 tokens", ["--precision", "bf16", "-n", "0", "--tokens", "16"]),
]


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, **kw)


def build(repo: str, commit: str, work: str) -> str:
    sha = sh(["git", "-C", repo, "rev-parse", "--short", commit], capture_output=True).stdout.strip()
    wt = os.path.join(work, f"wt-{sha}")
    sh(["git", "-C", repo, "worktree", "add", "--detach", "-f", wt, sha], capture_output=True)
    env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(work, "target"))
    print(f"building {sha} ...", file=sys.stderr)
    sh(["cargo", "build", "--release", "-q", "-p", "emcoder-cli"], cwd=wt, env=env)
    binary = os.path.join(work, f"emcoder-{sha}")
    shutil.copy(os.path.join(work, "target", "release", "emcoder"), binary)
    sh(["git", "-C", repo, "worktree", "remove", "--force", wt], capture_output=True)
    return binary


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("commits", nargs="+", help="COMMIT or COMMIT=LABEL, oldest first")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="bench-models/full-f32")
    ap.add_argument("--cases", default="", help="comma-separated case letters+precision, e.g. 'a f32,d bf16'")
    args = ap.parse_args()
    repo = sh(["git", "rev-parse", "--show-toplevel"], capture_output=True).stdout.strip()
    model = os.path.abspath(args.model)
    if not os.path.exists(os.path.join(model, "model.safetensors")):
        sys.exit(f"{model} has no model.safetensors: run `emcoder make-model {args.model}` first")
    cases = CASES
    if args.cases:
        want = [c.strip() for c in args.cases.split(",")]
        cases = [c for c in CASES if any(c[0].startswith(w) for w in want)]
    work = tempfile.mkdtemp(prefix="emcoder-steps-")
    steps = []
    for spec in args.commits:
        commit, _, label = spec.partition("=")
        steps.append((commit, label or commit, build(repo, commit, work)))
    times = {(s[1], c[0]): [] for s in steps for c in cases}
    for r in range(args.rounds):
        for name, flags in cases:
            for _, label, binary in steps:
                out = sh([binary, "bench", "--model", model, "--threads", str(args.threads),
                          "--iters", str(args.iters), "--json", *flags], capture_output=True).stdout
                times[(label, name)].append(json.loads(out)["median_ms"])
                print(f"round {r + 1} {label:>30} {name}: {times[(label, name)][-1]:.1f} ms",
                      file=sys.stderr)
    load = os.getloadavg()
    print(f"Median over {args.rounds} interleaved rounds of each run's median (ms, {args.iters} "
          f"iterations), {args.threads} threads, model {args.model}; load average at the end "
          f"{load[0]:.2f}. In parentheses: the ratio to the step before (> 1 = faster).\n")
    print("| step | " + " | ".join(c[0] for c in cases) + " |")
    print("|---|" + "---|" * len(cases))
    prev = None
    for commit, label, _ in steps:
        cells = []
        for name, _ in cases:
            m = statistics.median(times[(label, name)])
            if prev is not None:
                p = statistics.median(times[(prev, name)])
                cells.append(f"{m:.1f} ({p / m:.2f}x)")
            else:
                cells.append(f"{m:.1f}")
        print(f"| {label} | " + " | ".join(cells) + " |")
        prev = label
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
