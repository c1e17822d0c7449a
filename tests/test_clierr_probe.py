"""Probe tests of the command line's entry points, its one-line errors and the shared error
helpers: ``python -m ncsim`` reaching the entry point that keeps freed memory, ``--threads``
refusing counts below one, the run table's number format, and ncsim.errors' message helpers."""

from __future__ import annotations

import math
import runpy
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import error_line, invoke
from thread_helpers import torch_threads

import ncsim.heap
from ncsim.cli import format_run_table
from ncsim.errors import first_line, is_finite_number, listed, short_repr
from ncsim.threads import bounded_threads

TINY = ["simulate", "-K", "2", "-n", "2", "-d", "4", "--t-end", "1"]


def test_python_m_ncsim_goes_through_the_entry_point_that_keeps_freed_memory(monkeypatch):
    """``python -m ncsim`` calls ncsim.cli.main (which raises the heap thresholds), not the
    bare click group."""
    calls = []
    monkeypatch.setattr(ncsim.heap, "keep_freed_memory", lambda: calls.append(True) or True)
    monkeypatch.setattr(sys, "argv", ["ncsim", "--version"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("ncsim", run_name="__main__")
    assert exit_info.value.code == 0
    assert calls == [True]


@pytest.mark.parametrize("count", ["0", "-2"])
def test_threads_below_one_is_one_line_naming_the_range(count):
    """``--threads`` takes a count >= 1; 0 or a negative count exits 2 with click's one line."""
    line = error_line(invoke([*TINY, "--threads", count]))
    assert line == f"Error: Invalid value for '--threads': {count} is not in the range 1<=x<=4096."


def test_run_table_prints_six_significant_digits():
    """The text table prints floats with 6 significant digits and leaves constant columns
    out of the axes."""
    runs = pd.DataFrame({"run_id": ["a"], "status": ["collapsed"], "onset_time": [1234.56789],
                         "final_fn": [0.000123456789]})
    assert format_run_table(runs) == ("run_id    status  onset_time    final_fn\n"
                                      "     a collapsed     1234.57 0.000123457")


def test_listed_names_up_to_the_limit_and_counts_the_rest():
    """listed shows ``limit`` values and says how many more there are; exactly ``limit``
    values get no "and more"."""
    assert listed(range(5)) == "0, 1, 2, 3, 4"
    assert listed(range(7)) == "0, 1, 2, 3, 4 and 2 more"
    assert listed(["a", "b", "c"], limit=2) == "a, b and 1 more"


def test_short_repr_is_cut_to_the_limit_with_an_ellipsis():
    """short_repr keeps a short repr whole and cuts a long one to exactly ``limit`` characters
    ending in "..."."""
    assert short_repr("ab") == "'ab'"
    text = short_repr("x" * 200, limit=10)
    assert text == "'xxxxxx..."
    assert len(text) == 10


def test_first_line_is_the_message_s_first_line_or_the_type_name():
    """first_line gives the first line of a multi-line message, the type name of an empty
    one."""
    assert first_line(ValueError("bad header\nat byte 3")) == "bad header"
    assert first_line(KeyError()) == "KeyError"


@pytest.mark.parametrize("value", [np.float64("nan"), np.float32("inf"), -math.inf, math.nan])
def test_is_finite_number_refuses_nan_and_infinities_of_numpy_too(value):
    """NaN and infinities are not finite numbers, numpy scalars included."""
    assert not is_finite_number(value)


@pytest.mark.parametrize("value", [True, "1.0", None])
def test_is_finite_number_refuses_bools_text_and_none(value):
    """A bool, text or None is not a number."""
    assert not is_finite_number(value)


def test_is_finite_number_takes_python_and_numpy_numbers():
    """Finite Python and numpy ints and floats are finite numbers."""
    assert all(is_finite_number(v) for v in (1, 2.5, np.int64(3), np.float32(0.5)))


def test_bounded_threads_none_leaves_torch_s_count_as_it_is():
    """bounded_threads(None) (no --threads) changes no thread count inside the block."""
    with torch_threads(3):
        with bounded_threads(None):
            assert torch.get_num_threads() == 3
        assert torch.get_num_threads() == 3


def test_bounded_threads_restores_the_count_after_an_error():
    """A bound ends with the previous torch count even when its block raises."""
    with torch_threads(3):
        with pytest.raises(KeyError), bounded_threads(1):
            assert torch.get_num_threads() == 1
            raise KeyError("x")
        assert torch.get_num_threads() == 3
