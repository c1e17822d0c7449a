"""Deep linear UFM (M = L + 1 factors): the per-mode problem and its first-order transition.

Per mode (theory.md 3.1), with target singular value s = sqrt(n), N samples and data weight c,

    g(sigma) = c/(2N) (sigma - s)^2 + (M/2) Lambda sigma^(2/M),
    Lambda = (lambda_H prod_l lambda_W_l)^(1/M).

For M >= 3 the origin is always a strict local minimum (the penalty term dominates near 0) and
the transition to collapse is first order. Derived here with sympy:

- stationarity, written in the per-factor amplitude x = sigma^(1/M):
  phi(x) = c x^(M-2) (s - x^M) / N = Lambda;
- the maximiser x_m of phi (a non-zero critical point exists iff phi(x_m) >= Lambda), giving
  Lambda_stat and tau_stat;
- the jump sigma_J (g(sigma_J) = g(0) and g'(sigma_J) = 0 together), giving Lambda_glob and
  tau_glob (collapse is the global optimum iff s > tau_glob, i.e. Lambda < Lambda_glob);
The basin root a_u (for equal decays the lower root of phi(x) = lambda, numeric and
certified) builds on phi and is computed in :func:`ncsim.theory.critical.basin_threshold`.

For CE on the ETF ray the same structure holds with psi(sigma) = sigma^(1-2/M) / (sqrt(n)
(exp(sigma/sqrt(n)) + K - 1)) = Lambda; its maximiser and the global threshold are numeric roots.
"""

from __future__ import annotations

import sympy as sp

from ncsim.theory import symbols as S
from ncsim.theory.cache import derivation

N_sym = sp.Symbol("N", positive=True)


@derivation
def derive_mse() -> dict[str, sp.Expr]:
    """Symbolic thresholds of the deep linear MSE per-mode problem (symbols s, N, M, Lambda, c).

    Returns
    -------
    dict with ``objective``, ``stationarity`` (g'), ``Lambda_of_sigma`` (g' = 0 solved for
    Lambda), ``phi`` (the same in x = sigma^(1/M)), ``x_max`` (maximiser of phi),
    ``Lambda_stat``, ``tau_stat``, ``sigma_jump``, ``Lambda_glob``, ``tau_glob``.
    """
    M, s, x, sig, lam_ = S.M, S.s, S.x, S.sigma, S.Lam
    g = S.c / (2 * N_sym) * (sig - s) ** 2 + M / 2 * lam_ * sig ** (2 / M)
    dg = sp.diff(g, sig)
    (lam_of_sigma,) = sp.solve(sp.Eq(dg, 0), lam_)
    phi = sp.simplify(lam_of_sigma.subs(sig, x ** M))
    (x_max,) = sp.solve(sp.diff(phi, x), x)
    lam_stat = sp.simplify(phi.subs(x, x_max))
    # jump: g(sigma) = g(0) on the stationary curve Lambda = Lambda(sigma)
    gap = sp.simplify(g.subs(lam_, lam_of_sigma) - g.subs(sig, 0))
    jumps = [r for r in sp.solve(sp.Eq(gap, 0), sig) if r != 0]
    (sigma_jump,) = jumps
    lam_glob = sp.simplify(lam_of_sigma.subs(sig, sigma_jump))
    tau_glob = _invert_for_s(lam_glob.subs(S.c, 1))
    tau_stat = _invert_for_s(lam_stat.subs(S.c, 1))
    return {
        "objective": g,
        "stationarity": dg,
        "Lambda_of_sigma": lam_of_sigma,
        "phi": phi,
        "x_max": x_max,
        "Lambda_stat": lam_stat,
        "tau_stat": tau_stat,
        "sigma_jump": sigma_jump,
        "Lambda_glob": lam_glob,
        "tau_glob": tau_glob,
    }


# a point of the symbols' domain (M = 3 factors) at which the roots of a solve are told apart
_PROBE = {S.M: 3, S.Lam: sp.Rational(1, 20), N_sym: 20, S.c: 1}


def _invert_for_s(lam_expr: sp.Expr) -> sp.Expr:
    """Solve Lambda = lam_expr(s) for s > 0 (lam_expr is a power of s times a constant).

    sympy may return several branches (e.g. a complex one, -2i at M = 3, Lambda = 1/20,
    N = 20, listed in no promised order): the root kept is the one that is real and positive
    at a probe point of the domain; anything but exactly one such root is an error."""
    sols = sp.solve(sp.Eq(S.Lam, lam_expr), S.s)
    values = [complex(sp.N(r.subs(_PROBE))) for r in sols]
    real = [r for r, v in zip(sols, values) if abs(v.imag) <= 1e-12 * abs(v) and v.real > 0]
    if len(real) != 1:
        raise RuntimeError(f"expected one real positive root of Lambda = {lam_expr} in s, got "
                           f"{sols} (values {values} at {_PROBE})")
    return sp.powsimp(sp.simplify(real[0]), force=True)


@derivation
def derive_ce() -> dict[str, sp.Expr]:
    """Deep CE on the ETF ray: objective, stationarity, and psi(sigma) = Lambda at g' = 0."""
    g = S.g_ce(S.M)
    dg = sp.diff(g, S.sigma)
    (lam_of_sigma,) = sp.solve(sp.Eq(dg, 0), S.Lam)
    log_psi_slope = sp.simplify(sp.diff(sp.log(lam_of_sigma), S.sigma))
    return {
        "objective": g,
        "stationarity": dg,
        "Lambda_of_sigma": sp.simplify(lam_of_sigma),
        "log_psi_slope": log_psi_slope,
    }
