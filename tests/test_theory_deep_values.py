"""Values of the deep per-mode solvers, the lower-rank verdict and the root finder at their
edges: a zero decay, a margin of rounding, a root that the bisection hits exactly.

References are independent of the code under test: the per-mode problem of theory.md 3.1 at
Lambda = 0 (g(sigma) = c/(2N)(sigma - sqrt n)^2, minimised exactly at sigma = sqrt n), the
documented margin of :meth:`ncsim.theory.lowrank.LowRankResult.beats`, and functions whose roots
are exact binary fractions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ncsim.theory import modes
from ncsim.theory._backend import bisect
from ncsim.theory.lowrank import LowRankResult


@pytest.mark.parametrize("M", [3, 4, 6])
@pytest.mark.parametrize(("K", "n"), [(2, 1), (4, 5), (10, 7)])
def test_deep_mse_mode_without_decay_sits_at_sqrt_n_exactly(K, n, M):
    """Lambda = 0: the objective is c/(2N)(sigma - sqrt n)^2, whose minimiser is sqrt(n) and
    whose minimum is 0, both exactly (no root has to be searched). The solver returns
    np.sqrt(n) to the last bit and objective 0.0, for the ordinary mode and a mean mode with
    data weight c = 0.3 alike."""
    for c in (1.0, 0.3):
        sol = modes.mse_mode(K, n, 0.0, M, c)
        assert float(sol.sigma) == math.sqrt(n)
        assert float(sol.sigma_local) == math.sqrt(n)
        assert bool(sol.collapsed)
        assert float(sol.objective) == 0.0
        assert float(sol.objective_zero) == pytest.approx(c / (2 * K), rel=1e-15)


def test_deep_mse_mode_without_decay_is_exact_beside_positive_decays():
    """The exact Lambda = 0 value holds inside a vector of decays too (numpy and torch), while
    a positive decay in the same call gets its own root: sigma solves the stationarity
    condition c sigma^(1 - 2/M)(sqrt n - sigma)/N = Lambda (theory.md 3.1) to 1e-12."""
    K, n, M = 3, 4, 3
    lams = np.array([0.0, 1e-3])
    for values in (lams, torch.tensor(lams, dtype=torch.float64)):
        sol = modes.mse_mode(K, n, values, M)
        sigma = np.asarray(sol.sigma, dtype=float)
        assert sigma[0] == 2.0  # sqrt(4)
        stationary = sigma[1] ** (1 - 2 / M) * (2.0 - sigma[1]) / (K * n)
        assert stationary == pytest.approx(1e-3, rel=1e-12)


def test_lower_rank_state_beats_an_objective_only_by_more_than_rounding():
    """A lower-rank state proves an objective is not the minimum only when it lies below it by
    more than BEAT_RTOL = 1e-10 relative (absolute 1e-10 for |f| < 1): an equal objective, or
    one above by 5e-11 relative, is rounding and not beaten; 2e-10 relative above is beaten."""
    for best in (2.0, 0.5, -3.0):
        result = LowRankResult((best,), 1, best)
        unit = max(1.0, abs(best))
        assert not result.beats(best)
        assert not result.beats(best + 5e-11 * unit)
        assert result.beats(best + 2e-10 * unit)
        assert not result.beats(best - 1.0)


def test_lower_rank_verdict_uses_only_the_allowed_ranks():
    """beats(objective, max_rank) compares with the best state of rank <= max_rank only: here
    rank 2 is far lower than rank 1, so a value between them is beaten with any rank allowed
    and not with rank 1 alone."""
    result = LowRankResult((1.0, 0.2), 2, 0.2)
    assert result.beats(0.6)
    assert result.beats(0.6, 2)
    assert not result.beats(0.6, 1)
    assert result.best_up_to(1) == (1, 1.0)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_bisect_keeps_a_root_it_hits_exactly(as_tensor):
    """A root at an exactly representable midpoint (x - 0.5 on [0, 1], hit at the first step)
    or at a bracket end (x on [0, 1], 1 - x on [0, 1]) is a root: the bisection returns it
    to the bracket resolution 2^-200 instead of walking away from it or giving NaN."""
    wrap = (lambda v: torch.tensor(v, dtype=torch.float64)) if as_tensor else np.asarray
    lo, hi = wrap([0.0, 0.0, 0.0]), wrap([1.0, 1.0, 1.0])
    shift = wrap([0.5, 0.0, 0.0])
    sign = wrap([1.0, 1.0, -1.0])
    offset = wrap([0.0, 0.0, 1.0])

    def f(x):
        return sign * x - shift + offset

    root = np.asarray(bisect(f, lo, hi), dtype=float)
    np.testing.assert_allclose(root, [0.5, 0.0, 1.0], rtol=0, atol=1e-15)


def test_kkt_certificate_is_the_same_for_the_transposed_problem():
    """MSE without bias: F(X) = |X - D|_F^2 / (2N) with D = diag(sqrt(n_k)) (counts 1, 2, 4,
    N = 7), so X and X^T are equally far from optimal and the certificate must agree on them.
    At X = a u e_3^T, u = (sin t, 0, cos t), a = 2 cos t - N Lambda (t = 0.1, N Lambda = 1.7,
    only the class-3 mode alive) the support condition holds exactly and the off-support part
    is below Lambda, so the whole violation is the part of the gradient that leaves the column
    space of X: -2 (e_3 - cos t u) / N, largest entry 2 sin t cos t / N; relative to Lambda
    that is 2 sin t cos t / 1.7 = 0.1168643... The unperturbed minimiser diag(0, 0, 0.3)
    certifies with residual 0."""
    from ncsim.theory.imbalance import kkt_residual

    counts, N = np.array([1.0, 2.0, 4.0]), 7
    lam = 1.7 / N
    t = 0.1
    u = np.array([math.sin(t), 0.0, math.cos(t)])
    X = (2 * math.cos(t) - 1.7) * np.outer(u, [0.0, 0.0, 1.0])
    expected = 2 * math.sin(t) * math.cos(t) / 1.7
    zero = np.zeros(3)
    for point in (X, X.T):
        assert kkt_residual("mse", counts, lam, 0.0, point, zero, "none") == pytest.approx(
            expected, rel=1e-12)
    assert kkt_residual("mse", counts, lam, 0.0, np.diag([0.0, 0.0, 0.3]), zero, "none") < 1e-14


def _rank_one_parts(theta: np.ndarray, K: int, M: int, weight: float) -> tuple[float, float]:
    """(mean CE, penalty weight (|u||v|)^(2/M)) of the rank-1 class-mean logits u v^T,
    theta = (u, v): column k holds the logits of class k's samples."""
    u, v = theta[:K], theta[K:]
    Z = np.outer(u, v)
    top = Z.max(axis=0)
    ce = np.mean(np.log(np.exp(Z - top).sum(axis=0)) + top - np.diag(Z))
    return ce, weight * (np.linalg.norm(u) * np.linalg.norm(v)) ** (2 / M)


@pytest.mark.parametrize(("n", "lam", "depth"), [(2, 0.02, 2), (5, 0.01, 3)])
def test_lower_rank_objective_at_three_classes_matches_a_rank_one_minimisation(n, lam, depth):
    """K = 3: the only rank below K - 1 is 1, so the search's objective is the minimum over
    class-mean logits u v^T of (1/K) sum_k CE(v_k u, k) + (M/2) Lambda n^(1/M) (|u||v|)^(2/M)
    (theory.md 0.2 with the single singular value |u||v| of u v^T, times sqrt(n) for the
    sample-level logits). Minimised here directly in (u, v) by BFGS from 4 random starts (the
    best of them, or the origin's ln 3 if lower); the two agree to 1e-12 relative (measured
    1e-15, the spread of the BFGS ends)."""
    from scipy.optimize import minimize

    from ncsim.theory.lowrank import lower_rank_check

    K, M = 3, depth + 1
    weight = M / 2 * lam * n ** (1 / M)

    def objective(theta):
        return sum(_rank_one_parts(theta, K, M, weight))

    rng = np.random.default_rng(3)
    direct = min([math.log(K)] + [
        minimize(objective, rng.normal(0.0, 2.0, 2 * K), method="BFGS",
                 options={"gtol": 1e-11}).fun for _ in range(4)])
    result = lower_rank_check(K, n, lam, depth)
    assert len(result.objectives) == 1 and result.best_rank == 1
    assert result.best_objective == pytest.approx(direct, rel=1e-12)
    assert direct < math.log(K) - 0.1  # a collapsed rank-1 state, not the origin


def test_lower_rank_state_below_the_top_rank_is_that_rank_s_own_state():
    """K = 4, n = 2, L = 2, all decays 0.03: the rank-2 state (f = 0.4707) is far below the
    rank-1 one (f = 0.8961), so state(1, ...) must describe the best rank-1 state, not the
    rank-2 one. Reference: the rank-1 logits u v^T minimised directly (BFGS, 4 starts) with
    the penalty (M/2) Lambda n^(1/M) sigma^(2/M), sigma = |u||v|. Balanced over M = 3 equal-
    decay factors, the penultimate class means are sigma^((M-1)/M) |v_k|/|v| in the search's
    units and W_L has |W_L|_F = sigma^(1/M); the model's units scale them by n^(-1/(2M)) and
    n^(1/(2M)) (factor decay Lambda n^(1/M) against lambda_L = Lambda). Objective to 1e-12,
    loss, fn and |W_L|_F / sqrt(K) to 1e-6 (the BFGS minimiser is accurate to ~1e-8 in these
    first-order quantities; measured agreement 1e-8)."""
    from scipy.optimize import minimize

    from ncsim.theory.lowrank import lower_rank_check

    K, n, lam, depth = 4, 2, 0.03, 2
    M = depth + 1
    weight = M / 2 * lam * n ** (1 / M)

    def parts(theta):
        return _rank_one_parts(theta, K, M, weight)

    rng = np.random.default_rng(3)
    best = min((minimize(lambda t: sum(parts(t)), rng.normal(0.0, 2.0, 2 * K), method="BFGS",
                         options={"gtol": 1e-11}) for _ in range(4)), key=lambda r: r.fun)
    u, v = best.x[:K], best.x[K:]
    sigma = np.linalg.norm(u) * np.linalg.norm(v)
    result = lower_rank_check(K, n, lam, depth)
    one, two = result.state(1, lam), result.state(2, lam)
    assert (one.rank, two.rank) == (1, 2)
    assert two.objective < one.objective - 0.4
    assert one.objective == pytest.approx(best.fun, rel=1e-12)
    assert one.loss == pytest.approx(parts(best.x)[0], rel=1e-6)
    fn = sigma ** ((M - 1) / M) * np.mean(np.abs(v)) / np.linalg.norm(v) * n ** (-1 / (2 * M))
    assert one.fn == pytest.approx(fn, rel=1e-6)
    assert one.w_norm == pytest.approx(sigma ** (1 / M) / math.sqrt(K) * n ** (1 / (2 * M)),
                                       rel=1e-6)
    assert two.loss < one.loss - 0.5


@pytest.mark.parametrize(("K", "n", "M"), [(3, 2, 3), (10, 20, 4), (4, 5, 5)])
def test_deep_ce_ray_at_lambda_stat_keeps_its_double_root(K, n, M):
    """Deep CE on the ETF ray: a non-zero critical point exists iff Lambda <= Lambda_stat =
    max psi, psi(sigma) = sigma^(1 - 2/M) / (sqrt(n) (e^(sigma/sqrt n) + K - 1)) (theory.md
    3.1, the CE form). Lambda_stat and its maximiser sigma_m are checked against psi written
    out here (value to 1e-14, and psi(sigma_m (1 +- 1e-4)) lower); at Lambda = Lambda_stat
    exactly the critical point is the double root sigma_m, at 1e-9 above it there is none
    (NaN). Lambda_stat lies above Lambda_glob, so the origin is the minimiser at both."""
    def psi(sigma):
        return sigma ** (1 - 2 / M) / (math.sqrt(n) * (math.exp(sigma / math.sqrt(n)) + K - 1))

    sig_m, lam_stat = (float(v) for v in modes.ce_psi_max(K, n, M))
    assert lam_stat == pytest.approx(psi(sig_m), rel=1e-14)
    assert psi(sig_m * (1 - 1e-4)) < lam_stat and psi(sig_m * (1 + 1e-4)) < lam_stat
    at = modes.ce_ray(K, n, lam_stat, M)
    assert float(at.sigma_local) == pytest.approx(sig_m, rel=1e-12)
    assert float(at.sigma) == 0.0 and not bool(at.collapsed)
    assert math.isnan(float(modes.ce_ray(K, n, lam_stat * (1 + 1e-9), M).sigma_local))


@pytest.mark.parametrize("bias,lambda_b", [("none", 0.0), ("free", 0.0), ("reg", 0.3)])
@pytest.mark.parametrize("n", [1, 4, 16])
def test_imbalanced_ce_with_equal_counts_at_the_threshold_is_the_origin(bias, lambda_b, n):
    """Two classes of n samples each (the imbalanced solver with equal counts): the one-layer CE
    threshold is K sqrt(n lambda_W lambda_H) < 1 (theory.md 2.1), i.e. decays 1/(2 sqrt n)
    = 0.5, 0.25, 0.125, exact binary fractions. At the threshold itself the tie goes to the
    origin: collapsed False, fn* 0 and f = ln 2 (the bias stays 0 by symmetry). At (1 - 1e-6)
    times it the minimiser is the ETF with |h|^2 = (K-1)/K sqrt(lambda_W/(n lambda_H))
    ln(1/r - (K-1)), r = sqrt(n lambda_W lambda_H) (theory.md 2.1), to 1e-6 relative (the
    certified numeric solution; measured 3e-7 at worst)."""
    from ncsim.theory.imbalance import imbalanced_equilibrium

    K, lc = 2, 1 / (2 * math.sqrt(n))
    at = imbalanced_equilibrium("ce", bias, (n, n), lc, lc, lambda_b)
    assert not at.collapsed
    assert at.fn_star == 0.0 and at.w_norm_fro == 0.0
    assert at.objective_star == pytest.approx(math.log(2), rel=1e-14)
    lam = lc * (1 - 1e-6)
    below = imbalanced_equilibrium("ce", bias, (n, n), lam, lam, lambda_b)
    r = math.sqrt(n) * lam
    h2 = (K - 1) / K / math.sqrt(n) * math.log(1 / r - (K - 1))
    assert below.collapsed
    assert below.fn_star == pytest.approx(math.sqrt(h2), rel=1e-6)
