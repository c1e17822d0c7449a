"""Third mutation probe of the study report: the exact text of a section, the HTML page,
escaping of ``<`` and missing values in cells, the summary table, which runs and
trajectories reach the analysis, the progress of a study without listed run ids,
unfinished studies in sub-folders, and the exact refusals of a damaged study.json."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from test_study_report_strict import _bound_folder, _finish

from ncsim.errors import InputError
from ncsim.study import report
from ncsim.study.analyses import Section
from ncsim.study.report import INCOMPLETE, write_report
from ncsim.study.spec import Study
from ncsim.study.store import Store


@pytest.fixture
def supported(monkeypatch):
    """The tiny study's analysis replaced by one that supports without looking at the runs."""
    monkeypatch.setitem(report.ANALYSES, "invariance",
                        lambda study, runs, traj, figures: Section("supported", "fine"))


def _study(**kw) -> Study:
    fields = dict(name="tiny", title="A\ntitle", question="q\n?", claim="c.",
                  analysis="invariance", metrics=[], parts=[], source="specs/tiny.toml",
                  notes="n1\n n2")
    fields.update(kw)
    return Study(**fields)


def _verdict(folder):
    return json.loads((folder / "verdict.json").read_text())


# ----------------------------------------------------------------------------- section text
def test_section_markdown_exact_text():
    """A section's whole Markdown: one-line fields, default metrics, spec file name, failed
    runs' errors escaped, notes, figure, table and analysis note (stars and < escaped)."""
    section = Section("supported", "r <b>\nmore", figures=[("fig <x>*", "figures/f.png")],
                      tables=[("tab <t>", pd.DataFrame({"x": [1.23456, math.nan]}))],
                      notes=["note *x* <y>\nz"])
    runs = pd.DataFrame({"run_id": ["a", "b", "c"], "status": ["ok", "failed", "failed"],
                         "error": [None, "bad <thing>\nline", "bad <thing>\nline"]})
    assert report.section_markdown(_study(), section, runs) == (
        "## A title (`tiny`, full variant)\n\n**Question.** q ?\n\n**Claim tested.** c.\n\n"
        "**Verdict: supported.** r <b> more\n\nRuns: 3 (failed: 2, ok: 1). Metrics: "
        "onset_time, fn_at_onset. Spec: `tiny.toml`.\n\nFailed runs: 2 x bad \\<thing> line"
        "\n\n*Notes.* n1 n2\n\n![fig <x>*](figures/f.png)\n\n*fig \\<x>\\**\n\n"
        "**tab \\<t>**\n\n| x |\n|---|\n| 1.235 |\n| nan |\n\n\nnote \\*x\\* \\<y> z\n\n")


def test_section_of_no_runs_and_named_metrics():
    """No run table: "Runs: 0 (no runs)."; given metrics are listed instead of the default."""
    text = report.section_markdown(_study(metrics=["m1", "m2"], notes=""),
                                   Section("x", "y"), pd.DataFrame())
    assert text == ("## A title (`tiny`, full variant)\n\n**Question.** q ?\n\n"
                    "**Claim tested.** c.\n\n**Verdict: x.** y\n\nRuns: 0 (no runs). "
                    "Metrics: m1, m2. Spec: `tiny.toml`.\n\n")


def test_unfinished_section_heads_with_progress_and_counts_finished_runs():
    """An unfinished study: the bold progress line first, and "Runs: F of T finished"."""
    progress = report.Progress(1, 4, {"ufm": (1, 2), "more": (2, 2)})
    runs = pd.DataFrame({"run_id": ["a"], "status": ["ok"]})
    text = report.section_markdown(_study(notes=""), Section("incomplete", "why"), runs,
                                   progress=progress)
    assert ("**Unfinished study: 1 of 4 runs finished** (missing: ufm 1 of 2, more 2 of 2). "
            "The tables and figures below cover the finished runs only.\n\n**Question.**"
            ) in text
    assert "Runs: 1 of 4 finished (ok: 1). Metrics" in text
    done = report.section_markdown(_study(notes=""), Section("s", "why"), runs,
                                   progress=report.Progress(1, 1))
    assert "Unfinished" not in done and "Runs: 1 (ok: 1). Metrics" in done


def test_quick_section_shows_the_quick_note():
    """A quick study's note is its own paragraph after the run line."""
    text = report.section_markdown(_study(quick=True, quick_note="one\nseed", notes=""),
                                   Section("s", "r"), pd.DataFrame({"status": ["ok"]}))
    assert "(`tiny`, quick variant)" in text
    assert "\n\n*Quick variant.* one seed\n\n" in text


def test_report_of_a_folder_with_no_finished_run(tmp_path, supported):
    """No run computed: incomplete, 0 of 2, the run line reads "0 of 2 finished (no runs)"."""
    folder, store, descs = _bound_folder(tmp_path, extra="")
    write_report(folder, nested=False)
    text = (folder / "report.md").read_text()
    assert "**Unfinished study: 0 of 2 runs finished** (missing: ufm 2 of 2)." in text
    assert "Runs: 0 of 2 finished (no runs)." in text
    verdict = _verdict(folder)
    assert (verdict["verdict"], verdict["runs_finished"], verdict["runs_total"]) == (
        INCOMPLETE, 0, 2)
    assert verdict["reason"].startswith("0 of 2 runs finished (missing: ufm 2 of 2): no ")


# ----------------------------------------------------------------------------- cells
def test_cells_escape_angle_brackets_but_not_code_spans():
    """A cell's "<" is escaped (no HTML tag), a code span is kept; NaT reads "nan"."""
    frame = pd.DataFrame({"a": ["<b>x", "`<b>*`"], "t": [pd.Timestamp(0), pd.NaT]})
    lines = report.markdown_table(frame).splitlines()
    assert lines[2] == "| \\<b>x | 1970-01-01 00:00:00 |"
    assert lines[3] == "| `<b>*` | nan |"
    assert report._cell(pd.NaT) == "nan"


def test_table_of_exactly_max_rows_is_not_cut():
    """A table of max_rows rows is shown whole, with no "more rows" line."""
    assert report.markdown_table(pd.DataFrame({"i": [1, 2]}), max_rows=2) == \
        "| i |\n|---|\n| 1 |\n| 2 |\n"


# ----------------------------------------------------------------------------- html
def test_html_page_exact():
    """The HTML page: title escaped, style, headings, figure, tables (th head, td body, each
    closed, the last one at the end of the page), paragraphs, escaped pipe kept."""
    md = ("# T\n## H *i*\n![cap](sub/f.png)\n\n| a | b\\|c |\n|---|---|\n| 1 | 2 |\n"
          "text **b**\n| z |")
    assert report._html(md, "t<") == (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>t&lt;</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:"
        "collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}</style></head>"
        "<body>\n<h1>T</h1>\n<h2>H <i>i</i></h2>\n<figure><img src=\"sub/f.png\" alt=\"cap\" "
        "style=\"max-width:100%\"></figure>\n<table>\n<tr><th>a</th><th>b|c</th></tr>\n"
        "<tr><td>1</td><td>2</td></tr>\n</table>\n<p>text <b>b</b></p>\n<table>\n"
        "<tr><th>z</th></tr>\n</table>\n</body></html>\n")


def test_inline_italics_only_around_words():
    """Stars inside words (fn*, a*b) make no italics; a starred phrase does; bold and code."""
    assert report._inline("a*b and c*d") == "a*b and c*d"
    assert report._inline("fn* and fn*") == "fn* and fn*"
    assert report._inline("see *this* now") == "see <i>this</i> now"
    assert report._inline("**b** `c<`") == "<b>b</b> <code>c&lt;</code>"
    assert report._inline("\\*x\\* \\<y>") == "*x* &lt;y&gt;"


# ----------------------------------------------------------------------------- write_report
def test_single_study_report_has_no_summary_table(tmp_path, supported):
    """One study: the page title then its section, no summary table; html beside it."""
    folder, store, descs = _bound_folder(tmp_path, extra="")
    _finish(store, descs)
    write_report(folder, nested=False)
    text = (folder / "report.md").read_text()
    assert text == ("# ncsim study report\n\n## Tiny (`tiny`, full variant)\n\n"
                    "**Question.** q?\n\n**Claim tested.** c.\n\n**Verdict: supported.** fine"
                    "\n\nRuns: 2 (ok: 2). Metrics: onset_time, fn_at_onset. Spec: `tiny.toml`."
                    "\n\n")
    page = (folder / "report.html").read_text()
    assert "<title>ncsim study report</title>" in page and "<table>" not in page


def test_summary_table_of_two_studies(tmp_path, monkeypatch):
    """Two studies: the summary table names each folder, study, variant and verdict cell."""
    monkeypatch.setitem(report.ANALYSES, "invariance",
                        lambda study, runs, traj, figures: Section("supported", "fine"))
    root, store, descs = _bound_folder(tmp_path / "top")
    _finish(store, [d for d in descs if d.part == "ufm"])
    inner, inner_store, inner_descs = _bound_folder(tmp_path / "inner", extra="")
    _finish(inner_store, inner_descs)
    inner.rename(root / "sub")
    write_report(root)
    lines = (root / "report.md").read_text().splitlines()
    assert lines[:6] == ["# ncsim study report", "", "| folder | study | variant | verdict |",
                         "|---|---|---|---|",
                         "| `./` | tiny | full | incomplete (finished parts: supported) |",
                         "| `sub/` | tiny | full | supported |"]
    assert report.unfinished_studies(root) == [(root, 2, 4)]


def test_unfinished_studies_looks_into_sub_folders(tmp_path, supported):
    """unfinished_studies lists an unfinished study in a sub-folder, not a finished one."""
    top, store, descs = _bound_folder(tmp_path / "top", extra="")
    _finish(store, descs)
    inner, inner_store, inner_descs = _bound_folder(tmp_path / "inner", extra="")
    _finish(inner_store, inner_descs[:1])
    inner.rename(top / "sub")
    write_report(top)
    assert report.unfinished_studies(top) == [(top / "sub", 1, 2)]


def test_verdict_json_keeps_the_quick_note(tmp_path, supported):
    """A quick study's note is in its verdict.json; a study without one has no such key."""
    folder, store, descs = _bound_folder(tmp_path, extra="")
    _finish(store, descs)
    write_report(folder, nested=False)
    assert "quick_note" not in _verdict(folder)
    record = {**store.study(), "quick": True, "quick_note": "decides nothing"}
    (folder / "study.json").write_text(json.dumps(record))
    write_report(folder, nested=False)
    verdict = _verdict(folder)
    assert (verdict["quick"], verdict["quick_note"]) == (True, "decides nothing")


def test_analysis_sees_neither_failed_runs_nor_their_trajectories(tmp_path, monkeypatch):
    """The analysis gets the runs that did not fail and only their trajectories."""
    folder, store, descs = _bound_folder(tmp_path, extra="")
    _finish(store, descs[:1])
    _finish(store, descs[1:], status="failed")
    seen = []

    def analysis(study, runs, traj, figures):
        seen.append((sorted(runs["run_id"]), sorted(set(traj["run_id"]))))
        return Section("supported", "fine")

    monkeypatch.setitem(report.ANALYSES, "invariance", analysis)
    write_report(folder, nested=False)
    assert seen == [([descs[0].run_id], [descs[0].run_id])]


def test_study_without_listed_run_ids_counts_its_rows(tmp_path, supported):
    """study.json listing no run ids: the runs with a row are the study's finished runs."""
    folder, store, descs = _bound_folder(tmp_path, extra="")
    (folder / "study.json").write_text(json.dumps({**store.study(), "run_ids": []}))
    _finish(store, descs)
    write_report(folder, nested=False)
    verdict = _verdict(folder)
    assert (verdict["verdict"], verdict["runs_finished"], verdict["runs_total"]) == (
        "supported", 2, 2)


def test_empty_run_table_with_a_status_column_is_no_finished_run(tmp_path, supported):
    """A run table with columns but no row: "inconclusive", "no finished run", no analysis."""
    folder, store, descs = _bound_folder(tmp_path, extra="")
    (folder / "study.json").write_text(json.dumps({**store.study(), "run_ids": []}))
    pd.DataFrame({"run_id": pd.Series([], dtype=object),
                  "status": pd.Series([], dtype=object)}).to_parquet(store.runs_path)
    pd.DataFrame({"run_id": pd.Series([], dtype=object), "time": pd.Series([], dtype=float),
                  "fn": pd.Series([], dtype=float)}).to_parquet(store.trajectories_path)
    write_report(folder, nested=False)
    verdict = _verdict(folder)
    assert (verdict["verdict"], verdict["reason"]) == ("inconclusive", "no finished run")
    assert (verdict["runs_finished"], verdict["runs_total"]) == (0, 0)


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("damage, problem", [
    (lambda d: d.update(run_ids=["a", 1]), "'run_ids' is not a list of run ids"),
    (lambda d: d.update(quick_note=3), "'quick_note' is not text"),
    (lambda d: d.update(quick="yes"), "'quick' is not true or false"),
    (lambda d: d.update(metrics=["a", 1]), "'metrics' is not a list of names"),
    (lambda d: d.update(parts=[3]), "parts[0] is not a table"),
    (lambda d: d["parts"][0].pop("model"), "parts[0] has no 'name' or 'model' text"),
    (lambda d: d["parts"][0].update(grid={"seed": 3}),
     "parts[0] has no 'grid' table of value lists"),
    (lambda d: d["parts"][0].update(fixed=[1]), "parts[0]: 'fixed' is not a table"),
    (lambda d: d.update(analysis="nope"),
     "unknown analysis 'nope'; known: " + ", ".join(report.ANALYSES)),
])
def test_damaged_study_json_is_refused_with_the_exact_message(tmp_path, damage, problem):
    """A study.json field of the wrong kind: InputError with the store's damaged message."""
    folder, store, descs = _bound_folder(tmp_path, extra="")
    record = store.study()
    damage(record)
    (folder / "study.json").write_text(json.dumps(record))
    with pytest.raises(InputError) as err:
        write_report(folder, nested=False)
    assert str(err.value) == Store(folder).damaged_study(problem)
    assert not (folder / "verdict.json").exists()
