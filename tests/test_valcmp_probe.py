"""Mutation probes of ncsim.validate.analysis, .compare and .surrogate: hand-computed onsets,
fn*, group statistics, lead times and surrogate parameters, and bad-input errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ncsim.errors import InputError
from ncsim.validate import surrogate as sg
from ncsim.validate.analysis import (
    OnsetRule,
    condition_number,
    crossing_epochs,
    fit_thresholds,
    group_table,
    lead_summary,
    lead_table,
    paper_threshold,
    run_onset,
    run_table,
)
from ncsim.validate.compare import _measured

T975_2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # Student t_{0.975}, 2 degrees of freedom


def _records(run_id, times, phases, nc1, fn, model="mlp", dataset="mnist",
             condition="width128", seed=0, unit="epoch"):
    """A trajectory table of one run (labels repeated on every record)."""
    return pd.DataFrame({"run_id": run_id, "time": [float(t) for t in times],
                         "phase": list(phases), "nc1_trace": [float(v) for v in nc1],
                         "fn": [float(v) for v in fn], "model": model, "dataset": dataset,
                         "condition": condition, "seed": seed, "time_unit": unit})


# ----------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("threshold", [0.0, -0.01, math.nan, math.inf])
def test_onset_rule_refuses_a_threshold_that_is_not_positive_and_finite(threshold):
    """OnsetRule(threshold <= 0, NaN or inf) is an InputError (no metric is below 0)."""
    with pytest.raises(InputError, match="onset threshold must be a finite number > 0"):
        OnsetRule(threshold=threshold)


@pytest.mark.parametrize("kwargs, message", [
    ({"stay": 0}, "stay must be an integer >= 1"),
    ({"stay": 1.5}, "stay must be an integer >= 1"),
    ({"interpolate": "yes"}, "interpolate must be True or False"),
    ({"vanish_tol": 1.0}, r"vanish_tol must be a number in \[0, 1\)"),
    ({"vanish_tol": -1e-3}, r"vanish_tol must be a number in \[0, 1\)"),
])
def test_onset_rule_refuses_bad_stay_interpolate_and_vanish_tol(kwargs, message):
    """stay < 1 or fractional, a non-bool interpolate and vanish_tol outside [0, 1) are errors."""
    with pytest.raises(InputError, match=message):
        OnsetRule(**kwargs)


def test_onset_rule_presets_and_their_errors():
    """rupa2026 searches phase 2, ncsim the whole log; unknown names and thresholds <= 0 fail."""
    assert OnsetRule.preset("rupa2026") == OnsetRule(threshold=0.01, phase=2)
    assert OnsetRule.preset("ncsim", 0.05) == OnsetRule(threshold=0.05, phase=None)
    with pytest.raises(InputError, match="unknown preset 'paper'; allowed: rupa2026, ncsim"):
        OnsetRule.preset("paper")
    with pytest.raises(InputError, match="onset threshold must be a finite number > 0"):
        OnsetRule.preset("rupa2026", 0.0)


def test_unknown_threshold_fit_is_an_input_error():
    """fit_thresholds(fit='linear') names the allowed fits."""
    runs = pd.DataFrame({"run": ["a"], "model": ["m"], "dataset": ["d"], "condition": ["c"],
                         "seed": [0], "fn_star": [1.0]})
    with pytest.raises(InputError, match="unknown threshold fit 'linear'; allowed: mean, power"):
        fit_thresholds(runs, "linear")


# ----------------------------------------------------------------------------- per-run values
@pytest.mark.parametrize("model, dataset, condition, expected", [
    ("mlp", "mnist", "depth2", 0.05),
    ("mlp", "mnist", "depth3_ext", 0.05),
    ("mlp", "mnist", "actGELU", 0.05),
    ("mlp", "mnist", "actTanh", 0.05),
    ("mlp5", "cifar10", "mlp5_cifar10", 0.05),
    ("mlp", "mnist", "depth4", 0.01),
    ("mlp", "mnist", "depth2x", 0.01),
    ("mlp", "mnist", "actReLU", 0.01),
    ("mlp", "cifar10", "depth2", 0.01),
    ("mlp", "mnist", "width128", 0.01),
])
def test_paper_threshold_per_condition(model, dataset, condition, expected):
    """0.05 exactly for the relaxed cells (whole condition name), 0.01 for every other run."""
    assert paper_threshold(model, dataset, condition) == expected


def test_run_onset_searches_phase_two_and_reports_summaries():
    """Onset = first phase-2 record below the threshold (phase 1 is lower earlier), fn* = its fn;
    min_metric over the whole log, min_metric_searched over phase 2, final values are the last
    finite ones, last_epoch the largest time."""
    nan = math.nan
    part = _records("r", [0, 1, 2, 3, 4, 5, 6], [1, 1, 2, 2, 2, 2, 2],
                    [0.5, 0.001, 0.3, 0.02, 0.008, 0.004, nan],
                    [4.0, 3.9, 3.5, 3.0, 2.5, 2.2, nan])
    out = run_onset(part, OnsetRule(threshold=0.01))
    assert out["onset_epoch"] == 4.0 and out["fn_star"] == 2.5
    assert out["min_metric"] == 0.001 and out["min_metric_searched"] == 0.004
    assert out["final_metric"] == 0.004 and out["final_fn"] == 2.2
    assert out["last_epoch"] == 6.0 and out["status"] == "collapsed"
    whole = run_onset(part, OnsetRule(threshold=0.01, phase=None))
    assert (whole["onset_epoch"], whole["fn_star"]) == (1.0, 3.9)
    assert whole["min_metric_searched"] == 0.001


def test_run_onset_fn_star_is_nan_when_the_onset_record_has_no_fn():
    """fn* is the onset record's own fn: NaN there gives NaN fn*, status still collapsed."""
    part = _records("r", [0, 1, 2, 3], [2, 2, 2, 2], [0.5, 0.2, 0.005, 0.001],
                    [3.0, 2.8, math.nan, 2.0])
    out = run_onset(part, OnsetRule(threshold=0.01))
    assert out["onset_epoch"] == 2.0 and math.isnan(out["fn_star"])
    assert out["status"] == "collapsed"


def test_run_onset_vanishing_is_judged_on_the_whole_log():
    """fn falling from 10 (phase 1) to 0.004 (4e-4 x its largest) makes the run vanishing
    although phase 2 alone shrinks fn by only 20%; vanish_tol = 0 keeps the onset."""
    part = _records("r", [0, 1, 2, 3, 4], [1, 1, 2, 2, 2], [0.9, 0.5, 0.2, 0.005, 0.001],
                    [10.0, 5.0, 0.005, 0.0045, 0.004])
    out = run_onset(part, OnsetRule(threshold=0.01))
    assert out["status"] == "vanishing"
    assert math.isnan(out["onset_epoch"]) and math.isnan(out["fn_star"])
    assert out["final_fn"] == 0.004
    kept = run_onset(part, OnsetRule(threshold=0.01, vanish_tol=0.0))
    assert (kept["status"], kept["onset_epoch"], kept["fn_star"]) == ("collapsed", 3.0, 0.0045)


def test_run_table_per_condition_thresholds_and_time_units():
    """per_condition scores depth2 at 0.05 and width128 at 0.01 (threshold column); a run whose
    records mix time units has time_unit <NA>."""
    depth = _records("d2", [0, 1, 2], [2, 2, 2], [0.5, 0.03, 0.001], [3.0, 2.0, 1.5],
                     condition="depth2")
    width = _records("w", [0, 1, 2], [2, 2, 2], [0.5, 0.03, 0.001], [3.0, 2.0, 1.5])
    width.loc[2, "time_unit"] = "t"
    table = run_table(pd.concat([depth, width], ignore_index=True),
                      OnsetRule(threshold=0.01), per_condition=True).set_index("run")
    assert table.loc["d2", "threshold"] == 0.05 and table.loc["d2", "onset_epoch"] == 1.0
    assert table.loc["w", "threshold"] == 0.01 and table.loc["w", "onset_epoch"] == 2.0
    assert table.loc["d2", "time_unit"] == "epoch" and pd.isna(table.loc["w", "time_unit"])
    plain = run_table(depth, OnsetRule(threshold=0.01)).iloc[0]
    assert plain["threshold"] == 0.01 and plain["onset_epoch"] == 2.0


# ----------------------------------------------------------------------------- group statistics
def test_group_table_hand_computed_interval():
    """fn* 1, 2, 4 and onsets 10, 20, 60 over three collapsed runs: mean, ddof-1 std, CV and the
    95% t interval with 2 degrees of freedom; vanishing and not-collapsed runs are counted but
    left out, and a collapsed run without fn* only leaves the fn* statistics."""
    runs = pd.DataFrame({
        "run": list("abcdef"), "model": "m", "dataset": "d", "condition": "c",
        "fn_star": [1.0, 2.0, 4.0, math.nan, math.nan, math.nan],
        "onset_epoch": [10.0, 20.0, 60.0, 30.0, math.nan, math.nan],
        "status": ["collapsed"] * 4 + ["vanishing", "not_collapsed"]})
    row = group_table(runs).iloc[0]
    assert (row["n_runs"], row["n_collapsed"], row["n_vanishing"]) == (6, 4, 1)
    std = math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    assert row["fn_star_mean"] == pytest.approx(7 / 3, rel=1e-12)
    assert row["fn_star_std"] == pytest.approx(std, rel=1e-12)
    assert row["fn_star_cv"] == pytest.approx(std / (7 / 3), rel=1e-12)
    half = T975_2 * std / math.sqrt(3)
    assert row["fn_star_ci_low"] == pytest.approx(7 / 3 - half, rel=1e-12)
    assert row["fn_star_ci_high"] == pytest.approx(7 / 3 + half, rel=1e-12)
    onsets = np.array([10.0, 20.0, 60.0, 30.0])
    assert row["onset_mean"] == 30.0
    assert row["onset_std"] == pytest.approx(onsets.std(ddof=1), rel=1e-12)
    one = group_table(runs.iloc[[0]]).iloc[0]
    assert one["fn_star_mean"] == 1.0 and math.isnan(one["fn_star_std"])
    assert math.isnan(one["fn_star_cv"]) and math.isnan(one["fn_star_ci_low"])


@pytest.mark.parametrize("name, value", [
    ("width128", 128.0), ("wd1e-05", 1e-5), ("wd0p0005", 5e-4), ("lr2.5", 2.5), ("wd5e3", 5e3),
])
def test_condition_number(name, value):
    """The number in a condition name, with exponents and 'p' as the decimal point."""
    assert condition_number(name) == pytest.approx(value, rel=1e-15)


def test_condition_number_without_digits_is_nan():
    """A condition name without a number gives NaN."""
    assert math.isnan(condition_number("baseline"))


def test_power_fit_reproduces_an_exact_power_law():
    """Group means fn* = 3 x^-0.5 at widths 64, 256, 1024 (two runs each, means exact): the
    log-log line returns 3 x^-0.5 for every run, also for a width with no fn* (16); a model with
    one width has no fit (NaN); the mean fit is the group mean over runs with an fn*."""
    rows = []
    for x in (64, 256, 1024):
        mean = 3.0 * x ** -0.5
        for seed, fn in ((0, 0.8 * mean), (1, 1.2 * mean)):
            rows.append({"run": f"w{x}_s{seed}", "model": "mlp", "dataset": "mnist",
                         "condition": f"width{x}", "seed": seed, "fn_star": fn})
    rows.append({"run": "w16_s0", "model": "mlp", "dataset": "mnist", "condition": "width16",
                 "seed": 0, "fn_star": math.nan})
    rows.append({"run": "other", "model": "cnn", "dataset": "mnist", "condition": "width64",
                 "seed": 0, "fn_star": 5.0})
    runs = pd.DataFrame(rows)
    power = fit_thresholds(runs, "power")
    for x in (16, 64, 256, 1024):
        for seed in (0, 1):
            if f"w{x}_s{seed}" in power:
                assert power[f"w{x}_s{seed}"] == pytest.approx(3.0 * x ** -0.5, rel=1e-10)
    assert math.isnan(power["other"])
    mean = fit_thresholds(runs, "mean")
    assert mean["w64_s1"] == pytest.approx(3.0 / 8, rel=1e-12)
    assert math.isnan(mean["w16_s0"]) and mean["other"] == 5.0


def test_crossing_epochs_first_logged_record_at_or_below_the_level():
    """The first logged time (rows in any order) with fn <= level, no interpolation; NaN for a
    NaN level, a missing level or a level never reached."""
    traj = pd.concat([
        _records("a", [3, 0, 2, 1], [2] * 4, [0.1] * 4, [1.0, 4.0, 2.0, 3.0]),
        _records("b", [0, 1], [2] * 2, [0.1] * 2, [4.0, 3.5]),
        _records("c", [0, 1], [2] * 2, [0.1] * 2, [4.0, 3.5]),
    ], ignore_index=True)
    out = crossing_epochs(traj, {"a": 2.5, "b": 3.0, "c": math.nan})
    assert out["a"] == 2.0
    assert math.isnan(out["b"]) and math.isnan(out["c"])
    assert crossing_epochs(traj, {"a": 2.0})["a"] == 2.0
    assert math.isnan(crossing_epochs(traj, {})["a"])


# ----------------------------------------------------------------------------- lead times
def _lead_logs():
    """Three seeds of one group: onsets 4, 3, 5 and fn* 3, 6, 6 (see the hand computation)."""
    times = [0, 1, 2, 3, 4, 5]
    return pd.concat([
        _records("s0", times, [2] * 6, [1, .5, .2, .05, .005, .001], [10, 8, 6, 4, 3, 2], seed=0),
        _records("s1", times, [2] * 6, [1, .5, .2, .008, .004, .001], [10, 9, 7, 6, 4, 3.5],
                 seed=1),
        _records("s2", times, [2] * 6, [1, 1, .5, .2, .1, .009], [10, 9, 8, 7, 5, 6], seed=2),
    ], ignore_index=True)


def test_lead_table_in_sample_and_held_out_by_hand():
    """In-sample fn_pred = mean fn* = 5: T_cross 3, 4, 4 and leads 1, -1, 1. Held out: s0 gets
    mean(6, 6) = 6 (T_cross 2, lead 2), s1 and s2 mean(3, 6) = 4.5 (T_cross 4 and never)."""
    traj = _lead_logs()
    runs = run_table(traj, OnsetRule(threshold=0.01))
    assert list(runs["onset_epoch"]) == [4.0, 3.0, 5.0] and list(runs["fn_star"]) == [3, 6, 6]
    leads = lead_table(traj, runs).set_index("run")
    assert list(leads["fn_pred_in_sample"]) == [5.0, 5.0, 5.0]
    assert list(leads["t_cross_in_sample"]) == [3.0, 4.0, 4.0]
    assert list(leads["lead_in_sample"]) == [1.0, -1.0, 1.0]
    assert list(leads["fn_pred_held_out"]) == [6.0, 4.5, 4.5]
    np.testing.assert_array_equal(leads["t_cross_held_out"], [2.0, 4.0, math.nan])
    np.testing.assert_array_equal(leads["lead_held_out"], [2.0, -1.0, math.nan])
    summary = lead_summary(leads.reset_index())
    ins, out = summary["in_sample"], summary["held_out"]
    assert (ins["n_crossed"], ins["n_runs"]) == (3, 3)
    assert ins["lead_mean"] == pytest.approx(1 / 3, rel=1e-12)
    assert ins["lead_std"] == pytest.approx(np.std([1, -1, 1], ddof=1), rel=1e-12)
    assert ins["ordering_accuracy"] == pytest.approx(2 / 3, rel=1e-12)
    assert ins["mae"] == pytest.approx((2 / 3 + 4 / 3 + 2 / 3) / 3, rel=1e-12)
    assert (out["n_crossed"], out["n_runs"]) == (2, 3)
    assert out["lead_mean"] == 0.5 and out["ordering_accuracy"] == 0.5
    assert out["mae"] == 3.0  # s0: |2 - (-1)|, s1: |-1 - 2|


def test_lead_summary_zero_lead_is_not_ordered_and_seedless_runs_are_no_other_seed():
    """A lead of 0 does not count as correctly ordered; held-out MAE compares a run with the
    runs of other seeds only, never with a run that has no seed."""
    leads = pd.DataFrame({
        "seed": pd.array([0, 1, 1, pd.NA], dtype="Int64"),
        "onset_epoch": [5.0, 5.0, 5.0, 5.0],
        "lead_in_sample": [0.0, 2.0, 4.0, 10.0],
        "lead_held_out": [0.0, 2.0, 4.0, 10.0]})
    summary = lead_summary(leads)
    assert summary["in_sample"]["ordering_accuracy"] == 0.75
    assert summary["in_sample"]["mae"] == pytest.approx((4 + 2 + 0 + 6) / 4, rel=1e-12)
    # seed 0 vs mean(2, 4) = 3; each seed-1 run vs 0 (not the seedless run); the seedless run
    # vs the mean of the seeded runs, (0 + 2 + 4) / 3 = 2
    assert summary["held_out"]["mae"] == pytest.approx((3 + 2 + 4 + 8) / 4, rel=1e-12)


# ----------------------------------------------------------------------------- compare, surrogate
def _training_log(p1_time, p1_flow, p2_time, p2_flow, nc1, fn):
    """A training log: phase-1 records (nc1 0.9, fn 1), then the given phase-2 records."""
    p1 = pd.DataFrame({"phase": 1, "time": p1_time, "flow_time": p1_flow, "nc1_trace": 0.9,
                       "fn": 1.0})
    p2 = pd.DataFrame({"phase": 2, "time": p2_time, "flow_time": p2_flow, "nc1_trace": nc1,
                       "fn": fn})
    return pd.concat([p1, p2], ignore_index=True)


def test_measured_time_origin_is_the_last_record_before_the_mse_phase():
    """t = (flow_time - flow_time of the last phase-1 record) x factor; without phase-1 records
    the origin is flow time 0 (t = flow_time x factor)."""
    log = _training_log([0.0, 1.0, 2.0], [0.0, 0.25, 0.5], [3.0, 4.0, 5.0], [0.75, 1.0, 1.5],
                        [0.5, 0.005, 0.001], [0.9, 0.8, 0.7])
    curve, onset, fn_star = _measured(log, 0.01, factor=2.0)
    np.testing.assert_allclose(curve["t"], [0.5, 1.0, 2.0], rtol=1e-12)
    assert onset == pytest.approx(1.0, rel=1e-12) and fn_star == 0.8
    curve, onset, _ = _measured(log[log["phase"] == 2], 0.01, factor=2.0)
    np.testing.assert_allclose(curve["t"], [1.5, 2.0, 3.0], rtol=1e-12)
    assert onset == pytest.approx(2.0, rel=1e-12)


@pytest.mark.parametrize("r2, noted", [(0.49, True), (0.5, False), (0.9, False),
                                       (math.nan, False), (-0.2, True)])
def test_weak_fit_note_threshold(r2, noted):
    """The note appears exactly when r2_data < 0.5 (NaN: no fit, no note)."""
    note = sg.weak_fit_note(r2)
    assert bool(note) is noted
    if noted:
        assert note.startswith(f"weak calibration: r2_data {r2:.3g} < 0.5")


def test_surrogate_state_fn_and_balance_lambda_h_by_hand():
    """fn = mean column norm of H (d x N, columns = samples); balance lambda_H =
    lambda_W |W|^2 / |H|^2."""
    H = np.array([[3.0, 0.0, 1.0], [4.0, 2.0, 0.0]])  # column norms 5, 2, 1
    W = np.array([[1.0, 2.0], [0.0, 1.0], [1.0, 1.0]])  # |W|^2 = 8
    state = sg.SurrogateState(H=H, W=W, b=np.zeros(3), per_class=1)
    assert state.fn == pytest.approx(8.0 / 3.0, rel=1e-15)
    assert sg.calibrate_lambda_h(state, 0.3) == pytest.approx(0.3 * 8.0 / 30.0, rel=1e-15)


def test_calibrate_response_uses_class_major_targets_and_the_bias():
    """With W = I (K = d = 2, n = 2), b = (0.5, 0) and H the class-major one-hot targets, the
    residual is b in every column, G_H = b / N: velocities -3 G_H and -0.2 H give eta_H = 3,
    lambda_H = 0.2 / 3 (time factor 1), both fits exact."""
    H = np.repeat(np.eye(2), 2, axis=1)
    state = sg.SurrogateState(H=H, W=np.eye(2), b=np.array([0.5, 0.0]), per_class=2)
    grad = np.repeat(np.array([[0.5], [0.0]]), 4, axis=1) / 4
    cal = sg.calibrate_response(state, -3.0 * grad, -0.2 * H, 1.0)
    assert cal.eta_h == pytest.approx(3.0, rel=1e-12)
    assert cal.lambda_h == pytest.approx(0.2 / 3.0, rel=1e-12)
    assert cal.r2_data == pytest.approx(1.0, abs=1e-12) and cal.note == ""
    assert cal.r2_decay == pytest.approx(1.0, abs=1e-12)
    half = sg.calibrate_response(state, -3.0 * grad, -0.2 * H, 0.5)  # v / factor: 2x the rates
    assert half.eta_h == pytest.approx(6.0, rel=1e-12)
    assert half.lambda_h == pytest.approx(0.4 / 6.0, rel=1e-12)


def test_calibrate_response_zero_data_rate_is_refused_and_zero_decay_allowed():
    """Features that do not move along the loss gradient (eta_H = 0) are an InputError; features
    the decay does not shrink give lambda_H = 0 (no decay fit: r2_decay NaN)."""
    H = np.repeat(np.eye(2), 2, axis=1)
    state = sg.SurrogateState(H=H, W=np.eye(2), b=np.array([0.5, 0.0]), per_class=2)
    grad = np.repeat(np.array([[0.5], [0.0]]), 4, axis=1) / 4
    ortho = np.repeat(np.array([[0.0], [1.0]]), 4, axis=1)  # orthogonal to G_H
    with pytest.raises(InputError, match=r"against the loss gradient \(eta_H = -?0\)"):
        sg.calibrate_response(state, ortho, -0.2 * H, 1.0)
    cal = sg.calibrate_response(state, -3.0 * grad, np.zeros_like(H), 1.0)
    assert cal.eta_h == pytest.approx(3.0, rel=1e-12) and cal.lambda_h == 0.0
    assert math.isnan(cal.r2_decay)


def test_last_epoch_and_lead_run_count_cover_records_and_runs_outside_the_search():
    """last_epoch is the last record of the whole log (a phase-3 record after phase 2 counts);
    lead_summary's n_runs counts the runs with an onset only."""
    part = _records("r", [0, 1, 2, 3], [1, 2, 2, 3], [0.5, 0.2, 0.005, 0.004],
                    [3.0, 2.8, 2.5, 2.4])
    assert run_onset(part, OnsetRule(threshold=0.01))["last_epoch"] == 3.0
    leads = pd.DataFrame({"seed": [0, 1, 2], "onset_epoch": [5.0, math.nan, 4.0],
                          "lead_in_sample": [1.0, math.nan, 2.0],
                          "lead_held_out": [1.0, math.nan, math.nan]})
    summary = lead_summary(leads)
    assert (summary["in_sample"]["n_runs"], summary["in_sample"]["n_crossed"]) == (2, 2)
    assert (summary["held_out"]["n_runs"], summary["held_out"]["n_crossed"]) == (2, 1)


def _unlabelled_runs():
    """run_table of two seeds of a table without model, dataset and condition columns
    (run_table gives them <NA> labels): fn* 3 and 6."""
    traj = pd.concat([
        _records("a", range(6), [2] * 6, [1, .5, .2, .05, .005, .001], [10, 8, 6, 4, 3, 2]),
        _records("b", range(6), [2] * 6, [1, .5, .2, .008, .004, .001], [10, 9, 7, 6, 4, 3.5],
                 seed=1),
    ], ignore_index=True).drop(columns=["model", "dataset", "condition"])
    return traj, run_table(traj, OnsetRule(threshold=0.01))


def test_unlabelled_runs_form_one_group():
    """Runs without label columns are one group in group_table (fn* mean 4.5)."""
    _, runs = _unlabelled_runs()
    assert list(runs["fn_star"]) == [3.0, 6.0] and runs["model"].isna().all()
    assert group_table(runs).iloc[0]["fn_star_mean"] == 4.5


def test_mean_fit_of_unlabelled_runs_is_their_group_mean():
    """The mean fit of runs without labels is their group's mean fn*, as in group_table."""
    _, runs = _unlabelled_runs()
    assert fit_thresholds(runs, "mean") == {"a": 4.5, "b": 4.5}


def test_power_fit_of_unlabelled_runs_is_nan_not_a_crash():
    """Without a condition number there is no power fit: NaN fn_pred, no exception."""
    _, runs = _unlabelled_runs()
    out = fit_thresholds(runs, "power")
    assert math.isnan(out["a"]) and math.isnan(out["b"])


def test_lead_table_of_unlabelled_runs():
    """Unlabelled runs get leads: in sample both predict the group mean 4.5 (a crosses it at
    epoch 3, onset 4: lead 1; b at 4, onset 3: lead -1); held out, each run the other seed's
    fn* (a: 6, crossed at 2, lead 2; b: 3, never reached: NaN)."""
    traj, runs = _unlabelled_runs()
    leads = lead_table(traj, runs).set_index("run")
    assert list(leads["fn_pred_in_sample"]) == [4.5, 4.5]
    assert list(leads["lead_in_sample"]) == [1.0, -1.0]
    assert leads.loc["a", "fn_pred_held_out"] == 6.0 and leads.loc["a", "lead_held_out"] == 2.0
    assert leads.loc["b", "fn_pred_held_out"] == 3.0
    assert math.isnan(leads.loc["b", "lead_held_out"])
