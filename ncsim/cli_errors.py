"""Turn user errors into exit status 2 with one line on stderr (no traceback)."""

from __future__ import annotations

import functools
import os
import sys
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

    return wrapper  # type: ignore[return-value]


def check_out_folder(path: str | os.PathLike | None, option: str = "--out") -> None:
    """Refuse an output folder that cannot be made or written (before any work starts).

    The folder may be missing (it is made later, with its parents); the nearest existing
    folder on its path must be a folder this process may write into.
    """
    if path is None:
        return
    path = Path(path)
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise InputError(f"{option} {path}: {existing} is a file, not a folder; give a folder "
                         "path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: {existing} is not writable (permissions or a "
                         "read-only file system); give a folder you may write into")
