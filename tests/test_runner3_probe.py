"""Mutation probes (third round) of the study runner (ncsim.study.runner): resume computing
exactly the unfinished runs in spec order, the run table's order, stale rows the docstring
keeps (failed, trained, non-gaussian starts) or leaves to another call (unselected parts),
the summary's fields, the progress bar, error propagation, and per-run results that do not
depend on the chunk a run is computed in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ncsim.errors import InputError
from ncsim.study.runner import chunk_runs, run_study, stale_runs
from ncsim.study.spec import RunDesc, parse_study
from ncsim.study.store import Store

TINY = {"classes": 3, "per_class": 2, "dim": 4, "t_end": 50.0, "records": 6,
        "lambda": 1e-2}


def _study(parts, quick=None):
    """A study of the given [[parts]] tables (tiny simulated defaults)."""
    raw = {"name": "s", "title": "S", "question": "q?", "claim": "c.",
           "analysis": "invariance", "simulated": dict(TINY), "parts": list(parts)}
    if quick is not None:
        raw["quick"] = quick
    return parse_study(raw, "s.toml", quick=quick is not None)


def _traj():
    """A two-record trajectory."""
    return pd.DataFrame({"time": [0.0, 1.0], "fn": [1.0, 0.5]})


@pytest.fixture
def fake(monkeypatch):
    """Replace the local executor's chunk computation by a recorder (no simulation): every
    run finishes "ok" with a two-record trajectory; returns the list of chunks computed."""
    import ncsim.study.executors as executors

    chunks = []

    def run_chunk(chunk):
        chunks.append([d.run_id for d in chunk])
        return [(d.run_id, {"part": d.part, "model": d.model, "status": "ok",
                            "onset_time": 1.0, "fn_at_onset": 0.5, "final_fn": 0.5}, _traj())
                for d in chunk]

    monkeypatch.setattr(executors, "run_chunk", run_chunk)
    return chunks


def _two_parts(seeds=(0, 1, 2), chunk=None):
    """Part "a" over ``seeds`` and part "b" (classes 2) over seed 0."""
    a = {"name": "a", "model": "simulated", "grid": {"seed": list(seeds)}}
    if chunk is not None:
        a["chunk"] = chunk
    return _study([a, {"name": "b", "model": "simulated", "classes": 2,
                       "grid": {"seed": [0]}}])


# ----------------------------------------------------------------------------- resume
def test_resume_computes_exactly_the_unfinished_runs_in_spec_order(tmp_path, fake):
    """With runs 1 and 3 of five stored, a call computes runs 0, 2, 4 (one chunk, in that
    order) and rewrites neither stored run's file; the summary counts 5, 3 computed, 2
    skipped."""
    study = _two_parts(seeds=range(5), chunk=8)
    ids = [d.run_id for d in study.runs() if d.part == "a"]
    out = tmp_path / "out"
    store = Store(out)
    store.parts.mkdir(parents=True)
    for i in (1, 3):
        store.write_run(ids[i], {"part": "a", "model": "simulated", "status": "ok"}, _traj())
    stamps = {i: store.run_file(ids[i]).stat().st_mtime_ns for i in (1, 3)}
    summary = run_study(study, out, progress=False, report=False, parts=["a"])
    assert fake == [[ids[0], ids[2], ids[4]]]
    assert (summary.total, summary.selected, summary.computed, summary.skipped,
            summary.failed) == (6, 5, 3, 2, 0)
    assert {i: store.run_file(ids[i]).stat().st_mtime_ns for i in (1, 3)} == stamps


def test_the_run_table_follows_the_spec_order_not_the_chunk_order(tmp_path, fake):
    """An intervention part first and a plain part second: the local executor computes the
    plain batch first, yet runs.parquet lists the runs in the spec's order."""
    study = _study([{"name": "kick", "model": "simulated", "intervene_time": 5.0,
                     "grid": {"seed": [0]}},
                    {"name": "a", "model": "simulated", "grid": {"seed": [1, 0]}}])
    out = tmp_path / "out"
    run_study(study, out, progress=False, report=False)
    spec_order = [d.run_id for d in study.runs()]
    assert [rid for c in fake for rid in c] == spec_order[1:] + spec_order[:1]
    assert list(pd.read_parquet(out / "runs.parquet")["run_id"]) == spec_order


def test_the_summary_names_the_folder_as_a_path_and_a_nonnegative_time(tmp_path, fake):
    """out given as a string comes back as a Path; seconds is the call's duration (>= 0)."""
    study = _two_parts(seeds=[0])
    summary = run_study(study, str(tmp_path / "out"), progress=False, report=False)
    assert isinstance(summary.out, Path) and summary.out == tmp_path / "out"
    assert summary.seconds >= 0.0


def test_report_false_writes_tables_but_no_report(tmp_path, fake):
    """report=False: the run table is written, report.md and verdict.json are not."""
    out = tmp_path / "out"
    run_study(_two_parts(seeds=[0]), out, progress=False, report=False)
    assert (out / "runs.parquet").exists()
    assert not (out / "report.md").exists() and not (out / "verdict.json").exists()


def test_force_rebinds_a_folder_of_the_other_variant(tmp_path, fake):
    """A folder of the full variant refuses the quick one, unless force (which then
    computes the quick variant's run and records it as the folder's study)."""
    parts = [{"name": "a", "model": "simulated", "grid": {"seed": [0, 1]}}]
    quick = {"parts": {"a": {"grid": {"seed": [5]}}}}
    full, fast = _study(parts), _study(parts, quick=quick)
    out = tmp_path / "out"
    run_study(full, out, progress=False, report=False)
    with pytest.raises(InputError, match="holds the full variant of study 's'"):
        run_study(fast, out, progress=False, report=False)
    summary = run_study(fast, out, progress=False, report=False, force=True)
    assert (summary.total, summary.computed) == (1, 1)
    assert Store(out).study()["quick"] is True


def test_retry_failed_alone_recomputes_the_failed_run_only(tmp_path, fake):
    """A stored failed run and a stored ok run: retry_failed computes the failed one (and
    the new one), not the ok one."""
    study = _two_parts(seeds=[0, 1, 2])
    ids = [d.run_id for d in study.runs() if d.part == "a"]
    out = tmp_path / "out"
    store = Store(out)
    store.parts.mkdir(parents=True)
    store.write_run(ids[0], {"status": "failed", "error": "boom"}, None)
    store.write_run(ids[1], {"status": "ok"}, _traj())
    summary = run_study(study, out, progress=False, report=False, parts=["a"],
                        retry_failed=True)
    assert [rid for c in fake for rid in c] == [ids[0], ids[2]]
    assert (summary.computed, summary.skipped, summary.failed) == (2, 1, 0)


# ----------------------------------------------------------------------------- stale rows
def test_a_stale_run_of_an_unselected_part_is_left_for_its_own_call(tmp_path, fake):
    """A finished run of part "b" with an outdated sim_run_id is not recomputed by a call
    for part "a" (only the selected parts' runs are computed); a call for "b" redoes it."""
    study = _two_parts(seeds=[0])
    a_id, b_id = (d.run_id for d in study.runs())
    out = tmp_path / "out"
    store = Store(out)
    store.parts.mkdir(parents=True)
    store.write_run(b_id, {"part": "b", "status": "ok", "sim_run_id": "0123456789ab"},
                    _traj())
    summary = run_study(study, out, progress=False, report=False, parts=["a"])
    assert fake == [[a_id]] and (summary.computed, summary.skipped) == (1, 0)
    assert store.stored("sim_run_id") == {b_id: "0123456789ab"}
    assert run_study(study, out, progress=False, report=False, parts=["b"]).computed == 1
    assert fake == [[a_id], [b_id]]


def _store_with(tmp_path, desc, row):
    """A store holding ``row`` (with a two-record trajectory unless failed) for ``desc``."""
    store = Store(tmp_path)
    store.parts.mkdir(parents=True)
    traj = None if row.get("status") == "failed" else _traj()
    store.write_run(desc.run_id, row, traj)
    return store


WIDE = {"classes": 3, "per_class": 2, "dim": 20, "t_end": 20.0, "records": 6}


def test_a_failed_intervention_row_of_a_wide_gaussian_start_is_not_stale(tmp_path):
    """A failed intervention row (no sim_run_id) whose start would be drawn through the Gram
    factor is kept: failed rows are retried only with retry_failed, not as stale."""
    kick = RunDesc("k", "simulated", {**WIDE, "intervene_time": 5.0})
    store = _store_with(tmp_path, kick, {"status": "failed", "error": "boom"})
    assert stale_runs(store, [kick]) == set()
    assert store.pending([kick.run_id]) == []


def test_a_trained_row_is_never_stale(tmp_path):
    """A finished trained row is kept whatever its sim_run_id column holds."""
    net = RunDesc("t", "trained", {"dataset": "gaussian", "epochs": [1, 1]})
    store = _store_with(tmp_path, net, {"status": "ok", "sim_run_id": "0123456789ab"})
    assert stale_runs(store, [net]) == set()


def test_an_old_intervention_row_of_a_spectral_start_is_not_stale(tmp_path):
    """An intervention row without sim_run_id is stale only for a gaussian start drawn
    through the Gram factor: the same wide model with a spectral start is kept."""
    spectral = RunDesc("k", "simulated", {**WIDE, "intervene_time": 5.0, "init": "spectral"})
    gaussian = RunDesc("g", "simulated", {**WIDE, "intervene_time": 5.0})
    store = _store_with(tmp_path, spectral, {"status": "ok"})
    store.write_run(gaussian.run_id, {"status": "ok"}, _traj())
    assert stale_runs(store, [spectral, gaussian]) == {gaussian.run_id}


# ----------------------------------------------------------------------------- progress
class _Bar:
    """A tqdm stand-in recording what the runner does with its bar."""

    made: list[_Bar] = []

    def __init__(self, total, initial, **kwargs):
        self.total, self.n, self.start = total, initial, initial
        self.steps, self.postfix, self.closed = [], [], False
        _Bar.made.append(self)

    def update(self, k):
        self.steps.append(k)
        self.n += k

    def set_postfix(self, **kwargs):
        self.postfix.append(kwargs)

    def close(self):
        self.closed = True


@pytest.fixture
def bars(monkeypatch):
    """Put _Bar in place of tqdm.tqdm; returns the bars made."""
    import tqdm as tqdm_module

    _Bar.made = []
    monkeypatch.setattr(tqdm_module, "tqdm", _Bar)
    return _Bar.made


def test_the_bar_counts_chunks_and_the_runs_left(tmp_path, fake, bars):
    """Five runs, one stored, chunk 2: the bar starts at 1 of 5, advances 2, 2 and shows
    left 2 then 0, and is closed."""
    study = _two_parts(seeds=range(5), chunk=2)
    first = [d for d in study.runs() if d.part == "a"][0]
    out = tmp_path / "out"
    _store_with(out, first, {"status": "ok"})
    run_study(study, out, progress=True, report=False, parts=["a"])
    (bar,) = bars
    assert (bar.total, bar.start, bar.steps, bar.n, bar.closed) == (5, 1, [2, 2], 5, True)
    assert bar.postfix == [{"left": 2}, {"left": 0}]


def test_an_interrupt_propagates_and_closes_the_bar_keeping_the_finished_chunk(
        tmp_path, monkeypatch, bars):
    """A KeyboardInterrupt in the second chunk reaches the caller, the bar is closed, and
    the first chunk's runs are stored (a later call computes the rest only)."""
    import ncsim.study.executors as executors

    calls = []

    def run_chunk(chunk):
        calls.append([d.run_id for d in chunk])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return [(d.run_id, {"status": "ok"}, _traj()) for d in chunk]

    monkeypatch.setattr(executors, "run_chunk", run_chunk)
    study = _two_parts(seeds=range(4), chunk=2)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_study(study, out, progress=True, report=False, parts=["a"])
    (bar,) = bars
    assert bar.closed and bar.steps == [2]
    assert sorted(Store(out).statuses()) == sorted(calls[0])
    again = run_study(study, out, progress=False, report=False, parts=["a"])
    assert (again.computed, again.skipped) == (2, 2)
    assert calls[2] == calls[1]


def test_an_error_in_writing_a_result_propagates_with_its_message(tmp_path, fake,
                                                                  monkeypatch):
    """An exception outside the chunk's work (here the store's write) is not recorded as a
    failed run: it reaches the caller unchanged."""
    def refuse(self, run_id, row, traj):
        raise OSError(f"disk full writing {run_id}")

    monkeypatch.setattr(Store, "write_run", refuse)
    study = _two_parts(seeds=[0])
    rid = study.runs()[0].run_id
    with pytest.raises(OSError, match=f"^disk full writing {rid}$"):
        run_study(study, tmp_path / "out", progress=False, report=False, parts=["a"])


# ----------------------------------------------------------------------------- chunks
def test_parts_with_different_chunk_sizes_are_chunked_apart():
    """Two parts of the same batch structure, chunk 2 and chunk 3: each part's runs are cut
    by its own size (never mixed into one batch)."""
    study = _study([{"name": "a", "model": "simulated", "chunk": 2,
                     "grid": {"seed": [0, 1, 2]}},
                    {"name": "b", "model": "simulated", "chunk": 3,
                     "grid": {"seed": [3, 4, 5, 6]}}])
    chunks = chunk_runs(study.runs())
    assert [[d.params["seed"] for d in c] for c in chunks] == [
        [0, 1], [2], [3, 4, 5], [6]]


def test_a_run_gives_the_same_result_in_any_chunk():
    """Seeds are per run: two seeds computed as one chunk or one by one give the same
    simulator ids, the same start, and trajectories equal to round-off."""
    from ncsim.study.compute import run_chunk

    descs = [RunDesc("a", "simulated", {**TINY, "t_end": 20.0, "seed": s}) for s in range(2)]
    together = run_chunk(descs)
    alone = [r for d in descs for r in run_chunk([d])]
    assert [r[0] for r in together] == [r[0] for r in alone] == [d.run_id for d in descs]
    assert len({r[1]["sim_run_id"] for r in together}) == 2
    for (_, row_a, traj_a), (_, row_b, traj_b) in zip(together, alone):
        assert row_a["sim_run_id"] == row_b["sim_run_id"]
        assert list(traj_a.columns) == list(traj_b.columns) and len(traj_a) == len(traj_b)
        numeric = traj_a.select_dtypes("number").columns
        assert len(numeric) > 2
        np.testing.assert_allclose(traj_a[numeric].to_numpy(float),
                                   traj_b[numeric].to_numpy(float), rtol=1e-10, atol=1e-12)
        other = traj_a.columns.difference(numeric)
        pd.testing.assert_frame_equal(traj_a[other], traj_b[other])


def test_the_report_of_a_run_covers_its_own_study_not_one_in_a_subfolder(tmp_path, fake,
                                                                          no_figures):
    """A study folder that holds another study's folder inside: the run's report is of its
    own study alone (no summary table, no section of the inner folder), and its verdict
    counts its own runs."""
    inner = _study([{"name": "a", "model": "simulated", "grid": {"seed": [7]}}])
    outer = _two_parts(seeds=[0])
    out = tmp_path / "out"
    run_study(inner, out / "inner", progress=False, report=False)
    run_study(outer, out, progress=False, report=True)
    report = (out / "report.md").read_text()
    assert "inner/" not in report and "| folder |" not in report
    assert not (out / "inner" / "verdict.json").exists()


def test_a_named_part_of_the_other_kind_lists_only_the_parts_of_that_kind():
    """select_parts(parts=["net"], model="simulated"): the error lists the simulated parts
    alone (not the trained one)."""
    from ncsim.study.runner import select_parts

    study = _study([{"name": "a", "model": "simulated", "grid": {"seed": [0]}},
                    {"name": "net", "model": "trained", "dataset": "gaussian",
                     "epochs": [1, 1]},
                    {"name": "b", "model": "simulated", "grid": {"seed": [1]}}])
    with pytest.raises(InputError, match=r"^part net of study 's' is not simulated; its "
                                         r"simulated parts: a, b$"):
        select_parts(study, ["net"], model="simulated")
    assert select_parts(study, None, model="trained") == ["net"]


def test_a_folder_with_no_finished_run_counts_no_failure(tmp_path, monkeypatch):
    """A chunk that hands back no result leaves the run table without rows: the summary
    counts 0 failed runs (not a negative or missing count) and the run still pending."""
    import ncsim.study.executors as executors

    monkeypatch.setattr(executors, "run_chunk", lambda chunk: [])
    study = _two_parts(seeds=[0])
    out = tmp_path / "out"
    summary = run_study(study, out, progress=False, report=False, parts=["a"])
    assert (summary.computed, summary.failed) == (1, 0)
    assert Store(out).pending([study.runs()[0].run_id]) == [study.runs()[0].run_id]
