"""Precision of the compiled closed forms at edge parameters, against mpmath at 50 digits.

Tiny decays (roots of the size of the decay), large times (overflow of e^(2rt)), the critical
decay (r = 0) and just below it, strongly unequal decays (cancellation in the growth rate).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mpmath as mp
import numpy as np
import pytest
import sympy as sp

from ncsim.theory import (
    basin_threshold,
    derivations,
    growth_rate,
    lambda_crit,
    logistic,
    logistic_integral,
    nc1_rates,
)
from ncsim.theory import symbols as S
from ncsim.theory._backend import bisect
from ncsim.theory.dynamics import ROOT

pytestmark = pytest.mark.mpmath_digits(50)


def rel(got: float, want: mp.mpf) -> float:
    return float(abs((mp.mpf(float(got)) - want) / want))


# ---------------------------------------------------------------------------------------------
# basin root a_u at tiny decays: a^(M-2) (s - a^M) / N = lam (MSE) and
# a^(M-2) / (s (e^(a^M / s) + K - 1)) = lam (CE); for a tiny lam, a^M / s is below 1e-100, so
# the roots are (N lam / s)^(1/(M-2)) and (lam s K)^(1/(M-2)) to every digit of a double


@pytest.mark.parametrize("lam", [1e-50, 1e-100, 1e-200])
@pytest.mark.parametrize("depth", [2, 3, 4])
@pytest.mark.parametrize("K,n", [(2, 1), (4, 5), (100, 1000)])
def test_basin_threshold_at_a_tiny_decay(lam, depth, K, n):
    M = depth + 1
    s, N = mp.sqrt(n), mp.mpf(K * n)
    want_mse = (N * mp.mpf(lam) / s) ** (mp.mpf(1) / (M - 2))
    want_ce = (mp.mpf(lam) * s * K) ** (mp.mpf(1) / (M - 2))
    assert rel(basin_threshold("mse", K, n, lam, depth), want_mse) < 1e-14
    assert rel(basin_threshold("ce", K, n, lam, depth), want_ce) < 1e-14


@pytest.mark.parametrize("lam", [1e-20, 1e-8, 1e-3])
def test_basin_threshold_ce_depth_2_against_mpmath(lam):
    """CE, K = 4, n = 5, L = 2: the lower root of psi(sigma) = lam by mpmath's bisection."""
    K, n, M = 4, 5, 3
    s = mp.sqrt(n)

    def psi_minus(a: mp.mpf) -> mp.mpf:
        return a ** (M - 2) / (s * (mp.exp(a ** M / s) + K - 1)) - lam

    lo = (mp.mpf(lam) * s * K) ** (mp.mpf(1) / (M - 2))
    want = mp.findroot(psi_minus, (lo, 2 * lo), solver="bisect")
    assert rel(basin_threshold("ce", K, n, lam, 2), want) < 1e-14


def test_bisect_sign_test_does_not_underflow():
    """f = 1e-200 (x - 0.3): f(lo) f(mid) underflows to 0, which must not count as a sign
    change."""
    root = bisect(lambda x: 1e-200 * (x - 0.3), np.array(0.0), np.array(1.0))
    assert abs(float(root) - 0.3) < 1e-15


# ---------------------------------------------------------------------------------------------
# logistic mode z(t), dz/dt = (2/N) z (s - N lam - z): reference z0 z_inf e^(2rt) /
# (z0 (e^(2rt) - 1) + z_inf) in mpmath, r = 1/(K sqrt n) - lam, z_inf = sqrt(n) - K lam n;
# at r = 0 the solution is z0 / (1 + 2 z0 t / N)


def z_ref(t, z0, K, n, lam):
    t, z0, K, n, lam = map(mp.mpf, (t, z0, K, n, lam))
    r, zi = 1 / (K * mp.sqrt(n)) - lam, mp.sqrt(n) - K * lam * n
    if r == 0:
        return z0 / (1 + 2 * z0 * t / (K * n))
    return z0 * zi * mp.exp(2 * r * t) / (z0 * mp.expm1(2 * r * t) + zi)


def z_int_ref(t, z0, K, n, lam):
    """int_0^t z: (z_inf / 2r) log(1 + z0 (e^(2rt) - 1) / z_inf), (N/2) log(1 + 2 z0 t / N) at
    r = 0 (checked against quadrature in test_logistic_integral_reference)."""
    t, z0, K, n, lam = map(mp.mpf, (t, z0, K, n, lam))
    r, zi = 1 / (K * mp.sqrt(n)) - lam, mp.sqrt(n) - K * lam * n
    if r == 0:
        return K * n / 2 * mp.log1p(2 * z0 * t / (K * n))
    return zi / (2 * r) * mp.log1p(z0 * mp.expm1(2 * r * t) / zi)


@pytest.mark.parametrize("t,z0,K,n,lam", [(10.0, 1e-3, 4, 5, 0.11180339887498),
                                           (10.0, 1e-3, 4, 5, 0.2), (30.0, 0.5, 2, 1, 0.01)])
def test_logistic_integral_reference(t, z0, K, n, lam):
    quad = mp.quad(lambda u: z_ref(u, z0, K, n, lam), [0, t])
    assert rel(z_int_ref(t, z0, K, n, lam), quad) < 1e-15


@pytest.mark.parametrize("t,z0,K,n,lam", [
    (3000.0, 1e-3, 2, 1, 0.01),           # 2 r t = 2940: e^(2rt) overflows
    (1e5, 1.0, 4, 5, 0.01),
    (10.0, 1e-3, 4, 5, 0.11180339887498),  # r = 9.5e-15 (just below the critical decay)
    (10.0, 1e-3, 4, 5, 0.2),               # above it
    (10.0, 1e-3, 4, 5, 0.01),
])
def test_logistic_against_mpmath(t, z0, K, n, lam):
    assert rel(logistic(t, z0, K, n, lam), z_ref(t, z0, K, n, lam)) < 1e-14
    assert rel(logistic_integral(t, z0, K, n, lam), z_int_ref(t, z0, K, n, lam)) < 1e-14


def test_logistic_at_the_critical_decay():
    """lambda = lambda_crit: r = 0 and z_inf = 0; z = z0 / (1 + 2 z0 t / N) and its integral
    (N/2) log(1 + 2 z0 t / N), not 0/0."""
    K, n, z0, t = 4, 5, 1e-3, 5.0
    lam = float(lambda_crit("mse", "none", K, n))
    N = K * n
    np.testing.assert_allclose(logistic(t, z0, K, n, lam), z0 / (1 + 2 * z0 * t / N),
                               rtol=1e-15)
    np.testing.assert_allclose(logistic_integral(t, z0, K, n, lam),
                               N / 2 * np.log1p(2 * z0 * t / N), rtol=1e-15)


def test_logistic_is_finite_for_every_time():
    t = np.array([0.0, 1.0, 1e3, 1e6, 1e12])
    for lam in (0.01, 0.11180339887498948, 0.2):
        z = logistic(t, 1e-3, 4, 5, lam)
        assert np.all(np.isfinite(z)) and z[0] == 1e-3
        assert np.all(np.isfinite(logistic_integral(t, 1e-3, 4, 5, lam)))
    np.testing.assert_allclose(logistic(1e12, 1e-3, 4, 5, 0.01), np.sqrt(5) - 4 * 0.01 * 5,
                               rtol=1e-15)


# ---------------------------------------------------------------------------------------------
# growth rate mu = -(lW + lH)/2 + sqrt(((lW - lH)/2)^2 + 1/(K^2 n)) and the early NC1 rate
# 2(lH + mu), with lW >> lH (mu ~ g^2 / lW)

@pytest.mark.parametrize("K,n,lw,lh", [
    (100, 10000, 1.0, 1e-6), (3, 2, 1e3, 1e-3), (10, 1000, 0.1, 0.0), (4, 5, 0.01, 0.02),
    (2, 1, 0.5, 0.0), (1000, 5000, 5e-4, 0.0)])
def test_growth_and_early_nc1_rate_against_mpmath(K, n, lw, lh):
    K_, n_, lw_, lh_ = map(mp.mpf, (K, n, lw, lh))
    mu = -(lw_ + lh_) / 2 + mp.sqrt(((lw_ - lh_) / 2) ** 2 + 1 / (K_ ** 2 * n_))
    assert rel(growth_rate(K, n, lw, lh), mu) < 1e-14
    early, late = nc1_rates(K, n, lw, lh)
    assert rel(early, 2 * (lh_ + mu)) < 1e-14 and float(late) == 2 * lh


def test_growth_rate_is_zero_at_lambda_crit():
    """Equal decays set to lambda_crit: mu is 0 exactly, as the threshold test (not collapsed
    there) says; just below it mu > 0, just above mu < 0."""
    K, n = np.meshgrid(np.arange(2, 31), np.arange(1, 61))
    K, n = K.ravel() * 1.0, n.ravel() * 1.0
    lc = lambda_crit("mse", "none", K, n)
    assert np.all(growth_rate(K, n, lc, lc) == 0)
    assert np.all(growth_rate(K, n, lc * (1 - 1e-12), lc * (1 - 1e-12)) > 0)
    assert np.all(growth_rate(K, n, lc * (1 + 1e-12), lc * (1 + 1e-12)) < 0)


def test_derive_prints_the_forms_the_numbers_come_from():
    """The expressions ``ncsim theory derive`` prints for one layer, evaluated in sympy at
    50 digits, give the numbers of growth_rate, nc1_rates and logistic."""
    ex = derivations("mse", 1)
    K, n, lw, lh, t, z0 = 4, 5, 0.013, 0.021, 7.0, 0.01
    at = {S.K: K, S.n: n, S.lam_w: sp.Float(lw, 30), S.lam_h: sp.Float(lh, 30)}
    at[S.Lam] = sp.sqrt(at[S.lam_w] * at[S.lam_h])
    at[ROOT] = sp.sqrt((at[S.lam_w] - at[S.lam_h]) ** 2 + sp.Rational(4, K * K * n))
    for key in ("growth_rate", "growth_rate_evaluated"):
        assert rel(growth_rate(K, n, lw, lh), mp.mpf(str(ex[key].subs(at).evalf(50)))) < 1e-14
    for key in ("nc1_rate_early", "nc1_rate_early_evaluated", "nc1_rate_early_direct"):
        want = mp.mpf(str(ex[key].subs(at).evalf(50)))
        assert rel(nc1_rates(K, n, lw, lh)[0], want) < 1e-14
    lam = 0.02
    r = sp.Rational(1) / (K * sp.sqrt(n)) - sp.Float(lam, 30)
    zt = {S.t: t, S.z0: sp.Float(z0, 30), sp.Symbol("r", positive=True): r,
          sp.Symbol("z_inf", positive=True): K * n * r, S.K: K, S.n: n}
    for key in ("logistic", "logistic_evaluated"):
        want = mp.mpf(str(ex[key].subs(zt).evalf(50)))
        assert rel(logistic(t, z0, K, n, lam), want) < 1e-14


# ---------------------------------------------------------------------------------------------
# the derivation cache is keyed on the sources the process imported


@pytest.mark.slow
def test_cache_key_is_the_imported_sources_not_later_files(tmp_path):
    """A process imports the theory package, its sources then change on disk, and only then
    does it derive: the file it writes must carry the key of the code it runs, not of the
    changed files (which would hand the old derivation to every later process)."""
    package = Path(__file__).resolve().parents[1] / "ncsim"
    copy = tmp_path / "src"
    subprocess.run([sys.executable, "-c", f"import shutil; shutil.copytree({str(package)!r}, "
                    f"{str(copy / 'ncsim')!r}, ignore=shutil.ignore_patterns('__pycache__'))"],
                   check=True)
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        from ncsim.theory import cache, ufm
        source = Path(ufm.__file__)
        source.write_text(source.read_text() + "\\n# changed\\n")
        ufm.derive_reg_bias_mean_mode()
        print(cache.source_key.__wrapped__())
    """)
    env = {**os.environ, "PYTHONPATH": str(copy), "NCSIM_CACHE_DIR": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True, cwd=tmp_path)
    key_on_disk = out.stdout.strip()
    written = [p.name for p in (tmp_path / "cache").iterdir()]
    assert len(written) == 1 and key_on_disk not in written[0]


def test_the_module_runs_at_fifty_digits():
    """The references of this module are computed at 50 digits (conftest's mpmath_digits)."""
    assert mp.mp.dps == 50
