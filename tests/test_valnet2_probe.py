"""Second mutation probe of ncsim.validate.networks: explicit forward passes and refusals.

ResNet-20's basic block, stem and whole feature map written out as plain torch calls
(F.conv1d/F.conv2d, F.batch_norm in eval mode, relu) on the network's own weights, with
BatchNorm parameters and running statistics set away from their initial values; the
feature-scale buffer's place in the state dict; the Kaiming rule of the 1-D convolutions;
output sizes of the small CNN from kernel/stride/padding; and the exact texts of refusals.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ncsim.errors import InputError
from ncsim.validate.networks import MLP, BasicBlock, ResNet20, SmallCNN, build_network


def _randomise_norms(model: nn.Module, seed: int) -> None:
    """BatchNorm scales, shifts and running statistics away from 1, 0, 0, 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=gen, dtype=m.weight.dtype))
                m.bias.copy_(torch.randn(n, generator=gen, dtype=m.bias.dtype))
                m.running_mean.copy_(0.3 * torch.randn(n, generator=gen, dtype=m.bias.dtype))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen, dtype=m.bias.dtype))


def _bn(x: torch.Tensor, m: nn.Module) -> torch.Tensor:
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)


def _conv(x: torch.Tensor, m: nn.Module, stride: int, padding: int) -> torch.Tensor:
    fn = F.conv1d if x.dim() == 3 else F.conv2d
    assert m.bias is None
    return fn(x, m.weight, None, stride, padding)


def _block_ref(block: BasicBlock, x: torch.Tensor, stride: int, project: bool) -> torch.Tensor:
    """relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut x), shortcut = bn(1-wide conv) or x."""
    out = torch.relu(_bn(_conv(x, block.conv1, stride, 1), block.bn1))
    out = _bn(_conv(out, block.conv2, 1, 1), block.bn2)
    short = _bn(_conv(x, block.shortcut[0], stride, 0), block.shortcut[1]) if project else x
    return torch.relu(out + short)


@pytest.mark.parametrize(("cin", "cout", "stride", "spatial", "project"), [
    (4, 4, 1, 2, False), (3, 5, 2, 2, True), (4, 6, 1, 2, True),
    (4, 4, 1, 1, False), (3, 5, 2, 1, True), (4, 6, 1, 1, True)])
def test_basic_block_forward_written_out(cin, cout, stride, spatial, project):
    """A block is relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut x) (eval mode), with a 1-wide
    conv + BatchNorm shortcut whenever the stride or the channel count changes."""
    torch.manual_seed(cin + cout + stride + spatial)
    block = BasicBlock(cin, cout, stride, spatial).double()
    _randomise_norms(block, 7)
    block.eval()
    assert isinstance(block.shortcut, nn.Sequential) == project
    if project:
        assert len(block.shortcut) == 2 and block.shortcut[0].kernel_size == (1,) * spatial
    shape = (3, cin) + (9,) * spatial
    x = torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():
        got = block(x)
        ref = _block_ref(block, x, stride, project)
    out_size = (9 + 2 - 3) // stride + 1
    assert got.shape == (3, cout) + (out_size,) * spatial
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    # the two branches add before the outer relu: some outputs are exactly 0, and some
    # positions where the residual branch alone is negative still come out positive
    assert (got == 0).any() and (got > 0).any()


@pytest.mark.parametrize("shape", [(2, 12), (1, 6, 5)])
def test_resnet20_features_written_out(shape):
    """Features = mean over positions of 9 blocks (strides 1,1,1, 2,1,1, 2,1,1; channels 16,
    32, 64) applied to relu(bn(conv3 x)), all in eval mode with non-trivial BatchNorm."""
    torch.manual_seed(11)
    net = build_network("resnet20", shape, 3).double()
    _randomise_norms(net, 5)
    net.eval()
    x = torch.randn(4, *shape, dtype=torch.float64)
    with torch.no_grad():
        u = torch.relu(_bn(_conv(x, net.stem[0], 1, 1), net.stem[1]))
        strides = [1, 1, 1, 2, 1, 1, 2, 1, 1]
        chans = [16, 16, 16, 32, 32, 32, 64, 64, 64]
        cin = 16
        for block, stride, cout in zip(net.blocks, strides, chans, strict=True):
            u = _block_ref(block, u, stride, project=(stride != 1 or cin != cout))
            cin = cout
        ref = u.flatten(2).mean(dim=2)
        got = net.features(x)
        logits = net(x)
    torch.testing.assert_close(got, ref, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(logits, ref @ net.classifier.weight.T + net.classifier.bias,
                               rtol=1e-11, atol=1e-12)


def test_resnet20_stem_is_conv_batchnorm_relu():
    """The stem is a bias-free 3x3 conv to 16 channels (padding 1), BatchNorm, then ReLU."""
    torch.manual_seed(12)
    net = ResNet20(2, 4).double()
    _randomise_norms(net, 6)
    net.eval()
    x = torch.randn(3, 2, 7, 6, dtype=torch.float64)
    with torch.no_grad():
        ref = torch.relu(_bn(F.conv2d(x, net.stem[0].weight, None, 1, 1), net.stem[1]))
        got = net.stem(x)
    assert got.shape == (3, 16, 7, 6)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def test_feature_scale_is_saved_in_the_state_dict():
    """The intervention's feature scale is a persistent buffer: a rescaled network's state dict
    carries it, and loading that into a fresh network gives the rescaled features."""
    torch.manual_seed(13)
    net = ResNet20(1, 3, spatial=1).eval()
    net.rescale_last_hidden(0.25)
    state = net.state_dict()
    assert float(state["feature_scale"]) == 0.25
    assert "feature_scale" not in dict(net.named_parameters())
    fresh = ResNet20(1, 3, spatial=1).eval()
    fresh.load_state_dict(state)
    x = torch.randn(2, 1, 10)
    with torch.no_grad():
        torch.testing.assert_close(fresh.features(x), net.features(x), rtol=0, atol=0)


def test_resnet20_one_dimensional_convs_are_kaiming_normal_fan_out():
    """1-D ResNet-20 convs get the same Kaiming rule as the 2-D ones: std sqrt(2 / (out x 3))
    (64 -> 64 channels, 3 taps: sqrt(2 / 192)), not PyTorch's default uniform init."""
    torch.manual_seed(14)
    net = ResNet20(1, 10, spatial=1)
    w = net.blocks[8].conv2.weight.detach()
    assert w.shape == (64, 64, 3)
    assert w.std().item() == pytest.approx(math.sqrt(2 / 192), rel=0.03)
    # default init is uniform on +-1/sqrt(fan_in) = +-0.072; a normal draw of std 0.102 exceeds
    # that bound in about half of its 12288 entries
    assert (w.abs() > 1 / math.sqrt(192)).float().mean().item() > 0.4


def test_one_dimensional_resnet_never_pads_signals_of_length_28():
    """Only 2-D inputs are padded: a 1-D network on 28 channels x 28 positions sees them as
    they are (its stem receives (B, 28, 28))."""
    torch.manual_seed(15)
    net = ResNet20(28, 3, spatial=1).eval()
    seen = []
    net.stem[0].register_forward_hook(lambda _m, inp, _out: seen.append(tuple(inp[0].shape)))
    with torch.no_grad():
        feats = net.features(torch.randn(2, 28, 28))
    assert seen == [(2, 28, 28)] and feats.shape == (2, 64)


@pytest.mark.parametrize(("shape", "flat"), [((1, 4), 64), ((2, 9), 128), ((1, 5, 7), 64),
                                             ((3, 11, 8), 64 * 2 * 2)])
def test_small_cnn_flat_size_from_kernel_padding_and_pools(shape, flat):
    """Same-size 3-wide convs then two floor-halving max-pools: 4 -> 1, 9 -> 2, 5x7 -> 1x1,
    11x8 -> 2x2 positions of 64 channels; the smallest accepted side is 4."""
    net = SmallCNN(shape, 3, width=5)
    assert net.hidden.in_features == flat
    assert net(torch.zeros(2, *shape)).shape == (2, 3)


@pytest.mark.parametrize(("shape", "bad"), [((1, 3), "(1, 3)"), ((1, 3, 8), "(1, 3, 8)"),
                                            ((1, 8, 3), "(1, 8, 3)")])
def test_small_cnn_refuses_a_spatial_side_below_four(shape, bad):
    """Every spatial side must be >= 4 (two 2-wide pools); the message names the shape."""
    msg = (f"the CNN's two 2-wide max-pools need every spatial size >= 4, got inputs of shape "
           f"{bad}; use a larger input or another network (--arch mlp)")
    with pytest.raises(InputError) as info:
        SmallCNN(shape, 3)
    assert str(info.value) == msg


def test_small_cnn_refuses_other_ranks_and_bad_widths():
    """The CNN takes (C, L) or (C, H, W) and an integer width >= 1, with these messages."""
    with pytest.raises(InputError) as info:
        build_network("cnn", (1, 4, 4, 4), 3)
    assert str(info.value) == "the CNN needs (C, L) or (C, H, W) inputs, got (1, 4, 4, 4)"
    with pytest.raises(InputError) as info:
        SmallCNN((1, 8), 3, width=0)
    assert str(info.value) == "CNN width must be an integer >= 1, got 0"
    with pytest.raises(InputError) as info:
        SmallCNN((1, 8), 3, width=4.0)
    assert str(info.value) == "CNN width must be an integer >= 1, got 4.0"


@pytest.mark.parametrize(("kwargs", "msg"), [
    ({"width": 0}, "MLP width must be an integer >= 1, got 0"),
    ({"width": 2.5}, "MLP width must be an integer >= 1, got 2.5"),
    ({"depth": 2.5}, "MLP depth must be an integer >= 1, got 2.5"),
    ({"depth": True}, "MLP depth must be an integer >= 1, got True"),
])
def test_mlp_refuses_bad_depth_and_width(kwargs, msg):
    """Depth and width must be integers >= 1 (no floats, no bools), with exact messages."""
    with pytest.raises(InputError) as info:
        MLP(4, 3, **kwargs)
    assert str(info.value) == msg


def test_resnet20_refuses_fractional_channels():
    """A fractional channel count is refused, not truncated to an integer."""
    with pytest.raises(InputError) as info:
        ResNet20(in_channels=1.5)
    assert str(info.value) == "ResNet-20 needs at least one input channel, got 1.5"


def test_mlp_numpy_integer_sizes_build_the_same_network():
    """numpy integers are valid depth and width: MLP(4 -> 5 -> 5 -> 3) has 73 parameters."""
    import numpy as np

    net = MLP(4, 3, depth=np.int64(2), width=np.int64(5))
    assert sum(p.numel() for p in net.parameters()) == 73
    assert net.classifier.in_features == 5 and isinstance(net.classifier.in_features, int)
