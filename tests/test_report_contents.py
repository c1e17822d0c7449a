"""What the study report writes: Markdown that keeps its text (stars, pipes, line breaks),
HTML that shows the same cells, strict JSON in verdict.json, and one-line errors for a
study.json whose fields are damaged."""

from __future__ import annotations

import json
import math
import re

import pandas as pd
import pytest
from cli_helpers import error_line, invoke
from tiny_study import write_tiny_study

import ncsim.study.report as report
from ncsim.study.analyses import Section
from ncsim.study.runner import run_study
from ncsim.study.spec import load_study


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A finished tiny study folder (one run of a small UFM, a few records)."""
    root = tmp_path_factory.mktemp("report")
    study = load_study(write_tiny_study(root, seeds=1, t_end=10.0, records=5))
    out = root / "out"
    run_study(study, out, progress=False, report=False)
    return study, out


def _strict(text: str) -> object:
    """JSON parsed strictly: NaN and Infinity are not JSON."""
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not valid JSON")
    return json.loads(text, parse_constant=refuse)


def _html_rows(html_text: str) -> list[list[str]]:
    rows = re.findall(r"<tr>(.*?)</tr>", html_text)
    return [[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", r)]
            for r in rows]


def test_markdown_table_keeps_pipes_line_breaks_and_missing_values():
    """A cell with a pipe keeps it (escaped, not turned into '/'), a line break becomes a
    space (a row stays one line), pd.NA and None are 'nan' (not '<NA>', an HTML tag to
    Markdown, nor 'None'); the HTML table has the same cells as the Markdown one."""
    frame = pd.DataFrame({"a|b": ["x|y", "one\ntwo"], "n": [1.5, math.nan],
                          "s": pd.array(["fn*", pd.NA], dtype="string"),
                          "o": pd.Series([True, None], dtype=object)})
    text = report.markdown_table(frame)
    lines = text.strip().splitlines()
    assert lines[0] == "| a\\|b | n | s | o |"
    assert lines[2] == "| x\\|y | 1.5 | fn\\* | True |"
    assert lines[3] == "| one two | nan | nan | nan |"
    rows = _html_rows(report._html(text, "t"))
    assert rows == [["a|b", "n", "s", "o"], ["x|y", "1.5", "fn*", "True"],
                    ["one two", "nan", "nan", "nan"]]


def test_caption_with_a_star_stays_bold_text(tmp_path):
    """'**fn* per part**' ends its bold at the star in Markdown (CommonMark renders
    '<em><em>fn</em> per part</em>*'): the caption's star is escaped; the HTML shows it."""
    study = load_study(write_tiny_study(tmp_path))
    section = Section("supports", "fn* CV < 8% in every part", tables=[
        ("fn* per part", pd.DataFrame({"x": [1.0]}))],
        figures=[("fn* of every run", "figures/f.png")])
    md = report.section_markdown(study, section, pd.DataFrame({"status": ["ok"]}))
    assert "**fn\\* per part**" in md
    assert "*fn\\* of every run*" in md
    page = report._html(md, "t")
    assert "<b>fn* per part</b>" in page and "<i>fn* of every run</i>" in page
    assert "fn* CV &lt; 8% in every part" in page  # running text as written


def test_verdict_json_is_strict_and_keeps_infinity_apart_from_nan(tiny, monkeypatch, tmp_path):
    """verdict.json: an infinite number is "inf" (as everywhere in ncsim's JSON), an
    undefined one null; the file parses as strict JSON. The report's tables keep a pipe
    and a multi-line error text on one row."""
    _, out = tiny

    def analysis(study, runs, traj, figdir):
        table = pd.DataFrame({"part": ["a|b"], "note": ["first\nsecond"],
                              "value": [math.inf]})
        return Section("supports", "because", {"never": math.inf, "undefined": math.nan,
                                               "below": -math.inf, "n": 3},
                       tables=[("fn* per part", table)])

    monkeypatch.setitem(report.ANALYSES, "invariance", analysis)
    report.write_report(out)
    verdict = _strict((out / "verdict.json").read_text())
    assert verdict["numbers"] == {"never": "inf", "undefined": None, "below": "-inf", "n": 3}
    md = (out / "report.md").read_text()
    assert "| a\\|b | first second | inf |" in md
    assert ["a|b", "first second", "inf"] in _html_rows((out / "report.html").read_text())


@pytest.mark.parametrize("damage, match", [
    (lambda d: d.update(analysis="nope"), "unknown analysis 'nope'"),
    (lambda d: d.update(parts="x"), "'parts' is not a list"),
    (lambda d: d["parts"][0].pop("name"), r"parts\[0\] has no 'name'"),
    (lambda d: d["parts"][0].update(grid=3), r"parts\[0\] has no 'grid'"),
    (lambda d: d.update(metrics=5), "'metrics' is not a list"),
    (lambda d: d.update(title=None), "'title' is not text"),
    (lambda d: d.update(run_ids=5), "'run_ids' is not a list of run ids"),
])
def test_study_json_with_a_damaged_field_is_one_line_exit_2(tmp_path, damage, match):
    """A study.json whose fields are of the wrong kind is reported in one line (exit 2)
    naming the field, not with a traceback."""
    folder = tmp_path / "copy"
    folder.mkdir()
    record = json.loads(json.dumps(load_study(write_tiny_study(tmp_path)).to_dict()))
    damage(record)
    (folder / "study.json").write_text(json.dumps(record))
    line = error_line(invoke(["study", "report", str(folder)]))
    assert "study.json is damaged" in line
    assert re.search(match, line), line
