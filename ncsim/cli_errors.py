"""Turn user errors into exit status 2 with one line on stderr (no traceback)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ncsim.errors import InputError

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> None:
    """Print ``Error: message`` (one line) on stderr and exit with status 2."""
    click.echo(f"Error: {' '.join(str(message).split())}", err=True)
    sys.exit(2)


def handle_errors(func: F) -> F:
    """Decorator for click commands: :class:`InputError` -> exit 2 with one clear line."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InputError as err:
            fail(str(err))
        except FileNotFoundError as err:
            fail(f"file not found: {err.filename or err}")

    return wrapper  # type: ignore[return-value]
