"""The study report: Markdown and HTML with the question, figures, tables and verdict.

``write_report(DIR)`` works on a study folder (``DIR/study.json``), on the study folders
among its sub-folders, or on both (one section each). Figures are embedded by relative path.
"""

from __future__ import annotations

import html
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ncsim.errors import InputError
from ncsim.io import atomic_write, write_json
from ncsim.study.analyses import ANALYSES, Section, fmt, observed
from ncsim.study.spec import Study, variant_name
from ncsim.study.store import FAILED, Store

MAX_ROWS = 40
INCOMPLETE = "incomplete"  # the verdict of a study whose runs have not all finished
# the list of the figures a report wrote in figures/, beside that folder (the next report
# replaces those only)
WRITTEN_FIGURES = ".figures-written"


@dataclass
class Progress:
    """How far a study folder is: its runs with a row (failed ones included) of the runs its
    study.json lists, and the missing ones by part (part -> (missing, runs of the part))."""

    finished: int
    total: int
    missing: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def whole_parts(self) -> bool:
        """An unfinished study whose finished runs are whole parts: some runs finished, and
        every part that misses runs misses all of them (the study was run with a part
        selection, ``study run --part/--model``), so the finished parts can be analysed on
        their own."""
        return self.finished > 0 and bool(self.missing) and all(
            part != "?" and n == size for part, (n, size) in self.missing.items())

    def missing_text(self) -> str:
        """``seeds 12 of 20, wd 5 of 5``; runs that no part of the study gives (listed by a
        study.json of another version): ``1 run of no part`` / ``17 runs of no part``."""
        return ", ".join(f"{n} run{'' if n == 1 else 's'} of no part" if part == "?"
                         else f"{part} {n} of {size}"
                         for part, (n, size) in self.missing.items())


def study_dirs(root: str | Path, nested: bool = True) -> list[Path]:
    """The study folders at ``root``: ``root`` itself when it is one, then (``nested``) its
    sub-folders that are (``ncsim study run NAME`` puts NAME-quick/ inside the default
    folder, which holds the default study itself)."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root} does not exist; give the --out folder of a study run")
    found = [root] if (root / "study.json").exists() else []
    if nested or not found:
        found += sorted(p.parent for p in root.glob("*/study.json"))
    if not found:
        raise InputError(f"{root} holds no study (no study.json in it or its sub-folders)")
    return found


def analyze_dir(folder: Path) -> tuple[Study, Section, pd.DataFrame, Progress]:
    """Run the study's analysis on its consolidated tables; figures go to folder/figures.

    A study whose runs have not all finished (interrupted, or still running) gets the verdict
    ``incomplete`` naming what is missing: the analysis of a subset decides nothing. Its tables
    and figures still show the finished runs. When the finished runs are whole parts and the
    others have not started (``Progress.whole_parts``: a ``--part``/``--model`` selection), the
    analysis's verdict on those parts alone is given beside it, in the reason and in
    ``numbers["finished_parts"]`` (parts, verdict, reason)."""
    store = Store(folder)
    study = _load_study(store)
    runs, traj = store.tables()
    progress = study_progress(store, study, runs)
    store.figures.mkdir(parents=True, exist_ok=True)
    _remove_written_figures(store.figures, store.root / WRITTEN_FIGURES)  # an earlier report's
    others = set(store.figures.glob("*.png"))  # figures ncsim did not write: kept
    if runs.empty or "status" not in runs:
        section = Section("inconclusive", "no finished run")
    else:
        section = _analyze(study, runs, traj, store, progress)
    written = sorted(p.name for p in set(store.figures.glob("*.png")) - others)
    (store.root / WRITTEN_FIGURES).write_text("".join(f"{name}\n" for name in written))
    if not progress.complete:
        alone = None
        if progress.whole_parts and section.verdict != INCOMPLETE:
            parts = [p["name"] for p in study.parts if p["name"] not in progress.missing]
            alone = {"parts": parts, "verdict": section.verdict, "reason": section.reason}
            section.numbers["finished_parts"] = alone
        section.verdict, section.reason = INCOMPLETE, _incomplete_reason(progress, alone)
    return study, section, runs, progress


def _remove_written_figures(figures: Path, listing: Path) -> None:
    """Delete the figures an earlier report wrote in ``figures`` (named in ``listing``, the
    folder's :data:`WRITTEN_FIGURES`), never a file of the folder it did not write."""
    if not listing.is_file():
        return
    for name in listing.read_text().splitlines():
        if name and "/" not in name and "\\" not in name:
            (figures / name).unlink(missing_ok=True)


def _load_study(store: Store) -> Study:
    """The folder's study; :class:`InputError` when study.json lacks what a study needs or
    holds a value of the wrong kind (a field that is not text, an unknown analysis, a part
    without a name, a grid that is not a table of value lists, run ids that are not a list
    of texts)."""
    record = store.study()
    try:
        study = Study.from_dict(record)
    except TypeError as err:
        raise InputError(store.damaged_study(str(err))) from None
    run_ids = record.get("run_ids", [])
    problem = ("'run_ids' is not a list of run ids" if not isinstance(run_ids, list)
               or not all(isinstance(r, str) for r in run_ids) else _study_problem(study))
    if problem:
        raise InputError(store.damaged_study(problem))
    return study


def _study_problem(study: Study) -> str:
    """What is wrong with a study read back from study.json ("" when nothing is)."""
    for key in ("name", "title", "question", "claim", "analysis", "source", "notes",
                "quick_note"):
        if not isinstance(getattr(study, key), str):
            return f"'{key}' is not text"
    if study.analysis not in ANALYSES:
        return f"unknown analysis {study.analysis!r}; known: {', '.join(ANALYSES)}"
    if not isinstance(study.quick, bool):
        return "'quick' is not true or false"
    if not isinstance(study.metrics, list) or not all(isinstance(m, str)
                                                      for m in study.metrics):
        return "'metrics' is not a list of names"
    if not isinstance(study.parts, list):
        return "'parts' is not a list"
    for i, part in enumerate(study.parts):
        if not isinstance(part, dict):
            return f"parts[{i}] is not a table"
        if not isinstance(part.get("name"), str) or not isinstance(part.get("model"), str):
            return f"parts[{i}] has no 'name' or 'model' text"
        grid = part.get("grid")
        if not isinstance(grid, dict) or not all(isinstance(v, list) for v in grid.values()):
            return f"parts[{i}] has no 'grid' table of value lists"
        if not isinstance(part.get("fixed", {}), dict):
            return f"parts[{i}]: 'fixed' is not a table"
    return ""


def _analyze(study: Study, runs: pd.DataFrame, traj: pd.DataFrame, store: Store,
             progress: Progress) -> Section:
    """The study's analysis of its runs that did not fail. On an unfinished study an analysis
    that cannot work on the runs there are (a part missing) leaves a note instead."""
    done = runs[runs["status"] != FAILED]
    traj = traj[traj["run_id"].isin(done["run_id"])] if "run_id" in traj else traj
    try:
        return ANALYSES[study.analysis](study, done, traj, store.figures)
    except Exception as err:
        if progress.complete:
            raise
        return Section(INCOMPLETE, "", notes=[
            f"The analysis needs more of the study's runs ({type(err).__name__}: {err})."])


def study_progress(store: Store, study: Study, runs: pd.DataFrame) -> Progress:
    """Which of the runs study.json lists have a row in ``runs`` (failed runs count as
    finished: they are reported as failed)."""
    expected = store.study_run_ids()
    have = set(runs["run_id"]) if "run_id" in runs else set()
    missing = [r for r in expected if r not in have]
    if not missing:
        return Progress(finished=len(expected) or len(runs), total=len(expected) or len(runs))
    return Progress(finished=len(expected) - len(missing), total=len(expected),
                    missing=_missing_by_part(study, missing))


def _missing_by_part(study: Study, missing: list[str]) -> dict[str, tuple[int, int]]:
    """Missing runs by part, with each part's number of runs; runs the study's parts do not
    give (ids of another version) count under ``?``."""
    descs = study.runs()
    part_of = {d.run_id: d.part for d in descs}
    sizes = Counter(d.part for d in descs)
    counts = Counter(part_of.get(rid, "?") for rid in missing)
    order = [*sizes, "?"]
    return {part: (counts[part], sizes.get(part, counts[part]))
            for part in order if counts.get(part)}


def _incomplete_reason(progress: Progress, alone: dict[str, Any] | None = None) -> str:
    """Why the verdict is incomplete; ``alone``: the verdict of the finished parts by
    themselves (parts, verdict, reason), quoted as such."""
    text = (f"{progress.finished} of {progress.total} runs finished (missing: "
            f"{progress.missing_text()}): no verdict until every run has finished.")
    if alone is not None:
        reason = alone["reason"].rstrip()
        text += (f" The finished parts alone ({', '.join(alone['parts'])}) give "
                 f"'{alone['verdict']}': {reason}{'' if reason.endswith('.') else '.'}")
    return (text + " Run 'ncsim study run' on this folder again to compute the rest "
            "(finished runs are kept).")


def markdown_table(frame: pd.DataFrame, max_rows: int = MAX_ROWS) -> str:
    """A Markdown table (numbers with 4 significant digits; long tables cut).

    A cell keeps its text: a pipe is escaped (``\\|``), a line break becomes a space, and
    stars and ``<`` are escaped so that Markdown shows them as text; a missing value of any
    type (NaN, ``pd.NA``, None) is written "nan"."""
    if frame.empty:
        return "(empty)\n"
    shown = frame.head(max_rows)
    head = "| " + " | ".join(_cell(c) for c in shown.columns) + " |"
    rule = "|" + "---|" * len(shown.columns)
    body = ["| " + " | ".join(_cell(v) for v in row) + " |"
            for row in shown.itertuples(index=False)]
    more = f"\n({len(frame) - max_rows} more rows in the run table)" if len(frame) > max_rows \
        else ""
    return "\n".join([head, rule, *body]) + "\n" + more


def _cell(value: Any) -> str:
    """One table cell of Markdown: :func:`fmt` of the value, on one line, its pipes, stars
    and ``<`` escaped."""
    if value is None or value is pd.NA or value is pd.NaT:
        value = math.nan
    text = " ".join(fmt(value).split())
    return _escape(text).replace("|", "\\|")


def _escape(text: str) -> str:
    """``text`` with its stars (as in fn*) and ``<`` escaped, so that Markdown keeps them as
    text (no emphasis, no HTML tag); code spans (between backticks) are left as they are.

    Used on the text between emphasis marks (captions: ``**fn* per part**`` would end its
    bold at the star) and in table cells; in running text a star after a word (fn*) opens no
    emphasis and stays as written."""
    pieces = re.split(r"(`[^`]*`)", str(text))
    return "".join(p if p.startswith("`") and p.endswith("`") and len(p) > 1
                   else p.replace("*", "\\*").replace("<", "\\<") for p in pieces)


def _one_line(text: str) -> str:
    """``text`` on one line (a line break would end a paragraph or a table row)."""
    return " ".join(str(text).split())


def _status_counts(runs: pd.DataFrame) -> str:
    if runs.empty or "status" not in runs:
        return "no runs"
    counts = runs["status"].value_counts()
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


QUICK_CAVEAT = (" *(Quick variant: a smoke test of the pipeline on small models, single seeds "
                "and relaxed settings; its verdict is not evidence for or against the claim. "
                "Run the full study for that.)*")


def section_markdown(study: Study, section: Section, runs: pd.DataFrame, prefix: str = "",
                     progress: Progress | None = None) -> str:
    """Markdown of one study (figure paths relative to the report, under ``prefix``); an
    unfinished study (``progress``) says so first."""
    variant = variant_name(study.quick)
    where = f", folder `{prefix}`" if prefix else ""
    lines = [f"## {_one_line(study.title)} (`{study.name}`, {variant} variant{where})", ""]
    counted = f"{len(runs)}"
    if progress is not None and not progress.complete:
        lines += [f"**Unfinished study: {progress.finished} of {progress.total} runs "
                  f"finished** (missing: {progress.missing_text()}). The tables and figures "
                  "below cover the finished runs only.", ""]
        counted = f"{progress.finished} of {progress.total} finished"
    lines += [f"**Question.** {_one_line(study.question)}", "",
              f"**Claim tested.** {_one_line(study.claim)}", "",
              f"**Verdict: {section.verdict}.** {_one_line(section.reason)}"
              + (QUICK_CAVEAT if study.quick else ""), "",
              f"Runs: {counted} ({_status_counts(runs)}). Metrics: "
              f"{', '.join(study.metrics) or 'onset_time, fn_at_onset'}. "
              f"Spec: `{Path(str(study.source)).name}`.",
              ""]
    failed = runs[runs["status"] == FAILED] if "status" in runs else runs.iloc[0:0]
    if len(failed):
        errors = failed["error"].astype(str).value_counts().head(3)
        lines += ["Failed runs: " + "; ".join(f"{n} x {_escape(_one_line(e))}"
                                              for e, n in errors.items()), ""]
    inherited = len(runs) - len(observed(runs))
    if inherited:
        lines += [f"{inherited} trained run(s) were already below the onset threshold when "
                  "phase 2 began: their crossing was not observed, so they count neither as "
                  "collapsed nor as prevented runs and stay out of the analyses (too short "
                  "or too easy to decide).", ""]
    if study.quick_note:
        lines += [f"*Quick variant.* {_one_line(study.quick_note)}", ""]
    if study.notes:
        lines += [f"*Notes.* {_one_line(study.notes)}", ""]
    for caption, path in section.figures:
        caption = _one_line(caption)
        lines += [f"![{caption}]({prefix}{path})", "", f"*{_escape(caption)}*", ""]
    for caption, table in section.tables:
        lines += [f"**{_escape(_one_line(caption))}**", "", markdown_table(table), ""]
    lines += [_escape(_one_line(note)) + "\n" for note in section.notes]
    return "\n".join(lines) + "\n"


def _html(markdown: str, title: str) -> str:
    """A plain HTML rendering of the report's Markdown subset (headings, tables, images)."""
    out, in_table = [], False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            if all(set(c) <= {"-"} for c in cells):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("## "):
            out.append(f"<h2>{_inline(line[3:])}</h2>")
        elif line.startswith("# "):
            out.append(f"<h1>{_inline(line[2:])}</h1>")
        elif line.startswith("![") and "](" in line:
            alt, src = line[2:].split("](", 1)
            out.append(f'<figure><img src="{html.escape(src.rstrip(")"))}" '
                       f'alt="{html.escape(alt)}" style="max-width:100%"></figure>')
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    if in_table:
        out.append("</table>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:"
             "collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>\n" + "\n".join(out) +
            "\n</body></html>\n")


def _inline(text: str) -> str:
    """HTML of one line of the report's Markdown: bold, italics, code; a character escaped
    with a backslash (``\\*``, ``\\|``, ``\\<``) is text, never markup."""
    kept: list[str] = []

    def keep(match: re.Match) -> str:
        kept.append(match.group(1))
        return f"\0{len(kept) - 1}\0"

    text = html.escape(re.sub(r"\\([!-/:-@\[-`{-~])", keep, text))
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    text = re.sub(r"`(.+?)`", r"<code>\1</code>", text)
    text = re.sub(r"(?<![\w*])\*(?!\s)([^*]+?)(?<!\s)\*(?![\w*])", r"<i>\1</i>", text)
    return re.sub("\0(\\d+)\0", lambda m: html.escape(kept[int(m.group(1))]), text)


def write_report(root: str | Path, nested: bool = True) -> Path:
    """Write ``root/report.md``, ``root/report.html`` and ``verdict.json`` per study: of the
    study in ``root`` and (``nested``, or when ``root`` holds none) of those in its
    sub-folders. verdict.json is strict JSON: an undefined number (NaN) is null, an infinite
    one the string "inf" or "-inf" (:func:`ncsim.io.to_jsonable`)."""
    root = Path(root)
    sections, verdicts, folders = [], [], []
    for folder in study_dirs(root, nested):
        study, section, runs, progress = analyze_dir(folder)
        prefix = "" if folder == root else f"{folder.relative_to(root).as_posix()}/"
        sections.append(section_markdown(study, section, runs, prefix, progress))
        verdict = {"study": study.name, "quick": study.quick, "verdict": section.verdict,
                   "reason": section.reason, "numbers": section.numbers,
                   "runs_finished": progress.finished, "runs_total": progress.total}
        if not progress.complete:
            verdict["runs_missing"] = {part: n for part, (n, _) in progress.missing.items()}
        if study.quick_note:
            verdict["quick_note"] = study.quick_note
        write_json(verdict, folder / "verdict.json")
        verdicts.append(verdict)
        folders.append(prefix or "./")
    title = "ncsim study report"
    summary = ["# " + title, ""]
    if len(verdicts) > 1:
        summary += ["| folder | study | variant | verdict |", "|---|---|---|---|"]
        summary += [f"| `{where}` | {v['study']} | {variant_name(v['quick'])} "
                    f"| {_summary_verdict(v)} |" for where, v in zip(folders, verdicts)]
        summary.append("")
    text = "\n".join(summary) + "\n" + "\n".join(sections)
    atomic_write(root / "report.md", lambda tmp: tmp.write_text(text))
    atomic_write(root / "report.html", lambda tmp: tmp.write_text(_html(text, title)))
    return root / "report.md"


def _summary_verdict(verdict: dict[str, Any]) -> str:
    """The verdict cell of the summary table: ``incomplete (finished parts: supports)`` when
    the report quotes the verdict of whole finished parts."""
    alone = verdict["numbers"].get("finished_parts")
    return verdict["verdict"] + (f" (finished parts: {alone['verdict']})" if alone else "")


def unfinished_studies(root: str | Path) -> list[tuple[Path, int, int]]:
    """(folder, finished, total) of each study under ``root`` whose last report (its
    verdict.json) found runs missing."""
    import json

    out = []
    for folder in study_dirs(root):
        path = folder / "verdict.json"
        verdict = json.loads(path.read_text()) if path.exists() else {}
        if verdict.get("verdict") == INCOMPLETE:
            out.append((folder, verdict["runs_finished"], verdict["runs_total"]))
    return out
