"""Second probe of ncsim.plots through the Figure objects: which runs a trajectory figure can
label and colour (missing columns, runs missing from the run table, non-finite labels, the
edges of the log/linear colour rule, empty tables), what its panels count and mark
(onset dots on the drawn line only), the dots' colour, grid and default axis label, the
max_runs refusal, the colour bar's range, and the heat map's axes (one column on both, tick
rule, the boundary curve, the value named in a refusal); save_figure's options and its
failure path."""

from __future__ import annotations

import math
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from plot_helpers import one_over_t_runs, onset_dots, solid_lines

from ncsim.errors import InputError
from ncsim.plots import heatmap_figure, save_figure, trajectory_figure

VIRIDIS = plt.get_cmap("viridis")


def _colors(ax):
    return [ln.get_color() for ln in solid_lines(ax)]


def _legend_texts(ax):
    legend = ax.get_legend()
    return None if legend is None else [t.get_text() for t in legend.get_texts()]


# ----------------------------------------------------------------------- save_figure
def test_save_figure_passes_format_dpi_and_tight_box(tmp_path, monkeypatch):
    """save_figure asks savefig for the extension's format at 120 dpi with a tight box."""
    fig, _ = plt.subplots()
    calls = []

    def record(target, **kwargs):
        calls.append(kwargs)
        with open(target, "wb") as handle:
            handle.write(b"x")

    monkeypatch.setattr(fig, "savefig", record)
    save_figure(fig, tmp_path / "f.svg")
    assert calls == [{"format": "svg", "dpi": 120, "bbox_inches": "tight"}]


def test_save_figure_closes_the_figure_when_saving_fails(tmp_path):
    """An unknown format is refused by matplotlib; the figure is closed all the same and no
    file (final or temporary) is left behind."""
    fig, _ = plt.subplots()
    with pytest.raises(ValueError, match="nope"):
        save_figure(fig, tmp_path / "f.nope")
    assert not plt.fignum_exists(fig.number)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------- colour rule
@pytest.mark.parametrize(("labels", "want"), [
    ([0.0, 50.0, 100.0], [0.0, 0.5, 1.0]),   # smallest 0: a log scale is impossible, linear
    ([1.0, 5.5, 10.0], [0.0, 0.5, 1.0]),     # exactly a factor 10: still linear
    ([1.0, math.inf, 100.0], [0.0, 0.5, 1.0]),  # a non-finite label: colours by order
])
def test_label_colour_rule_edges(labels, want):
    """Colours at the edges of the rule: a zero label keeps the scale linear, a span of
    exactly 10 is linear (log only beyond), an infinite label falls back to the order."""
    traj, runs = one_over_t_runs(labels)
    fig = trajectory_figure(traj, runs, metrics=("fn",), label_column="lab")
    np.testing.assert_allclose(_colors(fig.axes[0]), [VIRIDIS(w) for w in want], rtol=1e-6)


@pytest.mark.parametrize(("labels", "limits", "scale"), [
    ([2.0 ** k for k in range(13)], (1.0, 4096.0), "log"),
    (list(np.linspace(1.0, 5.0, 13)), (1.0, 5.0), "linear"),
])
def test_colour_bar_spans_the_label_values(labels, limits, scale):
    """The colour bar of 13 numeric labels runs from the smallest to the largest value, on
    a log scale for a span beyond a factor 10 and linear otherwise."""
    traj, runs = one_over_t_runs(labels)
    fig = trajectory_figure(traj, runs, metrics=("fn",), label_column="lab")
    _, bar = fig.axes
    np.testing.assert_allclose(bar.get_ylim(), limits, rtol=1e-9)
    assert bar.get_yscale() == scale


def test_many_text_labels_get_neither_legend_nor_colour_bar():
    """13 runs labelled by text: no legend (too many) and no colour bar (no values to scale);
    the lines colour by order."""
    traj, runs = one_over_t_runs([f"v{k}" for k in range(13)])
    fig = trajectory_figure(traj, runs, metrics=("fn",), label_column="lab")
    (ax,) = fig.axes
    assert ax.get_legend() is None
    np.testing.assert_allclose(_colors(ax), [VIRIDIS(k / 12) for k in range(13)], rtol=1e-6)


# ----------------------------------------------------------------------- missing pieces
def test_empty_trajectory_table_draws_empty_panels_without_legend():
    """A trajectory table without rows and a labelled run table: every panel says it has
    nothing to show, no lines, no legend (and no empty-legend warning), no run-count title."""
    traj, runs = one_over_t_runs([1.0, 2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = trajectory_figure(traj.iloc[:0], runs, label_column="lab")
    assert len(fig.axes) == 2
    for ax, metric in zip(fig.axes, ("fn", "nc1_trace")):
        assert ax.get_lines() == [] and ax.get_legend() is None
        assert [t.get_text() for t in ax.texts] == [f"no positive finite {metric} at t > 0 "
                                                   "to show"]
    assert fig._suptitle is None


def test_trajectory_table_without_run_id_draws_nothing():
    """A trajectory table without a run_id column has no runs: panels say so, no error."""
    traj, _ = one_over_t_runs([1.0])
    fig = trajectory_figure(traj.drop(columns="run_id"))
    for ax in fig.axes:
        assert ax.get_lines() == [] and len(ax.texts) == 1


def test_run_table_without_run_id_or_label_column_leaves_lines_unlabelled():
    """A run table lacking run_id, or lacking the label column, is not used for labels:
    every run is still drawn, coloured by order, without a legend or dots."""
    traj, runs = one_over_t_runs([1.0, 2.0, 3.0])
    runs = runs.assign(onset_time=5.0, fn_at_onset=0.2)
    for table, column in ((runs.drop(columns="run_id"), "lab"), (runs, "other")):
        fig = trajectory_figure(traj, table, metrics=("fn",), label_column=column)
        (ax,) = fig.axes
        np.testing.assert_allclose(_colors(ax), [VIRIDIS(w) for w in (0.0, 0.5, 1.0)],
                                   rtol=1e-6)
        assert ax.get_legend() is None
    assert len(onset_dots(ax)) == 3  # the run table with run_id still marks the onsets


def test_a_run_missing_from_the_run_table_is_drawn_without_a_label():
    """A trajectory run absent from the run table is drawn, has no legend entry and no dot;
    the labelled runs keep theirs, and the colours then follow the order."""
    traj, runs = one_over_t_runs([1.0, 2.0, 3.0])
    runs = runs.assign(onset_time=5.0, fn_at_onset=0.2).drop(index=1)
    fig = trajectory_figure(traj, runs, metrics=("fn",), label_column="lab")
    (ax,) = fig.axes
    assert len(solid_lines(ax)) == 3
    assert _legend_texts(ax) == ["lab=1", "lab=3"]
    np.testing.assert_allclose(_colors(ax), [VIRIDIS(w) for w in (0.0, 0.5, 1.0)], rtol=1e-6)
    assert [ln.get_color() for ln in onset_dots(ax)] == [_colors(ax)[0], _colors(ax)[2]]


def test_a_metric_absent_from_the_table_gets_an_empty_panel():
    """A metric without a column gets a panel saying it has nothing to show; the other
    panel draws every run."""
    traj, _ = one_over_t_runs([1.0, 2.0])
    fig = trajectory_figure(traj.drop(columns="nc1_trace"))
    ax_fn, ax_nc = fig.axes
    assert len(solid_lines(ax_fn)) == 2 and len(ax_fn.texts) == 0
    assert solid_lines(ax_nc) == []
    assert [t.get_text() for t in ax_nc.texts] == ["no positive finite nc1_trace at t > 0 "
                                                   "to show"]


# ----------------------------------------------------------------------- panel counts
def test_infinite_values_are_not_drawn_and_are_counted():
    """An infinite metric value at t > 0 cannot sit on a log axis: left out of the line and
    counted in the panel title like a NaN."""
    traj = pd.DataFrame({"run_id": "r0", "time": [1.0, 2.0, 3.0], "fn": [1.0, math.inf, 3.0]})
    fig = trajectory_figure(traj, metrics=("fn",))
    (ax,) = fig.axes
    (line,) = solid_lines(ax)
    np.testing.assert_array_equal(line.get_xdata(), [1.0, 3.0])
    assert ax.get_title() == "1 record(s) with fn <= 0 or NaN not shown (log axis)"


def test_panel_counts_add_up_over_runs():
    """A panel where only the last run has nothing to show still shows the first run's
    line and counts the last run's records, rather than saying it is empty."""
    traj = pd.DataFrame({"run_id": ["a", "a", "b", "b"], "time": [1.0, 2.0, 1.0, 2.0],
                         "fn": [1.0, 2.0, -1.0, 0.0]})
    fig = trajectory_figure(traj, metrics=("fn",))
    (ax,) = fig.axes
    assert len(ax.texts) == 0
    assert ax.get_title() == "2 record(s) with fn <= 0 or NaN not shown (log axis)"


def test_an_empty_panel_has_no_count_title():
    """A panel with nothing to show says so in its middle and has no title counting the
    hidden records."""
    traj = pd.DataFrame({"run_id": "r0", "time": [1.0, 2.0], "fn": [0.0, -1.0]})
    (ax,) = trajectory_figure(traj, metrics=("fn",)).axes
    assert ax.get_title() == ""
    assert len(ax.texts) == 1


# ----------------------------------------------------------------------- onset dots
def test_no_onset_dot_on_a_panel_where_the_run_has_no_line():
    """A run with a finite onset but no positive fn at t > 0 gets no dot on the fn panel,
    even though fn_at_onset is given."""
    traj = pd.DataFrame({"run_id": "r0", "time": [1.0, 10.0], "fn": [0.0, 0.0],
                         "nc1_trace": [1.0, 0.1]})
    runs = pd.DataFrame({"run_id": ["r0"], "onset_time": [5.0], "fn_at_onset": [0.3]})
    ax_fn, ax_nc = trajectory_figure(traj, runs).axes
    assert onset_dots(ax_fn) == []
    assert len(onset_dots(ax_nc)) == 1


def test_fn_dot_is_interpolated_without_fn_at_onset():
    """A run table with onset_time but no fn_at_onset: the fn dot sits on the drawn line,
    interpolated linearly in log fn over log t."""
    traj = pd.DataFrame({"run_id": "r0", "time": [1.0, 100.0], "fn": [1.0, 1e-4]})
    runs = pd.DataFrame({"run_id": ["r0"], "onset_time": [10.0]})
    (ax,) = trajectory_figure(traj, runs, metrics=("fn",)).axes
    (dot,) = onset_dots(ax)
    np.testing.assert_allclose([dot.get_xdata()[0], dot.get_ydata()[0]], [10.0, 1e-2],
                               rtol=1e-12)


def test_an_onset_dot_has_its_runs_line_colour():
    """Each run's onset dot is drawn in the colour of that run's line."""
    traj, runs = one_over_t_runs([1.0, 2.0, 3.0])
    runs = runs.assign(onset_time=[2.0, 3.0, 4.0], fn_at_onset=0.3)
    (ax,) = trajectory_figure(traj, runs, metrics=("fn",), label_column="lab").axes
    dots = onset_dots(ax)
    assert len(dots) == 3
    np.testing.assert_allclose([d.get_color() for d in dots], _colors(ax), rtol=1e-12)


def test_a_nan_fn_at_onset_puts_the_dot_on_the_line():
    """fn_at_onset NaN beside a finite onset: the fn dot is interpolated on the drawn line
    (it was placed at y = NaN, so not shown, until session 30)."""
    traj = pd.DataFrame({"run_id": "r0", "time": [1.0, 100.0], "fn": [1.0, 1e-4]})
    runs = pd.DataFrame({"run_id": ["r0"], "onset_time": [10.0], "fn_at_onset": [math.nan]})
    (ax,) = trajectory_figure(traj, runs, metrics=("fn",)).axes
    (dot,) = onset_dots(ax)
    np.testing.assert_allclose([dot.get_xdata()[0], dot.get_ydata()[0]], [10.0, 1e-2],
                               rtol=1e-12)


def test_an_onset_beyond_the_drawn_line_gets_no_dot():
    """nc1_trace reaching 0 before the onset cuts its line short on the log axis: no dot
    there (it was pulled to the line's last value until session 30); the fn panel, whose
    line spans the onset, keeps its dot."""
    traj = pd.DataFrame({"run_id": "r0", "time": [1.0, 10.0, 100.0], "fn": [1.0, 2.0, 3.0],
                         "nc1_trace": [1.0, 0.5, 0.0]})
    runs = pd.DataFrame({"run_id": ["r0"], "onset_time": [50.0]})
    ax_fn, ax_nc = trajectory_figure(traj, runs).axes
    assert len(onset_dots(ax_fn)) == 1
    assert onset_dots(ax_nc) == []


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "4"])
def test_max_runs_must_be_a_whole_number_of_at_least_one(bad):
    """max_runs below 1 or not a whole number is refused (-1 drew all runs but the last)."""
    traj, _ = one_over_t_runs([1.0, 2.0])
    with pytest.raises(InputError, match=r"^max_runs must be a whole number >= 1"):
        trajectory_figure(traj, max_runs=bad)


# ----------------------------------------------------------------------- figure layout
def test_default_time_label_and_grid():
    """Without time_label every panel's x label is 't (gradient-flow time)'; the grid is on
    at major and minor ticks (a log axis reads by its minor ticks)."""
    traj, _ = one_over_t_runs([1.0])
    for metrics in (("fn",), ("fn", "nc1_trace")):
        fig = trajectory_figure(traj, metrics=metrics)
        assert len(fig.axes) == len(metrics)
        for ax in fig.axes:
            assert ax.get_xlabel() == "t (gradient-flow time)"
            major = ax.xaxis.get_gridlines()
            minor = [t.gridline for t in ax.xaxis.get_minor_ticks()]
            assert major and minor
            assert all(g.get_visible() for g in major + minor)


# ----------------------------------------------------------------------- heat map
def test_heatmap_of_one_column_on_both_axes_follows_log_x():
    """x and y the same column: its scale is decided once, from log_x (automatic here: the
    column holds 0, so linear on both axes); the cells lie on the diagonal."""
    table = pd.DataFrame({"a": [0.0, 1.0, 2.0], "v": [1.0, 10.0, 100.0]})
    fig = heatmap_figure(table, "a", "a", "v", log_x=None)
    ax = fig.axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("linear", "linear")
    got = fig.axes[0].collections[0].get_array()
    np.testing.assert_array_equal(np.ma.getmaskarray(got), ~np.eye(3, dtype=bool))
    np.testing.assert_allclose(np.diag(np.ma.getdata(got)), [0.0, 1.0, 2.0])


@pytest.mark.parametrize(("column", "log", "got"), [
    ([1.0, 0.0, -1.0], True, "got 0.0"),
    ([1.0, -2.0, math.nan], True, "got -2.0"),
    ([1.0, math.nan, 2.0], False, "got nan"),
])
def test_heatmap_refusal_names_the_first_bad_value(column, log, got):
    """The refusal of a grid column names its first value the axis cannot show."""
    table = pd.DataFrame({"a": column, "b": [1.0, 2.0, 3.0], "v": [1.0, 2.0, 3.0]})
    kind = "positive finite values on its log" if log else "finite values on its linear"
    with pytest.raises(InputError, match=rf"^heat map: column 'a' needs {kind} axis; {got}$"):
        heatmap_figure(table, "a", "b", "v", log_x=log)


def test_heatmap_count_axis_ticks_up_to_twenty_whole_values():
    """A linear axis of at most 20 whole values gets one tick per value; 21 values, or
    values that are not whole, keep matplotlib's own ticks."""
    def yticks(ys):
        table = pd.DataFrame({"a": 1.0, "b": ys, "v": 1.0})
        return list(heatmap_figure(table, "a", "b", "v", log_y=False).axes[0].get_yticks())

    twenty = [float(k) for k in range(1, 21)]
    assert yticks(twenty) == twenty
    assert yticks([*twenty, 21.0]) != [*twenty, 21.0]
    assert yticks([0.5, 1.5, 2.5]) != [0.5, 1.5, 2.5]


def test_heatmap_boundary_is_drawn_through_its_points_with_a_legend():
    """The boundary curve is one line through the given points, named in the legend."""
    table = pd.DataFrame({"a": [1.0, 10.0], "b": [1.0, 1.0], "v": [1.0, 2.0]})
    fig = heatmap_figure(table, "a", "b", "v", boundary=([1.0, 10.0], [1.0, 2.0]))
    ax = fig.axes[0]
    (line,) = ax.get_lines()
    np.testing.assert_array_equal(line.get_xdata(), [1.0, 10.0])
    np.testing.assert_array_equal(line.get_ydata(), [1.0, 2.0])
    assert _legend_texts(ax) == ["theory threshold"]


def test_missing_onset_cells_of_any_kind_draw_no_dot_and_raise_nothing():
    """Onset cells holding pd.NA or None (a nullable column) are missing: no dot, and the fn
    dot falls back to the line when fn_at_onset is missing that way."""
    traj = pd.DataFrame({"run_id": ["r0", "r0", "r1", "r1"], "time": [1.0, 100.0] * 2,
                         "fn": [1.0, 1e-4, 1.0, 1e-4]})
    runs = pd.DataFrame({"run_id": ["r0", "r1"],
                         "onset_time": pd.array([pd.NA, 10.0], dtype="Float64"),
                         "fn_at_onset": pd.Series([None, None], dtype=object)})
    (ax,) = trajectory_figure(traj, runs, metrics=("fn",)).axes
    (dot,) = onset_dots(ax)
    np.testing.assert_allclose([dot.get_xdata()[0], dot.get_ydata()[0]], [10.0, 1e-2],
                               rtol=1e-12)
