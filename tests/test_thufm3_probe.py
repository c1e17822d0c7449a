"""Third mutation probe of ncsim.theory.ufm and ncsim.theory.modes: every bias branch of the
one-layer MSE forms and the regularised-bias mean mode against brute-force minimisation, the
CE forms for unequal decays against theory.md 2.1's scalar problem in ||w||^2, the MSE
critical decay for unequal decays, and the per-mode minimisers' data weight c, zero decay
and tie branches against scipy minimisation of the scalar objectives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
import sympy as sp

from ncsim.theory import critical, modes, ufm
from ncsim.theory import symbols as S


def _num(expr, values):
    """``expr`` at ``values`` (symbol -> number) as a float (every symbol must be given)."""
    return float(sp.N(expr.subs({k: sp.Float(v, 30) for k, v in values.items()}), 30))


def _f(v):
    return np.array(float(v))


def _mode_min(g, hi):
    """Global minimiser and minimum of a scalar g on [0, hi]: a fine grid, then a bounded
    refinement around the best grid point; the origin is a candidate too."""
    grid = np.linspace(0.0, hi, 4001)
    vals = np.array([g(x) for x in grid])
    i = int(np.argmin(vals))
    lo, up = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    res = scipy.optimize.minimize_scalar(g, bounds=(lo, up), method="bounded",
                                         options={"xatol": 1e-13})
    if g(0.0) <= res.fun:
        return 0.0, g(0.0)
    return float(res.x), float(res.fun)


# (K, n, lambda_W, lambda_H, lambda_b): every mode alive, the mean mode too, lambda_W != lambda_H
ALIVE = [(4, 5, 0.004, 0.001, 2.0), (3, 7, 0.0005, 0.003, 0.7)]


# ------------------------------------------------------------------ MSE, regularised bias
@pytest.mark.parametrize(("K", "n", "lw", "lh", "lb"), ALIVE)
def test_reg_bias_mean_mode_against_brute_force_over_sigma_and_bias(K, n, lw, lh, lb):
    """Mean mode with a regularised bias: minimising (1/2N)(s0 + beta sqrt N - sqrt n)^2 +
    lambda_b/2 beta^2 + Lambda s0 over (s0, beta) gives sigma_mean_reg, the bias entry
    beta/sqrt K > 0 (bias_norm = beta) and the optimal value g*(c0), c0 = lambda_b/(1+lambda_b)."""
    N, s, lam = K * n, math.sqrt(n), math.sqrt(lw * lh)

    def f(v):
        s0, beta = v
        return (s0 + beta * math.sqrt(N) - s) ** 2 / (2 * N) + lb / 2 * beta**2 + lam * s0

    res = scipy.optimize.minimize(f, [0.5 * s, 0.1], method="Nelder-Mead",
                                  options={"xatol": 1e-12, "fatol": 1e-16, "maxiter": 20000})
    s0, beta = res.x
    assert s0 > 0 and beta > 0
    d, r = ufm.derive_mse(), ufm.derive_reg_bias_mean_mode()
    at = {S.K: K, S.n: n, S.lam_w: lw, S.lam_h: lh, S.lam_b: lb}
    assert _num(d["sigma_mean_reg"], at) == pytest.approx(s0, rel=1e-6)
    m = s - s0
    assert _num(r["bias_norm"], {**at, sp.Symbol("m", real=True): m}) == pytest.approx(
        beta, rel=1e-6)
    assert _num(r["bias_entry"], {**at, sp.Symbol("m", real=True): m}) == pytest.approx(
        beta / math.sqrt(K), rel=1e-6)
    assert _num(r["mean_mode_weight"], at) == pytest.approx(lb / (1 + lb), rel=1e-15)
    # the whole reg-bias objective: K - 1 centred modes (c = 1) plus this mean mode
    g1 = _mode_min(lambda x: (x - s) ** 2 / (2 * N) + lam * x, 2 * s)[1]
    want = (K - 1) * g1 + res.fun
    obj = _num(d["objective_star_reg"], {**at, S.Lam: lam})
    assert obj == pytest.approx(want, rel=1e-8)


@pytest.mark.parametrize(("K", "n", "lw", "lh", "lb"), ALIVE)
def test_mse_norms_and_optima_per_bias_against_theory_md(K, n, lw, lh, lb):
    """|w_k|^2, |h|^2 and the optimal objective for bias none/free/reg against theory.md 1.1:
    alpha = 1 - K r, alpha_0 = 1 - K r (1 + lambda_b)/lambda_b; free = (K-1)/K none; reg adds
    the mean mode with weight 1/K; optima K, K-1 and K-1 (+ mean mode) times r - K r^2/2."""
    d = ufm.derive_mse()
    r = math.sqrt(n * lw * lh)
    a, a0 = 1 - K * r, 1 - K * r * (1 + lb) / lb
    assert a > 0 and a0 > 0
    w_scale, h_scale = math.sqrt(n * lh / lw), math.sqrt(lw / (n * lh))
    fr = (K - 1) / K
    at = {S.K: K, S.n: n, S.lam_w: lw, S.lam_h: lh, S.lam_b: lb}
    want = {
        "w_row2_none": w_scale * a, "h2_none": h_scale * a,
        "w_row2_free": fr * w_scale * a, "h2_free": fr * h_scale * a,
        "w_row2_reg": fr * w_scale * a + w_scale * a0 / K,
        "h2_reg": fr * h_scale * a + h_scale * a0 / K,
    }
    for key, value in want.items():
        assert _num(d[key], at) == pytest.approx(value, rel=1e-13), key
    per_mode = r - K * r**2 / 2
    at[S.Lam] = math.sqrt(lw * lh)
    c0 = lb / (1 + lb)
    mean = r - K * r**2 / (2 * c0)  # g*(c) = Lambda sqrt n - K n Lambda^2/(2c)
    opt = {"objective_star_per_mode": per_mode, "objective_star_none": K * per_mode,
           "objective_star_free": (K - 1) * per_mode,
           "objective_star_reg": (K - 1) * per_mode + mean}
    for key, value in opt.items():
        assert _num(d[key], at) == pytest.approx(value, rel=1e-13), key


def test_mse_optimum_per_mode_is_the_brute_force_minimum():
    """objective_star_per_mode = min over sigma of (sigma - sqrt n)^2/(2N) + Lambda sigma."""
    K, n, lam = 5, 3, 0.02
    N, s = K * n, math.sqrt(n)
    sig, val = _mode_min(lambda x: (x - s) ** 2 / (2 * N) + lam * x, 2 * s)
    d = ufm.derive_mse()
    at = {S.K: K, S.n: n, S.Lam: lam}
    assert _num(d["objective_star_per_mode"], at) == pytest.approx(val, rel=1e-10)
    assert _num(d["sigma_star"], {**at, S.c: 1}) == pytest.approx(sig, rel=1e-7)


@pytest.mark.parametrize("rho", [0.25, 9.0])
def test_mse_critical_lambda_w_for_unequal_decays(rho):
    """MSE: with lambda_H = rho lambda_W the critical lambda_W is 1/(K sqrt(n rho)) (not
    sqrt(rho)/(K sqrt n)), and the row norm w_row2_none vanishes there."""
    K, n = 4, 5
    d = ufm.derive_mse()
    lw_c = _num(d["lambda_crit_ratio"], {S.K: K, S.n: n, S.rho: rho})
    assert lw_c == pytest.approx(1 / (K * math.sqrt(n * rho)), rel=1e-14)
    at = {S.K: K, S.n: n, S.lam_w: lw_c, S.lam_h: rho * lw_c}
    assert abs(_num(d["w_row2_none"], at)) < 1e-13


# ------------------------------------------------------------------ CE, unequal decays
@pytest.mark.parametrize(("K", "n", "lw", "lh"), [(4, 5, 0.004, 0.001), (6, 2, 0.0004, 0.006)])
def test_ce_norms_are_the_minimiser_of_the_scalar_problem_in_w2(K, n, lw, lh):
    """theory.md 2.1: x = |w|^2 minimises log(1 + (K-1) e^(-K c x/(K-1))) + K lambda_W x with
    c = sqrt(lambda_W/(n lambda_H)); w_row2(_lambda) = x, h2(_lambda) = lambda_W/(n lambda_H) x,
    margin = K c x/(K-1), p* = 1 - (K-1) r and CE* = -log(1 - (K-1) r), lambda_W != lambda_H."""
    cc = math.sqrt(lw / (n * lh))

    def f(x):
        return math.log1p((K - 1) * math.exp(-K * cc * x / (K - 1))) + K * lw * x

    x, _ = _mode_min(f, 200.0)
    d = ufm.derive_ce()
    at = {S.K: K, S.n: n, S.lam_w: lw, S.lam_h: lh}
    assert _num(d["w_row2_lambda"], at) == pytest.approx(x, rel=1e-7)
    assert _num(d["h2_lambda"], at) == pytest.approx(lw / (n * lh) * x, rel=1e-7)
    lam = math.sqrt(lw * lh)
    sig = _num(d["sigma_star"], {S.K: K, S.n: n, S.Lam: lam})
    assert _num(d["w_row2"], {**at, S.sigma: sig}) == pytest.approx(x, rel=1e-7)
    assert _num(d["h2"], {**at, S.sigma: sig}) == pytest.approx(lw / (n * lh) * x, rel=1e-7)
    m = _num(d["margin_star"], {S.K: K, S.n: n, S.Lam: lam})
    assert m == pytest.approx(K * cc * x / (K - 1), rel=1e-7)
    r = math.sqrt(n * lw * lh)
    assert _num(d["prob_star"], {S.K: K, S.n: n, S.Lam: lam}) == pytest.approx(
        1 - (K - 1) * r, rel=1e-14)
    assert _num(d["ce_star"], {S.K: K, S.n: n, S.Lam: lam}) == pytest.approx(
        -math.log(1 - (K - 1) * r), rel=1e-13)


# ------------------------------------------------------------------ modes: MSE
def test_two_factor_mse_threshold_scales_with_the_data_weight():
    """M = 2, c = 1.6: Lambda = 1.2/(K sqrt n) is above the c = 1 threshold but below
    c/(K sqrt n), so the mode is alive at sqrt n - K n Lambda / c, with g(0) = c/(2K)."""
    K, n, c = 4, 5, 1.6
    lam = 1.2 / (K * math.sqrt(n))
    sol = modes.mse_mode(_f(K), _f(n), _f(lam), 2, _f(c))
    want = math.sqrt(n) - K * n * lam / c
    assert want > 0
    assert float(sol.sigma) == pytest.approx(want, rel=1e-13)
    assert float(sol.sigma_local) == pytest.approx(want, rel=1e-13)
    assert bool(sol.collapsed)
    assert float(sol.objective_zero) == pytest.approx(c / (2 * K), rel=1e-15)
    g = c / (2 * K * n) * (want - math.sqrt(n)) ** 2 + lam * want
    assert float(sol.objective) == pytest.approx(g, rel=1e-13)


@pytest.mark.parametrize(("K", "n", "M", "c", "frac"),
                         [(4, 5, 3, 0.6, 0.5), (3, 4, 4, 1.7, 0.8), (2, 9, 3, 2.5, 0.3),
                          (4, 5, 3, 1.0, 1.3), (5, 2, 2, 0.4, 0.7)])
def test_mse_mode_is_the_brute_force_global_minimiser(K, n, M, c, frac):
    """mse_mode's sigma and g(sigma), g(0) equal scipy's global minimum of c/(2N)(sigma -
    sqrt n)^2 + (M/2) Lambda sigma^(2/M) (Lambda a fraction of the threshold for this c)."""
    N, s = K * n, math.sqrt(n)
    if M == 2:
        lam = frac * c / (K * s)
    else:
        lam = frac * c * (s * (M - 2) / (M - 1)) ** (2 * (M - 1) / M) / ((M - 2) * N)

    def g(x):
        return c / (2 * N) * (x - s) ** 2 + M / 2 * lam * x ** (2 / M)

    sig, val = _mode_min(g, 2 * s)
    sol = modes.mse_mode(_f(K), _f(n), _f(lam), M, _f(c))
    assert float(sol.sigma) == pytest.approx(sig, rel=1e-7, abs=1e-12)
    assert float(sol.objective) == pytest.approx(val, rel=1e-10)
    assert float(sol.objective_zero) == pytest.approx(g(0.0), rel=1e-15)
    assert bool(sol.collapsed) is (frac < 1)
    assert float(modes.mse_objective(_f(sig), K, n, lam, M, c)) == pytest.approx(g(sig),
                                                                                 rel=1e-14)


@pytest.mark.parametrize("M", [3, 4, 5])
@pytest.mark.parametrize("lam", [0.0, 1e-300])
def test_deep_mse_mode_at_zero_decay_is_sqrt_n(M, lam):
    """M >= 3 with Lambda = 0 (or denormal-small): sigma = sqrt n (exactly at 0), collapsed,
    objective 0 at Lambda = 0."""
    n = 7.0
    sol = modes.mse_mode(_f(3), _f(n), _f(lam), M, _f(0.8))
    if lam == 0.0:
        assert float(sol.sigma) == math.sqrt(n)
        assert float(sol.objective) == 0.0
    else:
        assert float(sol.sigma) == pytest.approx(math.sqrt(n), rel=1e-13)
    assert bool(sol.collapsed)


# ------------------------------------------------------------------ modes: CE
@pytest.mark.parametrize(("K", "n", "M", "frac"), [(4, 5, 2, 0.5), (3, 2, 3, 0.5), (5, 3, 4, 0.3)])
def test_ce_ray_is_the_brute_force_global_minimiser(K, n, M, frac):
    """ce_ray's sigma, g(sigma) and g(0) = log K against scipy's minimum of
    log(1 + (K-1) e^(-sigma/sqrt n)) + (K-1)(M/2) Lambda sigma^(2/M)."""
    s = math.sqrt(n)
    lam = frac * float(critical.Lambda_crit("ce", _f(K), _f(n), M - 1))

    def g(x):
        return math.log1p((K - 1) * math.exp(-x / s)) + (K - 1) * M / 2 * lam * x ** (2 / M)

    sig, val = _mode_min(g, 60 * s)
    sol = modes.ce_ray(_f(K), _f(n), _f(lam), M)
    assert sig > 0
    assert float(sol.sigma) == pytest.approx(sig, rel=1e-6)
    assert float(sol.objective) == pytest.approx(val, rel=1e-10)
    assert float(sol.objective_zero) == pytest.approx(math.log(K), rel=1e-15)
    assert float(modes.ce_objective(_f(sig), K, n, lam, M)) == pytest.approx(g(sig), rel=1e-14)


@pytest.mark.parametrize("M", [2, 3, 4])
def test_ce_ray_objective_at_zero_decay_is_zero(M):
    """Lambda = 0: sigma = inf and the reported objective is its limit 0 (not NaN, not log K)."""
    sol = modes.ce_ray(_f(4), _f(5), _f(0.0), M)
    assert math.isinf(float(sol.sigma))
    assert float(sol.objective) == 0.0
    assert float(sol.objective_zero) == pytest.approx(math.log(4), rel=1e-15)


@pytest.mark.parametrize("M", [3, 4])
def test_deep_ce_just_below_lambda_crit_is_collapsed(M):
    """Deep CE at (1 - 1e-10) Lambda_crit: the objective gap is ~1e-10 relative, far above the
    tie window CE_TIE, so the collapsed state wins; at Lambda_crit itself the origin wins."""
    K, n = 4, 5
    lam_c = float(critical.Lambda_crit("ce", _f(K), _f(n), M - 1))
    below = modes.ce_ray(_f(K), _f(n), _f(lam_c * (1 - 1e-10)), M)
    assert bool(below.collapsed)
    gap = (float(below.objective_zero) - float(below.objective)) / math.log(K)
    assert 1e-12 < gap < 1e-8
    at = modes.ce_ray(_f(K), _f(n), _f(lam_c), M)
    assert not bool(at.collapsed) and float(at.sigma) == 0.0


def test_ce_psi_max_against_scipy():
    """ce_psi_max: sigma_m maximises psi = sigma^(1-2/M) e^(-m)/(sqrt n (1 + (K-1) e^(-m))),
    m = sigma/sqrt n, and Lambda_stat is psi there (scipy's bounded maximisation)."""
    for K, n, M in [(4, 5, 3), (10, 2, 5), (2, 7, 4)]:
        s = math.sqrt(n)

        def psi(x, K=K, M=M, s=s):
            return x ** (1 - 2 / M) * math.exp(-x / s) / (s * (1 + (K - 1) * math.exp(-x / s)))

        res = scipy.optimize.minimize_scalar(lambda x, p=psi: -p(x), bounds=(1e-9, 20 * s),
                                             method="bounded", options={"xatol": 1e-12})
        sig_m, lam_stat = modes.ce_psi_max(_f(K), _f(n), M)
        assert float(sig_m) == pytest.approx(res.x, rel=1e-5)
        assert float(lam_stat) == pytest.approx(-res.fun, rel=1e-12)


@pytest.mark.parametrize(("K", "n", "M"), [(1000, 5, 3), (500, 3, 4)])
def test_deep_ce_tie_window_is_relative_to_log_k(K, n, M):
    """The CE tie is a gap of at most CE_TIE * ln K (relative, not absolute): with K = 1000 a
    gap of CE_TIE/2 relative (3.5e-13 absolute, above CE_TIE) is still a tie (origin wins),
    a gap of 2 CE_TIE relative is collapsed."""
    lam_c = float(critical.Lambda_crit("ce", _f(K), _f(n), M - 1))
    sig_c = float(modes.ce_ray(_f(K), _f(n), _f(lam_c), M).sigma_local)
    slope = (K - 1) * M / 2 * sig_c ** (2 / M)  # d(g0 - g_local)/d(-Lambda) at Lambda_crit
    g0 = math.log(K)
    for mult, collapsed in [(0.5, False), (2.0, True)]:
        lam = lam_c - mult * modes.CE_TIE * g0 / slope
        sol = modes.ce_ray(_f(K), _f(n), _f(lam), M)
        gap = g0 - float(modes.ce_objective(sol.sigma_local, K, n, lam, M))
        assert mult * 0.9 < gap / (modes.CE_TIE * g0) < mult * 1.1
        assert gap > 2 * modes.CE_TIE  # absolute gap above the relative window's unit
        assert bool(sol.collapsed) is collapsed
        assert (float(sol.sigma) > 0) is collapsed


@pytest.mark.parametrize("M", [2, 3, 4])
def test_ce_ray_with_a_negative_decay_is_the_unbounded_ray_at_every_depth(M):
    """Lambda < 0 takes the Lambda <= 0 branch at every depth (M = 2 too): sigma and
    sigma_local are inf and the mode collapsed, never NaN from the closed form's log."""
    with np.errstate(all="ignore"):
        sol = modes.ce_ray(_f(4), _f(5), _f(-0.01), M)
    assert math.isinf(float(sol.sigma)) and math.isinf(float(sol.sigma_local))
    assert bool(sol.collapsed)
