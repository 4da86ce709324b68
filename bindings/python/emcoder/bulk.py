"""Bulk scoring on a Ray cluster: millions of texts, every worker running libemcoder.

    python -m emcoder.bulk --input texts.parquet --output scores.parquet --samples 50

reads the texts (Parquet file or folder, or JSON Lines), cuts them into partitions of
``--partition-rows`` rows, and scores the partitions with Ray Data ``map_batches`` on a pool of
stateful actors (one model loaded per actor, once). Each partition becomes one Parquet file of
the output folder, written to a temporary name and renamed when complete, so a rerun (after a
crash, a Ctrl-C, a lost node) scores only the partitions that have no file yet: nothing is lost
and no row is written twice. A worker that dies mid-run is replaced by Ray and its partition
scored again; partitions still missing after Ray's own retries are run again by this driver
(``--attempts``). Results depend only on (model, text, samples, seed, and the stopping rule:
``--tolerance`` or ``--decide``), so a rescored partition is bit-identical to the first try and
the output equals ``emcoder predict --json`` on the same texts with the same options, row for
row.

Output columns, one row per input row in input order (partition files ``part-NNNNN.parquet``
in order): ``id`` (the ``--id-column``, else the row number), ``n_tokens``, ``samples`` (the
samples that text drew: fewer than ``--samples`` where ``--tolerance`` or ``--decide`` stopped it
early) and per
label ``<label>_mean``, ``<label>_std``, ``<label>_epistemic`` (float32) and
``<label>_predicted`` (bool), and ``error``: null, or why that one text could not be scored
(e.g. a NUL character, or too long without ``--truncate``); its statistics are then NaN.
``pandas.read_parquet(output)`` reads the whole result.

Where it runs: ``--address`` (or $RAY_ADDRESS) names a running cluster ("auto" for the local
node's, "ray://host:10001" for a remote one); without it a local Ray instance is started. On a
multi-machine cluster every worker needs this package installed (``pip install emcoder`` or the
wheel) and the same paths: ``--model`` (bundled model by default) and ``--output`` on a shared
file system. docs/bulk.md has the details and measured throughput.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

JOB_FILE = "_emcoder_job.json"
DONE_FILE = "_SUCCESS"


class BulkError(Exception):
    """A problem with the job's input, output or settings; the message says what to fix."""


# ---- Input --------------------------------------------------------------------------------


def read_input(path: str, text_column: str, id_column: Optional[str]):
    """The input as a pyarrow Table with columns ``text`` (string) and ``id``."""
    import pyarrow as pa

    p = Path(path)
    if not p.exists():
        raise BulkError(f"--input {path}: no such file or folder")
    name = p.name.lower()
    try:
        if name.endswith((".jsonl", ".json", ".ndjson")):
            import pyarrow.json as pj

            table = pj.read_json(str(p))
        else:
            import pyarrow.parquet as pq

            names = pq.ParquetDataset(str(p)).schema.names
            wanted = [c for c in (text_column, id_column) if c]
            missing = [c for c in wanted if c not in names]
            if missing:
                raise BulkError(f"--input {path} has no column {missing[0]!r} (columns: "
                                f"{', '.join(names)}): set --text-column / --id-column")
            table = pq.read_table(str(p), columns=wanted)
    except BulkError:
        raise
    except Exception as e:  # pyarrow's own message says what is wrong with the file
        raise BulkError(f"--input {path}: cannot read it as "
                        f"{'JSON Lines' if name.endswith(('.jsonl', '.json', '.ndjson')) else 'Parquet'}: {e}") from None
    if text_column not in table.column_names:
        raise BulkError(f"--input {path} has no column {text_column!r} (columns: "
                        f"{', '.join(table.column_names)}): set --text-column / --id-column")
    texts = table.column(text_column)
    if not pa.types.is_string(texts.type) and not pa.types.is_large_string(texts.type):
        raise BulkError(f"column {text_column!r} of {path} holds {texts.type}, not strings")
    if texts.null_count:
        first = next(i for i, v in enumerate(texts.is_null().to_pylist()) if v)
        raise BulkError(f"column {text_column!r} of {path} has {texts.null_count} null texts "
                        f"(the first at row {first}): drop or fill them")
    if id_column:
        if id_column not in table.column_names:
            raise BulkError(f"--input {path} has no column {id_column!r} (columns: "
                            f"{', '.join(table.column_names)}): set --text-column / --id-column")
        ids = table.column(id_column)
    else:
        ids = pa.array(range(table.num_rows), type=pa.int64())
    return pa.table({"id": ids, "text": texts.cast(pa.string())})


def fingerprint(table) -> str:
    """SHA-256 of the ids and texts, to tell a rerun on the same input from another input."""
    h = hashlib.sha256()
    for col in ("id", "text"):
        for chunk in table.column(col).chunks:
            for buf in chunk.buffers():
                if buf is not None:
                    h.update(memoryview(buf))
    h.update(str(table.num_rows).encode())
    return h.hexdigest()


# ---- Scoring (runs on the workers) --------------------------------------------------------


def score_table(model, part, samples: int, seed: int, tolerance: Optional[float],
                truncate: bool, decision_error: Optional[float] = None):
    """Scores the rows of ``part`` (columns id, text) with ``model``: the output table.
    ``tolerance`` / ``decision_error``: the stopping rule (``Model.predict``'s), or None."""
    import numpy as np
    import pyarrow as pa

    import emcoder

    texts = part.column("text").to_pylist()
    n, labels = len(texts), model.labels
    opts = dict(samples=samples, seed=seed, tolerance=tolerance, truncate=truncate,
                decision_error=decision_error)
    errors: List[Optional[str]] = [None] * n
    # (rows of the output, their Predictions): one call for the whole part, or one per text
    # when a bad text fails the call (the results do not depend on the batch).
    scored: List[Tuple[object, "emcoder.Predictions"]] = []
    try:
        scored.append((slice(None), model.predict(texts, **opts)))
    except (emcoder.InvalidArgumentError, emcoder.InvalidUtf8Error):
        for i, t in enumerate(texts):
            try:
                scored.append((slice(i, i + 1), model.predict([t], **opts)))
            except (emcoder.InvalidArgumentError, emcoder.InvalidUtf8Error) as e:
                errors[i] = str(e)
    nl = len(labels)
    # Rows that failed keep NaN statistics, False decisions and 0 tokens and samples.
    stats = {k: np.full((n, nl), np.nan, dtype=np.float32) for k in ("mean", "std", "epistemic")}
    predicted = np.zeros((n, nl), dtype=bool)
    n_tokens = np.zeros(n, dtype=np.int32)
    n_samples = np.zeros(n, dtype=np.int32)
    for rows, preds in scored:
        for k, a in stats.items():
            a[rows] = getattr(preds, k)
        predicted[rows] = preds.predicted
        n_tokens[rows], n_samples[rows] = preds.n_tokens, preds.samples
    cols: Dict[str, object] = {"id": part.column("id"), "n_tokens": n_tokens, "samples": n_samples}
    for j, label in enumerate(labels):
        cols[f"{label}_mean"] = stats["mean"][:, j]
        cols[f"{label}_std"] = stats["std"][:, j]
        cols[f"{label}_epistemic"] = stats["epistemic"][:, j]
        cols[f"{label}_predicted"] = predicted[:, j]
    cols["error"] = pa.array(errors, type=pa.string())
    return pa.table(cols)


def part_path(output: Path, part: int) -> Path:
    return output / f"part-{part:05d}.parquet"


def write_atomically(table, path: Path) -> None:
    """Writes ``path`` so that it either does not exist or is complete (rename is atomic)."""
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, str(tmp))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Scorer:
    """The Ray Data actor: loads the model once, then scores whole partitions."""

    def __init__(self, table_ref, settings: dict):
        import ray

        import emcoder

        [ref] = table_ref  # nested in a list so that Ray passes the reference, not the table
        self.table = ray.get(ref)
        self.s = settings
        self.model = emcoder.Model.load(settings["model"], threads=settings["threads"],
                                        precision=settings["precision"])

    def __call__(self, batch):
        import numpy as np

        done = []
        for part, start, stop in zip(batch["part"], batch["start"], batch["stop"]):
            path = part_path(Path(self.s["output"]), int(part))
            if not path.exists():  # a retried task may find its partition already written
                out = score_table(self.model, self.table.slice(int(start), int(stop) - int(start)),
                                  self.s["samples"], self.s["seed"], self.s["tolerance"],
                                  self.s["truncate"], self.s["decision_error"])
                write_atomically(out, path)
            done.append(int(part))
        return {"part": np.array(done, dtype=np.int64),
                "rows": np.array([int(b) - int(a) for a, b in zip(batch["start"], batch["stop"])],
                                 dtype=np.int64)}


# ---- The job ------------------------------------------------------------------------------


def job_settings(args, table) -> dict:
    import emcoder

    model = args.model or emcoder.default_model_path()
    return {
        "input": str(Path(args.input).resolve()),
        "input_sha256": fingerprint(table),
        "rows": table.num_rows,
        "model": str(Path(model).resolve()),
        "samples": args.samples,
        "seed": args.seed,
        "tolerance": args.tolerance,
        "decision_error": args.decide,
        "truncate": args.truncate,
        "precision": args.precision,
        "partition_rows": args.partition_rows,
        "emcoder": emcoder.version(),
    }


# Settings that change the numbers: a rerun must match them to resume. (threads and the
# number of workers do not change results.) A job file written before decision_error existed
# lacks the key, which reads as None: such jobs resume without --decide.
_RESULT_KEYS = ("input_sha256", "rows", "samples", "seed", "tolerance", "decision_error",
                "truncate", "precision", "partition_rows", "emcoder")


def prepare_output(output: Path, settings: dict) -> None:
    output.mkdir(parents=True, exist_ok=True)
    job = output / JOB_FILE
    if job.exists():
        try:
            old = json.loads(job.read_text())
        except (OSError, ValueError) as e:
            raise BulkError(f"{job} is unreadable ({e}): delete the output folder to start over")
        diff = [k for k in _RESULT_KEYS if old.get(k) != settings[k]]
        if diff:
            raise BulkError(
                f"--output {output} holds a job with other settings ("
                + ", ".join(f"{k}: {old.get(k)!r} there, {settings[k]!r} now" for k in diff)
                + "): resuming would mix results; choose another --output or delete it")
        # The model folder may move between machines; its numbers are checked by the keys.
    else:
        leftovers = [p.name for p in output.glob("part-*.parquet")]
        if leftovers:
            raise BulkError(f"--output {output} holds {len(leftovers)} partition files but no "
                            f"{JOB_FILE}: not an emcoder.bulk output; choose another folder")
        tmp = output / f".{JOB_FILE}.tmp"
        tmp.write_text(json.dumps(settings, indent=2) + "\n")
        os.replace(tmp, job)


def partitions(rows: int, size: int) -> List[tuple]:
    return [(i, s, min(s + size, rows)) for i, s in enumerate(range(0, rows, size))]


def run(args) -> dict:
    import ray

    t0 = time.monotonic()
    table = read_input(args.input, args.text_column, args.id_column)
    output = Path(args.output)
    settings = job_settings(args, table)
    prepare_output(output, settings)
    parts = partitions(table.num_rows, args.partition_rows)
    pending = [p for p in parts if not part_path(output, p[0]).exists()]
    skipped = len(parts) - len(pending)
    if skipped:
        log(args, f"resuming: {skipped} of {len(parts)} partitions already scored")
    if pending:
        init = {"address": args.address} if args.address else {}
        if not ray.is_initialized():
            ray.init(**init, logging_level="WARNING", log_to_driver=False,
                     include_dashboard=False, ignore_reinit_error=True)
        ray.data.DataContext.get_current().enable_progress_bars = False
        ref = ray.put(table)
        workers = args.workers or max(1, int(ray.cluster_resources().get("CPU", 1) // args.threads))
        actor_settings = dict(settings, output=str(output.resolve()), threads=args.threads)
        bar = progress(args, total=sum(b - a for _, a, b in pending), done=table.num_rows
                       - sum(b - a for _, a, b in pending))
        try:
            for attempt in range(1, args.attempts + 1):
                todo = [p for p in pending if not part_path(output, p[0]).exists()]
                if not todo:
                    break
                ds = ray.data.from_items(
                    [{"part": i, "start": a, "stop": b} for i, a, b in todo],
                    override_num_blocks=len(todo))
                # Ray Data restarts a dead actor and retries its task without limit by
                # default (max_restarts=-1, max_task_retries=-1).
                pool = ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=2)
                ds = ds.map_batches(Scorer, batch_size=1, compute=pool, num_cpus=args.threads,
                                    fn_constructor_args=([ref], actor_settings))
                try:
                    for batch in ds.iter_batches(batch_size=1, batch_format="numpy"):
                        bar.update(int(batch["rows"].sum()))
                except Exception as e:  # noqa: BLE001 - Ray's errors vary by version
                    if attempt == args.attempts:
                        raise BulkError(f"scoring failed {attempt} times, last: {e}; rerun the "
                                        "same command to resume") from None
                    log(args, f"attempt {attempt} failed ({type(e).__name__}: {e}); retrying "
                              "the partitions not written yet")
        finally:
            bar.close()
    missing = [i for i, _, _ in parts if not part_path(output, i).exists()]
    if missing:
        raise BulkError(f"{len(missing)} partitions were not written (first: {missing[0]}); "
                        "rerun the same command to resume")
    summary = {"rows": table.num_rows, "partitions": len(parts), "skipped": skipped,
               "seconds": round(time.monotonic() - t0, 3), "output": str(output)}
    (output / DONE_FILE).write_text(json.dumps(summary) + "\n")
    return summary


# ---- Command line -------------------------------------------------------------------------


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def progress(args, total: int, done: int):
    if args.quiet:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total + done, initial=done, unit="text", desc="emcoder.bulk",
                file=sys.stderr, smoothing=0.1)


def log(args, message: str) -> None:
    if not args.quiet:
        print(f"emcoder.bulk: {message}", file=sys.stderr, flush=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m emcoder.bulk",
        description="Score a Parquet or JSON Lines file of texts with EmCoder on a Ray cluster "
                    "(resumable: a rerun skips the partitions already written).")
    p.add_argument("--input", required=True, help="Parquet file or folder, or .jsonl file")
    p.add_argument("--output", required=True, help="output folder (Parquet partitions)")
    p.add_argument("--text-column", default="text", help="column of the texts [text]")
    p.add_argument("--id-column", default=None, help="column copied to the output's id "
                   "[default: the row number]")
    p.add_argument("--model", default=None, help="model folder on every worker [the bundled "
                   "EmCoder-mini, or $EMCODER_MODEL]")
    p.add_argument("--samples", "-n", type=int, default=50, help="MC-dropout samples [50]")
    p.add_argument("--seed", type=int, default=42, help="seed of the dropout masks [42]")
    stopping = p.add_mutually_exclusive_group()
    stopping.add_argument("--tolerance", type=float, default=None,
                          help="adaptive sampling: stop a text once every mean's standard "
                               "error is below this")
    stopping.add_argument("--decide", type=float, default=None, metavar="A",
                          help="sampling that stops on decisions: stop a text once every "
                               "label's thresholded decision is settled at error rate A, in "
                               "(0, 1), e.g. 0.01 (a z-test per label against its threshold, "
                               "Bonferroni over the blocks of 10; at most --samples)")
    p.add_argument("--truncate", action="store_true", help="truncate over-long texts instead "
                   "of recording an error")
    p.add_argument("--precision", choices=("f32", "bf16", "int8"), default="f32",
                   help="precision of the weights and products (emcoder.Model.load) [f32]")
    p.add_argument("--partition-rows", type=int, default=1000,
                   help="rows per partition: the unit of work, of output files and of resuming")
    p.add_argument("--workers", type=int, default=0,
                   help="scoring actors [0: the cluster's CPUs / --threads]")
    p.add_argument("--threads", type=int, default=1, help="threads (and CPUs) per actor [1]")
    p.add_argument("--attempts", type=int, default=3,
                   help="runs over the missing partitions after Ray's own retries [3]")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                   help="Ray cluster to use: 'auto' (this node's), 'host:port', "
                        "'ray://host:10001', or 'local' (start a new local Ray) [default: "
                        "$RAY_ADDRESS, else the running cluster Ray finds, else a local Ray]")
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    for name in ("samples", "partition_rows", "threads", "attempts"):
        if getattr(args, name) < 1:
            print(f"emcoder.bulk: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    if args.workers < 0:
        print("emcoder.bulk: --workers must be 0 (automatic) or more", file=sys.stderr)
        return 2
    if args.decide is not None and not 0 < args.decide < 1:
        print(f"emcoder.bulk: --decide {args.decide}: use an error rate strictly between 0 and "
              "1 (e.g. 0.01)", file=sys.stderr)
        return 2
    try:
        summary = run(args)
    except BulkError as e:
        print(f"emcoder.bulk: {e}", file=sys.stderr)
        return 1
    except ImportError as e:
        print(f"emcoder.bulk: {e}: install the bulk extras (pip install 'emcoder[bulk]')",
              file=sys.stderr)
        return 1
    log(args, f"{summary['rows']} rows in {summary['partitions']} partitions "
              f"({summary['skipped']} already done) in {summary['seconds']} s -> {summary['output']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
