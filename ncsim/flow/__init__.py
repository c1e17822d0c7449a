"""Integrators and the batched simulator."""

from ncsim.flow.integrate import FlowResult, integrate
from ncsim.flow.simulate import RECORDED, SimulationResult, run_id, simulate, stopped_at_rest
from ncsim.flow.tableau import Tableau, tableau

__all__ = ["RECORDED", "FlowResult", "SimulationResult", "Tableau", "integrate", "run_id",
           "simulate", "stopped_at_rest", "tableau"]
