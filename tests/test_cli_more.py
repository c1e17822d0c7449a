"""Command line edges: ``python -m ncsim``, lazy sub-commands, one-line errors, interruption,
option values (lists, ranges, class counts) and the study runner's progress bar."""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import click
import pytest
from cli_helpers import error_line as _error_line
from cli_helpers import interrupt_chunk
from cli_helpers import invoke as _invoke
from click.testing import CliRunner
from tiny_study import write_tiny_study

import ncsim.cli as cli_module
from ncsim.cli import cli as ncsim_group
from ncsim.params import COUNTS, INTEGERS, NUMBERS, parse_ints, parse_values
from ncsim.study.runner import run_study
from ncsim.study.spec import load_study

TINY = ["-d", "4", "--t-end", "10", "--records", "3", "--no-progress", "--no-theory"]

PROBE = '''
import click

from ncsim.errors import InputError


@click.command()
def raw():
    """Raise an InputError without the handle_errors wrapper."""
    raise InputError("the probe value is bad;\\n   give a good one")
'''



def _python_m_ncsim(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ncsim", *args], capture_output=True,
                          text=True, timeout=60, env=env)


# ------------------------------------------------------------------ python -m ncsim


def test_python_m_ncsim_help_lists_every_command():
    """``python -m ncsim --help`` exits 0 and lists every command with its summary."""
    result = _python_m_ncsim("--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("Usage: python -m ncsim [OPTIONS] COMMAND [ARGS]...")
    listed = re.findall(r"^  ([a-z]+)  ", result.stdout.split("Commands:")[1], re.M)
    assert listed == ["bench", "simulate", "study", "theory", "validate"]
    assert "Simulate the onset of neural collapse" in result.stdout


@pytest.mark.parametrize("group", [[], ["study"], ["theory"], ["validate"]])
def test_a_group_without_a_command_prints_its_help(group):
    """``ncsim``, ``ncsim study``, ... without a command print the group's help as --help
    does (exit 0, stdout, one option per line), not a one-line error. (In process: the
    tests above start ``python -m ncsim`` itself.)"""
    runner = CliRunner()
    bare = runner.invoke(ncsim_group, group, prog_name="python -m ncsim")
    helped = runner.invoke(ncsim_group, [*group, "--help"], prog_name="python -m ncsim")
    assert bare.exit_code == 0 and bare.stderr == "", bare.output
    assert bare.stdout == helped.stdout
    assert bare.stdout.startswith("Usage: python -m ncsim")
    assert "\nOptions:\n" in bare.stdout and "\nCommands:\n" in bare.stdout


def test_python_m_ncsim_unknown_command_exits_2_with_one_line():
    """``python -m ncsim`` passes the exit status on: a misspelt command is status 2 and one
    ``Error:`` line on stderr naming the closest command, nothing on stdout."""
    result = _python_m_ncsim("simulat")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == "Error: No such command 'simulat'. Did you mean 'simulate'?\n"


def test_main_module_in_process_prints_version_and_exits_0(monkeypatch, capsys):
    """Running ``ncsim.__main__`` as the main module calls the entry point: ``--version``
    prints the program and package version and exits with status 0."""
    monkeypatch.setattr(sys, "argv", ["ncsim", "--version"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("ncsim", run_name="__main__")
    assert exit_info.value.code == 0
    captured = capsys.readouterr()
    # click names the program after how Python was started (here: from pytest)
    assert captured.out.endswith(f"ncsim, version {version('ncsim')}\n")
    assert captured.out.count("\n") == 1
    assert captured.err == ""


# ------------------------------------------------------------------ lazy sub-commands


@pytest.fixture
def probes(tmp_path, monkeypatch):
    """Probe sub-commands: one that loads and one whose module does not exist; the module of
    a third (added by the test that uses it) imports a package that is not installed."""
    (tmp_path / "ncsim_probe_cmds.py").write_text(PROBE)
    (tmp_path / "ncsim_probe_broken.py").write_text("import ncsim_probe_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    table = {"raw": "ncsim_probe_cmds:raw", "ghost": "ncsim_probe_absent:ghost"}
    monkeypatch.setattr(cli_module, "SUBCOMMANDS", table)
    return table


def test_help_lists_loadable_subcommands_and_hides_absent_modules(probes):
    """``--help`` lists the built-in and the loadable lazy commands, sorted; a sub-command
    whose own module is not installed is left out instead of failing the help."""
    result = _invoke(["--help"])
    assert result.exit_code == 0, result.output
    commands = result.stdout.split("Commands:")[1].split()
    assert commands[0] == "raw" and "simulate" in commands
    assert "ghost" not in result.stdout


@pytest.mark.parametrize("name", ["ghost", "nosuch"])
def test_absent_or_unknown_command_is_one_line_error(probes, name):
    """A command whose module is absent, like an unknown name, is 'No such command'."""
    assert _error_line(_invoke([name])) == f"Error: No such command '{name}'."


def test_subcommand_with_missing_dependency_is_not_hidden(probes):
    """A sub-command module that exists but imports a missing package raises the import
    error (naming that package) instead of passing for an unknown command."""
    probes["broken"] = "ncsim_probe_broken:cmd"
    result = _invoke(["broken"])
    assert isinstance(result.exception, ModuleNotFoundError)
    assert result.exception.name == "ncsim_probe_missing_dependency"
    assert "No such command" not in result.output


def test_input_error_outside_a_command_wrapper_is_one_line(probes):
    """An InputError that reaches the group is exit status 2 and one line (its whitespace
    runs collapsed), no traceback."""
    assert _error_line(_invoke(["raw"])) == "Error: the probe value is bad; give a good one"


# ------------------------------------------------------------------ numeric option values


@pytest.mark.parametrize(("args", "expected"), [
    (["--lambda-w", "inf"], ["Invalid value for '--lambda-w'", "'inf' is not a finite number"]),
    (["--lambda-h", "nan"], ["Invalid value for '--lambda-h'", "'nan' is not a finite number"]),
    (["--init-scale", "1e-2..inf:3"], ["'--init-scale'", "'inf' is not a finite number"]),
    (["--lambda-w", "1e-3,,1e-2"], ["'--lambda-w'", "empty value in '1e-3,,1e-2'"]),
    (["--lambda-w", "1e-3,"], ["'--lambda-w'", "empty value in '1e-3,'"]),
    (["--eta-h", ""], ["'--eta-h'", "empty value in ''"]),
    (["-K", "2.5"], ["Invalid value for '-K' / '--classes'", "2.5 is not an integer"]),
    (["--seed", "0,1.5"], ["Invalid value for '--seed'", "1.5 is not an integer"]),
    (["--lambda-w", "abc"], ["'abc' is not a number; give a value, a comma list or a log "
                             "range like 1e-4..1e-1:16"]),
    (["--lambda-w", "0..1e-2:3"], ["log range '0..1e-2:3' needs lo > 0, hi > 0 and count >= 1"]),
    (["--lambda-w", "1e-3..1e-2:0"], ["'1e-3..1e-2:0' needs lo > 0, hi > 0 and count >= 1"]),
])
def test_bad_numeric_value_is_one_line_naming_option_and_value(tmp_path, args, expected):
    """A bad value of a numeric option exits 2 with one line naming the option, the value and
    what is wrong, before any file is written."""
    out = tmp_path / "never"
    line = _error_line(_invoke(["simulate", *args, "--out", str(out)]))
    for text in expected:
        assert text in line
    assert line.count(args[0]) == 1  # the option is named once
    assert not out.exists()


def test_theory_non_finite_value_is_one_line():
    """The theory commands parse the same values: 'inf' is one line naming the option."""
    line = _error_line(_invoke(["theory", "equilibrium", "--lambda-w", "inf"]))
    assert line == "Error: --lambda-w: 'inf' is not a finite number; give a finite value"


def test_parse_values_takes_numbers_as_they_are():
    """A number (not text) is one value; integers parse the same way."""
    assert parse_values(3) == [3.0] and isinstance(parse_values(3)[0], float)
    assert parse_values(2.5e-3) == [2.5e-3]
    assert parse_ints(4) == [4]
    assert parse_ints("2..5:3") == [2, 3, 5]


def test_number_list_type_passes_lists_through_and_names_value_without_option():
    """The click type returns an already converted list as is; grid axes drop repeated
    integers, class counts keep them; without an option its errors name the 'value'."""
    values = [1e-3, 2e-3]
    assert NUMBERS.convert(values, None, None) is values
    assert INTEGERS.convert([3, 4], None, None) == [3, 4]
    assert INTEGERS.convert("3,4,3", None, None) == [3, 4]
    assert COUNTS.convert("3,4,3", None, None) == [3, 4, 3]
    assert parse_ints("5,5,3") == [5, 3]
    assert parse_ints("5,5,3", unique=False) == [5, 5, 3]
    with pytest.raises(click.BadParameter, match="value: 'x' is not a number"):
        NUMBERS.convert("x", None, None)


def test_default_map_list_becomes_a_grid_axis():
    """A list given as a command default (click's default_map) is one grid axis, as is."""
    result = _invoke(["simulate", "-K", "3", "-n", "2", *TINY, "--format", "json"],
                     default_map={"simulate": {"lambda_w": [1e-3, 2e-3]}})
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)["runs"]
    assert [r["lambda_w"] for r in runs] == [1e-3, 2e-3]



# ------------------------------------------------------------------ class counts


@pytest.mark.parametrize(("counts", "classes", "extra"), [
    ("5,5,3", 3, ()),
    ("4,4", 2, ("-K", "2")),
    ("2,3,2,3", 4, ("-K", "4")),
])
def test_class_counts_give_one_class_per_count(counts, classes, extra):
    """--class-counts gives K = the number of counts and the counts in order, repeated
    counts included; -K may be given beside them as that number."""
    result = _invoke(["simulate", "--class-counts", counts, *extra, *TINY, "--format", "json"])
    assert result.exit_code == 0, result.output
    (run,) = json.loads(result.stdout)["runs"]
    assert run["classes"] == classes
    assert run["per_class"] == counts


def test_class_counts_beside_another_k_or_any_n_is_refused(tmp_path):
    """--class-counts beside -n, or beside a -K other than the number of counts (alone or in
    a grid), is refused with one line that says what to drop, before any file is written."""
    out = tmp_path / "never"
    cases = ((["-K", "3"], "-K"), (["-K", "2,3"], "-K"), (["-n", "2"], "-n"),
             (["-K", "2", "-n", "2,3"], "-K and -n"), (["-K", "3,4", "-n", "2"], "-K and -n"))
    for args, named in cases:
        line = _error_line(_invoke(["simulate", "--class-counts", "2,3", *args, *TINY,
                                    "--out", str(out)]))
        assert line == (f"Error: --class-counts sets K = 2 and the samples per class, so "
                        f"{named} cannot be given beside it (-K only as 2); drop {named} or "
                        "--class-counts")
    assert not out.exists()


@pytest.mark.parametrize(("counts", "message"), [
    ("3,0", "Error: samples per class (per_class; --class-counts on the command line) must "
            "be integers >= 1, got (3, 0)"),
    ("3,2.5", "Error: Invalid value for '--class-counts': 2.5 is not an integer; give whole "
              "numbers"),
])
def test_bad_class_counts_are_one_line(tmp_path, counts, message):
    """A zero or a fractional class count exits 2 with one line and writes nothing."""
    out = tmp_path / "never"
    line = _error_line(_invoke(["simulate", "--class-counts", counts, *TINY, "--out", str(out)]))
    assert line == message
    assert not out.exists()


# ------------------------------------------------------------------ study runner


def _study(tmp_path: Path) -> Path:
    return write_tiny_study(tmp_path, seeds=4, records=20)


def _renders(stderr: str) -> list[str]:
    """The progress bar's successive renders (carriage-return separated), blanks dropped."""
    return [part.strip() for part in stderr.split("\r") if part.strip()]


def test_study_progress_bar_counts_runs_and_resumes_at_the_done_count(tmp_path, capsys):
    """The bar (on stderr) shows each chunk's runs and the runs left, and is cleared at the
    end; a rerun starts it at the finished count and computes nothing."""
    study, out = load_study(_study(tmp_path)), tmp_path / "out"
    first = run_study(study, out, progress=True, report=False)
    assert (first.total, first.computed, first.failed) == (4, 4, 0)
    stderr = capsys.readouterr().err
    renders = _renders(stderr)
    assert renders[0].startswith("tiny:   0%") and "0/4" in renders[0]
    assert any("2/4" in r and r.endswith("left=2]") for r in renders)
    assert "4/4" in renders[-1] and renders[-1].endswith("left=0]")
    assert re.search(r"left=0\]\r +\r$", stderr), "the bar is not cleared"

    again = run_study(study, out, progress=True, report=False)
    assert (again.computed, again.skipped) == (0, 4)
    stderr = capsys.readouterr().err
    (render,) = _renders(stderr)
    assert render.startswith("tiny: 100%") and "4/4" in render
    assert re.search(r"\r +\r$", stderr), "the bar is not cleared"


def test_no_progress_writes_nothing_on_stderr(tmp_path):
    """--no-progress: no bar, nothing on stderr."""
    result = _invoke(["study", "run", str(_study(tmp_path)), "--out", str(tmp_path / "out"),
                      "--no-progress"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_interrupted_study_exits_130_keeps_finished_runs_and_resumes(tmp_path, monkeypatch):
    """Ctrl-C in the second chunk: exit status 130 and 'Aborted.' after the bar is cleared, no
    traceback; the first chunk's runs stay finished and a rerun computes only the rest."""
    spec, out = _study(tmp_path), tmp_path / "out"
    calls = interrupt_chunk(monkeypatch)
    result = _invoke(["study", "run", str(spec), "--out", str(out)])
    assert result.exit_code == 130
    assert "Traceback" not in result.output and result.stdout == ""
    assert re.search(r"2/4 \[[^\]]*left=2\]\r +\r?\nAborted\.\n$", result.stderr), result.stderr
    assert calls == [2, 2]
    finished = {p.name: p.stat().st_mtime_ns for p in (out / "parts").glob("*.run.parquet")}
    assert len(finished) == 2
    assert not (out / "runs.parquet").exists()

    monkeypatch.undo()
    resumed = _invoke(["study", "run", str(spec), "--out", str(out), "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    assert "4 runs, 2 computed, 2 already done, 0 failed" in resumed.stdout
    for name, mtime in finished.items():
        assert (out / "parts" / name).stat().st_mtime_ns == mtime
