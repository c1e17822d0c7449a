"""Third probe of ``ncsim bench``: W1 on a GPU (dtypes, variants, the scipy peer left out, the
device and tolerances handed to every solver), the fn(T) accuracy boundary of each dtype, the
skipped list, the reference's loop limit, the repeat-count refusals, the repeat warning, the
JSON's header and machine record, the BLAS and RSS readings, V1's row fields, cuBLAS's
workspace setting and W3's shapes. Clocks, solvers, data and devices are fixed stand-ins:
nothing here is timed or integrated, and no GPU is needed."""

from __future__ import annotations

import datetime
import io
import os
import platform
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from ncsim import bench as bench_module
from ncsim import heap
from ncsim import products as cpu_products
from ncsim.bench import _benchmarks
from ncsim.errors import InputError

workloads, peers = _benchmarks()


class _Stop(Exception):
    pass


# ------------------------------------------------------------------------------ W1 stand-ins


def _w1_stand_ins(monkeypatch, peer_fn: float = 0.0, ncsim_fn: float = 0.0) -> dict:
    """bench_w1 with the reference (4 zeros), the flow, the timer, the peers' problem and the
    peers replaced; returns the record of what each was given. The flow's fn(T) is
    ``ncsim_fn`` for every run, each peer's ``peer_fn``."""
    seen: dict = {"simulate": [], "problem": [], "peers": [], "timed": []}
    ref = np.zeros(4)
    monkeypatch.setattr(bench_module, "_w1_reference",
                        lambda specs, device, log, loop_max: (ref.copy(), "stand-in"))

    def simulate(specs):
        seen["simulate"].append(specs)
        runs = pd.DataFrame({"final_fn": np.full(4, ncsim_fn), "steps": 1,
                             "t_final": specs[0].solver.t_end})
        return SimpleNamespace(runs=runs, timings={})

    monkeypatch.setattr(bench_module, "_simulate", simulate)

    def timed(fn, repeats, device, warmup=False, check=None):
        seen["timed"].append(device)
        for _ in range(repeats):
            out = fn()
            if check is not None:
                check(out)
        return {"median_s": 1.0, "times_s": [1.0] * repeats, "peak_mem_mb": 0.0}, out

    monkeypatch.setattr(bench_module, "timed", timed)

    def from_specs(specs, device="cpu", dtype=torch.float64):
        seen["problem"].append((len(specs), device, dtype))
        return SimpleNamespace(dtype=dtype)

    monkeypatch.setattr(peers.Problem, "from_specs", staticmethod(from_specs))

    def peer(name):
        def run(problem, **tol):
            seen["peers"].append((name, problem.dtype, tol))
            return {"fn": np.full(4, peer_fn), "nfev": np.ones(4)}

        return run

    monkeypatch.setattr(peers, "PEERS", {name: peer(name) for name in peers.PEERS})
    return seen


def test_w1_on_a_gpu_runs_both_dtypes_with_graphs_and_without_the_scipy_loop(monkeypatch):
    """On a GPU W1 runs float32 then float64 by default: ncsim dopri5, tsit5 and dopri5 with
    CUDA graphs on the device asked, in each dtype; the scipy loop (a CPU float64 peer) is
    left out of both dtypes and listed in 'skipped'; each peer gets its dtype's tolerances
    (float32: rtol 1e-5, atol 1e-7; float64: 1e-8, 1e-10) and a problem on the device."""
    seen = _w1_stand_ins(monkeypatch)
    w1 = bench_module.bench_w1("tiny", 1, "cuda:1", True, lambda m: None)
    assert w1["params"]["dtypes"] == ["float32", "float64"]
    assert w1["skipped"] == ["scipy_dop853_loop_float32 (a CPU float64 peer)",
                             "scipy_dop853_loop (a CPU float64 peer)"]
    others = ("torchdiffeq_dopri5", "torchode_dopri5", "torchode_tsit5")
    ours = ("ncsim_dopri5", "ncsim_tsit5", "ncsim_dopri5_graphs")
    assert list(w1["solvers"]) == ([f"{n}_float32" for n in ours + others]
                                   + list(ours + others))
    solvers = [(s[0].solver.method, s[0].solver.cuda_graphs, s[0].solver.dtype)
               for s in seen["simulate"]]
    assert solvers == [(m, g, d) for d in ("float32", "float64")
                       for m, g in (("dopri5", False), ("tsit5", False), ("dopri5", True))]
    assert {spec.solver.device for specs in seen["simulate"] for spec in specs} == {"cuda:1"}
    assert all(len(specs) == 4 for specs in seen["simulate"])
    assert seen["problem"] == [(4, "cuda:1", torch.float32), (4, "cuda:1", torch.float64)]
    tol32, tol64 = {"rtol": 1e-5, "atol": 1e-7}, {"rtol": 1e-8, "atol": 1e-10}
    assert seen["peers"] == ([(n, torch.float32, tol32) for n in others]
                             + [(n, torch.float64, tol64) for n in others])
    assert set(seen["timed"]) == {"cuda:1"}
    assert w1["reference"] == "stand-in" and w1["device"] == "cuda:1"
    assert w1["cuda_graphs_gain"] == 1.0 and w1["cuda_graphs_gain_float32"] == 1.0


def test_w1_on_the_cpu_hands_the_peers_float64_tolerances(monkeypatch):
    """On the CPU W1 runs float64 only, the scipy loop included; every peer integrates at
    rtol 1e-8, atol 1e-10 (not atol for both, not float32's) on a CPU float64 problem."""
    seen = _w1_stand_ins(monkeypatch)
    w1 = bench_module.bench_w1("tiny", 1, "cpu", True, lambda m: None)
    assert w1["params"]["dtypes"] == ["float64"] and w1["skipped"] == []
    assert [name for name, _, _ in seen["peers"]] == list(peers.PEERS)
    assert {(d, tuple(sorted(t.items()))) for _, d, t in seen["peers"]} == {
        (torch.float64, (("atol", 1e-10), ("rtol", 1e-8)))}
    assert seen["problem"] == [(4, "cpu", torch.float64)]


@pytest.mark.parametrize(("dtype", "tol"), [("float32", 1e-3), ("float64", 1e-6)])
def test_w1_accuracy_boundary_is_the_dtypes_tolerance_inclusive(monkeypatch, dtype, tol):
    """fn(T) exactly the dtype's stated accuracy off the reference (1e-3 in float32, 1e-6 in
    float64) passes for ncsim and for a peer, and is the row's fn_error; the next float
    above fails the peer (an error row) and ncsim (AssertionError naming the row)."""
    suffix = "" if dtype == "float64" else f"_{dtype}"
    _w1_stand_ins(monkeypatch, peer_fn=tol, ncsim_fn=tol)
    w1 = bench_module.bench_w1("tiny", 1, "cpu", True, lambda m: None, dtypes=(dtype,))
    for name in ("ncsim_dopri5", "ncsim_tsit5", "torchode_dopri5", "torchdiffeq_dopri5"):
        assert w1["solvers"][name + suffix]["fn_error"] == tol, name
    above = float(np.nextafter(tol, 1.0))
    _w1_stand_ins(monkeypatch, peer_fn=above, ncsim_fn=tol)
    w1 = bench_module.bench_w1("tiny", 1, "cpu", True, lambda m: None, dtypes=(dtype,))
    row = w1["solvers"]["torchode_dopri5" + suffix]
    assert row == {"dtype": dtype, "error": f"torchode_dopri5{suffix}: fn(T) error "
                                            f"{above:.3e} exceeds the stated accuracy {tol:.1e}"}
    assert w1["ratios"] == {}
    _w1_stand_ins(monkeypatch, peer_fn=tol, ncsim_fn=above)
    with pytest.raises(AssertionError, match=f"^ncsim_dopri5{suffix}: fn"):
        bench_module.bench_w1("tiny", 1, "cpu", True, lambda m: None, dtypes=(dtype,))


def test_w1_peer_that_raises_a_runtime_error_is_an_error_row(monkeypatch):
    """A peer that fails with a RuntimeError (not only one that misses its accuracy) is
    reported in its row with the message, and the other peers are still timed."""
    _w1_stand_ins(monkeypatch)

    def broken(problem, **tol):
        raise RuntimeError("solver blew up")

    monkeypatch.setitem(peers.PEERS, "torchode_tsit5", broken)
    w1 = bench_module.bench_w1("tiny", 1, "cpu", True, lambda m: None)
    assert w1["solvers"]["torchode_tsit5"] == {"dtype": "float64", "error": "solver blew up"}
    assert set(w1["ratios"]) == {"scipy_dop853_loop", "torchdiffeq_dopri5", "torchode_dopri5"}


def test_w1_lists_the_peers_left_out_by_the_user_as_skipped(monkeypatch):
    """--skip-peer names appear in 'skipped' first (as given), before the CPU-only peers left
    out in float32; the skipped peer has no row."""
    _w1_stand_ins(monkeypatch)
    w1 = bench_module.bench_w1("tiny", 1, "cpu", True, lambda m: None,
                               skip=("torchode_tsit5",), dtypes=("float64", "float32"))
    assert w1["skipped"] == ["torchode_tsit5", "scipy_dop853_loop_float32 (a CPU float64 peer)"]
    assert not [name for name in w1["solvers"] if name.startswith("torchode_tsit5")]


# ------------------------------------------------------------------------------ W1 reference


def _reference_stand_ins(monkeypatch) -> None:
    monkeypatch.setattr(peers, "reference_fn",
                        lambda problem, **kw: np.full(problem.y0.shape[0], 0.5))
    monkeypatch.setattr(bench_module, "_simulate", lambda specs: SimpleNamespace(
        runs=pd.DataFrame({"final_fn": np.full(len(specs), 0.5)})))


def test_w1_reference_loop_limit_is_256_runs_by_default(monkeypatch):
    """Without loop_max, 256 runs (a 16 x 16 grid) are referenced by DOP853 on every run; 257
    runs take the ncsim route (which then refuses a non-square count)."""
    _reference_stand_ins(monkeypatch)
    assert bench_module.REFERENCE_LOOP_MAX == 256
    specs = workloads.w1(grid=17, t_end=1.0, records=2).specs
    ref, how = bench_module._w1_reference(specs[:256], "cpu", lambda m: None)
    assert how == "scipy DOP853 rtol 1e-10, every run" and ref.shape == (256,)
    with pytest.raises(ValueError, match="^W1 expects a square grid of runs, got 257$"):
        bench_module._w1_reference(specs[:257], "cpu", lambda m: None)


# ------------------------------------------------------------------------------ repeats


@pytest.mark.parametrize("bad", [1.5, 2.0, True, "3"])
def test_repeat_counts_must_be_integers(bad):
    """A repeat count that is not an integer (a float, even 2.0; a bool; text) is refused with
    the exact message, by timed and by run_bench for either count; numpy integers pass."""
    message = (f"^repeats must be an integer >= 1 \\(timed runs per measurement\\), got "
               f"{repr(bad)}$")
    with pytest.raises(InputError, match=message):
        bench_module.timed(lambda: 1, bad)
    with pytest.raises(InputError, match=message):
        bench_module.run_bench((), repeats=bad, log=lambda m: None)
    with pytest.raises(InputError, match="^peer_repeats must be an integer >= 1"):
        bench_module.run_bench((), repeats=3, peer_repeats=bad, log=lambda m: None)
    stats, out = bench_module.timed(lambda: 7, np.int64(2))
    assert out == 7 and len(stats["times_s"]) == 2


# ------------------------------------------------------------------------------ JSON header


def _quiet_machine(monkeypatch) -> None:
    monkeypatch.setattr(bench_module, "machine", lambda device="cpu": {"stand-in": device})


@pytest.mark.parametrize(("repeats", "peer_repeats", "peers_on", "fewest"),
                         [(3, 1, True, 1), (2, 5, True, 2), (2, 1, False, 2)])
def test_repeat_warning_names_the_fewest_repeats_timed(monkeypatch, repeats, peer_repeats,
                                                       peers_on, fewest):
    """The warning states the smallest count of repeats of a timed solver (peers counted only
    when they run: W1 here, its measurement stood in), in the JSON and on the log, word for
    word."""
    _quiet_machine(monkeypatch)
    monkeypatch.setattr(bench_module, "bench_w1", lambda *args, **kwargs: {})
    said: list[str] = []
    results = bench_module.run_bench(("W1",), repeats=repeats, peer_repeats=peer_repeats,
                                     peers=peers_on, log=said.append)
    text = (f"{fewest} timed repeat(s): a time is a single sample (or the mean of two), not a "
            "median of 3 or more")
    assert results["warning"] == text and said == [f"warning: {text}"]


def test_run_bench_header_is_utc_dated_and_names_device_and_counts(monkeypatch):
    """The JSON header: an ISO date with the UTC offset, the device, both repeat counts, the
    machine record of that device and the workloads run (none here)."""
    _quiet_machine(monkeypatch)
    before = datetime.datetime.now(datetime.timezone.utc)
    results = bench_module.run_bench((), device="cpu", repeats=4, peer_repeats=5,
                                     log=lambda m: None)
    after = datetime.datetime.now(datetime.timezone.utc)
    assert set(results) == {"date", "device", "repeats", "peer_repeats", "machine",
                            "workloads"}
    date = datetime.datetime.fromisoformat(results["date"])
    assert date.utcoffset() == datetime.timedelta(0) and before <= date <= after
    assert (results["device"], results["repeats"], results["peer_repeats"]) == ("cpu", 4, 5)
    assert results["machine"] == {"stand-in": "cpu"} and results["workloads"] == {}


# ------------------------------------------------------------------------------ machine record


@pytest.mark.parametrize("host_blas", [True, False])
def test_machine_record_fields(monkeypatch, host_blas):
    """The machine record: the CPU float64 product library (numpy with the host BLAS, else
    torch), the commit, the heap setting, the CPU name (/proc/cpuinfo, else platform), the
    counts and versions of this process, the load average, and both peers' versions."""
    import scipy

    torchdiffeq = pytest.importorskip("torchdiffeq")
    torchode = pytest.importorskip("torchode")

    monkeypatch.setattr(cpu_products, "HOST_BLAS", host_blas)
    monkeypatch.setattr(bench_module, "_commit", lambda: "c0ffee+dirty")
    monkeypatch.setattr(heap, "kept", lambda: "kept-flag")
    monkeypatch.setattr(cpu_products, "cpuinfo_field", lambda name: f"cpu<{name}>")
    monkeypatch.setattr(bench_module, "_blas_threads", lambda: {"lib.so": 3})
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.25, 0.125))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    info = bench_module.machine()
    assert info == {
        "platform": platform.platform(), "python": platform.python_version(),
        "cpu": "cpu<model name>", "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "blas_threads": {"lib.so": 3},
        "heap_kept": "kept-flag", "cpu_float64_products": "numpy" if host_blas else "torch",
        "ncsim": bench_module.ncsim_version, "ncsim_commit": "c0ffee+dirty",
        "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
        "load_average": [0.5, 0.25, 0.125], "torchdiffeq": torchdiffeq.__version__,
        "torchode": torchode.__version__}
    monkeypatch.setattr(cpu_products, "cpuinfo_field", lambda name: None)
    assert bench_module.machine()["cpu"] == platform.processor()


@pytest.mark.parametrize(("device", "asked"), [("cuda:1", torch.device("cuda:1")),
                                               ("cuda", torch.device("cuda")), ("cpu", None)])
def test_machine_names_the_gpu_of_the_device_measured(monkeypatch, device, asked):
    """With CUDA present, 'gpu' is the name of the device measured (cuda:1's, not the
    current one's); for a CPU run, the current device's (get_device_name(None))."""
    monkeypatch.setattr(bench_module, "_commit", lambda: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    seen: list = []
    monkeypatch.setattr(torch.cuda, "get_device_name",
                        lambda dev=None: seen.append(dev) or "Stand-in GPU")
    assert bench_module.machine(device)["gpu"] == "Stand-in GPU"
    assert seen == [asked]


def test_machine_has_no_gpu_entry_without_cuda(monkeypatch):
    """Without CUDA the record has no 'gpu' key at all (not a null)."""
    monkeypatch.setattr(bench_module, "_commit", lambda: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "gpu" not in bench_module.machine("cpu")


def test_blas_threads_lists_blas_pools_by_file_name(monkeypatch):
    """Only the BLAS pools threadpoolctl reports are listed (not OpenMP's), each keyed by the
    base name of its library file."""
    import threadpoolctl

    pools = [{"user_api": "blas", "filepath": "/opt/x/libopenblas.so.0", "num_threads": 4},
             {"user_api": "openmp", "filepath": "/usr/lib/libgomp.so.1", "num_threads": 8},
             {"user_api": "blas", "filepath": "/usr/lib/libscipy_openblas.so", "num_threads": 2}]
    monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda: pools)
    assert bench_module._blas_threads() == {"libopenblas.so.0": 4, "libscipy_openblas.so": 2}


def test_rss_is_the_resident_pages_of_statm_in_bytes(monkeypatch):
    """The resident set is statm's second field (resident pages, not the first, the total
    size) times the page size; an unreadable or malformed file reads as 0."""
    page = os.sysconf("SC_PAGE_SIZE")
    monkeypatch.setattr(bench_module, "open", lambda path: io.StringIO("1000 25 7 1 0 30 0\n"),
                        raising=False)
    assert bench_module._rss() == 25 * page

    def refuse(path):
        raise OSError("no /proc here")

    monkeypatch.setattr(bench_module, "open", refuse, raising=False)
    assert bench_module._rss() == 0
    monkeypatch.setattr(bench_module, "open", lambda path: io.StringIO("1000 x\n"),
                        raising=False)
    assert bench_module._rss() == 0


# ------------------------------------------------------------------------------ V1 rows


def test_v1_rows_describe_each_case(monkeypatch):
    """Each V1 row names its case and states the network (ResNet-20's depth is 20, an MLP's
    its own), the width, the sample counts of the data, the epochs and the phases of the
    schedule, the number of seeds (1 without seeds) and nc_every."""
    import ncsim.validate.data as data_module
    import ncsim.validate.train as train_module

    data = SimpleNamespace(x_train=np.zeros((30, 2)), x_test=np.zeros((10, 2)))
    monkeypatch.setattr(data_module, "load_dataset", lambda *a, **k: data)
    monkeypatch.setattr(train_module, "train", lambda config, data, seeds=None: SimpleNamespace(
        log="log", runs=[SimpleNamespace(log="log")] * len(seeds or ()), config=config))
    monkeypatch.setattr(bench_module, "timed", lambda fn, repeats, device, warmup=False,
                        check=None: ({"median_s": 1.0}, fn()))
    monkeypatch.setattr(bench_module, "_tracking_cost", lambda *a, **k: {})
    rows = bench_module.bench_v1("tiny", 1, "cpu", lambda m: None, peers=False)
    got = [(r["case"], r["arch"], r["depth"], r["width"], r["seeds"], r["nc_every"])
           for r in rows]
    assert got == [("mlp5", "mlp", 5, 512, 1, 1), ("resnet20", "resnet20", 20, 512, 1, 1),
                   ("mlp5_seeds2", "mlp", 5, 512, 2, 1)]
    for row in rows:
        assert (row["workload"], row["size"]) == ("V1", "tiny")
        assert (row["train_samples"], row["test_samples"]) == (30, 10)
        assert row["epochs"] == [1, 1]
    assert rows[0]["phases"] == ["ce adam lr 0.001 batch 256", "mse adam lr 0.001 batch 256"]
    assert rows[1]["phases"] == ["ce sgd lr 0.1 batch 128", "mse sgd lr 0.1 batch 128"]


@pytest.mark.parametrize(("device", "before", "after"), [
    ("cuda", None, ":4096:8"), ("cuda:1", ":16:8", ":16:8"), ("cpu", None, None)])
def test_v1_on_an_accelerator_sets_cublas_deterministic_workspace_first(monkeypatch, device,
                                                                        before, after):
    """V1 on an accelerator sets CUBLAS_WORKSPACE_CONFIG=:4096:8 before the data is read (and
    before any workload starts cuBLAS), keeping a value the user set; on the CPU it is left
    unset."""
    import ncsim.validate.data as data_module

    if before is None:
        monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    else:
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", before)
    seen: list = []

    def load(*args, **kwargs):
        seen.append(os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
        raise _Stop

    monkeypatch.setattr(data_module, "load_dataset", load)
    with pytest.raises(_Stop):
        bench_module.run_bench(("V1",), device=device, repeats=1, log=lambda m: None)
    assert seen == [after]


# ------------------------------------------------------------------------------ W3 shapes


@pytest.mark.parametrize(("size", "shape"), [("full", (16, 100, 50, 512)),
                                             ("small", (16, 100, 50, 512)),
                                             ("tiny", (4, 10, 10, 64))])
def test_w3_shape_follows_the_size(monkeypatch, size, shape):
    """W3 is 16 runs of K = 100, n = 50, d = 512 at full and small size, (4, 10, 10, 64) at
    tiny; float32 comes first."""
    asked: list = []

    def w3(*args, **kwargs):
        asked.append((args, kwargs))
        raise _Stop

    monkeypatch.setattr(workloads, "w3", w3)
    with pytest.raises(_Stop):
        bench_module.bench_w3(size, 1, "cpu", lambda m: None)
    assert asked == [(shape, {"dtype": "float32"})]
