"""Second-pass mutation probe of ncsim.theory.equilibrium, _backend, symbols and derivations.

Every expected value is computed here by hand from the closed forms of the theory brief
(one-layer MSE / CE tables, deep per-mode problem), not from the package.
"""

import math

import numpy as np
import pytest
import sympy as sp
import torch

from ncsim.errors import InputError
from ncsim.theory import symbols as S
from ncsim.theory._backend import bisect, broadcast
from ncsim.theory.derivations import derivations
from ncsim.theory.equilibrium import equilibrium, minimiser_rank


def _objective_from_state(eq, K, n, lw, lh, lb=0.0):
    """Objective f rebuilt from the returned norms, bias and logits (MSE)."""
    N = K * n
    lt, lo = float(eq.logit_true), float(eq.logit_other)
    data = ((lt - 1) ** 2 + (K - 1) * lo**2) / 2
    reg = (lw / 2 * K * float(eq.w_norm_star) ** 2 + lh / 2 * N * float(eq.fn_star) ** 2
           + lb / 2 * K * float(eq.bias_star) ** 2)
    return data, data + reg


def test_one_layer_mse_no_bias_asymmetric_decays():
    """No bias, lambda_W != lambda_H: |w|^2, |h|^2, factor norms, logits, loss, objective."""
    K, n, lw, lh = 3, 4, 0.01, 0.004
    r = math.sqrt(n * lw * lh)
    alpha = 1 - K * r
    eq = equilibrium("mse", "none", K, n, lw, lh)
    assert bool(eq.collapsed)
    assert float(eq.w_norm_star) ** 2 == pytest.approx(math.sqrt(n * lh / lw) * alpha, rel=1e-12)
    assert float(eq.fn_star) ** 2 == pytest.approx(math.sqrt(lw / (n * lh)) * alpha, rel=1e-12)
    assert float(eq.class_mean_norm_centred) ** 2 == pytest.approx(
        (K - 1) / K * math.sqrt(lw / (n * lh)) * alpha, rel=1e-12)
    assert float(eq.factor_norms["W1"]) ** 2 == pytest.approx(
        K * math.sqrt(n * lh / lw) * alpha, rel=1e-12)
    assert float(eq.factor_norms["H"]) ** 2 == pytest.approx(
        K * n * math.sqrt(lw / (n * lh)) * alpha, rel=1e-12)
    # logits alpha Y: true alpha, other 0
    assert float(eq.logit_true) == pytest.approx(alpha, rel=1e-12)
    assert float(eq.logit_other) == pytest.approx(0.0, abs=1e-14)
    assert float(eq.sigma_mean) == pytest.approx(math.sqrt(n) * alpha, rel=1e-12)
    data, obj = _objective_from_state(eq, K, n, lw, lh)
    assert float(eq.loss_star) == pytest.approx(data, rel=1e-12)
    assert float(eq.loss_star) == pytest.approx((K * r) ** 2 / 2, rel=1e-12)
    assert float(eq.objective_star) == pytest.approx(obj, rel=1e-12)
    assert float(eq.objective_star) == pytest.approx(K * (r - K / 2 * r**2), rel=1e-12)
    assert float(eq.objective_zero) == pytest.approx(0.5, rel=1e-14)
    assert minimiser_rank(eq, K) == K


def test_one_layer_mse_free_bias_asymmetric_decays():
    """Free bias: ETF norms ((K-1)/K factor), b = 1/K, objective (K-1)[r - K r^2 / 2]."""
    K, n, lw, lh = 4, 5, 0.002, 0.008
    r = math.sqrt(n * lw * lh)
    alpha = 1 - K * r
    eq = equilibrium("mse", "free", K, n, lw, lh)
    assert float(eq.w_norm_star) ** 2 == pytest.approx(
        (K - 1) / K * math.sqrt(n * lh / lw) * alpha, rel=1e-12)
    assert float(eq.fn_star) ** 2 == pytest.approx(
        (K - 1) / K * math.sqrt(lw / (n * lh)) * alpha, rel=1e-12)
    assert float(eq.bias_star) == pytest.approx(1 / K, rel=1e-14)
    assert float(eq.sigma_mean) == 0.0
    assert float(eq.logit_true) == pytest.approx(alpha + (1 - alpha) / K, rel=1e-12)
    assert float(eq.logit_other) == pytest.approx((1 - alpha) / K, rel=1e-12)
    assert float(eq.objective_star) == pytest.approx((K - 1) * (r - K / 2 * r**2), rel=1e-12)
    assert float(eq.objective_zero) == pytest.approx((K - 1) / (2 * K), rel=1e-14)
    data, obj = _objective_from_state(eq, K, n, lw, lh)
    assert float(eq.loss_star) == pytest.approx(data, rel=1e-11)
    assert float(eq.objective_star) == pytest.approx(obj, rel=1e-11)
    assert minimiser_rank(eq, K) == K - 1


def test_one_layer_mse_regularised_bias_hand_values():
    """Regularised bias: alpha_0, b = (1 - alpha_0)/(K(1 + lambda_b)), norms, logits, objective."""
    K, n, lw, lh, lb = 3, 4, 0.01, 0.004, 0.5
    r = math.sqrt(n * lw * lh)
    alpha = 1 - K * r
    alpha0 = 1 - K * r * (1 + lb) / lb
    assert alpha0 > 0
    eq = equilibrium("mse", "reg", K, n, lw, lh, lambda_b=lb)
    rho = math.sqrt(n * lh / lw)
    assert float(eq.sigma_mean) == pytest.approx(math.sqrt(n) * alpha0, rel=1e-12)
    assert float(eq.bias_star) == pytest.approx((1 - alpha0) / (K * (1 + lb)), rel=1e-11)
    w2 = (K - 1) / K * rho * alpha + rho * alpha0 / K
    assert float(eq.w_norm_star) ** 2 == pytest.approx(w2, rel=1e-12)
    assert float(eq.fn_star) ** 2 == pytest.approx(lw / (n * lh) * w2, rel=1e-12)
    m0 = alpha0 / K + (1 - alpha0) / (K * (1 + lb))
    assert float(eq.logit_true) == pytest.approx((K - 1) / K * alpha + m0, rel=1e-12)
    assert float(eq.logit_other) == pytest.approx(-alpha / K + m0, rel=1e-10)
    data, obj = _objective_from_state(eq, K, n, lw, lh, lb)
    assert float(eq.loss_star) == pytest.approx(data, rel=1e-10)
    assert float(eq.objective_star) == pytest.approx(obj, rel=1e-10)
    # origin: data 1/2 with the best bias b = 1/(K (1 + lb)) for the mean mode
    obj0 = (K - 1) / (2 * K) + lb / (1 + lb) / (2 * K)
    assert float(eq.objective_zero) == pytest.approx(obj0, rel=1e-12)
    assert minimiser_rank(eq, K) == K


def test_one_layer_ce_asymmetric_decays():
    """CE: |w|^2, |h|^2, margin, CE*, p* of the brief's section 2.1 with lambda_W != lambda_H."""
    K, n, lw, lh = 4, 3, 0.02, 0.005
    r = math.sqrt(n * lw * lh)
    ell = math.log(1 / r - (K - 1))
    eq = equilibrium("ce", "free", K, n, lw, lh)
    assert float(eq.w_norm_star) ** 2 == pytest.approx(
        (K - 1) / K * math.sqrt(n * lh / lw) * ell, rel=1e-12)
    assert float(eq.fn_star) ** 2 == pytest.approx(
        (K - 1) / K * math.sqrt(lw / (n * lh)) * ell, rel=1e-12)
    assert float(eq.margin_star) == pytest.approx(ell, rel=1e-12)
    assert float(eq.logit_true) - float(eq.logit_other) == pytest.approx(ell, rel=1e-12)
    assert float(eq.logit_true) + (K - 1) * float(eq.logit_other) == pytest.approx(0, abs=1e-12)
    assert float(eq.loss_star) == pytest.approx(-math.log(1 - (K - 1) * r), rel=1e-12)
    obj = (float(eq.loss_star) + lw / 2 * K * float(eq.w_norm_star) ** 2
           + lh / 2 * K * n * float(eq.fn_star) ** 2)
    assert float(eq.objective_star) == pytest.approx(obj, rel=1e-12)
    assert float(eq.objective_zero) == pytest.approx(math.log(K), rel=1e-14)
    assert float(eq.bias_star) == 0.0


def _deep_sigma(K, n, Lam, M):
    """Largest root of sigma^(2/M - 1) N Lam = sqrt(n) - sigma (plain bisection)."""
    N, s = K * n, math.sqrt(n)
    lo, hi = s * (M - 2) / (2 * (M - 1)), s  # phi = sigma^(1-2/M)(s - sigma) peaks at lo
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid ** (1 - 2 / M) * (s - mid) > N * Lam:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def test_deep_mse_per_layer_decays_hand_values():
    """Depth 2 with lambda_W1 != lambda_W2: sigma, factor norms, |w|, fn, loss, objective."""
    K, n, l1, l2, lh = 3, 4, 0.01, 0.004, 0.002
    M, N = 3, K * n
    Lam = (l1 * l2 * lh) ** (1 / M)
    sig = _deep_sigma(K, n, Lam, M)
    g = (sig - math.sqrt(n)) ** 2 / (2 * N) + M / 2 * Lam * sig ** (2 / M)
    assert g < n / (2 * N)  # collapse is global here
    eq = equilibrium("mse", "none", K, n, (l1, l2), lh, depth=2)
    assert bool(eq.collapsed)
    assert float(eq.sigma) == pytest.approx(sig, rel=1e-10)
    a = {name: math.sqrt(Lam / lam) * sig ** (1 / M) for name, lam in
         (("W1", l1), ("W2", l2), ("H", lh))}
    for name in ("W1", "W2", "H"):
        assert float(eq.factor_norms[name]) == pytest.approx(math.sqrt(K) * a[name], rel=1e-9)
    assert float(eq.w_norm_star) == pytest.approx(a["W2"], rel=1e-9)
    assert float(eq.fn_star) == pytest.approx(sig / a["W2"] / math.sqrt(n), rel=1e-9)
    assert float(eq.loss_star) == pytest.approx(K * (math.sqrt(n) - sig) ** 2 / (2 * N),
                                                rel=1e-8)
    assert float(eq.objective_star) == pytest.approx(K * g, rel=1e-10)
    assert float(eq.logit_true) == pytest.approx(sig / math.sqrt(n), rel=1e-10)


def test_deep_mse_free_bias_depth3_norms():
    """Depth 3, free bias: K - 1 modes, |W_l|_F^2 = (K - 1) a_l^2, exponent 1/M with M = 4."""
    K, n, lam, lh = 4, 5, 0.003, 0.006
    M = 4
    Lam = (lam**3 * lh) ** (1 / M)
    sig = _deep_sigma(K, n, Lam, M)
    eq = equilibrium("mse", "free", K, n, lam, lh, depth=3)
    assert bool(eq.collapsed)
    assert float(eq.sigma) == pytest.approx(sig, rel=1e-10)
    a_w = math.sqrt(Lam / lam) * sig ** (1 / M)
    a_h = math.sqrt(Lam / lh) * sig ** (1 / M)
    assert float(eq.factor_norms["W3"]) ** 2 == pytest.approx((K - 1) * a_w**2, rel=1e-9)
    assert float(eq.factor_norms["H"]) ** 2 == pytest.approx((K - 1) * a_h**2, rel=1e-9)
    assert float(eq.w_norm_star) ** 2 == pytest.approx((K - 1) / K * a_w**2, rel=1e-9)
    assert float(eq.fn_star) ** 2 == pytest.approx((K - 1) / (K * n) * (sig / a_w) ** 2,
                                                   rel=1e-9)


def test_lambda_w_tuple_of_wrong_length_is_rejected():
    """A per-layer lambda_w tuple must have exactly depth entries (longer too)."""
    with pytest.raises(InputError, match="lambda_w lists 3 values but depth is 2"):
        equilibrium("mse", "none", 3, 4, (0.01, 0.01, 0.01), 0.01, depth=2)
    with pytest.raises(InputError, match="lambda_w lists 1 values but depth is 2"):
        equilibrium("mse", "none", 3, 4, (0.01,), 0.01, depth=2)


def test_equilibrium_rejects_boolean_and_fractional_inputs():
    """Booleans (also in an array) and a fractional K are refused with a named message."""
    with pytest.raises(InputError, match="lambda_h must be a number"):
        equilibrium("mse", "none", 3, 4, 0.01, np.array([True, False]))
    with pytest.raises(InputError, match=r"classes K must be an integer >= 2, got 2\.5"):
        equilibrium("mse", "none", 2.5, 4, 0.01, 0.01)


def test_zero_decay_on_the_features_only():
    """lambda_H = 0 alone (one layer, classifier decay > 0): |W| -> 0, |H| -> inf, fn -> inf."""
    eq = equilibrium("mse", "free", 3, 4, 0.01, 0.0)
    assert float(eq.factor_norms["W1"]) == 0.0
    assert math.isinf(float(eq.factor_norms["H"]))
    assert math.isinf(float(eq.fn_star))
    eq = equilibrium("mse", "free", 3, 4, 0.0, 0.01)  # lambda_W the only zero decay: fn -> 0
    assert float(eq.fn_star) == 0.0
    assert math.isinf(float(eq.factor_norms["W1"]))


def test_bisect_root_at_an_endpoint_and_no_bracket():
    """bisect: a root exactly at lo is found (f(lo) = 0 is a sign change); no bracket -> NaN."""
    lo, hi = np.array([1.0, 1.0]), np.array([2.0, 2.0])
    out = bisect(lambda x: x - np.array([1.0, 3.0]), lo, hi)
    assert out[0] == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(out[1])
    out = bisect(lambda x: x * x - 2.0, np.array(0.0), np.array(2.0))
    assert float(out) == pytest.approx(math.sqrt(2.0), rel=1e-14)


def test_broadcast_torch_integer_tensor_keeps_decays_as_float64():
    """broadcast: a decay of 0.01 beside an integer tensor is float64, not truncated to 0."""
    K, lam = broadcast(torch.tensor([3, 4]), 0.01)
    assert lam.dtype == torch.float64 and K.dtype == torch.float64
    assert torch.allclose(lam, torch.tensor([0.01, 0.01], dtype=torch.float64))
    eq = equilibrium("mse", "free", torch.tensor([3, 4]), torch.tensor(4), 0.01, 0.01)
    ref = equilibrium("mse", "free", np.array([3, 4]), 4, 0.01, 0.01)
    assert np.allclose(eq.fn_star.numpy(), ref.fn_star, rtol=1e-14)


def test_symbols_objectives_at_a_point():
    """g_mse, g_ce and ce_data evaluated at a point against the hand formulas."""
    vals = {S.K: 3, S.n: 4, S.c: 0.5, S.Lam: 0.1, S.sigma: 1.5}
    # c/(2N)(sigma - sqrt n)^2 + (M/2) Lam sigma^(2/M), M = 3
    ref = 0.5 / 24 * (1.5 - 2) ** 2 + 1.5 * 0.1 * 1.5 ** (2 / 3)
    assert float(S.g_mse(3).subs(vals)) == pytest.approx(ref, rel=1e-14)
    ref_ce = math.log(1 + 2 * math.exp(-0.75)) + 2 * 1.5 * 0.1 * 1.5 ** (2 / 3)
    assert float(S.g_ce(3).subs(vals)) == pytest.approx(ref_ce, rel=1e-14)
    assert float(S.ce_data(sp.Float(0.3)).subs(vals)) == pytest.approx(
        math.log(1 + 2 * math.exp(-0.3)), rel=1e-14)


def test_derivations_bias_forms():
    """derivations: label-mode count, bias entry and mean-mode weight per bias (MSE), none (CE)."""
    assert sp.simplify(derivations("mse", 1, "none")["label_modes"] - S.K) == 0
    free = derivations("mse", 2, "free")
    assert sp.simplify(free["label_modes"] - (S.K - 1)) == 0
    assert sp.simplify(free["bias_entry"] - 1 / S.K) == 0
    reg = derivations("mse", 1, "reg")
    assert sp.simplify(reg["label_modes"] - (S.K - 1)) == 0
    assert sp.simplify(reg["mean_mode_weight"] - S.lam_b / (1 + S.lam_b)) == 0
    assert "label_modes" not in derivations("ce", 1, "free")


@pytest.mark.parametrize("bias", ["none", "free", "reg"])
def test_derivations_one_layer_mse_norms_match_brief(bias):
    """w_row2_/h2_/objective_star_<bias> at a point equal the brief's table (and equilibrium)."""
    K, n, lw, lh, lb = 3, 4, 0.01, 0.004, 0.5
    d = derivations("mse", 1, bias)
    r = math.sqrt(n * lw * lh)
    alpha, alpha0 = 1 - K * r, 1 - K * r * (1 + lb) / lb
    rho = math.sqrt(n * lh / lw)
    w2 = {"none": rho * alpha, "free": (K - 1) / K * rho * alpha,
          "reg": (K - 1) / K * rho * alpha + rho * alpha0 / K}[bias]
    at = {S.K: K, S.n: n, S.lam_w: lw, S.lam_h: lh, S.lam_b: lb, S.Lam: math.sqrt(lw * lh)}
    assert float(d[f"w_row2_{bias}"].subs(at)) == pytest.approx(w2, rel=1e-12)
    assert float(d[f"h2_{bias}"].subs(at)) == pytest.approx(lw / (n * lh) * w2, rel=1e-12)
    eq = equilibrium("mse", bias, K, n, lw, lh, lambda_b=lb)
    assert float(d[f"objective_star_{bias}"].subs(at)) == pytest.approx(
        float(eq.objective_star), rel=1e-10)
    assert float(d["Lambda_crit"].subs(at)) == pytest.approx(1 / (K * math.sqrt(n)), rel=1e-14)


def test_deep_zero_decay_on_the_first_layer_only():
    """Depth 2, lambda_W1 = 0 alone: W1 -> inf, W2 and H -> 0, features (input of W2) -> inf."""
    eq = equilibrium("mse", "free", 3, 4, (0.0, 0.01), 0.01, depth=2)
    assert math.isinf(float(eq.factor_norms["W1"]))
    assert float(eq.factor_norms["W2"]) == 0.0 and float(eq.factor_norms["H"]) == 0.0
    assert math.isinf(float(eq.fn_star))
    eq = equilibrium("mse", "free", 3, 4, (0.01, 0.0), 0.01, depth=2)  # classifier decay 0
    assert float(eq.fn_star) == 0.0
    assert math.isinf(float(eq.w_norm_star))


def test_mean_mode_held_at_zero_one_layer_no_bias():
    """mean_mode=False: sigma_mean 0, objective (K - 1) g(sigma*) + g(0), rank K - 1."""
    K, n, lw, lh = 3, 4, 0.01, 0.004
    Lam = math.sqrt(lw * lh)
    per_mode = Lam * (2 * math.sqrt(n) - K * Lam * n) / 2
    eq = equilibrium("mse", "none", K, n, lw, lh, mean_mode=False)
    assert float(eq.sigma_mean) == 0.0
    assert float(eq.objective_star) == pytest.approx((K - 1) * per_mode + 1 / (2 * K), rel=1e-12)
    assert float(eq.objective_zero) == pytest.approx(0.5, rel=1e-14)
    assert minimiser_rank(eq, K) == K - 1


def test_negative_lambda_b_rejected_whatever_the_bias():
    """lambda_b is checked as a decay even with bias "none" (a decay whatever the bias)."""
    with pytest.raises(InputError, match=r"lambda_b must be a finite number >= 0, got -0\.1"):
        equilibrium("mse", "none", 3, 4, 0.01, 0.01, lambda_b=-0.1)
