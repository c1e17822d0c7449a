"""What a study report and a study's computed runs must get right where a wrong answer would
pass unnoticed: no verdict for a study with runs missing (runs of another version of the study
included), no quoted verdict of finished parts whose analysis failed, every figure, table and
note of the analysis in the report with links that resolve, and study fields (the bias of an
intervention run, the data, the decay, the threshold and the data folder of a trained run)
that reach the computed run."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from tiny_study import MORE_PART, write_tiny_study

from ncsim.study import report
from ncsim.study.analyses import Section
from ncsim.study.report import INCOMPLETE, section_markdown, write_report
from ncsim.study.spec import RunDesc, load_study, run_spec
from ncsim.study.store import Store


def _bound_folder(tmp_path: Path, extra: str = MORE_PART, foreign: list[str] | None = None):
    """A folder bound to the tiny study (part "ufm": seeds 0, 1; ``extra``: more parts) with
    no run computed; ``foreign``: run ids appended to study.json's list that no part gives
    (as left by another version of the study). Returns the folder, the store and the study's
    runs."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    study = load_study(write_tiny_study(tmp_path, seeds=2, t_end=10.0, records=5, extra=extra))
    descs = study.runs()
    store = Store(tmp_path / "out")
    store.bind({**study.to_dict(), "run_ids": [d.run_id for d in descs] + (foreign or [])})
    return store.root, store, descs


def _finish(store: Store, descs: list[RunDesc], status: str = "ok") -> None:
    """Rows of the given status (with a two-record trajectory) for ``descs``."""
    traj = pd.DataFrame({"time": [0.0, 1.0], "fn": [1.0, 0.5]})
    for d in descs:
        store.write_run(d.run_id, {"part": d.part, "status": status, "onset_time": 1.0,
                                   "fn_at_onset": 0.5, "final_fn": 0.5,
                                   "error": "boom" if status == "failed" else None}, traj)


def _verdict(folder: Path) -> dict:
    return json.loads((folder / "verdict.json").read_text())


# ----------------------------------------------------------------------------- verdict
def test_an_analysis_that_fails_on_whole_finished_parts_quotes_no_verdict_of_them(
        tmp_path, monkeypatch):
    """Part "ufm" finished whole, part "more" not started: the finished parts are whole, but
    the analysis raises on them (it needs the other part). The study is incomplete, and there
    is no verdict of the finished parts to quote: verdict.json has no ``finished_parts``, the
    reason quotes none, the summary cell is plain "incomplete", and the report carries the
    analysis's note saying that it needs more of the runs."""
    folder, store, descs = _bound_folder(tmp_path)
    _finish(store, [d for d in descs if d.part == "ufm"])

    def needs_more(study, runs, traj, figures):
        raise KeyError("more")

    monkeypatch.setitem(report.ANALYSES, "invariance", needs_more)
    write_report(folder, nested=False)
    verdict = _verdict(folder)
    assert verdict["verdict"] == INCOMPLETE
    assert (verdict["runs_finished"], verdict["runs_total"]) == (2, 4)
    assert verdict["runs_missing"] == {"more": 2}
    assert "finished_parts" not in verdict["numbers"]
    assert "finished parts alone" not in verdict["reason"]
    assert report._summary_verdict(verdict) == INCOMPLETE
    text = (folder / "report.md").read_text()
    assert "The analysis needs more of the study's runs (KeyError: 'more')." in text
    assert "finished parts alone" not in text


def test_missing_runs_are_named_by_part():
    """Runs of a part are counted against the part's size; runs that no part gives are
    counted alone, in the singular for one."""
    progress = report.Progress(finished=3, total=22, missing={"seeds": (2, 5), "?": (17, 17)})
    assert progress.missing_text() == "seeds 2 of 5, 17 runs of no part"
    assert report.Progress(4, 5, {"?": (1, 1)}).missing_text() == "1 run of no part"


def test_a_run_id_that_no_part_gives_keeps_the_study_unfinished(tmp_path, monkeypatch):
    """study.json lists the two runs of "ufm" and a third id that the study's parts do not
    give (a run of another version of the study). Both "ufm" runs finished, the third did not:
    2 of 3 runs finished, the missing run counted under "?" ("1 run of no part"), the verdict is
    "incomplete" (not the analysis's "supported"), and, since a run outside every part is
    missing, no verdict of finished parts is quoted."""
    folder, store, descs = _bound_folder(tmp_path, extra="", foreign=["0123456789ab"])
    _finish(store, descs)
    monkeypatch.setitem(report.ANALYSES, "invariance",
                        lambda study, runs, traj, figures: Section("supported", "fine"))
    write_report(folder, nested=False)
    verdict = _verdict(folder)
    assert verdict["verdict"] == INCOMPLETE
    assert (verdict["runs_finished"], verdict["runs_total"]) == (2, 3)
    assert verdict["runs_missing"] == {"?": 1}
    assert "finished_parts" not in verdict["numbers"]
    assert verdict["reason"].startswith("2 of 3 runs finished (missing: 1 run of no part)")
    assert report.unfinished_studies(folder) == [(folder, 2, 3)]


def test_failed_runs_finish_a_study_and_the_run_line_counts_them_as_failed(tmp_path,
                                                                          monkeypatch):
    """Both runs of "ufm" have rows, one of them failed: the study is finished (2 of 2; a
    failed run is reported, not missing), so its verdict is the analysis's, and the run line
    reads "Runs: 2 (ok: 1, failed: 1)" with the failed run's error below it. The analysis sees
    the one run that did not fail."""
    folder, store, descs = _bound_folder(tmp_path, extra="")
    _finish(store, descs[:1])
    _finish(store, descs[1:], status="failed")
    seen = []

    def analysis(study, runs, traj, figures):
        seen.append(sorted(runs["run_id"]))
        return Section("supported", "fine")

    monkeypatch.setitem(report.ANALYSES, "invariance", analysis)
    write_report(folder, nested=False)
    verdict = _verdict(folder)
    assert seen == [[descs[0].run_id]]
    assert verdict["verdict"] == "supported"
    assert (verdict["runs_finished"], verdict["runs_total"]) == (2, 2)
    assert "runs_missing" not in verdict
    text = (folder / "report.md").read_text()
    assert "Runs: 2 (ok: 1, failed: 1)." in text
    assert "Failed runs: 1 x boom" in text
    assert "already below the onset threshold" not in text  # a failed run is not inherited


def _quick_rows(descs: list[RunDesc]) -> list:
    """Rows of status ok (two-record trajectories) for a chunk, in place of computing it."""
    traj = pd.DataFrame({"time": [0.0, 1.0], "fn": [1.0, 0.5]})
    return [(d.run_id, {"part": d.part, "model": d.model, "status": "ok", "onset_time": 1.0,
                        "fn_at_onset": 0.5}, traj) for d in descs]


def test_parts_computed_by_separate_selections_make_a_finished_study(tmp_path, monkeypatch):
    """"ufm" computed by one call with a part selection, "more" by a second (the runs' rows
    made up, the analysis a stand-in that says "supported"): after the second call the
    folder holds every run, so the run table has all four runs and the report's verdict is
    the analysis's own (not "incomplete"), with 4 of 4 runs finished and no verdict of
    finished parts quoted."""
    import ncsim.study.executors as executors
    from ncsim.study.runner import run_study

    monkeypatch.setattr(executors, "run_chunk", _quick_rows)
    monkeypatch.setitem(report.ANALYSES, "invariance",
                        lambda study, runs, traj, figures: Section("supported", "fine"))
    study = load_study(write_tiny_study(tmp_path, seeds=2, chunk=1, t_end=10.0, records=5,
                                        extra=MORE_PART))
    out = tmp_path / "out"
    first = run_study(study, out, progress=False, parts={"ufm"})
    assert _verdict(out)["verdict"] == INCOMPLETE
    second = run_study(study, out, progress=False, parts={"more"})
    assert (first.computed, second.computed, second.skipped, second.failed) == (2, 2, 0, 0)
    verdict = _verdict(out)
    assert sorted(pd.read_parquet(out / "runs.parquet")["run_id"]) == sorted(
        d.run_id for d in study.runs())
    assert (verdict["runs_finished"], verdict["runs_total"]) == (4, 4)
    assert verdict["verdict"] == "supported"
    assert "finished_parts" not in verdict["numbers"] and "runs_missing" not in verdict


def test_a_finished_trained_run_is_kept_on_a_rerun(tmp_path, monkeypatch):
    """A study with a trained part of width 8 (no depth: the preset's) beside the simulated
    one, all runs finished (rows made up): a second call computes nothing and keeps every
    run. Its trained runs are not checked as simulated ones (width 8 at the simulated
    default depth 1 is no valid simulated model), so the rerun neither fails nor recomputes
    them."""
    import ncsim.study.executors as executors
    from ncsim.study.runner import run_study

    monkeypatch.setattr(executors, "run_chunk", _quick_rows)
    monkeypatch.setitem(report.ANALYSES, "invariance",
                        lambda study, runs, traj, figures: Section("supported", "fine"))
    net = '\n[[parts]]\nname = "net"\nmodel = "trained"\ndataset = "gaussian"\n' \
          'epochs = [1, 1]\nwidth = 8\n'
    study = load_study(write_tiny_study(tmp_path, seeds=2, t_end=10.0, records=5, extra=net))
    out = tmp_path / "out"
    first = run_study(study, out, progress=False)
    again = run_study(study, out, progress=False)
    assert (first.total, first.computed) == (3, 3)
    assert (again.computed, again.skipped, again.failed) == (0, 3, 0)
    assert _verdict(out)["verdict"] == "supported"


# ----------------------------------------------------------------------------- contents
def test_every_figure_table_and_note_of_the_analysis_is_in_the_report(tmp_path):
    """A section with two figures, two tables and two notes: each figure is linked (under
    the prefix) with its caption below, each table has its caption and all its rows, each
    note is a paragraph, in the analysis's order."""
    study = load_study(write_tiny_study(tmp_path, seeds=1))
    section = Section(
        "supported", "why",
        figures=[("first figure", "figures/a.png"), ("second figure", "figures/b.png")],
        tables=[("first table", pd.DataFrame({"x": [1.5, 2.5]})),
                ("second table", pd.DataFrame({"y": ["p", "q", "r"]}))],
        notes=["first note.", "second note."])
    runs = pd.DataFrame({"run_id": ["r"], "status": ["ok"]})
    text = section_markdown(study, section, runs, prefix="sub/")
    links = re.findall(r"!\[([^\]]*)\]\(([^)]*)\)", text)
    assert links == [("first figure", "sub/figures/a.png"),
                     ("second figure", "sub/figures/b.png")]
    order = ["*first figure*", "*second figure*", "**first table**", "| 1.5 |", "| 2.5 |",
             "**second table**", "| p |", "| q |", "| r |", "first note.", "second note."]
    places = [text.index(piece) for piece in order]
    assert places == sorted(places)


def test_figure_links_of_a_report_over_nested_studies_resolve(tmp_path, monkeypatch):
    """A report over a root holding a study and a study in a sub-folder: every image link of
    root/report.md names, relative to the root, a figure file that exists (the sub-folder's
    figures under "sub/figures/", the root's under "figures/"); each study's verdict.json is
    in its own folder."""
    def drawing(study, runs, traj, figures):
        path = Path(figures) / "onsets.png"
        path.write_bytes(b"png")
        return Section("supported", "fine", figures=[("onsets", "figures/onsets.png")])

    monkeypatch.setitem(report.ANALYSES, "invariance", drawing)
    root, store, descs = _bound_folder(tmp_path / "top", extra="")
    _finish(store, descs)
    inner, inner_store, inner_descs = _bound_folder(tmp_path / "inner", extra="")
    _finish(inner_store, inner_descs)
    inner.rename(root / "sub")
    write_report(root)
    links = re.findall(r"!\[[^\]]*\]\(([^)]*)\)", (root / "report.md").read_text())
    assert links == ["figures/onsets.png", "sub/figures/onsets.png"]
    assert all((root / link).is_file() for link in links)
    assert _verdict(root)["verdict"] == _verdict(root / "sub")["verdict"] == "supported"


def test_figures_of_an_earlier_report_are_removed(tmp_path, monkeypatch):
    """A figure left in figures/ by an earlier analysis of the folder (another spec) is
    removed when the report is written again: the folder's figures are those of its report."""
    folder, store, descs = _bound_folder(tmp_path, extra="")
    _finish(store, descs)
    (folder / "figures").mkdir(exist_ok=True)
    (folder / "figures" / "old.png").write_bytes(b"png")
    (folder / report.WRITTEN_FIGURES).write_text("old.png\n")  # the earlier report's list
    monkeypatch.setitem(report.ANALYSES, "invariance",
                        lambda study, runs, traj, figures: Section("supported", "fine"))
    write_report(folder, nested=False)
    assert list((folder / "figures").glob("*.png")) == []


# ----------------------------------------------------------------------------- computed runs
def test_an_intervention_with_a_free_bias_continues_from_the_bias_it_reached():
    """alpha = 1 continues the flow from its own state, bias included: with a free bias (MSE,
    K = 3, n = 2, d = 4, lambda 1e-2, H rescaled at t = 10) the run's fn at t_end = 30 is the
    plain run's. Both are integrated with rtol 1e-8 (they agree to ~1e-13 relative); starting
    the second segment from a zero bias instead changes fn at t_end by ~2e-3 relative, so
    1e-8 separates the two."""
    from ncsim.flow.simulate import simulate
    from ncsim.study.compute import _intervention

    p = {"loss": "mse", "bias": "free", "classes": 3, "per_class": 2, "dim": 4,
         "lambda": 1e-2, "init_scale": 1.0, "t_end": 30.0, "records": 6, "rtol": 1e-8,
         "atol": 1e-12, "intervene_time": 10.0, "intervene_alpha": 1.0}
    plain = simulate(run_spec({k: v for k, v in p.items() if not k.startswith("intervene")}),
                     theory=False).runs.iloc[0]
    _, row, traj = _intervention(RunDesc("p", "simulated", p))
    assert row["t_final"] == plain["t_final"] == 30.0
    assert row["final_fn"] == pytest.approx(plain["final_fn"], rel=1e-8)
    assert set(traj["phase"]) == {1, 2}


def test_an_onset_before_the_rescaling_is_marked_as_such():
    """MSE, K = 3, n = 2, d = 4, lambda 1e-2 collapses (nc1_trace below 0.01) near t ~ 200;
    H rescaled (alpha = 1) at t1 = 400, after that: the run is "ok" with its onset before
    t1, and the row says the onset came before the intervention."""
    from ncsim.study.compute import _intervention

    p = {"loss": "mse", "classes": 3, "per_class": 2, "dim": 4, "lambda": 1e-2,
         "init_scale": 1.0, "t_end": 600.0, "records": 16, "intervene_time": 400.0,
         "intervene_alpha": 1.0}
    _, row, _ = _intervention(RunDesc("p", "simulated", p))
    assert row["status"] == "ok" and row["onset_time"] < 400.0
    assert row["onset_before_intervention"] is True


def test_an_onset_counts_when_the_second_segment_runs_out_of_steps():
    """MSE, K = 3, n = 2, d = 4, lambda 1e-2 collapses near t ~ 224; H rescaled (alpha = 1)
    at t1 = 300 (segment 1 takes ~137 steps, its last record is the first below 0.01),
    t_end = 1e5 with max_steps 140: segment 2 runs out of steps near t ~ 1200 after 6
    records. The onset rule asks for 7 records in a row below the threshold: the joined
    series has them (1 + 6), segment 2 alone does not. As in simulate, a run that collapsed
    is "ok" even when its steps ran out, so the run is "ok" with its onset just before
    segment 1's last record; read with a threshold it never reaches (1e-30) it has no onset
    and keeps the status "max_steps"."""
    from ncsim.study.compute import _intervention

    p = {"loss": "mse", "classes": 3, "per_class": 2, "dim": 4, "lambda": 1e-2,
         "init_scale": 1.0, "t_end": 1e5, "records": 16, "intervene_time": 300.0,
         "intervene_alpha": 1.0, "max_steps": 140, "onset_stay": 7}
    _, row, traj = _intervention(RunDesc("p", "simulated", p))
    below = (traj["nc1_trace"] < 0.01).tolist()
    assert traj["phase"].tolist() == [1] * 8 + [2] * 6
    assert below == [False] * 7 + [True] * 7
    assert 300.0 < row["t_final"] < 1e5
    assert row["status"] == "ok"
    # interpolated between the last record above the threshold and the first below (t1)
    assert traj["time"].iloc[6] < row["onset_time"] < traj["time"].iloc[7] == 300.0
    _, row, _ = _intervention(RunDesc("p", "simulated", {**p, "onset_threshold": 1e-30}))
    assert row["status"] == "max_steps" and math.isnan(row["onset_time"])
    assert 300.0 < row["t_final"] < 1e5


def test_an_intervention_run_vanishes_against_the_largest_fn_of_both_segments():
    """MSE, K = 3, n = 2, d = 4, lambda = 3 (above the critical decay: every norm decays), H
    scaled by 0.01 at t1 = 1, t_end = 2: the final fn is 2.6e-4 of the largest fn of the
    whole run (its start, ~2.0), below the vanishing tolerance 1e-3, though it is 0.39 of the
    largest fn of the second segment alone. The run is "vanishing", with no onset and no fn*
    (simulate's rule, over the whole run)."""
    from ncsim.study.compute import _intervention

    p = {"loss": "mse", "classes": 3, "per_class": 2, "dim": 4, "lambda": 3.0,
         "init_scale": 1.0, "t_end": 2.0, "records": 8, "intervene_time": 1.0,
         "intervene_alpha": 1e-2}
    _, row, traj = _intervention(RunDesc("p", "simulated", p))
    second = traj[traj["phase"] == 2]["fn"]
    assert row["final_fn"] / second.max() > 0.1  # not vanishing within segment 2 alone
    assert row["final_fn"] / traj["fn"].max() < 1e-3 / 2
    assert row["status"] == "vanishing"
    assert math.isnan(row["onset_time"]) and math.isnan(row["fn_at_onset"])


TRAINED = {"dataset": "gaussian", "per_class": 6, "test_per_class": 2, "data_classes": 3,
           "data_dim": 5, "separation": 2.0, "depth": 2, "width": 8, "epochs": [1, 1],
           "weight_decay": 0.05, "lr": 0.01, "batch_size": 6, "nc_every": 1, "seed": 3,
           "onset_threshold": 5.0, "intervention_epoch": 1, "intervention_alpha": 0.5}


def test_a_trained_run_gets_the_data_decay_and_threshold_of_its_study():
    """A trained study run (Gaussian mixture of 3 classes in dimension 5, separation 2, 6
    samples per class; MLP depth 2, width 8; weight decay 0.05, lr 0.01, batch 6; 1 + 1
    epochs; features scaled by 0.5 at epoch 1; onset threshold 5) against the same training
    set up directly through the training API (preset "mlp" with those settings, load_dataset
    with that mixture): the records' fn and nc1_trace are equal (the same seeds on the CPU
    give the same numbers). The onset is the first phase-2 record whose nc1_trace is below 5
    (every record here: the threshold is far above the metric, so the onset is epoch 2 with
    that record's fn, not "not collapsed" as the default threshold 0.01 gives), and since
    phase 1 already ended below 5 it is marked as reached before phase 2. The row's final
    and smallest nc1_trace are those of the last record and of all records (both phases);
    fn before and after the rescaling are the training's and the epoch-1 record's, the
    latter half the former (fn is linear in the features)."""
    import dataclasses

    from ncsim.study.compute import _train
    from ncsim.validate.data import load_dataset
    from ncsim.validate.train import preset, train

    _, row, log = _train(RunDesc("net", "trained", TRAINED))
    config = preset("mlp", epochs=(1, 1), depth=2, width=8, nc_every=1, seed=3,
                    intervention_epoch=1, intervention_alpha=0.5)
    config = dataclasses.replace(config, phases=tuple(
        dataclasses.replace(ph, weight_decay=0.05, lr=0.01, batch_size=6)
        for ph in config.phases))
    data = load_dataset("gaussian", per_class=6, test_per_class=2, seed=3, classes=3, dim=5,
                        separation=2.0)
    result = train(config, data)
    direct = result.log.sort_values("time").reset_index(drop=True)
    assert list(log["time"]) == list(direct["time"]) == [0.0, 1.0, 2.0]
    for column in ("fn", "nc1_trace"):
        assert log[column].tolist() == pytest.approx(direct[column].tolist(), rel=1e-12)
    phase2 = direct[direct["phase"] == 2]
    assert float(phase2["nc1_trace"].max()) < 5.0
    assert row["status"] == "ok"
    assert row["onset_time"] == 2.0
    assert row["fn_at_onset"] == pytest.approx(float(phase2["fn"].iloc[0]), rel=1e-12)
    assert row["onset_at_phase_start"] is True
    assert row["final_nc1_trace"] == pytest.approx(float(direct["nc1_trace"].iloc[-1]),
                                                   rel=1e-12)
    assert row["min_nc1_trace"] == pytest.approx(float(direct["nc1_trace"].min()), rel=1e-12)
    # 18 samples at batch 6: 3 steps per epoch, 2 epochs
    assert row["optimizer_steps"] == int(direct["steps"].iloc[-1]) == 6
    assert row["fn_before_intervention"] == pytest.approx(result.fn_before_intervention,
                                                          rel=1e-12)
    at_one = float(direct.loc[direct["time"] == 1.0, "fn"].iloc[-1])
    assert row["fn_after_intervention"] == pytest.approx(at_one, rel=1e-12)
    assert row["fn_after_intervention"] == pytest.approx(0.5 * row["fn_before_intervention"],
                                                         rel=1e-9)


def test_a_trained_run_reads_its_data_from_the_study_data_root(tmp_path):
    """A trained MNIST run with data_root pointing at an empty place: its row is failed with
    the loader's message naming that folder (the data root reaches the loader; without it the
    message would name the default location)."""
    from ncsim.study.compute import run_chunk

    root = tmp_path / "no-mnist-here"
    desc = RunDesc("net", "trained", {"dataset": "mnist", "epochs": [1, 1],
                                      "data_root": str(root)})
    ((rid, row, traj),) = run_chunk([desc])
    assert rid == desc.run_id and row["status"] == "failed" and traj is None
    assert str(root) in row["error"]


# ----------------------------------------------------------------------------- executors
def _two_chunks(tmp_path: Path) -> list[list[RunDesc]]:
    """The tiny study's three runs (seeds 0, 1, 2) as a chunk of two and a chunk of one."""
    descs = load_study(write_tiny_study(tmp_path, seeds=3, t_end=10.0, records=5)).runs()
    return [descs[:2], descs[2:]]


def test_a_local_chunk_that_raises_fails_each_of_its_runs_and_no_other(tmp_path, monkeypatch):
    """With the local executor, a chunk of two runs whose work raises RuntimeError("boom")
    gives both of its runs as failed with "local executor: RuntimeError: boom"; the run of
    the other chunk is the work's own row."""
    import ncsim.study.executors as executors

    chunks = _two_chunks(tmp_path)

    def work(chunk):
        if chunk == chunks[0]:
            raise RuntimeError("boom")
        return _quick_rows(chunk)

    monkeypatch.setattr(executors, "run_chunk", work)
    got: list = []
    executors.execute(chunks, "local", got.extend)
    status = {rid: (row["status"], row.get("error")) for rid, row, _ in got}
    assert status == {chunks[0][0].run_id: ("failed", "local executor: RuntimeError: boom"),
                      chunks[0][1].run_id: ("failed", "local executor: RuntimeError: boom"),
                      chunks[1][0].run_id: ("ok", None)}


def test_a_pool_chunk_that_fails_records_each_of_its_runs(tmp_path):
    """A pool's future that ends with an error (here MemoryError("no room")) for a chunk of
    two runs gives both runs as failed with "process executor: MemoryError: no room", with
    their labels (part and seed), and no trajectory."""
    from concurrent.futures import Future

    from ncsim.study.executors import _finish

    chunk = _two_chunks(tmp_path)[0]
    future: Future = Future()
    future.set_exception(MemoryError("no room"))
    got: list = []
    _finish(future, chunk, got.extend, "process")
    assert [(rid, row["status"], row["error"], row["part"], row["seed"], traj)
            for rid, row, traj in got] == [
        (d.run_id, "failed", "process executor: MemoryError: no room", "ufm",
         d.params["seed"], None) for d in chunk]
