"""The ``ncsim simulate`` command: grids, outputs, JSON and bad input."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner
from thread_helpers import blas_threads, torch_threads

from ncsim.cli import cli
from ncsim.params import parse_values

SMALL = ["simulate", "-K", "3", "-n", "2", "-d", "4", "--t-end", "300", "--records", "20"]


def _run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_parse_values():
    assert parse_values("0.5") == [0.5]
    assert parse_values("1,2, 3") == [1.0, 2.0, 3.0]
    values = parse_values("1e-4..1e-1:4")
    assert values == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])


def test_grid_json_has_one_row_per_run_with_status_and_onset():
    result = _run([*SMALL, "--lambda-w", "1e-3..5e-1:2", "--lambda-h", "1e-3,5e-1",
                   "--format", "json", "--no-progress"])
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)["runs"]
    assert len(runs) == 4
    for row in runs:
        assert {"status", "onset_time", "fn_at_onset", "fn_star_theory"} <= set(row)
    statuses = {(r["lambda_w"], r["lambda_h"]): r["status"] for r in runs}
    assert statuses[(1e-3, 1e-3)] == "ok"
    assert statuses[(0.5, 0.5)] == "vanishing"  # K sqrt(n lw lh) = 2.1 > 1
    # the vanishing run: no onset measured (null), an onset the theory predicts never ("inf")
    gone = next(r for r in runs if (r["lambda_w"], r["lambda_h"]) == (0.5, 0.5))
    assert gone["onset_time"] is None and gone["onset_time_theory"] == "inf"


def test_out_writes_tables_sidecar_and_figure(tmp_path):
    out = tmp_path / "res"
    result = _run([*SMALL, "--seed", "0,1", "--out", str(out), "--table-format", "csv"])
    assert result.exit_code == 0, result.output
    runs = pd.read_csv(out / "runs.csv")
    traj = pd.read_csv(out / "trajectories.csv")
    assert len(runs) == 2 and runs["run_id"].is_unique
    assert set(traj["run_id"]) == set(runs["run_id"])
    assert (out / "spec.json").exists() and (out / "trajectories.png").stat().st_size > 1000
    assert "status" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["-K", "1"], "classes K must be"),
    (["--lambda-w", "-1e-3"], "lambda_w must be"),
    (["--model", "deep", "--activation", "swish"], "swish"),
    (["--lambda-h", "1e-4..:3"], "malformed range"),
    (["--t-end", "0"], "t_end must be a finite number > 0"),
    (["-K", "10", "-d", "5", "--init", "etf"], "needs d"),
    (["--solver", "gd"], "needs a step dt"),
    (["--device", "tpu"], "unknown device"),
    (["--loss", "ce", "--reduction", "classes"], "reduction 'classes' needs"),
    (["--dtype", "float32", "--rtol", "1e-8"], "rtol 1e-08 is below what float32 resolves"),
    (["-K", "4", "-d", "2", "--reduction", "gram"], "reduction 'gram' needs d >= 3"),
])
def test_bad_input_exits_2_with_one_line_and_no_file(tmp_path, args, message):
    out = tmp_path / "never"
    result = CliRunner().invoke(cli, ["simulate", *args, "--out", str(out)])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()


def test_unavailable_cuda_device_is_one_line_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    result = CliRunner().invoke(cli, [*SMALL, "--device", "cuda", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "not available" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_stalled_runs_get_a_note_with_the_remedy():
    result = CliRunner().invoke(cli, ["simulate", "--model", "deep", "--depth", "3",
                                      "--activation", "relu", "--loss", "mse", "-K", "4", "-n",
                                      "5", "-d", "8", "--lambda-w", "1e-3", "--lambda-h", "1e-3",
                                      "--init-scale", "0.5", "--t-end", "2000", "--records",
                                      "20", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["runs"][0]["status"] == "stalled"
    assert "stalled" in result.stderr and "--solver rk4" in result.stderr


def test_threads_bound_torch_and_blas_during_the_simulation_only(monkeypatch):
    import torch

    import ncsim.flow

    seen = {}
    real = ncsim.flow.simulate

    def observing(specs, **kwargs):
        seen["torch"], seen["blas"] = torch.get_num_threads(), set(blas_threads().values())
        return real(specs, **kwargs)

    monkeypatch.setattr(ncsim.flow, "simulate", observing)
    # two threads before: the bound and the restoring both show
    with torch_threads(2, blas=True):
        result = _run([*SMALL, "--threads", "1", "--format", "json", "--no-progress"])
        assert result.exit_code == 0, result.output
        assert seen == {"torch": 1, "blas": {1}}
        assert torch.get_num_threads() == 2 and set(blas_threads().values()) == {2}


def test_no_theory_leaves_the_prediction_columns_out():
    args = [*SMALL, "--seed", "0,1", "--format", "json", "--no-progress"]
    with_theory = json.loads(_run(args).stdout)["runs"]
    without = json.loads(_run([*args, "--no-theory"]).stdout)["runs"]
    assert all("fn_star_theory" in r and "theory_regime" in r for r in with_theory)
    assert all(not any(k.endswith("_theory") or k == "theory_regime" for k in r)
               for r in without)
    for a, b in zip(with_theory, without):
        assert (a["run_id"], a["onset_time"], a["final_fn"]) == (
            b["run_id"], b["onset_time"], b["final_fn"])
    table = _run([*SMALL, "--no-theory", "--no-progress"])
    assert table.exit_code == 0 and "onset_time" in table.stdout


@pytest.mark.parametrize(("dtype", "rtol", "atol"), [("float64", 1e-8, 1e-10),
                                                     ("float32", 1e-5, 1e-7)])
def test_tolerances_default_to_the_dtype_s_usual_pair(dtype, rtol, atol):
    """Without --rtol / --atol, float64 runs at (1e-8, 1e-10) and float32 at (1e-5, 1e-7)
    (the default float64 rtol is below what float32 resolves); given ones are kept."""
    result = _run([*SMALL, "--dtype", dtype, "--format", "json", "--no-progress"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["runs"]
    assert (row["solver_rtol"], row["solver_atol"]) == (rtol, atol)
    assert row["status"] == "ok"
    result = _run([*SMALL, "--dtype", dtype, "--rtol", "2e-5", "--atol", "3e-7",
                   "--format", "json", "--no-progress"])
    (row,) = json.loads(result.stdout)["runs"]
    assert (row["solver_rtol"], row["solver_atol"]) == (2e-5, 3e-7)


TINY_INIT = ["simulate", "--loss", "ce", "-K", "4", "-n", "3", "-d", "8", "--lambda-w", "1e-3",
             "--lambda-h", "1e-3", "--init-scale", "1e-10", "--records", "30", "--no-theory",
             "--format", "json"]


def test_a_tiny_init_leaves_the_origin_saddle_with_the_default_gtol():
    """An init at scale 1e-10 next to the origin's saddle has |grad f| <= gtol at once, but
    the origin is a saddle the flow leaves: the run goes on and collapses with the very onset
    of a run that never tests for rest (--gtol 0), with no note on stderr."""
    default = CliRunner().invoke(cli, [*TINY_INIT, "--t-end", "2000"], catch_exceptions=False)
    followed = CliRunner().invoke(cli, [*TINY_INIT, "--t-end", "2000", "--gtol", "0"],
                                  catch_exceptions=False)
    assert "stopped at rest" not in default.stderr
    (row,) = json.loads(default.stdout)["runs"]
    (ref,) = json.loads(followed.stdout)["runs"]
    assert row["status"] == ref["status"] == "ok"
    assert row["onset_time"] == ref["onset_time"] and row["steps"] == ref["steps"]


def test_a_run_stopped_at_rest_without_collapsing_is_noted():
    """The same tiny init with t_end = 2: its unstable direction grows by less than e before
    t_end, so the run stops at rest after one step as not_collapsed, and the command says so
    on stderr with the way out (--gtol 0, with which the run goes on to t_end)."""
    stopped = CliRunner().invoke(cli, [*TINY_INIT, "--t-end", "2"], catch_exceptions=False)
    assert "1 run(s) stopped at rest before t_end without collapsing" in stopped.stderr
    assert "--gtol 0" in stopped.stderr
    (row,) = json.loads(stopped.stdout)["runs"]
    assert row["status"] == "not_collapsed" and row["steps"] == 1 and row["t_final"] < 2.0
    followed = CliRunner().invoke(cli, [*TINY_INIT, "--t-end", "2", "--gtol", "0"],
                                  catch_exceptions=False)
    assert "stopped at rest" not in followed.stderr
    assert json.loads(followed.stdout)["runs"][0]["t_final"] == 2.0


def test_a_collapsed_run_cut_by_max_steps_is_noted():
    """The tiny init collapses at t ~ 20 but with --max-steps 60 stops at t ~ 140 < t_end:
    status ok, stop max_steps, and a note on stderr that names the way to follow it to
    t_end; with enough steps there is no note."""
    cut = CliRunner().invoke(cli, [*TINY_INIT, "--t-end", "2000", "--max-steps", "60"],
                             catch_exceptions=False)
    assert "1 collapsed run(s) ran out of steps before t_end" in cut.stderr
    assert "--max-steps" in cut.stderr
    (row,) = json.loads(cut.stdout)["runs"]
    assert (row["status"], row["stop"]) == ("ok", "max_steps") and row["t_final"] < 2000.0
    full = CliRunner().invoke(cli, [*TINY_INIT, "--t-end", "2000"], catch_exceptions=False)
    assert "ran out of steps" not in full.stderr
    assert json.loads(full.stdout)["runs"][0]["stop"] == "t_end"
