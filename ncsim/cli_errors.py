"""Turn user errors into exit status 2 with one line on stderr (no traceback)."""

from __future__ import annotations

import functools
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ncsim.errors import InputError

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> None:
    """Print ``Error: message`` (one line) on stderr and exit with status 2."""
    click.echo(f"Error: {' '.join(str(message).split())}", err=True)
    sys.exit(2)


def handle_errors(func: F) -> F:
    """Decorator for click commands: :class:`InputError`, and a file or folder the system
    refuses (missing, not writable, ...), -> exit 2 with one clear line."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InputError as err:
            fail(str(err))
        except FileNotFoundError as err:
            fail(f"file not found: {err.filename or err}")
        except OSError as err:  # a file or folder the system refuses (permissions, a full disk)
            if err.filename is None:
                raise
            fail(f"cannot use {err.filename}: {err.strerror or err}; check the path, its "
                 "permissions and the free space")
        except (MemoryError, RuntimeError) as err:
            if not _out_of_memory(err):
                raise
            asked = re.search(r"tried to allocate (\d+) bytes", str(err))
            size = f" (one array of {int(asked.group(1)) / 1e9:.3g} GB)" if asked else ""
            fail(f"not enough memory for this computation{size}; make the grid, the number of "
                 "records or the model smaller")

    return wrapper  # type: ignore[return-value]


def _out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` says that memory ran out (Python's MemoryError, torch's CPU allocator
    or torch.OutOfMemoryError on an accelerator)."""
    return (isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"
            or "can't allocate memory" in str(err))


class OutPath(click.Path):
    """``click.Path`` that refuses an empty path (``--out ""``, e.g. an unset shell variable),
    which would otherwise mean the current folder."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, str) and not value.strip():
            self.fail("empty path; give a path ('.' is the current folder)", param, ctx)
        return super().convert(value, param, ctx)


def check_out_folder(path: str | os.PathLike | None, option: str = "--out") -> None:
    """Refuse an output folder that cannot be made or written (before any work starts).

    The folder may be missing (it is made later, with its parents); the nearest existing
    folder on its path must be a folder this process may write into (a file is made and
    removed there to make sure: permission bits say nothing for root or a read-only mount).
    """
    if path is None:
        return
    _check_folder(Path(path), f"{option} {path}")


def check_out_file(path: str | os.PathLike | None, option: str = "--out") -> None:
    """Refuse an output file that cannot be written: an empty path, an existing folder, or
    a parent folder that cannot be made or written (before any work starts)."""
    if path is None:
        return
    if not str(path).strip():
        raise InputError(f"{option}: empty path; give a file name")
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name")
    _check_folder(path.parent, f"{option} {path}")


def _check_folder(path: Path, label: str) -> None:
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise InputError(f"{label}: {existing} is a file, not a folder; give a folder path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{label}: {existing} is not writable (permissions or a read-only "
                         "file system); give a folder you may write into")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise InputError(f"{label}: {existing} is not writable ({err.strerror or err}); give "
                         "a folder you may write into") from None
