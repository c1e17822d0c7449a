"""Mutation probes of ncsim.theory.imbalance and ncsim.theory.phase (hand / closed-form values)."""

import math

import numpy as np
import pytest

from ncsim.errors import InputError
from ncsim.theory.critical import basin_threshold
from ncsim.theory.imbalance import imbalanced_mse, label_singular_values
from ncsim.theory.phase import classify


def test_deep_unequal_decays_use_lambda_h_for_the_feature_factor():
    """Deep MSE (K=4, n=5, d=20, L=2, lambda_W=0.04, lambda_H=0.005), init 0.1: collapse; with
    lambda_W on every factor (Lambda 0.04 instead of 0.02) it would read basin_edge."""
    row = classify("mse", "none", 4, 5, 20, 2, 0.04, 0.005, 0.0, 0.1)
    assert row["phase"] == "collapse"
    assert row["collapsed_global"] is True


@pytest.mark.parametrize(
    ("factor", "phase"),
    [(0.39, "trapped"), (0.41, "basin_edge"), (0.99, "basin_edge"), (1.2, "collapse")],
)
def test_deep_equal_decays_band_edges_by_hand(factor, phase):
    """Equal decays, depth 2, d = 25: a0 = init_scale sqrt(d/2) against the band
    (0.4, 1 + 0.6/5 = 1.12) times a_u gives trapped / basin_edge / collapse."""
    K, n, d, lam = 3, 2, 25, 0.02
    a_u = float(basin_threshold("mse", K, n, lam, 2))
    scale = factor * a_u / math.sqrt(d / 2)
    assert classify("mse", "none", K, n, d, 2, lam, lam, 0.0, scale)["phase"] == phase


def test_minority_classes_collapse_to_zero_features():
    """MSE, no bias, counts (1, 16), N = 17, N Lambda = 2: class 0 (sqrt 1 <= 2) has zero
    mean; class 1 has |mu| = (lw/lh)^(1/4) sqrt(4 - 2) / 4; |w_1|^2 = sqrt(lh/lw) (4 - 2)."""
    lw, lh = 4 / 17**2 * 4, 1 / 4  # sqrt(lw lh) = 2 / 17
    eq = imbalanced_mse([1, 16], lw, lh)
    assert eq.collapsed is True
    np.testing.assert_allclose(eq.singular_values, [2.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(
        eq.class_mean_norms, [0.0, (lw / lh) ** 0.25 * math.sqrt(2) / 4], atol=1e-12
    )
    np.testing.assert_allclose(
        np.sort(eq.w_row_norms), [0.0, math.sqrt(math.sqrt(lh / lw) * 2)], atol=1e-12
    )
    assert eq.fn_star == pytest.approx(16 / 17 * (lw / lh) ** 0.25 * math.sqrt(2) / 4, rel=1e-12)


def test_free_bias_label_singular_values_two_classes_by_hand():
    """Centred labels of counts (1, 3): Y Y^T centred = [[3/4, -3/4], [-3/4, 3/4]], so one mode
    with s^2 = 2 n1 n2 / N = 3/2 and the other 0."""
    np.testing.assert_allclose(
        label_singular_values("free", [1, 3]), [math.sqrt(1.5), 0.0], atol=1e-12
    )


@pytest.mark.parametrize("depth", [1, 2])
def test_classify_refuses_a_zero_init_scale(depth):
    """init_scale 0 is refused (it must be > 0, not >= 0), shallow and deep."""
    with pytest.raises(InputError, match=r"^init_scale must be a finite number > 0, got 0\.0$"):
        classify("mse", "none", 3, 2, 6, depth, 0.01, 0.01, 0.0, 0.0)
