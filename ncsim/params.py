"""Numeric option values: one value, a comma list, or a log range ``lo..hi:count``.

Several such options together make a grid (their Cartesian product).
"""

from __future__ import annotations

import decimal
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import click
import numpy as np

from ncsim.errors import InputError

_RANGE = re.compile(r"^\s*((?:[^.:\s]|\.\d)[^:]*?)\s*\.\.\s*([^:]+?)\s*:\s*(\d+)\s*$")


def _number(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(
            f"{option}: {text.strip()!r} is not a number; give a value, a comma list "
            "or a log range like 1e-4..1e-1:16"
        ) from None
    if not math.isfinite(value):
        raise InputError(f"{option}: {text.strip()!r} is not a finite number; give a finite "
                         "value")
    if value == 0 and _exact(text) not in (None, 0):
        raise InputError(f"{option}: {text.strip()!r} underflows to 0 (floats reach down to "
                         "5e-324); give 0 or a larger value")
    return value


def _exact(text: str) -> decimal.Decimal | None:
    """The number ``text`` spells, exactly (None when Decimal does not read it)."""
    try:
        return decimal.Decimal(text.strip())
    except decimal.InvalidOperation:
        return None


MAX_RANGE_COUNT = 1_000_000
"""The most values one log range gives (the most runs a simulation grid may hold)."""


def parse_values(text: str | float | int, option: str = "value") -> list[float]:
    """Parse ``"0.1"``, ``"1,2,3"`` or the log range ``"1e-4..1e-1:16"`` into floats.

    A log range ``lo..hi:count`` gives ``count`` log-spaced values from ``lo`` to ``hi``
    (both > 0, 1 <= count <= ``MAX_RANGE_COUNT``; count = 1 gives ``lo``). Three dots
    (``1e-3...1e-1:3``) are refused as malformed, not read as ``1e-3`` .. ``.1e-1``.
    """
    if isinstance(text, (int, float)):
        return [_number(str(text), option)]
    text = text.strip()
    if ".." in text:
        match = None if "..." in text else _RANGE.match(text)
        if match is None:
            raise InputError(
                f"{option}: malformed range {text!r}; write lo..hi:count, e.g. 1e-4..1e-1:16"
            )
        lo, hi = _number(match.group(1), option), _number(match.group(2), option)
        count = _count(match.group(3))
        if lo <= 0 or hi <= 0 or not 1 <= count <= MAX_RANGE_COUNT:
            raise InputError(
                f"{option}: log range {text!r} needs lo > 0, hi > 0 and count >= 1 (at most "
                f"{MAX_RANGE_COUNT})"
            )
        return [float(v) for v in np.geomspace(lo, hi, count)]
    parts = [p for p in text.split(",")]
    if not parts or any(not p.strip() for p in parts):
        raise InputError(f"{option}: empty value in {text!r}")
    return [_number(p, option) for p in parts]


def _count(digits: str) -> int:
    """The count of a log range from its digits; one above ``MAX_RANGE_COUNT`` when it has
    more digits than that (a count of thousands of digits is not read: Python's int() refuses
    strings over 4300 digits)."""
    significant = digits.lstrip("0") or "0"
    if len(significant) > len(str(MAX_RANGE_COUNT)):
        return MAX_RANGE_COUNT + 1
    return int(significant)


INT_LIMIT = 2**63
"""Integer option values lie in (-2^63, 2^63): the run tables store them (seeds included) as
int64."""


def _integer(text: str, option: str) -> int:
    """One whole number, read exactly (``"9007199254740993"`` keeps its last digit; a float
    spelling such as ``"1e3"`` must be whole)."""
    whole = text.strip()
    if _WHOLE.fullmatch(whole):
        sign, digits = "-" if whole[0] == "-" else "", whole.lstrip("+-").lstrip("0")
        if len(digits) > _INT_DIGITS:  # also too long for int() beyond 4300 digits
            shown = digits if len(digits) <= 40 else f"{digits[:20]}... ({len(digits)} digits)"
            raise _out_of_range(sign + shown, option)
    try:
        value = int(whole)
    except ValueError:
        number = _number(text, option)  # refuses what is not a finite number
        # a float spelling, read exactly: "9007199254740993.0" keeps its last digit
        exact = _exact(whole) or decimal.Decimal(number)
        if exact.adjusted() >= 4000:  # beyond int()'s digits: the text as written
            raise _out_of_range(whole, option) from None
        if exact != exact.to_integral_value():
            raise InputError(f"{option}: {float(exact)} is not an integer; give whole "
                             "numbers") from None
        value = int(exact)
    return _in_int_range(value, option)


_WHOLE = re.compile(r"[+-]?\d+")
_INT_DIGITS = len(str(INT_LIMIT))
"""Digits of 2^63: a whole number with more digits is out of range."""


def _out_of_range(shown: str, option: str) -> InputError:
    return InputError(f"{option}: {shown} is out of range; give integers of magnitude below "
                      "2^63 (9223372036854775808)")


def _in_int_range(value: int, option: str) -> int:
    if abs(value) >= INT_LIMIT:
        raise _out_of_range(str(value), option)
    return value


def distinct(values: Sequence[Any]) -> list[Any]:
    """The values in their order, each once (a repeated value would repeat a grid point)."""
    return list(dict.fromkeys(values))


def parse_ints(text: str | int, option: str = "value", unique: bool = True) -> list[int]:
    """Like :func:`parse_values` for integer options, read exactly (ranges are rounded to
    integers); repeated values are dropped unless ``unique`` is false. Every value has a
    magnitude below 2^63."""
    if isinstance(text, int) and not isinstance(text, bool):
        out = [_in_int_range(text, option)]
    elif isinstance(text, str) and ".." in text:
        out = [_in_int_range(int(round(v)), option) for v in parse_values(text, option)]
    else:
        parts = str(text).split(",")
        if any(not p.strip() for p in parts):
            raise InputError(f"{option}: empty value in {text!r}")
        out = [_integer(p, option) for p in parts]
    return distinct(out) if unique else out


def grid_size(axes: Mapping[str, Sequence[Any]]) -> int:
    """Number of points of the Cartesian product of ``axes`` (without building it)."""
    return math.prod(len(values) for values in axes.values())


def grid(axes: Mapping[str, Sequence[Any]], limit: int | None = None) -> list[dict[str, Any]]:
    """Cartesian product of named value lists, in the order given (last axis fastest).

    With ``limit``, a product of more than ``limit`` points is refused before it is built.
    """
    if limit is not None and grid_size(axes) > limit:
        sizes = " x ".join(f"{len(v)} {name}" for name, v in axes.items() if len(v) > 1)
        raise InputError(f"the grid has {grid_size(axes)} points ({sizes}); at most {limit} "
                         "in one call: give fewer values or split the grid")
    names = list(axes)
    return [dict(zip(names, combo)) for combo in itertools.product(*(axes[n] for n in names))]


class NumberList(click.ParamType):
    """Click type for a value, a comma list or a log range; converts to ``list[float]``
    (``integer``: ``list[int]``); repeated values are dropped unless ``unique`` is false."""

    name = "numbers"

    def __init__(self, integer: bool = False, unique: bool = True) -> None:
        self.integer = integer
        self.unique = unique

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, list):
            return value
        option = "/".join(param.opts) if param is not None else "value"
        try:
            if self.integer:
                return parse_ints(value, option, self.unique)
            values = parse_values(value, option)
            return distinct(values) if self.unique else values
        except InputError as err:
            message = str(err)
            if param is not None:  # click names the option itself: not twice
                message = message.removeprefix(f"{option}: ")
            self.fail(message, param, ctx)


NUMBERS = NumberList()
INTEGERS = NumberList(integer=True)
COUNTS = NumberList(integer=True, unique=False)
