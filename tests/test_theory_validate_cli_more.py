"""The ``ncsim theory`` and ``ncsim validate`` command lines, used as a user would: their
numbers against the library functions called directly, their text and LaTeX forms against
their json, grids in the stated order, the paper's logs against :mod:`ncsim.onset`, files
written where ``--out`` says, and one-line errors for bad input (before any work or file)."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sympy as sp
from cli_helpers import error_line, invoke

from ncsim.io import read_table
from ncsim.onset import crossing_time, is_vanishing, onset_time, value_at
from ncsim.theory.critical import critical_table
from ncsim.theory.dynamics import growth_rate, nc1_rates
from ncsim.theory.equilibrium import equilibrium
from ncsim.theory.phase import classify
from ncsim.theory.prediction import predicted_onset

LOGS = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "rupa2026-logs"
needs_logs = pytest.mark.skipif(not LOGS.is_dir(), reason=f"reference logs not found at {LOGS}")


# ----------------------------------------------------------------------------- helpers
def _strict_json(text: str) -> dict:
    """Parse JSON that must not hold NaN or Infinity (not JSON; strict parsers refuse them)."""
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def _ok(args: list[str]) -> str:
    """stdout of ``ncsim ARGS``, which must succeed with nothing on stderr but warnings."""
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.stderr
    return result.stdout


def _number(value: object) -> float:
    """A json number of the theory commands as a float (null = NaN, "inf" = infinity)."""
    if value is None:
        return math.nan
    if value in ("inf", "-inf"):
        return float(value)
    assert isinstance(value, (int, float)) and not isinstance(value, bool), value
    return float(value)


def _same(got: float, want: float, rel: float = 0.0) -> bool:
    """Equal numbers (NaN equals NaN, infinities by sign); ``rel`` relative tolerance."""
    if math.isnan(want) or math.isnan(got):
        return math.isnan(want) and math.isnan(got)
    if math.isinf(want) or math.isinf(got):
        return got == want
    return abs(got - want) <= rel * abs(want)


def _expected_row(loss: str, bias: str, K: int, n: int, d: int, depth: int, lw: float,
                  lh: float, lb: float, init: float, thr: float, ratio: float | None,
                  onset: bool) -> dict[str, float]:
    """The numbers of one theory row, from the library functions called directly."""
    eq = equilibrium(loss, bias, K, n, lw, lh, lb, depth).to_dict()
    out = {k: float(v) for k, v in eq.items()
           if k != "collapsed" and v is not None and not isinstance(v, bool)}
    if ratio is None:
        ratio = lh / lw if lw > 0 and lh > 0 else 1.0
    out["ratio"] = ratio
    out.update(critical_table(loss, bias, K, n, depth, ratio))
    out["growth_rate"] = float(growth_rate(K, n, lw, lh, depth))
    early, late = nc1_rates(K, n, lw, lh)
    out["nc1_rate_early"], out["nc1_rate_late"] = (float(early), float(late)) if depth == 1 \
        else (math.nan, math.nan)
    out["onset_time"] = out["lead_time"] = out["fn_cross_time"] = math.nan
    if onset:
        pred = predicted_onset(loss, bias, K, n, d, lw, lh, init, thr, lb, depth)
        out.update(onset_time=pred.onset_time, lead_time=pred.lead_time,
                   fn_cross_time=pred.fn_cross_time)
    return out


# ----------------------------------------------------------------------------- theory
MODELS = [
    ("ce", "none", 1, "0"),
    ("mse", "free", 1, "0"),
    ("mse", "reg", 1, "0.5"),
    ("ce", "none", 2, "0"),
    ("mse", "none", 2, "0"),
]


@pytest.mark.parametrize("command", ["equilibrium", "threshold", "onset"])
@pytest.mark.parametrize("loss, bias, depth, lambda_b", MODELS)
def test_theory_json_numbers_are_those_of_the_library(command, loss, bias, depth, lambda_b):
    """Every number of the json row equals the library function that defines it (equilibrium,
    critical_table, growth_rate, nc1_rates, predicted_onset) at the same point; threshold
    leaves the onset columns null; the labels echo the options."""
    args = ["theory", command, "--loss", loss, "--bias", bias, "-K", "4", "-n", "5", "-d", "20",
            "--depth", str(depth), "--lambda-w", "1e-2", "--lambda-h", "3e-2", "--lambda-b",
            lambda_b, "--init-scale", "0.1", "--format", "json"]
    (row,) = _strict_json(_ok(args))["results"]
    assert (row["loss"], row["bias"], row["K"], row["n"], row["d"], row["depth"]) == (
        loss, bias, 4, 5, 20, depth)
    assert (row["lambda_w"], row["lambda_h"], row["lambda_b"]) == (1e-2, 3e-2, float(lambda_b))
    eq = equilibrium(loss, bias, 4, 5, 1e-2, 3e-2, float(lambda_b), depth)
    assert row["collapsed"] is bool(eq.collapsed)
    want = _expected_row(loss, bias, 4, 5, 20, depth, 1e-2, 3e-2, float(lambda_b), 0.1, 0.01,
                         None, command != "threshold")
    assert want["ratio"] == pytest.approx(3.0)
    bad = {k: (row.get(k), v) for k, v in want.items() if not _same(_number(row.get(k)), v)}
    assert not bad
    if command == "threshold":
        assert row["onset_regime"] is None
    else:
        pred = predicted_onset(loss, bias, 4, 5, 20, 1e-2, 3e-2, 0.1, 0.01, float(lambda_b),
                               depth)
        assert row["onset_regime"] == pred.regime


def test_theory_grid_rows_follow_the_stated_order():
    """A grid gives one row per point, in the order the help states (-K, -n, -d, --depth,
    --lambda-w, --lambda-h, --lambda-b, --init-scale, --onset-threshold, last fastest), and
    each row holds the numbers of its own point."""
    help_text = "".join(_ok(["theory", "threshold", "--help"]).split())
    assert "intheorder-K,-n,-d,--depth,--lambda-w,--lambda-h,--lambda-b,--init-scale," \
           "--onset-threshold,thelastvaryingfastest" in help_text
    rows = _strict_json(_ok(["theory", "threshold", "-K", "3,4", "-n", "2", "--lambda-w",
                             "1e-3,2e-3", "--lambda-h", "1e-3,3e-3", "--init-scale",
                             "0.1,0.2"]))["results"]
    points = list(itertools.product([3, 4], [1e-3, 2e-3], [1e-3, 3e-3], [0.1, 0.2]))
    assert [(r["K"], r["lambda_w"], r["lambda_h"], r["init_scale"]) for r in rows] == points
    for r, (K, lw, lh, _) in zip(rows, points, strict=True):
        crit = critical_table("ce", "none", K, 2, 1, lh / lw)
        assert r["lambda_crit"] == crit["lambda_crit"]
        assert r["fn_star"] == float(equilibrium("ce", "none", K, 2, lw, lh).fn_star)


def test_theory_log_range_gives_its_geometric_values():
    """``--lambda-w 1e-4..1e-2:3`` gives the three values 1e-4, 1e-3, 1e-2 in that order."""
    rows = _strict_json(_ok(["theory", "threshold", "--lambda-w", "1e-4..1e-2:3"]))["results"]
    assert [r["lambda_w"] for r in rows] == pytest.approx([1e-4, 1e-3, 1e-2], rel=1e-12)


def _text_rows(text: str) -> list[dict[str, str]]:
    """``--format text``: blocks of ``key  value`` lines, headed ``# point i/N`` on a grid."""
    blocks: list[dict[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# point "):
            blocks.append({})
            continue
        if not blocks:
            blocks.append({})
        key, value = line.split(None, 1)
        blocks[-1][key] = value.strip()
    return blocks


def _latex_table(text: str) -> dict[str, list[str]]:
    """The ``\\texttt{key} & cell & ... \\\\`` rows of the tabular of ``--format latex``."""
    table = {}
    for line in text.splitlines():
        match = re.fullmatch(r"\\texttt\{(.+?)\} & (.*) \\\\", line)
        if match:
            table[match.group(1).replace("\\_", "_")] = match.group(2).split(" & ")
    return table


def test_theory_text_and_latex_carry_the_json_numbers():
    """The text form prints every json key of every grid point with its value (10 significant
    digits); the LaTeX table has one column per point and every numeric key (6 digits); both
    print NaN as nan where json has null."""
    args = ["theory", "onset", "--loss", "mse", "-K", "4", "-n", "5", "-d", "20", "--lambda-w",
            "1e-2", "--lambda-h", "1e-2,3e-2", "--init-scale", "0.1"]
    rows = _strict_json(_ok([*args, "--format", "json"]))["results"]
    text = _text_rows(_ok([*args, "--format", "text"]))
    latex_out = _ok([*args, "--format", "latex"])
    latex = _latex_table(latex_out)
    assert len(rows) == len(text) == 2
    numeric = [k for k in rows[0] if k in latex]
    assert "fn_star" in numeric and "onset_time" in numeric and "lambda_crit" in numeric
    for row, printed in zip(rows, text, strict=True):
        assert list(printed) == list(row)
        for key, value in row.items():
            if isinstance(value, bool) or value is None and key in ("onset_regime",
                                                                      "lower_rank_better"):
                assert printed[key] == str(value), key
            elif isinstance(value, str) and value not in ("inf", "-inf"):
                assert printed[key] == value, key
            else:
                assert _same(float(printed[key]), _number(value), 1e-9), key
    for key in [k for k in rows[0] if _is_numeric_json(rows, k)]:
        assert key in latex, key
        cells = latex[key]
        assert len(cells) == 2
        for cell, row in zip(cells, rows, strict=True):
            assert _same(float(cell), _number(row[key]), 1e-5), key
    assert "\\begin{align*}" in latex_out and "growth rate" in latex_out


def _is_numeric_json(rows: list[dict], key: str) -> bool:
    return any(isinstance(r[key], (int, float)) and not isinstance(r[key], bool)
               for r in rows)


def test_theory_depth_grid_has_one_key_set_and_every_depths_formulas():
    """A grid over --depth mixes one-layer and deep rows: json rows share one key set (a deep
    key such as sigma_jump is null on the one-layer row), and the LaTeX form holds the deep
    columns and the formulas of each depth, not only those of the first."""
    args = ["theory", "threshold", "--loss", "mse", "-K", "4", "-n", "5", "--depth", "1,2"]
    rows = _strict_json(_ok([*args, "--format", "json"]))["results"]
    assert [r["depth"] for r in rows] == [1, 2]
    assert list(rows[0]) == list(rows[1])
    deep = critical_table("mse", "none", 4, 5, 2, 1.0)
    assert rows[0]["sigma_jump"] is None and rows[1]["sigma_jump"] == deep["sigma_jump"]
    assert rows[0]["norm_W2"] is None
    assert rows[1]["norm_W2"] == float(equilibrium("mse", "none", 4, 5, 5e-4, 5e-4, 0.0, 2)
                                       .factor_norms["W2"])
    latex_out = _ok([*args, "--format", "latex"])
    latex = _latex_table(latex_out)
    assert latex["sigma_jump"][0] == "nan"
    assert float(latex["sigma_jump"][1]) == pytest.approx(deep["sigma_jump"], rel=1e-5)
    assert float(latex["norm_W2"][1]) == pytest.approx(rows[1]["norm_W2"], rel=1e-5)
    assert "% depth 1" in latex_out and "% depth 2" in latex_out
    assert "tau glob" in latex_out and "\\frac{1}{K \\sqrt{n}}" in latex_out


def test_theory_ratio_sets_lambda_crit():
    """--ratio rho gives lambda_crit = critical_table(ratio=rho) = Lambda_crit / rho^(1/2) for
    one layer, and is echoed as the row's ratio."""
    (row,) = _strict_json(_ok(["theory", "threshold", "-K", "4", "-n", "5", "--ratio",
                               "4"]))["results"]
    crit = critical_table("ce", "none", 4, 5, 1, 4.0)
    assert row["ratio"] == 4.0
    assert row["lambda_crit"] == crit["lambda_crit"]
    assert row["lambda_crit"] == pytest.approx(1 / (4 * math.sqrt(5)) / 2, rel=1e-12)


@pytest.mark.parametrize("value", ["abc", "1,2", "0", "-1", "inf", "nan", "1..4:3"])
def test_theory_bad_ratio_is_one_line(value):
    """--ratio takes one finite number > 0: text, a list, 0, a negative, inf or nan is one line
    naming --ratio, no traceback."""
    line = error_line(invoke(["theory", "threshold", "--ratio", value]))
    assert "--ratio" in line


@pytest.mark.parametrize("args, words", [
    (["equilibrium", "--lambda-h", "-1e-3"], ["--lambda-h", ">= 0"]),
    (["onset", "--bias", "reg", "--lambda-b", "-1"], ["--lambda-b"]),
    (["threshold", "-K", "2,1"], ["-K/--classes", ">= 2"]),
    (["equilibrium", "-K", "2.5"], ["-K/--classes", "not an integer"]),
    (["equilibrium", "-n", "0"], ["-n/--per-class", ">= 1"]),
    (["onset", "-d", "0"], ["-d/--dim", ">= 1"]),
    (["threshold", "--depth", "0"], ["--depth", ">= 1"]),
    (["onset", "--init-scale", "0"], ["--init-scale", "> 0"]),
    (["onset", "--onset-threshold", "-0.1"], ["--onset-threshold", "> 0"]),
    (["threshold", "--loss", "hinge"], ["unknown loss 'hinge'", "mse, ce"]),
    (["threshold", "--bias", "zero"], ["unknown bias 'zero'", "none, free, reg"]),
    (["equilibrium", "--format", "csv"], ["unknown format 'csv'", "json, latex, text"]),
    (["equilibrium", "--lambda-w", "1e-4..1e-2"], ["--lambda-w", "malformed range"]),
    (["threshold", "--lambda-h", "1e-4..1e-2:0"], ["--lambda-h", "count >= 1"]),
    (["onset", "--lambda-w", "0..1e-2:3"], ["--lambda-w", "lo > 0"]),
    (["equilibrium", "-K", "2..x:3"], ["-K/--classes", "'x' is not a number"]),
    (["equilibrium", "--lambda-w", "1e-3,,2e-3"], ["--lambda-w", "empty value"]),
    (["equilibrium", "--bias", "free", "--lambda-b", "0.1"], ["--lambda-b needs --bias reg"]),
    (["threshold", "--lambda-w", "1e-4..1:400", "--lambda-h", "1e-4..1:400"],
     ["160000 points"]),
    (["derive", "--depth", "1,2"], ["--depth takes one integer"]),
    (["derive", "--depth", "0"], ["--depth takes one integer >= 1"]),
    (["derive", "--format", "tex"], ["unknown format 'tex'"]),
    (["derive", "--loss", "l2"], ["unknown loss 'l2'"]),
    (["derive", "--bias", "zero"], ["unknown bias 'zero'"]),
    (["phase-diagram", "--x", "lambda", "--y", "lambda_w"], ["axis lambda"]),
    (["phase-diagram", "--x", "lambda_w", "--y", "lambda_w"], ["differ"]),
    (["phase-diagram", "--x", "K", "--xs", "2.5", "--y", "lambda", "--ys", "1e-3"],
     ["--xs", "not an integer"]),
    (["phase-diagram", "--x", "lambda_b", "--xs", "0.1,1"], ["lambda_b", "--bias reg"]),
    (["phase-diagram", "--bias", "reg", "--x", "lambda_b", "--xs", "0,1"], ["lambda_b", "> 0"]),
    (["phase-diagram", "--ratio", "2", "--xs", "1e-3"], ["--ratio"]),
    (["phase-diagram", "--xs", "1e-3", "--init-scale", "0.1,0.2"], ["one value"]),
    (["phase-diagram", "--xs", "1e-3", "--out", "phase.txt"], ["--out", "'txt'", "png"]),
])
def test_theory_bad_input_is_one_line_naming_the_problem(args, words, tmp_path, monkeypatch):
    """Bad values (negative decays, K = 1 or not an integer, unknown loss, bias or format,
    malformed ranges, a grid too large, bad phase axes or figure names) exit with status 2 and
    one line that names the option and what is allowed; no file is written."""
    monkeypatch.chdir(tmp_path)
    line = error_line(invoke(["theory", *args]))
    for word in words:
        assert word in line, (word, line)
    assert list(tmp_path.iterdir()) == []


def _evaluate(text: str, point: dict[str, float]) -> float:
    """A derive expression (sympy text) evaluated at ``point`` (symbol name -> value)."""
    names = {k: sp.Symbol(k) for k in point}  # Lambda is a symbol here, not sympy's class
    expr = sp.parse_expr(text, local_dict=names)
    return float(expr.subs({names[k]: v for k, v in point.items()}))


def test_theory_derive_expressions_give_the_numbers_of_the_other_commands():
    """The derive json expressions, evaluated at a point, give the numbers that equilibrium and
    onset print there (sigma*, margin*, Lambda_crit, growth rate, NC1 rates); its text and
    LaTeX forms hold the same expressions as its json."""
    K, n, lw, lh = 4, 5, 1e-2, 3e-2
    point = {"K": K, "n": n, "lambda_W": lw, "lambda_H": lh, "Lambda": math.sqrt(lw * lh),
             "c": 1.0}
    for loss, keys in (("ce", ("sigma_star", "margin_star")), ("mse", ("sigma_star",))):
        data = _strict_json(_ok(["theory", "derive", "--loss", loss, "--format", "json"]))
        assert (data["loss"], data["bias"], data["depth"]) == (loss, "none", 1)
        (row,) = _strict_json(_ok(["theory", "onset", "--loss", loss, "-K", str(K), "-n",
                                   str(n), "--lambda-w", str(lw), "--lambda-h", str(lh)]))[
            "results"]


        wanted = {"Lambda_crit": row["Lambda_crit"], "growth_rate": row["growth_rate"],
                  "nc1_rate_early": row["nc1_rate_early"], "nc1_rate_late": row["nc1_rate_late"],
                  "sigma_star": row["sigma"], "margin_star": row["margin_star"]}
        for name in ("Lambda_crit", "growth_rate", "nc1_rate_early", "nc1_rate_late", *keys):
            got = _evaluate(data["expressions"][name], point)
            assert got == pytest.approx(wanted[name], rel=1e-12), (loss, name)
        text = _ok(["theory", "derive", "--loss", loss, "--format", "text"]).splitlines()
        assert text == [f"{k} = {v}" for k, v in data["expressions"].items()]
        latex = _ok(["theory", "derive", "--loss", loss, "--format", "latex"])
        for name, expr in data["latex"].items():
            assert f"\\text{{{name.replace('_', ' ')}}} &: \\quad {expr} \\\\" in latex


def _phase_rows(args: list[str]) -> list[dict]:
    return _strict_json(_ok(["theory", "phase-diagram", *args, "--format", "json"]))["results"]


def test_phase_diagram_rows_are_classify_in_y_major_order():
    """Each json row is classify() of its point, y in the outer loop and x fastest (as the help
    states); the text and LaTeX tables carry the same points, phases and fn* (6 digits)."""
    args = ["--loss", "mse", "--depth", "2", "-K", "4", "-n", "5", "-d", "8", "--x", "lambda",
            "--xs", "1e-2,1e-1", "--y", "init_scale", "--ys", "0.01,1"]
    assert "yintheouterloopandxvaryingfastest" in "".join(
        _ok(["theory", "phase-diagram", "--help"]).split())
    rows = _phase_rows(args)
    points = [(x, y) for y in (0.01, 1.0) for x in (1e-2, 1e-1)]
    assert [(r["lambda"], r["init_scale"]) for r in rows] == points
    for r, (lam, scale) in zip(rows, points, strict=True):
        want = classify("mse", "none", 4, 5, 8, 2, lam, lam, 0.0, scale)
        assert {k: r[k] for k in want} == want
    assert [r["phase"] for r in rows] == ["trapped", "vanishing", "collapse", "vanishing"]
    text = _ok(["theory", "phase-diagram", *args, "--format", "text"]).splitlines()
    assert text[0].split() == ["lambda", "init_scale", "phase", "fn_star"]
    latex = [line for line in _ok(["theory", "phase-diagram", *args, "--format", "latex"])
             .splitlines() if line.endswith("\\\\")]
    assert latex[0] == "\\texttt{lambda} & \\texttt{init\\_scale} & \\texttt{phase} & " \
                       "\\texttt{fn\\_star} \\\\"
    assert len(text) - 1 == len(latex) - 1 == len(rows)
    for r, line, tex in zip(rows, text[1:], latex[1:], strict=True):
        x, y, phase, fn = line.split()
        tx, ty, tphase, tfn = tex.removesuffix(" \\\\").split(" & ")
        assert phase == tphase.replace("\\_", "_") == r["phase"]
        for got in ((x, tx), (y, ty), (fn, tfn)):
            assert float(got[0]) == float(got[1])
        assert float(x) == pytest.approx(r["lambda"], rel=1e-5)
        assert float(y) == pytest.approx(r["init_scale"], rel=1e-5)
        assert float(fn) == pytest.approx(r["fn_star"], rel=1e-5, abs=1e-300)


def test_phase_diagram_integer_axes_take_integers():
    """K, n and depth axes hold integers: a log range is rounded (2..10:5 -> 2, 3, 4, 7, 10),
    each row reports the integer it was computed with, and equals classify() there."""
    rows = _phase_rows(["--loss", "mse", "--x", "K", "--xs", "2..10:5", "--y", "n",
                        "--ys", "1..4:3", "--lambda-w", "1e-3", "--lambda-h", "1e-3"])
    assert [(r["K"], r["n"]) for r in rows] == [(K, n) for n in (1, 2, 4)
                                                for K in (2, 3, 4, 7, 10)]
    for r in rows:
        assert isinstance(r["K"], int) and isinstance(r["n"], int)
        want = classify("mse", "none", r["K"], r["n"], 32, 1, 1e-3, 1e-3, 0.0, 0.1)
        assert {k: r[k] for k in want} == want


def test_phase_diagram_json_is_strict_with_infinite_fn_star():
    """With lambda_H = 0 fn* is infinite: the json stays valid JSON (no Infinity literal) and
    says "inf", as the other theory commands do."""
    rows = _phase_rows(["--loss", "ce", "--x", "lambda_w", "--xs", "1e-3", "--y", "lambda_h",
                        "--ys", "0,1e-3"])
    assert [r["phase"] for r in rows] == ["no_collapse", "collapse"]
    assert rows[0]["fn_star"] == "inf"
    assert rows[1]["fn_star"] == float(equilibrium("ce", "none", 10, 20, 1e-3, 1e-3).fn_star)


def test_phase_diagram_lambda_b_axis_with_a_regularised_bias():
    """The lambda_b axis (with --bias reg) sets the bias decay of each point: no --lambda-b is
    needed, and every row equals classify() at its lambda_b."""
    rows = _phase_rows(["--loss", "mse", "--bias", "reg", "-K", "4", "-n", "5", "--x",
                        "lambda_b", "--xs", "0.1,10", "--y", "lambda", "--ys", "1e-3,0.2"])
    assert [(r["lambda_b"], r["lambda"]) for r in rows] == [(0.1, 1e-3), (10.0, 1e-3),
                                                            (0.1, 0.2), (10.0, 0.2)]
    for r in rows:
        want = classify("mse", "reg", 4, 5, 32, 1, r["lambda"], r["lambda"], r["lambda_b"], 0.1)
        assert {k: r[k] for k in want} == want
    assert rows[0]["fn_star"] != rows[1]["fn_star"]


def test_phase_diagram_figure_is_written_where_out_says(tmp_path):
    """--out x.pdf writes a PDF there (in a folder it makes) and json names it."""
    out = tmp_path / "figs" / "phase.pdf"
    data = _strict_json(_ok(["theory", "phase-diagram", "--xs", "1e-3,1e-1", "--out", str(out),
                             "--format", "json"]))
    assert data["figure"] == str(out)
    assert out.read_bytes().startswith(b"%PDF")


def test_readme_theory_commands_run(tmp_path, monkeypatch):
    """The theory commands of the README run as written: exit 0, json that parses strictly,
    text with fn_star, LaTeX with the formulas, and the phase figure."""
    monkeypatch.chdir(tmp_path)
    rows = _strict_json(_ok(["theory", "equilibrium", "--loss", "ce", "-K", "10", "-n", "20",
                             "--lambda-w", "5e-4", "--lambda-h", "5e-4", "--format",
                             "json"]))["results"]
    assert rows[0]["fn_star"] == float(equilibrium("ce", "none", 10, 20, 5e-4, 5e-4).fn_star)
    text = _text_rows(_ok(["theory", "threshold", "--loss", "mse", "--depth", "3", "-K", "4",
                           "-n", "5", "--format", "text"]))
    crit = critical_table("mse", "none", 4, 5, 3, 1.0)
    assert float(text[0]["lambda_crit"]) == pytest.approx(crit["lambda_crit"], rel=1e-9)
    (row,) = _strict_json(_ok(["theory", "onset", "--loss", "ce", "-K", "10", "-n", "20",
                               "--lambda-w", "1e-3", "--lambda-h", "1e-3", "--init-scale",
                               "0.01"]))["results"]
    pred = predicted_onset("ce", "none", 10, 20, 32, 1e-3, 1e-3, 0.01, 0.01, 0.0, 1)
    assert row["onset_time"] == pred.onset_time
    assert "\\sqrt{n}" in _ok(["theory", "derive", "--loss", "ce", "--format", "latex"])
    data = _strict_json(_ok(["theory", "phase-diagram", "--x", "lambda_w", "--y", "lambda_h",
                             "--xs", "1e-4..3e-2:16", "--out", "phase.png"]))
    assert len(data["results"]) == 256
    assert (tmp_path / "phase.png").read_bytes().startswith(b"\x89PNG")


# ----------------------------------------------------------------------------- analyze
def _paper_files() -> tuple[list[Path], list[Path]]:
    """(per-epoch logs, per-seed summary files) of the paper's release, every CSV once."""
    logs, summaries = [], []
    for path in sorted(LOGS.rglob("*.csv")):
        columns = pd.read_csv(path, nrows=0).columns
        (logs if "epoch" in columns else summaries).append(path)
    return logs, summaries


def _expected_run(path: Path, threshold: float, phase_two: bool, metric: str = "nc1"
                  ) -> dict[str, float]:
    """Onset epoch, fn*, min and final values of one paper log, computed from its columns with
    ncsim.onset (phase-2 records only when ``phase_two`` and the log has them)."""
    frame = pd.read_csv(path).sort_values("epoch", kind="stable")
    search = frame
    if phase_two and "phase" in frame and (frame["phase"] == 2).any():
        search = frame[frame["phase"] == 2]
    t = search["epoch"].to_numpy(np.float64)
    when = onset_time(t, search[metric].to_numpy(np.float64), threshold, 1, False)
    fn_star = value_at(t, search["feat_norm"].to_numpy(np.float64), when, False)
    values = frame[metric].to_numpy(np.float64)
    fn = frame["feat_norm"].to_numpy(np.float64)
    return {"onset_epoch": when, "fn_star": fn_star,
            "min_metric": float(np.nanmin(values)) if np.isfinite(values).any() else math.nan,
            "final_fn": float(fn[np.isfinite(fn)][-1]) if np.isfinite(fn).any() else math.nan,
            "last_epoch": float(frame["epoch"].max())}


def _check_runs(runs: list[dict], logs: list[Path], threshold: float, phase_two: bool,
                metric: str = "nc1") -> None:
    assert [r["run"] for r in runs] == [p.stem for p in logs]
    for run, path in zip(runs, logs, strict=True):
        want = _expected_run(path, threshold, phase_two, metric)
        for key, value in want.items():
            assert _same(_number(run[key]), value), (path.name, key, run[key], value)
        collapsed = math.isfinite(want["onset_epoch"])
        # no released log vanishes (the vanishing rule: test_validate_bad_logs_and_vanishing.py)
        fn = pd.read_csv(path).sort_values("epoch", kind="stable")["feat_norm"]
        assert not is_vanishing(fn.to_numpy(np.float64), 1e-3), path.name
        assert run["status"] == ("collapsed" if collapsed else "not_collapsed")
        assert run["onset_epoch"] is None or isinstance(run["onset_epoch"], int)


@needs_logs
@pytest.mark.parametrize("preset, threshold", [("rupa2026", 0.01), ("ncsim", 0.05)])
def test_analyze_every_paper_log_equals_onset_functions(preset, threshold):
    """analyze over every per-epoch log of the paper's release (in the order given): each run's
    onset epoch, fn*, min nc1 and final fn equal ncsim.onset applied to the log's columns
    (rupa2026: phase-2 records when the log has them; ncsim: whole log); each group's counts,
    mean and sample std of fn* are those of its runs."""
    logs, _ = _paper_files()
    assert len(logs) >= 70
    data = _strict_json(_ok(["validate", "analyze", *map(str, logs), "--preset", preset,
                             "--onset-threshold", str(threshold), "--format", "json"]))
    assert data["rule"] == {"metric": "nc1_trace", "threshold": threshold,
                            "phase": 2 if preset == "rupa2026" else None,
                            "interpolate": False, "stay": 1, "vanish_tol": 1e-3}
    _check_runs(data["runs"], logs, threshold, preset == "rupa2026")
    runs = pd.DataFrame(data["runs"])
    assert sum(g["n_runs"] for g in data["groups"]) == len(logs)
    for group in data["groups"]:
        part = runs[(runs["model"] == group["model"]) & (runs["dataset"] == group["dataset"])
                    & (runs["condition"] == group["condition"])]
        fn = part["fn_star"].dropna().to_numpy(np.float64)
        assert (group["n_runs"], group["n_collapsed"]) == (len(part), len(fn))
        assert _same(_number(group["fn_star_mean"]), fn.mean() if fn.size else math.nan, 1e-12)
        assert _same(_number(group["fn_star_std"]), fn.std(ddof=1) if fn.size > 1 else math.nan,
                     1e-12)


@needs_logs
def test_analyze_lead_crossings_and_other_metric():
    """In-sample lead: fn_pred is the group-mean fn*, t_cross the first epoch with fn <= fn_pred
    (ncsim.onset.crossing_time on the whole log), lead = onset - t_cross; --metric nc2_angle
    reads the paper's nc2 column."""
    logs = sorted(LOGS.glob("width*_s*.csv")) + sorted(LOGS.glob("depth7_s*.csv"))
    data = _strict_json(_ok(["validate", "analyze", *map(str, logs), "--format", "json"]))
    runs = {r["run"]: r for r in data["runs"]}
    for lead in data["leads"]:
        same = [r["fn_star"] for r in data["runs"] if r["condition"] == lead["condition"]
                and r["fn_star"] is not None]
        assert _same(_number(lead["fn_pred_in_sample"]), float(np.mean(same)) if same
                     else math.nan, 1e-12)
        frame = pd.read_csv(LOGS / f"{lead['run']}.csv").sort_values("epoch")
        cross = crossing_time(frame["epoch"].to_numpy(np.float64),
                              frame["feat_norm"].to_numpy(np.float64),
                              _number(lead["fn_pred_in_sample"]), "below", False) \
            if same else math.nan
        assert _same(_number(lead["t_cross_in_sample"]), cross)
        assert _same(_number(lead["lead_in_sample"]),
                     _number(runs[lead["run"]]["onset_epoch"]) - cross)
    other = _strict_json(_ok(["validate", "analyze", *map(str, logs), "--metric", "nc2_angle",
                              "--onset-threshold", "0.05", "--format", "json"]))
    _check_runs(other["runs"], logs, 0.05, True, metric="nc2")


@needs_logs
def test_analyze_summary_files_are_one_line_each():
    """Each per-seed summary file of the release (no epoch column) is refused with one line
    naming the file and the two schemas."""
    _, summaries = _paper_files()
    assert len(summaries) >= 10
    for path in summaries:
        line = error_line(invoke(["validate", "analyze", str(path)]))
        assert str(path) in line and "'epoch'" in line and "'time'" in line


@needs_logs
@pytest.mark.parametrize("name", ["runs.csv", "runs.parquet"])
def test_analyze_out_writes_the_run_table_there(tmp_path, name):
    """--out writes the run table at that path (making its folder), holding the json's runs."""
    logs = sorted(LOGS.glob("width128_s*.csv"))
    out = tmp_path / "new" / name
    data = _strict_json(_ok(["validate", "analyze", *map(str, logs), "--out", str(out),
                             "--format", "json"]))
    table = read_table(out)
    assert table["run"].tolist() == [r["run"] for r in data["runs"]]
    for column in ("onset_epoch", "fn_star", "min_metric", "final_fn"):
        assert [_same(float(a), _number(b)) for a, b in
                zip(table[column], [r[column] for r in data["runs"]], strict=True)] == [
            True] * len(logs), column
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [name]


@needs_logs
@pytest.mark.parametrize("name", ["runs.txt", "runs", "folder.csv"])
def test_analyze_out_that_is_no_table_file_is_one_line(tmp_path, name):
    """--out must name a .csv or .parquet file: another extension, none, or an existing folder
    is one line, and nothing is written."""
    (tmp_path / "folder.csv").mkdir()
    line = error_line(invoke(["validate", "analyze", str(LOGS / "width128_s0.csv"),
                              "--out", str(tmp_path / name)]))
    assert "--out" in line and ".csv" in line and ".parquet" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.csv"]


def test_analyze_empty_or_missing_logs_are_one_line(tmp_path):
    """A log with only a header (alone or next to a good log), a zero-byte file, a file that is
    missing, a folder, and a log lacking feat_norm: one line each that names the file."""
    good = tmp_path / "good_s0.csv"
    pd.DataFrame({"epoch": [10, 20], "phase": [2, 2], "nc1": [0.1, 0.001],
                  "feat_norm": [2.0, 1.0]}).to_csv(good, index=False)
    header = tmp_path / "header_s0.csv"
    header.write_text("epoch,phase,train,test,nc1,nc2,nc3,feat_norm\n")
    zero = tmp_path / "zero.csv"
    zero.write_bytes(b"")
    no_fn = tmp_path / "nofn.csv"
    pd.DataFrame({"epoch": [10], "nc1": [0.1]}).to_csv(no_fn, index=False)
    for logs, word in (([header], str(header)), ([good, header], str(header)),
                       ([zero], str(zero)), ([tmp_path / "absent.csv"], "does not exist"),
                       ([tmp_path], "is a directory"), ([no_fn], "feat_norm")):
        line = error_line(invoke(["validate", "analyze", *map(str, logs)]))
        assert word in line, (logs, line)
    data = _strict_json(_ok(["validate", "analyze", str(good), "--format", "json"]))
    assert data["runs"][0]["onset_epoch"] == 20 and data["runs"][0]["fn_star"] == 1.0


# ----------------------------------------------------------------------------- train
TINY = ["validate", "train", "--dataset", "gaussian", "--per-class", "4", "--epochs", "1,2",
        "--depth", "1", "--width", "8", "--batch-size", "16", "--nc-every", "1",
        "--no-progress", "--format", "json"]
LOG_COLUMNS = ["run_id", "time", "time_unit", "phase", "loss", "fn", "nc1", "nc1_trace",
               "nc2_etf", "nc2_etf_w", "nc2_equinorm", "nc2_equinorm_w", "nc2_angle", "nc3",
               "nc3_paper", "nc4", "cdnv", "class_mean_norm", "within_energy", "w_norm",
               "accuracy", "test_accuracy", "model", "dataset", "condition", "seed"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A two-phase training of a one-hidden-layer MLP on a tiny Gaussian mixture (1 + 2 epochs,
    a record every epoch), onset threshold 10 so that the first MSE record is the onset."""
    out = tmp_path_factory.mktemp("train") / "run"
    data = _strict_json(_ok([*TINY, "--onset-threshold", "10", "--out", str(out)]))
    return out, data


def test_train_writes_the_log_the_readme_describes(tiny_run):
    """The folder holds log.parquet and log.csv (the same table), run.json, the figure and the
    two phase-end checkpoints; the log has the trajectory columns, one record per epoch,
    phases 1, 1, 2, 2, time in epochs and the run's labels."""
    out, _ = tiny_run
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "checkpoints/phase1_end.pt", "checkpoints/phase2_end.pt", "log.csv", "log.parquet",
        "run.json", "training.png"]
    log = read_table(out / "log.parquet")
    csv = read_table(out / "log.csv")
    assert [c for c in LOG_COLUMNS if c not in log.columns] == []
    assert list(csv.columns) == list(log.columns)
    for column in log.columns:
        if log[column].dtype.kind == "f":
            np.testing.assert_allclose(csv[column], log[column], rtol=1e-15)
        else:
            assert csv[column].astype(str).tolist() == log[column].astype(str).tolist()
    assert log["time"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert log["phase"].tolist() == [1, 1, 2, 2]
    assert set(log["time_unit"]) == {"epoch"}
    assert set(log["run_id"]) == {"mlp_gaussian_s0"}
    assert (set(log["model"]), set(log["dataset"]), set(log["condition"]), set(log["seed"])) \
        == ({"mlp"}, {"gaussian"}, {"mlp8"}, {0})


def test_train_summary_equals_onset_functions_on_its_log(tiny_run):
    """The json summary (also in run.json) has the onset epoch and fn* that ncsim.onset gives on
    the log's phase-2 records, and the log's min / final values; run.json records the options."""
    out, data = tiny_run
    log = read_table(out / "log.parquet")
    run_json = json.loads((out / "run.json").read_text())
    (summary,) = data["runs"]
    assert data["out"] == str(out)
    assert run_json["summary"] == summary
    two = log[log["phase"] == 2]
    when = onset_time(two["time"].to_numpy(), two["nc1_trace"].to_numpy(), 10.0, 1, False)
    assert summary["onset_epoch"] == when == 2.0
    assert summary["fn_star"] == value_at(two["time"].to_numpy(), two["fn"].to_numpy(), when,
                                          False) == log["fn"].iloc[2]
    assert summary["min_metric"] == log["nc1_trace"].min()
    assert summary["final_fn"] == log["fn"].iloc[-1]
    assert summary["nc1_start_phase2"] == log["nc1_trace"].iloc[2]
    assert summary["final_accuracy"] == log["accuracy"].iloc[-1]
    assert (summary["run"], summary["seed"], summary["last_epoch"]) == ("mlp_gaussian_s0", 0, 3.0)
    config = run_json["config"]
    assert [p["epochs"] for p in config["phases"]] == [1, 2]
    assert [p["batch_size"] for p in config["phases"]] == [16, 16]
    assert (config["depth"], config["width"], config["nc_every"], config["seed"]) == (1, 8, 1, 0)
    assert config["data_args"] == {"name": "gaussian", "per_class": 4, "test_per_class": None,
                                   "seed": 0, "root": None}


def test_train_log_analyzed_gives_the_train_summary(tiny_run):
    """validate analyze on the written log (Parquet and CSV) gives the run's onset and fn* of
    the training summary."""
    out, data = tiny_run
    (summary,) = data["runs"]
    for name in ("log.parquet", "log.csv"):
        result = _strict_json(_ok(["validate", "analyze", str(out / name), "--onset-threshold",
                                   "10", "--format", "json"]))
        (run,) = result["runs"]
        assert run["run"] == "mlp_gaussian_s0"
        assert run["onset_epoch"] == summary["onset_epoch"]
        assert run["fn_star"] == summary["fn_star"]


def test_train_cpu_small_preset_on_digits_with_table_output(tmp_path):
    """--preset cpu-small trains on the digits with 10 samples per class by default (recorded in
    run.json), an MLP of depth 4 and width 128, and --format table prints the summary table
    naming the log."""
    out = tmp_path / "digits"
    result = invoke(["validate", "train", "--preset", "cpu-small", "--epochs", "1,2",
                     "--nc-every", "1", "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"# training run (log: {out / 'log.parquet'})")
    assert "mlp_digits_s0" in result.stdout
    config = json.loads((out / "run.json").read_text())["config"]
    assert config["data_args"] == {"name": "digits", "per_class": 10, "test_per_class": None,
                                   "seed": 0, "root": None}
    assert (config["depth"], config["width"]) == (4, 128)
    assert [(p["loss"], p["epochs"]) for p in config["phases"]] == [("ce", 1), ("mse", 2)]
    log = read_table(out / "log.parquet")
    assert log["time"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert (set(log["dataset"]), set(log["condition"])) == ({"digits"}, {"mlp128"})


@pytest.mark.parametrize("extra, words", [
    (["--onset-threshold", "0"], ["--onset-threshold", "> 0"]),
    (["--onset-threshold", "-1"], ["--onset-threshold", "> 0"]),
    (["--onset-threshold", "nan"], ["--onset-threshold", "finite"]),
    (["--onset-threshold", "inf"], ["--onset-threshold", "finite"]),
    (["--out", "FILE"], ["--out", "is a file"]),
    (["--device", "foo"], ["unknown device 'foo'", "cpu, cuda, cuda:N, mps"]),
    (["--device", "cuda:x"], ["unknown device 'cuda:x'"]),
    (["--alpha", "2"], ["--alpha", "--intervene-epoch"]),
])
def test_train_bad_options_are_refused_before_training(extra, words, tmp_path, monkeypatch):
    """A threshold that is not a finite number > 0, an --out that is a file, a device torch
    does not know and --alpha without --intervene-epoch: one line, no training, no folder."""
    import ncsim.validate.train as train_module

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(train_module, "train", no_training)
    (tmp_path / "file").write_text("")
    extra = [str(tmp_path / "file") if e == "FILE" else e for e in extra]
    line = error_line(invoke([*TINY, "--out", str(tmp_path / "run"), *extra]))
    for word in words:
        assert word in line, (word, line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_train_intervention_rescales_the_features_at_its_epoch(tmp_path):
    """--intervene-epoch 1 --alpha 2: the record at epoch 1 is taken after the rescale, so its
    fn is twice the fn_before_intervention of the summary (a ReLU layer is homogeneous)."""
    out = tmp_path / "run"
    data = _strict_json(_ok([*TINY, "--epochs", "1,1", "--intervene-epoch", "1", "--alpha", "2",
                             "--out", str(out)]))
    log = read_table(out / "log.parquet")
    before = data["runs"][0]["fn_before_intervention"]
    assert before is not None and before > 0
    assert log.loc[log["time"] == 1.0, "fn"].iloc[-1] == pytest.approx(2 * before, rel=1e-5)


def test_compare_bad_out_or_threshold_is_refused_before_comparing(tmp_path, monkeypatch):
    """compare with an --out that is a file or a threshold <= 0: one line before the (slow)
    comparison starts."""
    import ncsim.validate.compare as compare_module

    def no_compare(*args, **kwargs):
        raise AssertionError("comparison started")

    monkeypatch.setattr(compare_module, "compare_run", no_compare)
    (tmp_path / "file").write_text("")
    for extra, word in ((["--out", str(tmp_path / "file")], "is a file"),
                        (["--onset-threshold", "0"], "--onset-threshold")):
        line = error_line(invoke(["validate", "compare", "--run", str(tmp_path), *extra]))
        assert word in line, line


def test_library_phase_diagram_refuses_fractional_integer_axes():
    """phase_diagram cut K = 2.99 down to 2 and reported the row as K = 2.99; the integer axes
    (K, n, depth) now refuse values that are not whole numbers, and take whole floats."""
    from ncsim.errors import InputError
    from ncsim.theory.phase import phase_diagram

    base = {"loss": "mse", "bias": "none", "n": 2, "d": 8, "depth": 1, "lambda_b": 0.0,
            "init_scale": 0.1}
    with pytest.raises(InputError, match="phase axis K takes integers, got 2.99"):
        phase_diagram("K", [2.99], "lambda", [1e-2], base)
    rows = phase_diagram("K", [3.0], "lambda", [1e-2], base)
    assert rows[0]["K"] == 3.0 and rows[0]["phase"] == "collapse"

