"""Mutation probe of ncsim.theory.prediction, deep and ufm: values users read and input checks."""

import math

import pytest
import sympy as sp

from ncsim.errors import InputError
from ncsim.theory import prediction, ufm
from ncsim.theory import symbols as S
from ncsim.theory.prediction import basin_band, predicted_onset

ARGS = ("mse", "none", 2, 2, 10, 0.05, 0.05, 0.3)


@pytest.mark.parametrize("delta", [-1.0, -1, -2.5])
def test_delta_at_or_below_minus_one_is_refused(delta):
    """delta = -1 (fn level 0) is refused with the message, not accepted as a crossing level."""
    with pytest.raises(InputError, match=r"delta must be a finite number > -1"):
        predicted_onset(*ARGS, delta=delta)


def test_delta_just_above_minus_one_is_accepted():
    """The delta check is strict at -1 only: -0.999 gives a prediction."""
    pred = predicted_onset(*ARGS, delta=-0.999)
    assert pred.delta == -0.999


@pytest.mark.parametrize(("lw", "lh"), [(0.5, 0.5), (0.2, 1.0)])
def test_default_horizon_is_floored_at_1e3(lw, lh):
    """Fast rates (40 / slowest rate < 1e3) still give the 1e3 floor of the search horizon."""
    assert prediction._horizon("mse", "none", 2, 2, 10, lw, lh, 0.1, 0.01) == 1e3


def test_default_horizon_is_40_over_the_slowest_rate():
    """Between the caps the horizon is 40 / min(lambda_W, lambda_H, mu)."""
    assert prediction._horizon("mse", "none", 2, 5, 10, 0.01, 0.02, 0.1, 0.01) == pytest.approx(
        4000.0, rel=1e-12)


@pytest.mark.parametrize(("bias", "d", "expected"), [
    # kept = a^2 (Kn - K)(d - r_w), h2 = kept / ((K - 1) thr), t = 100 h2^2 / (4 lw n)
    ("none", 10, 100 * 64.0 ** 2 / 0.2),  # r_w = K = 2: kept 0.64, h2 64
    ("free", 10, 100 * 72.0 ** 2 / 0.2),  # r_w = K - 1 = 1: kept 0.72, h2 72
    ("none", 1, 4000.0),  # r_w = min(K, d) = d: nothing kept, the rate horizon 40 / lw
])
def test_lambda_h_zero_horizon_by_hand(bias, d, expected):
    """lambda_H = 0: the horizon covers 100 x the polynomial NC1 time, from the kept energy."""
    got = prediction._horizon("mse", bias, 2, 5, d, 0.01, 0.0, 0.1, 0.01)
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("d", "high"), [(1, 1.6), (4, 1.3), (16, 1.15), (100, 1.06)])
def test_basin_band_edges(d, high):
    """The basin band is (0.4, 1 + 0.6 / sqrt(d)) multiples of a_u."""
    low, hi = basin_band(d)
    assert low == 0.4
    assert hi == pytest.approx(high, rel=1e-12)


@pytest.mark.slow  # two basin solves of a deep head, 5-10 s
def test_unequal_decay_basin_position_within_the_band_is_not_above():
    """Unequal decays: an amplitude just inside the band's high edge is not called "above"
    (the flow from a0 / high, not a0 * high, decides "above")."""
    loss, K, n, decays, d = "mse", 4, 5, (0.005, 0.005, 0.04), 8
    high = basin_band(d)[1]
    a_u = 0.10889350530833025  # aligned_basin_root (tests/test_theory_prediction_regimes.py)
    inside = 0.97 * high * a_u
    assert prediction.basin_position(loss, K, n, inside, decays, d).startswith("= ")
    assert prediction.basin_position(loss, K, n, 1.05 * high * a_u, decays, d) == "above"


# --- one-layer closed forms against theory.md 1.1 (K = 3, n = 4, lw = 0.01, lh = 0.04, lb = 1)
POINT = {S.K: 3, S.n: 4, S.lam_w: sp.Rational(1, 100), S.lam_h: sp.Rational(4, 100),
         S.lam_b: 1}
R = math.sqrt(4 * 0.01 * 0.04)  # r_lambda = 0.04
ALPHA, ALPHA0 = 1 - 3 * R, 1 - 3 * R * 2  # 0.88, 0.76
SCALE = math.sqrt(4 * 0.04 / 0.01)  # sqrt(n lh / lw) = 4


def _value(expr):
    return float(sp.N(expr.subs(S.Lam, sp.sqrt(S.lam_w * S.lam_h)).subs(POINT)))


def test_mse_reg_bias_row_norm_matches_the_reference_gram():
    """|w_k|^2 with a regularised bias = rho (K-1)/K + rho_0 / K (theory.md table)."""
    expected = SCALE * ALPHA * 2 / 3 + SCALE * ALPHA0 / 3  # 3.36
    assert _value(ufm.derive_mse()["w_row2_reg"]) == pytest.approx(expected, rel=1e-12)


def test_mse_feature_norm_no_bias_matches_the_reference():
    """fn*^2 without bias = sqrt(lw / (n lh)) alpha (theory.md notes)."""
    expected = math.sqrt(0.01 / (4 * 0.04)) * ALPHA  # 0.22
    assert _value(ufm.derive_mse()["h2_none"]) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("bias", "modes"), [("none", 3), ("free", 2)])
def test_mse_optimal_objective_matches_the_reference(bias, modes):
    """Optimal objective = (number of label modes) [r - K/2 r^2] (theory.md table)."""
    expected = modes * (R - 3 / 2 * R * R)
    assert _value(ufm.derive_mse()[f"objective_star_{bias}"]) == pytest.approx(expected,
                                                                               rel=1e-12)


def test_reg_bias_mean_mode_weight_is_lb_over_one_plus_lb():
    """Eliminating a regularised bias leaves the mean mode the data weight lb / (1 + lb)."""
    weight = ufm.derive_reg_bias_mean_mode()["mean_mode_weight"]
    assert sp.simplify(weight - S.lam_b / (1 + S.lam_b)) == 0
