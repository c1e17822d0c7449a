"""Global minimiser of the scalar per-mode problems (closed form for M = 2, certified roots else).

See :mod:`ncsim.theory.symbols` for the objectives. Root selection: the non-zero local
minimiser is global where it has a lower objective than the origin, and ties go to the origin,
so that a decay set to the critical value (:func:`ncsim.theory.critical.lambda_crit`) is not
collapsed. Decided by the same expression as the threshold where it has a closed form (one
layer, deep MSE: Lambda < Lambda_crit, analytically the same as comparing the objectives, which
at Lambda_crit agree only to rounding); deep CE compares the objectives and counts a gap within
rounding (:data:`CE_TIE`) as a tie, since its Lambda_crit is a numeric root of that gap.
One layer: the state is collapsed iff Lambda < Lambda_c, the float expression of
:func:`ncsim.theory.critical.Lambda_crit` (c / (K sqrt n)), to the last ulp, and there sigma
> 0: sigma is evaluated from the distance Lambda_c - Lambda (exact near the threshold), not
as sqrt(n) - N Lambda / c (or log(1 / (Lambda sqrt n) - K + 1)), which cancel to 0 within an
ulp or three below it (:func:`one_layer_forms`).
All functions are vectorised over numpy or torch arrays; ``M`` (number of factors) is an int.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sympy as sp

from ncsim.theory import deep, ufm
from ncsim.theory import symbols as S
from ncsim.theory._backend import Array, bisect, broadcast, namespace
from ncsim.theory.compile import compile_expr


@dataclass(frozen=True)
class ModeSolution:
    """Solution of one scalar mode problem (arrays of the broadcast parameter shape).

    sigma : singular value of the logit matrix Z on the mode at the global minimiser (0 when
        the origin wins).
    sigma_local : the non-zero local minimiser (NaN when there is no non-zero critical point).
    collapsed : sigma > 0.
    objective, objective_zero : g(sigma) and g(0).
    """

    sigma: Array
    sigma_local: Array
    collapsed: Array
    objective: Array
    objective_zero: Array


@functools.cache
def one_layer_forms() -> dict[str, sp.Expr]:
    """The evaluated one-layer forms of sigma*, in Lambda and Lambda_c (the threshold), each
    asserted equal to the derived ``sigma_star`` (:mod:`ncsim.theory.ufm`) at Lambda_c =
    c / (K sqrt n), the root of the derived MSE sigma* (CE: its derived Lambda_crit).

    - ``mse``: sqrt(n) (1 - Lambda / Lambda_c); for Lambda < Lambda_c (floats) the quotient
      rounds to at most 1 - 2^-53, so 1 - q is exact and > 0 (sqrt(n) - N Lambda / c rounds
      to 0 or below within ~3 ulps under Lambda_c: MSE K = 2, n = 3 one ulp below).
    - ``ce``: sqrt(n) log1p(K (Lambda_c - Lambda) / Lambda) (log1p written as log(1 + x)
      here); Lambda_c - Lambda is exact near the threshold and > 0 below it (log(1 /
      (Lambda sqrt n) - K + 1) rounds to log(1) = 0 there: CE K = 3, n = 5 one ulp below).
    """
    lam_c = sp.Symbol("Lambda_c", positive=True)
    sig_mse = ufm.derive_mse()["sigma_star"]
    (root,) = sp.solve(sig_mse, S.Lam)
    assert sp.simplify(root - S.c / (S.K * sp.sqrt(S.n))) == 0
    mse = sp.sqrt(S.n) * (1 - S.Lam / lam_c)
    assert sp.simplify(mse.subs(lam_c, root) - sig_mse) == 0
    ce_d = ufm.derive_ce()
    assert sp.simplify(ce_d["Lambda_crit"] - 1 / (S.K * sp.sqrt(S.n))) == 0
    arg = S.K * (lam_c - S.Lam) / S.Lam
    ce = sp.sqrt(S.n) * sp.log(1 + arg)
    # sigma* = sqrt(n) log(u): compare the arguments u
    u_derived = sp.simplify(sp.exp(ce_d["sigma_star"] / sp.sqrt(S.n)))
    assert sp.simplify((1 + arg).subs(lam_c, ce_d["Lambda_crit"]) - u_derived) == 0
    return {"mse": mse, "ce": ce, "Lambda_c_mse": root, "Lambda_c_ce": ce_d["Lambda_crit"]}


def _mse_sigma2(s: Array, Lam: Array, lam_c: Array) -> Array:
    """One-layer MSE sigma* = sqrt(n) (1 - Lambda / Lambda_c) (> 0 for Lambda < Lambda_c)."""
    one_layer_forms()
    return s * (1 - Lam / lam_c)


def _ce_sigma2(s: Array, K: Array, Lam: Array, lam_c: Array) -> Array:
    """One-layer CE sigma* = sqrt(n) log1p(K (Lambda_c - Lambda) / Lambda) (> 0 for 0 < Lambda
    < Lambda_c)."""
    one_layer_forms()
    xp = namespace(s, Lam)
    return s * xp.log1p(K * (lam_c - Lam) / Lam)


@functools.cache
def deep_mse_expression(name: str):
    """The deep-MSE expression ``name`` of :func:`ncsim.theory.deep.derive_mse` as a numeric
    function of (N, sqrt n, M, Lambda, c); :mod:`ncsim.theory.critical` evaluates the same
    functions, so a threshold and the tie rule of :func:`mse_mode` round alike."""
    return compile_expr(deep.derive_mse()[name], [deep.N_sym, S.s, S.M, S.Lam, S.c])


# deep CE: an objective gap |g(sigma_local) - g(0)| at most this (relative to g(0) = ln K) is
# a tie (the origin wins). Lambda_crit is the bisected root of that gap, so at Lambda_crit the
# computed gap is a few ulps of either sign: measured over K = 2..20, n = 1..50, L = 2..4, at
# most 9.4e-16 relative. The window it opens below Lambda_crit is below 1e-12 relative in
# Lambda (every one of those points is collapsed at (1 - 1e-12) lambda_crit).
CE_TIE = 1e-13
# One-layer CE ray: below this Lambda sqrt(n), 1 / (Lambda sqrt n) nears float64's overflow
# (5.6e-309) and sigma takes its far form -sqrt(n) log(Lambda sqrt n).
CE_FAR = 1e-300


def mse_objective(sigma: Array, K: Array, n: Array, Lam: Array, M: int, c: Array = 1.0) -> Array:
    """g(sigma) = c/(2N)(sigma - sqrt(n))^2 + (M/2) Lambda sigma^(2/M), N = K n."""
    xp = namespace(sigma, Lam)
    return c / (2 * K * n) * (sigma - xp.sqrt(n * 1.0)) ** 2 + M / 2 * Lam * sigma ** (2.0 / M)


def ce_objective(sigma: Array, K: Array, n: Array, Lam: Array, M: int) -> Array:
    """g(sigma) = log(1 + (K-1) e^(-sigma/sqrt n)) + (K-1)(M/2) Lambda sigma^(2/M)."""
    xp = namespace(sigma, Lam)
    m = sigma / xp.sqrt(n * 1.0)
    return xp.log1p((K - 1) * xp.exp(-m)) + (K - 1) * M / 2 * Lam * sigma ** (2.0 / M)


def mse_mode(K: Array, n: Array, Lam: Array, M: int, c: Array = 1.0) -> ModeSolution:
    """Global minimiser of the MSE per-mode problem with data weight ``c``."""
    K, n, Lam, c = broadcast(K, n, Lam, c)
    xp = namespace(K)
    s = xp.sqrt(n)
    g0 = c * n / (2 * K * n)
    if M == 2:
        # strict threshold test (collapse iff K Lambda sqrt(n) < c), written as the comparison
        # Lambda < c / (K sqrt n) with the expression of Lambda_crit, so that Lambda set to
        # Lambda_crit is never collapsed (the closed form alone rounds to sigma ~ 1e-16 there)
        # and every Lambda below it is, with sigma > 0 (evaluated from Lambda / Lambda_c)
        lam_c = c / (K * s)
        live = Lam < lam_c
        safe_c = xp.where(live, lam_c, xp.full_like(s, 1.0))
        sig = xp.where(live, _mse_sigma2(s, Lam, safe_c), xp.full_like(s, 0.0))
        local = xp.where(live, sig, xp.full_like(sig, float("nan")))
    else:
        N = K * n
        x_max = (s * (M - 2) / (2 * (M - 1))) ** (1.0 / M)

        def phi(x: Array) -> Array:
            return c * x ** (M - 2) * (s - x ** M) / N

        has = phi(x_max) >= Lam
        # the upper end lies just above s^(1/M), where phi < 0 <= Lambda for certain: at
        # s^(1/M) itself s - x^M rounds to either sign, and a Lambda of 0 or below ~1e-16
        # lost the sign change (bisect gave NaN, read as 'vanishing')
        x_root = bisect(lambda x: phi(x) - Lam, x_max, s ** (1.0 / M) * (1 + 1e-14))
        root = xp.where(Lam > 0, x_root ** M, s)  # Lambda = 0: sigma = sqrt(n) exactly
        local = xp.where(has, root, xp.full_like(s, float("nan")))
        # the non-zero state beats the origin iff Lambda < Lambda_glob (strict: the origin wins
        # the tie at Lambda_glob, where the objectives agree only to rounding)
        win = has & (Lam < deep_mse_expression("Lambda_glob")(N, s, M, Lam, c))
        sig = xp.where(win, local, xp.full_like(s, 0.0))
    g = mse_objective(sig, K, n, Lam, M, c)
    return ModeSolution(sig, local, sig > 0, g, g0)


def _ce_psi(sigma: Array, K: Array, n: Array, M: int) -> Array:
    """psi(sigma) = sigma^(1-2/M) / (sqrt(n)(e^(sigma/sqrt n) + K - 1)), written stably."""
    xp = namespace(sigma, K)
    m = sigma / xp.sqrt(n)
    return sigma ** (1 - 2.0 / M) * xp.exp(-m) / (xp.sqrt(n) * (1 + (K - 1) * xp.exp(-m)))


def _ce_slope_sign(sigma: Array, K: Array, n: Array, M: int) -> Array:
    """A positive multiple of d log(psi)/d sigma: (M-2) sqrt(n)(1 + (K-1)e^(-m)) - M sigma."""
    xp = namespace(sigma, K)
    return (M - 2) * xp.sqrt(n) * (1 + (K - 1) * xp.exp(-sigma / xp.sqrt(n))) - M * sigma


def ce_psi_max(K: Array, n: Array, M: int) -> tuple[Array, Array]:
    """Maximiser sigma_m of psi and Lambda_stat = psi(sigma_m) (M >= 3): certified bisection."""
    K, n = broadcast(K, n)
    xp = namespace(K)
    hi = (M - 2) / M * xp.sqrt(n) * K * (1 + 1e-12) + 1e-300
    sig_m = bisect(lambda v: _ce_slope_sign(v, K, n, M), xp.full_like(K, 0.0), hi)
    return sig_m, _ce_psi(sig_m, K, n, M)


def ce_ray(K: Array, n: Array, Lam: Array, M: int) -> ModeSolution:
    """Global minimiser of CE on the ETF ray (all K - 1 modes equal)."""
    K, n, Lam = broadcast(K, n, Lam)
    xp = namespace(K)
    g0 = xp.log(K)
    nan = xp.full_like(K, float("nan"))
    if M == 2:
        lam_c = 1 / (K * xp.sqrt(n))
        live = Lam < lam_c  # the expression of Lambda_crit (see mse_mode)
        with_lam = Lam > 0
        safe = xp.where(with_lam & live, Lam, lam_c / 2)
        # sigma = sqrt(n) log1p(K (Lambda_c - Lambda) / Lambda) (> 0 below Lambda_c, to the
        # last ulp); where 1 / (Lambda sqrt n) would overflow, (K - 1) Lambda sqrt n is below
        # 1e-270 and sigma = -sqrt(n) log(Lambda sqrt n) to the last digit
        far = safe * xp.sqrt(n) < CE_FAR
        sig = _ce_sigma2(xp.sqrt(n), K, xp.where(far, lam_c / 2, safe), lam_c)
        sig = xp.where(far, -xp.sqrt(n) * (xp.log(safe) + xp.log(n) / 2), sig)
        sig = xp.where(with_lam, sig, xp.full_like(K, float("inf")))
        local = xp.where(live, sig, nan)
        sig = xp.where(live, sig, xp.full_like(K, 0.0))
    else:
        sig_m, psi_max = ce_psi_max(K, n, M)
        has = psi_max >= Lam
        hi = 2 * sig_m + xp.sqrt(n)
        for _ in range(2000):
            grow = has & (_ce_psi(hi, K, n, M) > Lam) & xp.isfinite(hi)
            if not xp.any(grow):
                break
            hi = xp.where(grow, 2 * hi, hi)
        root = bisect(lambda v: _ce_psi(v, K, n, M) - Lam, sig_m, hi)
        root = xp.where(Lam > 0, root, xp.full_like(K, float("inf")))
        local = xp.where(has, root, nan)
        g_loc = ce_objective(xp.where(has & (Lam > 0), local, sig_m), K, n, Lam, M)
        win = has & ((g_loc < g0 - CE_TIE * g0) | (Lam <= 0))
        sig = xp.where(win, local, xp.full_like(K, 0.0))
    g = ce_objective(xp.where(xp.isfinite(sig), sig, xp.full_like(sig, 0.0)), K, n, Lam, M)
    g = xp.where(xp.isfinite(sig), g, xp.full_like(g, 0.0))
    return ModeSolution(sig, local, sig > 0, g, g0)
