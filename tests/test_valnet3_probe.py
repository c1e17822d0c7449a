"""Third mutation probe of ncsim.validate.networks: BatchNorm in training mode, init laws,
constructor defaults and exact refusals.

ResNet-20 in training mode written out with batch statistics and PyTorch's default BatchNorm
constants (eps 1e-5, momentum 0.1) hard-coded here, the running statistics after one training
pass, eval mode's per-sample behaviour; Kaiming *normal* (not uniform) initialisation told
apart by the tail beyond sqrt(3) standard deviations (a uniform law of the same variance has
none); seed dependence of the initialisation; the constructors' defaults; exact messages.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ncsim.errors import InputError
from ncsim.validate.networks import (
    ACTIVATIONS,
    ARCHS,
    HOMOGENEOUS,
    MLP,
    ResNet20,
    SmallCNN,
    activation,
    build_network,
)

EPS = 1e-5  # torch's BatchNorm default, written here so that the network's own eps is not used
MOMENTUM = 0.1
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, NORMS)]


def _affine(model: nn.Module, seed: int) -> None:
    """BatchNorm scales and shifts away from 1 and 0 (running statistics stay fresh)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in _norms(model):
            n = m.num_features
            m.weight.copy_(0.5 + torch.rand(n, generator=gen, dtype=m.weight.dtype))
            m.bias.copy_(torch.randn(n, generator=gen, dtype=m.bias.dtype))


def _bn_train(u: torch.Tensor, m: nn.Module) -> torch.Tensor:
    """Batch-statistics normalisation: biased variance over batch and positions, eps 1e-5."""
    dims = [0, *range(2, u.dim())]
    mean = u.mean(dim=dims, keepdim=True)
    var = u.var(dim=dims, unbiased=False, keepdim=True)
    shape = (1, -1) + (1,) * (u.dim() - 2)
    return (u - mean) / torch.sqrt(var + EPS) * m.weight.view(shape) + m.bias.view(shape)


def _conv(u: torch.Tensor, m: nn.Module, stride: int, padding: int) -> torch.Tensor:
    fn = F.conv1d if u.dim() == 3 else F.conv2d
    return fn(u, m.weight, None, stride, padding)


@pytest.mark.parametrize("shape", [(1, 6, 6), (2, 11)])
def test_resnet20_training_mode_uses_batch_statistics_with_eps_1e5(shape):
    """In training mode every BatchNorm (stem, both block norms, projection shortcuts)
    normalises by the batch's own mean and biased variance with eps 1e-5."""
    torch.manual_seed(21)
    net = build_network("resnet20", shape, 3).double()
    _affine(net, 3)
    net.train()
    x = 0.7 * torch.randn(5, *shape, dtype=torch.float64) + 0.3
    with torch.no_grad():
        u = torch.relu(_bn_train(_conv(x, net.stem[0], 1, 1), net.stem[1]))
        cin = 16
        for block, stride, cout in zip(net.blocks, [1, 1, 1, 2, 1, 1, 2, 1, 1],
                                       [16, 16, 16, 32, 32, 32, 64, 64, 64], strict=True):
            out = torch.relu(_bn_train(_conv(u, block.conv1, stride, 1), block.bn1))
            out = _bn_train(_conv(out, block.conv2, 1, 1), block.bn2)
            if stride != 1 or cin != cout:
                short = _bn_train(_conv(u, block.shortcut[0], stride, 0), block.shortcut[1])
            else:
                short = u
            u = torch.relu(out + short)
            cin = cout
        ref = u.flatten(2).mean(dim=2)
        got = net.features(x)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


def test_resnet20_running_statistics_after_one_training_pass():
    """One training-mode pass from fresh statistics (mean 0, variance 1) leaves every one of
    the 21 BatchNorms with running mean 0.1 x batch mean and running variance
    0.9 + 0.1 x the unbiased batch variance (momentum 0.1), counted once."""
    torch.manual_seed(22)
    net = build_network("resnet20", (1, 6, 6), 3).double().train()
    norms = _norms(net)
    assert len(norms) == 21  # stem + 9 x 2 in the blocks + 2 projection shortcuts
    seen: dict[nn.Module, torch.Tensor] = {}
    for m in norms:
        m.register_forward_pre_hook(lambda mod, inp: seen.__setitem__(mod, inp[0].detach()))
    with torch.no_grad():
        net(torch.randn(4, 1, 6, 6, dtype=torch.float64) + 0.5)
    for m in norms:
        u = seen[m]
        dims = [0, *range(2, u.dim())]
        torch.testing.assert_close(m.running_mean, MOMENTUM * u.mean(dim=dims),
                                   rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(m.running_var,
                                   (1 - MOMENTUM) + MOMENTUM * u.var(dim=dims, unbiased=True),
                                   rtol=1e-12, atol=1e-12)
        assert int(m.num_batches_tracked) == 1


def test_resnet20_eval_mode_is_per_sample_and_keeps_the_buffers():
    """In eval mode a sample's features do not depend on the rest of its batch and the
    running statistics do not move; in training mode they do (batch statistics)."""
    torch.manual_seed(23)
    net = build_network("resnet20", (1, 6, 6), 3).double()
    x = torch.randn(4, 1, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        net.train()
        net(x)  # move the running statistics away from 0 and 1
        net.eval()
        state = {k: v.clone() for k, v in net.state_dict().items()}
        whole = net.features(x)
        alone = net.features(x[:1])
        assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
        torch.testing.assert_close(alone, whole[:1], rtol=1e-12, atol=1e-12)
        net.train()
        assert not torch.allclose(net.features(x[:2])[:1], net.features(x)[:1], atol=1e-6)


def _beyond_sqrt3(w: torch.Tensor, std: float) -> float:
    """Share of entries with |w| > sqrt(3) x std: 0 for a uniform law of that std, 2 (1 -
    Phi(sqrt 3)) = 0.083 for a normal one."""
    return (w.detach().abs() > math.sqrt(3) * std).double().mean().item()


def test_mlp_weights_are_kaiming_normal_not_uniform():
    """MLP Linear weights are normal (tail beyond sqrt(3) std ~ 8.3%), not Kaiming-uniform,
    which has the same std sqrt(2 / fan_in) but no such tail."""
    torch.manual_seed(24)
    net = MLP(500, 300, depth=1, width=300)
    for layer, fan_in in ((net.body[1], 500), (net.classifier, 300)):
        assert 0.07 < _beyond_sqrt3(layer.weight, math.sqrt(2 / fan_in)) < 0.097


def test_resnet20_convs_are_kaiming_normal_not_uniform():
    """Every 2-D ResNet-20 conv is normal with std sqrt(2 / fan_out): pooled over all convs,
    the share beyond sqrt(3) x that std is ~ 8.3% (0 for Kaiming-uniform of the same std)."""
    torch.manual_seed(25)
    net = ResNet20(3, 10)
    hits, total = 0.0, 0
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            hits += _beyond_sqrt3(m.weight, math.sqrt(2 / fan_out)) * m.weight.numel()
            total += m.weight.numel()
    assert total == 272_474 - 2 * 16 * 7 - 2 * 32 * 7 - 2 * 64 * 7 - 650
    assert 0.078 < hits / total < 0.088


@pytest.mark.parametrize(("arch", "shape"), [("mlp", (1, 4, 4)), ("cnn", (1, 8)),
                                             ("resnet20", (1, 5))])
def test_initialisation_follows_the_global_seed(arch, shape):
    """The same torch seed builds identical networks; another seed builds different ones."""
    def build(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return build_network(arch, shape, 3, depth=2, width=6).state_dict()

    a, b, c = build(0), build(0), build(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    weights = [k for k in a if k.endswith("weight") and a[k].dim() > 1]
    assert weights and all(not torch.equal(a[k], c[k]) for k in weights)


def test_constructor_defaults():
    """MLP defaults to 5 hidden layers of 512 (relu), the CNN to a 128-wide hidden layer and
    ResNet-20 to 3 input channels, 10 classes, images: the paper's 272,474 parameters."""
    mlp = MLP(784, 10)
    hand = (784 * 512 + 512) + 4 * (512 * 512 + 512) + (512 * 10 + 10)
    assert sum(p.numel() for p in mlp.parameters()) == hand
    assert sum(isinstance(m, nn.ReLU) for m in mlp.body) == 5
    cnn = SmallCNN((1, 8, 8), 10)
    assert cnn.hidden.out_features == 128 and isinstance(cnn.act, nn.ReLU)
    res = ResNet20()
    assert sum(p.numel() for p in res.parameters()) == 272_474
    assert res.stem[0].in_channels == 3 and isinstance(res.stem[0], nn.Conv2d)
    assert res.classifier.out_features == 10


def test_mlp_of_width_one():
    """Width 1 is a valid MLP: 1-d features, (3+1) + (1+1) + (2+2) = 10 parameters."""
    net = MLP(3, 2, depth=2, width=1)
    assert sum(p.numel() for p in net.parameters()) == 10
    assert net.features(torch.zeros(4, 3)).shape == (4, 1)


def test_name_tuples_and_unknown_activation_message():
    """The allowed names, and the full list in the unknown-activation message."""
    assert ARCHS == ("mlp", "cnn", "resnet20")
    assert ACTIVATIONS == ("linear", "relu", "leaky_relu", "tanh", "gelu", "silu")
    assert HOMOGENEOUS == ("linear", "relu", "leaky_relu")
    with pytest.raises(InputError) as info:
        activation("swish")
    assert str(info.value) == ("unknown activation 'swish'; allowed: linear, relu, leaky_relu, "
                               "tanh, gelu, silu")


@pytest.mark.parametrize("act", ["linear", "leaky_relu", "tanh"])
def test_resnet20_refuses_every_activation_but_relu(act):
    """ResNet-20 takes only relu, even positively homogeneous ones (linear, leaky_relu)."""
    with pytest.raises(InputError) as info:
        build_network("resnet20", (1, 8, 8), 3, act=act)
    assert str(info.value) == (f"ResNet-20's blocks use ReLU; activation {act!r} is not "
                               "available for it (allowed: relu)")


def test_resnet20_exact_shape_and_spatial_messages():
    """The refusals of a rank-1 shape and of a non-integer spatial name their value."""
    with pytest.raises(InputError) as info:
        build_network("resnet20", (40,), 3)
    assert str(info.value) == ("ResNet-20 needs images (C, H, W) or signals (C, L), got inputs "
                               "of shape (40,)")
    with pytest.raises(InputError) as info:
        ResNet20(1, 3, spatial="2")
    assert str(info.value) == ("ResNet-20 takes signals (spatial = 1) or images (spatial = 2), "
                               "got '2'")


def test_small_cnn_refuses_a_fractional_spatial_size():
    """A fractional spatial size is an InputError naming the shape, not a torch TypeError."""
    with pytest.raises(InputError) as info:
        SmallCNN((1, 8.5, 8), 3)
    assert str(info.value) == ("the CNN's two 2-wide max-pools need every spatial size >= 4, "
                               "got inputs of shape (1, 8.5, 8); use a larger input or another "
                               "network (--arch mlp)")


@pytest.mark.parametrize(("build", "message"), [
    (lambda: MLP(0, 3), "the MLP needs in_features (the flattened input size) >= 1, got 0"),
    (lambda: MLP(4, 1), "the MLP needs classes >= 2, got 1"),
    (lambda: MLP(4.5, 3), "the MLP needs in_features (the flattened input size) >= 1, got 4.5"),
    (lambda: SmallCNN((0, 8, 8), 3), "the CNN needs input channels >= 1, got 0"),
    (lambda: SmallCNN((1, 8), 0), "the CNN needs classes >= 2, got 0"),
    (lambda: ResNet20(1, 1), "ResNet-20 needs classes >= 2, got 1"),
    (lambda: ResNet20(1, True), "ResNet-20 needs classes >= 2, got True"),
    (lambda: build_network("mlp", (0, 4), 3), "the MLP needs in_features (the flattened "
                                              "input size) >= 1, got 0"),
], ids=["mlp-in0", "mlp-k1", "mlp-in-frac", "cnn-c0", "cnn-k0", "resnet-k1", "resnet-kbool",
        "build-mlp-empty"])
def test_sizes_that_build_no_classifier_are_refused(build, message):
    """Zero inputs or channels and fewer than two classes are refused before torch sees them."""
    with pytest.raises(InputError) as info:
        build()
    assert str(info.value) == message
