"""Extreme-input scan of ncsim.validate.compare, .surrogate and .stacked: findings and invariants.

The compare tests reuse the tiny two-phase run of :mod:`compare_helpers` (the ``tiny_net``
session fixture) with hand-built logs; the surrogate tests use small random states.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from compare_helpers import QUICK, K
from compare_helpers import copy_run as _run
from compare_helpers import tiny_log as _log

from ncsim.errors import InputError
from ncsim.validate import surrogate as sg
from ncsim.validate.compare import _measured, compare_run
from ncsim.validate.data import load_dataset
from ncsim.validate.stacked import check_seeds, train_stacked
from ncsim.validate.train import Phase, TrainConfig, train

# phase-2 fn falls to 1e-4 of the log's peak (5.0 at epoch 0): a vanishing run, no onset
VANISHING_FN = [3.0, 1.0, 1e-3, 1e-4]
SHUFFLE = [3, 2, 5, 1, 6, 0, 4]  # a phase-1 row (fn 3.5 .. 5.0) ends up last


# ----------------------------------------------------------------------------- measured curve
def test_measured_vanishing_log_has_no_onset_when_sorted():
    """A log whose fn vanishes (last 1e-4 < 1e-3 x peak 5) reports no measured onset."""
    _, onset, fn_star = _measured(_log(fn=VANISHING_FN), 0.01, 10.0)
    assert math.isnan(onset) and math.isnan(fn_star)


def test_measured_vanishing_does_not_depend_on_row_order():
    """Shuffled rows of a vanishing log still give no onset (sorted: NaN; shuffled: 1.875)."""
    log = _log(fn=VANISHING_FN).iloc[SHUFFLE].reset_index(drop=True)
    _, onset, fn_star = _measured(log, 0.01, 10.0)
    assert math.isnan(onset) and math.isnan(fn_star)


def test_measured_reversed_log_keeps_its_onset():
    """A log with a tiny fn at epoch 0 only (fn grows later) keeps its onset when reversed."""
    log = _log()
    log.loc[0, "fn"] = 1e-4
    ref = _measured(log, 0.01, 10.0)
    assert ref[1:] == (pytest.approx(1.875, rel=1e-12), 2.0)
    got = _measured(log.iloc[::-1].reset_index(drop=True), 0.01, 10.0)
    assert got[1:] == ref[1:]


def test_compare_vanishing_log_row_order(tiny_net, tmp_path):
    """compare_run of a shuffled vanishing log reports no measured onset, as the sorted log."""
    log = _log(fn=VANISHING_FN).iloc[SHUFFLE].reset_index(drop=True)
    row = compare_run(_run(tiny_net, tmp_path, log), **QUICK)["table"].iloc[0]
    assert math.isnan(row["onset_measured"]) and math.isnan(row["onset_ratio_sim_over_measured"])


def test_compare_table_is_invariant_under_row_order_of_a_collapsing_log(tiny_net, tmp_path):
    """Shuffling the rows of a non-vanishing log leaves the whole comparison row unchanged."""
    ref = compare_run(_run(tiny_net, tmp_path / "a"), **QUICK)["table"]
    perm = np.random.default_rng(0).permutation(7)
    got = compare_run(_run(tiny_net, tmp_path / "b", _log().iloc[perm].reset_index(drop=True)),
                      **QUICK)["table"]
    pd.testing.assert_frame_equal(got, ref)


# ----------------------------------------------------------------------------- compare options
@pytest.mark.parametrize("rule", ["response", "balance"])
def test_compare_step_budget_horizon_and_extrapolation_by_hand(tiny_net, tmp_path, rule):
    """With wd_horizon dominating and 50 steps: t_end = wd_horizon / (2 eta lambda), status
    max_steps, estimate = t_reached + (K/2) ln(nc1 / thr) / (2 eta lambda), t = (K/2) t_ncsim."""
    res = compare_run(_run(tiny_net, tmp_path), per_class=2, horizon=1e-3, wd_horizon=5.0,
                      threshold=1e-4, max_steps=50, lambda_h_rule=rule)
    row, sim = res["table"].iloc[0], res["simulated"]
    rate = row["eta_h"] * row["lambda_h"]
    assert row["surrogate_t_end"] == pytest.approx(5.0 / (2 * rate), rel=1e-12)
    assert row["status_simulated"] == "max_steps" and math.isnan(row["onset_simulated"])
    np.testing.assert_allclose(sim["t"], sim["time"] * K / 2, rtol=1e-14)
    t_reached = float(sim["t"].iloc[-1])
    assert t_reached < row["surrogate_t_end"] * K / 2
    expected = t_reached + (K / 2) * math.log(row["nc1_final_simulated"] / 1e-4) / (2 * rate)
    assert row["onset_simulated_lower_bound"] == t_reached
    assert row["onset_simulated_estimate"] == pytest.approx(expected, rel=1e-12)


def test_compare_text_per_class_is_an_input_error(tiny_net, tmp_path):
    """per_class='2' is refused with an InputError, not a TypeError."""
    with pytest.raises(InputError, match=r"--per-class must lie in .* and be an integer, "
                                         r"got '2'"):
        compare_run(_run(tiny_net, tmp_path), **{**QUICK, "per_class": "2"})


# ----------------------------------------------------------------------------- surrogate parts
def _state(seed: int, n: int = 3, d: int = 5) -> tuple[sg.SurrogateState, np.ndarray]:
    rng = np.random.default_rng(seed)
    state = sg.SurrogateState(rng.standard_normal((d, K * n)), rng.standard_normal((K, d)),
                              0.1 * rng.standard_normal(K), n)
    return state, rng.standard_normal((2, d, K * n))


def test_response_calibration_naive_loop_and_relabelling():
    """eta_H and lambda_H equal a per-sample loop of the documented least squares, and do not
    change under a class relabelling with a permutation of the samples within each class."""
    state, noise = _state(3)
    H, W, b, n = state.H, state.W, state.b, state.per_class
    grads = []
    for i in range(K * n):
        y = np.eye(K)[i // n]
        grads.append(W.T @ (W @ H[:, i] + b - y) / (K * n))
    G = np.stack(grads, axis=1)
    vd, vw = -0.7 * G + 0.05 * noise[0], -0.2 * H + 0.01 * noise[1]
    cal = sg.calibrate_response(state, vd, vw, 2 / K)
    eta = -(vd * G).sum() * (K / 2) / (G ** 2).sum()
    rate = -(vw * H).sum() * (K / 2) / (H ** 2).sum()
    assert cal.eta_h == pytest.approx(eta, rel=1e-12)
    assert cal.lambda_h == pytest.approx(rate / eta, rel=1e-12)
    rng = np.random.default_rng(1)
    classes = rng.permutation(K)
    cols = np.concatenate([c * n + rng.permutation(n) for c in classes])
    moved = sg.SurrogateState(H[:, cols], W[classes], b[classes], n)
    other = sg.calibrate_response(moved, vd[:, cols], vw[:, cols], 2 / K)
    for field in ("eta_h", "lambda_h", "r2_data", "r2_decay"):
        assert getattr(other, field) == pytest.approx(getattr(cal, field), rel=1e-12)
    assert sg.calibrate_lambda_h(moved, 0.3) == pytest.approx(sg.calibrate_lambda_h(state, 0.3),
                                                              rel=1e-12)


def test_response_calibration_scales_with_the_velocity():
    """Scaling both velocities by c scales eta_H by c and leaves lambda_H and r2 unchanged."""
    state, noise = _state(4)
    onehot = np.repeat(np.eye(K), state.per_class, axis=1)
    G = state.W.T @ (state.W @ state.H + state.b[:, None] - onehot) / state.H.shape[1]
    vd, vw = -2 * G + 0.1 * noise[0], -0.3 * state.H + 0.1 * noise[1]
    ref = sg.calibrate_response(state, vd, vw, 2 / K)
    for c in (1e-6, 1e6):
        got = sg.calibrate_response(state, c * vd, c * vw, 2 / K)
        assert got.eta_h == pytest.approx(c * ref.eta_h, rel=1e-12)
        assert got.lambda_h == pytest.approx(ref.lambda_h, rel=1e-12)
        assert got.r2_data == pytest.approx(ref.r2_data, rel=1e-9, abs=1e-12)


def test_response_calibration_refuses_a_state_of_the_wrong_per_class():
    """A state whose per_class x K differs from the columns of H is an InputError."""
    state, _ = _state(5)
    bad = sg.SurrogateState(state.H, state.W, state.b, per_class=state.per_class + 1)
    with pytest.raises(InputError, match="samples but per_class x K"):
        sg.calibrate_response(bad, -state.H, -state.H, 2 / K)
    with pytest.raises(InputError, match="velocities must have H's shape"):
        sg.calibrate_response(state, -state.H[:, :-1], -state.H, 2 / K)


# ----------------------------------------------------------------------------- stacked
def _config() -> TrainConfig:
    phases = (Phase("ce", 3, "sgd", 0.05, 1e-3, momentum=0.9, nesterov=True, batch_size=4,
                    schedule="cosine"),
              Phase("mse", 3, "sgd", 0.05, 1e-2, momentum=0.5, nesterov=False, batch_size=7,
                    decay_last=1, schedule="constant"))
    return TrainConfig(depth=2, width=6, nc_every=2, nc_dense=1, phases=phases)


def test_stacked_log_equals_separate_training_in_every_column():
    """Every log column (time, steps, flow_time, lr, ...) of the vectorised loop equals the
    separate training's, with momentum, Nesterov, cosine lr, partial decay and uneven batches;
    the order of the seeds does not matter."""
    data = load_dataset("gaussian", per_class=5, seed=0, classes=3, dim=4)
    config = _config()
    runs = train_stacked(config, data, [2, 0])
    for seed, run in zip((2, 0), runs, strict=True):
        alone = train(dataclasses.replace(config, seed=seed, run_id=f"run_s{seed}"), data).log
        assert list(run.log.columns) == list(alone.columns)
        pd.testing.assert_frame_equal(run.log, alone, rtol=1e-4, atol=1e-6)
    for a, b in zip(runs, train_stacked(config, data, [0, 2])[::-1], strict=True):
        pd.testing.assert_frame_equal(a.log, b.log, rtol=1e-5, atol=1e-7)


def test_a_single_int_seeds_argument_is_an_input_error():
    """train(..., seeds=5) (an int, not a list) is refused with an InputError."""
    for seeds in (5, None, "12"):
        with pytest.raises(InputError, match="seeds must be a list of integers"):
            check_seeds(_config(), seeds)


def test_compare_names_the_horizon_when_t_end_overflows(tiny_net, tmp_path):
    """horizon 1e308 x the MSE phase's duration overflows: the refusal names the horizon."""
    with pytest.raises(InputError, match=r"horizon 1e\+308 x the MSE phase's duration .* "
                                         r"overflows the surrogate's t_end"):
        compare_run(_run(tiny_net, tmp_path), **{**QUICK, "horizon": 1e308})


def test_compare_names_a_blank_flow_time_at_the_phase_change(tiny_net, tmp_path):
    """A blank flow_time on the last phase-1 record makes every measured time NaN: refused as
    such, not as a zero-duration phase."""
    log = _log()
    last_phase1 = log.index[log["phase"] == 1][-1]
    log.loc[last_phase1, "flow_time"] = float("nan")
    with pytest.raises(InputError, match="no finite flow_time"):
        compare_run(_run(tiny_net, tmp_path, log), **QUICK)


def test_compare_refuses_a_phase_two_flow_time_below_the_phase_one_end(tiny_net, tmp_path):
    """A flow_time that restarts at the MSE phase (below the cross-entropy phase's end) gives
    negative measured times: refused, naming the phase change."""
    log = _log()
    phase2 = log["phase"] == 2
    log.loc[phase2, "flow_time"] = log.loc[phase2, "flow_time"] - 1e3
    with pytest.raises(InputError, match="flow_time falls below the end of the cross-entropy "
                                         "phase"):
        compare_run(_run(tiny_net, tmp_path, log), **QUICK)
