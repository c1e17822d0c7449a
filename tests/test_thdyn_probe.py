"""Mutation-probe tests of ncsim.theory.dynamics / columns / prediction: numbers checked
against independent references written here (mpmath quadratures of the mode ODEs in another
variable, closed forms of theory.md) and documented edge values."""

from __future__ import annotations

import math
import warnings

import mpmath as mp
import numpy as np
import pytest

from ncsim.errors import InputError
from ncsim.spec import InitSpec, ModelSpec, OnsetSpec, Regularization, RunSpec
from ncsim.theory import dynamics, equilibrium, predicted_onset, prediction
from ncsim.theory.columns import theory_columns
from ncsim.theory.critical import basin_threshold

K4, N5 = 4, 5


def _ce_escape_reference(K, n, a0, a_end, M, lam):
    """int dt of the deep CE mode da/dt = a^(M-1) / (s (e^(a^M/s) + K - 1)) - lam a, written
    in u = a^M (du = M a^(M-1) da): dt = du / (M u^(2-2/M) / (s (e^(u/s) + K - 1)) - M lam u)."""
    s = mp.sqrt(n)

    def dt_du(u):
        drive = M * u ** (2 - mp.mpf(2) / M) / (s * (mp.exp(u / s) + K - 1))
        return 1 / (drive - M * lam * u)

    return float(mp.quad(dt_du, [mp.mpf(a0) ** M, mp.mpf(a_end) ** M]))


@pytest.mark.parametrize("depth,a0,a_end,lam", [
    (2, 0.05, 1.0, 0.0), (3, 0.2, 1.2, 0.0), (2, 0.5, 1.0, 0.002)])
def test_ce_escape_time_equals_the_integral_of_the_ce_mode_ode(depth, a0, a_end, lam):
    """escape_time(loss="ce") is the time of the CE mode ODE of the module docstring
    (softmax drive 1 / (s (e^m + K - 1)), m = a^M / s), not that of another K."""
    got = dynamics.escape_time(K4, N5, a0, a_end, depth, lam, "ce")
    want = _ce_escape_reference(K4, N5, a0, a_end, depth + 1, lam)
    assert got == pytest.approx(want, rel=1e-8)


def test_ce_escape_time_is_inf_below_the_ce_basin_root():
    """Deep CE below the basin root a_u the flow falls back to 0: escape time inf; just
    above a_u it is finite."""
    lam, depth = 0.01, 2
    a_u = float(basin_threshold("ce", K4, N5, lam, depth))
    assert dynamics.escape_time(K4, N5, 0.9 * a_u, 2 * a_u, depth, lam, "ce") == math.inf
    assert math.isfinite(dynamics.escape_time(K4, N5, 1.01 * a_u, 1.5 * a_u, depth, lam, "ce"))


def test_escape_time_is_zero_when_the_end_is_not_above_the_start():
    """a_end <= a0: nothing to travel, 0.0 (also at equality)."""
    assert dynamics.escape_time(K4, N5, 0.5, 0.5, 2) == 0.0
    assert dynamics.escape_time(K4, N5, 0.5, 0.2, 2, 0.01, "ce") == 0.0


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_aligned_basin_root_of_one_layer_is_zero_for_unequal_decays(loss):
    """One layer (two factors): the origin is a saddle, every aligned init collapses, so the
    basin root is 0 as documented, also for lambda_W != lambda_H (no bisection)."""
    assert dynamics.aligned_basin_root(loss, K4, N5, (0.01, 0.02)) == 0.0


# ---------------------------------------------------------------------------------------------
# theory_columns: one-layer values against the closed forms of theory.md 1.1 / 2.1


def _spec(loss="mse", bias="none", K=4, n=5, d=20, depth=1, lw=0.01, lh=0.04, lb=0.0,
          init="spectral", scale=0.1, metric="nc1_trace"):
    return RunSpec(model=ModelSpec(kind="ufm" if depth == 1 else "deep", loss=loss, bias=bias,
                                   classes=K, per_class=n, dim=d, depth=depth),
                   reg=Regularization(lambda_w=lw, lambda_h=lh, lambda_b=lb),
                   init=InitSpec(kind=init, scale=scale, seed=0),
                   onset=OnsetSpec(metric=metric)).validate()


@pytest.mark.parametrize("loss,bias", [("mse", "none"), ("mse", "free"), ("ce", "free")])
def test_one_layer_columns_equal_the_closed_forms(loss, bias):
    """K=4, n=5, lambda_W=0.01, lambda_H=0.04 (r = sqrt(n lW lH) = sqrt(0.002), alpha = 1 - K r):
    |w|^2, |h|^2 and the mean data loss of theory.md, lambda_crit = 1/(K sqrt(n lH/lW)) at
    the ratio lH/lW = 4 (0.0559017), spectral init: onset 0, regime ok."""
    K, n, lw, lh = 4, 5, 0.01, 0.04
    r = math.sqrt(n * lw * lh)
    alpha = 1 - K * r
    if loss == "mse":
        frac = 1.0 if bias == "none" else (K - 1) / K
        w2 = frac * math.sqrt(n * lh / lw) * alpha
        h2 = frac * math.sqrt(lw / (n * lh)) * alpha
        loss_star = frac * (1 - alpha) ** 2 / 2  # logits alpha Y (+ bias): 1/(2N)|(1-alpha)Y|^2
    else:
        log_term = math.log(1 / r - (K - 1))
        w2 = (K - 1) / K * math.sqrt(n * lh / lw) * log_term
        h2 = (K - 1) / K * math.sqrt(lw / (n * lh)) * log_term
        loss_star = -math.log(1 - (K - 1) * r)
    row = theory_columns(_spec(loss=loss, bias=bias))
    assert row["theory_regime"] == "ok" and row["collapsed_theory"] is True
    assert row["w_norm_star_theory"] == pytest.approx(math.sqrt(w2), rel=1e-12)
    assert row["fn_star_theory"] == pytest.approx(math.sqrt(h2), rel=1e-12)
    assert row["loss_star_theory"] == pytest.approx(loss_star, rel=1e-12)
    assert row["lambda_crit_theory"] == pytest.approx(1 / (K * math.sqrt(n * lh / lw)),
                                                      rel=1e-12)
    assert row["onset_time_theory"] == 0.0 and math.isnan(row["fn_lower_rank_theory"])


def test_spectral_one_layer_above_threshold_vanishes():
    """lambda_W = 0.1, lambda_H = 0.4 (K sqrt(n lW lH) = 4 sqrt(0.2) > 1): not collapsed, a
    spectral init vanishes: onset inf, regime "vanishing"."""
    row = theory_columns(_spec(lw=0.1, lh=0.4))
    assert row["collapsed_theory"] is False
    assert row["onset_time_theory"] == math.inf and row["theory_regime"] == "vanishing"


def test_other_onset_metric_on_a_narrow_model_names_only_the_metric():
    """d < 5K (regime "approximate: d < 5K" for nc1_trace) with the onset metric nc1: the
    onset is NaN and the regime is only "onset predicted for nc1_trace only" (the
    approximation note is about the onset, which is not given)."""
    trace = theory_columns(_spec(d=8, init="gaussian", scale=1e-3))
    other = theory_columns(_spec(d=8, init="gaussian", scale=1e-3, metric="nc1"))
    assert trace["theory_regime"] == "approximate: d < 5K"
    assert 0 < trace["onset_time_theory"] < math.inf
    assert other["theory_regime"] == "onset predicted for nc1_trace only"
    assert math.isnan(other["onset_time_theory"])
    assert other["fn_star_theory"] == trace["fn_star_theory"]


@pytest.mark.parametrize("depth", [1, 2])
def test_spectral_init_with_a_regularised_bias_does_not_seed_the_mean_mode(depth):
    """MSE, regularised bias lambda_b = 5 (sigma_mean > 0), spectral init (K - 1 centred
    modes only): the columns describe the end state without the mean mode (depth 2:
    equilibrium(mean_mode=False) values; depth 1: NaN), regime "mean_mode_unseeded"; without
    bias the spectral init has K modes and the columns are the global minimiser's."""
    kw = dict(bias="reg", lb=5.0, lh=0.01, d=8, depth=depth, scale=1.0)
    row = theory_columns(_spec(**kw))
    assert row["theory_regime"].startswith("mean_mode_unseeded: ")
    off = equilibrium("mse", "reg", 4, 5, 0.01, 0.01, 5.0, depth, mean_mode=False)
    full = equilibrium("mse", "reg", 4, 5, 0.01, 0.01, 5.0, depth)
    assert float(full.sigma_mean) > 0
    if depth == 2:
        assert row["fn_star_theory"] == pytest.approx(float(off.fn_star), rel=1e-14)
        assert row["loss_star_theory"] == pytest.approx(float(off.loss_star), rel=1e-14)
        assert row["fn_star_theory"] < float(full.fn_star)
    else:
        assert math.isnan(row["fn_star_theory"]) and math.isnan(row["w_norm_star_theory"])
    seeded = theory_columns(_spec(bias="none", lh=0.01, d=8, depth=depth, scale=1.0))
    assert seeded["theory_regime"] == "ok"
    assert seeded["fn_star_theory"] == pytest.approx(
        float(equilibrium("mse", "none", 4, 5, 0.01, 0.01, 0.0, depth).fn_star), rel=1e-14)


# ---------------------------------------------------------------------------------------------
# deep Gaussian init: the escape time of the balanced mode


@pytest.mark.parametrize("lw,lh", [(0.01, 0.01), (0.005, 0.04)])
def test_deep_gaussian_onset_is_the_escape_time_to_half_the_collapsed_sigma(lw, lh):
    """K=4, n=5, d=20, L=2 (M=3), init std 0.3: the reported time is the balanced mode's
    flow time int da / ((s - a^M) a^(M-1)/N - Lambda a) from a0 = 0.3 sqrt(d/2) to a with
    a^M = sigma/2, where Lambda = (lH lW^L)^(1/M) and sigma is the largest root of the
    stationarity (s - u) u^((M-2)/M) = N Lambda (mpmath)."""
    K, n, d, L, a = 4, 5, 20, 2, 0.3
    M, N, s = L + 1, K * n, mp.sqrt(n)
    lam = mp.mpf(lh * lw**L) ** (mp.mpf(1) / M)
    sigma = mp.findroot(lambda u: (s - u) * u ** (mp.mpf(M - 2) / M) - N * lam, 0.9 * s)
    a0 = a * mp.sqrt(d / 2)
    a_half = (sigma / 2) ** (mp.mpf(1) / M)
    want = mp.quad(lambda x: 1 / ((s - x**M) * x ** (M - 1) / N - lam * x), [a0, a_half])
    p = predicted_onset("mse", "none", K, n, d, lw, lh, a, depth=L)
    assert p.regime == "escape_time_only"
    assert p.onset_time == pytest.approx(float(want), rel=1e-7)
    assert math.isnan(p.lead_time) and math.isnan(p.fn_cross_time)


def test_basin_band_edges_and_position():
    """basin_band(d) = (0.4, 1 + 0.6/sqrt(d)): (0.4, 1.3) at d = 4, (0.4, 1.2) at d = 9;
    basin_position places a0 against a_u of the closed form: 1.25 a_u at d = 4 lies within
    the band (text "= 1.25 a_u"), 0.39 a_u below it, 1.31 a_u above it."""
    assert prediction.basin_band(4) == pytest.approx((0.4, 1.3), rel=1e-15)
    assert prediction.basin_band(9) == pytest.approx((0.4, 1.2), rel=1e-15)
    a_u = float(basin_threshold("mse", K4, N5, 0.01, 2))
    decays = (0.01, 0.01, 0.01)
    assert prediction.basin_position("mse", K4, N5, 1.25 * a_u, decays, 4) == "= 1.25 a_u"
    assert prediction.basin_position("mse", K4, N5, 0.39 * a_u, decays, 4) == "below"
    assert prediction.basin_position("mse", K4, N5, 1.31 * a_u, decays, 4) == "above"


@pytest.mark.parametrize("delta", [-1.0, -1.5, math.inf, math.nan])
def test_predicted_onset_refuses_a_fn_level_that_is_not_positive(delta):
    """delta <= -1 puts the fn level (1 + delta) fn* at or below 0: InputError naming delta."""
    with pytest.raises(InputError, match=r"delta must be a finite number > -1"):
        predicted_onset("mse", "none", 4, 5, 20, 0.01, 0.01, 1e-3, delta=delta)


def test_default_horizon_covers_a_late_fn_crossing_from_above():
    """MSE, K=4, n=5, d=20, lambda = 0.01, init std 1: fn falls to fn* as the within-class
    energy decays at 2 lambda_H, so (fn - fn*)/fn* ~ e^(-2 lambda_H t) and the crossing of
    (1 + 1e-9) fn* comes ln(10) / (2 lambda_H) = 115.13 after that of (1 + 1e-8) fn*, at
    t = 1173.9: beyond 10 / lambda_H but inside the default horizon 40 / lambda_H."""
    args = ("mse", "none", 4, 5, 20, 0.01, 0.01, 1.0)
    late = predicted_onset(*args, delta=1e-9)
    early = predicted_onset(*args, delta=1e-8)
    far = predicted_onset(*args, delta=1e-9, t_max=1e5)
    assert 10 / 0.01 < late.fn_cross_time < 40 / 0.01
    assert late.fn_cross_time == pytest.approx(far.fn_cross_time, rel=1e-8)
    assert late.fn_cross_time - early.fn_cross_time == pytest.approx(
        math.log(10) / (2 * 0.01), rel=1e-5)
    assert late.lead_time == pytest.approx(late.onset_time - late.fn_cross_time, rel=1e-12)


def test_logistic_half_time_is_nan_when_the_mode_starts_at_its_limit():
    """z0 = z_inf = sqrt(n) - N lambda: z(t) = z_inf for all t, never z_inf / 2: NaN (as
    documented for z0 >= z_inf), as just above z_inf and above lambda_crit; z0 = 0 stays at
    0: inf. No numpy warnings leak from the entries that do not rise."""
    K, n, lam = 4, 5, 0.01
    z_inf = math.sqrt(n) - K * n * lam
    assert float(dynamics.logistic(7.0, z_inf, K, n, lam)) == pytest.approx(z_inf, rel=1e-14)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(float(dynamics.logistic_half_time(z_inf * (1 + 1e-12), K, n, lam)))
        assert math.isnan(float(dynamics.logistic_half_time(z_inf, K, n, lam)))
        assert math.isnan(float(dynamics.logistic_half_time(0.1, K, n, 1.0)))
        assert float(dynamics.logistic_half_time(0.0, K, n, lam)) == math.inf
        both = dynamics.logistic_half_time(np.array([z_inf, z_inf / 4]), K, n, lam)
    # ln(z_inf / z0 - 1): z_inf / 4 and 3 z_inf / 4 lie +-ln 3 / (2 r) from t = 0
    assert math.isnan(both[0]) and both[1] > 0
    late = float(dynamics.logistic_half_time(0.75 * z_inf, K, n, lam))
    assert both[1] == pytest.approx(-late, rel=1e-12)
