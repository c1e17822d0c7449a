"""The ``ncsim theory`` command line."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from click.testing import CliRunner

from ncsim.spec import ModelSpec, Regularization, RunSpec, TimeScale
from ncsim.theory import theory_columns
from ncsim.theory.cli import theory
from ncsim.theory.lowrank import lower_rank_check

KEYS = ["collapsed", "fn_star", "w_norm_star", "class_mean_norm_star", "loss_star",
        "margin_star", "lambda_crit", "growth_rate", "onset_time", "lead_time"]


def run(*args: str):
    return CliRunner().invoke(theory, list(args))


@pytest.mark.parametrize("cmd", ["equilibrium", "threshold", "onset"])
def test_json_keys_and_grid(cmd):
    res = run(cmd, "--loss", "ce", "-K", "4", "-n", "5", "-d", "8",
              "--lambda-w", "1e-3,2e-3", "--lambda-h", "1e-3", "--format", "json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)["results"]
    assert len(rows) == 2
    for key in KEYS:
        assert key in rows[0]


def test_derive_latex():
    res = run("derive", "--loss", "ce", "--format", "latex")
    assert res.exit_code == 0
    for token in ("\\log", "\\Lambda", "\\sqrt{n}", "sigma star", "margin star", "K - 1"):
        assert token in res.output


def test_deep_latex_and_text():
    res = run("threshold", "--loss", "mse", "--depth", "2", "-K", "4", "-n", "5",
              "--format", "latex")
    assert res.exit_code == 0 and "tau glob" in res.output
    res = run("equilibrium", "--loss", "mse", "--bias", "reg", "--lambda-b", "0.5",
              "--format", "text")
    assert res.exit_code == 0 and "fn_star" in res.output


def test_equilibrium_checks_lower_rank_states_on_request():
    """Deep CE just below Lambda_crit (K = 3, n = 2, L = 2): the ETF state (objective 1.0846)
    is beaten by a rank-1 state (1.0715, theory README); without --check-lower-rank the
    comparison is not made (null), and one layer never has a better lower-rank state."""
    args = ["equilibrium", "--loss", "ce", "-K", "3", "-n", "2", "--depth", "1,2",
            "--lambda-w", "0.14455", "--lambda-h", "0.14455", "--format", "json"]
    res = run(*args)
    assert res.exit_code == 0, res.output
    plain = {r["depth"]: r for r in json.loads(res.output)["results"]}
    assert plain[2]["lower_rank_better"] is None and plain[1]["lower_rank_better"] is False
    assert "lower_rank_objective" not in plain[2]
    res = run(*args, "--check-lower-rank")
    assert res.exit_code == 0, res.output
    checked = {r["depth"]: r for r in json.loads(res.output)["results"]}
    deep = checked[2]
    assert deep["lower_rank_better"] is True and deep["lower_rank"] == 1
    assert deep["objective_star"] == pytest.approx(1.0846, abs=1e-4)
    assert deep["lower_rank_objective"] == pytest.approx(1.0715, abs=1e-4)
    state = lower_rank_check(3, 2, 0.14455, 2).state(1, 0.14455)
    for key in ("objective", "fn", "w_norm", "loss"):
        assert deep[f"lower_rank_{key}"] == pytest.approx(getattr(state, key), rel=1e-12), key
        assert checked[1][f"lower_rank_{key}"] is None  # NaN is written as null
    assert deep["lower_rank_fn"] > 0 and deep["lower_rank_loss"] > 0
    assert checked[1]["lower_rank_better"] is False and checked[1]["lower_rank"] is None


@pytest.mark.parametrize("args", [
    ["equilibrium", "--loss", "hinge"],
    ["equilibrium", "-K", "1"],
    ["threshold", "--lambda-w", "-1"],
    ["onset", "--lambda-w", "1e-4..x:3"],
    ["equilibrium", "--bias", "reg", "--lambda-b", "0"],
    ["equilibrium", "--format", "yaml"],
    ["phase-diagram", "--x", "speed"],
])
def test_bad_input_exit_2_one_line(args):
    res = CliRunner().invoke(theory, args)
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    assert "Traceback" not in res.output


def test_phase_diagram(tmp_path):
    out = tmp_path / "phase.png"
    res = run("phase-diagram", "--loss", "mse", "--depth", "2", "-K", "4", "-n", "5",
              "--x", "lambda", "--xs", "1e-3..1e-1:5", "--y", "init_scale",
              "--ys", "0.01..1:4", "--format", "json", "--out", str(out))
    assert res.exit_code == 0, res.output
    phases = {r["phase"] for r in json.loads(res.output)["results"]}
    assert {"collapse", "trapped", "vanishing"} <= phases
    assert out.exists() and out.stat().st_size > 1000


def test_theory_columns():
    spec = RunSpec(model=ModelSpec(loss="mse", classes=4, per_class=5, dim=8),
                   reg=Regularization(1e-2, 1e-2)).validate()
    row = theory_columns(spec)
    assert row["collapsed_theory"] is True and row["fn_star_theory"] > 0
    assert 0 < row["onset_time_theory"] < 1e4
    relu = RunSpec(model=ModelSpec(kind="deep", depth=3, activation="relu", classes=4,
                                   per_class=5, dim=8)).validate()
    row = theory_columns(relu)
    assert row["collapsed_theory"] is None and row["fn_star_theory"] != row["fn_star_theory"]
    imb = RunSpec(model=ModelSpec(classes=3, per_class=(2, 3, 4), dim=8)).validate()
    assert theory_columns(imb)["collapsed_theory"] is None


def test_theory_columns_with_time_scales_keep_the_equilibrium():
    """Time-scale factors change the path, not the minimiser: same equilibrium, no onset."""
    spec = RunSpec(model=ModelSpec(loss="mse", classes=4, per_class=5, dim=8),
                   reg=Regularization(1e-2, 3e-3)).validate()
    scaled = dataclasses.replace(spec, time_scale=TimeScale(eta_h=50.0, eta_w=0.5)).validate()
    plain, row = theory_columns(spec), theory_columns(scaled)
    for key in ("fn_star_theory", "w_norm_star_theory", "loss_star_theory",
                "lambda_crit_theory", "collapsed_theory"):
        assert row[key] == plain[key], key
    assert math.isfinite(plain["onset_time_theory"]) and math.isnan(row["onset_time_theory"])
    assert row["theory_regime"] == f"{plain['theory_regime']}; equilibrium only: the onset is " \
        "predicted for unit time-scale factors"
    no_min = dataclasses.replace(spec, reg=Regularization(0.0, 3e-3),
                                 time_scale=TimeScale(eta_h=2.0)).validate()
    row = theory_columns(no_min)
    assert row["theory_regime"].startswith("no_minimiser") and "equilibrium only" in row[
        "theory_regime"]
    assert math.isnan(row["fn_star_theory"]) and math.isnan(row["onset_time_theory"])


@pytest.mark.parametrize("cmd", ["threshold", "derive"])
def test_word_options_take_any_case_as_simulate_does(cmd):
    """--loss MSE --bias FREE --format JSON is --loss mse --bias free --format json."""
    upper = run(cmd, "--loss", "MSE", "--bias", "FREE", "--format", "JSON")
    lower = run(cmd, "--loss", "mse", "--bias", "free", "--format", "json")
    assert upper.exit_code == 0, upper.output
    assert json.loads(upper.output) == json.loads(lower.output)


def test_help_shows_the_choices_and_numbers():
    text = run("onset", "--help").output
    for shown in ("--loss [ce|mse]", "--bias [none|free|reg]", "--format [json|latex|text]",
                  "--lambda-w NUMBERS"):
        assert shown in text


@pytest.mark.parametrize("cmd", ["equilibrium", "onset"])
def test_d_below_the_rank_of_the_minimiser_is_flagged_as_in_the_run_table(cmd):
    """K = 10: the collapsed minimiser has rank 9 (CE, no bias), which d = 5 cannot hold. The
    row says so (minimiser_rank 9, applies_at_d false, no onset, the run table's regime
    text) with a note on stderr; at d = 9 the onset is predicted and equals the run table's
    onset_time_theory for the same point."""
    res = run(cmd, "-K", "10", "-n", "5", "-d", "5,9", "--format", "json")
    assert res.exit_code == 0, res.output
    low, high = json.loads(res.stdout)["results"]
    assert (low["minimiser_rank"], low["applies_at_d"]) == (9, False)
    assert low["onset_time"] is None
    assert low["onset_regime"] == "not_applicable: d below the rank of the minimiser"
    assert "note: at 1 of 2 point(s) d is below the rank of the collapsed minimiser" in res.stderr
    assert (high["minimiser_rank"], high["applies_at_d"]) == (9, True)
    spec = RunSpec(model=ModelSpec(loss="ce", classes=10, per_class=5, dim=9),
                   reg=Regularization(lambda_w=high["lambda_w"], lambda_h=high["lambda_h"]))
    spec = dataclasses.replace(spec, init=dataclasses.replace(spec.init,
                                                              scale=high["init_scale"]))
    assert high["onset_time"] == pytest.approx(theory_columns(spec)["onset_time_theory"],
                                               rel=1e-12)
    low_row = theory_columns(dataclasses.replace(spec, model=dataclasses.replace(spec.model,
                                                                                 dim=5)))
    assert low_row["theory_regime"] == low["onset_regime"]


def test_bias_reg_without_lambda_b_takes_simulate_s_default():
    """--bias reg without --lambda-b is lambda_b = 1e-3 (ncsim simulate's default): the same
    rows as --lambda-b 1e-3, and not those of another lambda_b."""
    base = ["equilibrium", "--loss", "mse", "--bias", "reg", "-K", "4", "-n", "5"]
    default = run(*base)
    assert default.exit_code == 0, default.output
    written = run(*base, "--lambda-b", "1e-3")
    other = run(*base, "--lambda-b", "1e-2")
    assert json.loads(default.output) == json.loads(written.output)
    assert json.loads(default.output) != json.loads(other.output)
    free = run("equilibrium", "--loss", "mse", "--bias", "free", "-K", "4", "-n", "5")
    assert free.exit_code == 0 and json.loads(free.output)["results"][0]["lambda_b"] == 0.0
