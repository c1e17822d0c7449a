"""Third probe of ncsim.io: the exact refusals of bad names and formats, a failing writer
that removed its own temporary file, JSON refusals that leave the earlier file, the ASCII
JSON file, and the branches of to_jsonable for containers of other types (dict subclasses,
named tuples) and for numpy arrays of integers, flags and text."""

from __future__ import annotations

import json
from collections import Counter, OrderedDict, defaultdict, namedtuple

import numpy as np
import pandas as pd
import pytest
import torch

from ncsim.errors import InputError
from ncsim.io import atomic_write, read_table, table_path, to_jsonable, write_json, write_table

_FRAME = pd.DataFrame({"run_id": ["a"], "fn": [1.5]})


# ----------------------------------------------------------------------------- atomic writes


def test_a_writer_that_removed_its_temporary_file_then_failed_raises_its_own_error(tmp_path):
    """When the writer deletes the temporary file and then raises, its error comes out (the
    clean-up tolerates a temporary file already gone) and the old file stays."""
    target = write_json({"a": 1}, tmp_path / "t.json")

    def gone_then_fail(tmp):
        tmp.unlink()
        raise RuntimeError("writer gave up")

    with pytest.raises(RuntimeError, match="^writer gave up$"):
        atomic_write(target, gone_then_fail)
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]
    assert json.loads(target.read_text()) == {"a": 1}


# ----------------------------------------------------------------------------- refusals


def test_an_unknown_format_is_refused_with_the_allowed_formats(tmp_path):
    """table_path and write_table refuse 'xlsx' with the same one line listing the allowed
    formats in order, and write nothing."""
    said = "unknown table format 'xlsx'; allowed: parquet, csv"
    with pytest.raises(InputError) as err:
        table_path(tmp_path / "runs", "xlsx")
    assert str(err.value) == said
    with pytest.raises(InputError) as err:
        write_table(_FRAME, tmp_path / "runs.xlsx", fmt="xlsx")
    assert str(err.value) == said
    assert list(tmp_path.iterdir()) == []


def test_a_format_against_the_extension_names_the_extension_as_written(tmp_path):
    """'t.CSV' with fmt='parquet' is refused naming the extension as written (.CSV), the
    format and both ways out; no file is written."""
    path = tmp_path / "t.CSV"
    with pytest.raises(InputError) as err:
        write_table(_FRAME, path, fmt="parquet")
    assert str(err.value) == (f"table {path} has the extension .CSV but the format is "
                              "'parquet'; name the file .parquet or give the format of its "
                              "extension")
    assert list(tmp_path.iterdir()) == []


def test_a_name_without_a_table_extension_is_refused_exactly(tmp_path):
    """write_table without fmt to 't.txt' says to name the file .csv or .parquet and why."""
    path = tmp_path / "t.txt"
    with pytest.raises(InputError) as err:
        write_table(_FRAME, path)
    assert str(err.value) == (f"table {path}: name the file .csv or .parquet (the extension "
                              "gives the format)")
    assert not path.exists()


def test_a_missing_table_is_named_by_its_whole_path(tmp_path):
    """read_table of a missing file names the path given, folders included."""
    path = tmp_path / "sub" / "runs.csv"
    with pytest.raises(InputError) as err:
        read_table(path)
    assert str(err.value) == f"table {path} does not exist"


# ----------------------------------------------------------------------------- write_json


@pytest.mark.parametrize(("value", "kind"), [({1, 2}, "set"),
                                             (torch.tensor([1.0, 2.0]), "Tensor")])
def test_write_json_refuses_a_type_json_does_not_hold_and_keeps_the_old_file(tmp_path, value,
                                                                            kind):
    """A set or a torch tensor is a TypeError naming its type (not written as its text); the
    earlier file stays and no temporary file is left."""
    path = write_json({"a": 1}, tmp_path / "x.json")
    with pytest.raises(TypeError, match=f"^Object of type {kind} is not JSON serializable$"):
        write_json({"a": value}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
    assert json.loads(path.read_text()) == {"a": 1}


def test_write_json_file_is_ascii_and_reads_back_unicode(tmp_path):
    """Keys and text beyond ASCII are written as escapes: the file is ASCII whatever the
    locale's encoding, and a read gives the text back."""
    data = {"λ_w": "é ∞ 日本", "emoji": ["😀"]}
    path = write_json(data, tmp_path / "u.json")
    raw = path.read_bytes()
    assert raw.isascii() and b"\\u03bb_w" in raw
    assert json.loads(raw.decode("ascii")) == data


# ----------------------------------------------------------------------------- to_jsonable


def test_dict_subclasses_become_plain_dicts_with_plain_values():
    """OrderedDict, defaultdict and Counter are converted like dicts: text keys, numpy
    numbers plain, NaN null, infinities as text."""
    ordered = OrderedDict([(np.int64(2), np.float64("nan")), ("b", np.float32(np.inf))])
    got = to_jsonable(ordered)
    assert type(got) is dict and got == {"2": None, "b": "inf"} and list(got) == ["2", "b"]
    plenty = defaultdict(list, {"x": [np.int32(1), -np.inf]})
    assert to_jsonable(plenty) == {"x": [1, "-inf"]} and type(to_jsonable(plenty)) is dict
    counts = Counter({np.int64(7): 3})
    assert to_jsonable(counts) == {"7": 3} and type(to_jsonable(counts)) is dict


def test_named_tuples_and_list_subclasses_become_lists_with_plain_values(tmp_path):
    """A named tuple and a list subclass are lists of plain values (NaN null, numpy numbers
    plain), so write_json takes them."""
    Point = namedtuple("Point", "x y")

    class Row(list):
        pass

    data = {"p": Point(np.float64("nan"), np.int64(2)), "r": Row([np.float32(-np.inf)])}
    got = to_jsonable(data)
    assert got == {"p": [None, 2], "r": ["-inf"]}
    assert type(got["p"]) is list and type(got["r"]) is list
    assert json.loads(write_json(data, tmp_path / "n.json").read_text()) == got


def test_integer_flag_and_text_arrays_keep_their_types():
    """Arrays of int64 (its extremes exact), flags and text give Python ints, bools and str,
    never floats."""
    ints = to_jsonable(np.array([np.iinfo(np.int64).min, 0, np.iinfo(np.int64).max]))
    assert ints == [-(2**63), 0, 2**63 - 1] and all(type(v) is int for v in ints)
    flags = to_jsonable(np.array([True, False]))
    assert flags == [True, False] and all(type(v) is bool for v in flags)
    assert to_jsonable(np.array(["a", "é"])) == ["a", "é"]
    assert json.dumps(to_jsonable(np.array([[2**63 - 1], [-1]]))) == "[[9223372036854775807], [-1]]"


def test_a_zero_dimensional_array_is_a_plain_number():
    """A 0-d array (np.asarray of a number) becomes its number, inf as "inf"."""
    assert to_jsonable(np.array(1.5)) == 1.5
    assert to_jsonable(np.array(np.inf)) == "inf"
    assert to_jsonable(np.array(-np.inf, dtype=np.float32)) == "-inf"
    assert to_jsonable(np.array(np.nan)) is None
    assert to_jsonable(np.array(7, dtype=np.int64)) == 7
    assert type(to_jsonable(np.array(7, dtype=np.int64))) is int
    assert to_jsonable({"x": np.array(True)}) == {"x": True}


def test_nested_arrays_become_nested_lists_of_plain_values():
    """A 2-d float array with NaN and inf becomes nested lists with null and "inf"; an
    array of long doubles gives Python floats."""
    grid = np.array([[1.0, np.nan], [np.inf, -2.5]])
    assert to_jsonable(grid) == [[1.0, None], ["inf", -2.5]]
    long = to_jsonable(np.array([0.25, np.nan, -np.inf], dtype=np.longdouble))
    assert long == [0.25, None, "-inf"]
    assert all(type(v) in (float, str) for v in long if v is not None)


def test_a_longdouble_is_a_plain_number(tmp_path):
    """A numpy longdouble is written as a number, a longdouble NaN as null."""
    path = write_json({"a": np.longdouble(0.5), "b": np.longdouble("nan"),
                       "c": np.longdouble("-inf")}, tmp_path / "l.json")
    assert json.loads(path.read_text()) == {"a": 0.5, "b": None, "c": "-inf"}
    assert type(to_jsonable(np.longdouble(0.5))) is float
