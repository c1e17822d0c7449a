"""The fn* invariance analysis split by varied axis: with the part's other axes held fixed,
how large a CV of fn at onset each axis makes (which condition moves fn*).

Expected values are CVs of two or three numbers worked out by hand: the sample standard
deviation (ddof = 1) of two values x, y is |x - y| / sqrt(2)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from test_study_values import rising_traj, run_frame, study_of

from ncsim.study.analyses import axis_spread, invariance

SQRT2 = math.sqrt(2.0)


def _two_by_two() -> pd.DataFrame:
    """fn* at (a, b): (0, 0) 1, (1, 0) 3, (0, 1) 2, (1, 1) 2."""
    return run_frame("p", a=[0, 1, 0, 1], b=[0, 0, 1, 1], onset_time=[5.0, 6.0, 7.0, 8.0],
                     fn_at_onset=[1.0, 3.0, 2.0, 2.0])


def test_axis_spread_by_hand_on_a_two_by_two_grid():
    """Across a (b fixed): CV(1, 3) = sqrt(2) / 2 at b = 0, CV(2, 2) = 0 at b = 1; mean
    sqrt(2) / 4, largest sqrt(2) / 2. Across b (a fixed): CV(1, 2) = (1 / sqrt(2)) / 1.5 at
    a = 0, CV(3, 2) = (1 / sqrt(2)) / 2.5 at a = 1."""
    table = axis_spread(_two_by_two(), ["a", "b"])
    assert list(table["axis"]) == ["a", "b"]
    assert list(table["n_groups"]) == [2, 2]
    a, b = table.iloc[0], table.iloc[1]
    assert a["cv_mean"] == pytest.approx(SQRT2 / 4, rel=1e-14)
    assert a["cv_max"] == pytest.approx(SQRT2 / 2, rel=1e-14)
    cv_b0, cv_b1 = (1 / SQRT2) / 1.5, (1 / SQRT2) / 2.5
    assert b["cv_mean"] == pytest.approx((cv_b0 + cv_b1) / 2, rel=1e-14)
    assert b["cv_max"] == pytest.approx(cv_b0, rel=1e-14)


def test_axis_spread_skips_single_value_axes_and_single_run_groups():
    """An axis with one value among the runs makes no row; a setting of the other axes with a
    single run (here b = 1 holds only a = 0) is left out of that axis's groups; an axis
    alone in the part is grouped over all runs."""
    runs = run_frame("p", a=[0, 1, 0], b=[0, 0, 1], c=[7, 7, 7], onset_time=[1.0, 2.0, 3.0],
                     fn_at_onset=[1.0, 3.0, 2.0])
    table = axis_spread(runs, ["a", "b", "c"])
    assert list(table["axis"]) == ["a", "b"]
    row_a = table.set_index("axis").loc["a"]
    assert row_a["n_groups"] == 1
    assert row_a["cv_mean"] == pytest.approx(SQRT2 / 2, rel=1e-14)
    alone = axis_spread(runs, ["b"])
    assert list(alone["n_groups"]) == [1]
    values = np.array([1.0, 3.0, 2.0])
    assert alone["cv_mean"].iloc[0] == pytest.approx(values.std(ddof=1) / values.mean(),
                                                     rel=1e-14)


def test_an_axis_whose_settings_hold_single_runs_has_no_cv():
    """Every setting of the other axis holds one run: no group, NaN CVs (not 0)."""
    runs = run_frame("p", a=[0, 1], b=[0, 1], onset_time=[1.0, 2.0], fn_at_onset=[1.0, 2.0])
    table = axis_spread(runs, ["a", "b"])
    assert list(table["n_groups"]) == [0, 0]
    assert table["cv_mean"].isna().all() and table["cv_max"].isna().all()


def test_invariance_names_the_axis_that_moves_fn_star(tmp_path, no_figures):
    """A part over init_scale x seed whose fn* depends on init_scale only (1.0 at 0.01, 2.0
    at 1.0; the seed changes nothing): the verdict contradicts the 8% limit, and the reason
    and numbers give init_scale CV sqrt(2) / 3 (CV of 1 and 2) and seed CV 0."""
    study = study_of("invariance", p=["init_scale", "seed"])
    runs = run_frame("p", init_scale=[0.01, 0.01, 1.0, 1.0], seed=[0, 1, 0, 1],
                     onset_time=[5.0, 5.0, 9.0, 9.0], fn_at_onset=[1.0, 1.0, 2.0, 2.0])
    sec = invariance(study, runs, rising_traj(runs["run_id"]), tmp_path)
    assert sec.verdict == "contradicts"
    by_axis = sec.numbers["p"]["cv_by_axis"]
    assert by_axis["init_scale"] == pytest.approx(SQRT2 / 3, rel=1e-14)
    assert by_axis["seed"] == 0.0
    assert "(n=4; across init_scale 47.1%, seed 0.0% with the other axes fixed)" in sec.reason
    captions = [caption for caption, _ in sec.tables]
    assert len(captions) == 2 and captions[1].startswith("fn* CV across each varied axis")
    split = sec.tables[1][1]
    assert list(split["part"]) == ["p", "p"] and list(split["axis"]) == ["init_scale", "seed"]


def test_a_one_axis_part_has_no_split(tmp_path, no_figures):
    """A part varying the seed alone: its CV is the part's, so no split is given."""
    study = study_of("invariance", seeds=["seed"])
    runs = run_frame("seeds", seed=[0, 1, 2], onset_time=[10.0, 11.0, 12.0],
                     fn_at_onset=[24.0, 25.0, 26.0])
    sec = invariance(study, runs, rising_traj(runs["run_id"]), tmp_path)
    assert set(sec.numbers["seeds"]) == {"cv", "n"}
    assert "across" not in sec.reason
    assert len(sec.tables) == 1
