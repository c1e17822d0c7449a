"""Study runner: resume after SIGKILL, skipped runs, failures recorded, Dask = local."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from tiny_study import BROKEN_PART, write_tiny_study

from ncsim.flow.simulate import run_id
from ncsim.study.runner import run_study
from ncsim.study.spec import load_study, run_spec
from ncsim.study.store import Store


def _spec(tmp_path: Path, seeds: int, chunk: int = 2, t_end: float = 300.0,
          rtol: float = 1e-5, extra: str = "") -> Path:
    return write_tiny_study(tmp_path, seeds, chunk, t_end, rtol=rtol, extra=extra)


def _mtimes(store: Store) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in store.parts.glob("*.parquet")}


def test_run_then_rerun_recomputes_nothing(tmp_path):
    study = load_study(_spec(tmp_path, 4))
    out = tmp_path / "out"
    first = run_study(study, out, progress=False)
    assert (first.total, first.computed, first.failed) == (4, 4, 0)
    store = Store(out)
    before = _mtimes(store)
    second = run_study(study, out, progress=False)
    assert (second.computed, second.skipped) == (0, 4)
    assert _mtimes(store) == before
    runs = pd.read_parquet(out / "runs.parquet")
    assert runs["run_id"].is_unique and len(runs) == 4
    traj = pd.read_parquet(out / "trajectories.parquet")
    assert set(traj["run_id"]) == set(runs["run_id"])
    assert (out / "report.md").exists() and (out / "report.html").exists()
    assert "Verdict" in (out / "report.md").read_text()


def test_failed_run_is_recorded_and_not_retried(tmp_path):
    study = load_study(_spec(tmp_path, 2, extra=BROKEN_PART))
    out = tmp_path / "out"
    summary = run_study(study, out, progress=False)
    assert summary.failed == 1 and summary.total == 3
    runs = pd.read_parquet(out / "runs.parquet")
    bad = runs[runs["status"] == "failed"]
    assert len(bad) == 1 and "data-root" in bad["error"].iloc[0]
    assert (runs["status"] != "failed").sum() == 2
    again = run_study(study, out, progress=False)
    assert again.computed == 0
    retried = run_study(study, out, progress=False, retry_failed=True)
    assert retried.computed == 1


def test_sigkill_midway_then_resume(tmp_path):
    n = 16
    spec = _spec(tmp_path, n, chunk=1, t_end=3e3, rtol=1e-10)
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "from ncsim.cli import main; main()", "study", "run", str(spec),
           "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    store = Store(out)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(list(store.parts.glob("*.run.parquet"))) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the study finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in store.parts.glob("*.run.parquet")}
    assert 3 <= len(finished) < n
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{len(finished)} already done" in result.stdout
    for name, mtime in finished.items():
        assert (store.parts / name).stat().st_mtime_ns == mtime
    runs = pd.read_parquet(out / "runs.parquet")
    assert len(runs) == n and runs["run_id"].is_unique
    assert (runs["status"] == "ok").all()
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers
    for path in store.parts.glob("*.parquet"):
        pd.read_parquet(path)


def _numeric(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.sort_values("run_id").reset_index(drop=True)
    keep = [c for c in ("run_id", "status", "onset_time", "fn_at_onset", "final_fn",
                        "final_nc1_trace", "steps") if c in frame]
    return frame[keep]


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_table(tmp_path):
    pytest.importorskip("dask.distributed")
    study = load_study(_spec(tmp_path, 4, chunk=2))
    local = run_study(study, tmp_path / "local", progress=False)
    dask = run_study(study, tmp_path / "dask", executor="dask", progress=False)
    assert local.computed == dask.computed == 4
    a = _numeric(pd.read_parquet(tmp_path / "local" / "runs.parquet"))
    b = _numeric(pd.read_parquet(tmp_path / "dask" / "runs.parquet"))
    pd.testing.assert_frame_equal(a, b)


def test_process_executor_gives_the_same_table(tmp_path):
    study = load_study(_spec(tmp_path, 2, chunk=1))
    run_study(study, tmp_path / "local", progress=False, report=False)
    run_study(study, tmp_path / "proc", executor="process", workers=2, progress=False,
              report=False)
    a = _numeric(pd.read_parquet(tmp_path / "local" / "runs.parquet"))
    b = _numeric(pd.read_parquet(tmp_path / "proc" / "runs.parquet"))
    pd.testing.assert_frame_equal(a, b)


def test_folder_of_another_study_is_refused(tmp_path):
    from ncsim.errors import InputError

    study = load_study(_spec(tmp_path, 1))
    run_study(study, tmp_path / "out", progress=False, report=False)
    other = load_study(_spec(tmp_path, 1), quick=True)
    with pytest.raises(InputError, match="another --out"):
        run_study(other, tmp_path / "out", progress=False)


def test_a_second_runner_on_the_same_folder_is_refused(tmp_path):
    """While one runner holds the folder, another fails at once and writes nothing; once the
    holder is gone (even killed: the lock goes with the process) the folder is free again."""
    from ncsim.errors import InputError

    study = load_study(_spec(tmp_path, 2))
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from ncsim.study.store import Store\n"
         "with Store(sys.argv[1]).lock():\n    print('held', flush=True); time.sleep(60)",
         str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match=f"in use by another 'ncsim study run' \\(pid "
                                             f"{holder.pid}\\)"):
            run_study(study, out, progress=False)
        assert not (out / "study.json").exists() and not (out / "parts").exists()
    finally:
        holder.kill()
        holder.wait()
    summary = run_study(study, out, progress=False, report=False)
    assert summary.computed == 2


def test_run_chunk_gives_each_run_its_own_trajectory(tmp_path):
    """The chunk's per-run trajectories (split by a group-by) are the rows of the batch's
    trajectory table with that run's id, in time order; the row's sim_run_id names them."""
    from ncsim.flow.simulate import simulate
    from ncsim.study.compute import run_chunk
    from ncsim.study.spec import run_spec

    descs = load_study(_spec(tmp_path, seeds=4)).runs()
    results = run_chunk(descs)
    table = simulate([run_spec(d.params) for d in descs]).trajectories
    assert [r[0] for r in results] == [d.run_id for d in descs]
    for _, row, traj in results:
        want = table[table["run_id"] == row["sim_run_id"]].drop(columns="run_id")
        assert len(traj) == 40
        pd.testing.assert_frame_equal(traj, want.reset_index(drop=True))


def test_a_run_whose_simulator_id_changed_is_computed_again(tmp_path):
    """A finished simulated run whose stored ``sim_run_id`` is not the one its parameters
    give now (a result of an older simulator, e.g. of an older draw of the initial state) is
    computed again on resume; the other finished run is kept as it is."""
    study = load_study(_spec(tmp_path, 2))
    out = tmp_path / "out"
    run_study(study, out, progress=False)
    store = Store(out)
    old, kept = (d.run_id for d in study.runs())
    row = pd.read_parquet(store.run_file(old))
    current = row["sim_run_id"].iloc[0]
    row["sim_run_id"], row["final_fn"] = "0123456789ab", -1.0
    row.to_parquet(store.run_file(old))
    kept_mtime = store.run_file(kept).stat().st_mtime_ns
    again = run_study(study, out, progress=False)
    assert (again.computed, again.skipped) == (1, 1)
    redone = pd.read_parquet(store.run_file(old))
    assert redone["sim_run_id"].iloc[0] == current and redone["final_fn"].iloc[0] > 0
    assert store.run_file(kept).stat().st_mtime_ns == kept_mtime
    assert run_study(study, out, progress=False).computed == 0


def test_an_intervention_run_stores_its_simulator_id(tmp_path):
    """An intervention run's row names the simulator id of its spec, as a plain run's does,
    so that a change of what the simulator computes for it is seen on resume."""
    from ncsim.flow.simulate import run_id
    from ncsim.study.compute import run_chunk
    from ncsim.study.spec import RunDesc, run_spec

    plain = load_study(_spec(tmp_path, 1)).runs()[0]
    desc = RunDesc(plain.part, plain.model, {**plain.params, "intervene_time": 100.0,
                                             "intervene_alpha": 0.5})
    (rid, row, traj), = run_chunk([desc])
    assert rid == desc.run_id and row["sim_run_id"] == run_id(run_spec(desc.params))
    assert set(traj["phase"]) == {1, 2}


def test_a_spec_repeated_in_a_batch_is_not_stale(tmp_path):
    """Two parts with the same simulated spec share a batch, where the second gets the id
    ``<id>-1``: both store the spec's own id (a resume that computes the copy alone stores
    the same), and a rerun keeps both."""
    extra = """
[[parts]]
name = "copy"
model = "simulated"
[parts.grid]
seed = [0]
"""
    study = load_study(_spec(tmp_path, 1, chunk=4, extra=extra))
    out = tmp_path / "out"
    assert run_study(study, out, progress=False).computed == 2
    sim_ids = sorted(Store(out).stored("sim_run_id").values())
    assert sim_ids[1] == sim_ids[0] == run_id(run_spec(study.runs()[0].params))
    again = run_study(study, out, progress=False)
    assert (again.computed, again.skipped) == (0, 2)


def test_chunks_put_the_cheap_work_first(tmp_path):
    """Simulated runs of one batch structure go together, ``chunk`` at most; the batches come
    first, then each intervention, then each training; every run is in exactly one chunk."""
    from ncsim.study.runner import chunk_runs

    extra = """
[[parts]]
name = "net"
model = "trained"
dataset = "gaussian"

[[parts]]
name = "kick"
model = "simulated"
intervene_time = 100.0
[parts.grid]
seed = [0]
"""
    study = load_study(_spec(tmp_path, 5, chunk=2, extra=extra))
    descs = study.runs()
    assert [d.part for d in descs] == ["ufm"] * 5 + ["net", "kick"]
    chunks = chunk_runs(descs)
    assert [[d.part for d in c] for c in chunks] == [
        ["ufm", "ufm"], ["ufm", "ufm"], ["ufm"], ["kick"], ["net"]]
    flat = [d.run_id for c in chunks for d in c]
    assert sorted(flat) == sorted(d.run_id for d in descs)
    parallel = chunk_runs(descs, cheap_first=False)  # workers in parallel: long work first
    assert [[d.part for d in c] for c in parallel] == [
        ["net"], ["kick"], ["ufm", "ufm"], ["ufm", "ufm"], ["ufm"]]


def test_an_unreachable_scheduler_is_reported_before_any_file(tmp_path, monkeypatch):
    """``--executor dask --address`` connects before the study folder is made: an unreachable
    scheduler leaves no folder behind (bad input writes no files)."""
    from ncsim.errors import InputError

    distributed = pytest.importorskip("dask.distributed")
    calls = []

    def refuse(address, timeout):
        calls.append(address)
        raise OSError(f"timed out after {timeout} connecting to {address}")

    monkeypatch.setattr(distributed, "Client", refuse)
    study = load_study(_spec(tmp_path, 1))
    out = tmp_path / "out"
    with pytest.raises(InputError, match="cannot reach the Dask scheduler at tcp://10.0.0.1:1"):
        run_study(study, out, executor="dask", address="tcp://10.0.0.1:1", progress=False)
    assert calls == ["tcp://10.0.0.1:1"] and not out.exists()


@pytest.mark.parametrize(("address", "why"), [
    ("nonsense", "missing port number"), ("tcp://scheduler", "missing port number"),
    ("tcp://127.0.0.1:notaport", "invalid literal"), ("foo://x:1", "unknown address scheme")])
def test_a_malformed_scheduler_address_is_an_input_error(tmp_path, monkeypatch, address, why):
    """An address without a port, with a bad port or an unknown scheme is one InputError
    saying what form to give, before any client is made or any file written."""
    from ncsim.errors import InputError

    distributed = pytest.importorskip("dask.distributed")

    def never(*args, **kwargs):
        raise AssertionError("no client for a malformed address")

    monkeypatch.setattr(distributed, "Client", never)
    study = load_study(_spec(tmp_path, 1))
    out = tmp_path / "out"
    with pytest.raises(InputError, match=rf"^--address '{re.escape(address)}' is not a Dask "
                                         rf"scheduler address \({why}.*\); give one as "
                                         r"tcp://HOST:PORT$"):
        run_study(study, out, executor="dask", address=address, progress=False)
    assert not out.exists()


def test_a_finished_study_reruns_without_its_scheduler(tmp_path, monkeypatch):
    """Rerunning a finished study folder with ``--executor dask --address`` does not need
    the scheduler (nothing is left to compute, and the folder exists already)."""
    distributed = pytest.importorskip("dask.distributed")
    study = load_study(_spec(tmp_path, 2))
    out = tmp_path / "out"
    run_study(study, out, progress=False)
    calls = []

    def refuse(address, timeout):
        calls.append(address)
        raise OSError("refused")

    monkeypatch.setattr(distributed, "Client", refuse)
    again = run_study(study, out, executor="dask", address="tcp://10.0.0.1:1", progress=False)
    assert (again.computed, again.skipped, calls) == (0, 2, [])


def test_old_intervention_rows_of_a_wide_gaussian_start_are_stale(tmp_path):
    """An intervention row stored before rows named their ``sim_run_id`` is recomputed when
    its gaussian init is now drawn through its Gram factor (d > N + K), and kept otherwise."""
    extra = """
[[parts]]
name = "kick"
model = "simulated"
intervene_time = 100.0
[parts.grid]
dim = [8, 20]
"""
    study = load_study(_spec(tmp_path, 1, extra=extra))
    out = tmp_path / "out"
    run_study(study, out, progress=False)
    store = Store(out)
    kicks = {d.params["dim"]: d.run_id for d in study.runs() if d.part == "kick"}
    for rid in kicks.values():
        row = pd.read_parquet(store.run_file(rid))
        row.drop(columns="sim_run_id").to_parquet(store.run_file(rid))
    wide_mtime = store.run_file(kicks[20]).stat().st_mtime_ns
    narrow_mtime = store.run_file(kicks[8]).stat().st_mtime_ns
    again = run_study(study, out, progress=False)
    assert (again.computed, again.skipped) == (1, 2)
    assert store.run_file(kicks[20]).stat().st_mtime_ns != wide_mtime
    assert store.run_file(kicks[8]).stat().st_mtime_ns == narrow_mtime
    assert "sim_run_id" in pd.read_parquet(store.run_file(kicks[20])).columns
