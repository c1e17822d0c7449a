"""Strict values of the theory modules against independent references.

- The onset model of :mod:`ncsim.theory.prediction` in its linear phase (tiny init, early
  times): there the mode ODE is linear, so the expected energies of a Gaussian init follow
  from the matrix exponential of the mode Jacobian (scipy.linalg.expm), not from its
  eigen-split; the predicted onset and fn crossing must be the roots of those curves.
- Invariances of the predicted onset (nc1_trace does not depend on the bias where every
  feature direction lies in the range of the centred modes), its t = 0 values, and the
  crossing rule at a grid time.
- Deep onset: the balanced mode ODE integrated by solve_ivp with a terminal event.
- The CE mode ODE against finite differences of the ETF-ray objective and the softmax Hessian.
- Equilibrium: CE logits (not only their difference) against the zero-sum identity and a
  matrix minimisation; deep MSE exactly at Lambda_stat; derive_ce in the decays against
  theory.md 2.1 in mpmath.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from scipy.linalg import expm
from scipy.optimize import brentq

from ncsim.theory import critical, prediction
from ncsim.theory.equilibrium import equilibrium
from ncsim.theory.prediction import predicted_onset

# ---------------------------------------------------------------------------------------------
# the onset model in its linear phase


def _linear_energies(K: int, n: int, d: int, lw: float, lh: float, a: float, t: float,
                     mean_driven: bool) -> tuple[float, float, float]:
    """Expected (between, within, mean) energies |H P_c|^2, |H P_perp|^2, |H v0|^2 of an
    i.i.d. N(0, a^2) init under the flow linearised at the origin.

    A centred label mode is a pair of d-vectors (x, y) = (u^T W, H v) with
    d/dt (x, y) = J (x, y), J = [[-lambda_W, g], [g, -lambda_H]], g = 1/(K sqrt n): y(t) =
    A21 x0 + A22 y0 with A = expm(J t), so E|y|^2 = d a^2 (A21^2 + A22^2) per mode. The
    within-class part decays at lambda_H (W^T W / N is negligible at a tiny init) from its
    expected d a^2 (N - K). The mean label mode is driven like a centred mode (MSE without
    bias) or undriven, decaying at lambda_H (CE, free bias)."""
    g = 1.0 / (K * math.sqrt(n))
    A = expm(np.array([[-lw, g], [g, -lh]]) * t)
    mode = d * a * a * (A[1, 0] ** 2 + A[1, 1] ** 2)
    within = d * a * a * (K * n - K) * math.exp(-2 * lh * t)
    mean = mode if mean_driven else d * a * a * math.exp(-2 * lh * t)
    return (K - 1) * mode, within, mean


LINEAR = dict(K=4, n=5, d=20, a=1e-6)  # w h stays below 1e-9 s up to t = 50: linear to 1e-9


@pytest.mark.parametrize("loss,bias", [("ce", "none"), ("mse", "free"), ("mse", "none")])
@pytest.mark.parametrize("lw,lh", [(0.002, 0.02), (0.02, 0.002)])
def test_onset_in_the_linear_phase_is_the_root_of_the_exact_linear_nc1(loss, bias, lw, lh):
    """Threshold 0.5 (nc1_trace starts at (N - K)/(K - 1) = 16/3): reached at t ~ 13-15 while
    the mode amplitudes are ~1e-5, so nc1_trace(t) = within / between of the linear flow. The
    expected energies come from expm of the mode Jacobian; unequal decays in both orders make
    the growing and decaying directions (and which decay the within-class part feels) matter.
    The model integrates its ODE at rtol 1e-10: agreement to 1e-7 relative (measured 8e-9)."""
    K, n, d, a = LINEAR["K"], LINEAR["n"], LINEAR["d"], LINEAR["a"]
    got = predicted_onset(loss, bias, K, n, d, lw, lh, a, 0.5, t_max=1e3)

    def nc1_minus(t: float) -> float:
        between, within, _ = _linear_energies(K, n, d, lw, lh, a, t, False)
        return within / between - 0.5

    want = brentq(nc1_minus, 0.0, 200.0, xtol=1e-13, rtol=1e-14)
    assert got.onset_time == pytest.approx(want, rel=1e-7)


@pytest.mark.parametrize("loss,bias", [("ce", "none"), ("mse", "free"), ("ce", "free")])
@pytest.mark.parametrize("lw,lh", [(0.002, 0.02), (0.02, 0.002)])
def test_fn_crossing_in_the_linear_phase_is_the_root_of_the_exact_linear_norm(loss, bias, lw,
                                                                              lh):
    """fn(t) = sqrt(|H|_F^2 / N) with |H|_F^2 = between + within + mean. A level of 30 a sqrt(d)
    (delta chosen so that (1 + delta) fn* is that level) is crossed upwards at t ~ 46, still in
    the linear phase (amplitudes ~1e-4); the mean part of CE and of a free bias decays at
    lambda_H. Crossing time to 1e-7 relative (measured 4e-9), and the lead time is the onset
    minus it."""
    K, n, d, a = LINEAR["K"], LINEAR["n"], LINEAR["d"], LINEAR["a"]
    level = 30 * a * math.sqrt(d)
    fn_star = float(equilibrium(loss, bias, K, n, lw, lh).fn_star)
    got = predicted_onset(loss, bias, K, n, d, lw, lh, a, 0.5, delta=level / fn_star - 1,
                          t_max=1e3)

    def fn_minus(t: float) -> float:
        return math.sqrt(sum(_linear_energies(K, n, d, lw, lh, a, t, False)) / (K * n)) - level

    want = brentq(fn_minus, 1.0, 500.0, xtol=1e-13, rtol=1e-14)
    assert got.fn_cross_time == pytest.approx(want, rel=1e-7)
    assert got.lead_time == pytest.approx(got.onset_time - want, rel=1e-6)
    assert got.lead_time < 0  # the onset (t ~ 13) precedes the crossing


@pytest.mark.parametrize("loss,bias,lb", [("ce", "none", 0.0), ("ce", "free", 0.0),
                                          ("mse", "free", 0.0), ("mse", "reg", 0.5),
                                          ("mse", "none", 0.0)])
@pytest.mark.parametrize("lw,lh", [(0.002, 0.02), (0.02, 0.002), (0.01, 0.01)])
def test_predicted_fn_and_nc1_start_at_the_gaussian_init_values(loss, bias, lb, lw, lh):
    """At t = 0 the model's energies are the expectations of the init: |H|_F^2 = d a^2 N, so
    fn(0) = a sqrt(d), and nc1_trace(0) = d a^2 (N - K) / ((K - 1) d a^2) = (N - K)/(K - 1),
    whatever the decays (the growing and decaying parts of a mode add up to d a^2 because the
    eigenvectors of the mode Jacobian are orthonormal). Exact up to rounding (1e-13)."""
    K, n, d, a = 4, 5, 20, 1e-3
    curves = prediction._curves(loss, bias, K, n, d, lw, lh, a, np.array([0.0, 1.0]), lb)
    t0, y0 = np.array([0.0]), curves.states[:1]
    assert float(curves.fn(t0, y0)[0]) == pytest.approx(a * math.sqrt(d), rel=1e-13)
    assert float(curves.nc1(t0, y0)[0]) == pytest.approx((K * n - K) / (K - 1), rel=1e-13)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("lb", [0.5, 5.0])
def test_onset_with_d_below_k_does_not_depend_on_a_regularised_bias(d, lb):
    """With d <= K - 1 every feature direction lies in the range of the K - 1 centred modes, so
    the within-class energy decays with them alone and nc1_trace (centred between-class energy
    over within-class energy) is the same with a regularised bias as with a free one: the mean
    mode that the regularised bias keeps alive has no direction of its own left. Equal onset
    times up to the ODE accuracy (the two solves integrate systems of different size, rtol
    1e-10: 1e-8 relative, measured 2e-10)."""
    K, n = 4, 5
    reg = predicted_onset("mse", "reg", K, n, d, 0.01, 0.01, 0.1, 0.01, lambda_b=lb)
    free = predicted_onset("mse", "free", K, n, d, 0.01, 0.01, 0.1, 0.01)
    assert math.isfinite(free.onset_time) and free.onset_time > 0
    assert reg.onset_time == pytest.approx(free.onset_time, rel=1e-8)


# ---------------------------------------------------------------------------------------------
# deep heads: the onset column is the escape time of the balanced mode


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("depth", [2, 3])
def test_deep_onset_is_the_time_the_balanced_mode_reaches_half_its_sigma(loss, depth):
    """Equal decays lambda on all M = L + 1 factors: the balanced per-factor amplitude obeys
    da/dt = drive(a^M) a^(M-1) - lambda a (MSE drive (s - u)/N, CE on the ETF ray
    1/(s (e^(u/s) + K - 1))), from a0 = a sqrt(d/2) (the documented per-mode amplitude of a
    Gaussian init). The onset column is the time at which a^M = sigma*/2. Reference: that
    ODE integrated by DOP853 (rtol 1e-12) with a terminal event, independent of the quadrature
    the module uses; agreement 1e-8 relative (measured 3e-12)."""
    from scipy.integrate import solve_ivp

    K, n, d, lam, a = 4, 5, 20, 0.01, 0.3
    M, s, N = depth + 1, math.sqrt(n), K * n
    sigma = float(equilibrium(loss, "none", K, n, lam, lam, 0.0, depth).sigma)
    assert sigma > 0

    def rhs(t: float, y: np.ndarray) -> list[float]:
        u = y[0] ** M
        drive = (s - u) / N if loss == "mse" else 1 / (s * (math.exp(u / s) + K - 1))
        return [drive * y[0] ** (M - 1) - lam * y[0]]

    def half(t: float, y: np.ndarray) -> float:
        return y[0] ** M - sigma / 2

    half.terminal = True
    sol = solve_ivp(rhs, (0.0, 1e6), [a * math.sqrt(d / 2)], method="DOP853", rtol=1e-12,
                    atol=1e-15, events=half)
    got = predicted_onset(loss, "none", K, n, d, lam, lam, a, depth=depth)
    assert got.regime == "escape_time_only"
    assert got.onset_time == pytest.approx(float(sol.t_events[0][0]), rel=1e-8)


# ---------------------------------------------------------------------------------------------
# the mode ODE of the onset model against the objective it is the gradient flow of


@pytest.mark.parametrize("w,h", [(0.3, 0.2), (1.5, 2.5), (4.0, 3.0)])
def test_ce_mode_ode_is_the_gradient_flow_of_the_etf_ray_objective(w, h):
    """CE, one centred label mode with amplitudes (w, h) (all K - 1 modes equal, logit margin
    m = w h / sqrt(n)): the data term of the ray is log(1 + (K-1) e^(-m)) for all K - 1 modes
    together, so per mode dw/dt = -(1/(K-1)) d/dw of it - lambda_W w (and w <-> h). The third
    component is kappa w^2 / N with kappa the mean eigenvalue of the softmax Hessian
    diag(p) - p p^T on the centred logit space (the K - 1 directions orthogonal to 1),
    computed here by eigvalsh. Central differences (step 1e-6): 1e-8 relative."""
    K, n, lw, lh = 5, 3, 0.01, 0.03
    N, s = K * n, math.sqrt(n)
    rhs = prediction._mode_rhs("ce", K, n, lw, lh)
    got = rhs(0.0, np.array([w, h, 0.0]))

    def data(w_: float, h_: float) -> float:
        return math.log1p((K - 1) * math.exp(-w_ * h_ / s))

    eps = 1e-6
    dw = (data(w + eps, h) - data(w - eps, h)) / (2 * eps)
    dh = (data(w, h + eps) - data(w, h - eps)) / (2 * eps)
    assert got[0] == pytest.approx(-dw / (K - 1) - lw * w, rel=1e-8)
    assert got[1] == pytest.approx(-dh / (K - 1) - lh * h, rel=1e-8)
    z = np.zeros(K)
    z[0] = w * h / s
    p = np.exp(z) / np.exp(z).sum()
    hess = np.diag(p) - np.outer(p, p)
    basis = np.linalg.qr(np.eye(K) - 1.0 / K)[0][:, : K - 1]  # orthonormal, orthogonal to 1
    kappa = float(np.mean(np.linalg.eigvalsh(basis.T @ hess @ basis)))
    assert got[2] == pytest.approx(kappa * w * w / N, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# equilibrium: CE logits, the deep MSE double root


@pytest.mark.parametrize("K,n,lam", [(3, 2, 0.01), (10, 20, 2e-4), (2, 1, 0.2)])
@pytest.mark.parametrize("bias,lb", [("none", 0.0), ("reg", 0.5)])
def test_ce_logits_sum_to_zero_and_differ_by_the_margin(K, n, lam, bias, lb):
    """CE without a bias or with a regularised one (whose minimiser is b = 0): the CE gradient
    has columns that sum to 0, so at the minimiser 1^T W = 0 and every sample's logits sum to 0:
    logit_true + (K - 1) logit_other = 0, with logit_true - logit_other = margin* = ln(1/r -
    K + 1), r = sqrt(n lambda_W lambda_H) (theory.md 2.1). Hence logit_true = (K-1)/K m* and
    logit_other = -m*/K; to rounding (1e-13)."""
    eq = equilibrium("ce", bias, K, n, lam, lam, lb)
    m = math.log(1 / math.sqrt(n * lam * lam) - K + 1)
    assert float(eq.margin_star) == pytest.approx(m, rel=1e-13)
    assert float(eq.logit_true) == pytest.approx((K - 1) / K * m, rel=1e-13)
    assert float(eq.logit_other) == pytest.approx(-m / K, rel=1e-13)


def test_ce_logits_of_the_matrix_minimiser():
    """The logits of sample 0 at the minimiser that L-BFGS finds for the full matrix objective
    (K = 3, n = 2, d = 4, no bias; gradient tolerance 1e-12, so logits to ~1e-7) equal the
    columns logit_true and logit_other (not only their difference)."""
    from reference_objective import Objective
    from reference_objective import minimise as reference_minimise

    K, n, lw, lh = 3, 2, 0.01, 0.02
    obj = Objective("ce", "none", (n,) * K, K + 1, (lw,), lh)
    x, f = reference_minimise(obj, (1.0, 3.0))
    got = obj.stats(x)
    eq = equilibrium("ce", "none", K, n, lw, lh)
    assert f == pytest.approx(float(eq.objective_star), rel=1e-10)
    assert got["logit_true"] == pytest.approx(float(eq.logit_true), rel=2e-6)
    assert got["logit_other"] == pytest.approx(float(eq.logit_other), rel=2e-6)


@pytest.mark.parametrize("K,n,depth", [(2, 1, 2), (4, 5, 2), (10, 20, 3), (3, 7, 5)])
def test_deep_mse_at_lambda_stat_keeps_the_double_root(K, n, depth):
    """Deep MSE exactly at Lambda_stat (deep_thresholds): the stationarity phi(x) = Lambda has
    its double root at x_max, sigma = x_max^M = sqrt(n) (M - 2) / (2 (M - 1)) (theory.md 3.1:
    a non-zero critical point exists iff sqrt(n) >= tau_stat). sigma_local is that root (to
    1e-12; the bisection starts at x_max) and the state is not collapsed (Lambda_stat >
    Lambda_glob, the origin is global)."""
    M = depth + 1
    lam = float(critical.deep_thresholds(K, n, 0.01, depth).Lambda_stat)
    eq = equilibrium("mse", "free", K, n, lam, lam, 0.0, depth)
    assert float(eq.sigma_local) == pytest.approx(math.sqrt(n) * (M - 2) / (2 * (M - 1)),
                                                  rel=1e-12)
    assert not bool(eq.collapsed)
    assert lam > float(critical.Lambda_crit("mse", K, n, depth))


# ---------------------------------------------------------------------------------------------
# the one-layer CE derivation in terms of the decays (theory.md 2.1)


@pytest.mark.parametrize("K,n,lw,lh", [(4, 5, 0.01, 0.02), (10, 3, 0.004, 0.0005),
                                       (2, 1, 0.1, 0.3)])
def test_ce_derivation_in_the_decays_matches_theory_md(K, n, lw, lh):
    """derive_ce's forms in (lambda_W, lambda_H), against theory.md 2.1 in mpmath (30 digits),
    with unequal decays in both orders so that lambda_W and lambda_H cannot be exchanged:
    |w_k|^2 = (K-1)/K sqrt(n lambda_H / lambda_W) ln(1/r - K + 1), |h|^2 = (K-1)/K
    sqrt(lambda_W / (n lambda_H)) ln(1/r - K + 1), r = sqrt(n lambda_W lambda_H); and p* =
    1 - (K-1) r, CE* = -ln(1 - (K-1) r) at the minimiser. Also equal to the equilibrium's
    w_norm_star^2 and fn_star^2 (to 1e-12)."""
    import mpmath as mp

    from ncsim.theory import symbols as S
    from ncsim.theory import ufm

    d = ufm.derive_ce()
    mK, mn, mlw, mlh = (mp.mpf(v) for v in (K, n, lw, lh))
    r = mp.sqrt(mn * mlw * mlh)
    log_term = mp.log(1 / r - mK + 1)
    w2 = (mK - 1) / mK * mp.sqrt(mn * mlh / mlw) * log_term
    h2 = (mK - 1) / mK * mp.sqrt(mlw / (mn * mlh)) * log_term
    lw_, lh_ = sp.Rational(str(lw)), sp.Rational(str(lh))
    at = {S.K: K, S.n: n, S.lam_w: lw_, S.lam_h: lh_, S.Lam: sp.sqrt(lw_ * lh_)}
    assert float(d["w_row2_lambda"].subs(at).evalf(30)) == pytest.approx(float(w2), rel=1e-13)
    assert float(d["h2_lambda"].subs(at).evalf(30)) == pytest.approx(float(h2), rel=1e-13)
    assert float(d["margin_star"].subs(at).evalf(30)) == pytest.approx(float(log_term),
                                                                      rel=1e-13)
    assert float(d["prob_star"].subs(at).evalf(30)) == pytest.approx(float(1 - (mK - 1) * r),
                                                                    rel=1e-13)
    assert float(d["ce_star"].subs(at).evalf(30)) == pytest.approx(
        float(-mp.log(1 - (mK - 1) * r)), rel=1e-13)
    eq = equilibrium("ce", "none", K, n, lw, lh)
    assert float(eq.w_norm_star) ** 2 == pytest.approx(float(w2), rel=1e-12)
    assert float(eq.fn_star) ** 2 == pytest.approx(float(h2), rel=1e-12)


def test_a_curve_that_reaches_the_level_exactly_at_a_grid_time_has_crossed():
    """The crossing search counts reaching the level as crossing ("up": from below to at or
    above): near-side values are negative, so the first interval with side[i] < 0 <= side[i+1]
    is the crossing, including a grid value exactly at the level (0), whether the curve then
    goes on or turns back; a curve that never leaves the far side or never comes back has
    none."""
    assert prediction._first_crossing_interval(np.array([-2.0, -1.0, 0.0, 1.0])) == 1
    assert prediction._first_crossing_interval(np.array([-2.0, 0.0, -1.0, 3.0])) == 0
    assert prediction._first_crossing_interval(np.array([1.0, 0.5, 2.0])) is None
    assert prediction._first_crossing_interval(np.array([-1.0, -0.5, -2.0])) is None
