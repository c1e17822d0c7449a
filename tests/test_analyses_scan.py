"""Adversarial scan of the study analyses (ncsim.study.analyses): run tables built by hand,
each verdict and number checked against the analysis' documented rule worked out by hand.

Invariants checked (every analysis unless named; weight_decay also on a (lambda_W,
lambda_H) grid):
- the verdict, the reason and the numbers do not depend on the order of the rows (within a
  part and across parts), the order of the columns, the index labels (shuffled, repeated
  after a concatenation), a run's row repeated, or on integer against float columns;
- no collapsed run (every run failed, diverged, not collapsed, vanishing, or "ok" with a NaN
  onset) is inconclusive, with one series and with several;
- weight_decay: a lambda is ``prevents`` only when fewer than half its runs collapse (half
  is not), ``slow`` only when its onset is more than twice the fastest (exactly twice and a
  tie for the fastest are ``optimal``); lambda_crit on the first prevented grid value lies
  in the bracket, on the last collapsed one it does not; a series of one lambda, a missing
  series;
- the reason states the counts the numbers hold (series, runs, crossings, parts).

Fixed findings (each test below fails on the code before the fix):
- weight_decay: two or more series in which nothing collapsed (every lambda ``prevents``)
  gave "contradicts": no run evidenced slow or optimal. It now needs two series holding both
  a collapsed and a prevented lambda to contradict.
- weight_decay: a run table whose index labels repeat (two tables concatenated) lent one
  run's collapse to another (``index.isin``): a prevented lambda read as ``slow`` and a
  "supports" became "inconclusive". Rows are now matched by position.
- width: onsets that rise by 1.9% per width (+6% overall) or stay flat counted as
  "monotone decreasing" and supported "width speeds collapse". Now no onset may exceed the
  lowest one at a smaller width by more than 2%, and the largest width's onset must lie more
  than 2% below the smallest's.
- depth: a turn was looked for only between neighbouring depths, so onsets 10, 10.4, 10.8,
  11.2, 5 (+12% in 4% steps, then -55%) read as "monotonic in depth" and contradicted the
  claim; a turn is now a rise and a fall beyond 5% between any two depths.
- grid: a 2 x 3 grid with one empty cell dropped the whole architecture row first and
  called the F test impossible ("needs 2 architectures x 2 datasets ...") although a full
  2 x 2 block was there; the largest full block is now tested, and the reason names it and
  the cells left out.
- invariance: "fn* CV < 8% in every part" while a part with 2 collapsed runs (CV 47%) was
  passed over in silence; the reason now names the parts left out with their counts.
- activation: the inconclusive reason said "moves only one of speed and fn* by >10%" when
  both spreads were above 10% (one collapsed run per activation: noise unknown); it now
  states the actual cause per part.
- lead_time: the reason counted only the runs that crossed fn_pred, not the collapsed runs
  without a held-out lead, and passed over parts with fewer than 4 crossings; both counted.
- intervention: an arm's fn* ratio came from its collapsed runs without saying that others
  of the arm did not collapse ("every arm returns within 5%" from 1 of 3 runs); the count
  is now in the reason.
- the order of the parts (tables, reasons, numbers' series) followed the first row of each
  part; it now follows the study's parts.
- a run whose row appears twice (same run_id) counted as two runs in every analysis: 2
  collapsed runs shown twice gave invariance "supports" with "n=4"; a repeated run_id now
  counts once (its last row, as the study store keeps it).
- weight_decay: an object column of integer onsets (Python ints and None) stopped the
  analysis in its heat map (InputError "holds object values"); onsets are read as floats.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from ncsim.study import analyses as A
from ncsim.study.spec import Study

FIX_WD = {"loss": "ce", "bias": "none", "classes": 4, "per_class": 10, "dim": 16,
          "lambda_b": 0.0, "init_scale": 0.1}


# ----------------------------------------------------------------------------- helpers
def study(analysis: str, parts: list[tuple[str, dict]], model: str = "simulated") -> Study:
    """A study of ``analysis`` with parts (name, grid)."""
    return Study(name="s", title="S", question="q?", claim="c.", analysis=analysis,
                 metrics=[], source="s.toml",
                 parts=[{"name": n, "model": model, "grid": {k: list(v) for k, v in g.items()},
                         "fixed": {}} for n, g in parts])


def grid_runs(part: str, grid: dict, onset, fn, model: str = "simulated",
              **columns) -> pd.DataFrame:
    """One run per grid point (in grid order), collapsed, with onset and fn* from the lists
    (or scalars) ``onset`` and ``fn``; ``columns`` add or replace columns."""
    combos = list(itertools.product(*grid.values()))
    n = len(combos)
    out = pd.DataFrame([dict(zip(grid, c)) for c in combos])
    out.insert(0, "run_id", [f"{part}-{i}" for i in range(n)])
    out.insert(1, "part", part)
    out.insert(2, "model", model)
    out.insert(3, "status", "ok")
    out["onset_time"] = np.broadcast_to(np.asarray(onset, float), n).copy()
    out["fn_at_onset"] = np.broadcast_to(np.asarray(fn, float), n).copy()
    return out.assign(**columns)


def no_traj() -> pd.DataFrame:
    return pd.DataFrame({"run_id": pd.Series([], dtype=object), "time": [], "fn": [],
                         "nc1_trace": []})


def fn_t_traj(run_ids, cap: dict | None = None, t_max: int = 100) -> pd.DataFrame:
    """fn = t (capped at ``cap[run_id]``) and NC1 = 1 / t at t = 1 .. t_max."""
    t = np.arange(1.0, t_max + 1)
    frames = [no_traj()]
    for rid in run_ids:
        fn = np.minimum(t, (cap or {}).get(rid, np.inf))
        frames.append(pd.DataFrame({"run_id": rid, "time": t, "fn": fn, "nc1_trace": 1 / t}))
    return pd.concat(frames, ignore_index=True)


def fail(runs: pd.DataFrame, mask, status: str = "not_collapsed") -> pd.DataFrame:
    """``runs`` with the rows of ``mask`` ended without onset under ``status``."""
    out = runs.copy()
    out.loc[np.asarray(mask, bool), ["status", "onset_time", "fn_at_onset"]] = [
        status, np.nan, np.nan]
    return out


def plain(x):
    """Numbers made comparable: floats rounded to 12 significant digits, NaN as None."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return float(x)
    if isinstance(x, (float, np.floating)):
        return None if math.isnan(x) else float(f"{float(x):.12g}")
    return x


def digest(sec: A.Section) -> tuple[str, str, str]:
    return sec.verdict, sec.reason, json.dumps(plain(sec.numbers), sort_keys=True)


def wd_frame(part: str, series: dict, lambdas, seeds=(0, 1), crit: float = 0.3,
             key: str = "depth") -> pd.DataFrame:
    """A weight-decay part along ``lambda`` (lambda_w = lambda_h = lambda): series maps a
    value of ``key`` to onsets per lambda (None: the runs end vanishing); each seed s
    multiplies the onset by 1 + 0.1 s."""
    rows = []
    for value, onsets in series.items():
        for lam, t in zip(lambdas, onsets, strict=True):
            for s in seeds:
                rows.append({"lambda": lam, "lambda_w": lam, "lambda_h": lam, key: value,
                             "seed": s, "status": "ok" if t is not None else "vanishing",
                             "onset_time": t * (1 + 0.1 * s) if t is not None else np.nan,
                             "fn_at_onset": 1.0 if t is not None else np.nan,
                             "lambda_crit_theory": crit})
    out = pd.DataFrame(rows).assign(**{k: v for k, v in FIX_WD.items() if k != key})
    if "depth" not in out:
        out["depth"] = 1
    out.insert(0, "run_id", [f"{part}-{i}" for i in range(len(out))])
    out.insert(1, "part", part)
    out.insert(2, "model", "simulated")
    return out


# ----------------------------------------------------------------------------- rich cases
def _case(analysis: str) -> tuple[Study, pd.DataFrame, pd.DataFrame]:
    """Two parts (or series) per analysis, random onsets and fn* (fixed seed), a few runs
    that did not collapse: a table on which every analysis computes all its numbers."""
    rng = np.random.default_rng(11)
    grids = {
        "invariance": {"init_scale": [0.1, 0.3], "seed": [0, 1, 2]},
        "lead_time": {"init_scale": [0.1, 0.3], "seed": [0, 1, 2, 3]},
        "intervention": {"intervene_alpha": [0.3, 1.0, 3.0], "seed": [0, 1, 2]},
        "depth": {"depth": [1, 2, 3, 4], "init_scale": [0.1, 0.3], "seed": [0, 1]},
        "activation": {"activation": ["relu", "tanh", "gelu"], "seed": [0, 1, 2]},
        "width": {"dim": [16, 32, 64, 128], "seed": [0, 1]},
        "grid": {"preset": ["mlp", "res"], "seed": [0, 1, 2]},
    }
    if analysis == "weight_decay":
        lams = [1e-3, 1e-2, 1e-1, 1.0]
        g = {"lambda": lams, "depth": [1, 2], "seed": [0, 1]}
        st = study(analysis, [("a", g), ("b", g)])
        runs = pd.concat([wd_frame("a", {1: [900.0, 60.0, 90.0, None], 2: [80.0, 70.0, 200.0,
                                                                        None]}, lams),
                          wd_frame("b", {1: [500.0, 40.0, None, None],
                                         2: [50.0, 45.0, 47.0, 49.0]}, lams)],
                         ignore_index=True)
        return st, runs, no_traj()
    g = grids[analysis]
    names = ("d1", "d2") if analysis == "grid" else ("a", "b")
    model = "trained" if analysis == "grid" else "simulated"
    st = study(analysis, [(n, g) for n in names], model=model)
    n = math.prod(len(v) for v in g.values())
    runs = pd.concat([grid_runs(p, g, rng.lognormal(3, 0.5, n).round(3),
                                rng.lognormal(0, 0.1, n), model=model) for p in names],
                     ignore_index=True)
    runs = fail(runs, np.arange(len(runs)) == 4)  # one run of part a ended without collapse
    if analysis == "grid":
        runs["dataset"] = runs["part"]
    if analysis == "intervention":
        runs["fn_before_intervention"] = 1.0
        runs["fn_after_intervention"] = runs["intervene_alpha"]
    traj = no_traj()
    if analysis == "lead_time":
        t = np.geomspace(0.1, 1000, 60)
        traj = pd.concat([pd.DataFrame({"run_id": r.run_id, "time": t,
                                        "fn": 3 * np.exp(-t / 30) + 0.5 + 0.01 * i,
                                        "nc1_trace": 1 / (1 + t)})
                          for i, r in enumerate(runs.itertuples())], ignore_index=True)
    return st, runs, traj


def _shuffled(runs: pd.DataFrame, k: int) -> pd.DataFrame:
    """Rows in a random order (parts interleaved), columns in a random order, the index
    labels shuffled with the rows."""
    rng = np.random.default_rng(100 + k)
    out = runs.iloc[rng.permutation(len(runs))]
    return out[list(rng.permutation(out.columns))]


# ----------------------------------------------------------------------------- invariants
def _grid2d_case() -> tuple[Study, pd.DataFrame, pd.DataFrame]:
    """A (lambda_w, lambda_h) weight-decay grid of two seeds: collapse below lambda_w
    lambda_h = 1e-3, slower at the smallest decays; its rows, its diagonal series."""
    lw = [1e-3, 1e-2, 1e-1, 1.0]
    g = {"lambda_w": lw, "lambda_h": [1e-2, 1e-1], "seed": [0, 1]}
    combos = list(itertools.product(*g.values()))
    onset = [(800.0 if w * h < 2e-5 else 60.0) * (1 + 0.1 * s) if w * h < 1e-3 else np.nan
             for w, h, s in combos]
    runs = grid_runs("g", g, onset, 1.0, **FIX_WD, depth=1, lambda_crit_theory=0.03)
    runs = fail(runs, runs["onset_time"].isna(), "vanishing")
    return study("weight_decay", [("g", g)]), runs, no_traj()


ORDER_CASES = sorted(A.ANALYSES) + ["weight_decay_2d"]


def _any_case(name: str) -> tuple[Study, pd.DataFrame, pd.DataFrame]:
    return _grid2d_case() if name == "weight_decay_2d" else _case(name)


@pytest.mark.parametrize("analysis", ORDER_CASES)
def test_row_column_and_index_order_change_nothing(analysis, tmp_path, no_figures):
    """Verdict, reason and numbers are the same for the rows shuffled across parts, the
    columns shuffled, the index kept or renumbered, the trajectory rows shuffled (fixed: the
    part order followed the first row of each part, which reordered reasons and the numbers'
    series)."""
    st, runs, traj = _any_case(analysis)
    run = A.ANALYSES[st.analysis]
    base = digest(run(st, runs, traj, tmp_path))
    assert base[0] in A.VERDICTS
    for k in range(4):
        # k = 0: the rows reversed (part b's rows first); then random orders
        other = runs.iloc[::-1] if k == 0 else _shuffled(runs, k)
        if k == 2:
            other = other.reset_index(drop=True)
        moved = traj.sample(frac=1.0, random_state=k)
        assert digest(run(st, other, moved, tmp_path)) == base, k


@pytest.mark.parametrize("analysis", ORDER_CASES)
def test_repeated_index_labels_change_nothing(analysis, tmp_path, no_figures):
    """The same table with index labels that repeat (labels 0..4 over and over, as tables
    concatenated without renumbering have them) gives the same section (fixed in
    weight_decay, which matched the collapsed runs by label)."""
    st, runs, traj = _any_case(analysis)
    run = A.ANALYSES[st.analysis]
    base = digest(run(st, runs, traj, tmp_path))
    repeated = runs.copy()
    repeated.index = np.arange(len(runs)) % 5  # shared by runs of other outcomes and settings
    assert digest(run(st, repeated, traj, tmp_path)) == base


@pytest.mark.parametrize("analysis", ORDER_CASES)
def test_a_run_repeated_counts_once(analysis, tmp_path, no_figures):
    """Every third row repeated (the same run_id twice, as two appended tables hold it)
    gives the section of the table with each run once (fixed: the analyses counted the run
    twice)."""
    st, runs, traj = _any_case(analysis)
    run = A.ANALYSES[st.analysis]
    base = digest(run(st, runs, traj, tmp_path))
    doubled = pd.concat([runs, runs.iloc[::3]], ignore_index=True)
    assert digest(run(st, doubled, traj, tmp_path)) == base


def test_two_runs_shown_twice_are_not_four(tmp_path, no_figures):
    """Invariance needs 3 collapsed runs: 2 runs (fn* 1.0, 1.02), each row twice, are still
    2 runs: inconclusive (before: "supports", "CV 1.1% (n=4)"; the 2 runs have CV 1.4%)."""
    g = {"seed": [0, 1]}
    runs = grid_runs("a", g, 10.0, [1.0, 1.02])
    sec = A.invariance(study("invariance", [("a", g)]), pd.concat([runs, runs]), no_traj(),
                       tmp_path)
    assert sec.verdict == "inconclusive"
    assert list(sec.tables[0][1]["n_runs"]) == [2]


@pytest.mark.parametrize("analysis", sorted(A.ANALYSES))
@pytest.mark.parametrize("onsets", ["int64", "object"])
def test_integer_and_float_columns_give_the_same_section(analysis, onsets, tmp_path,
                                                         no_figures):
    """Seeds as floats, onsets as integers (integer-valued in the case: an int64 column
    where every run has one, else Python ints and None in an object column, as a table built
    from records holds them), the alpha, depth and dim axes as floats: the same verdict and
    numbers (the reason may print 2.0 for 2). Fixed: weight_decay's heat map refused the
    object column of onsets (InputError: "holds object values, not numbers")."""
    st, runs, traj = _case(analysis)
    runs["onset_time"] = runs["onset_time"].round()
    if onsets == "int64":
        runs = runs[runs["onset_time"].notna()]
    base = A.ANALYSES[analysis](st, runs, traj, tmp_path)
    other = runs.copy()
    other["seed"] = other["seed"].astype(float)
    if onsets == "int64":
        other["onset_time"] = other["onset_time"].astype(np.int64)
    else:
        other["onset_time"] = pd.Series([None if math.isnan(v) else int(v)
                                         for v in runs["onset_time"]], dtype=object,
                                        index=other.index)
        assert other["onset_time"].dtype == object
    for col in ("intervene_alpha", "depth", "dim"):
        if col in other and analysis != "weight_decay":
            other[col] = other[col].astype(float)
    sec = A.ANALYSES[analysis](st, other, traj, tmp_path)
    assert sec.verdict == base.verdict
    assert json.dumps(plain(sec.numbers), sort_keys=True) == json.dumps(
        plain(base.numbers), sort_keys=True)


CASE_NONE = ["failed", "diverged", "not_collapsed", "vanishing", "nan_onset"]


@pytest.mark.parametrize("analysis", sorted(A.ANALYSES))
@pytest.mark.parametrize("how", CASE_NONE)
def test_no_collapsed_run_in_several_series_is_inconclusive(analysis, how, tmp_path,
                                                           no_figures):
    """Two parts / series in which no run collapsed (every run failed, diverged, not
    collapsed, vanishing, or "ok" with a NaN onset): inconclusive, without a RuntimeWarning
    (fixed: weight_decay gave "contradicts" for two series that never collapsed)."""
    st, runs, traj = _case(analysis)
    if how == "nan_onset":
        runs = runs.assign(status="ok", onset_time=np.nan)
    else:
        runs = fail(runs, np.ones(len(runs), bool), how)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        sec = A.ANALYSES[analysis](st, runs, traj, tmp_path)
    assert sec.verdict == "inconclusive", sec.reason


# ----------------------------------------------------------------------------- weight decay
LAMS = [1e-3, 1e-2, 1e-1, 1.0]


def test_weight_decay_half_collapsed_is_not_prevents_and_twice_fastest_is_optimal(
        tmp_path, no_figures):
    """Rule (README): prevents when fewer than half the runs collapse, slow when the mean
    onset is more than twice the fastest. Lambda 1e-1: 1 of 2 runs collapsed (half: not
    prevents), onset 100 = exactly 2 x the fastest 50 (optimal); lambda 1e-3: 100.5 (slow);
    1e-2 and a tie at 50 (both optimal); 1.0: 1 of 3 collapsed (prevents)."""
    g = {"lambda": LAMS, "seed": [0, 1, 2]}
    st = study("weight_decay", [("a", g)])
    runs = grid_runs("a", g, [100.5] * 3 + [50.0] * 3 + [100.0] * 3 + [50.0] * 3, 1.0,
                     **FIX_WD, depth=1, lambda_crit_theory=0.5)
    runs["lambda_w"] = runs["lambda_h"] = runs["lambda"]
    # lambda 1e-1: one of three ends vanishing, one failed numerically (undecided)
    runs = fail(runs, runs["run_id"].isin(["a-6"]), "vanishing")
    runs = fail(runs, runs["run_id"].isin(["a-7"]), "diverged")
    runs = fail(runs, runs["run_id"].isin(["a-10", "a-11"]), "vanishing")
    sec = A.weight_decay(st, runs, no_traj(), tmp_path)
    (s,) = sec.numbers["series"]
    assert s["regimes"] == ["slow", "optimal", "optimal", "prevents"]
    assert s["onsets"][:3] == [100.5, 50.0, 100.0]
    assert (s["last_collapsed"], s["first_prevented"]) == (1e-1, 1.0)
    assert s["theory_in_bracket"] is True and sec.verdict == "supports"
    assert sec.numbers["undecided_runs"] == {"a": 1}
    assert sec.notes == ["a: 1 run(s) stopped before deciding (1 diverged); they count "
                         "neither as collapsed nor as prevented and are left out."]


@pytest.mark.parametrize(("crit", "inside"), [(1.0, True), (1e-1, False), (0.5, True),
                                              (1.5, False)])
def test_lambda_crit_on_a_grid_value(crit, inside, tmp_path, no_figures):
    """Collapse iff lambda < lambda_crit: lambda_crit equal to the first prevented lambda
    (1.0) lies in the bracket (last collapsed, first prevented]; equal to the last collapsed
    one (0.1) it does not (the theory forbade that collapse); above the first prevented it
    does not either."""
    g = {"lambda": LAMS, "depth": [1], "seed": [0, 1]}
    st = study("weight_decay", [("a", g)])
    runs = wd_frame("a", {1: [900.0, 60.0, 90.0, None]}, LAMS, crit=crit)
    (s,) = A.weight_decay(st, runs, no_traj(), tmp_path).numbers["series"]
    assert s["lambda_crit_theory"] == crit
    assert s["theory_in_bracket"] is inside
    sec = A.weight_decay(st, runs, no_traj(), tmp_path)
    assert f"in {int(inside)} of 1 series with a prevented lambda" in sec.reason


def test_weight_decay_series_of_one_lambda_and_a_missing_series(tmp_path, no_figures):
    """Series of one lambda each (depth 1: collapsed, depth 2: prevented, depth 3: no run at
    all): no series spans collapse and prevents, so nothing is contradicted; the missing
    series is not counted."""
    g = {"lambda": [1e-2], "depth": [1, 2, 3], "seed": [0, 1]}
    st = study("weight_decay", [("a", g)])
    runs = wd_frame("a", {1: [60.0], 2: [None]}, [1e-2])
    sec = A.weight_decay(st, runs, no_traj(), tmp_path)
    assert [s["regimes"] for s in sec.numbers["series"]] == [["optimal"], ["prevents"]]
    assert sec.verdict == "inconclusive"
    assert sec.reason.startswith("0 of 2 lambda series show slow, optimal and prevents")
    assert sec.reason.endswith("(0 of 2 series have both a collapsed and a prevented lambda; "
                               "contradicting the claim takes 2)")


def test_weight_decay_contradicts_only_with_two_spanning_series(tmp_path, no_figures):
    """Depth 1: optimal, optimal, prevents, prevents (spans, no slow); depth 2: prevented
    everywhere. Only one series spans collapse and prevents: inconclusive (before: contradicts
    from the two series). With depth 2 also spanning: contradicts."""
    g = {"lambda": LAMS, "depth": [1, 2], "seed": [0, 1]}
    st = study("weight_decay", [("a", g)])
    runs = wd_frame("a", {1: [60.0, 50.0, None, None], 2: [None] * 4}, LAMS)
    sec = A.weight_decay(st, runs, no_traj(), tmp_path)
    assert sec.verdict == "inconclusive"
    assert sec.reason.endswith("(1 of 2 series has both a collapsed and a prevented lambda; "
                               "contradicting the claim takes 2)")
    runs = wd_frame("a", {1: [60.0, 50.0, None, None], 2: [70.0, None, None, None]}, LAMS)
    sec = A.weight_decay(st, runs, no_traj(), tmp_path)
    assert sec.verdict == "contradicts"
    assert sec.reason.startswith("0 of 2 lambda series show slow")


def test_weight_decay_never_collapsed_grid_is_inconclusive(tmp_path, no_figures):
    """A (lambda, depth) grid where every run vanished: 2 series of prevents only. Before:
    "contradicts"; now inconclusive, and the reason says no series collapsed."""
    g = {"lambda": LAMS, "depth": [1, 2], "seed": [0, 1]}
    st = study("weight_decay", [("a", g)])
    runs = wd_frame("a", {1: [None] * 4, 2: [None] * 4}, LAMS)
    sec = A.weight_decay(st, runs, no_traj(), tmp_path)
    assert [s["regimes"] for s in sec.numbers["series"]] == [["prevents"] * 4] * 2
    assert sec.verdict == "inconclusive"
    assert sec.reason.endswith(" (no series has a collapsed lambda)")


def test_weight_decay_repeated_labels_keep_each_run_s_outcome(tmp_path, no_figures):
    """Slow, optimal, optimal, prevents along lambda; the same rows with labels 0..3 twice
    (seed 0's rows, then seed 1's): before, a vanishing run sharing a label with a collapsed
    one counted as collapsed and lambda 1.0 read 'slow' (verdict inconclusive)."""
    g = {"lambda": LAMS, "depth": [1], "seed": [0, 1]}
    st = study("weight_decay", [("a", g)])
    runs = wd_frame("a", {1: [900.0, 60.0, 90.0, None]}, LAMS)
    twice = pd.concat([runs[runs["seed"] == 0], runs[runs["seed"] == 1]])
    twice.index = [0, 1, 2, 3] * 2
    # label 0 is lambda 1e-3 of seed 0 and of seed 1; give seed 1's rows reversed lambdas
    twice.iloc[4:] = twice.iloc[4:].iloc[::-1].to_numpy()
    sec = A.weight_decay(st, twice, no_traj(), tmp_path)
    (s,) = sec.numbers["series"]
    assert s["regimes"] == ["slow", "optimal", "optimal", "prevents"]
    assert sec.verdict == "supports"
    assert sec.numbers["agreement_with_theory_phase"]["a"] == A.weight_decay(
        st, runs, no_traj(), tmp_path).numbers["agreement_with_theory_phase"]["a"]


# ----------------------------------------------------------------------------- width
@pytest.mark.parametrize(("onsets", "monotone"), [
    ([100.0, 101.9, 103.8, 105.8], False),   # +1.9% per width, +5.8% overall
    ([100.0, 100.0, 100.0, 100.0], False),   # flat: no speed-up
    ([100.0, 99.0, 99.5, 99.0], False),      # -1% overall: within the 2% tolerance
    ([100.0, 60.0, 61.0, 30.0], True),       # a 1.7% rise after a fall, -70% overall
    ([100.0, 60.0, 61.3, 30.0], False),      # a 2.2% rise
])
def test_width_speed_up_is_monotone_and_net(onsets, monotone, tmp_path, no_figures):
    """Monotone speed-up: no onset more than 2% above the lowest at a smaller width, the
    largest width's onset more than 2% below the smallest's. Before, each step was compared
    with the previous only and a flat or creeping series supported."""
    g = {"dim": [16, 32, 64, 128]}
    sec = A.width(study("width", [("a", g)]), grid_runs("a", g, onsets, 1.0), no_traj(),
                  tmp_path)
    assert sec.numbers["a"]["onset_monotone_decreasing"] is monotone
    assert sec.numbers["a"]["onset_change"] == pytest.approx(onsets[-1] / onsets[0] - 1)
    assert sec.verdict == ("supports" if monotone else "contradicts")
    assert f"(monotone decreasing: {monotone})" in sec.reason


def test_width_series_of_one_width_per_setting_is_inconclusive(tmp_path, no_figures):
    """Reduction none at dims 16, 32 only, gram at 64 only: no series of 3 widths."""
    g = {"dim": [16, 32, 64], "reduction": ["none", "gram"]}
    runs = grid_runs("a", g, [30.0, 20.0, 10.0, 9.0, 8.0, 7.0], 1.0)
    runs = runs[((runs["reduction"] == "none") & (runs["dim"] < 64))
                | ((runs["reduction"] == "gram") & (runs["dim"] == 64))]
    sec = A.width(study("width", [("a", g)]), runs, no_traj(), tmp_path)
    assert sec.verdict == "inconclusive" and sec.numbers == {}


# ----------------------------------------------------------------------------- grid
def _grid_2x3(missing: tuple[str, str] | None) -> tuple[Study, pd.DataFrame]:
    """mlp, res x d1, d2, d3, three seeds; log fn* = 0.3 res + 0.2 d2 + 0.5 res d2 + noise;
    ``missing``: the cell whose runs end without collapse."""
    rows = []
    noise = (-0.02, 0.0, 0.03)
    for a, d in itertools.product(["mlp", "res"], ["d1", "d2", "d3"]):
        for s in range(3):
            mu = 0.3 * (a == "res") + 0.2 * (d == "d2") + 0.5 * (a == "res") * (d == "d2")
            rows.append({"run_id": f"{a}{d}{s}", "part": d, "model": "trained",
                         "status": "ok", "preset": a, "dataset": d, "seed": s,
                         "onset_time": 10.0, "fn_at_onset": math.exp(mu + noise[s])})
    runs = pd.DataFrame(rows)
    if missing:
        runs = fail(runs, (runs["preset"] == missing[0]) & (runs["dataset"] == missing[1]))
    st = study("grid", [(d, {"preset": ["mlp", "res"], "seed": [0, 1, 2]})
                        for d in ("d1", "d2", "d3")], model="trained")
    return st, runs


@pytest.mark.parametrize("missing", [("res", "d3"), ("mlp", "d1")])
def test_grid_tests_the_full_block_of_a_grid_with_an_empty_cell(missing, tmp_path,
                                                                no_figures):
    """2 x 3 grid, one cell without collapse: the F test runs on the 2 x 2 block of the two
    other datasets and equals the F test of those 12 runs alone; the reason names the block
    and the cells left out. Before: inconclusive ("needs 2 architectures x 2 datasets")."""
    st, runs = _grid_2x3(missing)
    sec = A.grid(st, runs, no_traj(), tmp_path)
    keep = [d for d in ("d1", "d2", "d3") if d != missing[1]]
    alone = A.grid(st, runs[runs["dataset"].isin(keep)], no_traj(), tmp_path)
    assert sec.numbers["interaction_F"] == pytest.approx(alone.numbers["interaction_F"],
                                                         rel=1e-12)
    assert set(sec.numbers["architecture_effect"]) == set(keep)
    assert sec.verdict == alone.verdict == "supports"
    left = [f"{a} x {missing[1]} ({3 if a != missing[0] else 0} of 3 runs collapsed)"
            for a in ("mlp", "res")]
    assert (f"(test on the 2 x 2 cells mlp, res x {', '.join(keep)}; left out: "
            f"{', '.join(left)})") in sec.reason
    assert "left out" not in alone.reason


def test_grid_without_a_full_block_stays_inconclusive(tmp_path, no_figures):
    """2 x 3 with (mlp, d1) and (res, d2) empty: every 2 x 2 block has an empty cell."""
    st, runs = _grid_2x3(("mlp", "d1"))
    runs = fail(runs, (runs["preset"] == "res") & (runs["dataset"] == "d2"))
    sec = A.grid(st, runs, no_traj(), tmp_path)
    assert sec.verdict == "inconclusive" and sec.numbers == {}
    assert sec.reason.startswith("4 of 6 cells collapsed (none in mlp x d1 (0 of 3 runs); "
                                 "res x d2 (0 of 3 runs))")


def test_full_rectangle_prefers_the_most_cells():
    """3 archs x 4 datasets with gaps at (a1, d4), (a3, d1): blocks of 6 cells are
    a1..a3 x d2, d3, a1, a2 x d1..d3 and a2, a3 x d2..d4; ties go to the first set of the
    shorter axis (archs), the largest sets first: all three archs x d2, d3. With a third gap
    at (a2, d2) the best blocks hold 4 cells; the first is a1, a2 x d1, d3. A diagonal
    pivot has no full 2 x 2 block: empty."""
    pivot = pd.DataFrame(1.0, index=["a1", "a2", "a3"], columns=["d1", "d2", "d3", "d4"])
    pivot.loc["a1", "d4"] = pivot.loc["a3", "d1"] = np.nan
    full = A._full_rectangle(pivot)
    assert (list(full.index), list(full.columns)) == (["a1", "a2", "a3"], ["d2", "d3"])
    pivot.loc["a2", "d2"] = np.nan
    full = A._full_rectangle(pivot)
    assert (list(full.index), list(full.columns)) == (["a1", "a2"], ["d1", "d3"])
    assert A._full_rectangle(pivot.T).equals(full.T)  # the same block either way round
    diag = pd.DataFrame(np.where(np.eye(3, dtype=bool), 1.0, np.nan))
    assert A._full_rectangle(diag).size == 0


# ----------------------------------------------------------------------------- invariance
def test_invariance_names_the_parts_it_leaves_out(tmp_path, no_figures):
    """Part a: 4 collapsed runs, CV 1.3%; part b: 2 of 4 collapsed (fn* 1 and 2, CV 47%):
    supports from a, and the reason no longer says "in every part" without naming b."""
    g = {"seed": [0, 1, 2, 3]}
    st = study("invariance", [("a", g), ("b", g)])
    a = grid_runs("a", g, 10.0, [1.0, 1.01, 1.02, 1.03])
    b = fail(grid_runs("b", g, 10.0, [1.0, 2.0, 1.0, 1.0]), [False, False, True, True])
    sec = A.invariance(st, pd.concat([a, b], ignore_index=True), no_traj(), tmp_path)
    cv_a = np.std([1.0, 1.01, 1.02, 1.03], ddof=1) / 1.015
    assert sec.verdict == "supports"
    assert sec.numbers["a"]["cv"] == pytest.approx(cv_a, rel=1e-12)
    assert set(sec.numbers) == {"a"}
    assert sec.reason == (f"fn* CV < 8% in every part with 3 or more collapsed runs: a: CV "
                          f"{100 * cv_a:.1f}% (n=4); left out (fewer than 3 collapsed runs, "
                          "or no finite fn* CV): b (2 of 4 runs collapsed)")


def test_invariance_single_run_per_part_is_inconclusive(tmp_path, no_figures):
    """One run per part (a series of length 1): no CV anywhere."""
    g = {"seed": [0]}
    st = study("invariance", [("a", g), ("b", g)])
    runs = pd.concat([grid_runs("a", g, 5.0, 1.0), grid_runs("b", g, 5.0, 3.0)],
                     ignore_index=True)
    sec = A.invariance(st, runs, no_traj(), tmp_path)
    assert sec.verdict == "inconclusive"
    assert sec.reason == "no part has 3 or more collapsed runs with a finite fn* CV"


# ----------------------------------------------------------------------------- activation
def test_activation_reason_states_why_it_does_not_support(tmp_path, no_figures):
    """Part a: one collapsed run per activation, spreads 100% and 200% (noise unknown);
    part b: fn* spread 5%, onset spread 50% (only speed moves). Before, the reason said
    "moves only one of speed and fn* by >10%" for a, whose spreads both exceed 10%."""
    g = {"activation": ["relu", "tanh", "gelu"]}
    gb = {"activation": ["relu", "tanh", "gelu"], "seed": [0, 1]}
    st = study("activation", [("a", g), ("b", gb)])
    a = grid_runs("a", g, [10.0, 20.0, 30.0], [1.0, 1.5, 2.0])
    b = grid_runs("b", gb, [10.0, 10.0, 15.0, 15.0, 12.0, 12.0],
                  [1.0, 1.0, 1.05, 1.05, 1.02, 1.02])
    sec = A.activation(st, pd.concat([a, b], ignore_index=True), no_traj(), tmp_path)
    assert sec.verdict == "inconclusive"
    assert sec.numbers["a"]["fn_star_spread"] == pytest.approx(1.0)
    assert sec.numbers["a"]["onset_spread"] == pytest.approx(2.0)
    assert sec.numbers["b"]["fn_star_spread"] == pytest.approx(0.05)
    assert sec.reason == (
        "activation moves only one of speed and fn* (by >10%, fn* also by more than twice "
        "its within-activation CV) in b; moves fn* by >10% against an unknown "
        "within-activation CV in a: a: fn* spread 100%, onset spread 200% over 3 "
        "activations; b: fn* spread 5%, onset spread 50% over 3 activations; "
        "within-activation fn* CV unknown (one collapsed run per activation) in a")


def test_activation_fn_star_within_noise_and_small_onset_moves_neither(tmp_path, no_figures):
    """fn* spread 20% against a within-activation CV of 28%, onset spread 5%: neither moves
    beyond its limit (not "moves only one")."""
    g = {"activation": ["relu", "tanh"], "seed": [0, 1]}
    runs = grid_runs("a", g, [100.0, 100.0, 105.0, 105.0], [0.8, 1.2, 1.2, 1.2])
    sec = A.activation(study("activation", [("a", g)]), runs, no_traj(), tmp_path)
    assert sec.verdict == "inconclusive"
    assert sec.reason.startswith("activation moves speed by at most 10% and fn* by no more "
                                 "than twice its within-activation CV in a: ")


def test_activation_contradiction_names_the_part_that_moves_neither(tmp_path, no_figures):
    """Part a: spreads 100% and 200% with 2 seeds (supports alone); part b: 5% and 9%
    (neither): contradicts, and the reason says where (before: "activation moves neither
    speed nor fn* by >10%", as if of every part)."""
    g = {"activation": ["relu", "tanh", "gelu"], "seed": [0, 1]}
    st = study("activation", [("a", g), ("b", g)])
    a = grid_runs("a", g, [10.0, 10.0, 20.0, 20.0, 30.0, 30.0],
                  [1.0, 1.01, 1.5, 1.51, 2.0, 2.01])
    b = grid_runs("b", g, [100.0, 100.0, 105.0, 105.0, 109.0, 109.0],
                  [1.0, 1.0, 1.05, 1.05, 1.02, 1.02])
    sec = A.activation(st, pd.concat([a, b], ignore_index=True), no_traj(), tmp_path)
    assert sec.verdict == "contradicts"
    assert sec.reason.startswith("activation moves neither speed nor fn* by >10% in b: a: fn* "
                                 "spread 100%, onset spread 200% over 3 activations; b: fn* "
                                 "spread 5%, onset spread 9% over 3 activations")
    alone = A.activation(st, b, no_traj(), tmp_path)
    assert alone.reason.startswith("activation moves neither speed nor fn* by >10%: b: ")


# ----------------------------------------------------------------------------- lead
def test_lead_counts_runs_without_a_lead_and_parts_left_out(tmp_path, no_figures):
    """fn = t, fn* 10 everywhere: part a, 6 seeds with onsets 20..25, the last run's fn
    capped at 5 (never reaches fn_pred 10): held-out leads 10..14 in 5 runs, all positive
    (MAE: each against the mean of the other four, 2.5, 1.25, 0, 1.25, 2.5: 1.5): supports.
    Part b: 3 seeds, 3 leads (< 4): left out. The reason says both (before, it counted only
    the 5 crossings and passed b over)."""
    g = {"seed": [0, 1, 2, 3, 4, 5]}
    gb = {"seed": [0, 1, 2]}
    st = study("lead_time", [("a", g), ("b", gb)])
    runs = pd.concat([grid_runs("a", g, [20.0, 21.0, 22.0, 23.0, 24.0, 25.0], 10.0),
                      grid_runs("b", gb, [20.0, 21.0, 22.0], 10.0)], ignore_index=True)
    sec = A.lead(st, runs, fn_t_traj(runs["run_id"], cap={"a-5": 5.0}), tmp_path)
    held = sec.numbers["a/held_out"]
    assert held["n_crossed"] == 5 and held["lead_mean"] == pytest.approx(12.0)
    assert held["ordering_accuracy"] == 1.0
    assert sec.numbers["b/held_out"]["n_crossed"] == 3
    assert sec.verdict == "supports"
    assert sec.reason == (
        f"a: held-out lead 12 ± {A.fmt(float(np.std([10, 11, 12, 13, 14], ddof=1)))} "
        "(MAE 1.5, fn crosses first in 100% of 5 runs; 1 of its 6 collapsed runs have no "
        "held-out lead); left out (fewer than 4 held-out leads): b (3 of 3 collapsed runs)")


# ----------------------------------------------------------------------------- intervention
def test_intervention_reason_counts_an_arm_s_runs_that_did_not_collapse(tmp_path, no_figures):
    """Control fn* 1, 1, 1; arm alpha 3: 1 of 3 runs collapsed (fn* 1.02), 2 not collapsed:
    inconclusive (it supported before: the arm's fn* stands on 1 of 3 runs, and 2 did not
    return to collapse); the reason says the ratio stands on 1 of 3 runs. With the 2 runs
    failed numerically instead (they decide nothing) it supports."""
    g = {"intervene_alpha": [1.0, 3.0], "seed": [0, 1, 2]}
    runs = grid_runs("u", g, [50.0, 50.0, 50.0, 60.0, 60.0, 60.0],
                     [1.0, 1.0, 1.0, 1.02, 1.0, 1.0])
    runs = fail(runs, [False] * 4 + [True, True])
    sec = A.intervention(study("intervention", [("u", g)]), runs, no_traj(), tmp_path)
    assert sec.verdict == "inconclusive"
    assert sec.numbers == {"max_fn_star_deviation": pytest.approx(0.02),
                           "arms_without_collapse": 0, "arms_in_part_collapsed": 1}
    assert sec.reason == ("every arm's collapsed runs return within 5% of fn*, but in 1 "
                          "arm(s) some runs ended without collapse: u alpha=3: fn nan -> nan, "
                          "fn*/fn*(1) = 1.02, onset shift 10 (1 of 3 runs collapsed)")
    failed = fail(grid_runs("u", g, [50.0, 50.0, 50.0, 60.0, 60.0, 60.0],
                            [1.0, 1.0, 1.0, 1.02, 1.0, 1.0]),
                  [False] * 4 + [True, True], status="failed")
    sec = A.intervention(study("intervention", [("u", g)]), failed, no_traj(), tmp_path)
    assert sec.verdict == "supports"
    assert sec.numbers["arms_in_part_collapsed"] == 0
    assert sec.reason.startswith("every arm returns within 5% of fn*: u alpha=3: ")


# ----------------------------------------------------------------------------- reasons
def test_depth_reason_counts_match_the_numbers(tmp_path, no_figures):
    """Two settings: 10, 5, 8 (non-monotonic) and 10, 8, 6 with depth 4 never collapsed
    (left out of the series): "non-monotonic in 1 of 2 series", fastest depths 2 and 3, the
    collapsed fraction 3 / 4 of the second series."""
    g = {"depth": [1, 2, 3, 4], "init_scale": [0.1, 0.3]}
    onsets = [10.0, 10.0, 5.0, 8.0, 8.0, 6.0, 9.0, 7.0]  # grid order: depth, init_scale
    runs = grid_runs("a", g, onsets, 1.0)
    runs = fail(runs, (runs["depth"] == 4) & (runs["init_scale"] == 0.3))
    sec = A.depth(study("depth", [("a", g)]), runs, no_traj(), tmp_path)
    s1, s2 = sec.numbers["series"]
    assert (s1["onsets"], s1["non_monotonic"], s1["fastest_depth"]) == (
        [10.0, 5.0, 8.0, 9.0], True, 2)
    assert (s2["onsets"], s2["non_monotonic"], s2["fastest_depth"]) == (
        [10.0, 8.0, 6.0], False, 3)
    assert s2["collapsed_fraction"] == 0.75
    assert sec.verdict == "supports"
    assert sec.reason.startswith("non-monotonic in 1 of 2 series: a (init_scale = 0.1): "
                                 "onset 10, 5, 8, 9 at depth 1, 2, 3, 4; a (init_scale = 0.3)"
                                 ": onset 10, 8, 6 at depth 1, 2, 3")


@pytest.mark.parametrize(("onsets", "turns"), [
    ([10.0, 10.4, 10.8, 11.2, 5.0], True),   # +4% steps, +12% in all, then -55%
    ([10.0, 9.6, 9.2, 8.8, 12.0], True),     # -4% steps, -12% in all, then +36%
    ([10.0, 10.4, 10.8, 11.2, 11.6], False),  # rises throughout
    ([10.0, 10.4, 10.0, 10.4, 10.0], False),  # wobbles within 5%
    ([10.0, 10.4, 10.92, 10.4, 10.0], True),  # +9.2% up to 10.92, then -8.4%
])
def test_depth_turn_is_judged_over_the_whole_series(onsets, turns, tmp_path, no_figures):
    """A turn is a rise beyond 5% followed by a fall beyond 5% (or the reverse), each
    relative to its earlier value, between any two depths. Before, only neighbours were
    compared, so a 12% rise in 4% steps followed by a 55% fall read as "monotonic in depth"
    and contradicted the claim."""
    g = {"depth": [1, 2, 3, 4, 5]}
    sec = A.depth(study("depth", [("a", g)]), grid_runs("a", g, onsets, 1.0), no_traj(),
                  tmp_path)
    assert A._non_monotonic(np.array(onsets)) is turns
    assert sec.numbers["series"][0]["non_monotonic"] is turns
    assert sec.verdict == ("supports" if turns else "contradicts")


def test_weight_decay_reason_counts_match_the_numbers(tmp_path, no_figures):
    """The rich two-part case: the reason's "X of Y lambda series", "in B of N series with a
    prevented lambda" and "above ... in O of M series without one" equal what the numbers'
    series give."""
    st, runs, _ = _case("weight_decay")
    sec = A.weight_decay(st, runs, no_traj(), tmp_path)
    series = sec.numbers["series"]
    good = sum(s["three_regimes"] for s in series)
    closed = [s for s in series if s["theory_in_bracket"] is not None
              and math.isfinite(s["first_prevented"])]
    open_ = [s for s in series if s["theory_in_bracket"] is not None
             and not math.isfinite(s["first_prevented"])]
    assert sec.reason.startswith(
        f"{good} of {len(series)} lambda series show slow, optimal and prevents in order; "
        f"lambda_crit (theory) lies between the last collapsed and the first prevented "
        f"lambda in {sum(s['theory_in_bracket'] for s in closed)} of {len(closed)} series "
        f"with a prevented lambda, above the last collapsed lambda in "
        f"{sum(s['theory_in_bracket'] for s in open_)} of {len(open_)} series without one")
    assert [s["part"] for s in series] == ["a", "a", "b", "b"]
    assert good >= 1 and sec.verdict == "supports"
