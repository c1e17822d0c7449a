"""Probe of ``ncsim simulate`` (ncsim/cli.py): defaults that reach the spec, grid order,
class counts, per-option fields, output folder names, the printed table and the group's exits."""

from __future__ import annotations

import itertools
import json
import math
import sys

import pandas as pd
import pytest
from click.testing import CliRunner

import ncsim.cli as cli_module
from ncsim import flow
from ncsim.cli import cli
from ncsim.spec import (
    InitSpec,
    ModelSpec,
    OnsetSpec,
    Regularization,
    RunSpec,
    SolverSpec,
    TimeScale,
)

TINY = ["simulate", "-K", "3", "-n", "2", "-d", "4", "--t-end", "5", "--records", "3"]


def _invoke(args):
    return CliRunner().invoke(cli, args)


def _rows(args):
    """The JSON rows of ``ncsim ARGS --format json --no-theory`` (exit status 0)."""
    result = _invoke([*args, "--format", "json", "--no-theory", "--no-progress"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["runs"]


def _error(args):
    """The one ``Error: ...`` line of a refused call (status 2, nothing on stdout)."""
    result = _invoke(args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_defaults_reach_the_spec_as_the_help_states():
    """Without -K/-n/-d/--depth/decays/init/eta the run is K=10, n=20, d=32, L=1, decays 5e-4,
    init 0.1 seed 0, eta 1: the same run (id and numbers) as the library's explicit spec."""
    (row,) = _rows(["simulate", "--t-end", "1", "--records", "2"])
    spec = RunSpec(
        model=ModelSpec(kind="ufm", loss="ce", bias="none", classes=10, per_class=20, dim=32,
                        depth=1),
        reg=Regularization(lambda_w=5e-4, lambda_h=5e-4, lambda_b=0.0),
        init=InitSpec(kind="gaussian", scale=0.1, seed=0),
        time_scale=TimeScale(eta_h=1.0, eta_w=1.0, eta_b=1.0),
        solver=SolverSpec(t_end=1.0, records=2, rtol=1e-8, atol=1e-10),
        onset=OnsetSpec())
    (want,) = flow.simulate([spec], theory=False).runs.to_dict(orient="records")
    assert (row["classes"], row["per_class"], row["dim"], row["depth"]) == (10, 20, 32, 1)
    assert (row["lambda_w"], row["lambda_h"], row["lambda_b"]) == (5e-4, 5e-4, 0.0)
    assert (row["init_scale"], row["init_seed"]) == (0.1, 0)
    assert row["run_id"] == want["run_id"]
    for key in ("final_fn", "final_nc1_trace", "steps", "t_final"):
        assert row[key] == want[key], key


def test_written_runs_table_equals_the_library_run_of_the_same_spec(tmp_path):
    """--out with csv writes the row flow.simulate gives for the spec built from the options
    (theory columns included), each shared column equal."""
    out = tmp_path / "res"
    result = _invoke([*TINY, "--lambda-w", "1e-2", "--init-scale", "0.3", "--seed", "2",
                      "--out", str(out), "--table-format", "csv", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert not (out / "runs.parquet").exists()
    got = pd.read_csv(out / "runs.csv").iloc[0]
    spec = RunSpec(
        model=ModelSpec(classes=3, per_class=2, dim=4),
        reg=Regularization(lambda_w=1e-2, lambda_h=5e-4),
        init=InitSpec(scale=0.3, seed=2),
        solver=SolverSpec(t_end=5.0, records=3))
    want = flow.simulate([spec]).runs.iloc[0]
    for key in ("run_id", "status", "steps", "final_fn", "final_nc1_trace", "fn_star_theory",
                "onset_time_theory", "lambda_w", "init_scale", "init_seed"):
        a, b = got[key], want[key]
        if isinstance(b, float):
            assert a == pytest.approx(b, rel=1e-12, nan_ok=True), key
        else:
            assert a == b, key


def test_grid_order_follows_the_option_list_with_the_last_fastest():
    """-K, -n, --init-scale, --seed, --onset-threshold, --onset-stay vary in that order, the
    last fastest: 2^6 runs in itertools.product order."""
    values = {"classes": (2, 3), "per_class": (2, 3), "init_scale": (0.1, 0.2),
              "init_seed": (0, 1), "onset_threshold": (0.01, 0.02), "onset_stay": (1, 2)}
    rows = _rows(["simulate", "-K", "2,3", "-n", "2,3", "-d", "4", "--t-end", "1",
                  "--records", "2", "--onset-stay", "1,2", "--onset-threshold", "0.01,0.02",
                  "--seed", "0,1", "--init-scale", "0.1,0.2"])
    got = [tuple(row[k] for k in values) for row in rows]
    assert got == list(itertools.product(*values.values()))


def test_class_counts_with_k_equal_to_their_number_are_taken():
    """--class-counts sets K and the counts; -K equal to their number is allowed; no -K needed."""
    for extra in ([], ["-K", "3"]):
        (row,) = _rows(["simulate", "--class-counts", "2,3,4", "-d", "4", "--t-end", "1",
                        "--records", "2", *extra])
        assert row["classes"] == 3
        assert row["per_class"] == "2,3,4"


def test_class_counts_beside_k_and_n_is_the_exact_line():
    """-K 4 and -n 2 beside three counts: one line naming both flags and K = 3."""
    line = _error(["simulate", "--class-counts", "2,3,4", "-K", "4", "-n", "2"])
    assert line == ("Error: --class-counts sets K = 3 and the samples per class, so -K and -n "
                    "cannot be given beside it (-K only as 3); drop -K and -n or "
                    "--class-counts")


def test_deep_head_options_reach_the_model():
    """--model deep --activation leaky_relu --leaky-slope --width --depth set those fields."""
    (row,) = _rows([*TINY, "--model", "deep", "--activation", "leaky_relu", "--leaky-slope",
                    "0.2", "--width", "5", "--depth", "2"])
    assert (row["kind"], row["activation"], row["leaky_slope"], row["width"], row["depth"]) == (
        "deep", "leaky_relu", 0.2, 5, 2)


def test_solver_and_onset_options_reach_their_fields():
    """--rtol, --atol, --reduction, --t-first, --max-steps, --gtol, --onset-metric,
    --onset-threshold and --init each set their own field of the run."""
    (row,) = _rows([*TINY, "--rtol", "1e-6", "--atol", "1e-9", "--reduction", "none",
                    "--t-first", "0.5", "--max-steps", "5000", "--gtol", "0",
                    "--onset-metric", "nc1", "--onset-threshold", "0.05", "--init",
                    "spectral"])
    assert (row["solver_rtol"], row["solver_atol"]) == (1e-6, 1e-9)
    assert row["solver_reduction"] == "none"
    assert (row["solver_t_first"], row["solver_max_steps"], row["solver_gtol"]) == (
        0.5, 5000, 0.0)
    assert (row["onset_metric"], row["onset_threshold"]) == ("nc1", 0.05)
    assert row["init_kind"] == "spectral"


def test_cuda_graphs_on_the_cpu_is_refused_with_one_line():
    """--cuda-graphs reaches the solver spec: on the CPU it is the spec's one-line refusal."""
    line = _error([*TINY, "--cuda-graphs"])
    assert line == ("Error: cuda_graphs needs an adaptive solver (dopri5, tsit5) on a CUDA "
                    "device, got 'dopri5' on 'cpu': use device='cuda' (--device cuda) or drop "
                    "cuda_graphs (--cuda-graphs)")


@pytest.mark.parametrize(("name", "stem", "hint"), [
    ("fig.png", "fig", ""),
    ("R.CSV", "R", " and --table-format csv"),
    ("t.Parquet", "t", ""),
])
def test_out_named_like_a_file_is_refused_whatever_the_case(tmp_path, name, stem, hint):
    """--out x.png / X.CSV (any case) is refused with the folder hint (csv: and the format)."""
    out = tmp_path / name
    line = _error([*TINY, "--out", str(out)])
    assert line == (f"Error: --out {out} looks like a file name, but --out is a folder (runs, "
                    "trajectories, spec.json and a figure go into it); give a folder, e.g. "
                    f"--out {tmp_path / stem}{hint}")
    assert not out.exists()


def test_printed_table_has_a_header_the_varying_axis_and_one_line_per_run():
    """The text table: header with run_id, the varying axis (init_seed) and the results, then
    one line per run in grid order, no wrapping."""
    result = _invoke([*TINY, "--seed", "0,1,2", "--no-progress"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    assert lines[0].split() == ["run_id", "init_seed", "status", "onset_time", "fn_at_onset",
                                "fn_star_theory", "onset_time_theory", "final_fn",
                                "final_nc1_trace", "steps"]
    assert [line.split()[1] for line in lines[1:]] == ["0", "1", "2"]


def test_printed_table_shows_every_run_of_a_grid_of_sixty():
    """A grid of 60 runs prints 60 rows (no '...' elision)."""
    result = _invoke(["simulate", "-K", "2", "-n", "2", "-d", "3", "--t-end", "1",
                      "--records", "2", "--seed", ",".join(map(str, range(60))), "--no-theory",
                      "--no-progress"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 61
    assert "..." not in result.stdout
    assert [int(line.split()[1]) for line in lines[1:]] == list(range(60))


def test_an_abort_exits_130_with_one_line(monkeypatch):
    """Ctrl-C at a click prompt (Abort) ends the process with status 130 and 'Aborted.'."""
    def aborting(*args, **kwargs):
        raise cli_module.click.exceptions.Abort

    monkeypatch.setattr(cli_module, "build_specs", aborting)
    result = _invoke(TINY)
    assert result.exit_code == 130
    assert result.stderr.strip() == "Aborted."


def test_a_command_s_exit_code_passes_through_the_group(monkeypatch):
    """A command that ends by ctx.exit(3) makes the ncsim process exit with status 3."""
    @cli_module.click.command()
    @cli_module.click.pass_context
    def exiter(ctx):
        ctx.exit(3)

    monkeypatch.setitem(cli.commands, "cli3-exiter", exiter)
    assert _invoke(["cli3-exiter"]).exit_code == 3


def test_a_subcommand_missing_only_itself_is_left_out_but_a_missing_dependency_raises(
        tmp_path, monkeypatch):
    """A lazily loaded sub-command whose own module is absent is dropped from the group; one
    whose module imports a missing dependency raises ModuleNotFoundError."""
    (tmp_path / "cli3_probe_broken.py").write_text("import cli3_probe_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli_module.SUBCOMMANDS, "ghost", "cli3_probe_absent_module:cmd")
    monkeypatch.setitem(cli_module.SUBCOMMANDS, "broken", "cli3_probe_broken:cmd")
    assert cli_module.NcsimGroup._load("ghost") is None
    with pytest.raises(ModuleNotFoundError):
        cli_module.NcsimGroup._load("broken")
    sys.modules.pop("cli3_probe_broken", None)


def test_json_run_without_onset_has_null_not_nan():
    """json: a run without onset gives null (never NaN), which json.loads accepts strictly."""
    result = _invoke([*TINY, "--format", "json", "--no-progress"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(c))["runs"]
    assert row["onset_time"] is None or math.isfinite(row["onset_time"])
