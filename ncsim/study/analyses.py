"""Per-study analyses: the numbers behind each claim, its figures and its verdict.

Each analysis takes the study, its run table and trajectory table and the figure folder, and
returns a :class:`Section`: tables, figures, numbers and a verdict ("supports", "contradicts"
or "inconclusive") with the reason in numbers. Only the runs :func:`collapsed` keeps count as
collapsed (status ok, a finite onset and fn at onset, a crossing in view); fn* of a run is
``fn_at_onset``. A run table holds one row per run (:func:`one_row_per_run`); its row order,
column order and index labels change nothing (parts follow the study's order).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ncsim.study.spec import Study

VERDICTS = ("supports", "contradicts", "inconclusive")
CV_LIMIT = 0.08          # the paper's "CV < 8%"
RETURN_TOL = 0.05        # |fn*(alpha) / fn*(1) - 1| counted as a return to fn*
WIDTH_FN_LIMIT = 0.13    # the paper's "at most 13%"
OPTIMAL_FACTOR = 2.0     # onset within this factor of the fastest = optimal regime
MONOTONE_TOL = 0.02      # relative rise of onset over width still counted as monotone
NO_COLLAPSE = ("not_collapsed", "vanishing")  # statuses of runs that ended without collapse


@dataclass
class Section:
    """One study's part of the report."""

    verdict: str
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- helpers
def _observed_mask(runs: pd.DataFrame) -> np.ndarray:
    """Per row of ``runs``: True for a run whose outcome was observed (see :func:`observed`)."""
    if "onset_at_phase_start" not in runs:
        return np.ones(len(runs), dtype=bool)
    return ~runs["onset_at_phase_start"].astype("boolean").fillna(False).to_numpy(bool)


def observed(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs whose outcome was observed: all but the trained runs whose metric was already
    below the threshold when phase 2 began (``onset_at_phase_start``), which neither
    collapsed in view nor failed to collapse."""
    if "onset_at_phase_start" not in runs:
        return runs
    return runs[_observed_mask(runs)]


def collapsed_mask(runs: pd.DataFrame) -> np.ndarray:
    """Per row of ``runs`` (by position, whatever its index labels): True for a run that
    :func:`collapsed` keeps."""
    if "status" not in runs or "onset_time" not in runs:
        return np.zeros(len(runs), dtype=bool)
    return ((runs["status"] == "ok").to_numpy(bool) & _observed_mask(runs)
            & np.isfinite(runs["onset_time"].astype(float).to_numpy())
            & np.isfinite(runs["fn_at_onset"].astype(float).to_numpy()))


def collapsed(runs: pd.DataFrame) -> pd.DataFrame:
    """Observed runs (:func:`observed`) with status ok and a finite onset time and fn at
    onset."""
    return runs[collapsed_mask(runs)]


def one_row_per_run(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with one row per run: a ``run_id`` that repeats keeps its last row, as the
    study store keeps it, so that a run counted twice does not count as two runs (a CV of
    2 runs shown twice would pass for one of 4); rows without a run id are all kept."""
    if "run_id" not in runs:
        return runs
    ids = runs["run_id"]
    again = (ids.duplicated(keep="last") & ids.notna()).to_numpy(bool)
    return runs[~again] if again.any() else runs


def cv(values: Any) -> float:
    """Sample coefficient of variation std(ddof=1) / mean (NaN for fewer than 2 values)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 2 or v.mean() == 0:
        return math.nan
    return float(v.std(ddof=1) / v.mean())


def spread(values: Any) -> float:
    """max / min - 1 of the finite positive values (NaN for fewer than 2)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return float(v.max() / v.min() - 1) if v.size >= 2 else math.nan


def part_axes(study: Study, part: str) -> list[str]:
    for p in study.parts:
        if p["name"] == part:
            return list(p["grid"])
    return []


def part_model(study: Study, part: str) -> str:
    return next((p["model"] for p in study.parts if p["name"] == part), "simulated")


def fmt(value: Any) -> str:
    """A number for the report: 4 significant digits; NaN and infinities as "nan", "inf",
    "-inf"."""
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value)


def setting_text(setting: dict[str, str]) -> str:
    """A series' setting of the other axes for the report: "lambda_h = 0.001, depth = 2";
    "all runs" when the series has no other axis."""
    return ", ".join(f"{k} = {v}" for k, v in setting.items()) or "all runs"


def series_label(part: str, setting: dict[str, str]) -> str:
    """A part and its series' setting: "deep_linear (init_scale = 0.3)", or the part alone."""
    return f"{part} ({setting_text(setting)})" if setting else part


def _parts(runs: pd.DataFrame, study: Study) -> list[str]:
    """The parts that have runs in ``runs``, in the study's order (parts the study does not
    list after them, by name): tables, reasons and numbers do not depend on the row order."""
    if "part" not in runs:
        return []
    have = set(runs["part"])
    listed = list(dict.fromkeys(p["name"] for p in study.parts if p["name"] in have))
    return listed + sorted(have - set(listed), key=str)


def _time_label(study: Study, part: str) -> str:
    return "epoch" if part_model(study, part) == "trained" else "t (gradient-flow time)"


def _figure(fig, figdir: Path, name: str) -> str:
    from ncsim.plots import save_figure

    save_figure(fig, figdir / f"{name}.png")
    return f"figures/{name}.png"


def _trajectory_fig(study: Study, runs: pd.DataFrame, traj: pd.DataFrame, figdir: Path,
                    part: str, label: str | None, max_runs: int = 12) -> tuple[str, str] | None:
    from ncsim.plots import trajectory_figure

    ids = list(runs.loc[runs["part"] == part, "run_id"])[:max_runs]
    sub = traj[traj["run_id"].isin(ids)]
    if sub.empty or "fn" not in sub or "nc1_trace" not in sub:
        return None
    info = runs[runs["run_id"].isin(ids)]
    if label is not None and label in info and not pd.api.types.is_numeric_dtype(info[label]):
        label = None
    fig = trajectory_figure(sub, info, label_column=label, time_label=_time_label(study, part))
    return (f"{part}: fn and NC1 (trace) over time; dots mark onsets",
            _figure(fig, figdir, f"trajectories_{part}"))


# axis labels of the line figures' value columns (times in the part's unit: flow time for
# simulated parts, epochs for trained ones)
Y_LABELS = {"onset_collapsed": "onset time (collapsed runs)", "onset_mean": "mean onset time",
            "fn_star_mean": "mean fn* (fn at onset)"}


def _line_fig(table: pd.DataFrame, x: str, ys: list[str], hue: str | None, title: str,
              logx: bool = True, logy: bool = True, vlines: dict[str, float] | None = None):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ys), figsize=(5.0 * len(ys), 3.8), squeeze=False)
    groups = table.groupby(hue, sort=True) if hue else [("", table)]
    for key, part in groups:
        part = part.sort_values(x)
        for ax, y in zip(axes[0], ys):
            (line,) = ax.plot(part[x], part[y], "o-", ms=4,
                              label=f"{hue}={fmt(key)}" if hue else None)
            # an x without a value (no run collapsed there) is marked on the x axis, so
            # that a missing end of a series shows instead of shortening the axis
            gone = part.loc[~np.isfinite(part[y].astype(float)), x]
            if len(gone):
                ax.plot(gone, np.zeros(len(gone)), "x", ms=7, mew=1.5,
                        color=line.get_color(), clip_on=False,
                        transform=ax.get_xaxis_transform(),
                        label=f"no collapse{f' ({hue}={fmt(key)})' if hue else ''}")
    for ax, y in zip(axes[0], ys):
        if logx and (table[x].astype(float) > 0).all():
            ax.set_xscale("log")
        if logy and (table[y].dropna().astype(float) > 0).all() and table[y].notna().any():
            ax.set_yscale("log")
        for name, value in (vlines or {}).items():
            if math.isfinite(value):
                ax.axvline(value, color="c", ls="--", lw=1.5, label=name)
        ax.set_xlabel(x)
        ax.set_ylabel(Y_LABELS.get(y, y))
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _group_stats(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per group: runs, collapsed runs, fn* and onset mean and CV."""
    rows = []
    grouped = frame.groupby(keys, sort=True, dropna=False) if keys else [((), frame)]
    for key, sub in grouped:
        ok = collapsed(sub)
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        row.update({"n_runs": len(sub), "n_collapsed": len(ok),
                    "fn_star_mean": float(ok["fn_at_onset"].mean()) if len(ok) else math.nan,
                    "fn_star_cv": cv(ok["fn_at_onset"]),
                    "onset_mean": float(ok["onset_time"].mean()) if len(ok) else math.nan,
                    "onset_cv": cv(ok["onset_time"])})
        rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, "n_runs", "n_collapsed", "fn_star_mean",
                                       "fn_star_cv", "onset_mean", "onset_cv"])


# ----------------------------------------------------------------------------- 1 invariance
def axis_spread(ok: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """How much of the spread of fn at onset each varied axis makes: for each axis with two or
    more values among the collapsed runs ``ok``, the runs are grouped by the part's other
    axes (the axis alone varies within a group) and the CV of fn at onset is taken in each
    group of two or more runs. Columns: axis, n_groups, cv_mean (mean over the groups),
    cv_max. An axis whose groups all hold a single run has NaN CVs."""
    rows = []
    for axis in axes:
        if axis not in ok or ok[axis].nunique(dropna=False) < 2:
            continue
        others = [a for a in axes if a != axis and a in ok]
        groups = ok.groupby(others, sort=True, dropna=False) if others else [((), ok)]
        cvs = np.array([cv(g["fn_at_onset"]) for _, g in groups if len(g) >= 2], dtype=float)
        rows.append({"axis": axis, "n_groups": int(cvs.size),
                     "cv_mean": float(cvs.mean()) if cvs.size else math.nan,
                     "cv_max": float(cvs.max()) if cvs.size else math.nan})
    return pd.DataFrame(rows, columns=["axis", "n_groups", "cv_mean", "cv_max"])


def _axis_text(spread_rows: pd.DataFrame | None) -> str:
    """``across init_scale 17.6%, eta_h 9.1%, seed 1.1% with the other axes fixed`` (the mean
    CVs of :func:`axis_spread`; empty without a split)."""
    if spread_rows is None:
        return ""
    items = ", ".join(f"{r.axis} {100 * r.cv_mean:.1f}%" for r in spread_rows.itertuples())
    return f"; across {items} with the other axes fixed"


def invariance(study: Study, runs: pd.DataFrame, traj: pd.DataFrame, figdir: Path) -> Section:
    """CV of fn at onset within each part (init scale, time scale, seed, weight decay), and
    for a part that varies several axes, the CV each axis makes with the others fixed
    (:func:`axis_spread`): which condition moves fn*."""
    import matplotlib.pyplot as plt

    runs = one_row_per_run(runs)
    rows, evaluable, split = [], [], {}
    for part in _parts(runs, study):
        sub = runs[runs["part"] == part]
        ok = collapsed(sub)
        axes = part_axes(study, part)
        row = {"part": part, "model": part_model(study, part), "varied": ", ".join(axes),
               "n_runs": len(sub), "n_collapsed": len(ok),
               "fn_star_mean": float(ok["fn_at_onset"].mean()) if len(ok) else math.nan,
               "fn_star_cv": cv(ok["fn_at_onset"]), "onset_cv": cv(ok["onset_time"])}
        if "fn_star_theory" in ok and ok["fn_star_theory"].notna().any():
            row["fn_star_theory_mean"] = float(ok["fn_star_theory"].astype(float).mean())
        by_axis = axis_spread(ok, axes)
        if len(by_axis) >= 2:  # one axis: its CV is the part's
            split[part] = by_axis
        rows.append(row)
        if len(ok) >= 3 and math.isfinite(row["fn_star_cv"]):  # NaN: fn* of mean 0 or overflow
            evaluable.append(row)
    table = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, part in enumerate(_parts(runs, study)):
        ok = collapsed(runs[runs["part"] == part])
        ax.plot(np.full(len(ok), i) + np.linspace(-0.15, 0.15, len(ok)), ok["fn_at_onset"],
                "o", ms=4)
    ax.set_xticks(range(len(_parts(runs, study))), _parts(runs, study), rotation=20, fontsize=8)
    ax.set_ylabel("fn at onset (fn*)")
    ax.grid(True, alpha=0.3)
    figs = [("fn* of every collapsed run, by part", _figure(fig, figdir, "fn_star_groups"))]
    for part in _parts(runs, study)[:2]:
        item = _trajectory_fig(study, runs, traj, figdir, part, None)
        if item:
            figs.append(item)
    tables = [("fn* per part", table)]
    if split:
        tables.append(("fn* CV across each varied axis, the part's other axes fixed (mean and "
                       "largest over the settings of the other axes)",
                       pd.concat([b.assign(part=p) for p, b in split.items()])[
                           ["part", "axis", "n_groups", "cv_mean", "cv_max"]]))
    if not evaluable:
        return Section("inconclusive", "no part has 3 or more collapsed runs with a finite "
                       "fn* CV", tables=tables, figures=figs)
    over = [r for r in evaluable if r["fn_star_cv"] >= CV_LIMIT]
    numbers = {r["part"]: {"cv": r["fn_star_cv"], "n": r["n_collapsed"]}
               | ({"cv_by_axis": dict(zip(split[r["part"]]["axis"], split[r["part"]]["cv_mean"]))}
                  if r["part"] in split else {})
               for r in evaluable}
    listing = "; ".join(f"{r['part']}: CV {100 * r['fn_star_cv']:.1f}% (n={r['n_collapsed']}"
                        f"{_axis_text(split.get(r['part']))})" for r in evaluable)
    verdict = "contradicts" if over else "supports"
    left = [r for r in rows if r not in evaluable]
    where = ("in " + ", ".join(r["part"] for r in over) if over else "in every part"
             + (" with 3 or more collapsed runs" if left else ""))
    reason = f"fn* CV {'>=' if over else '<'} {100 * CV_LIMIT:.0f}% {where}: {listing}"
    if left:  # parts that say nothing of the CV are named, not passed over
        reason += ("; left out (fewer than 3 collapsed runs, or no finite fn* CV): "
                   + ", ".join(f"{r['part']} ({r['n_collapsed']} of {r['n_runs']} runs "
                               "collapsed)" for r in left))
    return Section(verdict, reason, numbers, tables, figs)


# ----------------------------------------------------------------------------- 2 lead time
def _lead_rows(sub: pd.DataFrame, traj: pd.DataFrame, axes: list[str],
               trained: bool = False) -> pd.DataFrame:
    """Lead of each collapsed run: onset minus the time fn crosses fn_pred (in-sample: the
    mean fn* of its setting; held out: of the other seeds). Simulated runs: the crossing
    interpolated in log time, in either direction (a small init grows to fn*), as their onset
    is. Trained runs (``trained``): the first logged epoch with fn <= fn_pred, as their onset
    is a logged epoch (the rule of :func:`ncsim.validate.analysis.crossing_epochs`)."""
    from ncsim.onset import lead_time

    direction, interpolate = ("below", False) if trained else ("auto", True)

    keys = [a for a in axes if a != "seed" and a in sub]
    ok = collapsed(sub)
    rows = []
    for _, run in ok.iterrows():
        same = ok
        for k in keys:
            same = same[same[k] == run[k]]
        others = same[same["seed"] != run["seed"]] if "seed" in same else same.iloc[0:0]
        part = traj[traj["run_id"] == run["run_id"]].sort_values("time")
        t, fn = part["time"].to_numpy(float), part["fn"].to_numpy(float)
        row = {"run_id": run["run_id"], "seed": run.get("seed"),
               "onset_time": run["onset_time"], "fn_star": run["fn_at_onset"]}
        for name, level in (("in_sample", same["fn_at_onset"].mean()),
                            ("held_out", others["fn_at_onset"].mean() if len(others) else np.nan)):
            row[f"fn_pred_{name}"] = level
            row[f"lead_{name}"] = (lead_time(t, fn, run["onset_time"], level, direction,
                                             interpolate)
                                   if math.isfinite(level) else math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def _lead_summary(leads: pd.DataFrame, name: str) -> dict[str, float]:
    lead = leads[f"lead_{name}"].to_numpy(float) if len(leads) else np.array([])
    ok = np.isfinite(lead)
    out = {"n_runs": int(len(leads)), "n_crossed": int(ok.sum()),
           "lead_mean": float(lead[ok].mean()) if ok.any() else math.nan,
           "lead_std": float(lead[ok].std(ddof=1)) if ok.sum() > 1 else math.nan,
           "ordering_accuracy": float((lead[ok] > 0).mean()) if ok.any() else math.nan,
           "lead_over_onset": float(np.mean(lead[ok] / leads["onset_time"].to_numpy(float)[ok]))
           if ok.any() else math.nan}
    if name == "in_sample":
        errors = np.abs(lead[ok] - out["lead_mean"]) if ok.any() else np.array([])
    else:
        seeds = leads["seed"].astype(str).to_numpy()
        errors = np.array([abs(lead[i] - lead[ok & (seeds != seeds[i])].mean())
                           for i in np.flatnonzero(ok) if (ok & (seeds != seeds[i])).any()])
    out["mae"] = float(errors.mean()) if errors.size else math.nan
    return out


def lead(study: Study, runs: pd.DataFrame, traj: pd.DataFrame, figdir: Path) -> Section:
    """Lead of the fn crossing of fn_pred before onset, in-sample and leave-one-seed-out."""
    import matplotlib.pyplot as plt

    runs = one_row_per_run(runs)
    tables, summary_rows, all_leads = [], [], []
    for part in _parts(runs, study):
        leads = _lead_rows(runs[runs["part"] == part], traj, part_axes(study, part),
                           trained=part_model(study, part) == "trained")
        if leads.empty:
            continue
        leads.insert(0, "part", part)
        all_leads.append(leads)
        for name in ("in_sample", "held_out"):
            summary_rows.append({"part": part, "method": name, **_lead_summary(leads, name)})
    summary = pd.DataFrame(summary_rows)
    tables.append(("lead-time summary (time unit of the part)", summary))
    figs = []
    if all_leads:
        frame = pd.concat(all_leads, ignore_index=True)
        tables.append(("per-run leads", frame))
        fig, ax = plt.subplots(figsize=(5.5, 4))
        onset = frame["onset_time"].to_numpy(np.float64)
        drawn = 0
        for name, marker in (("in_sample", "o"), ("held_out", "x")):
            lead_ = frame[f"lead_{name}"].to_numpy(np.float64)
            shown = (onset > 0) & np.isfinite(onset) & np.isfinite(lead_)  # a log axis
            ax.plot(onset[shown], lead_[shown] / onset[shown], marker, label=name)
            drawn += int(shown.sum())
        ax.axhline(0, color="k", lw=0.8)
        if drawn:
            ax.set_xscale("log")
        else:
            ax.text(0.5, 0.5, "no run with an onset > 0 crossed fn_pred", ha="center",
                    va="center", transform=ax.transAxes)
        ax.set_xlabel("onset time")
        ax.set_ylabel("lead / onset time")
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
        figs.append(("lead of the fn crossing, relative to the onset time",
                     _figure(fig, figdir, "lead")))
    for part in _parts(runs, study)[:2]:
        item = _trajectory_fig(study, runs, traj, figdir, part, "seed")
        if item:
            figs.append(item)
    all_held = summary[summary["method"] == "held_out"] if len(summary) else summary
    held = all_held[all_held["n_crossed"] >= 4] if len(all_held) else all_held
    numbers = {f"{r['part']}/{r['method']}": {k: r[k] for k in
               ("lead_mean", "lead_std", "ordering_accuracy", "mae", "n_crossed")}
               for _, r in summary.iterrows()}
    if held.empty:
        return Section("inconclusive", "fewer than 4 held-out runs crossed fn_pred in every "
                       "part", numbers, tables, figs)
    acc = held["ordering_accuracy"].to_numpy(float)
    # runs without a held-out lead (fn never crossed fn_pred, or no other seed) and parts
    # with too few crossings are counted, not passed over
    text = "; ".join(f"{r['part']}: held-out lead {fmt(r['lead_mean'])} ± {fmt(r['lead_std'])} "
                     f"(MAE {fmt(r['mae'])}, fn crosses first in "
                     f"{100 * r['ordering_accuracy']:.0f}% of {r['n_crossed']} runs"
                     + (f"; {r['n_runs'] - r['n_crossed']} of its {r['n_runs']} collapsed runs "
                        "have no held-out lead" if r["n_crossed"] < r["n_runs"] else "") + ")"
                     for _, r in held.iterrows())
    left = all_held[all_held["n_crossed"] < 4]
    if len(left):
        text += ("; left out (fewer than 4 held-out leads): " + ", ".join(
            f"{r['part']} ({r['n_crossed']} of {r['n_runs']} collapsed runs)"
            for _, r in left.iterrows()))
    if (acc >= 0.8).all() and (held["lead_mean"] > 0).all():
        return Section("supports", text, numbers, tables, figs)
    if (acc <= 0.5).any():
        return Section("contradicts", text, numbers, tables, figs)
    return Section("inconclusive", text, numbers, tables, figs)


# ----------------------------------------------------------------------------- 3 intervention
def _welch_p(a: pd.Series, b: pd.Series) -> float:
    """Welch's t-test p of two samples' means; NaN with fewer than 2 values in either, or
    when neither spreads (all values equal to 1e-12 relative: no noise to test against, where
    scipy's moments lose every digit)."""
    from scipy import stats

    x, y = a.to_numpy(np.float64), b.to_numpy(np.float64)
    if x.size < 2 or y.size < 2:
        return math.nan

    def flat(v: np.ndarray) -> bool:
        return bool(np.ptp(v) <= 1e-12 * np.abs(v).max())

    if flat(x) and flat(y):
        return math.nan
    with warnings.catch_warnings():  # one flat arm: its variance is 0, which Welch's test takes
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        return float(stats.ttest_ind(x, y, equal_var=False).pvalue)


def intervention(study: Study, runs: pd.DataFrame, traj: pd.DataFrame,
                 figdir: Path) -> Section:
    """Return to fn* and onset shift after rescaling the features by alpha.

    The verdict weighs the rescaled arms (alpha != 1) of the parts whose control (alpha = 1)
    collapsed: "contradicts" when such an arm has no collapsed run and at least one observed
    run that ended without collapse (status ``not_collapsed`` or ``vanishing``; runs that
    failed numerically or whose collapse came before phase 2 decide nothing), or when an
    arm's mean fn* lies more than 3 x :data:`RETURN_TOL` from the control's; "supports" when
    every arm lies within RETURN_TOL and no run of an arm ended without collapse (an arm
    whose fn* stands on 1 of its 3 runs, the 2 others not collapsed, does not show the
    return); "inconclusive" otherwise, or when no part has a collapsed control."""
    runs = one_row_per_run(runs)
    rows, with_control = [], set()
    for part in _parts(runs, study):
        sub = runs[runs["part"] == part]
        col = "intervene_alpha" if "intervene_alpha" in sub and sub["intervene_alpha"].notna(
        ).any() else "intervention_alpha"
        if col not in sub:
            continue
        sub = sub[sub[col].notna()]
        control = collapsed(sub[sub[col] == 1.0])
        if len(control):
            with_control.add(part)
        for alpha, arm in sub.groupby(col, sort=True):
            ok = collapsed(arm)
            ended = (int(observed(arm)["status"].isin(NO_COLLAPSE).sum()) if "status" in arm
                     else 0)
            row = {"part": part, "alpha": alpha, "n_runs": len(arm), "n_collapsed": len(ok),
                   "n_without_collapse": ended,
                   "fn_before": float(arm["fn_before_intervention"].mean())
                   if "fn_before_intervention" in arm else math.nan,
                   "fn_after": float(arm["fn_after_intervention"].mean())
                   if "fn_after_intervention" in arm else math.nan,
                   "fn_star": float(ok["fn_at_onset"].mean()) if len(ok) else math.nan,
                   "onset": float(ok["onset_time"].mean()) if len(ok) else math.nan}
            base_fn = control["fn_at_onset"].mean() if len(control) else math.nan
            row["fn_star_ratio"] = row["fn_star"] / base_fn if len(control) else math.nan
            row["onset_shift"] = (row["onset"] - control["onset_time"].mean()
                                  if len(control) else math.nan)
            row["p_fn_star"] = (_welch_p(ok["fn_at_onset"], control["fn_at_onset"])
                                if alpha != 1.0 else math.nan)
            rows.append(row)
    table = pd.DataFrame(rows)
    figs = []
    for part in _parts(runs, study)[:2]:
        label = "intervene_alpha" if part_model(study, part) == "simulated" else None
        item = _trajectory_fig(study, runs, traj, figdir, part, label)
        if item:
            figs.append(item)
    tables = [("fn* and onset per rescaling factor alpha (ratio and shift against alpha = 1)",
               table)]
    no_arm = "no rescaled arm with an observed outcome beside a collapsed control (alpha = 1)"
    if not with_control:  # an empty table: no run has an alpha
        reason = "no part has a collapsed control (alpha = 1)" if len(table) else no_arm
        return Section("inconclusive", reason, {}, tables, figs)
    rescaled = table[(table["alpha"] != 1.0) & table["part"].isin(with_control)]
    arms = rescaled[rescaled["n_collapsed"] > 0]
    lost = rescaled[(rescaled["n_collapsed"] == 0) & (rescaled["n_without_collapse"] > 0)]
    if arms.empty and lost.empty:
        return Section("inconclusive", no_arm, {}, tables, figs)
    dev = (arms["fn_star_ratio"] - 1).abs()
    # an arm's fn* is that of its collapsed runs: when some of its runs did not collapse
    # (in view), the reason says how many did
    pieces = [f"{r['part']} alpha={fmt(r['alpha'])}: fn {fmt(r['fn_before'])} -> "
              f"{fmt(r['fn_after'])}, fn*/fn*(1) = {fmt(r['fn_star_ratio'])}, onset "
              f"shift {fmt(r['onset_shift'])}"
              + (f" ({r['n_collapsed']} of {r['n_runs']} runs collapsed)"
                 if r["n_collapsed"] < r["n_runs"] else "") for _, r in arms.iterrows()]
    if len(lost):
        pieces.append("no collapse after rescaling: " + ", ".join(
            f"{r['part']} alpha={fmt(r['alpha'])} (0 of {r['n_runs']} runs)"
            for _, r in lost.iterrows()))
    text = "; ".join(pieces)
    partial = arms[arms["n_without_collapse"] > 0]  # some runs collapsed, some ended without
    numbers = {"max_fn_star_deviation": float(dev.max()) if len(dev) else math.nan,
               "arms_without_collapse": len(lost), "arms_in_part_collapsed": len(partial)}
    if len(lost):
        return Section("contradicts", "a rescaled arm does not collapse within its run while its "
                       "control does: " + text, numbers, tables, figs)
    if (dev > 3 * RETURN_TOL).any():
        return Section("contradicts", f"an arm ends more than {300 * RETURN_TOL:.0f}% away "
                       "from fn*: " + text, numbers, tables, figs)
    if (dev <= RETURN_TOL).all() and partial.empty:
        return Section("supports", f"every arm returns within {100 * RETURN_TOL:.0f}% of fn*: "
                       + text, numbers, tables, figs)
    if (dev <= RETURN_TOL).all():
        return Section("inconclusive", f"every arm's collapsed runs return within "
                       f"{100 * RETURN_TOL:.0f}% of fn*, but in {len(partial)} arm(s) some runs "
                       "ended without collapse: " + text, numbers, tables, figs)
    return Section("inconclusive", text, numbers, tables, figs)


# ----------------------------------------------------------------------------- 4 depth
def _non_monotonic(values: np.ndarray, tol: float = 0.05) -> bool:
    """True when the series turns beyond a relative tolerance: some value lies more than
    ``tol`` above an earlier one and more than ``tol`` above a later one, or more than
    ``tol`` below both (each change relative to the earlier value of the two). Changes are
    taken between any two values, not only neighbours, so rises of 4% per step that add up to
    12% before a fall are a turn. A change from an onset of 0 counts by its sign (a rise is
    infinitely large); 0 to 0 is no change."""
    v = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = (v[None, :] - v[:, None]) / v[:, None]  # rel[i, j]: from v[i] to v[j]
    later = np.triu(np.ones((v.size, v.size), dtype=bool), 1)  # i < j
    up, down = (rel > tol) & later, (rel < -tol) & later
    # value j a peak (a rise to it, a fall after it) or a trough (a fall to it, a rise after)
    return bool(np.any((up.any(axis=0) & down.any(axis=1))
                       | (down.any(axis=0) & up.any(axis=1))))


def depth(study: Study, runs: pd.DataFrame, traj: pd.DataFrame, figdir: Path) -> Section:
    """Onset time over depth, per part and per setting of the other axes: "supports" when a
    series of 3 or more collapsed depths turns (:func:`_non_monotonic`), "contradicts" when
    none does."""
    runs = one_row_per_run(runs)
    rows, figs, series = [], [], []
    for part in _parts(runs, study):
        sub = runs[runs["part"] == part]
        others = [a for a in part_axes(study, part) if a not in ("depth", "seed") and a in sub]
        stats_ = _group_stats(sub, others + ["depth"])
        stats_.insert(0, "part", part)
        rows.append(stats_)
        groups = stats_.groupby(others, sort=True) if others else [((), stats_)]
        for key, s in groups:
            s = s.sort_values("depth")
            good = s[np.isfinite(s["onset_mean"]) & s["depth"].notna()]  # a run without depth
            entry = {"part": part,
                     "setting": {k: fmt(v) for k, v in zip(others, np.atleast_1d(key))},
                     "depths": list(good["depth"]), "onsets": list(good["onset_mean"]),
                     "collapsed_fraction": float(s["n_collapsed"].sum() / s["n_runs"].sum())}
            if len(good) >= 3:
                entry["non_monotonic"] = _non_monotonic(good["onset_mean"].to_numpy(float))
                best = good.loc[good["onset_mean"].idxmin(), "depth"]
                entry["fastest_depth"] = int(best)
            series.append(entry)
        hue = others[0] if others else None
        fig = _line_fig(stats_, "depth", ["onset_mean", "fn_star_mean"], hue,
                        f"{part}: onset time and fn* over depth", logx=False)
        figs.append((f"{part}: onset time and fn* over depth", _figure(fig, figdir,
                                                                       f"depth_{part}")))
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    tested = [s for s in series if "non_monotonic" in s]
    listing = "; ".join(
        f"{series_label(s['part'], s['setting'])}: onset "
        f"{', '.join(fmt(v) for v in s['onsets'])} at depth "
        f"{', '.join(map(str, s['depths']))}" for s in tested)
    tables = [("onset time and fn* per depth", table)]
    numbers = {"series": series}
    if not tested:
        return Section("inconclusive", "no series has 3 collapsed depths", numbers, tables, figs)
    if any(s["non_monotonic"] for s in tested):
        return Section("supports", "non-monotonic in "
                       f"{sum(s['non_monotonic'] for s in tested)} of {len(tested)} series: "
                       + listing, numbers, tables, figs)
    return Section("contradicts", "onset time is monotonic in depth in every series: " + listing,
                   numbers, tables, figs)


# ----------------------------------------------------------------------------- 5 activation
def activation(study: Study, runs: pd.DataFrame, traj: pd.DataFrame, figdir: Path) -> Section:
    """Onset time and fn* per activation: spread across activations against within."""
    import matplotlib.pyplot as plt

    runs = one_row_per_run(runs)
    rows, figs, results = [], [], []
    for part in _parts(runs, study):
        sub = runs[runs["part"] == part]
        stats_ = _group_stats(sub, ["activation"])
        stats_.insert(0, "part", part)
        rows.append(stats_)
        good = stats_[np.isfinite(stats_["fn_star_mean"])]
        if len(good) >= 2:
            cvs = good["fn_star_cv"].to_numpy(float)  # NaN: fewer than 2 collapsed seeds
            within = np.nanmax(cvs) if np.isfinite(cvs).any() else math.nan
            results.append({"part": part, "n_activations": len(good),
                            "fn_star_spread": spread(good["fn_star_mean"]),
                            "onset_spread": spread(good["onset_mean"]),
                            "fn_star_within_cv": float(within)})
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        for ax, col in zip(axes, ("onset_mean", "fn_star_mean")):
            ax.bar(stats_["activation"].map(str), stats_[col].astype(float))  # NaN: 'nan'
            ax.set_ylabel(col)
            ax.tick_params(axis="x", labelsize=8)
        fig.suptitle(f"{part}: onset time and fn* per activation", fontsize=10)
        fig.tight_layout()
        figs.append((f"{part}: onset and fn* per activation",
                     _figure(fig, figdir, f"activation_{part}")))
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    tables = [("onset time and fn* per activation", table)]
    summary = pd.DataFrame(results)
    if summary.empty:
        return Section("inconclusive", "fewer than 2 activations collapsed in every part", {},
                       tables, figs)
    tables.append(("spread across activations (max/min - 1)", summary))
    text = "; ".join(f"{r['part']}: fn* spread {100 * r['fn_star_spread']:.0f}%, onset spread "
                     f"{100 * r['onset_spread']:.0f}% over {r['n_activations']} activations"
                     for _, r in summary.iterrows())
    noise = summary["fn_star_within_cv"].notna()
    if not noise.all():
        text += ("; within-activation fn* CV unknown (one collapsed run per activation) in "
                 + ", ".join(summary.loc[~noise, "part"]))
    fn_big, onset_big = summary["fn_star_spread"] > 0.1, summary["onset_spread"] > 0.1
    fn_moves = fn_big & noise & (summary["fn_star_spread"] > 2 * summary["fn_star_within_cv"])
    both = fn_moves & onset_big
    neither = (summary["fn_star_spread"] <= 0.1) & (summary["onset_spread"] <= 0.1)
    numbers = summary.set_index("part").to_dict("index")
    if both.all():
        return Section("supports", "activation moves both speed and fn* (>10%): " + text,
                       numbers, tables, figs)
    if neither.any():
        where = ("" if neither.all() else
                 " in " + ", ".join(summary.loc[neither, "part"]))  # not in every part
        return Section("contradicts", f"activation moves neither speed nor fn* by >10%{where}: "
                       + text, numbers, tables, figs)
    # why not "supports", part by part, as the numbers say (a spread > 10% is not called
    # "not moved"; fn* moves only beyond twice its within-activation CV)
    undefined = summary["fn_star_spread"].isna() | summary["onset_spread"].isna()
    unknown = ~undefined & fn_big & ~noise
    one = ~both & ~undefined & ~unknown & (fn_moves != onset_big)
    none_ = ~both & ~undefined & ~unknown & ~one
    causes = [(one, "moves only one of speed and fn* (by >10%, fn* also by more than twice "
                    "its within-activation CV)"),
              (none_, "moves speed by at most 10% and fn* by no more than twice its "
                      "within-activation CV"),
              (unknown, "moves fn* by >10% against an unknown within-activation CV"),
              (undefined, "gives no onset or fn* spread (fewer than 2 positive values)")]
    why = "; ".join(f"{phrase} in {', '.join(summary.loc[mask, 'part'])}"
                    for mask, phrase in causes if mask.any())
    return Section("inconclusive", f"activation {why}: {text}", numbers, tables, figs)


# ----------------------------------------------------------------------------- 6 weight decay
def _finite_mean(values: Any) -> float:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def regimes(lams: np.ndarray, onset: np.ndarray, ok: np.ndarray) -> list[str]:
    """slow / optimal / prevents for a series ordered by increasing lambda."""
    fastest = np.nanmin(np.where(ok, onset, np.nan)) if ok.any() else math.nan
    out = []
    for t, good in zip(onset, ok):
        if not good:
            out.append("prevents")
        else:
            out.append("optimal" if t <= OPTIMAL_FACTOR * fastest else "slow")
    return out


def _in_order(labels: list[str]) -> bool:
    order = {"slow": 0, "optimal": 1, "prevents": 2}
    ranks = [order[x] for x in labels]
    return set(labels) == set(order) and all(a <= b for a, b in zip(ranks, ranks[1:]))


def _critical(sub: pd.DataFrame) -> float:
    """Lambda_crit of a part's runs, recovered from ``lambda_crit_theory`` (NaN without it).

    lambda_crit_theory = Lambda_crit / (lambda_H / lambda_W)^(1/M) with M = depth + 1.
    """
    if "lambda_crit_theory" not in sub or not sub["lambda_crit_theory"].notna().any():
        return math.nan
    m = sub["depth"].astype(float) + 1 if "depth" in sub else 2.0
    lc = sub["lambda_crit_theory"].astype(float) * (
        sub["lambda_h"].astype(float) / sub["lambda_w"].astype(float)) ** (1.0 / m)
    return float(np.nanmedian(lc))


def series_threshold(sub: pd.DataFrame, x: str, tied: bool = False) -> float:
    """The theory's critical value of ``x`` along a series: the other decay fixed, or, with
    ``tied`` (and for ``x`` = ``lambda``), both decays moving together (a grid's diagonal).

    Collapse iff (lambda_H lambda_W^L)^(1/(L+1)) < Lambda_crit; L the depth. Whether the
    decays are tied is said, not guessed from the values: a series of one point along
    ``lambda_w`` that happens to sit on the diagonal still has ``lambda_h`` fixed.
    """
    lc = _critical(sub)
    if not math.isfinite(lc):
        return math.nan
    depth_ = float(sub["depth"].iloc[0]) if "depth" in sub else 1.0
    if x == "lambda" or tied:
        return lc
    if x == "lambda_w":
        return float((lc ** (depth_ + 1) / sub["lambda_h"].iloc[0]) ** (1.0 / depth_))
    if x == "lambda_h":
        return float(lc ** (depth_ + 1) / sub["lambda_w"].iloc[0] ** depth_)
    return math.nan


def _basin_from(series: pd.DataFrame, x: str) -> float:
    """The smallest ``x`` of a series whose runs the theory puts at or inside the origin's
    basin (``theory_phase`` basin_edge or trapped: a deep head whose init is too small to
    escape), NaN when none is or the phase is unknown. Collapse ends there, below
    lambda_crit (the threshold of the collapsed state's existence)."""
    if "theory_phase" not in series:
        return math.nan
    basin = series.loc[series["theory_phase"].isin(["basin_edge", "trapped"]), x]
    return float(basin.astype(float).min()) if len(basin) else math.nan


def _lambda_series(sub: pd.DataFrame, x: str, keys: list[str],
                   tied: bool = False) -> list[dict[str, Any]]:
    """One entry per setting of ``keys``: the regimes along ``x``, the last collapsed and
    first prevented value, the theory's lambda_crit, whether it lies in that bracket, and
    where the theory puts the init in the origin's basin (:func:`_basin_from`). ``tied``:
    the series moves both decays together (:func:`series_threshold`)."""
    out = []
    groups = sub.groupby(keys, sort=True) if keys else [((), sub)]
    for key, s in groups:
        agg = s.groupby(x, sort=True).agg(
            onset=("onset_collapsed", _finite_mean),
            ok=("is_collapsed", lambda v: bool(v.mean() >= 0.5))).reset_index()
        lams = agg[x].to_numpy(float)
        good = agg["ok"].to_numpy(bool)
        labels = regimes(lams, agg["onset"].to_numpy(float), good)
        last = float(lams[good].max()) if good.any() else math.nan
        above = lams[~good & (lams > (last if good.any() else 0))]
        entry = {"setting": {k: fmt(v) for k, v in zip(keys, np.atleast_1d(key))},
                 "lambdas": [float(v) for v in lams], "regimes": labels,
                 "onsets": [float(v) for v in agg["onset"]],
                 "three_regimes": _in_order(labels), "last_collapsed": last,
                 "first_prevented": float(above.min()) if above.size else math.nan,
                 "lambda_crit_theory": series_threshold(s, x, tied),
                 "basin_from_theory": _basin_from(s, x)}
        lc, lo, hi = entry["lambda_crit_theory"], last, entry["first_prevented"]
        if math.isfinite(lc) and math.isfinite(lo) and math.isfinite(hi):
            entry["theory_in_bracket"] = bool(lo < lc <= hi)
        elif math.isfinite(lc) and math.isfinite(lo):
            entry["theory_in_bracket"] = bool(lo < lc)  # nothing prevented: lc above the grid
        else:
            entry["theory_in_bracket"] = None
        out.append(entry)
    return out


def _grid_heatmap(table: pd.DataFrame, x: str, y: str, value: str, title: str,
                  curve: tuple[np.ndarray, np.ndarray] | None = None,
                  row_marks: dict[float, float] | None = None, log_y: bool = True,
                  basin_marks: dict[float, float] | None = None):
    """Heat map of log10 ``value`` on an (x, y) grid with whole edge cells; an axis is
    logarithmic when its values are all positive (``log_y=False``: y linear always), so a
    grid with a zero decay (a baseline without weight decay) gets a linear axis.

    curve : (xs, ys) theory line; row_marks : {y: x} theory value (lambda_crit) marked in
    each row; basin_marks : {y: x} the grid value from which the theory puts the init at the
    origin's basin edge or inside it, marked dashed at the left edge of its cell (rows of
    unit height: a linear y axis).
    """
    from ncsim.plots import cell_edges, heatmap_figure

    fig = heatmap_figure(table, x, y, value, title, boundary=curve, log_x=None,
                         log_y=None if log_y else False)
    ax = fig.axes[0]
    xs = np.sort(pd.unique(table[x].to_numpy(float)))
    x_edges = cell_edges(xs, log=ax.get_xscale() == "log")
    # the basin starts at a grid value: marked at the left edge of its cell ("from here on")
    basin_edges = {row: float(x_edges[int(np.argmin(abs(xs - xv)))])
                   for row, xv in (basin_marks or {}).items() if math.isfinite(xv)}
    for marks, style, label in ((row_marks or {}, "-", "theory lambda_crit"),
                                (basin_edges, "--", "theory: init in the origin's basin")):
        finite = {row: xv for row, xv in marks.items() if math.isfinite(xv)}
        for k, (row, xv) in enumerate(finite.items()):
            ax.plot([xv, xv], [row - 0.45, row + 0.45], linestyle=style, lw=2.5,
                    color="c" if style == "-" else "tab:orange",
                    label=label if k == 0 else None)
    ax.set_title(title, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def _boundary_2d(sub: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    from ncsim.theory.critical import Lambda_crit

    first = sub.iloc[0]
    try:
        depth_ = int(first.get("depth", 1)) if pd.notna(first.get("depth", 1)) else 1
        lc = float(Lambda_crit(str(first["loss"]), float(first["classes"]),
                               float(first["per_class"]), depth_))
    except Exception:
        return None
    positive = sub["lambda_h"][sub["lambda_h"] > 0]  # a lambda_H = 0 baseline has no boundary
    if positive.empty:
        return None
    ys = np.geomspace(positive.min() / 2, positive.max() * 2, 64)
    xs = (lc ** (depth_ + 1) / ys) ** (1.0 / depth_)
    return xs, ys


def _diagonal(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with lambda_W = lambda_H, equal to a relative 1e-5 (no absolute slack, so
    that decays of 1e-9 and 5e-9 stay apart)."""
    return runs[np.isclose(runs["lambda_w"], runs["lambda_h"], rtol=1e-5, atol=0.0)]


def _theory_phase(row: pd.Series) -> str:
    from ncsim.theory.phase import classify

    try:
        return classify(str(row["loss"]), str(row["bias"]), int(row["classes"]),
                        int(row["per_class"]), int(row["dim"]), int(row["depth"]),
                        float(row["lambda_w"]), float(row["lambda_h"]), float(row["lambda_b"]),
                        float(row["init_scale"]))["phase"]
    except (KeyError, TypeError, ValueError, ArithmeticError):  # a column or value the
        return "n/a"  # closed forms do not cover (absent, unbalanced classes, ...)


def weight_decay(study: Study, runs: pd.DataFrame, traj: pd.DataFrame,
                 figdir: Path) -> Section:
    """Three regimes (slow / optimal / prevents) and the theory's lambda_crit.

    Only decided runs count: collapsed ones and those that ended without collapse
    (``NO_COLLAPSE``). A run that stopped before deciding (max_steps, diverged, stalled,
    without an onset) is neither, so it is left out of the series, the figures and the
    agreement with the theory, and a note counts it.

    Verdict: "supports" when a series shows slow, optimal and prevents in order;
    "contradicts" when none does and two or more series hold both a collapsed and a
    prevented lambda; "inconclusive" otherwise (no series reaches prevents, none collapses,
    or fewer than two series span both)."""
    runs = one_row_per_run(runs)
    tables, figs, all_series, agreement, undecided = [], [], [], [], {}
    for part in _parts(runs, study):
        # runs already collapsed when they came into view are neither collapsed nor
        # prevented: they stay out of the series, the figures and the agreement
        # masks by position, not by index label: a table whose labels repeat (two tables
        # concatenated) must not lend one run's collapse to another
        sub = observed(runs[runs["part"] == part]).copy()
        is_collapsed = collapsed_mask(sub)
        decided = is_collapsed | sub["status"].isin(NO_COLLAPSE).to_numpy(bool)
        if (~decided).any():
            undecided[part] = sub.loc[~decided, "status"].value_counts().to_dict()
        sub = sub[decided]
        if sub.empty:
            continue
        axes = part_axes(study, part)
        trained = part_model(study, part) == "trained"
        sub["is_collapsed"] = is_collapsed[decided]
        sub["onset_collapsed"] = np.where(sub["is_collapsed"],  # floats: an object column
                                          sub["onset_time"].astype(float), np.nan)  # of ints
        if not trained:
            sub["theory_phase"] = sub.apply(_theory_phase, axis=1)
            measured = np.where(sub["is_collapsed"], "collapse", sub["status"])
            match = (sub["theory_phase"] == "collapse") == (measured == "collapse")
            # runs the theory classifies. Left out: basin_edge (the seed decides) and
            # no_collapse (lambda_H = 0: NC1 fails in absolute terms, while the relative
            # onset metric still falls as the means grow, so the two measure different things)
            known = (~sub["theory_phase"].isin(["n/a", "basin_edge", "no_collapse"])).to_numpy()
            agreement.append((part, float(match[known].mean()) if known.any() else math.nan,
                              int(known.sum()), int((sub["theory_phase"] == "basin_edge").sum()),
                              int((sub["theory_phase"] == "no_collapse").sum())))
        if {"lambda_w", "lambda_h"} <= set(axes):
            fig = _grid_heatmap(sub, "lambda_w", "lambda_h", "onset_collapsed",
                                f"{part}: onset time (blank: no collapse)",
                                curve=_boundary_2d(sub))
            figs.append((f"{part}: measured onset time over (lambda_W, lambda_H); the line is "
                         "the theory's threshold sqrt(lambda_W lambda_H) = Lambda_crit (depth 1)",
                         _figure(fig, figdir, f"wd_heatmap_{part}")))
            diag = _diagonal(sub)
            series = _lambda_series(diag, "lambda_w", [], tied=True) if len(diag) else []
            for s in series:
                s["setting"] = {"lambda_h": "lambda_w"}  # the diagonal of the grid
            series += _lambda_series(sub, "lambda_w", ["lambda_h"])
        elif "lambda" in axes and "depth" in axes:
            marks = {}
            if "lambda_crit_theory" in sub:
                crit = sub.groupby("depth")["lambda_crit_theory"].mean().dropna()
                marks = {float(k): float(v) for k, v in crit.items()}
            basin = {float(k): _basin_from(g, "lambda") for k, g in sub.groupby("depth")}
            fig = _grid_heatmap(sub, "lambda", "depth", "onset_collapsed",
                                f"{part}: onset time (blank: no collapse)", row_marks=marks,
                                log_y=False, basin_marks=basin)
            figs.append((f"{part}: measured onset time over (lambda, depth); the line is the "
                         "theory's lambda_crit(depth), the dashed line where the theory puts "
                         "the init at the origin's basin edge or inside it",
                         _figure(fig, figdir, f"wd_depth_{part}")))
            series = _lambda_series(sub, "lambda", ["depth"])
        else:
            x = next((a for a in ("weight_decay", "lambda", "lambda_w", "lambda_h") if a in axes),
                     None)
            if x is None:
                continue
            keys = [a for a in axes if a not in (x, "seed")]
            series = _lambda_series(sub, x, keys)
            plot = sub.groupby([x, *keys], as_index=False)["onset_collapsed"].mean()
            lc = float(sub["lambda_crit_theory"].mean()) if "lambda_crit_theory" in sub and \
                sub["lambda_crit_theory"].notna().any() else math.nan
            fig = _line_fig(plot, x, ["onset_collapsed"], keys[0] if keys else None,
                            f"{part}: onset time over {x}", vlines={"lambda_crit (theory)": lc})
            figs.append((f"{part}: onset time over {x} (gaps: no collapse)",
                         _figure(fig, figdir, f"wd_line_{part}")))
        for s in series:
            s["part"] = part
        all_series += series
        cols = [c for c in ("lambda_w", "lambda_h", "lambda", "depth", "weight_decay", "seed",
                            "status", "onset_time", "fn_at_onset", "lambda_crit_theory",
                            "onset_time_theory", "theory_phase")
                if c in sub and sub[c].notna().any()]
        tables.append((f"{part}: runs", sub[cols]))
    table = pd.DataFrame([{"part": s["part"], "setting": setting_text(s["setting"]),
                           "regimes": " ".join(s["regimes"]), "three_regimes": s["three_regimes"],
                           "last_collapsed": s["last_collapsed"],
                           "first_prevented": s["first_prevented"],
                           "lambda_crit_theory": s["lambda_crit_theory"],
                           "theory_in_bracket": s["theory_in_bracket"],
                           "basin_from_theory": s["basin_from_theory"]} for s in all_series])
    tables.insert(0, ("regimes along each lambda series (slow: onset > "
                      f"{OPTIMAL_FACTOR:g}x the fastest; prevents: no collapse)", table))
    numbers = {"agreement_with_theory_phase": {p: a for p, a, *_ in agreement},
               "series": all_series}
    good = [s for s in all_series if s["three_regimes"]]
    agree = "; ".join((f"{p}: measured collapse/no-collapse matches the theory's phase in "
                       f"{100 * a:.0f}% of {n} runs" if n else
                       f"{p}: the theory classifies none of its runs")
                      + _left_out_text(edge, unbounded) for p, a, n, edge, unbounded in agreement)
    brackets = [s for s in all_series if s["theory_in_bracket"] is not None
                and math.isfinite(s["first_prevented"])]
    open_ended = [s for s in all_series if s["theory_in_bracket"] is not None
                  and not math.isfinite(s["first_prevented"])]
    in_bracket = sum(bool(s["theory_in_bracket"]) for s in brackets)
    above = sum(bool(s["theory_in_bracket"]) for s in open_ended)
    example = good[0] if good else (all_series[0] if all_series else None)
    detail = ""
    if example is not None:
        detail = (f"e.g. {series_label(example['part'], example['setting'])}: regimes "
                  f"{' '.join(example['regimes'])} over lambda "
                  f"{', '.join(fmt(v) for v in example['lambdas'])}; last collapsed "
                  f"{fmt(example['last_collapsed'])}, first prevented "
                  f"{fmt(example['first_prevented'])}, lambda_crit (theory) "
                  f"{fmt(example['lambda_crit_theory'])}")
    reason = (f"{len(good)} of {len(all_series)} lambda series show slow, optimal and prevents "
              f"in order; lambda_crit (theory) lies between the last collapsed and the first "
              f"prevented lambda in {in_bracket} of {len(brackets)} series with a prevented "
              f"lambda, above the last collapsed lambda in {above} of {len(open_ended)} series "
              f"without one")
    reason = ". ".join(part for part in (reason, _basin_text(brackets), agree, detail) if part)
    notes = [f"{part}: {sum(counts.values())} run(s) stopped before deciding ("
             + ", ".join(f"{n} {status}" for status, n in counts.items())
             + "); they count neither as collapsed nor as prevented and are left out."
             for part, counts in undecided.items()]
    if undecided:
        numbers["undecided_runs"] = {part: sum(c.values()) for part, c in undecided.items()}
    if good:
        return Section("supports", reason, numbers, tables, figs, notes)
    if all_series and all("prevents" not in s["regimes"] for s in all_series):
        return Section("inconclusive", reason + " (no series reaches the prevents regime)",
                       numbers, tables, figs, notes)
    if all_series and all(set(s["regimes"]) == {"prevents"} for s in all_series):
        return Section("inconclusive", reason + " (no series has a collapsed lambda)",
                       numbers, tables, figs, notes)
    # a series counts against the claim only where it has both a collapsed and a prevented
    # lambda: one without either says only that the grid does not reach that far
    spanning = [s for s in all_series if "prevents" in s["regimes"]
                and set(s["regimes"]) != {"prevents"}]
    if len(spanning) >= 2:
        return Section("contradicts", reason, numbers, tables, figs, notes)
    if all_series:
        reason += (f" ({len(spanning)} of {len(all_series)} series "
                   f"{'has' if len(spanning) == 1 else 'have'} both a collapsed and a prevented "
                   "lambda; contradicting the claim takes 2)")
    return Section("inconclusive", reason, numbers, tables, figs, notes)


def _left_out_text(edge: int, unbounded: int) -> str:
    """`` (2 more at the basin edge, ...; 1 more at lambda_H = 0, ...)``: the runs the
    agreement with the theory's phase leaves out; "" when none."""
    items = ([f"{edge} more at the basin edge, where the seed decides"] if edge else []) + (
        [f"{unbounded} more at lambda_H = 0, where NC1 falls only relative to the growing class "
         "means, which the theory does not count as collapse"] if unbounded else [])
    return f" ({'; '.join(items)})" if items else ""


def _basin_text(brackets: list[dict[str, Any]]) -> str:
    """For the series whose bracket misses lambda_crit because the runs stop collapsing where
    the theory puts the init at the origin's basin (at or below the first prevented value),
    where that starts; "" when there is none."""
    missed = [s for s in brackets if s["theory_in_bracket"] is False]
    basin = [s for s in missed if math.isfinite(s["basin_from_theory"])
             and s["basin_from_theory"] <= s["first_prevented"]]
    if not basin:
        return ""
    where = ", ".join(f"{series_label(s['part'], s['setting'])} from {fmt(s['basin_from_theory'])}"
                      for s in basin)
    which = ("the series" if len(basin) == len(missed) == 1 else
             f"all {len(missed)} series" if len(basin) == len(missed) else
             f"{len(basin)} of the {len(missed)} series")
    return (f"In {which} where it does not, the theory puts the init at the origin's "
            f"basin edge or inside it (trapped) below lambda_crit, and collapse ends there: "
            f"{where}")


# ----------------------------------------------------------------------------- 7 width
def _reduction_gap(runs: pd.DataFrame) -> float:
    """Largest relative difference of onset time and fn* between runs that differ only in
    ``reduction`` (NaN without such pairs)."""
    if "reduction" not in runs or runs["reduction"].nunique() < 2:
        return math.nan
    ok = collapsed(runs)
    keys = [c for c in ("part", "dim", "seed", "init_scale", "lambda") if c in ok]
    gaps = []
    for _, pair in ok.groupby(keys):
        if pair["reduction"].nunique() < 2:
            continue
        for col in ("onset_time", "fn_at_onset"):
            v = pair[col].to_numpy(float)
            gaps.append(float((v.max() - v.min()) / abs(v).max()))
    return max(gaps) if gaps else math.nan


def _speeds_up(onsets: np.ndarray, tol: float = MONOTONE_TOL) -> bool:
    """True when onsets ordered by increasing width fall monotonically within ``tol``: no
    onset lies more than ``tol`` (relative) above the lowest onset at a smaller width, so
    small rises do not add up, and the largest width's onset lies more than ``tol`` below
    the smallest width's, so a flat series is no speed-up."""
    lowest = np.minimum.accumulate(onsets)[:-1]
    return bool(np.all(onsets[1:] <= (1 + tol) * lowest)
                and onsets[-1] < (1 - tol) * onsets[0])


def width(study: Study, runs: pd.DataFrame, traj: pd.DataFrame, figdir: Path) -> Section:
    """Onset time and fn* over width: monotone speed-up (:func:`_speeds_up`), fn* moved by
    at most 13%.

    Each setting of the other axes (e.g. the UFM's ``reduction``: "none" integrates H and W,
    "gram" the width-independent Gram form) is a series of its own.
    """
    runs = one_row_per_run(runs)
    rows, figs, results = [], [], []
    for part in _parts(runs, study):
        sub = runs[runs["part"] == part]
        axes = part_axes(study, part)
        x = "dim" if "dim" in axes else "width"
        others = [a for a in axes if a not in (x, "seed") and a in sub]
        stats_ = _group_stats(sub, others + [x])
        if "fn_star_theory" in sub:
            theory = sub.groupby(x)["fn_star_theory"].mean()
            stats_["fn_star_theory"] = stats_[x].map(theory)
        stats_.insert(0, "part", part)
        rows.append(stats_.rename(columns={x: "width_or_dim"}))
        groups = stats_.groupby(others, sort=True) if others else [((), stats_)]
        for key, series in groups:
            onset_ = series["onset_mean"].to_numpy(float)
            # an onset at t = 0 (collapsed from the start) measures no speed-up
            good = series[np.isfinite(onset_) & (onset_ > 0)].sort_values(x)
            if len(good) < 3:
                continue
            onsets = good["onset_mean"].to_numpy(float)
            label = ", ".join(f"{k}={fmt(v)}" for k, v in zip(others, np.atleast_1d(key)))
            results.append({"part": part + (f" ({label})" if label else ""), "axis": x,
                            "n_widths": len(good),
                            "onset_monotone_decreasing": _speeds_up(onsets),
                            "onset_change": float(onsets[-1] / onsets[0] - 1),
                            "fn_star_spread": spread(good["fn_star_mean"])})
        fig = _line_fig(stats_, x, ["onset_mean", "fn_star_mean"], others[0] if others else None,
                        f"{part}: onset time and fn* over {x}")
        figs.append((f"{part}: onset and fn* over {x}", _figure(fig, figdir, f"width_{part}")))
    tables = [("onset and fn* per width (fn_star_theory: the closed form, independent of d)",
               pd.concat(rows, ignore_index=True) if rows else pd.DataFrame())]
    summary = pd.DataFrame(results)
    if summary.empty:
        return Section("inconclusive", "fewer than 3 widths collapsed (with an onset time > 0) "
                       "in every series", {}, tables, figs)
    tables.append(("width summary", summary))
    text = "; ".join(f"{r['part']}: onset changes {100 * r['onset_change']:+.0f}% from the "
                     f"smallest to the largest {r['axis']} (monotone decreasing: "
                     f"{r['onset_monotone_decreasing']}), fn* spread "
                     f"{100 * r['fn_star_spread']:.1f}%" for _, r in summary.iterrows())
    numbers = summary.set_index("part").to_dict("index")
    gap = _reduction_gap(runs)
    if math.isfinite(gap):
        numbers["reduction_gap"] = gap
        text += (f"; the Gram (width-independent) and parameter forms agree to {gap:.1e} "
                 "(largest relative difference of onset time and fn*)")
    ok = summary["onset_monotone_decreasing"] & (summary["fn_star_spread"] <= WIDTH_FN_LIMIT)
    if ok.all():
        return Section("supports", text, numbers, tables, figs)
    return Section("contradicts", text, numbers, tables, figs)


# ----------------------------------------------------------------------------- 8 grid
def _cell_labels(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    if "arch" in out:
        arch = out["arch"].astype(str)
    elif "preset" in out:
        arch = out["preset"].astype(str)
    else:
        arch = pd.Series("mlp", index=out.index)
    if "depth" in out:
        arch = np.where(arch == "mlp", "mlp-" + out["depth"].astype("Int64").astype(str), arch)
    out["arch_label"] = arch
    data = out["dataset"].astype(str) if "dataset" in out else out["part"].astype(str)
    if "separation" in out:
        data = data + np.where(out["separation"].notna(),
                               "-sep" + out["separation"].astype(str), "")
    out["dataset_label"] = data
    return out


def _additive_misfit(ok: pd.DataFrame) -> float:
    """Interaction sum of squares of log fn* (one row per run): |y_cells - y_additive|^2, the
    squared distance between the cell-means fit and the least-squares additive fit
    (intercept + architecture + dataset), which is the additive model's residual sum of
    squares minus the cell-means model's, computed without that subtraction. With equal seeds
    per cell it is n x the sum of the squared interaction contrasts of the cell means; with
    unequal cells it is the exact F test's numerator (a mean cell size would overstate it)."""
    labels = ok[["arch_label", "dataset_label"]].astype(str)
    y = pd.Series(np.log(ok["fn_at_onset"].to_numpy(float)), index=ok.index)
    cells = y.groupby([labels["arch_label"], labels["dataset_label"]]).transform("mean")
    design = pd.get_dummies(labels, drop_first=True, dtype=float)
    design.insert(0, "intercept", 1.0)
    x = design.to_numpy(float)
    coef, *_ = np.linalg.lstsq(x, y.to_numpy(float), rcond=None)
    return float(((cells.to_numpy(float) - x @ coef) ** 2).sum())


def _full_rectangle(pivot: pd.DataFrame, max_subsets: int = 4096) -> pd.DataFrame:
    """The largest block of ``pivot`` (architectures x datasets) with a value in every cell
    and 2 or more rows and columns: the most cells; ties go to the first set of the shorter
    axis (the larger sets first, each size in the pivot's order). Every set of that axis is
    tried (dropping first the rows, then the columns with a gap would lose the 2 x 2 block
    of a 2 x 3 grid with one empty cell); a pivot with more than ``log2(max_subsets)``
    columns and rows falls back to that greedy drop."""
    values = pivot.notna().to_numpy(bool)
    if values.all() or min(values.shape) < 2:
        return pivot.dropna(axis=0, how="any").dropna(axis=1, how="any")
    transposed = values.shape[1] > values.shape[0]
    if transposed:  # enumerate the sets of the shorter axis
        values = values.T
    if 2 ** values.shape[1] > max_subsets:
        return pivot.dropna(axis=0, how="any").dropna(axis=1, how="any")
    best, best_cells = None, 0
    n = values.shape[1]
    for size in range(n, 1, -1):
        for cols in itertools.combinations(range(n), size):
            rows = np.flatnonzero(values[:, list(cols)].all(axis=1))
            if len(rows) >= 2 and len(rows) * size > best_cells:
                best, best_cells = (rows, list(cols)), len(rows) * size
    if best is None:
        return pivot.iloc[0:0, 0:0]
    rows, cols = best
    if transposed:
        rows, cols = cols, rows
    return pivot.iloc[rows, cols]


def grid(study: Study, runs: pd.DataFrame, traj: pd.DataFrame, figdir: Path) -> Section:
    """fn* per (architecture, dataset) cell and the non-additivity (interaction) test."""
    import matplotlib.pyplot as plt
    from scipy import stats

    runs = _cell_labels(one_row_per_run(runs))
    cells = _group_stats(runs, ["arch_label", "dataset_label"])
    tables = [("fn* per (architecture, dataset) cell", cells)]
    pivot = cells.pivot_table(index="arch_label", columns="dataset_label", values="fn_star_mean")
    figs = []
    if pivot.size:  # no heat map without a collapsed cell
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        im = ax.imshow(pivot.to_numpy(float), cmap="viridis")
        ax.set_xticks(range(pivot.shape[1]), pivot.columns, rotation=20, fontsize=8)
        ax.set_yticks(range(pivot.shape[0]), pivot.index, fontsize=8)
        fig.colorbar(im, ax=ax, label="fn*")
        fig.tight_layout()
        figs.append(("fn* per (architecture, dataset) cell", _figure(fig, figdir, "grid")))
    full = _full_rectangle(pivot)
    if full.shape[0] < 2 or full.shape[1] < 2:
        empty = cells[cells["n_collapsed"] == 0]
        without = "; ".join(f"{a} x {d} (0 of {n} runs)" for a, d, n in zip(
            empty["arch_label"], empty["dataset_label"], empty["n_runs"], strict=True))
        return Section("inconclusive", f"{int(pivot.notna().sum().sum())} of {len(cells)} "
                       "cells collapsed" + (f" (none in {without})" if without else "")
                       + "; the non-additivity test needs 2 architectures x 2 datasets with "
                       "collapsed runs in every cell", {}, tables, figs)
    ok = collapsed(runs)
    ok = ok[ok["arch_label"].isin(full.index) & ok["dataset_label"].isin(full.columns)]
    # interaction of the cell means of log fn*: what the additive model leaves over
    logm = ok.assign(log_fn=np.log(ok["fn_at_onset"].astype(float))).pivot_table(
        index="arch_label", columns="dataset_label", values="log_fn")
    logm = logm.loc[full.index, full.columns].to_numpy(float)
    inter = logm - logm.mean(1, keepdims=True) - logm.mean(0, keepdims=True) + logm.mean()
    effects = {c: float(full[c].iloc[-1] / full[c].iloc[0] - 1) for c in full.columns}
    numbers = {"architecture_effect": effects,
               "interaction_rms_log": float(np.sqrt((inter ** 2).mean()))}
    by_cell = {key: g["fn_at_onset"].to_numpy(float) for key, g in
               ok.groupby(["arch_label", "dataset_label"])}
    groups = list(by_cell.values())
    text = "architecture effect " + ", ".join(f"{c}: {100 * e:+.0f}%" for c, e in
                                              effects.items())
    left = cells[~(cells["arch_label"].isin(full.index) & cells["dataset_label"].isin(
        full.columns))]
    if len(left):  # the test's cells are a block of the grid: say which, and what is left
        text += (f" (test on the {full.shape[0]} x {full.shape[1]} cells "
                 f"{', '.join(map(str, full.index))} x {', '.join(map(str, full.columns))}; "
                 "left out: " + ", ".join(
                     f"{a} x {d} ({c} of {n} runs collapsed)" for a, d, c, n in zip(
                         left["arch_label"], left["dataset_label"], left["n_collapsed"],
                         left["n_runs"], strict=True)) + ")")
    single = [f"{a} x {d}" for (a, d), g in by_cell.items() if len(g) < 2]
    if single:
        return Section("inconclusive", text + "; the interaction test needs 2 or more collapsed "
                       f"seeds per cell (one in {', '.join(single)})", numbers, tables, figs)
    # interaction F test on log fn*: the interaction above against within-cell noise
    within = sum(((np.log(g) - np.log(g).mean()) ** 2).sum() for g in groups)
    df_within = sum(len(g) - 1 for g in groups)
    if within <= 1e-20 * df_within:  # within-cell sd of log fn* below 1e-10: no noise
        return Section("inconclusive", text + "; the replicate seeds have identical fn*, no "
                       "within-cell noise for the interaction test", numbers, tables, figs)
    ss_inter = _additive_misfit(ok)
    df_inter = (full.shape[0] - 1) * (full.shape[1] - 1)
    f_stat = (ss_inter / df_inter) / (within / df_within)
    p = float(stats.f.sf(f_stat, df_inter, df_within))  # finite: the within-cell noise is > 0
    numbers.update({"interaction_F": f_stat, "interaction_p": p})
    text += f"; interaction F = {fmt(f_stat)}, p = {fmt(p)}"
    if p < 0.05:
        return Section("supports", "non-additive: " + text, numbers, tables, figs)
    if p > 0.2:
        return Section("contradicts", "additive within noise: " + text, numbers, tables, figs)
    return Section("inconclusive", text, numbers, tables, figs)


Analysis = Callable[[Study, pd.DataFrame, pd.DataFrame, Path], Section]
ANALYSES: dict[str, Analysis] = {
    "invariance": invariance, "lead_time": lead, "intervention": intervention, "depth": depth,
    "activation": activation, "weight_decay": weight_decay, "width": width, "grid": grid,
}
