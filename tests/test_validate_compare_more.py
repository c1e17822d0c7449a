"""Network vs UFM surrogate comparison: hand-built logs and states with known answers.

A tiny two-phase run (Gaussian mixture, K = 3, input dimension 4, 4 samples per class; MLP with
one hidden layer of width 5; CE with Adam, then MSE with heavy-ball SGD, momentum 0.9) gives the
checkpoints; its log is replaced by hand-built logs whose onset, fn* and times are known, so that
every number of the comparison row can be computed by hand. The surrogates use n = 2 per class.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from compare_helpers import (
    DATA_ARGS,
    N_PER,
    QUICK,
    WD,
    WIDTH,
    K,
)
from compare_helpers import copy_run as _run
from compare_helpers import tiny_log as _log

from ncsim.errors import InputError
from ncsim.io import to_jsonable
from ncsim.validate import surrogate as sg
from ncsim.validate.cli import validate
from ncsim.validate.compare import _measured, compare_run
from ncsim.validate.data import load_dataset
from ncsim.validate.train import Phase, load_checkpoint


# ----------------------------------------------------------------------------- measured curve
def test_measured_time_origin_factor_onset_and_fn_star():
    """t = (flow_time - flow_time at the phase-1 end) x factor over the phase-2 records only;
    the onset is the first record below the threshold and fn* is fn at that record."""
    curve, onset, fn_star = _measured(_log(), 0.01, factor=10.0)
    assert list(curve["phase"]) == [2, 2, 2, 2]
    np.testing.assert_allclose(curve["t"], [0.625, 1.25, 1.875, 2.5], rtol=1e-12)
    assert onset == pytest.approx(1.875, rel=1e-12)
    assert fn_star == 2.0
    _, onset1, _ = _measured(_log(), 0.01, factor=1.0)
    assert onset1 == pytest.approx(0.1875, rel=1e-12)
    _, onset_loose, fn_loose = _measured(_log(), 0.05, factor=1.0)  # second record: 0.02 < 0.05
    assert (onset_loose, fn_loose) == (pytest.approx(0.125, rel=1e-12), 2.5)


def test_measured_skips_nan_records_and_reports_nan_without_onset():
    """Records without nc1_trace are skipped (onset at the next finite record below); fn* then
    comes from the first record with fn at or after the onset; a log that never falls below
    the threshold gives NaN onset and NaN fn*."""
    nan = math.nan
    _, onset, fn_star = _measured(_log(nc1=[0.5, nan, 0.008, 0.004], fn=[3.0, nan, nan, 1.8]),
                                  0.01, factor=10.0)
    assert onset == pytest.approx(1.875, rel=1e-12)
    assert fn_star == 1.8
    _, onset, fn_star = _measured(_log(nc1=[0.5, 0.3, 0.2, 0.1]), 0.01)
    assert math.isnan(onset) and math.isnan(fn_star)


def test_measured_does_not_depend_on_row_order():
    """Shuffled log rows give the same time origin, curve and onset as the sorted log (the
    origin is the last record before the MSE phase in time, not in file order)."""
    log = _log()
    shuffled = log.iloc[[3, 2, 5, 1, 6, 0, 4]].reset_index(drop=True)  # epoch 0 is the last p1 row
    ref = _measured(log, 0.01, 10.0)
    got = _measured(shuffled, 0.01, 10.0)
    np.testing.assert_allclose(got[0]["t"], ref[0]["t"], rtol=1e-12)
    assert got[1:] == ref[1:]


@pytest.mark.parametrize("column", ["time", "phase", "flow_time", "nc1_trace", "fn"])
def test_measured_names_a_missing_column(column):
    """A log without one of the columns the comparison reads is an InputError naming it."""
    with pytest.raises(InputError, match=f"lacks column\\(s\\) {column}; give the log.parquet"):
        _measured(_log().drop(columns=column), 0.01)


def test_measured_needs_a_phase_two():
    """A log without MSE-phase records is an InputError."""
    with pytest.raises(InputError, match="no MSE phase"):
        _measured(_log().query("phase == 1"), 0.01)


# ----------------------------------------------------------------------------- surrogate parts
def _state(seed: int = 0) -> sg.SurrogateState:
    rng = np.random.default_rng(seed)
    return sg.SurrogateState(H=rng.standard_normal((4, K * N_PER)), W=rng.standard_normal((K, 4)),
                             b=0.1 * rng.standard_normal(K), per_class=N_PER)


def _grad_h(state: sg.SurrogateState) -> np.ndarray:
    """grad_H of (1/N) sum 1/2 |W h_i + b - y_i|^2, written out column by column."""
    N = state.H.shape[1]
    out = np.empty_like(state.H)
    for i in range(N):
        y = np.eye(K)[i // state.per_class]
        out[:, i] = state.W.T @ (state.W @ state.H[:, i] + state.b - y) / N
    return out


def test_calibrate_response_recovers_known_rates_and_explained_fractions():
    """Velocities built as factor x (-c G_H + P) with P orthogonal to G_H, and factor x (-r H):
    eta_H = c, eta_H lambda_H = r, r2_data = c^2 |G|^2 / (c^2 |G|^2 + |P|^2), r2_decay = 1."""
    state = _state()
    g = _grad_h(state)
    rng = np.random.default_rng(1)
    p = rng.standard_normal(g.shape)
    p -= (p * g).sum() / (g * g).sum() * g
    c, r, factor = 2.5, 0.3, sg.time_factor(K)
    cal = sg.calibrate_response(state, factor * (-c * g + p), factor * (-r * state.H), factor)
    assert cal.rule == "response"
    assert cal.eta_h == pytest.approx(c, rel=1e-12)
    assert cal.lambda_h == pytest.approx(r / c, rel=1e-12)
    g2, p2 = (g * g).sum(), (p * p).sum()
    assert cal.r2_data == pytest.approx(c * c * g2 / (c * c * g2 + p2), rel=1e-10)
    assert cal.r2_decay == pytest.approx(1.0, abs=1e-12)


def test_calibrate_response_refuses_undefined_fits():
    """Features moving up the loss gradient, growing under the decay, or a surrogate that fits
    its targets exactly are InputErrors that point to the balance rule."""
    state = _state()
    g = _grad_h(state)
    with pytest.raises(InputError, match="against the loss gradient.*lambda-h-rule balance"):
        sg.calibrate_response(state, g, -state.H, 1.0)
    with pytest.raises(InputError, match="grows its features.*lambda-h-rule balance"):
        sg.calibrate_response(state, -g, state.H, 1.0)
    exact = sg.SurrogateState(H=np.repeat(np.eye(K), N_PER, axis=1), W=np.eye(K), b=np.zeros(K),
                              per_class=N_PER)
    with pytest.raises(InputError, match="fit the targets exactly.*lambda-h-rule balance"):
        sg.calibrate_response(exact, exact.H, -exact.H, 1.0)


def test_balance_calibration_of_zero_features_is_an_input_error():
    """lambda_H = lambda_W |W|^2 / |H|^2 is undefined for zero features."""
    state = _state()
    state.H[:] = 0.0
    with pytest.raises(InputError, match="features are all zero"):
        sg.calibrate_lambda_h(state, 0.1)


def test_surrogate_spec_conversions():
    """The spec carries the state's shapes, lambda_b = lambda_W with a regularised bias (free
    without decay), eta_H as the feature time scale, the onset rule; N != K n is refused."""
    state = _state()
    spec = sg.surrogate_spec(state, 0.015, 0.002, 7.0, threshold=0.05, max_steps=123, eta_h=6.0)
    assert (spec.model.loss, spec.model.bias) == ("mse", "reg")
    assert (spec.model.classes, spec.model.per_class, spec.model.dim) == (K, N_PER, 4)
    assert (spec.reg.lambda_w, spec.reg.lambda_h, spec.reg.lambda_b) == (0.015, 0.002, 0.015)
    assert spec.time_scale.eta_h == 6.0
    assert (spec.solver.t_end, spec.solver.max_steps) == (7.0, 123)
    assert (spec.onset.metric, spec.onset.threshold, spec.onset.interpolate) == (
        "nc1_trace", 0.05, False)
    free = sg.surrogate_spec(state, 0.0, 0.002, 7.0)
    assert free.model.bias == "free" and free.reg.lambda_b == 0.0
    bad = sg.SurrogateState(H=state.H[:, :5], W=state.W, b=state.b, per_class=N_PER)
    with pytest.raises(InputError, match="n samples of every class"):
        sg.surrogate_spec(bad, 0.015, 0.002, 7.0)


def test_unit_conversions_and_simulated_curve():
    """lambda_W = K wd / 2, t_ncsim / t = 2 / K, and the simulated curve's t = time / (2 / K)
    (its input left unchanged)."""
    assert sg.lambda_w_ncsim(0.02, 5) == pytest.approx(0.05, rel=1e-15)
    assert sg.time_factor(4) == 0.5
    traj = pd.DataFrame({"time": [0.0, 1.0, 3.0], "fn": [1.0, 2.0, 3.0]})
    out = sg.simulated_curve(traj, sg.time_factor(4))
    np.testing.assert_allclose(out["t"], [0.0, 2.0, 6.0], rtol=1e-15)
    assert "t" not in traj


def test_network_state_is_the_seeded_class_sorted_subsample(tiny_net):
    """H holds the network's features of n samples per class, class-major; W and b are the
    classifier's; another seed picks other samples."""
    model, _ = load_checkpoint(tiny_net / "checkpoints" / "phase1_end.pt")
    data = load_dataset(**DATA_ARGS)
    state = sg.network_state(model, data, N_PER, seed=0)
    y = data.y_train.numpy()
    assert list(y[state.index]) == [0, 0, 1, 1, 2, 2]
    with torch.no_grad():
        feats = model.features(data.x_train[torch.as_tensor(state.index)]).double().numpy()
    np.testing.assert_allclose(state.H, feats.T, rtol=1e-6)
    np.testing.assert_array_equal(state.W, model.classifier.weight.detach().double().numpy())
    assert state.fn == pytest.approx(np.linalg.norm(feats, axis=1).mean(), rel=1e-6)
    other = sg.network_state(model, data, N_PER, seed=1)
    assert not np.array_equal(other.index, state.index)


# ----------------------------------------------------------------------------- compare_run
def test_compare_row_against_hand_computed_numbers(tiny_net, tmp_path):
    """Every measured, unit-conversion and ratio column of the row, computed by hand from the
    hand-built log (momentum 0.9: t = 10 lr x steps) and from the returned surrogate curve; the
    surrogate does not reach the threshold, so its onset is the extrapolation from its last
    record at the calibrated rate."""
    res = compare_run(_run(tiny_net, tmp_path), **QUICK)
    row = res["table"].iloc[0]
    factor, lam_w = 2.0 / K, K * WD / 2.0
    assert len(res["table"]) == 1
    assert (row["run"], row["K"], row["d"], row["n_per_class"]) == ("tiny", K, WIDTH, N_PER)
    assert row["weight_decay"] == WD and row["lambda_w"] == pytest.approx(lam_w, rel=1e-15)
    assert row["optimizer"] == "sgd" and "time_mapping_valid" not in row.index
    assert row["time_mapping"] == "t = lr x steps / (1 - momentum) = 10 lr x steps"
    assert row["t_ncsim_per_t"] == pytest.approx(factor, rel=1e-15)
    assert row["lambda_w_x_mse_duration"] == pytest.approx(lam_w * factor * 2.5, rel=1e-12)
    rate = row["eta_h"] * row["lambda_h"]  # horizon 2 x the MSE phase, or wd_horizon / (2 rate)
    assert row["surrogate_t_end"] == pytest.approx(max(2.0 * 2.5 * factor, 1e-3 / (2 * rate)),
                                                   rel=1e-12)
    assert row["onset_measured"] == pytest.approx(1.875, rel=1e-12)
    assert row["fn_star_measured"] == 2.0
    assert (row["fn_final_measured"], row["nc1_final_measured"]) == (1.8, 0.004)
    np.testing.assert_allclose(res["measured"]["t"], [0.625, 1.25, 1.875, 2.5], rtol=1e-12)
    # the surrogate curve: network time, same rows as the table's final values
    sim = res["simulated"]
    np.testing.assert_allclose(sim["t"], sim["time"] / factor, rtol=1e-15)
    assert sim["time"].iloc[-1] == pytest.approx(2.0 * 2.5 * factor, rel=1e-9)  # horizon x 2.5
    assert row["fn_final_simulated"] == sim["fn"].iloc[-1]
    assert row["nc1_final_simulated"] == sim["nc1_trace"].iloc[-1]
    assert (sim["nc1_trace"] >= 0.01).all() and math.isnan(row["onset_simulated"])
    assert math.isnan(row["fn_star_simulated"])
    rate = row["eta_h"] * row["lambda_h"]
    t_reached = sim["t"].iloc[-1]
    expected = t_reached + math.log(sim["nc1_trace"].iloc[-1] / 0.01) / (2 * rate) / factor
    assert row["onset_simulated_source"] == "extrapolated"
    assert row["onset_simulated_lower_bound"] == pytest.approx(t_reached, rel=1e-12)
    assert row["onset_simulated_estimate"] == pytest.approx(expected, rel=1e-12)
    assert row["onset_ratio_sim_over_measured"] == pytest.approx(expected / 1.875, rel=1e-12)
    assert row["collapse_time_scale"] == pytest.approx(1 / (2 * rate) / factor, rel=1e-12)
    assert row["fn_star_ratio_closed_form_over_measured"] == pytest.approx(
        row["fn_star_closed_form"] / 2.0, rel=1e-12)
    assert math.isnan(row["fn_star_ratio_sim_over_measured"])
    assert row["status_simulated"] == "not_collapsed"


def test_compare_response_calibration_is_that_of_the_start_checkpoint(tiny_net, tmp_path):
    """eta_H and lambda_H are the response fit of the start checkpoint's features on the seeded
    subsample (all parameters decayed: one ReLU layer, so eta_H lambda_H = K wd / 2); fn_start
    and the surrogate's first record are that subsample's fn; another seed, another subsample."""
    run = _run(tiny_net, tmp_path)
    row = compare_run(run, seed=1, **QUICK)["table"].iloc[0]
    model, _ = load_checkpoint(run / "checkpoints" / "phase1_end.pt")
    data = load_dataset(**DATA_ARGS)
    state = sg.network_state(model, data, N_PER, seed=1)
    _, v_data, v_decay = sg.feature_velocities(model, data, state.index, WD, decayed=None)
    cal = sg.calibrate_response(state, v_data, v_decay, sg.time_factor(K))
    assert row["eta_h"] == pytest.approx(cal.eta_h, rel=1e-9)
    assert row["lambda_h"] == pytest.approx(cal.lambda_h, rel=1e-9)
    assert row["eta_h"] * row["lambda_h"] == pytest.approx(K * WD / 2, rel=1e-6)
    assert row["calibration_r2_data"] == pytest.approx(cal.r2_data, rel=1e-9)
    assert row["lambda_h_rule"].startswith("response")
    assert row["calibration_note"] == sg.weak_fit_note(cal.r2_data)
    assert row["fn_start"] == pytest.approx(state.fn, rel=1e-12)
    other = compare_run(run, seed=0, **QUICK)["table"].iloc[0]
    assert other["fn_start"] != pytest.approx(row["fn_start"], rel=1e-6)


def test_compare_balance_rule_uses_the_final_checkpoint(tiny_net, tmp_path):
    """The balance rule: lambda_H = lambda_W |W|^2 / |H|^2 of the final checkpoint's classifier
    and features on the same subsample, eta_H = 1, no explained fractions."""
    run = _run(tiny_net, tmp_path)
    row = compare_run(run, lambda_h_rule="balance", **QUICK)["table"].iloc[0]
    final, _ = load_checkpoint(run / "checkpoints" / "phase2_end.pt")
    state = sg.network_state(final, load_dataset(**DATA_ARGS), N_PER, seed=0)
    expected = K * WD / 2 * (state.W ** 2).sum() / (state.H ** 2).sum()
    assert row["lambda_h"] == pytest.approx(expected, rel=1e-9)
    assert row["eta_h"] == 1.0
    assert row["lambda_h_rule"].startswith("balance")
    assert math.isnan(row["calibration_r2_data"]) and math.isnan(row["calibration_r2_decay"])


def test_compare_collapsed_surrogate_onset_fn_star_and_lower_bound(tiny_net, tmp_path):
    """A surrogate integrated past its onset: onset and fn* are its first record below the
    threshold, the estimate is that onset, the ratio is onset / 1.875, and the lower bound of
    the onset is the onset itself (not the later time the integration reached)."""
    res = compare_run(_run(tiny_net, tmp_path), per_class=N_PER, horizon=2.0, wd_horizon=5.0,
                      max_steps=5000)
    row, sim = res["table"].iloc[0], res["simulated"]
    first = sim[sim["nc1_trace"] < 0.01].iloc[0]
    assert row["status_simulated"] == "ok" and row["onset_simulated_source"] == "simulated"
    assert row["onset_simulated"] == first["t"]
    assert row["fn_star_simulated"] == first["fn"]
    assert row["onset_simulated_estimate"] == row["onset_simulated"]
    assert row["onset_ratio_sim_over_measured"] == pytest.approx(first["t"] / 1.875, rel=1e-12)
    assert row["fn_star_ratio_sim_over_measured"] == pytest.approx(first["fn"] / 2.0, rel=1e-12)
    assert sim["t"].iloc[-1] > first["t"]
    assert row["onset_simulated_lower_bound"] == row["onset_simulated"]


def test_compare_plain_sgd_counts_lr_times_steps(tiny_net, tmp_path):
    """Without momentum the network's time is lr x steps: onset 0.1875 and the plain label."""

    def no_momentum(config):
        config["phases"][1]["momentum"] = 0.0

    row = compare_run(_run(tiny_net, tmp_path, edit=no_momentum), **QUICK)["table"].iloc[0]
    assert row["time_mapping"] == "t = lr x steps"
    assert row["onset_measured"] == pytest.approx(0.1875, rel=1e-12)
    assert row["lambda_w_x_mse_duration"] == pytest.approx(K * WD / 2 * (2 / K) * 0.25,
                                                           rel=1e-12)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_compare_refuses_an_adam_phase_before_simulating(tiny_net, tmp_path, monkeypatch,
                                                         optimizer):
    """An Adam (or AdamW) MSE phase has no gradient-flow time: an InputError that names the
    optimizer and says to train with SGD, raised before the dataset, the calibration or the
    surrogate is touched (once, every onset column came back NaN after the full simulation)."""

    def adam(config):
        config["phases"][1]["optimizer"] = optimizer

    run = _run(tiny_net, tmp_path, edit=adam)

    def forbidden(*args, **kwargs):
        raise AssertionError("compare went on past the optimizer check")

    monkeypatch.setattr("ncsim.validate.compare.load_dataset", forbidden)
    monkeypatch.setattr(sg, "network_state", forbidden)
    with pytest.raises(InputError) as err:
        compare_run(run, **QUICK)
    assert str(err.value) == (
        f"the MSE phase of {run} uses {optimizer}: its steps have no gradient-flow time, so its "
        "onset cannot be set against the surrogate's; train the run with --optimizer sgd (e.g. "
        "'ncsim validate train --preset cpu-small')")


def test_compare_cli_adam_run_is_one_line_exit_2(tiny_net, tmp_path):
    """The command: exit status 2, one line on stderr, nothing on stdout, no files written."""
    from click.testing import CliRunner

    from ncsim.validate.cli import validate

    def adam(config):
        config["phases"][1]["optimizer"] = "adam"

    run = _run(tiny_net, tmp_path, edit=adam)
    res = CliRunner().invoke(validate, ["compare", "--run", str(run), "--format", "json"])
    assert res.exit_code == 2 and res.stdout == "" and "Traceback" not in res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and "uses adam" in lines[0] and "--optimizer sgd" in lines[0]
    assert not (run / "compare.csv").exists()


def test_compare_cli_table_notes_below_and_progress_on_stderr(tiny_net, tmp_path):
    """Table output: no line wider than 100 characters (the text columns, once padded into
    every row, made each ~250 wide), the text columns below the table as 'name: text' lines,
    progress on stderr; json output: stdout is the json alone."""
    import json

    from click.testing import CliRunner

    from ncsim.validate.cli import COMPARE_NOTES, validate

    run = _run(tiny_net, tmp_path)
    args = ["compare", "--run", str(run), "--per-class", str(N_PER), "--horizon", "2",
            "--wd-horizon", "1e-3", "--max-steps", "500"]
    res = CliRunner().invoke(validate, args)
    assert res.exit_code == 0, res.output
    table, notes = res.stdout.split("# notes\n")
    assert max(len(line) for line in table.splitlines()) <= 100
    row = pd.read_csv(run / "compare.csv").iloc[0]
    quantities = {line.split()[0] for line in table.splitlines()[2:] if line.strip()}
    for column in COMPARE_NOTES:
        assert column not in quantities
        if isinstance(row[column], str):
            assert f"{column}: {row[column]}\n" in notes
    assert "onset_measured" in table and "fn_star_measured" in table
    progress = res.stderr.splitlines()
    assert progress and all(line.startswith("compare: ") for line in progress)
    assert any("simulating the surrogate" in line for line in progress)
    res = CliRunner().invoke(validate, [*args, "--format", "json", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["runs"][0]["run"] == "tiny"


def test_weak_response_calibration_is_noted():
    """r2_data below 0.5 (velocity mostly orthogonal to G_H) gives a calibration note naming
    the value; a fit that explains all of it gives none; the balance rule (NaN) gives none."""
    state = _state()
    g = _grad_h(state)
    rng = np.random.default_rng(1)
    p = rng.standard_normal(g.shape)
    p -= (p * g).sum() / (g * g).sum() * g
    p *= 3.0 * np.sqrt((g * g).sum() / (p * p).sum())  # |P| = 3 |G|: r2 = 1 / (1 + 9) = 0.1
    weak = sg.calibrate_response(state, -g + p, -0.3 * state.H, 1.0)
    assert weak.r2_data == pytest.approx(0.1, rel=1e-12)
    assert weak.note.startswith("weak calibration: r2_data 0.1 < 0.5")
    good = sg.calibrate_response(state, -g, -0.3 * state.H, 1.0)
    assert good.r2_data == pytest.approx(1.0, abs=1e-12) and good.note == ""
    assert sg.weak_fit_note(0.5) == "" and sg.weak_fit_note(math.nan) == ""
    assert sg.weak_fit_note(0.4999).startswith("weak calibration")


def test_compare_network_without_onset_gives_nan_ratios(tiny_net, tmp_path):
    """A network that never falls below the threshold: NaN measured onset and fn*, NaN ratios,
    the rest of the row filled."""
    log = _log(nc1=[0.5, 0.3, 0.2, 0.1])
    row = compare_run(_run(tiny_net, tmp_path, log=log), **QUICK)["table"].iloc[0]
    for col in ("onset_measured", "fn_star_measured", "onset_ratio_sim_over_measured",
                "fn_star_ratio_sim_over_measured", "fn_star_ratio_closed_form_over_measured"):
        assert math.isnan(row[col]), col
    assert math.isfinite(row["onset_simulated_estimate"])
    assert row["nc1_final_measured"] == 0.1


def test_compare_keeps_the_checkpoint_run_of_a_multi_run_log(tiny_net, tmp_path):
    """A log holding another run besides the checkpoint's ('tiny') is cut to the checkpoint's
    run: the same row as with its own log; a log of other runs only is an InputError."""
    other = _log("other", nc1=[0.001] * 4, fn=[9.0] * 4, flow=[0.51, 0.52, 0.53, 0.54])
    mixed = pd.concat([other, _log()], ignore_index=True)
    row = compare_run(_run(tiny_net, tmp_path / "a", log=mixed), **QUICK)["table"].iloc[0]
    assert row["run"] == "tiny"
    assert row["onset_measured"] == pytest.approx(1.875, rel=1e-12)
    assert row["fn_star_measured"] == 2.0
    assert row["lambda_w_x_mse_duration"] == pytest.approx(K * WD / 2 * (2 / K) * 2.5,
                                                           rel=1e-12)
    strangers = pd.concat([other, _log("third")], ignore_index=True)
    run = _run(tiny_net, tmp_path / "b", log=strangers)
    with pytest.raises(InputError, match="holds runs other, third, none of them the "
                                         "checkpoint's run 'tiny'"):
        compare_run(run, **QUICK)


def test_compare_rebuilds_the_recorded_dataset(tiny_net, tmp_path):
    """The dataset is rebuilt with every recorded argument (here a 3-class, 4-dimensional
    mixture); recorded arguments that give another dataset than the network's are refused."""
    row = compare_run(_run(tiny_net, tmp_path / "a"), **QUICK)["table"].iloc[0]
    assert row["K"] == K

    def four_classes(config):
        config["data_args"]["classes"] = 4

    run = _run(tiny_net, tmp_path / "b", edit=four_classes)
    with pytest.raises(InputError, match="4 classes.*does not match the network \\(3 classes"):
        compare_run(run, **QUICK)


def test_compare_bad_run_folders(tiny_net, tmp_path):
    """Missing files, another loss or a single phase, no recorded dataset: InputErrors that say
    what to give."""
    with pytest.raises(InputError, match="phase1_end.pt not found; give a folder written by "
                                         "'ncsim validate train'"):
        compare_run(tmp_path / "nowhere")
    run = _run(tiny_net, tmp_path / "a")
    (run / "log.parquet").unlink()
    with pytest.raises(InputError, match="log.parquet not found"):
        compare_run(run, **QUICK)

    def ce(config):
        config["phases"][1]["loss"] = "ce"

    def one_phase(config):
        config["phases"] = config["phases"][:1]

    def no_name(config):
        config["data_args"].pop("name")

    for name, edit, message in (("b", ce, "second phase uses the MSE loss"),
                                ("c", one_phase, "second phase uses the MSE loss"),
                                ("d", no_name, "does not record its dataset; retrain")):
        with pytest.raises(InputError, match=message):
            compare_run(_run(tiny_net, tmp_path / name, edit=edit), **QUICK)


def test_compare_bad_options_and_logs(tiny_net, tmp_path):
    """An unknown rule, a subsample outside [1, smallest class], a log without the MSE phase, of
    zero duration or without a column: InputErrors that say what is wrong."""
    run = _run(tiny_net, tmp_path / "a")
    with pytest.raises(InputError, match="unknown lambda_H rule 'median'; allowed: response, "
                                         "balance"):
        compare_run(run, lambda_h_rule="median")
    for n in (0, 5):
        with pytest.raises(InputError, match=f"--per-class must lie in \\[1, 4\\].*got {n}"):
            compare_run(run, per_class=n)
    cases = (("b", _log().query("phase == 1"), "no MSE phase"),
             ("c", _log(flow=[0.5] * 4), "zero duration"),
             ("d", _log().drop(columns="phase"), "lacks column\\(s\\) phase"))
    for name, log, message in cases:
        with pytest.raises(InputError, match=message):
            compare_run(_run(tiny_net, tmp_path / name, log=log), **QUICK)


def test_compare_vanishing_surrogate_reports_no_onset(tiny_net, tmp_path, monkeypatch):
    """A surrogate whose features vanish has no simulated onset, fn*, estimate or ratio (its
    nc1 falling is no collapse), whatever its nc1 curve does."""
    import ncsim.flow as flow

    real = flow.simulate

    def vanishing(specs, **kwargs):
        result = real(specs, **kwargs)
        result.runs["status"] = "vanishing"
        return result

    monkeypatch.setattr(flow, "simulate", vanishing)
    res = compare_run(_run(tiny_net, tmp_path), per_class=N_PER, horizon=2.0, wd_horizon=5.0,
                      max_steps=5000)
    row = res["table"].iloc[0]
    assert (res["simulated"]["nc1_trace"] < 0.01).any()  # the curve crosses all the same
    assert row["status_simulated"] == "vanishing"
    for key in ("onset_simulated", "fn_star_simulated", "onset_simulated_estimate",
                "onset_ratio_sim_over_measured"):
        assert math.isnan(row[key]), key
    assert row["onset_simulated_source"] == "none (the surrogate's features vanish)"


def test_compare_refuses_non_positive_horizons(tiny_net, tmp_path):
    """horizon <= 0 or infinite, or wd_horizon < 0 or infinite, is an InputError naming both,
    before any work (an infinite horizon would ask the surrogate to run for ever)."""
    for horizon, wd_horizon in ((0.0, 5.0), (-1.0, 5.0), (2.0, -1.0), (math.inf, 5.0),
                                (2.0, math.inf)):
        with pytest.raises(InputError, match=f"^horizon must be a finite number > 0 and "
                                             f"wd_horizon a finite number >= 0, got "
                                             f"{horizon} and {wd_horizon}; they set"):
            compare_run(tmp_path, horizon=horizon, wd_horizon=wd_horizon)


def test_compare_refuses_a_bad_seed(tmp_path):
    """A negative, fractional or boolean subsample seed is an InputError before any work
    (numpy would refuse the negative one with its own message only when drawing)."""
    for seed in (-1, 1.5, True):
        with pytest.raises(InputError, match=f"^seed must be an integer >= 0 .*got {seed!r}"):
            compare_run(tmp_path, seed=seed)


def test_phase_momentum_must_be_below_one():
    """Momentum 1 would make the flow time lr x steps / (1 - momentum) infinite: refused."""

    Phase("mse", 3, "sgd", 0.1, 1e-3, momentum=0.99).validate()
    for momentum in (1.0, -0.1):
        with pytest.raises(InputError, match=f"^momentum must be in \\[0, 1\\), got {momentum}"):
            Phase("mse", 3, "sgd", 0.1, 1e-3, momentum=momentum).validate()


def _write_run_json(run: Path, config: dict) -> None:
    (run / "run.json").write_text(json.dumps({"config": to_jsonable(config)}))


def test_compare_refuses_a_checkpoint_of_another_training(tiny_net, tmp_path):
    """run.json (and so the log) of one training beside the checkpoints of another: the
    network would be paired with a log that is not its own, so compare refuses it and names
    the settings that differ; with run.json of the checkpoint's own training it compares."""
    run = _run(tiny_net, tmp_path)
    config = load_checkpoint(run / "checkpoints" / "phase1_end.pt")[1]["config"]
    _write_run_json(run, {**config, "run_id": "tiny_s1", "seed": 1})
    with pytest.raises(InputError, match=r"phase1_end\.pt comes from another training than "
                                         r".*run\.json \(they differ in run_id, seed\)"):
        compare_run(run, **QUICK)
    _write_run_json(run, config)
    assert compare_run(run, **QUICK)["table"]["K"].iloc[0] == K
    (run / "run.json").write_text("{not json")
    with pytest.raises(InputError, match="run.json is not the JSON object"):
        compare_run(run, **QUICK)


def test_train_removes_the_checkpoints_of_an_earlier_training(tmp_path):
    """A second 'validate train' into the same folder with --seeds (which writes no
    checkpoints) removes the first training's checkpoints, with a note, so that compare
    cannot pair the first network with the second log: it finds no start checkpoint. A file
    that is not a checkpoint's name stays."""
    out = tmp_path / "run"
    base = ["train", "--dataset", "digits", "--per-class", "5", "--epochs", "1,1", "--depth",
            "1", "--width", "8", "--nc-every", "1", "--optimizer", "sgd", "--lr", "0.01",
            "--out", str(out), "--no-progress", "--format", "json"]
    assert CliRunner().invoke(validate, base).exit_code == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["phase1_end.pt",
                                                                       "phase2_end.pt"]
    (out / "checkpoints" / "notes.pt.txt").write_text("mine")
    res = CliRunner().invoke(validate, [*base, "--seeds", "0,1"])
    assert res.exit_code == 0, res.output
    assert "note: removed 2 checkpoint(s) of an earlier training" in res.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["notes.pt.txt"]
    res = CliRunner().invoke(validate, ["compare", "--run", str(out)])
    assert res.exit_code == 2 and "phase1_end.pt not found" in res.stderr
