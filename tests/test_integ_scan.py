"""Extreme-parameter scan of the batched integrator (ncsim.flow.integrate) and the saddle test
(ncsim.flow.saddle), driven directly with small right-hand sides.

Fixed findings: with atol = 0 or a tiny atol (< ~1e-20 at rtol 1e-8), a state with an
entry that is exactly 0 but moves makes the Hairer-Norsett-Wanner first step 0, NaN or ~1e-17
(|k0| / scale overflows or dwarfs everything), and the run is marked diverged at t ~ 0; the
simulator's CE UFM with a free bias (b starts at 0) hits it at atol = 0, and so does
x'' = -1e12 x from (1, 0) at rtol 1e-10, atol 1e-12 (first step ~1e-18, under the 1e-13
floor). A run at rest whose velocity is NaN next to its state makes the saddle test raise
numpy's LinAlgError for the whole batch; growth_rate also raises it for a state whose norm
overflows (|y| > ~1e154). The first step is now at least 10x the step floor where the
velocity is finite, a NaN neighbourhood gives no growth rate, and the norm is scaled.

Pinned invariants (held): closed forms of decays (rates 1e-12 .. 1e3 in one batch) and
oscillators, stop codes of growth to overflow in float64 and float32 (diverged, finite state,
no inf record), the 1e100 blow-up level and the 1e-13 step floor (documented limits), y' = 0
to t_end = 1e300, record times at 0, duplicated, at t_end and past it, max_steps = 1, a NaN
velocity from some time on, a batch of 1000 runs against runs alone; growth rates of A y
across scales 1e-12 .. 1e12 of A and of y, 0 included, at tiny eigenvalue gaps, batched and
alone.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from ncsim.flow.integrate import DIVERGED, DONE, MAX_STEPS, STEADY, integrate
from ncsim.flow.saddle import growth_rate
from ncsim.spec import ModelSpec, RunSpec, SolverSpec

F64 = torch.float64


def _spec(**fields) -> SolverSpec:
    base = dict(method="dopri5", dt=None, rtol=1e-8, atol=1e-12, t_end=1.0, records=5,
                t_first=0.1, gtol=0.0, check_every=16, max_steps=100_000)
    base.update(fields)
    spec = SolverSpec(**base)
    spec.validate()
    return spec


@dataclasses.dataclass(frozen=True)
class _TimesSpec(SolverSpec):
    """A solver spec with arbitrary record times (duplicates, past t_end)."""

    times: tuple = ()

    def record_times(self) -> np.ndarray:
        return np.array(self.times, dtype=float)


def _states(states: torch.Tensor, runs: torch.Tensor) -> torch.Tensor:
    return states


def _run(f, y0: torch.Tensor, spec: SolverSpec, **kwargs):
    return integrate(f, y0, spec, _states, y0.shape[1], **kwargs)


def _oscillator(y: torch.Tensor) -> torch.Tensor:
    return torch.stack([y[:, 1], -y[:, 0]], 1)


# ---------------------------------------------------------------------------------------------
# findings


@pytest.mark.parametrize("atol", [0.0, 1e-300])
def test_oscillator_from_a_zero_velocity_entry_with_atol_0_reaches_t_end(atol):
    """x'' = -x from (1, 0) with pure relative control: cos 1 at t_end = 1, not diverged."""
    result = _run(_oscillator, torch.tensor([[1.0, 0.0]], dtype=F64), _spec(atol=atol))
    assert result.code.tolist() == [DONE] and result.t_final.tolist() == [1.0]
    np.testing.assert_allclose(result.final_state[0].numpy(), [math.cos(1), -math.sin(1)],
                               rtol=1e-6)


@pytest.mark.parametrize("atol", [1e-22, 1e-40])
def test_oscillator_with_a_tiny_atol_reaches_t_end(atol):
    """rtol 1e-8 with atol 1e-22 / 1e-40 (scipy's RK45 integrates both to cos 1): not
    diverged at t ~ 1e-14."""
    result = _run(_oscillator, torch.tensor([[1.0, 0.0]], dtype=F64), _spec(atol=atol))
    assert result.code.tolist() == [DONE]
    np.testing.assert_allclose(result.final_state[0, 0].item(), math.cos(1), rtol=1e-6)


def test_fast_oscillator_from_rest_with_the_automatic_first_step():
    """x'' = -1e12 x from (1, 0), rtol 1e-10, atol 1e-12, 10 periods: cos(w t_end) = 1 as with
    a given first step dt = 1e-9 (which reaches t_end in 2001 steps), not diverged."""
    def f(y: torch.Tensor) -> torch.Tensor:
        return torch.stack([y[:, 1], -1e12 * y[:, 0]], 1)

    y0 = torch.tensor([[1.0, 0.0]], dtype=F64)
    fields = dict(rtol=1e-10, atol=1e-12, t_end=20 * math.pi / 1e6, t_first=1e-8)
    given = _run(f, y0, _spec(dt=1e-9, **fields))
    assert given.code.tolist() == [DONE]
    assert given.final_state[0, 0].item() == pytest.approx(1.0, abs=1e-8)
    result = _run(f, y0, _spec(**fields))
    assert result.code.tolist() == [DONE]
    assert result.final_state[0, 0].item() == pytest.approx(1.0, abs=1e-8)


def test_atol_0_with_a_given_first_step_reaches_t_end():
    """The same oscillator with atol = 0 but dt = 1e-3 given: the step control itself copes."""
    result = _run(_oscillator, torch.tensor([[1.0, 0.0]], dtype=F64), _spec(atol=0.0, dt=1e-3))
    assert result.code.tolist() == [DONE]
    np.testing.assert_allclose(result.final_state[0, 0].item(), math.cos(1), rtol=1e-7)


def test_moving_zero_entry_with_atol_1e_20_reaches_t_end():
    """Below the failing range: atol 1e-20 still starts with a usable step (24 steps)."""
    result = _run(_oscillator, torch.tensor([[1.0, 0.0]], dtype=F64), _spec(atol=1e-20))
    assert result.code.tolist() == [DONE]


def test_simulate_ufm_with_free_bias_and_atol_0_is_not_diverged():
    """simulate(CE UFM, bias free, atol = 0): the flow runs to t_end (atol 1e-20: status ok)."""
    from ncsim.flow import simulate

    spec = RunSpec(model=ModelSpec(classes=3, per_class=2, dim=4, bias="free", loss="ce"),
                   solver=SolverSpec(atol=0.0, rtol=1e-8, t_end=50.0, records=10,
                                     reduction="none"))
    run = simulate(spec, theory=False).runs.iloc[0]
    assert run["status"] != "diverged" and run["t_final"] == 50.0


def test_rest_point_with_nan_velocity_nearby_does_not_crash_the_batch():
    """y' = -y^(3/2) (NaN for y < 0) at rest from (1e-11, 0) beside a decay: no exception,
    both runs end (the NaN neighbourhood gives no growth rate, so the run is steady)."""
    def f(y: torch.Tensor) -> torch.Tensor:
        out = -y.clone()
        out[0] = -y[0] * torch.sqrt(y[0])
        return out

    y0 = torch.tensor([[1e-11, 0.0], [1.0, 1.0]], dtype=F64)
    result = _run(f, y0, _spec(gtol=1e-10, t_end=10.0))
    assert result.code[0] == STEADY and result.code[1] in (DONE, STEADY)


def test_growth_rate_at_a_state_of_entries_1e200():
    """A linear flow's rate does not depend on where it is measured: entries 1e200 included."""
    a = torch.as_tensor(np.diag([0.3, -0.1, -0.2, -0.5]))
    rate, radius = growth_rate(lambda y: y @ a.T, torch.full((1, 4), 1e200, dtype=F64),
                               torch.arange(1))
    assert rate[0] == pytest.approx(0.3, rel=1e-6) and radius[0] == pytest.approx(0.5, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# integrator invariants that held


def test_decays_from_1e_12_to_1e12_in_one_batch():
    """y' = -a y, a = 1e-12 .. 1e12 in one batch: a <= 10 match exp(-a) to 1e-7, a in
    [100, 1e3] reach t_end at the atol floor, a in [1e4, 1e11] stop at max_steps (attempts =
    1000), a = 1e12 needs steps below the 1e-13 floor (diverged at t = 0, documented); every
    state finite, and every run's code and step counts equal to the run alone."""
    a = torch.logspace(-12, 12, 25, dtype=F64)
    spec = _spec(max_steps=1000)
    y0 = torch.ones(25, 1, dtype=F64)
    result = _run(lambda y: -a[:, None] * y, y0, spec)
    assert np.isfinite(result.final_state.numpy()).all()
    for i, rate in enumerate(a.tolist()):
        if rate <= 10:
            assert result.code[i] == DONE
            assert result.final_state[i, 0].item() == pytest.approx(math.exp(-rate), rel=1e-7)
        elif rate <= 1e3:
            assert result.code[i] == DONE and abs(result.final_state[i, 0].item()) < 1e-11
        elif rate < 1e12:
            assert result.code[i] == MAX_STEPS
            assert result.steps[i] + result.rejected[i] == 1000
        else:
            assert result.code[i] == DIVERGED and result.t_final[i] == 0.0
    for i in (0, 13, 14, 20, 24):
        alone = _run(lambda y, i=i: -a[i] * y, y0[i:i + 1].clone(), spec)
        assert alone.code[0] == result.code[i] and alone.steps[0] == result.steps[i]
        assert alone.rejected[0] == result.rejected[i]
        np.testing.assert_allclose(alone.final_state[0].numpy(), result.final_state[i].numpy(),
                                   rtol=1e-9, atol=1e-20)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_growth_to_overflow_is_diverged_with_finite_state_and_records(dtype):
    """y' = a y (a = 1, 1e3, 1e6) to t_end 1e3: diverged (1e100 in float64; the step floor
    below float32's overflow), a finite final state, no inf record, records = e^(a t) to 1e-4
    (float32: 1e-3) up to where the run stopped and NaN after."""
    dt = getattr(torch, dtype)
    a = torch.tensor([1.0, 1e3, 1e6], dtype=dt)
    spec = _spec(dtype=dtype, rtol=1e-8 if dtype == "float64" else 1e-5, t_end=1e3,
                 records=40, t_first=1e-9)
    result = _run(lambda y: a[:, None] * y, torch.ones(3, 1, dtype=dt), spec)
    assert (result.code == DIVERGED).all()
    assert np.isfinite(result.final_state.double().numpy()).all()
    records = result.records[:, :, 0]
    assert not np.isinf(records).any()
    for i in range(3):
        reached = result.times <= result.t_final[i]
        assert np.isnan(records[i, ~reached]).all()
        exact = np.exp(a[i].item() * result.times[reached])
        np.testing.assert_allclose(records[i, reached], exact,
                                   rtol=1e-4 if dtype == "float64" else 1e-3)
    if dtype == "float64":
        assert (result.final_state[:, 0] > 1e100).all()
        np.testing.assert_allclose(result.t_final * a.numpy(), 100 * math.log(10), rtol=1e-3)


def test_finite_time_blowups_stop_at_their_blowup_time():
    """y' = y^2 from 1, 1e-3, 1e3: diverged at t = 1 / y0 (to 1e-6 relative), finite state."""
    y0 = torch.tensor([[1.0], [1e-3], [1e3]], dtype=F64)
    result = _run(lambda y: y * y, y0, _spec(t_end=1e9))
    assert (result.code == DIVERGED).all()
    np.testing.assert_allclose(result.t_final, [1.0, 1e3, 1e-3], rtol=1e-6)
    assert np.isfinite(result.final_state.numpy()).all()


@pytest.mark.parametrize("t_end", [1.0, 1e100, 1e300])
def test_zero_velocity_reaches_t_end_in_a_step_per_decade(t_end):
    """y' = 0: the first step 1e-6 grows x10 a step, no rejection, records all y0 (atol 0,
    1e-300, y0 = 0 and 1 alike)."""
    for atol in (0.0, 1e-300):
        y0 = torch.tensor([[0.0, 1.0]], dtype=F64)
        result = _run(lambda y: torch.zeros_like(y), y0, _spec(t_end=t_end, atol=atol))
        assert result.code.tolist() == [DONE] and result.t_final.tolist() == [t_end]
        assert result.rejected.tolist() == [0]
        assert result.steps[0] <= math.log10(t_end / 1e-6) + 2
        np.testing.assert_array_equal(result.records[0], np.tile([0.0, 1.0], (5, 1)))


def test_a_still_state_above_1e100_is_diverged():
    """Documented limit: an entry above 1e100 is a blow-up, even for y' = 0 from 1e101."""
    result = _run(lambda y: torch.zeros_like(y), torch.full((1, 1), 1e101, dtype=F64), _spec())
    assert result.code.tolist() == [DIVERGED] and result.steps.tolist() == [1]


@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_oscillators_up_to_omega_1e5(method):
    """x'' = -w^2 x from (1, 0), w = 1e-3 .. 1e5, one batch to t_end = 20 periods of w = 1e5,
    rtol 1e-10: records = cos(w t) to 1e-7 absolute."""
    w = torch.tensor([1e-3, 1.0, 1e3, 1e5], dtype=F64)
    spec = _spec(method=method, rtol=1e-10, atol=1e-12, t_end=40 * math.pi / 1e5, records=20,
                 t_first=1e-8, max_steps=20_000)
    y0 = torch.tensor([[1.0, 0.0]] * 4, dtype=F64)
    result = _run(lambda y: torch.stack([y[:, 1], -(w ** 2) * y[:, 0]], 1), y0, spec)
    assert (result.code == DONE).all()
    exact = np.cos(w.numpy()[:, None] * result.times[None, :])
    np.testing.assert_allclose(result.records[:, :, 0], exact, atol=1e-7)


def test_record_times_at_0_duplicated_at_t_end_and_past_it():
    """Record times (0, 0, 0.5, 0.5, 1, 1, 1e300) of y' = -y to t_end 1: duplicates equal,
    exp(-t) to 1e-10, NaN past t_end, for dopri5, rk4 and gd (its Euler iterates)."""
    times = (0.0, 0.0, 0.5, 0.5, 1.0, 1.0, 1e300)
    for method in ("dopri5", "rk4", "gd"):
        dt = None if method == "dopri5" else 1 / 64
        spec = _TimesSpec(method=method, dt=dt, rtol=1e-10, atol=1e-12, t_end=1.0, records=5,
                          t_first=0.1, gtol=0.0, times=times)
        result = _run(lambda y: -y, torch.ones(2, 1, dtype=F64), spec)
        rec = result.records[0, :, 0]
        assert rec[0] == rec[1] == 1.0 and rec[2] == rec[3] and rec[4] == rec[5]
        assert np.isnan(rec[6])
        if method == "gd":
            assert rec[4] == pytest.approx((1 - 1 / 64) ** 64, rel=1e-12)
        else:
            np.testing.assert_allclose(rec[:6], np.exp(-np.array(times[:6])), rtol=1e-8)
        np.testing.assert_array_equal(result.records[0], result.records[1])


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "rk4", "gd"])
def test_max_steps_1(method):
    """max_steps = 1: t_end 1e-7 is done in one step; t_end 1 stops at max_steps after one
    accepted attempt; a NaN velocity is diverged at t = 0 after that attempt."""
    dt = None if method in ("dopri5", "tsit5") else 0.01
    y0 = torch.ones(1, 2, dtype=F64)
    short = _run(lambda y: -y, y0, _spec(method=method, dt=dt, max_steps=1, t_end=1e-7,
                                         t_first=1e-8))
    assert short.code.tolist() == [DONE] and short.t_final.tolist() == [1e-7]
    cut = _run(lambda y: -y, y0, _spec(method=method, dt=dt, max_steps=1))
    assert cut.code.tolist() == [MAX_STEPS] and cut.steps.tolist() == [1]
    assert 0 < cut.t_final[0] < 1
    bad = _run(lambda y: torch.full_like(y, math.nan), y0, _spec(method=method, dt=dt,
                                                                  max_steps=1))
    assert bad.code.tolist() == [DIVERGED] and bad.t_final.tolist() == [0.0]


@pytest.mark.parametrize("t_nan", [0.3, 0.999999])
def test_velocity_nan_from_some_time_on(t_nan):
    """A clock coordinate makes the velocity NaN after t_nan: that run is diverged at t_nan
    (to 1e-9), its state finite and equal to exp(-t_nan); its neighbour goes on to t_end,
    bit for bit as alone."""
    def f(y: torch.Tensor) -> torch.Tensor:
        out = torch.stack([-y[:, 0], torch.ones_like(y[:, 1])], 1)
        out[0, 0] = torch.where(y[0, 1] > t_nan, torch.tensor(math.nan, dtype=F64), out[0, 0])
        return out

    spec = _spec(records=10, t_first=1e-3)
    y0 = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=F64)
    result = _run(f, y0, spec)
    assert result.code.tolist() == [DIVERGED, DONE]
    assert result.t_final[0] == pytest.approx(t_nan, abs=1e-9)
    assert result.final_state[0, 0].item() == pytest.approx(math.exp(-t_nan), rel=1e-7)
    alone = _run(lambda y: torch.stack([-y[:, 0], torch.ones_like(y[:, 1])], 1),
                 y0[1:].clone(), spec)
    assert torch.equal(alone.final_state[0], result.final_state[1])
    assert alone.steps[0] == result.steps[1]


def test_a_batch_of_1000_runs_matches_each_run_alone():
    """1000 runs (decays, oscillators, logistics of rates 1e-4 .. 1e3, y^2 blow-ups), with
    and without ``select``: every sampled run alone has the batch's code and step counts and
    its state to 1e-7 relative (1e-9 absolute)."""
    gen = torch.Generator().manual_seed(1)
    r = 1000
    rates = 10 ** (torch.rand(r, generator=gen, dtype=F64) * 7 - 4)
    kinds = torch.randint(0, 4, (r,), generator=gen)
    y0 = torch.rand(r, 2, generator=gen, dtype=F64) + 0.1

    def make(rates, kinds):
        def f(y):
            out = torch.where((kinds == 0)[:, None], -rates[:, None] * y,
                              rates[:, None] * torch.stack([y[:, 1], -y[:, 0]], 1))
            out = torch.where((kinds == 2)[:, None], rates[:, None] * y * (1 - y), out)
            return torch.where((kinds == 3)[:, None], y * y, out)
        return f

    spec = _spec(t_end=5.0, records=8, t_first=0.01, max_steps=1500)
    batch = _run(make(rates, kinds), y0, spec,
                 select=lambda rows: (make(rates[rows], kinds[rows]),
                                      lambda s, k: k.double().norm(dim=1)))
    assert set(np.unique(batch.code)) == {DONE, MAX_STEPS, DIVERGED}
    for i in torch.randperm(r, generator=gen)[:15].tolist():
        alone = _run(make(rates[i:i + 1], kinds[i:i + 1]), y0[i:i + 1].clone(), spec)
        assert alone.code[0] == batch.code[i] and alone.steps[0] == batch.steps[i]
        assert alone.rejected[0] == batch.rejected[i]
        np.testing.assert_allclose(alone.final_state[0].numpy(),
                                   batch.final_state[i].numpy(), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("rtol", [1e-14, 1e-10, 1e-6, 1e-2])
def test_tolerance_proportionality_on_the_logistic(rtol):
    """Logistic y' = y (1 - y) from 1e-3 to t = 20 with atol 0: y(20) against the closed form
    to 0.25 rtol (1e-15 floor), no stall, more steps for tighter rtol."""
    y0 = 1e-3
    exact = y0 * math.exp(20) / (1 - y0 + y0 * math.exp(20))
    result = _run(lambda y: y * (1 - y), torch.tensor([[y0]], dtype=F64),
                  _spec(rtol=rtol, atol=0.0, t_end=20.0))
    assert result.code.tolist() == [DONE]
    assert abs(result.final_state.item() / exact - 1) <= max(0.25 * rtol, 1e-15)


# ---------------------------------------------------------------------------------------------
# growth_rate invariants that held


def _matrix(values, p: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    return q @ np.diag(np.resize(np.asarray(values, dtype=float), p)) @ q.T


@pytest.mark.parametrize("scale", [1e-12, 1e-4, 1.0, 1e4, 1e12])
def test_growth_rate_scales_with_the_flow_at_every_state_scale(scale):
    """rate(c A) = c rate(A) and radius likewise to 1e-6, c = 1e-12 .. 1e12, at states of
    entries 0, 1e-300, 1e-12, 1 and 1e12 (five distinct eigenvalues, P = 40)."""
    a = torch.as_tensor(scale * _matrix([0.3, -1e-3, -0.02, -0.1, -1.0], 40))
    for entry in (0.0, 1e-300, 1e-12, 1.0, 1e12):
        rate, radius = growth_rate(lambda y: y @ a.T, torch.full((1, 40), entry, dtype=F64),
                                   torch.arange(1))
        assert rate[0] == pytest.approx(0.3 * scale, rel=1e-6)
        assert radius[0] == pytest.approx(scale, rel=1e-6)


@pytest.mark.parametrize("gap", [0.0, 1e-14, 1e-10, 1e-6])
def test_growth_rate_at_a_tiny_eigenvalue_gap(gap):
    """Top eigenvalues 0.5 and 0.5 - gap: the rate is 0.5 to 1e-9 absolute."""
    a = torch.as_tensor(_matrix([0.5, 0.5 - gap, -0.5, -1.0], 30))
    rate, _ = growth_rate(lambda y: y @ a.T, torch.zeros(1, 30, dtype=F64), torch.arange(1))
    assert rate[0] == pytest.approx(0.5, abs=1e-9)


def test_growth_rate_batched_equals_alone_bit_for_bit():
    """Six runs of their own linear flows at states of scale 0, 1e-300, 1e-10, 1, 1e5: each
    rate is bit for bit the one of the run alone and of the run as a one-row subset."""
    rng = np.random.default_rng(0)
    mats = torch.as_tensor(np.stack([_matrix([rng.uniform(-1, 1), -0.5, -0.2, 0.05], 12, s)
                                     for s in range(6)]))
    scales = np.array([[0.0], [1e-300], [1e-10], [1.0], [1e5], [1.0]])
    y = torch.as_tensor(rng.standard_normal((6, 12)) * scales)
    every, _ = growth_rate(lambda s: torch.einsum("rij,rj->ri", mats, s), y, torch.arange(6))
    for i in range(6):
        alone, _ = growth_rate(lambda s, i=i: torch.einsum("rij,rj->ri", mats[i:i + 1], s),
                               y[i:i + 1], torch.arange(1))
        subset, _ = growth_rate(lambda s: torch.einsum("rij,rj->ri", mats, s), y,
                                torch.tensor([i]))
        assert every[i] == alone[0] == subset[0]
        want = np.linalg.eigvals(mats[i].numpy()).real.max()
        assert every[i] == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_growth_rate_float32_across_scales(scale):
    """float32 state and flow (eigenvalues 0.3, -0.1, -0.2, -0.3 times c): rate 0.3 c to 1e-6."""
    a = torch.as_tensor(scale * _matrix([0.3, -0.1, -0.2, -0.3], 20), dtype=torch.float32)
    rate, _ = growth_rate(lambda y: y @ a.T, torch.zeros(1, 20), torch.arange(1))
    assert rate[0] == pytest.approx(0.3 * scale, rel=1e-6)
