"""Study analyses on hand-built run and trajectory tables: numbers, verdicts, figures.

Every table here is synthetic, so each expected number is worked out by hand from the values
put in: lead times of trajectories with fn = t, means and CVs of chosen fn* values, onset
series over depth, width and activation, and the interaction F test of the (architecture,
dataset) grid.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ncsim.study.analyses import (
    _cell_labels,
    _group_stats,
    _lead_rows,
    _lead_summary,
    _line_fig,
    _reduction_gap,
    activation,
    depth,
    grid,
    intervention,
    invariance,
    lead,
    weight_decay,
    width,
)
from ncsim.study.spec import load_study

HEAD = """name = "t"
title = "T"
question = "q?"
claim = "c."
analysis = "{analysis}"
"""

SQRT2 = math.sqrt(2.0)


def load(tmp_path, analysis, parts):
    """A study of the given analysis whose [[parts]] tables are ``parts`` (TOML text)."""
    path = tmp_path / "study.toml"
    path.write_text(HEAD.format(analysis=analysis) + parts)
    return load_study(path)


def part_toml(name, fixed="", **grid):
    """A simulated [[parts]] table: fixed parameters (TOML lines) and the grid axes."""
    lines = [f'[[parts]]\nname = "{name}"\nmodel = "simulated"\n{fixed}[parts.grid]']
    for key, values in grid.items():
        items = ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in values)
        lines.append(f"{key} = [{items}]")
    return "\n".join(lines) + "\n"


def frame(rows, part):
    """A run table: one row per dict, status "ok" unless given, run ids part-0, part-1, ..."""
    out = pd.DataFrame([{"status": "ok", **r} for r in rows])
    out.insert(0, "part", part)
    out.insert(0, "run_id", [f"{part}-{i}" for i in range(len(out))])
    return out


def linear_traj(run_ids, t_max=100, cap=None):
    """fn = t (capped at ``cap`` if given) and NC1 = 1 / t at t = 1, 2, ..., t_max."""
    t = np.arange(1.0, t_max + 1)
    parts = [pd.DataFrame({"run_id": pd.Series([], dtype=str), "time": [], "fn": [],
                           "nc1_trace": []})]
    for rid in run_ids:
        fn = t if cap is None or rid not in cap else np.minimum(t, cap[rid])
        parts.append(pd.DataFrame({"run_id": rid, "time": t, "fn": fn, "nc1_trace": 1.0 / t}))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture
def figdir(tmp_path):
    path = tmp_path / "figures"
    path.mkdir()
    return path


def written(section, figdir):
    """Names of the figure files a section lists, each checked to exist and be non-empty."""
    names = []
    for _, rel in section.figures:
        path = figdir / rel.split("/", 1)[1]
        assert path.is_file() and path.stat().st_size > 0, rel
        names.append(path.name)
    return names


# ----------------------------------------------------------------------------- group stats
def test_group_stats_counts_means_and_cvs():
    """Per group: run count, collapsed count (status ok, finite onset), fn* and onset mean/CV."""
    runs = pd.DataFrame({"g": ["a", "a", "a", "b", "b"],
                         "status": ["ok", "ok", "diverged", "ok", "ok"],
                         "onset_time": [90.0, 110.0, 5.0, 40.0, np.nan],
                         "fn_at_onset": [1.0, 3.0, 9.0, 2.0, 2.0]})
    out = _group_stats(runs, ["g"]).set_index("g")
    assert out.loc["a", "n_runs"] == 3 and out.loc["a", "n_collapsed"] == 2
    assert out.loc["a", "fn_star_mean"] == pytest.approx(2.0)
    assert out.loc["a", "fn_star_cv"] == pytest.approx(SQRT2 / 2.0)
    assert out.loc["a", "onset_mean"] == pytest.approx(100.0)
    assert out.loc["a", "onset_cv"] == pytest.approx(10.0 * SQRT2 / 100.0)
    assert out.loc["b", "n_runs"] == 2 and out.loc["b", "n_collapsed"] == 1
    assert out.loc["b", "fn_star_mean"] == 2.0 and np.isnan(out.loc["b", "fn_star_cv"])
    whole = _group_stats(runs, [])
    assert len(whole) == 1 and whole.loc[0, "n_collapsed"] == 3
    assert whole.loc[0, "onset_mean"] == pytest.approx(80.0)


# ----------------------------------------------------------------------------- invariance
def test_invariance_supports_with_cv_below_limit(tmp_path, figdir):
    """CV of fn* under 8% in every part with 3+ collapsed runs: supports, CV per part."""
    study = load(tmp_path, "invariance", part_toml("a", seed=[0, 1, 2])
                 + part_toml("b", seed=[0, 1]))
    runs = pd.concat([
        frame([{"seed": s, "onset_time": 10.0 + s, "fn_at_onset": f, "fn_star_theory": 1.0}
               for s, f in enumerate([0.95, 1.0, 1.05])], "a"),
        frame([{"seed": s, "onset_time": 10.0, "fn_at_onset": f}
               for s, f in enumerate([1.0, 5.0])], "b")], ignore_index=True)
    sec = invariance(study, runs, linear_traj(runs["run_id"]), figdir)
    assert sec.verdict == "supports"
    assert set(sec.numbers) == {"a"}  # b has 2 collapsed runs: not evaluable
    assert sec.numbers["a"]["cv"] == pytest.approx(0.05)
    assert sec.numbers["a"]["n"] == 3
    assert "a: CV 5.0% (n=3)" in sec.reason
    table = sec.tables[0][1].set_index("part")
    assert table.loc["a", "fn_star_theory_mean"] == 1.0
    assert table.loc["b", "fn_star_cv"] == pytest.approx(4.0 / SQRT2 / 3.0)
    assert written(sec, figdir) == ["fn_star_groups.png", "trajectories_a.png",
                                    "trajectories_b.png"]


def test_invariance_contradicts_and_inconclusive(tmp_path, figdir):
    """A part with CV >= 8% contradicts; no part with 3 collapsed runs is inconclusive."""
    study = load(tmp_path, "invariance", part_toml("a", seed=[0, 1, 2]))
    runs = frame([{"seed": s, "onset_time": 10.0, "fn_at_onset": f}
                  for s, f in enumerate([0.9, 1.0, 1.1])], "a")
    sec = invariance(study, runs, linear_traj([]), figdir)
    assert sec.verdict == "contradicts"
    assert sec.numbers["a"]["cv"] == pytest.approx(0.1)
    assert sec.reason.startswith("fn* CV >= 8% in a:")
    runs.loc[2, "onset_time"] = np.nan
    sec = invariance(study, runs, linear_traj([]), figdir)
    assert sec.verdict == "inconclusive" and "3 or more collapsed" in sec.reason
    assert sec.numbers == {}


# ----------------------------------------------------------------------------- lead time
LEAD_F = [10.0, 12.0, 14.0, 16.0, 18.0]


def lead_runs(onsets, extra=()):
    rows = [{"seed": s, "onset_time": t, "fn_at_onset": f}
            for s, (t, f) in enumerate(zip(onsets, LEAD_F))]
    return frame(rows + list(extra), "ufm")


def test_lead_rows_and_summary_by_hand():
    """Leads of fn = t: in-sample level mean fn* 14, held-out level mean of the other seeds."""
    runs = lead_runs([20.0, 30.0, 40.0, 50.0, 60.0],
                     extra=[{"seed": 5, "status": "diverged", "onset_time": 30.0,
                             "fn_at_onset": 99.0},
                            {"seed": 6, "onset_time": np.nan, "fn_at_onset": 99.0}])
    leads = _lead_rows(runs, linear_traj(runs["run_id"]), ["seed"])
    assert list(leads["run_id"]) == [f"ufm-{i}" for i in range(5)]
    assert np.allclose(leads["fn_pred_in_sample"], 14.0)
    assert np.allclose(leads["lead_in_sample"], [6.0, 16.0, 26.0, 36.0, 46.0])
    assert np.allclose(leads["fn_pred_held_out"], [15.0, 14.5, 14.0, 13.5, 13.0])
    assert np.allclose(leads["lead_held_out"], [5.0, 15.5, 26.0, 36.5, 47.0])

    ins = _lead_summary(leads, "in_sample")
    assert ins["n_runs"] == 5 and ins["n_crossed"] == 5
    assert ins["lead_mean"] == pytest.approx(26.0)
    assert ins["lead_std"] == pytest.approx(math.sqrt(250.0))
    assert ins["ordering_accuracy"] == 1.0
    assert ins["lead_over_onset"] == pytest.approx(
        np.mean([6 / 20, 16 / 30, 26 / 40, 36 / 50, 46 / 60]))
    assert ins["mae"] == pytest.approx(12.0)  # |lead - 26| = 20, 10, 0, 10, 20

    held = _lead_summary(leads, "held_out")
    assert held["lead_mean"] == pytest.approx(26.0)
    assert held["lead_std"] == pytest.approx(math.sqrt(1102.5 / 4))
    # each run against the mean lead of the other four: 26.25, 13.125, 0, 13.125, 26.25
    assert held["mae"] == pytest.approx(15.75)


def test_lead_rows_group_by_the_other_axes():
    """fn_pred is taken within the run's width; held-out MAE compares with the other seeds."""
    runs = frame([{"width": w, "seed": s, "onset_time": 100.0, "fn_at_onset": f}
                  for w, s, f in [(64, 0, 10.0), (64, 1, 20.0), (64, 2, 30.0),
                                  (128, 0, 40.0), (128, 1, 60.0)]], "mlp")
    leads = _lead_rows(runs, linear_traj(runs["run_id"]), ["width", "seed"])
    assert np.allclose(leads["fn_pred_in_sample"], [20.0, 20.0, 20.0, 50.0, 50.0])
    assert np.allclose(leads["lead_held_out"], [75.0, 80.0, 85.0, 40.0, 60.0])
    held = _lead_summary(leads, "held_out")
    # errors 0, 40/3, 21.25, 35, 20/3 against the mean lead of the runs of other seeds
    assert held["mae"] == pytest.approx(15.25)
    assert held["ordering_accuracy"] == 1.0


def test_lead_supports_with_numbers_tables_and_figures(tmp_path, figdir):
    """Every held-out lead positive over 5 runs: supports; numbers and figures written."""
    study = load(tmp_path, "lead_time", part_toml("ufm", seed=[0, 1, 2, 3, 4]))
    runs = lead_runs([20.0, 30.0, 40.0, 50.0, 60.0])
    sec = lead(study, runs, linear_traj(runs["run_id"]), figdir)
    assert sec.verdict == "supports"
    assert sec.reason == ("ufm: held-out lead 26 ± 16.6 (MAE 15.75, fn crosses first in "
                          "100% of 5 runs)")
    assert set(sec.numbers) == {"ufm/in_sample", "ufm/held_out"}
    assert sec.numbers["ufm/in_sample"]["mae"] == pytest.approx(12.0)
    assert sec.numbers["ufm/held_out"]["n_crossed"] == 5
    summary = sec.tables[0][1]
    assert list(summary["method"]) == ["in_sample", "held_out"]
    per_run = sec.tables[1][1]
    assert list(per_run["part"].unique()) == ["ufm"] and len(per_run) == 5
    assert written(sec, figdir) == ["lead.png", "trajectories_ufm.png"]


def test_lead_contradicts_when_onset_comes_first(tmp_path, figdir):
    """Onsets before the fn crossing (negative leads in every run): contradicts."""
    study = load(tmp_path, "lead_time", part_toml("ufm", seed=[0, 1, 2, 3, 4]))
    runs = lead_runs([5.0, 6.0, 7.0, 8.0, 9.0])
    sec = lead(study, runs, linear_traj(runs["run_id"]), figdir)
    assert sec.verdict == "contradicts"
    assert sec.numbers["ufm/held_out"]["ordering_accuracy"] == 0.0
    assert sec.numbers["ufm/held_out"]["lead_mean"] == pytest.approx(
        np.mean([-10.0, -8.5, -7.0, -5.5, -4.0]))


def test_lead_inconclusive_between_the_limits(tmp_path, figdir):
    """fn crosses first in 3 of 5 runs (60%): neither supports nor contradicts."""
    study = load(tmp_path, "lead_time", part_toml("ufm", seed=[0, 1, 2, 3, 4]))
    runs = lead_runs([20.0, 30.0, 40.0, 10.0, 12.0])
    sec = lead(study, runs, linear_traj(runs["run_id"]), figdir)
    assert sec.verdict == "inconclusive"
    assert sec.numbers["ufm/held_out"]["ordering_accuracy"] == pytest.approx(0.6)
    assert sec.numbers["ufm/held_out"]["lead_mean"] == pytest.approx(
        np.mean([5.0, 15.5, 26.0, -3.5, -1.0]))
    assert "60% of 5 runs" in sec.reason


def test_lead_runs_that_never_cross_have_no_lead(tmp_path, figdir):
    """fn capped below fn_pred gives no lead; with fewer than 4 crossings: inconclusive."""
    study = load(tmp_path, "lead_time", part_toml("ufm", seed=[0, 1, 2, 3, 4]))
    runs = lead_runs([20.0, 30.0, 40.0, 50.0, 60.0])
    sec = lead(study, runs, linear_traj(runs["run_id"], cap={"ufm-4": 12.0}), figdir)
    assert sec.verdict == "supports"
    held = sec.numbers["ufm/held_out"]
    assert held["n_crossed"] == 4
    assert held["lead_mean"] == pytest.approx(np.mean([5.0, 15.5, 26.0, 36.5]))
    assert np.isnan(sec.tables[1][1].loc[4, "lead_held_out"])
    sec = lead(study, runs, linear_traj(runs["run_id"], cap={"ufm-3": 12.0, "ufm-4": 12.0}),
               figdir)
    assert sec.verdict == "inconclusive"
    assert sec.reason.startswith("fewer than 4 held-out runs crossed")
    assert sec.numbers["ufm/held_out"]["n_crossed"] == 3


def test_lead_degenerate_inputs_are_inconclusive(tmp_path, figdir):
    """One seed (no held-out level) and no collapsed run: inconclusive, no crash."""
    study = load(tmp_path, "lead_time", part_toml("ufm", seed=[0]))
    runs = frame([{"seed": 0, "onset_time": 30.0, "fn_at_onset": 10.0}], "ufm")
    sec = lead(study, runs, linear_traj(runs["run_id"]), figdir)
    assert sec.verdict == "inconclusive"
    assert sec.numbers["ufm/in_sample"]["lead_mean"] == pytest.approx(20.0)
    assert np.isnan(sec.numbers["ufm/in_sample"]["lead_std"])
    assert sec.numbers["ufm/held_out"]["n_crossed"] == 0
    assert np.isnan(sec.numbers["ufm/held_out"]["lead_mean"])

    runs = frame([{"seed": s, "status": "not_collapsed", "onset_time": np.nan,
                   "fn_at_onset": np.nan} for s in range(3)], "ufm")
    sec = lead(study, runs, linear_traj(runs["run_id"]), figdir)
    assert sec.verdict == "inconclusive" and sec.numbers == {}
    assert sec.tables[0][1].empty and len(sec.tables) == 1
    assert written(sec, figdir) == ["trajectories_ufm.png"]


# ----------------------------------------------------------------------------- depth
def depth_runs(series, extra=()):
    """Two seeds per (init_scale, depth): onsets 0.9 m and 1.1 m, fn* 1.0 and 1.2."""
    rows = [{"init_scale": scale, "depth": d, "seed": s, "onset_time": m * k,
             "fn_at_onset": f}
            for scale, onsets in series.items() for d, m in zip([1, 2, 3, 4], onsets)
            for s, k, f in ((0, 0.9, 1.0), (1, 1.1, 1.2)) if m is not None]
    return frame(rows + list(extra), "deep_linear")


DEPTH_PART = part_toml("deep_linear", depth=[1, 2, 3, 4], init_scale=[0.3, 1.0], seed=[0, 1])


def test_depth_supports_non_monotonic_series(tmp_path, figdir):
    """A series with a dip beyond 5% is non-monotonic; its fastest depth and table stats."""
    study = load(tmp_path, "depth", DEPTH_PART + part_toml("mlp", depth=[2, 3, 5, 7], seed=[0]))
    runs = depth_runs({0.3: [100.0, 50.0, 80.0, 120.0], 1.0: [100.0, 80.0, 60.0, 50.0]},
                      extra=[{"init_scale": 0.3, "depth": 2, "seed": 2, "status": "diverged",
                              "onset_time": np.nan, "fn_at_onset": np.nan}])
    mlp = frame([{"depth": d, "seed": 0, "onset_time": t, "fn_at_onset": 1.0}
                 for d, t in zip([2, 3, 5, 7], [50.0, 30.0, 40.0, 90.0])], "mlp")
    sec = depth(study, pd.concat([runs, mlp], ignore_index=True), linear_traj([]), figdir)
    assert sec.verdict == "supports"
    assert sec.reason.startswith("non-monotonic in 2 of 3 series: ")
    assert "deep_linear (init_scale = 0.3): onset 100, 50, 80, 120 at depth 1, 2, 3, 4" \
        in sec.reason
    by = {(s["part"], str(s["setting"])): s for s in sec.numbers["series"]}
    low = by[("deep_linear", "{'init_scale': '0.3'}")]
    assert low["non_monotonic"] is True and low["fastest_depth"] == 2
    assert low["onsets"] == pytest.approx([100.0, 50.0, 80.0, 120.0])
    assert low["collapsed_fraction"] == pytest.approx(8 / 9)
    high = by[("deep_linear", "{'init_scale': '1'}")]
    assert high["non_monotonic"] is False and high["fastest_depth"] == 4
    assert high["collapsed_fraction"] == 1.0
    only = by[("mlp", "{}")]
    assert only["non_monotonic"] is True and only["fastest_depth"] == 3
    table = sec.tables[0][1]
    row = table[(table["part"] == "deep_linear") & (table["init_scale"] == 0.3)
                & (table["depth"] == 2)].iloc[0]
    assert row["n_runs"] == 3 and row["n_collapsed"] == 2
    assert row["onset_mean"] == pytest.approx(50.0)
    assert row["onset_cv"] == pytest.approx(0.1 * SQRT2)
    assert row["fn_star_mean"] == pytest.approx(1.1)
    assert row["fn_star_cv"] == pytest.approx(0.1 * SQRT2 / 1.1)
    assert written(sec, figdir) == ["depth_deep_linear.png", "depth_mlp.png"]


def test_depth_contradicts_when_every_series_is_monotonic(tmp_path, figdir):
    """A rise of 2.5% is within the 5% tolerance: every series monotonic, contradicts."""
    study = load(tmp_path, "depth", DEPTH_PART)
    runs = depth_runs({0.3: [100.0, 80.0, 82.0, 60.0], 1.0: [100.0, 80.0, 60.0, 50.0]})
    sec = depth(study, runs, linear_traj([]), figdir)
    assert sec.verdict == "contradicts"
    assert sec.reason.startswith("onset time is monotonic in depth in every series")
    assert [s["fastest_depth"] for s in sec.numbers["series"]] == [4, 4]


def test_depth_inconclusive_with_two_collapsed_depths(tmp_path, figdir):
    """Depths 3 and 4 never collapse: no series with 3 depths, inconclusive."""
    study = load(tmp_path, "depth", DEPTH_PART)
    failed = [{"init_scale": scale, "depth": d, "seed": s, "status": "not_collapsed",
               "onset_time": np.nan, "fn_at_onset": np.nan}
              for scale in (0.3, 1.0) for d in (3, 4) for s in (0, 1)]
    runs = depth_runs({0.3: [100.0, 50.0, None, None], 1.0: [90.0, 80.0, None, None]}, failed)
    sec = depth(study, runs, linear_traj([]), figdir)
    assert sec.verdict == "inconclusive"
    assert sec.reason == "no series has 3 collapsed depths"
    assert [s["depths"] for s in sec.numbers["series"]] == [[1, 2], [1, 2]]
    assert [s["collapsed_fraction"] for s in sec.numbers["series"]] == [0.5, 0.5]
    assert all("non_monotonic" not in s for s in sec.numbers["series"])


# ----------------------------------------------------------------------------- activation
ACTS = ["linear", "relu", "tanh"]
ACT_PART = part_toml("deep_ufm", "depth = 2\n", activation=ACTS, seed=[0, 1])


def act_runs(part, values):
    """values: activation -> ((fn*, fn*), onset) for two seeds."""
    return frame([{"activation": a, "seed": s, "onset_time": onset, "fn_at_onset": fns[s]}
                  for a, (fns, onset) in values.items() for s in (0, 1)], part)


def test_activation_supports_when_both_spreads_are_large(tmp_path, figdir):
    """fn* means 1, 1.5, 2 and onsets 100, 150, 300: spreads 100% and 200%, supports."""
    study = load(tmp_path, "activation", ACT_PART)
    runs = act_runs("deep_ufm", {"linear": ((0.99, 1.01), 100.0),
                                 "relu": ((1.485, 1.515), 150.0),
                                 "tanh": ((1.98, 2.02), 300.0)})
    sec = activation(study, runs, linear_traj([]), figdir)
    assert sec.verdict == "supports"
    num = sec.numbers["deep_ufm"]
    assert num["n_activations"] == 3
    assert num["fn_star_spread"] == pytest.approx(1.0)
    assert num["onset_spread"] == pytest.approx(2.0)
    assert num["fn_star_within_cv"] == pytest.approx(0.01 * SQRT2)
    assert "deep_ufm: fn* spread 100%, onset spread 200% over 3 activations" in sec.reason
    assert written(sec, figdir) == ["activation_deep_ufm.png"]


def test_activation_contradicts_when_one_part_moves_neither(tmp_path, figdir):
    """One part with spreads 5% and 9% (<= 10%) contradicts even if another part supports."""
    study = load(tmp_path, "activation", ACT_PART + part_toml("mlp", "depth = 3\n",
                                                             activation=ACTS, seed=[0, 1]))
    runs = pd.concat([
        act_runs("deep_ufm", {"linear": ((1.0, 1.0), 100.0), "relu": ((1.5, 1.5), 150.0),
                              "tanh": ((2.0, 2.0), 300.0)}),
        act_runs("mlp", {"linear": ((1.0, 1.0), 100.0), "relu": ((1.05, 1.05), 105.0),
                         "tanh": ((1.02, 1.02), 109.0)})], ignore_index=True)
    sec = activation(study, runs, linear_traj([]), figdir)
    assert sec.verdict == "contradicts"
    assert sec.numbers["mlp"]["fn_star_spread"] == pytest.approx(0.05)
    assert sec.numbers["mlp"]["onset_spread"] == pytest.approx(0.09)
    assert sec.numbers["deep_ufm"]["fn_star_within_cv"] == 0.0
    assert written(sec, figdir) == ["activation_deep_ufm.png", "activation_mlp.png"]


def test_activation_inconclusive_when_fn_star_spread_is_within_noise(tmp_path, figdir):
    """fn* spread 20% against a within-activation CV of 28%: only speed moves, inconclusive."""
    study = load(tmp_path, "activation", ACT_PART)
    runs = act_runs("deep_ufm", {"linear": ((0.8, 1.2), 100.0), "relu": ((1.2, 1.2), 200.0)})
    sec = activation(study, runs, linear_traj([]), figdir)
    assert sec.verdict == "inconclusive"
    assert sec.reason.startswith("activation moves only one of speed and fn*")
    assert sec.numbers["deep_ufm"]["fn_star_spread"] == pytest.approx(0.2)
    assert sec.numbers["deep_ufm"]["fn_star_within_cv"] == pytest.approx(0.2 * SQRT2)


def test_activation_one_collapsed_activation_is_inconclusive(tmp_path, figdir):
    """Only one activation collapses: no spread to compute, inconclusive with empty numbers."""
    study = load(tmp_path, "activation", ACT_PART)
    runs = act_runs("deep_ufm", {"linear": ((1.0, 1.1), 100.0), "relu": ((1.0, 1.0), 100.0)})
    runs.loc[runs["activation"] == "relu", ["status", "onset_time"]] = ["diverged", np.nan]
    sec = activation(study, runs, linear_traj([]), figdir)
    assert sec.verdict == "inconclusive" and sec.numbers == {}
    assert sec.reason == "fewer than 2 activations collapsed in every part"
    assert len(sec.tables) == 1 and list(sec.tables[0][1]["n_collapsed"]) == [2, 0]


def test_activation_with_one_run_per_activation_does_not_support(tmp_path, figdir):
    """One collapsed seed per activation: the within-activation CV is unknown (NaN, not 0),
    so large spreads do not count as above the noise; the reason says so."""
    study = load(tmp_path, "activation", ACT_PART)
    runs = act_runs("deep_ufm", {"linear": ((1.0, 1.0), 100.0), "relu": ((1.5, 1.5), 150.0),
                                 "tanh": ((2.0, 2.0), 300.0)})
    runs = runs[runs["seed"] == 0]
    sec = activation(study, runs, linear_traj([]), figdir)
    assert sec.verdict != "supports"
    assert math.isnan(sec.numbers["deep_ufm"]["fn_star_within_cv"])
    assert "within-activation fn* CV unknown (one collapsed run per activation) in deep_ufm" \
        in sec.reason


def test_intervention_names_an_arm_that_never_collapsed(tmp_path, figdir):
    """The alpha = 3 arm never collapses: the reason names it and the numbers count it (it
    was left out of the reason, which listed only the arms with an fn* ratio)."""
    study = load(tmp_path, "intervention",
                 part_toml("ufm", "intervene_time = 100.0\n", intervene_alpha=[0.3, 1.0, 3.0],
                           seed=[0, 1]))
    rows = []
    for alpha, fn_star in ((0.3, 0.95), (1.0, 1.0), (3.0, None)):
        rows += [{"intervene_alpha": alpha, "seed": s, "fn_before_intervention": 1.0,
                  "fn_after_intervention": alpha,
                  "status": "ok" if fn_star else "vanishing",
                  "onset_time": 50.0 if fn_star else np.nan,
                  "fn_at_onset": fn_star * (1 + 0.01 * s) if fn_star else np.nan}
                 for s in (0, 1)]
    sec = intervention(study, frame(rows, "ufm"), linear_traj([]), figdir)
    assert "no collapse after rescaling: ufm alpha=3 (0 of 2 runs)" in sec.reason
    assert sec.numbers["arms_without_collapse"] == 1
    assert sec.verdict == "contradicts"


def test_line_figure_marks_an_x_without_a_value():
    """A point with no collapse (NaN onset) is marked on the x axis instead of vanishing."""
    import matplotlib.pyplot as plt

    table = pd.DataFrame({"weight_decay": [1e-4, 1e-3, 1e-2],
                          "onset_collapsed": [100.0, 50.0, np.nan]})
    fig = _line_fig(table, "weight_decay", ["onset_collapsed"], None, "onset over wd")
    marks = [line for line in fig.axes[0].lines if line.get_label() == "no collapse"]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [1e-2]
    assert fig.axes[0].get_ylabel() == "onset time (collapsed runs)"
    plt.close(fig)


# ----------------------------------------------------------------------------- width
WIDTH_PART = part_toml("ufm_dim", dim=[16, 32, 64, 128], reduction=["none", "gram"], seed=[0])


def width_runs(onsets, fns, gram_onsets=None):
    rows = []
    for reduction, series in (("none", onsets), ("gram", gram_onsets or onsets)):
        rows += [{"dim": d, "reduction": reduction, "seed": 0, "onset_time": t,
                  "fn_at_onset": f} for d, t, f in zip([16, 32, 64, 128], series, fns)]
    return frame(rows, "ufm_dim")


def test_width_supports_and_reduction_gap(tmp_path, figdir):
    """Onset falls with d, fn* spread 12% <= 13%: supports; Gram and full forms compared."""
    study = load(tmp_path, "width", WIDTH_PART)
    runs = width_runs([400.0, 200.0, 100.0, 50.0], [1.0, 1.05, 1.1, 1.12],
                      gram_onsets=[400.0, 200.0, 100.5, 50.0])
    sec = width(study, runs, linear_traj([]), figdir)
    assert sec.verdict == "supports"
    for label in ("ufm_dim (reduction=none)", "ufm_dim (reduction=gram)"):
        num = sec.numbers[label]
        assert num["axis"] == "dim" and num["n_widths"] == 4
        assert num["onset_monotone_decreasing"] is True
        assert num["onset_change"] == pytest.approx(-0.875)
        assert num["fn_star_spread"] == pytest.approx(0.12)
    assert sec.numbers["reduction_gap"] == pytest.approx(0.5 / 100.5)
    assert "onset changes -88% from the smallest to the largest dim" in sec.reason
    assert written(sec, figdir) == ["width_ufm_dim.png"]


def test_width_contradicts_on_a_rise_or_a_large_fn_star_spread(tmp_path, figdir):
    """A 5% rise in onset (beyond 2%) or a 20% fn* spread contradicts; a 1.5% rise does not."""
    study = load(tmp_path, "width", WIDTH_PART)
    fns = [1.0, 1.0, 1.0, 1.0]
    sec = width(study, width_runs([400.0, 200.0, 210.0, 50.0], fns), linear_traj([]), figdir)
    assert sec.verdict == "contradicts"
    assert sec.numbers["ufm_dim (reduction=none)"]["onset_monotone_decreasing"] is False
    assert sec.numbers["reduction_gap"] == 0.0
    sec = width(study, width_runs([400.0, 200.0, 203.0, 50.0], fns), linear_traj([]), figdir)
    assert sec.verdict == "supports"
    sec = width(study, width_runs([400.0, 200.0, 100.0, 50.0], [1.0, 1.2, 1.1, 1.0]),
                linear_traj([]), figdir)
    assert sec.verdict == "contradicts"
    assert sec.numbers["ufm_dim (reduction=gram)"]["fn_star_spread"] == pytest.approx(0.2)


def test_width_axis_without_other_axes_and_too_few_widths(tmp_path, figdir):
    """A width axis with seeds averages the seeds; two collapsed widths are inconclusive."""
    study = load(tmp_path, "width", part_toml("relu", "depth = 2\n", width=[16, 32, 64],
                                               seed=[0, 1]))
    rows = [{"width": w, "seed": s, "onset_time": t * k, "fn_at_onset": 1.0,
             "fn_star_theory": 0.9}
            for w, t in zip([16, 32, 64], [300.0, 200.0, 100.0]) for s, k in ((0, 0.5), (1, 1.5))]
    runs = frame(rows, "relu")
    sec = width(study, runs, linear_traj([]), figdir)
    assert sec.verdict == "supports"
    assert sec.numbers["relu"]["onset_change"] == pytest.approx(100.0 / 300.0 - 1)
    assert "reduction_gap" not in sec.numbers
    table = sec.tables[0][1]
    assert list(table["width_or_dim"]) == [16, 32, 64]
    assert list(table["fn_star_theory"]) == [0.9, 0.9, 0.9]
    runs.loc[runs["width"] == 64, ["status", "onset_time"]] = ["not_collapsed", np.nan]
    sec = width(study, runs, linear_traj([]), figdir)
    assert sec.verdict == "inconclusive" and sec.numbers == {}
    assert sec.reason == ("fewer than 3 widths collapsed (with an onset time > 0) in every "
                          "series")


def test_reduction_gap_pairs_and_missing_pairs():
    """Largest relative gap over (part, dim, seed) pairs; NaN with one reduction or none."""
    runs = pd.DataFrame({"part": "p", "dim": [16, 16, 32, 32, 64],
                         "seed": 0, "reduction": ["none", "gram"] * 2 + ["none"],
                         "status": "ok", "onset_time": [100.0, 99.0, 50.0, 50.0, 10.0],
                         "fn_at_onset": [2.0, 2.0, 4.0, 3.0, 1.0]})
    assert _reduction_gap(runs) == pytest.approx(0.25)  # fn* 4 vs 3 at dim 32
    assert np.isnan(_reduction_gap(runs.drop(columns="reduction")))
    assert np.isnan(_reduction_gap(runs.assign(reduction="none")))
    none_ok = runs.assign(status=np.where(runs["reduction"] == "gram", "diverged", "ok"))
    assert np.isnan(_reduction_gap(none_ok))


# ----------------------------------------------------------------------------- grid
def test_cell_labels():
    """arch, else preset, else mlp; mlp gets its depth; dataset (with separation) or part."""
    runs = pd.DataFrame({"part": ["p", "p", "q"], "preset": ["mlp", "resnet20", "mlp"],
                         "depth": [3.0, np.nan, 5.0],
                         "dataset": ["gaussian", "gaussian", "digits"],
                         "separation": [20.0, 20.0, np.nan]})
    out = _cell_labels(runs)
    assert list(out["arch_label"]) == ["mlp-3", "resnet20", "mlp-5"]
    assert list(out["dataset_label"]) == ["gaussian-sep20.0", "gaussian-sep20.0", "digits"]
    out = _cell_labels(runs[["part"]].assign(arch=["cnn", "mlp", "mlp"]))
    assert list(out["arch_label"]) == ["cnn", "mlp", "mlp"]
    assert list(out["dataset_label"]) == ["p", "p", "q"]
    assert list(_cell_labels(runs[["part"]])["arch_label"]) == ["mlp"] * 3


def grid_runs(log_cells, offsets):
    """Runs of a 2 x 2 (preset, dataset) grid: log fn* = cell value + each offset."""
    rows = []
    for (arch, data), base in log_cells.items():
        rows += [{"preset": arch, "dataset": data, "seed": s, "onset_time": 10.0,
                  "fn_at_onset": math.exp(base + e)}
                 for s, e in enumerate(offsets[(arch, data)] if isinstance(offsets, dict)
                                       else offsets)]
    out = frame(rows, "grid")
    out["part"] = out["dataset"]
    return out


def interaction_cells(delta):
    """log fn*: architecture effect log 2, dataset effect log 3, interaction +-delta."""
    base = {("mlp", "a"): 0.0, ("mlp", "b"): math.log(3.0), ("resnet20", "a"): math.log(2.0),
            ("resnet20", "b"): math.log(6.0)}
    sign = {("mlp", "a"): 1, ("mlp", "b"): -1, ("resnet20", "a"): -1, ("resnet20", "b"): 1}
    return {k: v + sign[k] * delta for k, v in base.items()}


@pytest.mark.parametrize(("delta", "noise", "verdict"), [
    (0.1, 0.02, "supports"), (0.05, 0.1, "inconclusive"), (0.0, 0.1, "contradicts")])
def test_grid_interaction_f_test(tmp_path, figdir, delta, noise, verdict):
    """2 x 2 cells of 3 seeds, log offsets -e, 0, +e: F = 3 * 4 delta^2 / e^2 on 1 and 8 df."""
    study = load(tmp_path, "grid", part_toml("a", seed=[0, 1, 2]))
    runs = grid_runs(interaction_cells(delta), (-noise, 0.0, noise))
    sec = grid(study, runs, linear_traj([]), figdir)
    f_stat = 12 * delta ** 2 / noise ** 2
    assert sec.verdict == verdict
    assert sec.numbers["interaction_F"] == pytest.approx(f_stat, abs=1e-9)
    assert sec.numbers["interaction_p"] == pytest.approx(stats.f.sf(f_stat, 1, 8), abs=1e-9)
    assert sec.numbers["interaction_rms_log"] == pytest.approx(delta, abs=1e-12)
    effect = {"a": 2.0 * math.exp(-2 * delta) - 1, "b": 2.0 * math.exp(2 * delta) - 1}
    assert sec.numbers["architecture_effect"] == pytest.approx(effect)
    cells = sec.tables[0][1]
    assert list(cells["n_collapsed"]) == [3, 3, 3, 3]
    assert written(sec, figdir) == ["grid.png"]


def test_grid_f_test_uses_cell_means_of_log_fn_star(tmp_path, figdir):
    """Additive log fn* with a noisier cell: the interaction F on log fn* is 0, p = 1."""
    study = load(tmp_path, "grid", part_toml("a", seed=[0, 1, 2]))
    offsets = {k: (-0.01, 0.0, 0.01) for k in interaction_cells(0.0)}
    offsets[("mlp", "a")] = (-1.0, 0.0, 1.0)
    sec = grid(study, grid_runs(interaction_cells(0.0), offsets), linear_traj([]), figdir)
    assert sec.numbers["interaction_F"] == pytest.approx(0.0, abs=1e-12)
    assert sec.numbers["interaction_rms_log"] == pytest.approx(0.0, abs=1e-12)
    assert sec.numbers["interaction_p"] == pytest.approx(1.0)
    assert sec.verdict == "contradicts"


def test_grid_without_replicates_is_inconclusive(tmp_path, figdir):
    """One seed per cell: the interaction is measured but not tested, inconclusive."""
    study = load(tmp_path, "grid", part_toml("a", seed=[0]))
    sec = grid(study, grid_runs(interaction_cells(0.2), (0.0,)), linear_traj([]), figdir)
    assert sec.verdict == "inconclusive"
    assert sec.reason.endswith("; the interaction test needs 2 or more collapsed seeds per cell "
                               "(one in mlp x a, mlp x b, resnet20 x a, resnet20 x b)")
    assert sec.numbers["interaction_rms_log"] == pytest.approx(0.2)
    assert "interaction_F" not in sec.numbers


def test_grid_names_the_cell_without_a_replicate(tmp_path, figdir):
    """Two seeds per cell but one collapsed in mlp x a: the test is not run, and the reason
    names that cell only."""
    study = load(tmp_path, "grid", part_toml("a", seed=[0, 1]))
    offsets = {k: (-0.01, 0.01) for k in interaction_cells(0.2)}
    offsets[("mlp", "a")] = (0.0,)
    sec = grid(study, grid_runs(interaction_cells(0.2), offsets), linear_traj([]), figdir)
    assert sec.verdict == "inconclusive"
    assert sec.reason.endswith("(one in mlp x a)")
    assert "interaction_F" not in sec.numbers


@pytest.mark.parametrize("seeds", [2, 3])
def test_grid_identical_replicates_are_inconclusive(tmp_path, figdir, seeds):
    """Replicates with equal fn* give no within-cell noise: no F test, inconclusive."""
    study = load(tmp_path, "grid", part_toml("a", seed=list(range(seeds))))
    runs = grid_runs(interaction_cells(0.0), (0.0,) * seeds)
    sec = grid(study, runs, linear_traj([]), figdir)
    assert sec.verdict == "inconclusive"
    assert "identical" in sec.reason
    assert "interaction_F" not in sec.numbers


def test_grid_no_collapsed_cell_or_no_run_is_inconclusive(tmp_path, figdir):
    """No collapsed run, and an empty run table (every run failed): inconclusive, no crash."""
    study = load(tmp_path, "grid", part_toml("a", seed=[0]))
    runs = grid_runs(interaction_cells(0.0), (0.0,))
    none = runs.assign(status="not_collapsed", onset_time=np.nan, fn_at_onset=np.nan)
    sec = grid(study, none, linear_traj([]), figdir)
    assert sec.verdict == "inconclusive"
    cells = sec.tables[0][1]
    assert list(cells["n_collapsed"]) == [0, 0, 0, 0]
    named = "; ".join(f"{a} x {d} (0 of 1 runs)"
                      for a, d in zip(cells["arch_label"], cells["dataset_label"], strict=True))
    assert sec.reason.startswith(f"0 of 4 cells collapsed (none in {named}); ")
    assert sec.figures == [] and not (figdir / "grid.png").exists()  # no empty heat map
    sec = grid(study, runs.iloc[0:0], linear_traj([]), figdir)
    assert sec.verdict == "inconclusive"
    assert sec.reason.startswith("0 of 0 cells collapsed; the non-additivity test needs")
    assert sec.figures == []


def test_grid_names_the_cells_without_collapse(tmp_path, figdir):
    """With one architecture's runs collapsed and the other's not, the reason counts the
    collapsed cells and names each empty cell with its run count."""
    study = load(tmp_path, "grid", part_toml("a", seed=[0, 1]))
    runs = grid_runs(interaction_cells(0.0), (0.0, 0.01))
    labels = _cell_labels(runs)["arch_label"]
    arch = sorted(labels)[0]
    mask = labels == arch
    runs.loc[mask.to_numpy(), ["status", "onset_time", "fn_at_onset"]] = \
        ["not_collapsed", np.nan, np.nan]
    sec = grid(study, runs, linear_traj([]), figdir)
    cells = sec.tables[0][1]
    empty = cells[cells["n_collapsed"] == 0]
    assert len(empty) == 2 and set(empty["arch_label"]) == {arch}
    named = "; ".join(f"{arch} x {d} (0 of 2 runs)" for d in empty["dataset_label"])
    assert sec.verdict == "inconclusive"
    assert sec.reason == (f"2 of 4 cells collapsed (none in {named}); the non-additivity "
                          "test needs 2 architectures x 2 datasets with collapsed runs in "
                          "every cell")


# ----------------------------------------------------------------------------- weight decay
def wd_runs(series, part="ufm_lambda"):
    """series: dim -> onsets per lambda (None: no collapse); two seeds at 0.9 and 1.1 x."""
    rows = []
    for dim, onsets in series.items():
        for lam, t in zip([1e-4, 1e-3, 1e-2, 1e-1], onsets):
            rows += [{"lambda": lam, "lambda_w": lam, "lambda_h": lam, "dim": dim, "seed": s,
                      "status": "ok" if t is not None else "vanishing",
                      "onset_time": t * k if t is not None else np.nan,
                      "fn_at_onset": 1.0 if t is not None else np.nan,
                      "lambda_crit_theory": 0.05}
                     for s, k in ((0, 0.9), (1, 1.1))]
    return frame(rows, part)


def test_weight_decay_line_series_three_regimes(tmp_path, figdir):
    """One lambda axis: slow, optimal, optimal, prevents in order; lambda_crit bracketed."""
    study = load(tmp_path, "weight_decay",
                 part_toml("ufm_lambda", **{"lambda": [1e-4, 1e-3, 1e-2, 1e-1], "seed": [0, 1]}))
    runs = wd_runs({32: [1000.0, 200.0, 100.0, None]}).drop(columns="dim")
    sec = weight_decay(study, runs, linear_traj([]), figdir)
    assert sec.verdict == "supports"
    (series,) = sec.numbers["series"]
    assert series["regimes"] == ["slow", "optimal", "optimal", "prevents"]
    assert series["onsets"][:3] == pytest.approx([1000.0, 200.0, 100.0])
    assert series["three_regimes"] is True
    assert series["last_collapsed"] == pytest.approx(1e-2)
    assert series["first_prevented"] == pytest.approx(1e-1)
    assert series["lambda_crit_theory"] == pytest.approx(0.05)
    assert series["theory_in_bracket"] is True
    assert sec.reason.startswith("1 of 1 lambda series show slow, optimal and prevents in "
                                 "order; lambda_crit (theory) lies between the last collapsed "
                                 "and the first prevented lambda in 1 of 1 series with a "
                                 "prevented lambda, above the last collapsed lambda in 0 of 0 "
                                 "series without one.")
    assert written(sec, figdir) == ["wd_line_ufm_lambda.png"]


def test_weight_decay_line_series_contradicts_and_inconclusive(tmp_path, figdir):
    """Two series out of order contradict; series that never reach prevents are inconclusive."""
    study = load(tmp_path, "weight_decay", part_toml(
        "ufm_lambda", **{"lambda": [1e-4, 1e-3, 1e-2, 1e-1], "dim": [16, 32], "seed": [0, 1]}))
    runs = wd_runs({16: [100.0, 1000.0, None, None], 32: [100.0, 300.0, None, None]})
    sec = weight_decay(study, runs, linear_traj([]), figdir)
    assert sec.verdict == "contradicts"
    assert [s["regimes"] for s in sec.numbers["series"]] == [
        ["optimal", "slow", "prevents", "prevents"]] * 2
    assert [s["setting"] for s in sec.numbers["series"]] == [{"dim": "16"}, {"dim": "32"}]
    assert [s["theory_in_bracket"] for s in sec.numbers["series"]] == [False, False]
    runs = wd_runs({16: [1000.0, 100.0, 100.0, 100.0], 32: [100.0, 100.0, 100.0, 100.0]})
    sec = weight_decay(study, runs, linear_traj([]), figdir)
    assert sec.verdict == "inconclusive"
    assert sec.reason.endswith("(no series reaches the prevents regime)")
    assert [s["theory_in_bracket"] for s in sec.numbers["series"]] == [False, False]


def test_weight_decay_leaves_out_runs_collapsed_before_they_came_into_view(tmp_path, figdir):
    """Runs already below the threshold when phase 2 began (onset_at_phase_start) count
    neither as collapsed nor as prevented: the series and the figure hold only the observed
    runs, and a part with nothing observed gives no series and no figure."""
    study = load(tmp_path, "weight_decay",
                 part_toml("ufm_lambda", **{"lambda": [1e-4, 1e-3, 1e-2, 1e-1], "seed": [0, 1]}))
    runs = wd_runs({32: [1000.0, 200.0, 100.0, None]}).drop(columns="dim")
    runs["onset_at_phase_start"] = False
    # the first lambda's runs collapsed out of view, with an onset at the phase start
    first = runs["lambda"] == 1e-4
    runs.loc[first, "onset_at_phase_start"] = True
    runs.loc[first, "onset_time"] = 1.0
    sec = weight_decay(study, runs, linear_traj([]), figdir)
    (series,) = sec.numbers["series"]
    assert series["lambdas"] == pytest.approx([1e-3, 1e-2, 1e-1])
    assert series["regimes"] == ["optimal", "optimal", "prevents"]
    assert series["onsets"][:2] == pytest.approx([200.0, 100.0])
    assert list(sec.tables[1][1]["lambda"]) == [1e-3] * 2 + [1e-2] * 2 + [1e-1] * 2
    everything = runs.assign(onset_at_phase_start=True)
    sec = weight_decay(study, everything, linear_traj([]), figdir / "none")
    assert sec.numbers["series"] == [] and sec.figures == []
    assert sec.verdict == "inconclusive"
    # no series, no agreement and no example: the reason ends after its first sentence
    assert sec.reason.endswith("above the last collapsed lambda in 0 of 0 series without one")
    assert ". ." not in sec.reason


def test_weight_decay_agreement_counts_only_runs_the_theory_classifies(tmp_path, figdir):
    """Measured collapse against the theory's phase: a run the closed forms cannot classify
    (unbalanced classes given as text) is left out of the share, not counted as a miss."""
    study = load(tmp_path, "weight_decay",
                 part_toml("ufm_lambda", **{"lambda": [1e-3, 1.0], "seed": [0]}))
    base = {"loss": "ce", "bias": "none", "classes": 3, "per_class": 4, "dim": 8, "depth": 1,
            "lambda_b": 0.0, "init_scale": 0.1, "seed": 0, "fn_at_onset": 1.0}
    rows = [{**base, "lambda": 1e-3, "status": "ok", "onset_time": 50.0},  # theory: collapse
            {**base, "lambda": 1.0, "status": "vanishing", "onset_time": np.nan},  # vanishing
            {**base, "per_class": "3,4", "lambda": 1e-2, "status": "ok", "onset_time": 40.0}]
    runs = frame([{**r, "lambda_w": r["lambda"], "lambda_h": r["lambda"]} for r in rows],
                 "ufm_lambda")
    sec = weight_decay(study, runs, linear_traj([]), figdir)
    assert list(sec.tables[1][1]["theory_phase"]) == ["collapse", "vanishing", "n/a"]
    assert sec.numbers["agreement_with_theory_phase"] == {"ufm_lambda": 1.0}
    assert "matches the theory's phase in 100% of 2 runs" in sec.reason
    none = runs.assign(per_class="3,4")
    sec = weight_decay(study, none, linear_traj([]), figdir)
    assert math.isnan(sec.numbers["agreement_with_theory_phase"]["ufm_lambda"])
    assert "ufm_lambda: the theory classifies none of its runs" in sec.reason


def test_grid_heatmap_with_a_zero_decay_uses_a_linear_axis():
    """A decay grid holding 0 (no weight decay) is drawn on a linear axis with finite edges;
    an all-positive axis stays logarithmic with geometric cell edges."""
    import matplotlib.pyplot as plt

    from ncsim.study.analyses import _grid_heatmap

    table = pd.DataFrame({"lambda_w": [0.0, 1e-3, 1e-2] * 2,
                          "lambda_h": [1e-3] * 3 + [1e-2] * 3,
                          "onset_collapsed": [10.0, 20.0, np.nan, 30.0, 40.0, 50.0]})
    fig = _grid_heatmap(table, "lambda_w", "lambda_h", "onset_collapsed", "t")
    ax = fig.axes[0]
    assert ax.get_xscale() == "linear" and ax.get_yscale() == "log"
    corners = ax.collections[0].get_coordinates()
    np.testing.assert_allclose(corners[0, :, 0], [-5e-4, 5e-4, 5.5e-3, 1.45e-2])
    np.testing.assert_allclose(corners[:, 0, 1], 10.0 ** np.array([-3.5, -2.5, -1.5]))
    plt.close(fig)
