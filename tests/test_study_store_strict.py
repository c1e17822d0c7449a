"""The results folder of a study, checked against independent references: which runs count as
finished (a trajectory longer than its row records is not whole), rows bound to the run that
computed them whatever the chunk size, the order of the tables on every executor, runs outside
the bound study, a consolidation cut short, failed chunks of several runs, part filters, and
run ids that follow every parameter of a trained run.

The references are written apart from the store: the spec's own fields (``init_seed``, the
simulator id recomputed with :func:`ncsim.flow.simulate.run_id`), the study's run order, the
same study computed one run per chunk, and the part files counted on disk."""

from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny_study import MORE_PART, write_tiny_study

import ncsim.study.executors as executors
from ncsim.flow.simulate import run_id as sim_id_of
from ncsim.study.compute import run_chunk
from ncsim.study.runner import run_study
from ncsim.study.spec import TRAIN_PARAMS, RunDesc, build, load_study, run_spec
from ncsim.study.store import Store

BATCHING = ("chunk",)  # how a run was batched: not a computed value


def _study(tmp_path: Path, seeds: int, chunk: int, extra: str = ""):
    folder = tmp_path / f"spec-{seeds}-{chunk}"
    folder.mkdir(parents=True, exist_ok=True)
    return load_study(write_tiny_study(folder, seeds=seeds, chunk=chunk, records=12,
                                       extra=extra))


def _traj(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"time": np.arange(rows, dtype=float), "fn": np.linspace(1, 2, rows)})


def _ok(value: float = 1.0) -> dict:
    return {"part": "p", "model": "simulated", "status": "ok", "final_fn": value}


# ----------------------------------------------------------------------------- finished runs
def test_a_trajectory_longer_than_its_row_records_leaves_the_run_unfinished(tmp_path):
    """A run written with a 5-row trajectory is finished; its trajectory file replaced by a
    readable one of 7 rows (another write's) makes it unfinished: left out of statuses and
    stored values, pending again, absent from both consolidated tables. A run recorded
    without trajectory (a failed run: 0 rows) is unfinished likewise while a trajectory file
    stands under its id. Putting the right files back makes both finished again."""
    store = Store(tmp_path)
    store.write_run("a", _ok(1.0), _traj(5))
    store.write_run("b", _ok(2.0), _traj(5))
    store.write_run("c", {**_ok(3.0), "status": "failed", "error": "boom"}, None)
    assert store.statuses() == {"a": "ok", "b": "ok", "c": "failed"}
    for rid, rows in (("a", 7), ("c", 4)):
        frame = _traj(rows)
        frame.insert(0, "run_id", rid)
        frame.to_parquet(store.traj_file(rid))
    assert store.statuses() == {"b": "ok"}
    assert store.stored("final_fn") == {"b": 2.0}
    assert store.pending(["a", "b", "c"]) == ["a", "c"]
    runs, traj = store.consolidate(["a", "b", "c"])
    assert list(runs["run_id"]) == ["b"] and set(traj["run_id"]) == {"b"}
    store.write_run("a", _ok(1.0), _traj(5))
    store.traj_file("c").unlink()
    assert store.pending(["a", "b", "c"]) == []


def test_a_rewrite_cut_between_its_two_writes_leaves_the_run_unfinished(tmp_path, monkeypatch):
    """A finished run computed again (--force) and killed after its new trajectory is written
    but before its row: the old row must not stand beside the new trajectory of the same
    length as one finished run (final_fn 1.0 against a trajectory of fn 2.0); the run is
    pending again."""
    import ncsim.study.store as store_module

    store = Store(tmp_path)
    store.write_run("a", _ok(1.0), _traj(5))
    real, writes = store_module.write_table, []

    def killed(frame, path, *args, **kwargs):
        writes.append(path)
        if len(writes) == 2:  # the row, after the trajectory
            raise KeyboardInterrupt
        return real(frame, path, *args, **kwargs)

    monkeypatch.setattr(store_module, "write_table", killed)
    with pytest.raises(KeyboardInterrupt):
        store.write_run("a", _ok(2.0), _traj(5))
    monkeypatch.setattr(store_module, "write_table", real)
    assert store.statuses() == {} and store.pending(["a"]) == ["a"]
    store.write_run("a", _ok(2.0), _traj(5))
    assert store.stored("final_fn") == {"a": 2.0}


# ----------------------------------------------------------------------------- rows and ids
def _computed(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = pd.read_parquet(out / "runs.parquet")
    runs = runs.drop(columns=[c for c in runs if c.endswith("_s") or c in BATCHING])
    return runs.set_index("run_id").sort_index(), pd.read_parquet(out / "trajectories.parquet")


def test_each_row_is_the_run_of_its_id_whatever_the_chunk_size(tmp_path):
    """The same 3-seed study computed as one batch of 3 and as 3 batches of 1: the run ids
    are the same (the chunk size is not part of a run), and every stored row is the run its
    id names: its seed label, the seed of its spec (``init_seed``) and its simulator id agree
    with the run description of that id, recomputed here from the parameters. The values of
    both tables agree to 1e-9 relative: a batch integrates each run with its own steps, so
    only the reduction order of a few metrics differs (about 1e-12 seen)."""
    batch = _study(tmp_path, seeds=3, chunk=3)
    alone = _study(tmp_path, seeds=3, chunk=1)
    assert [d.run_id for d in batch.runs()] == [d.run_id for d in alone.runs()]
    for study, name in ((batch, "batch"), (alone, "alone")):
        run_study(study, tmp_path / name, progress=False, report=False)
    by_id = {d.run_id: d for d in batch.runs()}
    b_runs, b_traj = _computed(tmp_path / "batch")
    a_runs, a_traj = _computed(tmp_path / "alone")
    assert sorted(b_runs.index) == sorted(by_id)
    for rid, row in b_runs.iterrows():
        desc = by_id[rid]
        assert row["seed"] == row["init_seed"] == desc.params["seed"]
        assert row["sim_run_id"] == sim_id_of(run_spec(desc.params))
    assert list(a_runs.columns) == list(b_runs.columns)
    for column in b_runs:
        if b_runs[column].dtype.kind == "f":
            np.testing.assert_allclose(b_runs[column], a_runs[column], rtol=1e-9, atol=0)
        else:
            assert list(b_runs[column]) == list(a_runs[column]), column
    assert list(b_traj["run_id"]) == list(a_traj["run_id"])
    numeric = [c for c in b_traj if b_traj[c].dtype.kind == "f"]
    np.testing.assert_allclose(b_traj[numeric].to_numpy(), a_traj[numeric].to_numpy(),
                               rtol=1e-9, atol=1e-300)
    for rid, group in b_traj.groupby("run_id"):  # each trajectory ends at its row's values
        assert group["fn"].iloc[-1] == pytest.approx(b_runs.loc[rid, "final_fn"], rel=1e-12)


class _ThreadPool(concurrent.futures.ThreadPoolExecutor):
    """The process pool's interface on threads of this process (the order in which chunks
    come back is the pool's, not the study's)."""

    def __init__(self, count, mp_context=None, initializer=None):
        super().__init__(count)


def test_the_tables_follow_the_study_order_on_every_executor(tmp_path, monkeypatch):
    """runs.parquet lists the runs in the study's order (the grid order of its parts), and
    trajectories.parquet holds each run's records in one block in that order, whether the
    runs were computed in chunks of 1 or 3 by the local executor (cheap work first) or in
    chunks of 3 by a pool (long work first, chunks returned as they finish), and whatever
    the order of the run ids themselves (which here is not the study's)."""
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", _ThreadPool)
    kick = MORE_PART.replace('name = "more"', 'name = "kick"\nintervene_time = 20.0').replace(
        "seed = [10, 11]", "seed = [10]")
    for executor, chunk in (("local", 1), ("local", 3), ("process", 3)):
        study = _study(tmp_path, seeds=3, chunk=chunk, extra=kick)
        order = [d.run_id for d in study.runs()]
        assert order != sorted(order) and len(order) == 4
        out = tmp_path / f"{executor}-{chunk}"
        run_study(study, out, executor=executor, progress=False, report=False)
        runs = pd.read_parquet(out / "runs.parquet")
        traj = pd.read_parquet(out / "trajectories.parquet")
        assert list(runs["run_id"]) == order, (executor, chunk)
        assert list(dict.fromkeys(traj["run_id"])) == order, (executor, chunk)
        assert (traj["run_id"] != traj["run_id"].shift()).sum() == len(order)  # contiguous
        # one block per run: 12 records, the intervention run 12 + 1 (its second start)
        assert traj.groupby("run_id", sort=False).size().to_dict() == {
            rid: (13 if rid == order[3] else 12) for rid in order}


def test_runs_outside_the_bound_study_stay_out_of_its_tables(tmp_path):
    """A part file of a run the study no longer has (a grid point removed from the spec) is
    kept on disk but enters neither table, through consolidate() or tables(); the study's
    own runs are all there."""
    study = _study(tmp_path, seeds=2, chunk=1)
    out = tmp_path / "out"
    run_study(study, out, progress=False, report=False)
    store = Store(out)
    store.write_run("0123456789ab", _ok(5.0), _traj(3))
    ids = [d.run_id for d in study.runs()]
    runs, traj = store.tables()
    assert list(runs["run_id"]) == ids and set(traj["run_id"]) == set(ids)
    runs, traj = store.consolidate()
    assert list(runs["run_id"]) == ids and set(traj["run_id"]) == set(ids)
    assert "0123456789ab" in store.statuses()


def test_a_consolidation_cut_short_is_redone_not_paired_with_old_records(tmp_path,
                                                                        monkeypatch):
    """Run b finished after the tables were consolidated with run a alone; the next
    consolidation is killed after writing its first table. tables() then gives a's and b's
    rows each with its own records (b's 3 records there), never the new run table with the
    old trajectory table: the run table is written last, so while it is old its time stamp
    is older than b's part file and both tables are rebuilt."""
    import ncsim.study.store as store_module

    store = Store(tmp_path)
    store.write_run("a", _ok(1.0), _traj(2))
    store.consolidate()
    earlier = store.runs_path.stat().st_mtime_ns - 10_000_000_000  # 10 s before b's file
    os.utime(store.runs_path, ns=(earlier, earlier))
    store.write_run("b", _ok(2.0), _traj(3))
    real = store_module.write_table
    calls: list[Path] = []

    def killed_on_the_second(frame, path, *args, **kwargs):
        calls.append(Path(path))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(frame, path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(store_module, "write_table", killed_on_the_second)
        with pytest.raises(KeyboardInterrupt):
            store.consolidate()
    runs, traj = store.tables()
    assert list(runs["run_id"]) == ["a", "b"]
    assert list(traj["run_id"]) == ["a"] * 2 + ["b"] * 3


# ----------------------------------------------------------------------------- failed chunks
def _fails_with_seed(seed: int):
    def work(chunk):
        if any(d.params.get("seed") == seed for d in chunk):
            raise MemoryError("no room for the batch")
        return run_chunk(chunk)
    return work


@pytest.mark.parametrize("executor", ["local", "process"])
def test_a_failed_chunk_of_two_runs_fails_both_and_nothing_else(tmp_path, monkeypatch,
                                                               executor):
    """Chunks of 2 over seeds 0, 1, 2: the chunk (0, 1) raises. Both of its runs, and only
    they, are recorded as failed with the executor's error; seed 2 is computed; every run of
    the study has a row, so a rerun computes nothing and --retry-failed computes exactly the
    two failed runs."""
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", _ThreadPool)
    study = _study(tmp_path, seeds=3, chunk=2)
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(executors, "run_chunk", _fails_with_seed(0))
        summary = run_study(study, out, executor=executor, progress=False, report=False)
    assert (summary.total, summary.computed, summary.failed) == (3, 3, 2)
    runs = pd.read_parquet(out / "runs.parquet").set_index("seed")
    assert list(runs["status"]) == ["failed", "failed", "ok"]
    want = f"{executor} executor: MemoryError: no room for the batch"
    assert list(runs.loc[[0, 1], "error"]) == [want, want]
    assert run_study(study, out, progress=False, report=False).computed == 0
    retried = run_study(study, out, retry_failed=True, progress=False, report=False)
    assert (retried.computed, retried.skipped, retried.failed) == (2, 1, 0)


def test_a_pool_broken_at_submission_fails_every_run_of_the_lost_chunks(tmp_path, monkeypatch):
    """A pool that refuses every chunk (broken before the first was taken): each run of each
    chunk of 2 gets a failed row with the pool's error, none is left without a row."""
    from concurrent.futures.process import BrokenProcessPool

    class Broken(_ThreadPool):
        def submit(self, fn, *args, **kwargs):
            raise BrokenProcessPool("A child process terminated abruptly")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Broken)
    study = _study(tmp_path, seeds=3, chunk=2)
    out = tmp_path / "out"
    summary = run_study(study, out, executor="process", progress=False, report=False)
    assert (summary.computed, summary.failed) == (3, 3)
    assert Store(out).statuses() == {d.run_id: "failed" for d in study.runs()}


# ----------------------------------------------------------------------------- part filters
def test_a_part_filter_computes_its_part_and_keeps_the_whole_study_in_the_tables(
        tmp_path, monkeypatch):
    """Parts "ufm" (seed 0) and "more" (seeds 10, 11); seed 11 failed, and seed 10's stored
    simulator id is an old one (stale). A call restricted to "ufm" computes nothing (seed
    10's file untouched: its staleness is its own part's business), yet its run table still
    holds all 3 runs in study order and its failed count is the folder's (1). The next call
    without a filter computes seed 10 alone and leaves the failed run as it is."""
    study = _study(tmp_path, seeds=1, chunk=1, extra=MORE_PART)
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(executors, "run_chunk", _fails_with_seed(11))
        assert run_study(study, out, progress=False, report=False).failed == 1
    store = Store(out)
    ids = [d.run_id for d in study.runs()]
    old = next(d.run_id for d in study.runs() if d.params.get("seed") == 10)
    row = pd.read_parquet(store.run_file(old))
    row["sim_run_id"] = "0123456789ab"
    row.to_parquet(store.run_file(old))
    mtime = store.run_file(old).stat().st_mtime_ns
    only = run_study(study, out, progress=False, report=False, parts=["ufm"])
    assert (only.computed, only.skipped, only.selected, only.failed) == (0, 1, 1, 1)
    assert store.run_file(old).stat().st_mtime_ns == mtime
    runs = pd.read_parquet(store.runs_path)
    assert list(runs["run_id"]) == ids
    assert list(runs["status"]) == ["ok", "ok", "failed"]
    whole = run_study(study, out, progress=False, report=False)
    assert (whole.computed, whole.skipped, whole.failed) == (1, 2, 1)
    assert store.stored("sim_run_id")[old] != "0123456789ab"


# ----------------------------------------------------------------------------- run ids
TRAINED_CHANGES = {
    "dataset": "digits", "per_class": 50, "test_per_class": 10, "data_dim": 16,
    "data_classes": 5, "separation": 4.0, "preset": "resnet20", "arch": "cnn", "depth": 3,
    "width": 64, "activation": "tanh", "epochs": [2, 3], "lr": 1e-2, "weight_decay": 1e-3,
    "batch_size": 64, "seed": 1, "nc_every": 3, "onset_threshold": 0.02,
    "intervention_epoch": 1, "reference_train_size": 1000, "device": "cuda", "nc_dense": 2,
}
EXECUTION = {"data_root", "chunk"}


@pytest.mark.parametrize("key", sorted(set(TRAIN_PARAMS) - EXECUTION - {"intervention_alpha"}))
def test_every_trained_parameter_reaches_the_run_id(key):
    """Each parameter a trained part may set, changed from its default to a valid other value,
    gives another run id: two protocols never share an id (and a stored run is never taken
    for the other's). The changed configuration is checked to be valid, so the id is the
    resolved configuration's and not the parameters hashed as written."""
    base = {"dataset": "gaussian", "seed": 0, "epochs": [1, 1]}
    changed = {**base, key: TRAINED_CHANGES[key]}
    if key == "device":  # hashed as written, not validated against this machine
        assert RunDesc("p", "trained", changed).run_id != RunDesc("p", "trained", base).run_id
        return
    build(RunDesc("p", "trained", changed))
    assert RunDesc("p", "trained", changed).run_id != RunDesc("p", "trained", base).run_id


def test_the_intervention_factor_of_a_training_reaches_the_run_id():
    """With an intervention at epoch 1, the factors 0.5 and 2 are two runs."""
    base = {"dataset": "gaussian", "seed": 0, "epochs": [1, 1], "intervention_epoch": 1}
    ids = set()
    for alpha in (0.5, 2.0):
        desc = RunDesc("p", "trained", {**base, "intervention_alpha": alpha})
        assert build(desc).intervention_alpha == alpha
        ids.add(desc.run_id)
    assert len(ids) == 2


def test_trained_batch_size_and_record_interval_reach_the_configuration():
    """batch_size sets every phase's batch size, nc_every the record interval, of the
    configuration that is trained (not only the id)."""
    config = build(RunDesc("p", "trained", {"dataset": "gaussian", "batch_size": 64,
                                            "nc_every": 3}))
    assert [ph.batch_size for ph in config.phases] == [64] * len(config.phases)
    assert config.nc_every == 3


def test_a_trained_row_reads_its_onset_with_the_runs_threshold(monkeypatch):
    """A training log whose phase-2 NC1 is 0.1, 0.05, 0.008 at epochs 3, 4, 5: with the
    default threshold 0.01 the onset is epoch 5 (fn 0.6), with the run's onset_threshold
    0.06 it is epoch 4 (fn 0.5); the run id differs as well."""
    import types

    import ncsim.validate.data as data_module
    import ncsim.validate.train as train_module

    log = pd.DataFrame({
        "run_id": "net", "time": [0.0, 1, 2, 3, 4, 5], "phase": [1, 1, 1, 2, 2, 2],
        "fn": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "nc1_trace": [1.0, 0.5, 0.2, 0.1, 0.05, 0.008],
        "accuracy": [0.5] * 6, "steps": [0, 1, 2, 3, 4, 5]})
    monkeypatch.setattr(data_module, "load_dataset", lambda *args, **kwargs: None)
    monkeypatch.setattr(train_module, "train", lambda config, data: types.SimpleNamespace(
        log=log, fn_before_intervention=float("nan")))
    plain = RunDesc("net", "trained", {"dataset": "gaussian", "epochs": [3, 2]})
    high = RunDesc("net", "trained", {**plain.params, "onset_threshold": 0.06})
    ((_, row, _),) = run_chunk([plain])
    assert (row["status"], row["onset_time"], row["fn_at_onset"]) == ("ok", 5.0, 0.6)
    ((_, row, _),) = run_chunk([high])
    assert (row["status"], row["onset_time"], row["fn_at_onset"]) == ("ok", 4.0, 0.5)
    assert plain.run_id != high.run_id
