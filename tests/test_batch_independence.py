"""A run's trajectory does not depend on the runs that share its batch: the same run alone and
at any position of batches of 2, 3, 5 and 9 runs gives the same bits (records, final state,
steps).

A matrix-vector product over the stacked stages rounds an entry by where it falls in BLAS's
blocks (OpenBLAS on an AMD EPYC: 1 ulp between a run alone and the same run second in a
batch of two); the integrator's stage sums are formed entry by entry to rule that out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ncsim.flow.integrate import integrate
from ncsim.flow.simulate import simulate
from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec, SolverSpec

F64 = torch.float64
P = 7  # state size of the toy flow


def _velocity(y: torch.Tensor) -> torch.Tensor:
    """A nonlinear flow acting row by row: y' = sin(y) - y^3 + 0.1 roll(y)."""
    return torch.sin(y) - y ** 3 + 0.1 * torch.roll(y, 1, dims=1)


def _solve(y0: torch.Tensor, method: str):
    dt = None if method in ("dopri5", "tsit5") else 1 / 128
    spec = SolverSpec(method=method, dt=dt, rtol=1e-9, atol=1e-12, t_end=3.0, records=7,
                      t_first=0.05, gtol=0.0, max_steps=100_000)
    spec.validate()
    return integrate(_velocity, y0, spec, lambda states, runs: states, P)


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "rk4", "gd"])
def test_a_run_alone_and_anywhere_in_a_batch_gives_the_same_bits(method):
    """Run 0 alone, then at every position of batches of 2, 3, 5 and 9 with random
    companions."""
    gen = torch.Generator().manual_seed(11)
    mine = torch.randn(1, P, generator=gen, dtype=F64)
    alone = _solve(mine.clone(), method)
    for size in (2, 3, 5, 9):
        others = torch.randn(size - 1, P, generator=gen, dtype=F64) * 1.5
        for position in range(size):
            batch = torch.cat([others[:position], mine, others[position:]])
            got = _solve(batch, method)
            where = f"{method}, batch of {size}, position {position}"
            assert torch.equal(got.final_state[position], alone.final_state[0]), where
            assert np.array_equal(got.records[position], alone.records[0],
                                  equal_nan=True), where
            assert got.steps[position] == alone.steps[0], where


def test_simulated_runs_alone_and_together_give_the_same_bits():
    """Five CE UFM runs (seeds 0-4, two decays) simulated together and one by one: every
    record and final column equal, not only to rounding."""
    model = ModelSpec(loss="ce", classes=3, per_class=2, dim=5)
    solver = SolverSpec(t_end=200.0, records=9)
    specs = [RunSpec(model=model, reg=Regularization(lambda_w=lam, lambda_h=lam),
                     init=InitSpec(scale=0.5, seed=seed), solver=solver)
             for seed, lam in zip(range(5), (1e-3, 5e-3, 1e-3, 5e-3, 1e-3), strict=True)]
    together = simulate(specs, theory=False)
    numeric = [c for c in together.trajectories.columns
               if pd.api.types.is_numeric_dtype(together.trajectories[c])]
    assert {"time", "fn", "nc1_trace"} <= set(numeric)
    for spec, run_id in zip(specs, together.runs["run_id"], strict=True):
        alone = simulate(spec, theory=False)
        mine = together.trajectories[together.trajectories["run_id"] == run_id]
        np.testing.assert_array_equal(mine[numeric].to_numpy(float),
                                      alone.trajectories[numeric].to_numpy(float))
        row = together.runs[together.runs["run_id"] == run_id].iloc[0]
        for column in ("steps", "t_final", "final_fn", "final_objective", "onset_time"):
            assert row[column] == alone.runs.iloc[0][column] or (
                np.isnan(row[column]) and np.isnan(alone.runs.iloc[0][column])), column
