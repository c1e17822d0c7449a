"""Numbers read from training logs: onset, fn*, vanishing, threshold fits and time mapping.

Every log here is built by hand, so each expected value follows from the records put in:
the first phase-2 record below the threshold is the onset, fn* is fn on that record, a
power law through chosen group means is exact, and the network's time over the MSE phase is
the increase of ``flow_time`` (lr x steps) times 1 / (1 - momentum).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ncsim.errors import InputError
from ncsim.validate.analysis import (
    OnsetRule,
    crossing_epochs,
    fit_thresholds,
    run_onset,
)
from ncsim.validate.logs import read_log


def one_run(times, phases, nc1, fn, run_id="r"):
    """A trajectory table of one run (labels fixed)."""
    return pd.DataFrame({"run_id": run_id, "time": np.asarray(times, float),
                         "phase": pd.array(phases, dtype="Int64"),
                         "nc1_trace": np.asarray(nc1, float), "fn": np.asarray(fn, float),
                         "model": "mlp", "dataset": "mnist", "condition": "c", "seed": 0})


# ----------------------------------------------------------------------------- vanishing
def test_vanishing_is_judged_against_the_largest_fn_of_the_whole_log():
    """fn peaks at 10 in the cross-entropy phase and stays at 0.005 through phase 2: the last
    fn is 5e-4 x the largest fn of the log, below the default 1e-3, so the run is vanishing
    and has no onset, although within phase 2 alone fn never falls (0.005 / 0.005 = 1). The
    module's rule compares with the largest fn over the whole log."""
    log = one_run([0, 10, 20, 30, 40], [1, 1, 2, 2, 2], [0.5, 0.3, 0.2, 0.005, 0.001],
                  [1.0, 10.0, 0.005, 0.005, 0.005])
    out = run_onset(log, OnsetRule.preset("rupa2026"))
    assert out["status"] == "vanishing"
    assert math.isnan(out["onset_epoch"]) and math.isnan(out["fn_star"])
    assert out["final_fn"] == 0.005
    # the same records with fn kept at 0.02 (2e-3 x the peak) collapse at epoch 30
    kept = log.assign(fn=[1.0, 10.0, 0.02, 0.02, 0.02])
    out = run_onset(kept, OnsetRule.preset("rupa2026"))
    assert (out["status"], out["onset_epoch"], out["fn_star"]) == ("collapsed", 30.0, 0.02)


# ----------------------------------------------------------------------------- threshold fits
def power_runs():
    """Groups width100 (fn* 1, 1) and width400 (fn* 2, 2) and a width1600 run that did not
    collapse: fn* = 0.1 x width^(1/2) exactly."""
    return pd.DataFrame({
        "run": ["a0", "a1", "b0", "b1", "c0"],
        "model": "mlp", "dataset": "mnist",
        "condition": ["width100", "width100", "width400", "width400", "width1600"],
        "seed": [0, 1, 0, 1, 0],
        "fn_star": [1.0, 1.0, 2.0, 2.0, math.nan],
        "onset_epoch": [10.0, 10.0, 10.0, 10.0, math.nan],
    })


def test_power_fit_through_two_widths_is_exact_and_extrapolates():
    """Two group means define the log-log line: fn_pred is each group's own mean at its
    width and 0.1 x 1600^(1/2) = 4 at the width that did not collapse (tolerance: two
    logarithms and an exponential, a few ulps)."""
    fits = fit_thresholds(power_runs(), fit="power")
    assert fits["a0"] == pytest.approx(1.0, rel=1e-12)
    assert fits["b1"] == pytest.approx(2.0, rel=1e-12)
    assert fits["c0"] == pytest.approx(4.0, rel=1e-12)
    means = fit_thresholds(power_runs(), fit="mean")
    assert (means["a0"], means["b0"]) == (1.0, 2.0) and math.isnan(means["c0"])


# ----------------------------------------------------------------------------- crossing
def test_crossing_epoch_is_the_first_record_at_or_below_the_level():
    """T_cross is the first logged epoch with fn <= fn_pred, whichever side fn starts on:
    fn 0.5, 3, 2, 1 at epochs 0, 10, 20, 30 is at or below 1.2 first at epoch 0 (a rising
    series is not searched for a crossing from below to above); fn 3, 3, 2, 1 is below 2.5
    first at epoch 20 (no interpolation: the record's own epoch); a level never reached, or
    no level, gives NaN."""
    log = one_run([0, 10, 20, 30], [2, 2, 2, 2], [0.5, 0.5, 0.5, 0.5], [0.5, 3.0, 2.0, 1.0])
    assert crossing_epochs(log, {"r": 1.2}) == {"r": 0.0}
    falling = log.assign(fn=[3.0, 3.0, 2.0, 1.0])
    assert crossing_epochs(falling, {"r": 2.5}) == {"r": 20.0}
    assert math.isnan(crossing_epochs(log, {"r": 0.1})["r"])
    assert math.isnan(crossing_epochs(log, {})["r"])


# ----------------------------------------------------------------------------- paper logs
def test_paper_log_columns_map_to_the_trajectory_schema(tmp_path):
    """A paper log's train and test accuracies, feat_norm and nc1..nc3 land in accuracy,
    test_accuracy, fn, nc1_trace, nc2_angle and nc3_paper with their values unchanged."""
    path = tmp_path / "width128_s2.csv"
    pd.DataFrame({"epoch": [0, 1], "phase": [1, 2], "train": [0.9, 0.995],
                  "test": [0.8, 0.97], "nc1": [0.5, 0.004], "nc2": [0.3, 0.2],
                  "nc3": [0.6, 0.1], "feat_norm": [3.0, 2.5]}).to_csv(path, index=False)
    log = read_log(path)
    assert log["accuracy"].tolist() == [0.9, 0.995]
    assert log["test_accuracy"].tolist() == [0.8, 0.97]
    assert log["fn"].tolist() == [3.0, 2.5]
    assert log["nc1_trace"].tolist() == [0.5, 0.004]
    assert log["nc2_angle"].tolist() == [0.3, 0.2]
    assert log["nc3_paper"].tolist() == [0.6, 0.1]
    assert (log["run_id"].iloc[0], log["model"].iloc[0], log["seed"].iloc[0]) == (
        "width128_s2", "mlp", 2)


def test_one_epoch_logged_in_both_phases_is_two_records(tmp_path):
    """The epoch at which the MSE phase starts may be logged once as the end of phase 1 and
    once as the start of phase 2 with other values: both records are kept (one record per
    epoch and phase), and the phase-2 onset rule finds the phase-2 record at that epoch
    (nc1 0.008 < 0.01, fn 2.0), not the phase-1 one (nc1 0.5)."""
    path = tmp_path / "depth4_s0.csv"
    pd.DataFrame({"epoch": [5, 10, 10, 15], "phase": [1, 1, 2, 2],
                  "nc1": [0.7, 0.5, 0.008, 0.002],
                  "feat_norm": [4.0, 3.0, 2.0, 1.5]}).to_csv(path, index=False)
    log = read_log(path)
    assert len(log) == 4
    assert log.loc[log["time"] == 10.0, "phase"].tolist() == [1, 2]
    out = run_onset(log, OnsetRule.preset("rupa2026"))
    assert (out["onset_epoch"], out["fn_star"]) == (10.0, 2.0)


# ----------------------------------------------------------------------------- phases
def test_the_phase_rule_searches_that_phase_only():
    """A log of three training phases whose metric falls below 0.01 only in phase 3: the
    rupa2026 rule searches phase 2 alone, so the run has not collapsed there (its smallest
    searched metric is 0.02), while the whole-log rule finds the phase-3 record at epoch 50
    (fn 1.5)."""
    log = one_run([0, 10, 20, 30, 40, 50], [1, 1, 2, 2, 3, 3],
                  [0.5, 0.3, 0.05, 0.02, 0.015, 0.004], [4.0, 3.5, 3.0, 2.5, 2.0, 1.5])
    out = run_onset(log, OnsetRule.preset("rupa2026"))
    assert out["status"] == "not_collapsed" and math.isnan(out["onset_epoch"])
    assert out["min_metric_searched"] == 0.02 and out["min_metric"] == 0.004
    out = run_onset(log, OnsetRule.preset("ncsim"))
    assert (out["onset_epoch"], out["fn_star"]) == (50.0, 1.5)


def test_training_summary_reads_the_first_phase_two_metric():
    """summarize: onset at the first phase-2 record below 0.01 (epoch 30, fn 2.0), and the
    metric at the start of phase 2 is that of its first record with a value (0.3 at epoch
    20; the phase-1 record at 0.005 is not it); the final accuracy is the last record's."""
    from ncsim.validate.train import summarize

    log = one_run([0, 10, 20, 25, 30, 40], [1, 1, 2, 2, 2, 2],
                  [np.nan, 0.005, 0.3, np.nan, 0.008, 0.004], [1.0, 3.0, 2.8, 2.5, 2.0, 1.8])
    log["accuracy"] = [0.1, 0.99, 0.995, 0.996, 0.998, 1.0]
    out = summarize(log)
    assert (out["onset_epoch"], out["fn_star"], out["status"]) == (30.0, 2.0, "collapsed")
    assert out["nc1_start_phase2"] == 0.3
    assert out["final_accuracy"] == 1.0


@pytest.mark.parametrize("accuracy, recorded", [(0.99, True), (0.995, True), (0.989, False)])
def test_nc_values_are_written_from_the_accuracy_limit_on(accuracy, recorded):
    """With nc_min_accuracy 0.99 (the paper's logs: NC columns empty until the training
    accuracy reaches 0.99) a record at accuracy 0.99 carries its NC values, one at 0.989 has
    them blank; loss and accuracy are written either way."""
    from ncsim.metrics import METRIC_NAMES
    from ncsim.validate.train import Phase, TrainConfig, log_row

    values = {name: 0.25 for name in METRIC_NAMES}
    values.update(loss=0.1, accuracy=accuracy, test_accuracy=0.9, weight_norm=3.0)
    config = TrainConfig(nc_min_accuracy=0.99)
    row = log_row(config, 7, 2, Phase(loss="mse"), 70, 0.7, 1e-3, values)
    assert (row["loss"], row["accuracy"], row["time"], row["phase"]) == (0.1, accuracy, 7.0, 2)
    assert (row["nc1_trace"] == 0.25) is recorded and (row["fn"] == 0.25) is recorded
    assert math.isnan(row["nc1_trace"]) is not recorded


# ----------------------------------------------------------------------------- time mapping
def training_log(fn2):
    """A training log: phase 1 at epochs 0-2 (flow_time lr x steps 0, 0.2, 0.4, fn up to 10),
    phase 2 at epochs 3-5 (flow_time 0.45, 0.5, 0.6; nc1 0.5, 0.008, 0.004; fn ``fn2``)."""
    return pd.DataFrame({"run_id": "r", "time": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
                         "phase": [1, 1, 1, 2, 2, 2],
                         "flow_time": [0.0, 0.2, 0.4, 0.45, 0.5, 0.6],
                         "nc1_trace": [0.9, 0.8, 0.7, 0.5, 0.008, 0.004],
                         "fn": [1.0, 10.0, 5.0, *fn2]})


def test_measured_onset_is_in_momentum_time_from_the_mse_start():
    """Network time over the MSE phase: t = (flow_time - 0.4) / (1 - m); at momentum 0.5
    (factor 2) the records are at t = 0.1, 0.2, 0.4 and the onset (nc1 0.008 < 0.01) at
    t = 0.2 with fn* 0.5 (tolerance: one subtraction of binary fractions)."""
    from ncsim.validate.compare import _measured
    from ncsim.validate.train import Phase, flow_time_factor

    factor = flow_time_factor(Phase(loss="mse", optimizer="sgd", momentum=0.5))
    assert factor == 2.0
    curve, onset, fn_star = _measured(training_log([0.8, 0.5, 0.4]), 0.01, factor)
    np.testing.assert_allclose(curve["t"], [0.1, 0.2, 0.4], rtol=1e-12)
    assert onset == pytest.approx(0.2, rel=1e-12) and fn_star == 0.5


def test_measured_vanishing_is_judged_against_the_whole_log():
    """fn peaks at 10 in phase 1 and is 0.005 throughout phase 2 (5e-4 x the peak, below the
    1e-3 tolerance): the run vanishes and has no measured onset, although within phase 2
    fn does not fall at all; with fn 0.02 in phase 2 (2e-3 x the peak) the onset stands."""
    from ncsim.validate.compare import _measured

    _, onset, fn_star = _measured(training_log([0.005, 0.005, 0.005]), 0.01, 1.0)
    assert math.isnan(onset) and math.isnan(fn_star)
    _, onset, fn_star = _measured(training_log([0.02, 0.02, 0.02]), 0.01, 1.0)
    assert onset == pytest.approx(0.1, rel=1e-12) and fn_star == 0.02


def test_paper_log_with_two_conditions_is_refused():
    """A paper log is one run: its condition and seed columns (intervention logs carry them)
    must hold one value each; a file that mixes runs is refused, not labelled by its first
    row."""
    from ncsim.validate.logs import from_paper

    frame = pd.DataFrame({"epoch": [1, 2, 3], "nc1": [1.0, 0.5, 0.1],
                          "feat_norm": [3.0, 2.0, 1.0], "seed": [0, 0, 0],
                          "condition": ["scale_up", "scale_up", "control"]})
    with pytest.raises(InputError, match="2 values in its condition column"):
        from_paper(frame, "mixed")
    frame["condition"] = "scale_up"
    one = from_paper(frame, "one")
    assert set(one["condition"]) == {"scale_up"} and set(one["seed"]) == {0}
