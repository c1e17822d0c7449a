"""Third probe of the integrator (``ncsim.flow.integrate``): attempt-by-attempt references.

The adaptive reference is a plain one-run numpy loop of the documented controller (constants
read from the module: error = RMS of h sum e_i k_i over atol + rtol max(|y|, |y_new|), accept
when <= 1, next step h clamp(safety err^(-1/order), min, max), at most h after a rejection,
max(dt, proposal) after an accepted step capped at t_end), with the tableau's coefficients and
its own dense-output formula (:meth:`Tableau.dense_weights`). A clock coordinate (y_0' = 1)
makes every step attempt visible: the velocity logs the clock of each state it is given, so
the integrator's attempt times t and sizes h are compared with the reference's one by one.
Fixed-step rules (the step count, the remainder step, records) are checked against hand loops.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from integrate_helpers import solver_spec, states_as_recorded

from ncsim.flow.integrate import DONE, STEADY, integrate
from ncsim.flow.tableau import tableau
from ncsim.spec import SolverSpec

F64 = torch.float64
INTEGRATE = importlib.import_module("ncsim.flow.integrate")


def _spec(**fields) -> SolverSpec:
    """solver_spec to t_end 3 with 12 records from t = 0.05."""
    return solver_spec(**{"t_end": 3.0, "records": 12, "t_first": 0.05, **fields})


class _ClockedDecay:
    """y_0' = 1 (a clock), y_i' = -rate_i y_i; logs the clock of every state it is given
    (one row per run)."""

    def __init__(self, rates: np.ndarray) -> None:
        self.rates = torch.tensor(np.concatenate([[0.0], rates]), dtype=F64)
        self.clocks: list[float] = []

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        assert y.shape[0] == 1
        self.clocks.append(float(y[0, 0]))
        k = -self.rates * y
        k[:, 0] = 1.0
        return k


def _reference(method: str, rates: np.ndarray, y0: np.ndarray, spec: SolverSpec):
    """One run by the documented rule: (clocks of every velocity call, accepted, rejected,
    t_final, y_final, records (T, P))."""
    tab = tableau(method)
    safety, fmin, fmax = INTEGRATE._SAFETY, INTEGRATE._FACTOR_MIN, INTEGRATE._FACTOR_MAX
    times = spec.record_times()
    t_end = float(spec.t_end)
    full_rates = np.concatenate([[0.0], rates])
    clocks: list[float] = []

    def f(y):
        clocks.append(float(y[0]))
        k = -full_rates * y
        k[0] = 1.0
        return k

    y, t, h = np.array(y0, dtype=float), 0.0, float(spec.dt)
    k = f(y)
    records = np.full((len(times), len(y)), np.nan)
    records[0], j = y, 1
    steps = rejected = 0
    while t < t_end and steps + rejected < spec.max_steps:
        capped = t + h >= t_end
        hs = t_end - t if capped else h
        ks = np.zeros((tab.stages, len(y)))
        ks[0] = k
        for s in range(1, tab.stages):
            ks[s] = f(y + hs * (tab.a[s, :s] @ ks[:s]))
        y_new = y + hs * (tab.b @ ks)
        err = hs * (tab.e @ ks)
        scale = spec.atol + spec.rtol * np.maximum(np.abs(y), np.abs(y_new))
        norm = float(np.sqrt(np.mean((err / scale) ** 2)))
        t_new = t_end if capped else t + hs
        factor = min(fmax, max(fmin, safety * max(norm, 1e-10) ** (-1.0 / tab.order)))
        if norm <= 1.0:
            while j < len(times) and times[j] <= t_new:
                theta = min(1.0, max(0.0, (times[j] - t) / hs))
                records[j] = y + hs * (tab.dense_weights([theta])[0] @ ks)
                j += 1
            y, k, t = y_new, ks[-1], t_new
            h = max(h, hs * factor) if capped else hs * factor
            steps += 1
        else:
            h = hs * min(factor, 1.0)
            rejected += 1
    return np.array(clocks), steps, rejected, t, y, records


@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_every_attempt_follows_the_reference_controller(method):
    """Every velocity call of a run (decays of rates 1, 30, 400 plus a clock) is at the
    reference's time t + c_s h, rejected attempts included; counts, t_final = t_end exactly,
    final state and dense records equal the reference's; after t_end the run stays frozen
    (any further call sees the clock at t_end)."""
    rates = np.array([1.0, 30.0, 400.0])
    y0 = np.array([0.0, 1.0, -0.5, 2.0])
    spec = _spec(method=method)
    f = _ClockedDecay(rates)
    result = integrate(f, torch.tensor(y0[None], dtype=F64), spec, states_as_recorded, 4)
    clocks, steps, rejected, t, y, records = _reference(method, rates, y0, spec)
    assert rejected > 5  # the stiff mode meets its stability limit
    assert (int(result.steps[0]), int(result.rejected[0])) == (steps, rejected)
    got = np.array(f.clocks)
    assert len(got) > len(clocks)
    np.testing.assert_allclose(got[:len(clocks)], clocks, rtol=1e-9, atol=1e-14)
    assert (got[len(clocks):] == float(result.final_state[0, 0])).all()
    assert result.t_final[0] == t == spec.t_end and result.code[0] == DONE
    np.testing.assert_allclose(result.final_state[0].numpy(), y, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(result.records[0], records, rtol=1e-10, atol=1e-15)


def _emulate_accelerator(monkeypatch) -> None:
    """The accelerator's loop (steps cut at record times, no host test inside a chunk), run on
    the CPU."""
    monkeypatch.setattr(INTEGRATE, "_host_free", lambda device: True)
    monkeypatch.setattr(importlib.import_module("ncsim.products"), "HOST_BLAS", False)


def test_a_step_landing_exactly_on_its_limit_counts_as_capped(monkeypatch):
    """Accelerator loop: a first step dt equal to the third record time (its limit) is a capped
    step (t + dt >= limit, equality included), so after it is accepted with error 0.8 the
    next step keeps max(dt, proposal) = dt instead of shrinking to the proposal 0.9 x 0.8^-0.2
    dt."""
    _emulate_accelerator(monkeypatch)
    rate = 0.05
    probe = _spec(t_end=1000.0, records=6, t_first=0.1, atol=0.0, rtol=1e-6)
    dt = float(probe.record_times()[3])  # 10 (to rounding): the first step's limit
    # the error norm of that first step, computed as the controller does, sets rtol to 0.8
    tab = tableau("dopri5")
    y = np.array([0.0, 1.0])
    full = np.array([0.0, rate])

    def f(v):
        k = -full * v
        k[0] = 1.0
        return k

    ks = np.zeros((tab.stages, 2))
    ks[0] = f(y)
    for s in range(1, tab.stages):
        ks[s] = f(y + dt * (tab.a[s, :s] @ ks[:s]))
    y_new = y + dt * (tab.b @ ks)
    err = dt * (tab.e @ ks)
    rtol = float(np.sqrt(np.mean((err / np.maximum(np.abs(y), np.abs(y_new))) ** 2))) / 0.8
    spec = _spec(t_end=1000.0, records=6, t_first=0.1, atol=0.0, rtol=rtol, dt=dt,
                 max_steps=2)
    clock = _ClockedDecay(np.array([rate]))
    result = integrate(clock, torch.tensor(y[None], dtype=F64), spec, states_as_recorded, 2)
    assert (int(result.steps[0]), int(result.rejected[0])) == (2, 0)
    stages = tab.stages - 1
    t1 = clock.clocks[stages]  # the last stage of attempt 1: y_new's clock
    t2 = clock.clocks[2 * stages]
    assert t1 == pytest.approx(dt, rel=1e-12)
    assert t2 - t1 == pytest.approx(dt, rel=1e-9)


@pytest.mark.parametrize(("t_end", "dt", "expected"), [
    (1.0, 0.1, (10, 0.1)),
    (0.07, 0.01, (7, 0.01)),  # 0.07 / 0.01 = 7.000000000000001: seven steps, no eighth
    (0.3, 0.1, (3, 0.1)),  # 0.3 / 0.1 = 2.9999999999999996: three whole steps
    (0.05, 0.1, (1, 0.05)),  # t_end < dt: one step of t_end (ratio 0.5 rounds to 0)
    (0.875, 0.25, (4, 0.125)),
    (0.15, 0.1, (2, 0.15 - 0.1)),
])
def test_fixed_step_count_and_last_step(t_end, dt, expected):
    """(steps, last step) of a fixed-step run: t_end / dt whole steps up to rounding, else
    floor(t_end / dt) steps and a shorter last one; never a zero-step run."""
    assert INTEGRATE._fixed_steps(t_end, dt) == expected


def _euler_np(y: np.ndarray, rates: np.ndarray, h: float) -> np.ndarray:
    return y + h * (-rates * y)


def test_gd_to_a_t_end_below_dt_takes_one_step_of_t_end():
    """gd with dt = 0.5 and t_end = 0.25: one Euler step of 0.25 (not none, not 0.5), ending
    at t_end with y0 + 0.25 f(y0) to the bit, recorded at t_end."""
    rates = np.array([1.0, 3.0])
    y0 = np.array([[1.0, -2.0]])
    spec = _spec(method="gd", dt=0.5, t_end=0.25, records=2, t_first=None)
    r = torch.tensor(rates, dtype=F64)
    result = integrate(lambda y: -r * y, torch.tensor(y0, dtype=F64), spec, states_as_recorded, 2)
    want = _euler_np(y0[0], rates, 0.25)
    assert result.steps.tolist() == [1] and result.t_final.tolist() == [0.25]
    assert result.code.tolist() == [DONE]
    np.testing.assert_array_equal(result.final_state[0].numpy(), want)
    np.testing.assert_array_equal(result.records[0], [y0[0], want])


def test_gd_whose_ratio_rounds_above_an_integer_takes_no_extra_step():
    """gd with dt = 0.01 to t_end = 0.07 (t_end / dt = 7 + 1e-15): 7 steps, not an eighth
    step of 1e-17, ending at t_end."""
    r = torch.tensor([2.0], dtype=F64)
    spec = _spec(method="gd", dt=0.01, t_end=0.07, records=3, t_first=0.01)
    result = integrate(lambda y: -r * y, torch.ones(1, 1, dtype=F64), spec, states_as_recorded, 1)
    assert result.steps.tolist() == [7] and result.t_final.tolist() == [0.07]
    assert result.final_state.item() == pytest.approx(0.98**7, rel=1e-14)


@pytest.mark.parametrize("loop", ["cpu", "device"])
def test_a_run_started_at_the_origin_stops_steady_while_its_batch_goes_on(monkeypatch, loop):
    """y' = -rate y from y0 = 0 has |grad f| = 0 exactly: it stops as steady at its first test
    (CPU: after its first step; accelerator: at the first chunk end) at y = 0, while a decay
    from y0 != 0 in the same batch with a 1e-30 gtol (never reached) runs to t_end."""
    if loop == "device":
        _emulate_accelerator(monkeypatch)
    r = torch.tensor([[1.0, 2.0], [1.0, 2.0]], dtype=F64)
    y0 = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=F64)
    spec = _spec(dt=0.01, t_end=2.0, gtol=1e-30, check_every=4)
    result = integrate(lambda y: -r * y, y0, spec, states_as_recorded, 2)
    assert result.code.tolist() == [STEADY, DONE]
    first_test = 1 if loop == "cpu" else 4
    assert result.steps.tolist()[0] == first_test
    assert 0.01 <= result.t_final[0] < 2.0
    if loop == "cpu":
        assert result.t_final[0] == 0.01
    assert (result.final_state[0] == 0).all()
    assert result.t_final[1] == 2.0


@pytest.mark.parametrize("loop", ["cpu", "device"])
@pytest.mark.parametrize("poison", [float("inf"), float("nan")])
def test_a_step_with_a_non_finite_stage_is_retried_at_the_smallest_factor(monkeypatch, loop,
                                                                         poison):
    """A first attempt (dt = 0.1) whose third stage is inf or NaN has no finite error norm: it
    is rejected and retried at 0.2 dt (the smallest factor), which is accepted; the run then
    goes on to t_end with finite records."""
    if loop == "device":
        _emulate_accelerator(monkeypatch)
    clock = _ClockedDecay(np.array([1.0]))
    plain = clock.__call__

    def velocity(y):
        k = plain(y)
        if len(clock.clocks) == 3:  # call 2: stage 3 of attempt 1 (the clock stays finite)
            k[:, 1] = poison
        return k

    spec = _spec(dt=0.1, t_end=1.0, records=3, t_first=0.5)
    result = integrate(velocity, torch.tensor([[0.0, 1.0]], dtype=F64), spec, states_as_recorded, 2)
    stages = tableau("dopri5").stages - 1
    assert clock.clocks[stages] == pytest.approx(0.1, rel=1e-12)  # the wrecked attempt
    assert clock.clocks[2 * stages] == pytest.approx(0.02, rel=1e-12)  # its retry
    assert result.code.tolist() == [DONE] and result.rejected[0] >= 1
    assert np.isfinite(result.records).all()


@pytest.mark.parametrize("loop", ["cpu", "device"])
def test_the_origin_stops_steady_next_to_a_run_tested_for_a_saddle(monkeypatch, loop):
    """A run at the origin (|grad f| = 0) stops as steady even when, at the same test, another
    run at rest with |grad f| > 0 goes through the saddle test (a minimum: it stops too); a run
    far from rest goes on to t_end."""
    if loop == "device":
        _emulate_accelerator(monkeypatch)
    r = torch.tensor([1.0, 2.0], dtype=F64)
    y0 = torch.tensor([[0.0, 0.0], [1e-12, -1e-12], [1.0, 1.0]], dtype=F64)
    spec = _spec(dt=0.01, t_end=2.0, gtol=1e-8, check_every=4)
    progress: list[int] = []
    result = integrate(lambda y: -r * y, y0, spec, states_as_recorded, 2, progress=progress.append)
    assert result.code.tolist() == [STEADY, STEADY, DONE]
    assert result.steps[0] == result.steps[1]
    assert (result.final_state[0] == 0).all()
    assert result.t_final[2] == 2.0
    assert sum(progress) == 3 and min(progress) > 0  # told only when runs finished


def _always_wrecked(y):
    """y' = 0 for the first call (k1 at t = 0), then velocities of 1e6 with alternating signs:
    every attempt's error estimate is huge, so every attempt is rejected."""
    _always_wrecked.calls += 1
    sign = (-1.0) ** _always_wrecked.calls
    return torch.zeros_like(y) if _always_wrecked.calls == 1 else torch.full_like(y, sign * 1e6)


@pytest.mark.parametrize("loop", ["cpu", "device"])
def test_a_run_rejected_at_t_0_is_diverged_when_its_step_falls_below_1e_13(monkeypatch, loop):
    """At t = 0 the step floor is 1e-13 x max(t, 1) = 1e-13, not 0: a run whose every attempt is
    rejected shrinks dt = 0.1 by 0.2 per attempt and stops as diverged at the 18th rejection
    (0.1 x 0.2^18 = 2.6e-14 < 1e-13 <= 0.1 x 0.2^17), never having moved."""
    if loop == "device":
        _emulate_accelerator(monkeypatch)
    _always_wrecked.calls = 0
    # atol 1e-15: even the last attempts' errors (h ~ 1e-13) are 1e5 tolerances, factor 0.2
    spec = _spec(dt=0.1, t_end=10.0, records=3, t_first=1.0, atol=1e-15, max_steps=100)
    result = integrate(_always_wrecked, torch.zeros(1, 2, dtype=F64), spec, states_as_recorded, 2)
    assert result.code.tolist() == [INTEGRATE.DIVERGED]
    assert result.rejected.tolist() == [18] and result.steps.tolist() == [0]
    assert result.t_final.tolist() == [0.0]


def test_a_run_passing_1e100_on_its_last_step_is_done():
    """y' = y from y0 = 1.001e100 / e reaches y(1) = 1.001e100 on the step that ends at t_end:
    the run is done (t_end is tested first), not diverged; its state before that step was
    below 1e100."""
    y0 = torch.full((1, 1), 1.001e100 / np.e, dtype=F64)
    spec = _spec(dt=None, rtol=1e-8, atol=1e-10, t_end=1.0, records=3, t_first=0.5)
    result = integrate(lambda y: y.clone(), y0, spec, states_as_recorded, 1)
    assert result.code.tolist() == [DONE]
    assert result.t_final.tolist() == [1.0]
    assert result.final_state.item() == pytest.approx(1.001e100, rel=1e-6)
    assert result.records[0, 1, 0] < 1e100


def test_gd_from_a_huge_start_diverges_at_1e100():
    """Fixed steps: the blow-up threshold 1e6 (1 + max|y0|) is capped at 1e100, so Euler on
    y' = y/1 from 1e95 with dt = 0.5 (x1.5 a step) diverges at step 29 (1.5^29 > 1e5 >
    1.5^28) and keeps its last finite state 1e95 x 1.5^28 at t = 14."""
    spec = _spec(method="gd", dt=0.5, t_end=20.0, records=3, t_first=1.0)
    result = integrate(lambda y: y.clone(), torch.full((1, 1), 1e95, dtype=F64), spec,
                       states_as_recorded, 1)
    assert result.code.tolist() == [INTEGRATE.DIVERGED]
    assert result.steps.tolist() == [28] and result.t_final.tolist() == [14.0]
    assert result.final_state.item() == pytest.approx(1e95 * 1.5**28, rel=1e-14)


def test_gd_with_a_nan_velocity_is_diverged_at_its_last_finite_state():
    """Fixed steps: a NaN state (the velocity of the third step is NaN) is a blow-up: the run
    stops as diverged after two steps, at t = 2 dt with its second iterate, recorded up to it."""
    calls = []

    def velocity(y):
        calls.append(1)
        k = -2.0 * y
        return k * float("nan") if len(calls) == 3 else k

    spec = _spec(method="gd", dt=0.25, t_end=2.0, records=3, t_first=0.5)
    result = integrate(velocity, torch.ones(1, 1, dtype=F64), spec, states_as_recorded, 1)
    assert result.code.tolist() == [INTEGRATE.DIVERGED]
    assert result.steps.tolist() == [2] and result.t_final.tolist() == [0.5]
    assert result.final_state.item() == 0.25
    np.testing.assert_array_equal(result.records[0, :, 0], [1.0, 0.25, np.nan])


@pytest.mark.parametrize("method", ["gd", "rk4"])
def test_fixed_steps_with_gtol_zero_follow_a_run_at_the_origin_to_t_end(method):
    """gtol = 0: no steady test at all, so a fixed-step run from y0 = 0 (|grad f| = 0) takes
    every step to t_end and ends done."""
    r = torch.tensor([1.0, 3.0], dtype=F64)
    spec = _spec(method=method, dt=0.125, t_end=1.0, records=3, t_first=0.5, gtol=0.0,
                 check_every=2)
    result = integrate(lambda y: -r * y, torch.zeros(1, 2, dtype=F64), spec, states_as_recorded, 2)
    assert result.code.tolist() == [DONE]
    assert result.steps.tolist() == [8] and result.t_final.tolist() == [1.0]


def test_a_finished_run_leaves_the_batch_through_select():
    """CPU loop with ``select``: once the run at the origin stops (steady), the batch is cut to
    the run still going, ``select`` is asked for exactly that run, and its velocity then
    sees one row."""
    r = torch.tensor([1.0, 2.0], dtype=F64)
    asked: list[list[int]] = []
    rows_seen: list[int] = []

    def velocity(y):
        rows_seen.append(y.shape[0])
        return -r * y

    def select(rows):
        asked.append(rows.tolist())
        return velocity, lambda s, k: k.double().norm(dim=1)

    y0 = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=F64)
    spec = _spec(dt=0.01, t_end=2.0, gtol=1e-30, check_every=4)
    result = integrate(velocity, y0, spec, states_as_recorded, 2, select=select)
    assert result.code.tolist() == [STEADY, DONE]
    assert asked == [[1]]
    assert rows_seen[0] == 2 and rows_seen[-2] == 1  # (the last call: the final velocity)
