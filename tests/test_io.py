"""Atomic table writes."""

from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pandas as pd
import pytest

from ncsim.errors import InputError
from ncsim.io import read_table, write_json, write_table


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_write_read_round_trip_and_permissions(tmp_path, suffix):
    frame = pd.DataFrame({"run_id": ["a", "b"], "fn": [1.5, 2.0]})
    path = write_table(frame, tmp_path / f"runs{suffix}")
    pd.testing.assert_frame_equal(read_table(path), frame)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_failed_write_keeps_the_old_file(tmp_path):
    path = write_table(pd.DataFrame({"x": [1]}), tmp_path / "t.csv")

    class Broken(pd.DataFrame):
        def to_csv(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_table(Broken({"x": [2]}), path)
    assert read_table(path)["x"].tolist() == [1]
    assert len(list(tmp_path.iterdir())) == 1


def test_unknown_format_and_missing_table(tmp_path):
    with pytest.raises(InputError, match="unknown table format"):
        write_table(pd.DataFrame(), tmp_path / "t.x", fmt="xlsx")
    with pytest.raises(InputError, match="does not exist"):
        read_table(tmp_path / "none.parquet")


@pytest.mark.parametrize(("name", "content", "said"), [
    ("latin1.csv", b"run_id,x\nabc,1\n\xe9t\xe9,2\n", r"'utf-8' codec can't decode byte 0xe9"),
    ("cut.csv", b'a,b\n1,2\n"never closed\n', r"EOF inside string"),
    ("junk.parquet", b"PAR1 not a parquet file", r"magic bytes not found"),
])
def test_damaged_or_foreign_table_is_an_input_error_naming_the_file(tmp_path, name, content,
                                                                    said):
    """A table that is not UTF-8 text, a cut CSV and a damaged Parquet file raise InputError
    (one line naming the file, the reader's reason and what to do), not a raw
    UnicodeDecodeError, ParserError or ArrowInvalid."""
    path = tmp_path / name
    path.write_bytes(content)
    kind = "Parquet" if name.endswith(".parquet") else "UTF-8 CSV"
    with pytest.raises(InputError, match=rf"^cannot read table .*{name}: .*{said}.*; it is "
                                         rf"damaged or not a {kind} file \(write it again, "
                                         r"or remove it to start afresh\)$") as err:
        read_table(path)
    assert "\n" not in str(err.value)


def test_csv_keeps_text_that_reads_like_a_missing_value(tmp_path):
    """In a CSV table only an empty field is missing: the texts "NA", "None", "null", "n/a"
    and "nan" come back as written (pandas' defaults would read them as NaN); NaN and None
    come back missing, infinities and booleans as written; Parquet gives the same values."""
    frame = pd.DataFrame({"run_id": ["012345678901", "1234e5678901", "r2", "r3", "r4", "r5"],
                          "label": ["NA", "None", "null", "n/a", "nan", None],
                          "x": [1.0, np.nan, np.inf, -np.inf, 0.5, 2.0],
                          "ok": [True, False, True, True, False, True],
                          "note": ["é ∞", "a,b", 'say "x"', "two\nlines", "", "z"]})
    for suffix in (".csv", ".parquet"):
        back = read_table(write_table(frame, tmp_path / f"t{suffix}"))
        assert back["run_id"].tolist() == frame["run_id"].tolist()
        assert back["label"].iloc[:5].tolist() == ["NA", "None", "null", "n/a", "nan"]
        assert pd.isna(back["label"].iloc[5])
        np.testing.assert_array_equal(back["x"].to_numpy(), frame["x"].to_numpy())
        assert back["ok"].dtype == bool and back["ok"].tolist() == frame["ok"].tolist()
        assert back["note"].iloc[:4].tolist() == frame["note"].iloc[:4].tolist()


def test_csv_numbers_written_as_nan_text_stay_numbers(tmp_path):
    """A numeric column of a CSV written elsewhere with "nan", "NaN" or "NA" for a missing
    value is still read as float64."""
    path = tmp_path / "log.csv"
    path.write_text("run_id,fn,label\nr0,1.5,NA\nr1,nan,x\nr2,NaN,\nr3,NA,None\n")
    back = read_table(path)
    assert back["fn"].dtype == np.float64
    np.testing.assert_array_equal(back["fn"].to_numpy(), [1.5, np.nan, np.nan, np.nan])
    assert back["label"].iloc[[0, 1, 3]].tolist() == ["NA", "x", "None"]


def test_tables_without_columns_or_rows_read_back(tmp_path):
    """A table without columns reads back empty from CSV too (pandas raises
    EmptyDataError on the file it writes); a table without rows keeps its columns."""
    for suffix in (".csv", ".parquet"):
        assert read_table(write_table(pd.DataFrame(), tmp_path / f"e{suffix}")).shape == (0, 0)
        empty = pd.DataFrame({"run_id": pd.Series([], dtype=str), "fn": pd.Series([], dtype=float)})
        back = read_table(write_table(empty, tmp_path / f"rows{suffix}"))
        assert back.columns.tolist() == ["run_id", "fn"] and len(back) == 0


def test_write_json_is_strict_json(tmp_path):
    """write_json: NaN (also numpy's) as null, infinities as "inf" / "-inf", numpy numbers as
    numbers, keys in order; the file parses as strict JSON."""
    data = {"b": np.float32("nan"), "a": [math.inf, -np.inf, np.int64(3), np.bool_(True)],
            "c": pd.NA}
    path = write_json(data, tmp_path / "x.json")

    def refuse(name):
        raise ValueError(name)

    back = json.loads(path.read_text(), parse_constant=refuse)
    assert back == {"b": None, "a": ["inf", "-inf", 3, True], "c": None}
    assert list(back) == ["b", "a", "c"]


def test_the_extension_gives_the_format_in_any_case(tmp_path):
    """'t.CSV' is written as CSV (it was Parquet under a .CSV name) and read back; a name
    without a table extension needs the format."""
    frame = pd.DataFrame({"run_id": ["a"], "fn": [1.5]})
    path = write_table(frame, tmp_path / "t.CSV")
    assert path.read_text().splitlines() == ["run_id,fn", "a,1.5"]
    pd.testing.assert_frame_equal(read_table(path), frame)
    with pytest.raises(InputError, match="name the file .csv or .parquet"):
        write_table(frame, tmp_path / "t.txt")
    assert not (tmp_path / "t.txt").exists()
