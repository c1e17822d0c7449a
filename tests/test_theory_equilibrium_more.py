"""Equilibria, thresholds, phases and theory columns in regions the other theory tests leave out.

Regions: K = 2, n = 1, d below the rank of the minimiser, per-layer decays, a regularised bias
with CE or with a deep head, decay ratios of 1e3, tiny and huge decays, decays within 1e-8 of
the critical one, imbalanced certified numerics at the threshold, deep spectral inits in the
trapped and metastable windows, and bad input.

References, each independent of the code under test:

- ``Objective``: the full matrix objective f(H, W_1..W_L, b) of DESIGN.md section 2 written out
  here in numpy (any class counts, per-layer decays, bias mode), its gradient checked against
  central differences, minimised by scipy L-BFGS from several random starts (one near 0);
- reference/theory.md's formulas (sections 1.1, 2.1, 3.1) evaluated in mpmath at 30 digits;
- the origin's optimality condition |grad_Z f(0)|_2 <= Lambda of the nuclear-norm form
  (theory.md 0.2), written out by hand for the imbalanced thresholds;
- ``ncsim.flow.simulate`` run to its end state (a separate code path: torch flows).
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import torch
from reference_objective import Objective
from reference_objective import minimise as reference_minimise
from scipy.optimize import minimize

from ncsim.errors import InputError
from ncsim.flow import simulate
from ncsim.spec import InitSpec, ModelSpec, OnsetSpec, Regularization, RunSpec, SolverSpec
from ncsim.theory import (
    Lambda_crit,
    basin_threshold,
    deep_thresholds,
    derivations,
    equilibrium,
    imbalanced_equilibrium,
    lambda_crit,
    theory_columns,
)
from ncsim.theory.compile import compile_expr
from ncsim.theory.critical import critical_table
from ncsim.theory.imbalance import kkt_residual
from ncsim.theory.phase import classify, phase_diagram

pytestmark = pytest.mark.mpmath_digits(30)


# ---------------------------------------------------------------------------------------------
# reference 1: the full matrix objective, minimised directly

def minimise(obj: Objective, scales: tuple[float, ...] = (1e-3, 0.5, 1.0, 2.0, 4.0),
             seed: int = 0) -> tuple[np.ndarray, float]:
    """Lowest L-BFGS-B end point over random starts of the given scales (one near the origin)."""
    return reference_minimise(obj, scales, seed, gtol=1e-12)


def test_reference_gradient_matches_finite_differences():
    """The reference objective's analytic gradient equals central differences (1e-7) for every
    bias mode, CE and MSE, depth 1 and 3 with per-layer decays and a hidden width, imbalanced
    counts: the minimisations below rest on it."""
    rng = np.random.default_rng(5)
    for loss, bias, counts, lams_w, width in (("mse", "reg", (1, 3), (0.1,), None),
                                              ("ce", "free", (2, 1, 3), (0.1,), None),
                                              ("ce", "reg", (2, 2), (0.1, 0.2, 0.05), 3),
                                              ("mse", "none", (1, 2, 2), (0.3, 0.1), 2)):
        obj = Objective(loss, bias, counts, 3, lams_w, 0.07, 0.4, width)
        theta = rng.normal(0, 0.7, obj.size)
        _, grad = obj(theta)
        eps = 1e-6
        fd = np.array([(obj(theta + eps * e)[0] - obj(theta - eps * e)[0]) / (2 * eps)
                       for e in np.eye(obj.size)])
        np.testing.assert_allclose(grad, fd, rtol=1e-7, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# balanced equilibria against direct minimisation, in regions not covered elsewhere

# (loss, bias, K, n, lambda_w (one per layer), lambda_h, lambda_b)
MIN_CASES = [
    ("mse", "none", 2, 1, (0.05,), 0.1, 0.0),
    ("ce", "none", 2, 1, (0.05,), 0.1, 0.0),
    ("mse", "reg", 2, 1, (0.05,), 0.1, 0.7),
    ("ce", "reg", 3, 2, (0.01,), 0.02, 0.7),             # CE: the bias stays 0
    ("mse", "reg", 3, 2, (0.01, 0.01, 0.01), 0.01, 2.0),  # deep head with a regularised bias
    ("mse", "none", 3, 2, (0.005, 0.03), 0.01, 0.0),      # per-layer decays
    ("mse", "free", 3, 2, (0.004, 0.02, 0.01), 0.01, 0.0),
    ("ce", "none", 3, 2, (0.002, 0.01), 0.005, 0.0),
    ("ce", "free", 2, 1, (0.02, 0.02), 0.02, 0.0),
    ("mse", "none", 3, 2, (1e-4,), 0.1, 0.0),             # lambda_H / lambda_W = 1e3
    ("ce", "none", 3, 2, (0.1,), 1e-4, 0.0),              # lambda_H / lambda_W = 1e-3
]


@pytest.mark.parametrize("case", MIN_CASES, ids=[
    f"{c[0]}-{c[1]}-K{c[2]}n{c[3]}-L{len(c[4])}-{c[4][0]}" for c in MIN_CASES])
def test_equilibrium_matches_direct_minimisation(case):
    """Objective, fn*, centred class-mean norm, classifier row norm, the norm of every factor,
    the bias entry (MSE), the data loss and the logits of the minimiser found by scipy (d = K + 1,
    widths d) equal the closed form's."""
    loss, bias, K, n, lams_w, lh, lb = case
    obj = Objective(loss, bias, (n,) * K, K + 1, lams_w, lh, lb)
    x, f = minimise(obj)
    got = obj.stats(x)
    depth = len(lams_w)
    eq = equilibrium(loss, bias, K, n, lams_w[0] if depth == 1 else lams_w, lh, lb, depth)
    assert bool(eq.collapsed)
    np.testing.assert_allclose(f, float(eq.objective_star), rtol=1e-10, atol=1e-14)
    want = {"fn": eq.fn_star, "centred": eq.class_mean_norm_centred, "w_row": eq.w_norm_star,
            "loss": eq.loss_star, **{f"norm_{k}": v for k, v in eq.factor_norms.items()}}
    if loss == "mse":
        want.update(bias=eq.bias_star, logit_true=eq.logit_true, logit_other=eq.logit_other)
    else:  # softmax is shift invariant: only the margin is determined
        got["margin"] = got["logit_true"] - got["logit_other"]
        want["margin"] = eq.margin_star
    for key, value in want.items():
        np.testing.assert_allclose(got[key], float(value), rtol=2e-6, atol=1e-7, err_msg=key)


# ---------------------------------------------------------------------------------------------
# reference 2: theory.md's closed forms in mpmath (30 digits)

def md_one_layer(loss: str, bias: str, K, n, lw, lh, lb=0) -> dict[str, mp.mpf]:
    """theory.md 1.1 (MSE table and notes) and 2.1 (CE) in mpmath: |w_k|^2, |h|^2 (uncentred),
    the data loss, the bias entry, the margin (CE) and f = loss + lw/2 |W|^2 + lh/2 |H|^2
    + lb/2 |b|^2."""
    K, n, lw, lh, lb = (mp.mpf(v) for v in (K, n, lw, lh, lb))
    N, r = K * n, mp.sqrt(n * lw * lh)
    q, c = mp.sqrt(n * lh / lw), mp.sqrt(lw / (n * lh))
    out = {"bias": mp.mpf(0), "margin": mp.mpf(0)}
    if loss == "mse":
        alpha = max(1 - K * r, mp.mpf(0))
        out["margin"] = alpha  # logits alpha Y (+ a constant): true minus other logit
        if bias == "none":
            w2, h2, loss_ = q * alpha, c * alpha, (1 - alpha) ** 2 / 2
        elif bias == "free":
            w2, h2 = (K - 1) / K * q * alpha, (K - 1) / K * c * alpha
            loss_, out["bias"] = (1 - alpha) ** 2 * (K - 1) / (2 * K), 1 / K
        else:
            alpha0 = max(1 - K * r * (1 + lb) / lb, mp.mpf(0))
            w2 = q * (alpha * (K - 1) / K + alpha0 / K)
            h2 = c * (alpha * (K - 1) / K + alpha0 / K)
            out["bias"] = (1 - alpha0) / (K * (1 + lb))
            # centred residual (alpha - 1)(Y - 11^T/K); mean residual (1 - alpha0) lb /
            # (K (1 + lb)) on each of the K N entries
            loss_ = ((1 - alpha) ** 2 * (K - 1) / K
                     + (1 - alpha0) ** 2 * lb ** 2 / (K * (1 + lb) ** 2)) / 2
    else:
        live = K * r < 1
        log_ = mp.log(1 / r - K + 1) if live else mp.mpf(0)
        w2, h2 = (K - 1) / K * q * log_, (K - 1) / K * c * log_
        loss_ = -mp.log(1 - (K - 1) * r) if live else mp.log(K)
        out["margin"] = log_
    penalty_b = lb / 2 * K * out["bias"] ** 2 if bias == "reg" else 0
    out.update(w2=w2, h2=h2, loss=loss_, f=loss_ + lw / 2 * K * w2 + lh / 2 * N * h2 + penalty_b)
    return out


def _sweep(seed: int, count: int) -> list[tuple]:
    """Random (loss, bias, K, n, lw, lh, lb): K 2..12, n 1..50, decays from 1e-9 up to 0.999 of
    the critical one, ratios lambda_H / lambda_W from 1e-4 to 1e4, lambda_b from 1e-3 to 1e3."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        loss = ("mse", "ce")[i % 2]
        bias = ("none", "free", "reg")[i % 3] if loss == "mse" else ("none", "free")[i % 2]
        K, n = int(rng.integers(2, 13)), int(rng.integers(1, 51))
        ratio = 10 ** rng.uniform(-4, 4)
        lam = 10 ** rng.uniform(-9, math.log10(0.999)) / (K * math.sqrt(n))  # Lambda
        lw, lh = lam / math.sqrt(ratio), lam * math.sqrt(ratio)
        out.append((loss, bias, K, n, lw, lh, 10 ** rng.uniform(-3, 3)))
    return out


def test_one_layer_closed_forms_against_mpmath_sweep():
    """60 random one-layer points (every bias, both losses, K = 2..12, n = 1..50, Lambda from
    1e-9 to 0.999 Lambda_crit, ratios 1e-4..1e4, lambda_b 1e-3..1e3): row norm, fn*, loss,
    objective, bias entry and margin equal theory.md's formulas in mpmath to 1e-11 relative
    (the conditioning near the threshold is at most 1e3)."""
    for loss, bias, K, n, lw, lh, lb in _sweep(11, 60):
        eq = equilibrium(loss, bias, K, n, lw, lh, lb)
        ref = md_one_layer(loss, bias, K, n, lw, lh, lb)
        pairs = {"w2": eq.w_norm_star ** 2, "h2": eq.fn_star ** 2, "loss": eq.loss_star,
                 "f": eq.objective_star, "bias": eq.bias_star, "margin": eq.margin_star}
        for key, value in pairs.items():
            np.testing.assert_allclose(float(value), float(ref[key]), rtol=1e-11, atol=1e-300,
                                       err_msg=f"{key} at {(loss, bias, K, n, lw, lh, lb)}")
        assert bool(eq.collapsed)


@pytest.mark.parametrize("loss,bias", [("mse", "none"), ("mse", "free"), ("mse", "reg"),
                                       ("ce", "none"), ("ce", "free")])
def test_one_layer_both_sides_of_the_threshold_and_huge_decays(loss, bias):
    """K = 2, n = 1 and K = 7, n = 13: at Lambda_crit (1 - 1e-8) the minimiser is collapsed
    with fn* matching mpmath (to the conditioning 1e-8 relative allows); at (1 + 1e-8), 10 and
    1e8 times Lambda_crit it is the origin: fn* = 0, |W| = 0, loss and f at their origin values,
    no non-zero local minimiser (sigma_local NaN), and no warning or NaN anywhere."""
    lb = 0.5
    for K, n in ((2, 1), (7, 13)):
        lam_c = 1 / (K * math.sqrt(n))
        below = equilibrium(loss, bias, K, n, lam_c * (1 - 1e-8), lam_c, lb)
        ref = md_one_layer(loss, bias, K, n, lam_c * (1 - 1e-8), lam_c, lb)
        assert bool(below.collapsed)
        np.testing.assert_allclose(float(below.fn_star) ** 2, float(ref["h2"]), rtol=1e-6)
        for factor in (1 + 1e-8, 10.0, 1e8):
            with np.errstate(over="raise", divide="raise", invalid="raise"):
                eq = equilibrium(loss, bias, K, n, lam_c * factor, lam_c, lb)
            ref = md_one_layer(loss, bias, K, n, lam_c * factor, lam_c, lb)
            assert not bool(eq.collapsed) and float(eq.fn_star) == 0.0
            assert float(eq.w_norm_star) == 0.0 and np.isnan(eq.sigma_local)
            np.testing.assert_allclose(float(eq.loss_star), float(ref["loss"]), rtol=1e-14)
            np.testing.assert_allclose(float(eq.objective_star), float(ref["f"]), rtol=1e-14)
            np.testing.assert_allclose(float(eq.objective_star), float(eq.objective_zero),
                                       rtol=1e-14)


def _mp_deep_mode(K, n, Lam, M, c=1):
    """theory.md 3.1 per-mode problem g(s) = c/(2N)(s - sqrt n)^2 + (M/2) Lam s^(2/M) in mpmath:
    (global sigma, non-zero local minimiser or None). The stationary points in x = s^(1/M) solve
    c x^(M-2)(sqrt n - x^M)/N = Lam; the local minimiser is the root above the maximiser x_m."""
    K, n, Lam, c = (mp.mpf(v) for v in (K, n, Lam, c))
    N, s = K * n, mp.sqrt(n)

    def g(sig):
        return c / (2 * N) * (sig - s) ** 2 + M / mp.mpf(2) * Lam * sig ** (mp.mpf(2) / M)

    def phi(x):
        return c * x ** (M - 2) * (s - x ** M) / N - Lam

    x_m = (s * (M - 2) / (2 * (M - 1))) ** (mp.mpf(1) / M)
    if phi(x_m) < 0:
        return mp.mpf(0), None
    x = mp.findroot(phi, (x_m, s ** (mp.mpf(1) / M)), solver="illinois")
    local = x ** M
    return (local if g(local) < g(0) else mp.mpf(0)), local


def _mp_psi(sig, K, n, M):
    """Deep CE on the ETF ray: the decay at which sigma is stationary (ncsim.theory.deep)."""
    return sig ** (1 - mp.mpf(2) / M) / (mp.sqrt(n) * (mp.exp(sig / mp.sqrt(n)) + K - 1))


@pytest.mark.parametrize("bias", ["none", "free", "reg"])
def test_mse_loss_at_tiny_decays_against_mpmath(bias):
    """MSE data loss at Lambda = 1e-9, 1e-12 and 1e-17 (depth 1: theory.md's (1 - alpha)^2
    forms; depth 2: (K - 1 + mean) (sqrt n - sigma)^2 / (2N) with sigma the mpmath root) to
    1e-12 relative. The residual sqrt(n) - sigma used to be formed by subtraction: 3e-5 relative
    error at 1e-12 and a loss of exactly 0 at 1e-17."""
    K, n, lb = 3, 2, 0.5
    for lam in (1e-9, 1e-12, 1e-17):
        eq = equilibrium("mse", bias, K, n, lam, lam, lb)
        ref = md_one_layer("mse", bias, K, n, lam, lam, lb)
        np.testing.assert_allclose(float(eq.loss_star), float(ref["loss"]), rtol=1e-12)
        eq = equilibrium("mse", bias, K, n, lam, lam, lb, depth=2)
        sig, _ = _mp_deep_mode(K, n, lam, 3)
        N, s = K * n, mp.sqrt(n)
        want = (K - 1) * (s - sig) ** 2 / (2 * N)
        if bias == "none":
            want *= mp.mpf(K) / (K - 1)
        elif bias == "reg":
            c0 = mp.mpf(lb) / (1 + mp.mpf(lb))
            sig0, _ = _mp_deep_mode(K, n, lam, 3, c0)
            want += ((s - sig0) * c0) ** 2 / (2 * N)
        np.testing.assert_allclose(float(eq.loss_star), float(want), rtol=1e-12)


@pytest.mark.parametrize("K,n", [(2, 1), (5, 7)])
@pytest.mark.parametrize("depth", [2, 4])
def test_deep_mse_mode_against_mpmath(K, n, depth):
    """Deep MSE (no bias and a regularised bias, lambda_b = 0.3): sigma, the local minimiser and
    the collapse flag on a Lambda grid from 1e-6 Lambda_crit to above Lambda_stat (so through the
    metastable window) equal the mpmath solution of theory.md's per-mode problem to 1e-12; the
    mean mode of the regularised bias has data weight lambda_b/(1 + lambda_b)."""
    M = depth + 1
    lam_c = float(Lambda_crit("mse", K, n, depth))
    lams = lam_c * np.array([1e-6, 0.3, 0.99, 1.01, 1.2, 1.6, 3.0])
    eq = equilibrium("mse", "none", K, n, lams, lams, 0.0, depth)
    reg = equilibrium("mse", "reg", K, n, lams, lams, 0.3, depth)
    for i, lam in enumerate(lams):
        sig, local = _mp_deep_mode(K, n, lam, M)
        sig0, local0 = _mp_deep_mode(K, n, lam, M, mp.mpf("0.3") / mp.mpf("1.3"))
        np.testing.assert_allclose(float(eq.sigma[i]), float(sig), rtol=1e-12, atol=0)
        assert bool(eq.collapsed[i]) == (sig > 0) == (lam < lam_c)
        if local is None:
            assert np.isnan(eq.sigma_local[i])
        else:
            np.testing.assert_allclose(float(eq.sigma_local[i]), float(local), rtol=1e-12)
        np.testing.assert_allclose(float(reg.sigma_mean[i]), float(sig0), rtol=1e-12, atol=0)
        np.testing.assert_allclose(float(eq.sigma_mean[i]), float(eq.sigma[i]), rtol=0)
    assert np.any(~eq.collapsed & np.isfinite(eq.sigma_local))  # the metastable window is hit


@pytest.mark.parametrize("K,n,depth", [(2, 1, 2), (2, 1, 4), (6, 3, 3)])
def test_deep_thresholds_against_mpmath(K, n, depth):
    """Lambda_crit (MSE) is theory.md's tau_glob solved for Lambda,
    ((sqrt n (M-2)/(M-1))^(2(M-1)/M)) / ((M-2) N); deep CE's is the root of g(sigma) = log K with
    Lambda = psi(sigma) (mpmath findroot); the basin roots a_u solve (sqrt n - a^M) a^(M-2) = N
    lambda (MSE, lower root) and psi(a^M) = lambda (CE, lower root). All to 1e-12."""
    M, N, s = depth + 1, mp.mpf(K * n), mp.sqrt(n)
    want = (s * (M - 2) / (M - 1)) ** (mp.mpf(2) * (M - 1) / M) / ((M - 2) * N)
    np.testing.assert_allclose(float(Lambda_crit("mse", K, n, depth)), float(want), rtol=1e-13)

    def gap(m):
        return (mp.log(1 + (K - 1) * mp.exp(-m)) - mp.log(K)
                + (K - 1) * mp.mpf(M) / 2 * m / (mp.exp(m) + K - 1))

    m_j = mp.findroot(gap, (mp.mpf("1e-3"), mp.mpf(60)), solver="anderson")
    ce_crit = _mp_psi(s * m_j, K, n, M)
    np.testing.assert_allclose(float(Lambda_crit("ce", K, n, depth)), float(ce_crit), rtol=1e-12)
    for loss, lam_top in (("mse", float(want)), ("ce", float(ce_crit))):
        lam = 0.5 * lam_top
        got = float(basin_threshold(loss, K, n, lam, depth))
        if loss == "mse":
            x_m = (s * (M - 2) / (2 * (M - 1))) ** (mp.mpf(1) / M)
            root = mp.findroot(lambda a, lam=lam: (s - a ** M) * a ** (M - 2) - N * lam,
                               (mp.mpf("1e-30"), x_m), solver="anderson")
        else:
            # maximiser of psi: sigma d log(psi)/d sigma = (1 - 2/M) - sigma e^m / (sqrt n (e^m
            # + K - 1)) = 0 (m = sigma / sqrt n), decreasing in sigma
            sig_m = mp.findroot(lambda v: (1 - mp.mpf(2) / M) - v * mp.exp(v / s) / (
                s * (mp.exp(v / s) + K - 1)), (mp.mpf(0), 100 * s), solver="anderson")
            root = mp.findroot(lambda v, lam=lam: _mp_psi(v, K, n, M) - lam,
                               (mp.mpf("1e-30"), sig_m), solver="anderson") ** (mp.mpf(1) / M)
        np.testing.assert_allclose(got, float(root), rtol=1e-12, err_msg=loss)


@pytest.mark.parametrize("depth", [2, 3])
def test_deep_ce_tiny_and_huge_decays(depth):
    """Deep CE at Lambda = 1e-12 and 1e-6: the ray solution is the upper root of psi(sigma) =
    Lambda (mpmath) and collapsed; at 1e3 Lambda_crit and 1e6: the origin, with f = log K and no
    warnings."""
    K, n, M = 3, 2, depth + 1
    for lam in (1e-12, 1e-6):
        eq = equilibrium("ce", "none", K, n, lam, lam, depth=depth)
        root = mp.findroot(lambda v, lam=lam: _mp_psi(v, K, n, M) - lam, float(eq.sigma) * 1.01)
        np.testing.assert_allclose(float(eq.sigma), float(root), rtol=1e-12)
        assert bool(eq.collapsed)
    for lam in (1e3 * float(Lambda_crit("ce", K, n, depth)), 1e6):
        with np.errstate(over="raise", divide="raise", invalid="raise"):
            eq = equilibrium("ce", "free", K, n, lam, lam, depth=depth)
        assert not bool(eq.collapsed) and float(eq.fn_star) == 0.0
        np.testing.assert_allclose(float(eq.objective_star), math.log(K), rtol=1e-15)


# ---------------------------------------------------------------------------------------------
# the critical decay: the minimiser changes on either side of it

# (loss, bias, K, n, depth, ratio lambda_H / lambda_W, lambda_b)
CRIT_CASES = [
    ("mse", "reg", 2, 1, 1, 3.0, 0.5),
    ("ce", "reg", 3, 2, 1, 0.5, 1.0),
    ("ce", "none", 2, 1, 2, 1.0, 0.0),   # K = 2: no lower-rank state competes with the ETF
    ("ce", "free", 2, 2, 3, 2.0, 0.0),
    ("mse", "free", 2, 3, 3, 0.5, 0.0),
]


@pytest.mark.parametrize("case", CRIT_CASES, ids=[f"{c[0]}-{c[1]}-K{c[2]}n{c[3]}L{c[4]}"
                                                  for c in CRIT_CASES])
def test_lambda_crit_separates_collapse_from_the_origin(case):
    """Direct minimisation at 0.97 and 1.03 lambda_crit (lambda_H = ratio lambda_W): below, a
    collapsed minimiser with the closed-form objective and fn*; above, the origin (fn < 1e-5, f
    = f(0)); the closed form's collapse flag agrees on both sides."""
    loss, bias, K, n, depth, ratio, lb = case
    lc = float(lambda_crit(loss, bias, K, n, depth, ratio))
    for factor in (0.97, 1.03):
        lw = factor * lc
        obj = Objective(loss, bias, (n,) * K, K + 1, (lw,) * depth, ratio * lw, lb)
        x, f = minimise(obj)
        eq = equilibrium(loss, bias, K, n, lw, ratio * lw, lb, depth)
        fn = obj.stats(x)["fn"]
        assert bool(eq.collapsed) == (factor < 1)
        np.testing.assert_allclose(f, float(eq.objective_star), rtol=1e-9)
        if factor < 1:
            assert fn > 0.05
            np.testing.assert_allclose(fn, float(eq.fn_star), rtol=1e-5)
        else:
            assert fn < 1e-5
            np.testing.assert_allclose(f, float(eq.objective_zero), rtol=1e-9)


# ---------------------------------------------------------------------------------------------
# class imbalance: the threshold from the origin's optimality condition

def _origin_gradient_norm(loss: str, bias: str, counts: tuple[int, ...], lb: float) -> float:
    """|grad_X F(0, b0)|_2 with b0 the best bias at W = H = 0 (theory.md 0.2: the origin is
    optimal iff this is <= Lambda). Written out by hand: MSE b0 = counts / (N (1 + lambda_b))
    (0 without a bias); CE b0 from scipy; X scaled by sqrt(n_k)."""
    cnt = np.asarray(counts, dtype=float)
    K, N, sq = cnt.size, cnt.sum(), np.sqrt(cnt)
    lbb = lb if bias == "reg" else 0.0
    if bias == "none":
        b = np.zeros(K)
    elif loss == "mse":
        b = cnt / (N * (1 + lbb))
    else:
        def f(b):
            lse = np.log(np.exp(b - b.max()).sum()) + b.max()
            return -(cnt @ b) / N + lse + lbb / 2 * b @ b, -cnt / N + np.exp(b - lse) + lbb * b
        b = minimize(f, np.zeros(K), jac=True, method="BFGS", options={"gtol": 1e-15}).x
    p = b if loss == "mse" else np.exp(b - np.log(np.exp(b).sum()))
    return float(np.linalg.norm((p[:, None] - np.eye(K)) * cnt / N / sq, 2))


IMB_THRESHOLD = [("mse", "none", (1, 2, 4), 0.0), ("mse", "free", (1, 2, 4), 0.0),
                 ("mse", "reg", (1, 2, 4), 0.5), ("ce", "none", (1, 2, 4), 0.0),
                 ("ce", "free", (2, 5), 0.0), ("ce", "reg", (1, 2, 4), 0.5),
                 ("ce", "none", (3, 3, 3), 0.0)]


@pytest.mark.parametrize("loss,bias,counts,lb", IMB_THRESHOLD)
def test_imbalanced_threshold_both_sides(loss, bias, counts, lb):
    """At Lambda = (1 - eps) Lambda_c (eps = 1e-2, 1e-6, 1e-8) the minimiser is collapsed and
    certified (KKT residual <= 1e-6); at (1 + eps) Lambda_c it is exactly the origin: collapsed
    False, fn* = 0, |W| = 0, f = f(0). Lambda_c = |grad f(0)|_2 by hand. (Just above, the
    numeric solution used to be a 1e-11 speck called 'collapsed'; within 1e-6 below, the
    certificate used to fail with ArithmeticError.)"""
    lc = _origin_gradient_norm(loss, bias, counts, lb)
    for eps in (1e-2, 1e-6, 1e-8):
        lo = imbalanced_equilibrium(loss, bias, counts, lc * (1 - eps), lc * (1 - eps), lb)
        assert lo.collapsed and lo.kkt_residual <= 1e-6 and lo.fn_star > 0
        # to rounding: at eps = 1e-8 the gain (~eps^2) is below one ulp of f(0)
        assert lo.objective_star <= lo.objective_zero + 1e-12 * max(1.0, abs(lo.objective_zero))
        assert eps < 1e-2 or lo.objective_star < lo.objective_zero - 1e-8
        hi = imbalanced_equilibrium(loss, bias, counts, lc * (1 + eps), lc * (1 + eps), lb)
        assert not hi.collapsed
        assert hi.fn_star == 0.0 and hi.w_norm_fro == 0.0 and hi.kkt_residual <= 1e-6
        np.testing.assert_allclose(hi.objective_star, hi.objective_zero, rtol=1e-14)


@pytest.mark.parametrize("loss,bias,counts,lb", [
    ("ce", "free", (1, 4), 0.0), ("ce", "none", (1, 1, 5), 0.0), ("mse", "reg", (1, 4), 1e3),
    ("mse", "reg", (1, 4), 1e-3), ("ce", "reg", (1, 2, 6), 0.05), ("mse", "free", (1, 1, 1, 9),
                                                                     0.0)])
def test_imbalanced_matches_direct_minimisation(loss, bias, counts, lb):
    """Certified numerics and closed forms against scipy on the full matrix objective (d = K +
    1): objective (1e-10), fn*, |W|_F, the centred class-mean norm (1e-5); K = 2 and classes of
    one sample, lambda_b from 1e-3 to 1e3."""
    lw, lh = 0.05, 0.08
    eq = imbalanced_equilibrium(loss, bias, counts, lw, lh, lb)
    obj = Objective(loss, bias, counts, len(counts) + 1, (lw,), lh, lb)
    x, f = minimise(obj)
    got = obj.stats(x)
    np.testing.assert_allclose(f, eq.objective_star, rtol=1e-10)
    np.testing.assert_allclose(got["fn"], eq.fn_star, rtol=1e-5)
    np.testing.assert_allclose(got["norm_W1"], eq.w_norm_fro, rtol=1e-5)
    np.testing.assert_allclose(got["centred"], eq.class_mean_norm_centred, rtol=1e-5)


def test_imbalanced_origin_objective_closed_forms():
    """f(0) with the best bias: CE none log K, CE free the entropy of the class frequencies, MSE
    free (1/2)(1 - sum p_k^2), MSE reg (1/2)(1 - sum p_k^2/(1 + lambda_b)) (p_k = n_k / N)."""
    counts, lb = (1, 2, 6), 0.4
    p = np.asarray(counts) / sum(counts)
    big = 10.0  # above every threshold: the minimiser is the origin
    for loss, bias, want in (("ce", "none", math.log(3)), ("ce", "free", -np.sum(p * np.log(p))),
                             ("mse", "free", 0.5 * (1 - np.sum(p ** 2))),
                             ("mse", "reg", 0.5 * (1 - np.sum(p ** 2) / (1 + lb)))):
        eq = imbalanced_equilibrium(loss, bias, counts, big, big, lb)
        np.testing.assert_allclose(eq.objective_zero, want, rtol=1e-10, err_msg=bias)
        np.testing.assert_allclose(eq.objective_star, want, rtol=1e-10, err_msg=bias)


def test_kkt_certificate_rejects_a_perturbed_solution():
    """The KKT residual of a certified solution is tiny and that of the same solution moved by
    1e-3 (in X, or in b) is large: the certificate can fail."""
    counts, lw, lh, lb = (1, 2, 4), 0.02, 0.01, 0.5
    cnt = np.asarray(counts, dtype=float)
    lam = math.sqrt(lw * lh)
    for loss in ("mse", "ce"):
        eq = imbalanced_equilibrium(loss, "reg", counts, lw, lh, lb)
        X = eq.logits - eq.bias[:, None]
        X = X * np.sqrt(cnt)[None, :]
        assert kkt_residual(loss, cnt, lam, lb, X, eq.bias, "reg") < 1e-9
        bump = np.zeros_like(X)
        bump[0, 1] = 1e-3
        assert kkt_residual(loss, cnt, lam, lb, X + bump, eq.bias, "reg") > 1e-3
        assert kkt_residual(loss, cnt, lam, lb, X, eq.bias + 1e-3, "reg") > 1e-3


# ---------------------------------------------------------------------------------------------
# theory columns

def _spec(loss="mse", bias="none", K=3, n=2, d=5, depth=1, lw=0.02, lh=0.03, lb=0.0,
          kind="gaussian", scale=0.3, width=None, t_end=2000.0, metric="nc1_trace") -> RunSpec:
    model = ModelSpec(kind="ufm" if depth == 1 else "deep", loss=loss, bias=bias, classes=K,
                      per_class=n, dim=d, depth=depth, width=width)
    return RunSpec(model=model, reg=Regularization(lambda_w=lw, lambda_h=lh, lambda_b=lb),
                   init=InitSpec(kind=kind, scale=scale, seed=1),
                   solver=SolverSpec(t_end=t_end, rtol=1e-10, atol=1e-13, gtol=1e-10, records=10),
                   onset=OnsetSpec(metric=metric)).validate()


@pytest.mark.parametrize("loss,bias,d,depth,width,rank", [
    ("mse", "none", 2, 1, None, 3), ("mse", "free", 1, 1, None, 2), ("ce", "none", 1, 1, None, 2),
    ("mse", "reg", 2, 1, None, 3), ("mse", "none", 5, 2, 2, 3)])
def test_theory_columns_refuse_d_below_the_rank(loss, bias, d, depth, width, rank):
    """With d (or the hidden width) below the rank of the closed-form minimiser (K = 3: rank 3
    for MSE without bias or with a live regularised mean mode, else 2) the closed form cannot be
    reached: scipy's minimum at that d lies above the closed-form objective. The row says
    not_applicable with every column NaN / None (it used to report the full-rank fn*); at d =
    rank the row is filled and equals the direct minimum."""
    lw, lh, lb = 0.02, 0.03, (5.0 if bias == "reg" else 0.0)
    lams_w = (lw,) * depth
    eq = equilibrium(loss, bias, 3, 2, lw, lh, lb, depth)
    obj = Objective(loss, bias, (2, 2, 2), d, lams_w, lh, lb, width)
    _, f = minimise(obj, scales=(1e-3, 1.0, 3.0))
    assert f > float(eq.objective_star) + 1e-3
    row = theory_columns(_spec(loss, bias, d=d, depth=depth, lw=lw, lh=lh, lb=lb, width=width))
    narrow = "d" if d < rank else "the hidden width"
    assert row["theory_regime"] == f"not_applicable: {narrow} below the rank of the minimiser"
    assert row["collapsed_theory"] is None
    assert all(math.isnan(row[k]) for k in ("fn_star_theory", "w_norm_star_theory",
                                            "loss_star_theory", "onset_time_theory"))
    ok = theory_columns(_spec(loss, bias, d=rank, depth=depth, lw=lw, lh=lh, lb=lb,
                              width=None if width is None else rank))
    assert ok["collapsed_theory"] is True
    np.testing.assert_allclose(ok["fn_star_theory"], float(eq.fn_star), rtol=1e-14)
    obj = Objective(loss, bias, (2, 2, 2), rank, lams_w, lh, lb)
    x, f = minimise(obj, scales=(1e-3, 1.0, 3.0))
    np.testing.assert_allclose(f, float(eq.objective_star), rtol=1e-9)
    np.testing.assert_allclose(obj.stats(x)["fn"], ok["fn_star_theory"], rtol=1e-5)


def test_theory_columns_lambda_crit_with_per_layer_decays():
    """Per-layer decays (0.05, 1.0), lambda_H = 0.05, K = 3, n = 2, depth 2: scaling every decay
    by 0.97 / 1.03 of lambda_crit_theory / lambda_W1 moves the direct minimiser from collapsed
    to the origin, and collapsed_theory is lambda_W1 < lambda_crit_theory (the column gave the
    equal-decay threshold 0.105 at ratio 1, above lambda_W1 = 0.05, for a run that is not
    collapsed). Equal per-layer decays give the plain lambda_crit."""
    K, n = 3, 2
    lws, lh = (0.05, 1.0), 0.05
    row = theory_columns(_spec(K=K, n=n, d=4, depth=2, lw=lws, lh=lh))
    lc = row["lambda_crit_theory"]
    assert row["collapsed_theory"] is bool(lws[0] < lc)
    for factor in (0.97, 1.03):
        scale = factor * lc / lws[0]
        obj = Objective("mse", "none", (n,) * K, K + 1, tuple(scale * v for v in lws),
                        scale * lh)
        x, f = minimise(obj)
        fn = obj.stats(x)["fn"]
        scaled = theory_columns(_spec(K=K, n=n, d=4, depth=2, lw=tuple(scale * v for v in lws),
                                      lh=scale * lh))
        np.testing.assert_allclose(scaled["lambda_crit_theory"], lc, rtol=1e-12)
        assert scaled["collapsed_theory"] is (factor < 1)
        assert (fn > 0.05) if factor < 1 else (fn < 1e-5)
    equal = theory_columns(_spec(K=K, n=n, d=4, depth=2, lw=(0.02, 0.02), lh=0.05))
    plain = theory_columns(_spec(K=K, n=n, d=4, depth=2, lw=0.02, lh=0.05))
    assert equal["lambda_crit_theory"] == plain["lambda_crit_theory"]


def test_theory_columns_other_onset_metric_keeps_the_equilibrium():
    """An onset metric other than nc1_trace: the equilibrium columns are filled (and equal the
    nc1_trace row's), the onset is NaN and the regime says why."""
    plain = theory_columns(_spec())
    other = theory_columns(_spec(metric="nc1"))
    assert other["theory_regime"] == "onset predicted for nc1_trace only"
    assert math.isnan(other["onset_time_theory"]) and math.isfinite(plain["onset_time_theory"])
    for key in ("fn_star_theory", "w_norm_star_theory", "loss_star_theory", "lambda_crit_theory",
                "collapsed_theory"):
        assert other[key] == plain[key], key


@pytest.fixture(scope="module")
def regime_runs():
    """Simulated end states of specs in each regime the theory columns name (one batch each)."""
    K, n = 3, 2
    lc2 = float(Lambda_crit("mse", K, n, 2))
    a_u = float(basin_threshold("mse", K, n, 0.02, 2))
    specs = {
        # deep spectral init above a_u in the metastable window (origin global)
        "metastable": _spec(K=K, n=n, d=4, depth=2, lw=1.1 * lc2, lh=1.1 * lc2,
                            kind="spectral", scale=1.0),
        # deep spectral init below the basin root: flows to the origin
        "trapped": _spec(K=K, n=n, d=4, depth=2, lw=0.02, lh=0.02, kind="spectral",
                         scale=0.9 * a_u),
        # deep spectral init just above the basin root: collapses
        "escapes": _spec(K=K, n=n, d=4, depth=2, lw=0.02, lh=0.02, kind="spectral",
                         scale=1.1 * a_u),
        # one layer above the threshold: vanishing
        "vanishing": _spec(K=K, n=n, d=4, lw=0.5, lh=0.5, kind="spectral", scale=1.0),
        # K = 2, n = 1 with a regularised bias, and CE with a regularised bias
        "k2_reg": _spec(bias="reg", K=2, n=1, d=3, lw=0.05, lh=0.1, lb=0.7),
        "ce_reg": _spec(loss="ce", bias="reg", K=K, n=n, d=4, lw=0.01, lh=0.02, lb=0.7),
    }
    res = simulate(list(specs.values()))
    return specs, {name: row for name, (_, row) in zip(specs, res.runs.iterrows(), strict=True)}


def test_spectral_onset_follows_the_flow(regime_runs):
    """Spectral inits start collapsed (nc1_trace = 0). The column is 0 where the flow stays
    collapsed and inf where every norm vanishes: metastable (the run stays collapsed at
    sigma_local although the origin is global) gives 0 and a 'metastable' regime (it gave inf);
    below the basin root the run vanishes and the column is inf with regime 'trapped' (it gave
    0); just above it the run collapses (0, 'ok'); one layer above the threshold: inf,
    'vanishing'."""
    specs, rows = regime_runs
    want = {"metastable": ("ok", 0.0, "metastable"), "trapped": ("vanishing", math.inf,
                                                                  "trapped"),
            "escapes": ("ok", 0.0, "ok"), "vanishing": ("vanishing", math.inf, "vanishing")}
    for name, (status, onset, regime) in want.items():
        row = rows[name]
        assert row["status"] == status, name
        assert row["onset_time_theory"] == onset, name
        assert row["theory_regime"].startswith(regime), name
    meta, m = rows["metastable"], specs["metastable"]
    eq = equilibrium("mse", "none", 3, 2, m.reg.lambda_w, m.reg.lambda_h, depth=2)
    assert not bool(eq.collapsed) and meta["collapsed_theory"] is False  # the global minimiser
    # the run sits at the collapsed local minimum: every one of the K modes at sigma_local, each
    # layer with singular value sigma^(1/M) (theory.md 3.1), features sigma^(2/3) / sqrt(n)
    sig = float(eq.sigma_local)
    np.testing.assert_allclose(meta["final_fn"], sig ** (2 / 3) / math.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(meta["final_objective"],
                               3 * float(_mp_deep_g(3, 2, m.reg.lambda_w, 3, sig)), rtol=1e-8)


def _mp_deep_g(K, n, Lam, M, sigma):
    """theory.md 3.1 per-mode objective at sigma (c = 1)."""
    K, n, Lam, sigma = (mp.mpf(v) for v in (K, n, Lam, sigma))
    return (sigma - mp.sqrt(n)) ** 2 / (2 * K * n) + mp.mpf(M) / 2 * Lam * sigma ** (
        mp.mpf(2) / M)


def test_regime_rows_match_simulated_end_states(regime_runs):
    """K = 2, n = 1 with a regularised bias, and CE with a regularised bias: the simulated end
    state's fn, classifier norm, loss and objective equal the theory columns and the
    equilibrium to 1e-6."""
    specs, rows = regime_runs
    for name in ("k2_reg", "ce_reg", "escapes"):
        spec, row = specs[name], rows[name]
        m = spec.model
        eq = equilibrium(m.loss, m.bias, m.classes, m.class_counts[0], spec.reg.lambda_w,
                         spec.reg.lambda_h, spec.reg.lambda_b, m.depth)
        assert row["status"] == "ok" and row["collapsed_theory"] is True, name
        for sim, want in ((row["final_fn"], eq.fn_star), (row["fn_star_theory"], eq.fn_star),
                          (row["final_w_norm"], eq.factor_norms[f"W{m.depth}"]),
                          (row["final_loss"], eq.loss_star),
                          (row["final_objective"], eq.objective_star)):
            np.testing.assert_allclose(sim, float(want), rtol=1e-6, err_msg=name)


# ---------------------------------------------------------------------------------------------
# phases

def test_phase_diagram_across_the_critical_decay():
    """Axis 'lambda' at 0.9 / 1.1 Lambda_crit (mpmath for deep MSE): one layer collapse /
    vanishing; depth 2 with a large init collapse / vanishing above Lambda_stat but collapse in
    the metastable window is reported with collapsed_global False; lambda_H = 0 gives
    no_collapse; a deep init far below a_u gives trapped."""
    K, n = 3, 2
    base = dict(loss="mse", bias="none", K=K, n=n, d=6, depth=1, lambda_w=0.01, lambda_h=0.01,
                lambda_b=0.0, init_scale=1.0)
    lc1 = 1 / (K * math.sqrt(n))
    rows = phase_diagram("lambda", [0.9 * lc1, 1.1 * lc1], "depth", [1], base)
    assert [r["phase"] for r in rows] == ["collapse", "vanishing"]
    M, N, s = 3, K * n, mp.sqrt(n)
    lc2 = float((s * (M - 2) / (M - 1)) ** (mp.mpf(2) * (M - 1) / M) / ((M - 2) * N))
    stat = float(deep_thresholds(K, n, lc2, 2).Lambda_stat)
    rows = phase_diagram("lambda", [0.9 * lc2, 1.1 * lc2, 1.1 * stat], "depth", [2], base)
    assert [r["phase"] for r in rows] == ["collapse", "collapse", "vanishing"]
    assert [r["collapsed_global"] for r in rows] == [True, False, False]
    no_h = classify("mse", "none", K, n, 6, 1, 0.01, 0.0, 0.0, 1.0)
    assert no_h["phase"] == "no_collapse"
    # deep heads with one zero decay: the origin has no basin (a_u of the geometric mean 0)
    assert classify("mse", "none", K, n, 6, 2, 0.01, 0.0, 0.0, 1e-3)["phase"] == "no_collapse"
    assert classify("mse", "none", K, n, 6, 2, 0.0, 0.01, 0.0, 1e-3)["phase"] == "collapse"
    trapped = classify("mse", "none", K, n, 6, 2, 0.02, 0.02, 0.0, 1e-3)
    assert trapped["phase"] == "trapped"


def test_phase_trapped_and_collapse_match_gaussian_runs():
    """Deep MSE and CE (K = 3, n = 2, d = 6, L = 2, lambda = 0.02): a Gaussian init at 0.3 of
    the phase boundary's scale a_u / sqrt(d/2) is classified trapped and the simulated run
    vanishes; at 3 times it is classified collapse and the run ends at fn*."""
    K, n, d, lam = 3, 2, 6, 0.02
    specs, phases = [], []
    for loss in ("mse", "ce"):
        edge = float(basin_threshold(loss, K, n, lam, 2)) / math.sqrt(d / 2)
        for f in (0.3, 3.0):
            phases.append(classify(loss, "none", K, n, d, 2, lam, lam, 0.0, f * edge)["phase"])
            specs.append(_spec(loss=loss, K=K, n=n, d=d, depth=2, lw=lam, lh=lam, scale=f * edge,
                               t_end=3000.0))
    runs = simulate(specs).runs
    assert phases == ["trapped", "collapse"] * 2
    assert runs["status"].tolist() == ["vanishing", "ok"] * 2
    for loss in ("mse", "ce"):  # within [0.4, 1 + 0.6 / sqrt d] of the edge: the seed decides
        edge = float(basin_threshold(loss, K, n, lam, 2)) / math.sqrt(d / 2)
        for f in (0.45, 0.8, 1.2):
            assert classify(loss, "none", K, n, d, 2, lam, lam, 0.0, f * edge)["phase"] == \
                "basin_edge"
    ok = runs[runs["status"] == "ok"]
    np.testing.assert_allclose(ok["final_fn"], ok["fn_star_theory"], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# bad input: InputError with a one-line message that says what to give

BAD = [
    (lambda: equilibrium("mse", "none", 1, 5, 0.01, 0.01), r"classes K must be an integer >= 2"),
    (lambda: equilibrium("ce", "none", 2.5, 5, 0.01, 0.01), r"classes K .* got 2\.5"),
    (lambda: equilibrium("mse", "none", 3, 0, 0.01, 0.01), r"samples per class n .* >= 1"),
    (lambda: equilibrium("mse", "none", 3, 2, float("nan"), 0.01), r"finite number >= 0, got nan"),
    (lambda: equilibrium("ce", "none", 3, 2, 0.01, float("inf")), r"finite number >= 0, got inf"),
    (lambda: equilibrium("mse", "none", 3, 2, (0.01, -1.0), 0.01, depth=2), r"got -1"),
    (lambda: equilibrium("mse", "reg", 3, 2, 0.01, 0.01, float("nan")),
     r"lambda_b must be a finite number >= 0, got nan"),
    (lambda: equilibrium("mse", "reg", 3, 2, 0.01, 0.01, 0.0), r"bias 'reg' needs lambda_b > 0"),
    (lambda: equilibrium("mse", "none", 3, 2, 0.01, 0.01, depth=True), r"depth must be an int"),
    (lambda: equilibrium("mse", "none", 3, 2, "a", 0.01), r"lambda_w must be a number"),
    (lambda: equilibrium("mse", "none", np.array([3, 4]), 2, np.array([0.1, 0.2, 0.3]), 0.01),
     r"broadcast to one shape, got shapes K \(2,\), .*lambda_w \(3,\)"),
    (lambda: Lambda_crit("hinge", 3, 2, 2), r"unknown loss 'hinge'; allowed: mse, ce"),
    (lambda: Lambda_crit("mse", 3, 2, 0), r"depth must be an integer >= 1"),
    (lambda: Lambda_crit("ce", 1, 2, 2), r"classes K must be an integer >= 2"),
    (lambda: lambda_crit("mse", "none", 3, 2, 1, 0.0), r"ratio .* finite number > 0"),
    (lambda: lambda_crit("mse", "none", 3, 2, 1, -2.0), r"ratio .* finite number > 0"),
    (lambda: basin_threshold("hinge", 3, 2, 0.01, 2), r"unknown loss"),
    (lambda: basin_threshold("mse", 3, 2, -0.01, 2), r"lam must be a finite number >= 0"),
    (lambda: deep_thresholds(3, 2, 0.01, True), r"depth >= 2"),
    (lambda: deep_thresholds(3, 2, float("nan"), 2), r"Lam must be a finite number >= 0, got nan"),
    (lambda: imbalanced_equilibrium("mse", "none", (1.5, 3), 0.01, 0.01), r"integer class"),
    (lambda: imbalanced_equilibrium("mse", "none", (1, 3), np.array([0.1, 0.2]), 0.01),
     r"lambda_w must be one number"),
    (lambda: imbalanced_equilibrium("ce", "none", (1, 3), None, 0.01), r"lambda_w must be one"),
    (lambda: imbalanced_equilibrium("mse", "none", (1, 3), math.inf, 0.01), r"finite lambda_w"),
    (lambda: imbalanced_equilibrium("mse", "reg", (1, 3), 0.01, 0.01, math.nan), r"lambda_b > 0"),
    (lambda: classify("mse", "none", 3, 2, 5, 2, 0.01, 0.01, 0.0, -0.1), r"init_scale .* > 0"),
    (lambda: classify("mse", "none", 3, 2, 0, 2, 0.01, 0.01, 0.0, 0.1), r"dimension d .* >= 1"),
    (lambda: phase_diagram("lambda", [0.01], "depth", [1], {"loss": "mse"}),
     r"base parameters missing: bias, K, n, d, lambda_b, init_scale"),
    (lambda: phase_diagram("lambda", [0.01], "K", [3], {
        "loss": "mse", "bias": "none", "n": 2, "d": 4, "depth": 1, "lambda_b": 0.0,
        "init_scale": 0.1, "speed": 1}), r"unknown phase diagram base parameters: speed"),
    (lambda: derivations("mse", True), r"depth must be an integer"),
]


@pytest.mark.parametrize("call,message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_an_input_error(call, message):
    """Each bad value is refused with InputError (never a raw numpy / scipy / Python error, nor
    a silent wrong answer such as 'not collapsed' for a NaN decay or CE for an unknown loss),
    with one line that names the parameter and what is allowed."""
    with np.errstate(all="raise"), pytest.raises(InputError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_compiled_expressions_broadcast_and_keep_float_values():
    """compile_expr: a result that does not use every argument still has the broadcast shape
    (numpy and torch alike), and an integer tensor argument does not truncate float arguments
    (sqrt(K) log(n) at K = 4 (int tensor), n = 2.5 is 2 log 2.5, not 2 log 2)."""
    import sympy as sp

    from ncsim.theory import symbols as S
    const = compile_expr(sp.Rational(3, 2), [S.K, S.n])
    assert np.array_equal(const(np.array([1.0, 2.0]), 3.0), [1.5, 1.5])
    assert torch.equal(const(torch.tensor([1.0, 2.0]), 3.0), torch.tensor([1.5, 1.5]))
    only_k = compile_expr(S.K, [S.K, S.n])
    assert np.array_equal(only_k(2.0, np.array([1.0, 2.0])), [2.0, 2.0])
    assert only_k(torch.tensor(2.0), torch.tensor([1.0, 2.0])).shape == (2,)
    f = compile_expr(sp.sqrt(S.K) * sp.log(S.n), [S.K, S.n])
    got = f(torch.tensor([4]), 2.5)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), [2 * math.log(2.5)], rtol=1e-15)


def test_equilibrium_with_integer_tensor_classes():
    """Integer tensors for K and n give the same equilibrium as numpy (fn* 0.84 for K = 3, n = 2,
    lambda = 0.01, depth 2; the python-float decays were cast to int64, i.e. 0)."""
    got = equilibrium("mse", "none", torch.tensor([3, 4]), torch.tensor([2, 5]), 0.01, 0.01,
                      depth=2)
    want = equilibrium("mse", "none", np.array([3, 4]), np.array([2, 5]), 0.01, 0.01, depth=2)
    np.testing.assert_allclose(got.fn_star.numpy(), want.fn_star, rtol=1e-12)


def test_critical_table_near_k2_n1():
    """critical_table at K = 2, n = 1: one layer 1/(K sqrt n) / sqrt(ratio); deep MSE
    sigma_jump = sqrt(n)(M-2)/(M-1) (theory.md 3.1); deep CE: sigma_jump is a stationary point
    of the ray objective at Lambda_crit with g(sigma) = log 2 (mpmath)."""
    tab = critical_table("mse", "none", 2, 1, 1, 4.0)
    np.testing.assert_allclose(tab["lambda_crit"], 1 / (2 * 2), rtol=1e-15)
    tab = critical_table("mse", "free", 2, 1, 3, 1.0)
    np.testing.assert_allclose(tab["sigma_jump"], 2 / 3, rtol=1e-14)
    tab = critical_table("ce", "none", 2, 1, 2, 1.0)
    M, lam, sig = 3, mp.mpf(tab["Lambda_crit"]), mp.mpf(tab["sigma_jump"])
    g = mp.log(1 + mp.exp(-sig)) + mp.mpf(M) / 2 * lam * sig ** (mp.mpf(2) / M)
    np.testing.assert_allclose(float(g), math.log(2), rtol=1e-8)
    np.testing.assert_allclose(float(_mp_psi(sig, 2, 1, M)), float(lam), rtol=1e-8)
