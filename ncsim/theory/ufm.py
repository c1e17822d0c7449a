"""One-layer UFM (M = 2 factors W, H): closed forms derived with sympy.

The per-mode objectives of :mod:`ncsim.theory.symbols` with M = 2 are convex in sigma, so the
stationary point, when positive, is the global minimiser; otherwise the minimiser is sigma = 0.
Lambda = sqrt(lambda_W lambda_H). Every expression here is derived from the objective: the
stationarity condition g'(sigma) = 0 is solved with ``sympy.solve`` and the threshold from
g'(0+) = 0.
"""

from __future__ import annotations

import sympy as sp

from ncsim.theory import symbols as S
from ncsim.theory.cache import derivation


@derivation
def derive_mse() -> dict[str, sp.Expr]:
    """MSE one-layer UFM derivation.

    Returns
    -------
    dict with ``objective`` g(sigma), ``stationarity`` g'(sigma), ``sigma_star`` (root of
    g' = 0 for data weight c), ``Lambda_crit`` (g'(0+) = 0 solved for Lambda, c = 1),
    ``lambda_crit_ratio`` (critical lambda_W when lambda_H = rho lambda_W), and the norms of
    the factors per mode: ``a_w2`` = sigma sqrt(lambda_H/lambda_W) (squared W singular value),
    ``a_h2`` = sigma sqrt(lambda_W/lambda_H); per bias ("none", "free", "reg") the squared
    classifier row norm ``w_row2_<bias>``, the squared feature norm ``h2_<bias>`` (fn*^2) and
    the optimal objective ``objective_star_<bias>``, and ``sigma_mean_reg``, the mean-mode
    singular value with a regularised bias. These are the forms while every mode is alive
    (sigma_star > 0, and sigma_mean_reg > 0 for "reg"); a mode below its threshold is 0.
    """
    g = S.g_mse(2)
    dg = sp.diff(g, S.sigma)
    (sig,) = sp.solve(sp.Eq(dg, 0), S.sigma)
    # convexity: g'' > 0, so the root is the minimiser when it is positive
    assert sp.simplify(sp.diff(g, S.sigma, 2)) .is_positive
    (lam_c,) = sp.solve(sp.Eq(sig.subs(S.c, 1), 0), S.Lam)
    lam_geo = sp.sqrt(S.lam_w * S.lam_h)
    (lw_c,) = sp.solve(sp.Eq(lam_geo.subs(S.lam_h, S.rho * S.lam_w), lam_c), S.lam_w)
    # balancing: minimise lambda_W a^2/2 + lambda_H b^2/2 subject to a b = sigma
    a = sp.Symbol("a", positive=True)
    split = S.lam_w * a ** 2 / 2 + S.lam_h * (S.sigma / a) ** 2 / 2
    (a_opt,) = sp.solve(sp.diff(split, a), a)
    a2 = sp.simplify(a_opt ** 2)
    h2 = sp.simplify((S.sigma / a_opt) ** 2)
    assert sp.simplify(split.subs(a, a_opt) - sp.sqrt(S.lam_w * S.lam_h) * S.sigma) == 0
    sig_lam = sig.subs(S.Lam, lam_geo)
    frac = (S.K - 1) / S.K
    # a regularised bias leaves the mean label mode the data weight c0 = lambda_b/(1 + lambda_b)
    # (derive_reg_bias_mean_mode); its singular value is sigma_star at c = c0 while positive
    sig_c1, sig_c0 = sig_lam.subs(S.c, 1), sig_lam.subs(S.c, S.lam_b / (1 + S.lam_b))
    g_star = g.subs(S.sigma, sig)
    return {
        "objective": g,
        "stationarity": dg,
        "sigma_star": sig,
        "sigma_star_lambda": sp.simplify(sig_lam),
        "Lambda_crit": lam_c,
        "lambda_crit_ratio": lw_c,
        "a_w2": a2,
        "a_h2": h2,
        "w_row2_none": sp.simplify(a2.subs(S.sigma, sig_lam.subs(S.c, 1))),
        "h2_none": sp.simplify((h2 / S.n).subs(S.sigma, sig_lam.subs(S.c, 1))),
        "objective_star_per_mode": sp.simplify(g_star.subs(S.c, 1)),
        # |w_k|^2 and |h|^2 (row norm and uncentred feature norm, squared) per bias: no bias
        # K ordinary modes, free bias the K - 1 centred ones (b = 1/K absorbs the mean mode),
        # regularised bias the K - 1 centred ones plus the mean mode at sigma_mean_reg
        "w_row2_free": sp.simplify(frac * a2.subs(S.sigma, sig_c1)),
        "h2_free": sp.simplify(frac * (h2 / S.n).subs(S.sigma, sig_c1)),
        "sigma_mean_reg": sp.simplify(sig_c0),
        "w_row2_reg": sp.simplify(frac * a2.subs(S.sigma, sig_c1) + a2.subs(S.sigma, sig_c0) / S.K),
        "h2_reg": sp.simplify(frac * (h2 / S.n).subs(S.sigma, sig_c1)
                              + (h2 / S.n).subs(S.sigma, sig_c0) / S.K),
        "objective_star_none": sp.simplify(S.K * g_star.subs(S.c, 1)),
        "objective_star_free": sp.simplify((S.K - 1) * g_star.subs(S.c, 1)),
        "objective_star_reg": sp.simplify((S.K - 1) * g_star.subs(S.c, 1)
                                          + g_star.subs(S.c, S.lam_b / (1 + S.lam_b))),
    }


@derivation
def derive_ce() -> dict[str, sp.Expr]:
    """CE one-layer UFM derivation on the ETF ray.

    Returns
    -------
    dict with ``objective``, ``stationarity``, ``sigma_star``, ``margin_star``
    (= sigma*/sqrt(n)), ``prob_star`` (softmax probability of the true class), ``ce_star``
    (training CE), ``Lambda_crit`` and ``lambda_crit_ratio`` as in :func:`derive_mse`, and the
    norms ``w_row2`` = (K-1)/K a_W^2 and ``h2`` = (K-1)/(K n) a_H^2.
    """
    g = S.g_ce(2)
    dg = sp.diff(g, S.sigma)
    roots = sp.solve(sp.Eq(dg, 0), S.sigma)
    sig = sp.nsimplify(roots[0], rational=True)
    assert sp.simplify(dg.subs(S.sigma, sig)) == 0
    margin = sp.simplify(sig / sp.sqrt(S.n))
    prob = sp.simplify(1 / (1 + (S.K - 1) * sp.exp(-margin)))
    ce = sp.simplify(S.ce_data(margin))
    d0 = sp.limit(dg, S.sigma, 0, "+")
    (lam_c,) = sp.solve(sp.Eq(d0, 0), S.Lam)
    lam_geo = sp.sqrt(S.lam_w * S.lam_h)
    (lw_c,) = sp.solve(sp.Eq(lam_geo.subs(S.lam_h, S.rho * S.lam_w), lam_c), S.lam_w)
    sig_lam = sig.subs(S.Lam, lam_geo)
    frac = (S.K - 1) / S.K
    return {
        "objective": g,
        "stationarity": dg,
        "sigma_star": sig,
        "margin_star": margin,
        "prob_star": prob,
        "ce_star": ce,
        "Lambda_crit": lam_c,
        "lambda_crit_ratio": lw_c,
        "w_row2": frac * S.sigma * sp.sqrt(S.lam_h / S.lam_w),
        "h2": frac * S.sigma * sp.sqrt(S.lam_w / S.lam_h) / S.n,
        "w_row2_lambda": sp.simplify(frac * sig_lam * sp.sqrt(S.lam_h / S.lam_w)),
        "h2_lambda": sp.simplify(frac * sig_lam * sp.sqrt(S.lam_w / S.lam_h) / S.n),
    }


@derivation
def derive_reg_bias_mean_mode() -> dict[str, sp.Expr]:
    """MSE with regularised bias: eliminate the bias from the mean label mode.

    On the mean mode the logits are sigma_0 + beta sqrt(N) (beta = |b|); minimising
    (1/2N)(sigma_0 + beta sqrt(N) - s)^2 + lambda_b/2 beta^2 over beta gives the data weight
    c = lambda_b/(1 + lambda_b) of the mean mode and the optimal bias entry.
    """
    beta, m = sp.symbols("beta m", real=True)
    data = (beta * sp.sqrt(S.N) - m) ** 2 / (2 * S.N) + S.lam_b / 2 * beta ** 2
    (b_opt,) = sp.solve(sp.diff(data, beta), beta)
    reduced = sp.factor(sp.simplify(data.subs(beta, b_opt)))
    weight = sp.simplify(reduced / (m ** 2 / (2 * S.N)))
    return {
        "bias_norm": b_opt,
        "bias_entry": sp.simplify(b_opt / sp.sqrt(S.K)),
        "reduced": reduced,
        "mean_mode_weight": weight,
    }
