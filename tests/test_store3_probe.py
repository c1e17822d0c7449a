"""Third probe of ncsim.study.store: the caller's frames left alone by write_run, the order and
the columns of the finished runs read back, a folder left as it is by clean_temporary, and a
study.json without a variant.

References are built apart from the store: ids sorted by Python, frames compared with copies
taken before the call, files listed from disk."""

from __future__ import annotations

import pandas as pd
import pytest
from study_helpers import parts_store, short_trajectory

from ncsim.errors import InputError
from ncsim.io import read_table
from ncsim.study.store import Store


# ----------------------------------------------------------------------------- write_run
def test_write_run_leaves_the_callers_frames_alone(tmp_path):
    """write_run does not add or replace a run_id column in the caller's trajectory, nor
    change the caller's row dict."""
    store = parts_store(tmp_path)
    traj = short_trajectory(3)
    keep = traj.copy()
    row = {"status": "ok", "x": 1.0}
    store.write_run("a", row, traj)
    pd.testing.assert_frame_equal(traj, keep)
    assert row == {"status": "ok", "x": 1.0}
    stray = short_trajectory(2).assign(run_id="zzz")
    keep = stray.copy()
    store.write_run("b", {"status": "ok"}, stray)
    pd.testing.assert_frame_equal(stray, keep)
    assert read_table(store.traj_file("b"))["run_id"].tolist() == ["b", "b"]


# ----------------------------------------------------------------------------- order read back
def test_finished_runs_are_read_back_in_sorted_id_order(tmp_path):
    """rows(), statuses() and stored() list the finished runs by sorted run id, whatever
    the order in which they were written."""
    store = parts_store(tmp_path)
    ids = ["m", "c", "x", "a", "q", "f", "z", "b", "k", "e"]
    for n, rid in enumerate(ids):
        store.write_run(rid, {"status": "ok", "n": n}, None)
    assert list(store.rows(["n"])) == sorted(ids)
    assert list(store.statuses()) == sorted(ids)
    assert list(store.stored("n")) == sorted(ids)
    assert store.stored("n") == {rid: n for n, rid in enumerate(ids)}


def test_stored_leaves_out_the_runs_without_the_column(tmp_path):
    """stored(column) gives the runs whose rows have the column; a run without it (and a
    failed run without trajectory) is left out, not an error."""
    store = parts_store(tmp_path)
    store.write_run("a", {"status": "ok", "x": 2.5}, short_trajectory(1))
    store.write_run("b", {"status": "failed", "error": "boom"}, None)
    assert store.stored("x") == {"a": 2.5}
    assert store.stored("error") == {"b": "boom"}
    assert store.stored("nope") == {}


# ----------------------------------------------------------------------------- folder
def test_clean_temporary_creates_no_folder(tmp_path):
    """clean_temporary on a folder without parts/ removes nothing and makes nothing."""
    store = Store(tmp_path / "study")
    store.root.mkdir()
    assert store.clean_temporary() == 0
    assert list(store.root.iterdir()) == []


def test_a_study_json_without_quick_is_the_full_variant_for_bind(tmp_path):
    """A study.json without 'quick' holds the full variant, so binding the full variant of
    the same study is accepted (the refusal message reads it as full as well)."""
    store = Store(tmp_path / "study")
    store.root.mkdir()
    store.study_path.write_text('{"name": "s"}', encoding="utf-8")
    store.bind({"name": "s", "quick": False})
    assert store.study() == {"name": "s", "quick": False}


def test_a_study_json_without_quick_refuses_the_quick_variant(tmp_path):
    """A study.json without 'quick' holds the full variant: the quick one is refused."""
    store = Store(tmp_path / "study")
    store.root.mkdir()
    store.study_path.write_text('{"name": "s"}', encoding="utf-8")
    with pytest.raises(InputError, match=r"holds the full variant of study 's', not the quick "
                                         r"variant of 's' asked for"):
        store.bind({"name": "s", "quick": True})
