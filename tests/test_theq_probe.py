"""Mutation-probe tests for ncsim.theory.equilibrium, .imbalance and .critical: hand-computed
closed-form values (theory.md 1.1, 3.1) and bad-input errors."""

import math

import numpy as np
import pytest

from ncsim.errors import InputError
from ncsim.theory import (
    basin_threshold,
    deep_thresholds,
    equilibrium,
    imbalanced_equilibrium,
    imbalanced_mse,
    lambda_b_crit_mean_mode,
    lambda_crit,
)
from ncsim.theory.critical import Lambda_crit, critical_table
from ncsim.theory.equilibrium import minimiser_rank
from ncsim.theory.imbalance import kkt_residual, label_singular_values


def approx(expected, rel=1e-12, abs_tol=0.0):
    """pytest.approx with no absolute tolerance by default (its own default, 1e-12, would
    accept any tiny value)."""
    return pytest.approx(expected, rel=rel, abs=abs_tol)


# ---------------------------------------------------------------------------------------------
# imbalanced one-layer UFM, MSE without bias: counts (1, 2, 4), lambda_W = 0.01, lambda_H = 0.04
# Lambda = 0.02, N = 7, N Lambda = 0.14, s_k = sqrt(n_k) - 0.14, (lambda_W/lambda_H)^(1/4) = 2^-1/2
# ---------------------------------------------------------------------------------------------
COUNTS = np.array([1.0, 2.0, 4.0])
S_K = np.sqrt(COUNTS) - 0.14


def test_imbalanced_mse_row_norms_are_per_class():
    """|w_k|^2 = sqrt(lambda_H/lambda_W) (sqrt(n_k) - N Lambda), in class order (rows of W)."""
    eq = imbalanced_mse((1, 2, 4), 0.01, 0.04)
    np.testing.assert_allclose(eq.w_row_norms ** 2, 2.0 * S_K, rtol=1e-13)
    np.testing.assert_allclose(eq.w_norm_fro ** 2, 2.0 * S_K.sum(), rtol=1e-13)
    np.testing.assert_allclose(eq.h_norm_fro ** 2, 0.5 * S_K.sum(), rtol=1e-13)


def test_imbalanced_mse_class_means_hand_values():
    """|mu_k|^2 = sqrt(lambda_W/lambda_H) s_k / n_k in class order, means mutually orthogonal;
    fn* = sum_k n_k |mu_k| / N and the centred mean norm about the sample mean."""
    eq = imbalanced_mse((1, 2, 4), 0.01, 0.04)
    want = 0.5 * S_K / COUNTS
    np.testing.assert_allclose(eq.class_mean_norms ** 2, want, rtol=1e-13)
    np.testing.assert_allclose(eq.class_means.T @ eq.class_means, np.diag(want), atol=1e-14)
    norms = np.sqrt(want)
    N = COUNTS.sum()
    np.testing.assert_allclose(eq.fn_star, float(COUNTS @ norms) / N, rtol=1e-13)
    mu_g2 = float(np.sum(COUNTS ** 2 * want)) / N ** 2
    centred = np.sqrt(want - 2 * COUNTS * want / N + mu_g2)
    np.testing.assert_allclose(eq.class_mean_norm_centred, centred.mean(), rtol=1e-12)


def test_imbalanced_mse_logits_loss_objective():
    """Logits diag(1 - N Lambda / sqrt(n_k)); loss* = K (N Lambda)^2 / (2N) = 0.0042; f* = loss*
    + Lambda sum s_k; f(0) = 1/2; no bias."""
    eq = imbalanced_mse((1, 2, 4), 0.01, 0.04)
    np.testing.assert_allclose(eq.logits, np.diag(1 - 0.14 / np.sqrt(COUNTS)), atol=1e-14)
    assert eq.loss_star == approx(0.0042, rel=1e-12)
    assert eq.objective_star == approx(0.0042 + 0.02 * S_K.sum(), rel=1e-12)
    assert eq.objective_zero == approx(0.5, rel=1e-12)
    assert eq.method == "closed_form" and eq.kkt_residual == 0.0 and eq.collapsed
    np.testing.assert_array_equal(eq.bias, np.zeros(3))


def test_imbalanced_mse_free_bias_two_classes_hand_values():
    """K = 2, counts (1, 3): the centred labels have one singular value sqrt(2 n1 n2 / N) =
    sqrt(3/2); Z = (1 - t) Y_c with t = N Lambda / sigma; b = n_k / N = (1/4, 3/4) for every
    Lambda below threshold; loss* = t^2 sigma^2 / (2N); f(0) = sigma^2 / (2N)."""
    sigma = math.sqrt(1.5)
    lam = 0.05  # lambda_W = lambda_H = 0.05: Lambda = 0.05, N Lambda = 0.2
    t = 0.2 / sigma
    eq = imbalanced_mse((1, 3), lam, lam, "free")
    np.testing.assert_allclose(label_singular_values("free", (1, 3)), [sigma, 0.0], atol=1e-15)
    np.testing.assert_allclose(eq.singular_values, [sigma - 0.2, 0.0], atol=1e-14)
    np.testing.assert_allclose(eq.bias, [0.25, 0.75], rtol=1e-13)
    want = np.array([[0.25 + (1 - t) * 0.75, 0.25 - (1 - t) * 0.25],
                     [0.75 - (1 - t) * 0.75, 0.75 + (1 - t) * 0.25]])
    np.testing.assert_allclose(eq.logits, want, rtol=1e-13)
    assert eq.loss_star == approx(t ** 2 * 1.5 / 8, rel=1e-12)
    assert eq.objective_zero == approx(1.5 / 8, rel=1e-9)
    assert eq.objective_star == approx(t ** 2 * 1.5 / 8 + lam * (sigma - 0.2), rel=1e-12)


def test_imbalanced_mse_above_threshold_is_the_origin():
    """N Lambda = 2.1 >= sqrt(max n_k) = 2: no mode survives, collapsed False, every norm 0,
    f* = f(0) = 1/2 (no bias); free bias, K = 2: f* = sigma^2 / (2N), b = n_k / N."""
    eq = imbalanced_mse((1, 2, 4), 0.3, 0.3)
    assert eq.collapsed is False and eq.fn_star == 0.0 and eq.w_norm_fro == 0.0
    assert eq.objective_star == approx(0.5, rel=1e-14) == eq.objective_zero
    # free bias, K = 2, counts (1, 3): sigma = sqrt(3/2) <= N Lambda = 4 x 0.35
    eq = imbalanced_mse((1, 3), 0.35, 0.35, "free")
    assert eq.collapsed is False and eq.h_norm_fro == 0.0
    np.testing.assert_allclose(eq.bias, [0.25, 0.75], rtol=1e-13)
    assert eq.objective_star == approx(1.5 / 8, rel=1e-12)


def test_label_singular_values_hand_values():
    """No bias: sqrt(n_k) in descending order; free bias, K = 2: sqrt(2 n1 n2 / N) and 0."""
    np.testing.assert_allclose(label_singular_values("none", (4, 1, 9)), [3.0, 2.0, 1.0])
    np.testing.assert_allclose(label_singular_values("free", (2, 6)), [math.sqrt(3.0), 0.0],
                               atol=1e-15)


def test_kkt_residual_counts_the_cross_terms():
    """MSE without bias, counts (4, 1), X = x u v^T with u = e1, v = (cos t, sin t), x chosen so
    the on-support condition holds exactly and the off-support one is slack: the residual is
    the cross term max(2 |sin t| max(|sin t|, |cos t|), |sin t|) / (N Lambda)."""
    theta, lam, N = 0.3, 0.25, 5.0
    c, s = math.cos(theta), math.sin(theta)
    x = 2 * c - N * lam  # U^T G V = (x - 2 cos t)/N = -Lambda
    assert x > 0 and c / N <= lam  # off-support spectral norm cos t / N below Lambda
    X = x * np.outer([1.0, 0.0], [c, s])
    got = kkt_residual("mse", np.array([4.0, 1.0]), lam, 0.0, X, np.zeros(2), "none")
    want = max(2 * s * max(s, c), s) / (N * lam)
    assert got == approx(want, rel=1e-9)


def test_kkt_residual_is_zero_at_the_closed_form():
    """The soft-thresholding solution meets every KKT condition (residual at rounding)."""
    counts = np.array([1.0, 2.0, 4.0])
    X = np.diag(np.sqrt(counts) - 0.14)
    assert kkt_residual("mse", counts, 0.02, 0.0, X, np.zeros(3), "none") < 1e-12


@pytest.mark.parametrize("counts", [(0, 3), (3,), (2.5, 3), ((1, 2), (3, 4)), "ab", (-1, 2)])
def test_imbalanced_rejects_bad_counts(counts):
    """counts must be K >= 2 integers >= 1 (zero, fractional, nested, text refused)."""
    with pytest.raises(InputError, match="counts must list K >= 2 integer class sizes >= 1"):
        imbalanced_equilibrium("mse", "none", counts, 0.01, 0.01)


@pytest.mark.parametrize("kw, name", [
    ({"lambda_w": True}, "lambda_w"), ({"lambda_h": "0.01"}, "lambda_h"),
    ({"lambda_w": [0.01]}, "lambda_w"), ({"lambda_h": np.array([0.01, 0.02])}, "lambda_h"),
    ({"lambda_w": None}, "lambda_w")])
def test_imbalanced_rejects_decays_that_are_not_one_number(kw, name):
    """Booleans, text, lists and None are not one number (True is not read as 1.0)."""
    args = {"lambda_w": 0.01, "lambda_h": 0.01, **kw}
    with pytest.raises(InputError, match=f"{name} must be one number"):
        imbalanced_equilibrium("mse", "none", (1, 2), **args)


@pytest.mark.parametrize("lw, lh", [(0.0, 0.01), (0.01, 0.0), (-0.01, 0.01), (math.inf, 0.01),
                                    (0.01, math.nan)])
def test_imbalanced_rejects_zero_or_infinite_decays(lw, lh):
    """lambda_W, lambda_H must be finite and > 0 (zero decay: no minimiser)."""
    with pytest.raises(InputError, match="needs finite lambda_w > 0 and lambda_h > 0"):
        imbalanced_equilibrium("mse", "none", (1, 2), lw, lh)


@pytest.mark.parametrize("lb", [0.0, -1.0, math.inf, math.nan])
def test_imbalanced_reg_bias_needs_finite_positive_lambda_b(lb):
    """bias 'reg' needs a finite lambda_b > 0 (checked before any numerics)."""
    with pytest.raises(InputError, match="bias 'reg' needs a finite lambda_b > 0"):
        imbalanced_equilibrium("mse", "reg", (1, 2), 0.01, 0.01, lb)


def test_imbalanced_rejects_unknown_model():
    """Unknown loss or bias: InputError naming the allowed values."""
    with pytest.raises(InputError, match="unknown loss 'hinge'; allowed: mse, ce"):
        imbalanced_equilibrium("hinge", "none", (1, 2), 0.01, 0.01)
    with pytest.raises(InputError, match="unknown bias 'both'; allowed: none, free, reg"):
        imbalanced_equilibrium("mse", "both", (1, 2), 0.01, 0.01)


# ---------------------------------------------------------------------------------------------
# balanced one-layer UFM, K = 4, n = 4, lambda_W = 0.01, lambda_H = 0.04 (theory.md 1.1):
# r = sqrt(n lambda_W lambda_H) = 0.04, alpha = 1 - K r = 0.84, sqrt(n lambda_H/lambda_W) = 4,
# Lambda = 0.02, N = 16; regularised bias lambda_b = 1: alpha_0 = 1 - K r (1 + lb)/lb = 0.68
# ---------------------------------------------------------------------------------------------
ONE_LAYER = {
    # bias: |w_k|^2, |h|^2, |mu_k - mu_G|^2, b, logit_true, logit_other, loss*, f*, f(0), sigma0
    "none": (3.36, 0.21, 0.1575, 0.0, 0.84, 0.0, 0.0128, 0.1472, 0.5, 1.68),
    "free": (2.52, 0.1575, 0.1575, 0.25, 0.88, 0.04, 0.0096, 0.1104, 0.375, 0.0),
    "reg": (3.2, 0.2, 0.1575, 0.04, 0.84, 0.0, 0.0128, 0.144, 0.4375, 1.36),
}


@pytest.mark.parametrize("bias", list(ONE_LAYER))
def test_one_layer_mse_hand_values(bias):
    """Every field of the one-layer MSE minimiser against hand values (no, free, reg bias)."""
    w2, h2, c2, b, zt, zo, loss, obj, obj0, sig0 = ONE_LAYER[bias]
    eq = equilibrium("mse", bias, 4, 4, 0.01, 0.04, 1.0)
    got = {k: float(v) for k, v in eq.to_dict().items() if k != "lower_rank_better"}
    want = {"sigma": 1.68, "sigma_mean": sig0, "w_norm_star": math.sqrt(w2),
            "fn_star": math.sqrt(h2), "class_mean_norm_star": math.sqrt(h2),
            "class_mean_norm_centred": math.sqrt(c2), "bias_star": b, "margin_star": 0.84,
            "logit_true": zt, "logit_other": zo, "loss_star": loss, "objective_star": obj,
            "objective_zero": obj0, "norm_W1": math.sqrt(4 * w2), "norm_H": math.sqrt(16 * h2)}
    for key, value in want.items():
        assert got[key] == approx(value, abs_tol=1e-15), key
    assert eq.collapsed and eq.lower_rank_better is False


def test_one_layer_ce_hand_values():
    """CE, K = 4, n = 4, r = 0.04: |w|^2 = (K-1)/K 4 ln(1/r - K + 1) = 3 ln 22, |h|^2 = |w|^2/16,
    margin ln 22, CE* = -ln(1 - (K-1) r) = -ln 0.88, logits (K-1)/K m and -m/K, bias 0."""
    eq = equilibrium("ce", "free", 4, 4, 0.01, 0.04)
    m = math.log(22.0)
    assert float(eq.w_norm_star) ** 2 == approx(3 * m, rel=1e-12)
    assert float(eq.fn_star) ** 2 == approx(3 * m / 16, rel=1e-12)
    assert float(eq.margin_star) == approx(m, rel=1e-12)
    assert float(eq.loss_star) == approx(-math.log(0.88), rel=1e-12)
    assert float(eq.logit_true) == approx(0.75 * m, rel=1e-12)
    assert float(eq.logit_other) == approx(-0.25 * m, rel=1e-12)
    assert float(eq.bias_star) == 0.0 and float(eq.sigma_mean) == 0.0
    # f* = CE* + Lambda |Z|_* = CE* + 0.02 (K - 1) sigma, sigma = sqrt(n) m
    assert float(eq.objective_star) == approx(-math.log(0.88) + 0.06 * 2 * m, rel=1e-12)
    assert float(eq.objective_zero) == approx(math.log(4.0), rel=1e-14)
    assert eq.lower_rank_better is False


def test_lower_rank_flag_is_none_only_for_deep_ce():
    """lower_rank_better: False (proven) for MSE and one-layer CE, None for unchecked deep CE."""
    assert equilibrium("ce", "none", 4, 4, 0.01, 0.01).lower_rank_better is False
    assert equilibrium("mse", "none", 4, 4, 0.01, 0.01, depth=2).lower_rank_better is False
    assert equilibrium("ce", "none", 4, 4, 0.01, 0.01, depth=2).lower_rank_better is None


@pytest.mark.parametrize("bias, lb, rank", [("none", 0.0, 4), ("free", 0.0, 3), ("reg", 1.0, 4),
                                            ("reg", 0.1, 3)])
def test_minimiser_rank_counts_the_mean_mode(bias, lb, rank):
    """K - 1 centred modes plus the mean mode where it lives (K r = 0.16: the mean mode of a
    regularised bias lives iff lambda_b > 0.16 / 0.84); 0 at the origin."""
    assert minimiser_rank(equilibrium("mse", bias, 4, 4, 0.01, 0.04, lb), 4) == rank
    assert minimiser_rank(equilibrium("mse", bias, 4, 4, 0.1, 0.4, lb), 4) == 0


def test_zero_decay_limits():
    """One layer, MSE, one zero decay: sigma = sqrt(n); lambda_W = 0: W -> inf, features -> 0;
    lambda_H = 0: W -> 0, features -> inf; both zero: NaN norms."""
    eq = equilibrium("mse", "none", 4, 4, 0.0, 0.04)
    assert float(eq.sigma) == 2.0 and float(eq.fn_star) == 0.0
    assert float(eq.factor_norms["W1"]) == math.inf and float(eq.factor_norms["H"]) == 0.0
    eq = equilibrium("mse", "none", 4, 4, 0.04, 0.0)
    assert float(eq.fn_star) == math.inf and float(eq.w_norm_star) == 0.0
    assert float(eq.factor_norms["H"]) == math.inf
    eq = equilibrium("mse", "none", 4, 4, 0.0, 0.0)
    assert math.isnan(float(eq.fn_star)) and math.isnan(float(eq.factor_norms["W1"]))


@pytest.mark.parametrize("args, kwargs, match", [
    (("mse", "none", 4, 4, 0.01, 0.01), {"lambda_b": -1.0}, "lambda_b must be a finite number"),
    (("mse", "none", 4, 4, 0.01, 0.01), {"lambda_b": math.nan}, "lambda_b must be a finite"),
    (("mse", "reg", 4, 4, 0.01, 0.01), {"lambda_b": 0.0}, "bias 'reg' needs lambda_b > 0"),
    (("mse", "none", 4, 4, (0.01,), 0.01), {"depth": 2}, "lambda_w lists 1 values but depth"),
    (("mse", "none", 4, 4, (0.01, 0.01, 0.01), 0.01), {"depth": 2}, "lists 3 values"),
    (("mse", "none", 4 + 0j, 4, 0.01, 0.01), {}, "K must be a number or an array of numbers"),
    (("mse", "none", 4, np.array([4 + 1j]), 0.01, 0.01), {}, "n must be a number or an array"),
    (("mse", "none", 4, 0, 0.01, 0.01), {}, "samples per class n must be an integer >= 1"),
    (("mse", "none", 1, 4, 0.01, 0.01), {}, "classes K must be an integer >= 2, got 1"),
    (("mse", "none", 4, 4, -0.01, 0.01), {}, "weight decays must be a finite number >= 0"),
    (("mse", "none", 4, 4, 0.01, 0.01), {"depth": 0}, "depth must be an integer >= 1"),
])
def test_equilibrium_bad_inputs(args, kwargs, match):
    """Bad parameters raise InputError with a message naming the input."""
    with pytest.raises(InputError, match=match):
        equilibrium(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# critical decays and deep thresholds
# ---------------------------------------------------------------------------------------------
def test_deep_mse_Lambda_crit_closed_form():
    """tau_glob = sqrt(n) solved for Lambda: [s (M-2)/(M-1)]^(2(M-1)/M) / ((M-2) N); K = n = 4,
    depth 2 (M = 3): exactly 1/16; K = 2, n = 9, depth 3 (M = 4): 2^1.5 / 36."""
    assert float(Lambda_crit("mse", 4, 4, 2)) == approx(1 / 16, rel=1e-13)
    assert float(Lambda_crit("mse", 2, 9, 3)) == approx(2 ** 1.5 / 36, rel=1e-13)
    assert float(Lambda_crit("ce", 4, 4, 1)) == approx(1 / 8, rel=1e-15)


def test_lambda_crit_ratio_exponent():
    """lambda_W,c = Lambda_crit / ratio^(1/(L+1)): depth 1, ratio 4 -> 1/16; depth 2, ratio 8 ->
    1/32; ratio 0, negative, inf refused."""
    assert float(lambda_crit("mse", "none", 4, 4, 1, 4.0)) == approx(1 / 16, rel=1e-14)
    assert float(lambda_crit("mse", "free", 4, 4, 2, 8.0)) == approx(1 / 32, rel=1e-13)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(InputError, match="ratio lambda_H / lambda_W must be a finite"):
            lambda_crit("mse", "none", 4, 4, 1, bad)


def test_critical_table_one_layer_with_ratio():
    """critical_table, one layer, ratio 4: lambda_crit = 1/16 but Lambda_crit = 1/8 (no jump)."""
    tab = critical_table("mse", "none", 4, 4, 1, 4.0)
    assert tab == approx({"lambda_crit": 1 / 16, "Lambda_crit": 1 / 8}, rel=1e-14)


def test_lambda_b_crit_mean_mode_hand_values():
    """lambda_b,c = q/(1 - q), q = K sqrt(n lambda_W lambda_H): 0.16/0.84 at K = n = 4,
    (0.01, 0.04); inf at q = 1 exactly (K = 4, n = 1, 0.25, 0.25) and above."""
    got = lambda_b_crit_mean_mode(np.array([4, 4, 4]), np.array([4, 1, 1]),
                                  np.array([0.01, 0.25, 0.5]), np.array([0.04, 0.25, 0.25]))
    assert got[0] == approx(0.16 / 0.84, rel=1e-14)
    assert got[1] == math.inf and got[2] == math.inf
    lbc = 0.16 / 0.84
    assert float(equilibrium("mse", "reg", 4, 4, 0.01, 0.04, lbc * 1.01).sigma_mean) > 0
    assert float(equilibrium("mse", "reg", 4, 4, 0.01, 0.04, lbc * 0.99).sigma_mean) == 0


def test_deep_thresholds_hand_values():
    """M = 3, N = 16, s = 2, Lambda = 1/16: tau_glob = 2 (N Lambda)^(3/4) = 2 = s, tau_stat =
    4 (N Lambda / 3)^(3/4), sigma_jump = s/2 = 1, Lambda_glob = 1/16,
    Lambda_stat = 3 2^(-4/3) / 16."""
    th = deep_thresholds(4, 4, 1 / 16, 2)
    assert float(th.tau_glob) == approx(2.0, rel=1e-13)
    assert float(th.tau_stat) == approx(4 * 3 ** -0.75, rel=1e-13)
    assert float(th.sigma_jump) == approx(1.0, rel=1e-13)
    assert float(th.Lambda_glob) == approx(1 / 16, rel=1e-13)
    assert float(th.Lambda_stat) == approx(3 * 2 ** (-4 / 3) / 16, rel=1e-13)


def test_deep_thresholds_and_basin_bad_inputs():
    """deep_thresholds refuses depth 1 and a negative decay; basin_threshold a negative or NaN
    decay."""
    with pytest.raises(InputError, match="deep thresholds need depth >= 2"):
        deep_thresholds(4, 4, 0.01, 1)
    with pytest.raises(InputError, match="the decay Lam must be a finite number >= 0"):
        deep_thresholds(4, 4, -0.01, 2)
    for bad in (-0.01, math.nan):
        with pytest.raises(InputError, match="the decay lam must be a finite number >= 0"):
            basin_threshold("mse", 4, 4, bad, 2)


def test_basin_threshold_one_layer_boundary():
    """Depth 1: 0 below lambda_c = 1/(K sqrt n) and NaN at lambda_c exactly (K = n = 4: 1/8)."""
    got = basin_threshold("mse", 4, 4, np.array([0.1, 0.125, 0.2]), 1)
    assert got[0] == 0.0 and math.isnan(got[1]) and math.isnan(got[2])


def test_basin_threshold_deep_mse_root():
    """M = 3, s = 2, N = 16, lambda = 0.01: the lower root a of (2 - a^3) a = 0.16 (mpmath)."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(30):
        root = mpmath.findroot(lambda a: (2 - a ** 3) * a - mpmath.mpf("0.16"), 0.08)
    assert float(basin_threshold("mse", 4, 4, 0.01, 2)) == approx(float(root), rel=1e-12)


@pytest.mark.parametrize("lam", [1e-20, 1e-200, 1e-300])
def test_basin_threshold_deep_mse_tiny_decays(lam):
    """Tiny decays: the lower root is N lambda / s = 8 lambda (depth 2) and sqrt(8 lambda)
    (depth 3) to rounding, not the absolute resolution of a bisection on [0, x_max]."""
    assert float(basin_threshold("mse", 4, 4, lam, 2)) == approx(8 * lam, rel=1e-12)
    assert float(basin_threshold("mse", 4, 4, lam, 3)) == approx(math.sqrt(8 * lam),
                                                                         rel=1e-12)


@pytest.mark.parametrize("K, n, match", [(1, 4, "classes K must be an integer >= 2, got 1"),
                                         (4, 2.5, "samples per class n must be an integer >= 1, "
                                                  "got 2.5"),
                                         (3.5, 4, "classes K must be an integer >= 2, got 3.5"),
                                         (4, 0, "samples per class n must be an integer >= 1")])
def test_class_checks_in_every_entry_point(K, n, match):
    """K < 2, fractional K or n, n < 1 are refused by equilibrium, Lambda_crit, lambda_crit,
    deep_thresholds and basin_threshold alike."""
    calls = [lambda: equilibrium("mse", "none", K, n, 0.01, 0.01),
             lambda: Lambda_crit("mse", K, n), lambda: Lambda_crit("ce", K, n, 1),
             lambda: lambda_crit("ce", "free", K, n, 1, 2.0),
             lambda: deep_thresholds(K, n, 0.01, 2), lambda: basin_threshold("mse", K, n, 0.01, 1)]
    for call in calls:
        with pytest.raises(InputError, match=match):
            call()
