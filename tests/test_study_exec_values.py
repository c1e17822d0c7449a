"""Study execution values: the process and Dask executors give the local executor's tables,
a chunk that fails is recorded on its own runs, resuming computes only what is missing, the
work of one chunk (batch fallback, intervention and trained rows), and the report's numbers
against the run table.

The process pool is replaced here by a thread pool of the same interface (the pool logic is
what is checked; spawned workers are covered by the slower tests of test_study_runner.py), and
Dask runs on an in-process LocalCluster, so that each test takes a second or two."""

from __future__ import annotations

import concurrent.futures
import importlib
import json
import math
import os
import re
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import error_line, interrupt_chunk, invoke
from tiny_study import KICK_PART, NET_PART, write_tiny_study

import ncsim.study.executors as executors
from ncsim.errors import InputError
from ncsim.study.compute import run_chunk
from ncsim.study.runner import run_study
from ncsim.study.spec import RunDesc, load_study
from ncsim.study.store import Store

NUMBERS = ["status", "onset_time", "fn_at_onset", "final_fn", "final_nc1_trace", "steps",
           "t_final", "sim_run_id"]


def _study(tmp_path: Path, seeds: int = 3, chunk: int = 1, extra: str = ""):
    return load_study(write_tiny_study(tmp_path, seeds=seeds, chunk=chunk, records=12,
                                       extra=extra))


def _table(out: Path) -> pd.DataFrame:
    """The run table's computed values, by run id (timings and provenance left out)."""
    runs = pd.read_parquet(out / "runs.parquet").set_index("run_id").sort_index()
    return runs[[c for c in NUMBERS if c in runs]]


def _trajectories(out: Path) -> pd.DataFrame:
    traj = pd.read_parquet(out / "trajectories.parquet")
    return traj.sort_values(["run_id", "time"], kind="stable").reset_index(drop=True)


def _is_nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _fails_on_seed(seed: int, error: Exception):
    """A chunk function that raises ``error`` for the chunk holding ``seed``."""
    def work(chunk):
        if any(d.params.get("seed") == seed for d in chunk):
            raise error
        return run_chunk(chunk)
    return work


class _ThreadPool(concurrent.futures.ThreadPoolExecutor):
    """The process pool's interface on threads of this process; records how it was made."""

    made: list[tuple] = []

    def __init__(self, count, mp_context=None, initializer=None):
        _ThreadPool.made.append((count, mp_context.get_start_method(), initializer))
        super().__init__(count)


@pytest.fixture
def thread_pool(monkeypatch):
    _ThreadPool.made = []
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", _ThreadPool)
    return _ThreadPool


@pytest.fixture
def in_process_dask(monkeypatch):
    """Dask's LocalCluster with in-process workers (the keyword arguments the executor gave
    recorded), the worker initialiser recorded instead of run in this process."""
    distributed = pytest.importorskip("dask.distributed")
    real = distributed.LocalCluster
    made: list[dict] = []

    def cluster(**kwargs):
        made.append(kwargs)
        return real(**{**kwargs, "processes": False})

    monkeypatch.setattr(distributed, "LocalCluster", cluster)
    monkeypatch.setattr(executors, "_init_worker", _note_init)
    os.environ.pop("NCSIM_TEST_WORKER_INIT", None)
    yield made
    os.environ.pop("NCSIM_TEST_WORKER_INIT", None)


def _note_init() -> None:
    os.environ["NCSIM_TEST_WORKER_INIT"] = "1"


# ----------------------------------------------------------------------------- executors
def test_process_executor_gives_the_local_tables(tmp_path, thread_pool, monkeypatch):
    """The process executor's run and trajectory tables equal the local executor's (the same
    chunks computed elsewhere): every value, every run. Its pool has one worker per chunk up to
    the CPUs (8 here; 3 chunks, 3 workers) or --workers (2), spawned workers, and the worker
    initialiser."""
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    study = _study(tmp_path, seeds=3)
    run_study(study, tmp_path / "local", progress=False, report=False)
    run_study(study, tmp_path / "proc", executor="process", progress=False, report=False)
    pd.testing.assert_frame_equal(_table(tmp_path / "proc"), _table(tmp_path / "local"))
    pd.testing.assert_frame_equal(_trajectories(tmp_path / "proc"),
                                  _trajectories(tmp_path / "local"))
    assert thread_pool.made == [(3, "spawn", executors._init_worker)]
    run_study(study, tmp_path / "two", executor="process", workers=2, progress=False,
              report=False)
    assert thread_pool.made[-1][0] == 2


def test_process_executor_records_a_failed_chunk_on_its_own_runs(tmp_path, thread_pool,
                                                                monkeypatch):
    """The last of three one-run chunks raises: its run (seed 2), and no other, is failed with
    'process executor: <error>'; the other two are computed as by the local executor."""
    study = _study(tmp_path, seeds=3)
    run_study(study, tmp_path / "local", progress=False, report=False)
    monkeypatch.setattr(executors, "run_chunk", _fails_on_seed(2, MemoryError("no room")))
    summary = run_study(study, tmp_path / "proc", executor="process", workers=1,
                        progress=False, report=False)
    assert (summary.computed, summary.failed) == (3, 1)
    runs = pd.read_parquet(tmp_path / "proc" / "runs.parquet").set_index("seed")
    assert list(runs["status"]) == ["ok", "ok", "failed"]
    assert runs.loc[2, "error"] == "process executor: MemoryError: no room"
    local = _table(tmp_path / "local")
    ok = _table(tmp_path / "proc").drop(index=runs.loc[2, "run_id"])
    # the failed row's missing steps make the column float: the values are compared
    pd.testing.assert_frame_equal(ok, local.loc[ok.index], check_dtype=False)


def test_a_pool_that_breaks_while_chunks_are_submitted_records_the_rest(tmp_path,
                                                                       monkeypatch):
    """A pool that breaks after taking the first chunk (its submit raises BrokenProcessPool):
    the first chunk is computed, each later chunk is recorded as failed with the pool's error
    and what it means; every run of the study has a row."""
    class Breaking(_ThreadPool):
        def submit(self, fn, *args):
            if self.taken:
                raise BrokenProcessPool("A child process terminated abruptly")
            self.taken = True
            return super().submit(fn, *args)

    def make(count, mp_context=None, initializer=None):
        pool = Breaking(count, mp_context, initializer)
        pool.taken = False
        return pool

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", make)
    study = _study(tmp_path, seeds=3)
    summary = run_study(study, tmp_path / "out", executor="process", progress=False,
                        report=False)
    assert (summary.total, summary.computed, summary.failed) == (3, 3, 2)
    runs = pd.read_parquet(tmp_path / "out" / "runs.parquet").set_index("seed")
    assert list(runs["status"]) == ["ok", "failed", "failed"]
    want = ("process executor: BrokenProcessPool: A child process terminated abruptly (a worker "
            "process died (killed, e.g. for memory, or crashed); the chunks still in the pool "
            "were lost with it)")
    assert list(runs.loc[[1, 2], "error"]) == [want, want]


def test_no_chunks_start_no_pool_and_no_cluster(monkeypatch):
    """Nothing to compute (a finished study): no process pool and no Dask cluster is made."""
    def never(*args, **kwargs):
        raise AssertionError("nothing to compute, nothing to start")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", never)
    calls: list = []
    executors.execute([], "process", calls.append)
    distributed = pytest.importorskip("dask.distributed")
    monkeypatch.setattr(distributed, "LocalCluster", never)
    executors.execute([], "dask", calls.append)
    assert calls == []


def test_dask_executor_gives_the_local_tables_and_records_a_failed_chunk(
        tmp_path, in_process_dask, monkeypatch):
    """--executor dask without --address: a LocalCluster of 2 single-threaded process workers
    (--workers sets their number), the worker initialiser run on it; the tables equal the local
    executor's. The first chunk raising fails its own run only (seed 0), named in the error."""
    study = _study(tmp_path, seeds=2)
    run_study(study, tmp_path / "local", progress=False, report=False)
    run_study(study, tmp_path / "dask", executor="dask", progress=False, report=False)
    assert len(in_process_dask) == 1
    made = in_process_dask[0]
    assert (made["n_workers"], made["threads_per_worker"], made["processes"]) == (2, 1, True)
    assert os.environ.get("NCSIM_TEST_WORKER_INIT") == "1"
    pd.testing.assert_frame_equal(_table(tmp_path / "dask"), _table(tmp_path / "local"))
    pd.testing.assert_frame_equal(_trajectories(tmp_path / "dask"),
                                  _trajectories(tmp_path / "local"))

    monkeypatch.setattr(executors, "run_chunk", _fails_on_seed(0, ValueError("bad chunk")))
    summary = run_study(study, tmp_path / "fail", executor="dask", workers=1, progress=False,
                        report=False)
    assert in_process_dask[-1]["n_workers"] == 1
    assert (summary.computed, summary.failed) == (2, 1)
    runs = pd.read_parquet(tmp_path / "fail" / "runs.parquet").set_index("seed")
    assert list(runs["status"]) == ["failed", "ok"]
    assert runs.loc[0, "error"] == "dask executor: ValueError: bad chunk"


def test_dask_with_an_address_checks_for_workers_and_gives_the_local_tables(
        tmp_path, monkeypatch):
    """--executor dask --address of a running scheduler (an in-process cluster here): the
    executor asks once whether the scheduler has workers (never without --address), and the
    tables equal the local executor's."""
    distributed = pytest.importorskip("dask.distributed")
    asked: list[str] = []
    monkeypatch.setattr(executors, "note_no_workers",
                        lambda client, address: asked.append(address) or False)
    monkeypatch.setattr(executors, "_init_worker", _note_init)
    study = _study(tmp_path, seeds=2)
    run_study(study, tmp_path / "local", progress=False, report=False)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        run_study(study, tmp_path / "remote", executor="dask", address=address,
                  progress=False, report=False)
    assert asked == [address]
    pd.testing.assert_frame_equal(_table(tmp_path / "remote"), _table(tmp_path / "local"))


def test_a_worker_that_joins_after_the_study_started_is_set_up(monkeypatch):
    """The worker set-up (one thread per library, kept heap, end with the parent) is a worker
    plugin: a worker that joins the scheduler after it was registered runs it too (client.run
    reached only the workers present then, while the no-workers note invites starting them
    later)."""
    distributed = pytest.importorskip("dask.distributed")
    monkeypatch.setattr(executors, "_init_worker", _note_init)
    os.environ.pop("NCSIM_TEST_WORKER_INIT", None)
    try:
        with distributed.LocalCluster(n_workers=0, threads_per_worker=1, processes=False,
                                      dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            client.register_plugin(executors._worker_setup(distributed),
                                   name=executors.WORKER_PLUGIN)
            assert "NCSIM_TEST_WORKER_INIT" not in os.environ  # no worker yet
            cluster.scale(1)
            client.wait_for_workers(1, timeout=30)
            assert os.environ.get("NCSIM_TEST_WORKER_INIT") == "1"
    finally:
        os.environ.pop("NCSIM_TEST_WORKER_INIT", None)


def test_a_scheduler_lost_while_waiting_for_workers_is_not_noted(capsys):
    """When waiting for workers fails because the scheduler is gone (OSError), nothing is said
    and nothing raised: the chunks' futures report the loss and are recorded."""
    class Gone:
        def wait_for_workers(self, n_workers, timeout):
            raise OSError("connection closed")

    assert executors.note_no_workers(Gone(), "tcp://head:8786", wait_s=0.01) is False
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- runner
def test_chunk_order_follows_the_executor(tmp_path, monkeypatch):
    """The local executor gets the cheap work first (batches, then interventions, then
    trainings); the parallel executors the long work first."""
    import ncsim.study.runner as runner

    seen: dict[str, list[list[str]]] = {}

    def record(chunks, executor, on_done, address, workers):
        seen[executor] = [[d.part for d in chunk] for chunk in chunks]

    monkeypatch.setattr(runner, "execute", record)
    study = _study(tmp_path, seeds=2, chunk=2, extra=KICK_PART + NET_PART)
    for executor in ("local", "process"):
        run_study(study, tmp_path / executor, executor=executor, progress=False, report=False)
    assert seen == {"local": [["ufm", "ufm"], ["kick"], ["net"]],
                    "process": [["net"], ["kick"], ["ufm", "ufm"]]}


def test_an_interrupted_study_resumes_to_the_uninterrupted_tables(tmp_path, monkeypatch):
    """Interrupted (Ctrl-C) after 2 of 4 one-run chunks, then run again: the rerun computes the
    2 missing runs only, keeps the finished part files, and ends with the tables of a study
    run without interruption."""
    study = _study(tmp_path, seeds=4)
    run_study(study, tmp_path / "whole", progress=False, report=False)
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        interrupt_chunk(patch, at=3)
        with pytest.raises(KeyboardInterrupt):
            run_study(study, out, progress=False, report=False)
    store = Store(out)
    kept = {p.name: p.stat().st_mtime_ns for p in store.parts.glob("*.parquet")}
    assert len(store.statuses()) == 2
    summary = run_study(study, out, progress=False, report=False)
    assert (summary.total, summary.computed, summary.skipped, summary.failed) == (4, 2, 2, 0)
    for name, mtime in kept.items():
        assert (store.parts / name).stat().st_mtime_ns == mtime
    pd.testing.assert_frame_equal(_table(out), _table(tmp_path / "whole"))
    pd.testing.assert_frame_equal(_trajectories(out), _trajectories(tmp_path / "whole"))


def test_retry_failed_recomputes_only_the_failed_runs(tmp_path, monkeypatch):
    """A run failed by its chunk is kept on a plain rerun and computed again (alone) with
    retry_failed; the result then equals a study run without failure."""
    study = _study(tmp_path, seeds=3)
    run_study(study, tmp_path / "whole", progress=False, report=False)
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(executors, "run_chunk", _fails_on_seed(1, RuntimeError("lost")))
        assert run_study(study, out, progress=False, report=False).failed == 1
    again = run_study(study, out, progress=False, report=False)
    assert (again.computed, again.skipped, again.failed) == (0, 3, 1)
    retried = run_study(study, out, retry_failed=True, progress=False, report=False)
    assert (retried.computed, retried.skipped, retried.failed) == (1, 2, 0)
    pd.testing.assert_frame_equal(_table(out), _table(tmp_path / "whole"))


def test_run_study_reports_its_own_study_only(tmp_path, no_figures):
    """run_study writes the report of the study it ran, even when its folder holds another
    study's folder (`study report` covers both): one section in report.md."""
    inner = load_study(write_tiny_study(tmp_path, seeds=1, records=12), quick=True)
    out = tmp_path / "out"
    run_study(inner, out / "sub", progress=False)
    run_study(_study(tmp_path, seeds=1), out, progress=False)
    text = (out / "report.md").read_text()
    assert text.count("\n## ") == 1 and "full variant" in text and "quick variant" not in text
    from ncsim.study.report import write_report

    write_report(out)  # `study report`: both studies, a summary row each (the folder's first)
    rows = re.findall(r"^\| `([\w./]+)` \| tiny \| (\w+) \| (\w+) \|$",
                      (out / "report.md").read_text(), flags=re.M)
    verdicts = [json.loads((folder / "verdict.json").read_text())["verdict"]
                for folder in (out, out / "sub")]
    assert rows == [("./", "full", verdicts[0]), ("sub/", "quick", verdicts[1])]


def test_old_intervention_rows_of_a_spectral_start_are_kept(tmp_path):
    """An intervention row stored without ``sim_run_id`` is stale only for a gaussian init
    drawn through its Gram factor; a wide model with a spectral init draws no Gram factor, so
    its row is kept on resume."""
    extra = KICK_PART.replace("intervene_alpha = [0.5]", "dim = [20]\ninit = [\"spectral\"]")
    study = _study(tmp_path, seeds=1, extra=extra)
    out = tmp_path / "out"
    run_study(study, out, progress=False, report=False)
    store = Store(out)
    (kick,) = [d.run_id for d in study.runs() if d.part == "kick"]
    row = pd.read_parquet(store.run_file(kick))
    row.drop(columns="sim_run_id").to_parquet(store.run_file(kick))
    mtime = store.run_file(kick).stat().st_mtime_ns
    again = run_study(study, out, progress=False, report=False)
    assert (again.computed, again.skipped) == (0, 2)
    assert store.run_file(kick).stat().st_mtime_ns == mtime


def test_a_failed_intervention_run_is_retried_only_when_asked(tmp_path, monkeypatch):
    """A failed intervention run of a wide gaussian start (a row without sim_run_id, as old
    intervention rows were) is kept as failed on a plain rerun, not taken for a stale
    finished row, and computed again with retry_failed."""
    extra = KICK_PART.replace("intervene_alpha = [0.5]", "dim = [20]")
    study = _study(tmp_path, seeds=1, extra=extra)
    out = tmp_path / "out"

    def kick_fails(chunk):
        if any(d.part == "kick" for d in chunk):
            raise RuntimeError("lost")
        return run_chunk(chunk)

    with monkeypatch.context() as patch:
        patch.setattr(executors, "run_chunk", kick_fails)
        assert run_study(study, out, progress=False, report=False).failed == 1
    again = run_study(study, out, progress=False, report=False)
    assert (again.computed, again.skipped, again.failed) == (0, 2, 1)
    retried = run_study(study, out, retry_failed=True, progress=False, report=False)
    assert (retried.computed, retried.failed) == (1, 0)


# ----------------------------------------------------------------------------- one chunk
def test_a_run_that_breaks_its_batch_is_failed_alone(tmp_path, monkeypatch):
    """A batch whose simulation raises because of one run (seed 1) is computed again run by
    run: seeds 0 and 2 get the rows of their runs computed alone, seed 1 a failed row whose
    error names the exception type and message; run_chunk itself never raises."""
    simulate_module = importlib.import_module("ncsim.flow.simulate")
    descs = _study(tmp_path, seeds=3, chunk=3).runs()
    alone = {d.run_id: run_chunk([d])[0] for d in descs}
    real = simulate_module.simulate

    def picky(specs, *args, **kwargs):
        if any(s.init.seed == 1 for s in (specs if isinstance(specs, list) else [specs])):
            raise ValueError("seed 1 cannot be drawn")
        return real(specs, *args, **kwargs)

    monkeypatch.setattr(simulate_module, "simulate", picky)
    results = {rid: (row, traj) for rid, row, traj in run_chunk(descs)}
    assert sorted(results) == sorted(alone)
    bad = descs[1].run_id
    row, traj = results[bad]
    assert (row["status"], row["error"], traj) == ("failed", "ValueError: seed 1 cannot be drawn",
                                                   None)
    assert (row["part"], row["model"], row["seed"]) == ("ufm", "simulated", 1)
    for rid in (descs[0].run_id, descs[2].run_id):
        row, traj = results[rid]
        want_row, want_traj = alone[rid][1], alone[rid][2]
        timing = {k for k in want_row if k.endswith("_s")}
        assert set(row) == set(want_row)
        for key in set(row) - timing:
            same = row[key] == want_row[key] or (_is_nan(row[key]) and _is_nan(want_row[key]))
            assert same, (key, row[key], want_row[key])
        pd.testing.assert_frame_equal(traj, want_traj)


def test_a_failed_row_carries_the_runs_labels_with_lists_as_text():
    """A failed run's row has its part, model and parameters; a list parameter (the epochs of
    the two phases) is written "2,3" so that the run table's column holds text."""
    from ncsim.study.compute import failed_results

    desc = RunDesc("net", "trained", {"dataset": "gaussian", "epochs": [2, 3], "seed": 4})
    ((rid, row, traj),) = failed_results([desc], "lost")
    assert rid == desc.run_id and traj is None
    assert row == {"part": "net", "model": "trained", "dataset": "gaussian", "epochs": "2,3",
                   "seed": 4, "status": "failed", "error": "lost"}


def test_a_late_intervention_keeps_eight_records_for_its_second_segment(tmp_path):
    """H scaled by 0.5 at t1 = 250 of t_end = 300 with 40 records: the first segment gets
    round(40 log(t1/t0) / log(t_end/t0)) = 39 records capped at 40 - 8 = 32, the second the
    remaining 8 plus its start (the record of t1 after the scaling): 41 records in all, times
    increasing within each phase, phase 2 from t1 to t_end. fn just after the scaling is 0.5
    times fn before it (fn is linear in H), which is the last phase-1 record."""
    plain = _study(tmp_path, seeds=1).runs()[0]
    params = {**plain.params, "records": 40, "t_end": 300.0, "intervene_time": 250.0,
              "intervene_alpha": 0.5}
    t0 = min(1e-2, 300.0 / 10)
    assert round(40 * math.log(250 / t0) / math.log(300 / t0)) == 39
    ((_, row, traj),) = run_chunk([RunDesc("kick", "simulated", params)])
    one, two = traj[traj["phase"] == 1], traj[traj["phase"] == 2]
    assert (len(one), len(two)) == (32, 9)
    assert one["time"].iloc[-1] == pytest.approx(250.0, rel=1e-12)
    assert two["time"].iloc[0] == pytest.approx(250.0, rel=1e-12)
    assert two["time"].iloc[-1] == pytest.approx(300.0, rel=1e-12)
    assert np.all(np.diff(one["time"]) > 0) and np.all(np.diff(two["time"]) > 0)
    assert row["fn_before_intervention"] == pytest.approx(one["fn"].iloc[-1], rel=1e-12)
    assert row["fn_after_intervention"] == pytest.approx(two["fn"].iloc[0], rel=1e-12)
    assert row["fn_after_intervention"] == pytest.approx(0.5 * row["fn_before_intervention"],
                                                         rel=1e-12)
    assert row["t_final"] == pytest.approx(300.0, rel=1e-12)


@pytest.mark.parametrize(("records", "first"), [(3, 2), (9, 5), (12, 6)])
def test_an_intervention_with_few_records_keeps_two_in_each_segment(tmp_path, records, first):
    """records = 3, 9, 12 and t1 = 20 of t_end = 300 (the split on the log-time grid lies
    past the cap): the first segment keeps at least min(8, records // 2) records (and 2),
    the second that many plus its start (records - n1 + 1; two each at records = 3).
    Before, the first segment got records - 8 (1 at records = 9, and the run failed on
    "records ... got 1", a value the study never gave). records = 2 cannot hold two
    segments and is refused when the study is read."""
    from ncsim.study.spec import run_spec

    plain = _study(tmp_path, seeds=1).runs()[0]
    params = {**plain.params, "records": records, "t_end": 300.0, "intervene_time": 20.0,
              "intervene_alpha": 0.5}
    ((_, row, traj),) = run_chunk([RunDesc("kick", "simulated", params)])
    assert row["status"] == "ok", row.get("error")
    phases = traj["phase"].value_counts().to_dict()
    assert phases == {1: first, 2: records - first + 1}
    with pytest.raises(InputError, match=r"an intervention run needs records >= 3"):
        run_spec({**params, "records": 2})


def test_intervention_steps_count_both_segments(tmp_path, monkeypatch):
    """The steps and rejected steps of an intervention run are the sums over the two
    simulations it makes (to t1, then from the scaled state to t_end), counted here as the
    simulator reports them."""
    simulate_module = importlib.import_module("ncsim.flow.simulate")
    real = simulate_module.simulate
    made: list[pd.DataFrame] = []

    def counted(*args, **kwargs):
        result = real(*args, **kwargs)
        made.append(result.runs)
        return result

    monkeypatch.setattr(simulate_module, "simulate", counted)
    plain = _study(tmp_path, seeds=1).runs()[0]
    params = {**plain.params, "intervene_time": 20.0, "intervene_alpha": 0.5}
    ((_, row, _),) = run_chunk([RunDesc("kick", "simulated", params)])
    assert len(made) == 2 and all(int(m["steps"].iloc[0]) > 0 for m in made)
    for key in ("steps", "rejected_steps"):
        assert row[key] == sum(int(m[key].iloc[0]) for m in made), key


@pytest.mark.parametrize("second_status", ["stalled", "diverged"])
def test_a_second_segment_that_stalls_or_diverges_keeps_its_status(tmp_path, monkeypatch,
                                                                   second_status):
    """An intervention run whose second segment ends stalled or diverged keeps that status,
    although its joined records cross the onset threshold (which would make it "ok")."""
    simulate_module = importlib.import_module("ncsim.flow.simulate")
    real = simulate_module.simulate
    calls: list[int] = []

    def second_fails(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            result.runs.loc[result.runs.index[0], "status"] = second_status
        return result

    plain = _study(tmp_path, seeds=1).runs()[0]
    params = {**plain.params, "intervene_time": 20.0, "intervene_alpha": 0.5}
    ((_, row, _),) = run_chunk([RunDesc("kick", "simulated", params)])
    assert row["status"] == "ok" and math.isfinite(row["onset_time"])
    monkeypatch.setattr(simulate_module, "simulate", second_fails)
    ((_, failed, _),) = run_chunk([RunDesc("kick", "simulated", params)])
    assert len(calls) == 2
    assert failed["status"] == second_status
    assert failed["onset_time"] == row["onset_time"]


@pytest.mark.parametrize(("offset", "before"), [(0.0, True), (1e-9, False)])
def test_an_onset_at_the_intervention_time_counts_as_before_it(tmp_path, monkeypatch, offset,
                                                                before):
    """onset_before_intervention holds for an onset at t1 itself (the last record of the first
    segment, where the state is not yet scaled), not for one just after it."""
    onset_module = importlib.import_module("ncsim.onset")
    monkeypatch.setattr(onset_module, "onset_and_fn",
                        lambda times, *args: (20.0 + offset, 0.25))
    plain = _study(tmp_path, seeds=1).runs()[0]
    params = {**plain.params, "intervene_time": 20.0, "intervene_alpha": 0.5}
    ((_, row, _),) = run_chunk([RunDesc("kick", "simulated", params)])
    assert row["onset_time"] == 20.0 + offset and row["fn_at_onset"] == 0.25
    assert row["onset_before_intervention"] is before


def test_a_trained_row_reads_the_training_log(monkeypatch):
    """A trained run's row from its log (records out of order, as a log may be read): onset at
    the first phase-2 epoch below 0.01 (epoch 5, fn* = fn there), final values at the last
    epoch (nc1_trace 0.004, not its minimum 0.003, and the optimiser steps of the last
    record, not of the last row read), fn after the intervention at its epoch, fn before it as
    the training reported, the status in the simulator's words."""
    import types

    import ncsim.validate.data as data_module
    import ncsim.validate.train as train_module

    log = pd.DataFrame({
        "run_id": "net", "time": [0.0, 1, 2, 3, 4, 5, 6, 7],
        "phase": [1, 1, 1, 2, 2, 2, 2, 2],
        "fn": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
        "nc1_trace": [1.0, 0.5, 0.005, 0.1, 0.05, 0.008, 0.003, 0.004],
        "accuracy": [0.1, 0.5, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99],
        "steps": [0, 3, 6, 9, 12, 15, 18, 21],
    }).iloc[[5, 0, 7, 2, 1, 6, 3, 4]]
    monkeypatch.setattr(data_module, "load_dataset", lambda *args, **kwargs: None)
    monkeypatch.setattr(train_module, "train", lambda config, data: types.SimpleNamespace(
        log=log, fn_before_intervention=1.25))
    desc = RunDesc("net", "trained", {"dataset": "gaussian", "epochs": [3, 4],
                                      "intervention_epoch": 4, "intervention_alpha": 0.5})
    ((rid, row, traj),) = run_chunk([desc])
    assert rid == desc.run_id
    want = {"status": "ok", "time_unit": "epoch", "onset_time": 5.0, "fn_at_onset": 0.6,
            "final_fn": 0.8, "final_nc1_trace": 0.004, "min_nc1_trace": 0.003, "t_final": 7.0,
            "final_accuracy": 0.99, "fn_before_intervention": 1.25,
            "fn_after_intervention": 0.5, "onset_at_phase_start": False, "epochs": "3,4",
            "optimizer_steps": 21}
    assert {k: row[k] for k in want} == want
    assert list(traj["time"]) == [0.0, 1, 2, 3, 4, 5, 6, 7] and "run_id" not in traj


# ----------------------------------------------------------------------------- report
def test_report_counts_statuses_commonest_first_and_the_inherited_trained_runs(tmp_path):
    """The report's run line counts each status, commonest first (ok 3, vanishing 2, failed
    1, whatever order the rows come in), lists the failed runs' error with its count, and says
    how many trained runs were already below the threshold when phase 2 began (2 of the rows
    here are)."""
    from ncsim.study.analyses import Section
    from ncsim.study.report import section_markdown

    runs = pd.DataFrame({
        "run_id": list("abcdef"),
        "status": ["failed", "ok", "vanishing", "ok", "vanishing", "ok"],
        "onset_at_phase_start": [None, True, False, True, False, False],
        "error": ["lost <it>", None, None, None, None, None]})
    text = section_markdown(_study(tmp_path, seeds=1), Section("supports", "why"), runs)
    assert "\nRuns: 6 (ok: 3, vanishing: 2, failed: 1). " in text
    assert "\nFailed runs: 1 x lost \\<it>\n" in text
    assert "\n2 trained run(s) were already below the onset threshold when phase 2 began" in text


def test_report_html_table_has_its_header_row_and_keeps_escaped_pipes():
    """The HTML page shows a Markdown table's first row as header cells, the rule row not at
    all, the body rows as data cells, and an escaped pipe as a pipe inside its cell."""
    from ncsim.study.report import _html

    page = _html("| a | b\\|c |\n|---|---|\n| 1 | x\\|y |\n| 2 | z |\n", "t")
    assert ("<table>\n<tr><th>a</th><th>b|c</th></tr>\n<tr><td>1</td><td>x|y</td></tr>\n"
            "<tr><td>2</td><td>z</td></tr>\n</table>") in page


def test_report_of_a_folder_without_run_ids_counts_the_runs_it_holds(tmp_path, no_figures):
    """A study.json written before it listed its run ids: the study's runs are those its parts
    give, all finished here (2 of 2); the verdict is the analysis', not 'incomplete'."""
    from ncsim.study.report import write_report

    study = _study(tmp_path, seeds=2)
    out = tmp_path / "out"
    run_study(study, out, progress=False, report=False)
    record = json.loads((out / "study.json").read_text())
    del record["run_ids"]
    (out / "study.json").write_text(json.dumps(record))
    write_report(out)
    verdict = json.loads((out / "verdict.json").read_text())
    assert (verdict["runs_finished"], verdict["runs_total"]) == (2, 2)
    assert verdict["verdict"] != "incomplete" and "runs_missing" not in verdict
    assert "\nRuns: 2 (ok: 2). " in (out / "report.md").read_text()


def test_report_run_counts_are_those_of_the_run_table(tmp_path, monkeypatch, no_figures):
    """A study with a failed chunk: report.md's run line, failed-run line and verdict.json's
    counts equal the counts of the run table's status and error columns."""
    study = _study(tmp_path, seeds=3)
    out = tmp_path / "out"
    monkeypatch.setattr(executors, "run_chunk", _fails_on_seed(2, RuntimeError("gone")))
    run_study(study, out, progress=False)
    runs = pd.read_parquet(out / "runs.parquet")
    counts = runs["status"].value_counts()
    text = (out / "report.md").read_text()
    assert f"\nRuns: {len(runs)} (ok: {counts['ok']}, failed: {counts['failed']}). " in text
    (error,) = runs.loc[runs["status"] == "failed", "error"]
    assert f"\nFailed runs: {counts['failed']} x {error}\n" in text
    verdict = json.loads((out / "verdict.json").read_text())
    assert (verdict["runs_finished"], verdict["runs_total"]) == (len(runs), 3)


# ----------------------------------------------------------------------------- commands
def test_study_run_address_without_dask_is_one_line_and_writes_nothing(tmp_path):
    """`study run --address` with the local executor: exit 2, one line saying it needs
    --executor dask, no results folder."""
    spec = write_tiny_study(tmp_path, seeds=1)
    out = tmp_path / "out"
    line = error_line(invoke(["study", "run", str(spec), "--address", "tcp://127.0.0.1:1",
                              "--out", str(out)]))
    assert line == "Error: --address needs --executor dask"
    assert not out.exists()


@pytest.mark.parametrize(("args", "words"), [
    (["--executor", "threads"], "Invalid value for '--executor': 'threads' is not one of"),
    (["--workers", "two"], "Invalid value for '--workers': 'two' is not a valid integer"),
])
def test_study_run_bad_option_values_exit_2_without_traceback(tmp_path, args, words):
    """An option value of the wrong kind is a usage error (exit 2) naming the option; nothing
    is written."""
    spec = write_tiny_study(tmp_path, seeds=1)
    out = tmp_path / "out"
    result = invoke(["study", "run", str(spec), *args, "--out", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert words in result.stderr and not out.exists()


@pytest.mark.parametrize(("args", "words"), [
    (["--horizon", "0"], "got 0.0 and 5.0"),
    (["--horizon", "nan"], "got nan and 5.0"),
    (["--horizon", "inf"], "got inf and 5.0"),
    (["--wd-horizon", "-1"], "got 10.0 and -1.0"),
    (["--wd-horizon", "inf"], "got 10.0 and inf"),
])
def test_validate_compare_bad_horizons_are_one_line(tmp_path, args, words):
    """`validate compare` with a horizon that is not a positive number: exit 2, one line
    naming it, before the run folder is read."""
    line = error_line(invoke(["validate", "compare", "--run", str(tmp_path / "none"), *args]))
    assert ("horizon must be a finite number > 0 and wd_horizon a finite number >= 0, "
            + words) in line


@pytest.mark.parametrize("extra", [["--checkpoint-every", "1"], ["--intervene-epoch", "1"],
                                   ["--amp"]])
def test_validate_train_seeds_refuse_what_stacked_training_lacks(tmp_path, extra):
    """`validate train --seeds` (stacked training) with checkpoints, an intervention or mixed
    precision: exit 2, one line naming the three, and no training (no output folder)."""
    out = tmp_path / "run"
    line = error_line(invoke(["validate", "train", "--preset", "cpu-small", "--epochs", "1,1",
                              "--seeds", "0,1", "--no-progress", "--out", str(out), *extra]))
    assert line == ("Error: --seeds (stacked training) has no --intervene-epoch, --amp or "
                    "--checkpoint-every")
    assert not out.exists()


# ----------------------------------------------------------------------------- figures
@pytest.mark.parametrize(("onsets", "want"), [
    ({"network": 2.0, "surrogate": 3.0}, [(2.0, "k"), (3.0, "C1")]),
    ({"network": 0.0, "surrogate": -1.0}, []),
    ({"network": math.nan, "surrogate": None}, []),
])
def test_overlay_marks_each_positive_onset_in_its_colour(tmp_path, monkeypatch, onsets, want):
    """The measured-vs-simulated figure marks the network's onset in black and the
    surrogate's in C1 on both (log-time) panels; an onset at t <= 0, NaN or missing has no
    place on a log axis and is not drawn."""
    from matplotlib.colors import to_hex

    from ncsim.validate import plots as vplots

    seen: list[list[tuple[float, str]]] = []

    def keep(fig, path):
        seen.extend([[(float(ln.get_xdata()[0]), to_hex(ln.get_color()))
                      for ln in ax.get_lines() if ln.get_linestyle() == "--"]
                     for ax in fig.axes])
        import matplotlib.pyplot as plt

        plt.close(fig)
        return Path(path)

    monkeypatch.setattr(vplots, "save_figure", keep)
    curve = pd.DataFrame({"t": [0.0, 1.0, 2.0, 4.0], "fn": [1.0, 0.8, 0.7, 0.7],
                          "nc1_trace": [1.0, 0.1, 0.01, 0.001]})
    vplots.plot_overlay(curve, curve, tmp_path / "compare.png", onsets)
    colours = [(t, to_hex(c)) for t, c in want]
    assert seen == [colours, colours]
