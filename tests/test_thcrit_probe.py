"""Mutation-probe tests for ncsim.theory.critical / imbalance / modes / phase (hand values)."""

import math

import numpy as np
import pytest

from ncsim.errors import InputError
from ncsim.theory.critical import (
    Lambda_crit,
    basin_threshold,
    deep_thresholds,
    lambda_b_crit_mean_mode,
    lambda_crit,
)
from ncsim.theory.imbalance import imbalanced_equilibrium, label_singular_values
from ncsim.theory.modes import ce_objective, mse_objective
from ncsim.theory.phase import check_axes, phase_diagram

RATIO_MSG = r"^ratio lambda_H / lambda_W must be a finite number > 0$"
COUNTS_MSG = r"^counts must list K >= 2 integer class sizes >= 1, got"


@pytest.mark.parametrize("ratio", [0.0, -1.0, math.inf, math.nan])
def test_lambda_crit_refuses_a_bad_ratio(ratio):
    """lambda_crit refuses a ratio that is 0, negative, infinite or NaN (no inf/NaN/0 result)."""
    with pytest.raises(InputError, match=RATIO_MSG):
        lambda_crit("mse", "none", 3, 2, 1, ratio)


def test_lambda_crit_refuses_a_bad_entry_in_a_ratio_array():
    """One bad entry of an array ratio is enough to refuse it."""
    with pytest.raises(InputError, match=RATIO_MSG):
        lambda_crit("ce", "none", 3, 2, 1, np.array([1.0, 0.0]))


@pytest.mark.parametrize("depth, ratio", [(1, 4.0), (2, 8.0), (3, 16.0)])
def test_lambda_crit_is_Lambda_crit_over_the_M_th_root_of_the_ratio(depth, ratio):
    """lambda_W,c = Lambda_crit / ratio^(1/(L+1)); here ratio^(1/M) = 2 exactly."""
    lam = float(lambda_crit("mse", "none", 3, 4, depth, ratio))
    assert lam == pytest.approx(float(Lambda_crit("mse", 3, 4, depth)) / 2.0, rel=1e-14)


def test_one_layer_lambda_crit_by_hand():
    """One layer: sqrt(lambda_W * ratio lambda_W) = 1/(K sqrt n) at lambda_W,c."""
    lam = float(lambda_crit("ce", "free", 5, 9, 1, 4.0))
    assert lam == pytest.approx(1 / (5 * 3) / 2, rel=1e-14)


def test_lambda_b_crit_mean_mode_by_hand():
    """lambda_b,c = q / (1 - q) with q = K sqrt(n lambda_W lambda_H); inf for q >= 1."""
    q = 3 * math.sqrt(2 * 0.05 * 0.05)
    got = lambda_b_crit_mean_mode(3, 2, 0.05, 0.05)
    assert float(got) == pytest.approx(q / (1 - q), rel=1e-14)
    # q = 1 exactly (K = 2, n = 1, lambda = 1/2): the mean mode never lives
    assert math.isinf(float(lambda_b_crit_mean_mode(2, 1, 0.5, 0.5)))


def test_one_layer_basin_threshold_is_zero_below_and_nan_at_the_threshold():
    """depth 1: a_u = 0 strictly below 1/(K sqrt n), NaN at it (no non-zero critical point)."""
    out = basin_threshold("mse", 2, 4, np.array([0.2499, 0.25]), 1)
    assert out[0] == 0.0 and math.isnan(out[1])


def test_deep_mse_basin_threshold_solves_the_stationarity_by_hand():
    """Deep MSE (M = 3, K = 2, n = 4): a_u solves (s - a^3) a / N = lam, lower root."""
    lam = 0.05
    a = float(basin_threshold("mse", 2, 4, lam, 2))
    assert (2.0 - a ** 3) * a / 8 == pytest.approx(lam, rel=1e-12)
    # lower root: below the maximiser of (s - a^3) a, a_max = (s/4)^(1/3)
    assert a < (2.0 / 4) ** (1 / 3)


def test_deep_thresholds_refuse_depth_one():
    """deep_thresholds needs depth >= 2, with the depth in the message."""
    with pytest.raises(InputError, match=r"deep thresholds need depth >= 2 \(an integer\), got 1"):
        deep_thresholds(3, 2, 0.01, 1)


@pytest.mark.parametrize("counts", [[0, 3], [2.5, 3], [3], [[1, 2], [3, 4]], [-1, 4]])
def test_imbalanced_refuses_bad_counts(counts):
    """Counts must be K >= 2 integers >= 1 (0, fractions, one class, 2-d are refused)."""
    with pytest.raises(InputError, match=COUNTS_MSG):
        imbalanced_equilibrium("mse", "none", counts, 0.01, 0.01)


def test_imbalanced_mse_no_bias_by_hand():
    """counts (1, 4, 9), Lambda = 0.1: singular values (3 - 1.4, 2 - 1.4, 0) and norms."""
    lw, lh = 0.05, 0.2  # Lambda = 0.1, N Lambda = 1.4
    eq = imbalanced_equilibrium("mse", "none", [1, 4, 9], lw, lh)
    np.testing.assert_allclose(eq.singular_values, [1.6, 0.6, 0.0], atol=1e-14)
    nuc = 2.2
    assert eq.w_norm_fro ** 2 == pytest.approx(math.sqrt(lh / lw) * nuc, rel=1e-12)
    assert eq.h_norm_fro ** 2 == pytest.approx(math.sqrt(lw / lh) * nuc, rel=1e-12)
    r = (lw / lh) ** 0.25
    mu = [0.0, r * math.sqrt(0.6) / 2, r * math.sqrt(1.6) / 3]
    np.testing.assert_allclose(eq.class_mean_norms, mu, atol=1e-14)
    assert eq.fn_star == pytest.approx((4 * mu[1] + 9 * mu[2]) / 14, rel=1e-12)
    # the minority class is dead, the bias is zero, the origin has f = 1/2
    assert eq.collapsed and eq.method == "closed_form"
    assert eq.objective_zero == pytest.approx(0.5, rel=1e-14)
    np.testing.assert_array_equal(eq.bias, np.zeros(3))


def test_label_singular_values_by_hand():
    """No bias: sorted sqrt(n_k); free bias on (1, 3): Y_c Y_c^T = diag(n) - n n^T / N has rank
    1 for K = 2, so its one singular value is sqrt(trace) = sqrt(4 - 10/4) = sqrt(3/2)."""
    np.testing.assert_allclose(label_singular_values("none", [1, 9, 4]), [3.0, 2.0, 1.0])
    np.testing.assert_allclose(label_singular_values("free", [1, 3]), [math.sqrt(1.5), 0.0],
                               atol=1e-15)


def test_imbalanced_ce_at_the_exact_threshold_is_the_origin():
    """CE, counts (4, 4): |grad at 0|_2 = 1/(K sqrt n) = 1/4; Lambda = 1/4 exactly is not
    collapsed (the origin meets its optimality condition with equality)."""
    eq = imbalanced_equilibrium("ce", "none", [4, 4], 0.25, 0.25)
    assert not eq.collapsed
    np.testing.assert_array_equal(eq.singular_values, [0.0, 0.0])
    assert eq.objective_star == pytest.approx(math.log(2), rel=1e-14)


def test_mode_objectives_by_hand():
    """g_MSE(sigma) = c/(2N)(sigma - sqrt n)^2 + M/2 Lam sigma^(2/M); g_CE has (K-1) M/2 Lam."""
    g = mse_objective(np.array(1.0), 2, 4, 0.1, 2, 2.0)
    assert float(g) == pytest.approx(2.0 / 16 * 1.0 + 0.1, rel=1e-14)
    g = ce_objective(np.array(8.0), 3, 4, 0.01, 4)
    assert float(g) == pytest.approx(math.log1p(2 * math.exp(-4)) + 2 * 2 * 0.01 * 8 ** 0.5,
                                     rel=1e-14)


@pytest.mark.parametrize("bias", ["none", "free", None])
def test_lambda_b_axis_needs_a_regularised_bias(bias):
    """The phase axis lambda_b is refused unless bias is 'reg'."""
    with pytest.raises(InputError, match=r"^the axis lambda_b needs --bias reg, got bias"):
        check_axes("lambda_b", "lambda_w", bias)
    check_axes("lambda_b", "lambda_w", "reg")


def test_phase_axis_lambda_beside_lambda_w_is_refused():
    """Axis lambda (sets lambda_w = lambda_h) cannot sit beside lambda_w or lambda_h."""
    with pytest.raises(InputError, match="the axis lambda sets lambda_w = lambda_h"):
        check_axes("lambda", "lambda_h", "none")
    with pytest.raises(InputError, match="^phase axes must differ$"):
        check_axes("K", "K", "none")


def test_phase_diagram_one_layer_boundary_by_hand():
    """One-layer MSE, K = 2, n = 4: collapse iff lambda < 1/(K sqrt n) = 1/4 (tie: origin)."""
    base = {"loss": "mse", "bias": "none", "K": 2, "n": 4, "d": 4, "depth": 1,
            "lambda_b": 0.0, "init_scale": 0.1}
    rows = phase_diagram("lambda", [0.2, 0.25, 0.3], "init_scale", [0.1], base)
    assert [r["phase"] for r in rows] == ["collapse", "vanishing", "vanishing"]


def test_phase_diagram_integer_axis_refuses_a_fraction():
    """An integer axis (K) refuses a fractional value with its message."""
    base = {"loss": "mse", "bias": "none", "n": 4, "d": 4, "depth": 1, "lambda_w": 0.01,
            "lambda_h": 0.01, "lambda_b": 0.0}
    with pytest.raises(InputError, match=r"phase axis K takes integers, got 2.5"):
        phase_diagram("K", [2.5], "init_scale", [0.1], base)
