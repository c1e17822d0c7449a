"""Integrators and the batched simulator against closed forms, scipy and themselves."""

from __future__ import annotations

import dataclasses
import importlib
import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from ncsim.flow import RECORDED, integrate, simulate
from ncsim.flow.simulate import _Batch
from ncsim.spec import (
    InitSpec,
    ModelSpec,
    OnsetSpec,
    Regularization,
    RunSpec,
    SolverSpec,
    TimeScale,
)

K, N_PER, D = 4, 5, 6
LAM = 0.02


def _closed_form_fn(loss: str, bias: str, lam_w: float, lam_h: float) -> float:
    """Feature norm at the global minimiser (theory brief, sections 1.1 and 2.1)."""
    r = math.sqrt(N_PER * lam_w * lam_h)
    c = math.sqrt(lam_w / (N_PER * lam_h))
    if loss == "ce":
        h2 = (K - 1) / K * c * math.log(1 / r - (K - 1))
    else:
        h2 = c * (1 - K * r) * ((K - 1) / K if bias == "free" else 1.0)
    return math.sqrt(h2)


@pytest.mark.parametrize(("loss", "bias"), [("ce", "none"), ("mse", "none"), ("mse", "free")])
def test_end_state_equals_closed_form(loss, bias):
    lam_w, lam_h = LAM, 1.5 * LAM
    spec = RunSpec(
        model=ModelSpec(loss=loss, bias=bias, classes=K, per_class=N_PER, dim=D),
        reg=Regularization(lambda_w=lam_w, lambda_h=lam_h),
        init=InitSpec(scale=0.3, seed=4),
        solver=SolverSpec(t_end=4000, rtol=1e-11, atol=1e-13, records=40, gtol=0),
    )
    row = simulate(spec).runs.iloc[0]
    expected = _closed_form_fn(loss, bias, lam_w, lam_h)
    assert row["status"] == "ok"
    assert abs(row["final_fn"] / expected - 1) < 1e-6
    assert row["final_nc1"] < 1e-8
    assert row["final_nc2_etf"] < 1e-6
    assert row["final_nc2_etf_w"] < 1e-6
    assert row["final_nc3"] < 1e-6


def _scipy_reference(spec: RunSpec):
    batch = _Batch([spec])

    def rhs(_t, y):
        state = torch.as_tensor(y, dtype=torch.float64).unsqueeze(0)
        return batch.velocity(state)[0].numpy()

    times = spec.solver.record_times()
    sol = solve_ivp(rhs, (0, spec.solver.t_end), batch.y0[0].numpy(), method="DOP853",
                    rtol=1e-10, atol=1e-12, t_eval=times)
    states = torch.as_tensor(sol.y.T, dtype=torch.float64)
    runs = torch.zeros(len(times), dtype=torch.long)
    return batch, batch.record(states, runs).numpy()


@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
@pytest.mark.parametrize(("loss", "bias"), [("ce", "none"), ("mse", "reg")])
def test_trajectory_equals_scipy_dop853(method, loss, bias):
    spec = RunSpec(
        model=ModelSpec(loss=loss, bias=bias, classes=3, per_class=2, dim=4),
        reg=Regularization(lambda_w=0.01, lambda_h=0.02, lambda_b=0.05 if bias == "reg" else 0),
        init=InitSpec(scale=0.5, seed=1),
        solver=SolverSpec(method=method, t_end=60, rtol=1e-10, atol=1e-12, records=30, gtol=0),
    )
    batch, expected = _scipy_reference(spec)
    flow = integrate(batch.velocity, batch.y0, spec.solver, batch.record, len(RECORDED))
    got = flow.records[0]
    cols = [RECORDED.index(c) for c in ("loss", "objective", "fn", "w_norm", "within_energy",
                                         "class_mean_norm")]
    np.testing.assert_allclose(got[:, cols], expected[:, cols], rtol=1e-7, atol=1e-9)


def test_run_alone_equals_run_in_batch_of_256():
    base = RunSpec(
        model=ModelSpec(loss="ce", classes=3, per_class=2, dim=4),
        solver=SolverSpec(t_end=200, records=25, rtol=1e-9, atol=1e-11),
    )
    target = base.replace(reg=Regularization(lambda_w=3e-3, lambda_h=7e-3),
                          init=InitSpec(scale=0.2, seed=11))
    others = [base.replace(reg=Regularization(lambda_w=10 ** (-4 + 2 * i / 255),
                                              lambda_h=10 ** (-1 - 2 * i / 255)),
                           init=InitSpec(scale=0.05 + i / 100, seed=i)) for i in range(255)]
    alone = simulate(target).trajectories
    together = simulate(others[:100] + [target] + others[100:])
    rid = alone["run_id"].iloc[0]
    inside = together.trajectories[together.trajectories["run_id"] == rid]
    assert len(together.runs) == 256
    cols = ["time", "loss", "fn", "nc1", "nc1_trace", "nc3"]
    np.testing.assert_allclose(inside[cols].to_numpy(), alone[cols].to_numpy(), rtol=1e-12,
                               atol=1e-14)


def test_above_threshold_run_is_vanishing():
    lam_c = 1 / (K * math.sqrt(N_PER))  # lambda_W = lambda_H = lam_c <=> K sqrt(n l l) = 1
    specs = [RunSpec(model=ModelSpec(loss=loss, classes=K, per_class=N_PER, dim=D),
                     reg=Regularization(lambda_w=factor * lam_c, lambda_h=factor * lam_c),
                     init=InitSpec(scale=0.5, seed=0),
                     solver=SolverSpec(t_end=3000, records=60))
             for loss in ("ce", "mse") for factor in (1.3, 0.7)]
    runs = simulate(specs).runs
    assert list(runs["status"]) == ["vanishing", "ok", "vanishing", "ok"]
    vanished = runs[runs["status"] == "vanishing"]
    assert (vanished["final_fn"] < 1e-6).all()
    # no onset for a vanishing run (its nc1_trace may cross as the norms go to 0), one for
    # the collapsed runs
    assert vanished["onset_time"].isna().all() and vanished["fn_at_onset"].isna().all()
    assert runs.loc[runs["status"] == "ok", "onset_time"].notna().all()


def test_gd_is_explicit_euler():
    spec = RunSpec(model=ModelSpec(classes=3, per_class=2, dim=4),
                   reg=Regularization(lambda_w=0.1, lambda_h=0.2),
                   init=InitSpec(scale=0.7, seed=2),
                   solver=SolverSpec(method="gd", dt=0.25, t_end=1.0, records=2, t_first=0.5,
                                     gtol=0))
    batch = _Batch([spec])
    flow = integrate(batch.velocity, batch.y0, spec.solver, batch.record, len(RECORDED))
    y = batch.y0.clone()
    for _ in range(4):
        y = y - 0.25 * batch.objective.gradient(y, batch.penalties)
    torch.testing.assert_close(flow.final_state, y, rtol=0, atol=1e-15)
    assert flow.steps[0] == 4


def test_rk4_converges_to_adaptive_solution():
    spec = RunSpec(model=ModelSpec(loss="mse", classes=3, per_class=2, dim=4),
                   reg=Regularization(lambda_w=0.05, lambda_h=0.05),
                   init=InitSpec(scale=0.6, seed=3),
                   solver=SolverSpec(method="rk4", dt=0.05, t_end=20, records=10, gtol=0))
    fixed = simulate(spec).trajectories["fn"].to_numpy()
    adaptive = simulate(spec.replace(solver=SolverSpec(t_end=20, records=10, rtol=1e-11,
                                                       atol=1e-13, gtol=0)))
    np.testing.assert_allclose(fixed, adaptive.trajectories["fn"].to_numpy(), rtol=1e-6)


def test_diverging_run_is_frozen_and_others_continue():
    base = RunSpec(model=ModelSpec(loss="mse", classes=3, per_class=2, dim=4),
                   reg=Regularization(lambda_w=0.01, lambda_h=0.01),
                   solver=SolverSpec(method="gd", dt=0.5, t_end=600, records=10))
    specs = [base.replace(init=InitSpec(scale=s, seed=1)) for s in (0.3, 30.0, 0.4)]
    runs = simulate(specs).runs
    assert list(runs["status"]) == ["ok", "diverged", "ok"]
    assert np.isfinite(runs["final_fn"]).all()


def test_uniform_time_scale_rescales_time():
    base = RunSpec(model=ModelSpec(loss="ce", classes=3, per_class=2, dim=4),
                   reg=Regularization(lambda_w=0.01, lambda_h=0.01),
                   init=InitSpec(scale=0.3, seed=5),
                   solver=SolverSpec(t_end=40, records=12, rtol=1e-11, atol=1e-13, gtol=0))
    slow = simulate(base).trajectories
    fast = simulate(base.replace(
        time_scale=TimeScale(eta_h=2.0, eta_w=2.0),
        solver=SolverSpec(t_end=20, t_first=0.005, records=12, rtol=1e-11, atol=1e-13, gtol=0),
    )).trajectories
    np.testing.assert_allclose(fast["time"] * 2, slow["time"], rtol=1e-12)
    np.testing.assert_allclose(fast["fn"], slow["fn"], rtol=1e-8)


def test_steady_state_stops_early_and_records_onset():
    """gtol sits above the integrator's noise floor at rest (|grad f| ~ 1e-10 .. 4e-9 here
    with rtol 1e-8: explicit steps at the stability limit leave the stiffest mode undamped)."""
    spec = RunSpec(model=ModelSpec(loss="mse", classes=3, per_class=2, dim=3),
                   reg=Regularization(lambda_w=0.05, lambda_h=0.05),
                   init=InitSpec(scale=0.5, seed=0),
                   solver=SolverSpec(t_end=1e6, gtol=1e-7, records=50),
                   onset=OnsetSpec(threshold=1e-3))
    row = simulate(spec).runs.iloc[0]
    assert row["status"] == "ok"
    assert row["t_final"] < 1e4
    assert row["grad_norm_final"] <= 1e-7
    assert 0 < row["onset_time"] < row["t_final"]


def test_float32_agrees_with_float64():
    spec = RunSpec(model=ModelSpec(loss="ce", classes=4, per_class=3, dim=5),
                   reg=Regularization(lambda_w=0.01, lambda_h=0.01),
                   init=InitSpec(scale=0.2, seed=0),
                   solver=SolverSpec(t_end=300, records=20, rtol=1e-6, atol=1e-8))
    f64 = simulate(spec).runs.iloc[0]
    f32 = simulate(spec.replace(solver=SolverSpec(t_end=300, records=20, rtol=1e-6, atol=1e-8,
                                                  dtype="float32"))).runs.iloc[0]
    assert abs(f32["final_fn"] / f64["final_fn"] - 1) < 1e-4
    assert abs(f32["onset_time"] / f64["onset_time"] - 1) < 1e-3


def test_final_state_continues_the_run_exactly():
    spec = RunSpec(model=ModelSpec(loss="ce", bias="free", classes=3, per_class=2, dim=4),
                   reg=Regularization(lambda_w=0.01, lambda_h=0.02),
                   init=InitSpec(scale=0.4, seed=7),
                   solver=SolverSpec(method="gd", dt=0.1, t_end=10, records=5, gtol=0))
    whole = simulate(spec.replace(solver=SolverSpec(method="gd", dt=0.1, t_end=20, records=5,
                                                    gtol=0)))
    first = simulate(spec)
    blocks = first.final_state(first.runs["run_id"].iloc[0])
    second = simulate(spec.replace(init=InitSpec(kind="arrays", arrays=blocks)))
    assert second.runs["final_fn"].iloc[0] == pytest.approx(whole.runs["final_fn"].iloc[0],
                                                             rel=1e-12)


def test_record_times():
    """0, then log-spaced up to t_end; one record is t_end, two are 0 and t_end."""
    np.testing.assert_array_equal(SolverSpec(t_end=5.0, records=1).record_times(), [5.0])
    np.testing.assert_array_equal(SolverSpec(t_end=5.0, records=2).record_times(), [0.0, 5.0])
    times = SolverSpec(t_end=100.0, records=4, t_first=1.0).record_times()
    np.testing.assert_allclose(times, [0.0, 1.0, 10.0, 100.0], rtol=1e-15)


def _uneven_runs(check_every: int = 16) -> list[RunSpec]:
    """Three small UFM-CE runs of 203-307 steps to T = 500 at rtol 1e-10, started with a step of
    30 that each rejects a few times (4-8 rejections in all)."""
    return [RunSpec(model=ModelSpec(loss="ce", classes=3, per_class=2, dim=4),
                    reg=Regularization(lambda_w=lw, lambda_h=lh), init=InitSpec(scale=0.4, seed=1),
                    solver=SolverSpec(t_end=500.0, records=10, dt=30.0, gtol=0, rtol=1e-10,
                                      atol=1e-12, check_every=check_every))
            for lw, lh in [(1e-3, 1e-3), (0.2, 0.2), (0.01, 0.05)]]


def test_rejected_steps_keep_their_state_in_the_cpu_loop():
    """Runs that reject while others of the batch step keep their state, their first stage and
    their error scale (the CPU loop copies their rows back): every run of the batch follows
    scipy's DOP853."""
    specs = _uneven_runs()
    result = simulate(specs, theory=False)
    runs = result.runs
    assert (runs["rejected_steps"] > 0).all()
    cols = [RECORDED.index(c) for c in ("loss", "objective", "fn", "w_norm", "within_energy")]
    for spec, rid in zip(specs, runs["run_id"], strict=True):
        _, expected = _scipy_reference(spec)
        got = result.trajectories[result.trajectories["run_id"] == rid][list(RECORDED)]
        np.testing.assert_allclose(got.to_numpy()[:, cols], expected[:, cols], rtol=1e-7,
                                   atol=1e-9)


def test_cpu_loop_takes_the_accelerator_loops_steps(monkeypatch):
    """The CPU loop (rejecting runs copy their rows back; finished runs leave at once) and the
    accelerator loop (masked updates of every state) take the same steps, rejections included,
    to the same end (two records: the accelerator loop's steps are cut at records only). Both
    take their products through torch: numpy's BLAS (the CPU loop's route for small products)
    can round differently from torch in the last bit, which flips a borderline rejection
    without any difference between the loops (with numpy 2.4.6: 6 rejections against 8)."""
    specs = [s.replace(solver=dataclasses.replace(s.solver, records=2)) for s in _uneven_runs()]
    cols = ["steps", "rejected_steps", "t_final"]
    monkeypatch.setattr(importlib.import_module("ncsim.products"), "HOST_BLAS", False)
    cpu = simulate(specs, theory=False).runs
    _emulate_accelerator(monkeypatch)
    device = simulate(specs, theory=False).runs
    assert (cpu["rejected_steps"] > 0).all()
    np.testing.assert_array_equal(cpu[cols].to_numpy(), device[cols].to_numpy())
    np.testing.assert_allclose(cpu["final_fn"], device["final_fn"], rtol=1e-13, atol=0)


def test_a_finished_run_leaves_the_cpu_batch_at_once(monkeypatch):
    """On the CPU a chunk ends at the step where a run finishes, so the batch sheds it then,
    not after ``check_every`` steps: the first run to finish (203 steps) is the last one
    evaluated with all three, although one chunk could hold every step of the batch."""
    from ncsim.models.ufm import UFMObjective

    sizes = []
    real = UFMObjective.velocity

    def counting(self, state, *args, **kwargs):
        sizes.append(state.shape[0])
        return real(self, state, *args, **kwargs)

    monkeypatch.setattr(UFMObjective, "velocity", counting)
    runs = simulate(_uneven_runs(check_every=10_000), theory=False).runs
    first = runs.sort_values("steps").iloc[0]
    evaluated = first["steps"] + first["rejected_steps"]
    full = sizes.count(3)
    # 6 stages a step after the first stage, 1 evaluation to start (the first step is given)
    # and 1 of the final states (their gradient norm)
    assert full == 6 * evaluated + 2
    assert sizes.count(2) > 0 and sizes.count(1) > 0


@pytest.mark.parametrize("count", [1, 2, 6, 8])
def test_dense_output_of_some_runs_equals_their_rows_of_all(count):
    """The dense output of a few runs (their stages gathered) and of many (one product over
    every run, then their rows) equals the rows of the whole batch's, and the stage sum
    y + h sum_j w_j(theta) k_j written out by hand."""
    from ncsim.flow.integrate import _dense, _Stages
    from ncsim.flow.tableau import tableau

    tab = tableau("tsit5")
    gen = torch.Generator().manual_seed(3)
    y = torch.randn(8, 11, generator=gen, dtype=torch.float64)
    ks = _Stages(tab.stages, y)
    ks.buf.copy_(torch.randn(ks.buf.shape, generator=gen, dtype=torch.float64))
    h = torch.rand(8, generator=gen, dtype=torch.float64) + 0.5
    theta = torch.rand(8, generator=gen, dtype=torch.float64)
    rows = torch.randperm(8, generator=gen)[:count]
    everyone = _dense(tab, y, h, ks, theta)
    some = _dense(tab, y, h, ks, theta[rows], rows)
    torch.testing.assert_close(some, everyone[rows], rtol=1e-14, atol=1e-14)
    powers = np.stack([theta.numpy() ** (j + 1) for j in range(tab.p.shape[1])], axis=1)
    weights = powers @ tab.p.T  # (R, S)
    by_hand = y.numpy() + h.numpy()[:, None] * np.einsum("rs,srp->rp", weights, ks.buf.numpy())
    np.testing.assert_allclose(everyone.numpy(), by_hand, rtol=1e-13, atol=1e-13)


def test_cpu_and_device_next_state_agree_on_every_part():
    """The CPU's row copy-back and the device's masked update give the same next state,
    magnitude, peak and first stage, also for a rejected trial state past the divergence
    bound (the run keeps its own peak)."""
    from ncsim.flow.integrate import _Chunk, _Stages
    from ncsim.flow.tableau import tableau

    tab = tableau("tsit5")
    gen = torch.Generator().manual_seed(5)
    y, y_new = (torch.randn(6, 9, generator=gen, dtype=torch.float64) for _ in range(2))
    y_new[2] *= 1e120  # a rejected trial far past 1e100
    accept = torch.tensor([True, False, False, True, True, False])
    results = {}
    for host_free in (False, True):
        ks = _Stages(tab.stages, y)
        ks.buf.copy_(torch.randn(ks.buf.shape, generator=torch.Generator().manual_seed(6),
                                 dtype=torch.float64))
        chunk = _Chunk(tab, lambda v: v, False, ks, None, torch.arange(6), None, None,
                       torch.abs, None, 1, host_free)
        old = (y, y.abs(), y.abs().amax(1))
        new = (y_new.clone(), y_new.abs(), y_new.abs().amax(1))
        results[host_free] = [part.clone() for part in chunk._next_state(accept, old, new, ks)]
        first, last = ks[0].clone(), ks[-1].clone()
    for cpu, device in zip(results[False], results[True], strict=True):
        assert torch.equal(cpu, device)
    y_next, mag, peak, k1 = results[False]
    assert torch.equal(y_next[accept], y_new[accept]) and torch.equal(y_next[~accept], y[~accept])
    assert torch.equal(mag, y_next.abs()) and torch.equal(peak, y_next.abs().amax(1))
    assert peak[2] < 1e100
    assert torch.equal(k1[accept], last[accept]) and torch.equal(k1[~accept], first[~accept])


def test_adaptive_run_that_overflows_is_diverged_and_others_continue():
    """An init so large that the logits overflow: the run is marked diverged at once (NaN
    error), and the other runs of its batch end as they do alone."""
    base = RunSpec(model=ModelSpec(loss="mse", classes=3, per_class=2, dim=4),
                   reg=Regularization(lambda_w=0.01, lambda_h=0.01),
                   solver=SolverSpec(method="tsit5", t_end=600, records=10))
    specs = [base.replace(init=InitSpec(scale=s, seed=1)) for s in (0.3, 1e155, 0.4)]
    runs = simulate(specs, theory=False).runs
    assert list(runs["status"]) == ["ok", "diverged", "ok"]
    assert runs["steps"].iloc[1] == 0
    alone = simulate([specs[0]], theory=False).runs
    np.testing.assert_allclose(runs["final_fn"].iloc[0], alone["final_fn"].iloc[0], rtol=1e-12)


def _emulate_accelerator(monkeypatch) -> None:
    """Run the accelerator's loop on the CPU: no host synchronisation inside a chunk, and no
    product through numpy (a device never takes that route)."""
    monkeypatch.setattr(importlib.import_module("ncsim.flow.integrate"), "_host_free",
                        lambda device: True)
    monkeypatch.setattr(importlib.import_module("ncsim.products"), "HOST_BLAS", False)


def _small_ce_runs(count: int, check_every: int) -> list[RunSpec]:
    """``count`` small UFM-CE runs (K = 3, n = 2, d = 4), T = 50 with 40 records."""
    return [RunSpec(model=ModelSpec(loss="ce", classes=3, per_class=2, dim=4),
                    reg=Regularization(lambda_w=0.01 * (i + 1), lambda_h=0.02),
                    init=InitSpec(scale=0.4, seed=i),
                    solver=SolverSpec(t_end=50.0, records=40, check_every=check_every))
            for i in range(count)]


def test_records_computed_in_blocks_equal_one_call(monkeypatch):
    """Queued records are measured in blocks (cache-sized); the block size changes nothing."""
    integrate_module = importlib.import_module("ncsim.flow.integrate")

    specs = _small_ce_runs(12, check_every=64)
    blocks = simulate(specs, theory=False).trajectories
    monkeypatch.setattr(integrate_module, "_RECORD_CHUNK", 5)
    small = simulate(specs, theory=False).trajectories
    monkeypatch.setattr(integrate_module, "_RECORD_CHUNK", 10_000)
    whole = simulate(specs, theory=False).trajectories
    cols = list(RECORDED)
    # Equal to rounding: torch reduces a block of one state by another kernel than a block of
    # many (a std over W's row norms moves by 1e-16); a misplaced record would move by O(1).
    np.testing.assert_allclose(small[cols].to_numpy(), whole[cols].to_numpy(), rtol=1e-12,
                               atol=0)
    np.testing.assert_allclose(blocks[cols].to_numpy(), whole[cols].to_numpy(), rtol=1e-12,
                               atol=0)
    assert len(small) == len(whole) == len(blocks)


def test_chattering_relu_run_stops_as_stalled():
    """dopri5 on a ReLU head chatters where a pre-activation slides along zero; the run stops
    as ``stalled`` after ~1000 rejections instead of crawling to t_end, and rk4 gets through."""
    specs = [RunSpec(model=ModelSpec(kind="deep", depth=3, activation="relu", loss="mse",
                                     classes=4, per_class=5, dim=8),
                     reg=Regularization(lambda_w=1e-3, lambda_h=1e-3),
                     init=InitSpec(scale=0.5, seed=seed),
                     solver=SolverSpec(t_end=2000, records=20))
             for seed in range(2)]
    runs = simulate(specs, theory=False).runs
    assert (runs["status"] == "stalled").all()
    assert (runs["rejected_steps"] >= 1000).all() and (runs["t_final"] < 2000).all()
    fixed = [s.replace(solver=SolverSpec(method="rk4", dt=0.01, t_end=2.0, records=5))
             for s in specs]
    done = simulate(fixed, theory=False).runs
    assert (done["t_final"] == 2.0).all() and not (done["status"] == "stalled").any()


@pytest.mark.parametrize("capacity", [1, 5])
def test_small_record_queue_and_the_accelerator_loop_change_no_number(monkeypatch, capacity):
    """A record queue of fewer slots than a chunk (large batches) gives the same records as the
    full queue (to rounding: other states share a metrics block), on the CPU loop (flushed when
    full) and on the accelerator loop (no host test inside a chunk, chunks cut to the queue's
    capacity), which is run here on the CPU; the two loops agree to the tolerance."""
    integrate_module = importlib.import_module("ncsim.flow.integrate")
    specs = _small_ce_runs(6, check_every=16)
    cols = list(RECORDED)
    flushes = []
    real_flush = integrate_module._Recorder.flush

    def counting_flush(self):
        flushes.append(self.capacity)
        real_flush(self)

    def records() -> np.ndarray:
        flushes.clear()
        values = simulate(specs, theory=False).trajectories[cols].to_numpy()
        assert np.isfinite(values).all()
        return values

    monkeypatch.setattr(integrate_module._Recorder, "flush", counting_flush)
    cpu_full = records()
    cpu_syncs = len(flushes)
    monkeypatch.setattr(integrate_module, "record_slots", lambda *args: capacity)
    np.testing.assert_allclose(records(), cpu_full, rtol=1e-13, atol=1e-15)
    assert set(flushes) == {capacity}
    _emulate_accelerator(monkeypatch)
    device_small = records()
    device_syncs = len(flushes)
    monkeypatch.setattr(integrate_module, "record_slots", lambda *args: 16)
    device_full = records()
    assert device_syncs > len(flushes)  # shorter chunks: more synchronisations
    assert cpu_syncs > 0
    np.testing.assert_allclose(device_small, device_full, rtol=1e-13, atol=1e-15)
    assert device_full.shape == cpu_full.shape
    np.testing.assert_allclose(device_full, cpu_full, rtol=1e-6, atol=1e-8)
    assert not np.array_equal(device_full, cpu_full)  # the loops take different steps


class _ForbiddenOnDevice:
    """Inside a replayed chunk: every ATen operation that synchronises with the host
    (``item``/``bool``, ``nonzero`` (boolean masks), ``unique``, ...) and every tensor made
    from host data (``torch.tensor``, ``as_tensor``, ``from_numpy``, and the host scalar of
    ``x[i] = 1.0``, which a CUDA tensor copies from the host: ``lift_fresh``) raises, as they
    would break (or be frozen into) a CUDA graph capture."""

    FUNCTIONS = ("tensor", "as_tensor", "from_numpy")
    METHODS = ("tolist", "numpy", "cpu", "new_tensor")  # no ATen op on a CPU tensor

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        aten = torch.ops.aten
        syncing = {aten._local_scalar_dense, aten.nonzero, aten.masked_select, aten._unique2,
                   aten.unique_consecutive, aten.unique_dim, aten.repeat_interleave,
                   aten.equal, aten.is_nonzero, aten.lift_fresh}

        indexing = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}

        def boolean_mask(args) -> bool:  # x[mask]: the kernel asks the host for the count
            return len(args) > 1 and any(isinstance(i, torch.Tensor)
                                         and i.dtype in (torch.bool, torch.uint8)
                                         for i in args[1] or ())

        class NoSync(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func.overloadpacket in syncing or (func.overloadpacket in indexing
                                                      and boolean_mask(args)):
                    raise RuntimeError(f"{func} inside a captured chunk")
                return func(*args, **(kwargs or {}))

        def forbidden(name):
            def raiser(*args, **kwargs):
                raise RuntimeError(f"torch.{name} inside a captured chunk")
            return raiser

        self.saved = [(torch, f, getattr(torch, f)) for f in self.FUNCTIONS]
        self.saved += [(torch.Tensor, m, getattr(torch.Tensor, m)) for m in self.METHODS]
        for owner, name, _ in self.saved:
            setattr(owner, name, forbidden(name))
        self.mode = NoSync()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)
        for owner, name, value in self.saved:
            setattr(owner, name, value)


class _FakeGraphs:
    """torch.cuda's capture, on the CPU: ``capture`` runs the chunk once (the warm-up) and
    records the next call without running it, as a capture does; ``replay`` runs the
    recorded call, with host synchronisations forbidden, on the state tensors held at capture
    time (a graph keeps the addresses it captured: replacing a tensor of the state dict
    afterwards would leave the graph on the old one)."""

    def __init__(self) -> None:
        self.captures, self.replays = 0, 0

    def capture(self, advance, state):
        advance(state)
        self.captures += 1
        fake, frozen = self, dict(state)

        class Graph:
            def replay(self) -> None:
                fake.replays += 1
                with _ForbiddenOnDevice():
                    advance(frozen)

        return Graph()


class _FakeRecordGraphs:
    """Stand-in for ``_capture_record`` on the CPU: the capture runs the call once; a replay
    runs it again on the same static buffers under :class:`_ForbiddenOnDevice` and writes the
    result into the captured output, as a replayed graph does."""

    def __init__(self) -> None:
        self.captures, self.replays, self.sizes = 0, 0, []

    def capture(self, record, states, runs):
        values = record(states, runs)
        self.captures += 1
        self.sizes.append(states.shape[0])
        fake = self

        class Graph:
            def replay(self) -> None:
                fake.replays += 1
                with _ForbiddenOnDevice():
                    fresh = record(states, runs)
                values.copy_(fresh)

        return Graph(), values


def _host_checks_off(monkeypatch) -> None:
    """The label checks the metrics run on CPU tensors only (a device skips them)."""
    metrics = importlib.import_module("ncsim.metrics")
    monkeypatch.setattr(metrics, "_check_features", lambda features, labels, K: labels.long())


def _use_fake_graphs(monkeypatch) -> tuple[_FakeGraphs, _FakeRecordGraphs]:
    """Stand-ins for both captures (chunks of steps, metrics calls) on the CPU."""
    integrate_module = importlib.import_module("ncsim.flow.integrate")
    chunks, records = _FakeGraphs(), _FakeRecordGraphs()
    monkeypatch.setattr(integrate_module, "_capture_graph", chunks.capture)
    monkeypatch.setattr(integrate_module, "_capture_record", records.capture)
    _host_checks_off(monkeypatch)
    return chunks, records


def _integrate_batch(specs, **solver_changes):
    """integrate() on the batch of ``specs``; returns (result, the sizes of the batches that
    followed each change)."""
    import dataclasses

    batch = _Batch(specs)
    solver = dataclasses.replace(batch.solver, **solver_changes)
    changes = []

    def select(runs):
        changes.append(runs.shape[0])
        return batch.select(runs)

    result = integrate(batch.velocity, batch.y0, solver, batch.record, len(RECORDED),
                       eta=batch.eta, grad_norm=batch.grad_norm, select=select,
                       error_scale=batch.error_scale)
    return result, changes


def test_cuda_graph_chunks_replay_the_accelerator_loop(monkeypatch):
    """Chunks captured once per batch and replayed give the accelerator loop's step counts
    exactly and its numbers to rounding, for runs that end at t_end and runs that end steady;
    the batch shrinks (and is captured again) only when a quarter of it or less still runs,
    and no replayed chunk synchronises with the host or copies host data to the device."""
    integrate_module = importlib.import_module("ncsim.flow.integrate")
    _emulate_accelerator(monkeypatch)
    # weight decays 1e-4 .. 1: the runs need different numbers of steps; the strongest decays
    # come to rest (|grad f| <= gtol) long before t_end
    specs = [RunSpec(model=ModelSpec(loss="ce", classes=3, per_class=2, dim=4),
                     reg=Regularization(lambda_w=10.0 ** -(i / 2), lambda_h=10.0 ** -(i / 2)),
                     init=InitSpec(scale=0.4, seed=i),
                     solver=SolverSpec(t_end=200.0, records=30, check_every=4, gtol=1e-6))
             for i in range(9)]
    plain, plain_changes = _integrate_batch(specs)
    fake, records = _use_fake_graphs(monkeypatch)
    graphed, changes = _integrate_batch(specs, cuda_graphs=True)
    # The plain loop steps smaller batches (it sheds every finished run): a stage sum over
    # another number of runs may round a run's entries otherwise (1e-16), so numbers agree to
    # rounding and step counts exactly.
    np.testing.assert_allclose(graphed.records, plain.records, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(graphed.steps, plain.steps)
    np.testing.assert_allclose(graphed.t_final, plain.t_final, rtol=1e-9, atol=0)
    np.testing.assert_array_equal(graphed.code, plain.code)
    torch.testing.assert_close(graphed.final_state, plain.final_state, rtol=1e-13, atol=1e-15)
    status = integrate_module.STATUS_NAMES
    assert {status[c] for c in graphed.code} == {"steady", "t_end"}
    assert np.isfinite(graphed.records[graphed.code == integrate_module.DONE]).all()
    # without graphs the batch shrinks whenever a run finished; with them only to a quarter
    sizes, graph_sizes = [9, *plain_changes], [9, *changes]
    assert len(plain_changes) >= 4 and all(a > b for a, b in zip(sizes, sizes[1:]))
    assert 1 <= len(changes) < len(plain_changes)
    assert all(4 * b <= a for a, b in zip(graph_sizes, graph_sizes[1:]))
    assert set(changes) <= set(plain_changes)  # it shrinks to the runs still running
    assert fake.captures <= 1 + len(changes)  # a batch is captured at its second chunk
    assert fake.replays > 3 * fake.captures
    # the metrics calls: one capture per size of block used twice or more (at most three)
    assert 1 <= records.captures <= 3 and records.replays > 3
    without, without_records = _use_fake_graphs(monkeypatch)
    _integrate_batch(specs)  # cuda_graphs off: no capture
    assert without.captures == 0 and without_records.captures == 0


def test_the_stand_in_capture_holds_the_captured_tensors(monkeypatch):
    """Replacing a state tensor after capture (instead of writing into it) leaves a real graph
    on the old tensor; the stand-in does the same, so such a loop fails its tests."""
    fake = _FakeGraphs()
    state = {"y": torch.zeros(2)}

    def advance(s):
        s["y"].add_(1.0)

    graph = fake.capture(advance, state)
    held = state["y"]
    state["y"] = torch.zeros(2)  # replaced: the graph still adds into ``held``
    graph.replay()
    assert held.tolist() == [2.0, 2.0] and state["y"].tolist() == [0.0, 0.0]
    with pytest.raises(RuntimeError, match="index"), _ForbiddenOnDevice():
        held[held > 1.0]  # a boolean mask asks the host for the count
    with pytest.raises(RuntimeError, match="nonzero"), _ForbiddenOnDevice():
        torch.nonzero(held)
    with pytest.raises(RuntimeError, match="_local_scalar_dense"), _ForbiddenOnDevice():
        bool(held.sum() > 0)
    with pytest.raises(RuntimeError, match="lift_fresh"), _ForbiddenOnDevice():
        held[0] = 1.0  # on CUDA: a copy from the host, refused by a capture
    for read in (lambda t: t.tolist(), lambda t: t.cpu(), lambda t: t.numpy(),
                 lambda t: t[t.to(torch.uint8)], lambda t: t.new_tensor([1.0])):
        with pytest.raises(RuntimeError, match="inside a captured chunk"), _ForbiddenOnDevice():
            read(held)
    assert held.tolist() == [2.0, 2.0]  # restored afterwards


@pytest.mark.parametrize("model, reduction", [
    (ModelSpec(loss="ce", classes=3, per_class=2, dim=40), "gram"),
    (ModelSpec(loss="mse", bias="reg", classes=3, per_class=30, dim=4), "classes"),
    (ModelSpec(kind="deep", depth=3, activation="tanh", loss="mse", classes=3, per_class=2,
               dim=5), "none"),
])
def test_every_state_form_replays_without_host_synchronisation(monkeypatch, model, reduction):
    """The Gram, class-means and deep forms run inside replayed chunks too (their velocities,
    error scales and records hold no host read), with the eager loop's numbers."""
    _emulate_accelerator(monkeypatch)
    specs = [RunSpec(model=model, reg=Regularization(lambda_w=0.01 * (i + 1), lambda_h=0.02,
                                                     lambda_b=0.01),
                     init=InitSpec(scale=0.4, seed=i),
                     solver=SolverSpec(t_end=20.0, records=12, check_every=4,
                                       reduction=reduction))
             for i in range(3)]
    assert _Batch(specs).form == reduction
    plain, _ = _integrate_batch(specs)
    fake, records = _use_fake_graphs(monkeypatch)
    graphed, _ = _integrate_batch(specs, cuda_graphs=True)
    assert torch.equal(graphed.final_state, plain.final_state)
    np.testing.assert_array_equal(graphed.steps, plain.steps)
    # records to rounding: the eager loop sheds finished runs sooner, and a metrics block of
    # one state is reduced by other torch kernels than a block of several (1e-16)
    np.testing.assert_allclose(graphed.records, plain.records, rtol=1e-13, atol=0)
    assert np.isfinite(graphed.records).all() and fake.replays > 0 and records.replays > 0


def test_a_host_synchronisation_inside_a_replayed_chunk_is_caught(monkeypatch):
    """The stand-in capture is strict: a velocity that asks the host for a value fails."""
    _emulate_accelerator(monkeypatch)
    _use_fake_graphs(monkeypatch)
    batch = _Batch(_small_ce_runs(2, check_every=4))
    import dataclasses

    def syncing(y, out=None):
        float(y.abs().max())  # a host read: forbidden in a graph
        return batch.velocity(y, out)

    solver = dataclasses.replace(batch.solver, cuda_graphs=True)
    with pytest.raises(RuntimeError, match="inside a captured chunk"):
        integrate(syncing, batch.y0, solver, batch.record, len(RECORDED))


def test_cuda_graphs_are_refused_off_cuda():
    from ncsim.errors import InputError

    with pytest.raises(InputError, match="CUDA device"):
        SolverSpec(cuda_graphs=True).validate()
    with pytest.raises(InputError, match="adaptive"):
        SolverSpec(method="rk4", dt=0.1, cuda_graphs=True, device="cuda").validate()


@pytest.mark.parametrize("method", ["gd", "rk4", "dopri5", "tsit5"])
def test_stability_polynomial_matches_exp_to_the_order_and_the_linear_step(method):
    """R(z) agrees with exp(z) in its first order + 1 coefficients, and one step of the
    method on dy/dt = mu y (mu < 0) multiplies y by R(h mu)."""
    from math import factorial

    from ncsim.flow.integrate import _stages
    from ncsim.flow.tableau import tableau

    tab = tableau(method)
    coeffs = tab.stability_polynomial()
    np.testing.assert_allclose(coeffs[:tab.order + 1],
                               [1 / factorial(j) for j in range(tab.order + 1)], rtol=1e-13)
    mu, h = -0.7, torch.tensor([1.3], dtype=torch.float64)
    y = torch.ones(1, 1, dtype=torch.float64)
    y_new, _ = _stages(tab, lambda v: mu * v, y, mu * y, h)
    assert float(y_new) == pytest.approx(np.polynomial.Polynomial(coeffs)(1.3 * mu), rel=1e-14)


def test_real_stability_boundaries_against_independent_roots():
    """Euler's boundary is 2; RK4's and Dormand-Prince's are the smallest positive roots of
    R(-x) = +-1 (numpy's polynomial roots), and Dormand-Prince's R(z), built from scipy's own
    RK45 coefficients, is the same polynomial, with z^6 / 600 as its last term."""
    from scipy.integrate import RK45

    from ncsim.flow.tableau import tableau

    assert tableau("gd").real_stability_boundary() == pytest.approx(2.0, abs=1e-9)

    def first_crossing(coeffs: np.ndarray) -> float:
        poly = np.polynomial.Polynomial(coeffs)(np.polynomial.Polynomial([0.0, -1.0]))
        roots = np.concatenate([(poly - 1).roots(), (poly + 1).roots()])
        real = roots[(abs(roots.imag) < 1e-9) & (roots.real > 1e-9)].real
        return float(real.min())

    for method, known in (("rk4", 2.785293563), ("dopri5", 3.306567893)):
        tab = tableau(method)
        boundary = tab.real_stability_boundary()
        assert boundary == pytest.approx(first_crossing(tab.stability_polynomial()), abs=1e-9)
        assert boundary == pytest.approx(known, abs=1e-9)
    a = np.zeros((7, 7))
    a[:6, :5] = RK45.A
    a[6, :6] = RK45.B
    b = np.append(RK45.B, 0.0)
    theirs, power = [1.0], np.ones(7)
    for _ in range(7):
        theirs.append(float(b @ power))
        power = a @ power
    np.testing.assert_allclose(tableau("dopri5").stability_polynomial(), theirs, rtol=1e-14,
                               atol=1e-17)
    assert theirs[6] == pytest.approx(1 / 600, rel=1e-13) and abs(theirs[7]) < 1e-17
