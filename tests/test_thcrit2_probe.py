"""Second mutation probe of ncsim.theory.critical / deep / phase: closed forms against
independent numeric references (scipy written here), vectorised vs scalar evaluation, limits,
the symbolic derivations evaluated numerically, and phase classification branches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from scipy.optimize import brentq, minimize_scalar

from ncsim.errors import InputError
from ncsim.theory import deep
from ncsim.theory import symbols as S
from ncsim.theory.critical import (
    Lambda_crit,
    basin_threshold,
    critical_table,
    deep_thresholds,
    lambda_b_crit_mean_mode,
    lambda_crit,
)
from ncsim.theory.phase import classify, phase_diagram, plot_phase


# ---------------------------------------------------------------- independent references
def _local_min(g, lo, hi):
    """Minimum of a scalar g on [lo, hi]: coarse grid, then a bounded Brent refinement."""
    xs = np.linspace(lo, hi, 4001)
    i = int(np.argmin(g(xs)))
    a, b = xs[max(i - 1, 0)], xs[min(i + 1, len(xs) - 1)]
    r = minimize_scalar(lambda v: float(g(v)), bounds=(a, b), method="bounded",
                        options={"xatol": 1e-14})
    return float(r.x), float(r.fun)


def _ce_g(K, n, lam, M):
    """CE ETF-ray objective by hand: log(1 + (K-1) e^(-sig/s)) + (K-1)(M/2) Lam sig^(2/M)."""
    s = math.sqrt(n)
    return lambda v: np.log1p((K - 1) * np.exp(-v / s)) + (K - 1) * M / 2 * lam * v ** (2 / M)


def _mse_g(K, n, lam, M):
    """Deep MSE per-mode objective written by hand (c = 1)."""
    N, s = K * n, math.sqrt(n)
    return lambda v: (v - s) ** 2 / (2 * N) + M / 2 * lam * v ** (2 / M)


def _ref_glob(g_of_lam, g0, lo, hi, sig_hi):
    """Lambda at which the non-zero local minimum of g equals g(0) (brentq on Lambda)."""
    def gap(lam):
        return _local_min(g_of_lam(lam), 1e-6 * sig_hi, sig_hi)[1] - g0
    return brentq(gap, lo, hi, xtol=1e-16, rtol=1e-14)


# ---------------------------------------------------------------- Lambda_crit / lambda_crit
@pytest.mark.parametrize(("K", "n", "depth"), [(3, 2, 2), (4, 5, 3)])
def test_deep_ce_Lambda_crit_against_brentq_on_the_objective_gap(K, n, depth):
    """Deep CE Lambda_crit is where min_{sigma>0} g_CE equals g(0) = log K (scipy reference)."""
    M = depth + 1
    got = float(Lambda_crit("ce", K, n, depth))
    ref = _ref_glob(lambda lam: _ce_g(K, n, lam, M), math.log(K), 0.8 * got, 1.2 * got,
                    30 * math.sqrt(n))
    assert got == pytest.approx(ref, rel=1e-11)


@pytest.mark.parametrize(("K", "n", "depth"), [(3, 4, 2), (5, 2, 4)])
def test_deep_mse_Lambda_crit_against_brentq_on_the_objective_gap(K, n, depth):
    """Deep MSE Lambda_crit is where min_{sigma>0} g_MSE equals g(0) = 1/(2K) (scipy)."""
    M = depth + 1
    got = float(Lambda_crit("mse", K, n, depth))
    ref = _ref_glob(lambda lam: _mse_g(K, n, lam, M), 1 / (2 * K), 0.8 * got, 1.2 * got,
                    2 * math.sqrt(n))
    assert got == pytest.approx(ref, rel=1e-11)


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_Lambda_crit_vectorised_equals_scalar_calls(loss, depth):
    """Array K, n give, entry by entry, the scalar calls' values."""
    K = np.array([2, 3, 7, 4])
    n = np.array([1, 4, 2, 9])
    vec = Lambda_crit(loss, K, n, depth)
    assert vec.shape == (4,)
    for i in range(4):
        assert vec[i] == pytest.approx(float(Lambda_crit(loss, int(K[i]), int(n[i]), depth)),
                                       rel=1e-13)


def test_one_layer_Lambda_crit_is_the_same_for_both_losses():
    """depth 1: Lambda_crit = 1/(K sqrt n) for MSE and CE alike."""
    for loss in ("mse", "ce"):
        assert float(Lambda_crit(loss, 7, 9, 1)) == pytest.approx(1 / 21, rel=1e-15)


def test_lambda_crit_broadcasts_an_array_ratio():
    """An array ratio gives Lambda_crit / ratio^(1/M) per entry (M = 3: ratios 1, 8, 27)."""
    lc = float(Lambda_crit("ce", 3, 2, 2))
    got = lambda_crit("ce", "none", 3, 2, 2, np.array([1.0, 8.0, 27.0]))
    np.testing.assert_allclose(got, [lc, lc / 2, lc / 3], rtol=1e-13)


# ---------------------------------------------------------------- critical_table
def test_critical_table_refuses_a_zero_ratio_with_its_own_message():
    """critical_table checks the ratio first: 'must be > 0, got 0'."""
    with pytest.raises(InputError,
                       match=r"^ratio lambda_H / lambda_W must be a finite number > 0, got 0$"):
        critical_table("mse", "none", 3, 2, 1, 0)


def test_critical_table_deep_ce_sigma_jump_is_the_tie_minimiser():
    """Deep CE sigma_jump is the non-zero minimiser of g at Lambda_crit (g there = log K)."""
    K, n, depth = 3, 2, 2
    out = critical_table("ce", "none", K, n, depth)
    g = _ce_g(K, n, out["Lambda_crit"], depth + 1)
    x, gx = _local_min(g, 1e-3, 30 * math.sqrt(n))
    assert gx == pytest.approx(math.log(K), rel=1e-10)
    assert out["sigma_jump"] == pytest.approx(x, rel=1e-6)


@pytest.mark.parametrize("depth", [2, 3])
def test_critical_table_deep_mse_sigma_jump(depth):
    """Deep MSE: sigma_jump = sqrt(n)(M-2)/(M-1) (theory.md 3.1)."""
    M = depth + 1
    out = critical_table("mse", "free", 4, 9, depth, 2.0)
    assert out["sigma_jump"] == pytest.approx(3 * (M - 2) / (M - 1), rel=1e-13)
    assert out["lambda_crit"] == pytest.approx(out["Lambda_crit"] / 2 ** (1 / M), rel=1e-14)
    assert "sigma_jump" not in critical_table("mse", "free", 4, 9, 1)


# ---------------------------------------------------------------- lambda_b_crit_mean_mode
def test_lambda_b_crit_mean_mode_vectorised_with_inf_beyond_q_one():
    """Elementwise q/(1-q) with q = K sqrt(n lw lh), inf where q >= 1, as one array call."""
    K = np.array([2.0, 3.0, 2.0, 4.0])
    n = np.array([1.0, 2.0, 1.0, 5.0])
    lw = np.array([0.1, 0.05, 0.5, 1.0])
    lh = np.array([0.2, 0.05, 0.5, 1.0])
    got = lambda_b_crit_mean_mode(K, n, lw, lh)
    q = K * np.sqrt(n * lw * lh)
    np.testing.assert_allclose(got[:2], q[:2] / (1 - q[:2]), rtol=1e-14)
    assert np.isinf(got[2:]).all()
    assert float(lambda_b_crit_mean_mode(3, 2, 0.0, 0.5)) == 0.0


# ---------------------------------------------------------------- basin_threshold
@pytest.mark.parametrize("depth", [2, 3])
def test_deep_mse_basin_root_near_the_stationary_limit(depth):
    """Close to Lambda_stat the lower root of phi(a) = lam is found (brentq on [0, x_max])."""
    K, n, M = 3, 4, depth + 1
    s, N = math.sqrt(n), K * n
    x_max = (s * (M - 2) / (2 * (M - 1))) ** (1 / M)

    def phi(a):
        return a ** (M - 2) * (s - a ** M) / N

    for frac in (0.5, 0.99, 0.999999):
        lam = frac * phi(x_max)
        ref = brentq(lambda a, lam=lam: phi(a) - lam, 0.0, x_max, xtol=1e-16, rtol=1e-15)
        got = float(basin_threshold("mse", K, n, lam, depth))
        assert got == pytest.approx(ref, rel=1e-9)
    assert math.isnan(float(basin_threshold("mse", K, n, 1.000001 * phi(x_max), depth)))


@pytest.mark.parametrize("depth", [2, 3])
def test_deep_ce_basin_root_near_the_psi_maximum(depth):
    """CE: lower root a of psi(a^M) = lam, up to 1e-9 below max psi (scipy reference)."""
    K, n, M = 4, 5, depth + 1
    s = math.sqrt(n)

    def psi_a(a):
        return a ** (M - 2) / (s * (math.exp(a ** M / s) + K - 1))

    r = minimize_scalar(lambda a: -psi_a(a), bounds=(1e-6, 5.0), method="bounded",
                        options={"xatol": 1e-13})
    a_m, p_m = float(r.x), -float(r.fun)
    for frac, rel in ((0.3, 1e-8), (0.9, 1e-8), (0.9999, 1e-8), (1 - 1e-9, 1e-6)):
        lam = frac * p_m
        ref = brentq(lambda a, lam=lam: psi_a(a) - lam, 0.0, a_m, xtol=1e-16, rtol=1e-15)
        got = float(basin_threshold("ce", K, n, lam, depth))
        assert got == pytest.approx(ref, rel=rel)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_basin_threshold_vectorised_equals_scalar_and_zero_decay(loss):
    """Array decays give the scalar results entry by entry; lam = 0 gives a_u = 0."""
    lams = np.array([0.0, 1e-6, 0.01, 0.03])
    vec = basin_threshold(loss, 3, 4, lams, 2)
    assert vec[0] == 0.0
    for i, lam in enumerate(lams):
        one = float(basin_threshold(loss, 3, 4, float(lam), 2))
        assert vec[i] == pytest.approx(one, rel=1e-15, abs=0)


@pytest.mark.parametrize("lam", [-1e-3, math.inf, math.nan])
def test_basin_threshold_refuses_a_bad_decay(lam):
    """A negative, infinite or NaN decay is refused, naming 'the decay lam'."""
    with pytest.raises(InputError, match=r"the decay lam"):
        basin_threshold("mse", 3, 4, lam, 2)


# ---------------------------------------------------------------- deep_thresholds
@pytest.mark.parametrize("depth", [2, 3, 5])
def test_deep_thresholds_invert_each_other(depth):
    """tau_glob / tau_stat are the s at which Lambda_glob / Lambda_stat (hand formulas, fixed
    N) equal Lam; sigma_jump = s (M-2)/(M-1); Lambda_stat / Lambda_glob by hand."""
    K, n, Lam = 3, 4, 0.02
    M, N, s = depth + 1, 12, 2.0
    th = deep_thresholds(K, n, Lam, depth)

    def lg(s_):
        return (s_ * (M - 2) / (M - 1)) ** (2 * (M - 1) / M) / ((M - 2) * N)

    def ls(s_):
        return M * (s_ * (M - 2) / (2 * (M - 1))) ** (2 * (M - 1) / M) / ((M - 2) * N)

    assert lg(float(th.tau_glob)) == pytest.approx(Lam, rel=1e-12)
    assert ls(float(th.tau_stat)) == pytest.approx(Lam, rel=1e-12)
    assert float(th.Lambda_glob) == pytest.approx(lg(s), rel=1e-12)
    assert float(th.Lambda_stat) == pytest.approx(ls(s), rel=1e-12)
    assert float(th.sigma_jump) == pytest.approx(s * (M - 2) / (M - 1), rel=1e-14)
    assert float(th.tau_stat) < float(th.tau_glob)


def test_deep_thresholds_vectorised_equals_scalar():
    """Array K, n, Lam give the scalar thresholds entry by entry (all five fields)."""
    K, n, Lam = np.array([2, 3, 5]), np.array([1, 4, 7]), np.array([0.01, 0.0, 0.3])
    vec = deep_thresholds(K, n, Lam, 3)
    for i in range(3):
        one = deep_thresholds(int(K[i]), int(n[i]), float(Lam[i]), 3)
        for f in ("tau_glob", "tau_stat", "Lambda_glob", "Lambda_stat", "sigma_jump"):
            assert getattr(vec, f)[i] == pytest.approx(float(getattr(one, f)), rel=1e-14,
                                                       abs=0)
    np.testing.assert_array_equal(vec.tau_glob[1:2], [0.0])


@pytest.mark.parametrize("depth", [2.5, True, "2"])
def test_deep_thresholds_refuse_a_non_integer_depth(depth):
    """depth must be an integer >= 2 (2.5, True and '2' are refused with the depth shown)."""
    with pytest.raises(InputError, match=r"^deep thresholds need depth >= 2 \(an integer\)"):
        deep_thresholds(3, 2, 0.01, depth)


def test_deep_thresholds_refuse_a_negative_decay():
    """A negative Lam is refused naming 'the decay Lam'."""
    with pytest.raises(InputError, match=r"the decay Lam"):
        deep_thresholds(3, 2, -0.01, 2)


# ---------------------------------------------------------------- deep.py derivations
_PT = {S.M: 4, S.s: sp.Rational(3, 2), deep.N_sym: 7, S.Lam: sp.Rational(1, 50),
       S.c: sp.Rational(6, 5)}


def _num(expr, **extra):
    """Numeric value of a sympy expression at the probe point plus extra symbol values."""
    subs = dict(_PT)
    for k, v in extra.items():
        subs[getattr(S, k)] = v
    return float(sp.N(expr.subs(subs), 30))


def test_derive_mse_phi_x_max_and_stationarity_numerically():
    """phi(x) = c x^(M-2)(s - x^M)/N, x_max its maximiser, stationarity = dg/dsigma, and
    Lambda_of_sigma solves it, at M = 4, s = 3/2, N = 7, c = 6/5."""
    d = deep.derive_mse()
    M, s, N, c, lam = 4, 1.5, 7, 1.2, 0.02
    x = 0.8
    assert _num(d["phi"], x=x) == pytest.approx(c * x ** (M - 2) * (s - x ** M) / N, rel=1e-14)
    x_m = (s * (M - 2) / (2 * (M - 1))) ** (1 / M)
    assert _num(d["x_max"]) == pytest.approx(x_m, rel=1e-14)
    sig, h = 0.9, 1e-6

    def g(v):
        return c / (2 * N) * (v - s) ** 2 + M / 2 * lam * v ** (2 / M)

    assert _num(d["objective"], sigma=sig) == pytest.approx(g(sig), rel=1e-14)
    assert _num(d["stationarity"], sigma=sig) == pytest.approx(
        (g(sig + h) - g(sig - h)) / (2 * h), rel=1e-7)
    lam_s = _num(d["Lambda_of_sigma"], sigma=sig)
    assert lam_s == pytest.approx(c * sig ** (1 - 2 / M) * (s - sig) / N, rel=1e-14)


def test_derive_ce_lambda_of_sigma_and_log_psi_slope_numerically():
    """CE: Lambda_of_sigma = psi(sigma) and log_psi_slope = d log psi / d sigma (K = 3, n = 2,
    M = 4, sigma = 1.1)."""
    d = deep.derive_ce()
    K, n, M, sig, h = 3, 2, 4, 1.1, 1e-6
    subs = {S.K: K, S.n: n, S.M: M, S.sigma: sp.Rational(11, 10), S.Lam: sp.Rational(1, 50)}
    s = math.sqrt(n)

    def psi(v):
        return v ** (1 - 2 / M) / (s * (math.exp(v / s) + K - 1))

    assert float(sp.N(d["Lambda_of_sigma"].subs(subs), 30)) == pytest.approx(psi(sig), rel=1e-14)
    slope = (math.log(psi(sig + h)) - math.log(psi(sig - h))) / (2 * h)
    assert float(sp.N(d["log_psi_slope"].subs(subs), 30)) == pytest.approx(slope, rel=1e-7)
    g = _ce_g(K, n, 0.02, M)
    assert float(sp.N(d["stationarity"].subs(subs), 30)) == pytest.approx(
        (g(sig + h) - g(sig - h)) / (2 * h), rel=1e-7)


# ---------------------------------------------------------------- phase classification
BASE = {"loss": "mse", "bias": "none", "K": 3, "n": 4, "d": 8, "depth": 2, "lambda_b": 0.0}


def _mse_lams(K, n, M):
    """(Lambda_glob, Lambda_stat) of the deep MSE mode by hand (c = 1)."""
    N, s = K * n, math.sqrt(n)
    lg = (s * (M - 2) / (M - 1)) ** (2 * (M - 1) / M) / ((M - 2) * N)
    return lg, lg * M / 2 ** (2 * (M - 1) / M)


def test_classify_metastable_collapse_is_not_vanishing():
    """Between Lambda_glob and Lambda_stat a large init collapses to the metastable state:
    phase 'collapse', collapsed_global False; exactly three keys."""
    lg, ls = _mse_lams(3, 4, 3)
    lam = (lg + ls) / 2
    row = classify(**{**BASE, "lambda_w": lam, "lambda_h": lam, "init_scale": 5.0})
    assert row["phase"] == "collapse" and row["collapsed_global"] is False
    assert set(row) == {"phase", "collapsed_global", "fn_star"}
    van = classify(**{**BASE, "lambda_w": 2 * ls, "lambda_h": 2 * ls, "init_scale": 5.0})
    assert van["phase"] == "vanishing" and set(van) == {"phase", "collapsed_global", "fn_star"}


def test_classify_zero_lambda_h_is_no_collapse_and_zero_lambda_w_collapses():
    """lambda_H = 0 (deep and one layer): no_collapse; lambda_W = 0, lambda_H > 0: collapse."""
    for depth in (1, 2):
        p = {**BASE, "depth": depth, "init_scale": 1.0}
        assert classify(**{**p, "lambda_w": 0.01, "lambda_h": 0.0})["phase"] == "no_collapse"
        assert classify(**{**p, "lambda_w": 0.0, "lambda_h": 0.01})["phase"] == "collapse"


def test_classify_trapped_uses_a0_equal_init_scale_sqrt_d_over_2():
    """a0 = init_scale sqrt(d/2) = 0.35 a_u is below the band (0.4 a_u): trapped; 0.5 a_u is
    inside it: basin_edge; 2 a_u: collapse."""
    lam, d = 0.01, 8
    a_u = float(basin_threshold("mse", 3, 4, lam, 2))
    p = {**BASE, "lambda_w": lam, "lambda_h": lam}
    phases = [classify(**{**p, "init_scale": f * a_u / math.sqrt(d / 2)})["phase"]
              for f in (0.35, 0.5, 2.0)]
    assert phases == ["trapped", "basin_edge", "collapse"]


@pytest.mark.parametrize(("kw", "msg"), [
    ({"d": 0}, r"^dimension d must be an integer >= 1, got 0$"),
    ({"d": 2.5}, r"^dimension d must be an integer >= 1, got 2\.5$"),
    ({"init_scale": 0.0}, r"^init_scale must be a finite number > 0, got 0\.0$"),
    ({"init_scale": math.inf}, r"^init_scale must be a finite number > 0, got inf$"),
])
def test_classify_input_messages(kw, msg):
    """classify refuses a bad d or init scale with the exact message."""
    with pytest.raises(InputError, match=msg):
        classify(**{**BASE, "lambda_w": 0.01, "lambda_h": 0.01, "init_scale": 1.0, **kw})


def test_phase_diagram_row_order_and_lambda_axis_without_base_decays():
    """Rows run x fastest within y; axis 'lambda' needs no lambda_w / lambda_h in base."""
    base = {k: v for k, v in BASE.items()} | {"depth": 1, "init_scale": 0.1}
    rows = phase_diagram("lambda", [0.01, 1.0], "K", [2, 3], base)
    assert [(r["lambda"], r["K"]) for r in rows] == [(0.01, 2), (1.0, 2), (0.01, 3), (1.0, 3)]
    assert [r["phase"] for r in rows] == ["collapse", "vanishing", "collapse", "vanishing"]


def test_phase_diagram_axes_need_not_be_in_base():
    """The two axis parameters may be missing from base (lambda_w x lambda_h)."""
    base = {k: v for k, v in BASE.items()} | {"depth": 1, "init_scale": 0.1}
    rows = phase_diagram("lambda_w", [0.01], "lambda_h", [0.0, 0.01], base)
    assert [r["phase"] for r in rows] == ["no_collapse", "collapse"]


def test_phase_diagram_messages_for_missing_unknown_and_fractional_n():
    """Missing and unknown base keys and a fractional n axis value give their messages."""
    base = {**BASE, "init_scale": 0.1}
    with pytest.raises(InputError, match=r"^phase diagram base parameters missing: lambda_h "):
        phase_diagram("lambda_w", [0.01], "K", [3], base)
    with pytest.raises(InputError, match=r"^unknown phase diagram base parameters: seed; "):
        phase_diagram("lambda_w", [0.01], "lambda_h", [0.01], {**base, "seed": 1})
    with pytest.raises(InputError, match=r"^phase axis n takes integers, got 2\.5$"):
        phase_diagram("n", [2.5], "lambda", [0.01], base)


def test_plot_phase_uses_linear_axes_when_an_axis_has_zero(monkeypatch, tmp_path):
    """A decay axis that contains 0 is drawn linear; a positive one is log."""
    import ncsim.plots

    figs = []
    monkeypatch.setattr(ncsim.plots, "save_figure", lambda fig, path: figs.append(fig))
    rows = [{"lambda_w": x, "lambda_h": y, "phase": "collapse"}
            for x in (0.0, 0.01) for y in (0.01, 0.1)]
    plot_phase(rows, "lambda_w", "lambda_h", str(tmp_path / "p.png"))
    ax = figs[0].axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("linear", "log")
