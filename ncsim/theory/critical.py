"""Critical weight decay and the deep-model thresholds (global, stationary, jump, basin).

``lambda_crit`` is the critical lambda_W when lambda_H = ratio x lambda_W (every W_l shares
lambda_W): below it the collapsed (ETF) state has a lower objective than the origin, above it
the origin has. For one layer (MSE and CE) and for deep MSE this makes the collapsed state the
global minimiser below and the origin the global minimiser above. For deep CE it compares only
the ETF ray with the origin: a lower-rank configuration can beat both, on either side of the
threshold (K = 3, n = 2, L = 2: a rank-1 head has lower f at 0.98 and at 1.02 Lambda_crit), so
there the threshold is not a statement about the global minimiser; ``equilibrium(...,
check_lower_rank=True)`` reports such a case as ``lower_rank_better`` (numeric, a witness).
One layer: from g'(0+) = 0 (closed form, MSE and CE alike). Deep MSE: from the jump condition
(closed form). Deep CE: certified bisection of g(sigma*(Lambda)) - g(0) in log Lambda (monotone
in Lambda).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ncsim.errors import InputError, is_finite_number, is_integer, require
from ncsim.theory import modes
from ncsim.theory._backend import Array, bisect, broadcast, namespace
from ncsim.theory.equilibrium import (
    broadcast_inputs,
    check_classes,
    check_decays,
    check_model,
)


def Lambda_crit(loss: str, K: Array, n: Array, depth: int = 1) -> Array:
    """Critical geometric-mean decay Lambda_glob (collapse iff Lambda < Lambda_crit; deep CE:
    the ETF beats the origin iff Lambda < Lambda_crit, a lower-rank state may beat both, see
    the module docstring).

    One layer: 1/(K sqrt(n)) (MSE and CE). Deep MSE: the sympy jump formula. Deep CE: numeric.
    Raises :class:`InputError` for an unknown loss, a depth that is not an integer >= 1, or K, n
    that are not integers >= 2 and >= 1 (text and booleans are not numbers: "3" and True are
    refused, not read as 3 and 1).
    """
    check_model(loss, "none", depth)
    K, n = broadcast_inputs(["K", "n"], [K, n])
    check_classes(K, n)
    xp = namespace(K)
    M = depth + 1
    if depth == 1:
        return 1 / (K * xp.sqrt(n))
    if loss == "mse":
        glob = modes.deep_mse_expression("Lambda_glob")
        return glob(K * n, xp.sqrt(n), M, 0.0 * K + 1.0, 1.0 + 0.0 * K)
    return _ce_Lambda_glob(K, n, M)


def _ce_Lambda_glob(K: Array, n: Array, M: int) -> Array:
    _, lam_stat = modes.ce_psi_max(K, n, M)
    xp = namespace(K)

    def gap(log_lam: Array) -> Array:
        lam = xp.exp(log_lam)
        sol = modes.ce_ray(K, n, lam, M)
        g_loc = modes.ce_objective(sol.sigma_local, K, n, lam, M)
        gap_ = g_loc - sol.objective_zero
        return xp.where(xp.isfinite(gap_), gap_, xp.full_like(gap_, 1.0))  # no critical point

    hi = xp.log(lam_stat)
    return xp.exp(bisect(gap, hi - 60.0, hi, iters=80))


def lambda_crit(loss: str, bias: str, K: Array, n: Array, depth: int = 1,
                ratio: Array = 1.0) -> Array:
    """Critical lambda_W (with lambda_H = ratio x lambda_W, all layers equal).

    Parameters
    ----------
    loss, bias : model (the bias does not move the threshold of the centred modes).
    K, n : classes, samples per class (balanced). depth : L. ratio : lambda_H / lambda_W.

    Returns
    -------
    Array: lambda_W,c = Lambda_crit / ratio^(1/M) with M = depth + 1.

    Raises :class:`InputError` for a bad model, K or n (as :func:`Lambda_crit`) or a ratio that
    is not a finite number > 0.
    """
    check_model(loss, bias, depth)
    K, n, ratio = broadcast_inputs(["K", "n", "ratio"], [K, n, ratio])
    xp = namespace(ratio)
    if xp.any(~(ratio > 0) | ~xp.isfinite(ratio)):
        raise InputError("ratio lambda_H / lambda_W must be a finite number > 0")
    return Lambda_crit(loss, K, n, depth) / ratio ** (1.0 / (depth + 1))


def lambda_b_crit_mean_mode(K: Array, n: Array, lambda_w: Array, lambda_h: Array) -> Array:
    """MSE, regularised bias, one layer: the mean mode dies iff lambda_b/(1+lambda_b) <= K r.

    Returns the critical lambda_b (the mean mode is non-zero for lambda_b above it), or inf
    where K r >= 1; r = sqrt(n lambda_W lambda_H). Vectorised like the other closed forms,
    without input checks: the values mean something for K >= 2, n >= 1 and lambda_W,
    lambda_H >= 0 (the command line checks them).
    """
    K, n, lw, lh = broadcast(K, n, lambda_w, lambda_h)
    xp = namespace(K)
    with np.errstate(over="ignore"):
        product = n * lw * lh
    # a product below the normal floats (decays ~1e-160) has lost digits, and one that
    # overflowed (n lambda_W above 1.8e308, lambda_H subnormal) has none: its factors' roots
    split = K * xp.sqrt(n) * xp.sqrt(lw) * xp.sqrt(lh)
    normal = (product >= 2.2250738585072014e-308) & (product <= 1.7976931348623157e308)
    q = xp.where(normal, K * xp.sqrt(product), split)
    return xp.where(q < 1, q / xp.where(q < 1, 1 - q, 1.0), xp.full_like(q, float("inf")))


@dataclass(frozen=True)
class DeepThresholds:
    """Thresholds of the deep linear MSE mode problem (arrays), theory.md 3.1.

    tau_glob, tau_stat : collapse is global iff sqrt(n) > tau_glob; a non-zero critical point
        exists iff sqrt(n) >= tau_stat (at equality a double root: an inflection point of
        the mode objective, not a minimiser).
    Lambda_glob, Lambda_stat : the same as bounds on Lambda.
    sigma_jump : sigma* at the global threshold (the size of the first-order jump).
    """

    tau_glob: Array
    tau_stat: Array
    Lambda_glob: Array
    Lambda_stat: Array
    sigma_jump: Array


def deep_thresholds(K: Array, n: Array, Lam: Array, depth: int) -> DeepThresholds:
    """Closed-form deep-linear MSE thresholds at geometric-mean decay ``Lam`` (depth >= 2).

    Raises :class:`InputError` (a ValueError) for a depth that is not an integer >= 2, K, n
    that are not integers >= 2 and >= 1, or a decay that is not a finite number >= 0.
    """
    require(is_integer(depth) and depth >= 2,
            f"deep thresholds need depth >= 2 (an integer), got {depth!r}")
    K, n, Lam = broadcast_inputs(["K", "n", "Lam"], [K, n, Lam])
    check_classes(K, n)
    xp = namespace(K)
    check_decays(xp, Lam, name="the decay Lam")
    M, N, s, one = depth + 1, K * n, xp.sqrt(n), 1.0 + 0.0 * K
    f = modes.deep_mse_expression
    return DeepThresholds(
        tau_glob=f("tau_glob")(N, s, M, Lam, one),
        tau_stat=f("tau_stat")(N, s, M, Lam, one),
        Lambda_glob=f("Lambda_glob")(N, s, M, Lam, one),
        Lambda_stat=f("Lambda_stat")(N, s, M, Lam, one),
        sigma_jump=f("sigma_jump")(N, s, M, Lam, one),
    )


def basin_threshold(loss: str, K: Array, n: Array, lam: Array, depth: int) -> Array:
    """Per-factor amplitude a_u below which a balanced aligned init flows to the origin.

    Equal decays lambda on all M = depth + 1 factors. MSE: the lower root of
    (s - a^M) a^(M-2) = N lambda (certified bisection in [0, x_max], on a bracket of bounded
    ratio, so accurate to rounding down to the smallest decays); CE: the lower root of
    psi(sigma) = lambda, a_u = sigma_u^(1/M) (solved in a). Returns 0 for depth 1 (the origin
    is a saddle below lambda_crit) and NaN where no non-zero critical point exists (everything
    vanishes; CE: lambda > Lambda_stat of :func:`ncsim.theory.modes.ce_psi_max`, the rule of
    the equilibrium, so the two agree up to the last ulp).
    Raises :class:`InputError` for an unknown loss, a bad depth, K or n, or a decay that is not a
    finite number >= 0.
    """
    check_model(loss, "none", depth)
    K, n, lam = broadcast_inputs(["K", "n", "lam"], [K, n, lam])
    check_classes(K, n)
    xp = namespace(K)
    check_decays(xp, lam, name="the decay lam")
    M = depth + 1
    if depth == 1:
        return xp.where(lam < 1 / (K * xp.sqrt(n)), 0.0 * K, xp.full_like(K, float("nan")))
    s, N = xp.sqrt(n), K * n
    # The bisection runs on a bracket [lo, hi] with hi / lo bounded (about 2^(1/(M-2)) for
    # MSE, ((e^(sig_m/s) + K - 1) / K)^(1/(M-2)) for CE), so that the root is resolved to
    # rounding for every decay; a bracket [0, x_max] would resolve it only to x_max 2^-200 in
    # absolute terms (wrong digits for a decay below ~1e-20, where the root is that small).
    if loss == "mse":
        x_max = (s * (M - 2) / (2 * (M - 1))) ** (1.0 / M)
        # on [0, x_max]: s M / (2(M-1)) <= s - a^M <= s, so the root a satisfies
        # N lam / s <= a^(M-2) <= 2(M-1)/M N lam / s
        # (the bounds widened by 0.1%: at the bounds themselves the sign rounds either way)
        hi = xp.minimum(x_max, 1.001 * (2 * (M - 1) / M * N * lam / s) ** (1.0 / (M - 2)))
        lo = xp.minimum(hi, 0.999 * (N * lam / s) ** (1.0 / (M - 2)))
        return bisect(lambda a: a ** (M - 2) * (s - a ** M) / N - lam, lo, hi)
    sig_m, lam_stat = modes.ce_psi_max(K, n, M)
    # in the amplitude a = sigma^(1/M) (sigma itself underflows for a tiny decay):
    # psi(a^M) = a^(M-2) / (s (e^(a^M / s) + K - 1)); on [0, sig_m] K <= e^(a^M/s) + K - 1 <=
    # e^(sig_m/s) + K - 1, so the root satisfies lam s K <= a^(M-2) <= lam s (e^(sig_m/s) + K - 1)
    with np.errstate(over="ignore"):
        top = lam * s * (xp.exp(sig_m / s) + K - 1)
    hi = xp.minimum(sig_m ** (1.0 / M), 1.001 * top ** (1.0 / (M - 2)))
    lo = xp.minimum(hi, 0.999 * (lam * s * K) ** (1.0 / (M - 2)))

    def psi_minus_lam(a: Array) -> Array:
        return a ** (M - 2) / (s * (xp.exp(a ** M / s) + K - 1)) - lam

    root = bisect(psi_minus_lam, lo, hi)
    # A root exists iff lam <= Lambda_stat = psi(sig_m), the rule of the equilibrium
    # (modes.ce_ray); within a few ulps of Lambda_stat psi evaluated in a rounds to either
    # side of lam, so the bracket alone gave NaN where the equilibrium has a critical point
    # (and a root where it has none). At the fold the root is the maximiser's amplitude.
    fold = sig_m ** (1.0 / M)
    root = xp.where(xp.isfinite(root), root, fold)
    return xp.where(lam <= lam_stat, root, xp.full_like(root, float("nan")))


def _whole(value: object) -> bool:
    """Whether ``value`` is an integer or a finite float with an integer value (4.0)."""
    return is_integer(value) or (is_finite_number(value) and float(value).is_integer())


def critical_table(loss: str, bias: str, K: int, n: int, depth: int, ratio: float = 1.0
                   ) -> dict[str, float]:
    """Scalars for reports: lambda_crit, Lambda_crit and, for a deep model, the amplitude
    sigma_jump of the collapsed state at Lambda_crit (deep MSE: closed form; deep CE: the
    ray solution just below Lambda_crit, at Lambda_crit (1 - 1e-9))."""
    require(_whole(K) and K >= 2, f"classes K must be an integer >= 2, got {K!r}")
    require(_whole(n) and n >= 1, f"samples per class n must be an integer >= 1, got {n!r}")
    require(is_finite_number(ratio) and ratio > 0,
            f"ratio lambda_H / lambda_W must be a finite number > 0, got {ratio!r}")
    lc = float(lambda_crit(loss, bias, K, n, depth, ratio))
    out = {"lambda_crit": lc, "Lambda_crit": float(Lambda_crit(loss, K, n, depth))}
    if depth >= 2 and loss == "mse":
        th = deep_thresholds(K, n, out["Lambda_crit"], depth)
        out["sigma_jump"] = float(th.sigma_jump)
    if depth >= 2 and loss == "ce":
        lam = out["Lambda_crit"]
        sol = modes.ce_ray(K, n, np.array(lam * (1 - 1e-9)), depth + 1)
        out["sigma_jump"] = float(sol.sigma)
    return out
