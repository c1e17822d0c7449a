"""Probe of simulate's timings and of the trajectory figure: phases summed over batches, the
note on runs left out, the runs kept by max_runs and the legend labels, each pinned where a
plausible slip went unnoticed by the other tests."""

from __future__ import annotations

import importlib
import types

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ncsim.plots import trajectory_figure
from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec, SolverSpec

sim = importlib.import_module("ncsim.flow.simulate")


def _tiny(loss: str = "ce", seed: int = 0, **solver) -> RunSpec:
    """K=3, n=2, d=4 and a short horizon: a run of a few milliseconds."""
    return RunSpec(model=ModelSpec(loss=loss, classes=3, per_class=2, dim=4),
                   reg=Regularization(lambda_w=1e-2, lambda_h=1e-2),
                   init=InitSpec(scale=0.3, seed=seed),
                   solver=SolverSpec(**{"t_end": 2.0, "records": 4, **solver}))


def test_timings_add_up_every_phase_over_the_batches(monkeypatch):
    """With a clock that ticks 1 s per reading, two batches give prepare 3 (validation + two
    batches), integrate 2 and summarise 3 (two batches + the tables): phases are summed."""
    clock = iter(range(1000))
    monkeypatch.setattr(sim, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock))))
    result = sim.simulate([_tiny("ce"), _tiny("mse")], theory=False)
    assert result.timings == {"prepare_s": 3.0, "integrate_s": 2.0, "summarise_s": 3.0}


def _two_runs() -> tuple[pd.DataFrame, pd.DataFrame]:
    t = np.array([1.0, 10.0])
    traj = pd.DataFrame({"run_id": ["r0", "r0", "r1", "r1"], "time": np.r_[t, t],
                         "fn": [1.0, 0.5, 2.0, 1.0], "nc1_trace": [1.0, 0.1, 1.0, 0.2]})
    runs = pd.DataFrame({"run_id": ["r0", "r1"], "onset_time": np.nan, "fn_at_onset": np.nan,
                         "flag": pd.Series([True, False], dtype=object)})
    return traj, runs


def test_a_boolean_label_column_is_written_as_true_and_false():
    """A label column of Python bools (an object column, as collapsed_theory) labels the lines
    'flag=True', 'flag=False' and colours them by order, not as the numbers 1 and 0."""
    traj, runs = _two_runs()
    fig = trajectory_figure(traj, runs, metrics=("fn",), label_column="flag")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["flag=True", "flag=False"]
    lines = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]
    cmap = plt.get_cmap("viridis")
    np.testing.assert_allclose(lines[0].get_color(), cmap(0.0))
    np.testing.assert_allclose(lines[1].get_color(), cmap(1.0))


def _runs_in_order(ids: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs ``ids`` in that order, fn = k + 1 at t = 1, 10 for the k-th."""
    traj = pd.DataFrame({"run_id": np.repeat(ids, 2), "time": [1.0, 10.0] * len(ids),
                         "fn": np.repeat(np.arange(1.0, len(ids) + 1), 2)})
    runs = pd.DataFrame({"run_id": ids, "onset_time": np.nan, "fn_at_onset": np.nan})
    return traj, runs


def test_a_figure_that_leaves_out_a_single_run_says_so():
    """Three runs with max_runs=2: the title says 'first 2 of 3 runs shown' (one run left
    out is still a run not drawn)."""
    traj, runs = _runs_in_order(["r0", "r1", "r2"])
    fig = trajectory_figure(traj, runs, metrics=("fn",), max_runs=2)
    assert fig._suptitle is not None
    assert fig._suptitle.get_text() == "first 2 of 3 runs shown"


def test_max_runs_keeps_the_first_runs_of_the_table_not_the_smallest_ids():
    """The runs drawn are the first ones in the trajectory table's order ('zz' before 'aa')."""
    traj, runs = _runs_in_order(["zz", "aa"])
    fig = trajectory_figure(traj, runs, metrics=("fn",), max_runs=1)
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "-"]
    np.testing.assert_array_equal(line.get_ydata(), [1.0, 1.0])


def test_numeric_legend_labels_have_three_significant_digits():
    """Numeric label values are written with 3 significant digits: 1/3 as 0.333, 12345 as
    1.23e+04, 2.0 as 2."""
    traj, runs = _runs_in_order(["r0", "r1", "r2"])
    runs["lam"] = [1 / 3, 12345.0, 2.0]
    fig = trajectory_figure(traj, runs, metrics=("fn",), label_column="lam")
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["lam=0.333", "lam=1.23e+04", "lam=2"]
