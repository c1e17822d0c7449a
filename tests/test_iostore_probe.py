"""Probe of ncsim.io and ncsim.study.store: runs counted as finished only when their files are
whole, consolidation that keeps the newest row of a recomputed run, atomic writes that leave
no partial or temporary file, infinities and NaN written apart, dtypes kept on a round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ncsim.io import atomic_write, read_table, to_jsonable, write_json, write_table
from ncsim.study.store import Store


def _traj(rows):
    return pd.DataFrame({"time": np.arange(rows, dtype=float), "fn": np.linspace(1, 2, rows)})


def _store(tmp_path):
    store = Store(tmp_path / "study")
    store.parts.mkdir(parents=True)
    return store


def test_a_run_whose_trajectory_file_is_missing_is_pending(tmp_path):
    """A run row recording trajectory rows, without its trajectory file, is not finished."""
    store = _store(tmp_path)
    store.write_run("a", {"status": "ok"}, _traj(3))
    store.write_run("b", {"status": "ok"}, _traj(2))
    store.traj_file("a").unlink()
    assert store.pending(["a", "b"]) == ["a"]
    runs, traj = store.consolidate(["a", "b"])
    assert list(runs["run_id"]) == ["b"]
    assert list(traj["run_id"]) == ["b", "b"]


def test_a_trajectory_shorter_than_its_row_records_leaves_the_run_pending(tmp_path):
    """A trajectory file with fewer rows than the run row records makes the run unfinished."""
    store = _store(tmp_path)
    store.write_run("a", {"status": "ok"}, _traj(4))
    write_table(_traj(3).assign(run_id="a"), store.traj_file("a"))
    assert store.pending(["a"]) == ["a"]


def test_a_run_without_trajectory_is_finished_and_has_no_trajectory_rows(tmp_path):
    """A run written without trajectory counts as finished and adds no trajectory rows."""
    store = _store(tmp_path)
    store.write_run("a", {"status": "ok"}, None)
    store.write_run("b", {"status": "ok"}, _traj(2))
    assert store.pending(["a", "b"]) == []
    runs, traj = store.consolidate(["a", "b"])
    assert list(runs["run_id"]) == ["a", "b"]
    assert list(traj["run_id"]) == ["b", "b"]


def test_a_recomputed_run_without_trajectory_drops_its_old_trajectory(tmp_path):
    """Rewriting a run without trajectory removes the trajectory of its earlier computation."""
    store = _store(tmp_path)
    store.write_run("a", {"status": "ok", "x": 1.0}, _traj(3))
    store.write_run("a", {"status": "failed", "x": 2.0}, None)
    assert not store.traj_file("a").exists()
    runs, traj = store.consolidate(["a"])
    assert runs["x"].tolist() == [2.0] and len(traj) == 0


def test_a_damaged_run_file_counts_as_not_finished(tmp_path):
    """A run part file cut short is left out of the finished runs and the tables."""
    store = _store(tmp_path)
    store.write_run("a", {"status": "ok"}, _traj(2))
    store.write_run("b", {"status": "ok"}, _traj(2))
    data = store.run_file("a").read_bytes()
    store.run_file("a").write_bytes(data[: len(data) // 2])
    assert store.statuses() == {"b": "ok"}
    assert store.pending(["a", "b"]) == ["a"]


def test_failed_runs_are_retried_only_on_request(tmp_path):
    """pending keeps a failed run out unless retry_failed; force returns every run in order."""
    store = _store(tmp_path)
    store.write_run("a", {"status": "failed", "error": "boom"}, None)
    store.write_run("b", {"status": "ok"}, _traj(1))
    assert store.pending(["b", "a", "c"]) == ["c"]
    assert store.pending(["b", "a", "c"], retry_failed=True) == ["a", "c"]
    assert store.pending(["b", "a", "c"], force=True) == ["b", "a", "c"]


def test_the_trajectory_rows_carry_the_run_id_of_their_run(tmp_path):
    """write_run replaces a stray run_id in the trajectory by the run's id, as first column."""
    store = _store(tmp_path)
    store.write_run("a", {"status": "ok"}, _traj(2).assign(run_id="zzz"))
    traj = read_table(store.traj_file("a"))
    assert traj.columns[0] == "run_id" and traj["run_id"].tolist() == ["a", "a"]


def test_tables_are_consolidated_again_when_a_run_is_recomputed(tmp_path):
    """tables() gives the new row of a run recomputed after the last consolidation."""
    store = _store(tmp_path)
    store.write_run("a", {"status": "ok", "x": 1.0}, _traj(2))
    store.consolidate(["a"])
    store.write_run("a", {"status": "ok", "x": 5.0}, _traj(3))
    runs, traj = store.tables()
    assert runs["x"].tolist() == [5.0] and len(traj) == 3


def test_tables_drop_a_run_whose_part_file_was_deleted(tmp_path):
    """tables() consolidates again when a run in runs.parquet is no longer finished."""
    store = _store(tmp_path)
    store.write_run("a", {"status": "ok"}, _traj(2))
    store.write_run("b", {"status": "ok"}, _traj(2))
    store.consolidate()
    store.run_file("a").unlink()
    runs, traj = store.tables()
    assert runs["run_id"].tolist() == ["b"] and set(traj["run_id"]) == {"b"}


def test_clean_temporary_removes_stale_files_in_root_and_parts(tmp_path):
    """clean_temporary removes writer leftovers in the folder and in parts/, nothing else."""
    store = _store(tmp_path)
    store.write_run("a", {"status": "ok"}, _traj(1))
    (store.root / ".runs.parquet.x.tmp").write_text("")
    (store.parts / ".a.run.parquet.y.tmp").write_text("")
    assert store.clean_temporary() == 2
    assert sorted(p.name for p in store.parts.iterdir()) == ["a.run.parquet", "a.traj.parquet"]


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    """A writer that raises leaves the previous file intact and no temporary file behind."""
    target = tmp_path / "t.json"
    write_json({"a": 1}, target)

    def broken(tmp):
        tmp.write_text("partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(target, broken)
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_infinities_and_nan_are_written_apart_in_json(tmp_path):
    """NaN is null, +inf "inf", -inf "-inf", pd.NA and NaT null, numpy scalars plain numbers."""
    data = {"nan": float("nan"), "pos": np.inf, "neg": -np.inf, "na": pd.NA, "nat": pd.NaT,
            "i": np.int64(3), "t": (1.5, np.float32(-np.inf))}
    path = write_json(data, tmp_path / "d.json")
    assert json.loads(path.read_text()) == {"nan": None, "pos": "inf", "neg": "-inf",
                                            "na": None, "nat": None, "i": 3,
                                            "t": [1.5, "-inf"]}
    assert to_jsonable(np.array([-np.inf, 2.0])) == ["-inf", 2.0]


def test_csv_keeps_identifiers_ending_in_run_id_as_text(tmp_path):
    """In CSV, run_id and *_run_id columns that look like numbers are read back as text."""
    frame = pd.DataFrame({"run_id": ["012345678901"], "base_run_id": ["1234e5678901"],
                          "x": [1.0]})
    back = read_table(write_table(frame, tmp_path / "t.csv"))
    assert back["run_id"].tolist() == ["012345678901"]
    assert back["base_run_id"].tolist() == ["1234e5678901"]


def test_parquet_writes_mixed_integers_and_floats_as_floats(tmp_path):
    """An object column of ints and floats (and None) comes back as float64, NaN kept."""
    frame = pd.DataFrame({"run_id": ["a", "b", "c"],
                          "v": pd.Series([1, 2.5, None], dtype=object)})
    back = read_table(write_table(frame, tmp_path / "t.parquet"))
    assert back["v"].dtype == np.float64
    np.testing.assert_array_equal(back["v"].to_numpy(), [1.0, 2.5, np.nan])


def test_parquet_writes_a_float32_nan_in_an_object_column_as_missing(tmp_path):
    """A numpy float32 NaN in a text column is written as a missing value, not as text."""
    frame = pd.DataFrame({"v": pd.Series(["x", np.float32("nan")], dtype=object)})
    back = read_table(write_table(frame, tmp_path / "t.parquet"))
    assert back["v"].iloc[0] == "x" and back["v"].isna().iloc[1]


def test_a_run_id_named_twice_is_consolidated_once_in_both_tables(tmp_path):
    """consolidate(["a", "a"]) gives one run row and its trajectory once, not twice."""
    store = _store(tmp_path)
    store.write_run("a", {"status": "ok"}, _traj(2))
    store.write_run("b", {"status": "ok"}, _traj(3))
    runs, traj = store.consolidate(["a", "b", "a"])
    assert runs["run_id"].tolist() == ["a", "b"]  # each once, at its first place
    assert traj["run_id"].tolist() == ["a"] * 2 + ["b"] * 3
