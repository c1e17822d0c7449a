"""Gradient-flow dynamics of the label modes: growth at the origin, logistic rise, escape times.

Mode ODE (one layer, theory.md 1.2): with aligned singular vectors each label mode has scalar
weight / feature amplitudes (w, h) with

    MSE: dw/dt = (s - w h) h / N - lambda_W w,   dh/dt = (s - w h) w / N - lambda_H h,
    CE:  dw/dt = h / (sqrt(n)(e^(w h / sqrt n) + K - 1)) - lambda_W w   (and w <-> h),

s = sqrt(n), N = K n. Deep, balanced, equal decays (per-factor amplitude a, u = a^M):
MSE: da/dt = (s - a^M) a^(M-1) / N - lambda a.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import sympy as sp
from scipy.integrate import quad, solve_ivp

from ncsim.errors import is_finite_number, is_integer, require
from ncsim.theory import symbols as S
from ncsim.theory._backend import Array, namespace
from ncsim.theory.cache import derivation
from ncsim.theory.compile import compile_expr
from ncsim.theory.equilibrium import (
    LOSSES,
    broadcast_inputs,
    check_classes,
    check_decays,
    check_finite_numbers,
    geometric_mean,
)

z_inf, r_sym, u_sym = sp.symbols("z_inf r u", positive=True)
# the root sqrt((lambda_W - lambda_H)^2 + 4 g^2) of the evaluated rate forms, passed in as hypot
ROOT = sp.Symbol("root", positive=True)
g_sym = sp.Symbol("g", positive=True)


@derivation
def derive() -> dict[str, sp.Expr]:
    """Symbolic dynamics results.

    Returns
    -------
    dict with ``jacobian`` (linearised one-layer mode system at 0, coupling g = s/N),
    ``growth_rate`` (its largest eigenvalue), ``logistic`` z(t) (separation of variables of
    dz/dt = 2 r z (1 - z/z_inf)), ``logistic_rate`` r and ``logistic_limit`` z_inf for equal
    decays (matching dz/dt = (2/N) z (s - N lambda - z)), ``half_time``, ``z_integral``
    (int_0^t z), ``nc1_rate_early`` = 2(lambda_H + mu), ``nc1_rate_late`` = 2 lambda_H and
    ``escape_asymptotic`` (deep, lambda = 0, small init a_0, M >= 3).
    """
    J = sp.Matrix([[-S.lam_w, g_sym], [g_sym, -S.lam_h]])
    eig = list(J.eigenvals())
    mu = sp.simplify(max(eig, key=lambda e: e.subs({S.lam_w: 1, S.lam_h: 2, g_sym: 1})))
    mu_ufm = mu.subs(g_sym, sp.sqrt(S.n) / S.N)
    # logistic by separation of variables
    T = sp.integrate(1 / (2 * r_sym * u_sym * (1 - u_sym / z_inf)), (u_sym, S.z0, S.z),
                     conds="none")
    (zt,) = sp.solve(sp.Eq(S.t, T), S.z)
    zt = sp.simplify(zt)
    # identify r and z_inf from the equal-decay mode ODE dz/dt = 2 z ((s - z)/N - lambda)
    rhs = sp.expand(2 * S.z * ((sp.sqrt(S.n) - S.z) / S.N - S.lam))
    lin, quad_ = rhs.coeff(S.z, 1), rhs.coeff(S.z, 2)
    rate = sp.simplify(lin / 2)
    limit = sp.simplify(-lin / quad_)
    assert sp.simplify(limit - S.N * rate) == 0  # z_inf = N r
    # the growth rate and early NC1 rate as evaluated: mu = -(lW + lH)/2 + root/2 and
    # 2(lH + mu) = lH - lW + root cancel where lW >> lH (mu ~ g^2/lW, root ~ lW); rationalised,
    # mu = 2(g - Lambda)(g + Lambda)/(lW + lH + root) and, for lW > lH,
    # 2(lH + mu) = 4 g^2/(lW - lH + root); g = 1/(K sqrt n) and Lambda = sqrt(lW lH) (a symbol,
    # evaluated as the equilibria's geometric mean) as in the threshold test Lambda <
    # Lambda_crit, so that mu is 0 exactly where that test is a tie
    g2 = (sp.sqrt(S.n) / S.N) ** 2
    g_ = 1 / (S.K * sp.sqrt(S.n))
    root = sp.sqrt((S.lam_w - S.lam_h) ** 2 + 4 * g2)
    # the root is a symbol too, evaluated as hypot(lW - lH, 2 g): its square would overflow
    # past decays of 1e154 (numpy's warning and a rate of 0 at lambda_W = 1e300)
    mu_eval = 2 * (g_ - S.Lam) * (g_ + S.Lam) / (S.lam_w + S.lam_h + ROOT)
    early_eval = 4 * g2 / (S.lam_w - S.lam_h + ROOT)
    early_direct = S.lam_h - S.lam_w + ROOT  # a sum of terms >= 0 where lH >= lW
    assert sp.simplify(sp.radsimp(mu_eval.subs({S.Lam: sp.sqrt(S.lam_w * S.lam_h), ROOT: root})
                                  - mu_ufm)) == 0
    assert sp.simplify(sp.radsimp(early_eval.subs(ROOT, root) - 2 * (S.lam_h + mu_ufm))) == 0
    assert sp.simplify(early_direct.subs(ROOT, root) - 2 * (S.lam_h + mu_ufm)) == 0
    # growth_rate past decays of 1: the same form, without the overflowing product
    mu_big = (g_ - S.Lam) * ((g_ + S.Lam) / (S.lam_w / 2 + S.lam_h / 2 + ROOT / 2))
    assert sp.simplify(mu_big - mu_eval) == 0
    (t_half,) = sp.solve(sp.Eq(zt, z_inf / 2), S.t)
    tau = sp.Symbol("tau", positive=True)
    z_int = sp.simplify(sp.integrate(zt.subs(S.t, tau), (tau, 0, S.t)))
    # the forms that are evaluated (:func:`logistic`, :func:`logistic_integral`): z_inf = N r,
    # and E = (1 - e^(-2 r t)) / r = 2 t exprel(-2 r t) (finite at r = 0; exprel(x) =
    # (e^x - 1)/x), so that neither overflows at large r t nor cancels near r = 0
    e_fac = (1 - sp.exp(-2 * r_sym * S.t)) / r_sym
    z_stable = S.z0 * S.N / (S.N * sp.exp(-2 * r_sym * S.t) + S.z0 * e_fac)
    assert sp.simplify(z_stable - zt.subs(z_inf, S.N * r_sym)) == 0
    int_stable = S.N / 2 * (2 * r_sym * S.t + sp.log(sp.exp(-2 * r_sym * S.t)
                                                      + S.z0 * e_fac / S.N))
    assert sp.simplify(sp.expand_log(int_stable - z_int.subs(z_inf, S.N * r_sym),
                                     force=True)) == 0
    a0 = sp.Symbol("a_0", positive=True)
    s_ = sp.Symbol("s", positive=True)
    Nn = sp.Symbol("N", positive=True)
    lead = Nn / S.M * sp.integrate(u_sym ** (2 / S.M - 2) / s_, (u_sym, a0 ** S.M, sp.oo),
                                   conds="none")
    return {
        "jacobian": J,
        "growth_rate_g": mu,
        "growth_rate": sp.simplify(mu_ufm),
        "growth_rate_evaluated": mu_eval,
        "nc1_rate_early_evaluated": early_eval,
        "nc1_rate_early_direct": early_direct,
        "logistic": zt,
        "logistic_evaluated": z_stable,
        "z_integral_evaluated": int_stable,
        "logistic_rate": rate,
        "logistic_limit": limit,
        "half_time": sp.simplify(t_half),
        "z_integral": z_int,
        "nc1_rate_early": 2 * (S.lam_h + mu_ufm),
        "nc1_rate_late": 2 * S.lam_h,
        "escape_asymptotic": sp.simplify(lead),
    }


@functools.cache
def _fn(name: str):
    d = derive()
    args = {
        "growth_rate": [S.K, S.n, S.lam_w, S.lam_h],
        "growth_rate_evaluated": [S.K, S.n, S.lam_w, S.lam_h, S.Lam, ROOT],
        "nc1_rate_early_evaluated": [S.K, S.n, S.lam_w, S.lam_h, ROOT],
        "nc1_rate_early_direct": [S.K, S.n, S.lam_w, S.lam_h, ROOT],
        "logistic": [S.t, S.z0, z_inf, r_sym],
        "logistic_rate": [S.K, S.n, S.lam],
        "logistic_limit": [S.K, S.n, S.lam],
        "half_time": [S.z0, z_inf, r_sym],
        "z_integral": [S.t, S.z0, z_inf, r_sym],
    }[name]
    return compile_expr(d[name], args)


def _checked(names: list[str], values: list[Array]) -> tuple[Array, ...]:
    """Broadcast (K, n, *decays) named by ``names``; :class:`InputError` unless K is an integer
    >= 2, n an integer >= 1 and every decay a finite number >= 0."""
    K, n, *decays = broadcast_inputs(names, values)
    check_classes(K, n)
    xp = namespace(K)
    for name, v in zip(names[2:], decays, strict=True):
        check_decays(xp, v, name=name)
    return (K, n, *decays)


def growth_rate(K: Array, n: Array, lambda_w: Array, lambda_h: Array, depth: int = 1) -> Array:
    """Largest eigenvalue of the gradient flow linearised at the origin (per unit time).

    One layer (MSE and CE, any bias): mu = -(lW+lH)/2 + sqrt(((lW-lH)/2)^2 + 1/(K^2 n)); the
    norms of W and H grow like e^(mu t), sigma(WH) like e^(2 mu t). Deep (M >= 3): the data
    gradient is of order >= 2 at 0, so the Jacobian is -diag(lambda) and mu = -min(lambda).

    Raises :class:`InputError` for a depth that is not an integer >= 1, K not an integer >= 2,
    n not an integer >= 1 or a decay that is not a finite number >= 0.
    """
    require(is_integer(depth) and depth >= 1, f"depth must be an integer >= 1, got {depth!r}")
    K, n, lw, lh = _checked(["K", "n", "lambda_w", "lambda_h"], [K, n, lambda_w, lambda_h])
    xp = namespace(K)
    if depth == 1:  # the rationalised form (derive()["growth_rate_evaluated"])
        lam_geo, root = geometric_mean(xp, [lw, lh]), _root(xp, K, n, lw, lh)
        # past decays of ~1e154 the compiled product 2 (g - Lambda)(g + Lambda) overflows
        # (-inf, NaN at 1e308, and a RuntimeWarning, for a rate of about -min(decays)): where a
        # decay exceeds 1, the same form as (g - Lambda) ((g + Lambda) / D) with D = (lW + lH
        # + root) / 2 >= g + Lambda, in which no step overflows (D <= max(lW, lH) + g); each
        # form gets harmless decays (0, or lambda_W = 1) where the other one is taken
        big = xp.maximum(lw, lh) > 1.0
        zero = xp.full_like(lw, 0.0)
        lw_s, lh_s = xp.where(big, zero, lw), xp.where(big, zero, lh)
        mu = _fn("growth_rate_evaluated")(K, n, lw_s, lh_s, xp.where(big, zero, lam_geo),
                                          _root(xp, K, n, lw_s, lh_s))
        lw_b, lh_b = xp.where(big, lw, xp.full_like(lw, 1.0)), xp.where(big, lh, zero)
        lam_b, root_b = xp.where(big, lam_geo, zero), xp.where(big, root, zero)
        g = 1 / (K * xp.sqrt(n))
        mu_big = (g - lam_b) * ((g + lam_b) / (0.5 * lw_b + 0.5 * lh_b + 0.5 * root_b))
        return xp.where(big, mu_big, mu)[()]
    return -xp.minimum(lw, lh)[()]


def _root(xp: Any, K: Array, n: Array, lw: Array, lh: Array) -> Array:
    """sqrt((lambda_W - lambda_H)^2 + 4 g^2), g = 1/(K sqrt n), without squaring the decays
    (the ``R`` of the evaluated rate forms)."""
    return xp.hypot(lw - lh, 2 / (K * xp.sqrt(n)))


def _exprel(xp: Any, x: Array) -> Array:
    """(e^x - 1) / x, 1 at x = 0 (inf for x > 709)."""
    nonzero = x != 0
    safe = xp.where(nonzero, x, xp.full_like(x, 1.0))
    with np.errstate(over="ignore"):
        return xp.where(nonzero, xp.expm1(safe) / safe, xp.full_like(x, 1.0))


def _logistic_parts(t: Array, z0: Array, K: Array, n: Array, lam: Array
                    ) -> tuple[Any, Array, Array, Array, Array]:
    """(xp, t, z0, N, 2 r t) broadcast, with r the logistic rate (``derive()``)."""
    K, n, lam = _checked(["K", "n", "lam"], [K, n, lam])
    t, z0, K, n, lam = broadcast_inputs(["t", "z0", "K", "n", "lam"], [t, z0, K, n, lam])
    xp = namespace(t)
    check_decays(xp, z0, name="z0")  # a singular value: a finite number >= 0
    check_finite_numbers(xp, t, name="the time t")  # NaN and t < 0 gave numbers, inf NaN
    r = _fn("logistic_rate")(K, n, lam)
    return xp, t, z0, K * n, 2 * r * t


def logistic(t: Array, z0: Array, K: Array, n: Array, lam: Array) -> Array:
    """z(t) = sigma(WH) of a mode from a balanced aligned init z0 (MSE, lambda_W = lambda_H).

    Evaluated as z0 N / (N e^(-2rt) + 2 z0 t exprel(-2rt)) (``derive()["logistic_evaluated"]``,
    the logistic with z_inf = N r): finite for every t (z -> z_inf = N r for r > 0, -> 0 for
    r <= 0; 0 for z0 = 0, a fixed point), exact at the critical decay (r = 0:
    z0 / (1 + 2 z0 t / N)) and free of cancellation near it.

    Raises :class:`InputError` for K, n, lam as :func:`growth_rate`, and for z0 not a finite
    number >= 0."""
    xp, t, z0, N, x = _logistic_parts(t, z0, K, n, lam)
    with np.errstate(over="ignore", invalid="ignore"):  # z0 = 0 may give 0 inf: taken as 0
        z = z0 * N / (N * xp.exp(-x) + 2 * z0 * t * _exprel(xp, -x))
    # z0 > 1: z0 N and 2 z0 t overflow (z0 = 1e305: inf at t = 0; z0 = 1e300, t = 1e10:
    # 0.0 for z_inf = sqrt(5) at K = 4, n = 5, lambda = 0), and for r < 0 e^(-2rt) does so
    # where z0 e^(2rt) is still a float; there the same z as 1 / (e^(-x) / z0 + 2 (t/N)
    # exprel(-x)) (x = 2rt >= 0) and e^x / D, D = 1 / z0 + 2 (t/N) exprel(x) (x < 0;
    # e^(x - ln D) where e^x underflows), in which no step overflows
    big = z0 > 1
    zb = xp.where(big, z0, xp.full_like(z0, 2.0))
    xp_, xn = xp.where(x >= 0, x, -x), xp.where(x < 0, x, -x)  # x >= 0 and x < 0 parts, <= 0
    rising = 1 / (xp.exp(-xp_) / zb + 2 * (t / N) * _exprel(xp, -xp_))
    d = 1 / zb + 2 * (t / N) * _exprel(xp, xn)
    falling = xp.where(xn > -700.0, xp.exp(xn) / d, xp.exp(xn - xp.log(d)))
    z = xp.where(big, xp.where(x >= 0, rising, falling), z)
    return xp.where(z0 == 0, xp.full_like(z, 0.0), z)[()]


def logistic_half_time(z0: Array, K: Array, n: Array, lam: Array) -> Array:
    """t_1/2 = ln(z_inf/z0 - 1) / (2 r): time at which the mode reaches half its limit.

    Negative where z_inf / 2 < z0 < z_inf (the half point lies before t = 0); inf at z0 = 0
    below lambda_crit (the mode stays at 0); NaN where the mode never passes z_inf / 2:
    z0 >= z_inf (it stays at z_inf or falls towards it from above) or lambda >= lambda_crit
    (r <= 0, z_inf <= 0: it falls to 0).

    Raises :class:`InputError` for K, n, lam as :func:`growth_rate`, and for z0 not a finite
    number >= 0."""
    z0, K, n, lam = broadcast_inputs(["z0", "K", "n", "lam"], [z0, K, n, lam])
    K, n, lam = _checked(["K", "n", "lam"], [K, n, lam])
    xp = namespace(z0)
    check_decays(xp, z0, name="z0")
    r = _fn("logistic_rate")(K, n, lam)
    # z_inf = N r, as :func:`logistic` (derive()["logistic_evaluated"]): the limit form
    # sqrt(n) - K lambda n rounds to the other side of 0 than r within an ulp of
    # lambda_crit (K = 2, n = 3: r > 0, z_inf 0.0, a NaN half time for a mode that rises)
    zi = K * n * r
    rises = z0 < zi  # z_inf > 0 (r > 0) and the mode below it
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # entries not taken
        half = _fn("half_time")(z0, zi, r)
        # z_inf / z0 overflows for z0 below ~1e-306: there z0 << z_inf and
        # ln(z_inf / z0 - 1) = ln z_inf - ln z0 (> 700) to within an ulp
        wide = xp.log(xp.where(rises, zi, xp.full_like(zi, 1.0)))
        wide = (wide - xp.log(xp.where(rises, z0, xp.full_like(z0, 1.0)))) / (2 * r)
    half = xp.where(xp.isfinite(half) | ~rises, half, wide)
    return xp.where(rises, half, xp.full_like(half, math.nan))[()]  # 0-d: a scalar, as before


def logistic_integral(t: Array, z0: Array, K: Array, n: Array, lam: Array) -> Array:
    """int_0^t z(tau) dtau of the logistic mode (closed form).

    Evaluated as (N/2) log1p(2 z0 t exprel(2rt) / N), and where 2rt > 700 (exprel would
    overflow) as (N/2) (2rt + log(e^(-2rt) + 2 z0 t exprel(-2rt) / N))
    (``derive()["z_integral_evaluated"]``): finite for every t, exact at r = 0, and 0 for
    z0 = 0.

    Raises :class:`InputError` for K, n, lam as :func:`growth_rate`."""
    xp, t, z0, N, x = _logistic_parts(t, z0, K, n, lam)
    up = x > 700.0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # branches not taken
        grown = x + xp.log(xp.exp(-xp.where(up, x, -x)) + 2 * z0 * t * _exprel(xp, -x) / N)
        small = xp.log1p(2 * z0 * t * _exprel(xp, xp.where(up, -x, x)) / N)
        # 2 z0 t overflows for a large z0 t (z0 = 1e300, t = 1e10: inf for ~2e10), and 2 t
        # for t ~ 1e308: where the form above is not finite, the same with q = z0 rest, rest
        # = 2 (t/N) exprel(+-x), and where q overflows (the log's argument is then above
        # 1e308) log(z0) + log(rest), the same to within 1e-308 relative
        part = xp.where(up, -x, x)
        rest = 2 * (t / N) * _exprel(xp, part)
        q = z0 * rest
        safe_z0 = xp.where(z0 > 0, z0, xp.full_like(z0, 1.0))
        wide = xp.where(xp.isfinite(q), xp.where(up, xp.log(xp.exp(-x) + q), xp.log1p(q)),
                        xp.log(safe_z0) + xp.log(rest))
        wide = xp.where(up, x + wide, wide)
        exact = xp.where(up, grown, small)
        total = N / 2 * xp.where(xp.isfinite(exact), exact, wide)
    return xp.where(z0 == 0, xp.full_like(total, 0.0), total)[()]  # z stays 0: no log(0)


def nc1_rates(K: Array, n: Array, lambda_w: Array, lambda_h: Array) -> tuple[Array, Array]:
    """(early, late) exponential decay rates of NC1: 2(lambda_H + mu) and 2 lambda_H.

    With root = sqrt((lambda_W - lambda_H)^2 + 4 g^2), the early rate is evaluated as
    lambda_H - lambda_W + root (``derive()["nc1_rate_early_direct"]``, a sum of terms >= 0)
    where lambda_H >= lambda_W and as 4 g^2 / (lambda_W - lambda_H + root)
    (``derive()["nc1_rate_early_evaluated"]``) where lambda_W > lambda_H: neither cancels
    (2(lambda_H + mu) would, through mu, where the decays are far above g).

    Raises :class:`InputError` for bad input as :func:`growth_rate`."""
    mu = growth_rate(K, n, lambda_w, lambda_h)
    K, n, lw, lh = broadcast_inputs(["K", "n", "lambda_w", "lambda_h"],
                                    [K, n, lambda_w, lambda_h])
    xp = namespace(mu)
    above = lw > lh
    zero, one = xp.full_like(lw, 0.0), xp.full_like(lw, 1.0)
    # each form gets the decays where it is taken and (1, 0) / (0, 1) elsewhere, where the
    # other form's cancellation (a division by 0 at lambda_H >> lambda_W) would warn
    lw_e, lh_e = xp.where(above, lw, one), xp.where(above, lh, zero)
    lw_d, lh_d = xp.where(above, zero, lw), xp.where(above, one, lh)
    # K^2 n (lambda_W - lambda_H + root) overflows only where the rate is below ~1e-308
    # (lambda_W ~ 1e297 at K = 1000, n = 1e5): 4 / inf = 0 there, within the underflow
    with np.errstate(over="ignore"):
        evaluated = _fn("nc1_rate_early_evaluated")(K, n, lw_e, lh_e,
                                                    _root(xp, K, n, lw_e, lh_e))
    direct = _fn("nc1_rate_early_direct")(K, n, lw_d, lh_d, _root(xp, K, n, lw_d, lh_d))
    early = xp.where(above, evaluated, direct)
    return early[()], (2 * lh + 0 * mu)[()]  # 0-d: scalars, as growth_rate


def escape_time_asymptotic(K: Array, n: Array, a0: Array, depth: int) -> Array:
    """Deep escape time without weight decay, small init: N a0^(2-M) / ((M-2) s), M >= 3.

    Raises :class:`InputError` for a depth that is not an integer >= 2, K, n as
    :func:`growth_rate` or an init amplitude a0 that is not a finite number > 0.
    """
    require(is_integer(depth) and depth >= 2,
            f"the asymptotic escape time needs depth >= 2 (an integer), got {depth!r}")
    M = depth + 1
    K, n, a0 = broadcast_inputs(["K", "n", "a0"], [K, n, a0])
    check_classes(K, n)
    xp = namespace(K)
    check_finite_numbers(xp, a0, name="the init amplitude a0", positive=True)
    return K * n * a0 ** (2.0 - M) / ((M - 2) * xp.sqrt(n))


def _deep_rhs(a: float, K: float, n: float, lam: float, M: int, loss: str) -> float:
    s, N = math.sqrt(n), K * n
    if loss == "mse":
        return (s - a ** M) * a ** (M - 1) / N - lam * a
    m = a ** M / s
    return a ** (M - 1) * math.exp(-m) / (s * (1 + (K - 1) * math.exp(-m))) - lam * a


def _escape_time_log(K: float, n: float, a0: float, a_end: float, M: int, lam: float,
                     loss: str) -> float:
    """escape_time over a wide range (a_end > 1e6 a0) as int dw a / (da/dt), w = ln(a / a0),
    with a / (da/dt) = 1 / (drive a^(M-2) - lam), drive = (s - a^M) / N (MSE), e^(-m) / (s (1 +
    (K-1) e^(-m))) (CE), written a^(2-M) / drive for lam = 0: in a, da/dt = a^(M-1) drive
    underflows to 0 for a tiny a0 (inf for a0 = 1e-300 at depth 2, where the time is
    ~N a0^(-1) / s) and 1 / (da/dt) exceeds the floats (quad's IntegrationWarning and inf
    at a0 = 1e-160)."""
    s, N = math.sqrt(n), K * n

    def drive(a: float) -> float:
        if loss == "mse":
            return (s - a ** M) / N
        m = a ** M / s
        return math.exp(-m) / (s * (1 + (K - 1) * math.exp(-m)))

    scale = a0 ** (2 - M) if lam == 0 else 1.0  # a^(2-M) = a0^(2-M) e^((2-M) w)

    def per_w(w: float) -> float:  # a / (da/dt) / scale at a = a0 e^w
        a = a0 * math.exp(w)
        if lam == 0:
            return math.exp((2 - M) * w) / drive(a)
        return 1.0 / (drive(a) * a ** (M - 2) - lam)

    w1 = math.log(a_end / a0)
    for w in np.linspace(0.0, w1, 2001):  # the sign of da/dt (a^(M-2) may underflow, but
        a = a0 * math.exp(w)              # not where lam = 0)
        if drive(a) <= 0 or (lam > 0 and drive(a) * a ** (M - 2) - lam <= 0):
            return math.inf
    # in w = ln(a / a0) the mass lies near w = 0 whatever a0 (no ln(a0) in the exponent)
    val, _ = quad(per_w, 0.0, w1, limit=400, epsabs=0.0, epsrel=1e-12,
                  points=list(np.linspace(0.0, w1, 40)[1:-1]))
    return float(val) * scale


def escape_time(K: float, n: float, a0: float, a_end: float, depth: int, lam: float = 0.0,
                loss: str = "mse") -> float:
    """Time for the balanced per-factor amplitude to go from a0 to a_end (quadrature).

    t = int_{a0}^{a_end} da / (da/dt); inf when the flow does not reach a_end (trapped below
    the basin root, or a_end beyond the stable point).

    Raises :class:`InputError` for K, n, lam as :func:`growth_rate`, a depth that is not an
    integer >= 1, an unknown loss, or amplitudes a0, a_end that are not finite numbers >= 0.
    """
    require(is_integer(depth) and depth >= 1, f"depth must be an integer >= 1, got {depth!r}")
    require(loss in LOSSES, f"unknown loss {loss!r}; allowed: {', '.join(LOSSES)}")
    for name, v in (("K", K), ("n", n), ("lam", lam)):  # an array gave a TypeError
        require(np.ndim(v) == 0, f"{name} must be a single number, got {v!r}")
    _checked(["K", "n", "lam"], [K, n, lam])
    for name, v in (("a0", a0), ("a_end", a_end)):
        require(is_finite_number(v) and v >= 0,
                f"amplitude {name} must be a finite number >= 0, got {v!r}")
    M = depth + 1
    if a_end <= a0:
        return 0.0
    if a0 > 0 and a_end > 1e6 * a0:
        return _escape_time_log(float(K), float(n), a0, a_end, M, float(lam), loss)
    grid = np.linspace(a0, a_end, 2001)
    rates = np.array([_deep_rhs(a, K, n, lam, M, loss) for a in grid])
    if np.any(rates <= 0):
        return math.inf
    val, _ = quad(lambda a: 1.0 / _deep_rhs(a, K, n, lam, M, loss), a0, a_end, limit=400,
                  epsabs=0.0, epsrel=1e-10, points=list(np.geomspace(a0, a_end, 8)[1:-1]))
    return float(val)


def _aligned_drive(loss: str, K: float, n: float, c: float):
    """(drive(u), drive'(u)) of the aligned mode flow (u >= 0): MSE drive c (s - u) / N, CE
    (ETF ray) e^(-m) / (s (1 + (K-1) e^(-m))) = 1 / (s (e^m + K - 1)) with m = u / s; both
    decrease in u (convex losses)."""
    s, N = math.sqrt(n), K * n

    def drive(u: float) -> float:
        if loss == "mse":
            return c * (s - u) / N
        return 1.0 / (s * (math.exp(min(u / s, 700.0)) + K - 1))

    def slope(u: float) -> float:
        if loss == "mse":
            return -c / N
        return -drive(u) / (s * (1 + (K - 1) * math.exp(-min(u / s, 700.0))))

    return drive, slope


def _aligned_log_rhs(drive, decays: np.ndarray):
    """Right-hand side of the log amplitudes y = log a (M,) of one aligned label mode with
    decays ``decays`` (M,): da_j/dt = drive(u) prod_(i != j) a_i - lambda_j a_j, u = prod a,
    so dy_j/dt = drive(u) u / a_j^2 - lambda_j. In log form the amplitudes stay positive
    (the positive orthant is invariant: at a_j = 0 the drive is >= 0) whatever the step."""

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        log_u = float(y.sum())
        return drive(math.exp(min(log_u, 700.0))) * np.exp(np.minimum(log_u - 2 * y, 700.0)) \
            - decays

    return rhs


def _attracted(drive, decays: np.ndarray):
    """Event function of the origin's certain basin, negative inside it (M >= 3).

    With E = sum a_j^2 / 2 and x = 2E / M (the mean a_j^2), dE/dt = M drive(u) u -
    sum lambda_j a_j^2 <= M x (G x^(M/2 - 1) - lambda_min), since 0 <= u <= x^(M/2)
    (AM-GM) and |drive| <= G = max(drive(0), |drive(x^(M/2))|) on [0, x^(M/2)] (drive
    decreases in u). Where G x^(M/2 - 1) <= lambda_min / 2, E falls at a rate >= M x
    lambda_min / 2, x and G with it: the flow goes to the origin."""
    M, lam_min = decays.size, float(decays.min())
    g0 = drive(0.0)

    def event(t: float, y: np.ndarray) -> float:
        log_x = math.log(float(np.mean(np.exp(2 * (y - y.max()))))) + 2 * float(y.max())
        g = max(g0, abs(drive(math.exp(min(M / 2 * log_x, 700.0)))))
        return math.log(g) + (M / 2 - 1) * log_x - math.log(lam_min / 2)

    return event


def _settled_gap(drive, slope, decays: np.ndarray, target: float):
    """How far the log amplitudes y are from having collapsed: the larger of |u / target - 1|
    and |d log u / dt| / rho, with d log u / dt = drive(u) u S - sum(lambda), S = sum 1 / a_j^2,
    and rho = (|drive'(u)| u + |drive(u)|) u S + sum(lambda) the size of its terms and of its
    change with u (0 at the critical point; the second part excludes a u that passes through
    the target on its way elsewhere). The factors' balance is not asked for: with a decay of
    1e-30 on some factors u settles in time ~1 / the other decays while the balance takes
    ~1e30."""
    decay_sum = float(decays.sum())

    def gap(y: np.ndarray) -> float:
        u = math.exp(min(float(y.sum()), 700.0))
        with np.errstate(over="ignore"):
            inverse_sum = float(np.exp(-2 * y).sum())
        d, d_slope = drive(u), slope(u)
        rate = d * u * inverse_sum - decay_sum
        rho = (abs(d_slope) * u + abs(d)) * u * inverse_sum + decay_sum
        return max(abs(u / target - 1), abs(rate) / rho)

    return gap


def aligned_fate(loss: str, K: int, n: int, a0: float, decays: tuple[float, ...],
                 c: float = 1.0) -> str:
    """Where the gradient flow of one aligned label mode goes from per-factor amplitude ``a0``
    on every factor (a spectral / etf init of scale a0) with the decays ``decays`` of the
    M = depth + 1 factors (any order; all > 0).

    Returns "collapse" (the flow settles at the non-zero local minimiser: u = prod a within
    1e-7 relative of sigma_local of the mode problem at Lambda = geometric mean of the decays,
    with |d log u / dt| below 1e-7 of the size of its terms), "origin" (the flow enters a
    region that provably falls to the origin, see :func:`_attracted`) or "undecided"
    (neither after 1e6 / min(decays) of flow time: the init lies on the boundary of the
    origin's basin to within the ODE's accuracy). "origin" also where no non-zero critical
    point exists. One layer (M = 2) with a non-zero critical point is "collapse" without
    integrating: the drive decreases in u, so there is one positive critical point, a
    minimiser, and the origin is a saddle whose stable direction leaves the positive
    quadrant. With equal decays the balanced flow is one ODE and the answer is a0 > a_u
    (:func:`ncsim.theory.critical.basin_threshold`); with unequal decays the factors do not
    stay equal and a_u of the geometric mean is not the boundary (MSE, K=4, n=5, L=2,
    lambda_W = 0.04, lambda_H = 0.005: 1.1 a_u(Lambda) goes to the origin), so the M log
    amplitudes are integrated (LSODA, rtol 1e-10). Neither a dip of u (a fast-decaying
    factor falls first while the slow ones later grow out) nor a start with a tiny u
    decides the fate.

    Raises :class:`InputError` for an unknown loss, K, n as :func:`growth_rate`, a0 that is
    not a finite number > 0, or decays that are not finite numbers > 0 (at least 2 of them).
    """
    from ncsim.theory import modes
    from ncsim.theory.equilibrium import geometric_mean

    require(loss in LOSSES, f"unknown loss {loss!r}; allowed: {', '.join(LOSSES)}")
    _checked(["K", "n"], [K, n])
    require(is_finite_number(a0) and a0 > 0,
            f"amplitude a0 must be a finite number > 0, got {a0!r}")
    require(is_finite_number(c) and c > 0,  # c = -1 or NaN gave "origin"
            f"the MSE scale c must be a finite number > 0, got {c!r}")
    require(len(decays) >= 2 and all(is_finite_number(v) and v > 0 for v in decays),
            f"decays must be at least 2 finite numbers > 0 (one per factor), got {decays!r}")
    lams = np.array(decays, dtype=float)
    M = lams.size
    lam = float(geometric_mean(np, [np.asarray(v) for v in lams]))
    sol = (modes.mse_mode(K, n, lam, M, c) if loss == "mse" else modes.ce_ray(K, n, lam, M))
    target = float(sol.sigma_local)
    if not math.isfinite(target):
        return "origin"
    if M == 2:
        return "collapse"
    drive, slope = _aligned_drive(loss, float(K), float(n), c)
    rhs = _aligned_log_rhs(drive, lams)
    gap = _settled_gap(drive, slope, lams, target)
    attracted = _attracted(drive, lams)
    y0 = np.full(M, math.log(float(a0)))
    if gap(y0) <= 1e-7:
        return "collapse"
    if attracted(0.0, y0) <= 0:
        return "origin"

    def settled(t: float, y: np.ndarray) -> float:
        return gap(y) - 1e-7

    attracted.terminal = settled.terminal = True  # type: ignore[attr-defined]
    attracted.direction = settled.direction = -1.0  # type: ignore[attr-defined]
    end = solve_ivp(rhs, (0.0, 1e6 / float(lams.min())), y0,
                    method="LSODA", rtol=1e-10, atol=1e-12, events=[attracted, settled])
    if end.status == -1:
        raise ArithmeticError(f"the aligned mode ODE failed: {end.message}")
    if not np.isfinite(end.y[:, -1]).all():
        raise ArithmeticError("the aligned mode ODE failed: the amplitudes left the floats")
    if end.status == 1:  # an event ended the flow
        return "origin" if len(end.t_events[0]) else "collapse"
    return "collapse" if gap(end.y[:, -1]) <= 1e-6 else "undecided"


@functools.lru_cache(maxsize=1024)
def aligned_basin_root(loss: str, K: int, n: int, decays: tuple[float, ...]) -> float:
    """Per-factor amplitude a_u above which an aligned balanced init (every factor at a_u)
    collapses and below which it goes to the origin, for the decays ``decays`` of the M
    factors (all > 0): :func:`ncsim.theory.critical.basin_threshold` for equal decays; else a
    bisection of :func:`aligned_fate` (30 steps, relative accuracy ~1e-9 of the bracket).
    NaN where no non-zero critical point exists; 0 for one layer (M = 2).

    Raises :class:`InputError` as :func:`aligned_fate`.
    """
    from ncsim.theory.critical import basin_threshold
    from ncsim.theory.equilibrium import geometric_mean

    require(loss in LOSSES, f"unknown loss {loss!r}; allowed: {', '.join(LOSSES)}")
    require(len(decays) >= 2 and all(is_finite_number(v) and v > 0 for v in decays),
            f"decays must be at least 2 finite numbers > 0 (one per factor), got {decays!r}")
    depth = len(decays) - 1
    lam = float(geometric_mean(np, [np.asarray(float(v)) for v in decays]))
    a_equal = float(basin_threshold(loss, K, n, lam, depth))
    if len(set(decays)) == 1 or depth == 1 or not math.isfinite(a_equal):
        return a_equal
    lo, hi = _bracket(loss, K, n, decays, a_equal)
    for _ in range(30):
        mid = math.sqrt(lo * hi)
        if aligned_fate(loss, K, n, mid, decays) == "collapse":
            hi = mid
        else:
            lo = mid
    return math.sqrt(lo * hi)


def _bracket(loss: str, K: int, n: int, decays: tuple[float, ...], a_equal: float
             ) -> tuple[float, float]:
    """Amplitudes (lo, hi) around a_equal with fates "origin" and "collapse"."""
    lo, hi = a_equal / 2, a_equal * 2
    for _ in range(30):
        if aligned_fate(loss, K, n, lo, decays) == "origin":
            break
        lo /= 4
    for _ in range(30):
        if aligned_fate(loss, K, n, hi, decays) == "collapse":
            return lo, hi
        hi *= 4
    raise ArithmeticError(f"no aligned init amplitude up to {hi:g} collapses (decays {decays})")
