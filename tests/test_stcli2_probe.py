"""Second mutation probe of ``ncsim study`` (ncsim/study/cli.py) and the shared command-line
error helpers (ncsim/cli_errors.py): the list line of a study without a question, the one-line
errors of the list command, the order of the run command's refusals, the folder check's
search permission and its exact messages, and the out-of-memory and missing-file lines of
errors that carry no size or no file name."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click
import pytest
import torch
from cli_helpers import error_line, invoke
from click.testing import CliRunner
from tiny_study import write_tiny_study

import ncsim.cli_errors as cli_errors
import ncsim.study.runner as runner
import ncsim.study.spec as spec_module
from ncsim.cli_errors import check_out_file, check_out_folder, handle_errors
from ncsim.errors import InputError


def _command(error: BaseException) -> click.Command:
    """A click command, wrapped by handle_errors, that raises ``error``."""

    @click.command()
    @handle_errors
    def cmd():
        raise error

    return cmd


def _no_run(monkeypatch) -> list:
    """Replace run_study by a recorder that must not be reached; returns its calls."""
    calls: list = []
    monkeypatch.setattr(runner, "run_study", lambda *a, **k: calls.append(a))
    return calls


# ----------------------------------------------------------------------------- study list
def test_list_of_a_study_without_a_question_ends_after_its_kinds(tmp_path, monkeypatch):
    """A study file without a question is listed (name and kinds, then an empty question),
    not refused."""
    (tmp_path / "c.toml").write_text('[[parts]]\nmodel = "trained"\n'
                                     '[[parts]]\nmodel = "simulated"\n')
    monkeypatch.setattr(spec_module, "shipped_studies", lambda: [tmp_path / "c.toml"])
    result = invoke(["study", "list"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{'c':<20} [simulated+trained] \n"


def test_list_of_a_study_file_that_is_gone_is_one_line(tmp_path, monkeypatch):
    """A listed study file that cannot be read is one 'file not found' line, exit 2, not a
    traceback."""
    gone = tmp_path / "gone.toml"
    monkeypatch.setattr(spec_module, "shipped_studies", lambda: [gone])
    assert error_line(invoke(["study", "list"])) == f"Error: file not found: {gone}"


# ----------------------------------------------------------------------------- study run
def test_run_checks_the_out_folder_before_the_part_selection(tmp_path, monkeypatch):
    """An unusable --out and an unknown --part together: the --out refusal comes first."""
    calls = _no_run(monkeypatch)
    spec = write_tiny_study(tmp_path, seeds=1)
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "o"
    line = error_line(invoke(["study", "run", str(spec), "--out", str(out),
                              "--part", "nope"]))
    assert line == (f"Error: --out {out}: {tmp_path / 'afile'} is a file, not a folder; "
                    "give a folder path")
    assert calls == []


def test_run_of_an_unknown_part_is_one_line_naming_the_parts(tmp_path, monkeypatch):
    """An unknown --part is one line naming it and the study's parts; nothing is run or
    made."""
    calls = _no_run(monkeypatch)
    spec = write_tiny_study(tmp_path, seeds=1)
    out = tmp_path / "o"
    line = error_line(invoke(["study", "run", str(spec), "--out", str(out), "--part", "nope"]))
    assert line == "Error: study 'tiny' has no part 'nope'; its parts: ufm"
    assert calls == [] and not out.exists()


def test_run_whose_results_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    """A file the system refuses while the study runs (permission denied) is one line naming
    the file and the reason, exit 2, no traceback."""
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/results/runs.parquet")

    monkeypatch.setattr(runner, "run_study", denied)
    spec = write_tiny_study(tmp_path, seeds=1)
    line = error_line(invoke(["study", "run", str(spec), "--out", str(tmp_path / "o")]))
    assert line == ("Error: cannot use /results/runs.parquet: Permission denied; check the "
                    "path, its permissions and the free space")


# ----------------------------------------------------------------------------- folder checks
def test_a_folder_that_may_not_be_searched_is_refused(tmp_path, monkeypatch):
    """The folder check asks for search (execute) permission as well as write permission:
    a folder the system says is writable but not searchable is refused with the exact line."""
    real = os.access

    def access(target, mode, *args, **kwargs):
        if Path(target) == tmp_path and mode & os.X_OK:
            return False
        return real(target, mode, *args, **kwargs)

    monkeypatch.setattr(cli_errors.os, "access", access)
    with pytest.raises(InputError) as info:
        check_out_folder(tmp_path / "o")
    assert str(info.value) == (f"--out {tmp_path / 'o'}: {tmp_path} is not writable "
                               "(permissions or a read-only file system); give a folder you "
                               "may write into")


def test_a_folder_where_no_file_can_be_made_names_the_reason(tmp_path, monkeypatch):
    """When the trial file cannot be made (a full disk), the line gives the system's reason,
    and the InputError hides the OSError it replaces."""
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli_errors.tempfile, "TemporaryFile", full)
    with pytest.raises(InputError) as info:
        check_out_folder(tmp_path / "a" / "b", "--cache")
    assert str(info.value) == (f"--cache {tmp_path / 'a' / 'b'}: {tmp_path} is not writable "
                               "(No space left on device); give a folder you may write into")
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_check_out_folder_of_none_checks_nothing(monkeypatch):
    """check_out_folder(None) (no --out given) checks no folder at all, not the current one."""
    def refuse(*args, **kwargs):
        raise AssertionError("no folder may be checked")

    monkeypatch.setattr(cli_errors.os, "access", refuse)
    monkeypatch.setattr(cli_errors.tempfile, "TemporaryFile", refuse)
    assert check_out_folder(None) is None


def test_check_out_file_takes_an_existing_file_to_overwrite(tmp_path):
    """An existing file as the output file is accepted (it is overwritten later), and left
    as it is by the check."""
    target = tmp_path / "table.csv"
    target.write_text("old")
    assert check_out_file(target) is None
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]


def test_the_trial_file_is_made_in_the_nearest_existing_folder(tmp_path, monkeypatch):
    """The trial file is made in the nearest existing folder of a missing --out, and nothing
    is left behind."""
    seen = []
    real = tempfile.TemporaryFile

    def spy(*args, **kwargs):
        seen.append(Path(kwargs["dir"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(cli_errors.tempfile, "TemporaryFile", spy)
    check_out_folder(tmp_path / "x" / "y" / "z")
    assert seen == [tmp_path] and list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- handle_errors
def test_a_missing_file_error_without_a_file_name_gives_its_message():
    """A FileNotFoundError that names no file is still one 'file not found' line, with the
    error's own message."""
    result = CliRunner().invoke(_command(FileNotFoundError("no model checkpoint")), [])
    assert result.exit_code == 2
    assert result.stderr == "Error: file not found: no model checkpoint\n"


def test_python_memory_error_is_one_line_without_a_size():
    """Python's MemoryError (no allocation size in it) is the out-of-memory line, exit 2,
    without the size part."""
    result = CliRunner().invoke(_command(MemoryError()), [])
    assert result.exit_code == 2
    assert result.stderr == ("Error: not enough memory for this computation; make the grid, "
                             "the number of records or the model smaller\n")


def test_torch_out_of_memory_error_of_an_accelerator_is_one_line():
    """torch.OutOfMemoryError (an accelerator out of memory; its message has no 'can't
    allocate memory') is the out-of-memory line, exit 2."""
    error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    result = CliRunner().invoke(_command(error), [])
    assert result.exit_code == 2
    assert result.stderr == ("Error: not enough memory for this computation; make the grid, "
                             "the number of records or the model smaller\n")


def test_a_blank_study_out_is_refused(tmp_path, monkeypatch):
    """`study run --out "   "` (only spaces) is refused like an empty path; nothing runs."""
    calls = _no_run(monkeypatch)
    monkeypatch.chdir(tmp_path)
    line = error_line(invoke(["study", "run", "--out", "   "]))
    assert line == ("Error: Invalid value for '--out': empty path; give a path ('.' is the "
                    "current folder)")
    assert calls == [] and list(tmp_path.iterdir()) == []
