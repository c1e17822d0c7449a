"""Numeric option values: one value, a comma list, or a log range ``lo..hi:count``.

Several such options together make a grid (their Cartesian product).
"""

from __future__ import annotations

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
    return value


def parse_values(text: str | float | int, option: str = "value") -> list[float]:
    """Parse ``"0.1"``, ``"1,2,3"`` or the log range ``"1e-4..1e-1:16"`` into floats.

    A log range ``lo..hi:count`` gives ``count`` log-spaced values from ``lo`` to ``hi``
    (both > 0, count >= 1; count = 1 gives ``lo``).
    """
    if isinstance(text, (int, float)):
        return [_number(str(text), option)]
    text = text.strip()
    if ".." in text:
        match = _RANGE.match(text)
        if match is None:
            raise InputError(
                f"{option}: malformed range {text!r}; write lo..hi:count, e.g. 1e-4..1e-1:16"
            )
        lo, hi = _number(match.group(1), option), _number(match.group(2), option)
        count = int(match.group(3))
        if lo <= 0 or hi <= 0 or count < 1:
            raise InputError(
                f"{option}: log range {text!r} needs lo > 0, hi > 0 and count >= 1"
            )
        return [float(v) for v in np.geomspace(lo, hi, count)]
    parts = [p for p in text.split(",")]
    if not parts or any(not p.strip() for p in parts):
        raise InputError(f"{option}: empty value in {text!r}")
    return [_number(p, option) for p in parts]


def parse_ints(text: str | int, option: str = "value", unique: bool = True) -> list[int]:
    """Like :func:`parse_values` for integer options (ranges are rounded to integers);
    repeated values are dropped unless ``unique`` is false."""
    values = parse_values(text, option)
    out = []
    for v in values:
        if ".." not in str(text) and v != int(v):
            raise InputError(f"{option}: {v} is not an integer; give whole numbers")
        out.append(int(round(v)))
    return list(dict.fromkeys(out)) if unique else out


def grid(axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Cartesian product of named value lists, in the order given (last axis fastest)."""
    names = list(axes)
    return [dict(zip(names, combo)) for combo in itertools.product(*(axes[n] for n in names))]


class NumberList(click.ParamType):
    """Click type for a value, a comma list or a log range; converts to ``list[float]``
    (``integer``: ``list[int]``, repeated values dropped unless ``unique`` is false)."""

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
            return parse_values(value, option)
        except InputError as err:
            message = str(err)
            if param is not None:  # click names the option itself: not twice
                message = message.removeprefix(f"{option}: ")
            self.fail(message, param, ctx)


NUMBERS = NumberList()
INTEGERS = NumberList(integer=True)
COUNTS = NumberList(integer=True, unique=False)
