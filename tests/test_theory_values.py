"""Closed-form values a user reads, checked at the edges where the theory promises them: the
strict collapse threshold of deep CE, the non-zero critical point of deep MSE right up to
Lambda_stat, the critical decay of the theory columns for unequal weight and feature decays,
and the vanishing regime of aligned deep inits above Lambda_stat.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ncsim.spec import InitSpec, ModelSpec, OnsetSpec, Regularization, RunSpec, SolverSpec
from ncsim.theory import equilibrium, lambda_crit
from ncsim.theory.columns import theory_columns
from ncsim.theory.critical import Lambda_crit, deep_thresholds
from ncsim.theory.phase import classify


def _spec(loss: str = "mse", bias: str = "none", K: int = 4, n: int = 5, d: int = 20,
          depth: int = 1, lw: float | tuple[float, ...] = 0.01, lh: float = 0.04,
          lb: float = 0.0, kind: str = "spectral", scale: float = 1.0) -> RunSpec:
    model = ModelSpec(kind="ufm" if depth == 1 else "deep", loss=loss, bias=bias, classes=K,
                      per_class=n, dim=d, depth=depth)
    return RunSpec(model=model, reg=Regularization(lambda_w=lw, lambda_h=lh, lambda_b=lb),
                   init=InitSpec(kind=kind, scale=scale, seed=1),
                   solver=SolverSpec(t_end=10.0, rtol=1e-9, atol=1e-12, gtol=0, records=10),
                   onset=OnsetSpec(metric="nc1_trace")).validate()


# ---------------------------------------------------------------------------------------------
# deep CE: the collapse threshold is strict


@pytest.mark.parametrize("depth", [2, 3])
def test_deep_ce_exact_critical_decay_is_not_collapsed(depth):
    """Deep CE: equal decays set to lambda_crit give Lambda = Lambda_crit exactly (the geometric
    mean of equal decays is exact), where the ETF state and the origin tie and the origin is
    returned (the documented strict threshold, as for one layer and deep MSE). 1e-11 below it,
    outside the documented tie window of 1e-12 relative, every point is collapsed."""
    K = np.array([2.0, 3.0, 4.0, 10.0])
    n = np.array([1.0, 2.0, 5.0, 3.0])
    lc = lambda_crit("ce", "none", K, n, depth)
    at = equilibrium("ce", "none", K, n, lc, lc, 0.0, depth)
    assert not np.any(at.collapsed)
    assert np.all(at.sigma == 0) and np.all(at.fn_star == 0)
    # the non-zero critical point exists there (the jump is first order)
    assert np.all(np.isfinite(at.sigma_local)) and np.all(at.sigma_local > 0)
    below = equilibrium("ce", "none", K, n, lc * (1 - 1e-11), lc * (1 - 1e-11), 0.0, depth)
    assert np.all(below.collapsed)
    # just below the threshold the state is the one at the threshold (continuous in Lambda)
    np.testing.assert_allclose(below.sigma, at.sigma_local, rtol=1e-8)


# ---------------------------------------------------------------------------------------------
# deep MSE: the non-zero critical point exists up to Lambda_stat


@pytest.mark.parametrize("K,n,depth", [(3, 2, 2), (4, 5, 2), (10, 3, 3), (2, 7, 4)])
def test_deep_mse_local_minimiser_exists_up_to_lambda_stat(K, n, depth):
    """Deep MSE (M = L + 1 factors): a non-zero critical point exists iff Lambda <= Lambda_stat
    = max_x phi(x), phi(x) = x^(M-2) (sqrt(n) - x^M) / N, whose maximiser is x_m^M =
    sqrt(n) (M - 2) / (2 (M - 1)) (phi'(x) = 0). 1e-4 below Lambda_stat the upper root
    sigma_local = x^M solves phi(x) = Lambda (to 1e-10, the bisection is certified to rounding)
    with x > x_m; 1e-4 above it there is none (NaN). Lambda_stat > Lambda_glob, so the origin
    is the global minimiser at both points."""
    s, N, M = math.sqrt(n), K * n, depth + 1
    th = deep_thresholds(K, n, 0.01, depth)
    lam_stat = float(th.Lambda_stat)
    x_m = (s * (M - 2) / (2 * (M - 1))) ** (1.0 / M)
    assert lam_stat == pytest.approx(x_m ** (M - 2) * (s - x_m ** M) / N, rel=1e-12)
    assert float(th.Lambda_glob) < lam_stat

    lam = lam_stat * (1 - 1e-4)
    eq = equilibrium("mse", "none", K, n, lam, lam, 0.0, depth)
    assert not bool(eq.collapsed)
    sig = float(eq.sigma_local)
    assert math.isfinite(sig)
    x = sig ** (1.0 / M)
    assert x > x_m
    assert x ** (M - 2) * (s - x ** M) / N == pytest.approx(lam, rel=1e-10)

    above = lam_stat * (1 + 1e-4)
    assert math.isnan(float(equilibrium("mse", "none", K, n, above, above, 0.0,
                                        depth).sigma_local))


# ---------------------------------------------------------------------------------------------
# theory columns: lambda_crit_theory with lambda_H != lambda_W


@pytest.mark.parametrize("depth,loss", [(1, "mse"), (1, "ce"), (2, "mse"), (2, "ce")])
def test_lambda_crit_column_for_unequal_decays(depth, loss):
    """With lambda_H = 4 lambda_W the critical lambda_W is Lambda_crit / 4^(1/M) (M = L + 1:
    then Lambda = (lambda_W^L 4 lambda_W)^(1/M) = Lambda_crit); one layer Lambda_crit =
    1/(K sqrt n), so lambda_crit = 1/(2 K sqrt n). The column must be that value, and scaling
    both decays to it puts the model exactly on the threshold: not collapsed there, collapsed
    1e-9 below."""
    K, n, ratio = 4, 5, 4.0
    row = theory_columns(_spec(loss=loss, depth=depth, lw=0.01, lh=0.01 * ratio))
    want = float(Lambda_crit(loss, K, n, depth)) / ratio ** (1.0 / (depth + 1))
    if depth == 1:
        assert want == pytest.approx(1 / (2 * K * math.sqrt(n)), rel=1e-15)
    assert row["lambda_crit_theory"] == pytest.approx(want, rel=1e-12)
    lc = row["lambda_crit_theory"]
    at = equilibrium(loss, "none", K, n, lc, ratio * lc, 0.0, depth)
    below = equilibrium(loss, "none", K, n, lc * (1 - 1e-9), ratio * lc * (1 - 1e-9), 0.0, depth)
    assert bool(below.collapsed)
    if depth == 1 or loss == "mse":  # closed-form thresholds: the tie goes to the origin
        assert not bool(at.collapsed)


# ---------------------------------------------------------------------------------------------
# regimes of the theory columns and the phase classification that follow from the thresholds
# alone (no flow needs integrating to know them)


@pytest.mark.parametrize("kind", ["spectral", "etf"])
@pytest.mark.parametrize("lw,lh", [(0.08, 0.08), ((0.075, 0.09), 0.085)])
def test_deep_aligned_init_above_lambda_stat_is_vanishing(kind, lw, lh):
    """Deep MSE (K = 4, n = 5, L = 2): Lambda_stat = 0.0691 (no non-zero critical point above
    it). With every decay above it (equal, or per layer with geometric mean ~0.083) an aligned
    init of any scale flows to the origin because no collapsed state exists at all: the
    regime is "vanishing" (not "trapped", which names an init below the basin root of an
    existing collapsed state), the onset inf, nothing collapsed, fn* 0; phase.classify (equal
    decays) says "vanishing" too."""
    lam_stat = float(deep_thresholds(4, 5, 0.01, 2).Lambda_stat)
    assert lam_stat == pytest.approx(0.0690756, rel=1e-5)
    layers = lw if isinstance(lw, tuple) else (lw, lw)
    assert math.prod((*layers, lh)) ** (1 / 3) > lam_stat
    row = theory_columns(_spec(depth=2, kind=kind, lw=lw, lh=lh, scale=1.0))
    assert row["theory_regime"] == "vanishing"
    assert row["onset_time_theory"] == math.inf
    assert row["collapsed_theory"] is False
    assert row["fn_star_theory"] == 0.0
    if not isinstance(lw, tuple):
        phase = classify("mse", "none", 4, 5, 20, 2, lw, lh, 0.0, 1.0)
        assert phase["phase"] == "vanishing" and phase["collapsed_global"] is False
