"""Study robustness: reports of unfinished studies, lost executors, damaged folders, and spec
errors (a range error naming its key once, repeated grid values refused)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import error_line, interrupt_chunk, invoke
from tiny_study import BROKEN_PART, write_tiny_study

import ncsim.study.executors as executors
from ncsim.errors import InputError
from ncsim.study.compute import run_chunk
from ncsim.study.report import write_report
from ncsim.study.runner import run_study
from ncsim.study.spec import load_study
from ncsim.study.store import Store

SECOND_PART = """
[[parts]]
name = "wd"
model = "simulated"
[parts.grid]
lambda = [2e-2, 4e-2]
"""


def _interrupted(tmp_path: Path, seeds: int, extra: str, finished: int) -> Path:
    """A study folder whose run was interrupted (Ctrl-C) after ``finished`` one-run chunks."""
    spec = write_tiny_study(tmp_path, seeds=seeds, chunk=1, records=12, extra=extra)
    out = tmp_path / "out"
    with pytest.MonkeyPatch.context() as patch:
        interrupt_chunk(patch, at=finished + 1)
        with pytest.raises(KeyboardInterrupt):
            run_study(load_study(spec), out, progress=False)
    assert len(Store(out).statuses()) == finished
    return out


# ----------------------------------------------------------------------------- D1
def test_report_of_an_unfinished_study_gives_no_verdict_and_says_what_is_missing(tmp_path):
    """Killed after 2 of 4 runs (the second part not started): `study report` states
    "2 of 4 runs finished" and the missing runs by part in report.md, report.html and
    verdict.json, with the verdict "incomplete" instead of one on the subset."""
    out = _interrupted(tmp_path, seeds=2, extra=SECOND_PART, finished=2)
    result = invoke(["study", "report", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 of 4 runs finished" in result.stderr
    text = (out / "report.md").read_text()
    assert "**Unfinished study: 2 of 4 runs finished** (missing: wd 2 of 2)" in text
    assert "**Verdict: incomplete.** 2 of 4 runs finished (missing: wd 2 of 2)" in text
    assert "Runs: 2 of 4 finished (ok: 2)." in text
    assert "Unfinished study: 2 of 4 runs finished" in (out / "report.html").read_text()
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["verdict"] == "incomplete"
    assert (verdict["runs_finished"], verdict["runs_total"]) == (2, 4)
    assert verdict["runs_missing"] == {"wd": 2}


def test_report_names_each_part_with_missing_runs(tmp_path):
    """Interrupted inside the first part: both parts miss runs, each counted of its size."""
    out = _interrupted(tmp_path, seeds=3, extra=SECOND_PART, finished=1)
    write_report(out)
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["runs_missing"] == {"ufm": 2, "wd": 2}
    assert "missing: ufm 2 of 3, wd 2 of 2" in (out / "report.md").read_text()


def test_failed_runs_are_not_missing_runs(tmp_path):
    """A finished study with a failed run keeps its verdict: the failed run is reported as
    failed, and every run counts as finished."""
    spec = write_tiny_study(tmp_path, seeds=2, records=12, extra=BROKEN_PART)
    out = tmp_path / "out"
    assert run_study(load_study(spec), out, progress=False).failed == 1
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["verdict"] != "incomplete" and "runs_missing" not in verdict
    assert (verdict["runs_finished"], verdict["runs_total"]) == (3, 3)
    text = (out / "report.md").read_text()
    assert "Unfinished" not in text and "Runs: 3 (ok: 2, failed: 1)." in text


# ----------------------------------------------------------------------------- D2
def _dies_on_seed_1(chunk):
    """A chunk function whose worker process dies (as killed for memory) on seed 1."""
    if any(desc.params.get("seed") == 1 for desc in chunk):
        os._exit(3)
    return run_chunk(chunk)


def _raises_on_seed_1(chunk):
    if any(desc.params.get("seed") == 1 for desc in chunk):
        raise MemoryError("no room for the batch")
    return run_chunk(chunk)


def test_a_dead_process_worker_records_its_runs_as_failed(tmp_path, monkeypatch):
    """--executor process, a worker dies on one chunk (the pool breaks): the study does not
    abort; the lost chunks are failed runs with the error, the tables and the report are
    written, a rerun keeps them, and --retry-failed computes them again."""
    spec = write_tiny_study(tmp_path, seeds=3, chunk=1, records=12)
    study = load_study(spec)
    out = tmp_path / "out"
    monkeypatch.setattr(executors, "run_chunk", _dies_on_seed_1)
    summary = run_study(study, out, executor="process", workers=1, progress=False)
    monkeypatch.undo()
    assert summary.total == 3 and summary.failed >= 1
    runs = pd.read_parquet(out / "runs.parquet")
    assert len(runs) == 3
    failed = runs[runs["status"] == "failed"]
    assert 1 in set(failed["seed"]) and len(failed) == summary.failed
    assert failed["error"].str.startswith("process executor: BrokenProcessPool").all()
    assert "worker process died" in failed["error"].iloc[0]
    text = (out / "report.md").read_text()
    assert "Failed runs: " in text and "BrokenProcessPool" in text
    assert run_study(study, out, progress=False).computed == 0
    again = run_study(study, out, progress=False, retry_failed=True)
    assert (again.computed, again.failed) == (summary.failed, 0)


def test_a_chunk_that_raises_is_recorded_and_the_study_goes_on(tmp_path, monkeypatch):
    """A chunk whose work raises (outside run_chunk's own guards) gives failed runs with the
    error; the other chunks are computed."""
    spec = write_tiny_study(tmp_path, seeds=3, chunk=1, records=12)
    out = tmp_path / "out"
    monkeypatch.setattr(executors, "run_chunk", _raises_on_seed_1)
    summary = run_study(load_study(spec), out, progress=False)
    assert (summary.computed, summary.failed) == (3, 1)
    runs = pd.read_parquet(out / "runs.parquet").set_index("seed")
    assert runs.loc[1, "error"] == "local executor: MemoryError: no room for the batch"
    assert list(runs.loc[[0, 2], "status"]) == ["ok", "ok"]


def test_a_dask_task_that_fails_is_recorded_and_the_study_goes_on(tmp_path, monkeypatch):
    """--executor dask (a LocalCluster, here of in-process workers to stay fast): a task that
    fails on its worker gives its chunk's runs as failed with the error, the rest finishes,
    and the tables and report are written (a failed future aborted the study)."""
    distributed = pytest.importorskip("dask.distributed")
    real = distributed.LocalCluster
    monkeypatch.setattr(distributed, "LocalCluster",
                        lambda **kwargs: real(**{**kwargs, "processes": False}))
    monkeypatch.setattr(executors, "run_chunk", _raises_on_seed_1)
    # in-process workers: their set-up (threads, heap, end with the parent) would act on the
    # test process itself
    monkeypatch.setattr(executors, "_init_worker", lambda: None)
    spec = write_tiny_study(tmp_path, seeds=3, chunk=1, records=12)
    out = tmp_path / "out"
    summary = run_study(load_study(spec), out, executor="dask", workers=1, progress=False)
    assert (summary.computed, summary.failed) == (3, 1)
    runs = pd.read_parquet(out / "runs.parquet").set_index("seed")
    assert runs.loc[1, "error"] == "dask executor: MemoryError: no room for the batch"
    assert list(runs.loc[[0, 2], "status"]) == ["ok", "ok"]
    assert "Failed runs: 1 x dask executor: MemoryError" in (out / "report.md").read_text()


@pytest.mark.parametrize(("error", "hint"), [
    (BrokenProcessPool("terminated abruptly"), "worker process died"),
    (concurrent.futures.CancelledError(), "cancelled it"),
])
def test_a_failed_future_gives_failed_runs_with_the_error(tmp_path, error, hint):
    """_finish turns a future that raised (the executor's error, not the chunk's) into the
    chunk's runs as failed, one line naming the error and what it means."""
    descs = load_study(write_tiny_study(tmp_path, seeds=2)).runs()
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_exception(error)
    got: list = []
    executors._finish(future, descs, got.extend, "process")
    assert [rid for rid, _, _ in got] == [d.run_id for d in descs]
    for _, row, traj in got:
        assert row["status"] == "failed" and traj is None and row["part"] == "ufm"
        assert row["error"].startswith(f"process executor: {type(error).__name__}")
        assert hint in row["error"] and "\n" not in row["error"]


def test_a_dask_task_key_is_not_in_the_error():
    """Dask's messages name each task by a unique key; the runs' error names the function, so
    that the report counts one error for every chunk lost the same way."""
    error = RuntimeError("run_chunk-1b2c3d4e-aaaa-bbbb-cccc-0123456789ab-10 cancelled for "
                         "reason: scheduler-connection-lost.\nClient lost the connection")
    text = executors.chunk_error("dask", error)
    assert text == ("dask executor: RuntimeError: run_chunk cancelled for reason: "
                    "scheduler-connection-lost. Client lost the connection")


class _Client:
    """A stand-in Dask client whose scheduler has workers or not."""

    def __init__(self, workers: bool) -> None:
        self.workers = workers
        self.waited: list[float] = []

    def wait_for_workers(self, n_workers: int, timeout: float) -> None:
        self.waited.append(timeout)
        if not self.workers:
            raise TimeoutError(f"only 0/{n_workers} workers arrived after {timeout}")


def test_a_scheduler_without_workers_is_noted_once_on_stderr(capsys):
    """--address of a scheduler without workers: one line on stderr after the wait, no
    failure; with workers, nothing."""
    lonely = _Client(workers=False)
    assert executors.note_no_workers(lonely, "tcp://head:8786", wait_s=0.01) is True
    err = capsys.readouterr().err.splitlines()
    assert err == ["note: the Dask scheduler at tcp://head:8786 has no workers yet; the study "
                   "waits for them (start some with: dask worker tcp://head:8786 --nthreads 1)"]
    assert lonely.waited == [0.01]
    assert executors.note_no_workers(_Client(workers=True), "tcp://head:8786") is False
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- D6
def _finished(tmp_path: Path) -> tuple[Path, Path]:
    spec = write_tiny_study(tmp_path, seeds=2, records=12)
    out = tmp_path / "out"
    run_study(load_study(spec), out, progress=False)
    return spec, out


@pytest.mark.parametrize("table", ["runs.parquet", "trajectories.parquet"])
def test_report_rebuilds_a_damaged_consolidated_table_from_the_parts(tmp_path, table):
    """A consolidated table cut short: `study report` rebuilds both tables from the part
    files (intact) instead of failing with a traceback."""
    _, out = _finished(tmp_path)
    runs = pd.read_parquet(out / "runs.parquet")
    traj = pd.read_parquet(out / "trajectories.parquet")
    data = (out / table).read_bytes()
    (out / table).write_bytes(data[: len(data) // 3])
    result = invoke(["study", "report", str(out)])
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(pd.read_parquet(out / "runs.parquet"), runs)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "trajectories.parquet"), traj)


@pytest.mark.parametrize("command", ["report", "run"])
def test_a_damaged_study_json_is_one_line_and_exit_2(tmp_path, command):
    """study.json cut short: `study report` and `study run` say in one line which file is
    damaged and what to do (exit 2), and leave the folder as it was."""
    spec, out = _finished(tmp_path)
    data = (out / "study.json").read_text()
    (out / "study.json").write_text(data[:100])
    args = ["study", "report", str(out)] if command == "report" else [
        "study", "run", str(spec), "--out", str(out), "--no-progress"]
    line = error_line(invoke(args))
    assert f"{out / 'study.json'} is damaged (not valid JSON" in line
    assert "remove it and run 'ncsim study run SPEC" in line
    assert (out / "study.json").read_text() == data[:100]


# ----------------------------------------------------------------------------- spec errors
def _load_grid(tmp_path: Path, axes: str, fixed: str = ""):
    text = write_tiny_study(tmp_path).read_text().replace(
        'name = "ufm"\nmodel = "simulated"\n[parts.grid]\nseed = [0, 1]\n',
        f'name = "ufm"\nmodel = "simulated"\n{fixed}[parts.grid]\n{axes}\n')
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return load_study(path)


def test_a_range_error_names_its_key_once(tmp_path):
    with pytest.raises(InputError) as err:
        _load_grid(tmp_path, 'lambda = "1e-4..1e-1"')
    message = str(err.value)
    assert message.count("parts.ufm.grid.lambda") == 1, message
    assert re.search(r"key 'parts\.ufm\.grid\.lambda': malformed range '1e-4\.\.1e-1'", message)


@pytest.mark.parametrize(("axes", "why"), [
    ("seed = [0, 0, 1]", "0 appears more than once"),
    ("lambda = [1e-2, 0.01]", "0.01 appears more than once"),
    ('seed = "1..10:8"', "the range '1..10:8' rounds two points to 1"),
])
def test_a_repeated_grid_value_is_refused(tmp_path, axes, why):
    """A grid axis repeating a value would be one run computed once: refused, naming the
    axis and the value."""
    with pytest.raises(InputError, match=rf"key 'parts\.ufm\.grid\.\w+(\[\d+\])?': repeated "
                                         rf"grid value: {re.escape(why)}"):
        _load_grid(tmp_path, axes)


def test_grid_points_that_are_the_same_run_are_refused(tmp_path):
    """``chunk`` (how runs are batched, not what they compute) as an axis: every point is the
    same run, refused instead of computed once. ``lambda`` as an axis beside fixed
    ``lambda_w`` and ``lambda_h`` is refused before that, as a lambda that would be
    ignored."""
    with pytest.raises(InputError, match=r"key 'parts\.ufm\.grid': the grid points "
                                         r"\{'chunk': 1\} and \{'chunk': 2\} are "
                                         r"the same run"):
        _load_grid(tmp_path, "chunk = [1, 2]")
    with pytest.raises(InputError, match=r"key 'parts\.ufm': sets lambda and lambda_h and "
                                         r"lambda_w, so lambda would be overridden"):
        _load_grid(tmp_path, "lambda = [1e-2, 2e-2]", fixed="lambda_w = 1e-3\n"
                                                             "lambda_h = 1e-3\n")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux")
def test_process_workers_end_with_a_killed_study_process(tmp_path):
    """A study process killed by SIGKILL leaves no pool workers behind: each worker asked the
    kernel for SIGTERM at its parent's death (they stayed idle for minutes before)."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import multiprocessing, os, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from ncsim.study.executors import _init_worker\n"
        "def pid(_):\n"
        "    time.sleep(0.2)\n"
        "    return os.getpid()\n"
        "if __name__ == '__main__':\n"
        "    ctx = multiprocessing.get_context('spawn')\n"
        "    pool = ProcessPoolExecutor(2, mp_context=ctx, initializer=_init_worker)\n"
        "    print(' '.join(str(p) for p in set(pool.map(pid, range(4)))), flush=True)\n"
        "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert pids
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in pids if _running(p)]
    assert not alive, f"workers {alive} outlived their killed parent"


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False
