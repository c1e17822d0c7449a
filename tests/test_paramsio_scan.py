"""Odd-input scan of ncsim.params (numbers, lists, log ranges, integers) and ncsim.io
(table and JSON round trips, damaged files).

Fixed findings: a Parquet file with a damaged footer raised OSError, not InputError; a
Parquet write of duplicated column names raised AttributeError; '1e-400' silently read as 0;
a float-spelled integer such as '9007199254740993.0' lost its last digit. Known limits
(strict xfail): a CSV text field holding a bare carriage return splits its row; a one-column
CSV row of blanks vanishes; a ragged CSV row is read with its values shifted into the index;
a categorical integer column comes back from Parquet as int64.
"""

from __future__ import annotations

import contextlib
import json
import math
import struct

import numpy as np
import pandas as pd
import pytest

from ncsim.errors import InputError
from ncsim.io import read_table, to_jsonable, write_json, write_table
from ncsim.params import COUNTS, INTEGERS, MAX_RANGE_COUNT, NUMBERS, parse_ints, parse_values

# --- params: what held -------------------------------------------------------------------

@pytest.mark.parametrize("text", ["1e-3:1e-1:5", "1,,2", "1,", ",", "", "  ", "0x10", "nan",
                                  "inf", "-inf", "Infinity", "1e400", "\u22121", "+-1", "1 2",
                                  "1e-3...1e-1:3", "..1:3", "1..:3", "1..2:", "1e-3..1e-1:3.0",
                                  "1e-3..1e-1:+3", "0..1:3", "-1..1:3", "1..inf:3", "nan..1:2",
                                  "1e-3..1e-1:0", f"1e-3..1e-1:{MAX_RANGE_COUNT + 1}",
                                  "1e-3..1e-1:" + "9" * 5000])
def test_odd_number_texts_are_input_errors(text):
    """Malformed, non-finite, unicode-minus and out-of-bounds range texts raise InputError."""
    for parse in (parse_values, parse_ints):
        with pytest.raises(InputError):
            parse(text, "--x")


def test_log_range_bounds_order_and_count_one():
    """A log range hits both ends exactly, runs downward when reversed, and count 1 gives lo."""
    assert parse_values("1e-3..1e-1:3") == pytest.approx([1e-3, 1e-2, 1e-1], rel=1e-14)
    down = parse_values("1e-1..1e-3:3")
    assert down[0] == 1e-1 and down[-1] == 1e-3 and down == sorted(down, reverse=True)
    assert parse_values("1e-3..1e-1:1") == [1e-3]
    assert parse_values("1e-3 .. 1e-1 : 3") == parse_values("1e-3..1e-1:3")
    assert parse_values("1..1:3") == [1.0, 1.0, 1.0]
    assert len(parse_values(f"1..2:{MAX_RANGE_COUNT}")) == MAX_RANGE_COUNT


def test_spacing_plus_and_underscores_are_read():
    """' 1 , 2 ', '+1' and '1_000' read as Python's float / int read them."""
    assert parse_values(" 1 , 2 ") == [1.0, 2.0]
    assert parse_values("+1") == [1.0] and parse_ints("+1") == [1]
    assert parse_values("1_000") == [1000.0] and parse_ints("1_000") == [1000]


def test_duplicate_values_run_once_but_counts_keep_them():
    """'1,1.0,1e0' and '0,-0' are one grid value; class counts keep repeats."""
    assert NUMBERS.convert("1,1.0,1e0", None, None) == [1.0]
    assert NUMBERS.convert("0,-0", None, None) == [0.0]
    assert INTEGERS.convert("2,2.0,2e0", None, None) == [2]
    assert COUNTS.convert("3,3,3.0", None, None) == [3, 3, 3]


def test_integer_spellings():
    """Integer options take '2.0', '2e0', '-0' and exact long digits, and refuse '2.5'."""
    assert parse_ints("2.0") == [2] and parse_ints("2e0") == [2] and parse_ints("-0") == [0]
    assert parse_ints("9007199254740993") == [9007199254740993]
    assert parse_ints(str(2**63 - 1)) == [2**63 - 1]
    for text in ("2.5", str(2**63), "-" + str(2**63), "1e20..1e21:2"):
        with pytest.raises(InputError):
            parse_ints(text, "--x")


def test_underflowing_number_is_refused():
    """A nonzero literal that underflows to 0 is refused, as an overflowing one is."""
    with pytest.raises(InputError):
        parse_values("1e-400", "--lambda-w")


def test_float_spelled_integer_is_exact_or_refused():
    """'9007199254740993.0' reads as 9007199254740993 or is refused, never as a neighbour."""
    with contextlib.suppress(InputError):
        assert parse_ints("9007199254740993.0") == [9007199254740993]


# --- io: round trips that held ---------------------------------------------------------------

def _odd_table() -> pd.DataFrame:
    return pd.DataFrame({
        "run_id": ["012345678901", "1234e5678901", "nan"],
        "i": np.array([2**63 - 1, -(2**63), 0], dtype=np.int64),
        "flag": [True, False, True],
        "text": ["\u00e9 \u2713 \u03bb", "a\nb", 'a,"b",c'],
        "maybe": ["a", None, "c"],
        "f": [-0.0, np.nan, np.inf],
        "g": [-np.inf, 5e-324, 1.7976931348623157e308],
        "index": [1, 2, 3],
        "__index_level_0__": [0.1, 1 / 3, 2.0],
    })


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_round_trip_of_odd_values(tmp_path, fmt):
    """Extreme ints, flags, unicode/newline/quote text, None, NaN, +-inf, -0.0, subnormals and
    index-like column names come back equal, signs of zero included, in both formats."""
    frame = _odd_table()
    back = read_table(write_table(frame, tmp_path / f"t.{fmt}"))
    pd.testing.assert_frame_equal(back, frame, check_exact=True)
    assert np.signbit(back["f"].iloc[0])


def test_parquet_keeps_narrow_dtypes_and_empty_tables(tmp_path):
    """Parquet keeps float32 / int32 columns, text categoricals and a table without rows."""
    frame = pd.DataFrame({"a": np.array([0.1, 1e-40], dtype=np.float32),
                          "b": np.array([1, 2], dtype=np.int32),
                          "c": pd.Categorical(["u", "v"])})
    pd.testing.assert_frame_equal(read_table(write_table(frame, tmp_path / "t.parquet")), frame)
    empty = frame[["a", "b"]].iloc[:0]
    back = read_table(write_table(empty, tmp_path / "e.parquet"))
    assert list(back.columns) == ["a", "b"] and len(back) == 0
    assert back.dtypes.to_dict() == empty.dtypes.to_dict()


def test_parquet_keeps_integer_categorical(tmp_path):
    """Categorical columns of integers and floats (one ordered) come back categorical from
    Parquet; text categoricals stay as pyarrow reads them."""
    frame = pd.DataFrame({"x": pd.Categorical([1, 2, 1]),
                          "f": pd.Categorical([0.5, 0.5, 2.0], ordered=True),
                          "s": pd.Categorical(["u", "v", "u"])})
    pd.testing.assert_frame_equal(read_table(write_table(frame, tmp_path / "t.parquet")), frame)


def test_csv_keeps_carriage_return_in_text(tmp_path):
    """A text field holding '\\r' survives a CSV round trip, its row intact."""
    frame = pd.DataFrame({"x": ["a\rb", "c"], "y": [1, 2]})
    pd.testing.assert_frame_equal(read_table(write_table(frame, tmp_path / "t.csv")), frame)


def test_csv_keeps_carriage_return_in_a_categorical_column(tmp_path):
    """A categorical text column holding '\r' also keeps its rows (read back as text)."""
    frame = pd.DataFrame({"x": pd.Categorical(["a\rb", "c", "a\rb"]), "y": [1, 2, 3]})
    back = read_table(write_table(frame, tmp_path / "t.csv"))
    assert back["x"].tolist() == ["a\rb", "c", "a\rb"] and back["y"].tolist() == [1, 2, 3]


def test_csv_keeps_blank_text_row_of_one_column_table(tmp_path):
    """A one-column table whose text is only spaces keeps all its rows through CSV."""
    frame = pd.DataFrame({"x": ["  ", "c", "\t"]})
    pd.testing.assert_frame_equal(read_table(write_table(frame, tmp_path / "t.csv")), frame)


def test_csv_quotes_only_where_a_row_would_be_lost(tmp_path):
    """Plain tables keep minimal quoting (a text with a comma quoted, nothing else); a table
    with a carriage return quotes every text field, numbers left bare."""
    plain = pd.DataFrame({"x": ["a,b", "c"], "y": [1, 2]})
    assert write_table(plain, tmp_path / "p.csv").read_text() == 'x,y\n"a,b",1\nc,2\n'
    odd = pd.DataFrame({"x": ["a\rb", "c"], "y": [1, 2]})
    assert write_table(odd, tmp_path / "o.csv").read_bytes() == b'"x","y"\n"a\rb",1\n"c",2\n'


def test_duplicate_column_names_are_an_input_error(tmp_path):
    """Writing a table with duplicated column names as Parquet raises InputError."""
    with pytest.raises(InputError):
        write_table(pd.DataFrame([[1, 2]], columns=["a", "a"]), tmp_path / "t.parquet")


# --- io: damaged and foreign files ---------------------------------------------------------

@pytest.mark.parametrize("cut", [0, 4, 9, 0.5, -1, -4])
def test_truncated_parquet_is_an_input_error_naming_the_file(tmp_path, cut):
    """A Parquet file cut anywhere (empty included) gives InputError naming the file."""
    data = write_table(_odd_table(), tmp_path / "g.parquet").read_bytes()
    end = int(len(data) * cut) if isinstance(cut, float) else (cut if cut >= 0 else len(data) + cut)
    path = tmp_path / "bad.parquet"
    path.write_bytes(data[:end])
    with pytest.raises(InputError, match="bad.parquet"):
        read_table(path)


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n" + bytes(64), b"a,b\n1,2\n", b"PAR1PAR1"])
def test_foreign_parquet_is_an_input_error(tmp_path, data):
    """A PNG, a CSV or bare magic bytes named .parquet give InputError naming the file."""
    path = tmp_path / "foreign.parquet"
    path.write_bytes(data)
    with pytest.raises(InputError, match="foreign.parquet"):
        read_table(path)


@pytest.mark.parametrize("data", ["a,b\n1,2\n".encode("utf-16"), "x\n\xe9\n".encode("latin-1"),
                                  b'a,b\n"1,2\n'])
def test_foreign_csv_is_an_input_error(tmp_path, data):
    """UTF-16, Latin-1 and an unclosed quote in a .csv give InputError naming the file."""
    path = tmp_path / "foreign.csv"
    path.write_bytes(data)
    with pytest.raises(InputError, match="foreign.csv"):
        read_table(path)


@pytest.mark.parametrize("make", ["zero_footer", "damaged_footer"])
def test_damaged_parquet_footer_is_an_input_error(tmp_path, make):
    """A Parquet file with an unreadable footer gives InputError naming the file."""
    if make == "zero_footer":
        data = b"PAR1" + bytes(8) + b"PAR1"
    else:
        good = bytearray(write_table(_odd_table(), tmp_path / "g.parquet").read_bytes())
        size = struct.unpack("<I", bytes(good[-8:-4]))[0]
        good[len(good) - 8 - size] = 0xFF  # first byte of the footer's metadata
        data = bytes(good)
    path = tmp_path / "bad.parquet"
    path.write_bytes(data)
    with pytest.raises(InputError, match="bad.parquet"):
        read_table(path)


def test_ragged_csv_is_an_input_error(tmp_path):
    """A CSV row with more fields than the header gives InputError, not shifted values."""
    path = tmp_path / "ragged.csv"
    path.write_bytes(b"a,b\n1,2,3\n5,6\n")
    with pytest.raises(InputError, match="ragged.csv.*more fields than the header's 2"):
        read_table(path)


# --- JSON ----------------------------------------------------------------------------------

def test_json_of_nan_inf_and_numpy_scalars(tmp_path):
    """write_json writes strict JSON: NaN (any float width) null, +-inf as text, -0.0 kept."""
    data = {"nan": math.nan, "f32nan": np.float32("nan"), "inf": np.inf, "ninf": -np.float64("inf"),
            "ld": np.longdouble("inf"), "z": -0.0, "big": np.uint64(2**64 - 1),
            "arr": np.array([1.0, np.nan]), "na": pd.NA, "t": (1, 2)}
    text = write_json(data, tmp_path / "d.json").read_text()
    back = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert back == {"nan": None, "f32nan": None, "inf": "inf", "ninf": "-inf", "ld": "inf",
                    "z": -0.0, "big": 2**64 - 1, "arr": [1.0, None], "na": None, "t": [1, 2]}
    assert math.copysign(1, back["z"]) == -1
    assert list(back) == list(data)
    assert to_jsonable(np.float16(1.5)) == 1.5 and type(to_jsonable(np.int8(3))) is int
