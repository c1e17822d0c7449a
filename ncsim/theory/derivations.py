"""Key symbolic expressions of a model, for ``ncsim theory derive`` (LaTeX / text)."""

from __future__ import annotations

import sympy as sp

from ncsim.theory import deep, dynamics, ufm
from ncsim.theory.equilibrium import check_model


def derivations(loss: str, depth: int = 1, bias: str = "none") -> dict[str, sp.Expr]:
    """Named sympy expressions: objective, stationarity, minimiser, thresholds, dynamics."""
    check_model(loss, bias, depth)
    dyn = dynamics.derive()
    out: dict[str, sp.Expr] = {}
    if depth == 1:
        d = ufm.derive_mse() if loss == "mse" else ufm.derive_ce()
        keys = (["objective", "stationarity", "sigma_star", "Lambda_crit", "lambda_crit_ratio",
                 "a_w2", "a_h2", "w_row2_none", "h2_none", "objective_star_per_mode"]
                if loss == "mse" else
                ["objective", "stationarity", "sigma_star", "margin_star", "prob_star",
                 "ce_star", "Lambda_crit", "lambda_crit_ratio", "w_row2", "h2"])
        out.update({k: d[k] for k in keys})
        if loss == "mse" and bias == "reg":
            rb = ufm.derive_reg_bias_mean_mode()
            out.update({"bias_entry": rb["bias_entry"],
                        "mean_mode_weight": rb["mean_mode_weight"]})
    elif loss == "mse":
        d = deep.derive_mse()
        out.update({k: d[k] for k in ["objective", "stationarity", "phi", "x_max",
                                      "Lambda_stat", "tau_stat", "sigma_jump", "Lambda_glob",
                                      "tau_glob"]})
    else:
        d = deep.derive_ce()
        out.update({k: d[k] for k in ["objective", "stationarity", "Lambda_of_sigma"]})
    if depth == 1:
        out.update({k: dyn[k] for k in ["growth_rate", "growth_rate_evaluated", "logistic",
                                         "logistic_evaluated", "half_time", "nc1_rate_early",
                                         "nc1_rate_early_evaluated", "nc1_rate_late"]})
    else:
        out["escape_asymptotic"] = dyn["escape_asymptotic"]
    return out
