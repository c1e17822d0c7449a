"""What the command line promises and what it then does: every default that the help of
``ncsim simulate`` states is the value a run gets, --out refuses the names of its own files,
a file the system refuses is one line naming it, the phase diagram keeps both decays, the heap
settings report whether they took effect, and the benchmark's rows (V1, W1, W2, W3) hold the
numbers they name (small inputs and fixed stand-ins; nothing is timed at its real size)."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from cli_helpers import error_line, invoke

import ncsim.flow as flow
from ncsim import bench as bench_module
from ncsim import heap
from ncsim.bench import W2_COLUMNS, _benchmarks
from ncsim.cli import _check_simulation_folder, build_specs, simulate
from ncsim.errors import InputError
from ncsim.theory.phase import classify

TINY = ["-K", "3", "-n", "2", "-d", "4", "--t-end", "5", "--records", "3", "--no-progress",
        "--no-theory"]


def _probe_flow(monkeypatch, error: BaseException | None = None) -> list[int]:
    """Replace the flow by a probe that records its calls and raises ``error`` (default: an
    AssertionError, for a simulation that must not start)."""
    calls: list[int] = []

    def probe(specs, **kwargs):
        calls.append(len(specs))
        raise error or AssertionError("the simulation should not start")

    monkeypatch.setattr(flow, "simulate", probe)
    return calls


# ------------------------------------------------------------------ simulate defaults


def _help_default(name: str) -> str:
    """The value a ``simulate`` option's help states in brackets at its end ("[0.1]")."""
    (param,) = [p for p in simulate.params if p.name == name]
    match = re.search(r"\[([^\]]+)\]\.?$", param.help or "")
    assert match is not None, f"{name}: no default in its help {param.help!r}"
    return match.group(1)


def _default_spec(*args: str):
    """The run spec ``ncsim simulate ARGS`` builds (the command line parsed, nothing run)."""
    ctx = simulate.make_context("simulate", list(args))
    (spec,) = build_specs(ctx.params)
    return spec


#: option -> where its value lands in the run spec
_SPEC_FIELDS = {
    "classes": lambda s: s.model.classes,
    "per_class": lambda s: s.model.per_class,
    "dim": lambda s: s.model.dim,
    "depth": lambda s: s.model.depth,
    "leaky_slope": lambda s: s.model.leaky_slope,
    "lambda_w": lambda s: s.reg.lambda_w,
    "lambda_h": lambda s: s.reg.lambda_h,
    "init_scale": lambda s: s.init.scale,
    "seed": lambda s: s.init.seed,
    "eta_h": lambda s: s.time_scale.eta_h,
    "eta_w": lambda s: s.time_scale.eta_w,
    "eta_b": lambda s: s.time_scale.eta_b,
    "t_end": lambda s: s.solver.t_end,
    "records": lambda s: s.solver.records,
    "max_steps": lambda s: s.solver.max_steps,
    "gtol": lambda s: s.solver.gtol,
    "onset_threshold": lambda s: s.onset.threshold,
    "onset_stay": lambda s: s.onset.stay,
}


@pytest.mark.parametrize("name", sorted(_SPEC_FIELDS))
def test_each_simulate_default_is_the_value_its_help_states(name):
    """An option left out takes the value in brackets at the end of its help ("Samples per
    class n [20]."): the spec built from an empty command line holds exactly that number."""
    stated = float(_help_default(name))
    assert float(_SPEC_FIELDS[name](_default_spec())) == stated


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_tolerance_defaults_follow_the_dtype_as_the_help_states(dtype):
    """--rtol and --atol state one default per dtype ("[1e-8 in float64, 1e-5 in float32]"):
    the spec of each dtype holds that pair, rtol the relative and atol the absolute one."""
    want = {}
    for option in ("rtol", "atol"):
        stated = dict(reversed(part.strip().split(" in "))
                      for part in _help_default(option).split(","))
        want[option] = float(stated[dtype])
    solver = _default_spec("--dtype", dtype).solver
    assert (solver.rtol, solver.atol) == (want["rtol"], want["atol"])
    assert solver.rtol > solver.atol  # the relative tolerance is the looser of the two


# ------------------------------------------------------------------ heap settings


def test_a_refused_trim_threshold_reports_no_effect(monkeypatch):
    """keep_freed_memory says True only when both settings took effect: a C library that
    takes the mmap threshold but refuses the trim threshold gives False (mallopt returns 0
    for a refused setting), and one that refuses both leaves kept() False."""
    def refuses_trim(param, value):
        return int(param != heap._M_TRIM_THRESHOLD)

    monkeypatch.setattr(heap, "_mallopt", lambda: refuses_trim)
    monkeypatch.setattr(heap, "_taken_mmap_threshold", 0)
    assert heap.keep_freed_memory() is False
    assert heap.mmap_threshold() == heap.MMAP_THRESHOLD_BYTES

    monkeypatch.setattr(heap, "_mallopt", lambda: lambda param, value: 0)
    monkeypatch.setattr(heap, "_taken_mmap_threshold", 0)
    assert heap.keep_freed_memory() is False
    assert not heap.kept() and heap.mmap_threshold() == 0


def test_a_refused_mmap_threshold_reports_no_effect(monkeypatch):
    """A library that takes the trim threshold but refuses every mmap threshold (the large
    one and the fallback) reports False and no threshold."""
    monkeypatch.setattr(heap, "_mallopt",
                        lambda: lambda param, value: int(param == heap._M_TRIM_THRESHOLD))
    monkeypatch.setattr(heap, "_taken_mmap_threshold", 0)
    assert heap.keep_freed_memory() is False
    assert heap.mmap_threshold() == 0


# ------------------------------------------------------------------ simulate output folder


@pytest.mark.parametrize("name", ["x.json", "x.png", "x.PNG", "x.parquet"])
def test_an_out_folder_named_like_its_files_is_refused(name, tmp_path, monkeypatch):
    """--out is a folder that receives spec.json, a .png figure and .parquet/.csv tables: a
    name with one of those extensions is refused (exit 2, one line that suggests the name
    without it) before anything runs or is made."""
    calls = _probe_flow(monkeypatch)
    out = tmp_path / name
    line = error_line(invoke(["simulate", *TINY, "--out", str(out)]))
    assert line.startswith(f"Error: --out {out} looks like a file name, but --out is a folder")
    assert f"e.g. --out {tmp_path / 'x'}" in line and "--table-format csv" not in line
    assert calls == [] and list(tmp_path.iterdir()) == []


def test_an_out_folder_with_a_dot_in_its_name_is_taken(tmp_path):
    """Only the names of its own files are refused: "run.v2" or "out.d" are folder names
    (the check passes and makes nothing yet), "x.json" is refused."""
    for name in ("run.v2", "out.d", "results"):
        _check_simulation_folder(tmp_path / name)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="looks like a file name"):
        _check_simulation_folder(tmp_path / "x.json")


# ------------------------------------------------------------------ errors of the system


def test_a_file_the_system_refuses_is_one_line_naming_it(monkeypatch):
    """An OSError that names its file (a permission refused while writing) exits 2 with one
    line naming the file and the reason; a missing file says "file not found"."""
    _probe_flow(monkeypatch, PermissionError(13, "Permission denied", "/results/runs.parquet"))
    line = error_line(invoke(["simulate", *TINY]))
    assert line == ("Error: cannot use /results/runs.parquet: Permission denied; check the path, "
                    "its permissions and the free space")
    _probe_flow(monkeypatch, FileNotFoundError(2, "No such file", "/data/x.idx"))
    assert error_line(invoke(["simulate", *TINY])) == "Error: file not found: /data/x.idx"


def test_an_os_error_without_a_file_is_not_disguised(monkeypatch):
    """An OSError that names no file is no input error: it is not turned into exit status 2
    (the caller sees the exception, exit status 1)."""
    _probe_flow(monkeypatch, OSError("socket closed"))
    result = invoke(["simulate", *TINY])
    assert result.exit_code == 1
    assert isinstance(result.exception, OSError) and str(result.exception) == "socket closed"


# ------------------------------------------------------------------ benchmark V1 row


def test_v1_row_keeps_the_worst_log_difference_and_the_peers_time_over_ncsims(monkeypatch):
    """V1 compares every repeat of each loop with the other's last repeat and keeps the
    worst difference of those comparisons (1e-11 of 3e-12, 1e-11, 2e-12, 5e-12; not the
    last), and its speed-up is the DataLoader loop's median over ncsim's (6 s / 2 s = 3, a
    ratio above 1 meaning ncsim is faster). Training, timing and the log comparison are
    replaced by fixed stand-ins."""
    import ncsim.validate.data as data_module
    import ncsim.validate.train as train_module

    workloads, _ = _benchmarks()  # puts the source tree's benchmarks package on the path
    import benchmarks.training_peer as training_peer
    case = workloads.v1("tiny")[0]
    monkeypatch.setattr(workloads, "v1", lambda size, device: [case])
    data = SimpleNamespace(x_train=np.zeros((30, 2)), x_test=np.zeros((10, 2)))
    monkeypatch.setattr(data_module, "load_dataset", lambda *a, **k: data)
    runs = iter(range(100))
    monkeypatch.setattr(train_module, "train", lambda config, data, seeds=None: SimpleNamespace(
        log=f"ncsim{next(runs)}", runs=[], config=config, model=None))
    monkeypatch.setattr(training_peer, "dataloader_training",
                        lambda config, data: f"peer{next(runs)}")
    medians = iter([2.0, 6.0])  # ncsim's loop first, then the DataLoader loop

    def fake_timed(fn, repeats, device, warmup=False, check=None):
        median = next(medians)
        for _ in range(repeats):
            out = fn()
            check(out)
        return {"median_s": median}, out

    monkeypatch.setattr(bench_module, "timed", fake_timed)
    differences = iter([3e-12, 1e-11, 2e-12, 5e-12])
    compared = []

    def fake_check(case, logs, peer_logs, row, peer_mod, exact):
        compared.append((logs, peer_logs, exact))
        row["max_rel_diff"] = next(differences)

    monkeypatch.setattr(bench_module, "_check_training", fake_check)
    monkeypatch.setattr(bench_module, "_tracking_cost", lambda *a, **k: {})
    (row,) = bench_module.bench_v1("tiny", 2, "cpu", lambda m: None)
    assert row["max_rel_diff"] == 1e-11
    assert row["speedup"] == 3.0
    assert row["ncsim"]["median_s"] == 2.0 and row["dataloader"]["median_s"] == 6.0
    # each of ncsim's two repeats against the peer's last, then the peer's two against
    # ncsim's last (exactly, on the CPU)
    assert compared == [(["ncsim0"], ["peer3"], True), (["ncsim1"], ["peer3"], True),
                        (["ncsim1"], ["peer2"], True), (["ncsim1"], ["peer3"], True)]


# ------------------------------------------------------------------ theory


def test_phase_diagram_points_use_both_given_decays():
    """Axes K and n leave the decays to --lambda-w and --lambda-h: each point equals
    classify() with lambda_w = 1e-3 and lambda_h = 4e-2 as given (not one decay for both),
    y in the outer loop and x fastest."""
    res = invoke(["theory", "phase-diagram", "--x", "K", "--xs", "3,4", "--y", "n", "--ys",
                  "2,3", "--lambda-w", "1e-3", "--lambda-h", "4e-2", "-d", "8", "--format",
                  "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["results"]
    assert [(r["K"], r["n"]) for r in rows] == [(3, 2), (4, 2), (3, 3), (4, 3)]
    for r in rows:
        want = classify(loss="ce", bias="none", K=r["K"], n=r["n"], d=8, depth=1,
                        lambda_w=1e-3, lambda_h=4e-2, lambda_b=0.0, init_scale=0.1)
        assert r["fn_star"] == want["fn_star"] and r["phase"] == want["phase"]
    swapped = classify(loss="ce", bias="none", K=3, n=2, d=8, depth=1, lambda_w=1e-3,
                       lambda_h=1e-3, lambda_b=0.0, init_scale=0.1)
    assert rows[0]["fn_star"] != swapped["fn_star"]  # the decay of H matters to fn*


# ------------------------------------------------------------------ validate analyze


def _paper_log(path, epochs: list[float]) -> None:
    """A log in the paper's schema at the given epochs: phase 1 at the first two, phase 2 at
    the other three; nc1 falls 0.5, 0.3, 0.1, 1e-3, 5e-4 (below 0.01 at the fourth)."""
    pd.DataFrame({"epoch": epochs, "phase": [1, 1, 2, 2, 2],
                  "train": [0.9, 0.95, 1.0, 1.0, 1.0], "test": [0.8, 0.85, 0.9, 0.9, 0.9],
                  "nc1": [0.5, 0.3, 0.1, 1e-3, 5e-4], "nc2": [0.5, 0.4, 0.2, 0.04, 0.005],
                  "nc3": [0.5, 0.4, 0.3, 0.2, 0.1],
                  "feat_norm": [1.0, 1.5, 2.0, 3.0, 3.5]}).to_csv(path, index=False)


@pytest.mark.parametrize(("epochs", "onset", "printed"), [
    ([10.0, 20.0, 30.0, 40.0, 50.0], 40, " 40 "),
    ([1e19, 2e19, 3e19, 4e19, 5e19], 4e19, " 4e+19 "),
])
def test_analyze_prints_whole_onset_epochs_as_integers_while_they_fit(tmp_path, epochs, onset,
                                                                     printed):
    """A whole onset epoch is printed as an integer (40, not 40.0); one beyond the integers a
    float holds exactly (4e19 > 2^53, and beyond int64 too) stays a float, in json and in
    the table, instead of failing the conversion."""
    log = tmp_path / "baseline_s0.csv"
    _paper_log(log, epochs)
    result = invoke(["validate", "analyze", str(log), "--format", "json"])
    assert result.exit_code == 0, result.output
    (run,) = json.loads(result.stdout)["runs"]
    assert run["onset_epoch"] == onset and type(run["onset_epoch"]) is type(onset)
    table = invoke(["validate", "analyze", str(log)])
    assert table.exit_code == 0, table.output
    row = next(line for line in table.stdout.splitlines() if line.startswith("baseline_s0"))
    assert printed in f" {row} "


# ------------------------------------------------------------------ benchmark W2 forms


def _forms_result(last_fn: float) -> SimpleNamespace:
    """A simulate result of three records whose columns are 1, 2, 4 (fn ends at last_fn)."""
    table = pd.DataFrame({"run_id": "r", "time": [0.0, 1.0, 2.0],
                          **{col: [1.0, 2.0, 4.0] for col in W2_COLUMNS}})
    table["fn"] = [1.0, 2.0, last_fn]
    return SimpleNamespace(trajectories=table, runs=pd.DataFrame({"steps": [3]}), timings={})


def _compare(monkeypatch, fast: list[float], plain: list[float], tol: float) -> dict:
    """_compare_forms on repeats whose final fn are ``fast`` (reduced form) and ``plain``
    (parameter form), with the workload's tolerance ``tol``."""
    repeats = iter([[_forms_result(v) for v in fast], [_forms_result(v) for v in plain]])

    def fake_timed(fn, n, device, check=None):
        results = next(repeats)
        for res in results:
            check(res)
        return {"median_s": 1.0}, results[-1]

    monkeypatch.setattr(bench_module, "timed", fake_timed)
    workload = SimpleNamespace(specs=[], fn_tol=tol)
    return bench_module._compare_forms(lambda form: workload, ("gram", "none"),
                                       {"workload": "W2", "loss": "mse", "d": 256}, 2, "cpu",
                                       lambda message: None)


def test_w2_compares_every_repeat_of_the_parameter_form_too(monkeypatch):
    """The reduced form's repeats agree; the parameter form's first repeat ends at fn 5, not
    4: that repeat against the reduced form's last differs by |4 - 5| / 5 = 0.2 (relative to
    the second table's largest value), which fails a 1e-9 tolerance."""
    with pytest.raises(AssertionError, match=r"gram and d-space trajectories differ by 2\.00e-01"):
        _compare(monkeypatch, fast=[4.0, 4.0], plain=[5.0, 4.0], tol=1e-9)


def test_w2_difference_equal_to_the_tolerance_passes(monkeypatch):
    """The tolerance is the largest difference allowed (as in the fn(T) checks, err <= tol):
    a difference of exactly 0.2 passes a tolerance of 0.2 and is the row's max_rel_diff; the
    reduced form's outlying repeat (fn 5 against the other's 4) counts as 1/4 = 0.25 when
    it is the first table, above 0.2."""
    row = _compare(monkeypatch, fast=[4.0, 4.0], plain=[5.0, 4.0], tol=0.2)
    assert row["max_rel_diff"] == 0.2
    with pytest.raises(AssertionError, match=r"differ by 2\.50e-01 > 2e-01"):
        _compare(monkeypatch, fast=[5.0, 4.0], plain=[4.0, 4.0], tol=0.2)


# ------------------------------------------------------------------ benchmark W1 and W3 rows


def test_w1_rows_count_steps_and_evaluations_over_every_run(monkeypatch):
    """W1's ncsim row sums the steps of its 4 runs (5 + 9 + 7 + 3 = 24), keeps the largest
    (9) and counts the runs that ended before T = 50 (one, at t = 20); a peer's row sums its
    right-hand-side evaluations (10 + 20 + 30 + 40 = 100); the entry records the peers'
    repeats (--peer-repeats, else --repeats). Reference, flow and peer are fixed stand-ins
    that agree exactly (fn error 0)."""
    _, peers = _benchmarks()
    ref = np.array([0.1, 0.2, 0.3, 0.4])
    monkeypatch.setattr(bench_module, "_w1_reference",
                        lambda specs, device, log, loop_max: (ref.copy(), "fixed"))
    monkeypatch.setattr(bench_module, "_simulate", lambda specs: SimpleNamespace(
        runs=pd.DataFrame({"final_fn": ref, "steps": [5, 9, 7, 3],
                           "t_final": [50.0, 50.0, 20.0, 50.0]}),
        timings={"integrate_s": 0.0}))
    monkeypatch.setattr(peers, "PEERS", {"scipy_dop853_loop": lambda problem, **tol: {
        "fn": ref.copy(), "nfev": np.array([10, 20, 30, 40])}})
    entry = bench_module.bench_w1("tiny", 2, "cpu", True, lambda m: None, peer_repeats=3)
    ours = entry["solvers"]["ncsim_dopri5"]
    assert (ours["steps_total"], ours["steps_max"], ours["stopped_before_t_end"]) == (24, 9, 1)
    assert ours["fn_error"] == 0.0 and len(ours["times_s"]) == 2
    peer = entry["solvers"]["scipy_dop853_loop"]
    assert peer["nfev_total"] == 100 and len(peer["times_s"]) == 3
    assert entry["peer_repeats"] == 3 and entry["params"]["grid"] == 2
    default = bench_module.bench_w1("tiny", 2, "cpu", True, lambda m: None)
    assert default["peer_repeats"] == 2
    assert len(default["solvers"]["scipy_dop853_loop"]["times_s"]) == 2


def test_w3_state_size_is_w_and_h_of_every_run_in_the_rows_dtype(monkeypatch):
    """W3 tiny integrates R = 4 runs of W (K x d = 10 x 64) and H (d x N = 64 x 100): 7040
    numbers a run, 28160 in all, 4 bytes each in float32 and 8 in float64, reported in MiB."""
    monkeypatch.setattr(bench_module, "timed",
                        lambda fn, repeats, device: ({"median_s": 1e-3, "peak_mem_mb": 0.0},
                                                     None))
    rows = bench_module.bench_w3("tiny", 1, "cpu", lambda message: None)
    numbers = 4 * (10 * 64 + 64 * 100)
    assert {row["dtype"]: row["state_mb"] for row in rows} == {
        "float32": numbers * 4 / 2**20, "float64": numbers * 8 / 2**20}


# ----------------------------------------------------------------------------- ranges
@pytest.mark.parametrize("args", [
    ["simulate", "--lambda-w", "1e-4..1:100000000000000000000", "--no-theory"],
    ["simulate", "--lambda-w", "1e-4..1:1000001", "--no-theory"],
    ["theory", "threshold", "-K", "2..3:100000000000000000000"],
])
def test_a_range_with_too_many_values_is_one_line_before_any_allocation(args):
    """A count above 1,000,000 (the most runs of a grid) is refused by the parser, as one
    line naming the option, instead of numpy failing (or allocating) on the value list."""
    line = error_line(invoke(args))
    assert "count >= 1 (at most 1000000)" in line
    assert args[-2] in line or args[-1] in line or "-K" in line


def test_a_range_of_the_largest_count_is_parsed():
    from ncsim.params import MAX_RANGE_COUNT, parse_values

    values = parse_values(f"1e-4..1:{MAX_RANGE_COUNT}", "--x")
    assert len(values) == MAX_RANGE_COUNT
    assert values[0] == pytest.approx(1e-4, rel=1e-15) and values[-1] == pytest.approx(1.0)


@pytest.mark.parametrize("text", ["1e-3...1e-1:3", "5...6:2", "1e-3....1e-1:3"])
def test_a_range_written_with_three_dots_is_malformed(text):
    """'1e-3...1e-1:3' is a typo for 1e-3..1e-1:3, not the range 1e-3 .. .1e-1 (= 0.01):
    it is refused, naming the form to write."""
    from ncsim.params import parse_values

    with pytest.raises(InputError, match=r"malformed range .*; write lo\.\.hi:count"):
        parse_values(text, "--lambda-w")


def test_a_study_run_without_keys_takes_simulates_defaults_but_the_solver_tolerances():
    """run_spec({}) (a study's simulated run that sets nothing) equals the spec `ncsim
    simulate` builds without options, except rtol 1e-6, atol 1e-9 and 100 records (simulate:
    1e-8, 1e-10, 200), as README.md and run_spec's docstring state."""
    import dataclasses

    from ncsim.study.spec import run_spec

    study, cli = run_spec({}), _default_spec()
    assert (study.solver.rtol, study.solver.atol, study.solver.records) == (1e-6, 1e-9, 100)
    assert (cli.solver.rtol, cli.solver.atol, cli.solver.records) == (1e-8, 1e-10, 200)
    same_solver = dataclasses.replace(study.solver, rtol=1e-8, atol=1e-10, records=200)
    assert dataclasses.replace(study, solver=same_solver) == cli


def test_phase_diagram_says_where_the_y_values_came_from():
    """--x depth --y K --xs 1,2 without --ys: K takes 1 and 2 from --xs and K = 1 is refused;
    the one-line error says the K values are those of --xs. With --ys given it does not."""
    line = error_line(invoke(["theory", "phase-diagram", "--x", "depth", "--y", "K",
                              "--xs", "1,2"]))
    assert "classes K must be an integer >= 2, got 1" in line
    assert line.endswith("(--ys was not given, so the K values are those of --xs)")
    line = error_line(invoke(["theory", "phase-diagram", "--x", "depth", "--y", "K",
                              "--xs", "1,2", "--ys", "1"]))
    assert "--ys was not given" not in line
