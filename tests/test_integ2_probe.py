"""Second probe of the adaptive integrator (``ncsim.flow.integrate``) against a numpy reference.

The reference is a plain per-run loop of the documented controller, built on scipy's RK45
(Dormand-Prince) coefficients and dense output (``scipy.integrate.RK45``), sharing no
code with the integrator: error = RMS of (h sum e_i k_i) / (atol + rtol max(|y|, |y_new|)),
accept when <= 1, next step h x clamp(0.9 err^(-1/5), 0.2, 10) (at most x 1 after a rejection,
growth allowed after one), a step capped at its limit keeps max(dt, proposal), the CPU loop
caps steps only at t_end and records every time a step crosses; the accelerator loop also caps
a step at the third next record time and records at most two times a step (a third time
at the end of a step is recorded by the next step, at its start).
Flows are linear decays y' = -rates y with runs of very different rates, so runs take
different step sizes and reject steps at their stability limits.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from integrate_helpers import solver_spec, states_as_recorded
from scipy.integrate import RK45

from ncsim.flow.integrate import DONE, MAX_STEPS, integrate

F64 = torch.float64
INTEGRATE = importlib.import_module("ncsim.flow.integrate")
RATES = np.array([[0.5, 1.0, 2.0], [1.0, 8.0, 40.0], [3.0, 0.2, 90.0]])
Y0 = np.array([[1.0, -2.0, 0.5], [0.3, 1.0, -1.0], [2.0, 0.0, 1.0]])


def _velocity(rates: np.ndarray):
    r = torch.tensor(rates, dtype=F64)
    return lambda y: -r * y


def _use_loop(monkeypatch, loop):
    if loop == "device":
        monkeypatch.setattr(INTEGRATE, "_host_free", lambda device: True)
        monkeypatch.setattr(importlib.import_module("ncsim.products"), "HOST_BLAS", False)


def _stage_sum(weights, ks):
    """sum_j weights[j] ks[j] in the order of j over the non-zero weights (the integrator's
    rounding: its error estimate, a small difference of such sums, steers the step size)."""
    terms = [(w, k) for w, k in zip(weights, ks, strict=False) if w != 0.0]
    acc = terms[0][0] * terms[0][1]
    for w, k in terms[1:]:
        acc = acc + w * k
    return acc


def _reference(rates, y0, spec, crossings=None):
    """(steps, rejected, t_final, y_final, records (T, P)) of one run by the documented rule."""
    a, b, e, p = RK45.A, RK45.B, RK45.E, RK45.P
    times = spec.record_times()
    ext = np.append(times, [np.inf] * 4)
    t_end = float(spec.t_end)

    def f(y):
        return -rates * y

    y, t, h = y0.astype(float), 0.0, float(spec.dt)
    k = f(y)
    records = np.full((len(times), len(y0)), np.nan)
    j = 0
    if times[0] == 0.0:
        records[0], j = y, 1
    steps = rejected = 0
    while t < t_end and steps + rejected < spec.max_steps:
        limit = t_end if crossings is None else min(ext[j + crossings], t_end)
        capped = t + h >= limit
        hs = limit - t if capped else h
        ks = np.zeros((7, len(y)))
        ks[0] = k
        for s in range(1, 6):
            ks[s] = f(y + hs * _stage_sum(a[s, :s], ks[:s]))
        y_new = y + hs * _stage_sum(b, ks[:6])
        ks[6] = f(y_new)
        err = hs * _stage_sum(e, ks)
        scale = spec.atol + spec.rtol * np.maximum(np.abs(y), np.abs(y_new))
        norm = np.sqrt(np.mean((err / scale) ** 2))
        accept = norm <= 1.0
        t_new = limit if capped else t + hs
        factor = min(10.0, max(0.2, 0.9 * max(norm, 1e-10) ** -0.2))
        if not accept:
            factor = min(factor, 1.0)
        proposal = hs * factor
        h_next = max(h, proposal) if accept and capped else proposal
        if accept:
            crossed = 0
            while j < len(times) and times[j] <= t_new and crossed != crossings:
                crossed += 1
                theta = min(1.0, max(0.0, (times[j] - t) / hs))
                records[j] = y + hs * (ks.T @ p @ theta ** np.arange(1, 5))
                j += 1
            y, k, t = y_new, ks[6], t_new
            steps += 1
        else:
            rejected += 1
        h = h_next
    while j < len(times) and times[j] <= t:  # a record the last step did not take
        records[j], j = y, j + 1
    return steps, rejected, t, y, records


def _compare(result, spec, crossings):
    for i in range(len(RATES)):
        steps, rejected, t, y, records = _reference(RATES[i], Y0[i], spec, crossings)
        assert (int(result.steps[i]), int(result.rejected[i])) == (steps, rejected), i
        assert result.t_final[i] == t
        np.testing.assert_allclose(result.final_state[i].numpy(), y, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(result.records[i], records, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("loop", ["cpu", "device"])
def test_steps_rejections_and_records_follow_the_reference_controller(monkeypatch, loop):
    """Accepted and rejected step counts, t_final = t_end exactly, final state and dense
    records of three runs of different stiffness equal the reference loop's."""
    _use_loop(monkeypatch, loop)
    spec = solver_spec()
    result = integrate(_velocity(RATES), torch.tensor(Y0, dtype=F64), spec, states_as_recorded, 3)
    crossings = INTEGRATE._DEVICE_CROSSINGS if loop == "device" else None
    assert (result.code == DONE).all()
    assert (result.rejected[1:] > 0).all()  # the stiff runs meet their stability limit
    assert len(set(result.steps.tolist())) == 3  # three different step sequences
    _compare(result, spec, crossings)


@pytest.mark.parametrize("loop", ["cpu", "device"])
def test_records_equal_the_exact_solution_to_the_tolerance(monkeypatch, loop):
    """Every record (t = 0, the log-spaced times, t_end) is exp(-rate t) y0 within 1e-5."""
    _use_loop(monkeypatch, loop)
    spec = solver_spec()
    result = integrate(_velocity(RATES), torch.tensor(Y0, dtype=F64), spec, states_as_recorded, 3)
    times = spec.record_times()
    exact = Y0[:, None, :] * np.exp(-RATES[:, None, :] * times[None, :, None])
    np.testing.assert_allclose(result.records, exact, rtol=0, atol=1e-5)


@pytest.mark.parametrize("loop", ["cpu", "device"])
def test_a_shedding_batch_records_each_run_as_the_reference(monkeypatch, loop):
    """With ``select`` the finished runs leave the batch; the runs that go on record into
    their own rows (the slow runs' records and counts equal the reference)."""
    _use_loop(monkeypatch, loop)
    spec = solver_spec(check_every=4)
    def select(rows):
        return _velocity(RATES[rows.numpy()]), lambda s, k: k.double().norm(dim=1)

    result = integrate(_velocity(RATES), torch.tensor(Y0, dtype=F64), spec, states_as_recorded, 3,
                       select=select)
    assert (result.code == DONE).all()
    crossings = INTEGRATE._DEVICE_CROSSINGS if loop == "device" else None
    _compare(result, spec, crossings)


@pytest.mark.parametrize("loop", ["cpu", "device"])
@pytest.mark.parametrize("cap", [1, 7, 30])
def test_max_steps_caps_every_attempt_exactly(monkeypatch, loop, cap):
    """max_steps = n stops a run after exactly n attempts (accepted + rejected), as MAX_STEPS,
    at the reference's time and state."""
    _use_loop(monkeypatch, loop)
    spec = solver_spec(max_steps=cap, check_every=40)
    result = integrate(_velocity(RATES[1:2]), torch.tensor(Y0[1:2], dtype=F64), spec,
                       states_as_recorded, 3)
    steps, rejected, t, y, _ = _reference(RATES[1], Y0[1], spec,
                                          INTEGRATE._DEVICE_CROSSINGS if loop == "device"
                                          else None)
    assert result.code.tolist() == [MAX_STEPS]
    assert int(result.steps[0] + result.rejected[0]) == cap == steps + rejected
    assert result.t_final[0] == pytest.approx(t, rel=1e-10)
    np.testing.assert_allclose(result.final_state[0].numpy(), y, rtol=1e-8, atol=1e-12)


def test_device_steps_cut_at_dense_records_still_record_t_end(monkeypatch):
    """Records denser than the steps on the accelerator loop: every step is cut at the third
    next record time and records two, so the last step ends on t_end with the t_end record
    left to the final flush; every record, t_end included, is the reference's and exact."""
    _use_loop(monkeypatch, "device")
    spec = solver_spec(t_end=1.0, records=60, t_first=0.5, rtol=1e-8, atol=1e-12)
    rates, y0 = RATES[:1, :2], Y0[:1, :2]
    result = integrate(_velocity(rates), torch.tensor(y0, dtype=F64), spec, states_as_recorded, 2)
    times = spec.record_times()
    assert result.code.tolist() == [DONE] and result.t_final[0] == 1.0
    assert np.isfinite(result.records).all()
    np.testing.assert_allclose(result.records[0], y0 * np.exp(-rates * times[:, None]),
                               rtol=0, atol=1e-7)
    steps, rejected, _, _, records = _reference(rates[0], y0[0], spec,
                                                INTEGRATE._DEVICE_CROSSINGS)
    assert (int(result.steps[0]), int(result.rejected[0])) == (steps, rejected)
    np.testing.assert_allclose(result.records[0], records, rtol=1e-10, atol=1e-14)


def _first_step(rates, y0, rtol, atol, order=5):
    """Hairer, Norsett & Wanner II.4's starting step, exponent 1 / (order + 1)."""
    def rms(x):
        return np.sqrt(np.mean(x * x))

    scale = atol + rtol * np.abs(y0)
    k0 = -rates * y0
    d0, d1 = rms(y0 / scale), rms(k0 / scale)
    h0 = 1e-6 if min(d0, d1) < 1e-5 else 0.01 * d0 / d1
    d2 = rms((-rates * (y0 + h0 * k0) - k0) / scale) / h0
    big = max(d1, d2)
    h1 = max(1e-6, h0 * 1e-3) if big <= 1e-15 else (0.01 / big) ** (1.0 / (order + 1))
    return min(100 * h0, h1)


def test_automatic_first_step_is_the_textbook_starting_step():
    """With dt = None each run starts with its own HNW starting step (exponent 1/6 for
    dopri5): its step counts, records and final state equal the reference started there."""
    spec = solver_spec(dt=None)
    result = integrate(_velocity(RATES), torch.tensor(Y0, dtype=F64), spec, states_as_recorded, 3)
    firsts = [_first_step(RATES[i], Y0[i], spec.rtol, spec.atol) for i in range(3)]
    assert len(set(firsts)) == 3
    for i, first in enumerate(firsts):
        ref = solver_spec(dt=first)
        steps, rejected, t, y, records = _reference(RATES[i], Y0[i], ref)
        assert (int(result.steps[i]), int(result.rejected[i])) == (steps, rejected), i
        np.testing.assert_allclose(result.records[i], records, rtol=1e-9, atol=1e-13)
