"""The full matrix objective of DESIGN.md section 2, written out in numpy for the theory tests.

f = (1/N) sum_i loss(z_i, y_i) + sum_l lambda_l/2 |W_l|^2 + lambda_H/2 |H|^2 + lambda_b/2 |b|^2
with its analytic gradient (checked against central differences in the tests), for any class
counts, per-layer decays, hidden width and bias mode: the reference that scipy minimises.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize


class Objective:
    """f = (1/N) sum_i loss(z_i, y_i) + sum_l lambda_l/2 |W_l|^2 + lambda_H/2 |H|^2
    + lambda_b/2 |b|^2 with z = W_L ... W_1 H + b (numpy, float64, analytic gradient).

    Shapes: H (d, N), W_1 (m, d), W_2..W_{L-1} (m, m), W_L (K, m) (m = d for depth 1 or no
    width); columns of H ordered class by class with ``counts`` samples each.
    """

    def __init__(self, loss: str, bias: str, counts: tuple[int, ...], d: int,
                 lams_w: tuple[float, ...], lh: float, lb: float = 0.0,
                 width: int | None = None) -> None:
        self.loss, self.bias = loss, bias
        self.counts = np.asarray(counts)
        self.K, self.N = len(counts), int(self.counts.sum())
        self.Y = np.repeat(np.eye(self.K), self.counts, axis=1)
        self.lams = [lh, *lams_w]
        self.lb = lb if bias == "reg" else 0.0
        m, L = width or d, len(lams_w)
        self.shapes = [(d, self.N)] + ([(self.K, d)] if L == 1 else
                                       [(m, d)] + [(m, m)] * (L - 2) + [(self.K, m)])
        self.nb = self.K if bias != "none" else 0
        self.size = sum(a * b for a, b in self.shapes) + self.nb
        self.d = d

    def unpack(self, theta: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        mats, i = [], 0
        for a, b in self.shapes:
            mats.append(theta[i:i + a * b].reshape(a, b))
            i += a * b
        return mats, (theta[i:] if self.nb else np.zeros(self.K))

    def logits(self, theta: np.ndarray) -> np.ndarray:
        mats, b = self.unpack(theta)
        Z = mats[0]
        for W in mats[1:]:
            Z = W @ Z
        return Z + b[:, None]

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        mats, b = self.unpack(theta)
        acts = [mats[0]]
        for W in mats[1:]:
            acts.append(W @ acts[-1])
        Z = acts[-1] + b[:, None]
        if self.loss == "mse":
            R = Z - self.Y
            data, G = 0.5 * np.sum(R ** 2) / self.N, R / self.N
        else:
            Zs = Z - Z.max(axis=0)
            logp = Zs - np.log(np.exp(Zs).sum(axis=0))
            data, G = -np.sum(logp * self.Y) / self.N, (np.exp(logp) - self.Y) / self.N
        f = data + sum(lam / 2 * np.sum(A ** 2) for lam, A in zip(self.lams, mats, strict=True))
        f += self.lb / 2 * float(b @ b)
        grads: list[np.ndarray] = [np.empty(0)] * len(mats)
        delta = G
        for j in range(len(mats) - 1, 0, -1):
            grads[j] = delta @ acts[j - 1].T + self.lams[j] * mats[j]
            delta = mats[j].T @ delta
        grads[0] = delta + self.lams[0] * mats[0]
        out = [g.ravel() for g in grads]
        if self.nb:
            out.append(G.sum(axis=1) + self.lb * b)
        return float(f), np.concatenate(out)

    def stats(self, theta: np.ndarray) -> dict[str, float]:
        """fn (mean |h_i| of the penultimate features), centred class-mean norm, mean row norm of
        W_L, Frobenius norm of every factor, mean bias entry, data loss, logits of sample 0."""
        mats, b = self.unpack(theta)
        feats = mats[0]
        for W in mats[1:-1]:
            feats = W @ feats
        labels = np.repeat(np.arange(self.K), self.counts)
        means = np.stack([feats[:, labels == k].mean(axis=1) for k in range(self.K)], axis=1)
        centred = means - feats.mean(axis=1, keepdims=True)
        Z = self.logits(theta)
        if self.loss == "mse":
            data = 0.5 * np.sum((Z - self.Y) ** 2) / self.N
        else:
            Zs = Z - Z.max(axis=0)
            data = -np.sum((Zs - np.log(np.exp(Zs).sum(axis=0))) * self.Y) / self.N
        out = {"fn": float(np.mean(np.linalg.norm(feats, axis=0))),
               "centred": float(np.mean(np.linalg.norm(centred, axis=0))),
               "w_row": float(np.mean(np.linalg.norm(mats[-1], axis=1))),
               "bias": float(np.mean(b)), "loss": float(data),
               "logit_true": float(Z[0, 0]), "logit_other": float(Z[1, 0])}
        out["norm_H"] = float(np.linalg.norm(mats[0]))
        for i, W in enumerate(mats[1:]):
            out[f"norm_W{i + 1}"] = float(np.linalg.norm(W))
        return out


def minimise(obj: Objective, scales: Sequence[float], seed: int = 0,
             gtol: float = 1e-12) -> tuple[np.ndarray, float]:
    """Lowest L-BFGS-B end point of ``obj`` over one random start per scale (entries
    N(0, (scale / sqrt(d))^2), drawn in that order from ``seed``); (x, f)."""
    rng = np.random.default_rng(seed)
    best = None
    for sc in scales:
        x0 = rng.normal(0.0, sc / np.sqrt(obj.d), obj.size)
        res = minimize(obj, x0, jac=True, method="L-BFGS-B",
                       options={"maxiter": 50000, "maxcor": 30, "ftol": 1e-16, "gtol": gtol})
        if best is None or res.fun < best.fun:
            best = res
    return best.x, float(best.fun)
