"""Data losses of the UFM and their gradients with respect to the logits.

Both use the sample-mean normalisation of the objective: loss = (1/N) sum_i l(z_i, y_i),
MSE l = 1/2 |z - y|^2 and softmax cross-entropy. Logits are batched (R, K, N) (columns are
samples); targets are the one-hot matrix Y (K, N).
"""

from __future__ import annotations

import torch


def mse(logits: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss (R,) and gradient dL/dZ (R, K, N) of (1/2N) |Z - Y|_F^2."""
    n = logits.shape[-1]
    residual = logits - onehot
    loss = 0.5 * residual.square().sum(dim=(-2, -1)) / n
    return loss, residual / n


def cross_entropy(logits: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss (R,) and gradient dL/dZ (R, K, N) of (1/N) sum_i CE(z_i, y_i)."""
    n = logits.shape[-1]
    log_prob = torch.log_softmax(logits, dim=-2)
    loss = -(log_prob * onehot).sum(dim=(-2, -1)) / n
    return loss, (log_prob.exp() - onehot) / n


def loss_value(name: str, logits: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """The loss (R,) alone (no gradient): the first value of :func:`loss_function`'s, to the
    bit, without the passes that form dL/dZ (a record needs the value only)."""
    n = logits.shape[-1]
    if name == "ce":
        return -(torch.log_softmax(logits, dim=-2) * onehot).sum(dim=(-2, -1)) / n
    if name == "mse":
        return 0.5 * (logits - onehot).square().sum(dim=(-2, -1)) / n
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
