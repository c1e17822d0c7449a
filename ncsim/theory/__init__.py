"""Closed-form theory of the UFM and the deep linear UFM (sympy derivations, compiled numerics).

Public API
----------
equilibrium(loss, bias, K, n, lambda_w, lambda_h, lambda_b=0, depth=1) -> Equilibrium
lambda_crit(loss, bias, K, n, depth=1, ratio=1) ; Lambda_crit ; deep_thresholds ;
basin_threshold ; lambda_b_crit_mean_mode
growth_rate ; logistic ; logistic_half_time ; logistic_integral ; nc1_rates ;
escape_time ; escape_time_asymptotic
predicted_onset(...) -> OnsetPrediction
lower_rank_check(...) ; imbalanced_equilibrium(...) ; imbalanced_mse(...)
phase_diagram(...)
theory_columns(spec) -> dict
derivations(loss, depth) -> dict of sympy expressions
"""

from __future__ import annotations

from ncsim.theory.columns import theory_columns
from ncsim.theory.critical import (
    DeepThresholds,
    Lambda_crit,
    basin_threshold,
    deep_thresholds,
    lambda_b_crit_mean_mode,
    lambda_crit,
)
from ncsim.theory.derivations import derivations
from ncsim.theory.dynamics import (
    escape_time,
    escape_time_asymptotic,
    growth_rate,
    logistic,
    logistic_half_time,
    logistic_integral,
    nc1_rates,
)
from ncsim.theory.equilibrium import Equilibrium, equilibrium
from ncsim.theory.imbalance import ImbalancedEquilibrium, imbalanced_equilibrium, imbalanced_mse
from ncsim.theory.lowrank import LowRankResult, lower_rank_check
from ncsim.theory.phase import phase_diagram
from ncsim.theory.prediction import OnsetPrediction, predicted_onset

__all__ = [
    "DeepThresholds", "Equilibrium", "ImbalancedEquilibrium", "Lambda_crit", "LowRankResult",
    "OnsetPrediction", "basin_threshold", "deep_thresholds", "derivations", "equilibrium",
    "escape_time", "escape_time_asymptotic", "growth_rate", "imbalanced_equilibrium",
    "imbalanced_mse", "lambda_b_crit_mean_mode", "lambda_crit", "logistic", "logistic_half_time",
    "logistic_integral", "lower_rank_check", "nc1_rates", "phase_diagram", "predicted_onset",
    "theory_columns",
]
