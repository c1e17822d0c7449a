"""Helpers of the command-line and study tests: invoking the CLI, reading its one-line errors,
and interrupting a study run in a chosen chunk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

import ncsim.study.executors as executors
from ncsim.cli import cli


def invoke(args: list[str], **kwargs: Any) -> Result:
    """Run ``ncsim ARGS`` in-process; stdout and stderr apart."""
    return CliRunner().invoke(cli, args, **kwargs)


def error_line(result: Result) -> str:
    """The single ``Error: ...`` line of a run that exits with status 2 and no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


def interrupt_chunk(monkeypatch: Any, at: int = 2) -> list[int]:
    """Make the ``at``-th chunk of a study run raise KeyboardInterrupt (Ctrl-C) instead of
    computing; returns the list of chunk sizes seen so far (it grows as chunks start)."""
    real = executors.run_chunk
    calls: list[int] = []

    def interrupted(chunk):
        calls.append(len(chunk))
        if len(calls) == at:
            raise KeyboardInterrupt
        return real(chunk)

    monkeypatch.setattr(executors, "run_chunk", interrupted)
    return calls


def tiny_train_args(out: Path, epochs: str, nc_every: int) -> list[str]:
    """``ncsim validate train`` of a one-hidden-layer MLP (width 8) on 10 x 3 Gaussian training
    samples at batch 8 (4 steps per epoch), writing to ``out`` (the last argument)."""
    return ["validate", "train", "--dataset", "gaussian", "--per-class", "3",
            "--test-per-class", "2", "--depth", "1", "--width", "8", "--epochs", epochs,
            "--batch-size", "8", "--nc-every", str(nc_every), "--no-progress", "--format",
            "json", "--out", str(out)]
