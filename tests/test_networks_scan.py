"""Adversarial scan of ncsim.validate.networks, .surrogate and .stacked.

Invariants checked (naive references written here, float64 where exactness is asserted):
- MLP features (every activation, depth 1 / width 1 / batch 1 included, non-square inputs) and
  small-CNN features (1-D and 2-D, odd and non-square sides, floor pooling) equal a forward
  pass written out with matrix products, F.conv and reshaped max-pools; logits equal
  ``classifier(features)``; float64 networks give float64 outputs equal to float32 ones to
  float32 rounding; ResNet-20 pads only 28x28 images (a padded 28x28 image equals the same
  image padded by hand; 28x27 is used as it is); ``rescale_last_hidden`` scales the features
  by alpha for the homogeneous activations.
- NC tracking changes nothing: records every epoch or only at phase ends give ResNet-20 the
  same parameters and BatchNorm running statistics bit for bit (and the same run twice: the
  same log); ``extract``, ``nc_record``, ``network_state`` and ``feature_velocities`` leave a
  training-mode ResNet-20's mode, state dict and gradients as they were.
- surrogate: ``network_state`` is the class-major naive feature matrix of the subsample and
  copies W and b; ``feature_velocities`` on ResNet-20 (BatchNorm statistics moved, a feature
  scale of 0.7) equals central finite differences of the eval-mode features along the
  gradient-flow tangent, whatever the batch; the surrogate's simulation equals a scipy
  integration of the UFM-MSE flow written out here (eta_H on H only, lambda_b = lambda_W).
- stacked: the vectorised loop equals separate trainings for the 1-D and 2-D CNN (only the MLP
  was checked) and its logs do not depend on how often NC is recorded.

Fixed findings (each test fails on the old code):
- networks.activation: an unhashable name (``act=["relu"]``) raised TypeError, not InputError.
- networks.build_network: ResNet-20 built on spatial sizes 0, -3 or 8.5 ((1, 0, 8) failed in
  torch's conv at the first forward; (1, 8.5, 8) ran); the MLP took the product of negative
  sizes ((1, -2, -3) built an MLP of 6 inputs); an int input shape raised TypeError.
- surrogate.network_state: a float64 model raised torch's "mat1 and mat2 must have the same
  dtype" (feature_velocities takes one); a dataset without a sample of class 2 gave a state of
  2n columns that calibrate_response then refused with "give the state network_state built";
  a diverged network (NaN or inf features) gave a state; ``per_class=None`` gave a state of
  every sample in dataset order (not class-major) with ``per_class = None``.
- surrogate.calibrate_lambda_h / calibrate_response / surrogate_spec: NaN features were
  reported as "features are all zero" (balance) or "fit the targets exactly" (response);
  infinite ones gave lambda_H = 0.0 silently; a NaN velocity read "features move against the
  loss gradient (eta_H = nan)"; a time factor of 0 or -2/3 was not refused.
- surrogate.feature_velocities: ``loss="CE"`` silently computed MSE velocities; ``batch=-1``
  returned v_data = 0 silently (no batch ran), ``batch=0`` raised range()'s ValueError;
  ``weight_decay=-1`` was used; ``decayed={"nope"}`` (no such parameter) gave v_decay = 0.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ncsim.errors import InputError
from ncsim.validate import surrogate as sg
from ncsim.validate.data import Dataset, load_dataset
from ncsim.validate.networks import (
    ACTIVATIONS,
    MLP,
    SmallCNN,
    activation,
    build_network,
)
from ncsim.validate.stacked import train_stacked
from ncsim.validate.train import Phase, TrainConfig, extract, nc_record, preset, train


# ----------------------------------------------------------------------------- naive forwards
def _act(name: str, z: torch.Tensor) -> torch.Tensor:
    """The activations written out (GELU in its exact erf form, leaky slope 0.01)."""
    if name == "linear":
        return z
    if name == "relu":
        return torch.where(z > 0, z, torch.zeros_like(z))
    if name == "leaky_relu":
        return torch.where(z > 0, z, 0.01 * z)
    if name == "tanh":
        return (torch.exp(z) - torch.exp(-z)) / (torch.exp(z) + torch.exp(-z))
    if name == "gelu":
        return 0.5 * z * (1.0 + torch.erf(z / math.sqrt(2.0)))
    if name == "silu":
        return z / (1.0 + torch.exp(-z))
    raise AssertionError(name)


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def _naive_mlp(net: MLP, x: torch.Tensor, act: str) -> torch.Tensor:
    h = x.reshape(x.shape[0], -1)
    for layer in _linears(net.body):
        h = _act(act, h @ layer.weight.T + layer.bias)
    return h


def _maxpool2(x: torch.Tensor, spatial: int) -> torch.Tensor:
    """2-wide max-pool with floor: crop every side to even, then max over the pairs."""
    if spatial == 1:
        L = x.shape[-1] // 2
        return x[..., :2 * L].reshape(*x.shape[:-1], L, 2).amax(-1)
    H, W = x.shape[-2] // 2, x.shape[-1] // 2
    x = x[..., :2 * H, :2 * W].reshape(*x.shape[:-2], H, 2, W, 2)
    return x.amax(dim=(-1, -3))


def _naive_cnn(net: SmallCNN, x: torch.Tensor, act: str) -> torch.Tensor:
    spatial = x.dim() - 2
    conv = F.conv1d if spatial == 1 else F.conv2d
    convs = [m for m in net.conv if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    h = x
    for c in convs:
        h = _maxpool2(_act("relu", conv(h, c.weight, c.bias, padding=1)), spatial)
    h = h.reshape(h.shape[0], -1)
    return _act(act, h @ net.hidden.weight.T + net.hidden.bias)


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize(("shape", "depth", "width", "batch"),
                         [((1, 3, 2), 1, 1, 1), ((2, 1, 5), 3, 5, 4), ((7,), 2, 3, 2)])
def test_mlp_features_equal_a_naive_forward(act, shape, depth, width, batch):
    """Flatten -> [x W^T + b -> act] x depth, written out; logits = classifier(features)."""
    torch.manual_seed(1)
    net = build_network("mlp", shape, 3, depth=depth, width=width, act=act).double()
    with torch.no_grad():  # non-zero biases, so that a missing bias term shows
        for layer in _linears(net):
            layer.bias.normal_()
    x = torch.randn(batch, *shape, dtype=torch.float64)
    with torch.no_grad():
        feats, logits = net.features(x), net(x)
        ref = _naive_mlp(net, x, act)
    assert feats.shape == (batch, width) and feats.dtype == torch.float64
    torch.testing.assert_close(feats, ref, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(logits, ref @ net.classifier.weight.T + net.classifier.bias,
                               rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize(("shape", "batch", "act"), [((1, 4), 1, "relu"), ((2, 9), 3, "tanh"),
                                                     ((2, 5, 9), 2, "leaky_relu"),
                                                     ((3, 4, 4), 1, "gelu"),
                                                     ((1, 7, 6), 3, "linear")])
def test_small_cnn_features_equal_a_naive_forward(shape, batch, act):
    """Two [conv (padding 1) -> relu -> 2-wide max-pool with floor] blocks, flatten, hidden
    Linear, act: odd sides (5, 7, 9) lose their last row/column in each pool."""
    torch.manual_seed(2)
    net = build_network("cnn", shape, 4, width=6, act=act).double()
    x = torch.randn(batch, *shape, dtype=torch.float64)
    with torch.no_grad():
        feats, logits = net.features(x), net(x)
        ref = _naive_cnn(net, x, act)
    assert feats.shape == (batch, 6)
    torch.testing.assert_close(feats, ref, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(logits, net.classifier(ref), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(("arch", "shape"), [("mlp", (1, 3, 3)), ("cnn", (1, 6, 5)),
                                             ("resnet20", (2, 5, 6)), ("resnet20", (1, 9))])
def test_float64_networks_agree_with_float32(arch, shape):
    """A float64 copy gives float64 features and logits equal to the float32 network's to
    float32 rounding (eval mode: ResNet-20's BatchNorm uses the running statistics, kept
    float64 with its feature scale)."""
    torch.manual_seed(3)
    net = build_network(arch, shape, 3, depth=2, width=5).eval()
    net64 = build_network(arch, shape, 3, depth=2, width=5).eval()
    net64.load_state_dict(net.state_dict())
    net64 = net64.double()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        f32, f64 = net.features(x), net64.features(x.double())
        out64 = net64(x.double())
    assert f64.dtype == out64.dtype == torch.float64
    assert all(b.dtype == torch.float64 for b in net64.buffers() if b.is_floating_point())
    torch.testing.assert_close(f64, f32.double(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out64, net64.classifier(f64), rtol=0, atol=0)


def test_resnet20_pads_exactly_the_28_by_28_images():
    """A 28x28 image's features are those of the same image zero-padded to 32x32 by hand; a
    28x27 image is not padded (its stem sees 28x27); a batch of one in eval mode."""
    torch.manual_seed(4)
    net = build_network("resnet20", (1, 28, 28), 3).double().eval()
    x = torch.randn(1, 1, 28, 28, dtype=torch.float64)
    seen: list[tuple[int, ...]] = []
    hook = net.stem.register_forward_hook(lambda _m, i, _o: seen.append(tuple(i[0].shape)))
    with torch.no_grad():
        a = net.features(x)
        padded = torch.zeros(1, 1, 32, 32, dtype=torch.float64)
        padded[:, :, 2:30, 2:30] = x
        b = net.features(padded)
        net.features(x[..., :27])
    hook.remove()
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert seen[0] == (1, 1, 32, 32) and seen[-1] == (1, 1, 28, 27)


@pytest.mark.parametrize(("arch", "shape", "act"), [("mlp", (4,), "leaky_relu"),
                                                    ("mlp", (2, 3), "linear"),
                                                    ("cnn", (1, 5, 4), "relu"),
                                                    ("cnn", (1, 8), "leaky_relu"),
                                                    ("resnet20", (1, 6, 6), "relu")])
def test_rescale_last_hidden_multiplies_the_features_by_alpha(arch, shape, act):
    """The intervention's exactness for positively homogeneous activations, logits included
    (ResNet-20 in eval mode)."""
    torch.manual_seed(5)
    net = build_network(arch, shape, 3, depth=2, width=4, act=act).double().eval()
    with torch.no_grad():
        for layer in _linears(net):
            layer.bias.normal_()
    x = torch.randn(3, *shape, dtype=torch.float64)
    with torch.no_grad():
        before = net.features(x)
        net.rescale_last_hidden(0.37)
        after, logits = net.features(x), net(x)
    torch.testing.assert_close(after, 0.37 * before, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(logits, net.classifier(after), rtol=0, atol=0)


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("name", [["relu"], {"relu": 1}])
def test_unhashable_activation_name_is_an_input_error(name):
    """Fixed: ``name not in table`` raised TypeError (unhashable type) before."""
    with pytest.raises(InputError, match=r"unknown activation .*allowed: linear, relu"):
        activation(name)
    with pytest.raises(InputError, match="unknown activation"):
        MLP(4, 3, 1, 2, act=name)


@pytest.mark.parametrize(("arch", "shape", "message"), [
    ("resnet20", (1, 0, 8), "ResNet-20 needs spatial sizes that are integers >= 1, got inputs "
                            "of shape (1, 0, 8)"),
    ("resnet20", (1, -3), "ResNet-20 needs spatial sizes that are integers >= 1, got inputs of "
                          "shape (1, -3)"),
    ("resnet20", (1, 8.5, 8), "ResNet-20 needs spatial sizes that are integers >= 1, got "
                              "inputs of shape (1, 8.5, 8)"),
    ("mlp", (1, -2, -3), "the MLP needs inputs whose sizes are integers >= 1, got inputs of "
                         "shape (1, -2, -3)"),
    ("mlp", 64, "the input shape must be a tuple (C, *spatial) of sizes, got 64"),
    ("cnn", (), "the input shape must be a tuple (C, *spatial) of sizes, got ()"),
])
def test_build_network_refuses_sizes_it_cannot_build_on(arch, shape, message):
    """Fixed: ResNet-20 built on these (failing in torch at the first forward, or running on
    (1, 8.5, 8)); the MLP multiplied the two negative sizes into 6 inputs; 64 raised
    TypeError in math.prod."""
    with pytest.raises(InputError) as info:
        build_network(arch, shape, 3)
    assert str(info.value) == message


def test_build_network_keeps_its_other_refusals():
    """Zero inputs, zero depth, negative width and an unknown activation keep their messages
    (they name the argument and the allowed values)."""
    cases = [(("mlp", (0, 4), 3), "the MLP needs in_features (the flattened input size) >= 1, "
                                  "got 0"),
             (("mlp", (1, 4), 3, 0), "MLP depth must be an integer >= 1, got 0"),
             (("mlp", (1, 4), 3, 2, -4), "MLP width must be an integer >= 1, got -4"),
             (("cnn", (1, 8, 8), 3, 2, -1), "CNN width must be an integer >= 1, got -1"),
             (("mlp", (1, 4), 3, 2, 4, "swish"), "unknown activation 'swish'; allowed: linear, "
                                                 "relu, leaky_relu, tanh, gelu, silu"),
             (("resnet20", (0, 8, 8), 3), "ResNet-20 needs at least one input channel, got 0")]
    for args, message in cases:
        with pytest.raises(InputError) as info:
            build_network(*args)
        assert str(info.value) == message


# ----------------------------------------------------------------------------- tracking
def _tiny_resnet_config(nc_every: int) -> TrainConfig:
    config = dataclasses.replace(preset("resnet20", epochs=(2, 1)), nc_every=nc_every)
    phases = tuple(dataclasses.replace(p, batch_size=8) for p in config.phases)
    return dataclasses.replace(config, phases=phases, eval_test=False)


def test_nc_tracking_does_not_change_resnet_training():
    """Records after every epoch (eval-mode passes between training steps) or only at the
    phase ends: the same parameters and BatchNorm running statistics, bit for bit; the same
    run twice writes the same log."""
    data = load_dataset("digits", per_class=3, test_per_class=1)
    dense = train(_tiny_resnet_config(1), data)
    sparse = train(_tiny_resnet_config(100), data)
    again = train(_tiny_resnet_config(1), data)
    assert list(dense.log["time"]) == [0.0, 1.0, 2.0, 3.0]
    assert list(sparse.log["time"]) == [0.0, 2.0, 3.0]
    a, b = dense.model.state_dict(), sparse.model.state_dict()
    assert a.keys() == b.keys()
    moved = [k for k in a if k.endswith("running_mean")]
    assert moved and all(float(a[k].abs().max()) > 0 for k in moved)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    pd.testing.assert_frame_equal(dense.log, again.log)


def test_tracking_and_surrogate_reads_leave_a_training_resnet_untouched():
    """extract, nc_record, network_state and feature_velocities on a ResNet-20 in training
    mode: still in training mode, every parameter and buffer unchanged, no gradient left."""
    data = load_dataset("digits", per_class=3, test_per_class=1)
    torch.manual_seed(6)
    net = build_network("resnet20", data.input_shape, 10)
    with torch.no_grad():
        net(data.x_train)  # move the running statistics off their initial values
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    extract(net, data.x_train[:5])
    nc_record(net, data, "mse")
    state = sg.network_state(net, data, 2)
    sg.feature_velocities(net, data, state.index, 1e-3, None)
    assert net.training and all(m.training for m in net.modules())
    assert all(p.grad is None for p in net.parameters())
    after = net.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key


# ----------------------------------------------------------------------------- surrogate
def _gauss(per_class: int = 4, classes: int = 3, dim: int = 5) -> Dataset:
    return load_dataset("gaussian", per_class=per_class, classes=classes, dim=dim, seed=0)


def _mlp(data: Dataset, seed: int = 0, **kw) -> MLP:
    torch.manual_seed(seed)
    net = build_network("mlp", data.input_shape, data.classes, depth=kw.get("depth", 2),
                        width=kw.get("width", 6))
    with torch.no_grad():
        for layer in _linears(net):
            layer.bias.normal_(0.0, 0.1)
    return net


def test_network_state_is_the_naive_class_major_feature_matrix():
    """H (d, K n) = the naive features of the balanced subsample, class by class; W and b are
    copies (a later change of the network leaves the state as it was)."""
    data = _gauss()
    net = _mlp(data)
    state = sg.network_state(net, data, 2, seed=3)
    y = data.y_train.numpy()
    assert list(y[state.index]) == [0, 0, 1, 1, 2, 2]
    with torch.no_grad():
        ref = _naive_mlp(net.double(), data.x_train[state.index].double(), "relu").numpy().T
    np.testing.assert_allclose(state.H, ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(state.W, net.classifier.weight.detach().numpy())
    w = state.W.copy()
    with torch.no_grad():
        net.classifier.weight.add_(1.0)
    np.testing.assert_array_equal(state.W, w)
    assert state.fn == pytest.approx(float(np.linalg.norm(ref, axis=0).mean()), rel=1e-6)


def test_network_state_of_a_float64_model():
    """Fixed: a float64 model raised torch's dtype error (the float32 data went in as they
    were); now its features equal the naive float64 ones and feature_velocities' H."""
    data = _gauss()
    net = _mlp(data).double()
    state = sg.network_state(net, data, 2)
    with torch.no_grad():
        ref = _naive_mlp(net, data.x_train[state.index].double(), "relu").numpy().T
    np.testing.assert_allclose(state.H, ref, rtol=1e-13, atol=1e-14)
    h, _, _ = sg.feature_velocities(net, data, state.index, 1e-3, None)
    np.testing.assert_allclose(h, state.H, rtol=1e-13, atol=1e-14)
    assert next(net.parameters()).dtype == torch.float64


def test_network_state_refuses_a_class_without_samples():
    """Fixed: a training set without class 2 (of the network's 3) gave a state of 2 x 2
    columns, which calibrate_response then refused as not built by network_state."""
    data = _gauss()
    keep = data.y_train != 2
    short = Dataset("short", data.x_train[keep], data.y_train[keep], data.x_test, data.y_test, 3)
    with pytest.raises(InputError) as info:
        sg.network_state(_mlp(data), short, 2)
    assert str(info.value) == ("the training set has no sample of class(es) 2 of the network's "
                               "3 classes; the surrogate needs 2 samples of every class")
    with pytest.raises(InputError, match="per_class must be an integer >= 1"):
        sg.network_state(_mlp(data), data, None)


DIVERGED = "hold NaN or infinite values (a diverged run?)"


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_diverged_networks_and_states_are_refused_as_such(bad):
    """Fixed: a NaN weight gave a state whose balance calibration read 'features are all zero'
    and whose response calibration read 'fit the targets exactly'; an infinite one gave
    lambda_H = 0.0 without a word."""
    data = _gauss()
    net = _mlp(data)
    good = sg.network_state(net, data, 2)
    with torch.no_grad():
        net.body[1].weight[0, 0] = bad
    with pytest.raises(InputError, match=re.escape(DIVERGED)):
        sg.network_state(net, data, 2)
    state = dataclasses.replace(good, H=good.H.copy())
    state.H[0, 0] = bad
    v = -np.ones_like(good.H)
    for call in (lambda: sg.calibrate_lambda_h(state, 0.01),
                 lambda: sg.calibrate_response(state, v, v, 2 / 3),
                 lambda: sg.surrogate_spec(state, 0.01, 0.01, 5.0)):
        with pytest.raises(InputError, match=re.escape(DIVERGED)):
            call()
    v_bad = v.copy()
    v_bad[1, 2] = bad
    with pytest.raises(InputError, match=r"feature velocities hold NaN or infinite"):
        sg.calibrate_response(good, v_bad, v, 2 / 3)


@pytest.mark.parametrize("factor", [0.0, -2 / 3, math.nan])
def test_response_calibration_refuses_a_time_factor_that_is_not_positive(factor):
    """Fixed: 0 divided the velocities into inf/NaN ('move against the loss gradient (eta_H =
    nan)'), -2/3 flipped the fit into the same wrong message."""
    data = _gauss()
    net = _mlp(data)
    state = sg.network_state(net, data, 2)
    _, vd, vw = sg.feature_velocities(net, data, state.index, 1e-3, None)
    with pytest.raises(InputError, match=r"time_factor_ must be a finite number > 0"):
        sg.calibrate_response(state, vd, vw, factor)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"loss": "CE"}, "loss must be 'ce' or 'mse' (the network's phase loss), got 'CE'"),
    ({"batch": -1}, "batch must be an integer >= 1 (samples per forward pass), got -1"),
    ({"batch": 0}, "batch must be an integer >= 1 (samples per forward pass), got 0"),
    ({"batch": 2.5}, "batch must be an integer >= 1 (samples per forward pass), got 2.5"),
    ({"weight_decay": -1.0}, "weight_decay must be a finite number >= 0, got -1.0"),
    ({"weight_decay": math.nan}, "weight_decay must be a finite number >= 0, got nan"),
    ({"decayed": {"nope", "classifier.weight"}},
     "decayed names parameters the network does not have: nope; give names of "
     "model.named_parameters() (see ncsim.validate.train.decayed_names)"),
], ids=["loss", "batch-neg", "batch-0", "batch-frac", "wd-neg", "wd-nan", "decayed"])
def test_feature_velocities_refuse_bad_arguments(kwargs, message):
    """Fixed: 'CE' gave the MSE velocities, batch -1 gave v_data = 0 (no batch ran), batch 0
    raised range()'s ValueError, a negative decay was used and an unknown decayed name was
    dropped (v_decay = 0)."""
    data = _gauss()
    net = _mlp(data)
    index = sg.network_state(net, data, 2).index
    args = {"weight_decay": 1e-3, "decayed": None, **kwargs}
    with pytest.raises(InputError) as info:
        sg.feature_velocities(net, data, index, **args)
    assert str(info.value) == message


def test_resnet_feature_velocities_equal_finite_differences():
    """ResNet-20 (1-D, BatchNorm running statistics moved, feature scale 0.7): the JVP
    velocities equal central differences of the eval-mode float64 features along the tangents
    -grad(mean loss over the training set) and -wd theta (every parameter decayed), for
    batches of 5 and of all samples; a decay of the classifier alone does not move them."""
    torch.manual_seed(7)
    K, n = 3, 3
    x = torch.randn(K * n, 1, 6)
    y = torch.arange(K).repeat_interleave(n)
    data = Dataset("sig", x, y, x[:0], y[:0], K)
    net = build_network("resnet20", (1, 6), K)
    with torch.no_grad():
        net(x * 2.0 + 0.3)  # training-mode pass: running statistics move
        net.rescale_last_hidden(0.7)
    index = np.array([0, 4, 8, 2])
    h, vd, vw = sg.feature_velocities(net, data, index, 0.05, None)
    _, vd5, vw5 = sg.feature_velocities(net, data, index, 0.05, None, batch=5)
    np.testing.assert_allclose(vd5, vd, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(vw5, vw, rtol=1e-10, atol=1e-13)
    classifier = {"classifier.weight", "classifier.bias"}  # the features do not depend on it
    _, vd_c, vw_c = sg.feature_velocities(net, data, index, 0.05, classifier)
    assert np.array_equal(vd_c, vd) and np.abs(vw_c).max() == 0.0

    ref = build_network("resnet20", (1, 6), K).double().eval()
    ref.load_state_dict(net.state_dict())
    params = list(ref.parameters())
    loss = F.mse_loss(ref(x.double()), F.one_hot(y, K).double())
    grads = torch.autograd.grad(loss, params)
    decay = [-0.05 * p.detach() for p in params]

    def moved(direction, eps):
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p.add_(eps * d)
            out = ref.features(x[index].double()).numpy().T.copy()
            for p, d in zip(params, direction, strict=True):
                p.sub_(eps * d)
        return out

    eps = 1e-7  # small: at 1e-5 the difference steps over ReLU kinks (off by 0.07)
    for direction, v in (([-g for g in grads], vd), (decay, vw)):
        fd = (moved(direction, eps) - moved(direction, -eps)) / (2 * eps)
        np.testing.assert_allclose(v, fd, rtol=1e-6, atol=1e-7 * max(np.abs(fd).max(), 1.0))
    with torch.no_grad():
        np.testing.assert_allclose(h, ref.features(x[index].double()).numpy().T, rtol=1e-13)
    assert np.abs(vd).max() > 1e-3 and np.abs(vw).max() > 1e-3


def test_surrogate_simulation_equals_a_naive_ufm_mse_flow():
    """surrogate_spec + simulate against scipy's integration of the flow written here:
    R = W H + b 1^T - Y, dH/dt = -eta_H (W^T R / N + lambda_H H), dW/dt = -(R H^T / N +
    lambda_W W), db/dt = -(R 1 / N + lambda_W b): fn at every recorded time."""
    from scipy.integrate import solve_ivp

    from ncsim.flow import simulate

    rng = np.random.default_rng(0)
    K, n, d = 3, 2, 4
    N = K * n
    state = sg.SurrogateState(H=rng.normal(size=(d, N)), W=0.5 * rng.normal(size=(K, d)),
                              b=0.1 * rng.normal(size=K), per_class=n)
    lam_w, lam_h, eta = 0.05, 0.02, 2.5
    sim = simulate([sg.surrogate_spec(state, lam_w, lam_h, 3.0, records=8, eta_h=eta)])
    traj = sim.trajectories
    Y = np.repeat(np.eye(K), n, axis=1)

    def rhs(_t, z):
        H = z[:d * N].reshape(d, N)
        W = z[d * N:d * N + K * d].reshape(K, d)
        b = z[d * N + K * d:]
        R = W @ H + b[:, None] - Y
        return np.concatenate([(-eta * (W.T @ R / N + lam_h * H)).ravel(),
                               (-(R @ H.T / N + lam_w * W)).ravel(),
                               -(R.sum(1) / N + lam_w * b)])

    times = traj["time"].to_numpy()
    z0 = np.concatenate([state.H.ravel(), state.W.ravel(), state.b])
    sol = solve_ivp(rhs, (0.0, times[-1]), z0, t_eval=times, rtol=1e-11, atol=1e-12,
                    method="DOP853")
    fn = np.linalg.norm(sol.y[:d * N].reshape(d, N, -1), axis=0).mean(0)
    assert len(times) == 8 and times[-1] == pytest.approx(3.0)
    np.testing.assert_allclose(traj["fn"].to_numpy(), fn, rtol=1e-5)
    assert fn[-1] < 0.9 * fn[0]  # the flow moved the features


# ----------------------------------------------------------------------------- stacked
@pytest.mark.parametrize("shape", [(1, 12), (1, 5, 6)])
def test_stacked_cnn_equals_separate_trainings(shape):
    """The vmap loop trains the 1-D and 2-D CNN (max-pools, convs under vmap) as separate
    trainings do (momentum SGD, then AdamW with decay on the last layer): parameters to
    float32 rounding of the batched products, logs likewise; recording NC every epoch or
    only at the phase ends leaves the stacked parameters bit for bit the same."""
    gen = torch.Generator().manual_seed(0)
    K, n = 3, 6
    x = torch.randn(K * n, *shape, generator=gen)
    y = torch.arange(K).repeat_interleave(n)
    x = x + y.float().reshape(-1, *([1] * len(shape)))
    data = Dataset("toy", x, y, x[:0], y[:0], K)
    phases = (Phase("ce", 2, "sgd", 0.05, 1e-3, batch_size=8, momentum=0.9),
              Phase("mse", 1, "adamw", 1e-3, 1e-3, batch_size=8, decay_last=1))
    config = TrainConfig(arch="cnn", width=8, phases=phases, nc_every=1, eval_test=False)
    seeds = [0, 5]
    runs = train_stacked(config, data, seeds)
    sparse = train_stacked(dataclasses.replace(config, nc_every=100), data, seeds)
    for seed, run, other in zip(seeds, runs, sparse, strict=True):
        alone = train(dataclasses.replace(config, seed=seed), data)
        for (name, p), (_, q), (_, r) in zip(alone.model.named_parameters(),
                                             run.model.named_parameters(),
                                             other.model.named_parameters(), strict=True):
            torch.testing.assert_close(q.detach(), p.detach(), rtol=1e-5, atol=1e-6, msg=name)
            assert torch.equal(q, r), name
        for col in ("loss", "fn", "nc1_trace", "accuracy", "flow_time"):
            assert run.log[col].tolist() == pytest.approx(alone.log[col].tolist(), rel=1e-4)
    assert not torch.equal(runs[0].model.hidden.weight, runs[1].model.hidden.weight)
