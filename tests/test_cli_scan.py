"""Scan of the command line at odd and extreme option values (exit 2 with one line, never a
traceback; exit-0 outputs well-formed and equal to the library's values).

Fixed findings: -n, --width, --records, --threads near 2^63 and an rk4 dt whose step count
overflows (tracebacks; now bounded in the specs and options), theory onset at init 1e-300
(the mode ODE's ArithmeticError, now reported in the row), lambda_H / lambda_W overflowing
at a subnormal lambda_W (an error about a ratio never given), a collapsed run stopped at rest
between two record times read as not_collapsed, nc1_rates' warning from the branch not taken.
growth_rate at lambda_W = 1e300 (the square of lambda_W - lambda_H overflowed: now hypot).
Known limits (strict xfail): numpy warnings of squares past float64 at init scales near the
float limits.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import pytest
from cli_helpers import error_line, invoke

from ncsim.theory.critical import critical_table
from ncsim.theory.dynamics import growth_rate
from ncsim.theory.equilibrium import equilibrium
from ncsim.theory.prediction import predicted_onset

TINY = ["simulate", "-K", "2", "-n", "2", "-d", "4", "--t-end", "1", "--records", "3",
        "--no-theory", "--format", "json"]
THEORY = ["-K", "2", "-n", "2", "-d", "4"]
BIG = str(2**63 - 1)


def _strict_json(text: str) -> dict:
    """JSON without NaN / Infinity tokens (the contract prints NaN as null)."""
    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")
    return json.loads(text, parse_constant=refuse)


def _no_runtime_warnings(args: list[str]):
    """Invoke ncsim ARGS and return (result, RuntimeWarnings raised meanwhile)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = invoke(args)
    return result, [w for w in caught if issubclass(w.category, RuntimeWarning)]


# ------------------------------------------------------------------ bad input: one line, exit 2

@pytest.mark.parametrize("option, value, word", [
    ("--lambda-w", "1" + "0" * 400, "not a finite number"),
    ("--init-scale", "1e-400", "underflows to 0"),
    ("--rtol", "5e-324", "rtol"),
    ("-K", "1" * 5000, "out of range"),
    ("--seed", "18446744073709551616", "out of range"),
    ("--t-end", "-0.0", "t_end"),
    ("--dt", "1e", "not a number"),
])
def test_simulate_extreme_values_are_one_line_errors(option, value, word):
    """An extreme simulate value exits 2 with one Error line that says what is wrong."""
    line = error_line(invoke([*TINY, option, value]))
    assert word in line


@pytest.mark.parametrize("option, value", [("--lambda-w", "nan"), ("--init-scale", "inf"),
                                           ("--onset-threshold", "0"), ("--ratio", "1,1"),
                                           ("--depth", "-0.0"), ("-K", "1e300")])
def test_theory_extreme_values_are_one_line_errors(option, value):
    """A non-finite, zero or malformed theory value exits 2 naming the option."""
    line = error_line(invoke(["theory", "onset", *THEORY, option, value]))
    assert option.split("/")[0] in line


def test_unicode_digit_reads_as_its_number():
    """A Unicode digit ('٣', Python's int) is read as the number it spells (--seed 3)."""
    result = invoke([*TINY, "--seed", "٣"])
    assert result.exit_code == 0, result.output
    assert _strict_json(result.stdout)["runs"][0]["init_seed"] == 3


def test_out_that_is_a_file_is_refused(tmp_path):
    """simulate --out naming an existing file, or a folder below one, exits 2 (one line)."""
    target = tmp_path / "afile"
    target.write_text("x")
    assert "file" in error_line(invoke([*TINY, "--out", str(target)]))
    assert "not a folder" in error_line(invoke([*TINY, "--out", str(target / "sub")]))
    assert target.read_text() == "x"


def test_phase_diagram_out_that_is_a_folder_is_refused(tmp_path):
    """theory phase-diagram --out naming a folder exits 2 with one line."""
    error_line(invoke(["theory", "phase-diagram", "-K", "2", "-n", "2", "--xs", "1e-3,1e-2",
                       "--out", str(tmp_path)]))


# --------------------------------------------------------------- exit 0: well-formed, == API

@pytest.mark.parametrize("loss, bias, K, n, d, depth, lw, lh, lb, scale", [
    ("ce", "none", 2, 2, 4, 1, 1e-3, 1e-3, 0.0, 0.1),
    ("mse", "reg", 4, 1, 8, 1, 1e-3, 1e-4, 2e-3, 1e-3),
    ("ce", "none", 3, 4, 4, 3, 1e-3, 2e-3, 0.0, 0.1),
    ("ce", "none", 2, 3, 4, 1, 0.0, 1e-3, 0.0, 0.1),
])
def test_theory_onset_json_equals_the_library(loss, bias, K, n, d, depth, lw, lh, lb, scale):
    """theory onset --format json prints the library's equilibrium, thresholds and onset."""
    args = ["theory", "onset", "--loss", loss, "--bias", bias, "-K", str(K), "-n", str(n),
            "-d", str(d), "--depth", str(depth), "--lambda-w", repr(lw), "--lambda-h",
            repr(lh), "--init-scale", repr(scale)] + (["--lambda-b", repr(lb)] if lb else [])
    result = invoke(args)
    assert result.exit_code == 0, result.output
    row = _strict_json(result.stdout)["results"][0]
    ratio = lh / lw if lw > 0 and lh > 0 else 1.0
    expected = {k: v for k, v in equilibrium(loss, bias, K, n, lw, lh, lb, depth).to_dict()
                .items() if isinstance(v, float)}
    expected.update(critical_table(loss, bias, K, n, depth, ratio))
    expected["growth_rate"] = float(growth_rate(K, n, lw, lh, depth))
    pred = predicted_onset(loss, bias, K, n, d, lw, lh, scale, 0.01, lb, depth)
    expected.update(onset_time=pred.onset_time, lead_time=pred.lead_time)
    for key, value in expected.items():
        if isinstance(value, float) and math.isnan(value):
            assert row[key] is None, key
        elif isinstance(value, float) and math.isinf(value):  # json: an infinity is "inf"
            assert row[key] == ("inf" if value > 0 else "-inf"), key
        else:
            assert row[key] == pytest.approx(value, rel=1e-12), key


def test_simulate_csv_out_reads_back(tmp_path):
    """simulate --out with csv tables writes tables that pandas reads back, one run."""
    import pandas as pd

    out = tmp_path / "rün_∂"
    result = invoke([*TINY, "--out", str(out), "--table-format", "csv"])
    assert result.exit_code == 0, result.output
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 1 and runs["run_id"][0] == _strict_json(result.stdout)["runs"][0][
        "run_id"]
    assert set(pd.read_csv(out / "trajectories.csv")["run_id"]) == set(runs["run_id"])


def test_lambda_w_tiny_but_representable_gives_a_row():
    """theory equilibrium at lambda_w = 1e-300 (allowed: >= 0) prints a valid row."""
    result = invoke(["theory", "equilibrium", *THEORY, "--lambda-w", "1e-300"])
    assert result.exit_code == 0, result.output
    assert _strict_json(result.stdout)["results"][0]["lambda_w"] == 1e-300


# ------------------------------------------------------------------------------ findings (bugs)

def test_huge_per_class_is_a_one_line_error():
    """simulate -n 2^63-1 (K = 2) exits 2 with one line (too large), not a traceback."""
    error_line(invoke([*TINY, "-n", BIG]))


def test_huge_width_is_a_one_line_error():
    """simulate --model deep --width 2^63-1 exits 2 with one line, not a traceback."""
    error_line(invoke([*TINY, "--model", "deep", "--depth", "2", "--width", BIG]))


def test_huge_records_is_a_one_line_error():
    """simulate --records 2^63-1 exits 2 with one line, not a traceback."""
    error_line(invoke([*TINY, "--records", BIG]))


def test_huge_threads_is_a_one_line_error():
    """simulate --threads 2^63-1 exits 2 with one line (or runs), never a traceback."""
    result = invoke([*TINY, "--threads", BIG])
    assert result.exit_code in (0, 2), repr(result.exception)
    if result.exit_code == 2:
        error_line(result)


def test_subnormal_fixed_step_is_not_a_traceback():
    """simulate --solver rk4 --dt 5e-324 exits 2 with one line (or stops at max_steps)."""
    result = invoke([*TINY, "--solver", "rk4", "--dt", "5e-324", "--max-steps", "5"])
    if result.exit_code == 2:
        error_line(result)
    else:
        assert result.exit_code == 0, result.exception
        assert _strict_json(result.stdout)["runs"][0]["stop"] == "max_steps"


@pytest.mark.parametrize("command", ["onset", "equilibrium"])
def test_tiny_init_scale_is_not_a_traceback(command):
    """theory onset/equilibrium --init-scale 1e-300 (a finite number > 0) never tracebacks."""
    result = invoke(["theory", command, *THEORY, "--init-scale", "1e-300"])
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    if result.exit_code == 2:
        error_line(result)
    else:
        assert result.exit_code == 0
        _strict_json(result.stdout)


def test_subnormal_lambda_w_names_the_overflowing_ratio():
    """theory equilibrium --lambda-w 5e-324: lambda_H / lambda_W overflows, one line asks for
    --ratio; with --ratio given the row is printed."""
    result = invoke(["theory", "equilibrium", *THEORY, "--lambda-w", "5e-324"])
    assert "overflows; give the ratio of lambda_crit with --ratio" in error_line(result)
    result = invoke(["theory", "equilibrium", *THEORY, "--lambda-w", "5e-324", "--ratio", "1"])
    assert result.exit_code == 0, result.stderr
    assert _strict_json(result.stdout)["results"][0]["lambda_w"] == 5e-324


def test_steady_stop_between_records_keeps_the_onset():
    """A collapsed run stopped at rest before its next record has status ok, not
    not_collapsed (K 2, n 2, d 4, t_end 1e5, 3 records, gtol 1e-9)."""
    result = invoke(["simulate", "-K", "2", "-n", "2", "-d", "4", "--t-end", "1e5",
                     "--records", "3", "--gtol", "1e-9", "--no-theory", "--format", "json"])
    assert result.exit_code == 0, result.output
    run = _strict_json(result.stdout)["runs"][0]
    assert run["stop"] == "steady" and run["final_nc1_trace"] < 1e-10
    assert run["status"] == "ok"


@pytest.mark.parametrize("option, value", [
    ("--lambda-w", "1e300"),
    ("--lambda-h", "18446744073709551616")])
def test_huge_decay_theory_raises_no_runtime_warning(option, value):
    """theory threshold at a huge decay prints its row without numpy RuntimeWarnings."""
    result, caught = _no_runtime_warnings(["theory", "threshold", *THEORY, option, value])
    assert result.exit_code == 0, result.output
    assert not caught, [str(w.message) for w in caught]


@pytest.mark.parametrize("scale", ["1e300", "1e-200"])
def test_extreme_init_scale_simulate_raises_no_runtime_warning(scale):
    """simulate (theory columns on) at init scale 1e300 or 1e-200 warns nothing."""
    args = [a for a in TINY if a != "--no-theory"] + ["--init-scale", scale]
    result, caught = _no_runtime_warnings(args)
    assert result.exit_code == 0, result.output
    assert not caught, [str(w.message) for w in caught]


def test_predicted_onset_at_an_init_scale_whose_square_underflows_is_the_small_init_limit():
    """Below init scale ~1e-2 the predicted onset of this point no longer depends on the
    scale (8.4732...): at 1e-200, whose square underflows, it is the 1e-100 value, not
    'no onset' from 0/0 energies."""
    def onset(scale: str) -> object:
        args = [a for a in TINY if a != "--no-theory"] + ["--init-scale", scale]
        result = invoke(args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["runs"][0]["onset_time_theory"]

    small = onset("1e-100")
    assert small == pytest.approx(8.4732015808, rel=1e-9)
    assert onset("1e-200") == pytest.approx(small, rel=1e-12)


def test_huge_per_class_subprocess_exit_status():
    """ncsim simulate -n 2^63-1 as a process exits 2 with one stderr line, no traceback."""
    code = "import sys; from ncsim.cli import main; sys.argv[0] = 'ncsim'; main()"
    proc = subprocess.run([sys.executable, "-c", code, *TINY, "-n", BIG],
                          capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_a_t_end_whose_default_first_record_underflows_names_t_end():
    """--t-end 5e-324: t_end / 10 is 0, so the error names t_end, not the t_first never given."""
    line = error_line(invoke([a if a != "1" else "5e-324" for a in TINY]))
    assert "t_end 5e-324 is too small for records" in line


def test_growth_rate_and_nc1_rates_at_decays_past_1e154_are_exact():
    """lambda_W = 1e300, lambda_H = 5e-4 (K = 2, n = 2): mu = -lambda_H to rounding (the
    decays far above g) and the early NC1 rate 4 g^2 / (2 lambda_W) = 2.5e-301."""
    from ncsim.theory.dynamics import nc1_rates

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mu = float(growth_rate(2, 2, 1e300, 5e-4))
        early, late = nc1_rates(2, 2, 1e300, 5e-4)
    assert mu == pytest.approx(-5e-4, rel=1e-12)
    assert float(early) == pytest.approx(2.5e-301, rel=1e-12) and float(late) == 1e-3
