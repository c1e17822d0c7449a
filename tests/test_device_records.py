"""Records of the accelerator loop (run on the CPU): several record times per step, and the
size of a metrics call.

- A device step may cross up to ``_DEVICE_CROSSINGS`` record times (a longer step is cut at
  the next one): all crossed records are taken from the step's dense output, equal to the
  exact solution to the tolerance, with fewer steps the more crossings a step may take; the
  record queue always holds a step's crossings, and a chunk keeps ``check_every`` steps.
- A metrics call on a device takes as many recorded states as a byte budget holds (within
  fixed bounds); on the CPU a fixed, cache-sized count.
- With CUDA graphs the metrics calls of the record queue go through one captured call on
  static buffers (padded blocks): the records are the eager ones to rounding, in every state
  form, and the replayed call neither synchronises nor copies host data.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from test_flow import _emulate_accelerator, _FakeRecordGraphs, _integrate_batch, _use_fake_graphs

from ncsim.flow.integrate import integrate, record_block
from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec, SolverSpec

F64 = torch.float64
INTEGRATE = importlib.import_module("ncsim.flow.integrate")
RATES = torch.tensor([0.5, 1.0, 2.0], dtype=F64)


def _decay(y: torch.Tensor) -> torch.Tensor:
    """y' = -rates * y, one run per row: exact solution y0 exp(-rates t)."""
    return -RATES * y


def _exact(y0: np.ndarray, times: np.ndarray) -> np.ndarray:
    """y0 exp(-rates t): (runs, times, 3)."""
    return y0[:, None, :] * np.exp(-RATES.numpy()[None, None, :] * times[None, :, None])


def _record_capacities(monkeypatch) -> list[int]:
    """A list that gets the capacity of every record queue made from now on."""
    capacities = []
    real_init = INTEGRATE._Recorder.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        capacities.append(self.capacity)

    monkeypatch.setattr(INTEGRATE._Recorder, "__init__", init)
    return capacities


def _dense_records(monkeypatch, crossings: int, check_every: int = 16):
    """200 log-spaced records in [1e-3, 20] of y' = -rates y from (1, 1, 1), two runs, on
    the accelerator loop with ``crossings``; returns (result, record times, capacity)."""
    monkeypatch.setattr(INTEGRATE, "_host_free", lambda device: True)
    monkeypatch.setattr(INTEGRATE, "_DEVICE_CROSSINGS", crossings)
    capacities = _record_capacities(monkeypatch)
    solver = SolverSpec(method="dopri5", rtol=1e-8, atol=1e-10, t_end=20.0, records=200,
                        t_first=1e-3, gtol=0.0, check_every=check_every)
    solver.validate()
    y0 = torch.tensor([[1.0, 1.0, 1.0], [0.5, -1.0, 2.0]], dtype=F64)
    result = integrate(_decay, y0, solver, lambda s, runs: s, 3)
    return result, solver.record_times(), y0.numpy(), capacities[0]


@pytest.mark.parametrize("crossings", [1, 2, 3])
def test_every_crossed_record_is_the_exact_solution(monkeypatch, crossings):
    result, times, y0, _ = _dense_records(monkeypatch, crossings)
    exact = _exact(y0, times)
    assert np.isfinite(result.records).all()
    np.testing.assert_allclose(result.records, exact, rtol=2e-7, atol=1e-9)


def test_more_crossings_a_step_take_fewer_steps(monkeypatch):
    """199 record times after 0, denser than the free steps early on: one crossing a step
    needs a step per record time at least; with two, the steps cut at record times (those
    beyond the free loop's 135) are fewer than half, with three fewer still."""
    steps = {m: _dense_records(monkeypatch, m)[0].steps for m in (1, 2, 3)}
    free = integrate(_decay, torch.ones(2, 3, dtype=F64),
                     SolverSpec(method="dopri5", rtol=1e-8, atol=1e-10, t_end=20.0, records=2,
                                gtol=0.0), lambda s, runs: s, 3).steps
    for m in (1, 2, 3):
        assert (steps[m] >= 199 // m).all()
        assert (steps[m] > free).all()
    cuts = {m: steps[m] - free for m in steps}
    assert (2 * cuts[2] <= cuts[1]).all() and (cuts[3] < cuts[2]).all()


@pytest.mark.parametrize(("crossings", "check_every", "budget_slots", "capacity"), [
    (2, 16, 100, 32), (2, 16, 5, 5), (3, 16, 1, 3), (2, 1, 100, 2),
])
def test_the_queue_holds_a_chunk_of_crossings(monkeypatch, crossings, check_every,
                                             budget_slots, capacity):
    """The device queue asks for check_every x crossings slots, gets what the byte budget
    allows, and never fewer than one step's crossings; the records stay exact."""
    monkeypatch.setattr(INTEGRATE, "record_slots",
                        lambda r, p, itemsize, wanted, device: min(wanted, budget_slots))
    result, times, y0, got = _dense_records(monkeypatch, crossings, check_every)
    assert got == capacity
    exact = _exact(y0, times)
    np.testing.assert_allclose(result.records, exact, rtol=2e-7, atol=1e-9)


def test_a_device_metrics_call_takes_a_byte_budget_of_states(monkeypatch):
    cpu = torch.device("cpu")
    assert record_block(cpu, 26_880) == INTEGRATE._RECORD_CHUNK == 128
    assert record_block(cpu, 8) == 128
    monkeypatch.setattr(INTEGRATE, "_host_free", lambda device: True)
    budget = INTEGRATE._RECORD_BLOCK_BYTES_DEVICE
    assert budget == 128 * 2**20
    assert record_block(cpu, 26_880) == budget // 26_880 == 4993  # W1 in float32
    assert record_block(cpu, 53_760) == 2496  # W1 in float64
    assert record_block(cpu, 8) == INTEGRATE._RECORD_CHUNK_DEVICE_MAX == 65536
    assert record_block(cpu, 10**9) == INTEGRATE._RECORD_CHUNK_DEVICE == 1024
    assert record_block(cpu, 0) == 65536


@pytest.mark.parametrize(("loss", "reduction", "dim"), [
    ("ce", "none", 4), ("ce", "gram", 12), ("mse", "classes", 4),
])
def test_captured_metrics_calls_give_the_eager_records(monkeypatch, loss, reduction, dim):
    _emulate_accelerator(monkeypatch)
    specs = [RunSpec(model=ModelSpec(loss=loss, classes=3, per_class=2, dim=dim),
                     reg=Regularization(lambda_w=0.01 * (i + 1), lambda_h=0.02),
                     init=InitSpec(scale=0.4, seed=i),
                     solver=SolverSpec(t_end=50.0, records=40, check_every=4,
                                       reduction=reduction))
             for i in range(5)]
    eager, _ = _integrate_batch(specs)
    _, records = _use_fake_graphs(monkeypatch)
    graphed, _ = _integrate_batch(specs, cuda_graphs=True)
    assert records.captures >= 1 and records.replays >= 5
    # one block holds a whole flush of these 5 runs (5 x capacity = 40 states): the captured
    # sizes are 40 and its eighth and sixty-fourth
    assert set(records.sizes) <= {1, 5, 40}
    np.testing.assert_array_equal(graphed.steps, eager.steps)
    assert np.isfinite(graphed.records).all()
    np.testing.assert_allclose(graphed.records, eager.records, rtol=1e-11, atol=1e-13)


def test_a_padded_block_keeps_only_its_own_states(monkeypatch):
    """Blocks of 3 and 1 states through static buffers of 4: the padding (copies of the
    block's first state) never reaches the values, and each call gives ``record`` of its own
    states: eager at the first call, captured at the second, replayed after."""
    records = _FakeRecordGraphs()
    monkeypatch.setattr(INTEGRATE, "_capture_record", records.capture)

    def record(states, runs):
        return torch.stack([states.sum(1), runs.double()], dim=1)

    captured = INTEGRATE._CapturedRecord(record, 4, torch.zeros(1, 2, 5, dtype=F64))
    gen = torch.Generator().manual_seed(0)
    for m in (3, 1, 4, 2):
        states = torch.rand(m, 5, generator=gen, dtype=F64)
        runs = torch.arange(10, 10 + m)
        got = captured(states, runs)
        assert got.shape == (m, 2)
        torch.testing.assert_close(got, record(states, runs), rtol=0, atol=0)
    assert captured.calls == 4 and records.captures == 1 and records.replays == 3


def test_a_block_goes_to_the_smallest_captured_size_that_holds_it(monkeypatch):
    """Static buffers of 640 states come in three sizes, 640, 80 and 10: a block of M states
    is computed in the smallest that holds it, so a late flush of a few states does not pay
    for 640."""
    records = _FakeRecordGraphs()
    monkeypatch.setattr(INTEGRATE, "_capture_record", records.capture)

    def record(states, runs):
        return states[:, :1] * 2.0

    graphed = INTEGRATE._GraphedRecord(record, 640, torch.zeros(1, 1, 3, dtype=F64))
    assert graphed.sizes == [10, 80, 640]
    for m, size in [(1, 10), (10, 10), (11, 80), (80, 80), (81, 640), (640, 640), (3, 10)]:
        states = torch.arange(3.0 * m, dtype=F64).reshape(m, 3)
        got = graphed(states, torch.zeros(m, dtype=torch.long))
        torch.testing.assert_close(got, 2.0 * states[:, :1], rtol=0, atol=0)
        assert graphed.calls[size].states.shape == (size, 3)
    assert {size: c.calls for size, c in graphed.calls.items()} == {10: 3, 80: 2, 640: 2}
    assert sorted(records.sizes) == [10, 80, 640]  # each size captured at its second call
    assert INTEGRATE._GraphedRecord(record, 5, torch.zeros(1, 1, 3)).sizes == [1, 5]


def test_a_fixed_step_run_queues_one_state_a_step_on_a_device(monkeypatch):
    """Fixed steps record as they pass a record time (one state a run): their queue on a
    device stays at one slot, where an adaptive run's holds a step's two crossings."""
    monkeypatch.setattr(INTEGRATE, "_host_free", lambda device: True)
    capacities = _record_capacities(monkeypatch)
    y0 = torch.ones(3, 4, dtype=F64)
    fixed = SolverSpec(method="rk4", dt=0.02, t_end=1.0, records=5, gtol=0.0)
    adaptive = SolverSpec(method="dopri5", rtol=1e-8, atol=1e-10, t_end=1.0, records=5,
                          gtol=0.0, check_every=1)
    rates = torch.linspace(0.5, 2.0, 4, dtype=F64)
    for solver in (fixed, adaptive):
        solver.validate()
        result = integrate(lambda y: -rates * y, y0, solver, lambda s, runs: s, 4)
        exact = torch.exp(-rates[None, :] * torch.as_tensor(solver.record_times())[:, None])
        np.testing.assert_allclose(result.records[0], exact.numpy(), rtol=1e-5)
    assert capacities == [1, INTEGRATE._DEVICE_CROSSINGS]
