"""Objective and gradient of the (deep) unconstrained-features model, batched over runs.

Model (depth L >= 1; L = 1 is the one-layer UFM, a linear activation gives the deep linear UFM):

    A_0 = H (d, N),  A_l = sigma(W_l A_{l-1})  for l = 1 .. L-1,  Z = W_L A_{L-1} + b 1^T

    f = (1/N) sum_i loss(z_i, y_i) + sum_l lambda_l/2 |W_l|_F^2 + lambda_H/2 |H|_F^2
        + lambda_b/2 |b|^2

At a kink (relu, leaky_relu at u = 0) the derivative taken is that of the piece u < 0: 0 for
relu and the slope for leaky_relu, as torch's autograd takes it
(:func:`ncsim.models.activations.activation`).

The penultimate features are A_{L-1} (the input of the classifier W_L). Samples are ordered
class by class (class 0 first). Every tensor has a leading run axis R; each run has its own
weight decays. The gradient is written out by hand (reverse mode through the layers); the
tests check it against autograd.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ncsim.models.activations import activation
from ncsim.models.layout import StateLayout
from ncsim.models.losses import logit_gradient, loss_value
from ncsim.products import baddbmm, bmm
from ncsim.spec import ModelSpec


def labels_for(model: ModelSpec, device: str | torch.device = "cpu") -> torch.Tensor:
    """Class label of every sample, (N,) int64, class-major order."""
    counts = torch.tensor(model.class_counts, device=device)
    return torch.repeat_interleave(torch.arange(model.classes, device=device), counts)


def state_layout(model: ModelSpec) -> StateLayout:
    """Blocks of the flat state: H (d, N), W1 .. WL (out, in), then b (K,) with a bias."""
    shapes: list[tuple[str, tuple[int, ...]]] = [("H", (model.dim, model.num_samples))]
    shapes += [(f"W{l + 1}", shape) for l, shape in enumerate(model.layer_shapes)]
    if model.has_bias:
        shapes.append(("b", (model.classes,)))
    return StateLayout(shapes)


@dataclass
class Penalties:
    """Per-run weight decays as tensors: ``w`` (L, R), ``h`` (R,), ``b`` (R,)."""

    w: torch.Tensor
    h: torch.Tensor
    b: torch.Tensor

    def select(self, index: torch.Tensor) -> Penalties:
        """Penalties of the runs ``index`` (M,)."""
        return Penalties(self.w[:, index], self.h[index], self.b[index])


class UFMObjective:
    """Batched objective, gradient and penultimate features of a (deep) UFM.

    Parameters
    ----------
    model : structure shared by every run of the batch.
    device, dtype : where and in which precision to compute.
    """

    def __init__(self, model: ModelSpec, device: str | torch.device, dtype: torch.dtype) -> None:
        self.model = model
        self.layout = state_layout(model)
        self.depth = model.depth
        self.labels = labels_for(model, device)
        self.onehot = torch.nn.functional.one_hot(self.labels, model.classes).T.to(dtype)
        self.sigma, self.sigma_grad = activation(model.activation, model.leaky_slope)

    def _blocks(
        self, state: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
        lay = self.layout
        h = lay.view(state, "H")
        ws = [lay.view(state, f"W{l + 1}") for l in range(self.depth)]
        b = lay.view(state, "b") if "b" in lay else None
        return h, ws, b

    def forward(
        self, state: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Logits Z (R, K, N), pre-activations U_l and activations A_l (A_0 = H)."""
        h, ws, b = self._blocks(state)
        acts, pres = [h], []
        for w in ws[:-1]:
            u = bmm(w, acts[-1])
            pres.append(u)
            acts.append(self.sigma(u))
        z = bmm(ws[-1], acts[-1])
        if b is not None:
            z = z + b.unsqueeze(-1)
        return z, pres, acts

    def penalty(self, state: torch.Tensor, pen: Penalties) -> torch.Tensor:
        """Regularisation term (R,)."""
        h, ws, b = self._blocks(state)
        total = 0.5 * pen.h * h.square().sum(dim=(1, 2))
        for l, w in enumerate(ws):
            total = total + 0.5 * pen.w[l] * w.square().sum(dim=(1, 2))
        if b is not None:
            total = total + 0.5 * pen.b * b.square().sum(dim=1)
        return total

    def value(self, state: torch.Tensor, pen: Penalties) -> tuple[torch.Tensor, torch.Tensor]:
        """(data loss (R,), objective f (R,))."""
        z, _, _ = self.forward(state)
        loss = loss_value(self.model.loss, z, self.onehot)
        return loss, loss + self.penalty(state, pen)

    def velocity(self, state: torch.Tensor, pen: Penalties,
                 eta: torch.Tensor | float = 1.0, out: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """Gradient-flow velocity -eta * grad f (R, P), written into ``out`` when given.

        ``eta`` : a scalar, or per-entry time-scale factors (R, P).
        """
        if self.depth == 1 and not isinstance(eta, torch.Tensor):
            return self._one_layer(state, pen, -float(eta), out)
        grad = self.gradient(state, pen)
        return grad.mul_(-eta) if out is None else torch.mul(grad, -eta, out=out)

    def _one_layer(self, state: torch.Tensor, pen: Penalties, scale: float,
                   out: torch.Tensor | None) -> torch.Tensor:
        """``scale`` x grad f of the one-layer UFM, each block written straight into ``out``
        (the products land in place; the decay terms follow as one fused multiply-add)."""
        h, ws, b = self._blocks(state)
        w = ws[0]
        z = bmm(w, h)
        if b is not None:
            z.add_(b.unsqueeze(-1))
        g_z = logit_gradient(self.model.loss, z, self.onehot)
        if scale != 1.0:
            g_z.mul_(scale)
        out = torch.empty_like(state) if out is None else out
        lay = self.layout
        out_h, out_w = lay.view(out, "H"), lay.view(out, "W1")
        bmm(w.transpose(1, 2), g_z, out=out_h)
        out_h.addcmul_(h, (scale * pen.h).view(-1, 1, 1))
        bmm(g_z, h.transpose(1, 2), out=out_w)
        out_w.addcmul_(w, (scale * pen.w[-1]).view(-1, 1, 1))
        if b is not None:
            out_b = lay.view(out, "b")
            torch.sum(g_z, dim=2, out=out_b)
            out_b.addcmul_(b, (scale * pen.b).view(-1, 1))
        return out

    def gradient(self, state: torch.Tensor, pen: Penalties) -> torch.Tensor:
        """Gradient of f with respect to the flat state: (R, P)."""
        if self.depth == 1:
            return self._one_layer(state, pen, 1.0, None)
        h, ws, b = self._blocks(state)
        z, pres, acts = self.forward(state)
        g_z = logit_gradient(self.model.loss, z, self.onehot)
        grads: dict[str, torch.Tensor] = {}
        grads[f"W{self.depth}"] = baddbmm(
            pen.w[-1].view(-1, 1, 1) * ws[-1], g_z, acts[-1].transpose(1, 2)
        )
        if b is not None:
            grads["b"] = g_z.sum(dim=2) + pen.b.view(-1, 1) * b
        g_a = bmm(ws[-1].transpose(1, 2), g_z)
        for l in range(self.depth - 2, -1, -1):
            g_u = g_a * self.sigma_grad(pres[l])
            grads[f"W{l + 1}"] = baddbmm(
                pen.w[l].view(-1, 1, 1) * ws[l], g_u, acts[l].transpose(1, 2)
            )
            g_a = bmm(ws[l].transpose(1, 2), g_u)
        grads["H"] = g_a + pen.h.view(-1, 1, 1) * h
        return self.layout.pack(grads)

    def penultimate(
        self, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Penultimate features as rows (R, N, p), classifier W_L (R, K, p), bias (R, K) or None."""
        h, ws, b = self._blocks(state)
        feats = h
        for w in ws[:-1]:
            feats = self.sigma(bmm(w, feats))
        return feats.transpose(1, 2), ws[-1], b
