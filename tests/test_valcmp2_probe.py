"""Second mutation probe of ncsim.validate.compare (compare_run) and ncsim.validate.surrogate:
the surrogate against a naive ODE reference, BatchNorm velocities in eval mode, a run whose
features feel no decay (rate 0), the final checkpoint's checks and subsample, option passing
(threshold, max_steps, report) and refusals not pinned elsewhere.

A tiny two-phase run (Gaussian mixture, K = 3, input dimension 4, 4 samples per class; MLP with
one hidden layer of width 5; CE with Adam, then MSE with heavy-ball SGD, momentum 0.9) gives the
checkpoints; its log is replaced by a hand-built one (MSE phase t = 0.625 ... 2.5, measured onset
1.875, fn* 2.0).
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from compare_helpers import (
    DATA_ARGS,
    N_PER,
    QUICK,
    WD,
    K,
)
from compare_helpers import copy_run as _run
from compare_helpers import edit_checkpoint as _edit_checkpoint
from compare_helpers import tiny_log as _log

from ncsim.errors import InputError
from ncsim.io import to_jsonable
from ncsim.validate import surrogate as sg
from ncsim.validate.compare import _same_training, compare_run
from ncsim.validate.data import Dataset, load_dataset
from ncsim.validate.train import load_checkpoint


# ----------------------------------------------------------------------------- surrogate
def test_response_calibration_of_zero_features_is_refused_with_its_own_message():
    """All-zero features (|H|^2 = 0, G_H != 0) are refused as 'fit the targets exactly (or are
    zero)', not a ZeroDivisionError or the 'grows its features' message."""
    state = sg.SurrogateState(H=np.zeros((4, K * N_PER)), W=np.ones((K, 4)),
                              b=np.array([0.5, -0.2, 0.1]), per_class=N_PER)
    v = np.ones((4, K * N_PER))
    with pytest.raises(InputError, match=r"fit the targets exactly \(or are zero\); the response "
                                         r"calibration is undefined: use --lambda-h-rule "
                                         r"balance"):
        sg.calibrate_response(state, -v, -v, 1.0)


def test_surrogate_spec_passes_records_and_integrates_in_reduced_form():
    """The spec records ``records`` times (not a default) and uses reduction 'auto' (the
    cheapest exact form, as documented)."""
    rng = np.random.default_rng(0)
    state = sg.SurrogateState(H=rng.standard_normal((4, 6)), W=rng.standard_normal((3, 4)),
                              b=np.zeros(3), per_class=2)
    spec = sg.surrogate_spec(state, 0.01, 0.002, 5.0, records=17)
    assert spec.solver.records == 17
    assert spec.solver.reduction == "auto"


def test_surrogate_matches_a_naive_tight_ode_reference():
    """The simulated surrogate (lambda_b = lambda_W, eta_H on the feature block only) ends at
    the fn and features of a tight DOP853 integration of the UFM-MSE flow written out here, to
    3e-6 relative (the spec's tolerances are rtol 1e-6, atol 1e-8)."""
    from scipy.integrate import solve_ivp

    from ncsim.flow.simulate import simulate

    rng = np.random.default_rng(5)
    n, d = 2, 4
    N = K * n
    H0 = rng.standard_normal((d, N))
    W0 = 0.5 * rng.standard_normal((K, d))
    b0 = 0.1 * rng.standard_normal(K)
    lam_w, lam_h, eta, t_end = 0.05, 0.2, 8.0, 5.0
    Y = np.repeat(np.eye(K), n, axis=1)

    def rhs(_t, z):
        H = z[:d * N].reshape(d, N)
        W = z[d * N:d * N + K * d].reshape(K, d)
        b = z[-K:]
        R = W @ H + b[:, None] - Y
        dH = -eta * (W.T @ R / N + lam_h * H)
        dW = -(R @ H.T / N + lam_w * W)
        db = -(R.sum(axis=1) / N + lam_w * b)
        return np.concatenate([dH.ravel(), dW.ravel(), db])

    z = solve_ivp(rhs, (0.0, t_end), np.concatenate([H0.ravel(), W0.ravel(), b0]),
                  method="DOP853", rtol=1e-12, atol=1e-14).y[:, -1]
    H_ref = z[:d * N].reshape(d, N)
    fn_ref = float(np.mean([np.sqrt((H_ref[:, i] ** 2).sum()) for i in range(N)]))
    state = sg.SurrogateState(H=H0, W=W0, b=b0, per_class=n)
    res = simulate(sg.surrogate_spec(state, lam_w, lam_h, t_end, eta_h=eta), theory=False)
    traj = res.trajectories.sort_values("time")
    assert traj["time"].iloc[-1] == pytest.approx(t_end, rel=1e-12)
    assert traj["fn"].iloc[-1] == pytest.approx(fn_ref, rel=3e-6)
    final = res.final_state(res.runs["run_id"].iloc[0])
    np.testing.assert_allclose(final["H"], H_ref, rtol=0, atol=3e-6 * np.abs(H_ref).max())


class _BatchNormNet(torch.nn.Module):
    """features = BatchNorm1d(Linear(x)) with set running statistics, then a classifier."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.lin = torch.nn.Linear(3, 4)
        self.bn = torch.nn.BatchNorm1d(4)
        self.classifier = torch.nn.Linear(4, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
            self.bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
            self.bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0, 9.0]))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.lin(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def test_feature_velocities_use_running_statistics_on_a_copy():
    """A BatchNorm network's features are evaluated with the running statistics (eval mode:
    (z - mean) / sqrt(var + eps) gamma + beta, by hand), and the caller's model is left as it
    was: float32, in training mode, its running statistics unchanged."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, generator=gen)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    data = Dataset("bn", x, y, x, y, 2)
    model = _BatchNormNet().train()
    mean0 = model.bn.running_mean.clone()
    idx = np.array([0, 1, 4, 5])
    h, v_data, v_decay = sg.feature_velocities(model, data, idx, 0.1, decayed=None)
    Wl = model.lin.weight.detach().double().numpy()
    bl = model.lin.bias.detach().double().numpy()
    gamma = model.bn.weight.detach().double().numpy()
    beta = model.bn.bias.detach().double().numpy()
    rm = model.bn.running_mean.double().numpy()
    rv = model.bn.running_var.double().numpy()
    xs = x.double().numpy()[idx]
    expected = np.empty((4, len(idx)))
    for j in range(len(idx)):
        z = Wl @ xs[j] + bl
        expected[:, j] = (z - rm) / np.sqrt(rv + model.bn.eps) * gamma + beta
    np.testing.assert_allclose(h, expected, rtol=1e-12, atol=1e-12)
    assert h.shape == v_data.shape == v_decay.shape == (4, 4)
    assert model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.equal(model.bn.running_mean, mean0)


@pytest.mark.parametrize("layer, expected", [
    (torch.nn.BatchNorm1d(2), True), (torch.nn.BatchNorm2d(2), True),
    (torch.nn.BatchNorm3d(2), True), (torch.nn.LayerNorm(2), False),
    (torch.nn.GroupNorm(1, 2), False), (torch.nn.InstanceNorm2d(2), False),
])
def test_has_batch_norm_covers_every_batch_norm_kind(layer, expected):
    """has_batch_norm is True for BatchNorm of any dimension (ResNets use 2-d), False for the
    normalisations without running batch statistics."""
    assert sg.has_batch_norm(torch.nn.Sequential(torch.nn.Linear(2, 2), layer)) is expected


# ----------------------------------------------------------------------------- compare_run
def test_compare_decay_on_the_classifier_only_gives_no_feature_decay(tiny_net, tmp_path):
    """decay_last = 1 (only the classifier decayed) leaves the features no decay velocity:
    lambda_H = 0 (r2_decay NaN), the horizon alone sets t_end (2 x 2.5 x 2/3), the collapse time
    scale is infinite and so is the extrapolated onset (and its ratio)."""

    def classifier_only(config):
        config["phases"][1]["decay_last"] = 1

    res = compare_run(_run(tiny_net, tmp_path, edit=classifier_only), **QUICK)
    row = res["table"].iloc[0]
    assert row["lambda_h"] == 0.0 and row["eta_h"] > 0
    assert math.isnan(row["calibration_r2_decay"])
    assert row["lambda_w"] == pytest.approx(K * WD / 2, rel=1e-15)
    assert row["surrogate_t_end"] == pytest.approx(2.0 * 2.5 * 2.0 / K, rel=1e-12)
    assert row["collapse_time_scale"] == math.inf
    assert math.isnan(row["onset_simulated"])
    assert row["onset_simulated_source"] == "extrapolated"
    assert row["onset_simulated_estimate"] == math.inf
    assert row["onset_ratio_sim_over_measured"] == math.inf
    assert row["onset_simulated_lower_bound"] == pytest.approx(res["simulated"]["t"].iloc[-1],
                                                               rel=1e-12)


def test_compare_balance_rule_uses_the_seeded_subsample_of_the_final_network(tiny_net, tmp_path):
    """With seed 1 the balance rule reads the final network's features on the seed-1
    subsample (the start's), lambda_W |W|^2 / |H|^2 summed here sample by sample."""
    run = _run(tiny_net, tmp_path)
    row = compare_run(run, lambda_h_rule="balance", seed=1, **QUICK)["table"].iloc[0]
    data = load_dataset(**DATA_ARGS)
    model0, _ = load_checkpoint(run / "checkpoints" / "phase1_end.pt")
    index = sg.network_state(model0, data, N_PER, seed=1).index
    assert not np.array_equal(index, sg.network_state(model0, data, N_PER, seed=0).index)
    final, _ = load_checkpoint(run / "checkpoints" / "phase2_end.pt")
    with torch.no_grad():
        h2 = sum(float((final.features(data.x_train[int(i)][None]).double() ** 2).sum())
                 for i in index)
    w2 = float((final.classifier.weight.detach().double() ** 2).sum())
    assert row["lambda_h"] == pytest.approx(K * WD / 2 * w2 / h2, rel=1e-6)


def test_compare_refuses_a_final_checkpoint_of_another_training(tiny_net, tmp_path):
    """run.json matching the start checkpoint but not the final one (another seed) is refused
    naming phase2_end.pt and the differing setting."""
    run = _run(tiny_net, tmp_path)
    config = load_checkpoint(run / "checkpoints" / "phase1_end.pt")[1]["config"]
    (run / "run.json").write_text(json.dumps({"config": to_jsonable(config)}))
    _edit_checkpoint(run / "checkpoints" / "phase2_end.pt",
                     lambda c: c.update(seed=c["seed"] + 1))
    with pytest.raises(InputError, match=r"phase2_end\.pt comes from another training than "
                                         r".*run\.json \(they differ in seed\)"):
        compare_run(run, **QUICK)


def test_same_training_names_a_setting_only_run_json_records(tmp_path):
    """A setting recorded in run.json but absent from the checkpoint's config is a difference."""
    (tmp_path / "run.json").write_text(json.dumps({"config": {"seed": 0, "extra": 1}}))
    with pytest.raises(InputError, match=r"they differ in extra\)"):
        _same_training(tmp_path, tmp_path / "c.pt", {"seed": 0})
    assert _same_training(tmp_path, tmp_path / "c.pt", {"seed": 0, "extra": 1}) is None


def test_compare_onset_at_the_mse_start_has_no_ratio(tiny_net, tmp_path):
    """A network below the threshold at its first MSE record, t = 0 (flow time of the phase-1
    end): onset 0, fn* that record's fn, and no onset ratio (NaN, not a division by 0)."""
    log = _log(nc1=[0.005, 0.004, 0.003, 0.002], flow=[0.5, 0.5625, 0.625, 0.75])
    row = compare_run(_run(tiny_net, tmp_path, log=log), **QUICK)["table"].iloc[0]
    assert row["onset_measured"] == 0.0 and row["fn_star_measured"] == 3.0
    assert math.isnan(row["onset_ratio_sim_over_measured"])
    assert row["lambda_w_x_mse_duration"] == pytest.approx(K * WD / 2 * (2 / K) * 2.5, rel=1e-12)


@pytest.mark.parametrize("regime, note", [("", "closed form not available"),
                                          ("theory failed: boom", "theory failed: boom")])
def test_compare_theory_note_without_a_closed_form(tiny_net, tmp_path, monkeypatch, regime,
                                                   note):
    """A NaN closed-form fn* gives NaN ratio and the theory's reason as theory_note, or
    'closed form not available' when it gives none."""
    monkeypatch.setattr(sg, "closed_form_fn_star", lambda spec: (math.nan, regime))
    row = compare_run(_run(tiny_net, tmp_path), **QUICK)["table"].iloc[0]
    assert row["theory_note"] == note
    assert math.isnan(row["fn_star_closed_form"])
    assert math.isnan(row["fn_star_ratio_closed_form_over_measured"])


def test_compare_refuses_a_single_run_log_of_another_run(tiny_net, tmp_path):
    """A log of one run under another run id than the checkpoint's is another training's log:
    refused with both ids named (an empty log too); without a run_id column the log is the
    folder's and the row is named after the folder."""
    with pytest.raises(InputError, match=r"holds run renamed, not the checkpoint's run 'tiny'; "
                                         r"give the folder's own log"):
        compare_run(_run(tiny_net, tmp_path / "a", log=_log("renamed")), **QUICK)
    with pytest.raises(InputError, match=r"holds no record of the checkpoint's run 'tiny'"):
        compare_run(_run(tiny_net, tmp_path / "c", log=_log().iloc[0:0]), **QUICK)
    unnamed = _log().drop(columns="run_id")
    row = compare_run(_run(tiny_net, tmp_path / "b", log=unnamed), **QUICK)["table"].iloc[0]
    assert row["run"] == "run"
    assert row["onset_measured"] == pytest.approx(1.875, rel=1e-12)


def test_compare_step_budget_reaches_the_surrogate(tiny_net, tmp_path):
    """max_steps = 3 stops the surrogate early: status max_steps, no simulated onset, the lower
    bound is the time reached (short of t_end in network time) and the estimate extrapolates."""
    res = compare_run(_run(tiny_net, tmp_path), per_class=N_PER, horizon=2.0, wd_horizon=1e-3,
                      max_steps=3)
    row = res["table"].iloc[0]
    assert row["status_simulated"] == "max_steps"
    assert math.isnan(row["onset_simulated"])
    reached = res["simulated"]["t"].iloc[-1]
    assert row["onset_simulated_lower_bound"] == pytest.approx(reached, rel=1e-12)
    assert reached < row["surrogate_t_end"] / (2.0 / K) * (1 - 1e-6)
    assert row["onset_simulated_source"] == "extrapolated"
    assert row["onset_simulated_estimate"] > reached


def test_compare_threshold_reaches_the_surrogate_spec(tiny_net, tmp_path):
    """The threshold is the surrogate's onset threshold too: at threshold 1e6 every record is
    below it, so the surrogate's status is 'ok' (collapsed at its first record, t = 0), as is
    the measured onset (first MSE record, t = 0.625)."""
    row = compare_run(_run(tiny_net, tmp_path), threshold=1e6, **QUICK)["table"].iloc[0]
    assert row["onset_measured"] == pytest.approx(0.625, rel=1e-12)
    assert row["onset_simulated"] == 0.0
    assert row["status_simulated"] == "ok"


def test_compare_report_messages_give_both_time_units(tiny_net, tmp_path):
    """The progress messages: the calibration, the horizon in ncsim time and in network time
    (t_end / (2/K) = 1.5 t_end for K = 3) with the step budget, then the surrogate's status."""
    messages: list[str] = []
    row = compare_run(_run(tiny_net, tmp_path), report=messages.append, **QUICK)["table"].iloc[0]
    assert len(messages) == 3
    assert messages[0].startswith(f"surrogate calibrated (response rule, {N_PER} samples per "
                                  "class): eta_H ")
    found = re.fullmatch(r"simulating the surrogate to t_ncsim = (\S+) \(= (\S+) network time t; "
                         r"at most 500 steps\)", messages[1])
    assert found is not None, messages[1]
    t_end = row["surrogate_t_end"]
    assert float(found.group(1)) == pytest.approx(t_end, rel=1e-3)
    assert float(found.group(2)) == pytest.approx(1.5 * t_end, rel=1e-3)
    assert re.fullmatch(r"surrogate: not_collapsed after \d+ steps", messages[2])


def test_compare_refuses_a_dataset_of_another_input_shape(tiny_net, tmp_path):
    """Recorded dataset arguments that rebuild inputs of another shape (dimension 5, not 4) are
    refused before the network sees them, naming both shapes."""

    def five_dims(config):
        config["data_args"]["dim"] = 5

    with pytest.raises(InputError, match=r"\(3 classes, inputs \(1, 5\)\) does not match the "
                                         r"network \(3 classes, inputs \(1, 4\)\)"):
        compare_run(_run(tiny_net, tmp_path, edit=five_dims), **QUICK)
