"""Mutation probe (second pass) of ``ncsim theory`` (ncsim/theory/cli.py): the formulas each
command's LaTeX form shows, defaults of derive and phase-diagram, the phase diagram's base
point and figure names, the grid order of every axis, the grid limit and exact messages."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest
from cli_helpers import error_line, invoke
from sympy import latex

import ncsim.theory.cli as theory_cli
from ncsim.theory.derivations import derivations
from ncsim.theory.phase import classify


def _ok(args: list[str]):
    result = invoke(args)
    assert result.exit_code == 0, result.output
    return result


def _formula_names(text: str) -> list[str]:
    """The names of the align block of a --format latex output (spaces back to '_')."""
    return [m.replace(" ", "_") for m in re.findall(r"^\\text\{(.+?)\} &: \\quad ", text, re.M)]


# ---------------------------------------------------------------- LaTeX formulas per command
@pytest.mark.parametrize("command, loss, depth, names", [
    ("equilibrium", "ce", 1, ["objective", "sigma_star", "margin_star", "prob_star", "ce_star",
                              "w_row2", "h2"]),
    ("threshold", "ce", 1, ["Lambda_crit", "lambda_crit_ratio"]),
    ("onset", "ce", 1, ["growth_rate", "growth_rate_evaluated", "logistic",
                        "logistic_evaluated", "half_time", "nc1_rate_early",
                        "nc1_rate_early_evaluated", "nc1_rate_early_direct",
                        "nc1_rate_late"]),
    ("threshold", "mse", 2, ["Lambda_stat", "tau_stat", "sigma_jump", "Lambda_glob",
                             "tau_glob"]),
    ("onset", "mse", 2, ["escape_asymptotic"]),
])
def test_latex_shows_the_formulas_of_its_command_only(command, loss, depth, names):
    """--format latex prints, of the derivation's expressions, those of the command (by name:
    equilibrium the norms / margin / loss, threshold the critical decays and the deep jump,
    onset the rates and the escape), each as derivations() gives it."""
    out = _ok(["theory", command, "--loss", loss, "--depth", str(depth), "-K", "4", "-n", "5",
               "--format", "latex"]).stdout
    assert _formula_names(out) == names
    exprs = derivations(loss, depth, "none")
    for name in names:
        assert f"\\text{{{name.replace('_', ' ')}}} &: \\quad {latex(exprs[name])} \\\\" in out


# ---------------------------------------------------------------- derive
def test_derive_defaults_to_latex_of_ce_one_layer_without_bias():
    """`ncsim theory derive` alone is --loss ce --bias none --depth 1 --format latex."""
    plain = _ok(["theory", "derive"]).stdout
    assert plain == _ok(["theory", "derive", "--loss", "ce", "--bias", "none", "--depth", "1",
                         "--format", "latex"]).stdout
    assert plain.startswith("\\begin{align*}\n") and plain.endswith("\\end{align*}\n")
    assert _formula_names(plain) == list(derivations("ce", 1, "none"))


@pytest.mark.parametrize("loss, bias, depth", [("mse", "reg", 1), ("mse", "none", 2)])
def test_derive_json_echoes_its_options_and_holds_their_expressions(loss, bias, depth):
    """derive --format json names the loss, bias and depth asked for and lists exactly the
    expressions of derivations(loss, depth, bias)."""
    data = json.loads(_ok(["theory", "derive", "--loss", loss, "--bias", bias, "--depth",
                           str(depth), "--format", "json"]).stdout)
    assert (data["loss"], data["bias"], data["depth"]) == (loss, bias, depth)
    exprs = derivations(loss, depth, bias)
    assert list(data["expressions"]) == list(exprs) == list(data["latex"])
    assert data["expressions"] == {k: str(v) for k, v in exprs.items()}


# ---------------------------------------------------------------- phase-diagram
def test_phase_diagram_defaults_are_lambda_w_by_lambda_h_over_25_log_values():
    """No options: x lambda_w, y lambda_h, both 1e-4..1:25 (625 points, y outer), CE, K 10,
    n 20, d 32, one layer, init 0.1; every row equals classify() there."""
    data = json.loads(_ok(["theory", "phase-diagram"]).stdout)
    assert (data["x"], data["y"], data["figure"]) == ("lambda_w", "lambda_h", None)
    rows = data["results"]
    values = np.geomspace(1e-4, 1.0, 25)
    assert len(rows) == 625
    got = [v for r in rows for v in (r["lambda_w"], r["lambda_h"])]
    assert got == pytest.approx([v for y in values for x in values for v in (x, y)],
                                rel=1e-12)
    for r in rows[::52]:
        want = classify("ce", "none", 10, 20, 32, 1, r["lambda_w"], r["lambda_h"], 0.0, 0.1)
        assert {k: r[k] for k in want} == want


def test_phase_diagram_base_point_takes_the_given_init_scale():
    """A non-axis --init-scale reaches every point: deep MSE at lambda 1e-2 with init 0.01 is
    'trapped' (classify), where the default init 0.1 would give 'collapse'."""
    rows = json.loads(_ok(["theory", "phase-diagram", "--loss", "mse", "--depth", "2", "-K",
                           "4", "-n", "5", "-d", "8", "--x", "lambda", "--xs", "1e-2", "--y",
                           "K", "--ys", "4", "--init-scale", "0.01"]).stdout)["results"]
    want = classify("mse", "none", 4, 5, 8, 2, 1e-2, 1e-2, 0.0, 0.01)
    assert [r["phase"] for r in rows] == [want["phase"]] == ["trapped"]


def test_phase_diagram_base_point_takes_the_given_lambda_b():
    """--bias reg --lambda-b 0.5 (not an axis) is the bias decay of every point: fn* equals
    classify() at lambda_b 0.5, not at the default 1e-3."""
    rows = json.loads(_ok(["theory", "phase-diagram", "--loss", "mse", "--bias", "reg",
                           "--lambda-b", "0.5", "-K", "4", "-n", "5", "-d", "8", "--x",
                           "lambda_w", "--xs", "1e-2", "--y", "lambda_h", "--ys", "3e-2"]
                          ).stdout)["results"]
    want = classify("mse", "reg", 4, 5, 8, 1, 1e-2, 3e-2, 0.5, 0.1)
    other = classify("mse", "reg", 4, 5, 8, 1, 1e-2, 3e-2, 1e-3, 0.1)
    assert rows[0]["fn_star"] == want["fn_star"] != other["fn_star"]


def test_phase_diagram_lambda_b_axis_overrides_a_listed_lambda_b():
    """With the axis lambda_b, --lambda-b is not used: a list there is no 'give one value'
    error, and each point takes its axis value."""
    rows = json.loads(_ok(["theory", "phase-diagram", "--loss", "mse", "--bias", "reg",
                           "--lambda-b", "0.5,2", "-K", "4", "-n", "5", "--x", "lambda_b",
                           "--xs", "0.1,10", "--y", "lambda", "--ys", "1e-3"]).stdout)["results"]
    assert [r["lambda_b"] for r in rows] == [0.1, 10.0]
    for r in rows:
        want = classify("mse", "reg", 4, 5, 32, 1, 1e-3, 1e-3, r["lambda_b"], 0.1)
        assert r["fn_star"] == want["fn_star"]


@pytest.mark.parametrize("name, magic", [("phase", b"\x89PNG"), ("phase.PNG", b"\x89PNG"),
                                         ("phase.Pdf", b"%PDF")])
def test_phase_diagram_figure_name_without_or_with_capital_suffix(tmp_path, name, magic):
    """--out without a suffix writes matplotlib's default (PNG) there; a suffix in capitals
    is the format of its lower case (PNG, Pdf)."""
    out = tmp_path / name
    data = json.loads(_ok(["theory", "phase-diagram", "--xs", "1e-3,1e-1", "--out",
                           str(out)]).stdout)
    assert data["figure"] == str(out)
    assert out.read_bytes().startswith(magic)


# ---------------------------------------------------------------- grids
def test_grid_order_of_every_axis():
    """Two values on each of the nine axes: 512 rows in the order -K, -n, -d, --depth,
    --lambda-w, --lambda-h, --lambda-b, --init-scale, --onset-threshold, the last fastest."""
    axes = [("-K", [3, 4]), ("-n", [2, 3]), ("-d", [5, 6]), ("--depth", [1, 2]),
            ("--lambda-w", [1e-3, 2e-3]), ("--lambda-h", [3e-3, 4e-3]),
            ("--lambda-b", [0.1, 0.2]), ("--init-scale", [0.1, 0.2]),
            ("--onset-threshold", [0.01, 0.02])]
    args = ["theory", "threshold", "--loss", "mse", "--bias", "reg"]
    for option, values in axes:
        args += [option, ",".join(repr(v) for v in values)]
    rows = json.loads(_ok(args).stdout)["results"]
    keys = ["K", "n", "d", "depth", "lambda_w", "lambda_h", "lambda_b", "init_scale",
            "onset_threshold"]
    assert [tuple(r[k] for k in keys) for r in rows] == list(
        itertools.product(*(v for _, v in axes)))


def test_grid_limit_is_100000_points(monkeypatch):
    """At most 100000 points: 1000 x 100 is computed (one row each), 11 x 9091 = 100001 is one
    line naming the count (the row computation is replaced by a stub here)."""
    monkeypatch.setattr(theory_cli, "_row", lambda o, p, with_onset: {
        "applies_at_d": True, "x": 1.0})
    data = json.loads(_ok(["theory", "threshold", "--lambda-w", "1e-4..1:1000",
                           "--lambda-h", "1e-4..1:100"]).stdout)
    assert len(data["results"]) == 100_000
    line = error_line(invoke(["theory", "threshold", "--lambda-w", "1e-4..1:11",
                              "--lambda-h", "1e-4..1:9091"]))
    assert "the grid has 100001 points (11 lambda_w x 9091 lambda_h); at most 100000" in line


# ---------------------------------------------------------------- exact messages
def test_note_names_the_first_point_below_the_rank():
    """Two points below the minimiser's rank (K = 10: rank 9; d = 4 and 5): the stderr note
    counts both and quotes the first (d = 4)."""
    res = _ok(["theory", "threshold", "-K", "10", "-n", "5", "-d", "4,5"])
    assert res.stderr.strip() == (
        "note: at 2 of 2 point(s) d is below the rank of the collapsed minimiser (d = 4, rank "
        "9 at the first): a model of that width cannot reach it, so the columns there "
        "describe a model with d >= that rank and no onset is predicted (applies_at_d false)")
    rows = json.loads(res.stdout)["results"]
    assert [(r["d"], r["applies_at_d"]) for r in rows] == [(4, False), (5, False)]


@pytest.mark.parametrize("bias", ["none", "free"])
def test_lambda_b_without_reg_names_the_bias(bias):
    """--lambda-b > 0 with --bias none / free: the exact line, naming the bias given."""
    line = error_line(invoke(["theory", "equilibrium", "--bias", bias, "--lambda-b", "0.1"]))
    assert line == f"Error: --lambda-b needs --bias reg, got bias '{bias}'"


def test_reg_bias_zero_lambda_b_exact_line():
    """--bias reg --lambda-b 0: the exact line, pointing to --bias free."""
    line = error_line(invoke(["theory", "threshold", "--bias", "reg", "--lambda-b", "0"]))
    assert line == "Error: bias 'reg' needs --lambda-b > 0 (use --bias free for 0)"

