"""Class-means form of the one-layer UFM with MSE loss: exact dynamics whose cost does not
depend on the number of samples per class.

Write every feature as its class mean plus a deviation, h_i = mu_c + e_i (sum of e_i over the
class = 0). With the MSE loss the feature gradient is linear in h_i,
grad_{h_i} f = W^T (W h_i + b - y_i) / N + lambda_H h_i, so the flow splits exactly into

    d mu_c/dt = -eta_H (W^T r_c / N + lambda_H mu_c),      r_c = W mu_c + b - y_c
    d e_i/dt  = -eta_H (W^T W / N + lambda_H I) e_i = -A(t) e_i
    dW/dt     = -eta_W (sum_c (n_c/N) r_c mu_c^T + W S / N + lambda_W W)
    db/dt     = -eta_b (sum_c (n_c/N) r_c + lambda_b b)

with S = sum_i e_i e_i^T the within-class scatter. Every deviation follows the same linear
flow, e_i(t) = Phi(t) e_i(0) with dPhi/dt = -A(t) Phi, Phi(0) = I, so S = Phi S0 Phi^T and the
whole flow runs on (mu (d, K), Phi (d, d), W (K, d), b (K,)): about 4 K d^2 + 3 K^2 d multiply-adds
per evaluation against 3 K d N for the parameter form, independent of n. The initial deviations
E0 (d, N) and S0 = E0 E0^T are constants of each run; the features at any time are
H = mu[:, y] + Phi E0, rebuilt exactly at the record times (fn needs every |h_i|).

The flat state of R runs is (R, P) with blocks "M" = mu (d, K), "Phi" (d, d), "W1" (K, d) and
"b" (K,) when the model has a bias (see :func:`class_means_layout`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ncsim.metrics import ClassStats, _abs_max, mean_noise, nc_metrics_from_stats
from ncsim.models.layout import StateLayout
from ncsim.models.ufm import Penalties, labels_for
from ncsim.products import baddbmm, bmm
from ncsim.spec import ModelSpec

__all__ = ["ClassMeansObjective", "class_means_layout", "class_means_applies"]


def class_means_applies(model: ModelSpec) -> bool:
    """Whether the class-means form is exact for ``model`` (one-layer UFM, MSE loss)."""
    return model.kind == "ufm" and model.depth == 1 and model.loss == "mse"


def class_means_cheaper(model: ModelSpec) -> bool:
    """Whether the class-means form costs fewer multiply-adds per evaluation than the parameter
    form: 4 K d^2 + 3 K^2 d < 3 K d N, i.e. 4 d + 3 K < 3 N."""
    return 4 * model.dim + 3 * model.classes < 3 * model.num_samples


def class_means_layout(model: ModelSpec) -> StateLayout:
    """Blocks of the class-means state: M (d, K), Phi (d, d), W1 (K, d), b (K,)."""
    d, k = model.dim, model.classes
    shapes: list[tuple[str, tuple[int, ...]]] = [("M", (d, k)), ("Phi", (d, d)), ("W1", (k, d))]
    if model.has_bias:
        shapes.append(("b", (k,)))
    return StateLayout(shapes)


class ClassMeansObjective:
    """Objective, flow and features of the one-layer UFM-MSE on the class-means state.

    Parameters
    ----------
    model : one-layer UFM with MSE loss, shared by the batch.
    device, dtype : where and in which precision to compute.

    The per-run constants E0 (R, d, N) and S0 (R, d, d) are set by :meth:`from_parameters`;
    every method that needs them takes ``runs`` (M,), the rows of the batch its states belong
    to (None: all R runs, in order).
    """

    def __init__(self, model: ModelSpec, device: str | torch.device, dtype: torch.dtype) -> None:
        if not class_means_applies(model):
            raise ValueError("the class-means form needs the one-layer UFM with MSE loss")
        self.model = model
        self.layout = class_means_layout(model)
        self.labels = labels_for(model, device)
        counts = torch.tensor(model.class_counts, dtype=dtype, device=device)
        self.counts = counts.long()  # made here: no host data while a metrics call is captured
        self.samples = int(model.num_samples)
        self.weights = counts / self.samples  # n_c / N (K,)
        self.onehot = torch.nn.functional.one_hot(self.labels, model.classes).T.to(dtype)
        self.average = self.onehot.T / counts  # (N, K): mu = H @ average
        self.eye_k = torch.eye(model.classes, dtype=dtype, device=device)
        self.e0: Tensor | None = None
        self.s0: Tensor | None = None
        self.root: Tensor | None = None

    # ------------------------------------------------------------------ state and features

    def from_parameters(self, h: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        """Class-means state (R, P) of H (R, d, N), W (R, K, d), b (R, K) or None; stores the
        runs' deviations E0 and scatters S0."""
        means = h @ self.average  # (R, d, K)
        self.e0 = h - means[:, :, self.labels]
        self.s0 = self.e0 @ self.e0.transpose(1, 2)
        vals, vecs = torch.linalg.eigh(self.s0)
        self.root = vecs * vals.clamp_min(0.0).sqrt().unsqueeze(1)  # root root^T = S0
        eye = torch.eye(h.shape[1], dtype=h.dtype, device=h.device)
        parts = {"M": means, "Phi": eye.expand(h.shape[0], -1, -1), "W1": w}
        if b is not None:
            parts["b"] = b
        return self.layout.pack(parts)

    def with_dtype(self, dtype: torch.dtype) -> ClassMeansObjective:
        """The same objective (and the runs' constants) in ``dtype``."""
        other = ClassMeansObjective(self.model, self.labels.device, dtype)
        if self.e0 is not None and self.s0 is not None:
            other.e0, other.s0, other.root = (self.e0.to(dtype), self.s0.to(dtype),
                                              self.root.to(dtype))
        return other

    def _deviations(self, runs: Tensor | None) -> Tensor:
        """E0 (M, d, N) of the runs ``runs`` (None: all)."""
        if self.e0 is None:
            raise RuntimeError("call from_parameters first: the runs' deviations are not set")
        return self.e0 if runs is None else self.e0[runs]

    def _scatter(self, runs: Tensor | None) -> Tensor:
        """S0 (M, d, d) of the runs ``runs`` (None: all)."""
        if self.s0 is None:
            raise RuntimeError("call from_parameters first: the runs' deviations are not set")
        return self.s0 if runs is None else self.s0[runs]

    def blocks(self, state: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Views (M (R, d, K), Phi (R, d, d), W (R, K, d), b (R, K) or None) of ``state``."""
        lay = self.layout
        b = lay.view(state, "b") if "b" in lay else None
        return lay.view(state, "M"), lay.view(state, "Phi"), lay.view(state, "W1"), b

    def parameters(self, state: Tensor, runs: Tensor | None = None
                   ) -> tuple[Tensor, Tensor, Tensor | None]:
        """The exact parameters (H (R, d, N), W (R, K, d), b (R, K) or None) of ``state``."""
        means, phi, w, b = self.blocks(state)
        return baddbmm(means[:, :, self.labels], phi, self._deviations(runs)), w, b

    def metrics(self, state: Tensor, runs: Tensor | None = None) -> dict[str, Tensor]:
        """Every metric of :data:`ncsim.metrics.METRIC_NAMES` (each (R,)).

        The class statistics come from the state (class means; within-class covariance
        Sigma_W = Phi S0 Phi^T / N through the factor root^T Phi^T / sqrt(N), d x d); fn, the
        per-class variances and nc4 need every sample, rebuilt as H = mu[:, y] + Phi E0.
        """
        means, phi, w, b = self.blocks(state)
        root = self.root if runs is None else self.root[runs]
        dev = bmm(phi, self._deviations(runs))  # (R, d, N)
        feats = (dev + means[:, :, self.labels]).transpose(1, 2)  # (R, N, d)
        sq_dev = dev.square().sum(1)  # (R, N)
        mu = means.transpose(1, 2)  # (R, K, d)
        stats = ClassStats(
            counts=self.counts,
            means=mu,
            global_mean=(mu * self.weights.unsqueeze(-1)).sum(1),
            within_factor=bmm(phi, root).transpose(1, 2) / self.samples ** 0.5,
            within_energy=sq_dev.sum(1) / self.samples,
            feature_norm=torch.linalg.vector_norm(feats, dim=-1).mean(-1),
            class_var=(sq_dev @ self.average),
            mean_weights=self.weights,
            mean_noise=mean_noise(_abs_max(feats), mu.shape[1], mu.shape[2], mu.dtype),
        )
        return nc_metrics_from_stats(stats, feats, w, b)

    def _residual(self, means: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        """Class residuals r_c = W mu_c + b - y_c as columns (R, K, K)."""
        r = bmm(w, means) - self.eye_k
        return r if b is None else r + b.unsqueeze(-1)

    # ------------------------------------------------------------------ objective and flow

    def value(self, state: Tensor, pen: Penalties, runs: Tensor | None = None
              ) -> tuple[Tensor, Tensor]:
        """(data loss (R,), objective f (R,))."""
        means, phi, w, b = self.blocks(state)
        s0 = self._scatter(runs)
        r = self._residual(means, w, b)
        phi_s0 = bmm(phi, s0)
        scatter_w = bmm(bmm(w, phi_s0), phi.transpose(1, 2))  # W S (R, K, d)
        loss = 0.5 * ((r.square().sum(1) * self.weights).sum(1)
                      + (scatter_w * w).sum((1, 2)) / self.samples)
        h_sq = (means.square().sum(1) * self.weights).sum(1) * self.samples + (phi_s0 * phi).sum(
            (1, 2))
        total = loss + 0.5 * pen.w[-1] * w.square().sum((1, 2)) + 0.5 * pen.h * h_sq
        if b is not None:
            total = total + 0.5 * pen.b * b.square().sum(1)
        return loss, total

    def _flow_parts(self, state: Tensor, pen: Penalties, runs: Tensor | None
                    ) -> dict[str, Tensor]:
        """Gradients of f: W, b and the class-mean part g_c (columns of (R, d, K)), and the
        generator A Phi = (W^T W / N + lambda_H) Phi (R, d, d) of the deviations."""
        means, phi, w, b = self.blocks(state)
        s0 = self._scatter(runs)
        n = self.samples
        r = self._residual(means, w, b)
        w_phi = bmm(w, phi)
        scatter_w = bmm(bmm(w_phi, s0), phi.transpose(1, 2))  # W S
        weighted = r * self.weights  # (R, K, K): (n_c / N) r_c
        lw, lh = pen.w[-1].view(-1, 1, 1), pen.h.view(-1, 1, 1)
        grads = {
            "W1": baddbmm(lw * w, weighted, means.transpose(1, 2)),
            "M": baddbmm(lh * means, w.transpose(1, 2), r, alpha=1.0 / n),
            "Phi": baddbmm(lh * phi, w.transpose(1, 2), w_phi, alpha=1.0 / n),
        }
        grads["W1"].add_(scatter_w, alpha=1.0 / n)
        if b is not None:
            grads["b"] = weighted.sum(2) + pen.b.view(-1, 1) * b
        return grads

    def velocity(self, state: Tensor, pen: Penalties, eta_w: Tensor | float = 1.0,
                 eta_h: Tensor | float = 1.0, eta_b: Tensor | float = 1.0,
                 runs: Tensor | None = None, out: Tensor | None = None) -> Tensor:
        """d state / dt (R, P) of the gradient flow (written into ``out`` when given);
        ``eta_*`` scalars or (R,) time scales."""
        grads = self._flow_parts(state, pen, runs)
        scale = {"W1": eta_w, "M": eta_h, "Phi": eta_h, "b": eta_b}
        for name, g in grads.items():
            eta = scale[name]
            if isinstance(eta, Tensor):
                g.mul_(-eta.view(-1, *([1] * (g.dim() - 1))))
            else:
                g.mul_(-float(eta))
        return self.layout.pack(grads, out=out)

    def grad_norm_from_velocity(self, velocity: Tensor, eta_w: Tensor | float = 1.0,
                                eta_h: Tensor | float = 1.0, eta_b: Tensor | float = 1.0,
                                runs: Tensor | None = None) -> Tensor:
        """|grad f|_2 (R,) from a velocity of :meth:`velocity` (no second evaluation): the
        blocks divided by their time scales are the gradients of W, b, the class-mean part
        g_c and the deviation generator A Phi (see :meth:`grad_norm`)."""
        lay = self.layout

        def unscaled(name: str, eta: Tensor | float) -> Tensor:
            block = lay.view(velocity, name)
            if isinstance(eta, Tensor):
                return block / eta.view(-1, *([1] * (block.dim() - 1)))
            return block / float(eta)

        g_w, g_m, a_phi = unscaled("W1", eta_w), unscaled("M", eta_h), unscaled("Phi", eta_h)
        deviation = (bmm(a_phi, self._scatter(runs)) * a_phi).sum((1, 2))
        means_part = (g_m.square().sum(1) * self.weights).sum(1) * self.samples
        sq = g_w.square().sum((1, 2)) + means_part + deviation
        if "b" in lay:
            sq = sq + unscaled("b", eta_b).square().sum(1)
        return sq.double().clamp_min(0.0).sqrt()

    def grad_norm(self, state: Tensor, pen: Penalties, runs: Tensor | None = None) -> Tensor:
        """|grad f|_2 (R,) with respect to (H, W, b): the feature part is
        sum_c n_c |g_c|^2 + tr(A S A) with g_c the class-mean gradient, A Phi the deviation
        generator and S = Phi S0 Phi^T (cross terms vanish: deviations sum to 0 per class);
        computed from the unit-time-scale velocity by :meth:`grad_norm_from_velocity`."""
        return self.grad_norm_from_velocity(self.velocity(state, pen, runs=runs), runs=runs)
