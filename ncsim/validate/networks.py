"""Networks for validation runs; each exposes its penultimate features and its classifier.

Every network has
- ``features(x) -> (B, p)``: the penultimate features h (input of the last linear layer),
- ``classifier``: the last ``nn.Linear(p, K)`` (weights W (K, p), bias b (K,)),
- ``forward(x) = classifier(features(x))``,
- ``rescale_last_hidden(alpha)``: multiply the penultimate features by ``alpha`` (the paper's
  intervention: the weight and bias of the last hidden Linear layer times alpha, exact for
  positively homogeneous activations: linear, relu, leaky_relu; ResNet-20 multiplies its pooled
  features by a fixed buffer).

Architectures: an MLP (Flatten -> [Linear -> act] x depth -> Linear; Kaiming-normal weights, zero
biases, as in arXiv 2604.00230), a small CNN (two conv blocks, one hidden Linear), and ResNet-20
(He et al. 2016, CIFAR form: 3 stages x 3 BasicBlocks, 16/32/64 channels, 64-d pooled features;
28x28 inputs are zero-padded to 32x32).

ResNet-20 is fully convolutional up to its global average pool, so it takes images of any size
(C, H, W) (the digits' 8x8 run through stages of 8x8, 4x4 and 2x2) and, with the same topology
in one dimension (3-wide kernels, Conv1d and BatchNorm1d), signals (C, L) such as MNIST-1D's
(1, 40) (stages of 40, 20 and 10 positions). Its 3-wide kernels hold a third of the 3x3
kernels' weights: 93,914 parameters for one channel and K = 10.

ResNet-20's shortcuts where the shape changes are 1x1 convolutions with BatchNorm (He et al.'s
option B): 272,474 parameters for 3 input channels, the paper's 0.272M (He et al.'s CIFAR
networks use option A, zero-padded identities without parameters: 269,722). Grey images keep
one input channel (272,186 parameters), where the paper repeats the grey channel three times;
the two differ only in the stem's initial weights (a 1-channel kernel equals the sum of the
three repeated ones, whose initial scale is sqrt(3) times larger).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ncsim.errors import InputError, is_integer, require

ARCHS = ("mlp", "cnn", "resnet20")
ACTIVATIONS = ("linear", "relu", "leaky_relu", "tanh", "gelu", "silu")
HOMOGENEOUS = ("linear", "relu", "leaky_relu")


def activation(name: str, leaky_slope: float = 0.01) -> nn.Module:
    """Activation module by name (``ACTIVATIONS``)."""
    table = {"linear": nn.Identity, "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU,
             "silu": nn.SiLU}
    if name == "leaky_relu":
        return nn.LeakyReLU(leaky_slope)
    if not isinstance(name, str) or name not in table:  # a list or dict: no TypeError
        raise InputError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    return table[name]()


def _require_size(network: str, what: str, value: Any, least: int) -> int:
    """``value`` as an int, or :class:`InputError` when it is not an integer >= ``least``."""
    require(is_integer(value) and value >= least,
            f"{network} needs {what} >= {least}, got {value!r}")
    return int(value)


class MLP(nn.Module):
    """Fully connected network: ``depth`` hidden layers of ``width`` units, then Linear(width, K).

    Parameters
    ----------
    in_features : flattened input size.
    classes : K >= 2.
    depth : number of hidden layers (>= 1).
    width : hidden width (>= 1).
    act : activation name.
    """

    def __init__(self, in_features: int, classes: int, depth: int = 5, width: int = 512,
                 act: str = "relu") -> None:
        super().__init__()
        require(is_integer(depth) and depth >= 1,
                f"MLP depth must be an integer >= 1, got {depth!r}")
        require(is_integer(width) and width >= 1,
                f"MLP width must be an integer >= 1, got {width!r}")
        depth, width = int(depth), int(width)
        in_features = _require_size("the MLP", "in_features (the flattened input size)",
                                    in_features, 1)
        classes = _require_size("the MLP", "classes", classes, 2)
        self.act_name = act
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = in_features
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), activation(act)]
            fan_in = width
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, classes)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    @property
    def last_hidden(self) -> nn.Linear:
        """The last hidden Linear layer (the one the intervention rescales)."""
        return [m for m in self.body if isinstance(m, nn.Linear)][-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    @torch.no_grad()
    def rescale_last_hidden(self, alpha: float) -> None:
        layer = self.last_hidden
        layer.weight.mul_(alpha)
        layer.bias.mul_(alpha)


class SmallCNN(nn.Module):
    """Two conv blocks (32, 64 channels, 3-wide kernels, max-pool), then Linear(., width) -> act.

    Works on 1-D (C, L) and 2-D (C, H, W) inputs.
    """

    def __init__(self, input_shape: tuple[int, ...], classes: int, width: int = 128,
                 act: str = "relu") -> None:
        super().__init__()
        spatial = len(input_shape) - 1
        require(spatial in (1, 2), f"the CNN needs (C, L) or (C, H, W) inputs, got {input_shape}")
        require(is_integer(width) and width >= 1,
                f"CNN width must be an integer >= 1, got {width!r}")
        require(all(is_integer(n) and n >= 4 for n in input_shape[1:]),
                f"the CNN's two 2-wide max-pools need every spatial size >= 4, got inputs of "
                f"shape {tuple(input_shape)}; use a larger input or another network (--arch mlp)")
        conv, pool = (nn.Conv1d, nn.MaxPool1d) if spatial == 1 else (nn.Conv2d, nn.MaxPool2d)
        chans = _require_size("the CNN", "input channels", input_shape[0], 1)
        classes = _require_size("the CNN", "classes", classes, 2)
        self.act_name = act
        self.conv = nn.Sequential(
            conv(chans, 32, 3, padding=1), nn.ReLU(), pool(2),
            conv(32, 64, 3, padding=1), nn.ReLU(), pool(2), nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, *input_shape)).shape[1]
        self.hidden = nn.Linear(flat, width)
        self.act = activation(act)
        self.classifier = nn.Linear(width, classes)

    @property
    def last_hidden(self) -> nn.Linear:
        return self.hidden

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.hidden(self.conv(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    @torch.no_grad()
    def rescale_last_hidden(self, alpha: float) -> None:
        self.hidden.weight.mul_(alpha)
        self.hidden.bias.mul_(alpha)


# Convolution and BatchNorm classes of ResNet-20 by the number of spatial axes.
_RESNET_LAYERS = {1: (nn.Conv1d, nn.BatchNorm1d), 2: (nn.Conv2d, nn.BatchNorm2d)}


class BasicBlock(nn.Module):
    """ResNet basic block (two 3-wide convs with BatchNorm, 3x3 on images; a 1-wide conv +
    BatchNorm projection shortcut when the shape changes, option B). ``spatial``: 1 or 2."""

    def __init__(self, cin: int, cout: int, stride: int, spatial: int = 2) -> None:
        super().__init__()
        conv, norm = _RESNET_LAYERS[spatial]
        self.conv1 = conv(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = norm(cout)
        self.conv2 = conv(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = norm(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(conv(cin, cout, 1, stride, bias=False), norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 for images (C, H, W) of any size, or for signals (C, L) with ``spatial=1``.

    28x28 images are zero-padded by 2 on each side to 32x32 (the paper's MNIST convention);
    other sizes are used as they are: the global average pool makes the features 64-d whatever
    the size.

    Parameters
    ----------
    in_channels : C >= 1.
    classes : K >= 2.
    spatial : 2 for images (Conv2d, 3x3 kernels), 1 for signals (Conv1d, 3-wide kernels).
    """

    def __init__(self, in_channels: int = 3, classes: int = 10, spatial: int = 2) -> None:
        super().__init__()
        require(is_integer(in_channels) and in_channels >= 1,
                f"ResNet-20 needs at least one input channel, got {in_channels!r}")
        classes = _require_size("ResNet-20", "classes", classes, 2)
        require(spatial in _RESNET_LAYERS,
                f"ResNet-20 takes signals (spatial = 1) or images (spatial = 2), got {spatial!r}")
        conv, norm = _RESNET_LAYERS[spatial]
        self.spatial = spatial
        self.stem = nn.Sequential(conv(int(in_channels), 16, 3, 1, 1, bias=False), norm(16),
                                  nn.ReLU())
        blocks: list[nn.Module] = []
        cin = 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(BasicBlock(cin, cout, stride if i == 0 else 1, spatial))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Linear(64, classes)
        self.register_buffer("feature_scale", torch.ones(()))
        for module in self.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial == 2 and x.shape[-1] == 28 and x.shape[-2] == 28:
            x = F.pad(x, (2, 2, 2, 2))
        out = self.blocks(self.stem(x))
        pool = F.adaptive_avg_pool2d if self.spatial == 2 else F.adaptive_avg_pool1d
        return pool(out, 1).flatten(1) * self.feature_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    @torch.no_grad()
    def rescale_last_hidden(self, alpha: float) -> None:
        self.feature_scale.mul_(alpha)


def build_network(arch: str, input_shape: tuple[int, ...], classes: int, depth: int = 5,
                  width: int = 512, act: str = "relu") -> nn.Module:
    """Network by name (``ARCHS``) for inputs of shape ``input_shape`` (C, *spatial).

    Every size of ``input_shape`` must be an integer >= 1 (:class:`InputError` otherwise):
    the MLP would take the product of negative sizes, ResNet-20 would build on any size."""
    require(isinstance(input_shape, (tuple, list)) and len(input_shape) >= 1,
            f"the input shape must be a tuple (C, *spatial) of sizes, got {input_shape!r}")
    if arch == "mlp":
        require(all(is_integer(n) and n >= 0 for n in input_shape),
                f"the MLP needs inputs whose sizes are integers >= 1, got inputs of shape "
                f"{tuple(input_shape)}")
        return MLP(math.prod(input_shape), classes, depth, width, act)
    if arch == "cnn":
        return SmallCNN(input_shape, classes, width, act)
    if arch == "resnet20":
        require(act == "relu", f"ResNet-20's blocks use ReLU; activation {act!r} is not "
                "available for it (allowed: relu)")
        require(len(input_shape) in (2, 3),
                f"ResNet-20 needs images (C, H, W) or signals (C, L), got inputs of shape "
                f"{input_shape}")
        require(all(is_integer(n) and n >= 1 for n in input_shape[1:]),
                f"ResNet-20 needs spatial sizes that are integers >= 1, got inputs of shape "
                f"{tuple(input_shape)}")
        return ResNet20(input_shape[0], classes, spatial=len(input_shape) - 1)
    raise InputError(f"unknown network {arch!r}; allowed: {', '.join(ARCHS)}")
