"""Activations of the deep head and their derivatives (elementwise, any shape)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Activation = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _gelu_grad(u: torch.Tensor) -> torch.Tensor:
    cdf = 0.5 * (1.0 + torch.erf(u / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)
    return cdf + u * pdf


def _silu_grad(u: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(u)
    return s * (1.0 + u * (1.0 - s))


def activation(name: str, leaky_slope: float = 0.01) -> Activation:
    """(sigma, sigma') for ``name`` in linear, relu, leaky_relu, tanh, gelu (exact erf), silu.

    The derivative of relu at 0 is taken as 0, of leaky_relu as ``leaky_slope``.
    """
    if name == "linear":
        return (lambda u: u), torch.ones_like
    if name == "relu":
        return torch.relu, (lambda u: (u > 0).to(u.dtype))
    if name == "leaky_relu":
        return (
            lambda u: torch.nn.functional.leaky_relu(u, leaky_slope),
            lambda u: torch.where(u > 0, torch.ones_like(u), torch.full_like(u, leaky_slope)),
        )
    if name == "tanh":
        return torch.tanh, (lambda u: 1.0 - torch.tanh(u) ** 2)
    if name == "gelu":
        return torch.nn.functional.gelu, _gelu_grad
    if name == "silu":
        return torch.nn.functional.silu, _silu_grad
    raise ValueError(f"unknown activation {name!r}")
