"""Values of the consolidated study tables: columns whose runs hold values of several kinds.

runs.parquet gathers one row per run; a parameter column can hold a number for one run and a
flag or a text for another, or be missing for some. Parquet needs one type per column, and the
table returned by ``Store.consolidate`` must be the one a later read of the file gives.
"""

from __future__ import annotations

import math

import pandas as pd

from ncsim.study.store import Store


def _row(value: float, **extra) -> dict:
    return {"status": "ok", "final_fn": value, "part": "p", **extra}


def _consolidate(tmp_path, values: list) -> tuple[list, list]:
    """Write one run per value of the column ``w`` (a missing key for ``...``) and return the
    column as consolidate returns it and as runs.parquet reads back."""
    store = Store(tmp_path)
    for k, value in enumerate(values):
        store.write_run(f"r{k}", _row(float(k)) if value is ... else _row(float(k), w=value),
                        None)
    runs, _ = store.consolidate()
    return list(runs["w"]), list(pd.read_parquet(store.runs_path)["w"])


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def test_a_flag_mixed_with_numbers_is_written_as_text_not_as_a_number(tmp_path):
    """A column holding True for one run and 2.5 for another is text ("True", "2.5"): a flag
    is not a number, and turning it into 1.0 would make it indistinguishable from the number
    1.0 of another run."""
    returned, disk = _consolidate(tmp_path, [True, 2.5])
    assert disk == ["True", "2.5"]
    assert returned == disk


def test_integers_and_floats_are_written_as_floats(tmp_path):
    """A column holding 3 for one run and 2.5 for another stays numeric: floats 3.0, 2.5
    (exact in binary), not texts."""
    returned, disk = _consolidate(tmp_path, [3, 2.5])
    assert disk == [3.0, 2.5] and returned == disk
    assert all(isinstance(v, float) for v in disk)


def test_a_missing_value_stays_missing_in_a_text_column(tmp_path):
    """A column of mixed numbers and texts becomes text, but a run without a value (None)
    stays missing instead of becoming the text "None"; a text column with a run whose value
    is NaN keeps it missing instead of the text "nan"."""
    returned, disk = _consolidate(tmp_path, [3, "x", None])
    assert disk[:2] == ["3", "x"] and _missing(disk[2])
    assert returned[:2] == ["3", "x"] and _missing(returned[2])
    returned, disk = _consolidate(tmp_path / "nan", ["x", float("nan")])
    assert disk[0] == "x" and _missing(disk[1])
    assert returned[0] == "x" and _missing(returned[1])


def test_consolidate_returns_the_dtypes_a_later_read_gives(tmp_path):
    """An integer for one run and None for another (a failed run without that value) is
    written as floats 3.0 and NaN; consolidate returns that table, not the object column
    [3, None] it built, so rebuilt and re-read tables are alike (text and None likewise)."""
    store = Store(tmp_path)
    store.write_run("r0", _row(0.0, w=3, t="a"), None)
    store.write_run("r1", _row(1.0, w=None, t=None), None)
    runs, _ = store.consolidate()
    read = pd.read_parquet(store.runs_path)
    pd.testing.assert_frame_equal(runs, read)
    assert runs["w"].dtype == float and runs["w"].iloc[0] == 3.0 and _missing(runs["w"].iloc[1])
    assert runs["t"].iloc[0] == "a" and _missing(runs["t"].iloc[1])
    again, _ = store.tables()
    pd.testing.assert_frame_equal(again, runs)


def test_a_column_absent_from_some_runs_is_missing_there(tmp_path):
    """A parameter that only some runs have (a part's own grid key) is missing, not empty
    text, for the others; the runs keep their order and their other values."""
    store = Store(tmp_path)
    store.write_run("a", _row(1.0, w="x"), None)
    store.write_run("b", _row(2.0), None)
    runs, _ = store.consolidate()
    back = pd.read_parquet(store.runs_path)
    assert list(back["run_id"]) == ["a", "b"] and list(back["final_fn"]) == [1.0, 2.0]
    assert back["w"].iloc[0] == "x" and _missing(back["w"].iloc[1])
    assert "trajectory_rows" not in back.columns


# ----------------------------------------------------------------------------- report
def _folder(tmp_path, statuses: list[str | None]):
    """A folder bound to the tiny study (2 seeds) whose runs have rows of the given statuses
    (None: no row yet), each with a 2-row trajectory; returns the folder and the run ids."""
    from tiny_study import write_tiny_study

    from ncsim.study.spec import load_study

    tmp_path.mkdir(parents=True, exist_ok=True)
    study = load_study(write_tiny_study(tmp_path, seeds=len(statuses), t_end=10.0, records=5))
    ids = [d.run_id for d in study.runs()]
    store = Store(tmp_path / "out")
    store.bind({**study.to_dict(), "run_ids": ids})
    traj = pd.DataFrame(dict(time=[0.0, 1.0], fn=[1.0, 0.5]))
    for rid, status in zip(ids, statuses):
        if status is not None:
            store.write_run(rid, {**_row(1.0), "part": "ufm", "status": status,
                                  "error": "boom" if status == "failed" else None}, traj)
    return store.root, ids


def test_the_analysis_sees_the_runs_that_did_not_fail_and_their_trajectories(tmp_path,
                                                                           monkeypatch):
    """The study's analysis receives the finished runs less the failed ones, and only the
    trajectory rows of those runs (a failed run's records would enter the figures)."""
    from ncsim.study import report
    from ncsim.study.analyses import Section

    folder, ids = _folder(tmp_path, ["ok", "failed"])
    seen = {}

    def analysis(study, runs, traj, figures):
        seen["runs"], seen["traj"] = list(runs["run_id"]), sorted(set(traj["run_id"]))
        return Section("supported", "fine")

    monkeypatch.setitem(report.ANALYSES, "invariance", analysis)
    _, section, runs, progress = report.analyze_dir(folder)
    assert seen == {"runs": [ids[0]], "traj": [ids[0]]}
    assert section.verdict == "supported" and progress.complete
    assert list(runs["run_id"]) == ids  # the report's own table keeps the failed run


def test_an_analysis_error_on_a_finished_study_is_raised_not_hidden(tmp_path):
    """With every run finished, an analysis that fails (here: rows without the onset
    columns the analysis reads) raises instead of being reported as an unfinished study;
    with a run missing, the same failure becomes the incomplete verdict with a note."""
    from ncsim.study.report import INCOMPLETE, analyze_dir

    folder, _ = _folder(tmp_path / "done", ["ok", "ok"])
    try:
        analyze_dir(folder)
    except KeyError as err:
        assert "fn_at_onset" in str(err)
    else:
        raise AssertionError("the analysis error was not raised")
    folder, _ = _folder(tmp_path / "half", ["ok", None])
    _, section, _, progress = analyze_dir(folder)
    assert section.verdict == INCOMPLETE and (progress.finished, progress.total) == (1, 2)
    assert any("The analysis needs more of the study's runs (KeyError" in n
               for n in section.notes)


def test_markdown_table_says_how_many_rows_it_leaves_out(tmp_path):
    """A table of exactly max_rows rows is shown whole with no note; one row more shows
    max_rows rows and says "(1 more rows ...)"."""
    from ncsim.study.report import markdown_table

    whole = markdown_table(pd.DataFrame({"a": range(5)}), max_rows=5)
    assert "more rows" not in whole and whole.count("\n| ") == 5
    cut = markdown_table(pd.DataFrame({"a": range(6)}), max_rows=5)
    assert cut.endswith("(1 more rows in the run table)") and cut.count("\n| ") == 5
    assert "| 4 |" in cut and "| 5 |" not in cut


def test_the_report_lists_the_three_commonest_errors_of_failed_runs():
    """Failed runs are summed up by error text, commonest first, at most three texts."""
    from ncsim.study.analyses import Section
    from ncsim.study.report import section_markdown
    from ncsim.study.spec import Study

    errors = ["e1", "e1", "e1", "e2", "e2", "e3", "e4"]
    runs = pd.DataFrame(dict(run_id=[f"r{k}" for k in range(7)], status="failed",
                             error=errors))
    study = Study.from_dict(dict(name="s", title="T", question="q", claim="c",
                                 analysis="invariance", metrics=[], parts=[],
                                 source="s.toml"))
    text = section_markdown(study, Section("inconclusive", "x"), runs)
    assert "Failed runs: 3 x e1; 2 x e2; 1 x e" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("Failed runs: "))
    assert line.count(" x ") == 3


def test_a_table_without_run_ids_is_consolidated_again(tmp_path):
    """runs.parquet or trajectories.parquet replaced by a table without a run_id column (a
    readable but foreign file) is damaged: tables() rebuilds both from the part files,
    whichever of the two it is."""
    store = Store(tmp_path)
    traj = pd.DataFrame(dict(time=[0.0, 1.0], fn=[1.0, 0.5]))
    store.write_run("a", _row(1.0), traj)
    runs, trajs = store.tables()
    for path in (store.runs_path, store.trajectories_path):
        pd.DataFrame(dict(x=[1, 2, 3])).to_parquet(path)
        again_runs, again_traj = store.tables()
        pd.testing.assert_frame_equal(again_runs, runs)
        pd.testing.assert_frame_equal(again_traj, trajs)
        assert list(pd.read_parquet(path)["run_id"]) == list((runs if path == store.runs_path
                                                             else trajs)["run_id"])


def test_unfinished_studies_lists_only_the_studies_with_missing_runs(tmp_path, monkeypatch):
    """Of two study folders under one root, the one with 1 of 2 runs is listed with
    (finished, total) = (1, 2) and its missing runs in verdict.json; the finished one is not
    listed and its verdict.json has no runs_missing."""
    import json

    from ncsim.study import report
    from ncsim.study.analyses import Section

    monkeypatch.setitem(report.ANALYSES, "invariance",
                        lambda study, runs, traj, figures: Section("supported", "fine"))
    root = tmp_path / "root"
    root.mkdir()
    _folder(tmp_path / "a", ["ok", None])[0].rename(root / "a")
    _folder(tmp_path / "b", ["ok", "ok"])[0].rename(root / "b")
    report.write_report(root)
    assert report.unfinished_studies(root) == [(root / "a", 1, 2)]
    missing = json.loads((root / "a" / "verdict.json").read_text())
    assert missing["verdict"] == "incomplete" and missing["runs_missing"] == {"ufm": 1}
    whole = json.loads((root / "b" / "verdict.json").read_text())
    assert whole["verdict"] == "supported" and "runs_missing" not in whole


def test_a_flag_mixed_with_integers_stays_a_flag(tmp_path):
    """A column holding True for one run and the integer 2 for another is text ("True",
    "2"), as with a float: joined as numbers the flag would read 1, the same as a run whose
    value is the integer 1. A column of flags alone stays boolean."""
    returned, disk = _consolidate(tmp_path, [True, 2])
    assert disk == ["True", "2"] and returned == disk
    returned, disk = _consolidate(tmp_path / "flags", [True, False, ...])
    assert disk[:2] == [True, False] and _missing(disk[2])
    assert returned[:2] == [True, False] and _missing(returned[2])
