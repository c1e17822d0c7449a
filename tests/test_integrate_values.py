"""Stop reasons of the integrator and of the simulator on flows built to reach them.

Each flow is made so that the documented rule decides the outcome alone:

- stalled: a run is stopped as ``stalled`` once it has over ``_STALL_REJECTIONS`` rejected
  steps and at least one rejection for every two accepted steps (``2 rejected >= steps``);
- diverged: an adaptive step whose new state is not finite is rejected (so a diverged run
  keeps its last finite state), and a run whose largest entry passes ``_DIVERGE_ABS`` = 1e100
  is diverged there;
- vanishing: the final fn is below ``vanish_tol`` x the largest fn, the final state included
  (also when it lies after the last record);
- the onset of the run table is that of the spec's onset metric (:func:`onset_table` on the
  run's trajectory with the same rule gives it back);
- :func:`stopped_at_rest` flags the not_collapsed runs that stopped before t_end, not those
  that reached it;
- the steady-state test |grad f| <= gtol divides the velocity by the run's time scales, also
  after finished runs have left the batch.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pandas as pd
import pytest
import torch

from ncsim.flow import simulate, stopped_at_rest
from ncsim.flow.integrate import DIVERGED, DONE, MAX_STEPS, STALLED
from ncsim.onset import onset_table
from ncsim.spec import (
    InitSpec,
    ModelSpec,
    OnsetSpec,
    Regularization,
    RunSpec,
    SolverSpec,
    TimeScale,
)

INTEGRATE = importlib.import_module("ncsim.flow.integrate")
F64 = torch.float64


def _solver(**fields) -> SolverSpec:
    spec = SolverSpec(**fields)
    spec.validate()
    return spec


def _states(states: torch.Tensor, runs: torch.Tensor) -> torch.Tensor:
    return states


def _use_loop(monkeypatch, loop: str) -> None:
    """``device``: the accelerator's loop (no host test inside a chunk), run on the CPU."""
    if loop == "device":
        monkeypatch.setattr(INTEGRATE, "_host_free", lambda device: True)
        monkeypatch.setattr(importlib.import_module("ncsim.products"), "HOST_BLAS", False)


class _SpikyRotation:
    """y' = (y_1, -y_0) (a rotation), except that the last stage of chosen step attempts is
    off by 1e6, so that those attempts fail the error test (a step grown back too far after
    one may fail too).

    dopri5 evaluates the velocity twice before its first step (the initial state and the
    trial point of the initial step size) and then six times per attempt (stages 2..7; the
    first stage is the previous last one, or kept after a rejection), so the call count
    tells the attempt. ``rejected`` lists the attempts, modulo ``cycle``, that fail."""

    def __init__(self, cycle: int, rejected: tuple[int, ...]) -> None:
        self.calls, self.cycle, self.rejected = 0, cycle, rejected

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        c = self.calls
        self.calls += 1
        k = torch.stack([y[:, 1], -y[:, 0]], dim=1)
        attempt, stage = divmod(c - 2, 6)
        if c >= 2 and stage == 5 and attempt % self.cycle in self.rejected:
            k = k + 1e6
        return k


@pytest.mark.parametrize("loop", ["cpu", "device"])
def test_three_rejections_in_seven_attempts_stall_but_one_in_five_do_not(monkeypatch, loop):
    """3 of every 7 attempts rejected is 3 rejections per 4 accepted steps (more than one per
    two; 55 per 73 measured): STALLED once the rejections pass the limit (50 here, for
    speed). 1 in 5 is one rejection per four accepted steps (103 per 297 measured, with the
    failures of regrown steps): fewer than one per two, so the run goes on to its step cap
    (MAX_STEPS)."""
    _use_loop(monkeypatch, loop)
    monkeypatch.setattr(INTEGRATE, "_STALL_REJECTIONS", 50)
    solver = _solver(method="dopri5", t_end=1e6, records=3, rtol=1e-6, atol=1e-9, gtol=0,
                     max_steps=400)
    y0 = torch.tensor([[1.0, 0.0]], dtype=F64)
    stall = INTEGRATE.integrate(_SpikyRotation(7, (1, 3, 5)), y0, solver, _states, 2)
    assert stall.code[0] == STALLED
    assert 50 <= stall.rejected[0] < 70
    assert 2 * stall.rejected[0] >= stall.steps[0] and stall.rejected[0] < stall.steps[0]
    # the accepted steps follow the rotation: |y| = 1 to the tolerance
    assert float(stall.final_state.norm()) == pytest.approx(1.0, abs=1e-4)
    fine = INTEGRATE.integrate(_SpikyRotation(5, (2,)), y0, solver, _states, 2)
    assert fine.code[0] == MAX_STEPS
    assert fine.steps[0] + fine.rejected[0] == 400
    assert fine.rejected[0] >= 50 and 2 * fine.rejected[0] < fine.steps[0]


@pytest.mark.parametrize("loop", ["cpu", "device"])
@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_a_step_to_an_infinite_state_is_rejected(monkeypatch, method, loop):
    """y' = 1 below y = 1.1 and 1e308 above. On the CPU loop a first step dt = 10 from y = 1
    lands at +-inf with a finite error estimate (the error divided by an infinite scale is
    0): it must be rejected for its non-finite state (the accelerator's loop caps that step
    at the second record time instead, with the same outcome). The steps then shrink onto
    the jump at t = 0.1, where the run is DIVERGED (step too small) with its last finite
    state 1 + t and finite records 1 + t before it."""
    _use_loop(monkeypatch, loop)
    solver = _solver(method=method, t_end=100.0, dt=10.0, records=5, t_first=0.01, gtol=0)

    def velocity(y: torch.Tensor) -> torch.Tensor:
        return torch.where(y < 1.1, torch.ones_like(y), torch.full_like(y, 1e308))

    result = INTEGRATE.integrate(velocity, torch.ones(1, 1, dtype=F64), solver, _states, 1)
    assert result.code[0] == DIVERGED
    assert result.t_final[0] == pytest.approx(0.1, abs=1e-6)
    final = float(result.final_state[0, 0])
    assert math.isfinite(final) and final == pytest.approx(1.0 + result.t_final[0], rel=1e-9)
    reached = result.times <= result.t_final[0]
    assert reached.sum() == 2  # t = 0 and t = 0.01
    np.testing.assert_allclose(result.records[0, reached, 0], 1.0 + result.times[reached],
                               rtol=1e-12)
    assert np.isnan(result.records[0, ~reached, 0]).all()


@pytest.mark.parametrize("loop", ["cpu", "device"])
def test_exponential_growth_is_diverged_where_it_passes_1e100(monkeypatch, loop):
    """y' = y from 1 is e^t: it passes 1e100 at t = 100 ln 10 = 230.26, long before it would
    overflow (t = 709.8). The run is DIVERGED at the first accepted state above 1e100, one
    step (< 1 time unit at rtol 1e-4) past 230.26; that state is e^t_final to the global
    error of rtol 1e-4 over 230 e-foldings (measured 2.7e-3 relative; bound 2e-2)."""
    _use_loop(monkeypatch, loop)
    solver = _solver(method="dopri5", t_end=1000.0, records=4, gtol=0, rtol=1e-4,
                     atol=1e-6)
    result = INTEGRATE.integrate(lambda y: y.clone(), torch.ones(2, 1, dtype=F64), solver,
                                 _states, 1)
    assert (result.code == DIVERGED).all()
    t_pass = 100 * math.log(10.0)
    assert (result.t_final > t_pass).all() and (result.t_final < t_pass + 1.0).all()
    final = result.final_state[:, 0].numpy()
    assert (final > 1e100).all()
    np.testing.assert_allclose(final, np.exp(result.t_final), rtol=2e-2)


def test_fixed_step_small_init_that_grows_is_not_diverged():
    """Euler on y' = y from 1e-12 grows by 1.125 per step of 0.125: after 200 steps it is
    1e-12 x 1.125^200 = 1.7e-2, a growth of 1.7e10 but far from a blow-up (the threshold is
    1e6 (1 + max|y0|), i.e. about 1e6, not relative to the tiny start). The run ends DONE
    at t_end with the hand-computed value."""
    solver = _solver(method="gd", dt=0.125, t_end=25.0, records=3, gtol=0)
    result = INTEGRATE.integrate(lambda y: y.clone(), torch.full((1, 1), 1e-12, dtype=F64),
                                 solver, _states, 1)
    assert result.code[0] == DONE and result.steps[0] == 200
    assert result.t_final[0] == 25.0
    assert float(result.final_state[0, 0]) == pytest.approx(1e-12 * 1.125**200, rel=1e-12)


def test_vanishing_counts_the_final_state_after_the_last_record():
    """MSE UFM far above its collapse threshold (both decays 1): every norm decays like
    e^-t. Records are at t = 0 and t_end = 100 only, and the run stops at its step cap,
    t = 20 (gd, dt = 0.1, 200 steps), before the second record. Its final fn (about e^-20
    of the start) is below 1e-3 of the largest: vanishing, with no onset, although the only
    record, at t = 0, holds the largest fn."""
    spec = RunSpec(model=ModelSpec(loss="mse", classes=2, per_class=2, dim=4),
                   reg=Regularization(lambda_w=1.0, lambda_h=1.0),
                   init=InitSpec(scale=1.0, seed=0),
                   solver=SolverSpec(method="gd", dt=0.1, t_end=100.0, records=2, max_steps=200,
                                     reduction="none"))
    result = simulate(spec, theory=False)
    row = result.runs.iloc[0]
    assert row["t_final"] == pytest.approx(20.0, rel=1e-12)
    assert list(result.trajectories["time"]) == [0.0]
    start_fn = float(result.trajectories["fn"].iloc[0])
    assert row["final_fn"] < 1e-3 * start_fn
    assert row["status"] == "vanishing"
    assert math.isnan(row["onset_time"]) and math.isnan(row["fn_at_onset"])


def test_time_scaled_run_stops_at_the_same_steady_state_alone_and_in_a_shrinking_batch():
    """Run b (time scales 0.1 on H and W, decays 1: it vanishes) shares a batch with run a,
    a start at 1e-12 next to the origin's saddle that stops at rest at once; b then goes on
    alone in the shrunk batch. Its steady-state test must judge |grad f| = |velocity| / 0.1,
    as when b runs by itself: the same steps, stop time and final |grad f| <= gtol."""
    base = RunSpec(model=ModelSpec(loss="mse", classes=2, per_class=2, dim=4),
                   reg=Regularization(lambda_w=1.0, lambda_h=1.0),
                   solver=SolverSpec(t_end=1e3, records=5, gtol=1e-6, reduction="none"))
    a = base.replace(init=InitSpec(scale=1e-12, seed=1))
    b = base.replace(init=InitSpec(scale=1.0, seed=2), time_scale=TimeScale(eta_h=0.1, eta_w=0.1))
    both = simulate([a, b], theory=False).runs
    alone = simulate([b], theory=False).runs
    assert both["t_final"].iloc[0] < both["t_final"].iloc[1] < 1e3
    assert both["steps"].iloc[1] == alone["steps"].iloc[0]
    assert both["t_final"].iloc[1] == alone["t_final"].iloc[0]
    assert both["grad_norm_final"].iloc[1] <= 1e-6


def test_run_table_onset_follows_the_onset_metric():
    """One UFM-CE run under three onset rules that differ only in their metric (nc1,
    nc2_etf, nc1_trace; threshold 0.05): the trajectories are the same, and each run's
    onset time and fn at onset are those :func:`onset_table` finds on its trajectory for
    that metric (to rounding of the same interpolation); the three onsets differ."""
    metrics = ("nc1", "nc2_etf", "nc1_trace")
    specs = [RunSpec(model=ModelSpec(loss="ce", classes=3, per_class=2, dim=4),
                     reg=Regularization(lambda_w=5e-3, lambda_h=5e-3),
                     init=InitSpec(scale=0.5, seed=3),
                     solver=SolverSpec(t_end=200.0, records=30),
                     onset=OnsetSpec(metric=m, threshold=0.05)) for m in metrics]
    result = simulate(specs, theory=False)
    runs, traj = result.runs, result.trajectories
    onsets = []
    for i, metric in enumerate(metrics):
        rid = runs["run_id"].iloc[i]
        expected = onset_table(traj[traj["run_id"] == rid], metric=metric,
                               threshold=0.05).loc[rid]
        assert runs["status"].iloc[i] == "ok"
        assert runs["onset_time"].iloc[i] == pytest.approx(expected["onset_time"], rel=1e-12)
        assert runs["fn_at_onset"].iloc[i] == pytest.approx(expected["fn_at_onset"], rel=1e-12)
        onsets.append(runs["onset_time"].iloc[i])
    assert min(abs(a - b) for a, b in [(onsets[0], onsets[1]), (onsets[0], onsets[2]),
                                        (onsets[1], onsets[2])]) > 1.0


def test_stopped_at_rest_flags_only_runs_that_stopped_before_t_end():
    """A not_collapsed run at t_end (or a rounding below it) did not stop at rest; one that
    ended at half of t_end did; an ``ok`` run is never flagged. On simulated runs: a start at
    1e-12 next to the origin's saddle, whose unstable direction grows at a rate mu < 0.25
    (so by less than e within t_end = 2), stops at rest at its first step; a normal start cut
    at t_end = 0.5 runs to t_end."""
    table = pd.DataFrame({"status": ["not_collapsed", "not_collapsed", "not_collapsed", "ok"],
                          "t_final": [10.0, 10.0 * (1 - 1e-15), 5.0, 5.0],
                          "solver_t_end": [10.0, 10.0, 10.0, 10.0]})
    assert list(stopped_at_rest(table)) == [False, False, True, False]
    base = RunSpec(model=ModelSpec(loss="ce", classes=3, per_class=2, dim=4),
                   reg=Regularization(lambda_w=1e-3, lambda_h=1e-3))
    rest = base.replace(init=InitSpec(scale=1e-12, seed=1),
                        solver=SolverSpec(t_end=2.0, records=5))
    short = base.replace(init=InitSpec(scale=0.5, seed=1),
                         solver=SolverSpec(t_end=0.5, records=5))
    runs = simulate([rest, short], theory=False).runs
    assert list(runs["status"]) == ["not_collapsed", "not_collapsed"]
    assert runs["t_final"].iloc[0] < 2.0 and runs["steps"].iloc[0] == 1
    assert runs["t_final"].iloc[1] == 0.5
    assert list(stopped_at_rest(runs)) == [True, False]


@pytest.mark.parametrize("loop", ["cpu", "device"])
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "gd", "rk4"])
def test_gtol_zero_follows_a_run_at_rest_to_t_end(monkeypatch, method, loop):
    """H = W = 0 (CE, no bias) is a stationary point: |grad f| is exactly 0 there. With the
    default gtol the run stops as steady before t_end; gtol = 0 turns the steady test off in
    every loop, so the run goes on to t_end at rest, as the spec promises. (The adaptive
    methods' steps grow without bound at rest: the accelerator loop, which tests for a steady
    state only at chunk ends, reaches t_end in three steps before its first test.)"""
    _use_loop(monkeypatch, loop)
    zeros = {"H": np.zeros((4, 6)), "W": [np.zeros((3, 4))]}
    t_final = {}
    for gtol in (1e-10, 0.0):
        spec = RunSpec(model=ModelSpec(loss="ce", classes=3, per_class=2, dim=4),
                       init=InitSpec(kind="arrays", arrays=zeros),
                       solver=_solver(method=method, dt=0.5, t_end=10.0, records=5, gtol=gtol,
                                      check_every=4))
        run = simulate(spec, theory=False).runs.iloc[0]
        assert run["final_fn"] == 0.0 and run["grad_norm_final"] == 0.0
        t_final[gtol] = float(run["t_final"])
    if loop == "cpu" or method in ("gd", "rk4"):
        assert t_final[1e-10] < 10.0
    assert t_final[0.0] == 10.0
