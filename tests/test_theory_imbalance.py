"""Imbalanced one-layer UFM: closed forms and certified numerics against direct minimisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_theory_minimise import MatrixObjective, minimise

from ncsim.flow import simulate
from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec, SolverSpec
from ncsim.theory import theory_columns
from ncsim.theory.imbalance import imbalanced_equilibrium, imbalanced_mse


class ImbalancedObjective(MatrixObjective):
    """The full matrix objective of :class:`MatrixObjective` with class counts ``counts``."""

    def __init__(self, loss: str, bias: str, counts: tuple[int, ...], d: int, lw: float,
                 lh: float, lb: float = 0.0) -> None:
        K = len(counts)
        super().__init__(loss, bias, K, 1, d, 1, lw, lh, lb)
        self.counts = np.asarray(counts)
        self.N = int(self.counts.sum())
        self.Y = np.repeat(np.eye(K), self.counts, axis=1)
        self.shapes = [(d, self.N), (K, d)]
        self.size = d * self.N + K * d + (K if bias != "none" else 0)

    def stats(self, theta: np.ndarray) -> dict[str, float]:
        (H, W), b = self.unpack(theta)
        labels = np.repeat(np.arange(self.K), self.counts)
        means = np.stack([H[:, labels == k].mean(axis=1) for k in range(self.K)], axis=1)
        mu_g = H.mean(axis=1)
        return {
            "objective": float(self(theta)[0]),
            "fn": float(np.mean(np.linalg.norm(H, axis=0))),
            "class_mean": float(np.mean(np.linalg.norm(means - mu_g[:, None], axis=0))),
            "w_fro": float(np.linalg.norm(W)),
            "h_fro": float(np.linalg.norm(H)),
        }


CASES = [
    ("mse", "none", (1, 2, 4), 0.01, 0.02, 0.0),
    ("mse", "none", (1, 3, 6), 0.12, 0.12, 0.0),      # the smallest class collapses to 0
    ("mse", "free", (1, 2, 4), 0.01, 0.02, 0.0),
    ("mse", "free", (2, 3, 3, 5), 0.005, 0.02, 0.0),
    ("mse", "reg", (1, 2, 4), 0.01, 0.02, 0.5),
    ("ce", "none", (1, 2, 4), 0.01, 0.02, 0.0),
    ("ce", "free", (2, 3, 5), 0.005, 0.01, 0.0),
    ("ce", "reg", (1, 2, 4), 0.01, 0.01, 1.0),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}-{'-'.join(map(str, c[2]))}"
                                              for c in CASES])
def test_imbalanced_matches_matrix_minimisation(case):
    loss, bias, counts, lw, lh, lb = case
    eq = imbalanced_equilibrium(loss, bias, counts, lw, lh, lb)
    obj = ImbalancedObjective(loss, bias, counts, len(counts) + 1, lw, lh, lb)
    x, f = minimise(obj, restarts=3, guess_scale=2.0 if loss == "mse" else 4.0)
    got = obj.stats(x)
    assert eq.collapsed
    assert eq.kkt_residual < 1e-6
    np.testing.assert_allclose(f, eq.objective_star, rtol=1e-9, atol=1e-12)
    assert eq.objective_star <= eq.objective_zero
    for key, want in (("fn", eq.fn_star), ("class_mean", eq.class_mean_norm_centred),
                      ("w_fro", eq.w_norm_fro), ("h_fro", eq.h_norm_fro)):
        np.testing.assert_allclose(got[key], want, rtol=1e-5, atol=1e-7, err_msg=key)


def test_mse_no_bias_is_soft_thresholding():
    counts, lw, lh = (1, 3, 6), 0.12, 0.12
    eq = imbalanced_mse(counts, lw, lh)
    N, lam = sum(counts), math.sqrt(lw * lh)
    want = np.sort(np.maximum(np.sqrt(counts) - N * lam, 0.0))[::-1]
    np.testing.assert_allclose(eq.singular_values, want, atol=1e-14)
    assert eq.class_mean_norms[0] == 0.0  # sqrt(1) < N Lambda = 1.2: minority collapse


def test_balanced_counts_reduce_to_balanced_equilibrium():
    from ncsim.theory import equilibrium
    for loss, bias in (("mse", "none"), ("mse", "free"), ("ce", "none")):
        eq = imbalanced_equilibrium(loss, bias, (3, 3, 3), 0.01, 0.02)
        bal = equilibrium(loss, bias, 3, 3, 0.01, 0.02)
        np.testing.assert_allclose(eq.fn_star, float(bal.fn_star), rtol=1e-8)
        np.testing.assert_allclose(eq.objective_star, float(bal.objective_star), rtol=1e-10)


def test_simulator_end_state_and_theory_columns():
    counts, lw, lh = (2, 3, 5), 0.02, 0.02
    specs = [RunSpec(model=ModelSpec(loss="mse", bias=bias, classes=3, per_class=counts, dim=5),
                     reg=Regularization(lambda_w=lw, lambda_h=lh),
                     init=InitSpec(scale=0.3, seed=2),
                     solver=SolverSpec(t_end=4000, rtol=1e-11, atol=1e-13, gtol=0, records=30))
             for bias in ("none", "free")]
    ce = specs[0].replace(model=ModelSpec(loss="ce", bias="none", classes=3, per_class=counts,
                                          dim=5))
    runs = simulate([*specs, ce]).runs
    for spec, (_, row) in zip([*specs, ce], runs.iterrows(), strict=True):
        m = spec.model
        eq = imbalanced_equilibrium(m.loss, m.bias, counts, lw, lh)
        assert row["status"] == "ok"
        for sim, want in ((row["final_fn"], eq.fn_star),
                          (row["final_class_mean_norm"], eq.class_mean_norm_centred),
                          (row["final_w_norm"], eq.w_norm_fro),
                          (row["final_loss"], eq.loss_star),
                          (row["final_objective"], eq.objective_star)):
            np.testing.assert_allclose(sim, want, rtol=1e-6)
        cols = theory_columns(spec)
        if m.loss == "mse":
            assert cols["theory_regime"].startswith("ok")
            np.testing.assert_allclose(row["fn_star_theory"], eq.fn_star, rtol=1e-12)
            np.testing.assert_allclose(cols["w_norm_star_theory"], eq.w_norm_fro / math.sqrt(3))
            assert math.isnan(cols["onset_time_theory"])
        else:  # imbalanced CE: certified numerics exist, the run table does not carry them
            assert cols["theory_regime"].startswith("not_applicable")


def test_imbalanced_threshold_column():
    """lambda_crit_theory: the largest label singular value dies at N Lambda = sigma_max."""
    counts = (2, 3, 5)
    spec = RunSpec(model=ModelSpec(loss="mse", bias="free", classes=3, per_class=counts, dim=5),
                   reg=Regularization(lambda_w=0.01, lambda_h=0.04))
    lc = theory_columns(spec)["lambda_crit_theory"]
    for factor, collapsed in ((0.99, True), (1.01, False)):
        eq = imbalanced_mse(counts, factor * lc, 4 * factor * lc, "free")
        assert eq.collapsed is collapsed
