"""Mutation probe (third pass) of ``ncsim theory`` (ncsim/theory/cli.py): option defaults and
their help, exact one-line errors of every checked option, the printed numbers against the
library functions called directly, the formulas of the LaTeX form for biased and deep MSE, the
LaTeX table's rows and the phase diagram's LaTeX phase names."""

from __future__ import annotations

import json
import re

import pytest
import sympy as sp
from cli_helpers import error_line, invoke

from ncsim.theory.derivations import derivations
from ncsim.theory.dynamics import growth_rate, nc1_rates
from ncsim.theory.prediction import predicted_onset


def _ok(args: list[str]):
    result = invoke(args)
    assert result.exit_code == 0, result.output
    return result


def _rows(args: list[str]) -> list[dict]:
    return json.loads(_ok(["theory", *args]).stdout)["results"]


def _help(command: str) -> str:
    """The --help text of ``ncsim theory COMMAND`` with its whitespace collapsed."""
    return " ".join(_ok(["theory", command, "--help"]).stdout.split())


# ---------------------------------------------------------------- defaults
def test_defaults_of_every_model_option_reach_the_row():
    """No options: CE, no bias, K 10, n 20, d 32, depth 1, lambda_w = lambda_h = 5e-4,
    lambda_b 0, init 0.1, threshold 0.01, ratio 1; json is the default format."""
    (row,) = _rows(["threshold"])
    assert {k: row[k] for k in ("loss", "bias", "K", "n", "d", "depth", "lambda_w", "lambda_h",
                                "lambda_b", "init_scale", "onset_threshold", "ratio")} == {
        "loss": "ce", "bias": "none", "K": 10, "n": 20, "d": 32, "depth": 1, "lambda_w": 5e-4,
        "lambda_h": 5e-4, "lambda_b": 0.0, "init_scale": 0.1, "onset_threshold": 0.01,
        "ratio": 1.0}


@pytest.mark.parametrize("command", ["equilibrium", "threshold", "onset", "phase-diagram"])
def test_help_shows_each_numeric_default(command):
    """--help shows every numeric option with the metavar NUMBERS and its default."""
    text = _help(command)
    for shown in ("-K, --classes NUMBERS [default: 10]", "-n, --per-class NUMBERS [default: 20]",
                  "-d, --dim NUMBERS [default: 32]", "--lambda-w NUMBERS [default: 5e-4]",
                  "--lambda-h NUMBERS [default: 5e-4]", "--init-scale NUMBERS [default: 0.1]",
                  "--depth NUMBERS weight matrices L (>= 2: deep linear UFM) [default: 1]",
                  "--format [json|latex|text] [default: json]"):
        assert shown in text, shown


@pytest.mark.parametrize("command", ["equilibrium", "threshold", "onset"])
def test_help_of_every_grid_command_states_the_grid_order(command):
    """equilibrium, threshold and onset all end their help with the grid rules (order, limit,
    json's NaN / inf)."""
    text = _help(command)
    assert text.endswith("the last varying fastest. json: NaN is null, an infinity is the "
                         "string \"inf\" (as in every --format json of ncsim).")
    assert "(at most 100000)" in text


@pytest.mark.parametrize("command", ["equilibrium", "threshold", "onset"])
def test_help_of_every_grid_command_shows_the_threshold_and_the_ratio(command):
    """The commands that report thresholds, onsets and lambda_crit list --onset-threshold
    with its default and --ratio."""
    text = _help(command)
    assert "--onset-threshold NUMBERS [default: 0.01]" in text
    assert "--ratio NUMBER lambda_H / lambda_W for lambda_crit" in text


def test_phase_diagram_help_leaves_out_the_options_it_refuses():
    """A phase diagram has no onset and no critical-decay ratio: its --help lists neither
    option (giving one is refused by name, see the one-line errors below)."""
    text = _help("phase-diagram")
    assert "--onset-threshold" not in text and "--ratio" not in text
    assert "--init-scale NUMBERS [default: 0.1]" in text


def test_phase_diagram_help_lists_its_axes():
    """phase-diagram --help names every axis the x option takes."""
    assert ("--x TEXT x parameter: lambda_w, lambda_h, lambda, lambda_b, init_scale, depth, K, "
            "n [default: lambda_w]") in _help("phase-diagram")


# ---------------------------------------------------------------- exact one-line errors
@pytest.mark.parametrize("args, line", [
    (["equilibrium", "--lambda-w", "-1e-3"], "--lambda-w must be >= 0"),
    (["threshold", "--lambda-h", "1e-3,-1e-3"], "--lambda-h must be >= 0"),
    (["onset", "--bias", "reg", "--lambda-b", "-1"], "--lambda-b must be >= 0"),
    (["onset", "--onset-threshold", "0"], "--onset-threshold must be > 0"),
    (["onset", "--init-scale", "0"], "--init-scale must be > 0"),
    (["onset", "-d", "0"], "-d/--dim must be an integer >= 1"),
    (["equilibrium", "-n", "0"], "-n/--per-class must be an integer >= 1"),
    (["threshold", "--depth", "0"], "--depth must be an integer >= 1"),
    (["threshold", "-K", "1"], "-K/--classes must be an integer >= 2"),
    (["threshold", "--ratio", "0"],
     "--ratio takes one number > 0 (lambda_H / lambda_W), got '0'"),
    (["phase-diagram", "--bias", "reg", "--x", "lambda_b", "--xs", "0,1"],
     "the axis lambda_b takes values > 0 (use --bias free for 0)"),
    (["phase-diagram", "--ratio", "2", "--xs", "1e-3"],
     "phase-diagram does not use --ratio (it sets lambda_crit of equilibrium, threshold and "
     "onset); leave it out"),
    (["phase-diagram", "--xs", "1e-3", "--onset-threshold", "0.01,0.02"],
     "phase-diagram does not use --onset-threshold (the phase of a point does not depend on "
     "it; it sets the onset of ncsim theory onset); leave it out"),
    (["phase-diagram", "--xs", "1e-3", "--onset-threshold", "0.01"],
     "phase-diagram does not use --onset-threshold (the phase of a point does not depend on "
     "it; it sets the onset of ncsim theory onset); leave it out"),
    (["phase-diagram", "--xs", "1e-3", "-K", "3,4", "--depth", "1,2"],
     "phase-diagram: give one value for every other parameter (-K/--classes, --depth got "
     "several); only --xs and --ys take lists"),
    (["phase-diagram", "--xs", "1e-3", "--lambda-w", "1e-3,2e-3"],
     "phase-diagram: --lambda-w got several values, but lambda_w is an axis: give its values "
     "with --xs, and leave --lambda-w out"),
    (["phase-diagram", "--x", "K", "--y", "lambda", "--xs", "3", "--ys", "1e-3",
      "--lambda-h", "1e-3,2e-3"],
     "phase-diagram: --lambda-h got several values, but lambda is an axis: give its values "
     "with --ys, and leave --lambda-h out"),
    (["phase-diagram", "--xs", "1e-4..1:1000", "--ys", "1e-4..1:101"],
     "the phase diagram has 101000 points (1000 x 101); at most 100000: give fewer --xs or "
     "--ys values"),
])
def test_bad_option_is_this_exact_line(args, line):
    """Each refused value exits 2 with exactly this one line (no traceback)."""
    assert error_line(invoke(["theory", *args])) == f"Error: {line}"


# ---------------------------------------------------------------- numbers = library
def test_rates_are_the_library_functions_at_unequal_decays():
    """growth_rate and the nc1 rates of the row are growth_rate / nc1_rates called directly,
    nc1_rates with lambda_w first (1e-3 != lambda_h 4e-2), early and late in their columns."""
    K, n, lw, lh = 4, 5, 1e-3, 4e-2
    (row,) = _rows(["onset", "--loss", "mse", "-K", str(K), "-n", str(n), "-d", "8",
                    "--lambda-w", repr(lw), "--lambda-h", repr(lh)])
    assert row["growth_rate"] == float(growth_rate(K, n, lw, lh, 1))
    early, late = nc1_rates(K, n, lw, lh)
    assert (row["nc1_rate_early"], row["nc1_rate_late"]) == (float(early), float(late))
    assert float(early) != float(late)
    assert (float(early), float(late)) != tuple(map(float, nc1_rates(K, n, lh, lw)))


def test_reg_bias_onset_is_predicted_at_the_given_lambda_b():
    """MSE with a regularised bias (lambda_b 2): onset and fn crossing times and the regime are
    those of predicted_onset at lambda_b 2, not at the default 1e-3."""
    args = ("mse", "reg", 3, 4, 6, 0.02, 0.005, 0.1, 0.01)
    (row,) = _rows(["onset", "--loss", "mse", "--bias", "reg", "--lambda-b", "2", "-K", "3",
                    "-n", "4", "-d", "6", "--lambda-w", "0.02", "--lambda-h", "0.005"])
    pred = predicted_onset(*args, 2.0, 1)
    other = predicted_onset(*args, 1e-3, 1)
    assert row["onset_time"] == pred.onset_time != other.onset_time
    assert row["fn_cross_time"] == pred.fn_cross_time
    assert row["onset_regime"] == pred.regime


# ---------------------------------------------------------------- LaTeX
def _formula_names(text: str) -> list[str]:
    """The names of the align block of a --format latex output (spaces back to '_')."""
    return [m.replace(" ", "_") for m in re.findall(r"^\\text\{(.+?)\} &: \\quad ", text, re.M)]


@pytest.mark.parametrize("bias, depth, names", [
    ("free", 1, ["objective", "sigma_star", "w_row2_free", "h2_free", "bias_entry"]),
    ("reg", 1, ["objective", "sigma_mean_reg", "w_row2_reg", "bias_entry", "mean_mode_weight"]),
    ("none", 2, ["objective", "x_max", "sigma_jump"]),
])
def test_equilibrium_latex_holds_the_bias_mean_and_x_max_formulas(bias, depth, names):
    """equilibrium --format latex for MSE shows the bias entry and mean-mode weight of a biased
    head and x_max of a deep one, each as derivations() gives it."""
    args = ["theory", "equilibrium", "--loss", "mse", "--bias", bias, "--depth", str(depth),
            "-K", "4", "-n", "5", "--format", "latex"]
    out = _ok(args).stdout
    got = _formula_names(out)
    assert set(names) <= set(got)
    exprs = derivations("mse", depth, bias)
    for name in names:
        assert f"\\text{{{name.replace('_', ' ')}}} &: \\quad {sp.latex(exprs[name])} \\\\" in out


def test_latex_table_has_no_rows_for_true_false_columns():
    """The LaTeX table lists numeric columns only: the booleans collapsed and applies_at_d are
    no rows (not printed as 1 / 0), K and fn_star are."""
    out = _ok(["theory", "threshold", "-K", "4", "-n", "5", "--format", "latex"]).stdout
    names = [line.split("}", 1)[0].removeprefix("\\texttt{") for line in out.splitlines()
             if line.startswith("\\texttt{")]
    assert "K" in names and "fn\\_star" in names
    assert "collapsed" not in names and "applies\\_at\\_d" not in names


def test_derive_json_latex_is_sympy_latex():
    """derive --format json: the latex entries are sympy.latex of each expression (not its
    plain-text form)."""
    data = json.loads(_ok(["theory", "derive", "--loss", "ce", "--format", "json"]).stdout)
    exprs = derivations("ce", 1, "none")
    assert data["latex"] == {k: sp.latex(v) for k, v in exprs.items()}
    assert data["latex"]["Lambda_crit"] != data["expressions"]["Lambda_crit"]


# ---------------------------------------------------------------- phase diagram
def test_phase_diagram_latex_escapes_the_phase_name():
    """A phase name with an underscore (lambda_H = 0: no_collapse) is escaped in the LaTeX
    table."""
    out = _ok(["theory", "phase-diagram", "--loss", "mse", "-K", "2", "-n", "4", "--x",
               "lambda_w", "--xs", "0.01", "--y", "lambda_h", "--ys", "0", "--format",
               "latex"]).stdout
    (line,) = [r for r in out.splitlines() if r.startswith("0.01 & ")]
    assert line == "0.01 & 0 & no\\_collapse & inf \\\\"
