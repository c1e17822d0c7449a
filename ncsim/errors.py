"""Error types shared by the library and the command line.

Every error a user can cause derives from :class:`InputError`; its message is one line that
says what is wrong and what is allowed. The command line turns it into exit status 2.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


class InputError(ValueError):
    """Invalid user input (a parameter, a file, a specification).

    The message is a single line: what is wrong, and what is allowed or what to do.
    """


def require(condition: bool, message: str) -> None:
    """Raise :class:`InputError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise InputError(message)


def is_integer(value: Any) -> bool:
    """Whether ``value`` is an integer, Python or numpy (a bool is not)."""
    if type(value) is int:  # the common case, without the abstract-class check
        return True
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """Whether ``value`` is a finite real number, Python or numpy (a bool, text or None is
    not)."""
    if type(value) is float:  # the common case, without the abstract-class check
        return math.isfinite(value)
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def listed(values: Any, limit: int = 5) -> str:
    """Up to ``limit`` values, comma-separated, and how many more there are (for messages)."""
    items = [str(v) for v in values]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (for messages)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none (for a
    one-line error that names the cause of a failed read)."""
    text = str(err)
    return text.splitlines()[0] if text else type(err).__name__
