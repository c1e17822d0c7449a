"""Data losses of the UFM and their gradients with respect to the logits.

Both use the sample-mean normalisation of the objective: loss = (1/N) sum_i l(z_i, y_i),
MSE l = 1/2 |z - y|^2 and softmax cross-entropy. Logits are batched (R, K, N) (columns are
samples); targets are the one-hot matrix Y (K, N). The flow needs only the gradient and a
record only the value, so each has its own function.
"""

from __future__ import annotations

import torch


def loss_value(name: str, logits: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """The loss (R,): (1/2N) |Z - Y|_F^2 for MSE, (1/N) sum_i CE(z_i, y_i) for CE."""
    n = logits.shape[-1]
    if name == "ce":
        # the label's log-probability alone: a wrong class's -inf (an overflowing logit gap)
        # times its 0 would be NaN
        picked = torch.where(onehot != 0, torch.log_softmax(logits, dim=-2) * onehot, 0.0)
        return -picked.sum(dim=(-2, -1)) / n
    if name == "mse":
        return 0.5 * (logits - onehot).square().sum(dim=(-2, -1)) / n
    raise ValueError(f"unknown loss {name!r}")


def logit_gradient(name: str, logits: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """dL/dZ (R, K, N) alone (no loss value): (softmax(Z) - Y)/N for CE, (Z - Y)/N for MSE.

    ``logits`` is overwritten for MSE (the residual is formed in place).
    """
    if name not in ("ce", "mse"):
        raise ValueError(f"unknown loss {name!r}")
    g = torch.softmax(logits, dim=-2) if name == "ce" else logits
    return g.sub_(onehot).div_(logits.shape[-1])
