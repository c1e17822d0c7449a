"""What ``ncsim bench`` computes from its runs, pinned with fixed stand-ins for the timings and
the solvers: the W1 reference check and its tolerance, the shapes of W1 on a GPU, the
workload lists of W2 and W2n, V1's comparison mode and --no-peers row, ratios without peers,
the log-comparison boundaries, zero columns in the W2 difference, the commit record, the
default output name and the option ranges (nothing here is timed)."""

from __future__ import annotations

import datetime
import math
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from ncsim import bench as bench_module
from ncsim.bench import W2_COLUMNS, _benchmarks, _with_ratios, bench, w2_difference
from ncsim.errors import InputError

workloads, peers = _benchmarks()


# ------------------------------------------------------------------------------ W1 reference


def _fake_simulate(monkeypatch, final_fn: np.ndarray) -> list:
    """Replace ncsim's flow by one that returns ``final_fn`` and DOP853 by one that returns
    0.5 for every run; return the specs the flow was given."""
    seen: list = []
    monkeypatch.setattr(peers, "reference_fn", lambda problem, **kw: np.full(
        problem.y0.shape[0], 0.5))

    def fake(specs):
        seen.append(specs)
        return SimpleNamespace(runs=pd.DataFrame({"final_fn": final_fn.copy()}))

    monkeypatch.setattr(bench_module, "_simulate", fake)
    return seen


def test_w1_large_grid_reference_must_match_dop853_to_1e_8(monkeypatch):
    """Above the loop limit ncsim's tight reference is checked against DOP853 on the sample
    to 1e-8: 5e-9 off passes (and is the reference returned), 1e-7 off raises (1e-6 would
    let it through)."""
    specs = workloads.w1(grid=2, t_end=1.0, records=2).specs
    dop853 = np.full(4, 0.5)
    _fake_simulate(monkeypatch, dop853 + 5e-9)
    ref, how = bench_module._w1_reference(specs, "cpu", lambda m: None, loop_max=3)
    np.testing.assert_array_equal(ref, dop853 + 5e-9)
    assert how.startswith("ncsim dopri5 float64 rtol 1e-11")
    _fake_simulate(monkeypatch, dop853 + 1e-7)
    with pytest.raises(AssertionError, match=r"ncsim reference \(rtol 1e-11\) against DOP853.*"
                                             r"exceeds the stated accuracy 1\.0e-08"):
        bench_module._w1_reference(specs, "cpu", lambda m: None, loop_max=3)


def test_w1_large_grid_reference_runs_ncsim_at_the_stated_tolerances(monkeypatch):
    """The ncsim reference integrates every run at rtol 1e-11, atol 1e-13 with 2 records on
    the device asked (the JSON says 'rtol 1e-11')."""
    specs = workloads.w1(grid=2, t_end=1.0, records=5).specs
    seen = _fake_simulate(monkeypatch, np.full(4, 0.5))
    bench_module._w1_reference(specs, "cuda:1", lambda m: None, loop_max=3)
    (tight,) = seen
    assert len(tight) == 4
    for spec in tight:
        assert (spec.solver.rtol, spec.solver.atol, spec.solver.records) == (1e-11, 1e-13, 2)
        assert spec.solver.device == "cuda:1" and spec.solver.method == "dopri5"


def test_w1_large_reference_refuses_runs_that_are_not_a_square_grid(monkeypatch):
    """The 16-run sample is taken from a grid x grid square: 5 runs cannot be one."""
    specs = workloads.w1(grid=3, t_end=1.0, records=2).specs[:5]
    _fake_simulate(monkeypatch, np.zeros(5))
    with pytest.raises(ValueError, match="square grid of runs, got 5"):
        bench_module._w1_reference(specs, "cpu", lambda m: None, loop_max=3)


class _Stop(Exception):
    pass


@pytest.mark.parametrize(("size", "device", "shape"), [
    ("full", "cpu", (8, 2e4, 200)), ("full", "cuda", (64, 5e3, 200)),
    ("full", "cuda:1", (64, 5e3, 200)), ("small", "cuda", (4, 2e3, 100)),
    ("tiny", "cpu", (2, 50.0, 10))])
def test_w1_shape_follows_the_size_and_the_device(monkeypatch, size, device, shape):
    """DESIGN.md: W1 is an 8 x 8 grid at T = 2e4 on the CPU and 64 x 64 at T = 5e3 on a GPU,
    200 records; 'small' and 'tiny' are the same on either (no GPU is needed to see it)."""
    asked = []

    def w1(**kwargs):
        asked.append(kwargs)
        raise _Stop

    monkeypatch.setattr(workloads, "w1", w1)
    with pytest.raises(_Stop):
        bench_module.bench_w1(size, 1, device, False, lambda m: None)
    assert asked == [{"grid": shape[0], "t_end": shape[1], "records": shape[2]}]


def test_ratios_with_cuda_graphs_and_no_peer_have_no_peer_speedup():
    """--no-peers on a GPU: the CUDA-graph gain is there, no peer speed-up (and no error from
    the minimum of no peer)."""
    entry = {"solvers": {"ncsim_dopri5": {"median_s": 3.0, "dtype": "float64"},
                         "ncsim_tsit5": {"median_s": 2.0, "dtype": "float64"},
                         "ncsim_dopri5_graphs": {"median_s": 1.5, "dtype": "float64"}}}
    out = _with_ratios(entry, ("float64",))
    assert out["ratios"] == {} and out["cuda_graphs_gain"] == 2.0
    assert out["fastest_ncsim"] == "ncsim_dopri5_graphs"
    assert not [k for k in out if k.startswith(("speedup", "fastest_peer"))]


# ------------------------------------------------------------------------------ W2 and W2n


def _capture_forms(monkeypatch) -> list:
    """Replace _compare_forms by a recorder of (row, forms, workload of the reduced form)."""
    calls: list = []

    def record(make, forms, row, repeats, device, log):
        calls.append((row, forms, make(forms[0]), make(forms[1])))
        return row

    monkeypatch.setattr(bench_module, "_compare_forms", record)
    return calls


@pytest.mark.parametrize(("size", "mse", "ce", "t_end"), [
    ("full", [256, 1024, 4096], [32, 256, 1024, 4096], 20.0),
    ("small", [256, 1024], [32, 256, 1024], 10.0),
    ("tiny", [256], [32, 256], 5.0)])
def test_w2_compares_the_forms_at_every_allowed_width(monkeypatch, size, mse, ce, t_end):
    """W2 runs MSE from d = N + K = 210 on (the Gram form's lowest width) and CE at every
    width, up to d = 4096 at full size; each case is 2 runs with 20 records to the size's T,
    in the Gram form against the d-space form."""
    calls = _capture_forms(monkeypatch)
    rows = bench_module.bench_w2(size, 1, "cpu", lambda m: None)
    assert [(r["loss"], r["d"]) for r in rows] == ([("mse", d) for d in mse]
                                                   + [("ce", d) for d in ce])
    for row, forms, fast, plain in calls:
        assert forms == ("gram", "none") and row["size"] == size and row["workload"] == "W2"
        for wl, red in ((fast, "gram"), (plain, "none")):
            assert len(wl.specs) == 2
            solver = wl.specs[0].solver
            assert (solver.t_end, solver.records, solver.reduction) == (t_end, 20, red)
            assert wl.specs[0].model.dim == row["d"] and wl.specs[0].model.loss == row["loss"]


@pytest.mark.parametrize(("size", "sizes", "t_end"), [
    ("full", [20, 100, 500, 2000], 20.0), ("small", [20, 100, 500], 10.0),
    ("tiny", [20, 50], 5.0)])
def test_w2n_compares_the_forms_over_n_with_20_and_2_records(monkeypatch, size, sizes, t_end):
    """W2n runs every n with 20 records, then every n with 2 (the flow alone), to the size's
    T, in the class-means form against the d-space form."""
    calls = _capture_forms(monkeypatch)
    rows = bench_module.bench_w2n(size, 1, "cpu", lambda m: None)
    assert [(r["n"], r["records"]) for r in rows] == ([(n, 20) for n in sizes]
                                                      + [(n, 2) for n in sizes])
    for row, forms, fast, plain in calls:
        assert forms == ("classes", "none") and row["size"] == size
        for wl, red in ((fast, "classes"), (plain, "none")):
            solver = wl.specs[0].solver
            assert (solver.t_end, solver.records, solver.reduction) == (t_end, row["records"],
                                                                        red)
            assert wl.specs[0].model.per_class == row["n"]


def test_a_w2n_mismatch_names_n_and_the_records(monkeypatch):
    """The error of a W2n case says which one failed: its n and its number of records."""

    def result(last_fn):
        table = pd.DataFrame({"run_id": "r", "time": [0.0, 1.0],
                              **{col: [1.0, 2.0] for col in W2_COLUMNS}})
        table["fn"] = [1.0, last_fn]
        return SimpleNamespace(trajectories=table, runs=pd.DataFrame({"steps": [3]}),
                               timings={})

    finals = iter([2.0, 4.0])

    def fake_timed(fn, repeats, device, check=None):
        res = result(next(finals))
        check(res)
        return {"median_s": 1.0}, res

    monkeypatch.setattr(bench_module, "timed", fake_timed)
    workload = SimpleNamespace(specs=[], fn_tol=1e-9)
    with pytest.raises(AssertionError, match=r"^W2n n=50, records=2: classes and d-space "
                                             r"trajectories differ by 5\.00e-01"):
        bench_module._compare_forms(lambda form: workload, ("classes", "none"),
                                    {"workload": "W2n", "n": 50, "records": 2, "size": "tiny"},
                                    1, "cpu", lambda m: None)


def test_w2_difference_of_an_all_zero_column_is_defined():
    """A column that is 0 at every record of both tables is no difference (no division by
    zero); a nonzero value against zeros is a difference far above any tolerance."""
    times = np.arange(3.0)
    b = {col: np.array([1.0, 2.0, 3.0]) for col in W2_COLUMNS}
    b["w_norm"] = np.zeros(3)
    table_b = pd.DataFrame({"time": times, **b})
    assert w2_difference(table_b, table_b.copy()) == 0.0
    a = pd.DataFrame({"time": times, **b, "w_norm": np.array([0.0, 1e-3, 0.0])})
    assert w2_difference(a, table_b) > 1e100


# ------------------------------------------------------------------------------ V1


def _v1_with_stand_ins(monkeypatch) -> tuple[list, list]:
    """bench_v1 with training, timing, data and the comparison replaced: returns the list of
    (exact) flags the comparison gets and the list of peer calls."""
    import benchmarks.training_peer as training_peer
    import ncsim.validate.data as data_module
    import ncsim.validate.train as train_module

    case = workloads.v1("tiny")[0]
    monkeypatch.setattr(workloads, "v1", lambda size, device: [case])
    data = SimpleNamespace(x_train=np.zeros((30, 2)), x_test=np.zeros((10, 2)))
    monkeypatch.setattr(data_module, "load_dataset", lambda *a, **k: data)
    monkeypatch.setattr(train_module, "train", lambda config, data, seeds=None: SimpleNamespace(
        log="ncsim", runs=[], config=config, model=None))
    peer_calls: list = []
    monkeypatch.setattr(training_peer, "dataloader_training",
                        lambda config, data: peer_calls.append(config) or "peer")
    medians = iter([2.0, 5.0])

    def fake_timed(fn, repeats, device, warmup=False, check=None):
        for _ in range(repeats):
            out = fn()
            check(out)
        return {"median_s": next(medians)}, out

    monkeypatch.setattr(bench_module, "timed", fake_timed)
    flags: list = []

    def fake_check(case, logs, peer_logs, row, peer_mod, exact):
        flags.append(exact)
        row["max_rel_diff" if exact else "first_record_rel_diff"] = 0.0

    monkeypatch.setattr(bench_module, "_check_training", fake_check)
    monkeypatch.setattr(bench_module, "_tracking_cost", lambda *a, **k: {})
    return flags, peer_calls


@pytest.mark.parametrize(("device", "exact"), [("cpu", True), ("cuda", False),
                                               ("cuda:1", False)])
def test_v1_compares_exactly_on_the_cpu_only(monkeypatch, device, exact):
    """On the CPU the two loops compute the same and are compared record by record; on an
    accelerator (non-deterministic kernels) only loosely, whatever its index."""
    flags, _ = _v1_with_stand_ins(monkeypatch)
    (row,) = bench_module.bench_v1("tiny", 1, device, lambda m: None)
    assert flags and set(flags) == {exact}
    assert row["speedup"] == 2.5


def _kernel_flags() -> tuple:
    cudnn = torch.backends.cudnn
    return (torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(), cudnn.deterministic,
            cudnn.benchmark, cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)


@pytest.mark.parametrize(("device", "deterministic"), [("cpu", False), ("cuda", True)])
def test_v1_trains_with_deterministic_kernels_on_an_accelerator(monkeypatch, device,
                                                                deterministic):
    """On an accelerator both loops train under deterministic kernels without TF32 (so that
    what they compute can be compared), the row says so, and the process's flags are as
    before afterwards; on the CPU nothing is switched."""
    import ncsim.validate.train as train_module

    flags, _ = _v1_with_stand_ins(monkeypatch)
    seen: list = []
    monkeypatch.setattr(train_module, "train", lambda config, data, seeds=None: seen.append(
        _kernel_flags()) or SimpleNamespace(log="ncsim", runs=[], config=config, model=None))
    before = _kernel_flags()
    (row,) = bench_module.bench_v1("tiny", 1, device, lambda m: None)
    assert _kernel_flags() == before
    assert row["deterministic_kernels"] is deterministic
    expected = (True, True, True, False, False, False) if deterministic else before
    assert seen and set(seen) == {expected}


def test_deterministic_kernels_restore_the_flags_after_an_error():
    """The switches are restored when the block raises, whatever they were before."""
    before = _kernel_flags()
    torch.backends.cudnn.benchmark = True
    try:
        with pytest.raises(RuntimeError, match="inside"), bench_module.deterministic_kernels():
            assert _kernel_flags()[:4] == (True, True, True, False)
            raise RuntimeError("inside")
        assert torch.backends.cudnn.benchmark is True
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.backends.cudnn.benchmark = before[3]
    assert _kernel_flags() == before


def test_v1_without_peers_runs_no_peer_and_reports_it(monkeypatch):
    """--no-peers: the DataLoader loop never runs, its row says why, no speed-up and no log
    difference are reported."""
    flags, peer_calls = _v1_with_stand_ins(monkeypatch)
    (row,) = bench_module.bench_v1("tiny", 1, "cpu", lambda m: None, peers=False)
    assert peer_calls == [] and flags == []
    assert row["dataloader"] == {"error": "not run (--no-peers)"}
    assert "speedup" not in row and "max_rel_diff" not in row
    assert row["ncsim"] == {"median_s": 2.0}


def _case(**tol):
    return SimpleNamespace(name="c", log_tol=1e-9, trend_tol=0.05, accuracy_tol=0.02, **tol)


def _peer_mod(log=(0.0, 0.0), trend=(0.0, 0.0), acc=(0.0, 0.0)):
    """A training-peer module whose measures return the given values, one per seed pair."""

    def by_seed(values):
        return lambda a, b, *rest: values[a]

    return SimpleNamespace(protocol_mismatch=lambda a, b: [], log_difference=by_seed(log),
                           trend_difference=by_seed(trend),
                           final_accuracy_difference=by_seed(acc))


@pytest.mark.parametrize("exact", [True, False])
def test_check_training_fails_on_a_nan_in_any_seed(exact):
    """A NaN log difference fails the check whichever seed has it (max() would keep the
    first seed's 0 and drop a NaN that comes second)."""
    row: dict = {}
    with pytest.raises(AssertionError, match="differs from ncsim's by inf"):
        bench_module._check_training(_case(), [0, 1], [0, 1], row,
                                     _peer_mod(log=(0.0, math.nan)), exact)
    assert row == {("max_rel_diff" if exact else "first_record_rel_diff"): math.inf}
    with pytest.raises(AssertionError, match="loss, fn or accuracy"):
        bench_module._check_training(_case(), [0, 1], [0, 1], {},
                                     _peer_mod(trend=(0.0, math.nan)), False)
    with pytest.raises(AssertionError, match="final training accuracies differ by inf"):
        bench_module._check_training(_case(), [0, 1], [0, 1], {},
                                     _peer_mod(acc=(0.0, math.nan)), False)


def test_check_training_tolerances_are_the_largest_differences_allowed():
    """On an accelerator a trend difference equal to trend_tol and a final accuracy
    difference equal to accuracy_tol pass (err <= tol, as every check of the harness); the
    row keeps the worst seed's values. Just above either fails."""
    row: dict = {}
    bench_module._check_training(_case(), [0, 1], [0, 1], row,
                                 _peer_mod(log=(1e-9, 0.0), trend=(0.01, 0.05),
                                           acc=(0.02, 0.0)), False)
    assert row == {"first_record_rel_diff": 1e-9, "trend_rel_diff": 0.05,
                   "final_accuracy_diff": 0.02}
    with pytest.raises(AssertionError, match="differ from ncsim's by 5.10e-02 > 0.05"):
        bench_module._check_training(_case(), [0, 1], [0, 1], {},
                                     _peer_mod(trend=(0.0, 0.051)), False)
    with pytest.raises(AssertionError, match="differ by 0.021 > 0.02"):
        bench_module._check_training(_case(), [0, 1], [0, 1], {},
                                     _peer_mod(acc=(0.021, 0.0)), False)


def test_check_training_on_the_cpu_compares_every_record_and_nothing_else():
    """Exact mode asks the log difference of every record (rows=None) and records only
    max_rel_diff; the loose mode asks the first record only (rows=1)."""
    asked: list = []
    mod = _peer_mod()
    mod.log_difference = lambda a, b, rows: asked.append(rows) or 0.0
    row: dict = {}
    bench_module._check_training(_case(), [0], [0], row, mod, True)
    assert asked == [None] and row == {"max_rel_diff": 0.0}
    bench_module._check_training(_case(), [0], [0], {}, mod, False)
    assert asked == [None, 1]


# ------------------------------------------------------------------------------ command line


def _no_bench(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the benchmark started")

    monkeypatch.setattr(bench_module, "run_bench", refuse)


@pytest.mark.parametrize("option", ["--repeats", "--peer-repeats", "--threads"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_counts_below_one_are_refused_before_measuring(monkeypatch, option, value):
    """Zero or negative repeats or threads: exit status 2, one line naming the option and
    the range, no benchmark started (zero repeats would have no median)."""
    _no_bench(monkeypatch)
    result = CliRunner().invoke(bench, ["--workload", "W2", option, value])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output
    wanted = "1<=x<=4096" if option == "--threads" else "x>=1"
    assert wanted in result.output and "Traceback" not in result.output


def test_default_output_of_a_numbered_cuda_device_is_named_cuda(monkeypatch, tmp_path):
    """Without --out the JSON goes to benchmarks/results/<device type>_<date>.json: 'cuda'
    for cuda:1 (no ':' in a file name)."""
    monkeypatch.setattr(bench_module, "require_device", lambda device: None)
    monkeypatch.setattr(bench_module, "ROOT", tmp_path)
    asked: list = []
    monkeypatch.setattr(bench_module, "run_bench", lambda workload, device, *a, **k: (
        asked.append(device) or {"device": device, "workloads": {}}))
    before = datetime.date.today().isoformat()
    result = CliRunner().invoke(bench, ["--device", "cuda:1", "--workload", "W2"])
    after = datetime.date.today().isoformat()
    assert result.exit_code == 0, result.output
    assert asked == ["cuda:1"]
    written = sorted(p.name for p in (tmp_path / "benchmarks" / "results").iterdir())
    assert written in ([f"cuda_{before}.json"], [f"cuda_{after}.json"])


# ------------------------------------------------------------------------------ machine record


def _git(folder, *args):
    subprocess.run(["git", "-C", str(folder), "-c", "user.name=probe",
                    "-c", "user.email=probe@example.org", "-c", "commit.gpgsign=false", *args],
                   check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_commit_record_is_the_head_and_dirty_only_for_tracked_changes(monkeypatch, tmp_path):
    """Outside a checkout: None. In one: the 40-digit HEAD; an untracked file leaves it
    clean, a changed tracked file adds '+dirty'."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    outside = tmp_path / "plain"
    outside.mkdir()
    monkeypatch.setattr(bench_module, "ROOT", outside)
    assert bench_module._commit() is None
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("a\n")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "a")
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    monkeypatch.setattr(bench_module, "ROOT", repo)
    assert bench_module._commit() == head and len(head) == 40
    (repo / "untracked.txt").write_text("u\n")
    assert bench_module._commit() == head
    (repo / "a.txt").write_text("b\n")
    assert bench_module._commit() == head + "+dirty"


@pytest.mark.parametrize("counts", [{"repeats": 0}, {"repeats": 3, "peer_repeats": 0}])
def test_run_bench_refuses_repeat_counts_below_one(counts):
    """The Python entry point refuses zero repeats as the command line does."""
    name = "peer_repeats" if "peer_repeats" in counts else "repeats"
    with pytest.raises(InputError, match=f"^{name} must be an integer >= 1 .*got 0$"):
        bench_module.run_bench((), log=lambda m: None, **counts)
    with pytest.raises(InputError, match="^repeats must be an integer >= 1"):
        bench_module.timed(lambda: 1, 0)
