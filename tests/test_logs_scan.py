"""Scan of ncsim.validate.logs / ncsim.validate.analysis over unusual but plausible logs.

Each result is checked against a naive reference written from the documented rules (the module
docstrings, the rupa2026 logs README): onset = first searched record (phase 2 when the log has
it, else the whole log) whose metric is below the threshold, gaps skipped, no interpolation;
fn* = that record's own fn; vanishing when the last finite fn < 1e-3 x the largest.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats

from ncsim.errors import InputError
from ncsim.validate.analysis import OnsetRule, analyze, run_table
from ncsim.validate.cli import validate
from ncsim.validate.logs import read_log, read_logs

LOGS = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "rupa2026-logs"
needs_logs = pytest.mark.skipif(not LOGS.is_dir(), reason=f"reference logs not found at {LOGS}")


# ---------------------------------------------------------------- naive reference


def naive_run(recs, thr=0.01, stay=1, tol=1e-3):
    """The documented rules on a list of records {time, phase, nc1, fn} (any order)."""
    recs = sorted(recs, key=lambda r: r["time"])
    search = recs
    if any(r["phase"] == 2 for r in recs):
        search = [r for r in recs if r["phase"] == 2]
    kept = [r for r in search if not math.isnan(r["nc1"])]
    onset = fn_star = math.nan
    for i in range(len(kept) - stay + 1):
        if all(kept[j]["nc1"] < thr for j in range(i, i + stay)):
            onset, fn_star = kept[i]["time"], kept[i]["fn"]
            break
    fns = [r["fn"] for r in recs if math.isfinite(r["fn"])]
    vanishing = bool(fns) and (max(fns) <= 0 or fns[-1] < tol * max(fns))
    if vanishing:
        onset = fn_star = math.nan
    finite = [r["nc1"] for r in recs if math.isfinite(r["nc1"])]
    searched = [r["nc1"] for r in search if math.isfinite(r["nc1"])]
    diverged = math.isinf(recs[-1]["fn"])  # these logs have no loss column
    status = ("diverged" if diverged else "vanishing" if vanishing else
              "collapsed" if math.isfinite(onset) else "not_collapsed")
    return {"onset_epoch": onset, "fn_star": fn_star,
            "min_metric": min(finite) if finite else math.nan,
            "min_metric_searched": min(searched) if searched else math.nan,
            "final_metric": finite[-1] if finite else math.nan,
            "final_fn": fns[-1] if fns else math.nan,
            "last_epoch": max(r["time"] for r in recs), "status": status}


def _same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    a, b = float(a), float(b)
    return (math.isnan(a) and math.isnan(b)) or a == b


def _random_log(rnd: random.Random):
    n = rnd.choice([1, 2, 3, 5, 10, 25])
    start, step = rnd.choice([0, 1, 7, -20, 1000, 0.5]), rnd.choice([1, 10, 0.25, 1e3])
    times = [float(start + step * i) for i in range(n)]
    if n > 3 and rnd.random() < 0.3:  # missing epochs
        times = sorted(rnd.sample(times, n - 2))
    phased, split = rnd.random() < 0.7, rnd.randint(0, len(times))
    scale = 10.0 ** rnd.uniform(-250, 250) if rnd.random() < 0.2 else 1.0
    kind = rnd.choice(["decay", "never", "first", "comeback", "zero", "random"])
    recs = []
    for i, t in enumerate(times):
        nc1 = {"decay": 2 * 0.6 ** i, "never": 0.5 + rnd.random(), "first": 1e-3 * (i + 1),
               "comeback": 0.005 if i == len(times) // 2 else 0.5, "zero": 0.0,
               "random": 10 ** rnd.uniform(-4, 1)}[kind]
        nc1 = rnd.choices([nc1, math.nan, math.inf, 1e-310], [80, 12, 4, 4])[0]
        fn = rnd.choices([10 * scale / (1 + i), 3 * scale, 0.0, rnd.random(), math.nan,
                          math.inf, 1e308], [50, 20, 8, 8, 8, 3, 3])[0]
        recs.append({"time": t, "phase": (1 if i < split else 2) if phased else None,
                     "nc1": float(nc1), "fn": float(fn)})
    return recs, phased


def _write_log(recs, phased, path: Path, rnd: random.Random, schema: str) -> None:
    """Shuffled rows and columns, an identical copy of a record, extra columns, several
    spellings of blanks, BOM and Windows line ends, or Parquet."""
    cols = (["epoch", "train", "test", "nc1", "nc2", "nc3", "feat_norm"] if schema == "paper"
            else ["time", "fn", "nc1_trace", "accuracy"])
    cols += ["phase"] * phased + ["weight_norm"] * (rnd.random() < 0.3)
    rnd.shuffle(cols)
    rows = list(recs) + ([rnd.choice(recs)] if rnd.random() < 0.3 else [])
    rnd.shuffle(rows)

    def value(r, c):
        return {"epoch": r["time"], "time": r["time"], "nc1": r["nc1"], "nc1_trace": r["nc1"],
                "feat_norm": r["fn"], "fn": r["fn"], "phase": r["phase"]}.get(c, 0.5)

    if path.suffix == ".parquet":
        pd.DataFrame([{c: value(r, c) for c in cols} for r in rows], columns=cols).to_parquet(path)
        return

    def text(c, v):
        if c == "phase":
            return str(v)
        if isinstance(v, float) and math.isnan(v):
            return rnd.choice(["", "nan", "NaN", "NA"])
        if c in ("epoch", "time") and float(v).is_integer() and rnd.random() < 0.5:
            return str(int(v))
        return repr(float(v))

    end = rnd.choice(["\n", "\r\n"])
    lines = [",".join(cols)] + [",".join(text(c, value(r, c)) for c in cols) for r in rows]
    path.write_bytes((end.join(lines) + end).encode(rnd.choice(["utf-8", "utf-8-sig"])))


def test_random_unusual_logs_match_the_naive_reference(tmp_path):
    """Shuffled, repeated, gapped, BOM / CRLF / Parquet logs give the naive rules' run table."""
    checked = 0
    for seed in range(80):
        rnd = random.Random(seed)
        recs, phased = _random_log(rnd)
        folder = tmp_path / str(seed)
        folder.mkdir()
        name = rnd.choice(["run_s0", "wïdth128_s1", "日本_s2", "x"]) + rnd.choice(
            [".csv", ".csv", ".parquet"])
        _write_log(recs, phased, folder / name, rnd, rnd.choice(["paper", "ncsim"]))
        thr, stay = rnd.choice([0.01, 0.05, 1e-300, 1e300]), rnd.choice([1, 1, 2, 3])
        got = run_table(read_log(folder / name), OnsetRule(threshold=thr, stay=stay)).iloc[0]
        for key, want in naive_run(recs, thr, stay).items():
            assert _same(got[key], want), (seed, key, got[key], want)
        checked += 1
    assert checked == 80


# ---------------------------------------------------------------- groups, leads, row order


def _grid() -> pd.DataFrame:
    """Six runs in one ncsim table: two conditions x three seeds, gaps, one vanishing run."""
    rows = []
    spec = {"a0": ("c1", 0, 0.5, 8.0, 0.9), "a1": ("c1", 1, 0.6, 9.0, 0.85),
            "a2": ("c1", 2, 0.4, 7.0, 0.95), "b0": ("c2", 0, 0.6, 20.0, 0.8),
            "b1": ("c2", 1, 0.5, 15.0, 0.9), "b2": ("c2", 2, 0.5, 15.0, 0.2)}  # b2 vanishes
    for rid, (cond, seed, a, f0, r) in spec.items():
        for i in range(15):
            rows.append({"run_id": rid, "time": 5.0 + 10 * i, "fn": f0 * r ** i,
                         "nc1_trace": math.nan if i == 3 else 2 * a ** i, "model": "m",
                         "dataset": "d", "condition": cond, "seed": seed})
    return pd.DataFrame(rows)


def test_groups_and_lead_times_match_a_hand_computation():
    """Group mean / std / CV / t interval and in-sample leads equal a direct computation."""
    traj = _grid()
    out = analyze(traj, OnsetRule(threshold=0.01, phase=2))
    runs = out["runs"].set_index("run")
    recs = {rid: [{"time": r.time, "phase": None, "nc1": r.nc1_trace, "fn": r.fn}
                  for r in part.itertuples()] for rid, part in traj.groupby("run_id")}
    want = {rid: naive_run(r) for rid, r in recs.items()}
    assert runs.loc["b2", "status"] == "vanishing"
    for rid, w in want.items():
        assert _same(runs.loc[rid, "onset_epoch"], w["onset_epoch"])
        assert _same(runs.loc[rid, "fn_star"], w["fn_star"])
    groups = out["groups"].set_index("condition")
    leads = out["leads"].set_index("run")
    all_leads = []
    for cond, ids in (("c1", ["a0", "a1", "a2"]), ("c2", ["b0", "b1", "b2"])):
        fn = np.array([want[r]["fn_star"] for r in ids if want[r]["status"] == "collapsed"])
        half = stats.t.ppf(0.975, fn.size - 1) * fn.std(ddof=1) / math.sqrt(fn.size)
        g = groups.loc[cond]
        assert g.fn_star_mean == pytest.approx(fn.mean(), rel=1e-12)
        assert g.fn_star_std == pytest.approx(fn.std(ddof=1), rel=1e-12)
        assert g.fn_star_cv == pytest.approx(fn.std(ddof=1) / fn.mean(), rel=1e-12)
        assert g.fn_star_ci_low == pytest.approx(fn.mean() - half, rel=1e-12)
        assert g.n_vanishing == (1 if cond == "c2" else 0)
        for rid in ids:  # first record with fn <= the group mean fn*, over the whole log
            cross = next((r["time"] for r in sorted(recs[rid], key=lambda r: r["time"])
                          if r["fn"] <= fn.mean()), math.nan)
            assert leads.loc[rid, "fn_pred_in_sample"] == pytest.approx(fn.mean(), rel=1e-12)
            assert _same(leads.loc[rid, "t_cross_in_sample"], cross)
            lead = want[rid]["onset_epoch"] - cross
            if math.isfinite(lead):
                all_leads.append(lead)
    summary = out["lead_summary"]["in_sample"]
    assert summary["n_crossed"] == len(all_leads) > 0
    assert summary["lead_mean"] == pytest.approx(np.mean(all_leads), rel=1e-12)
    assert summary["mae"] == pytest.approx(
        np.mean(np.abs(np.array(all_leads) - np.mean(all_leads))), rel=1e-12)


def test_analysis_is_invariant_under_row_order(tmp_path):
    """Shuffling the rows of a several-run log (CSV or Parquet) changes no table."""
    traj = _grid()
    base = analyze(read_log(_saved(traj, tmp_path / "grid.csv")), OnsetRule.preset("rupa2026"))
    for i, suffix in enumerate([".csv", ".parquet", ".csv"]):
        shuffled = traj.sample(frac=1, random_state=i)
        out = analyze(read_log(_saved(shuffled, tmp_path / f"g{i}{suffix}")),
                      OnsetRule.preset("rupa2026"))
        for key in ("runs", "groups", "leads"):
            pd.testing.assert_frame_equal(out[key], base[key])
        assert out["lead_summary"] == base["lead_summary"]


def _saved(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def test_constant_zero_single_and_first_record_cases(tmp_path):
    """fn 0 throughout is vanishing; a single record, a first-record crossing, a come-back."""
    cases = {
        "zero_s0": ("epoch,nc1,feat_norm\n1,0.5,0\n2,0.001,0\n", "vanishing", math.nan),
        "one_s0": ("epoch,phase,nc1,feat_norm\n7,2,0.001,3.5\n", "collapsed", 7.0),
        "first_s0": ("epoch,nc1,feat_norm\n3,0.001,2\n4,0.5,2\n", "collapsed", 3.0),
        "back_s0": ("epoch,nc1,feat_norm\n3,0.5,2\n4,0.009,2\n5,0.5,2\n", "collapsed", 4.0),
        "const_s0": ("epoch,nc1,feat_norm\n3,0.5,2\n4,0.5,2\n", "not_collapsed", math.nan),
        "huge_s0": ("epoch,nc1,feat_norm\n1e300,inf,1e308\n2e300,1e-320,1e-300\n",
                    "vanishing", math.nan),
    }
    for name, (text, status, onset) in cases.items():
        (tmp_path / f"{name}.csv").write_text(text)
        run = run_table(read_log(tmp_path / f"{name}.csv"), OnsetRule.preset("rupa2026")).iloc[0]
        assert run.status == status, name
        assert _same(run.onset_epoch, onset), name


# ---------------------------------------------------------------- the released logs


def _runs(pattern: str, threshold: float | None = None) -> pd.DataFrame:
    traj = read_logs(sorted(LOGS.glob(pattern)))
    per_condition = threshold is None
    return run_table(traj, OnsetRule.preset("rupa2026", threshold), per_condition).set_index("run")


@needs_logs
def test_weight_decay_sweep_reproduces_sweep_wd():
    """wd1e-05 / wd5e-05 / wd0p0005 runs give sweep_wd.csv's T_NC and fn (0.0005: none)."""
    runs = _runs("wd*_s*.csv")
    names = {1e-05: "wd1e-05", 5e-05: "wd5e-05", 0.0005: "wd0p0005"}
    sweep = pd.read_csv(LOGS / "sweep_wd.csv")
    for row in sweep.itertuples():
        run = runs.loc[f"{names[row.wd]}_s{row.seed}"]
        assert run.threshold == 0.01
        if math.isnan(row.T_NC):
            assert run.status == "not_collapsed" and run.min_metric_searched >= 0.01
        else:
            assert run.onset_epoch == row.T_NC and run.fn_star == row.fn


@needs_logs
def test_depth_logs_reproduce_sweep_depth_and_sweep_remaining():
    """depth7 at 0.01 gives sweep_depth.csv; depth2/3 _ext runs at 0.05 give sweep_remaining's
    depth rows, and no depth 2/3 log reaches the strict 0.01 in its MSE phase (blank rows)."""
    runs = _runs("depth*_s*.csv")
    for row in pd.read_csv(LOGS / "sweep_depth.csv").itertuples():
        if row.depth == 7:
            run = runs.loc[f"depth7_s{row.seed}"]
            assert run.onset_epoch == row.T_NC and run.fn_star == row.feat_norm
    strict = _runs("depth[23]_s*.csv", 0.01)
    assert (strict.status == "not_collapsed").all() and len(strict) == 12
    rest = pd.read_csv(LOGS / "sweep_remaining.csv").dropna(subset=["depth"])
    for row in rest.itertuples():
        run = runs.loc[f"depth{int(row.depth)}_s{row.seed}_ext"]
        assert run.threshold == 0.05
        assert run.onset_epoch == row.T_NC and run.fn_star == row.feat_norm


@needs_logs
def test_vit_logs_reproduce_the_crossarch_summary():
    """ViT logs: no strict onset (the paper's blank T_NC_strict), relaxed T_NC and fn as listed."""
    strict = _runs("vit_crossarch/vit_mnist_*_s*.csv")
    assert (strict.status == "not_collapsed").all() and (strict.threshold == 0.01).all()
    relaxed = _runs("vit_crossarch/vit_mnist_*_s*.csv", 0.05)
    summary = pd.read_csv(LOGS / "vit_crossarch" / "vit_crossarch_summary.csv")
    for row in summary.itertuples():
        run = relaxed.loc[f"vit_mnist_adam_s{row.seed}"]
        assert run.onset_epoch == row.T_NC_relaxed and run.fn_star == row.fn_relaxed


# ---------------------------------------------------------------- bad input through the CLI


@pytest.mark.parametrize("name, text, words", [
    ("cut_s0.csv", "epoch,nc1,feat_norm\n10,0.5,3\n20,0.5,0.0", "no line end"),
    ("text_s0.csv", "epoch,nc1,feat_norm\nten,0.5,3\n", "not a number"),
    ("neg_s0.csv", "epoch,nc1,feat_norm\n10,-0.5,3\n", "never below 0"),
    ("phase_s0.csv", "epoch,phase,nc1,feat_norm\n10,MSE,0.5,3\n", "not phase numbers"),
    ("clash_s0.csv", "epoch,nc1,feat_norm\n10,0.5,3\n10,0.4,3\n", "different values"),
    ("inf_s0.csv", "epoch,nc1,feat_norm\ninf,0.5,3\n", "finite epoch"),
    ("empty_s0.csv", "", "cannot read log"),
    ("header_s0.csv", "epoch,nc1,feat_norm\n", "without records"),
    ("semi_s0.csv", "epoch;nc1;feat_norm\n1;0.5;3\n", "neither an 'epoch'"),
])
def test_cli_refuses_bad_logs_with_one_line_naming_the_file(tmp_path, name, text, words):
    """Each bad log: exit 2, one stderr line naming the log and the problem, no traceback."""
    path = tmp_path / name
    path.write_text(text)
    result = CliRunner().invoke(validate, ["analyze", str(path)])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    line = result.stderr.strip()
    assert line.count("\n") == 0 and words in line and name.split(".")[0] in line
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [["--onset-threshold", "nan"], ["--onset-threshold", "-1"],
                                  ["--onset-threshold", "inf"], ["--metric", "nc2_angle"]])
def test_cli_refuses_bad_options_with_exit_2(tmp_path, args):
    """A threshold that is not a finite number > 0, or an absent metric: exit 2, one line."""
    path = tmp_path / "width128_s0.csv"
    path.write_text("epoch,phase,nc1,feat_norm\n10,1,0.5,5\n20,2,0.005,1\n")
    result = CliRunner().invoke(validate, ["analyze", str(path), *args])
    assert result.exit_code == 2 and result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("Error: ")


def test_cli_reads_bom_crlf_unicode_named_logs_and_writes_strict_json(tmp_path):
    """A BOM + CRLF log with a unicode name reads as the plain one; the JSON has no NaN."""
    text = "epoch,phase,nc1,feat_norm\r\n10,1,inf,5\r\n20,2,0.5,\r\n30,2,0.005,1\r\n"
    path = tmp_path / "größe_日本_s3.csv"
    path.write_bytes(text.encode("utf-8-sig"))
    result = CliRunner().invoke(validate, ["analyze", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output

    def refuse(token):
        raise ValueError(token)

    data = json.loads(result.stdout, parse_constant=refuse)
    run = data["runs"][0]
    assert run["run"] == "größe_日本_s3" and run["seed"] == 3 and run["onset_epoch"] == 30
    assert run["fn_star"] == 1.0 and data["lead_summary"]["held_out"]["mae"] is None


# ---------------------------------------------------------------- findings (real bugs)


def test_records_at_one_epoch_in_two_phases_do_not_depend_on_row_order(tmp_path):
    """The end of phase 1 and the start of phase 2 logged at one epoch: row order is irrelevant."""
    head = "epoch,phase,nc1,feat_norm\n100,1,0.5,5.0\n"
    rows = ["200,1,0.3,5.0\n", "200,2,0.005,0.001\n"]
    (tmp_path / "a_s0.csv").write_text(head + rows[0] + rows[1])
    (tmp_path / "b_s0.csv").write_text(head + rows[1] + rows[0])
    rule = OnsetRule.preset("rupa2026")
    a = run_table(read_log(tmp_path / "a_s0.csv"), rule).drop(columns=["run", "condition"])
    b = run_table(read_log(tmp_path / "b_s0.csv"), rule).drop(columns=["run", "condition"])
    pd.testing.assert_frame_equal(a, b)


def test_epochs_restarting_at_phase_two_are_refused(tmp_path):
    """Phase 2 logged from epoch 10 again: refused, naming the log and what to do (read
    interleaved, the final fn was a phase-1 record's and a vanishing run read collapsed)."""
    rows = ["epoch,phase,nc1,feat_norm"] + [f"{e},1,0.5,20" for e in (10, 20, 30, 40, 50)]
    rows += ["10,2,0.2,1.0", "20,2,0.005,0.01", "30,2,0.001,0.001"]  # fn -> 0.001 < 1e-3 x 20
    path = tmp_path / "restart_s0.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(InputError, match=r"restart_s0.*phase 1 has epochs up to 50 but a "
                       r"later phase starts at 10.*number them on across the phases"):
        read_log(path)
    path.write_text("\n".join(rows[:6] + ["50,2,0.2,1.0", "60,2,0.005,0.01",
                                           "70,2,0.001,0.001"]) + "\n")
    run = run_table(read_log(path), OnsetRule.preset("rupa2026")).iloc[0]
    assert run.final_fn == 0.001 and run.status == "vanishing"  # counted on: read in order


@pytest.mark.parametrize("header", ["epoch,nc1,feat_norm, phase", "epoch,nc1,feat_norm,phase "])
def test_phase_header_with_spaces_is_the_phase_column(tmp_path, header):
    """A spaced 'phase' header is the phase column: the phase-2 onset (epoch 30), not the
    cross-entropy phase's epoch 10."""
    path = tmp_path / "spaced_s0.csv"
    path.write_text(header + "\n10,0.005,3,1\n20,0.5,2,2\n30,0.005,1,2\n")
    run = run_table(read_log(path), OnsetRule.preset("rupa2026")).iloc[0]
    assert run.onset_epoch == 30.0


def test_paper_log_with_an_extra_fn_column_does_not_depend_on_column_order(tmp_path):
    """feat_norm is the paper's fn: an extra 'fn' column that differs is refused in either
    column order; one equal to feat_norm is read as one column."""
    texts = {"a_s0.csv": "epoch,feat_norm,fn,nc1\n10,3,100,0.5\n20,2,100,0.005\n",
             "b_s0.csv": "epoch,fn,feat_norm,nc1\n10,100,3,0.5\n20,100,2,0.005\n"}
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(InputError, match="columns feat_norm and fn, which both name its fn"):
            read_log(tmp_path / name)
    (tmp_path / "c_s0.csv").write_text("epoch,fn,feat_norm,nc1\n10,3,3,0.5\n20,2,2,0.005\n")
    run = run_table(read_log(tmp_path / "c_s0.csv"), OnsetRule.preset("rupa2026")).iloc[0]
    assert run.fn_star == 2.0


def test_integer_and_text_run_ids_that_print_alike_are_refused(tmp_path):
    """Run ids must be unique as printed: an int 1 and a file 1.csv clash."""
    (tmp_path / "1.csv").write_text("epoch,nc1,feat_norm\n1,0.5,3\n2,0.005,2\n")
    pd.DataFrame({"run_id": [1, 1], "time": [1.0, 2.0], "fn": [3.0, 2.0],
                  "nc1_trace": [0.5, 0.001]}).to_parquet(tmp_path / "grid.parquet")
    with pytest.raises(InputError, match="run id"):
        read_logs([tmp_path / "1.csv", tmp_path / "grid.parquet"])


def test_ncsim_log_with_two_labels_in_one_run_is_refused(tmp_path):
    """One run, two conditions: an InputError, as for a paper log."""
    path = tmp_path / "lab.csv"
    path.write_text("run_id,time,fn,nc1_trace,condition,seed\na,1,3,0.5,x,0\na,2,1,0.001,y,1\n")
    with pytest.raises(InputError, match="condition"):
        read_log(path)


def _loso_by_run(runs: pd.DataFrame, fit: str) -> dict:
    """Leave-one-seed-out thresholds the plain way: one fit per run on the runs of the other
    known seeds plus that run with fn* blanked (the reference)."""
    from ncsim.validate.analysis import fit_thresholds

    out = {}
    for _, run in runs.iterrows():
        others = runs[runs["seed"].astype("string") != str(run["seed"])]  # <NA> rows drop out
        table = pd.concat([others, run.to_frame().T.assign(fn_star=math.nan)])
        out[run["run"]] = fit_thresholds(table, fit).get(run["run"], math.nan)
    return out


@pytest.mark.parametrize("fit", ["mean", "power"])
def test_leave_one_seed_out_fits_once_per_seed_with_the_per_run_values(fit, monkeypatch):
    """_loso_thresholds gives the per-run reference's values bit for bit (unknown seeds
    included) with one fit per distinct seed, not one per run."""
    from ncsim.validate import analysis

    real = analysis.fit_thresholds
    calls: list[int] = []

    def counted(table, f):
        calls.append(1)
        return real(table, f)

    rng = np.random.default_rng(5)
    for _ in range(8):
        n = 14
        runs = pd.DataFrame({
            "run": [f"r{i}" for i in range(n)], "model": "mlp", "dataset": "mnist",
            "condition": rng.choice(["width16", "width32", "width64"], size=n),
            "seed": pd.array(rng.choice([0, 1, 2, None], size=n).tolist(), dtype="Int64"),
            "fn_star": np.where(rng.random(n) < 0.2, np.nan, rng.random(n) * 10)})
        want = _loso_by_run(runs, fit)
        calls.clear()
        monkeypatch.setattr(analysis, "fit_thresholds", counted)
        got = analysis._loso_thresholds(runs, fit)
        monkeypatch.setattr(analysis, "fit_thresholds", real)
        assert len(calls) == runs["seed"].astype("string").nunique(dropna=False)
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert (math.isnan(value) and math.isnan(got[key])) or got[key] == value, key


def test_a_paper_log_with_a_wall_clock_time_column_says_why_it_is_refused(tmp_path):
    """epoch, nc1, feat_norm and a 'time' column: read as an ncsim log (it has time), and the
    refusal says that the time column made it one."""
    path = tmp_path / "clock_s0.csv"
    path.write_text("epoch,time,nc1,feat_norm\n1,12.5,0.5,3\n2,25.0,0.005,2\n")
    with pytest.raises(InputError, match=r"lacks column\(s\) fn, nc1_trace; .* it has an "
                                         r"'epoch' column too: .* drop or rename that column"):
        read_log(path)
