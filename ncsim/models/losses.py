"""Data losses of the UFM and their gradients with respect to the logits.

Both use the sample-mean normalisation of the objective: loss = (1/N) sum_i l(z_i, y_i),
MSE l = 1/2 |z - y|^2 and softmax cross-entropy. Logits are batched (R, K, N) (columns are
samples); targets are the one-hot matrix Y (K, N).
"""

from __future__ import annotations

import torch


def _mse_loss(residual: torch.Tensor) -> torch.Tensor:
    """(1/2N) |Z - Y|_F^2 (R,) from the residual Z - Y (R, K, N)."""
    return 0.5 * residual.square().sum(dim=(-2, -1)) / residual.shape[-1]


def _ce_loss(log_prob: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """(1/N) sum_i CE(z_i, y_i) (R,) from log softmax(Z) (R, K, N)."""
    return -(log_prob * onehot).sum(dim=(-2, -1)) / log_prob.shape[-1]


def mse(logits: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss (R,) and gradient dL/dZ (R, K, N) of (1/2N) |Z - Y|_F^2."""
    residual = logits - onehot
    return _mse_loss(residual), residual / logits.shape[-1]


def cross_entropy(logits: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss (R,) and gradient dL/dZ (R, K, N) of (1/N) sum_i CE(z_i, y_i)."""
    log_prob = torch.log_softmax(logits, dim=-2)
    return _ce_loss(log_prob, onehot), (log_prob.exp() - onehot) / logits.shape[-1]


def loss_value(name: str, logits: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """The loss (R,) alone, without the passes that form dL/dZ (a record needs the value
    only); the same value as :func:`loss_function`'s, by the same helpers."""
    if name == "ce":
        return _ce_loss(torch.log_softmax(logits, dim=-2), onehot)
    if name == "mse":
        return _mse_loss(logits - onehot)
    raise ValueError(f"unknown loss {name!r}")


def logit_gradient(name: str, logits: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """dL/dZ (R, K, N) alone (no loss value): (softmax(Z) - Y)/N for CE, (Z - Y)/N for MSE.

    ``logits`` is overwritten for MSE (the residual is formed in place).
    """
    g = torch.softmax(logits, dim=-2) if name == "ce" else logits
    return g.sub_(onehot).div_(logits.shape[-1])


def loss_function(name: str):
    """The (loss, gradient) function for ``name`` in ("mse", "ce")."""
    if name == "mse":
        return mse
    if name == "ce":
        return cross_entropy
    raise ValueError(f"unknown loss {name!r}")
