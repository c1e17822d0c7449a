"""The numbers the benchmark runner reports: medians and peaks over the repeats, FLOP rates,
relative trajectory differences, the speed-up of a reduced form, and the worst error over
every repeat (with clocks, memory probes and timings replaced by fixed values where a real
measurement would not be reproducible)."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from test_bench_harness import _perturb_first_call

from ncsim import bench as bench_module
from ncsim.bench import W2_COLUMNS, _benchmarks, timed, w2_difference

workloads, peers = _benchmarks()


class _Memory:
    """Stands in for PeakMemory: each block reports the next of the given peaks (bytes)."""

    def __init__(self, peaks: list[int]) -> None:
        self.peaks = iter(peaks)

    def __call__(self, device: str) -> SimpleNamespace:
        probe = SimpleNamespace(peak=0)
        peak = next(self.peaks)

        class Block:
            def __enter__(self):
                return probe

            def __exit__(self, *exc):
                probe.peak = peak

        return Block()


def _clock(durations: list[float]):
    """perf_counter that makes repeat i last durations[i] (start, end pairs 10 s apart)."""
    marks = iter([m for i, d in enumerate(durations) for m in (10.0 * i, 10.0 * i + d)])
    return lambda: next(marks)


def test_timed_reports_the_median_and_the_largest_peak_of_the_repeats(monkeypatch):
    """Three repeats of 1, 6 and 2 s: the median is 2 s (the mean would be 3), the times are
    kept in order; peaks of 1, 3 and 2 MiB give 3 MiB (the largest, not the last); the check
    sees every repeat's result and the last result is returned."""
    monkeypatch.setattr(bench_module, "time",
                        SimpleNamespace(perf_counter=_clock([1.0, 6.0, 2.0]), sleep=time.sleep))
    monkeypatch.setattr(bench_module, "PeakMemory", _Memory([2**20, 3 * 2**20, 2 * 2**20]))
    calls = iter(range(1, 10))
    checked: list[int] = []
    stats, out = timed(lambda: next(calls), 3, "cpu", check=checked.append)
    assert stats == {"median_s": 2.0, "times_s": [1.0, 6.0, 2.0], "peak_mem_mb": 3.0}
    assert checked == [1, 2, 3] and out == 3


def test_timed_median_of_an_even_count_is_the_middle_mean(monkeypatch):
    """Four repeats of 1, 9, 2 and 4 s: the median is (2 + 4) / 2 = 3 s (the mean is 4)."""
    monkeypatch.setattr(bench_module, "time", SimpleNamespace(
        perf_counter=_clock([1.0, 9.0, 2.0, 4.0]), sleep=time.sleep))
    monkeypatch.setattr(bench_module, "PeakMemory", _Memory([0, 0, 0, 0]))
    stats, _ = timed(lambda: None, 4, "cpu")
    assert stats["median_s"] == 3.0


def test_matmul_rates_count_two_flops_per_multiply_add(monkeypatch):
    """(R, K, d) x (R, d, N) takes R K d N multiply-adds, 2 R K d N FLOPs: with R, K, d, N =
    2, 3, 4, 5 and 7 calls timed at 1 ms each the rate is 240 / 1e-3 FLOP/s, for torch and
    for numpy alike."""
    monkeypatch.setattr(bench_module, "timed",
                        lambda fn, repeats, device: ({"median_s": 7e-3}, None))
    rates = bench_module._matmul_rates((2, 3, 4, 5), bench_module.torch.float64, "cpu", 7, 1)
    assert rates == {"torch_bmm": pytest.approx(2.4e5, rel=1e-12),
                     "numpy_matmul": pytest.approx(2.4e5, rel=1e-12)}


def test_w3_rates_count_three_products_per_right_hand_side(monkeypatch):
    """W3 tiny (R, K, n, d = 4, 10, 10, 64; N = 100): one right-hand side is Z = W H, G H^T
    and W^T G, 3 x 2 R K d N = 1.536e6 FLOPs, the batched product 2 R K d N = 5.12e5; at
    1 ms a call they are 1.536 and 0.512 GFLOP/s, a fraction of 3."""
    monkeypatch.setattr(bench_module, "timed",
                        lambda fn, repeats, device: ({"median_s": 5e-3, "peak_mem_mb": 0.0},
                                                     None))
    rows = bench_module.bench_w3("tiny", 1, "cpu", lambda message: None)
    for row in rows:
        assert (row["R"], row["K"], row["N"], row["d"]) == (4, 10, 100, 64)
        assert row["rhs_gflops"] == pytest.approx(1.536, rel=1e-12)
        assert row["matmul_gflops"] == pytest.approx(0.512, rel=1e-12)
        assert row["fraction_of_matmul_rate"] == pytest.approx(3.0, rel=1e-12)


def _table(values: dict[str, np.ndarray], times: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"run_id": "r", "time": times, **values})


def test_w2_difference_is_relative_to_the_second_tables_largest_value():
    """Each column's largest |a - b| over the largest |b|: fn of b up to 4, a off by 1 at one
    record, gives 1/4 (relative to a's largest, 5, it would be 1/5); the worst column
    counts, and the difference is not symmetric."""
    times = np.arange(4.0)
    b = {col: np.array([1.0, 2.0, 3.0, 4.0]) for col in W2_COLUMNS}
    a = {**b, "fn": np.array([1.0, 2.0, 3.0, 5.0]),
         "loss": np.array([1.1, 2.0, 3.0, 4.0])}
    assert w2_difference(_table(a, times), _table(b, times)) == 0.25
    assert w2_difference(_table(b, times), _table(a, times)) == 0.2


def test_w2_difference_matches_infinities_by_sign():
    """An infinity in both tables at the same record is no difference when it has the same
    sign (the other records count), and infinitely different when the signs differ."""
    times = np.arange(3.0)
    b = {col: np.array([1.0, 2.0, np.inf]) for col in W2_COLUMNS}
    same = {**b, "objective": np.array([1.0, 2.5, np.inf])}
    assert w2_difference(_table(same, times), _table(b, times)) == 0.25
    flipped = {**b, "fn": np.array([1.0, 2.0, -np.inf])}
    assert w2_difference(_table(flipped, times), _table(b, times)) == math.inf


def test_w2_difference_of_matching_infinities_warns_of_nothing():
    """Matching infinities are compared without subtracting them (inf - inf would warn of an
    invalid value, a warning the check does not deserve)."""
    import warnings

    times = np.arange(3.0)
    b = {col: np.array([1.0, 2.0, np.inf]) for col in W2_COLUMNS}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert w2_difference(_table(b, times), _table(b, times)) == 0.0


def test_no_repeat_warning_from_peer_repeats_without_peers(monkeypatch):
    """--peer-repeats 1 under --no-peers, or with no workload that has peers (W2), times no
    peer at all: only ncsim's repeats count for the "fewer than 3 repeats" warning; with W1
    (its measurement stood in) the peers' count does."""
    import ncsim.bench as bench_module
    from ncsim.bench import run_bench

    monkeypatch.setattr(bench_module, "bench_w1", lambda *args, **kwargs: {})
    monkeypatch.setattr(bench_module, "bench_w2", lambda *args, **kwargs: [])
    quiet = run_bench(("W1",), repeats=3, peer_repeats=1, peers=False, log=lambda m: None)
    assert "warning" not in quiet
    assert "warning" not in run_bench(("W2",), repeats=3, peer_repeats=1, log=lambda m: None)
    assert "warning" in run_bench(("W1",), repeats=3, peer_repeats=1, log=lambda m: None)
    assert "warning" in run_bench(("W2",), repeats=2, peers=False, log=lambda m: None)


def test_reduced_form_speedup_is_the_parameter_forms_time_over_its_own(monkeypatch):
    """W2's speedup is d-space time / reduced time: 2 s against 0.5 s is 4; max_rel_diff is
    the worst difference of the two forms' trajectories (here 0, the same table)."""
    times = np.arange(3.0)
    table = _table({col: np.array([1.0, 2.0, 3.0]) for col in W2_COLUMNS}, times)
    result = SimpleNamespace(trajectories=table, runs=pd.DataFrame({"steps": [5, 7]}),
                             timings={"integrate_s": 0.1})
    medians = iter([0.5, 2.0])

    def fake_timed(fn, repeats, device, check=None):
        check(result)
        return {"median_s": next(medians)}, result

    monkeypatch.setattr(bench_module, "timed", fake_timed)
    workload = SimpleNamespace(specs=[], fn_tol=1e-9)
    row = bench_module._compare_forms(lambda form: workload, ("gram", "none"),
                                      {"workload": "W2", "loss": "mse", "d": 256}, 1, "cpu",
                                      lambda message: None)
    assert row["speedup"] == 4.0
    assert row["max_rel_diff"] == 0.0
    assert row["gram"]["steps_total"] == 12 and row["none"]["median_s"] == 2.0


def test_fn_error_is_the_worst_of_every_repeat(monkeypatch):
    """A first repeat off by 4e-7 (inside the 1e-6 asked) and an exact second one: the row's
    fn_error is the first repeat's 4e-7 (to 1e-9: the solvers' own errors are ~1e-10), for
    a peer and for ncsim, not the last repeat's."""

    def shift_fn(out):
        return {**out, "fn": out["fn"] + 4e-7}

    def shift_final_fn(res):
        res.runs["final_fn"] = res.runs["final_fn"] + 4e-7
        return res

    monkeypatch.setitem(peers.PEERS, "scipy_dop853_loop",
                        _perturb_first_call(peers.scipy_loop, shift_fn))
    monkeypatch.setattr(bench_module, "_simulate",
                        _perturb_first_call(bench_module._simulate, shift_final_fn))
    w1 = bench_module.bench_w1("tiny", 2, "cpu", True, lambda m: None,
                               skip=("torchdiffeq_dopri5", "torchode_dopri5", "torchode_tsit5"))
    for name in ("scipy_dop853_loop", "ncsim_dopri5"):
        assert w1["solvers"][name]["fn_error"] == pytest.approx(4e-7, abs=1e-9), name
    assert w1["solvers"]["ncsim_tsit5"]["fn_error"] < 1e-8


def test_w1_reference_is_dop853_up_to_and_at_the_loop_limit():
    """A grid of as many runs as the loop limit is still referenced by DOP853 on every run;
    one run above, by ncsim at rtol 1e-11 (checked on a sample); both agree to 1e-8."""
    specs = workloads.w1(grid=2, t_end=20.0, records=2).specs
    at, how_at = bench_module._w1_reference(specs, "cpu", lambda m: None, loop_max=4)
    above, how_above = bench_module._w1_reference(specs, "cpu", lambda m: None, loop_max=3)
    assert how_at == "scipy DOP853 rtol 1e-10, every run"
    assert how_above.startswith("ncsim dopri5 float64 rtol 1e-11")
    assert np.max(np.abs(at - above)) <= 1e-8


def test_failed_ncsim_rows_name_every_failed_ncsim_variant():
    """Every ncsim row with an error is named (dopri5, tsit5, CUDA graphs, float32), a
    failed peer is not; without W1 there is none."""
    results = {"workloads": {"W1": {"solvers": {
        "ncsim_dopri5": {"median_s": 1.0}, "ncsim_tsit5": {"error": "x"},
        "ncsim_dopri5_graphs_float32": {"error": "y"}, "torchode_dopri5": {"error": "z"}}}}}
    assert bench_module.failed_ncsim_rows(results) == ["ncsim_tsit5",
                                                       "ncsim_dopri5_graphs_float32"]
    assert bench_module.failed_ncsim_rows({"workloads": {}}) == []


def test_tracking_cost_is_nan_when_the_records_take_the_whole_training(monkeypatch):
    """Four NC records of 0.5 s in a 2 s training leave no time for the epochs: epoch_s and
    the overhead are NaN (no division by zero); in 3 s they leave 1 s for 2 epochs, 0.5 s an
    epoch, and the overhead at nc_every = 10 is 0.5 / (10 x 0.5) = 0.1."""
    monkeypatch.setattr(bench_module, "timed",
                        lambda fn, repeats, device: ({"median_s": 0.5}, None))
    result = SimpleNamespace(config=SimpleNamespace(total_epochs=2), model=None,
                             log=[0, 1, 2, 3])
    data = SimpleNamespace(to=lambda device: None)
    cost = bench_module._tracking_cost(result, data, 1, "cpu", total_s=2.0)
    assert cost["nc_record_s"] == 0.5
    assert math.isnan(cost["epoch_s"]) and math.isnan(cost["tracking_overhead_nc_every_10"])
    cost = bench_module._tracking_cost(result, data, 1, "cpu", total_s=3.0)
    assert cost == {"nc_record_s": 0.5, "epoch_s": 0.5, "tracking_overhead_nc_every_10": 0.1}
