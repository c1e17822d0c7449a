"""The benchmark harness itself: the peers solve ncsim's problem, every repeat of every solver
is checked, the ratios name what they compare, and few repeats are flagged."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from ncsim import bench as bench_module
from ncsim.bench import W2_COLUMNS, _benchmarks, _with_ratios, run_bench, w2_difference

workloads, peers = _benchmarks()


def test_peer_right_hand_sides_equal_autograd_of_the_stated_objective():
    """f = (1/N) sum CE(W h_i, y_i) + lambda_W/2 |W|^2 + lambda_H/2 |H|^2 (DESIGN.md), by
    autograd at a random state: the numpy and torch peers and ncsim's own batch agree."""
    from ncsim.flow.simulate import _Batch

    specs = workloads.w1(grid=2, t_end=50.0, records=10).specs
    problem = peers.Problem.from_specs(specs)
    batch = _Batch(specs)
    assert torch.equal(problem.y0, batch.y0)  # the same initial states
    lay = problem.objective.layout
    labels = torch.arange(10).repeat_interleave(20)
    y = torch.randn(problem.y0.shape, generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64) * 0.5
    expected = []
    for i, spec in enumerate(specs):
        yi = y[i].clone().requires_grad_(True)
        h, w = lay.view(yi[None], "H")[0], lay.view(yi[None], "W1")[0]
        f = (torch.nn.functional.cross_entropy((w @ h).T, labels)
             + spec.reg.lambda_w / 2 * (w**2).sum() + spec.reg.lambda_h / 2 * (h**2).sum())
        expected.append(-torch.autograd.grad(f, yi)[0])
    expected = torch.stack(expected)
    numpy_rhs = torch.stack([torch.from_numpy(problem.numpy_velocity(i)(0.0, y[i].numpy()))
                             for i in range(len(specs))])
    torch_rhs = problem.torch_velocity(problem.lambda_w, problem.lambda_h)(y)
    ours = torch.empty_like(y)
    batch.velocity(y, out=ours)
    for rhs in (numpy_rhs, torch_rhs, ours):
        assert float((rhs - expected).abs().max()) <= 1e-12


def test_peer_problem_refuses_runs_it_would_integrate_wrongly():
    from ncsim.spec import TimeScale

    specs = workloads.w1(grid=2, t_end=50.0, records=10).specs
    scaled = [dataclasses.replace(specs[0], time_scale=TimeScale(eta_h=2.0)), *specs[1:]]
    with pytest.raises(ValueError, match="time scales 1"):
        peers.Problem.from_specs(scaled)
    longer = workloads.w1(grid=2, t_end=60.0, records=10).specs
    with pytest.raises(ValueError, match="record times"):
        peers.Problem.from_specs(specs[:2] + longer[2:])


def test_accuracy_check_needs_one_value_per_run():
    ref = np.array([1.0, 1.0, 1.0])
    with pytest.raises(AssertionError, match="one value per run"):
        peers.check_accuracy("one run only", np.array([1.0]), ref, 1e-6)


def _table(values: dict[str, np.ndarray], times: np.ndarray) -> SimpleNamespace:
    return SimpleNamespace(trajectories=pd.DataFrame({"run_id": "r", "time": times, **values}))


def test_w2_difference_does_not_pass_a_nan_trajectory():
    times = np.linspace(0.0, 5.0, 6)
    good = {col: np.linspace(1.0, 2.0, 6) for col in W2_COLUMNS}
    assert w2_difference(_table(good, times), _table(good, times)) == 0.0
    nan_fn = {**good, "fn": np.full(6, np.nan)}
    assert w2_difference(_table(nan_fn, times), _table(good, times)) == math.inf
    one_nan = {**good, "loss": np.where(np.arange(6) == 3, np.nan, good["loss"])}
    assert w2_difference(_table(one_nan, times), _table(good, times)) == math.inf
    assert w2_difference(_table(good, times), _table(one_nan, times)) == math.inf
    # the same values at other record times are no match
    assert w2_difference(_table(good, times * 1.1), _table(good, times)) == math.inf


def _perturb_first_call(func, change):
    calls = [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        out = func(*args, **kwargs)
        return change(out) if calls[0] == 1 else out

    return wrapped


def test_every_repeat_of_a_peer_is_checked(monkeypatch):
    """A peer whose first repeat is off (its last one right) is reported, not passed."""

    def off(out):
        return {**out, "fn": out["fn"] + 1e-3}

    monkeypatch.setitem(peers.PEERS, "scipy_dop853_loop",
                        _perturb_first_call(peers.scipy_loop, off))
    w1 = bench_module.bench_w1("tiny", 2, "cpu", True, lambda m: None,
                               skip=("torchdiffeq_dopri5", "torchode_dopri5", "torchode_tsit5"))
    assert "exceeds the stated accuracy" in w1["solvers"]["scipy_dop853_loop"]["error"]
    assert w1["ratios"] == {} and "fastest_peer" not in w1
    # the JSON says what each time covers, and that ncsim integrated every run to T as well
    assert set(w1["timed"]) == {"ncsim", "peers"}
    assert w1["solvers"]["ncsim_dopri5"]["stopped_before_t_end"] == 0


def test_every_repeat_of_ncsim_is_checked(monkeypatch):
    def off(res):
        res.runs["final_fn"] = res.runs["final_fn"] + 1e-3
        return res

    monkeypatch.setattr(bench_module, "_simulate",
                        _perturb_first_call(bench_module._simulate, off))
    with pytest.raises(AssertionError, match="ncsim_dopri5: fn"):
        bench_module.bench_w1("tiny", 2, "cpu", False, lambda m: None)


def test_every_repeat_of_both_w2_forms_is_compared(monkeypatch):
    def off(res):
        res.trajectories["fn"] = np.nan
        return res

    monkeypatch.setattr(bench_module, "_simulate",
                        _perturb_first_call(bench_module._simulate, off))
    with pytest.raises(AssertionError, match="trajectories differ by inf"):
        bench_module.bench_w2n("tiny", 2, "cpu", lambda m: None)


def test_ratios_name_the_fastest_peer_and_keep_the_dtypes_apart():
    def row(t, dtype="float64"):
        return {"median_s": t, "dtype": dtype}

    entry = {"solvers": {
        "ncsim_dopri5": row(2.0), "ncsim_tsit5": row(1.0),
        "scipy_dop853_loop": row(3.0), "torchode_tsit5": row(2.5),
        "torchdiffeq_dopri5": {"dtype": "float64", "error": "missed"},
        "ncsim_dopri5_float32": row(0.5, "float32"), "ncsim_tsit5_float32": row(0.4, "float32"),
        "torchode_dopri5_float32": row(0.1, "float32")}}
    out = _with_ratios(entry, ("float64", "float32"))
    assert out["fastest_peer"] == "torchode_tsit5" and out["fastest_ncsim"] == "ncsim_tsit5"
    assert out["speedup_vs_fastest_peer"] == 2.5
    assert out["ratios"] == {"scipy_dop853_loop": 1.5, "torchode_tsit5": 2.5,
                             "torchode_dopri5_float32": 0.2}
    assert out["fastest_peer_float32"] == "torchode_dopri5_float32"
    assert out["fastest_ncsim_float32"] == "ncsim_tsit5_float32"
    assert out["speedup_vs_fastest_peer_float32"] == pytest.approx(0.25)


@pytest.mark.parametrize(("repeats", "peer_repeats", "flagged"),
                         [(1, None, True), (3, 1, True), (3, None, False), (5, 3, False)])
def test_fewer_than_three_repeats_are_flagged(repeats, peer_repeats, flagged, monkeypatch):
    """Below 3 repeats of ncsim, or of W1's peers (W1's measurement stood in), the results
    carry a warning."""
    import ncsim.bench as bench_module

    monkeypatch.setattr(bench_module, "bench_w1", lambda *args, **kwargs: {})
    results = run_bench(("W1",), repeats=repeats, peer_repeats=peer_repeats,
                        log=lambda m: None)
    assert ("warning" in results) == flagged
    assert results["peer_repeats"] == (peer_repeats or repeats)


def test_v1_peer_repeats_and_every_repeat_checked(monkeypatch):
    """--peer-repeats sets the DataLoader loop's repeats; a peer run that differs from ncsim's
    in one timed repeat only fails the row."""
    from ncsim.validate.data import load_dataset

    _benchmarks()
    import benchmarks.training_peer as training_peer

    digits = load_dataset("digits", per_class=12, test_per_class=4)
    config = dataclasses.replace(workloads.v1("tiny")[0].config)
    case = workloads.TrainingCase("mlp5", config, None, None)
    monkeypatch.setattr(workloads, "v1", lambda size, device: [case])
    monkeypatch.setattr("ncsim.validate.data.load_dataset", lambda *a, **k: digits)
    real = training_peer.dataloader_training
    calls = [0]

    def second_call_off(config, data):  # call 1 is the untimed warm-up
        calls[0] += 1
        log = real(config, data)
        if calls[0] == 2:
            log["loss"] = log["loss"] * 1.5
        return log

    monkeypatch.setattr(training_peer, "dataloader_training", second_call_off)
    rows = bench_module.bench_v1("tiny", 1, "cpu", lambda m: None, peer_repeats=2)
    assert calls[0] == 3  # warm-up and two timed repeats
    assert "differs from ncsim's" in rows[0]["dataloader"]["error"]


def test_cuda_measurements_wait_for_and_measure_the_device_asked(monkeypatch):
    """On ``cuda:1`` the timer waits for device 1 and the peak memory is device 1's (the
    current device, 0, was synchronised and measured instead)."""
    from ncsim.bench import timed

    seen = []

    def record(name, value=0):
        def call(device=None):
            seen.append((name, None if device is None else torch.device(device)))
            return value

        return call

    for name in ("synchronize", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, record(name))
    for name in ("memory_allocated", "max_memory_allocated"):
        monkeypatch.setattr(torch.cuda, name, record(name, 2**20))
    stats, out = timed(lambda: 7, 2, "cuda:1")
    assert out == 7 and stats["peak_mem_mb"] == 0.0
    assert seen and all(device == torch.device("cuda:1") for _, device in seen), seen
