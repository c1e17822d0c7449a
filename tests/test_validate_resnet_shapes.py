"""ResNet-20 on inputs other than 28x28 and 32x32 images: any image size (the digits' 8x8) and,
in its one-dimensional form, signals (C, L) (MNIST-1D's (1, 40)).

References built independently of the network code:
- parameter counts written out layer by layer for kernels of width 3 (1-D) and 3x3 (2-D);
- the 1-D network against the 2-D network on (C, 1, L) images whose 3x3 kernels hold the 1-D
  kernels in their middle row and zeros elsewhere: on an image one pixel high, the top and
  bottom kernel rows only ever meet the zero padding, and BatchNorm2d over (N, 1, L) maps
  normalises over the same N x L values as BatchNorm1d over (N, L), so the two networks
  compute the same function, in training and in eval mode.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from ncsim.errors import InputError
from ncsim.metrics import nc_metrics
from ncsim.validate.data import load_dataset
from ncsim.validate.networks import ResNet20, build_network
from ncsim.validate.train import preset, train


def conv_weights(cin: int, cout: int, taps: int) -> int:
    return cin * cout * taps


def resnet20_count_by_hand(channels: int, classes: int, taps: int) -> int:
    """ResNet-20 parameters with kernels of ``taps`` weights (3 in 1-D, 9 in 2-D); the 1-wide
    projection shortcuts have one tap in either form; BatchNorm has a scale and a shift."""
    total = conv_weights(channels, 16, taps) + 2 * 16
    cin = 16
    for cout in (16, 32, 64):
        for block in range(3):
            total += conv_weights(cin, cout, taps) + 2 * cout
            total += conv_weights(cout, cout, taps) + 2 * cout
            if block == 0 and cin != cout:
                total += conv_weights(cin, cout, 1) + 2 * cout
            cin = cout
    return total + 64 * classes + classes


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("shape", "taps"), [((1, 40), 3), ((2, 17), 3), ((1, 8, 8), 9),
                                             ((3, 5, 7), 9)])
def test_parameter_counts_of_other_input_shapes(shape, taps):
    """Signals get 3-wide kernels, images 3x3 kernels, whatever their size; one channel and
    K = 10 in 1-D gives 93,914 parameters (the module docstring's number)."""
    net = build_network("resnet20", shape, 10)
    assert n_params(net) == resnet20_count_by_hand(shape[0], 10, taps)
    assert resnet20_count_by_hand(1, 10, 3) == 93_914
    layer = nn.Conv1d if len(shape) == 2 else nn.Conv2d
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    assert convs and all(type(m) is layer for m in convs)


@pytest.mark.parametrize("shape", [(1, 40), (1, 8, 8), (2, 5, 7), (1, 3), (1, 1, 1)])
def test_features_are_64_pooled_channels_for_any_size(shape):
    """The features are the 64 channels of the last stage averaged over its positions, for
    sizes that the two stride-2 stages reduce to a single position (3, 1x1) as well."""
    torch.manual_seed(0)
    net = build_network("resnet20", shape, 5).double().eval()
    x = torch.randn(4, *shape, dtype=torch.float64)
    with torch.no_grad():
        last_stage = net.blocks(net.stem(x))
        expected = last_stage.flatten(2).mean(dim=2)
        feats = net.features(x)
        logits = net(x)
    assert feats.shape == (4, 64)
    torch.testing.assert_close(feats, expected, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(logits, net.classifier(feats), rtol=0, atol=0)


def test_stage_sizes_of_digits_and_mnist1d():
    """The digits' 8x8 run through stages of 8x8, 4x4 and 2x2; MNIST-1D's 40 positions
    through 40, 20 and 10 (two stride-2 stages, padding 1)."""
    for shape, sizes in (((1, 8, 8), [(8, 8), (4, 4), (2, 2)]), ((1, 40), [(40,), (20,), (10,)])):
        net = build_network("resnet20", shape, 10).eval()
        seen = []
        hooks = [net.blocks[i].register_forward_hook(
            lambda _m, _i, out, seen=seen: seen.append(tuple(out.shape[2:]))) for i in (0, 3, 6)]
        with torch.no_grad():
            net(torch.randn(2, *shape))
        for h in hooks:
            h.remove()
        assert seen == sizes


def copy_1d_into_2d(net1: ResNet20, net2: ResNet20) -> None:
    """Give ``net2`` (2-D) 3x3 kernels whose middle row is ``net1``'s 3-wide kernel (zeros
    above and below), 1x1 shortcuts equal to the 1-wide ones, and the same BatchNorm and
    classifier parameters."""
    mods1 = dict(net1.named_modules())
    with torch.no_grad():
        for name, m2 in net2.named_modules():
            m1 = mods1[name]
            if isinstance(m2, nn.Conv2d):
                m2.weight.zero_()
                row = m2.weight.shape[2] // 2
                m2.weight[:, :, row, :] = m1.weight
            elif isinstance(m2, (nn.BatchNorm2d, nn.Linear)):
                m2.weight.copy_(m1.weight)
                m2.bias.copy_(m1.bias)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_one_dimensional_form_equals_the_image_form_on_one_pixel_high_images(mode):
    """Same function as the 2-D network on (C, 1, L) images with middle-row kernels: features
    to float64 rounding, in training mode (batch statistics) and after a training-mode pass
    has moved the running statistics (eval mode)."""
    torch.manual_seed(3)
    net1 = build_network("resnet20", (2, 21), 6).double()
    net2 = build_network("resnet20", (2, 1, 21), 6).double()
    copy_1d_into_2d(net1, net2)
    x = torch.randn(7, 2, 21, dtype=torch.float64)
    with torch.no_grad():
        net1.train()(x)
        net2.train()(x[:, :, None, :])  # running statistics move the same way
        getattr(net1, mode)()
        getattr(net2, mode)()
        y = torch.randn(5, 2, 21, dtype=torch.float64) + 0.5
        f1, f2 = net1.features(y), net2.features(y[:, :, None, :])
    torch.testing.assert_close(f1, f2, rtol=1e-12, atol=1e-12)
    assert f1.abs().max() > 0.1  # not a trivial zero function


def test_resnet20_refuses_shapes_and_channels_it_cannot_take():
    """Inputs with no spatial axis or three of them, no channels, or a spatial rank other
    than 1 or 2 are refused with what is accepted."""
    with pytest.raises(InputError, match=r"images \(C, H, W\) or signals \(C, L\)"):
        build_network("resnet20", (1, 4, 4, 4), 10)
    with pytest.raises(InputError, match=r"images \(C, H, W\) or signals \(C, L\)"):
        build_network("resnet20", (40,), 10)
    with pytest.raises(InputError, match="at least one input channel"):
        ResNet20(in_channels=0)
    with pytest.raises(InputError, match="spatial = 1"):
        ResNet20(in_channels=1, spatial=3)


@pytest.mark.parametrize("dataset", ["digits", "mnist1d"])
def test_resnet20_trains_on_the_digits_and_mnist1d(dataset):
    """The paper's ResNet-20 protocol, shortened to 2 + 2 epochs on 8 samples per class, runs
    on the digits (8x8) and MNIST-1D (length 40): a record at every epoch with finite
    metrics, and the last record's NC metrics are those of the trained network's own 64-d
    eval-mode features of the training set (ncsim.metrics.nc_metrics in float64)."""
    if dataset == "mnist1d":
        pytest.importorskip("mnist1d")
    data = load_dataset(dataset, per_class=8, test_per_class=2)
    config = dataclasses.replace(preset("resnet20", epochs=(2, 2)), nc_every=1)
    phases = tuple(dataclasses.replace(p, batch_size=16) for p in config.phases)
    run = train(dataclasses.replace(config, phases=phases), data)
    log = run.log
    assert list(log["time"]) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert list(log["phase"]) == [1, 1, 1, 2, 2]
    assert np.isfinite(log[["fn", "nc1_trace", "nc2_etf", "loss"]].to_numpy()).all()
    model = run.model.eval()
    with torch.no_grad():
        feats = model.features(data.x_train).double()
    assert feats.shape == (80, 64)
    ref = nc_metrics(feats[None], data.y_train, data.classes,
                     model.classifier.weight.detach().double()[None],
                     model.classifier.bias.detach().double()[None])
    last = log.iloc[-1]
    for name in ("fn", "nc1_trace", "nc2_etf", "nc3"):
        assert last[name] == pytest.approx(float(ref[name][0]), rel=1e-5), name
