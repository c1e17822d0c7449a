"""Result tables, run metadata and atomic writes.

Tables are pandas DataFrames written as Parquet (default) or CSV. Every write goes to a
temporary file in the target folder and is renamed into place, so a reader never sees a
partial file and an interrupted write leaves the previous file intact.

Run table: one row per run (every spec field, ``status``, ``steps``, ``t_final``, final
metrics, ``onset_time``, ``fn_at_onset``, theory columns, provenance).
Trajectory table (long format): ``run_id, time, time_unit, phase, loss, fn, nc1, nc1_trace,
nc2_etf, ...`` one row per run and record time.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ncsim.errors import InputError

FORMATS = ("parquet", "csv")
TRAJECTORY_KEYS = ("run_id", "time", "time_unit", "phase")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; results are shared files
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def table_path(stem: str | os.PathLike, fmt: str) -> Path:
    """``stem`` with the extension of ``fmt`` ("parquet" or "csv")."""
    if fmt not in FORMATS:
        raise InputError(f"unknown table format {fmt!r}; allowed: {', '.join(FORMATS)}")
    return Path(stem).with_suffix(f".{fmt}")


def write_table(frame: pd.DataFrame, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write a table atomically; the format follows ``fmt`` or the file extension.

    The extension is read in any case (``.CSV`` is CSV, as :func:`read_table` reads it);
    without ``fmt`` it must be ``.csv`` or ``.parquet``, since the reader goes by it.
    In Parquet a column of objects that mixes kinds (a run table with a scalar decay in one
    run and per-layer decays, written "1e-3,2e-3", in another) is written as text, and one
    mixing integers and floats as floats (:func:`parquet_columns`). In CSV only fields that
    need it are quoted, unless a row would be lost (:func:`_needs_quotes`): then every text.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if fmt is None and suffix not in (".csv", ".parquet"):
        raise InputError(f"table {path}: name the file .csv or .parquet (the extension gives "
                         "the format)")
    fmt = fmt or suffix.lstrip(".")
    if fmt not in FORMATS:
        raise InputError(f"unknown table format {fmt!r}; allowed: {', '.join(FORMATS)}")
    if suffix in (".csv", ".parquet") and suffix != f".{fmt}":
        raise InputError(f"table {path} has the extension {path.suffix} but the format is "
                         f"{fmt!r}; name the file .{fmt} or give the format of its extension")
    if fmt == "csv":
        quoting = csv.QUOTE_NONNUMERIC if _needs_quotes(frame) else csv.QUOTE_MINIMAL
        return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, quoting=quoting))
    plain = parquet_columns(frame)
    return atomic_write(path, lambda tmp: plain.to_parquet(tmp, index=False))


def _needs_quotes(frame: pd.DataFrame) -> bool:
    """Whether CSV must quote every text field of ``frame`` to read back its rows: a text
    holding a carriage return (left unquoted, it ends the row) or, in a table of one column, a
    text of blanks only (an unquoted blank line, which the reader skips). Otherwise only the
    fields that need it are quoted."""
    for column in frame.columns:
        kind = frame[column].dtype
        if isinstance(kind, pd.CategoricalDtype) or pd.api.types.is_string_dtype(kind):
            texts = [v for v in frame[column] if isinstance(v, str)]
            if any("\r" in v for v in texts):
                return True
            if frame.shape[1] == 1 and any(v.strip() == "" for v in texts):
                return True
    return False


def parquet_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with columns Parquet can hold: an object column mixing integers and floats
    (and missing values) becomes floats; one mixing other kinds (numbers and text, tuples,
    flags and numbers) becomes text, missing values kept; Python and numpy scalars of one kind
    (``True`` and ``numpy.bool_``, ``int`` and ``numpy.int64``) stay as they are. A
    categorical column whose categories mix kinds (which pyarrow refuses) is first made an
    object column and follows the same rule; other categorical columns stay. In the
    other object columns a missing value of a kind Parquet does not take as missing (a numpy
    float32 NaN) becomes None. Other columns are unchanged."""
    repeated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
    if repeated:
        raise InputError(f"the table has duplicated column names ({', '.join(repeated)}); "
                         "give every column its own name")
    out = frame.copy()
    for col in out.columns:
        if _mixed_categories(out[col]):
            out[col] = out[col].astype(object)  # then handled as an object column
        if out[col].dtype != object:
            continue
        odd = out[col].map(lambda v: isinstance(v, np.floating) and not isinstance(v, float)
                           and v != v)  # a NaN of float16 / float32 / longdouble
        if odd.any():
            out[col] = out[col].where(~odd, None)
        kinds = {_value_kind(v) for v in out[col] if not _is_missing(v)}
        if len(kinds) < 2:
            continue
        if kinds <= {"integer", "float"}:
            out[col] = out[col].astype(float)
        else:
            out[col] = out[col].map(lambda v: v if _is_missing(v) else str(v))
    return out


def _mixed_categories(column: pd.Series) -> bool:
    """Whether ``column`` is categorical with categories of several kinds (1 and "x"), which
    pyarrow refuses; categories of one kind are written as a Parquet dictionary column."""
    if not isinstance(column.dtype, pd.CategoricalDtype):
        return False
    return len({_value_kind(v) for v in column.cat.categories}) > 1


def _value_kind(value: Any) -> object:
    """What Parquet stores ``value`` as: "flag" (bool, numpy bool), "integer" (int, numpy
    integers), "float" (float, numpy floats), else its type; Python and numpy scalars of one
    kind share a column as they are (pyarrow writes both, integers exactly)."""
    if isinstance(value, (bool, np.bool_)):
        return "flag"
    if isinstance(value, (int, np.integer)):
        return "integer"
    if isinstance(value, (float, np.floating)):
        return "float"
    return type(value)


def _is_missing(value: Any) -> bool:
    """None, NaN, pd.NA or NaT; any other value (an array included) is not missing."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, (float, np.floating)) and value != value


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a Parquet or CSV table written by :func:`write_table` (the extension, ``.parquet``
    or ``.csv`` in any case, gives the format; any other is refused).

    In a CSV file the run identifiers (``run_id`` and columns ending in ``_run_id``) are read
    as text: a hexadecimal identifier such as ``012345678901`` or ``1234e5678901`` would
    otherwise be read as a number. In a column of text only an empty field is a missing
    value (what :func:`write_table` writes for NaN and None): "NA", "None", "null" or "n/a"
    stay text. A column of numbers (at least one finite number, every other field a number
    or one of pandas' missing-value texts) also reads "nan" and "NA" as NaN.

    CSV keeps no types: a column of integers with a missing value comes back as float64, a
    boolean column with a missing value as objects, a column without any value (all
    missing, or a table without rows) as float64 or objects (Parquet keeps them all; a
    categorical column of numbers keeps the categories its values use). A table without
    columns is read back as an empty table; a CSV whose first row has more fields than its
    header is refused (pandas would read the surplus as a row index, shifting the values).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"table {path} does not exist")
    if path.is_dir():
        raise InputError(f"table {path} is a folder, not a table file; give the path of a "
                         f".csv or .parquet file")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise InputError(f"table {path}: cannot tell its format from the extension "
                         f"{path.suffix or '(none)'}; name it .csv or .parquet")
    try:
        return _read_parquet_table(path) if suffix == ".parquet" else _read_csv_table(path)
    except PermissionError:
        raise  # the system's refusal, said as such by the command line
    # UnicodeDecodeError, ArrowInvalid (ValueError); a footer pyarrow cannot deserialise
    # (OSError); ArrowNotImplementedError (NotImplementedError) and KeyError from damaged bytes
    except (ValueError, OSError, KeyError, NotImplementedError, pd.errors.ParserError) as err:
        first = (str(err).splitlines()[0] if str(err) else type(err).__name__).rstrip(". ")
        raise InputError(f"cannot read table {path}: {first}; it is damaged or not a "
                         f"{'Parquet' if suffix == '.parquet' else 'UTF-8 CSV'} file (write "
                         "it again, or remove it to start afresh)") from None


def _read_parquet_table(path: Path) -> pd.DataFrame:
    """The Parquet part of :func:`read_table`: a categorical column of numbers, which pyarrow
    reads back as its values, is made categorical again from the pandas metadata (with the
    categories its values use; unused ones are not kept)."""
    import pyarrow.parquet as pq

    frame = pd.read_parquet(path)
    columns = (pq.read_schema(path).pandas_metadata or {}).get("columns", [])
    for entry in columns:
        name = entry.get("name")
        if entry.get("pandas_type") == "categorical" and name in frame.columns \
                and not isinstance(frame[name].dtype, pd.CategoricalDtype):
            ordered = bool((entry.get("metadata") or {}).get("ordered", False))
            frame[name] = pd.Categorical(frame[name], ordered=ordered)
    return frame


def _read_csv_table(path: Path) -> pd.DataFrame:
    """The CSV part of :func:`read_table`."""
    try:
        header = pd.read_csv(path, nrows=0).columns
    except pd.errors.EmptyDataError:  # what to_csv writes for a table without columns
        return pd.DataFrame()
    ids = {c: str for c in header if c == "run_id" or str(c).endswith("_run_id")}
    text = pd.read_csv(path, dtype=ids, keep_default_na=False, na_values=[""])
    if not text.index.equals(pd.RangeIndex(len(text))):  # pandas' index of surplus fields
        raise ValueError(f"a row has more fields than the header's {len(header)}")
    # text columns that may be numbers with "NA" or "nan" written for missing: read again,
    # those columns only, with pandas' missing-value texts as NaN
    maybe = [c for c in text.columns if c not in ids
             and not pd.api.types.is_numeric_dtype(text[c]) and _has_a_number(text[c])]
    if maybe:
        loose = pd.read_csv(path, usecols=maybe)
        for column in maybe:
            if pd.api.types.is_numeric_dtype(loose[column]):
                text[column] = loose[column]
    return text


def _has_a_number(column: pd.Series) -> bool:
    """Whether a text column holds at least one finite number (a column of numbers that
    pandas reads as text because of a missing-value text, not a column of labels such as
    "NA" or "None")."""
    numbers = pd.to_numeric(column.dropna(), errors="coerce").to_numpy(dtype=float)
    return bool(np.isfinite(numbers).any())


def write_json(data: Any, path: str | os.PathLike) -> Path:
    """Write strict JSON atomically (:func:`to_jsonable`: NaN as null, an infinity as the
    string "inf" or "-inf"; a value of a type JSON does not hold, such as a set, raises
    ``TypeError``).

    Keys keep the order of ``data``: an order can carry meaning (the grid axes of a study,
    whose runs are their Cartesian product in that order), and a read gives it back.
    """
    text = json.dumps(to_jsonable(data), indent=2, allow_nan=False)
    return atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))


def to_jsonable(value: Any) -> Any:
    """Plain JSON types: NaN -> None, an infinity -> the string "inf" / "-inf" (a value that
    is infinite, such as an onset predicted never, stays apart from one that is undefined),
    numpy scalars -> Python numbers (a long double -> the nearest float), numpy arrays (0-d
    included) and tuples -> (nested) lists or their one value, paths -> text."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):  # a 0-d array gives its one value
        return to_jsonable(value.tolist())
    if isinstance(value, np.floating):  # float(): item() keeps a long double as it is
        value = float(value)
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def provenance(device: str = "cpu", dtype: str = "float64") -> dict[str, Any]:
    """Versions and machine facts recorded with every result. ``torch_threads`` is torch's
    intra-op thread count: float reductions, hence a trained network's bits, depend on it
    (a training run repeats bit for bit only at the same count)."""
    import torch

    from ncsim import __version__

    return {
        "ncsim_version": __version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "dtype": dtype,
    }
