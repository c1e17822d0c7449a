"""The command-line contract (DESIGN.md section 4): option values and grids, one JSON object
on stdout, and bad input as exit status 2 with one line on stderr and no file written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from cli_helpers import error_line, invoke

import ncsim.cli as cli_module
import ncsim.flow as flow
from ncsim.errors import InputError
from ncsim.params import INTEGERS, NUMBERS, grid, parse_ints

TINY = ["-K", "3", "-n", "2", "-d", "4", "--t-end", "10", "--records", "3", "--no-progress",
        "--no-theory"]


def _runs(args: list[str]) -> list[dict]:
    result = invoke(["simulate", *TINY, *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["runs"]


def _no_simulation(monkeypatch) -> list[int]:
    """Replace the flow by a probe that records its calls and computes nothing."""
    calls: list[int] = []

    def probe(specs, **kwargs):
        calls.append(len(specs))
        raise AssertionError("the simulation should not start")

    monkeypatch.setattr(flow, "simulate", probe)
    return calls


# ------------------------------------------------------------------ option values and grids


def test_a_repeated_value_counts_once_for_every_numeric_option():
    """1e-3, 0.001 and a range of equal ends are one value: one run, as for integers."""
    assert NUMBERS.convert("1e-3,0.001,2e-3,1e-3", None, None) == [1e-3, 2e-3]
    assert INTEGERS.convert("3,3,4", None, None) == [3, 4]
    runs = _runs(["--lambda-w", "1e-3,1e-3,0.001", "--lambda-h", "1e-3..1e-3:4",
                  "--seed", "0,0"])
    assert len(runs) == 1
    assert (runs[0]["lambda_w"], runs[0]["lambda_h"], runs[0]["init_seed"]) == (1e-3, 1e-3, 0)


def test_theory_repeated_values_count_once():
    result = invoke(["theory", "threshold", "-K", "3", "-n", "2", "--lambda-w", "1e-3,0.001",
                     "--lambda-h", "2e-3,2e-3"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["results"]
    assert [(r["lambda_w"], r["lambda_h"]) for r in rows] == [(1e-3, 2e-3)]


def test_integer_values_are_read_exactly():
    """2^53 + 1 is not a float: an integer option keeps every digit (the number a run row
    shows is the number given)."""
    big = 2**53 + 1
    assert parse_ints(str(big)) == [big]
    assert parse_ints(f"{2**63 - 1},1e3") == [2**63 - 1, 1000]
    (run,) = _runs(["--max-steps", str(big)])
    assert run["solver_max_steps"] == big


@pytest.mark.parametrize("seed", ["1e20", str(2**63), str(-(2**63))])
def test_an_integer_beyond_int64_is_one_line(seed):
    """Seeds and sizes are stored as int64: a larger one is refused, not a traceback."""
    line = error_line(invoke(["simulate", *TINY, "--seed", seed]))
    assert line.startswith("Error: Invalid value for '--seed': ")
    assert "is out of range; give integers of magnitude below 2^63" in line
    with pytest.raises(InputError, match="out of range"):
        parse_ints(seed, "--seed")


def test_grid_rows_follow_the_documented_order():
    """Rows follow the option order of --help (-K before --lambda-w before --seed), the last
    varying fastest, each axis in the order its values were given; the help says so."""
    runs = _runs(["--seed", "1,0", "--lambda-w", "1e-2,1e-3", "-K", "3,2", "--t-end", "1"])
    got = [(r["classes"], r["lambda_w"], r["init_seed"]) for r in runs]
    assert got == [(k, lw, s) for k in (3, 2) for lw in (1e-2, 1e-3) for s in (1, 0)]
    text = " ".join(invoke(["simulate", "--help"]).stdout.split())
    assert ("in the order of this list: -K, -n, -d, --depth, --width, --leaky-slope, "
            "--lambda-w, --lambda-h, --lambda-b, --init-scale, --seed, --eta-h, --eta-w, "
            "--eta-b, --t-end, --dt, --rtol, --atol, --records, --t-first, --max-steps, --gtol, "
            "--onset-threshold, --onset-stay, the last varying fastest") in text
    assert "Exit status 0 whatever the runs' statuses" in text


def test_solver_and_onset_numbers_take_lists_and_ranges_too():
    """DESIGN.md section 4: every numeric option (--t-end, --dt, --rtol, --atol, --records,
    --onset-threshold, ...) takes a list or a range; the grid goes through every value, each
    row says its own, and the text table shows the varying ones."""
    runs = _runs(["--t-end", "4,8", "--records", "3", "--rtol", "1e-6..1e-8:2",
                  "--onset-threshold", "0.5,0.05", "--max-steps", "1e6"])
    got = [(r["solver_t_end"], r["solver_rtol"], r["onset_threshold"]) for r in runs]
    assert got == [(t, rtol, thr) for t in (4.0, 8.0) for rtol in (1e-6, 1e-8)
                   for thr in (0.5, 0.05)]
    assert all(r["solver_records"] == 3 and r["solver_max_steps"] == 10**6 for r in runs)
    assert all(r["t_final"] == r["solver_t_end"] for r in runs)
    runs = _runs(["--solver", "gd", "--dt", "0.5,0.25", "--t-end", "1", "--records", "3,4"])
    assert [(r["solver_dt"], r["solver_records"], r["steps"]) for r in runs] == [
        (0.5, 3, 2), (0.5, 4, 2), (0.25, 3, 4), (0.25, 4, 4)]
    result = invoke(["simulate", *TINY, "--t-end", "4,8", "--records", "3,4"])
    header = result.stdout.splitlines()[0].split()
    assert header[:3] == ["run_id", "solver_t_end", "solver_records"], result.stdout


def test_a_grid_above_the_limit_is_refused_before_it_is_built(monkeypatch):
    calls = _no_simulation(monkeypatch)
    monkeypatch.setattr(cli_module, "MAX_RUNS", 8)
    line = error_line(invoke(["simulate", *TINY, "--lambda-w", "1e-3..1e-2:3",
                              "--seed", "0,1,2"]))
    assert line == ("Error: the grid has 9 points (3 lambda_w x 3 seed); at most 8 in one "
                    "call: give fewer values or split the grid")
    assert calls == []
    with pytest.raises(InputError, match="the grid has 1000000 points"):
        grid({"a": range(1000), "b": range(1000)}, limit=100)


def test_theory_grid_above_the_limit_is_one_line():
    line = error_line(invoke(["theory", "threshold", "--lambda-w", "1e-4..1:1000",
                              "--lambda-h", "1e-4..1:1000"]))
    assert "the grid has 1000000 points (1000 lambda_w x 1000 lambda_h); at most 100000" in line
    line = error_line(invoke(["theory", "phase-diagram", "--xs", "1e-4..1:1000"]))
    assert "the phase diagram has 1000000 points (1000 x 1000); at most 100000" in line


# ------------------------------------------------------------------ JSON on stdout


def test_json_is_one_object_with_nan_as_null_and_inf_as_text():
    """A diverged run (NaN onset) and a vanishing theory point (onset never: inf) print one
    standard JSON object: no NaN or Infinity tokens, nothing else on stdout."""
    result = invoke(["simulate", "-K", "3", "-n", "2", "-d", "4", "--records", "3",
                     "--solver", "gd", "--dt", "50", "--t-end", "500", "--init-scale", "1",
                     "--no-progress", "--format", "json"])
    assert result.exit_code == 0, result.output
    (run,) = json.loads(result.stdout, parse_constant=pytest.fail)["runs"]
    assert run["status"] == "diverged" and run["onset_time"] is None
    result = invoke(["theory", "onset", "-K", "3", "--lambda-w", "1", "--lambda-h", "1"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout, parse_constant=pytest.fail)["results"]
    assert row["onset_regime"] == "vanishing"
    assert row["onset_time"] == "inf" and row["lead_time"] is None


# ------------------------------------------------------------------ bad input


def test_an_empty_out_is_refused_not_the_current_folder(tmp_path, monkeypatch):
    """--out "" (an unset shell variable) would write into the current folder: refused."""
    monkeypatch.chdir(tmp_path)
    calls = _no_simulation(monkeypatch)
    for args in (["simulate", *TINY], ["study", "run", "weight_decay", "--quick"],
                 ["validate", "train"], ["theory", "phase-diagram", "--xs", "1e-3"]):
        line = error_line(invoke([*args, "--out", ""]))
        assert line == ("Error: Invalid value for '--out': empty path; give a path ('.' is "
                        "the current folder)")
    assert calls == [] and list(tmp_path.iterdir()) == []


def test_simulate_out_named_like_a_table_is_refused(tmp_path, monkeypatch):
    """--out x.csv made a folder named x.csv full of Parquet tables: refused before computing,
    with the folder and the table format to give instead."""
    calls = _no_simulation(monkeypatch)
    line = error_line(invoke(["simulate", *TINY, "--out", str(tmp_path / "x.csv")]))
    assert line == (f"Error: --out {tmp_path / 'x.csv'} looks like a file name, but --out is a "
                    f"folder (runs, trajectories, spec.json and a figure go into it); give a "
                    f"folder, e.g. --out {tmp_path / 'x'} and --table-format csv")
    assert "e.g. --out" in error_line(invoke(["simulate", *TINY, "--out",
                                              str(tmp_path / "r.Parquet")]))
    assert calls == [] and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux's /proc")
def test_an_out_where_no_file_can_be_made_is_refused_before_computing(monkeypatch):
    """/proc accepts no new file, whatever its permission bits (and root's) say."""
    calls = _no_simulation(monkeypatch)
    line = error_line(invoke(["simulate", *TINY, "--out", "/proc/ncsim-out"]))
    assert line.startswith("Error: --out /proc/ncsim-out: /proc is not writable")
    assert calls == []


def test_an_out_file_below_a_file_is_one_line_naming_it(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    log = Path(__file__).parent / "data"  # not read: the --out check comes first
    for args in (["theory", "phase-diagram", "--xs", "1e-3", "--out", f"{afile}/x.png"],
                 ["validate", "analyze", str(log / "none.csv"), "--out", f"{afile}/x.csv"]):
        line = error_line(invoke(args))
        assert line == (f"Error: --out {afile}/{'x.png' if 'theory' in args else 'x.csv'}: "
                        f"{afile} is a file, not a folder; give a folder path")
    assert afile.read_text() == "x"


def test_running_out_of_memory_is_one_line(monkeypatch):
    """torch's CPU allocator failing (e.g. --records 1e9) is one line with the size, exit 2;
    another error is not disguised as one."""
    def oom(specs, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 136000000000 bytes. "
                           "Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(flow, "simulate", oom)
    line = error_line(invoke(["simulate", *TINY]))
    assert line == ("Error: not enough memory for this computation (one array of 136 GB); make "
                    "the grid, the number of records or the model smaller")

    def other(specs, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(flow, "simulate", other)
    result = invoke(["simulate", *TINY])
    assert result.exit_code == 1 and str(result.exception) == "a bug"
