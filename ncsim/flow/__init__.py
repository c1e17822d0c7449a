"""Integrators and the batched simulator."""

from ncsim.flow.integrate import FlowResult, integrate
from ncsim.flow.simulate import (
    RECORDED,
    SimulationResult,
    cut_short,
    run_id,
    simulate,
    stopped_at_rest,
)
from ncsim.flow.tableau import Tableau, tableau

__all__ = ["RECORDED", "FlowResult", "SimulationResult", "Tableau", "integrate", "run_id",
           "simulate", "stopped_at_rest", "cut_short", "tableau"]
