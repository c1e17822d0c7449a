"""The weight-decay analysis where collapse ends at the origin's basin rather than at
lambda_crit: a deep linear CE head from a Gaussian init stops collapsing where the theory puts
the init at the basin edge or inside it (trapped), below lambda_crit, and the report says so.

The phases come from :func:`ncsim.theory.phase.classify` (K = 10, n = 20, d = 32, depth 2,
init scale 0.1, lambda_W = lambda_H = lambda), the setting of the shipped weight-decay study:
collapse at 0.004329, basin_edge at 0.008111 and 0.0152, trapped at 0.02848, vanishing at
0.05337 (lambda_crit = 0.02599)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from test_study_analyses_more import frame, linear_traj, load, part_toml

from ncsim.study.analyses import _basin_from, _basin_text, weight_decay

LAMBDAS = [0.004329, 0.008111, 0.0152, 0.02848, 0.05337]
PHASES = ["collapse", "basin_edge", "basin_edge", "trapped", "vanishing"]
LAMBDA_CRIT = 0.02599


def _deep_runs() -> pd.DataFrame:
    """Collapsed up to 0.008111 (a basin-edge seed that escaped), vanishing from 0.0152 on."""
    base = {"loss": "ce", "bias": "none", "classes": 10, "per_class": 20, "dim": 32,
            "depth": 2, "lambda_b": 0.0, "init_scale": 0.1, "seed": 0,
            "lambda_crit_theory": LAMBDA_CRIT}
    rows = []
    for lam, onset in zip(LAMBDAS, [145.8, 130.1, None, None, None]):
        rows.append({**base, "lambda": lam, "lambda_w": lam, "lambda_h": lam,
                     "status": "ok" if onset else "vanishing",
                     "onset_time": onset if onset else np.nan,
                     "fn_at_onset": 2.0 if onset else np.nan})
    return frame(rows, "deep")


def test_weight_decay_names_where_the_basin_ends_collapse(tmp_path, no_figures):
    """The series' bracket (last collapsed 0.008111, first prevented 0.0152) misses
    lambda_crit = 0.02599; the theory's basin starts at 0.008111, so the reason says collapse
    ends there, and the agreement counts the three classified runs (the two basin-edge runs,
    where the seed decides, apart)."""
    study = load(tmp_path, "weight_decay",
                 part_toml("deep", **{"lambda": LAMBDAS, "depth": [2]}))
    sec = weight_decay(study, _deep_runs(), linear_traj([]), tmp_path)
    assert list(sec.tables[1][1]["theory_phase"]) == PHASES
    (series,) = sec.numbers["series"]
    assert series["last_collapsed"] == pytest.approx(0.008111)
    assert series["first_prevented"] == pytest.approx(0.0152)
    assert series["theory_in_bracket"] is False
    assert series["basin_from_theory"] == pytest.approx(0.008111)
    assert ("In the series where it does not, the theory puts the init at the origin's basin "
            "edge or inside it (trapped) below lambda_crit, and collapse ends there: deep "
            "(depth = 2) from 0.008111.") in sec.reason
    assert sec.numbers["agreement_with_theory_phase"] == {"deep": 1.0}
    assert ("deep: measured collapse/no-collapse matches the theory's phase in 100% of 3 runs "
            "(2 more at the basin edge, where the seed decides)") in sec.reason
    assert list(sec.tables[0][1]["basin_from_theory"]) == pytest.approx([0.008111])


def test_basin_from_is_the_smallest_lambda_at_or_inside_the_basin():
    series = pd.DataFrame({"lambda": LAMBDAS[::-1], "theory_phase": PHASES[::-1]})
    assert _basin_from(series, "lambda") == pytest.approx(0.008111)
    assert math.isnan(_basin_from(series.assign(theory_phase="collapse"), "lambda"))
    assert math.isnan(_basin_from(series.drop(columns="theory_phase"), "lambda"))


def _series(label, in_bracket, basin, first_prevented=0.1):
    return {"part": label, "setting": {}, "theory_in_bracket": in_bracket,
            "basin_from_theory": basin, "first_prevented": first_prevented}


def test_basin_text_counts_only_misses_explained_by_the_basin():
    """A bracketed series is not a miss; a miss whose basin starts above its first prevented
    value (collapse ended before the basin) or has no basin is not explained by it."""
    assert _basin_text([_series("a", True, 0.01)]) == ""
    assert _basin_text([_series("a", False, math.nan)]) == ""
    assert _basin_text([_series("a", False, 0.2)]) == ""
    two = _basin_text([_series("a", False, 0.01), _series("b", False, 0.02),
                       _series("c", True, 0.03)])
    assert two.startswith("In all 2 series where it does not")
    assert two.endswith("collapse ends there: a from 0.01, b from 0.02")
    some = _basin_text([_series("a", False, 0.01), _series("b", False, math.nan)])
    assert some.startswith("In 1 of the 2 series where it does not")


def test_heatmap_marks_the_basin_at_the_left_edge_of_its_cell():
    """basin_marks {2: 0.01} on lambda cells 1e-3, 1e-2, 1e-1 (log axis: edges at the
    geometric midpoints) is a dashed line at sqrt(1e-3 x 1e-2) in the depth-2 row; the
    lambda_crit mark {1: 0.05} stays at its value, solid."""
    import matplotlib.pyplot as plt

    from ncsim.study.analyses import _grid_heatmap

    table = pd.DataFrame({"lambda": [1e-3, 1e-2, 1e-1] * 2, "depth": [1] * 3 + [2] * 3,
                          "onset_collapsed": [10.0, 20.0, np.nan, 30.0, 40.0, np.nan]})
    fig = _grid_heatmap(table, "lambda", "depth", "onset_collapsed", "t", row_marks={1: 0.05},
                        log_y=False, basin_marks={2: 1e-2, 1: math.nan})
    lines = fig.axes[0].lines
    plt.close(fig)
    assert len(lines) == 2
    crit, basin = lines
    assert list(crit.get_xdata()) == [0.05, 0.05] and crit.get_linestyle() == "-"
    assert list(crit.get_ydata()) == [0.55, 1.45]
    assert basin.get_xdata()[0] == pytest.approx(math.sqrt(1e-5), rel=1e-12)
    assert basin.get_linestyle() == "--" and list(basin.get_ydata()) == [1.55, 2.45]


def test_agreement_leaves_out_runs_without_feature_decay(tmp_path, no_figures):
    """At lambda_H = 0 the theory's phase is no_collapse (NC1 fails in absolute terms) while
    a simulated run's relative NC1 still crosses the threshold (classify's docstring: onset
    32.6 at K = 4, n = 5): the agreement leaves such a run out, saying so, instead of
    counting it as a miss. The run at lambda_H = 0.01 collapses as the theory says: 100% of
    1 run."""
    from ncsim.theory.phase import classify

    base = {"loss": "ce", "bias": "none", "classes": 3, "per_class": 4, "dim": 8, "depth": 1,
            "lambda_b": 0.0, "init_scale": 0.1, "seed": 0, "lambda_w": 1e-2,
            "status": "ok", "fn_at_onset": 1.0}
    rows = [{**base, "lambda_h": 0.0, "onset_time": 40.0},
            {**base, "lambda_h": 1e-2, "onset_time": 50.0}]
    assert [classify(**{k: r[k] for k in ("loss", "bias", "depth", "lambda_w", "lambda_h",
                                           "lambda_b", "init_scale")},
                     K=3, n=4, d=8)["phase"] for r in rows] == ["no_collapse", "collapse"]
    study = load(tmp_path, "weight_decay", part_toml("decay", **{"lambda_h": [0.0, 1e-2]}))
    sec = weight_decay(study, frame(rows, "decay"), linear_traj([]), tmp_path)
    assert sec.numbers["agreement_with_theory_phase"] == {"decay": 1.0}
    assert ("decay: measured collapse/no-collapse matches the theory's phase in 100% of 1 runs "
            "(1 more at lambda_H = 0, where NC1 falls only relative to the growing class means, "
            "which the theory does not count as collapse)") in sec.reason
