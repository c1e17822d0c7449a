"""Second mutation probe of the study analyses: verdict limits at their exact boundary and
helpers on small hand-made run tables (lead with a zero mean lead, an intervention arm whose
runs all came into view collapsed, lambda_crit without a depth column, the origin's basin
reached through a trapped init)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from test_study_analyses_more import grid_runs, interaction_cells, linear_traj, wd_runs
from test_study_values import rising_traj, run_frame

from ncsim.study.analyses import (
    _basin_from,
    _critical,
    _group_stats,
    grid,
    intervention,
    lead,
    series_threshold,
    weight_decay,
)
from ncsim.study.spec import Study


def study_of(analysis, **axes_by_part):
    """A study of simulated parts named by the keywords, each with the grid axes given."""
    parts = [{"name": name, "model": "simulated", "fixed": {},
              "grid": {axis: [0] for axis in axes}} for name, axes in axes_by_part.items()]
    return Study(name="s", title="S", question="q?", claim="c.", analysis=analysis,
                 metrics=[], parts=parts, source="test")


# ----------------------------------------------------------------------------- lead
def test_lead_with_80_percent_ordering_but_zero_mean_lead_is_inconclusive(tmp_path, no_figures):
    """fn = t, fn* 10 in every run, onsets 11, 11, 11, 11, 6: held-out leads 1, 1, 1, 1, -4,
    ordering accuracy 0.8 (enough) but a mean lead of exactly 0, not > 0: inconclusive."""
    study = study_of("lead_time", seeds=["seed"])
    runs = run_frame("seeds", seed=[0, 1, 2, 3, 4], fn_at_onset=10.0,
                     onset_time=[11.0, 11.0, 11.0, 11.0, 6.0])
    sec = lead(study, runs, rising_traj(runs["run_id"]), tmp_path)
    held = sec.numbers["seeds/held_out"]
    assert held["ordering_accuracy"] == 0.8
    assert held["lead_mean"] == pytest.approx(0.0, abs=1e-12)
    # in-sample MAE: mean |lead - mean lead| = (1 + 1 + 1 + 1 + 4) / 5
    assert sec.numbers["seeds/in_sample"]["mae"] == pytest.approx(1.6, rel=1e-12)
    assert sec.verdict == "inconclusive"


# ----------------------------------------------------------------------------- intervention
@pytest.mark.parametrize(("inherited", "without", "verdict"), [
    ([False, False, True, True], 0, "inconclusive"),
    ([False, False, False, True], 1, "contradicts"),
])
def test_an_arm_counts_only_its_observed_runs_without_collapse(tmp_path, no_figures, inherited,
                                                               without, verdict):
    """The control (alpha = 1) collapses; the rescaled arm's two runs end not_collapsed. A
    run already below the threshold when phase 2 began (onset_at_phase_start) is not
    observed: with both inherited the arm counts no run without collapse and the verdict is
    inconclusive; with one observed, it counts that one and the verdict is contradicts."""
    study = study_of("intervention", rescale=["intervene_alpha", "seed"])
    runs = run_frame("rescale", intervene_alpha=[1.0, 1.0, 2.0, 2.0], seed=[0, 1, 0, 1],
                     status=["ok", "ok", "not_collapsed", "not_collapsed"],
                     onset_at_phase_start=inherited,
                     fn_at_onset=[10.0, 10.0, np.nan, np.nan],
                     onset_time=[50.0, 50.0, np.nan, np.nan])
    sec = intervention(study, runs, rising_traj(runs["run_id"]), tmp_path)
    arm = sec.tables[0][1].set_index("alpha").loc[2.0]
    assert (arm["n_runs"], arm["n_collapsed"], arm["n_without_collapse"]) == (2, 0, without)
    assert sec.verdict == verdict
    if without:
        assert sec.numbers["arms_without_collapse"] == without
    else:
        assert "no rescaled arm with an observed outcome" in sec.reason


# ----------------------------------------------------------------------------- thresholds
def test_critical_without_a_depth_column_is_depth_one():
    """Without a depth column M = 2: Lambda_crit = lambda_crit_theory (lambda_H /
    lambda_W)^(1/2) = 0.1 x 4^(1/2) = 0.2; along lambda_W (lambda_H = 0.04 fixed) the
    threshold is Lambda_crit^2 / lambda_H = 1, along lambda_H it is Lambda_crit^2 / lambda_W
    = 4."""
    sub = pd.DataFrame({"lambda_w": [0.01], "lambda_h": [0.04], "lambda_crit_theory": [0.1]})
    assert _critical(sub) == pytest.approx(0.2, rel=1e-12)
    assert series_threshold(sub, "lambda") == pytest.approx(0.2, rel=1e-12)
    assert series_threshold(sub, "lambda_w") == pytest.approx(1.0, rel=1e-12)
    assert series_threshold(sub, "lambda_h") == pytest.approx(4.0, rel=1e-12)


def test_critical_is_the_median_over_the_rows():
    """Three rows whose recovered Lambda_crit is 0.1, 0.2 and 1.0 (depth 1): the median 0.2."""
    sub = pd.DataFrame({"lambda_w": [1.0, 1.0, 1.0], "lambda_h": [1.0, 4.0, 1.0],
                        "depth": [1, 1, 1], "lambda_crit_theory": [0.1, 0.1, 1.0]})
    assert _critical(sub) == pytest.approx(0.2, rel=1e-12)


def test_basin_starts_at_a_trapped_init():
    """A trapped init (deep head too small to escape) counts as inside the origin's basin:
    phases collapse, trapped, basin_edge at 1e-3, 1e-2, 1e-1 put the basin from 1e-2."""
    series = pd.DataFrame({"lambda": [1e-3, 1e-2, 1e-1],
                           "theory_phase": ["collapse", "trapped", "basin_edge"]})
    assert _basin_from(series, "lambda") == pytest.approx(1e-2)
    assert math.isnan(_basin_from(series.assign(theory_phase="no_collapse"), "lambda"))


# ----------------------------------------------------------------------------- grid
def test_grid_interaction_p_above_0_2_contradicts(tmp_path, no_figures):
    """2 x 2 cells of 3 seeds (log offsets -0.1, 0, 0.1), interaction 0.03: F = 12 x 0.03^2 /
    0.1^2 = 1.08 on 1 and 8 df, p = 0.33 > 0.2: additive within noise, contradicts."""
    study = study_of("grid", a=["seed"])
    runs = grid_runs(interaction_cells(0.03), (-0.1, 0.0, 0.1))
    sec = grid(study, runs, linear_traj([]), tmp_path)
    assert sec.numbers["interaction_F"] == pytest.approx(1.08, rel=1e-9)
    assert 0.2 < sec.numbers["interaction_p"] < 0.5
    assert sec.verdict == "contradicts"


# ----------------------------------------------------------------------------- weight decay
def test_one_series_out_of_order_is_inconclusive_not_contradicts(tmp_path, no_figures):
    """A single lambda series optimal, slow, prevents, prevents (out of order): with one
    series only the verdict is inconclusive; contradicts needs two or more series."""
    study = study_of("weight_decay", ufm_lambda=["lambda", "seed"])
    runs = wd_runs({32: [100.0, 1000.0, None, None]}).drop(columns="dim")
    sec = weight_decay(study, runs, linear_traj([]), tmp_path)
    (series,) = sec.numbers["series"]
    assert series["regimes"] == ["optimal", "slow", "prevents", "prevents"]
    assert sec.verdict == "inconclusive"


# ----------------------------------------------------------------------------- group stats
def test_group_stats_keeps_a_group_whose_key_is_missing():
    """A run whose key is NaN forms a group of its own instead of being dropped: 3 runs give
    groups relu (2 runs) and NaN (1 run), 3 runs in all."""
    runs = run_frame("p", activation=["relu", "relu", np.nan], fn_at_onset=[1.0, 3.0, 5.0],
                     onset_time=[10.0, 10.0, 10.0])
    stats_ = _group_stats(runs, ["activation"])
    assert list(stats_["n_runs"]) == [2, 1]
    assert stats_["fn_star_mean"].tolist() == [2.0, 5.0]
    assert stats_["activation"].isna().tolist() == [False, True]


def test_grid_diagonal_is_relative_so_tiny_decays_stay_apart():
    """The (lambda_W, lambda_H) grid's diagonal keeps equal decays only, also below 1e-8
    (numpy's default absolute tolerance 1e-8 would call 1e-9 and 5e-9 equal)."""
    from ncsim.study.analyses import _diagonal

    runs = pd.DataFrame({"lambda_w": [1e-9, 1e-9, 5e-9, 1e-3, 1e-3],
                         "lambda_h": [1e-9, 5e-9, 1e-9, 1e-3 * (1 + 1e-7), 2e-3]})
    assert list(_diagonal(runs).index) == [0, 3]


def test_non_monotonic_from_an_onset_of_zero_counts_the_sign_without_warnings():
    """Onsets 0, 0, 5, 1 rise then fall (non-monotonic), 0, 0, 5 only rise; no numpy
    division warning is raised on the zero onsets."""
    import warnings

    from ncsim.study.analyses import _non_monotonic

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _non_monotonic(np.array([0.0, 0.0, 5.0, 1.0]))
        assert not _non_monotonic(np.array([0.0, 0.0, 5.0]))
