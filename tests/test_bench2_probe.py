"""Second probe of ``ncsim bench`` and the benchmark workloads: the workload grids of DESIGN.md
section 5 (decays, init scales, sizes, record counts, tolerances), the W2 difference where both
forms hold a NaN, and the CPU peak memory's reading at the end of a block (nothing here is
timed or integrated)."""

from __future__ import annotations

import itertools
import threading
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ncsim import bench as bench_module
from ncsim.bench import W2_COLUMNS, _benchmarks, w2_difference

workloads, peers = _benchmarks()

LAMBDAS = (1e-4, 3e-2)  # DESIGN.md section 5: the decays are log-spaced in [1e-4, 3e-2]^2


# ------------------------------------------------------------------------------ W1 workload


def test_w1_grid_is_the_product_of_log_spaced_decays_row_by_row():
    """A 3 x 3 W1 grid holds (lambda_W, lambda_H) = (1e-4 x r^i, 1e-4 x r^j) with
    r = sqrt(300), i the row, j the column, and seed i * 3 + j (nine distinct seeds)."""
    wl = workloads.w1(grid=3, t_end=10.0, records=5)
    axis = [1e-4, 1e-4 * 300**0.5, 3e-2]
    expected = list(itertools.product(axis, axis))
    assert len(wl.specs) == 9
    got = [(s.reg.lambda_w, s.reg.lambda_h) for s in wl.specs]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert [s.init.seed for s in wl.specs] == list(range(9))


def test_w1_model_init_and_default_records_follow_the_design():
    """W1 is the bias-free UFM-CE with K = 10, n = 20, d = 32, init N(0, 0.1^2), T = 2e4 and
    200 records (0, then 199 log-spaced times up to T) by default."""
    wl = workloads.w1(grid=2)
    for spec in wl.specs:
        m = spec.model
        assert (m.kind, m.loss, m.bias, m.classes, m.per_class, m.dim) == (
            "ufm", "ce", "none", 10, 20, 32)
        assert (spec.init.kind, spec.init.scale) == ("gaussian", 0.1)
        assert (spec.solver.t_end, spec.solver.records, spec.solver.method) == (
            2e4, 200, "dopri5")
    times = wl.specs[0].solver.record_times()
    assert times[0] == 0.0 and times[-1] == 2e4 and len(times) == 200
    ratios = times[2:] / times[1:-1]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-10)  # log-spaced
    assert {k: wl.params[k] for k in ("K", "n", "d", "loss")} == {
        "K": 10, "n": 20, "d": 32, "loss": "ce"}


@pytest.mark.parametrize("dtype, tol, fn_tol", [("float64", (1e-8, 1e-10), 1e-6),
                                                ("float32", (1e-5, 1e-7), 1e-3)])
def test_w1_tolerances_and_accuracy_follow_the_dtype(dtype, tol, fn_tol):
    """float64: rtol 1e-8, atol 1e-10 and fn(T) within 1e-6; float32: rtol 1e-5, atol 1e-7 and
    fn(T) within 1e-3 (as the README states)."""
    wl = workloads.w1(grid=2, t_end=10.0, records=5, dtype=dtype)
    assert wl.fn_tol == fn_tol
    assert workloads.W1_TOLERANCES[dtype] == tol
    for spec in wl.specs:
        assert (spec.solver.rtol, spec.solver.atol, spec.solver.dtype) == (*tol, dtype)


# ------------------------------------------------------------------------------ W2 / W2n workloads


@pytest.mark.parametrize("loss, dim", [("mse", 256), ("ce", 4096), ("ce", 32)])
def test_w2_runs_pair_each_decay_with_the_mirrored_one_at_w1s_norms(loss, dim):
    """W2 run i has lambda_W = lams[i], lambda_H = lams[-1 - i] (lams log-spaced over the
    range), K = 10, n = 20, init scale 0.1 sqrt(32 / d), seed i; fn_tol 1e-9."""
    wl = workloads.w2(loss=loss, dim=dim, runs=3)
    lams = [1e-4, 1e-4 * 300**0.5, 3e-2]
    got = [(s.reg.lambda_w, s.reg.lambda_h) for s in wl.specs]
    np.testing.assert_allclose(got, list(zip(lams, lams[::-1])), rtol=1e-12)
    for i, spec in enumerate(wl.specs):
        m = spec.model
        assert (m.loss, m.bias, m.classes, m.per_class, m.dim) == (loss, "none", 10, 20, dim)
        assert spec.init.scale == pytest.approx(0.1 * (32 / dim) ** 0.5, rel=1e-14)
        assert spec.init.seed == i
    assert wl.fn_tol == 1e-9


@pytest.mark.parametrize(("build", "expected"), [
    (lambda: workloads.w2(), ("dopri5", 1e-10, 1e-12, 1e3, 50, "gram")),
    (lambda: workloads.w2n(), ("dopri5", 1e-11, 1e-13, 20.0, 20, "classes")),
])
def test_w2_and_w2n_solver_defaults(build, expected):
    """W2 by default: dopri5 at rtol 1e-10, atol 1e-12 to T = 1e3 with 50 records in the Gram
    form; W2n: rtol 1e-11, atol 1e-13 to T = 20 with 20 records in the class-means form. The
    params block of the JSON repeats them."""
    wl = build()
    got = {(s.solver.method, s.solver.rtol, s.solver.atol, s.solver.t_end, s.solver.records,
            s.solver.reduction) for s in wl.specs}
    assert got == {expected}
    assert (wl.params["rtol"], wl.params["atol"], wl.params["t_end"],
            wl.params["records"]) == expected[1:5]


def test_w2n_runs_use_the_range_ends_at_init_scale_0_1():
    """W2n (2 runs): (lambda_W, lambda_H) = (1e-4, 3e-2) and (3e-2, 1e-4), the UFM-MSE with
    K = 10, d = 32, the n per class asked, init N(0, 0.1^2) at every n; fn_tol 1e-9."""
    wl = workloads.w2n(per_class=50)
    got = [(s.reg.lambda_w, s.reg.lambda_h) for s in wl.specs]
    np.testing.assert_allclose(got, [LAMBDAS, LAMBDAS[::-1]], rtol=1e-12)
    for spec in wl.specs:
        m = spec.model
        assert (m.loss, m.bias, m.classes, m.per_class, m.dim) == ("mse", "none", 10, 50, 32)
        assert spec.init.scale == 0.1
    assert wl.fn_tol == 1e-9


# ------------------------------------------------------------------------------ W2 difference


def _table(**columns) -> pd.DataFrame:
    base = {col: np.array([1.0, 2.0, 4.0]) for col in W2_COLUMNS}
    return pd.DataFrame({"time": np.arange(3.0), **base, **columns})


def test_w2_difference_passes_a_nan_that_both_forms_hold_at_the_same_record():
    """A NaN in the same column and record of both forms is no difference (README: "a NaN
    passing only where both forms have it"); the finite records are still compared."""
    nan = np.array([1.0, np.nan, 4.0])
    assert w2_difference(_table(fn=nan), _table(fn=nan)) == 0.0
    off = np.array([1.0, np.nan, 4.2])
    assert w2_difference(_table(fn=off), _table(fn=nan)) == pytest.approx(0.2 / 4.0)


def test_w2_difference_fails_nans_at_different_records():
    """A NaN at record 1 of one form and record 2 of the other is a difference (inf), even
    though each form has a NaN in that column."""
    a = _table(loss=np.array([1.0, np.nan, 4.0]))
    b = _table(loss=np.array([1.0, 2.0, np.nan]))
    assert w2_difference(a, b) == float("inf")


# ------------------------------------------------------------------------------ peak memory


class _NoThread:
    """A sampler thread that never samples (a block shorter than its first 2 ms)."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def start(self) -> None:
        pass

    def join(self) -> None:
        pass


@pytest.mark.parametrize(("exit_mib", "peak_mib"), [(1100, 100), (900, 0)])
def test_cpu_peak_memory_is_the_growth_read_at_exit_too_never_below_zero(monkeypatch, exit_mib,
                                                                         peak_mib):
    """A block that the sampler never saw still reports its growth: the resident set is read
    at exit too (100 MiB more than at entry gives a peak of 100 MiB, in bytes). A block that
    gives memory back has a peak of 0 (the entry level is the floor), not a negative one."""
    readings = iter([1000 * 2**20, exit_mib * 2**20])
    monkeypatch.setattr(bench_module, "_rss", lambda: next(readings))
    monkeypatch.setattr(bench_module, "threading",
                        SimpleNamespace(Event=threading.Event, Thread=_NoThread))
    with bench_module.PeakMemory("cpu") as mem:
        pass
    assert mem.peak == peak_mib * 2**20


# ------------------------------------------------------------------------------ accuracy check


def test_accuracy_check_is_the_largest_error_over_the_runs():
    """One run of four off by 2e-6 fails a 1e-6 check (the mean error, 5e-7, would pass); a
    pass returns the largest error, not the mean."""
    ref = np.array([0.1, 0.2, 0.3, 0.4])
    with pytest.raises(AssertionError, match=r"solver: fn\(T\) error 2\.000e-06 exceeds the "
                                             r"stated accuracy 1\.0e-06"):
        peers.check_accuracy("solver", ref + np.array([0.0, 2e-6, 0.0, 0.0]), ref, 1e-6)
    err = peers.check_accuracy("solver", ref + np.array([4e-7, 0.0, -8e-7, 0.0]), ref, 1e-6)
    assert err == pytest.approx(8e-7, rel=1e-6)


def test_reference_is_dop853_at_rtol_1e_10_atol_1e_12_final_time_only(monkeypatch):
    """The W1 reference calls the scipy loop with DOP853, rtol 1e-10, atol 1e-12 and no
    records, and returns its fn."""
    seen: list[dict] = []

    def loop(problem, **kwargs):
        seen.append(kwargs)
        return {"fn": np.array([0.25])}

    monkeypatch.setattr(peers, "scipy_loop", loop)
    out = peers.reference_fn(SimpleNamespace())
    assert seen == [{"method": "DOP853", "rtol": 1e-10, "atol": 1e-12, "records": False}]
    np.testing.assert_array_equal(out, [0.25])


def test_a_float64_peer_1e_5_off_is_an_error_row_at_w1s_1e_6(monkeypatch):
    """In float64 a peer's fn(T) must be within W1's 1e-6 (not float32's 1e-3): a peer 1e-5
    off the reference becomes an error row and leaves the ratios (no integration here)."""
    ref = np.full(4, 0.5)
    monkeypatch.setattr(bench_module, "_w1_reference", lambda *a, **k: (ref, "stand-in"))

    def simulate(specs):
        runs = pd.DataFrame({"final_fn": ref.copy(), "steps": 1,
                             "t_final": specs[0].solver.t_end})
        return SimpleNamespace(runs=runs, timings={})

    monkeypatch.setattr(bench_module, "_simulate", simulate)
    monkeypatch.setattr(peers, "PEERS", {"torchdiffeq_dopri5": lambda problem, **tol: {
        "fn": ref + 1e-5, "nfev": np.ones(4)}})
    w1 = bench_module.bench_w1("tiny", 1, "cpu", True, lambda m: None)
    row = w1["solvers"]["torchdiffeq_dopri5"]
    assert "exceeds the stated accuracy 1.0e-06" in row["error"]
    assert w1["ratios"] == {} and "fastest_peer" not in w1
