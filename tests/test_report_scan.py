"""Scan of the study analyses, the report writer and the figures over degenerate result tables.

Tables are built by hand in the layout the producers write (run table: run_id, part, model,
status, onset_time, fn_at_onset and the grid axes; trajectory table: run_id, time, fn,
nc1_trace). Invariants: no traceback and no RuntimeWarning, no verdict that claims support
from no evidence or from NaNs, statistics equal to a plain numpy recomputation, figures
written as valid files. Fixed findings: a lambda_H = 0 baseline on the weight-decay grid
(geomspace from 0 stopped `ncsim study run`), the lead figure and plot_overlay on empty log
panels, invariance and width supporting from a NaN CV / onset change, intervention's t-test
warning on flat arms, a NaN depth or activation label, heat maps of hundreds of decades.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import warnings
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ncsim.errors import InputError
from ncsim.io import write_json
from ncsim.plots import heatmap_figure, save_figure, trajectory_figure
from ncsim.study import analyses as A
from ncsim.study.report import write_report
from ncsim.study.spec import Study
from ncsim.study.store import Store
from ncsim.theory.phase import plot_phase
from ncsim.validate.plots import plot_overlay

PNG = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- helpers
def study(analysis: str, parts: list[tuple[str, dict]], model: str = "simulated") -> Study:
    """A study of ``analysis`` with parts (name, grid)."""
    return Study(name="s", title="S", question="q?", claim="c.", analysis=analysis,
                 metrics=[], source="s.toml",
                 parts=[{"name": n, "model": model, "grid": {k: list(v) for k, v in g.items()},
                         "fixed": {}} for n, g in parts])


def runs_over(part: str, grid: dict, model: str = "simulated", **columns) -> pd.DataFrame:
    """One collapsed run per grid point (onset 10 + i, fn* 1 + 0.01 (i mod 3)); ``columns``
    replace or add columns."""
    rows = []
    for i, combo in enumerate(itertools.product(*grid.values())):
        rows.append({"run_id": f"{part}{i:03d}", "part": part, "model": model, "status": "ok",
                     "onset_time": 10.0 + i, "fn_at_onset": 1.0 + 0.01 * (i % 3),
                     **dict(zip(grid, combo))})
    return pd.DataFrame(rows).assign(**columns)


def no_traj() -> pd.DataFrame:
    return pd.DataFrame({"run_id": pd.Series([], dtype=object), "time": [], "fn": [],
                         "nc1_trace": []})


def valid_png(path) -> None:
    assert Path(path).read_bytes()[:8] == PNG
    assert mpimg.imread(path).ndim == 3


def figdir(tmp_path):
    d = tmp_path / "figures"
    d.mkdir(exist_ok=True)
    return d


def naive_cv(values) -> float:
    v = np.asarray(values, float)
    return float(np.std(v, ddof=1) / np.mean(v)) if v.size >= 2 else float("nan")


FIX_WD = {"loss": "ce", "bias": "none", "classes": 4, "per_class": 10, "dim": 16,
          "lambda_b": 0.0, "init_scale": 0.1, "depth": 1}

CASES = {
    "invariance": ([("a", {"seed": [0, 1, 2, 3]})], {}),
    "lead_time": ([("a", {"seed": [0, 1, 2, 3, 4]})], {}),
    "intervention": ([("a", {"intervene_alpha": [0.3, 1.0, 3.0], "seed": [0, 1]})],
                     {"fn_before_intervention": 1.0, "fn_after_intervention": 2.0}),
    "depth": ([("a", {"depth": [1, 2, 3, 4]})], {}),
    "activation": ([("a", {"activation": ["relu", "tanh", "gelu"], "seed": [0, 1]})], {}),
    "width": ([("a", {"dim": [16, 32, 64, 128]})], {}),
    "grid": ([("a", {"preset": ["mlp", "resnet20"], "seed": [0, 1]})], {"dataset": "d1"}),
    "weight_decay": ([("a", {"lambda": [1e-4, 1e-3, 1e-2, 1e-1]})], FIX_WD),
}


def case_runs(analysis: str) -> tuple[Study, pd.DataFrame]:
    parts, extra = CASES[analysis]
    st = study(analysis, parts)
    runs = pd.concat([runs_over(n, g, **extra) for n, g in parts], ignore_index=True)
    if analysis == "weight_decay":
        runs["lambda_w"] = runs["lambda_h"] = runs["lambda"]
    return st, runs


# ----------------------------------------------------------------------------- invariants held
@pytest.mark.parametrize("analysis", sorted(CASES))
@pytest.mark.parametrize("status", ["diverged", "vanishing", "not_collapsed", "empty"])
def test_no_collapsed_run_gives_inconclusive_without_warning(analysis, status, tmp_path,
                                                             no_figures):
    """Every analysis: no collapsed run (all diverged / vanishing / not collapsed, or 0 rows)
    is inconclusive, without a RuntimeWarning."""
    st, runs = case_runs(analysis)
    if status == "empty":
        runs = runs.iloc[0:0]
    else:
        runs = runs.assign(status=status, onset_time=np.nan, fn_at_onset=np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        sec = A.ANALYSES[analysis](st, runs, no_traj(), figdir(tmp_path))
    assert sec.verdict == "inconclusive"


@pytest.mark.parametrize("analysis", sorted(CASES))
def test_one_collapsed_run_does_not_support(analysis, tmp_path, no_figures):
    """Every analysis: a single collapsed run never gives 'supports'."""
    st, runs = case_runs(analysis)
    sec = A.ANALYSES[analysis](st, runs.iloc[:1], no_traj(), figdir(tmp_path))
    assert sec.verdict != "supports"


def test_invariance_table_equals_numpy_mean_and_ddof1_cv(tmp_path, no_figures):
    """invariance: n, mean fn*, fn* CV and onset CV (std ddof=1 / mean) of the collapsed runs."""
    rng = np.random.default_rng(3)
    grid = {"init_scale": [0.1, 0.3], "eta_h": [0.5, 2.0], "seed": [0, 1, 2]}
    runs = runs_over("a", grid, onset_time=rng.lognormal(3, 0.3, 12),
                     fn_at_onset=rng.lognormal(0, 0.1, 12))
    runs.loc[[2, 7], "status"] = ["diverged", "not_collapsed"]
    runs.loc[5, "fn_at_onset"] = np.nan
    sec = A.invariance(study("invariance", [("a", grid)]), runs, no_traj(), figdir(tmp_path))
    row = sec.tables[0][1].iloc[0]
    ok = runs.drop(index=[2, 5, 7])
    assert row["n_collapsed"] == 9
    assert row["fn_star_mean"] == pytest.approx(ok["fn_at_onset"].mean(), rel=1e-12)
    assert row["fn_star_cv"] == pytest.approx(naive_cv(ok["fn_at_onset"]), rel=1e-12)
    assert row["onset_cv"] == pytest.approx(naive_cv(ok["onset_time"]), rel=1e-12)
    split = A.axis_spread(ok, list(grid)).set_index("axis")
    cvs = [naive_cv(g["fn_at_onset"]) for _, g in ok.groupby(["init_scale", "seed"])
           if len(g) >= 2]
    assert split.loc["eta_h", "cv_mean"] == pytest.approx(np.mean(cvs), rel=1e-12)
    assert split.loc["eta_h", "n_groups"] == len(cvs)


def test_intervention_p_value_is_welch(tmp_path, no_figures):
    """intervention: p_fn_star is Welch's two-sided t test of arm fn* against control fn*."""
    grid = {"intervene_alpha": [1.0, 3.0], "seed": [0, 1, 2, 3]}
    fn = [1.0, 1.1, 0.95, 1.05, 1.3, 1.2, 1.45, 1.25]
    runs = runs_over("u", grid, fn_at_onset=fn)
    sec = A.intervention(study("intervention", [("u", grid)]), runs, no_traj(),
                         figdir(tmp_path))
    arm = sec.tables[0][1].set_index("alpha").loc[3.0]
    x, y = np.array(fn[4:]), np.array(fn[:4])
    vx, vy = x.var(ddof=1) / 4, y.var(ddof=1) / 4
    t = (x.mean() - y.mean()) / np.sqrt(vx + vy)
    dof = (vx + vy) ** 2 / (vx ** 2 / 3 + vy ** 2 / 3)
    assert arm["p_fn_star"] == pytest.approx(2 * stats.t.sf(abs(t), dof), rel=1e-9)
    assert arm["fn_star_ratio"] == pytest.approx(x.mean() / y.mean(), rel=1e-12)


def test_grid_F_equals_a_two_way_anova_with_unequal_cells(tmp_path, no_figures):
    """grid: interaction F and p equal the additive-vs-full least-squares F test on log fn*."""
    rng = np.random.default_rng(7)
    rows = []
    for a, ds, n in [("mlp", "d1", 3), ("mlp", "d2", 2), ("res", "d1", 4), ("res", "d2", 3)]:
        for s in range(n):
            mu = 0.3 * (a == "res") + 0.2 * (ds == "d2") + 0.3 * ((a, ds) == ("res", "d2"))
            rows.append({"run_id": f"{a}{ds}{s}", "part": ds, "model": "trained",
                         "status": "ok", "preset": a, "dataset": ds, "seed": s,
                         "onset_time": 10.0, "fn_at_onset": float(np.exp(mu + rng.normal(0, .1)))})
    runs = pd.DataFrame(rows)
    st = study("grid", [("d1", {"preset": ["mlp", "res"]}), ("d2", {"preset": ["mlp", "res"]})],
               model="trained")
    sec = A.grid(st, runs, no_traj(), figdir(tmp_path))
    y = np.log(runs["fn_at_onset"].to_numpy())
    arch = (runs["preset"] == "res").to_numpy(float)
    data = (runs["dataset"] == "d2").to_numpy(float)
    additive = np.c_[np.ones_like(y), arch, data]
    full = np.c_[additive, arch * data]

    def rss(x):
        return float(((y - x @ np.linalg.lstsq(x, y, rcond=None)[0]) ** 2).sum())

    f = (rss(additive) - rss(full)) / (rss(full) / (len(y) - 4))
    assert sec.numbers["interaction_F"] == pytest.approx(f, rel=1e-9)
    assert sec.numbers["interaction_p"] == pytest.approx(stats.f.sf(f, 1, len(y) - 4), rel=1e-7)


def _store(tmp_path, analysis, rows):
    store = Store(tmp_path / "s")
    store.parts.mkdir(parents=True)
    record = study(analysis, [("a", {"seed": [0, 1, 2]})]).to_dict()
    record["run_ids"] = [r["run_id"] for r in rows]
    write_json(record, store.study_path)
    traj = pd.DataFrame({"time": [0.0, 1.0, 10.0], "fn": [0.1, 0.5, 1.0],
                         "nc1_trace": [1.0, 0.1, 0.01]})
    for r in rows:
        store.write_run(r["run_id"], {k: v for k, v in r.items() if k != "run_id"},
                        None if r["status"] == "failed" else traj)
    return store


@pytest.mark.parametrize("analysis", ["invariance", "lead_time", "weight_decay"])
def test_report_of_failed_and_diverged_runs_names_its_verdict(analysis, tmp_path):
    """write_report: failed and diverged runs only: verdict.json, report.md and report.html
    agree on 'inconclusive'; the error text with | * < stays text."""
    rows = [{"run_id": "f0", "part": "a", "model": "simulated", "seed": 0, "status": "failed",
             "error": "boom | *x* <y>"}] + [
        {"run_id": f"d{i}", "part": "a", "model": "simulated", "seed": i, "status": "diverged",
         "onset_time": np.nan, "fn_at_onset": np.nan} for i in (1, 2)]
    store = _store(tmp_path, analysis, rows)
    text = write_report(store.root).read_text()
    verdict = json.loads((store.root / "verdict.json").read_text())
    assert verdict["verdict"] == "inconclusive"
    assert "**Verdict: inconclusive.**" in text
    assert "Failed runs: 1 x boom | \\*x\\* \\<y>" in text
    page = (store.root / "report.html").read_text()
    assert "<b>Verdict: inconclusive.</b>" in page
    assert "boom | *x* &lt;y&gt;" in page


def test_heatmap_single_value_and_zero_decay_axes_draw(tmp_path):
    """heatmap_figure: one grid value per axis (log), and a decay axis holding 0 (linear)."""
    one = pd.DataFrame({"x": [1e-3], "y": [1e-2], "v": [5.0]})
    valid_png(save_figure(heatmap_figure(one, "x", "y", "v"), tmp_path / "one.png"))
    zero = pd.DataFrame({"x": [0.0, 1e-2, 0.0, 1e-2], "y": [1e-3, 1e-3, 1e-2, 1e-2],
                         "v": [np.nan, 1.0, 0.0, -1.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fig = heatmap_figure(zero, "x", "y", "v", log_x=None)
        valid_png(save_figure(fig, tmp_path / "zero.png"))


def test_plot_phase_zero_decays_single_values_and_formats(tmp_path):
    """plot_phase: zero decays, a single depth row, and .svg/.pdf outputs are valid files."""
    rows = [{"lambda_w": a, "lambda_h": b, "phase": p} for (a, b), p in
            zip(itertools.product([0.0, 1e-2], [0.0, 1e-2]),
                ["no_collapse", "collapse", "vanishing", "trapped"])]
    plot_phase(rows, "lambda_w", "lambda_h", str(tmp_path / "p.png"))
    valid_png(tmp_path / "p.png")
    one = [{"lambda": 1e-3, "depth": 3, "phase": "basin_edge"}]
    plot_phase(one, "lambda", "depth", str(tmp_path / "p.svg"))
    plot_phase(one, "lambda", "depth", str(tmp_path / "p.pdf"))
    assert (tmp_path / "p.svg").read_bytes().lstrip().startswith(b"<?xml")
    assert (tmp_path / "p.pdf").read_bytes().startswith(b"%PDF-")


def test_trajectory_figure_all_nan_or_zero_fn_draws(tmp_path):
    """trajectory_figure: fn all NaN in one run and 0 in the other still gives a valid PNG."""
    t = np.array([0.0, 0.1, 1.0, 10.0])
    traj = pd.DataFrame({"run_id": ["a"] * 4 + ["b"] * 4, "time": np.r_[t, t],
                         "fn": [np.nan] * 4 + [0.0] * 4, "nc1_trace": np.r_[t, t] + 1})
    runs = pd.DataFrame({"run_id": ["a", "b"], "onset_time": [0.0, np.inf],
                         "fn_at_onset": [np.nan, 0.0], "seed": [np.nan, 1.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fig = trajectory_figure(traj, runs, label_column="seed")
        valid_png(save_figure(fig, tmp_path / "t.png"))


# ----------------------------------------------------------------------------- findings
def test_weight_decay_grid_with_zero_lambda_h_is_analysed(tmp_path):
    """weight_decay: a (lambda_w, lambda_h) grid with a lambda_h = 0 baseline gives a section."""
    grid = {"lambda_w": [1e-3, 1e-2], "lambda_h": [0.0, 1e-2]}
    runs = runs_over("g", grid, **FIX_WD, lambda_crit_theory=np.nan)
    runs.loc[runs["lambda_h"] == 0, ["status", "onset_time", "fn_at_onset"]] = [
        "not_collapsed", np.nan, np.nan]
    sec = A.weight_decay(study("weight_decay", [("g", grid)]), runs, no_traj(),
                         figdir(tmp_path))
    assert sec.verdict in A.VERDICTS
    valid_png(tmp_path / sec.figures[0][1])


def test_lead_without_any_crossing_is_inconclusive(tmp_path):
    """lead_time: trained runs whose fn never falls to fn_pred give 'inconclusive', no error."""
    runs = pd.DataFrame({"run_id": ["r0", "r1", "r2"], "part": "m", "model": "trained",
                         "status": "ok", "seed": [0, 1, 2], "onset_time": [40.0, 44.0, 48.0],
                         "fn_at_onset": [1.0, 1.1, 1.2]})
    traj = pd.DataFrame([{"run_id": r, "time": float(t), "fn": 2.0 + 0.02 * t,
                          "nc1_trace": 1 / (1 + t)} for r in runs["run_id"]
                         for t in range(0, 100, 10)])
    st = study("lead_time", [("m", {"seed": [0, 1, 2]})], model="trained")
    sec = A.lead(st, runs, traj, figdir(tmp_path))
    assert sec.verdict == "inconclusive"


def test_overlay_panel_without_positive_values_draws(tmp_path):
    """plot_overlay: NC1 = 0 in both frames breaks the lines and still writes a valid PNG."""
    frame = pd.DataFrame({"t": [0.0, 1.0, 2.0], "fn": [1.0, 1.5, 2.0], "nc1_trace": 0.0})
    valid_png(plot_overlay(frame, frame, tmp_path / "o.png"))


def test_invariance_does_not_support_from_a_nan_cv(tmp_path, no_figures):
    """invariance: collapsed runs whose fn* CV is undefined (mean fn* = 0) do not support."""
    runs = runs_over("a", {"seed": [0, 1, 2]}, fn_at_onset=0.0)
    sec = A.invariance(study("invariance", [("a", {"seed": [0, 1, 2]})]), runs, no_traj(),
                       figdir(tmp_path))
    assert sec.verdict != "supports"


def test_width_does_not_support_from_nan_onset_change(tmp_path, no_figures):
    """width: onset 0 at every width (no measurable speed-up) does not support."""
    runs = runs_over("a", {"dim": [16, 32, 64]}, onset_time=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        sec = A.width(study("width", [("a", {"dim": [16, 32, 64]})]), runs, no_traj(),
                      figdir(tmp_path))
    assert sec.verdict != "supports"


def test_intervention_identical_fn_star_gives_nan_p_without_warning(tmp_path, no_figures):
    """intervention: arm and control of identical fn* give p = NaN and no RuntimeWarning."""
    grid = {"intervene_alpha": [1.0, 3.0], "seed": [0, 1]}
    runs = runs_over("u", grid, fn_at_onset=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        sec = A.intervention(study("intervention", [("u", grid)]), runs, no_traj(),
                             figdir(tmp_path))
    assert np.isnan(sec.tables[0][1].set_index("alpha").loc[3.0, "p_fn_star"])


def test_depth_with_a_nan_depth_is_analysed_or_refused(tmp_path, no_figures):
    """depth: a run with depth NaN gives a section or an InputError, not a ValueError."""
    runs = runs_over("a", {"depth": [1.0, 2.0, 3.0, np.nan]}, onset_time=[10.0, 20.0, 30.0, 5.0])
    with contextlib.suppress(InputError):
        A.depth(study("depth", [("a", {"depth": [1, 2, 3]})]), runs, no_traj(), figdir(tmp_path))


def test_activation_with_a_missing_label_is_drawn_or_refused(tmp_path):
    """activation: a run without an activation label gives a section or an InputError."""
    runs = runs_over("a", {"activation": ["relu", "tanh", None], "seed": [0, 1]})
    with contextlib.suppress(InputError):
        A.activation(study("activation", [("a", {"activation": ["relu", "tanh"]})]), runs,
                     no_traj(), figdir(tmp_path))


def test_heatmap_of_a_wide_log_axis_draws_or_is_refused(tmp_path):
    """heatmap_figure: an axis spanning 250 decades draws or gives an InputError."""
    table = pd.DataFrame({"x": [1.0, 1e250], "y": [1.0, 1.0], "v": [1.0, 2.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with contextlib.suppress(InputError):
            valid_png(save_figure(heatmap_figure(table, "x", "y", "v"), tmp_path / "h.png"))


def test_log_axes_past_1e150_are_refused_and_300_decades_draw(tmp_path):
    """cell_edges: log values beyond 1e+-150 are an InputError (matplotlib's log axes overflow
    on spans like 1e+-250), in the heat map and the phase diagram alike; a grid of
    300 decades draws with its outer edges held at 1e+-200."""
    from ncsim.plots import cell_edges

    with pytest.raises(InputError, match="log axis of a figure takes values within"):
        cell_edges([1e-300, 1.0], log=True)
    rows = [{"lambda": lam, "init_scale": s, "phase": "collapse"}
            for lam in (1e-300, 1e300) for s in (0.1, 1.0)]
    with pytest.raises(InputError, match="1e-300 .. 1e\\+300"):
        plot_phase(rows, "lambda", "init_scale", str(tmp_path / "p.png"))
    edges = cell_edges([1e-150, 1e150], log=True)  # mirrored: 1e-300 and 1e300
    assert edges.tolist() == [1e-200, 1.0, 1e200]
    table = pd.DataFrame({"x": [1e-150, 1e150], "y": 1.0, "v": [1.0, 2.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        valid_png(save_figure(heatmap_figure(table, "x", "y", "v"), tmp_path / "h.png"))


def test_welch_p_needs_spread_in_one_arm_only():
    """One flat arm against a spread one is Welch's test (scipy's p); two flat arms give NaN."""
    flat, spread_ = pd.Series([2.0, 2.0, 2.0]), pd.Series([1.0, 2.0, 3.5])
    with warnings.catch_warnings():  # scipy warns of a flat arm's moments
        warnings.simplefilter("ignore", RuntimeWarning)
        want = stats.ttest_ind(flat, spread_, equal_var=False).pvalue
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert A._welch_p(flat, spread_) == want
    assert np.isnan(A._welch_p(flat, pd.Series([5.0, 5.0])))
    assert np.isnan(A._welch_p(pd.Series([1.0]), spread_))
