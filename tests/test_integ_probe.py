"""Probe tests of the integrator, its tableaux and the saddle test at rest (mutation probing).

Each test pins a documented rule with an exactly computable case: a linear flow at the
origin (whose central differences are exact), a rotation whose chosen step attempts are
wrecked (so the controller's factors and counts are known), or y' = y^2, which blows up at 1.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from ncsim.flow.integrate import DIVERGED, MAX_STEPS, STALLED, integrate
from ncsim.flow.saddle import saddle_escapes
from ncsim.spec import SolverSpec

INTEGRATE = importlib.import_module("ncsim.flow.integrate")

F64 = torch.float64


def _diagonal(rates):
    """The linear velocity y -> diag(rates) y."""
    d = torch.tensor(rates, dtype=F64)
    return lambda y: y * d


def test_saddle_escape_at_growth_by_exactly_e_counts():
    """mu x time_left = 1 exactly (mu = 0.5, 2 time units left) escapes; a hair less does not."""
    y, rows = torch.zeros(2, 1, dtype=F64), torch.arange(2)
    escapes, mu = saddle_escapes(_diagonal([0.5]), y, rows,
                                 torch.tensor([2.0, 1.9999999], dtype=F64))
    assert mu.tolist() == [0.5, 0.5]
    assert escapes.tolist() == [True, False]


def test_saddle_growth_below_the_difference_noise_is_not_counted():
    """A positive rate counts only above 100 eps^(2/3) x spectral radius (3.7e-9 at radius 1):
    1e-9 and 2e-9 do not escape even with 1e15 time units left, 5e-9 and 1e-8 do."""
    y, rows = torch.zeros(1, 2, dtype=F64), torch.arange(1)
    left = torch.tensor([1e15], dtype=F64)
    for rate, expected in [(1e-9, False), (2e-9, False), (5e-9, True), (1e-8, True)]:
        escapes, mu = saddle_escapes(_diagonal([rate, -1.0]), y, rows, left)
        assert abs(mu.item() - rate) < 1e-12
        assert escapes.tolist() == [expected], rate


class _SpikyRotation:
    """y' = (y_1, -y_0), except that the calls listed in ``bad`` return the velocity + 1e6
    (a stage that wrecks its step's error estimate)."""

    def __init__(self, bad):
        self.calls, self.bad = 0, set(bad)

    def __call__(self, y):
        call = self.calls
        self.calls += 1
        k = torch.stack([y[:, 1], -y[:, 0]], dim=1)
        return k + 1e6 if call in self.bad else k


def _use_loop(monkeypatch, loop):
    """``device``: the accelerator's loop (no host test inside a chunk), run on the CPU."""
    if loop == "device":
        monkeypatch.setattr(INTEGRATE, "_host_free", lambda device: True)
        monkeypatch.setattr(importlib.import_module("ncsim.products"), "HOST_BLAS", False)


@pytest.mark.parametrize("loop", ["cpu", "device"])
def test_a_wrecked_step_is_retried_at_one_fifth_of_its_size(monkeypatch, loop):
    """A first attempt of dt = 0.1 whose last stage is off by 1e6 (error ~1e10 tolerances) is
    rejected and retried at the smallest factor 0.2: the run stands at t = 0.02 after two
    attempts (one rejected, one accepted) and has not moved after one."""
    _use_loop(monkeypatch, loop)
    y0 = torch.tensor([[1.0, 0.0]], dtype=F64)
    for attempts, t_final, steps in [(1, 0.0, 0), (2, 0.1 * 0.2, 1)]:
        solver = SolverSpec(method="dopri5", dt=0.1, rtol=1e-6, atol=1e-9, t_end=10.0,
                            records=3, t_first=1.0, max_steps=attempts, gtol=0.0)
        solver.validate()
        # dopri5 with a given dt: call 0 is k1 at t = 0, calls 1..6 the stages of attempt 1
        result = integrate(_SpikyRotation({6}), y0, solver, lambda s, runs: s, 2)
        assert result.code.tolist() == [MAX_STEPS]
        assert result.rejected.tolist() == [1]
        assert result.steps.tolist() == [steps]
        assert result.t_final[0] == pytest.approx(t_final, rel=1e-12, abs=0.0)


class _PeriodicallyRejected:
    """y' = (y_1, -y_0) whose dopri5 attempts 1, 1 + period, 1 + 2 period, ... have their last
    stage off by 1e6, so that one attempt in ``period`` is rejected (with a given dt, call 0
    is k1 at t = 0 and each attempt takes 6 calls)."""

    def __init__(self, period: int):
        self.calls = 0
        self.period = period

    def __call__(self, y):
        attempt, stage = divmod(self.calls - 1, 6)
        self.calls += 1
        k = torch.stack([y[:, 1], -y[:, 0]], dim=1)
        wrecked = self.calls > 1 and stage == 5 and attempt % self.period == 0
        return k + 1e6 if wrecked else k


def test_a_run_stalls_at_exactly_the_thousandth_rejection():
    """Tested after every second attempt (check_every = 2), a run rejecting one attempt in two stops
    as stalled with exactly _STALL_REJECTIONS = 1000 rejections, not one fewer or more."""
    solver = SolverSpec(method="dopri5", dt=0.01, rtol=1e-6, atol=1e-9, t_end=1e6, records=3,
                        t_first=1.0, gtol=0.0, check_every=2)
    solver.validate()
    result = integrate(_PeriodicallyRejected(2), torch.tensor([[1.0, 0.0]], dtype=F64), solver,
                       lambda s, runs: s, 2)
    assert result.code.tolist() == [STALLED]
    assert result.rejected.tolist() == [1000]
    assert 2 * result.rejected[0] >= result.steps[0]


@pytest.mark.parametrize("loop", ["cpu", "device"])
def test_finite_time_blow_up_runs_until_the_step_falls_below_1e_13_t(monkeypatch, loop):
    """y' = y^2, y(0) = 1 blows up at t = 1: the run goes on until its step passes below
    1e-13 max(t, 1), where y has grown past 1e11 (a 1e-12 threshold stops it ~10x earlier)."""
    _use_loop(monkeypatch, loop)
    solver = SolverSpec(method="dopri5", rtol=1e-8, atol=1e-10, t_end=2.0, records=3,
                        t_first=0.5, gtol=0.0)
    solver.validate()
    result = integrate(lambda y: y * y, torch.ones(1, 1, dtype=F64), solver,
                       lambda s, runs: s, 1)
    assert result.code.tolist() == [DIVERGED]
    assert result.t_final[0] == pytest.approx(1.0, abs=1e-8)
    assert 1e11 < result.final_state.item() < 1e13


@pytest.mark.parametrize("loop", ["cpu", "device"])
def test_one_rejection_per_two_accepted_steps_is_enough_to_stall(monkeypatch, loop):
    """The stall ratio is 2 rejected >= steps, equality included: with the rejection count
    lowered to 10 and a test every 3 attempts, a run rejecting exactly one attempt in three
    stalls at 10 rejected and 20 accepted steps."""
    _use_loop(monkeypatch, loop)
    monkeypatch.setattr(INTEGRATE, "_STALL_REJECTIONS", 10)
    solver = SolverSpec(method="dopri5", dt=1e-3, rtol=1e-6, atol=1e-9, t_end=1e6, records=3,
                        t_first=1.0, gtol=0.0, check_every=3, max_steps=300)
    solver.validate()
    result = integrate(_PeriodicallyRejected(3), torch.tensor([[1.0, 0.0]], dtype=F64), solver,
                       lambda s, runs: s, 2)
    assert result.code.tolist() == [STALLED]
    assert result.rejected.tolist() == [10]
    assert result.steps.tolist() == [20]


def test_a_run_leaving_a_saddle_is_retested_one_growth_time_later():
    """At rest (|grad f| <= gtol) next to a saddle with mu = 0.5 and 97 time units left, a run
    at t = 3 goes on and is not tested again before t + 1 / mu = 5; a run at rest next to a
    decaying mode (mu = -0.5) stops as steady and keeps its recheck time."""
    solver = SolverSpec(t_end=100.0, gtol=1e-3)
    rates = torch.tensor([[0.5], [-0.5]], dtype=F64)
    y = torch.full((2, 1), 1e-6, dtype=F64)
    t = torch.full((2,), 3.0, dtype=F64)
    recheck = torch.zeros(2, dtype=F64)
    grad = torch.full((2,), 5e-7, dtype=F64)
    running = torch.ones(2, dtype=torch.bool)
    steady, after = INTEGRATE._steady(lambda s: s * rates, y, t, grad, running, recheck, solver)
    assert steady.tolist() == [False, True]
    assert after[0].item() == pytest.approx(5.0, rel=1e-8)
    assert after[1].item() == 0.0
