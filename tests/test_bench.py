"""The benchmark runner on a tiny workload, and its accuracy check."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from thread_helpers import blas_threads, torch_threads

from ncsim.bench import _benchmarks, bench, run_bench


def test_runner_times_ncsim_and_peers_on_a_tiny_workload():
    results = run_bench(("W1",), repeats=1, size="tiny", threads=1, log=lambda m: None)
    w1 = results["workloads"]["W1"]
    assert set(w1["solvers"]) == {"ncsim_dopri5", "ncsim_tsit5", "scipy_dop853_loop",
                                  "torchdiffeq_dopri5", "torchode_dopri5", "torchode_tsit5"}
    for row in w1["solvers"].values():
        assert row["median_s"] > 0 and row["fn_error"] <= 1e-6
    assert set(w1["ratios"]) == set(w1["solvers"]) - {"ncsim_dopri5", "ncsim_tsit5"}
    ours = {k: w1["solvers"][k]["median_s"] for k in ("ncsim_dopri5", "ncsim_tsit5")}
    assert w1["fastest_ncsim"] == min(ours, key=ours.get)
    # each peer against ncsim with the same method
    assert w1["ratios"]["torchode_tsit5"] == pytest.approx(
        w1["solvers"]["torchode_tsit5"]["median_s"] / ours["ncsim_tsit5"])
    assert w1["ratios"]["torchode_dopri5"] == pytest.approx(
        w1["solvers"]["torchode_dopri5"]["median_s"] / ours["ncsim_dopri5"])
    assert results["machine"]["torch_threads"] == 1
    json.dumps(results)


def test_accuracy_check_fails_loudly_on_a_wrong_result():
    _, peers = _benchmarks()
    ref = np.array([1.0, 0.5])
    assert peers.check_accuracy("ok", ref + 1e-8, ref, 1e-6) < 1e-6
    with pytest.raises(AssertionError, match="exceeds the stated accuracy"):
        peers.check_accuracy("wrong", ref * 1.01, ref, 1e-6)
    with pytest.raises(AssertionError):
        peers.check_accuracy("nan", np.array([np.nan, 0.5]), ref, 1e-6)


def test_cli_writes_json(tmp_path):
    out = tmp_path / "r.json"
    result = CliRunner().invoke(bench, ["--workload", "W2", "--workload", "W2n", "--size",
                                        "tiny", "--repeats", "1", "--threads", "1", "--out",
                                        str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    rows = data["workloads"]["W2"]
    assert rows and all(r["max_rel_diff"] <= 1e-9 for r in rows)
    rows = data["workloads"]["W2n"]
    assert [(r["n"], r["records"]) for r in rows] == [(20, 20), (50, 20), (20, 2), (50, 2)]
    assert all(r["max_rel_diff"] <= 1e-9 and r["classes"]["steps_total"] > 0 for r in rows)
    for row in rows:
        for form in ("classes", "none"):
            phases = row[form]["phases_s"]
            assert set(phases) == {"prepare_s", "integrate_s", "summarise_s"}
            assert 0 < sum(phases.values()) <= row[form]["times_s"][-1]


def test_w1_in_float32_and_float64_compares_each_dtype_with_its_own_ncsim_run():
    results = run_bench(("W1",), repeats=1, size="tiny", threads=1, log=lambda m: None,
                        dtypes=("float64", "float32"))
    w1 = results["workloads"]["W1"]
    solvers = w1["solvers"]
    assert set(solvers) == {"ncsim_dopri5", "ncsim_tsit5", "scipy_dop853_loop",
                            "torchdiffeq_dopri5", "torchode_dopri5", "torchode_tsit5",
                            "ncsim_dopri5_float32", "ncsim_tsit5_float32",
                            "torchdiffeq_dopri5_float32", "torchode_dopri5_float32",
                            "torchode_tsit5_float32"}
    assert w1["skipped"] == ["scipy_dop853_loop_float32 (a CPU float64 peer)"]
    for name, row in solvers.items():
        assert row["dtype"] == ("float32" if name.endswith("_float32") else "float64")
        if name.startswith("ncsim"):
            assert 0 < sum(row["phases_s"].values()) <= row["times_s"][-1]
        assert row["fn_error"] <= (1e-3 if row["dtype"] == "float32" else 1e-6)
    # float32 solvers carry rounding errors well above float64's, below their stated accuracy
    for name in ("ncsim_dopri5_float32", "torchdiffeq_dopri5_float32", "torchode_dopri5_float32"):
        assert solvers[name]["fn_error"] > 1e-8
    for name, ratio in w1["ratios"].items():
        method = "tsit5" if "_tsit5" in name else "dopri5"
        base = f"ncsim_{method}_float32" if name.endswith("_float32") else f"ncsim_{method}"
        assert ratio == pytest.approx(solvers[name]["median_s"] / solvers[base]["median_s"])
    fastest = solvers[w1["fastest_ncsim_float32"]]["median_s"]
    assert w1["fastest_ncsim_float32"].endswith("_float32")
    assert w1["speedup_vs_fastest_peer_float32"] == pytest.approx(min(
        row["median_s"] for k, row in solvers.items()
        if k.endswith("_float32") and not k.startswith("ncsim")) / fastest)
    assert w1["params"]["tolerances"] == {"float64": [1e-8, 1e-10], "float32": [1e-5, 1e-7]}
    assert "rtol" not in w1["params"] and "dtype" not in w1["params"]


def test_a_peer_that_misses_its_accuracy_is_reported_not_fatal(monkeypatch):
    from ncsim.bench import bench_w1

    _, peers = _benchmarks()

    def wrong(problem, **tol):
        return {"fn": np.full(problem.y0.shape[0], 123.0), "nfev": np.zeros(1)}

    monkeypatch.setitem(peers.PEERS, "torchode_dopri5", wrong)
    w1 = bench_w1("tiny", 1, "cpu", True, lambda m: None,
                  skip=("torchdiffeq_dopri5", "torchode_tsit5"))
    assert "exceeds the stated accuracy" in w1["solvers"]["torchode_dopri5"]["error"]
    assert set(w1["ratios"]) == {"scipy_dop853_loop"}
    scipy = w1["solvers"]["scipy_dop853_loop"]["median_s"]
    assert w1["speedup_vs_fastest_peer"] == pytest.approx(
        scipy / w1["solvers"][w1["fastest_ncsim"]]["median_s"])


def test_an_ncsim_variant_that_fails_is_reported_and_fails_the_command(monkeypatch, tmp_path):
    from ncsim import bench as bench_module

    real = bench_module._ncsim_w1_row

    def tsit5_breaks(name, specs, *args):
        if specs[0].solver.method == "tsit5":
            raise RuntimeError("no capture here")
        return real(name, specs, *args)

    monkeypatch.setattr(bench_module, "_ncsim_w1_row", tsit5_breaks)
    w1 = bench_module.bench_w1("tiny", 1, "cpu", False, lambda m: None)
    assert w1["solvers"]["ncsim_tsit5"] == {"dtype": "float64", "error": "no capture here"}
    assert w1["fastest_ncsim"] == "ncsim_dopri5" and w1["ratios"] == {}
    # the JSON keeps the other rows, and the command still fails
    out = tmp_path / "w1.json"
    result = CliRunner().invoke(bench, ["--workload", "W1", "--size", "tiny", "--repeats", "1",
                                        "--no-peers", "--out", str(out)])
    assert result.exit_code == 1
    assert "ncsim failed in ncsim_tsit5" in result.output
    rows = json.loads(out.read_text())["workloads"]["W1"]["solvers"]
    assert "error" in rows["ncsim_tsit5"] and rows["ncsim_dopri5"]["fn_error"] <= 1e-6


def test_w1_reference_sample_holds_the_grid_corners(monkeypatch):
    from ncsim.bench import _w1_reference

    workloads, peers = _benchmarks()
    specs = workloads.w1(grid=5, t_end=1.0, records=2).specs
    checked = []
    real = peers.reference_fn

    def spy(problem, **kw):
        checked.append(list(zip(problem.lambda_w.tolist(), problem.lambda_h.tolist())))
        return real(problem, **kw)

    monkeypatch.setattr(peers, "reference_fn", spy)
    _w1_reference(specs, "cpu", lambda m: None, loop_max=2)
    pairs = [(s.reg.lambda_w, s.reg.lambda_h) for s in specs]
    corners = [pairs[0], pairs[4], pairs[20], pairs[24]]  # (1e-4, 1e-4) ... (3e-2, 3e-2)
    assert len(checked[0]) == 16 and all(c in checked[0] for c in corners)


def test_w1_reference_of_a_large_grid_is_ncsim_checked_against_dop853():
    from ncsim.bench import _w1_reference

    workloads, peers = _benchmarks()
    specs = workloads.w1(grid=2, t_end=50.0, records=10).specs
    loop, how_loop = _w1_reference(specs, "cpu", lambda m: None)
    tight, how_tight = _w1_reference(specs, "cpu", lambda m: None, loop_max=2)
    assert how_loop.startswith("scipy") and how_tight.startswith("ncsim")
    assert np.abs(tight - loop).max() < 1e-9
    assert np.array_equal(loop, peers.reference_fn(peers.Problem.from_specs(specs)))


def test_peer_problem_moves_to_the_requested_dtype():
    import torch

    workloads, peers = _benchmarks()
    specs = workloads.w1(grid=2, t_end=1.0, records=2).specs
    p64 = peers.Problem.from_specs(specs)
    p32 = peers.Problem.from_specs(specs, dtype=torch.float32)
    assert p32.y0.dtype == p32.lambda_w.dtype == torch.float32
    assert torch.equal(p32.y0, p64.y0.float())  # the same draw, rounded
    assert p64.subset([1, 3]).y0.shape[0] == 2
    assert torch.equal(p64.subset([1, 3]).lambda_h, p64.lambda_h[[1, 3]])


def test_peer_metrics_in_blocks_equal_one_call(monkeypatch):
    """The peers' metrics are computed in ncsim's record blocks; the blocks change nothing."""
    import torch

    from ncsim.metrics import METRIC_NAMES

    workloads, peers = _benchmarks()
    problem = peers.Problem.from_specs(workloads.w1(grid=2, t_end=1.0, records=2).specs)
    gen = torch.Generator().manual_seed(0)
    states = problem.y0.repeat(3, 1) * (1 + torch.rand(12, 1, generator=gen,
                                                        dtype=torch.float64))
    monkeypatch.setattr(peers, "record_block", lambda device, state_bytes: 1_000)
    whole = problem.metrics(states)
    monkeypatch.setattr(peers, "record_block", lambda device, state_bytes: 5)
    blocks = problem.metrics(states)
    assert list(blocks) == list(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert blocks[name].shape == (12,)
        torch.testing.assert_close(blocks[name], whole[name], rtol=1e-12, atol=0)


@pytest.mark.slow
def test_device_check_script_dry_runs_on_the_cpu(tmp_path):
    import os
    import subprocess
    import sys

    from ncsim.bench import ROOT
    from ncsim.validate.data import FASHION_DIR

    # V1 runs where Fashion-MNIST is installed; elsewhere the script must say it left V1 out
    fashion = (FASHION_DIR / "train-images-idx3-ubyte.gz").exists()
    env = {**os.environ, "DEVICE": "cpu", "SIZE": "tiny", "PYTHON": sys.executable,
           "FASHION_MNIST": str(FASHION_DIR if fashion else tmp_path / "absent"),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh"), str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    log = (tmp_path / "device_check.log").read_text()
    assert "== tests" in log and "== w1" in log and "skipped" in log  # no CUDA: tests skip
    written = {p.name.rsplit("_", 1)[-1] if "w2_w3" not in p.name else "w2_w3.json": p
               for p in tmp_path.glob("*.json")}
    w1 = json.loads(written["w1.json"].read_text())["workloads"]["W1"]
    assert w1["solvers"]["ncsim_dopri5"]["fn_error"] <= 1e-6
    assert "W3" in json.loads(written["w2_w3.json"].read_text())["workloads"]
    if fashion:
        assert len(written) == 3
        v1 = json.loads(written["v1.json"].read_text())["workloads"]["V1"]
        assert [r["case"] for r in v1] == ["mlp5", "resnet20", "mlp5_seeds2"]
        assert all("speedup" in r for r in v1)
    else:
        assert len(written) == 2 and "V1 left out" in done.stderr


def test_device_check_deadline_skips_the_stages_it_leaves_no_time_for(tmp_path):
    """With DEADLINE spent before the first stage, no stage starts: each says so in the log
    and on stderr, nothing is written, and the script fails."""
    import os
    import subprocess
    import sys

    from ncsim.bench import ROOT

    env = {**os.environ, "DEVICE": "cpu", "SIZE": "tiny", "PYTHON": sys.executable,
           "DEADLINE": "1", "STAGES": "w1 w2", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh"), str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    log = (tmp_path / "device_check.log").read_text()
    for stage in ("w1", "w2"):
        assert f"no time left for stage {stage}" in log
        assert f"no time left for stage {stage}" in done.stderr
    assert not list(tmp_path.glob("*.json"))


def test_ratios_with_a_cuda_graph_row():
    from ncsim.bench import _with_ratios

    entry = {"solvers": {
        "ncsim_dopri5": {"median_s": 2.0, "dtype": "float64"},
        "ncsim_tsit5": {"median_s": 1.6, "dtype": "float64"},
        "ncsim_dopri5_graphs": {"median_s": 0.5, "dtype": "float64"},
        "torchode_dopri5": {"median_s": 4.0, "dtype": "float64"},
        "torchode_tsit5": {"median_s": 4.8, "dtype": "float64"},
        "torchdiffeq_dopri5": {"dtype": "float64", "error": "failed"},
        "ncsim_dopri5_float32": {"median_s": 1.0, "dtype": "float32"},
        "torchode_dopri5_float32": {"median_s": 3.0, "dtype": "float32"},
    }}
    out = _with_ratios(entry, ("float32", "float64"))
    # peers against the same method (dopri5); the headline against the fastest ncsim row
    assert out["ratios"] == {"torchode_dopri5": 2.0, "torchode_tsit5": pytest.approx(3.0),
                             "torchode_dopri5_float32": 3.0}
    assert out["fastest_ncsim"] == "ncsim_dopri5_graphs" and out["cuda_graphs_gain"] == 4.0
    assert out["speedup_vs_fastest_peer"] == 8.0
    assert out["speedup_vs_fastest_peer_graphs"] == 8.0  # benchmarks/README.md names it
    assert "speedup_vs_fastest_peer_graphs_float32" not in out
    assert "cuda_graphs_gain_float32" not in out and out["speedup_vs_fastest_peer_float32"] == 3.0
    assert out["fastest_ncsim_float32"] == "ncsim_dopri5_float32"


def test_w3_measures_the_rhs_against_the_faster_matmul_library():
    """On the CPU the reference rate is the faster of torch.bmm and numpy's matmul (the
    library the float64 products go through), and the fraction is taken against it."""
    from ncsim.bench import bench_w3

    rows = bench_w3("tiny", 1, "cpu", lambda message: None)
    assert [row["dtype"] for row in rows] == ["float32", "float64"]
    for row in rows:
        assert row["torch_bmm_gflops"] > 0 and row["numpy_matmul_gflops"] > 0
        assert row["matmul_gflops"] == max(row["torch_bmm_gflops"], row["numpy_matmul_gflops"])
        assert row["fraction_of_matmul_rate"] == pytest.approx(
            row["rhs_gflops"] / row["matmul_gflops"], rel=1e-12)


def test_threads_bound_torch_and_numpy_blas_during_the_run_only():
    import torch

    # two threads before: the bound and the restoring both show
    with torch_threads(2, blas=True):
        results = run_bench(("W3",), size="tiny", repeats=1, threads=1, log=lambda m: None)
        assert results["machine"]["torch_threads"] == 1
        assert results["machine"]["blas_threads"]  # numpy's OpenBLAS is seen
        assert set(results["machine"]["blas_threads"].values()) == {1}
        assert torch.get_num_threads() == 2
        assert set(blas_threads().values()) == {2}


def test_products_benchmark_rows(monkeypatch):
    import torch

    import benchmarks.products as bench_products

    monkeypatch.setattr(bench_products, "REPEAT_BUDGET_S", 1e-4)
    row = bench_products.product_row("tiny", 2, 3, 4, 5, True, torch.float64)
    rates = [row[f"{lib}_{kind}_gflops"] for lib in ("torch", "numpy")
             for kind in ("fresh", "held")]
    assert all(rate > 0 for rate in rates) and row["dtype"] == "float64"
    assert row["numpy_over_torch_held"] == pytest.approx(
        row["numpy_held_gflops"] / row["torch_held_gflops"], rel=1e-12)
    stage = bench_products.stage_sum_row("tiny", 3, 40, torch.float32)
    assert stage["torch_ms"] > 0 and stage["numpy_ms"] > 0 and stage["dtype"] == "float32"


def test_route_benchmark_runs_both_routes_and_restores_the_default(monkeypatch, tmp_path):
    """benchmarks/route.py times each workload by both routes, each run taking the route it
    names (numpy's matmul called or not), and leaves HOST_BLAS as it found it."""
    import benchmarks.route as bench_route
    from benchmarks.workloads import w1
    from ncsim import products

    calls = {"numpy": 0}
    real = np.matmul

    def counting(*args, **kwargs):
        calls["numpy"] += 1
        return real(*args, **kwargs)

    seen = []
    real_simulate = bench_route.simulate

    def simulate(specs, theory):
        before = calls["numpy"]
        out = real_simulate(specs, theory=theory)
        seen.append((products.HOST_BLAS, calls["numpy"] > before))
        return out

    monkeypatch.setattr(products.np, "matmul", counting)
    monkeypatch.setattr(bench_route, "simulate", simulate)
    monkeypatch.setattr(bench_route, "WORKLOADS", {"W1": lambda: w1(grid=1, t_end=5.0,
                                                                     records=3)})
    monkeypatch.setattr(products, "HOST_BLAS", products.optimised(products.numpy_blas()))
    default = products.HOST_BLAS
    out = tmp_path / "sub" / "route.json"
    monkeypatch.setattr("sys.argv", ["route.py", "--repeats", "2", "--out", str(out)])
    bench_route.main()
    assert products.HOST_BLAS is default
    assert seen[1:] == [(True, True), (False, False)] * 2  # after the warm-up run
    record = json.loads(out.read_text())
    row = record["workloads"]["W1"]
    assert [len(row["seconds"][r]) for r in ("numpy", "torch")] == [2, 2]
    assert row["numpy_time_over_torch_time"] == pytest.approx(
        row["median_s"]["numpy"] / row["median_s"]["torch"], rel=1e-12)
    assert record["cpu_vendor"] == products.cpu_vendor()


def test_host_cost_script_times_every_part_and_keeps_the_thread_setting():
    import torch

    from benchmarks.host import host_costs

    before = torch.get_num_threads()
    costs = host_costs(grid=3, records=5, threads=2, repeats=1, theory_runs=3, real_grid=2)
    assert costs["runs"] == 9 and costs["records"] == 5
    for key in ("validate_s", "run_ids_s", "initial_state_s_threads1",
                "initial_state_s_threads2", "trajectory_table_s", "onsets_s",
                "onsets_per_run_loop_s", "summary_host_s", "theory_per_run_ms"):
        assert costs[key] > 0, key
    assert 0 < costs["onsets_found"] <= 9  # the stand-in records hold real W1 onsets
    assert torch.get_num_threads() == before


def test_power_iteration_finds_the_largest_eigenvalue_of_a_symmetric_flow():
    from benchmarks.stiffness import largest_curvature

    rng = np.random.default_rng(4)
    q, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    eigs = -np.geomspace(1e-3, 2.5, 30)  # a decaying flow, one stiff mode
    jac = (q * eigs) @ q.T
    mu, drift = largest_curvature(lambda t, y: jac @ y, rng.standard_normal(30))
    assert mu == pytest.approx(2.5, rel=1e-6) and drift < 1e-6


def test_stiffness_report_steps_match_scipy_on_the_same_pair():
    """ncsim's dopri5 and scipy's RK45 (the same Dormand-Prince pair, controller and error
    norm) take the same steps on each run of a short 2 x 2 W1 grid, to a step or two."""
    from benchmarks.stiffness import RTOLS, stiffness_report

    report = stiffness_report(grid=2, t_end=2e3)
    assert [r["run"] for r in report["runs"]] == [0, 1, 2, 3]
    assert report["total_ncsim_steps"] == sum(r["ncsim_steps"] for r in report["runs"])
    by_rtol = report["total_ncsim_steps_by_rtol"]
    assert by_rtol["1e-08"] == report["total_ncsim_steps"]  # atol 1e-10 both ways
    assert by_rtol["1e-05"] < by_rtol["1e-08"] < by_rtol["1e-10"]
    for r in report["runs"]:
        assert abs(r["ncsim_steps"] - r["rk45_steps"]["1e-08"]) <= 2, r
        assert [r["rk45_steps"][str(t)] for t in RTOLS] == sorted(
            r["rk45_steps"][str(t)] for t in RTOLS)
        assert r["boundary"] == pytest.approx(3.3065679, abs=1e-6)
    json.dumps(report)


@pytest.mark.slow
def test_w1_runs_with_unequal_decays_step_on_the_stability_boundary():
    """Over W1's horizon the runs with a weight decay of 0.03 end with steps at the
    Dormand-Prince stability boundary (h mu_max = 3.307 within 1%) and their step counts
    fall by at most 25% for a 1000x looser tolerance; the run with both decays at 1e-4 is
    accuracy-limited (h mu_max below half the boundary, steps more than halved)."""
    from benchmarks.stiffness import stiffness_report

    runs = {r["run"]: r for r in stiffness_report(grid=2, t_end=2e4)["runs"]}
    for i in (1, 2, 3):
        assert runs[i]["h_mu"] == pytest.approx(runs[i]["boundary"], rel=0.01)
        assert runs[i]["rk45_steps"]["1e-05"] >= 0.75 * runs[i]["rk45_steps"]["1e-08"]
    assert runs[0]["h_mu"] < 0.5 * runs[0]["boundary"]
    assert runs[0]["rk45_steps"]["1e-05"] < 0.5 * runs[0]["rk45_steps"]["1e-08"]


def test_gram_accuracy_script_measures_error_against_a_tight_reference():
    """Both forms' trajectory errors grow with the tolerance (and their steps fall); the two
    rtol-1e-13 references agree to far below either error."""
    from benchmarks.gram_accuracy import errors_per_form

    case = errors_per_form("ce", t_end=5.0, runs=2, dim=64, rtols=(1e-9, 1e-6))
    assert case["ref_difference"] < 1e-11
    for rows in case["forms"].values():
        tight, loose = rows["1e-09"], rows["1e-06"]
        assert case["ref_difference"] < tight["error"] < loose["error"] < 1e-4
        assert tight["steps"] > loose["steps"]


def test_default_output_never_overwrites_a_result(tmp_path):
    """The default JSON takes the first free ``_k`` suffix beside an existing result, each
    name claimed by an exclusive create (threads writing at once all get their own file)."""
    from concurrent.futures import ThreadPoolExecutor

    from ncsim.bench import write_unused

    path = tmp_path / "results" / "cpu_2026-01-01.json"
    assert write_unused(path, "a") == path and path.read_text() == "a"
    assert write_unused(path, "b") == path.with_name("cpu_2026-01-01_2.json")
    assert write_unused(path, "c") == path.with_name("cpu_2026-01-01_3.json")
    assert path.read_text() == "a"
    with ThreadPoolExecutor(8) as pool:
        written = list(pool.map(lambda i: write_unused(path, str(i)), range(16)))
    assert len(set(written)) == 16
    assert sorted(p.read_text() for p in written) == sorted(str(i) for i in range(16))
    assert {p.name for p in written} == {f"cpu_2026-01-01_{k}.json" for k in range(4, 20)}


# ----------------------------------------------------------------------------- command checks


def _no_bench(monkeypatch):
    import ncsim.bench as bench_module

    def refuse(*args, **kwargs):
        raise AssertionError("the benchmark started")

    monkeypatch.setattr(bench_module, "run_bench", refuse)


@pytest.mark.parametrize(("args", "words"), [
    (["--device", "foo"], "unknown device 'foo'"),
    (["--device", "cuda:x"], "unknown device 'cuda:x'"),
    (["--out", "FILE/result.json"], "is a file, not a folder"),
    (["--out", "DIR"], "is a directory"),
    (["--out", ""], "empty path"),
])
def test_bad_device_or_out_is_refused_before_measuring(tmp_path, monkeypatch, args, words):
    """A device torch does not know, or an --out that cannot be written, is one line and
    exit status 2 before any workload runs (it came after minutes of measurements, or as a
    torch traceback)."""
    _no_bench(monkeypatch)
    (tmp_path / "FILE").write_text("")
    (tmp_path / "DIR").mkdir()
    args = [str(tmp_path / a) if a.startswith(("FILE", "DIR")) else a for a in args]
    result = CliRunner().invoke(bench, ["--workload", "W2", *args])
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output


def test_cuda_without_a_gpu_is_refused(monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    _no_bench(monkeypatch)
    result = CliRunner().invoke(bench, ["--device", "cuda", "--workload", "W2"])
    assert result.exit_code == 2 and "not available" in result.output


def test_json_has_no_nan_and_names_the_code_timed(tmp_path, monkeypatch):
    """Values that were not measured (NaN) are written as null, so the file is strict JSON;
    the machine record names the ncsim version and the commit that was timed."""
    import ncsim
    import ncsim.bench as bench_module

    monkeypatch.setattr(bench_module, "run_bench", lambda *a, **k: {
        "machine": bench_module.machine(), "workloads": {"V1": [{"epoch_s": float("nan")}]}})
    out = tmp_path / "r.json"
    result = CliRunner().invoke(bench, ["--workload", "V1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(c))
    assert data["workloads"]["V1"][0]["epoch_s"] is None
    assert data["machine"]["ncsim"] == ncsim.__version__
    commit = data["machine"]["ncsim_commit"]
    assert commit is None or (len(commit.split("+")[0]) == 40
                              and commit.split("+")[1:] in ([], ["dirty"]))


def test_peak_memory_does_not_depend_on_what_ran_before():
    """A block that holds 64 MiB reports about 64 MiB whether it runs first or after another
    that freed as much into the kept heap (the later one reported ~0 MiB: its memory came
    from the heap, not from the system)."""
    import time

    from ncsim.bench import timed

    def holds_64_mib():
        block = np.ones(2**23)
        time.sleep(0.05)  # the sampler looks every 2 ms
        return float(block[-1])

    first, _ = timed(holds_64_mib, 2)
    second, _ = timed(holds_64_mib, 2)
    for row in (first, second):
        assert 56 <= row["peak_mem_mb"] <= 80, row
