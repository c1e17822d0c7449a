"""Extreme-parameter scan of equilibrium, predicted_onset, theory_columns and lower_rank_check.

Reference values come from an independent integration of the onset model of
:mod:`ncsim.theory.prediction` (scipy solve_ivp, DOP853 and Radau, rtol 1e-12, atol 1e-30,
brentq on the dense solution), written from the module docstring, not from its code.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import ncsim.theory.prediction as prediction
from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec
from ncsim.theory import dynamics
from ncsim.theory.columns import theory_columns
from ncsim.theory.equilibrium import equilibrium
from ncsim.theory.lowrank import lower_rank_check
from ncsim.theory.prediction import predicted_onset

EXTREME_DECAYS = [(1e-12, 1e-12), (1e-9, 10.0), (10.0, 1e-9), (1e-3, 1e-3), (0.05, 0.2)]


@pytest.mark.parametrize("loss,bias,lb", [("mse", "none", 0.0), ("mse", "free", 0.0),
                                          ("mse", "reg", 1e-9), ("mse", "reg", 1e3),
                                          ("ce", "none", 0.0), ("ce", "free", 0.0)])
@pytest.mark.parametrize("depth", [1, 2, 5])
@pytest.mark.parametrize("K,n", [(2, 1), (1000, 1), (4, 10000)])
def test_equilibrium_objective_is_loss_plus_penalties_at_extreme_decays(loss, bias, lb, depth,
                                                                        K, n):
    """objective_star = loss_star + decays' penalties, <= objective_zero, loss from logits."""
    for lw, lh in EXTREME_DECAYS:
        eq = equilibrium(loss, bias, K, n, lw, lh, lb, depth)
        f, f0 = float(eq.objective_star), float(eq.objective_zero)
        assert f <= f0 * (1 + 1e-14)
        lams = [lw] * depth + [lh]
        names = [f"W{i + 1}" for i in range(depth)] + ["H"]
        pen = sum(lam / 2 * float(eq.factor_norms[nm]) ** 2 for lam, nm in zip(lams, names))
        if bias == "reg":
            pen += lb / 2 * K * float(eq.bias_star) ** 2
        assert float(eq.loss_star) + pen == pytest.approx(f, rel=1e-9, abs=1e-15)
        lt, lo = float(eq.logit_true), float(eq.logit_other)
        if loss == "mse":
            from_logits = 0.5 * ((lt - 1) ** 2 + (K - 1) * lo ** 2)
        else:
            from_logits = math.log1p((K - 1) * math.exp(-(lt - lo)))
        assert float(eq.loss_star) == pytest.approx(from_logits, rel=1e-8, abs=1e-14)


@pytest.mark.parametrize("Lam", [1e-6, 1e-3, 0.05])
def test_one_layer_lower_rank_search_never_beats_the_etf(Lam):
    """Depth 1 (nuclear norm, convex): no rank < K - 1 state beats the closed-form ETF."""
    lr = lower_rank_check(4, 5, Lam, 1)
    eq = equilibrium("ce", "none", 4, 5, Lam, Lam, 0.0, 1)
    assert not lr.beats(float(eq.objective_star))
    assert lr.best_objective <= math.log(4) * (1 + 1e-12)


def test_onset_and_crossing_equal_an_independent_integration():
    """CE free bias, K=4, n=5, d=20, lambda 0.01, init 0.01: onset and 0.95 fn* crossing."""
    p = predicted_onset("ce", "free", 4, 5, 20, 0.01, 0.01, 0.01)
    assert p.regime == "ok" and p.delta == -0.05
    assert p.onset_time == pytest.approx(31.46463871400118, rel=1e-8)
    assert p.fn_cross_time == pytest.approx(66.8962694537623, rel=1e-8)


@pytest.mark.parametrize("a", [1e-9, 1e-6])
def test_small_init_onset_is_init_independent(a):
    """In the linear phase nc1_trace does not depend on the init scale (to 1e-6)."""
    p = predicted_onset("mse", "free", 4, 5, 20, 0.01, 0.01, a)
    assert p.onset_time == pytest.approx(31.181042, rel=1e-6)


def test_tiny_init_onset_is_the_models_solution():
    """Init 1e-12: onset 31.181042 (independent DOP853/Radau with atol 1e-30), as at 1e-6."""
    p = predicted_onset("mse", "free", 4, 5, 20, 0.01, 0.01, 1e-12)
    assert p.onset_time == pytest.approx(31.181042, rel=1e-6)
    assert p.fn_cross_time == pytest.approx(274.52813, rel=1e-6)


def test_large_init_with_unequal_decays_has_a_prediction():
    """MSE, K=4, n=5, d=20, lambda_W=1e-5, lambda_H=1, init 1000: onset 19.0214, cross 11.533."""
    p = predicted_onset("mse", "none", 4, 5, 20, 1e-5, 1.0, 1000.0)
    assert p.onset_time == pytest.approx(19.02141413621818, rel=1e-6)
    assert p.fn_cross_time == pytest.approx(11.533048609389663, rel=1e-6)


def test_large_init_just_below_the_failure_agrees_with_the_reference():
    """Same point at init 300 (LSODA succeeds): onset 16.61346, 1.05 fn* crossing 10.33208."""
    p = predicted_onset("mse", "none", 4, 5, 20, 1e-5, 1.0, 300.0)
    assert p.onset_time == pytest.approx(16.613458623109036, rel=1e-8)
    assert p.fn_cross_time == pytest.approx(10.332075297909283, rel=1e-8)


def test_reg_bias_mode_ode_with_tiny_lambda_w_stays_within_its_budget(monkeypatch):
    """MSE reg bias, lambda_W = 1e-9, lambda_H = 1e-5 (LSODA once spent ~1e7 right-hand sides,
    55 s): at most the LSODA budget plus a BDF solve and the crossings' refinements (250k),
    and the onset BDF alone gives."""
    real_rhs = prediction._mode_rhs
    calls = [0]

    def counted(*args, **kwargs):
        rhs = real_rhs(*args, **kwargs)

        def inner(t, y):
            calls[0] += 1
            return rhs(t, y)

        return inner

    monkeypatch.setattr(prediction, "_mode_rhs", counted)
    args = ("mse", "reg", 4, 5, 20, 1e-9, 1e-5, 1e-3)
    predicted_onset.cache_clear()
    try:
        mixed = predicted_onset(*args, lambda_b=1.0)
        assert calls[0] <= prediction._LSODA_BUDGET + 100_000  # BDF and the refinements
        monkeypatch.setattr(prediction, "_LSODA_BUDGET", 0)  # BDF from the start
        predicted_onset.cache_clear()
        bdf = predicted_onset(*args, lambda_b=1.0)
    finally:
        predicted_onset.cache_clear()
    assert mixed.regime == bdf.regime == "ok"
    assert mixed.onset_time == pytest.approx(bdf.onset_time, rel=1e-9)
    assert mixed.fn_cross_time == pytest.approx(bdf.fn_cross_time, rel=1e-9)


def test_aligned_fate_of_a_tiny_init_does_not_warn():
    """A 1e-12 aligned init with decays (0.1, 0.1, 1e-9) goes to the origin without warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert dynamics.aligned_fate("mse", 2, 1, 1e-12, (0.1, 0.1, 1e-9)) == "origin"


def test_aligned_fate_of_a_tiny_init_is_the_origin():
    """A deep spectral init of 1e-12 with lambda_H = 1e-9: theory_columns says trapped, onset
    inf (below the basin root), without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        model = ModelSpec(kind="deep", loss="mse", bias="none", classes=4, per_class=5,
                          dim=20, depth=2)
        spec = RunSpec(model=model, reg=Regularization(lambda_w=0.1, lambda_h=1e-9),
                       init=InitSpec(kind="spectral", scale=1e-12, seed=1)).validate()
        row = theory_columns(spec)
    assert row["theory_regime"] == "trapped" and row["onset_time_theory"] == math.inf


@pytest.mark.parametrize("loss,bias", [("mse", "none"), ("mse", "free"), ("ce", "free")])
def test_theory_columns_collapse_matches_lambda_crit_at_extreme_decays(loss, bias):
    """collapsed_theory holds iff lambda_W < lambda_crit_theory (one layer, gaussian init)."""
    for lw, lh in [(1e-9, 10.0), (10.0, 1e-9), (1e-3, 1e-3), (0.1, 0.1), (1.0, 1.0)]:
        model = ModelSpec(kind="ufm", loss=loss, bias=bias, classes=4, per_class=5, dim=20)
        spec = RunSpec(model=model, reg=Regularization(lambda_w=lw, lambda_h=lh),
                       init=InitSpec(kind="etf", scale=1.0, seed=1)).validate()
        row = theory_columns(spec)
        assert row["collapsed_theory"] == bool(lw < row["lambda_crit_theory"])
        assert np.isfinite(row["lambda_crit_theory"])
