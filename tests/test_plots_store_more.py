"""Figures (heat map, trajectories, saving), the results store of a study and the executors'
error paths, on small hand-built tables and a tiny study specification."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from tiny_study import write_tiny_study

from ncsim.errors import InputError
from ncsim.plots import heatmap_figure, save_figure, trajectory_figure
from ncsim.study import executors
from ncsim.study.spec import load_study
from ncsim.study.store import Store

# ----------------------------------------------------------------------------- heat map
XS = (1e-4, 1e-3, 1e-2)
YS = (1.0, 10.0)


def _grid_table() -> pd.DataFrame:
    """Two replicates per (a, b) cell with values v and 3 v (cell mean 2 v), v = a * b * 1e6."""
    rows = [dict(a=a, b=b, v=a * b * 1e6 * k) for a in XS for b in YS for k in (1, 3)]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)


def _mesh(fig):
    (mesh,) = fig.axes[0].collections
    return mesh


def test_heatmap_values_are_log10_of_cell_means_on_log_axes():
    """The mesh holds log10 of the cell means (rows = y ascending, columns = x ascending), both
    axes are logarithmic, labels and title name the columns, the colour bar says log10."""
    fig = heatmap_figure(_grid_table(), "a", "b", "v")
    ax = fig.axes[0]
    want = np.log10([[2 * a * b * 1e6 for a in XS] for b in YS])
    got = _mesh(fig).get_array()
    assert got.shape == (2, 3)
    np.testing.assert_allclose(np.ma.getdata(got), want, rtol=1e-12)
    assert not np.ma.is_masked(got)
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("a", "b", "v")
    assert fig.axes[1].get_ylabel() == "log10 v"
    assert ax.get_lines() == [] and ax.get_legend() is None


def test_heatmap_cells_are_centred_on_the_grid_points_in_log_space():
    """Each cell spans half a grid step (in log10) either side of its point, every edge is
    positive, and the axes show every cell whole: limits are the outer edges."""
    fig = heatmap_figure(_grid_table(), "a", "b", "v")
    ax = fig.axes[0]
    corners = _mesh(fig).get_coordinates()
    x_edges, y_edges = corners[0, :, 0], corners[:, 0, 1]
    np.testing.assert_allclose(x_edges, 10.0 ** np.array([-4.5, -3.5, -2.5, -1.5]), rtol=1e-12)
    np.testing.assert_allclose(y_edges, 10.0 ** np.array([-0.5, 0.5, 1.5]), rtol=1e-12)
    np.testing.assert_allclose(ax.get_xlim(), (10 ** -4.5, 10 ** -1.5), rtol=1e-12)
    np.testing.assert_allclose(ax.get_ylim(), (10 ** -0.5, 10 ** 1.5), rtol=1e-12)


def test_heatmap_uneven_grid_and_single_column():
    """Uneven log steps: inner edges are geometric midpoints, outer edges mirror them; a single
    x value gets a cell of one decade around it."""
    table = pd.DataFrame(dict(a=[1.0, 4.0, 64.0], b=[2.0, 2.0, 2.0], v=[1.0, 10.0, 100.0]))
    corners = _mesh(heatmap_figure(table, "a", "b", "v")).get_coordinates()
    np.testing.assert_allclose(corners[0, :, 0], [0.5, 2.0, 16.0, 256.0], rtol=1e-12)
    np.testing.assert_allclose(corners[:, 0, 1], [2 / 10 ** 0.5, 2 * 10 ** 0.5], rtol=1e-12)
    single = heatmap_figure(table[table["a"] == 4.0], "a", "b", "v")
    np.testing.assert_allclose(single.axes[0].get_xlim(), (4 / 10 ** 0.5, 4 * 10 ** 0.5),
                               rtol=1e-12)
    np.testing.assert_allclose(np.ma.getdata(_mesh(single).get_array()), [[1.0]])


def test_heatmap_missing_and_non_positive_values_are_blank_cells():
    """A cell without a finite value, a zero and a negative value are masked (blank); a grid
    column whose values are all missing stays in the grid as a blank column."""
    table = _grid_table()
    table.loc[table["a"] == 1e-3, "v"] = np.nan  # the whole middle column
    table.loc[(table["a"] == 1e-4) & (table["b"] == 1.0), "v"] = 0.0
    table.loc[(table["a"] == 1e-2) & (table["b"] == 10.0), "v"] = -5.0
    got = _mesh(heatmap_figure(table, "a", "b", "v")).get_array()
    assert got.shape == (2, 3)
    np.testing.assert_array_equal(np.ma.getmaskarray(got), [[True, True, False],
                                                            [False, True, True]])
    np.testing.assert_allclose(np.ma.getdata(got)[0, 2], np.log10(2 * 1e-2 * 1.0 * 1e6))
    np.testing.assert_allclose(np.ma.getdata(got)[1, 0], np.log10(2 * 1e-4 * 10.0 * 1e6))


def test_heatmap_linear_values_boundary_and_title():
    """log_value=False shows the cell means themselves; the boundary curve is drawn with the
    given data and a legend entry; an explicit title replaces the value name."""
    curve = (np.array([1e-4, 1e-3, 1e-2]), np.array([9.0, 3.0, 1.0]))
    fig = heatmap_figure(_grid_table(), "a", "b", "v", title="Onset", log_value=False,
                         boundary=curve)
    ax = fig.axes[0]
    want = [[2 * a * b * 1e6 for a in XS] for b in YS]
    np.testing.assert_allclose(np.ma.getdata(_mesh(fig).get_array()), want, rtol=1e-12)
    assert fig.axes[1].get_ylabel() == "v"
    assert ax.get_title() == "Onset"
    (line,) = ax.get_lines()
    np.testing.assert_array_equal(line.get_xdata(), curve[0])
    np.testing.assert_array_equal(line.get_ydata(), curve[1])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["theory threshold"]


def test_heatmap_linear_and_automatic_axes():
    """log_x=None takes a linear x axis for a grid holding 0 (arithmetic cell edges, default
    ticks) and a log one for a positive grid; log_y=False draws a count axis linearly with a
    tick per row; a linear axis still refuses a missing coordinate."""
    table = pd.DataFrame({"a": [0.0, 1e-3, 2e-3] * 2, "b": [1.0] * 3 + [2.0] * 3,
                          "v": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    fig = heatmap_figure(table, "a", "b", "v", log_x=None, log_y=False)
    ax = fig.axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("linear", "linear")
    corners = _mesh(fig).get_coordinates()
    np.testing.assert_allclose(corners[0, :, 0], [-5e-4, 5e-4, 1.5e-3, 2.5e-3], rtol=1e-12)
    np.testing.assert_allclose(corners[:, 0, 1], [0.5, 1.5, 2.5], rtol=1e-12)
    assert list(ax.get_yticks()) == [1.0, 2.0]
    np.testing.assert_allclose(np.ma.getdata(_mesh(fig).get_array()),
                               np.log10([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), rtol=1e-12)
    positive = heatmap_figure(table.assign(a=table["a"] + 1e-4), "a", "b", "v", log_x=None)
    assert positive.axes[0].get_xscale() == "log"
    with pytest.raises(InputError, match="column 'a' needs finite values on its linear axis"):
        heatmap_figure(table.assign(a=table["a"].replace(0.0, np.nan)), "a", "b", "v",
                       log_x=False)
    with pytest.raises(InputError, match="column 'a' needs positive finite values on its log"):
        heatmap_figure(table, "a", "b", "v")


@pytest.mark.parametrize("change, match", [
    (lambda t: t.iloc[:0], "no rows"),
    (lambda t: t.drop(columns="v"), "no column 'v'"),
    (lambda t: t.assign(a=t["a"].replace(1e-4, 0.0)), "'a'.*positive"),
    (lambda t: t.assign(b=t["b"].replace(10.0, -10.0)), "'b'.*positive"),
    (lambda t: t.assign(b=t["b"].replace(10.0, np.nan)), "'b'.*positive"),
])
def test_heatmap_bad_input_is_refused(change, match):
    """An empty table, a missing column and a non-positive or missing grid coordinate (a log
    axis cannot show it) raise InputError naming the problem."""
    with pytest.raises(InputError, match=match):
        heatmap_figure(change(_grid_table()), "a", "b", "v")


# ----------------------------------------------------------------------------- trajectories
def _trajectories() -> tuple[pd.DataFrame, pd.DataFrame]:
    time = np.array([0.0, 1.0, 10.0, 100.0])
    traj = pd.concat([pd.DataFrame(dict(run_id=rid, time=time, fn=scale / (1 + time),
                                        nc1_trace=[1.0, 0.5, -1.0, 0.01]))
                      for rid, scale in (("r0", 1.0), ("r1", 2.0), ("r2", 4.0))],
                     ignore_index=True)
    runs = pd.DataFrame(dict(run_id=["r0", "r1", "r2"], onset_time=[10.0, np.nan, 10.0 ** 1.5],
                             fn_at_onset=[0.25, 1.0, 0.5], lam=[1e-3, 1e-2, 1e-1],
                             act=["relu", "tanh", "gelu"]))
    return traj, runs


def test_trajectory_panels_lines_and_onset_dots():
    """One log-log panel per metric and one line per run through the rows with t > 0 and a
    positive metric; a dot at each finite onset: (onset, fn_at_onset) on fn, the log-time
    interpolation on the other panels, on the line as drawn (linear in log value over log
    time); legend labels use the label column."""
    traj, runs = _trajectories()
    fig = trajectory_figure(traj, runs, label_column="lam", time_label="epoch")
    ax_fn, ax_nc = fig.axes
    assert (ax_fn.get_xscale(), ax_fn.get_yscale()) == ("log", "log")
    assert (ax_fn.get_ylabel(), ax_nc.get_ylabel(), ax_fn.get_xlabel()) == ("fn", "nc1_trace",
                                                                             "epoch")
    fn_lines = [ln for ln in ax_fn.get_lines() if ln.get_linestyle() == "-"]
    assert len(fn_lines) == 3
    np.testing.assert_array_equal(fn_lines[1].get_xdata(), [1.0, 10.0, 100.0])
    np.testing.assert_allclose(fn_lines[1].get_ydata(), 2.0 / np.array([2.0, 11.0, 101.0]))
    nc_line = [ln for ln in ax_nc.get_lines() if ln.get_linestyle() == "-"][0]
    np.testing.assert_array_equal(nc_line.get_xdata(), [1.0, 100.0])  # -1.0 at t = 10 dropped
    dots = [(ln.get_xdata()[0], ln.get_ydata()[0]) for ln in ax_fn.get_lines()
            if ln.get_marker() == "o"]
    assert dots == [(10.0, 0.25), (10.0 ** 1.5, 0.5)]
    nc_dots = [(ln.get_xdata()[0], ln.get_ydata()[0]) for ln in ax_nc.get_lines()
               if ln.get_marker() == "o"]
    np.testing.assert_allclose(nc_dots, [(10.0, 0.5 * (0.01 / 0.5) ** 0.5),
                                         (10.0 ** 1.5, 0.5 * (0.01 / 0.5) ** 0.75)])
    texts = [t.get_text() for t in ax_fn.get_legend().get_texts()]
    assert texts == ["lam=0.001", "lam=0.01", "lam=0.1"]


def test_trajectory_text_label_column_and_max_runs():
    """A text label column labels the lines with its values; max_runs keeps the first runs."""
    traj, runs = _trajectories()
    fig = trajectory_figure(traj, runs, metrics=("fn",), label_column="act", max_runs=2)
    (ax,) = fig.axes
    assert len([ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["act=relu", "act=tanh"]


def test_save_figure_writes_the_format_of_the_extension_and_closes(tmp_path):
    """save_figure writes PNG or SVG by extension, leaves no temporary file, closes the figure
    and returns the path."""
    traj, runs = _trajectories()
    for name, head in (("t.png", b"\x89PNG"), ("t.svg", b"<?xml")):
        fig = trajectory_figure(traj, runs)
        path = save_figure(fig, tmp_path / "sub" / name)
        assert path == tmp_path / "sub" / name
        assert path.read_bytes()[:len(head)] == head
        assert not plt.fignum_exists(fig.number)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["t.png", "t.svg"]


def _many_runs(count: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``count`` runs with fn = (k + 1) t at t = 1, 10, 100; label lam = 10^(k - count + 1)."""
    t = np.array([1.0, 10.0, 100.0])
    traj = pd.concat([pd.DataFrame({"run_id": f"r{k:02d}", "time": t, "fn": (k + 1) * t,
                                    "nc1_trace": 1.0 / t}) for k in range(count)])
    runs = pd.DataFrame({"run_id": [f"r{k:02d}" for k in range(count)],
                         "lam": 10.0 ** (np.arange(count) - count + 1),
                         "onset_time": np.nan, "fn_at_onset": np.nan})
    return traj, runs


def test_trajectory_figure_says_how_many_runs_it_leaves_out():
    """max_runs draws the first runs and the figure says so: 'first 5 of 20 runs shown'."""
    traj, runs = _many_runs(20)
    fig = trajectory_figure(traj, runs, max_runs=5)
    assert len([ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "-"]) == 5
    assert fig._suptitle is not None
    assert fig._suptitle.get_text() == "first 5 of 20 runs shown"
    fig = trajectory_figure(traj, runs, max_runs=20)
    assert fig._suptitle is None


def test_trajectory_figure_colour_bar_keys_many_numeric_labels():
    """Beyond 12 labelled runs (no legend) a colour bar of the label column keys the lines,
    whose colours follow the label's value (log scale over 19 decades) rather than the row
    order."""
    traj, runs = _many_runs(20)
    shuffled = runs.iloc[::-1].reset_index(drop=True)
    fig = trajectory_figure(traj, shuffled, label_column="lam")
    ax_fn, ax_nc, bar = fig.axes
    assert bar.get_ylabel() == "lam"
    assert ax_fn.get_legend() is None
    lines = [ln for ln in ax_fn.get_lines() if ln.get_linestyle() == "-"]
    cmap = plt.get_cmap("viridis")
    np.testing.assert_allclose(lines[0].get_color(), cmap(0.0))   # r00: the smallest lam
    np.testing.assert_allclose(lines[-1].get_color(), cmap(1.0))  # r19: the largest lam
    np.testing.assert_allclose(lines[10].get_color(), cmap(10 / 19))


def test_trajectory_panels_say_what_the_log_axes_leave_out():
    """A record at t > 0 whose metric is <= 0 or NaN (one per run here) is counted in the
    panel's title; a panel with nothing to show says so instead of staying blank; a run
    table without onset columns draws the lines without dots."""
    traj, runs = _trajectories()
    fig = trajectory_figure(traj, runs)
    ax_fn, ax_nc = fig.axes
    assert ax_fn.get_title() == ""
    assert ax_nc.get_title() == "3 record(s) with nc1_trace <= 0 or NaN not shown (log axis)"
    traj = traj.assign(nc1_trace=-traj["nc1_trace"].abs())
    fig = trajectory_figure(traj, runs[["run_id", "lam"]], label_column="lam")
    ax_fn, ax_nc = fig.axes
    assert [t.get_text() for t in ax_nc.texts] == ["no positive finite nc1_trace at t > 0 to "
                                                   "show"]
    assert not [ln for ln in ax_fn.get_lines() if ln.get_marker() == "o"]


def test_training_figure_breaks_its_log_lines_at_non_positive_values(tmp_path):
    """plot_training and plot_overlay: a 0, a negative value or NaN on a log axis breaks the
    line (NaN in its data, not a plunge to the axis edge) and the panel counts it."""
    from ncsim.validate import plots as vplots

    shown = {}
    real = vplots.save_figure

    def keep(fig, path):
        shown[Path(path).name] = [[ln.get_ydata().tolist() for ln in ax.get_lines()
                                   if ln.get_linestyle() != "--"] + [ax.get_title()]
                                  for ax in fig.axes]
        return real(fig, path)

    log = pd.DataFrame({"time": [0.0, 1.0, 2.0, 3.0], "fn": [1.0, 0.0, 2.0, 3.0],
                        "nc1_trace": [1.0, 0.1, -0.5, np.nan], "nc1": [1.0, 1.0, 1.0, 1.0],
                        "accuracy": [0.1, 0.5, 0.9, 1.0]})
    import unittest.mock as mock

    with mock.patch.object(vplots, "save_figure", keep):
        vplots.plot_training(log, tmp_path / "training.png", onset=2.0)
        curve = pd.DataFrame({"t": [0.0, 1.0, 2.0], "fn": [1.0, 0.0, 2.0],
                              "nc1_trace": [1.0, 0.1, 0.01]})
        vplots.plot_overlay(curve, curve, tmp_path / "compare.png")
    fn_panel, nc1_panel, _ = shown["training.png"]
    np.testing.assert_array_equal(fn_panel[0], [1.0, np.nan, 2.0, 3.0])
    assert fn_panel[-1] == "1 fn value(s) <= 0 or NaN not shown (log axis)"
    np.testing.assert_array_equal(nc1_panel[0], [1.0, 0.1, np.nan, np.nan])
    assert nc1_panel[-1] == "2 NC1 value(s) <= 0 or NaN not shown (log axis)"
    fn_overlay, nc_overlay = shown["compare.png"]
    np.testing.assert_array_equal(fn_overlay[0], [np.nan, 2.0])  # t = 0 left out
    assert fn_overlay[-1] == "2 fn value(s) <= 0 or NaN not shown (log axis)"
    assert nc_overlay[-1] == ""


# ----------------------------------------------------------------------------- store
def _study(tmp_path, quick: bool = False):
    return load_study(write_tiny_study(tmp_path, seeds=3, t_end=10.0, records=5), quick=quick)


def _row(value: float, status: str = "ok") -> dict:
    return {"status": status, "final_fn": value, "part": "p"}


def test_study_of_a_folder_without_study_json_is_refused(tmp_path):
    """Store.study on a folder without study.json raises InputError saying so."""
    with pytest.raises(InputError, match="is not a study folder \\(no study.json\\)"):
        Store(tmp_path / "empty").study()


def test_bind_refuses_another_study_unless_forced_and_cleans_temporaries(tmp_path):
    """bind removes temporary files left in the folder and in parts/ (others stay), refuses
    the quick variant over the full one with a message naming both ways out, and records the
    new study with force."""
    store = Store(tmp_path / "out")
    full = _study(tmp_path).to_dict()
    store.parts.mkdir(parents=True)
    for path in (store.root / ".runs.parquet.x1.tmp", store.parts / ".a.run.parquet.x2.tmp"):
        path.write_text("partial")
    (store.parts / "keep.txt").write_text("k")
    store.bind(full)
    assert sorted(p.name for p in store.root.rglob("*") if p.is_file()) == ["keep.txt",
                                                                            "study.json"]
    assert store.study()["quick"] is False
    quick = _study(tmp_path, quick=True).to_dict()
    with pytest.raises(InputError, match="holds the full variant of study 'tiny', not the "
                                         "quick variant of 'tiny' asked for; use another "
                                         "--out or --force") as refused:
        store.bind(quick)
    source = full["source"]  # a study file of its own: the command names the file
    assert str(refused.value).endswith(f"go on with the study it holds: ncsim study run "
                                       f"{source} --out {store.root}")
    store.bind(quick, force=True)
    assert store.study()["quick"] is True
    (store.parts / ".b.tmp").write_text("x")
    assert store.clean_temporary() == 1 and store.clean_temporary() == 0


def test_lock_refuses_a_second_holder_and_is_free_afterwards(tmp_path):
    """While the folder is locked a second lock fails at once naming the holder (its pid, or
    'another process' when the lock file is empty); after release it can be taken again."""
    import fcntl

    root = tmp_path / "out"
    with Store(root).lock():
        assert (root / ".lock").read_text() == f"pid {os.getpid()}"
        with pytest.raises(InputError, match=f"in use by another 'ncsim study run' \\(pid "
                                             f"{os.getpid()}\\); wait for it to finish or use "
                                             "another --out"), Store(root).lock():
            pass
    with Store(root).lock():
        pass
    (root / ".lock").write_text("")
    with open(root / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(InputError, match="\\(another process\\)"), Store(root).lock():
            pass


def test_statuses_skip_unreadable_parts_and_pending_honours_force_and_retry(tmp_path):
    """An unreadable run file counts as not finished; pending returns the unfinished ids in the
    given order, every id with force, and failed ones too with retry_failed."""
    store = Store(tmp_path)
    store.parts.mkdir()
    store.write_run("a", _row(1.0), None)
    store.write_run("b", _row(2.0, "failed"), None)
    store.run_file("c").write_bytes(b"not parquet")
    assert store.statuses() == {"a": "ok", "b": "failed"}
    ids = ["c", "b", "a", "d"]
    assert store.pending(ids) == ["c", "d"]
    assert store.pending(ids, retry_failed=True) == ["c", "b", "d"]
    assert store.pending(ids, force=True) == ids


def test_write_run_replaces_a_stale_trajectory(tmp_path):
    """A run rewritten without a trajectory (None or empty) removes its old trajectory file."""
    store = Store(tmp_path)
    traj = pd.DataFrame(dict(time=[1.0, 2.0], fn=[0.5, 0.25]))
    store.write_run("a", _row(1.0), traj)
    back = pd.read_parquet(store.traj_file("a"))
    pd.testing.assert_frame_equal(back, traj.assign(run_id="a")[["run_id", "time", "fn"]])
    store.write_run("a", _row(1.0), traj.iloc[:0])
    assert not store.traj_file("a").exists()
    store.write_run("a", _row(1.0), traj)
    store.write_run("a", _row(1.0), None)
    assert not store.traj_file("a").exists()


def test_consolidate_without_study_takes_every_part_sorted(tmp_path):
    """Without study.json, consolidate gathers every finished part in run-id order and writes
    tables equal to the parts; an unfinished trajectory-only part is left out."""
    store = Store(tmp_path)
    for rid, value in (("b", 2.0), ("a", 1.0)):
        store.write_run(rid, _row(value), pd.DataFrame(dict(time=[1.0], fn=[value])))
    pd.DataFrame(dict(time=[1.0], fn=[9.0], run_id="z")).to_parquet(store.traj_file("z"))
    runs, traj = store.consolidate()
    assert list(runs["run_id"]) == ["a", "b"]
    assert list(runs["final_fn"]) == [1.0, 2.0]
    assert list(traj["run_id"]) == ["a", "b"] and list(traj["fn"]) == [1.0, 2.0]
    pd.testing.assert_frame_equal(pd.read_parquet(store.runs_path), runs)
    pd.testing.assert_frame_equal(pd.read_parquet(store.trajectories_path), traj)


def test_consolidate_follows_the_bound_study_order(tmp_path):
    """With a study.json lacking run_ids, the runs are those of the study (grid order); a part
    of another run is left out; with run_ids listed, that order is kept."""
    study = _study(tmp_path)
    ids = [d.run_id for d in study.runs()]
    store = Store(tmp_path / "out")
    store.bind(study.to_dict())
    for k, rid in enumerate(reversed(ids)):
        store.write_run(rid, _row(float(k)), None)
    store.write_run("stranger", _row(9.0), None)
    runs, traj = store.consolidate()
    assert list(runs["run_id"]) == ids
    assert list(runs["final_fn"]) == [2.0, 1.0, 0.0]
    assert len(traj) == 0 and list(traj.columns) == ["run_id"]
    store.bind({**study.to_dict(), "run_ids": [ids[2], "stranger"]})
    assert list(store.consolidate()[0]["run_id"]) == [ids[2], "stranger"]


def test_consolidate_turns_mixed_type_columns_into_text(tmp_path):
    """A column holding numbers for some runs and text for others is written as text."""
    store = Store(tmp_path)
    store.write_run("a", {**_row(1.0), "width": 3}, None)
    store.write_run("b", {**_row(2.0), "width": "3,4"}, None)
    runs, _ = store.consolidate()
    back = pd.read_parquet(store.runs_path)
    assert list(back["width"]) == ["3", "3,4"]
    assert list(back["final_fn"]) == [1.0, 2.0]
    assert list(runs["width"]) == ["3", "3,4"]  # the returned table is the one on disk


def test_consolidate_of_no_finished_run_has_a_text_run_id(tmp_path):
    """With no finished run both tables are empty with a text run_id column, returned and
    read back alike."""
    store = Store(tmp_path)
    runs, traj = store.consolidate()
    assert len(runs) == 0 and len(traj) == 0
    assert runs["run_id"].dtype == object and traj["run_id"].dtype == object
    assert pd.read_parquet(store.runs_path)["run_id"].dtype == object


def test_tables_consolidate_when_missing_or_stale_and_read_back_otherwise(tmp_path):
    """tables() consolidates when the tables are missing or a part is newer, and otherwise
    reads back what consolidate wrote."""
    store = Store(tmp_path)
    store.write_run("a", _row(1.0), pd.DataFrame(dict(time=[1.0, 2.0], fn=[1.0, 0.5])))
    runs, traj = store.tables()
    assert store.runs_path.exists() and list(runs["run_id"]) == ["a"]
    assert list(traj["fn"]) == [1.0, 0.5]
    again_runs, again_traj = store.tables()
    pd.testing.assert_frame_equal(again_runs, runs)
    pd.testing.assert_frame_equal(again_traj, traj)
    store.write_run("b", _row(2.0), None)
    stamp = store.runs_path.stat().st_mtime_ns
    os.utime(store.run_file("b"), ns=(stamp + 10**9, stamp + 10**9))
    runs, _ = store.tables()
    assert list(runs["run_id"]) == ["a", "b"] and list(runs["final_fn"]) == [1.0, 2.0]


TRAJ = pd.DataFrame(dict(time=[0.0, 1.0, 2.0], fn=[1.0, 0.5, 0.25]))


def _damage(path, how: str) -> None:
    """Truncate a parquet file to half its bytes, or delete it."""
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.unlink()


@pytest.mark.parametrize("how", ["truncated", "deleted"])
def test_a_run_with_a_damaged_trajectory_is_not_finished(tmp_path, how):
    """The run row records its trajectory's length; a trajectory file that is cut short or
    gone makes the run unfinished (pending again, left out of the tables) instead of breaking
    consolidation or silently dropping its records. The bookkeeping column stays out of
    runs.parquet."""
    store = Store(tmp_path)
    store.write_run("a", _row(1.0), TRAJ)
    store.write_run("b", _row(2.0), TRAJ)
    store.write_run("c", _row(3.0), None)  # no trajectory (e.g. a failed run): finished
    assert store.pending(["a", "b", "c"]) == []
    runs, traj = store.tables()
    assert "trajectory_rows" not in runs.columns and len(traj) == 6
    _damage(store.traj_file("b"), how)
    assert store.pending(["a", "b", "c"]) == ["b"]
    assert sorted(store.statuses()) == ["a", "c"]
    runs, traj = store.tables()  # nothing newer, but b is no longer finished
    assert list(runs["run_id"]) == ["a", "c"] and set(traj["run_id"]) == {"a"}
    store.write_run("b", _row(2.5), TRAJ)
    runs, traj = store.tables()
    assert list(runs["final_fn"]) == [1.0, 2.5, 3.0] and len(traj) == 6


def test_a_trajectory_of_another_length_or_a_deleted_run_file_is_noticed(tmp_path):
    """A trajectory file with other rows than its run row records (overwritten by hand) is not
    whole; a run file deleted after consolidation drops the run from the tables."""
    store = Store(tmp_path)
    for rid in ("a", "b"):
        store.write_run(rid, _row(1.0), TRAJ)
    store.tables()
    TRAJ.iloc[:2].assign(run_id="a").to_parquet(store.traj_file("a"))
    store.run_file("b").unlink()
    assert store.statuses() == {}
    runs, traj = store.tables()
    assert len(runs) == 0 and len(traj) == 0


def test_rows_written_before_the_trajectory_length_was_recorded(tmp_path):
    """A run row without trajectory_rows (earlier versions): finished when its trajectory can
    be read or is absent (there is no telling whether it had one), not when it is damaged."""
    store = Store(tmp_path)
    for rid in ("a", "b", "c"):
        store.write_run(rid, _row(1.0), TRAJ)
        row = pd.read_parquet(store.run_file(rid)).drop(columns="trajectory_rows")
        row.to_parquet(store.run_file(rid))
    store.traj_file("b").unlink()
    _damage(store.traj_file("c"), "truncated")
    assert sorted(store.statuses()) == ["a", "b"]


def test_study_rerun_recomputes_a_run_whose_trajectory_was_cut_short(tmp_path):
    """End to end: `study run` after one trajectory part was truncated computes that run
    alone again and consolidates every run (it crashed on every rerun with a traceback)."""
    from cli_helpers import invoke

    spec = write_tiny_study(tmp_path, seeds=2, records=12)
    out = tmp_path / "out"
    assert invoke(["study", "run", str(spec), "--out", str(out)]).exit_code == 0
    store = Store(out)
    runs, traj = store.tables()
    victim = runs["run_id"].iloc[1]
    _damage(store.traj_file(victim), "truncated")
    result = invoke(["study", "run", str(spec), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 runs, 1 computed, 1 already done, 0 failed" in result.output, result.output
    again, again_traj = store.tables()
    assert list(again["run_id"]) == list(runs["run_id"])
    pd.testing.assert_frame_equal(again_traj, traj)


# ----------------------------------------------------------------------------- executors
def test_unknown_executor_and_address_without_dask_are_refused():
    """check_executor (and execute, before looking at the chunks) refuses an unknown executor
    listing the allowed ones, and an address with another executor than dask."""
    with pytest.raises(InputError, match="unknown executor 'threads'; allowed: local, process, "
                                         "dask"):
        executors.execute([], "threads")
    with pytest.raises(InputError, match="--address needs --executor dask"):
        executors.check_executor("process", "tcp://127.0.0.1:8786")
    calls = []
    executors.execute([], "local", calls.append)
    assert calls == []


@pytest.mark.parametrize(("executor", "address"), [("local", None),
                                                   ("dask", "tcp://127.0.0.1:8786")])
def test_workers_where_no_pool_of_this_process_takes_them_are_refused(executor, address,
                                                                     tmp_path):
    """--workers sizes the process pool or the Dask LocalCluster; with the local executor or
    a scheduler's address it would be silently ignored, so it is refused before anything
    starts (no study folder is written); with process it is taken."""
    with pytest.raises(InputError, match="--workers sets the workers of --executor process"):
        executors.check_executor(executor, address, 3)
    from tiny_study import write_tiny_study

    from ncsim.study.runner import run_study
    from ncsim.study.spec import load_study

    study = load_study(write_tiny_study(tmp_path))
    with pytest.raises(InputError, match="--workers sets the workers"):
        run_study(study, tmp_path / "out", executor=executor, address=address, workers=3)
    assert not (tmp_path / "out").exists()
    executors.check_executor("process", None, 3)
    executors.check_executor("dask", None, 3)


def test_dask_executor_without_dask_is_refused_before_a_folder_is_written(tmp_path,
                                                                         monkeypatch):
    """--executor dask where dask.distributed does not import: exit 2, one line saying how to
    install it, and no study folder (the import is checked with the options)."""
    from cli_helpers import error_line, invoke

    monkeypatch.setitem(sys.modules, "dask", None)  # import dask... raises ImportError
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    with pytest.raises(InputError, match=r"--executor dask needs dask\[distributed\]"):
        executors.check_executor("dask", None)
    spec = write_tiny_study(tmp_path, seeds=1, records=12)
    out = tmp_path / "out"
    result = invoke(["study", "run", str(spec), "--executor", "dask", "--out", str(out)])
    assert result.exit_code == 2
    assert "--executor dask needs dask[distributed]" in error_line(result)
    assert not out.exists()


def test_sigterm_during_a_process_pool_ends_its_workers_and_exits_143():
    """SIGTERM reaches only the parent (a scheduler, timeout, kill): while the process pool
    runs, the parent terminates its worker processes and exits with 128 + 15, and the
    previous SIGTERM handler is back afterwards (the workers were orphaned before)."""
    import multiprocessing
    import signal
    import time

    before = signal.getsignal(signal.SIGTERM)
    # forked before the handler is set, as a spawned pool worker starts with the default one
    worker = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
    worker.start()
    with pytest.raises(SystemExit) as ended, executors._workers_end_on_sigterm():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs at the next bytecode; never reached
    worker.join(5)
    assert ended.value.code == 143
    assert not worker.is_alive() and worker.exitcode == -signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.slow
def test_sigterm_to_study_run_with_the_process_executor_leaves_no_worker(tmp_path):
    """End to end (about 20 s): `study run --executor process --workers 2`, SIGTERM to the
    command once a run is on disk: it exits 143, its worker processes are gone, and a rerun
    computes only what is missing."""
    import signal
    import subprocess
    import time

    spec = write_tiny_study(tmp_path, seeds=40, chunk=1, t_end=3000.0, rtol=1e-9)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "ncsim", "study", "run", str(spec), "--out", str(out),
               "--executor", "process", "--workers", "2", "--no-progress"]
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((out / "parts").glob("*.run.parquet")) and time.monotonic() < deadline:
        time.sleep(0.2)
    children = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True,
                              text=True).stdout.split()
    assert children, "the pool has no worker processes"
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(60) == 143
    time.sleep(2)
    alive = [pid for pid in children if Path(f"/proc/{pid}").exists()
             and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]]
    assert alive == []
    finished = len(Store(out).statuses())
    assert 1 <= finished < 40


def test_worker_initialiser_bounds_threads_and_keeps_heap(monkeypatch):
    """A worker's initialiser sets torch and BLAS to one thread and keeps freed heap."""
    import torch
    from threadpoolctl import threadpool_info

    from ncsim.threads import set_threads

    kept = []
    monkeypatch.setattr(executors, "keep_freed_memory", lambda: kept.append(1) or True)
    set_threads(2)
    try:
        executors._init_worker()
        assert torch.get_num_threads() == 1
        blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
        assert blas and set(blas) == {1}
        assert kept == [1]
    finally:
        set_threads(1)


def test_dask_executor_errors_say_what_to_do(tmp_path, monkeypatch):
    """Without dask installed the dask executor asks to install the extra; an unreachable
    scheduler is reported with its address and the connection error."""
    chunks = [_study(tmp_path).runs()[:1]]
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    with pytest.raises(InputError, match="needs dask\\[distributed\\]: pip install "
                                         "'ncsim\\[dask\\]'"):
        executors.execute(chunks, "dask")
    monkeypatch.undo()
    distributed = pytest.importorskip("dask.distributed")

    def refuse(address, timeout):
        raise OSError(f"timed out after {timeout} connecting to {address}")

    monkeypatch.setattr(distributed, "Client", refuse)
    with pytest.raises(InputError, match="cannot reach the Dask scheduler at tcp://10.0.0.1:1: "
                                         "timed out after 20s"):
        executors.execute(chunks, "dask", address="tcp://10.0.0.1:1")


def test_cell_edges_on_log_and_linear_axes():
    """Geometric midpoints on a log axis (half a decade around a single value), arithmetic
    ones on a linear axis (+-0.5 around a single value); outer edges mirrored."""
    from ncsim.plots import cell_edges

    np.testing.assert_allclose(cell_edges([1e-4, 1e-2, 1e-1], log=True),
                               10.0 ** np.array([-5.0, -3.0, -1.5, -0.5]), rtol=1e-12)
    np.testing.assert_allclose(cell_edges([3e-2], log=True), [10 ** -2.0229, 10 ** -1.0229],
                               rtol=1e-4)
    np.testing.assert_allclose(cell_edges([1, 2, 4], log=False), [0.5, 1.5, 3.0, 5.0])
    np.testing.assert_allclose(cell_edges([7.0], log=False), [6.5, 7.5])


def test_heatmap_text_coordinate_is_an_input_error():
    """A coordinate column holding text is refused like a non-positive one, not with a raw
    conversion error."""
    table = pd.DataFrame({"x": ["a", "b"], "y": [1.0, 2.0], "v": [1.0, 2.0]})
    with pytest.raises(InputError, match="^heat map: column 'x' needs positive finite values"):
        heatmap_figure(table, "x", "y", "v")


def test_trajectory_legend_has_one_entry_per_label_value():
    """Runs that share a label value (seeds of one setting) share one legend entry."""
    traj, runs = _trajectories()
    runs = runs.assign(lam=[1e-3, 1e-3, 1e-1])
    fig = trajectory_figure(traj, runs, label_column="lam")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["lam=0.001",
                                                                            "lam=0.1"]


def test_a_folder_of_a_shipped_study_names_the_command_that_goes_on_with_it(tmp_path):
    """A folder holding the quick variant of a shipped study refuses another study with the
    command that resumes the one it holds: the study's name (not its file) and --quick."""
    from ncsim.study.spec import spec_dir

    store = Store(tmp_path / "out")
    held = {"name": "depth", "quick": True, "source": str(spec_dir() / "depth.toml")}
    store.bind(held)
    with pytest.raises(InputError, match="quick variant of study 'depth', not the full "
                                         "variant of 'weight_decay'") as refused:
        store.bind({"name": "weight_decay", "quick": False,
                    "source": str(spec_dir() / "weight_decay.toml")})
    assert str(refused.value).endswith(
        f"ncsim study run depth --quick --out {store.root}")
