"""Third probe of ncsim.plots and ncsim.validate.plots through the Figure objects: boolean
labels, the colour bar beside every panel, onset dots at the ends of a line, the empty-panel
note's place, the drawn styles and figure sizes, the heat map's colour map, tick rule on log
and mixed axes, boundary style and legend corner, the exact refusals, and the validation
figures' labels, markers, onset lines, legends and written files."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.ticker import FixedLocator, LogLocator
from plot_helpers import capture, one_over_t_runs, onset_dots, solid_lines

from ncsim.errors import InputError
from ncsim.plots import heatmap_figure, trajectory_figure
from ncsim.validate import plots as vplots

VIRIDIS = plt.get_cmap("viridis")


def _dashed(ax):
    return [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]


def _training_log() -> pd.DataFrame:
    return pd.DataFrame({"time": [1.0, 2.0, 3.0], "fn": [1.0, 2.0, 3.0],
                         "nc1_trace": [1.0, 0.5, 0.1], "nc1": [2.0, 1.0, 0.5],
                         "accuracy": [0.2, 0.6, 1.0], "test_accuracy": [0.1, 0.4, 0.7]})


def _curve() -> pd.DataFrame:
    return pd.DataFrame({"t": [1.0, 2.0, 4.0], "fn": [1.0, 2.0, 3.0],
                         "nc1_trace": [0.5, 0.1, 0.05]})


# ----------------------------------------------------------------------- trajectory figure
@pytest.mark.parametrize("dtype", [bool, object])
def test_boolean_labels_colour_by_order_not_by_value(dtype):
    """True/False labels (a bool column, or Python bools in an object column) are not
    numbers to scale: the runs colour by order (0, 0.5, 1 of the map), not True = 1 and
    False = 0, and the legend names them as True/False."""
    traj, runs = one_over_t_runs([True, False, True])
    runs["lab"] = runs["lab"].astype(dtype)
    (ax,) = trajectory_figure(traj, runs, metrics=("fn",), label_column="lab").axes
    np.testing.assert_allclose([ln.get_color() for ln in solid_lines(ax)],
                               [VIRIDIS(0.0), VIRIDIS(0.5), VIRIDIS(1.0)], rtol=1e-12)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["lab=True", "lab=False"]


def test_colour_bar_takes_its_room_from_every_panel():
    """With 13 numeric labels on two panels, the colour bar stands right of both panels and
    both panels keep the same width."""
    traj, runs = one_over_t_runs([float(k) for k in range(1, 14)])
    ax_fn, ax_nc, bar = trajectory_figure(traj, runs, label_column="lab").axes
    fn_box, nc_box, bar_box = (a.get_position() for a in (ax_fn, ax_nc, bar))
    assert fn_box.width == pytest.approx(nc_box.width, rel=1e-9)
    assert bar_box.x0 > nc_box.x1 > nc_box.x0 > fn_box.x1


@pytest.mark.parametrize("onset", [1.0, 100.0])
def test_onset_at_the_first_or_last_record_gets_its_dot(onset):
    """An onset exactly at the first or the last drawn time still lies on the line: the
    nc1_trace dot sits at that record's value."""
    traj = pd.DataFrame({"run_id": "r0", "time": [1.0, 10.0, 100.0], "fn": [1.0, 0.5, 0.2],
                         "nc1_trace": [0.8, 0.4, 0.1]})
    runs = pd.DataFrame({"run_id": ["r0"], "onset_time": [onset]})
    _, ax_nc = trajectory_figure(traj, runs).axes
    (dot,) = onset_dots(ax_nc)
    want = {1.0: 0.8, 100.0: 0.1}[onset]
    np.testing.assert_allclose([dot.get_xdata()[0], dot.get_ydata()[0]], [onset, want],
                               rtol=1e-12)


def test_empty_panel_note_sits_in_the_middle_of_the_axes():
    """The 'nothing to show' note is placed at the centre of the panel in axes coordinates
    (not at data point (0.5, 0.5), off a log axis)."""
    traj = pd.DataFrame({"run_id": "r0", "time": [1.0, 2.0], "fn": [0.0, 0.0]})
    (ax,) = trajectory_figure(traj, metrics=("fn",)).axes
    (text,) = ax.texts
    assert text.get_position() == (0.5, 0.5)
    assert text.get_transform() == ax.transAxes
    assert (text.get_ha(), text.get_va()) == ("center", "center")


def test_trajectory_figure_width_grows_with_its_panels():
    """The trajectory figure is as wide per panel for one panel as for three, and as high."""
    traj, runs = one_over_t_runs([1.0, 2.0])
    one, three = (trajectory_figure(traj, runs, metrics=metrics).get_size_inches()
                  for metrics in (("fn",), ("fn", "nc1_trace", "fn")))
    np.testing.assert_allclose(three, [3 * one[0], one[1]], rtol=1e-12)


@pytest.mark.parametrize("bad", [0, 1.5])
def test_max_runs_refusal_names_the_value_given(bad):
    """The max_runs refusal ends with the value that was given, as its repr."""
    traj, _ = one_over_t_runs([1.0])
    with pytest.raises(InputError) as refused:
        trajectory_figure(traj, max_runs=bad)
    assert str(refused.value) == ("max_runs must be a whole number >= 1 (the first runs "
                                  f"drawn), got {bad!r}")


# ----------------------------------------------------------------------- heat map
def test_heatmap_uses_the_magma_map_over_the_value_range():
    """The mesh is coloured with the 'magma' map and its colour bar spans the shown values."""
    table = pd.DataFrame({"a": [1.0, 10.0], "b": [1.0, 1.0], "v": [10.0, 1000.0]})
    fig = heatmap_figure(table, "a", "b", "v")
    mesh = fig.axes[0].collections[0]
    assert mesh.get_cmap().name == "magma"
    np.testing.assert_allclose(fig.axes[1].get_ylim(), (1.0, 3.0), rtol=1e-12)


def test_heatmap_log_axis_of_whole_values_keeps_log_ticks():
    """A log axis keeps matplotlib's log ticks even when its values are few whole numbers
    (the one-tick-per-value rule is for linear count axes only)."""
    table = pd.DataFrame({"a": [1.0, 10.0, 100.0], "b": [2.0, 2.0, 2.0], "v": [1.0, 2.0, 3.0]})
    ax = heatmap_figure(table, "a", "b", "v").axes[0]
    assert isinstance(ax.xaxis.get_major_locator(), LogLocator)
    assert isinstance(ax.yaxis.get_major_locator(), LogLocator)


def test_heatmap_linear_axis_with_one_fractional_value_keeps_default_ticks():
    """A linear axis whose values are not all whole numbers gets no tick per value."""
    table = pd.DataFrame({"a": 1.0, "b": [1.0, 1.5, 2.0], "v": 1.0})
    ax = heatmap_figure(table, "a", "b", "v", log_y=False).axes[0]
    assert not isinstance(ax.yaxis.get_major_locator(), FixedLocator)
    table = pd.DataFrame({"a": 1.0, "b": [1.0, 2.0, 3.0], "v": 1.0})
    ax = heatmap_figure(table, "a", "b", "v", log_y=False).axes[0]
    assert isinstance(ax.yaxis.get_major_locator(), FixedLocator)


def test_heatmap_boundary_is_a_thick_cyan_line_with_its_legend_lower_left():
    """The boundary is a solid cyan line 2 wide; its legend sits in the lower left corner of
    the map (here away from 'best', which would dodge the line running through it)."""
    table = pd.DataFrame({"a": [1.0, 10.0, 100.0] * 3, "b": np.repeat([1.0, 10.0, 100.0], 3),
                          "v": 1.0})
    xs = np.geomspace(0.4, 250.0, 50)
    fig = heatmap_figure(table, "a", "b", "v", boundary=(xs, 0.4 * np.ones_like(xs) * 1.2))
    ax = fig.axes[0]
    (line,) = ax.get_lines()
    assert (line.get_color(), line.get_linestyle(), line.get_linewidth()) == ("c", "-", 2.0)
    fig.canvas.draw()
    legend_box = ax.get_legend().get_window_extent()
    axes_box = ax.get_window_extent()
    assert legend_box.x0 - axes_box.x0 < 0.2 * axes_box.width
    assert legend_box.y0 - axes_box.y0 < 0.2 * axes_box.height


def test_heatmap_missing_columns_refusal_is_exact():
    """Every missing column is named, then the columns the table has."""
    table = pd.DataFrame({"a": [1.0], "b": [1.0]})
    with pytest.raises(InputError) as refused:
        heatmap_figure(table, "x", "b", "w")
    assert str(refused.value) == "heat map: no column 'x', 'w' in the table; columns: a, b"


def test_heatmap_empty_table_refusal_is_exact():
    """A table without rows is refused with the value named and 'nothing to draw'."""
    table = pd.DataFrame({"a": [], "b": [], "v": []})
    with pytest.raises(InputError) as refused:
        heatmap_figure(table, "a", "b", "v")
    assert str(refused.value) == "heat map of 'v': the table has no rows; nothing to draw"


# ----------------------------------------------------------------------- training figure
def test_training_labels_markers_and_onset_colour(monkeypatch, tmp_path):
    """plot_training: fn and NC1 lines carry '.' markers, accuracy lines none; the panels'
    labels are epoch / 'fn (mean |h|)', 'NC1', 'accuracy'; onset lines are black."""
    kept = capture(monkeypatch, vplots)
    vplots.plot_training(_training_log(), tmp_path / "t.png", onset=2.0)
    (fig,) = kept
    labels = [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]
    assert labels == [("epoch", "fn (mean |h|)"), ("epoch", "NC1"), ("epoch", "accuracy")]
    markers = [[ln.get_marker() for ln in ax.get_lines() if ln.get_linestyle() == "-"]
               for ax in fig.axes]
    assert markers == [["."], [".", "."], ["None", "None"]]
    for ax in fig.axes:
        assert [ln.get_color() for ln in _dashed(ax)] == ["k"]


def test_training_without_onset_draws_no_onset_line(monkeypatch, tmp_path):
    """plot_training with the default onset (NaN) draws no dashed line on any panel."""
    kept = capture(monkeypatch, vplots)
    vplots.plot_training(_training_log(), tmp_path / "t.png")
    (fig,) = kept
    assert [len(_dashed(ax)) for ax in fig.axes] == [0, 0, 0]


def test_training_without_nc1_columns_has_no_nc1_legend(monkeypatch, tmp_path):
    """A log without nc1_trace and nc1: the NC1 panel has no line and no (empty) legend; the
    accuracy panel keeps its legend."""
    kept = capture(monkeypatch, vplots)
    vplots.plot_training(_training_log().drop(columns=["nc1_trace", "nc1"]), tmp_path / "t.png")
    (fig,) = kept
    assert fig.axes[1].get_lines() == []
    assert fig.axes[1].get_legend() is None
    assert [t.get_text() for t in fig.axes[2].get_legend().get_texts()] == ["train", "test"]


def test_validation_figures_are_written_and_their_paths_returned(tmp_path):
    """plot_training and plot_overlay write a PNG at the path given (as str or Path) and
    return it as a Path."""
    got = vplots.plot_training(_training_log(), str(tmp_path / "training.png"), onset=2.0)
    assert got == tmp_path / "training.png"
    assert got.read_bytes().startswith(b"\x89PNG")
    got = vplots.plot_overlay(_curve(), _curve(), tmp_path / "compare.png")
    assert got == tmp_path / "compare.png"
    assert got.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compare.png", "training.png"]


# ----------------------------------------------------------------------- overlay figure
def test_overlay_time_labels(monkeypatch, tmp_path):
    """plot_overlay: both panels' x label is the matched time 't = lr x steps (from MSE
    start)', and each holds the two curves' lines."""
    kept = capture(monkeypatch, vplots)
    vplots.plot_overlay(_curve(), _curve(), tmp_path / "c.png", onsets={"network": math.nan})
    (fig,) = kept
    for ax in fig.axes:
        assert ax.get_xlabel() == "t = lr x steps (from MSE start)"
        assert len(ax.get_lines()) == 2



def test_infinite_values_break_the_validation_lines_and_are_counted(monkeypatch, tmp_path):
    """An infinite fn or nc1_trace cannot sit on a log axis: plot_training and plot_overlay
    draw NaN there (a break in the line) and count it in the panel's note."""
    kept = capture(monkeypatch, vplots)
    log = _training_log().assign(fn=[1.0, math.inf, 3.0], nc1=[2.0, 1.0, -math.inf])
    vplots.plot_training(log, tmp_path / "t.png")
    curve = _curve().assign(nc1_trace=[0.5, math.inf, 0.05])
    vplots.plot_overlay(curve, _curve(), tmp_path / "c.png")
    training, overlay = kept
    np.testing.assert_array_equal(solid_lines(training.axes[0])[0].get_ydata(), [1.0, np.nan, 3.0])
    assert training.axes[0].get_title() == "1 fn value(s) <= 0 or NaN not shown (log axis)"
    assert training.axes[1].get_title() == "1 NC1 value(s) <= 0 or NaN not shown (log axis)"
    network = solid_lines(overlay.axes[1])[0]
    np.testing.assert_array_equal(network.get_ydata(), [0.5, np.nan, 0.05])
    assert overlay.axes[1].get_title() == ("1 nc1_trace value(s) <= 0 or NaN not shown "
                                           "(log axis)")
    assert overlay.axes[0].get_title() == ""
