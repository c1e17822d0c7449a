"""Third-pass mutation probe of ncsim.theory.equilibrium.

References are built here: scipy minimisation of the scalar objective of the ETF-aligned
ansatz written by hand, brentq on the CE stationarity equation, exact input error messages.
"""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq, minimize

from ncsim.errors import InputError
from ncsim.theory.equilibrium import equilibrium


def test_complex_torch_tensor_is_rejected():
    """A complex torch tensor is refused with the named input."""
    with pytest.raises(InputError, match=r"^lambda_h must be a number or an array of numbers"):
        equilibrium("mse", "none", 3, 2, 0.01, torch.tensor(0.01 + 0j))


def test_shape_error_lists_each_name_once():
    """The broadcast error lists each (name, shape) once even when lambda_w repeats per layer."""
    msg = ("the parameters must be numbers or arrays that broadcast to one shape, got shapes "
           "K (2,), n (3,), lambda_b (), lambda_w (), lambda_h ()")
    with pytest.raises(InputError) as err:
        equilibrium("mse", "none", [3, 3], [2, 2, 2], 0.01, 0.01, depth=3)
    assert str(err.value) == msg


def test_zero_feature_decay_centred_norm_is_inf():
    """lambda_H = 0 alone (MSE, no bias): fn*, centred class-mean norm both inf, not NaN."""
    eq = equilibrium("mse", "none", 3, 2, 0.01, 0.0)
    assert math.isinf(float(eq.fn_star)) and math.isinf(float(eq.class_mean_norm_centred))
    assert float(eq.sigma_mean) == pytest.approx(math.sqrt(2), rel=1e-14)


def test_ce_zero_decay_loss_is_zero():
    """CE with a zero decay: the margin grows without bound and the loss tends to 0."""
    for lw, lh, depth in ((0.0, 0.01, 1), (0.01, 0.0, 2)):
        eq = equilibrium("ce", "none", 3, 2, lw, lh, depth=depth)
        assert math.isinf(float(eq.margin_star))
        assert float(eq.loss_star) == 0.0


def _lam_geo(lams):
    return float(np.prod(lams)) ** (1.0 / len(lams))


def _mse_scalar_objective(x, K, n, Lam, M, lam_b, bias):
    """f on the ETF-aligned ansatz: centred modes s, mean mode s0, bias entry b (hand written)."""
    s, s0, b = abs(x[0]), abs(x[1]), x[2]
    if bias == "free":
        s0 = 0.0
    if bias == "none":
        b = 0.0
    m = s0 / (K * math.sqrt(n)) + b
    zt = (K - 1) / K * s / math.sqrt(n) + m
    zo = -s / (K * math.sqrt(n)) + m
    data = 0.5 * ((zt - 1) ** 2 + (K - 1) * zo**2)
    reg = M / 2 * Lam * ((K - 1) * s ** (2 / M) + s0 ** (2 / M))
    return data + reg + lam_b / 2 * K * b**2, data


@pytest.mark.parametrize("bias,lam_b", [("none", 0.0), ("free", 0.0), ("reg", 0.3), ("reg", 4.0)])
def test_deep_mse_matches_scipy_minimisation_of_the_ansatz(bias, lam_b):
    """Deep MSE (L = 2, unequal decays): sigma, sigma_0, b, logits, loss, f and norms."""
    K, n, lams = 3, 4, (0.004, 0.009, 0.002)
    M, Lam = 3, _lam_geo(lams)
    eq = equilibrium("mse", bias, K, n, lams[:2], lams[2], lambda_b=lam_b, depth=2)
    fun = lambda x: _mse_scalar_objective(x, K, n, Lam, M, lam_b, bias)[0]  # noqa: E731
    best = min((minimize(fun, x0, method="Nelder-Mead",
                         options={"xatol": 1e-12, "fatol": 1e-15, "maxiter": 20000})
                for x0 in ([1.5, 1.5, 0.1], [1.9, 0.5, 0.2], [1.0, 1.9, 0.0])),
               key=lambda r: r.fun)
    s, b = abs(best.x[0]), (best.x[2] if bias != "none" else 0.0)
    s0 = 0.0 if bias == "free" else abs(best.x[1])
    assert bool(eq.collapsed)
    assert float(eq.sigma) == pytest.approx(s, rel=1e-6)
    assert float(eq.sigma_mean) == pytest.approx(s0, rel=1e-6, abs=1e-8)
    assert float(eq.bias_star) == pytest.approx(b, rel=1e-6, abs=1e-8)
    assert float(eq.objective_star) == pytest.approx(best.fun, rel=1e-10)
    f_pkg, data_pkg = _mse_scalar_objective([float(eq.sigma), float(eq.sigma_mean),
                                             float(eq.bias_star)], K, n, Lam, M, lam_b, bias)
    assert float(eq.objective_star) == pytest.approx(f_pkg, rel=1e-13)
    assert float(eq.loss_star) == pytest.approx(data_pkg, rel=1e-12)
    m = float(eq.sigma_mean) / (K * math.sqrt(n)) + float(eq.bias_star)
    assert float(eq.logit_true) == pytest.approx(
        (K - 1) / K * float(eq.sigma) / math.sqrt(n) + m, rel=1e-12)
    assert float(eq.logit_other) == pytest.approx(
        -float(eq.sigma) / (K * math.sqrt(n)) + m, rel=1e-9, abs=1e-14)
    sg, sg0 = float(eq.sigma), float(eq.sigma_mean)
    a = [math.sqrt(Lam / lj) * sg ** (1 / M) for lj in lams]
    a0 = [math.sqrt(Lam / lj) * sg0 ** (1 / M) for lj in lams]
    for name, aj, aj0 in zip(("W1", "W2", "H"), a, a0, strict=True):
        assert float(eq.factor_norms[name]) == pytest.approx(
            math.sqrt((K - 1) * aj**2 + aj0**2), rel=1e-12)
    assert float(eq.w_norm_star) == pytest.approx(
        math.sqrt(((K - 1) * a[1] ** 2 + a0[1] ** 2) / K), rel=1e-12)
    p, p0 = sg / a[1], (sg0 / a0[1] if sg0 > 0 else 0.0)
    assert float(eq.fn_star) == pytest.approx(
        math.sqrt((K - 1) / (K * n) * p**2 + p0**2 / (K * n)), rel=1e-12)
    assert float(eq.class_mean_norm_centred) == pytest.approx(
        math.sqrt((K - 1) / (K * n)) * p, rel=1e-12)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_ce_matches_brentq_on_the_stationarity_equation(depth):
    """CE (unequal decays): sigma from brentq on g'(sigma) = 0; margin, logits, loss, f, norms."""
    K, n = 4, 3
    lams = tuple(0.002 * (1 + 0.5 * j) for j in range(depth)) + (0.003,)
    M, Lam = depth + 1, _lam_geo(lams)
    eq = equilibrium("ce", "none", K, n, lams[:depth], lams[depth], depth=depth)
    rn = math.sqrt(n)

    def g(s):
        return math.log1p((K - 1) * math.exp(-s / rn)) + (K - 1) * M / 2 * Lam * s ** (2 / M)

    def dg(s):
        e = (K - 1) * math.exp(-s / rn)
        return -e / (rn * (1 + e)) + (K - 1) * Lam * s ** (2 / M - 1)

    grid = np.linspace(1e-3, 60.0, 6001)
    signs = [dg(s) for s in grid]
    roots = [brentq(dg, grid[i], grid[i + 1], xtol=1e-15, rtol=1e-15)
             for i in range(len(grid) - 1) if signs[i] < 0 < signs[i + 1]]
    s = min(roots, key=g)
    assert g(s) < math.log(K)
    assert bool(eq.collapsed)
    assert float(eq.sigma) == pytest.approx(s, rel=1e-9)
    assert float(eq.objective_star) == pytest.approx(g(s), rel=1e-12)
    assert float(eq.objective_zero) == pytest.approx(math.log(K), rel=1e-14)
    m = s / rn
    assert float(eq.margin_star) == pytest.approx(m, rel=1e-9)
    assert float(eq.logit_true) == pytest.approx((K - 1) / K * m, rel=1e-9)
    assert float(eq.logit_other) == pytest.approx(-m / K, rel=1e-9)
    assert float(eq.bias_star) == 0.0 and float(eq.sigma_mean) == 0.0
    assert float(eq.loss_star) == pytest.approx(math.log1p((K - 1) * math.exp(-m)), rel=1e-9)
    a = [math.sqrt(Lam / lj) * s ** (1 / M) for lj in lams]
    for j in range(depth):
        assert float(eq.factor_norms[f"W{j + 1}"]) == pytest.approx(
            math.sqrt(K - 1) * a[j], rel=1e-9)
    assert float(eq.factor_norms["H"]) == pytest.approx(math.sqrt(K - 1) * a[depth], rel=1e-9)
    assert float(eq.w_norm_star) == pytest.approx(math.sqrt((K - 1) / K) * a[depth - 1], rel=1e-9)
    assert float(eq.fn_star) == pytest.approx(
        math.sqrt((K - 1) / (K * n)) * s / a[depth - 1], rel=1e-9)
    assert eq.lower_rank_better is (False if depth == 1 else None)


@pytest.mark.parametrize("bias,lam_b", [("none", 0.0), ("reg", 0.3)])
def test_deep_mse_mean_mode_held_at_zero_matches_scipy(bias, lam_b):
    """mean_mode=False (L = 2): s0 = 0, b = 1/(K(1 + lambda_b)); f, logits, loss, norms match."""
    K, n, lams = 3, 4, (0.004, 0.009, 0.002)
    M, Lam = 3, _lam_geo(lams)
    eq = equilibrium("mse", bias, K, n, lams[:2], lams[2], lambda_b=lam_b, depth=2,
                     mean_mode=False)
    live = equilibrium("mse", bias, K, n, lams[:2], lams[2], lambda_b=lam_b, depth=2)
    assert float(live.sigma_mean) > 0 and float(eq.sigma_mean) == 0.0

    def fun(x):
        return _mse_scalar_objective([x[0], 0.0, x[1] if bias == "reg" else 0.0],
                                     K, n, Lam, M, lam_b, bias)
    best = minimize(lambda x: fun(x)[0], [1.5, 0.1], method="Nelder-Mead",
                    options={"xatol": 1e-12, "fatol": 1e-15, "maxiter": 20000})
    assert float(eq.sigma) == pytest.approx(best.x[0], rel=1e-6)
    b = 1 / (K * (1 + lam_b)) if bias == "reg" else 0.0
    assert float(eq.bias_star) == pytest.approx(b, rel=1e-13, abs=1e-300)
    f, data = fun([float(eq.sigma), b])
    assert float(eq.objective_star) == pytest.approx(f, rel=1e-12)
    assert float(eq.objective_star) == pytest.approx(best.fun, rel=1e-10)
    assert float(eq.objective_star) > float(live.objective_star)
    assert float(eq.loss_star) == pytest.approx(data, rel=1e-12)
    assert float(eq.logit_other) == pytest.approx(-float(eq.sigma) / (K * math.sqrt(n)) + b,
                                                  rel=1e-10)
    a = [math.sqrt(Lam / lj) * float(eq.sigma) ** (1 / M) for lj in lams]
    assert float(eq.factor_norms["H"]) == pytest.approx(math.sqrt(K - 1) * a[2], rel=1e-12)
    assert float(eq.w_norm_star) == pytest.approx(math.sqrt((K - 1) / K) * a[1], rel=1e-12)
    assert float(eq.fn_star) == pytest.approx(float(eq.class_mean_norm_centred), rel=1e-14)


def test_zero_decay_on_one_layer_of_a_deep_head_sets_the_feature_limit():
    """Depth 2, one zero layer decay: features inf if it is W1, 0 if it is the classifier W2."""
    first = equilibrium("mse", "none", 3, 2, (0.0, 0.01), 0.01, depth=2)
    assert math.isinf(float(first.fn_star)) and math.isinf(float(first.class_mean_norm_centred))
    last = equilibrium("mse", "none", 3, 2, (0.01, 0.0), 0.01, depth=2)
    assert float(last.fn_star) == 0.0 and float(last.class_mean_norm_centred) == 0.0
    assert math.isinf(float(last.w_norm_star))


def test_per_layer_bad_entry_is_named_by_index():
    """A bad entry of a per-layer lambda_w tuple is named lambda_w[i] (0-based)."""
    with pytest.raises(InputError, match=r"^lambda_w\[1\] must be a number or an array of "
                       r"numbers, got 'x'$"):
        equilibrium("mse", "none", 3, 2, (0.01, "x"), 0.01, depth=2)


def test_check_lower_rank_needs_scalar_parameters():
    """Deep CE with check_lower_rank on an array grid is an InputError."""
    with pytest.raises(InputError, match=r"^check_lower_rank needs scalar parameters$"):
        equilibrium("ce", "none", [3, 4], 2, 0.01, 0.01, depth=2, check_lower_rank=True)


def test_lower_rank_state_uses_the_classifier_decay():
    """Lower-rank meta and flag: W_L norm scales as sqrt(Lambda/lambda_WL), fn inversely."""
    a = equilibrium("ce", "none", 3, 2, (0.002, 0.004), 0.003, depth=2, check_lower_rank=True)
    b = equilibrium("ce", "none", 3, 2, (0.004, 0.002), 0.003, depth=2, check_lower_rank=True)
    # the ETF state (f far below the lower-rank one, itself below f(0) = ln 3) is not beaten
    assert float(a.objective_star) < a.meta["lower_rank_objective"] < float(a.objective_zero)
    assert a.lower_rank_better is False and b.lower_rank_better is False
    assert a.meta["lower_rank_objective"] == pytest.approx(b.meta["lower_rank_objective"],
                                                           rel=1e-9)
    assert a.meta["lower_rank_w_norm"] / b.meta["lower_rank_w_norm"] == pytest.approx(
        math.sqrt(0.5), rel=1e-6)
    assert a.meta["lower_rank_fn"] / b.meta["lower_rank_fn"] == pytest.approx(
        math.sqrt(2.0), rel=1e-6)
