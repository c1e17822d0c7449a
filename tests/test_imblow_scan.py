"""Extreme-parameter scan of the imbalanced one-layer UFM, the mean-mode bias threshold and the
deep CE lower-rank search (very unequal class counts, tiny / huge decays)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import logsumexp

from ncsim.errors import InputError
from ncsim.theory.critical import lambda_b_crit_mean_mode
from ncsim.theory.equilibrium import equilibrium
from ncsim.theory.imbalance import imbalanced_equilibrium
from ncsim.theory.lowrank import lower_rank_check


def _class_mean_objective(theta, loss, bias, counts, lw, lh, lb):
    """f(W, class means, b) with every sample at its class mean (the package convention)."""
    K = counts.size
    N = counts.sum()
    W = theta[:K * K].reshape(K, K)
    mu = theta[K * K:2 * K * K].reshape(K, K)
    b = theta[2 * K * K:] if bias != "none" else np.zeros(K)
    Z = W @ mu + b[:, None]
    if loss == "mse":
        R = Z - np.eye(K)
        data = 0.5 * np.sum(counts * np.sum(R ** 2, 0)) / N
        Gz = R * counts / N
    else:
        lse = logsumexp(Z, axis=0)
        data = float(np.sum(counts * (lse - np.diag(Z))) / N)
        Gz = (np.exp(Z - lse) - np.eye(K)) * counts / N
    lbb = lb if bias == "reg" else 0.0
    f = (data + lw / 2 * np.sum(W ** 2) + lh / 2 * np.sum(counts * np.sum(mu ** 2, 0))
         + lbb / 2 * float(b @ b))
    grads = [(Gz @ mu.T + lw * W).ravel(), (W.T @ Gz + lh * mu * counts).ravel()]
    if bias != "none":
        grads.append(Gz.sum(1) + lbb * b)
    return f, np.concatenate(grads)


def _scipy_minimum(loss, bias, counts, lw, lh, lb=0.0, starts=3):
    """Smallest objective over a few L-BFGS starts of the class-mean objective (d = K)."""
    counts = np.asarray(counts, dtype=float)
    K = counts.size
    rng = np.random.default_rng(0)
    size = 2 * K * K + (K if bias != "none" else 0)
    best = math.inf
    for scale in (1.0, 0.1, 3.0)[:starts]:
        res = minimize(_class_mean_objective, rng.normal(0, scale, size),
                       args=(loss, bias, counts, lw, lh, lb), jac=True, method="L-BFGS-B",
                       options={"maxiter": 20000, "ftol": 1e-16, "gtol": 1e-12, "maxcor": 30})
        best = min(best, float(res.fun))
    return best


def _own_kkt(loss, bias, counts, lw, lh, lb, eq):
    """KKT violation (relative to Lambda) of the nuclear-norm program at the returned point."""
    counts = np.asarray(counts, dtype=float)
    K, N, Lam = counts.size, counts.sum(), math.sqrt(lw * lh)
    X = (eq.logits - eq.bias[:, None]) * np.sqrt(counts)
    Z = eq.logits
    if loss == "mse":
        Gz = (Z - np.eye(K)) * counts / N
    else:
        Gz = (np.exp(Z - logsumexp(Z, axis=0)) - np.eye(K)) * counts / N
    G = Gz / np.sqrt(counts)
    U, S, Vt = np.linalg.svd(X)
    r = int(np.sum(np.greater(S, 1e-9 * max(1.0, S[0]))))
    D = G + Lam * U[:, :r] @ Vt[:r]
    Pu = np.eye(K) - U[:, :r] @ U[:, :r].T
    Pv = np.eye(K) - Vt[:r].T @ Vt[:r]
    viol = max(np.abs(D - Pu @ D @ Pv).max(), max(np.linalg.norm(Pu @ D @ Pv, 2) - Lam, 0.0))
    viol /= Lam
    if bias != "none":
        viol = max(viol, np.abs(Gz.sum(1) + (lb if bias == "reg" else 0.0) * eq.bias).max() / Lam)
    return viol


# ------------------------------------------------------------------ invariants that held
@pytest.mark.parametrize("counts", [(1, 1000), (1000, 1, 1), (1, 1, 1, 1, 50)])
@pytest.mark.parametrize("bias", ["none", "free"])
@pytest.mark.parametrize("lw, lh", [(1e-4, 1e-2), (3e-3, 3e-3)])
def test_mse_closed_form_not_beaten_by_scipy_at_extreme_counts(counts, bias, lw, lh):
    """MSE closed forms at very unequal counts are not beaten by a direct L-BFGS minimisation."""
    eq = imbalanced_equilibrium("mse", bias, counts, lw, lh)
    ref = _scipy_minimum("mse", bias, counts, lw, lh, starts=2)
    assert eq.objective_star <= ref + 1e-12 * abs(ref)
    assert eq.objective_star == pytest.approx(ref, rel=1e-7)
    assert _own_kkt("mse", bias, counts, lw, lh, 0.0, eq) < 1e-9


@pytest.mark.parametrize("counts", [(1, 1000), (1000, 1, 1)])
@pytest.mark.parametrize("loss, bias", [("ce", "none"), ("ce", "free"), ("ce", "reg"),
                                        ("mse", "reg")])
def test_numeric_cases_at_extreme_counts_are_certified_minima(counts, loss, bias):
    """Numeric cases at 1000:1 counts: own KKT check ~0 and scipy does not beat the value."""
    lb = 0.5 if bias == "reg" else 0.0
    eq = imbalanced_equilibrium(loss, bias, counts, 1e-3, 1e-3, lb)
    assert eq.collapsed
    assert _own_kkt(loss, bias, counts, 1e-3, 1e-3, lb, eq) < 1e-6
    ref = _scipy_minimum(loss, bias, counts, 1e-3, 1e-3, lb, starts=2)
    assert eq.objective_star <= ref + 1e-9 * abs(ref)


@pytest.mark.parametrize("K, n", [(50, 7), (2, 10000)])
@pytest.mark.parametrize("bias", ["none", "free"])
def test_equal_counts_reduce_to_balanced_closed_form_at_large_k_and_n(K, n, bias):
    """Equal counts (K = 50 or n = 1e4) give the balanced equilibrium's fn*, f and |w_k|."""
    lam = 0.3 / (K * math.sqrt(n))
    eq = imbalanced_equilibrium("mse", bias, [n] * K, lam, lam)
    bal = equilibrium("mse", bias, K, n, lam, lam)
    assert eq.fn_star == pytest.approx(float(bal.fn_star), rel=1e-12)
    assert eq.objective_star == pytest.approx(float(bal.objective_star), rel=1e-12)
    assert eq.w_norm_fro / math.sqrt(K) == pytest.approx(float(bal.w_norm_star), rel=1e-12)


@pytest.mark.parametrize("K, n, lam", [(2, 1, 0.1), (5, 10, 0.01), (10, 100, 1e-3)])
def test_lambda_b_crit_mean_mode_is_where_the_numeric_mean_mode_appears(K, n, lam):
    """The mean mode of the numeric reg-bias minimiser is 0 at 0.98 and alive at 1.02 x lb_c."""
    lbc = float(lambda_b_crit_mean_mode(K, n, lam, lam))
    below = imbalanced_equilibrium("mse", "reg", [n] * K, lam, lam, 0.98 * lbc)
    above = imbalanced_equilibrium("mse", "reg", [n] * K, lam, lam, 1.02 * lbc)
    assert below.singular_values[-1] < 1e-9 * below.singular_values[0]
    sig_mean = float(equilibrium("mse", "reg", K, n, lam, lam, 1.02 * lbc).sigma_mean)
    assert above.singular_values[-1] == pytest.approx(sig_mean, rel=1e-5)


@pytest.mark.parametrize("loss, bias", [("ce", "none"), ("ce", "reg"), ("mse", "reg")])
def test_fn_star_decreases_with_the_decay_at_unequal_counts(loss, bias):
    """fn* of the (2, 3, 5) minimiser is non-increasing in lambda (equal decays, 1e-4 .. 0.1)."""
    fns = [imbalanced_equilibrium(loss, bias, (2, 3, 5), lam, lam, 0.5).fn_star
           for lam in np.geomspace(1e-4, 0.1, 13)]
    assert np.all(np.diff(fns) <= 1e-9)
    assert fns[0] > 0


def test_lower_rank_rank_one_k3_limits():
    """K = 3 rank 1: f -> ln(2)/3 (one class unreachable) at tiny Lam, f = ln 3 at huge Lam."""
    tiny = lower_rank_check.uncached(3, 1, 1e-9, 2, restarts=2)
    assert math.log(2) / 3 < tiny.best_objective < math.log(2) / 3 + 1e-4
    huge = lower_rank_check.uncached(3, 1, 1e3, 2, restarts=2)
    assert huge.best_objective == pytest.approx(math.log(3), rel=1e-12)


# ------------------------------------------------------------------ findings (real bugs)
def test_mse_reg_bias_equal_counts_large_n_small_decay_is_certified():
    """MSE reg bias, counts (100,)*3, lambda = 1e-5 (far below threshold): the closed form."""
    eq = imbalanced_equilibrium("mse", "reg", [100] * 3, 1e-5, 1e-5, 0.7)
    bal = equilibrium("mse", "reg", 3, 100, 1e-5, 1e-5, 0.7)
    assert eq.objective_star == pytest.approx(float(bal.objective_star), rel=1e-9)


def test_mse_reg_bias_majority_class_at_1e_4_is_certified():
    """MSE reg bias, counts (1000, 1, 1), lambda = 1e-4: certified, f = scipy's 0.00333722766."""
    eq = imbalanced_equilibrium("mse", "reg", (1000, 1, 1), 1e-4, 1e-4, 0.5)
    assert eq.kkt_residual <= 1e-6
    assert eq.objective_star == pytest.approx(0.0033372276601684, rel=1e-9)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_huge_finite_decays_give_the_origin_objective(loss):
    """lambda_w = lambda_h = 1e155 (finite, allowed): the origin, f = loss at 0, as balanced."""
    eq = imbalanced_equilibrium(loss, "none", [2, 2], 1e155, 1e155)
    bal = equilibrium(loss, "none", 2, 2, 1e155, 1e155)
    assert not eq.collapsed
    assert eq.objective_star == pytest.approx(float(bal.objective_star), rel=1e-12)


def test_tiny_decays_keep_the_nuclear_norm_term():
    """lambda_w = lambda_h = 1e-170: f = Lambda |X|_* = 2 sqrt(2) 1e-170, as balanced."""
    eq = imbalanced_equilibrium("mse", "none", [2, 2], 1e-170, 1e-170)
    bal = equilibrium("mse", "none", 2, 2, 1e-170, 1e-170)
    assert eq.objective_star == pytest.approx(float(bal.objective_star), rel=1e-12, abs=0)


def test_infinite_count_is_refused_without_a_runtime_warning():
    """counts [inf, 2]: InputError and no RuntimeWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(InputError, match="counts must list"):
            imbalanced_equilibrium("mse", "none", [np.inf, 2], 0.01, 0.01)


def test_boolean_count_is_refused():
    """counts [True, 2]: InputError, as for K, n and the other integer inputs."""
    with pytest.raises(InputError, match="counts must list"):
        imbalanced_equilibrium("mse", "none", [True, 2], 0.01, 0.01)


def test_lambda_b_crit_keeps_its_value_at_decays_whose_product_underflows():
    """lambda_b_crit_mean_mode at lambda_W = lambda_H = 1e-200 (product 1e-400 underflows):
    K sqrt(n) 1e-200 (not 0), and as 1e-3 decays scaled: q is linear in sqrt(lw lh)."""
    from ncsim.theory.critical import lambda_b_crit_mean_mode

    q = 4 * math.sqrt(5) * 1e-200
    got = float(lambda_b_crit_mean_mode(4, 5, 1e-200, 1e-200))
    assert got == pytest.approx(q / (1 - q), rel=1e-14) and got > 0
    usual = float(lambda_b_crit_mean_mode(4, 5, 1e-3, 1e-3))
    assert usual == pytest.approx(4 * math.sqrt(5) * 1e-3 / (1 - 4 * math.sqrt(5) * 1e-3),
                                  rel=1e-14)
