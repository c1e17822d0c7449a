"""Solver specs and a state recorder shared by the integrator tests."""

from __future__ import annotations

import torch

from ncsim.spec import SolverSpec


def solver_spec(**fields) -> SolverSpec:
    """A validated dopri5 SolverSpec (dt 1e-3, rtol 1e-6, atol 1e-9, t_end 4, 25 records from
    t = 0.01, no steady test, check every 16 steps), any field replaced by ``fields``."""
    base = dict(method="dopri5", dt=1e-3, rtol=1e-6, atol=1e-9, t_end=4.0, records=25,
                t_first=0.01, gtol=0.0, check_every=16)
    base.update(fields)
    spec = SolverSpec(**base)
    spec.validate()
    return spec


def states_as_recorded(states: torch.Tensor, runs: torch.Tensor) -> torch.Tensor:
    """The integrator's ``to_states`` that records each state (R, P) as it is."""
    return states
