"""Probe tests: the validation figures' line data against their input tables, and the
executors' results matched to their own runs."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from plot_helpers import capture
from tiny_study import write_tiny_study

import ncsim.study.executors as executors
from ncsim.errors import InputError
from ncsim.study.runner import run_study
from ncsim.study.spec import load_study
from ncsim.validate import plots as vplots


def _solid(ax):
    return [ln for ln in ax.get_lines() if ln.get_linestyle() != "--"]


def test_training_lines_are_drawn_against_the_epoch_column(monkeypatch, tmp_path):
    """plot_training: every panel's lines have the log's time column as x data."""
    kept = capture(monkeypatch, vplots)
    log = pd.DataFrame({"time": [0.0, 5.0, 20.0], "fn": [1.0, 2.0, 4.0],
                        "nc1_trace": [1.0, 0.5, 0.25], "accuracy": [0.1, 0.5, 0.9]})
    vplots.plot_training(log, tmp_path / "t.png")
    (fig,) = kept
    for ax in fig.axes:
        lines = _solid(ax)
        assert lines
        for ln in lines:
            np.testing.assert_array_equal(ln.get_xdata(), [0.0, 5.0, 20.0])
    np.testing.assert_array_equal(_solid(fig.axes[0])[0].get_ydata(), [1.0, 2.0, 4.0])
    np.testing.assert_array_equal(_solid(fig.axes[2])[0].get_ydata(), [0.1, 0.5, 0.9])


def test_training_nc1_panel_has_both_forms_with_their_values(monkeypatch, tmp_path):
    """plot_training: the NC1 panel draws nc1_trace and nc1 (pinv form), each its own column,
    labelled by the column name; without nc1 only nc1_trace."""
    kept = capture(monkeypatch, vplots)
    log = pd.DataFrame({"time": [1.0, 2.0, 3.0], "fn": [1.0, 2.0, 3.0],
                        "nc1_trace": [1.0, 0.5, 0.1], "nc1": [3.0, 2.0, 0.7],
                        "accuracy": [0.2, 0.6, 1.0]})
    vplots.plot_training(log, tmp_path / "t.png")
    vplots.plot_training(log.drop(columns="nc1"), tmp_path / "u.png")
    both, one = kept
    lines = _solid(both.axes[1])
    assert [ln.get_label() for ln in lines] == ["nc1_trace", "nc1"]
    np.testing.assert_array_equal(lines[0].get_ydata(), [1.0, 0.5, 0.1])
    np.testing.assert_array_equal(lines[1].get_ydata(), [3.0, 2.0, 0.7])
    legend = [t.get_text() for t in both.axes[1].get_legend().get_texts()]
    assert legend == ["nc1_trace", "nc1"]
    assert [ln.get_label() for ln in _solid(one.axes[1])] == ["nc1_trace"]


def test_overlay_draws_measured_and_simulated_each_from_its_own_table(monkeypatch, tmp_path):
    """plot_overlay: the 'network' line holds the measured table's t > 0 values, the
    'UFM surrogate' line the simulated table's (different times and values), fn on the first
    panel and nc1_trace on the second."""
    kept = capture(monkeypatch, vplots)
    measured = pd.DataFrame({"t": [0.0, 1.0, 2.0, 4.0], "fn": [9.0, 1.0, 2.0, 3.0],
                             "nc1_trace": [9.0, 0.5, 0.25, 0.125]})
    simulated = pd.DataFrame({"t": [0.5, 1.5, 3.0], "fn": [10.0, 20.0, 30.0],
                              "nc1_trace": [0.9, 0.8, 0.7]})
    vplots.plot_overlay(measured, simulated, tmp_path / "c.png")
    (fig,) = kept
    want = {"fn": ([1.0, 2.0, 3.0], [10.0, 20.0, 30.0]),
            "nc1_trace": ([0.5, 0.25, 0.125], [0.9, 0.8, 0.7])}
    for ax, col in zip(fig.axes, ("fn", "nc1_trace")):
        net, sim = _solid(ax)
        assert (net.get_label(), sim.get_label()) == ("network", "UFM surrogate")
        assert (net.get_marker(), sim.get_marker()) == ("o", "None")
        np.testing.assert_array_equal(net.get_xdata(), [1.0, 2.0, 4.0])
        np.testing.assert_array_equal(sim.get_xdata(), [0.5, 1.5, 3.0])
        np.testing.assert_array_equal(net.get_ydata(), want[col][0])
        np.testing.assert_array_equal(sim.get_ydata(), want[col][1])


# ----------------------------------------------------------------------------- executors
def test_an_address_without_dask_installed_is_refused_by_the_option_check(monkeypatch):
    """check_executor: --executor dask with --address also needs dask.distributed importable."""
    monkeypatch.setitem(sys.modules, "dask", None)
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    with pytest.raises(InputError, match=r"--executor dask needs dask\[distributed\]"):
        executors.check_executor("dask", "tcp://head:8786")


def test_an_unreachable_scheduler_leaves_no_study_folder(tmp_path, monkeypatch):
    """run_study with --address of a scheduler that cannot be reached: one InputError naming
    the address, raised before the study folder is written."""
    distributed = pytest.importorskip("dask.distributed")

    def refuse(address, timeout):
        raise OSError(f"timed out after {timeout} connecting to {address}")

    monkeypatch.setattr(distributed, "Client", refuse)
    study = load_study(write_tiny_study(tmp_path, seeds=1, records=12))
    out = tmp_path / "out"
    with pytest.raises(InputError, match="cannot reach the Dask scheduler at tcp://10.0.0.1:1"):
        run_study(study, out, executor="dask", address="tcp://10.0.0.1:1", progress=False,
                  report=False)
    assert not out.exists()


def test_check_scheduler_connects_once_only_for_dask_with_an_address(monkeypatch):
    """check_scheduler: connects (and closes) for dask + address; nothing otherwise."""
    made = []

    class Client:
        def close(self):
            made.append("closed")

    monkeypatch.setattr(executors, "connect", lambda address: made.append(address) or Client())
    executors.check_scheduler("dask", None)
    executors.check_scheduler("local", None)
    assert made == []
    executors.check_scheduler("dask", "tcp://head:8786")
    assert made == ["tcp://head:8786", "closed"]


def test_a_local_cluster_is_not_checked_for_workers(tmp_path, monkeypatch):
    """--executor dask without --address: the no-workers note is never asked for (it would
    name a scheduler address of None); every run is computed."""
    distributed = pytest.importorskip("dask.distributed")
    real = distributed.LocalCluster
    monkeypatch.setattr(distributed, "LocalCluster",
                        lambda **kwargs: real(**{**kwargs, "processes": False}))
    monkeypatch.setattr(executors, "_init_worker", lambda: None)
    asked = []
    monkeypatch.setattr(executors, "note_no_workers",
                        lambda client, address: asked.append(address) or False)
    study = load_study(write_tiny_study(tmp_path, seeds=2, chunk=1, records=12))
    summary = run_study(study, tmp_path / "out", executor="dask", workers=1, progress=False,
                        report=False)
    assert (summary.computed, summary.failed) == (2, 0)
    assert asked == []
