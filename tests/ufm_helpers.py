"""The one-layer UFM written out by hand in d space, for the tests of its reduced forms
(Gram space, class means): random states, per-run decays, the objective and its autograd
gradients (float64)."""

from __future__ import annotations

import torch

from ncsim.models.ufm import Penalties
from ncsim.spec import ModelSpec

F64 = torch.float64
RUNS = 3


def penalties(bias: str) -> Penalties:
    """Three runs' distinct decays (lambda_b only with a regularised bias)."""
    return Penalties(w=torch.tensor([[3e-2, 1e-2, 0.2]], dtype=F64),
                     h=torch.tensor([2e-2, 0.15, 1e-3], dtype=F64),
                     b=torch.tensor([4e-2, 0.3, 1e-2] if bias == "reg" else [0.0] * RUNS,
                                    dtype=F64))


def random_point(model: ModelSpec, seed: int, w_scale: float):
    """Random H (RUNS, d, N), W (RUNS, K, d) times ``w_scale``, b (RUNS, K) or None."""
    gen = torch.Generator().manual_seed(seed)
    d, k, n = model.dim, model.classes, model.num_samples
    h = torch.randn(RUNS, d, n, generator=gen, dtype=F64)
    w = torch.randn(RUNS, k, d, generator=gen, dtype=F64) * w_scale
    b = torch.randn(RUNS, k, generator=gen, dtype=F64) if model.has_bias else None
    return h, w, b


def labels(model: ModelSpec) -> torch.Tensor:
    """(N,) class of every sample, class-major."""
    return torch.repeat_interleave(torch.arange(model.classes),
                                   torch.tensor(model.class_counts))


def onehot(model: ModelSpec) -> torch.Tensor:
    """(K, N) one-hot labels Y, float64."""
    return torch.nn.functional.one_hot(labels(model), model.classes).T.to(F64)


def naive_objective(model: ModelSpec, h, w, b, pen: Penalties):
    """(loss (R,), f (R,)) of the one-layer UFM written out by hand in d space."""
    y = onehot(model)
    n = model.num_samples
    z = w @ h + (0.0 if b is None else b.unsqueeze(-1))
    if model.loss == "mse":
        loss = 0.5 * (z - y).square().sum((1, 2)) / n
    else:
        loss = -(torch.log_softmax(z, dim=1) * y).sum((1, 2)) / n
    f = (loss + 0.5 * pen.w[-1] * w.square().sum((1, 2))
         + 0.5 * pen.h * h.square().sum((1, 2)))
    if b is not None:
        f = f + 0.5 * pen.b * b.square().sum(1)
    return loss, f


def naive_gradients(model: ModelSpec, h, w, b, pen: Penalties):
    """Autograd gradients (gH, gW, gb or None) of :func:`naive_objective`."""
    leaves = [t.clone().requires_grad_(True) for t in (h, w) + ((b,) if b is not None else ())]
    _, f = naive_objective(model, leaves[0], leaves[1], leaves[2] if b is not None else None,
                           pen)
    grads = torch.autograd.grad(f.sum(), leaves)
    return grads[0], grads[1], grads[2] if b is not None else None
