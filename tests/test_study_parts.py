"""Computing some parts of a study (``run_study(parts=...)``, ``study run --part/--model``):
only the selected parts' runs are computed, the folder still holds the whole study, a later
call computes the rest, and the report keeps the verdict "incomplete" while quoting the
finished parts' own verdict only when they are whole and the others have not started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import error_line, interrupt_chunk, invoke
from tiny_study import MORE_PART, NET_PART, write_tiny_study

from ncsim.errors import InputError
from ncsim.study.report import INCOMPLETE, Progress, write_report
from ncsim.study.runner import part_names, run_study
from ncsim.study.spec import load_study
from ncsim.study.store import Store


def _spec(tmp_path: Path, extra: str = MORE_PART) -> Path:
    return write_tiny_study(tmp_path, seeds=2, chunk=1, records=12, extra=extra)


def _verdict(out: Path) -> dict:
    return json.loads((out / "verdict.json").read_text())


def test_a_selected_part_is_computed_alone_and_a_later_call_finishes_the_rest(tmp_path,
                                                                               no_figures):
    """ufm (seeds 0, 1) and more (seeds 10, 11): with parts={"more"} exactly the two runs of
    "more" get a row, study.json lists all four, and the next call without a selection
    computes the two of "ufm" and nothing else."""
    study = load_study(_spec(tmp_path))
    out = tmp_path / "out"
    first = run_study(study, out, progress=False, parts={"more"})
    assert (first.total, first.selected, first.computed, first.skipped) == (4, 2, 2, 0)
    store = Store(out)
    parts_of = {d.run_id: d.part for d in study.runs()}
    assert sorted(parts_of[r] for r in store.statuses()) == ["more", "more"]
    assert sorted(store.study_run_ids()) == sorted(parts_of)
    again = run_study(study, out, progress=False, parts=["more"])
    assert (again.computed, again.skipped) == (0, 2)
    rest = run_study(study, out, progress=False)
    assert (rest.total, rest.selected, rest.computed, rest.skipped) == (4, 4, 2, 2)
    assert sorted(parts_of[r] for r in store.statuses()) == ["more", "more", "ufm", "ufm"]
    verdict = _verdict(out)
    assert verdict["verdict"] != INCOMPLETE
    assert "finished_parts" not in verdict["numbers"]


def test_the_report_quotes_the_verdict_of_whole_finished_parts(tmp_path, no_figures):
    """With "ufm" whole and "more" not started the verdict stays incomplete, and the reason
    and verdict.json carry the verdict that the same analysis gives on a study made of
    "ufm" alone (written as its own spec and run into another folder)."""
    out = tmp_path / "sel"
    run_study(load_study(_spec(tmp_path)), out, progress=False, parts={"ufm"})
    alone_dir = tmp_path / "alone"
    alone_dir.mkdir()
    run_study(load_study(_spec(alone_dir, extra="")), alone_dir / "out", progress=False)
    reference = _verdict(alone_dir / "out")
    verdict = _verdict(out)
    assert verdict["verdict"] == INCOMPLETE
    assert (verdict["runs_finished"], verdict["runs_total"]) == (2, 4)
    assert verdict["runs_missing"] == {"more": 2}
    quoted = verdict["numbers"]["finished_parts"]
    assert quoted["parts"] == ["ufm"]
    assert quoted["verdict"] == reference["verdict"] != INCOMPLETE
    assert quoted["reason"] == reference["reason"]
    assert f"The finished parts alone (ufm) give '{reference['verdict']}'" in verdict["reason"]
    assert verdict["reason"].startswith("2 of 4 runs finished (missing: more 2 of 2)")
    report = (out / "report.md").read_text()
    assert "**Verdict: incomplete.**" in report
    assert "The finished parts alone (ufm)" in report


def test_a_part_cut_short_gives_no_verdict_of_the_finished_parts(tmp_path, monkeypatch,
                                                                  no_figures):
    """An interrupted run leaves "ufm" with one of its two runs: no part selection is whole,
    so the reason quotes no verdict of finished parts (the analysis of half a part decides
    nothing)."""
    study = load_study(_spec(tmp_path))
    out = tmp_path / "cut"
    interrupt_chunk(monkeypatch, at=2)
    with pytest.raises(KeyboardInterrupt):
        run_study(study, out, progress=False, parts={"ufm"})
    monkeypatch.undo()
    write_report(out, nested=False)
    verdict = _verdict(out)
    assert verdict["verdict"] == INCOMPLETE
    assert verdict["runs_missing"] == {"ufm": 1, "more": 2}
    assert "finished_parts" not in verdict["numbers"]
    assert "finished parts alone" not in verdict["reason"]


@pytest.mark.parametrize("missing, finished, whole", [
    ({}, 4, False),                              # complete: nothing to quote
    ({"b": (2, 2)}, 2, True),                    # part b not started
    ({"b": (1, 2)}, 3, False),                   # part b half done
    ({"b": (2, 2), "c": (3, 3)}, 2, True),       # two parts not started
    ({"b": (2, 2), "?": (1, 1)}, 2, False),      # a run of another version of the study
    ({"a": (2, 2), "b": (2, 2)}, 0, False),      # nothing finished
])
def test_whole_parts_means_every_missing_part_is_untouched(missing, finished, whole):
    """Progress.whole_parts: some run finished, and each part that misses runs misses all of
    them; runs under "?" (ids the study's parts do not give) never count as a whole part."""
    progress = Progress(finished=finished, total=finished + sum(n for n, _ in missing.values()),
                        missing=missing)
    assert progress.whole_parts is whole


def test_unknown_or_empty_part_selections_are_refused_before_any_run(tmp_path):
    """A part name the study lacks is refused with the study's parts listed; an empty
    selection too; the folder is not created."""
    study = load_study(_spec(tmp_path))
    out = tmp_path / "never"
    with pytest.raises(InputError, match=r"has no part 'nope'; its parts: ufm, more"):
        run_study(study, out, progress=False, parts={"nope", "ufm"})
    with pytest.raises(InputError, match="no part selected; its parts: ufm, more"):
        run_study(study, out, progress=False, parts=[])
    assert not out.exists()


def test_part_names_keep_the_spec_order_and_filter_by_kind(tmp_path):
    study = load_study(_spec(tmp_path, extra=MORE_PART + NET_PART))
    assert part_names(study) == ["ufm", "more", "net"]
    assert part_names(study, "simulated") == ["ufm", "more"]
    assert part_names(study, "trained") == ["net"]


def test_cli_model_option_computes_the_parts_of_that_kind(tmp_path, no_figures):
    """`study run SPEC --model simulated` on a study with a trained part computes the four
    simulated runs, names the parts in the spec's order, and leaves the trained run."""
    spec = _spec(tmp_path, extra=MORE_PART + NET_PART)
    out = tmp_path / "cli"
    result = invoke(["study", "run", str(spec), "--model", "simulated", "--out", str(out),
                     "--no-progress"])
    assert result.exit_code == 0, result.output
    assert ("study tiny (full): 5 runs (parts ufm, more: 4 runs), 4 computed, 0 already done, "
            "0 failed") in result.stdout
    assert _verdict(out)["runs_missing"] == {"net": 1}
    assert _verdict(out)["numbers"]["finished_parts"]["parts"] == ["ufm", "more"]


@pytest.mark.parametrize("args, message", [
    (["--model", "trained"], "study 'tiny' has no trained part; its parts: ufm, more"),
    (["--part", "ufm", "--model", "trained"], None),
    (["--part", "nope"], "study 'tiny' has no part 'nope'; its parts: ufm, more"),
])
def test_cli_refuses_selections_that_keep_no_part(tmp_path, args, message):
    """Each refusal exits 2 with one line naming the study's parts; no folder is written."""
    spec = _spec(tmp_path)
    out = tmp_path / "x"
    line = error_line(invoke(["study", "run", str(spec), "--out", str(out), *args]))
    assert message is None or message in line, line
    assert "ufm, more" in line
    assert not out.exists()


def test_cli_refuses_a_named_part_of_the_other_kind(tmp_path):
    spec = _spec(tmp_path, extra=MORE_PART + NET_PART)
    line = error_line(invoke(["study", "run", str(spec), "--out", str(tmp_path / "y"),
                              "--part", "net", "--model", "simulated"]))
    assert "part net of study 'tiny' is not simulated; its simulated parts: ufm, more" in line


def test_the_summary_table_names_the_finished_parts_verdict(tmp_path, no_figures):
    """A report over two study folders, one run with a part selection, one whole: the summary
    row of the first reads "incomplete (finished parts: V)" with V its quoted verdict, the
    second its plain verdict."""
    root = tmp_path / "all"
    study = load_study(_spec(tmp_path))
    run_study(study, root / "partial", progress=False, parts={"ufm"})
    run_study(study, root / "whole", progress=False)
    write_report(root)
    quoted = _verdict(root / "partial")["numbers"]["finished_parts"]["verdict"]
    whole = _verdict(root / "whole")["verdict"]
    report = (root / "report.md").read_text()
    assert f"| tiny | full | incomplete (finished parts: {quoted}) |" in report
    assert f"| tiny | full | {whole} |" in report


def test_force_with_a_part_selection_recomputes_that_part_only(tmp_path, no_figures):
    """force recomputes the selected part's runs (their files rewritten) and leaves the other
    part's run files as they were."""
    study = load_study(_spec(tmp_path))
    out = tmp_path / "out"
    run_study(study, out, progress=False, report=False)
    store = Store(out)
    part_of = {d.run_id: d.part for d in study.runs()}
    stamps = {rid: store.run_file(rid).stat().st_mtime_ns for rid in part_of}
    forced = run_study(study, out, progress=False, report=False, force=True, parts={"more"})
    assert (forced.computed, forced.skipped) == (2, 0)
    for rid, part in part_of.items():
        changed = store.run_file(rid).stat().st_mtime_ns != stamps[rid]
        assert changed is (part == "more"), (rid, part)
