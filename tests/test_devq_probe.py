"""Probes of the record queue of ncsim.flow.integrate: its byte budgets, a record that lags
behind the last step, the batch shrink of the captured loop, and the one-record schedule.

Every flow here is y' = -a y (one rate per entry), whose records are y0 exp(-a t).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from test_flow import _emulate_accelerator, _use_fake_graphs

from ncsim.flow.integrate import integrate, record_slots
from ncsim.spec import SolverSpec

F64 = torch.float64
INTEGRATE = importlib.import_module("ncsim.flow.integrate")
W1_P = 6720  # parameters of a W1 run (26,880 bytes in float32)


def _exact(y0: torch.Tensor, rates: torch.Tensor, times: np.ndarray) -> np.ndarray:
    """y0 exp(-rates t): (runs, times, P)."""
    return (y0.numpy()[:, None, :]
            * np.exp(-rates.numpy()[None, None, :] * np.asarray(times)[None, :, None]))


def test_record_slots_follow_the_byte_budget_of_each_device(monkeypatch):
    """4096 W1 runs: 1 GiB of queue on a device keeps 4 slots in float64 and 9 in float32;
    256 MiB on the CPU keeps 1 and 2; the slots never pass the wanted count nor drop to 0."""
    cpu = torch.device("cpu")
    assert record_slots(4096, W1_P, 8, 16, cpu) == 1
    assert record_slots(4096, W1_P, 4, 16, cpu) == 2
    assert record_slots(10**6, W1_P, 8, 16, cpu) == 1  # not 0
    assert record_slots(2, 3, 8, 16, cpu) == 16
    assert record_slots(64, W1_P, 4, 1000, cpu) == 2**28 // (64 * W1_P * 4) == 156
    monkeypatch.setattr(INTEGRATE, "_host_free", lambda device: True)
    assert record_slots(4096, W1_P, 8, 16, cpu) == 4
    assert record_slots(4096, W1_P, 4, 16, cpu) == 9
    assert record_slots(64, W1_P, 4, 1000, cpu) == 2**30 // (64 * W1_P * 4) == 624
    assert record_slots(2, 3, 8, 16, cpu) == 16


@pytest.mark.parametrize("crossings", [1, 2])
def test_a_record_at_the_last_step_end_is_taken_by_finish(monkeypatch, crossings):
    """Records crowded at the end (0.995 ... 1 = t_end) and loose steps on the device loop: the
    step that ends at t_end is cut there by a record time it may not take, so the last record
    lags behind the loop and _finish takes it from the final state (exact to the tolerance)."""
    monkeypatch.setattr(INTEGRATE, "_host_free", lambda device: True)
    monkeypatch.setattr(INTEGRATE, "_DEVICE_CROSSINGS", crossings)
    pushes = []
    real_push = INTEGRATE._Recorder.push

    def push(self, mask, states, rec_index, rows=None):
        pushes.append(mask.clone())
        real_push(self, mask, states, rec_index, rows)

    monkeypatch.setattr(INTEGRATE._Recorder, "push", push)
    rates = torch.tensor([1.0, 2.0], dtype=F64)
    y0 = torch.tensor([[1.0, 1.0], [2.0, -0.5]], dtype=F64)
    solver = SolverSpec(method="dopri5", rtol=1e-11, atol=1e-14, t_end=1.0, records=12,
                        t_first=0.995, gtol=0.0, check_every=8)
    solver.validate()
    times = solver.record_times()
    result = integrate(lambda y: -rates * y, y0, solver, lambda s, runs: s, 2)
    assert np.isfinite(result.records).all()
    np.testing.assert_allclose(result.records, _exact(y0, rates, times), rtol=1e-9, atol=0)
    np.testing.assert_array_equal(result.t_final, [1.0, 1.0])
    # the loop pushes ``crossings`` times an iteration, in chunks of ``check_every``
    # iterations (both runs take the same steps here); _finish adds one push of both runs
    chunks = -(-int(result.steps.max()) // solver.check_every)
    assert len(pushes) == crossings * solver.check_every * chunks + 1
    assert pushes[-1].all()


def test_the_captured_loop_shrinks_when_exactly_a_quarter_still_runs(monkeypatch):
    """Four runs, three of which come to rest early (gtol): when one of four runs still runs
    (1 x 4 <= 4) the captured batch shrinks to it (select is called with that run only);
    the records stay exact and the slow run ends at t_end."""
    _emulate_accelerator(monkeypatch)
    _use_fake_graphs(monkeypatch)
    rates = torch.tensor([[30.0], [30.0], [30.0], [0.05]], dtype=F64)
    y0 = torch.ones(4, 1, dtype=F64)
    selected = []

    def select(rows):
        selected.append(rows.tolist())
        sub = rates[rows].clone()
        return (lambda y: -sub * y), (lambda s, k: k.double().norm(dim=1))

    solver = SolverSpec(method="dopri5", rtol=1e-8, atol=1e-12, t_end=10.0, records=400,
                        gtol=1e-4, check_every=4, cuda_graphs=True)
    result = integrate(lambda y: -rates * y, y0, solver, lambda s, runs: s, 1, select=select)
    assert selected == [[3]]
    assert list(result.code) == [INTEGRATE.STEADY] * 3 + [INTEGRATE.DONE]
    assert result.t_final[3] == 10.0
    times = solver.record_times()
    np.testing.assert_allclose(result.records[3, :, 0], np.exp(-0.05 * times), rtol=1e-7)


@pytest.mark.parametrize("device_loop", [False, True])
def test_one_record_is_the_state_at_t_end_not_at_zero(monkeypatch, device_loop):
    """records = 1 (record_times: [t_end]; validate asks for 2, integrate does not): t = 0 is
    not recorded, and the single record is y(t_end)."""
    if device_loop:
        monkeypatch.setattr(INTEGRATE, "_host_free", lambda device: True)
    rates = torch.tensor([0.5, 3.0], dtype=F64)
    y0 = torch.tensor([[1.0, -2.0]], dtype=F64)
    for solver in (SolverSpec(method="dopri5", rtol=1e-9, atol=1e-12, t_end=2.0, records=1,
                              gtol=0.0),
                   SolverSpec(method="rk4", dt=0.01, t_end=2.0, records=1, gtol=0.0)):
        result = integrate(lambda y: -rates * y, y0, solver, lambda s, runs: s, 2)
        assert result.records.shape == (1, 1, 2)
        np.testing.assert_allclose(result.records[0, 0], [np.exp(-1.0), -2 * np.exp(-6.0)],
                                   rtol=1e-6)


def test_a_batch_that_lives_one_chunk_is_never_captured(monkeypatch):
    """With CUDA graphs the first chunk of a batch runs eagerly: a flow done in one chunk
    makes no capture; done in many, one capture and a replay for every later chunk."""
    _emulate_accelerator(monkeypatch)
    rates = torch.tensor([0.5, 2.0], dtype=F64)
    y0 = torch.ones(3, 2, dtype=F64)
    for check_every, captures in ((100, 0), (8, 1)):
        chunks, _ = _use_fake_graphs(monkeypatch)
        solver = SolverSpec(method="dopri5", rtol=1e-10, atol=1e-13, t_end=1.0, records=6,
                            gtol=0.0, check_every=check_every, cuda_graphs=True)
        result = integrate(lambda y: -rates * y, y0, solver, lambda s, runs: s, 2)
        assert chunks.captures == captures and 8 < int(result.steps.max()) <= 100
        steps = int(result.steps.max())
        # chunk 1 eager, chunk 2 captured (its warm-up runs it), the rest replayed
        assert chunks.replays == (0 if captures == 0 else -(-steps // check_every) - 2)
        np.testing.assert_allclose(result.records, _exact(y0, rates, solver.record_times()),
                                   rtol=1e-9, atol=0)
