"""Throughput of `python -m emcoder.bulk` on a local Ray cluster with 1 and 2 worker nodes
(one CPU and one scoring actor each), next to `emcoder predict` in one process with the same
number of threads, on the GoEmotions test split. Prints a Markdown table (docs/bulk.md).

    target/python-package/venv/bin/python benches/bulk_throughput.py \
        --cli target/release/emcoder [--samples 50] [--workers 1 2] [--limit K]

Needs the environment scripts/test-python-package.sh builds (the wheel with its bulk extras).
Times are wall-clock from launch to exit, model loads and Ray's actor start included; the
cluster itself is started before the clock starts.
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from ray.cluster_utils import Cluster

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True, help="the emcoder binary (release)")
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--limit", type=int, default=0, help="first K texts only")
    ap.add_argument("--partition-rows", type=int, default=250)
    a = ap.parse_args()

    texts = [line.split("\t")[0] for line in
             (ROOT / "data/goemotions/test.tsv").read_text(encoding="utf-8").splitlines()]
    if a.limit:
        texts = texts[:a.limit]
    tmp = Path(tempfile.mkdtemp(prefix="emcoder-bulk-bench-"))
    pq.write_table(pa.table({"text": texts}), str(tmp / "in.parquet"))
    env = dict(os.environ, RAY_DISABLE_USAGE_STATS="1")
    rows = []
    for k in a.workers:
        # In one process: the CLI with k threads.
        t0 = time.perf_counter()
        subprocess.run([a.cli, "predict", "--json", "--samples", str(a.samples), "--threads",
                        str(k)], input="\n".join(texts) + "\n", capture_output=True, text=True,
                       check=True)
        rows.append((f"`emcoder predict`, one process, {k} thread(s)", time.perf_counter() - t0))
        # On a cluster: a head without CPUs and k worker nodes of one CPU each.
        c = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "object_store_memory": 100 * 2**20, "include_dashboard": False})
        for _ in range(k):
            c.add_node(num_cpus=1, object_store_memory=100 * 2**20)
        c.wait_for_nodes()
        try:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "emcoder.bulk", "--input",
                            str(tmp / "in.parquet"), "--output", str(tmp / f"out{k}"),
                            "--samples", str(a.samples), "--partition-rows",
                            str(a.partition_rows), "--address", c.address, "--quiet"],
                           check=True, env=env)
            rows.append((f"`emcoder.bulk`, Ray cluster, {k} worker node(s) x 1 actor",
                         time.perf_counter() - t0))
        finally:
            c.shutdown()
    print(f"\n{len(texts)} GoEmotions test texts, MC N={a.samples}; {cpu_model()}, "
          f"{os.cpu_count()} logical CPUs\n")
    print("| run | seconds | texts/s |")
    print("|---|---|---|")
    for name, s in rows:
        print(f"| {name} | {s:.1f} | {len(texts) / s:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
