"""Second probe of ncsim.study.store: the exact messages of a refused or damaged folder and of
a held lock, what counts as already done on resume (a changed grid point computed alone), the
partial files an interrupted write leaves, and the order and dtypes of the merged tables.

References are written apart from the store: messages spelled out in full, run ids taken from
the study, part files and their time stamps read from disk."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from study_helpers import parts_store, short_trajectory
from tiny_study import write_tiny_study

import ncsim.io as io_module
import ncsim.study.store as store_module
from ncsim.errors import InputError
from ncsim.io import read_table
from ncsim.study.runner import run_study
from ncsim.study.spec import load_study, spec_dir
from ncsim.study.store import TRAJECTORY_ROWS, Store


# ----------------------------------------------------------------------------- messages
def test_the_refusal_of_a_shipped_quick_study_is_spelled_out_in_full(tmp_path):
    """A folder holding the quick variant of a shipped study refuses the full variant of
    another with the whole message: held and asked variants in place, the --force note, and
    the command that goes on with the held study by its name, with --quick."""
    store = Store(tmp_path / "out")
    store.bind({"name": "s", "quick": True, "source": str(spec_dir() / "s.toml")})
    with pytest.raises(InputError) as err:
        store.bind({"name": "t", "quick": False})
    root = store.root
    assert str(err.value) == (
        f"{root} holds the quick variant of study 's', not the full variant of 't' asked "
        f"for; use another --out or --force (which records the new study here and "
        f"recomputes its runs; the other study's files stay). To go on with the study it "
        f"holds: ncsim study run s --quick --out {root}")


def test_the_refusal_of_a_study_file_names_the_file_and_no_quick_flag(tmp_path):
    """A folder holding the full variant of a study read from its own file, asked for the
    quick variant of the same study: the command names that file, without --quick; a study
    recorded without a source is named by its name."""
    source = tmp_path / "mine" / "s.toml"
    store = Store(tmp_path / "out")
    store.bind({"name": "s", "quick": False, "source": str(source)})
    with pytest.raises(InputError) as err:
        store.bind({"name": "s", "quick": True})
    assert str(err.value) == (
        f"{store.root} holds the full variant of study 's', not the quick variant of 's' "
        f"asked for; use another --out or --force (which records the new study here and "
        f"recomputes its runs; the other study's files stay). To go on with the study it "
        f"holds: ncsim study run {source} --out {store.root}")
    bare = Store(tmp_path / "bare")
    bare.bind({"name": "u", "quick": False})
    with pytest.raises(InputError, match=r"holds: ncsim study run u --out "):
        bare.bind({"name": "v", "quick": False})


def test_a_study_json_that_is_not_json_gives_the_whole_damaged_message(tmp_path):
    """study.json cut short: the message names the file, the JSON error, the way out and
    that the finished runs are kept; bind over it raises the same error, and bind with
    force replaces it."""
    store = Store(tmp_path / "out")
    store.parts.mkdir(parents=True)
    store.study_path.write_text('{"name": "s", ', encoding="utf-8")
    try:
        json.loads('{"name": "s", ')
    except json.JSONDecodeError as decode:
        why = f"not valid JSON: {decode}"
    want = (f"{store.study_path} is damaged ({why}); remove it and run 'ncsim study run SPEC "
            f"--out {store.root}' with this folder's study: finished runs in {store.parts} "
            f"are kept")
    with pytest.raises(InputError) as err:
        store.study()
    assert str(err.value) == want
    with pytest.raises(InputError) as err:
        store.bind({"name": "s", "quick": False})
    assert str(err.value) == want
    store.bind({"name": "s", "quick": False}, force=True)
    assert store.study() == {"name": "s", "quick": False}


def test_a_study_json_that_is_not_text_is_damaged_not_a_crash(tmp_path):
    """study.json holding bytes that are not UTF-8 is an InputError naming it damaged (not a
    bare UnicodeDecodeError)."""
    store = Store(tmp_path / "out")
    store.root.mkdir()
    store.study_path.write_bytes(b"\xff\xfe\x00{")
    with pytest.raises(InputError) as err:
        store.study()
    assert str(err.value).startswith(
        f"{store.study_path} is damaged (not valid JSON: 'utf-8' codec can't decode byte "
        f"0xff in position 0")
    assert str(err.value).endswith(f"finished runs in {store.parts} are kept")


def test_a_second_lock_names_the_holder_in_the_whole_message(tmp_path):
    """A lock taken, released and taken again records this process alone ("pid N", not
    appended to the old text); a second lock while it is held fails with the whole message
    naming that pid."""
    store = Store(tmp_path / "out")
    with store.lock():
        pass
    with store.lock():
        assert (store.root / ".lock").read_text() == f"pid {os.getpid()}"
        with pytest.raises(InputError) as err, Store(store.root).lock():
            pass
    assert str(err.value) == (
        f"{store.root} is in use by another 'ncsim study run' (pid {os.getpid()}); wait for it "
        f"to finish or use another --out")


def test_a_folder_without_study_json_is_refused_with_its_message(tmp_path):
    """Store.study() of a folder without study.json: the folder and '(no study.json)'."""
    with pytest.raises(InputError) as err:
        Store(tmp_path / "x").study()
    assert str(err.value) == f"{tmp_path / 'x'} is not a study folder (no study.json)"


# ----------------------------------------------------------------------------- bind, clean
def test_bind_makes_the_parts_folder_and_leaves_other_temporary_names(tmp_path):
    """bind on a new folder makes parts/; it removes the writers' hidden temporaries only:
    a user's visible 'notes.tmp' and a hidden file not ending in .tmp stay."""
    store = Store(tmp_path / "out")
    store.root.mkdir()
    (store.root / "notes.tmp").write_text("mine")
    (store.root / ".hidden").write_text("mine")
    (store.root / ".runs.parquet.ab12.tmp").write_text("partial")
    store.bind({"name": "s", "quick": False})
    assert store.parts.is_dir()
    assert sorted(p.name for p in store.root.iterdir()) == [
        ".hidden", "notes.tmp", "parts", "study.json"]
    (store.parts / "x.tmp").write_text("mine")
    assert store.clean_temporary() == 0 and (store.parts / "x.tmp").exists()


# ----------------------------------------------------------------------------- finished runs
def test_rows_gives_the_asked_columns_only(tmp_path):
    """rows() gives, by run id, the asked columns a run has (an absent one left out), not
    the trajectory bookkeeping column that it reads as well."""
    store = parts_store(tmp_path)
    store.write_run("a", {"status": "ok", "x": 1.5, "y": "t"}, short_trajectory(2))
    store.write_run("b", {"status": "failed", "error": "boom"}, None)
    assert store.rows(["status", "x", "nope"]) == {"a": {"status": "ok", "x": 1.5},
                                                   "b": {"status": "failed"}}
    assert store.rows([]) == {"a": {}, "b": {}}
    assert pd.read_parquet(store.run_file("a"))[TRAJECTORY_ROWS].tolist() == [2]


def test_a_row_without_status_is_finished_but_has_no_status(tmp_path):
    """A finished run whose row has no status column is left out of statuses() (so it is
    pending) but its other values are stored."""
    store = parts_store(tmp_path)
    store.write_run("a", {"x": 1.0}, short_trajectory(1))
    assert store.statuses() == {} and store.stored("x") == {"a": 1.0}
    assert store.pending(["a"]) == ["a"]


def test_the_store_run_id_wins_over_a_run_id_in_the_row(tmp_path):
    """A row that carries its own run_id is stored under the store's id, run_id first."""
    store = parts_store(tmp_path)
    store.write_run("a", {"run_id": "zzz", "status": "ok"}, None)
    row = pd.read_parquet(store.run_file("a"))
    assert list(row.columns) == ["run_id", "status", TRAJECTORY_ROWS]
    assert row["run_id"].tolist() == ["a"]


# ----------------------------------------------------------------------------- interruptions
def test_a_trajectory_write_killed_midway_leaves_nothing_of_the_run(tmp_path, monkeypatch):
    """A new run killed while its trajectory is written: no trajectory, no row, no temporary
    file; the run is pending and a second write finishes it."""
    store = parts_store(tmp_path)
    real = io_module.atomic_write

    def killed(path, write):
        def partial(tmp):
            tmp.write_bytes(b"PAR1 cut")
            raise KeyboardInterrupt
        return real(path, partial)

    with monkeypatch.context() as patch:
        patch.setattr(io_module, "atomic_write", killed)
        with pytest.raises(KeyboardInterrupt):
            store.write_run("a", {"status": "ok"}, short_trajectory(3))
    assert sorted(p.name for p in store.parts.iterdir()) == []
    assert store.pending(["a"]) == ["a"]
    store.write_run("a", {"status": "ok"}, short_trajectory(3))
    assert store.pending(["a"]) == [] and store.statuses() == {"a": "ok"}


def test_a_row_killed_after_its_trajectory_leaves_the_run_pending(tmp_path, monkeypatch):
    """A new run killed after its trajectory is written but before its row: the run is not
    finished, enters neither table, and a stale temporary row file beside it (a SIGKILL) is
    not a finished run and goes at the next bind."""
    store = parts_store(tmp_path)
    real = store_module.write_table

    def killed(frame, path, *args, **kwargs):
        if str(path).endswith(".run.parquet"):
            raise KeyboardInterrupt
        return real(frame, path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(store_module, "write_table", killed)
        with pytest.raises(KeyboardInterrupt):
            store.write_run("a", {"status": "ok"}, short_trajectory(3))
    assert store.traj_file("a").exists() and not store.run_file("a").exists()
    short_trajectory(1).assign(run_id="a", status="ok").to_parquet(
        store.parts / ".a.run.parquet.x.tmp")
    assert store.statuses() == {} and store.pending(["a"]) == ["a"]
    runs, traj = store.consolidate(["a"])
    assert len(runs) == 0 and len(traj) == 0
    store.bind({"name": "s", "quick": False})
    assert sorted(p.name for p in store.parts.iterdir()) == ["a.traj.parquet"]


def test_tables_see_a_run_rewritten_without_trajectory(tmp_path):
    """A run recomputed as failed (row newer, its trajectory removed) after the tables were
    consolidated: tables() gives the failed row and none of its old records."""
    store = parts_store(tmp_path)
    store.write_run("a", {"status": "ok", "x": 1.0}, short_trajectory(2))
    store.consolidate()
    earlier = store.runs_path.stat().st_mtime_ns - 10_000_000_000
    os.utime(store.runs_path, ns=(earlier, earlier))
    os.utime(store.trajectories_path, ns=(earlier, earlier))
    store.write_run("a", {"status": "failed", "error": "boom"}, None)
    runs, traj = store.tables()
    assert runs["status"].tolist() == ["failed"] and len(traj) == 0


# ----------------------------------------------------------------------------- merged tables
def test_consolidating_no_runs_gives_empty_tables_with_a_text_run_id(tmp_path):
    """consolidate([]) keeps no run although two are finished: both tables are empty, with
    the one column run_id of objects, on disk as returned."""
    store = parts_store(tmp_path)
    store.write_run("a", {"status": "ok"}, short_trajectory(2))
    store.write_run("b", {"status": "ok"}, short_trajectory(2))
    runs, traj = store.consolidate([])
    for frame in (runs, traj, read_table(store.runs_path), read_table(store.trajectories_path)):
        assert list(frame.columns) == ["run_id"] and len(frame) == 0
        assert frame["run_id"].dtype == object


def test_without_study_json_every_finished_run_is_merged_in_id_order(tmp_path):
    """A folder without study.json has no study run ids; consolidate() takes every finished
    run in sorted id order (not the order written), skipping an unfinished one."""
    store = parts_store(tmp_path)
    for rid in ("c", "a", "d", "b"):
        store.write_run(rid, {"status": "ok"}, short_trajectory(1))
    store.traj_file("d").unlink()
    assert store.study_run_ids() == []
    runs, traj = store.consolidate()
    assert runs["run_id"].tolist() == ["a", "b", "c"]
    assert traj["run_id"].tolist() == ["a", "b", "c"]


def test_the_merged_tables_keep_column_order_and_dtypes(tmp_path):
    """Runs written with int, float, flag and text values: runs.parquet has run_id first,
    then the first run's columns in their order, then a column only a later run has (NaN
    before); ints stay int64, flags bool, text objects; no bookkeeping column. Trajectory
    columns keep their dtypes (an int phase stays int64), run_id first."""
    store = parts_store(tmp_path)
    traj = short_trajectory(2).assign(phase=np.array([1, 2], dtype=np.int64))
    store.write_run("b", {"status": "ok", "steps": 7, "fn": 0.5, "flag": True}, traj)
    store.write_run("a", {"status": "ok", "steps": 9, "fn": 1.5, "flag": False, "late": 2.0},
                    traj)
    runs, trajs = store.consolidate(["b", "a"])
    assert list(runs.columns) == ["run_id", "status", "steps", "fn", "flag", "late"]
    assert runs["run_id"].tolist() == ["b", "a"]
    assert [runs[c].dtype.kind for c in runs.columns] == ["O", "O", "i", "f", "b", "f"]
    assert runs["steps"].tolist() == [7, 9] and runs["flag"].tolist() == [True, False]
    np.testing.assert_array_equal(runs["late"].to_numpy(), [np.nan, 2.0])
    assert list(trajs.columns) == ["run_id", "time", "fn", "phase"]
    assert trajs["phase"].dtype == np.int64 and trajs["run_id"].tolist() == ["b"] * 2 + ["a"] * 2
    pd.testing.assert_frame_equal(runs, read_table(store.runs_path))
    pd.testing.assert_frame_equal(store.tables()[0], runs)


# ----------------------------------------------------------------------------- resume
def _mtimes(store: Store) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in store.parts.iterdir()}


def test_a_changed_grid_point_is_the_only_run_computed_again(tmp_path):
    """Seeds [0, 1] computed; the spec changed to seeds [0, 2]: only seed 2 is computed, the
    files of seeds 0 and 1 are untouched, and the tables hold seeds 0 and 2 in study order
    (seed 1's files stay on disk). A third call computes nothing and writes no part file."""
    first = tmp_path / "first"
    first.mkdir()
    old = load_study(write_tiny_study(first, seeds=2, chunk=1, t_end=10.0, records=5))
    spec = write_tiny_study(tmp_path, seeds=2, chunk=1, t_end=10.0, records=5)
    spec.write_text(spec.read_text().replace("seed = [0, 1]", "seed = [0, 2]"))
    new = load_study(spec)
    ids = [d.run_id for d in new.runs()]
    assert ids[0] == old.runs()[0].run_id and ids[1] not in {d.run_id for d in old.runs()}
    store = Store(tmp_path / "out")
    assert run_study(old, store.root, progress=False, report=False).computed == 2
    before = _mtimes(store)
    again = run_study(new, store.root, progress=False, report=False)
    assert (again.total, again.computed, again.skipped, again.failed) == (2, 1, 1, 0)
    after = _mtimes(store)
    assert {k: after[k] for k in before} == before
    assert sorted(set(after) - set(before)) == [f"{ids[1]}.run.parquet",
                                                f"{ids[1]}.traj.parquet"]
    runs = pd.read_parquet(store.runs_path)
    assert runs["run_id"].tolist() == ids and runs["seed"].tolist() == [0, 2]
    assert store.pending(ids) == [] and store.pending(ids, force=True) == ids
    assert run_study(new, store.root, progress=False, report=False).computed == 0
    assert _mtimes(store) == after


@pytest.mark.parametrize("which", ["runs", "trajectories"])
def test_tables_rebuild_a_table_cut_short_or_missing(tmp_path, which):
    """A consolidated table cut short (newer than every part file) or deleted: tables()
    rebuilds both from the part files instead of raising."""
    store = parts_store(tmp_path)
    store.write_run("a", {"status": "ok", "x": 1.0}, short_trajectory(2))
    store.write_run("b", {"status": "ok", "x": 2.0}, short_trajectory(3))
    want = store.consolidate()
    path = store.runs_path if which == "runs" else store.trajectories_path
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for got, ref in zip(store.tables(), want):
        pd.testing.assert_frame_equal(got, ref)
    path.unlink()
    for got, ref in zip(store.tables(), want):
        pd.testing.assert_frame_equal(got, ref)
    back = want[0] if which == "runs" else want[1]
    assert read_table(path)["run_id"].tolist() == back["run_id"].tolist()  # written again
