"""Equilibria and thresholds against a direct minimisation of the full matrix objective."""

from __future__ import annotations

import numpy as np
import pytest
from reference_objective import Objective
from reference_objective import minimise as reference_minimise

from ncsim.theory import equilibrium, lambda_crit


class MatrixObjective(Objective):
    """The full matrix objective (:class:`reference_objective.Objective`) of a balanced model
    with one decay for every W_l: K classes of n samples, width d.

    Shapes: H (d, N), W_1 (m, d), ..., W_L (K, m) with m = d, b (K,); N = K n, columns
    ordered class by class.
    """

    def __init__(self, loss: str, bias: str, K: int, n: int, d: int, depth: int,
                 lw: float, lh: float, lb: float = 0.0) -> None:
        super().__init__(loss, bias, (n,) * K, d, (lw,) * depth, lh, lb)
        self.n = n

    def summary(self, theta: np.ndarray) -> dict[str, float]:
        mats, b = self.unpack(theta)
        feats = mats[0]
        for W in mats[1:-1]:
            feats = W @ feats
        means = feats.reshape(feats.shape[0], self.K, self.n).mean(axis=2)
        return {
            "objective": float(self(theta)[0]),
            "fn": float(np.mean(np.linalg.norm(feats, axis=0))),
            "class_mean": float(np.mean(np.linalg.norm(means, axis=0))),
            "w_row": float(np.mean(np.linalg.norm(mats[-1], axis=1))),
            "norm_H": float(np.linalg.norm(mats[0])),
            "norm_WL": float(np.linalg.norm(mats[-1])),
            "bias": float(np.mean(b)),
        }


def minimise(obj: MatrixObjective, restarts: int = 4, seed: int = 0,
             guess_scale: float = 1.0) -> tuple[np.ndarray, float]:
    """Best L-BFGS-B result over random restarts of several scales (incl. near the origin)."""
    scales = [1e-3] + [guess_scale * f for f in np.geomspace(0.3, 1.5, restarts)]
    return reference_minimise(obj, scales, seed, gtol=1e-11)


def _guess(loss: str, depth: int) -> float:
    return 2.0 if loss == "mse" else 4.0


# (loss, bias, K, n, depth, lambda_w, lambda_h, lambda_b)
CASES = [
    ("mse", "none", 3, 2, 1, 0.01, 0.02, 0.0),
    ("mse", "none", 4, 3, 1, 0.03, 0.005, 0.0),
    ("mse", "free", 3, 2, 1, 0.01, 0.02, 0.0),
    ("mse", "free", 4, 2, 1, 0.002, 0.05, 0.0),
    ("mse", "reg", 3, 2, 1, 0.01, 0.02, 0.5),
    ("mse", "reg", 4, 2, 1, 0.02, 0.02, 5.0),
    ("mse", "none", 3, 2, 1, 0.3, 0.3, 0.0),        # above the threshold: origin
    ("ce", "none", 3, 2, 1, 0.01, 0.02, 0.0),
    ("ce", "none", 4, 3, 1, 0.002, 0.01, 0.0),
    ("ce", "free", 3, 2, 1, 0.01, 0.02, 0.0),
    ("ce", "free", 4, 2, 1, 0.02, 0.005, 0.0),
    ("mse", "none", 3, 2, 2, 0.02, 0.02, 0.0),
    ("mse", "none", 4, 2, 2, 0.01, 0.03, 0.0),
    ("mse", "free", 3, 2, 3, 0.01, 0.01, 0.0),
    ("mse", "reg", 3, 2, 2, 0.01, 0.02, 1.0),
    ("mse", "none", 3, 3, 4, 0.01, 0.01, 0.0),
    ("mse", "free", 4, 2, 4, 0.005, 0.01, 0.0),
    ("mse", "none", 3, 2, 2, 0.09, 0.09, 0.0),      # below Lambda_crit 0.105: collapse global
    ("ce", "none", 3, 2, 2, 0.005, 0.005, 0.0),
    ("ce", "none", 3, 2, 3, 0.003, 0.003, 0.0),
    ("ce", "free", 3, 2, 2, 0.01, 0.02, 0.0),
    ("ce", "none", 3, 3, 4, 0.002, 0.002, 0.0),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}-K{c[2]}n{c[3]}L{c[4]}-{c[5]}"
                                              for c in CASES])
def test_equilibrium_matches_matrix_minimisation(case):
    loss, bias, K, n, depth, lw, lh, lb = case
    obj = MatrixObjective(loss, bias, K, n, K + 1, depth, lw, lh, lb)
    x, f = minimise(obj, restarts=3, guess_scale=_guess(loss, depth))
    got = obj.summary(x)
    eq = equilibrium(loss, bias, K, n, lw, lh, lb, depth)
    rel = dict(rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(f, float(eq.objective_star), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["fn"], float(eq.fn_star), **rel)
    np.testing.assert_allclose(got["class_mean"], float(eq.class_mean_norm_star), **rel)
    np.testing.assert_allclose(got["w_row"], float(eq.w_norm_star), **rel)
    np.testing.assert_allclose(got["norm_H"], float(eq.factor_norms["H"]), **rel)
    np.testing.assert_allclose(got["norm_WL"], float(eq.factor_norms[f"W{depth}"]), **rel)
    if loss == "mse" and bias != "none":
        np.testing.assert_allclose(got["bias"], float(eq.bias_star), **rel)
    if loss == "ce" and depth > 1:  # the ETF won: no lower-rank state may beat it
        eq = equilibrium(loss, bias, K, n, lw, lh, lb, depth, check_lower_rank=True)
        assert eq.lower_rank_better is False


THRESHOLD_CASES = [("mse", "none", 1), ("ce", "none", 1), ("mse", "free", 1),
                   ("mse", "none", 2), ("ce", "none", 2), ("mse", "none", 3)]


@pytest.mark.parametrize("loss,bias,depth", THRESHOLD_CASES)
def test_threshold_bracketed(loss, bias, depth):
    K, n, ratio = 3, 2, 2.0
    lc = float(lambda_crit(loss, bias, K, n, depth, ratio))
    fns = []
    for factor in (0.97, 1.03):
        lw = factor * lc
        obj = MatrixObjective(loss, bias, K, n, K + 1, depth, lw, ratio * lw)
        x, _ = minimise(obj, restarts=3, guess_scale=_guess(loss, depth))
        fns.append(obj.summary(x)["fn"])
        if loss == "ce" and depth > 1:
            # theory.md 3.2: a lower-rank state can beat both the ETF and the origin
            eq = equilibrium(loss, bias, K, n, lw, ratio * lw, 0.0, depth, check_lower_rank=True)
            best = min(float(eq.objective_star), eq.meta["lower_rank_objective"])
            np.testing.assert_allclose(obj(x)[0], best, rtol=1e-8)
            assert eq.lower_rank_better
    assert fns[0] > 0.05, fns
    if not (loss == "ce" and depth > 1):
        assert fns[1] < 1e-5, fns


def _jacobian_top_eig(obj: MatrixObjective, theta0: np.ndarray, eps: float = 1e-6) -> float:
    cols = []
    for i in range(obj.size):
        e = np.zeros(obj.size)
        e[i] = eps
        cols.append(-(obj(theta0 + e)[1] - obj(theta0 - e)[1]) / (2 * eps))
    J = np.array(cols).T
    return float(np.max(np.linalg.eigvals(J).real))


@pytest.mark.parametrize("loss,bias,depth,lw,lh", [
    ("mse", "none", 1, 0.01, 0.03), ("mse", "free", 1, 0.02, 0.01), ("ce", "none", 1, 0.01, 0.01),
    ("ce", "free", 1, 0.05, 0.002), ("mse", "none", 1, 0.4, 0.4), ("mse", "none", 2, 0.01, 0.03),
    ("ce", "none", 3, 0.02, 0.01)])
def test_growth_rate_is_top_jacobian_eigenvalue(loss, bias, depth, lw, lh):
    from ncsim.theory import growth_rate
    K, n = 3, 2
    obj = MatrixObjective(loss, bias, K, n, K + 1, depth, lw, lh)
    theta0 = np.zeros(obj.size)
    if bias != "none" and loss == "mse":
        theta0[-K:] = 1.0 / K  # the bias sits at its equilibrium while W = H = 0
    top = _jacobian_top_eig(obj, theta0)
    np.testing.assert_allclose(top, float(growth_rate(K, n, lw, lh, depth)), rtol=1e-6,
                               atol=1e-8)
