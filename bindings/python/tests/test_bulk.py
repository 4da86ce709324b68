"""emcoder.bulk on a real local Ray cluster (a head and two worker nodes on 127.0.0.1), on the
GoEmotions test split: the output equals `emcoder predict --json` row for row, a worker killed
mid-run still leaves complete output, and a rerun resumes instead of scoring twice. Also
--decide (stopping on decisions): parsed, recorded in the job's settings, passed to the model.

Needs the bulk extras (ray, pyarrow, pandas) and EMCODER_CLI (the emcoder binary);
scripts/test-python-package.sh provides both. EMCODER_BULK_SAMPLES (default 4) sets N: the
equality checked does not depend on it, only the run time does."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
np = pytest.importorskip("numpy")

import emcoder  # noqa: E402
from emcoder import bulk  # noqa: E402

CHECKOUT = Path(__file__).resolve().parents[3]
SPLIT = CHECKOUT / "data" / "goemotions" / "test.tsv"
SAMPLES = int(os.environ.get("EMCODER_BULK_SAMPLES", "4"))
SEED = 1234


def goemotions_test():
    ids, texts = [], []
    for line in SPLIT.read_text(encoding="utf-8").splitlines():
        text, _labels, id_ = line.split("\t")
        ids.append(id_)
        texts.append(text)
    limit = int(os.environ.get("EMCODER_BULK_LIMIT", "0"))
    return (ids[:limit], texts[:limit]) if limit else (ids, texts)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    ids, texts = goemotions_test()
    d = tmp_path_factory.mktemp("input")
    pq.write_table(pa.table({"comment_id": ids, "text": texts}), str(d / "test.parquet"),
                   row_group_size=1000)
    return d / "test.parquet", ids, texts


@pytest.fixture(scope="module")
def reference(split):
    """`emcoder predict --json` on the same texts, seed and samples."""
    cli = os.environ.get("EMCODER_CLI")
    if not cli:
        pytest.skip("EMCODER_CLI (the emcoder binary) is not set")
    _, _, texts = split
    out = subprocess.run([cli, "predict", "--json", "--samples", str(SAMPLES), "--seed",
                          str(SEED), "--model", emcoder.default_model_path()],
                         input="\n".join(texts) + "\n", capture_output=True, text=True,
                         check=True)
    results = json.loads(out.stdout)["results"]
    assert [r["text"] for r in results] == texts
    return results


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    # No CPUs on the head: the scoring actors run on the two worker nodes, one each.
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": 100 * 2**20, "include_dashboard": False})
    for _ in range(2):
        c.add_node(num_cpus=1, object_store_memory=100 * 2**20)
    c.wait_for_nodes()
    yield c
    c.shutdown()


def run_bulk(inp, out, *extra, address=None, wait=True):
    cmd = [sys.executable, "-m", "emcoder.bulk", "--input", str(inp), "--output", str(out),
           "--samples", str(SAMPLES), "--seed", str(SEED), "--id-column", "comment_id",
           "--partition-rows", "250", "--quiet", *extra]
    if address:
        cmd += ["--address", address]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env)
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def scorer_processes():
    """Pids of Ray Data's scoring actors (their process titles name the class)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            words = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if "MapWorker" in words and "Scorer" in words:
            found.append(int(d.name))
    return found


def read_output(out):
    files = sorted(Path(out).glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(str(f)) for f in files])


def assert_equals_reference(table, ids, reference, labels):
    assert table.num_rows == len(reference) == len(ids)
    assert table.column("id").to_pylist() == ids  # every row once, in input order
    assert table.column("error").null_count == table.num_rows
    assert table.column("n_tokens").to_pylist() == [r["n_tokens"] for r in reference]
    assert set(table.column("samples").to_pylist()) == {SAMPLES}
    for j, label in enumerate(labels):
        for stat in ("mean", "std", "epistemic"):
            got = table.column(f"{label}_{stat}").to_numpy()
            want = np.array([r["labels"][j][stat] for r in reference], dtype=np.float32)
            bad = np.flatnonzero(got != want)
            assert bad.size == 0, (label, stat, bad[:5], got[bad[:5]], want[bad[:5]])
        got = table.column(f"{label}_predicted").to_pylist()
        assert got == [r["labels"][j]["predicted"] for r in reference], label


def test_cluster_run_equals_the_cli_survives_a_killed_worker_and_resumes(
        cluster, split, reference, tmp_path):
    inp, ids, _ = split
    labels = [l["label"] for l in reference[0]["labels"]]
    out = tmp_path / "scores.parquet"
    t0 = time.monotonic()
    proc = run_bulk(inp, out, address=cluster.address, wait=False)
    # Kill one scoring actor's process once the first partition is written.
    killed = None
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if killed is None and any(out.glob("part-*.parquet")):
            pids = scorer_processes()
            if pids:
                killed = pids[0]
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.1)
    log = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, log
    assert killed is not None, "no scoring actor was seen to kill: " + log
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) == -(-len(ids) // 250)
    assert not list(out.glob(".*tmp")), "a temporary file was left behind"
    table = read_output(out)
    assert_equals_reference(table, ids, reference, labels)
    summary = json.loads((out / bulk.DONE_FILE).read_text())
    assert summary["rows"] == len(ids) and summary["skipped"] == 0
    print(f"\n{len(ids)} texts, N={SAMPLES}, 2 workers (one killed): "
          f"{time.monotonic() - t0:.1f} s", file=sys.stderr)

    # Resume: two partitions lost; the rerun scores those two only, and gets the same bytes
    # of numbers.
    for p in (parts[1], parts[-1]):
        p.unlink()
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    r = run_bulk(inp, out, address=cluster.address)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((out / bulk.DONE_FILE).read_text())
    assert summary["skipped"] == len(parts) - 2
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    assert {k: after[k] for k in before} == before  # the others were not rewritten
    assert read_output(out).equals(table)

    # A rerun with settings that change the numbers is refused, naming them.
    r = run_bulk(inp, out, "--seed", "7", address=cluster.address)
    assert r.returncode == 1 and "seed: 1234 there, 7 now" in r.stderr, r.stderr
    r = run_bulk(inp, out, "--decide", "0.01", address=cluster.address)
    assert r.returncode == 1 and "decision_error: None there, 0.01 now" in r.stderr, r.stderr


def test_a_bad_text_is_one_error_row_not_a_failed_job(tmp_path):
    table = pa.table({"id": pa.array([0, 1, 2, 3], pa.int64()),
                      "text": ["fine", "has a \0 NUL", "word " * 5000, "also fine"]})
    with emcoder.Model.load(threads=1) as model:
        out = bulk.score_table(model, table, samples=3, seed=5, tolerance=None, truncate=False)
        want = model.predict(["fine", "also fine"], samples=3, seed=5)
    errors = out.column("error").to_pylist()
    assert errors[0] is None and errors[3] is None
    assert "NUL" in errors[1] and "tokens" in errors[2]
    m = out.column(f"{model.labels[0]}_mean").to_numpy()
    assert m[0] == want.mean[0, 0] and m[3] == want.mean[1, 0]
    assert np.isnan(m[1]) and np.isnan(m[2])
    assert out.column("samples").to_pylist() == [3, 0, 0, 3]


def test_input_errors_say_what_to_fix(tmp_path):
    p = tmp_path / "in.parquet"
    pq.write_table(pa.table({"body": ["a", "b"]}), str(p))
    args = bulk.parser().parse_args(["--input", str(p), "--output", str(tmp_path / "o")])
    with pytest.raises(bulk.BulkError, match="no column 'text'.*body.*--text-column"):
        bulk.run(args)
    pq.write_table(pa.table({"text": ["a", None, "c"]}), str(p))
    with pytest.raises(bulk.BulkError, match="1 null texts \\(the first at row 1\\)"):
        bulk.run(args)
    args.input = str(tmp_path / "missing.jsonl")
    with pytest.raises(bulk.BulkError, match="no such file"):
        bulk.run(args)
    (tmp_path / "junk.jsonl").write_text("{not json\n")
    args.input = str(tmp_path / "junk.jsonl")
    with pytest.raises(bulk.BulkError, match="JSON Lines"):
        bulk.run(args)
    assert bulk.main(["--input", str(p), "--output", str(tmp_path / "o"), "--samples", "0"]) == 2


def test_jsonl_input_locally(tmp_path):
    """JSON Lines input on a local Ray instance (no --address), ids from the row number."""
    texts = ["I love it", "I hate it", "meh", "What a surprise!", "thanks a lot"]
    p = tmp_path / "in.jsonl"
    p.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "o"
    r = subprocess.run([sys.executable, "-m", "emcoder.bulk", "--input", str(p), "--output",
                        str(out), "--samples", "5", "--partition-rows", "2", "--workers", "1",
                        "--address", "local", "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    table = read_output(out)
    assert table.column("id").to_pylist() == list(range(5))
    with emcoder.Model.load(threads=1) as model:
        want = model.predict(texts, samples=5, seed=42)
    for j, label in enumerate(want.labels):
        assert (table.column(f"{label}_mean").to_numpy() == want.mean[:, j]).all()


# Texts the shipped model reads with confidence: at decision_error 0.01 some settle before 50.
DECIDE_TEXTS = ["I am so happy you are here!", "This is the worst day ever.", "ok",
                "Thank you so much, that was really kind of you."]


def test_decide_option_and_job_settings(tmp_path):
    """--decide without Ray: parsed and validated, exclusive with --tolerance, recorded in the
    job settings (a rerun with another value, or without it, is refused; a job file written
    before the option existed resumes without it), and passed to the model by score_table."""
    p = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": DECIDE_TEXTS}), str(p))
    out = tmp_path / "o"
    argv = ["--input", str(p), "--output", str(out), "--samples", "50"]
    args = bulk.parser().parse_args(argv + ["--decide", "0.01"])
    assert args.decide == 0.01 and args.tolerance is None
    table = bulk.read_input(args.input, args.text_column, args.id_column)
    settings = bulk.job_settings(args, table)
    assert settings["decision_error"] == 0.01 and settings["tolerance"] is None
    bulk.prepare_output(out, settings)
    assert json.loads((out / bulk.JOB_FILE).read_text())["decision_error"] == 0.01
    bulk.prepare_output(out, settings)  # the same settings resume
    other = bulk.job_settings(bulk.parser().parse_args(argv + ["--decide", "0.05"]), table)
    with pytest.raises(bulk.BulkError, match="decision_error: 0.01 there, 0.05 now"):
        bulk.prepare_output(out, other)
    off = bulk.job_settings(bulk.parser().parse_args(argv), table)
    assert off["decision_error"] is None
    with pytest.raises(bulk.BulkError, match="decision_error: 0.01 there, None now"):
        bulk.prepare_output(out, off)
    # A job written before --decide existed has no such key: it resumes without the option.
    old = tmp_path / "old"
    old.mkdir()
    (old / bulk.JOB_FILE).write_text(
        json.dumps({k: v for k, v in off.items() if k != "decision_error"}))
    bulk.prepare_output(old, off)
    with pytest.raises(bulk.BulkError, match="decision_error: None there, 0.01 now"):
        bulk.prepare_output(old, settings)

    for bad in ("0", "1", "-0.5", "nan"):
        assert bulk.main(argv + ["--decide", bad]) == 2
    with pytest.raises(SystemExit) as e:
        bulk.parser().parse_args(argv + ["--decide", "0.01", "--tolerance", "0.1"])
    assert e.value.code == 2

    part = pa.table({"id": pa.array(range(len(DECIDE_TEXTS)), pa.int64()), "text": DECIDE_TEXTS})
    with emcoder.Model.load(threads=1) as model:
        scored = bulk.score_table(model, part, samples=50, seed=42, tolerance=None,
                                  truncate=False, decision_error=0.01)
        want = model.predict(DECIDE_TEXTS, samples=50, seed=42, decision_error=0.01)
    assert scored.column("samples").to_pylist() == want.samples.tolist()
    assert min(want.samples) < 50  # so a dropped option would show
    for j, label in enumerate(want.labels):
        assert (scored.column(f"{label}_mean").to_numpy() == want.mean[:, j]).all()


def test_decide_end_to_end_locally(tmp_path):
    """--decide through the Ray actors (local Ray): the samples and numbers of
    Model.predict(decision_error=...)."""
    p = tmp_path / "in.jsonl"
    p.write_text("".join(json.dumps({"text": t}) + "\n" for t in DECIDE_TEXTS))
    out = tmp_path / "o"
    r = subprocess.run([sys.executable, "-m", "emcoder.bulk", "--input", str(p), "--output",
                        str(out), "--samples", "50", "--decide", "0.01", "--partition-rows",
                        "2", "--workers", "1", "--address", "local", "--quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((out / bulk.JOB_FILE).read_text())["decision_error"] == 0.01
    table = read_output(out)
    with emcoder.Model.load(threads=1) as model:
        want = model.predict(DECIDE_TEXTS, samples=50, seed=42, decision_error=0.01)
    assert table.column("samples").to_pylist() == want.samples.tolist()
    assert min(want.samples) < 50
    for j, label in enumerate(want.labels):
        assert (table.column(f"{label}_mean").to_numpy() == want.mean[:, j]).all()
