"""Strict values of onset analysis, the UFM surrogate's calibration and the validation networks.

Hand-made logs and states with known answers pin the branches that the broader tests leave
free: ``stay`` in the first-record onset rule, the 95% Student-t interval of the group table,
the conversion constants and least-squares fit of the surrogate, and the architecture of the
networks (where the features are read, the strides and widths of ResNet-20).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from ncsim.validate.analysis import OnsetRule, group_table, run_onset, run_table

T_975_DF2 = 4.302652729749462  # Student-t 0.975 quantile, 2 degrees of freedom


def _log(metric, fn, phase=2, run="r"):
    n = len(metric)
    return pd.DataFrame({"run_id": run, "time": np.arange(1.0, n + 1), "phase": phase,
                         "nc1_trace": metric, "fn": fn})


def test_stay_needs_consecutive_records_below_without_interpolation():
    """With ``stay = 2`` a single dip below the threshold is no onset: the onset is the first
    record of the first pair of records both below, and fn* is that record's fn."""
    part = _log([0.5, 0.005, 0.5, 0.005, 0.004, 0.003], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    one = run_onset(part, OnsetRule(stay=1))
    assert (one["onset_epoch"], one["fn_star"]) == (2.0, 2.0)
    two = run_onset(part, OnsetRule(stay=2))
    assert (two["onset_epoch"], two["fn_star"]) == (4.0, 4.0)
    assert two["status"] == "collapsed"
    never = run_onset(_log([0.5, 0.005, 0.5, 0.005], [1.0] * 4), OnsetRule(stay=2))
    assert never["status"] == "not_collapsed" and math.isnan(never["onset_epoch"])


def test_group_interval_is_the_student_t_95_percent_interval():
    """Three collapsed runs with onsets 10, 20, 30 (mean 20, sample std 10): the interval is
    20 +- t_{0.975, 2} 10 / sqrt(3); fn* 1, 2, 3 gives 2 +- t_{0.975, 2} / sqrt(3)."""
    frames = [_log([0.5] * (k - 1) + [0.001], [1.0] * (k - 1) + [k / 10], run=f"s{k}")
              .assign(model="mlp", dataset="mnist", condition="c", seed=k)
              for k in (10, 20, 30)]
    runs = run_table(pd.concat(frames, ignore_index=True), OnsetRule())
    assert list(runs["onset_epoch"]) == [10.0, 20.0, 30.0]
    row = group_table(runs).iloc[0]
    half = T_975_DF2 * 10.0 / math.sqrt(3)
    assert row["onset_mean"] == pytest.approx(20.0, rel=1e-12)
    assert row["onset_std"] == pytest.approx(10.0, rel=1e-12)
    assert row["onset_cv"] == pytest.approx(0.5, rel=1e-12)
    assert row["onset_ci_low"] == pytest.approx(20.0 - half, rel=1e-12)
    assert row["onset_ci_high"] == pytest.approx(20.0 + half, rel=1e-12)
    assert row["fn_star_ci_high"] == pytest.approx(2.0 + T_975_DF2 / math.sqrt(3), rel=1e-12)


def test_held_out_mae_predicts_each_run_with_the_other_seeds_mean_lead():
    """Leads 10, 20, 60 of seeds 0, 0, 1: the held-out errors are |10 - 60|, |20 - 60| and
    |60 - 15| (MAE 45), the in-sample ones |lead - 30| (MAE 20)."""
    from ncsim.validate.analysis import lead_summary

    lead = [10.0, 20.0, 60.0]
    leads = pd.DataFrame({"seed": [0, 0, 1], "onset_epoch": [100.0, 110.0, 120.0],
                          "lead_in_sample": lead, "lead_held_out": lead})
    out = lead_summary(leads)
    assert out["held_out"]["mae"] == pytest.approx(45.0, rel=1e-12)
    assert out["in_sample"]["mae"] == pytest.approx(20.0, rel=1e-12)
    assert out["in_sample"]["lead_mean"] == pytest.approx(30.0, rel=1e-12)
    assert out["held_out"]["n_crossed"] == 3 and out["held_out"]["ordering_accuracy"] == 1.0


def _tiny_data(n=12, dim=5, classes=3, seed=0):
    from ncsim.validate.data import Dataset

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, dim, generator=gen)
    y = torch.arange(n) % classes
    return Dataset("tiny", x, y, x.clone(), y.clone(), classes)


def test_feature_velocity_decays_only_the_named_parameters():
    """Decay on the last hidden layer of a ReLU MLP moves its features at exactly -wd H; decay
    on the classifier alone does not move them at all."""
    from ncsim.validate.networks import MLP
    from ncsim.validate.surrogate import feature_velocities

    torch.manual_seed(0)
    data = _tiny_data()
    net = MLP(5, 3, depth=2, width=7)
    with torch.no_grad():  # nonzero biases: decaying the first layer alone is then not -wd H
        for m in net.modules():
            if isinstance(m, torch.nn.Linear):
                m.bias.uniform_(0.1, 0.5)
    index = np.arange(6)
    last = {"body.3.weight", "body.3.bias"}
    h, _, v_decay = feature_velocities(net, data, index, 0.3, last)
    assert h.shape == (7, 6)
    np.testing.assert_allclose(v_decay, -0.3 * h, rtol=1e-10, atol=1e-12)
    _, _, v_none = feature_velocities(net, data, index, 0.3, {"classifier.weight"})
    np.testing.assert_array_equal(v_none, np.zeros_like(h))


def test_feature_velocity_data_gradient_does_not_depend_on_the_batch_size():
    """The data gradient is that of the mean loss over the whole training set: summing it in
    batches of 4 (three batches of 12 samples) or in one batch gives the same velocity."""
    from ncsim.validate.networks import MLP
    from ncsim.validate.surrogate import feature_velocities

    torch.manual_seed(1)
    data = _tiny_data()
    net = MLP(5, 3, depth=1, width=4)
    index = np.arange(3)
    _, whole, _ = feature_velocities(net, data, index, 0.1, None, batch=4096)
    _, parts, _ = feature_velocities(net, data, index, 0.1, None, batch=4)
    assert np.abs(whole).max() > 0
    np.testing.assert_allclose(parts, whole, rtol=1e-10, atol=1e-14)


def test_mlp_features_are_the_last_hidden_activations():
    """The MLP's features are relu(last hidden Linear(...)): the input of the classifier, after
    the activation, so forward = classifier(features)."""
    from ncsim.validate.networks import MLP

    torch.manual_seed(2)
    net = MLP(6, 3, depth=2, width=5)
    x = torch.randn(8, 1, 6)
    first, last = [m for m in net.body if isinstance(m, torch.nn.Linear)]
    expected = torch.relu(last(torch.relu(first(x.flatten(1)))))
    torch.testing.assert_close(net.features(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(net(x), net.classifier(expected), rtol=0, atol=0)
