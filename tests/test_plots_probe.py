"""Figures pinned through their Figure/Axes objects: run colours and legend limits of the
trajectory figure, heat-map cell means, the saved format, the validation figures (onset lines,
overlay scales), the phase diagram, and the one-line error of the command-line wrapper."""

from __future__ import annotations

import math

import click
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from plot_helpers import capture, one_over_t_runs

import ncsim.plots as plots
from ncsim.cli_errors import handle_errors
from ncsim.errors import InputError
from ncsim.plots import heatmap_figure, save_figure, trajectory_figure
from ncsim.theory.phase import PHASES, plot_phase
from ncsim.validate import plots as vplots

VIRIDIS = plt.get_cmap("viridis")


def _line_colors(ax):
    return [ln.get_color() for ln in ax.get_lines() if ln.get_linestyle() == "-"]


# ----------------------------------------------------------------------- trajectory figure
def test_trajectory_colours_span_a_factor_20_on_a_log_scale():
    """Numeric labels spanning more than a factor 10 colour the runs by log10 of the value."""
    labels = list(np.linspace(1.0, 20.0, 13))
    traj, runs = one_over_t_runs(labels, nc1=False)
    fig = trajectory_figure(traj, runs, metrics=("fn",), label_column="lab")
    want = [VIRIDIS(math.log(v) / math.log(20.0)) for v in labels]
    np.testing.assert_allclose(_line_colors(fig.axes[0]), want, rtol=1e-6)


def test_trajectory_colours_within_a_factor_10_are_linear():
    """Labels within a factor 10 colour the runs linearly in the value."""
    labels = [1.0, 2.0, 5.0]
    traj, runs = one_over_t_runs(labels, nc1=False)
    fig = trajectory_figure(traj, runs, metrics=("fn",), label_column="lab")
    want = [VIRIDIS((v - 1.0) / 4.0) for v in labels]
    np.testing.assert_allclose(_line_colors(fig.axes[0]), want, rtol=1e-6)


def test_trajectory_equal_numeric_labels_and_text_labels_colour_by_order():
    """All-equal numbers (no range to map) and text labels colour the runs by their order,
    first run at the low end of the map, last at the high end."""
    for labels in ([0.5, 0.5, 0.5], ["c", "a", "b"]):
        traj, runs = one_over_t_runs(labels, nc1=False)
        fig = trajectory_figure(traj, runs, metrics=("fn",), label_column="lab")
        want = [VIRIDIS(0.0), VIRIDIS(0.5), VIRIDIS(1.0)]
        np.testing.assert_allclose(_line_colors(fig.axes[0]), want, rtol=1e-6)


def test_trajectory_twelve_runs_get_a_legend_thirteen_a_colour_bar():
    """Up to 12 labelled runs: a legend with one entry each and no colour bar; 13: a colour
    bar named after the label column and no legend."""
    traj, runs = one_over_t_runs([float(k + 1) for k in range(12)], nc1=False)
    fig = trajectory_figure(traj, runs, metrics=("fn",), label_column="lab")
    assert len(fig.axes) == 1
    assert len(fig.axes[0].get_legend().get_texts()) == 12
    traj, runs = one_over_t_runs([float(k + 1) for k in range(13)], nc1=False)
    fig = trajectory_figure(traj, runs, metrics=("fn",), label_column="lab")
    ax, bar = fig.axes
    assert ax.get_legend() is None and bar.get_ylabel() == "lab"


def test_trajectory_legend_labels_keep_three_significant_digits():
    """Numeric legend labels are formatted with three significant digits."""
    traj, runs = one_over_t_runs([0.0125, 123456.0], nc1=False)
    fig = trajectory_figure(traj, runs, metrics=("fn",), label_column="lab")
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["lab=0.0125", "lab=1.23e+05"]


def test_trajectory_non_positive_onset_draws_no_dot():
    """An onset time <= 0 cannot sit on the log time axis: no dot is drawn for it."""
    traj, runs = one_over_t_runs([1.0, 2.0], nc1=False)
    runs = runs.assign(onset_time=[-1.0, 0.0], fn_at_onset=[0.5, 0.5])
    fig = trajectory_figure(traj, runs, metrics=("fn",))
    assert not [ln for ln in fig.axes[0].get_lines() if ln.get_marker() == "o"]


# ----------------------------------------------------------------------- heat map and saving
def test_heatmap_cell_is_the_mean_not_the_median_of_replicates():
    """Three replicates 1, 2, 9 of one cell are shown as log10 of their mean 4."""
    table = pd.DataFrame({"a": [1.0] * 3, "b": [2.0] * 3, "v": [1.0, 2.0, 9.0]})
    (mesh,) = heatmap_figure(table, "a", "b", "v").axes[0].collections
    np.testing.assert_allclose(np.ma.getdata(mesh.get_array()), [[math.log10(4.0)]])


def test_save_figure_without_suffix_writes_png(tmp_path):
    """A path without an extension is written as PNG."""
    fig, _ = plt.subplots()
    path = save_figure(fig, tmp_path / "figure")
    assert path.read_bytes().startswith(b"\x89PNG")


# ----------------------------------------------------------------------- validation figures
def test_training_figure_accuracy_panel_and_onset_on_every_panel(monkeypatch, tmp_path):
    """plot_training: train and test accuracy lines on the third panel; a finite onset is a
    dashed vertical line at that epoch on all three panels."""
    kept = capture(monkeypatch, vplots)
    log = pd.DataFrame({"time": [1.0, 2.0, 3.0], "fn": [1.0, 2.0, 3.0],
                        "nc1_trace": [1.0, 0.5, 0.1], "accuracy": [0.2, 0.6, 1.0],
                        "test_accuracy": [0.1, 0.4, 0.7]})
    vplots.plot_training(log, tmp_path / "t.png", onset=2.5)
    (fig,) = kept
    assert len(fig.axes) == 3
    acc = [ln for ln in fig.axes[2].get_lines() if ln.get_linestyle() == "-"]
    assert [ln.get_label() for ln in acc] == ["train", "test"]
    np.testing.assert_array_equal(acc[1].get_ydata(), [0.1, 0.4, 0.7])
    for ax in fig.axes:
        vlines = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
        assert len(vlines) == 1 and list(vlines[0].get_xdata()) == [2.5, 2.5]
    assert [ax.get_yscale() for ax in fig.axes] == ["log", "log", "linear"]


def test_overlay_axes_are_log_log_and_onsets_are_coloured_by_source(monkeypatch, tmp_path):
    """plot_overlay: both panels log-log with their labels and a legend of the two sources; the
    network onset is a black dashed line, others C1; a non-positive or NaN onset is skipped."""
    kept = capture(monkeypatch, vplots)
    curve = pd.DataFrame({"t": [1.0, 2.0], "fn": [1.0, 2.0], "nc1_trace": [0.5, 0.1]})
    vplots.plot_overlay(curve, curve, tmp_path / "c.png",
                        onsets={"network": 1.5, "surrogate": 1.2, "bad": -1.0, "none": math.nan})
    (fig,) = kept
    for ax, ylabel in zip(fig.axes, ("fn", "NC1 (trace)")):
        assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
        assert ax.get_ylabel() == ylabel
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["network",
                                                                       "UFM surrogate"]
        vlines = [(ln.get_xdata()[0], ln.get_color()) for ln in ax.get_lines()
                  if ln.get_linestyle() == "--"]
        assert vlines == [(1.5, "k"), (1.2, "C1")]


# ----------------------------------------------------------------------- phase diagram
def _phase_rows():
    """depth 1, 2, 3 (x) by lambda_w 1e-3, 1e-2 (y); phase index (i + 2 j) mod 5."""
    return [{"depth": d, "lambda_w": lw, "phase": PHASES[(i + 2 * j) % len(PHASES)]}
            for j, lw in enumerate((1e-3, 1e-2)) for i, d in enumerate((1, 2, 3))]


def test_phase_plot_grid_scales_labels_colours_and_legend(monkeypatch, tmp_path):
    """plot_phase: one cell per (x, y) holding the phase index, rows = y; an integer axis
    (depth) is linear and a decay axis log; each cell shows the legend colour of its phase."""
    kept = capture(monkeypatch, plots)
    plot_phase(_phase_rows(), "depth", "lambda_w", str(tmp_path / "p.png"))
    (fig,) = kept
    ax = fig.axes[0]
    (mesh,) = ax.collections
    grid = np.ma.getdata(mesh.get_array()).reshape(2, 3)
    np.testing.assert_array_equal(grid, [[0, 1, 2], [2, 3, 4]])
    assert (ax.get_xscale(), ax.get_yscale()) == ("linear", "log")
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("depth", "lambda_w")
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == list(PHASES)
    handle_colors = [h.get_facecolor() for h in legend.legend_handles]
    cell_colors = mesh.to_rgba(np.arange(len(PHASES), dtype=float))
    np.testing.assert_allclose(cell_colors, handle_colors)
    np.testing.assert_allclose(mesh.get_coordinates()[0, :, 0], [0.5, 1.5, 2.5, 3.5])


def test_phase_plot_axis_with_zero_is_linear(monkeypatch, tmp_path):
    """A decay axis holding 0 cannot be logarithmic: it is drawn linear."""
    kept = capture(monkeypatch, plots)
    rows = [{"lambda_h": lh, "lambda_w": lw, "phase": "collapse"}
            for lh in (0.0, 1e-2) for lw in (1e-3, 1e-2)]
    plot_phase(rows, "lambda_h", "lambda_w", str(tmp_path / "p.png"))
    ax = kept[0].axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("linear", "log")


# ----------------------------------------------------------------------- command-line errors
def test_handle_errors_prints_a_multi_line_message_on_one_line():
    """An InputError message with newlines and runs of spaces is printed as one line
    'Error: ...' on stderr, exit status 2."""

    @click.command()
    @handle_errors
    def cmd():
        raise InputError("first part\n   second   part\n")

    result = CliRunner().invoke(cmd, [])
    assert result.exit_code == 2
    assert result.stderr == "Error: first part second part\n"


def test_heatmap_text_value_column_is_an_input_error():
    """A value column holding text is refused with InputError, like a text coordinate (it
    escaped as pandas' TypeError from the cell means)."""
    table = pd.DataFrame({"a": [1.0, 2.0], "b": [1.0, 1.0], "v": ["x", "y"]})
    with pytest.raises(InputError, match=r"heat map: column 'v' holds .* values, not numbers"):
        heatmap_figure(table, "a", "b", "v")
