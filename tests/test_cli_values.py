"""What the command line makes of its option values: log ranges and their integer rounding,
the grid limit, blank output paths, and simulate options reaching the run they describe
(checked against the library called directly with the same run)."""

from __future__ import annotations

import json
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from cli_helpers import error_line, invoke

import ncsim.flow as flow
import ncsim.theory.cli as theory_cli
import ncsim.validate.compare as compare_module
import ncsim.validate.data as data_module
import ncsim.validate.train as train_module
from ncsim.cli_errors import check_out_file
from ncsim.errors import InputError
from ncsim.params import grid, parse_ints, parse_values
from ncsim.plots import trajectory_figure
from ncsim.spec import (
    InitSpec,
    ModelSpec,
    OnsetSpec,
    Regularization,
    RunSpec,
    SolverSpec,
    TimeScale,
)

TINY = ["-K", "3", "-n", "2", "-d", "4", "--t-end", "50", "--records", "10", "--no-progress",
        "--no-theory"]


# ------------------------------------------------------------------ ranges and grids


def test_log_range_has_a_constant_ratio_and_exact_ends():
    """lo..hi:count is a geometric sequence: 1e-4..1e-1:16 has 16 values, the ends exactly
    as written and each step the ratio 10^(3/15) (to 1e-12, a few roundings of a float)."""
    values = parse_values("1e-4..1e-1:16")
    assert len(values) == 16
    assert values[0] == 1e-4 and values[-1] == 1e-1
    step = 10 ** (3 / 15)
    for a, b in zip(values, values[1:]):
        assert b / a == pytest.approx(step, rel=1e-12)


def test_log_range_counts_down_and_a_single_count_gives_lo():
    """hi below lo counts down (1..1e-3:4 is 1, 0.1, 0.01, 0.001, each a decade), and count 1
    gives lo alone."""
    assert parse_values("1..1e-3:4") == pytest.approx([1.0, 0.1, 0.01, 1e-3], rel=1e-12)
    assert parse_values("5..7:1") == [5.0]


def test_integer_log_range_rounds_each_value_to_the_nearest_integer():
    """An integer range rounds its geometric values: 1..100:4 is 1, 100^(1/3) = 4.64,
    100^(2/3) = 21.54, 100, so 1, 5, 22, 100 (truncation would give 4 and 21); 10..1:4 counts
    down 10, 4.64, 2.15, 1 -> 10, 5, 2, 1."""
    assert parse_ints("1..100:4") == [1, 5, 22, 100]
    assert parse_ints("10..1:4") == [10, 5, 2, 1]
    assert all(isinstance(v, int) for v in parse_ints("1..100:4"))


def test_a_grid_of_exactly_the_limit_is_built():
    """The limit is the largest grid allowed: 3 x 3 = 9 points pass a limit of 9 (last axis
    fastest), one more point than the limit is refused."""
    points = grid({"a": [1, 2, 3], "b": [4, 5, 6]}, limit=9)
    assert [(p["a"], p["b"]) for p in points] == [(a, b) for a in (1, 2, 3) for b in (4, 5, 6)]
    with pytest.raises(InputError, match="the grid has 9 points"):
        grid({"a": [1, 2, 3], "b": [4, 5, 6]}, limit=8)


def test_phase_diagram_of_exactly_the_limit_is_accepted(monkeypatch):
    """The phase diagram takes at most 100000 points: 1000 x 100 is allowed and reaches the
    library with every value (the library itself is replaced by a probe here)."""
    seen = {}

    def probe(x_axis, xv, y_axis, yv, base):
        seen.update(x=list(xv), y=list(yv))
        return []

    monkeypatch.setattr(theory_cli, "phase_diagram", probe)
    result = invoke(["theory", "phase-diagram", "--xs", "1e-4..1:1000", "--ys", "1e-4..1:100"])
    assert result.exit_code == 0, result.output
    assert (len(seen["x"]), len(seen["y"])) == (1000, 100)


def test_phase_diagram_depth_axis_takes_rounded_integers(monkeypatch):
    """The depth axis holds integers like K and n: 1..2:3 is 1, 1.414, 2, rounded to 1, 1, 2,
    and the repeated 1 counts once, so the library gets the integers 1 and 2."""
    seen = {}

    def probe(x_axis, xv, y_axis, yv, base):
        seen.update(axis=x_axis, x=list(xv), y=list(yv))
        return []

    monkeypatch.setattr(theory_cli, "phase_diagram", probe)
    result = invoke(["theory", "phase-diagram", "--x", "depth", "--xs", "1..2:3", "--y",
                     "lambda", "--ys", "1e-3"])
    assert result.exit_code == 0, result.output
    assert seen == {"axis": "depth", "x": [1, 2], "y": [1e-3]}
    assert all(type(v) is int for v in seen["x"])


# ------------------------------------------------------------------ output paths


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_out_is_refused_not_made_a_folder(blank, tmp_path, monkeypatch):
    """--out made of spaces is as empty as --out "": one line, nothing simulated, no folder
    named by the spaces."""
    monkeypatch.chdir(tmp_path)
    line = error_line(invoke(["simulate", *TINY, "--out", blank]))
    assert "empty path" in line
    assert list(tmp_path.iterdir()) == []


def test_an_out_file_that_is_a_folder_is_refused(tmp_path):
    """check_out_file refuses an existing folder (a file cannot be written there) and a blank
    path, and accepts a new file name in a writable folder."""
    with pytest.raises(InputError, match="is a folder; give a file name"):
        check_out_file(tmp_path)
    with pytest.raises(InputError, match="empty path"):
        check_out_file("  ")
    check_out_file(tmp_path / "new.png")


# ------------------------------------------------------------------ simulate options


def _one_run(args: list[str]) -> dict:
    result = invoke(["simulate", *TINY, *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    (run,) = json.loads(result.stdout)["runs"]
    return run


def test_free_bias_runs_with_no_bias_decay_and_reg_defaults_to_1e_3():
    """--bias free trains the bias without decay (lambda_b = 0, no --lambda-b needed); --bias
    reg without --lambda-b takes the stated default 1e-3."""
    free = _one_run(["--bias", "free"])
    assert (free["bias"], free["lambda_b"]) == ("free", 0.0)
    reg = _one_run(["--bias", "reg"])
    assert (reg["bias"], reg["lambda_b"]) == ("reg", 1e-3)


def test_time_scales_and_onset_stay_reach_the_run_as_given():
    """--eta-h, --eta-w, --eta-b and --onset-stay set their own fields: the row reports each
    value and its numbers equal those of the library run with that spec (the same
    computation, so equal to the last bit)."""
    run = _one_run(["--bias", "reg", "--lambda-b", "2e-3", "--eta-h", "2", "--eta-w", "0.5",
                    "--eta-b", "3", "--onset-stay", "2", "--lambda-w", "1e-2",
                    "--lambda-h", "1e-2"])
    assert (run["time_scale_eta_h"], run["time_scale_eta_w"], run["time_scale_eta_b"]) == (
        2.0, 0.5, 3.0)
    assert run["onset_stay"] == 2 and run["lambda_b"] == 2e-3
    spec = RunSpec(
        model=ModelSpec(kind="ufm", loss="ce", bias="reg", classes=3, per_class=2, dim=4),
        reg=Regularization(lambda_w=1e-2, lambda_h=1e-2, lambda_b=2e-3),
        init=InitSpec(kind="gaussian", scale=0.1, seed=0),
        time_scale=TimeScale(eta_h=2.0, eta_w=0.5, eta_b=3.0),
        solver=SolverSpec(t_end=50.0, records=10),
        onset=OnsetSpec(stay=2))
    (want,) = flow.simulate([spec], theory=False).runs.to_dict(orient="records")
    for key in ("final_fn", "final_nc1_trace", "steps", "t_final"):
        assert run[key] == want[key], key
    assert (run["onset_time"] is None and math.isnan(want["onset_time"])) or (
        run["onset_time"] == want["onset_time"])


def test_progress_bar_is_on_for_a_grid_and_off_for_one_run(monkeypatch):
    """Without --progress/--no-progress the bar is shown for a grid only (the help: [on for
    grids]); the flag overrides that either way."""
    shown = []
    real = flow.simulate

    def spy(specs, **kwargs):
        shown.append(kwargs["progress"])
        return real(specs, **kwargs)

    monkeypatch.setattr(flow, "simulate", spy)
    base = ["simulate", "-K", "3", "-n", "2", "-d", "4", "--t-end", "5", "--records", "3",
            "--no-theory", "--format", "json"]
    for extra in ([], ["--seed", "0,1"], ["--progress"], ["--seed", "0,1", "--no-progress"]):
        assert invoke([*base, *extra]).exit_code == 0
    assert shown == [False, True, True, False]


# ------------------------------------------------------------------ validate options


def test_compare_refuses_a_step_budget_below_one_before_comparing(tmp_path, monkeypatch):
    """--max-steps 0 leaves the surrogate no step: one line naming the option, before the
    comparison starts; 1 is the smallest budget taken."""
    calls = []

    def probe(*args, **kwargs):
        calls.append(kwargs["max_steps"])
        raise InputError("probe reached")

    monkeypatch.setattr(compare_module, "compare_run", probe)
    line = error_line(invoke(["validate", "compare", "--run", str(tmp_path), "--max-steps",
                              "0"]))
    assert "--max-steps must be >= 1, got 0" in line and calls == []
    line = error_line(invoke(["validate", "compare", "--run", str(tmp_path), "--max-steps",
                              "1"]))
    assert line == "Error: probe reached" and calls == [1]


@pytest.mark.parametrize(("args", "condition"), [
    (["--preset", "resnet20"], "resnet20"),
    (["--preset", "mlp", "--width", "64"], "mlp64"),
])
def test_train_labels_the_condition_as_the_paper_names_it(args, condition, tmp_path,
                                                          monkeypatch):
    """The log's condition is the architecture with its width (mlp64), or the architecture
    alone where the width is no parameter of it (resnet20, as the paper's logs name it); the
    training itself is replaced by a probe that keeps the configuration."""
    seen = []

    def probe(config, data, **kwargs):
        seen.append(config)
        raise InputError("probe reached")

    monkeypatch.setattr(data_module, "load_dataset", lambda *a, **k: None)
    monkeypatch.setattr(train_module, "train", probe)
    line = error_line(invoke(["validate", "train", *args, "--out", str(tmp_path / "run")]))
    assert line == "Error: probe reached"
    (config,) = seen
    assert config.labels["condition"] == condition
    assert config.labels["model"] == config.arch


# ------------------------------------------------------------------ the trajectory figure


def _labelled_runs(labels: list[float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trajectories of one run per label (records at t = 0, 1, 10) and their run table."""
    ids = [f"r{i:02d}" for i in range(len(labels))]
    traj = pd.DataFrame([{"run_id": rid, "time": t, "fn": 1.0 / (1.0 + t + i),
                          "nc1_trace": 0.5 / (1.0 + t)}
                         for i, rid in enumerate(ids) for t in (0.0, 1.0, 10.0)])
    return traj, pd.DataFrame({"run_id": ids, "lam": labels})


@pytest.mark.parametrize(("labels", "middle"), [
    ([1.0, 2.0, 3.0], 0.5),     # a span below a factor 10: linear, 2 halfway
    ([1.0, 10.0, 100.0], 0.5),  # a span above: logarithmic, 10 halfway
    ([1.0, 5.0, 9.0], 0.5),     # a factor 9: still linear (log would put 5 at 0.73)
])
def test_line_colours_follow_the_label_value_on_the_stated_scale(labels, middle):
    """Numeric labels colour the lines by value: linearly when they span at most a factor
    10, on a log scale beyond; the smallest is the colour map's start, the largest its end."""
    traj, runs = _labelled_runs(labels)
    fig = trajectory_figure(traj, runs, label_column="lam")
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "-"]
    cmap = plt.get_cmap("viridis")
    for line, where in zip(lines, (0.0, middle, 1.0), strict=True):
        np.testing.assert_allclose(line.get_color(), cmap(where))
    plt.close(fig)


@pytest.mark.parametrize(("count", "legend"), [(12, True), (13, False)])
def test_up_to_twelve_labelled_runs_get_a_legend_and_more_a_colour_bar(count, legend):
    """A legend keys up to 12 labelled runs (one entry each); from 13 on a colour bar of the
    label column does (a third axes), and there is no legend."""
    traj, runs = _labelled_runs([float(2**k) for k in range(count)])
    fig = trajectory_figure(traj, runs, label_column="lam")
    got = fig.axes[0].get_legend()
    if legend:
        assert len(fig.axes) == 2 and len(got.get_texts()) == count
    else:
        assert got is None and len(fig.axes) == 3 and fig.axes[2].get_ylabel() == "lam"
    plt.close(fig)


def _paper_log(path) -> None:
    """A log in the paper's schema: phase 1 at epochs 10, 20, phase 2 at 30, 40, 50; nc1 falls
    0.5, 0.3, 0.1, 1e-3, 5e-4 and nc2 0.5, 0.4, 0.2, 0.04, 0.005."""
    pd.DataFrame({"epoch": [10, 20, 30, 40, 50], "phase": [1, 1, 2, 2, 2],
                  "train": [0.9, 0.95, 1.0, 1.0, 1.0], "test": [0.8, 0.85, 0.9, 0.9, 0.9],
                  "nc1": [0.5, 0.3, 0.1, 1e-3, 5e-4], "nc2": [0.5, 0.4, 0.2, 0.04, 0.005],
                  "nc3": [0.5, 0.4, 0.3, 0.2, 0.1],
                  "feat_norm": [1.0, 1.5, 2.0, 3.0, 3.5]}).to_csv(path, index=False)


def test_analyze_interpolated_onset_keeps_its_fraction(tmp_path):
    """--interpolate crosses 0.01 between epoch 30 (nc1 0.1) and 40 (1e-3) halfway in log
    metric, so halfway in log time: sqrt(30 x 40) = 34.64..., printed as that number (not
    cut to a whole epoch) in json and in the table."""
    log = tmp_path / "baseline_s0.csv"
    _paper_log(log)
    args = ["validate", "analyze", str(log), "--preset", "ncsim", "--interpolate"]
    result = invoke([*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    (run,) = json.loads(result.stdout)["runs"]
    assert run["onset_epoch"] == pytest.approx(math.sqrt(1200.0), rel=1e-12)
    table = invoke(args)
    assert table.exit_code == 0, table.output
    assert "34.641" in table.stdout


def test_analyze_other_metric_takes_0_01_not_the_papers_nc1_threshold(tmp_path):
    """The paper's per-condition thresholds (0.05 for depth2) are nc1 thresholds: with
    --metric nc2_angle the rupa2026 preset searches phase 2 at 0.01, so nc2 0.2, 0.04, 0.005
    crosses at epoch 50 (at 0.05 it would be 40); with nc1 the depth2 threshold 0.05 holds."""
    log = tmp_path / "depth2_s0.csv"
    _paper_log(log)
    result = invoke(["validate", "analyze", str(log), "--metric", "nc2_angle", "--format",
                     "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    (run,) = data["runs"]
    assert (run["onset_epoch"], run["threshold"], data["rule"]["threshold"]) == (50, 0.01, 0.01)
    result = invoke(["validate", "analyze", str(log), "--format", "json"])
    data = json.loads(result.stdout)
    (run,) = data["runs"]
    assert (run["onset_epoch"], run["threshold"]) == (40, 0.05)
    assert data["rule"]["per_condition_threshold"] is True


def test_phase_diagram_ys_taken_from_xs_names_where_it_came_from():
    """Without --ys the y axis takes the values of --xs; an integer y axis given non-integers
    that way names both options (the user never typed --ys)."""
    res = invoke(["theory", "phase-diagram", "--x", "lambda_w", "--y", "K", "--xs", "1e-3"])
    assert res.exit_code == 2
    assert "--ys (not given: the values of --xs): 0.001 is not an integer" in error_line(res)


def test_theory_text_prints_a_missing_value_as_a_dash():
    """``--format text``: a null value (the onset regime of a command that predicts no
    onset) is printed as "--", as in the LaTeX table, not as Python's None."""
    res = invoke(["theory", "threshold", "--format", "text"])
    assert res.exit_code == 0
    line = next(x for x in res.stdout.splitlines() if x.startswith("onset_regime"))
    assert line.split() == ["onset_regime", "--"]
    assert "None" not in res.stdout
