"""Key symbolic expressions of a model, for ``ncsim theory derive`` (LaTeX / text)."""

from __future__ import annotations

import sympy as sp

from ncsim.theory import deep, dynamics, ufm
from ncsim.theory import symbols as S
from ncsim.theory.equilibrium import check_model


def derivations(loss: str, depth: int = 1, bias: str = "none") -> dict[str, sp.Expr]:
    """Named sympy expressions: objective, stationarity, minimiser, thresholds, dynamics."""
    check_model(loss, bias, depth)
    dyn = dynamics.derive()
    out: dict[str, sp.Expr] = {}
    if depth == 1:
        d = ufm.derive_mse() if loss == "mse" else ufm.derive_ce()
        keys = (["objective", "stationarity", "sigma_star", "Lambda_crit", "lambda_crit_ratio",
                 "a_w2", "a_h2", "objective_star_per_mode"]
                + (["sigma_mean_reg"] if bias == "reg" else [])
                + [f"w_row2_{bias}", f"h2_{bias}", f"objective_star_{bias}"]
                if loss == "mse" else
                ["objective", "stationarity", "sigma_star", "margin_star", "prob_star",
                 "ce_star", "Lambda_crit", "lambda_crit_ratio", "w_row2", "h2"])
        out.update({k: d[k] for k in keys})
    elif loss == "mse":
        d = deep.derive_mse()
        out.update({k: d[k] for k in ["objective", "stationarity", "phi", "x_max",
                                      "Lambda_stat", "tau_stat", "sigma_jump", "Lambda_glob",
                                      "tau_glob"]})
    else:
        d = deep.derive_ce()
        out.update({k: d[k] for k in ["objective", "stationarity", "Lambda_of_sigma"]})
    out.update(_bias_forms(loss, bias))
    if depth == 1:
        out.update({k: dyn[k] for k in ["growth_rate", "growth_rate_evaluated", "logistic",
                                         "logistic_evaluated", "half_time", "z_integral",
                                         "z_integral_evaluated", "nc1_rate_early",
                                         "nc1_rate_early_evaluated", "nc1_rate_early_direct",
                                         "nc1_rate_late"]})
    else:
        out["escape_asymptotic"] = dyn["escape_asymptotic"]
    return out


def _bias_forms(loss: str, bias: str) -> dict[str, sp.Expr]:
    """How the last-layer bias enters an MSE model (every depth): the number of label modes
    with the per-mode objective (``label_modes``, c = 1), the bias entry b_k and, for a
    regularised bias, the data weight c of the mean label mode (one more mode, with the
    per-mode objective at c = that weight; ``bias_entry`` is in its residual m = sqrt(n) -
    sigma_0). CE: nothing, the ETF-ray objective already holds the K - 1 centred modes and the
    balanced minimiser has b = 0 whatever the bias (softmax is shift invariant)."""
    if loss == "ce":
        return {}
    if bias == "none":  # the mean label mode is an ordinary mode
        return {"label_modes": S.K}
    if bias == "free":  # b = 1/K absorbs the mean label mode
        return {"label_modes": S.K - 1, "bias_entry": 1 / S.K}
    rb = ufm.derive_reg_bias_mean_mode()  # the K - 1 centred modes plus the mean mode at c
    return {"label_modes": S.K - 1, "bias_entry": rb["bias_entry"],
            "mean_mode_weight": rb["mean_mode_weight"]}
