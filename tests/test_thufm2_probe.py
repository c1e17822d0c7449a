"""Mutation probe (second pass) of ncsim.theory.ufm and ncsim.theory.derivations: the forms
that the other tests leave open (the printed objectives, sigma_star_lambda, the CE threshold
for unequal decays, the exact list of expressions ``derivations`` returns)."""

from __future__ import annotations

import math

import pytest
import sympy as sp

from ncsim.errors import InputError
from ncsim.theory import dynamics, ufm
from ncsim.theory import symbols as S
from ncsim.theory.derivations import derivations

DYN = ["growth_rate", "growth_rate_evaluated", "logistic", "logistic_evaluated", "half_time",
       "z_integral", "z_integral_evaluated", "nc1_rate_early", "nc1_rate_early_evaluated",
       "nc1_rate_early_direct", "nc1_rate_late"]
MSE_HEAD = ["objective", "stationarity", "sigma_star", "Lambda_crit", "lambda_crit_ratio",
            "a_w2", "a_h2", "objective_star_per_mode"]
MSE_KEYS = {
    "none": MSE_HEAD + ["w_row2_none", "h2_none", "objective_star_none", "label_modes"],
    "free": MSE_HEAD + ["w_row2_free", "h2_free", "objective_star_free", "label_modes",
                        "bias_entry"],
    "reg": MSE_HEAD + ["sigma_mean_reg", "w_row2_reg", "h2_reg", "objective_star_reg",
                       "label_modes", "bias_entry", "mean_mode_weight"],
}
CE_KEYS = ["objective", "stationarity", "sigma_star", "margin_star", "prob_star", "ce_star",
           "Lambda_crit", "lambda_crit_ratio", "w_row2", "h2"]


def _num(expr, values):
    """``expr`` at ``values`` (symbol -> number), as a float (every symbol must be given)."""
    return float(sp.N(expr.subs(values), 30))


def test_mse_objective_is_the_per_mode_objective_at_two_factors():
    """derive_mse's objective is c/(2Kn)(sigma - sqrt n)^2 + Lambda sigma (g_mse at M = 2)."""
    g = ufm.derive_mse()["objective"]
    at = {S.K: 3, S.n: 4, S.c: sp.Rational(1, 2), S.Lam: sp.Rational(1, 50),
          S.sigma: sp.Rational(3, 2)}
    want = 0.5 / 24 * (1.5 - 2.0) ** 2 + 0.02 * 1.5
    assert _num(g, at) == pytest.approx(want, rel=1e-14)
    assert sp.simplify(g - S.g_mse(2)) == 0
    assert sp.simplify(ufm.derive_mse()["stationarity"] - sp.diff(g, S.sigma)) == 0


def test_ce_objective_is_the_etf_ray_objective_at_two_factors():
    """derive_ce's objective is log(1 + (K-1) e^(-sigma/sqrt n)) + (K-1) Lambda sigma."""
    g = ufm.derive_ce()["objective"]
    at = {S.K: 4, S.n: 5, S.Lam: sp.Rational(1, 100), S.sigma: sp.Rational(7, 2)}
    want = math.log(1 + 3 * math.exp(-3.5 / math.sqrt(5))) + 3 * 0.01 * 3.5
    assert _num(g, at) == pytest.approx(want, rel=1e-14)
    assert sp.simplify(ufm.derive_ce()["stationarity"] - sp.diff(g, S.sigma)) == 0


def test_mse_sigma_star_lambda_is_sigma_star_at_the_geometric_mean_decay():
    """sigma_star_lambda = sqrt n - K n sqrt(lambda_W lambda_H)/c, with no Lambda left in it."""
    d = ufm.derive_mse()
    expr = d["sigma_star_lambda"]
    assert S.Lam not in expr.free_symbols
    assert {S.lam_w, S.lam_h} <= expr.free_symbols
    K, n, lw, lh, c = 3, 5, 0.002, 0.008, 0.7
    at = {S.K: K, S.n: n, S.lam_w: sp.Float(lw, 30), S.lam_h: sp.Float(lh, 30),
          S.c: sp.Float(c, 30)}
    want = math.sqrt(n) - K * n * math.sqrt(lw * lh) / c
    assert _num(expr, at) == pytest.approx(want, rel=1e-13)
    at[S.Lam] = sp.sqrt(at[S.lam_w] * at[S.lam_h])
    assert _num(expr, at) == pytest.approx(_num(d["sigma_star"], at), rel=1e-13)


@pytest.mark.parametrize("rho", [0.25, 4.0])
def test_ce_critical_decays_for_unequal_ratios(rho):
    """CE: Lambda_crit = 1/(K sqrt n) and, with lambda_H = rho lambda_W, the critical lambda_W
    is 1/(K sqrt(n rho)) (rho != 1, so rho and 1/rho differ)."""
    d = ufm.derive_ce()
    K, n = 4, 5
    at = {S.K: K, S.n: n, S.rho: sp.Float(rho, 30)}
    assert _num(d["Lambda_crit"], at) == pytest.approx(1 / (K * math.sqrt(n)), rel=1e-14)
    assert _num(d["lambda_crit_ratio"], at) == pytest.approx(1 / (K * math.sqrt(n * rho)),
                                                             rel=1e-14)


@pytest.mark.parametrize("bias", ["none", "free", "reg"])
def test_derivations_lists_exactly_the_one_layer_mse_forms_in_order(bias):
    """derivations('mse', 1, bias) lists the ufm forms of that bias, the bias forms and the
    dynamics forms, in this order, each the very expression of its derivation."""
    d = derivations("mse", 1, bias)
    assert list(d) == MSE_KEYS[bias] + DYN
    src, dyn = ufm.derive_mse(), dynamics.derive()
    for key in MSE_KEYS[bias]:
        if key in src:
            assert d[key] == src[key], key
    for key in DYN:
        assert d[key] == dyn[key], key


@pytest.mark.parametrize("bias", ["none", "free", "reg"])
def test_derivations_lists_exactly_the_one_layer_ce_forms_in_order(bias):
    """derivations('ce', 1, bias) lists the CE ufm forms and the dynamics forms, whatever the
    bias (no bias forms, no sigma_mean_reg), each the very expression of its derivation."""
    d = derivations("ce", 1, bias)
    assert list(d) == CE_KEYS + DYN
    src, dyn = ufm.derive_ce(), dynamics.derive()
    for key in CE_KEYS:
        assert d[key] == src[key], key
    for key in DYN:
        assert d[key] == dyn[key], key


@pytest.mark.parametrize(("args", "message"), [
    (("hinge",), "unknown loss 'hinge'; allowed: mse, ce"),
    (("mse", 1, "zero"), "unknown bias 'zero'; allowed: none, free, reg"),
    (("ce", 0), "depth must be an integer >= 1, got 0"),
    (("mse", 1.5), "depth must be an integer >= 1, got 1.5"),
])
def test_derivations_rejects_a_bad_model_with_the_exact_message(args, message):
    """derivations checks loss, bias and depth first (an unknown loss is not taken as CE)."""
    with pytest.raises(InputError) as info:
        derivations(*args)
    assert str(info.value) == message
