"""Extreme-parameter scan of ncsim.theory.modes, critical.deep_thresholds / critical_table and
phase.classify / phase_diagram: per-mode minimisers against 50-digit mpmath roots, threshold
decisions on both sides of lambda_crit, tau precision, vectorisation, and input refusals."""

from __future__ import annotations

import math
import warnings

import mpmath as mp
import numpy as np
import pytest
import torch

from ncsim.errors import InputError
from ncsim.theory import critical, modes, phase

pytestmark = pytest.mark.mpmath_digits(50)


def _mbisect(f, lo, hi, iters=180):
    """Bisection in mpmath (a root of f in [lo, hi], f(lo) and f(hi) of opposite sign)."""
    flo = f(lo)
    for _ in range(iters):
        mid = (lo + hi) / 2
        fm = f(mid)
        if (fm > 0) == (flo > 0):
            lo, flo = mid, fm
        else:
            hi = mid
    return (lo + hi) / 2


def _ref_mse(K, n, lam, M, c):
    """Global minimiser and non-zero local minimiser of the MSE mode problem (mpmath)."""
    mp.mp.dps = 50
    K, n, lam, c = (mp.mpf(v) for v in (K, n, lam, c))
    N, s = K * n, mp.sqrt(n)
    if M == 2:
        sig = s - N * lam / c
        return (sig, sig) if sig > 0 else (mp.mpf(0), None)
    x_max = (s * (M - 2) / (2 * (M - 1))) ** (mp.mpf(1) / M)

    def phi(x):
        return c * x ** (M - 2) * (s - x ** M) / N - lam

    if phi(x_max) < 0:
        return mp.mpf(0), None
    loc = _mbisect(phi, x_max, s ** (mp.mpf(1) / M)) ** M
    glob = c * s * (s * (M - 2) / (M - 1)) ** (mp.mpf(M - 2) / M) / (N * (M - 1))
    return (loc if lam < glob else mp.mpf(0)), loc


def _psi(v, K, n, M):
    s = mp.sqrt(n)
    return v ** (1 - mp.mpf(2) / M) * mp.exp(-v / s) / (s * (1 + (K - 1) * mp.exp(-v / s)))


def _ref_ce(K, n, lam, M):
    """(sigma, sigma_local, psi_max) of the CE ray (mpmath; M >= 3)."""
    mp.mp.dps = 50
    K, n, lam = mp.mpf(K), mp.mpf(n), mp.mpf(lam)
    s = mp.sqrt(n)
    sig_m = _mbisect(lambda v: (M - 2) * s * (1 + (K - 1) * mp.exp(-v / s)) - M * v,
                     mp.mpf(0), (M - 2) * s * K / M * 2)
    psi_max = _psi(sig_m, K, n, M)
    if lam > psi_max:
        return mp.mpf(0), None, psi_max
    hi = 2 * sig_m + s
    while _psi(hi, K, n, M) > lam:
        hi *= 2
    loc = _mbisect(lambda v: _psi(v, K, n, M) - lam, sig_m, hi)
    g = mp.log(1 + (K - 1) * mp.exp(-loc / s)) + (K - 1) * mp.mpf(M) / 2 * lam * loc ** (
        mp.mpf(2) / M)
    return (loc if g < mp.log(K) else mp.mpf(0)), loc, psi_max


def _a(v):
    return np.array(float(v))


# ------------------------------------------------------------------ held invariants
@pytest.mark.parametrize(("K", "n"), [(2, 1), (10000, 10**6), (3, 1000)])
@pytest.mark.parametrize("M", [2, 3, 9])
@pytest.mark.parametrize("c", [1.0, 1e-6])
def test_mse_mode_is_the_mpmath_global_minimiser_at_extreme_parameters(K, n, M, c):
    """mse_mode's sigma and sigma_local equal a 50-digit root to 1e-13 from Lambda = 1e-300
    up to (1 -+ 1e-12) Lambda_glob and 0.5 / 2 Lambda_stat."""
    s, N = math.sqrt(n), K * n
    if M == 2:
        glob, stat = c / (K * s), None
    else:
        glob = c * s * (s * (M - 2) / (M - 1)) ** ((M - 2) / M) / (N * (M - 1))
        stat = c * M * (s * (M - 2) / (2 * (M - 1))) ** (2 * (M - 1) / M) / ((M - 2) * N)
    lams = [1e-300, 1e-15, glob * (1 - 1e-12), glob * (1 + 1e-12), glob * 0.5, 10.0]
    if stat:
        lams += [stat * 0.5 + glob * 0.5, stat * 2]
    for lam in lams:
        sol = modes.mse_mode(_a(K), _a(n), _a(lam), M, _a(c))
        want, want_loc = _ref_mse(K, n, lam, M, c)
        tol = 1e-13 if M > 2 else 1e-15 / abs(1 - lam / glob) + 1e-15
        assert float(sol.sigma) == pytest.approx(float(want), rel=tol, abs=0)
        if want_loc is None:
            assert math.isnan(float(sol.sigma_local))
        else:
            assert float(sol.sigma_local) == pytest.approx(float(want_loc), rel=tol)
        assert bool(sol.collapsed) == (lam < glob)


@pytest.mark.parametrize(("K", "n"), [(2, 1), (10000, 10**6), (10, 1000)])
@pytest.mark.parametrize("M", [3, 5, 9])
def test_ce_ray_and_psi_max_against_mpmath_at_extreme_parameters(K, n, M):
    """ce_psi_max's Lambda_stat and ce_ray's sigma / sigma_local equal 50-digit roots (1e-13)
    from Lambda = 1e-300 to 10, with 0 above psi_max."""
    _, psi_max = modes.ce_psi_max(_a(K), _a(n), M)
    *_, want_max = _ref_ce(K, n, 1.0, M)
    assert float(psi_max) == pytest.approx(float(want_max), rel=1e-14)
    lc = float(critical.Lambda_crit("ce", K, n, M - 1))
    for lam in [1e-300, 1e-15, 0.5 * lc, 0.5 * (lc + float(want_max)), 10.0]:
        sol = modes.ce_ray(_a(K), _a(n), _a(lam), M)
        want, want_loc, _ = _ref_ce(K, n, lam, M)
        assert float(sol.sigma) == pytest.approx(float(want), rel=1e-13, abs=0)
        if want_loc is None:
            assert math.isnan(float(sol.sigma_local))
        else:
            assert float(sol.sigma_local) == pytest.approx(float(want_loc), rel=1e-13)


@pytest.mark.parametrize("fn", ["mse", "ce"])
@pytest.mark.parametrize("M", [2, 3, 9])
def test_sigma_falls_with_Lambda_and_torch_and_scalar_calls_agree(fn, M):
    """Over 800 decays 1e-15 .. 10 sigma and sigma_local never rise, collapse is a prefix, the
    objective is at most g(0); torch and scalar calls agree to 1e-14 (ulps, not bits: numpy's
    array pow / exp round differently from the scalar ones)."""
    lams = np.concatenate([[0.0], np.logspace(-15, 1, 800)])
    K, n = np.full_like(lams, 10.0), np.full_like(lams, 1000.0)
    f = modes.mse_mode if fn == "mse" else modes.ce_ray
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = f(K, n, lams, M)
        tsol = f(torch.tensor(K), torch.tensor(n), torch.tensor(lams), M)
    assert not np.any(np.diff(sol.sigma) > 0)
    loc = sol.sigma_local[np.isfinite(sol.sigma_local)]
    assert not np.any(np.diff(loc) > 0)
    assert not np.any(np.diff(sol.collapsed.astype(int)) > 0)
    assert np.all(sol.objective <= sol.objective_zero * (1 + 1e-15))
    np.testing.assert_allclose(tsol.sigma.numpy(), sol.sigma, rtol=1e-14)
    for j in range(1, len(lams), 53):
        one = f(_a(10), _a(1000), _a(lams[j]), M)
        assert float(one.sigma) == pytest.approx(sol.sigma[j], rel=1e-14, abs=0)


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize(("K", "n", "depth"), [(2, 1, 1), (2, 1, 8), (10000, 10**6, 1),
                                              (10000, 10**6, 2), (3, 7, 5)])
def test_classify_switches_exactly_at_lambda_crit(loss, depth, K, n):
    """collapsed_global is True at lambda_crit (1 - 1e-9) and False at (1 + 1e-9), unequal
    decays too; one layer: phase collapse / vanishing; deep with a large init: collapse."""
    for ratio in (1.0, 4.0):
        lc = float(critical.lambda_crit(loss, "none", K, n, depth, ratio))
        for rel, below in ((1 - 1e-9, True), (1 + 1e-9, False)):
            row = phase.classify(loss, "none", K, n, K, depth, lc * rel, ratio * lc * rel, 0.0,
                                 10.0)
            assert row["collapsed_global"] is below
            if depth == 1:
                assert row["phase"] == ("collapse" if below else "vanishing")
            else:
                assert row["phase"] == "collapse"  # metastable just above Lambda_glob


def test_phase_diagram_rows_are_classify_calls():
    """Each row of a (lambda, init_scale) and a (K, depth) diagram is classify at that point."""
    base = dict(loss="mse", bias="reg", K=4, n=5, d=20, depth=2, lambda_w=0.01, lambda_h=0.02,
                lambda_b=0.5, init_scale=0.1)
    b1 = {k: v for k, v in base.items() if k not in ("lambda_w", "lambda_h", "init_scale")}
    xs, ys = [1e-12, 0.02, 0.06, 0.3], [1e-6, 0.05, 10.0]
    rows = phase.phase_diagram("lambda", xs, "init_scale", ys, b1)
    want = [{"lambda": x, "init_scale": y, **phase.classify(**b1, lambda_w=x, lambda_h=x,
                                                            init_scale=y)}
            for y in ys for x in xs]
    assert rows == want
    b2 = {k: v for k, v in base.items() if k not in ("K", "depth")}
    rows = phase.phase_diagram("K", [2, 3, 50], "depth", [1, 4], b2)
    assert rows == [{"K": k, "depth": L, **phase.classify(**b2, K=k, depth=L)}
                    for L in (1, 4) for k in (2, 3, 50)]


@pytest.mark.parametrize("lam", [1e-300, 1e-100, 1e-5, 1.0, 1e300])
@pytest.mark.parametrize("depth", [2, 3, 5, 8])
def test_deep_thresholds_against_theory_md_in_mpmath(lam, depth):
    """tau_glob / tau_stat / Lambda_glob / Lambda_stat / sigma_jump = theory.md 3.1 at 50 digits:
    within 1e-15 for 1e-5 <= Lambda <= 1; tau to 5e-14 at 1e-300 and 1e300 (the exponent
    M/(2(M-1)) is rounded, an error eps |log(N Lambda)| relative)."""
    mp.mp.dps = 50
    K, n, M = 10, 1000, depth + 1
    th = critical.deep_thresholds(K, n, lam, depth)
    N, s, L = mp.mpf(K * n), mp.sqrt(n), mp.mpf(lam)
    e = mp.mpf(M) / (2 * (M - 1))
    tol = 1e-15 if 1e-5 <= lam <= 1 else 5e-14
    assert float(th.tau_glob) == pytest.approx(
        float(mp.mpf(M - 1) / (M - 2) * ((M - 2) * N * L) ** e), rel=tol)
    assert float(th.tau_stat) == pytest.approx(
        float(2 * mp.mpf(M - 1) / (M - 2) * (N * L * (M - 2) / M) ** e), rel=tol)
    assert float(th.Lambda_glob) == pytest.approx(
        float(((M - 2) * s / (M - 1)) ** (mp.mpf(2 * (M - 1)) / M) / ((M - 2) * N)), rel=1e-15)
    assert float(th.Lambda_stat) == pytest.approx(
        float(M * (s * (M - 2) / (2 * (M - 1))) ** (mp.mpf(2 * (M - 1)) / M) / ((M - 2) * N)),
        rel=1e-15)
    assert float(th.sigma_jump) == pytest.approx(float(s * (M - 2) / (M - 1)), rel=1e-15)


# ------------------------------------------------------------------ findings (fixed)
@pytest.mark.parametrize("kw", [{"K": math.nan}, {"K": math.inf}, {"n": math.inf},
                                {"K": None}, {"ratio": None}])
def test_critical_table_refuses_nan_inf_none_with_input_error(kw):
    """critical_table(K=nan / inf / None, n=inf, ratio=None) raises InputError."""
    args = {"loss": "mse", "bias": "none", "K": 4, "n": 5, "depth": 2, "ratio": 1.0, **kw}
    with pytest.raises(InputError):
        critical.critical_table(**args)


@pytest.mark.parametrize("call", ["deep_thresholds", "classify"])
def test_infinite_K_is_refused_without_a_runtime_warning(call):
    """K = inf gives InputError with no RuntimeWarning (deep_thresholds and classify)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match="classes K"):
            if call == "deep_thresholds":
                critical.deep_thresholds(math.inf, 5, 0.01, 2)
            else:
                phase.classify("mse", "none", math.inf, 5, 20, 2, 0.01, 0.01, 0.0, 0.1)


@pytest.mark.parametrize(("axis", "value"), [("lambda", True), ("lambda", "0.01"),
                                             ("depth", True), ("K", "4"), ("lambda", None)])
def test_phase_diagram_refuses_axis_values_that_classify_refuses(axis, value):
    """An axis value that is a bool, text or None gives InputError, as in classify."""
    base = dict(loss="mse", bias="none", K=4, n=5, d=20, depth=2, lambda_w=0.01,
                lambda_h=0.01, lambda_b=0.0, init_scale=0.1)
    for k in ("lambda_w", "lambda_h") if axis == "lambda" else (axis,):
        base.pop(k)
    with pytest.raises(InputError, match=axis if axis != "lambda" else "lambda_w|weight decay"):
        phase.phase_diagram(axis, [value], "init_scale", [0.1], base)


def test_phase_diagram_takes_whole_floats_and_numpy_numbers_on_its_axes():
    """K = 4.0 (a float grid) and numpy lambdas give classify's rows for K = 4."""
    base = dict(loss="mse", bias="none", n=5, d=20, depth=2, lambda_b=0.0, init_scale=0.1)
    rows = phase.phase_diagram("K", [4.0, np.int64(3)], "lambda", np.array([0.01, 0.3]), base)
    for row in rows:
        want = phase.classify(K=int(row["K"]), lambda_w=float(row["lambda"]),
                              lambda_h=float(row["lambda"]), **base)
        assert {k: row[k] for k in want} == want
    with pytest.raises(InputError, match="phase axis K takes integers, got 4.5"):
        phase.phase_diagram("K", [4.5], "lambda", [0.01], base)


def test_ce_ray_one_layer_at_a_subnormal_decay_is_finite():
    """Lambda = 5e-324, K = 4, n = 1e6: sigma = sqrt(n) log(1/(Lambda sqrt n) - K + 1) (mpmath),
    finite, with no RuntimeWarning."""
    mp.mp.dps = 50
    lam, K, n = 5e-324, 4, 10**6
    want = mp.sqrt(n) * mp.log(1 / (mp.mpf(lam) * mp.sqrt(n)) - K + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = modes.ce_ray(_a(K), _a(n), np.array(lam), 2)
    assert float(sol.sigma) == pytest.approx(float(want), rel=1e-13)
