"""Adversarial scan of ncsim.theory.dynamics: growth rate at the origin, NC1 rates, the
logistic rise (z(t), its integral, its half time) and the escape times, over wide parameter
ranges (K 2 .. 1000, n 1 .. 1e5, decays 0, 1e-300, one ulp either side of lambda_crit, up to
1e307, z0 / a0 from 1e-307 to 1e305, depth 1 .. 6).

Invariants checked (references written here: mpmath at 50 digits of the closed forms of
reference/theory.md 1.2 / 4.2, scipy solve_ivp (DOP853, rtol 1e-12) of the scalar mode ODE
dw/dt = (s - w^2) w / N - lambda w of the module docstring, z = w^2):

- growth_rate (one layer) against mu = -(lW + lH)/2 + sqrt(((lW - lH)/2)^2 + 1/(K^2 n)) at
  50 digits: relative error <= 8 eps (1 + kappa), kappa = (|lW dmu/dlW| + |lH dmu/dlH|) / |mu|
  the condition number in the decays (absolute 1e-300 where |mu| is subnormal); no
  RuntimeWarning; torch float64 equals numpy; array = elementwise scalar calls.
- nc1_rates: early rate 2(lH + mu) to 8 eps (1 + kappa) and late 2 lH exactly; scalars in,
  scalars out (as growth_rate).
- logistic against DOP853 of the mode ODE (rtol 1e-9) and the closed form at 50 digits
  (8 eps (1 + |2 r t|) relative); logistic_integral at 50 digits; half times sign-consistent
  with growth_rate at -1, 0, +1 ulp of lambda_crit over 220 (K, n), and z(t_1/2) = z_inf / 2.
- escape_time (quadrature) against mpmath of theory.md 4.2's integral from a0 = 1e-300 ..
  1e-12, depth 1 .. 6, to 1e-12; escape_time_asymptotic against N a0^(2-M) / ((M-2) s).
- bad inputs: InputError naming the argument (t, c, K of escape_time).

Fixed findings (each test marked "finding" failed before the fix):

1. growth_rate, one layer: decays above ~1e154 overflowed in 2 (g - Lambda)(g + Lambda):
   -inf (K=4, n=5, lW = lH = 1e200; mu = -1e200), NaN at 1e308, with a RuntimeWarning; and
   nc1_rates' late rate 2 lH + 0 mu was then NaN.
2. nc1_rates returned the early rate as a 0-d ndarray for scalar inputs (late: a scalar).
3. logistic_half_time used z_inf = sqrt(n) - K lambda n, which rounds to the other side of
   0 than r = 1/(K sqrt n) - lambda near lambda_crit: K=2, n=3, one ulp below: NaN although
   the mode rises (logistic -> N r = 3.3e-16); K=2, n=2 at lambda_crit: inf (r = 0 but
   z_inf = 2.2e-16). 366 of 1947 (K, n, ulp) points disagreed. Now z_inf = N r.
4. logistic_half_time overflowed in z_inf / z0 for z0 < ~1e-306 (K=1000, n=1e5, z0=1e-307:
   RuntimeWarning and inf for 1.127e8).
5. logistic with z0 > 1: z0 N overflowed (z0 = 1e305, t = 0: inf) and 2 z0 t did (z0 =
   1e300, t = 1e10, K=4, n=5, lambda=0: 0.0 for sqrt(5)).
6. logistic_integral: 2 z0 t overflowed (z0 = 1e300, t = 1e10, lambda = 0.01: inf for
   2.036e10) and 2 t at t = 1e308 (lambda = 0.2: inf for 4.491).
7. logistic / logistic_integral accepted t = NaN (NaN), t < 0 and gave NaN at t = inf.
8. escape_time with a tiny init: a^(M-1) underflowed (a0 = 1e-300, depth 2: inf for
   8.944e300) and quad failed (a0 = 1e-160: IntegrationWarning, 1e-100 likewise).
9. escape_time with an array K: TypeError, not InputError.
10. aligned_fate accepted the MSE scale c = -1 and NaN ("origin").
"""

from __future__ import annotations

import math
import warnings

import mpmath as mp
import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from ncsim.errors import InputError
from ncsim.theory import dynamics
from ncsim.theory.critical import lambda_crit

EPS = np.finfo(float).eps
mp.mp.dps = 50


def _mu(K, n, lw, lh):
    """(mu, kappa) at 50 digits; kappa the condition number of mu in the decays."""
    K, n, lw, lh = (mp.mpf(v) for v in (K, n, lw, lh))
    root = mp.sqrt(((lw - lh) / 2) ** 2 + 1 / (K * K * n))
    mu = (1 / (K * K * n) - lw * lh) / ((lw + lh) / 2 + root)  # = -(lW + lH)/2 + root
    d_lw = -mp.mpf(1) / 2 + (lw - lh) / (4 * root)
    d_lh = -mp.mpf(1) / 2 - (lw - lh) / (4 * root)
    return mu, (abs(lw * d_lw) + abs(lh * d_lh)) / abs(mu) if mu else mp.inf


def _early(K, n, lw, lh):
    """(2 (lH + mu), kappa) at 50 digits: lH - lW + R, R = sqrt((lW - lH)^2 + 4 g^2), written
    4 g^2 / (lW - lH + R) for lW > lH (no cancellation in the reference either)."""
    K, n, lw, lh = (mp.mpf(v) for v in (K, n, lw, lh))
    g2 = 1 / (K * K * n)
    R = mp.sqrt((lw - lh) ** 2 + 4 * g2)
    e = 4 * g2 / (lw - lh + R) if lw > lh else lh - lw + R
    d = 1 - (lw - lh) / R  # de/dlH = -de/dlW
    return e, (lw + lh) * abs(d) / e


def _check_rel(got, want, kappa, C=8.0):
    want = float(want)
    if abs(want) < 1e-300:
        assert abs(float(got) - want) <= 1e-300
        return
    assert abs(float(got) / want - 1) <= C * EPS * (1 + float(kappa)), (got, want, kappa)


DECAYS = [0.0, 1e-300, 1e-8, 0.01, 0.3, 2.0, 1e10, 1e160, 1e200, 1e307]
KN = [(2, 1), (4, 5), (10, 1000), (1000, 100000)]


# --- findings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("K,n", KN)
def test_finding_growth_and_nc1_rates_at_huge_decays_against_mpmath(K, n):
    """Finding 1: every (lW, lH) pair of DECAYS (up to 1e307), without a warning."""
    for lw in DECAYS:
        for lh in DECAYS:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                mu = dynamics.growth_rate(K, n, lw, lh)
                early, late = dynamics.nc1_rates(K, n, lw, lh)
            want, kappa = _mu(K, n, lw, lh)
            _check_rel(mu, want, kappa)
            assert float(late) == 2 * lh
            _check_rel(early, *_early(K, n, lw, lh))


def test_finding_growth_rate_huge_decays_arrays_and_torch():
    """Finding 1, vectorised and in torch: one call equals the scalar calls."""
    lw = np.array(DECAYS)[:, None] * np.ones(len(DECAYS))
    lh = lw.T.copy()
    got = dynamics.growth_rate(4, 5, lw, lh)
    want = np.array([[float(dynamics.growth_rate(4, 5, a, b)) for a, b in zip(ra, rb)]
                     for ra, rb in zip(lw, lh)])
    assert np.array_equal(got, want)
    t = dynamics.growth_rate(torch.tensor(4.0, dtype=torch.float64), 5, torch.tensor(lw), lh)
    assert np.array_equal(t.numpy(), want)
    assert float(dynamics.growth_rate(4, 5, 1e200, 1e200)) == -1e200


def test_finding_nc1_rates_of_scalars_are_scalars():
    """Finding 2."""
    early, late = dynamics.nc1_rates(4, 5, 0.01, 0.02)
    assert not isinstance(early, np.ndarray) and not isinstance(late, np.ndarray)
    assert np.shape(dynamics.nc1_rates(4, 5, [0.01, 0.02], 0.02)[0]) == (2,)


def _half_grid():
    for K in (2, 3, 4, 7, 10, 31, 50, 100, 500, 1000):
        for n in (1, 2, 3, 5, 7, 10, 17, 100, 1000, 12345, 100000):
            lc = float(lambda_crit("mse", "none", K, n))
            for lam in (np.nextafter(lc, 0), lc, np.nextafter(lc, 1)):
                yield K, n, float(lam)


def test_finding_half_time_agrees_with_the_growth_rate_near_lambda_crit():
    """Finding 3: at -1, 0, +1 ulp of lambda_crit a tiny mode (z0 = 1e-40) has a finite half
    time iff growth_rate > 0, and logistic(t_1/2) is half its limit logistic(1e300)."""
    for K, n, lam in _half_grid():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            half = float(dynamics.logistic_half_time(1e-40, K, n, lam))
        rises = float(dynamics.growth_rate(K, n, lam, lam)) > 0
        assert math.isfinite(half) == rises, (K, n, lam, half)
        if rises:
            limit = float(dynamics.logistic(1e300, 1e-40, K, n, lam))
            mid = float(dynamics.logistic(half, 1e-40, K, n, lam))
            assert abs(mid / (limit / 2) - 1) < 1e-6, (K, n, lam)


@pytest.mark.parametrize("z0,K,n,lam", [(1e-307, 1000, 100000, 0.0), (3e-308, 4, 5, 0.01),
                                        (1e-300, 2, 1, 0.1), (1e-20, 4, 5, 0.0)])
def test_finding_half_time_of_a_tiny_init_against_mpmath(z0, K, n, lam):
    """Finding 4: t_1/2 = ln(z_inf / z0 - 1) / (2r) to 8 eps (condition ~1), no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = float(dynamics.logistic_half_time(z0, K, n, lam))
    r = 1 / (mp.mpf(K) * mp.sqrt(n)) - mp.mpf(lam)
    want = mp.log(K * n * r / mp.mpf(z0) - 1) / (2 * r)
    kappa = 1 + mp.mpf(lam) / r  # through r
    _check_rel(got, want, kappa)


def _z_ref(t, z0, K, n, lam):
    t, z0, K, n, lam = (mp.mpf(v) for v in (t, z0, K, n, lam))
    r, N = 1 / (K * mp.sqrt(n)) - lam, K * n
    if r == 0:
        return z0 / (1 + 2 * z0 * t / N)
    return z0 * N / (N * mp.exp(-2 * r * t) - z0 * mp.expm1(-2 * r * t) / r)


def _int_ref(t, z0, K, n, lam):
    t, z0, K, n, lam = (mp.mpf(v) for v in (t, z0, K, n, lam))
    r, N = 1 / (K * mp.sqrt(n)) - lam, K * n
    x = 2 * r * t
    rel = mp.expm1(x) / x if x else mp.mpf(1)
    return N / 2 * mp.log1p(2 * z0 * t * rel / N)


def _kappa_x(t, K, n, lam):
    r = 1 / (mp.mpf(K) * mp.sqrt(n)) - mp.mpf(lam)
    return 1 + abs(2 * r * mp.mpf(t)) * (1 + mp.mpf(lam) / abs(r) if r else 1)


LARGE_Z0 = [(0.0, 1e305, 1000, 100000, 0.0), (1e10, 1e300, 4, 5, 0.0),
            (1.0, 1e300, 4, 5, 0.0), (3.0, 5.0, 4, 5, 0.5), (1e4, 1e300, 4, 5, 0.01),
            (1e-298, 1e300, 4, 5, 1e300), (0.5, 1e200, 2, 1, 2.0), (7.0, 12.0, 10, 1000, 0.0)]


@pytest.mark.parametrize("t,z0,K,n,lam", LARGE_Z0)
def test_finding_logistic_of_a_large_init_against_mpmath(t, z0, K, n, lam):
    """Finding 5: relative error <= 8 eps (1 + kappa), kappa = |2rt| (1 + lambda / |r|) the
    condition in t and lambda; no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = dynamics.logistic(t, z0, K, n, lam)
    _check_rel(got, _z_ref(t, z0, K, n, lam), _kappa_x(t, K, n, lam))


@pytest.mark.parametrize("t,z0,K,n,lam", [*LARGE_Z0, (1e308, 1.0, 4, 5, 0.2),
                                          (1e10, 1e300, 4, 5, 0.01)])
def test_finding_logistic_integral_of_large_arguments_against_mpmath(t, z0, K, n, lam):
    """Finding 6 (same bound)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = dynamics.logistic_integral(t, z0, K, n, lam)
    _check_rel(got, _int_ref(t, z0, K, n, lam), _kappa_x(t, K, n, lam))


@pytest.mark.parametrize("fn", [dynamics.logistic, dynamics.logistic_integral])
@pytest.mark.parametrize("t", [math.nan, -1.0, math.inf, [1.0, math.nan]])
def test_finding_logistic_refuses_a_bad_time(fn, t):
    """Finding 7."""
    with pytest.raises(InputError, match="the time t"):
        fn(t, 0.1, 4, 5, 0.01)


def _escape_ref(K, n, a0, a_end, depth):
    """theory.md 4.2: t = N/M int u^(2/M - 2) / (s - u) du, lambda = 0, in v = ln u."""
    M, s, N = depth + 1, mp.sqrt(n), mp.mpf(K * n)
    v0, v1 = M * mp.log(a0), M * mp.log(a_end)
    return N / M * mp.quad(lambda v: mp.e ** (v * (mp.mpf(2) / M - 1)) / (s - mp.e ** v),
                           mp.linspace(v0, v1, 40))


@pytest.mark.parametrize("K,n,a0,depth", [
    (4, 5, 1e-300, 2), (4, 5, 1e-160, 2), (4, 5, 1e-100, 2), (4, 5, 1e-60, 5),
    (1000, 100000, 1e-100, 3), (2, 1, 1e-12, 5), (4, 5, 1e-300, 1), (10, 1000, 1e-50, 6)])
def test_finding_escape_time_of_a_tiny_init_against_mpmath(K, n, a0, depth):
    """Finding 8: to 1e-12 relative (quad's tolerance), no warning; and within 1e-6 of the
    small-init asymptote for depth >= 2."""
    a_end = (math.sqrt(n) / 2) ** (1 / (depth + 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = dynamics.escape_time(K, n, a0, a_end, depth)
    assert abs(got / float(_escape_ref(K, n, a0, a_end, depth)) - 1) < 1e-12
    if depth >= 2 and a0 < 1e-40:
        assert abs(got / float(dynamics.escape_time_asymptotic(K, n, a0, depth)) - 1) < 1e-6


def test_escape_time_of_a_tiny_init_with_decay_is_trapped_and_ce_escapes():
    """With lambda > 0 a tiny deep init falls back (inf); CE without decay escapes like MSE
    at small a (drive 1 / (s K) = 1 / (s (1 + K - 1)) at u = 0 vs s / N = 1 / (K s))."""
    assert dynamics.escape_time(4, 5, 1e-300, 1.0, 2, 1e-3) == math.inf
    ce = dynamics.escape_time(4, 5, 1e-300, 1.0, 2, 0.0, "ce")
    assert abs(ce / float(dynamics.escape_time_asymptotic(4, 5, 1e-300, 2)) - 1) < 1e-12


@pytest.mark.parametrize("name,args", [("K", (np.array([4, 5]), 5)), ("n", (4, [5, 6]))])
def test_finding_escape_time_refuses_arrays(name, args):
    """Finding 9."""
    with pytest.raises(InputError, match=f"{name} must be a single number"):
        dynamics.escape_time(*args, 0.1, 1.0, 2)


@pytest.mark.parametrize("c", [-1.0, 0.0, math.nan, math.inf])
def test_finding_aligned_fate_refuses_a_bad_scale(c):
    """Finding 10."""
    with pytest.raises(InputError, match="the MSE scale c"):
        dynamics.aligned_fate("mse", 4, 5, 0.1, (0.01, 0.01, 0.01), c=c)


# --- invariants that held ---------------------------------------------------------------------


@pytest.mark.parametrize("K,n,lam,z0,T", [
    (4, 5, 0.01, 1e-3, 300.0), (2, 1, 0.0, 1e-6, 60.0), (10, 1000, 1e-5, 0.5, 2e5),
    (4, 5, 0.2, 1e-3, 100.0), (3, 7, 0.0, 50.0, 30.0), (4, 5, 1e-300, 1e-12, 900.0)])
def test_logistic_against_dop853_of_the_mode_ode(K, n, lam, z0, T):
    """z = w^2 with dw/dt = (s - w^2) w / N - lambda w (module docstring, w = h)."""
    s, N = math.sqrt(n), K * n
    ts = np.linspace(0.0, T, 25)
    sol = solve_ivp(lambda t, w: (s - w * w) * w / N - lam * w, (0.0, T), [math.sqrt(z0)],
                    method="DOP853", rtol=1e-12, atol=1e-300, t_eval=ts)
    np.testing.assert_allclose(dynamics.logistic(ts, z0, K, n, lam), sol.y[0] ** 2,
                               rtol=1e-9)


@pytest.mark.parametrize("K,n", KN)
def test_logistic_and_integral_against_mpmath_over_a_grid(K, n):
    lc = float(lambda_crit("mse", "none", K, n))
    for lam in (0.0, 1e-300, 0.5 * lc, float(np.nextafter(lc, 0)), lc, 2 * lc):
        for z0 in (1e-300, 1e-12, 0.1, 3.0):
            for t in (0.0, 1.0, 1e3, 1e6):
                k = _kappa_x(t, K, n, lam)
                _check_rel(dynamics.logistic(t, z0, K, n, lam), _z_ref(t, z0, K, n, lam), k)
                _check_rel(dynamics.logistic_integral(t, z0, K, n, lam),
                           _int_ref(t, z0, K, n, lam), k)


def test_torch_and_numpy_agree_and_broadcast():
    z0 = np.array([1e-300, 1e-3, 0.5, 3.0, 1e300])[:, None]
    t = np.array([0.0, 1.0, 50.0, 1e8])
    for fn in (dynamics.logistic, dynamics.logistic_integral):
        a = fn(t, z0, 4, 5, 0.01)
        b = fn(torch.tensor(t), torch.tensor(z0), 4, 5, 0.01).numpy()
        assert a.shape == (5, 4) and np.array_equal(a, b)
        assert a[2, 1] == fn(1.0, 0.5, 4, 5, 0.01)
    h = dynamics.logistic_half_time(z0[:, 0], 4, 5, 0.01)
    assert np.array_equal(h, dynamics.logistic_half_time(torch.tensor(z0[:, 0]), 4, 5,
                                                         0.01).numpy(), equal_nan=True)
    e = dynamics.escape_time_asymptotic(np.array([4, 10]), 5, [[1e-3], [0.1]], 3)
    assert e.shape == (2, 2) and e[1, 0] == dynamics.escape_time_asymptotic(4, 5, 0.1, 3)


@pytest.mark.parametrize("depth", [2, 3, 4, 5, 6])
def test_escape_time_asymptotic_is_the_theory_md_form(depth):
    M = depth + 1
    for K, n in KN:
        for a0 in (1e-30, 1e-3, 0.5, 10.0):
            want = mp.mpf(K * n) * mp.mpf(a0) ** (2 - M) / ((M - 2) * mp.sqrt(n))
            _check_rel(dynamics.escape_time_asymptotic(K, n, a0, depth), want, M - 2)
