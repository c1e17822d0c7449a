"""Mutation probe of ncsim.validate.networks, compare and cli: hand-computed values.

Parameter counts of small networks written out by hand, initialisation statistics of the
documented Kaiming rules, the rescale intervention on a network with non-zero biases, the
compare log checks and the one-line errors of the validate commands.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ncsim.errors import InputError
from ncsim.validate.networks import MLP, ResNet20, SmallCNN, activation, build_network


# ----------------------------------------------------------------------------- networks
def test_mlp_parameter_count_by_hand():
    """MLP(4 -> 5 -> 5 -> 3): (4*5+5) + (5*5+5) + (5*3+3) = 73 parameters, biased classifier."""
    net = MLP(4, 3, depth=2, width=5)
    assert sum(p.numel() for p in net.parameters()) == 73
    assert net.classifier.weight.shape == (3, 5) and net.classifier.bias.shape == (3,)
    linears = [m for m in net.body if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4, 5), (5, 5)]


def test_build_network_flattens_the_input_shape_for_the_mlp():
    """build_network('mlp') takes prod(input_shape) inputs: (2, 3, 4) images -> 24 features."""
    net = build_network("mlp", (2, 3, 4), classes=3, depth=1, width=6)
    assert net.body[1].in_features == 24
    assert net(torch.zeros(7, 2, 3, 4)).shape == (7, 3)
    assert net.features(torch.zeros(7, 2, 3, 4)).shape == (7, 6)


def test_mlp_initial_biases_are_zero_and_weights_kaiming_normal():
    """Every Linear bias starts at 0 and weights have std sqrt(2 / fan_in) (Kaiming, relu)."""
    torch.manual_seed(0)
    net = MLP(1000, 400, depth=1, width=400)
    for m in net.modules():
        if isinstance(m, nn.Linear):
            assert torch.count_nonzero(m.bias) == 0
    std = net.body[1].weight.std().item()
    assert std == pytest.approx(math.sqrt(2 / 1000), rel=0.02)
    std_c = net.classifier.weight.std().item()
    assert std_c == pytest.approx(math.sqrt(2 / 400), rel=0.02)


def test_mlp_features_are_the_activated_last_hidden_layer():
    """features(x) = act(last_hidden(previous features)); forward = classifier(features)."""
    torch.manual_seed(1)
    net = MLP(3, 2, depth=2, width=4, act="tanh")
    x = torch.randn(5, 3)
    h1 = torch.tanh(net.body[1](x))
    expected = torch.tanh(net.last_hidden(h1))
    assert net.last_hidden is net.body[3]
    torch.testing.assert_close(net.features(x), expected)
    torch.testing.assert_close(net(x), net.classifier(expected))


def test_rescale_last_hidden_scales_weight_and_bias_of_the_last_layer_only():
    """With non-zero biases, rescaling (relu) multiplies the features exactly by alpha; the first
    layer is untouched."""
    torch.manual_seed(2)
    net = MLP(3, 2, depth=2, width=4)
    with torch.no_grad():
        for m in net.body:
            if isinstance(m, nn.Linear):
                m.bias.uniform_(0.5, 1.0)
    first = net.body[1].weight.clone(), net.body[1].bias.clone()
    x = torch.randn(6, 3)
    before = net.features(x)
    net.rescale_last_hidden(3.0)
    torch.testing.assert_close(net.features(x), 3.0 * before)
    torch.testing.assert_close(net.body[1].weight, first[0])
    torch.testing.assert_close(net.body[1].bias, first[1])


def test_small_cnn_features_pass_through_the_activation():
    """SmallCNN features are act(hidden(conv(x))): with relu they are >= 0, some exactly 0."""
    torch.manual_seed(3)
    net = SmallCNN((1, 8, 8), classes=3, width=32)
    x = torch.randn(4, 1, 8, 8)
    h = net.features(x)
    torch.testing.assert_close(h, torch.relu(net.hidden(net.conv(x))))
    assert h.min() >= 0 and (h == 0).any()
    # 8x8 -> two 2-wide pools -> 2x2 x 64 channels = 256 inputs of the hidden layer
    assert net.hidden.in_features == 256


def test_leaky_relu_default_slope_and_unknown_activation():
    """activation('leaky_relu') has slope 0.01; an unknown name is an InputError naming it."""
    assert activation("leaky_relu").negative_slope == 0.01
    assert activation("leaky_relu", 0.2).negative_slope == 0.2
    with pytest.raises(InputError, match="unknown activation 'swish'; allowed: linear, relu"):
        activation("swish")


def test_resnet20_convs_are_kaiming_fan_out():
    """ResNet-20 conv weights have std sqrt(2 / (out_channels x taps)) (fan_out mode): the first
    conv of stage 3 (32 -> 64 channels, 3x3) has std sqrt(2 / 576), not sqrt(2 / 288)."""
    torch.manual_seed(4)
    net = ResNet20(3, 10)
    w = net.blocks[6].conv1.weight
    assert w.shape == (64, 32, 3, 3)
    assert w.std().item() == pytest.approx(math.sqrt(2 / 576), rel=0.03)


def test_resnet20_rescale_multiplies_pooled_features():
    """rescale_last_hidden(alpha) multiplies ResNet-20's 64-d features by alpha (in eval)."""
    torch.manual_seed(5)
    net = ResNet20(1, 4).eval()
    x = torch.randn(2, 1, 8, 8)
    before = net.features(x)
    net.rescale_last_hidden(0.5)
    torch.testing.assert_close(net.features(x), 0.5 * before)
    assert net.classifier.bias is not None and net.classifier.weight.shape == (4, 64)


def test_build_network_refuses_unknown_arch_and_resnet_activations():
    """Unknown arch and a non-relu ResNet-20 are InputErrors with their messages."""
    with pytest.raises(InputError, match="unknown network 'vgg'; allowed: mlp, cnn, resnet20"):
        build_network("vgg", (1, 8, 8), 3)
    with pytest.raises(InputError, match="activation 'tanh' is not available"):
        build_network("resnet20", (1, 8, 8), 3, act="tanh")
    with pytest.raises(InputError, match="MLP depth must be an integer >= 1, got 0"):
        build_network("mlp", (4,), 3, depth=0)


# ----------------------------------------------------------------------------- compare
def _tiny_log(**drop) -> pd.DataFrame:
    """Three CE records then three MSE records: flow_time lr x steps from the start."""
    log = pd.DataFrame({
        "time": [0, 1, 2, 3, 4, 5], "phase": [1, 1, 1, 2, 2, 2],
        "flow_time": [0.0, 0.5, 1.0, 1.5, 2.5, 4.0],
        "nc1_trace": [1.0, 0.5, 0.2, 0.05, 0.005, 0.001],
        "fn": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    return log.drop(columns=list(drop))


def test_measured_curve_by_hand():
    """t = (flow_time - 1.0) x factor from the last CE record; onset = first t below 0.01."""
    from ncsim.validate.compare import _measured

    curve, onset, fn_star = _measured(_tiny_log(), 0.01, factor=10.0)
    np.testing.assert_allclose(curve["t"], [5.0, 15.0, 30.0])
    assert onset == 15.0 and fn_star == 5.0


@pytest.mark.parametrize("column", ["fn", "flow_time", "phase"])
def test_measured_names_each_missing_column(column):
    """A log without a required column is an InputError naming that column."""
    from ncsim.validate.compare import _measured

    with pytest.raises(InputError, match=f"lacks column\\(s\\) {column}"):
        _measured(_tiny_log(**{column: True}), 0.01)


# ----------------------------------------------------------------------------- cli
def test_compare_command_option_defaults():
    """compare's documented defaults: threshold 0.01, horizon 10, wd-horizon 5, 20000 steps."""
    from ncsim.validate.cli import compare_cmd

    defaults = {p.name: p.default for p in compare_cmd.params}
    assert defaults["onset_threshold"] == 0.01 and defaults["horizon"] == 10.0
    assert defaults["wd_horizon"] == 5.0 and defaults["max_steps"] == 20_000
    assert defaults["lambda_h_rule"] == "response" and defaults["per_class"] is None


@pytest.mark.parametrize("args, message", [
    (["--max-steps", "0"], "--max-steps must be >= 1, got 0"),
    (["--onset-threshold", "inf"], "--onset-threshold must be a finite number > 0"),
    (["--onset-threshold", "0"], "--onset-threshold must be a finite number > 0"),
])
def test_compare_bad_options_are_one_line_errors(tmp_path, args, message):
    """Bad compare options stop with one 'Error:' line before any run folder is read."""
    from cli_helpers import error_line, invoke

    res = invoke(["validate", "compare", "--run", str(tmp_path / "none"), *args])
    assert message in error_line(res)


def test_train_seeds_refuse_checkpoints(tmp_path):
    """--seeds with --checkpoint-every is refused (stacked training writes no checkpoints)."""
    from cli_helpers import error_line, invoke

    res = invoke(["validate", "train", "--preset", "cpu-small", "--epochs", "1,1",
                  "--seeds", "0,1", "--checkpoint-every", "2",
                  "--out", str(tmp_path / "out"), "--no-progress"])
    line = error_line(res)
    assert "--seeds (stacked training) has no --intervene-epoch, --amp or --checkpoint-every" \
        in line


def test_condition_label_of_mlp_and_resnet():
    """The condition is arch+width for the MLP (mlp512) and the bare arch for ResNet-20."""
    from ncsim.validate.cli import _condition_label
    from ncsim.validate.train import preset

    assert _condition_label(preset("mlp", None)) == "mlp512"
    assert _condition_label(preset("mlp", None, width=64)) == "mlp64"
    assert _condition_label(preset("resnet20", None)) == "resnet20"


def test_whole_as_int_keeps_huge_and_fractional_times_as_floats():
    """Whole finite times become Int64; fractional ones or ones past 2**53 stay floats."""
    from ncsim.validate.cli import _whole_as_int

    out = _whole_as_int(pd.Series([250.0, np.nan, 3.0]))
    assert str(out.dtype) == "Int64" and out.iloc[0] == 250 and out.isna().iloc[1]
    assert _whole_as_int(pd.Series([1.25, 2.0])).dtype == np.float64
    assert _whole_as_int(pd.Series([2.0**60, 1.0])).dtype == np.float64



@pytest.fixture(scope="module")
def run12(tmp_path_factory):
    """A tiny two-phase run (gaussian, K = 2, 12 per class, MLP 3 wide; MSE phase: plain SGD,
    lr 0.05, wd 1e-2) with its checkpoints and its own log."""
    from compare_helpers import train_two_phase

    data_args = {"name": "gaussian", "per_class": 12, "seed": 0, "classes": 2, "dim": 3}
    return train_two_phase(tmp_path_factory.mktemp("run12") / "run", data_args, "pc", (1, 2),
                           momentum=0.0, weight_decay=1e-2, arch="mlp", depth=1, width=3)


QUICK12 = {"horizon": 1.0, "wd_horizon": 0.0, "max_steps": 50}


def test_compare_default_per_class_is_min_of_20_and_smallest_class(run12):
    """per_class=None takes min(20, smallest class): 12 for a run with 12 samples per class."""
    from ncsim.validate.compare import compare_run

    row = compare_run(run12, **QUICK12)["table"].iloc[0]
    assert row["n_per_class"] == 12 and row["K"] == 2 and row["d"] == 3
    assert row["time_mapping"] == "t = lr x steps"
    with pytest.raises(InputError, match=r"--per-class must lie in \[1, 12\]"):
        compare_run(run12, per_class=13, **QUICK12)


def test_compare_row_measured_columns_by_hand(run12, tmp_path):
    """With a hand log (t = 0.5, 1.5, 3.0 after the CE phase; nc1 0.05, 0.005, 0.02): onset 1.5,
    fn* 5, final nc1 0.02 (the last record, not the minimum), lambda_w = K wd / 2 = 0.01,
    t_ncsim_per_t = 2 / K = 1, lambda_w x duration = 0.03."""
    import shutil

    from ncsim.io import write_table
    from ncsim.validate.compare import compare_run

    run = tmp_path / "run"
    shutil.copytree(run12, run)
    log = _tiny_log().assign(nc1_trace=[1.0, 0.5, 0.2, 0.05, 0.005, 0.02])
    write_table(log, run / "log.parquet")
    row = compare_run(run, per_class=2, **QUICK12)["table"].iloc[0]
    assert row["onset_measured"] == 1.5 and row["fn_star_measured"] == 5.0
    assert row["nc1_final_measured"] == 0.02 and row["fn_final_measured"] == 6.0
    assert row["lambda_w"] == pytest.approx(0.01) and row["t_ncsim_per_t"] == 1.0
    assert row["lambda_w_x_mse_duration"] == pytest.approx(0.03)
    assert row["onset_ratio_sim_over_measured"] == pytest.approx(
        row["onset_simulated_estimate"] / 1.5)


def test_compare_command_prints_text_columns_as_notes(run12, tmp_path):
    """The table output lists the text columns (time_mapping, onset_simulated_source, ...) as
    notes below the numbers, not as table rows."""
    from cli_helpers import invoke

    res = invoke(["validate", "compare", "--run", str(run12), "--per-class", "2",
                  "--horizon", "1", "--wd-horizon", "0", "--max-steps", "50",
                  "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    table, notes = res.stdout.split("# notes\n")
    assert "time_mapping: t = lr x steps" in notes
    assert "onset_simulated_source: " in notes
    for column in ("time_mapping", "lambda_h_rule", "onset_simulated_source", "theory_note"):
        assert column not in table
