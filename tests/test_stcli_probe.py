"""Mutation probes of ``ncsim study`` (ncsim/study/cli.py): what each command passes on, its
defaults, the exact lines it prints, its exit statuses and its refusals.

Most tests replace :func:`ncsim.study.runner.run_study` by a recorder that returns a chosen
summary, so that what the command hands to the library and prints is pinned without running a
study; the commands import the library's functions when they run, so the replacement is seen.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import error_line, invoke
from tiny_study import MORE_PART, NET_PART, write_tiny_study

import ncsim.study.report as report_module
import ncsim.study.runner as runner
import ncsim.study.spec as spec_module
from ncsim.study.runner import RunSummary


def _record(monkeypatch, total=7, skipped=2, computed=3, failed=0, seconds=12.345, selected=None):
    """Replace run_study by a recorder returning a summary with the given (distinct) numbers;
    returns the list of (study, out, kwargs) of its calls."""
    calls = []

    def fake(study, out, **kwargs):
        calls.append((study, out, kwargs))
        return RunSummary(total=total, skipped=skipped, computed=computed, failed=failed,
                          seconds=seconds, out=Path(out),
                          selected=total if selected is None else selected)

    monkeypatch.setattr(runner, "run_study", fake)
    return calls


DEFAULT_KWARGS = {"executor": "local", "address": None, "force": False, "retry_failed": False,
                  "progress": True, "workers": None, "parts": None}


def test_run_without_spec_runs_the_quick_weight_decay_study_into_ncsim_out(tmp_path,
                                                                          monkeypatch):
    """`study run` alone: the quick variant of weight_decay into ./ncsim-out (not
    ncsim-out/weight_decay-quick), with every option at its default, and the three lines."""
    monkeypatch.chdir(tmp_path)
    calls = _record(monkeypatch)
    result = invoke(["study", "run"])
    assert result.exit_code == 0, result.output
    ((study, out, kwargs),) = calls
    assert (study.name, study.quick) == ("weight_decay", True)
    assert out == Path("ncsim-out")
    assert kwargs == DEFAULT_KWARGS
    assert result.stdout.splitlines() == [
        "study weight_decay (quick): 7 runs, 3 computed, 2 already done, 0 failed, 12.3 s",
        f"table: {Path('ncsim-out') / 'runs.parquet'}",
        f"report: {Path('ncsim-out') / 'report.md'}"]
    assert result.stderr == ""


def test_run_without_spec_keeps_a_given_out_and_is_quick(tmp_path, monkeypatch):
    """`study run --out DIR` without a spec writes into DIR itself, still the quick variant."""
    calls = _record(monkeypatch)
    out = tmp_path / "res"
    result = invoke(["study", "run", "--out", str(out)])
    assert result.exit_code == 0, result.output
    ((study, got, _),) = calls
    assert (study.name, study.quick, got) == ("weight_decay", True, out)
    assert result.stdout.splitlines()[1:] == [f"table: {out / 'runs.parquet'}",
                                              f"report: {out / 'report.md'}"]


@pytest.mark.parametrize(("flags", "folder", "variant"), [
    ([], "tiny", "full"), (["--quick"], "tiny-quick", "quick")])
def test_run_of_a_spec_defaults_to_ncsim_out_name(tmp_path, monkeypatch, flags, folder,
                                                  variant):
    """A spec without --out writes into ncsim-out/NAME (full) or ncsim-out/NAME-quick."""
    spec = write_tiny_study(tmp_path, seeds=3)
    monkeypatch.chdir(tmp_path)
    calls = _record(monkeypatch)
    result = invoke(["study", "run", str(spec), *flags])
    assert result.exit_code == 0, result.output
    ((study, out, _),) = calls
    assert out == Path("ncsim-out") / folder and study.quick is bool(flags)
    assert result.stdout.splitlines()[0].startswith(f"study tiny ({variant}): 7 runs")


def test_run_passes_every_option_to_run_study(tmp_path, monkeypatch):
    """Each option of `study run` reaches run_study under its own name and value."""
    spec = write_tiny_study(tmp_path, seeds=1, extra=MORE_PART)
    calls = _record(monkeypatch, selected=2)
    out = tmp_path / "o"
    result = invoke(["study", "run", str(spec), "--out", str(out), "--executor", "process",
                     "--workers", "3", "--force", "--retry-failed", "--no-progress",
                     "--part", "more"])
    assert result.exit_code == 0, result.output
    ((_, got, kwargs),) = calls
    assert got == out
    assert kwargs == {"executor": "process", "address": None, "force": True,
                      "retry_failed": True, "progress": False, "workers": 3,
                      "parts": ["more"]}
    calls.clear()
    result = invoke(["study", "run", str(spec), "--out", str(out), "--executor", "dask",
                     "--address", "tcp://host:8786"])
    assert result.exit_code == 0, result.output
    ((_, _, kwargs),) = calls
    assert kwargs == {**DEFAULT_KWARGS, "executor": "dask", "address": "tcp://host:8786"}


def test_run_with_only_force_or_only_retry_failed_passes_just_that_one(tmp_path, monkeypatch):
    """--force and --retry-failed are separate flags: each sets its own argument only."""
    spec = write_tiny_study(tmp_path, seeds=1)
    calls = _record(monkeypatch)
    for flag, key in (("--force", "force"), ("--retry-failed", "retry_failed")):
        assert invoke(["study", "run", str(spec), "--out", str(tmp_path / "o"),
                       flag]).exit_code == 0
        assert calls.pop()[2] == {**DEFAULT_KWARGS, key: True}


def test_run_part_selection_line_names_parts_in_spec_order(tmp_path, monkeypatch):
    """--part given twice (out of order) or --model: the parts in spec order and the
    summary's selected count, in the first line."""
    spec = write_tiny_study(tmp_path, seeds=1, extra=MORE_PART + NET_PART)
    calls = _record(monkeypatch, total=9, selected=4)
    out = tmp_path / "o"
    result = invoke(["study", "run", str(spec), "--out", str(out), "--part", "more",
                     "--part", "ufm"])
    assert result.exit_code == 0, result.output
    assert calls[-1][2]["parts"] == ["ufm", "more"]
    assert result.stdout.splitlines()[0] == (
        "study tiny (full): 9 runs (parts ufm, more: 4 runs), 3 computed, 2 already done, "
        "0 failed, 12.3 s")
    result = invoke(["study", "run", str(spec), "--out", str(out), "--model", "trained"])
    assert result.exit_code == 0, result.output
    assert calls[-1][2]["parts"] == ["net"]
    assert "9 runs (parts net: 4 runs), 3 computed" in result.stdout


def test_run_with_failed_runs_prints_everything_then_exits_1(tmp_path, monkeypatch):
    """Failed runs: the three stdout lines as usual, then the one-line note on stderr, exit 1."""
    spec = write_tiny_study(tmp_path, seeds=1)
    _record(monkeypatch, failed=4, seconds=0.04)
    out = tmp_path / "o"
    result = invoke(["study", "run", str(spec), "--out", str(out)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "study tiny (full): 7 runs, 3 computed, 2 already done, 4 failed, 0.0 s",
        f"table: {out / 'runs.parquet'}", f"report: {out / 'report.md'}"]
    assert result.stderr == ("note: 4 run(s) failed (their error is in the 'error' column of "
                             "the run table); --retry-failed recomputes them\n")


def test_run_checks_the_out_folder_before_the_study_runs(tmp_path, monkeypatch):
    """An --out below a file is refused by the command itself: run_study is never called."""
    spec = write_tiny_study(tmp_path, seeds=1)
    calls = _record(monkeypatch)
    (tmp_path / "afile").write_text("x")
    line = error_line(invoke(["study", "run", str(spec), "--out",
                              str(tmp_path / "afile" / "o")]))
    assert "afile" in line and "not a folder" in line
    assert calls == []


@pytest.mark.parametrize(("args", "words"), [
    (["--workers", "0"], "Invalid value for '--workers': 0 is not in the range x>=1."),
    (["--model", "deep"], "Invalid value for '--model': 'deep' is not one of 'simulated', "
                          "'trained'."),
    (["--executor", "threads"], "Invalid value for '--executor': 'threads' is not one of "
                                "'local', 'process', 'dask'."),
    (["--out", ""], "Invalid value for '--out': empty path; give a path"),
])
def test_run_bad_option_values_are_usage_errors_before_anything(tmp_path, monkeypatch, args,
                                                                words):
    """Values the options' types refuse are click usage errors (exit 2) naming the option;
    the study is not run."""
    spec = write_tiny_study(tmp_path, seeds=1)
    calls = _record(monkeypatch)
    result = invoke(["study", "run", str(spec), *args])
    assert result.exit_code == 2 and words in result.stderr, result.output
    assert calls == [] and result.stdout == ""


def test_run_help_states_the_defaults():
    """`study run --help` shows the local executor as default and both default folders."""
    result = invoke(["study", "run", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split()).replace("ncsim- out", "ncsim-out")
    assert "[local|process|dask]" in text and "[default: local]" in text
    assert "(default ncsim-out/ or ncsim-out/NAME[-quick])" in text
    assert "[simulated|trained]" in text


def test_report_of_a_file_is_refused_by_the_argument_type(tmp_path, monkeypatch):
    """`study report FILE` is a usage error (exit 2, "is a file"); no report is attempted."""
    seen = []
    monkeypatch.setattr(report_module, "write_report", lambda d: seen.append(d))
    afile = tmp_path / "afile"
    afile.write_text("x")
    result = invoke(["study", "report", str(afile)])
    assert result.exit_code == 2 and "is a file" in result.stderr, result.output
    assert seen == [] and afile.read_text() == "x"


def test_report_notes_each_unfinished_study_with_the_whole_line(tmp_path, monkeypatch):
    """One stderr note per unfinished study folder, in order, with the exact wording."""
    monkeypatch.setattr(report_module, "write_report", lambda d: d / "report.md")
    monkeypatch.setattr(report_module, "unfinished_studies",
                        lambda d: [(d / "a", 1, 2), (d / "b", 0, 5)])
    result = invoke(["study", "report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == (f"report: {tmp_path / 'report.md'}\n"
                             f"report: {tmp_path / 'report.html'}\n")
    tail = ("runs finished, so the report gives no verdict (only that of whole finished "
            "parts, when the others have not started); run 'ncsim study run' on that folder "
            "again to finish them")
    assert result.stderr.splitlines() == [f"note: {tmp_path / 'a'}: 1 of 2 {tail}",
                                          f"note: {tmp_path / 'b'}: 0 of 5 {tail}"]


def test_report_of_a_finished_folder_prints_no_note(tmp_path, monkeypatch):
    """No unfinished study: the two paths on stdout, nothing on stderr."""
    monkeypatch.setattr(report_module, "write_report", lambda d: d / "x" / "report.md")
    monkeypatch.setattr(report_module, "unfinished_studies", lambda d: [])
    result = invoke(["study", "report", str(tmp_path)])
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout.splitlines() == [f"report: {tmp_path / 'x' / 'report.md'}",
                                          f"report: {tmp_path / 'x' / 'report.html'}"]


def test_list_tolerates_missing_parts_and_models(tmp_path, monkeypatch):
    """`study list`: a study without parts shows [], a part without a model counts as "?";
    a shipped study's line is its stem padded to 20, one line per study, in the given order."""
    (tmp_path / "b.toml").write_text('question = "Q b"\n')
    (tmp_path / "a.toml").write_text('question = "Q a"\n[[parts]]\nname = "x"\n'
                                     '[[parts]]\nmodel = "simulated"\n')
    monkeypatch.setattr(spec_module, "shipped_studies",
                        lambda: [tmp_path / "b.toml", tmp_path / "a.toml"])
    result = invoke(["study", "list"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"{'b':<20} [] Q b",
                                          f"{'a':<20} [?+simulated] Q a"]


def test_list_of_the_shipped_studies_names_weight_decay_with_both_kinds():
    """The shipped weight_decay study is listed with its simulated and trained parts."""
    result = invoke(["study", "list"])
    assert result.exit_code == 0 and result.stderr == ""
    (line,) = [ln for ln in result.stdout.splitlines() if ln.startswith("weight_decay ")]
    assert line.startswith(f"{'weight_decay':<20} [simulated+trained] ")
