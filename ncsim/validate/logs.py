"""Read training logs (the paper's CSV schema and ncsim's own logs) into the trajectory schema.

The paper's per-epoch logs (arXiv 2604.00230, released CSVs) have the columns
``epoch, phase, train, test, nc1, nc2, nc3, feat_norm``; NC columns are empty until the training
accuracy reaches 0.99. Some variants lack ``phase`` (intervention logs hold only the MSE phase)
or name the accuracy ``train_acc``. Their ``nc1`` is the trace ratio tr(Sigma_W)/tr(Sigma_B),
``nc2`` the mean |cos + 1/(K-1)| and ``nc3`` the paper's 1 - mean cos, so they map to ncsim's
``nc1_trace``, ``nc2_angle`` and ``nc3_paper``.

Output (long format, one row per run and logged epoch): ``run_id, time, time_unit ("epoch"),
phase (1 = cross-entropy, 2 = MSE, <NA> when the log has no phases), fn, nc1_trace, nc2_angle,
nc3_paper, accuracy, test_accuracy`` plus any extra numeric column, and the run labels ``model,
dataset, condition, seed``. ncsim's own training logs already use this schema and are read as
they are.

Checks (each failure is an :class:`InputError` naming the log and what to give): numbers where
numbers belong (text such as ``ten`` is never read as a gap), a time on every record, nc1 >= 0,
phase numbers (paper logs: 1 or 2; text labels such as ``CE`` / ``MSE`` are refused, as they
would switch off the phase-2 onset rule), a phase on every record of a run or on none, and one
record per run, time and phase (identical copies count once).

Labels from a file name (:func:`run_labels`): ``<condition>_s<seed>`` gives condition and seed;
model and dataset only for the paper's documented names (its logs README, "File name ->
condition"), ``unlabelled`` otherwise.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import lzma
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ncsim.errors import InputError, listed

#: paper column -> trajectory column
PAPER_COLUMNS = {
    "epoch": "time",
    "feat_norm": "fn",
    "nc1": "nc1_trace",
    "nc2": "nc2_angle",
    "nc3": "nc3_paper",
    "train": "accuracy",
    "train_acc": "accuracy",
    "test": "test_accuracy",
    "test_acc": "test_accuracy",
}
PAPER_REQUIRED = ("epoch", "nc1", "feat_norm")
NCSIM_REQUIRED = ("time", "fn", "nc1_trace")
LABELS = ("model", "dataset", "condition", "seed")

#: the paper's documented file-name families (rupa2026-logs README, "File name -> condition"
#: and "Variants"): a condition matching the pattern, in a name ``<condition>_s<seed>``, is a run
#: of that (model, dataset) cell
PAPER_FAMILIES: tuple[tuple[str, str, str], ...] = (
    (r"depth\d+", "mlp", "mnist"),
    (r"width\d+", "mlp", "mnist"),
    (r"wd\d[\dep.\-]*", "mlp", "mnist"),  # wd1e-05, wd5e-05, wd0p0005
    (r"act[A-Za-z]+", "mlp", "mnist"),  # actGELU, actTanh
    (r"gelu", "mlp", "mnist"),  # gelu_s{3,4}: more GELU seeds
    (r"intervention_(?:control|scale_down|scale_up)", "mlp", "mnist"),
    (r"resnet20_mnist", "resnet20", "mnist"),
    (r"cifar10", "resnet20", "cifar10"),
    (r"mlp5_cifar10", "mlp5", "cifar10"),
    (r"e8_mlp_mnist(?:_[a-z]+)?", "mlp5", "mnist"),  # early_warning/e8_mlp_mnist_adam_s*
    (r"vit_mnist(?:_[a-z]+)?", "vit", "mnist"),  # vit_crossarch/vit_mnist_adam_s*
)
#: the paper's documented logs named without a seed -> (model, dataset)
PAPER_UNSEEDED = {"ce_only_ablation": ("mlp", "mnist")}
#: the logs README lists ``gelu_s{3,4}.csv`` as GELU runs next to ``actGELU_s*.csv``
CONDITION_ALIASES = {"gelu": "actGELU"}
#: suffixes of compressed files (pandas reads them), removed before the run id is read
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip")
UNLABELLED = "unlabelled"
_NAME = re.compile(r"^(?P<condition>.+?)_s(?P<seed>\d+)(?P<suffix>_[A-Za-z0-9]+)?$")


def log_name(path: str | Path) -> str:
    """A log's run id: its file name without a compression suffix and its table suffix
    (``width128_s0.csv.gz`` -> ``width128_s0``)."""
    path = Path(path)
    if path.suffix.lower() in COMPRESSION_SUFFIXES:
        path = path.with_suffix("")
    return path.stem


def _paper_cell(base: str, seeded: bool) -> tuple[str, str] | None:
    """(model, dataset) of a documented paper log name, None for any other name."""
    if not seeded:
        return PAPER_UNSEEDED.get(base)
    for pattern, model, dataset in PAPER_FAMILIES:
        if re.fullmatch(pattern, base):
            return model, dataset
    return None


def run_labels(name: str) -> dict[str, object]:
    """Model, dataset, condition and seed read from a log's file stem.

    ``<condition>_s<seed>[_suffix]`` gives condition and seed (``depth2_s1_ext`` -> condition
    ``depth2_ext``, seed 1); other names are their own condition with seed <NA>. Model and
    dataset come only from the paper's documented names (:data:`PAPER_FAMILIES`,
    :data:`PAPER_UNSEEDED`): ``width128_s0`` -> (mlp, mnist), ``cifar10_s2`` -> (resnet20,
    cifar10); any other name (``baseline``, ``wd0p0005``, ``myrun_s0``) -> ``unlabelled``.
    ``gelu_s3`` is a GELU run: condition ``actGELU`` (:data:`CONDITION_ALIASES`).
    """
    match = _NAME.match(name)
    if match:
        base, suffix = match.group("condition"), match.group("suffix") or ""
        seed: object = int(match.group("seed"))
    else:
        base, suffix, seed = name, "", pd.NA
    cell = _paper_cell(base, seeded=match is not None)
    if cell is None:
        return {"model": UNLABELLED, "dataset": UNLABELLED, "condition": base + suffix,
                "seed": seed}
    condition = CONDITION_ALIASES.get(base, base) + suffix
    return {"model": cell[0], "dataset": cell[1], "condition": condition, "seed": seed}


def _read_frame(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise InputError(f"log file {path} does not exist; check the path")
    parquet = path.suffix.lower() == ".parquet"
    # before pandas, which would warn of what it refuses
    checked = not parquet and _check_whole_records(path)
    try:
        if parquet:
            return pd.read_parquet(path)
        with warnings.catch_warnings():
            if checked:  # extra fields are blank (checked): pandas' "loss of data" loses none
                warnings.simplefilter("ignore", pd.errors.ParserWarning)
            frame = pd.read_csv(path, index_col=False)  # never a data column as the row index
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise InputError(f"cannot read log {path}: {str(err).splitlines()[0]}; a log is a CSV "
                         "file or a Parquet file (.parquet)") from None
    # a header ending in commas names blank columns (pandas' "Unnamed: i"): nothing to keep
    frame = frame.drop(columns=[c for c in frame.columns
                                if str(c).startswith("Unnamed: ") and frame[c].isna().all()])
    # " phase" is the phase column (a header written with spaces after its commas)
    frame.columns = [c.strip() if isinstance(c, str) else c for c in frame.columns]
    _check_unique_header(path, [str(c) for c in frame.columns])
    return frame


_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def _check_whole_records(path: Path) -> bool:
    """Refuse a CSV log cut short or misaligned: a last line without a line end, a line with
    fewer fields than the header (pandas would read the missing fields as blanks, and a number
    cut after its first digits as that smaller number: ``0.01026`` cut to ``0.0`` reads as a
    collapse), a line with more fields than the header unless the extra ones are blank (a
    trailing comma; pandas would otherwise take the first field as a row index and shift every
    column), and a header that names a column twice (pandas would rename the second copy and
    read the first as the value). Plain, .gz, .bz2 and .xz files are checked; other
    compressions are read as they are. Returns whether the file was checked."""
    suffix = path.suffix.lower()
    if suffix in (".zip", ".zst", ".tar"):
        return False
    try:
        with _OPENERS.get(suffix, open)(path, "rt", newline="") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError, EOFError):
        return False  # pandas read it; nothing more to check here
    rows = csv.reader(io.StringIO(text, newline=None))  # \n, \r\n and \r end a line
    header = next(rows, [])
    _check_unique_header(path, header)
    for number, row in enumerate(rows, start=2):
        if row and len(row) < len(header):
            raise InputError(f"log {path}: line {number} has {len(row)} of the {len(header)} "
                             f"fields of the header; the file may be cut short or damaged: "
                             f"complete or remove that line")
        if any(field.strip() for field in row[len(header):]):
            raise InputError(f"log {path}: line {number} has {len(row)} fields but the header "
                             f"names {len(header)}; its values cannot be matched to columns: "
                             f"name every column in the header or remove the extra fields")
    if text and not text.endswith(("\n", "\r")):
        last = text.splitlines()[-1]
        raise InputError(f"log {path}: the last line ({last[:60]!r}) has no line end, so the "
                         f"file may be cut short and its last number too; complete the file "
                         f"or remove that line (or, if it is whole, end it with a newline)")
    return True


def _check_unique_header(path: Path, header: list[str]) -> None:
    """:class:`InputError` when the CSV header ``header`` names a column twice."""
    names = [name.strip() for name in header]
    twice = sorted({name for name in names if name and names.count(name) > 1})
    if twice:
        raise InputError(f"log {path}: the header names column(s) {', '.join(twice)} more "
                         f"than once, so which one holds the value is a guess: keep one "
                         f"column of each name")


#: the paper's phase numbers: 1 = cross-entropy, 2 = MSE
PAPER_PHASES = (1, 2)
#: trajectory column -> its name in a paper log (for messages)
PAPER_NAMES = {"time": "epoch", "fn": "feat_norm", "nc1_trace": "nc1", "nc2_angle": "nc2",
               "nc3_paper": "nc3", "accuracy": "train", "test_accuracy": "test"}
#: trajectory columns that hold numbers when a log has them (text there is refused)
OPTIONAL_NUMBERS = ("nc2_angle", "nc3_paper", "accuracy", "test_accuracy")
NCSIM_NAMES = {"time": "time", "fn": "fn", "nc1_trace": "nc1_trace"}
#: text that reads as a blank (not measured) value
_BLANK_TEXT = ("", "nan", "na", "n/a", "null", "none", "<na>")
_PHASE_HINT_PAPER = ("give phase 1 (cross-entropy) or 2 (MSE) as a number on every row, or drop "
                     "the phase column to search the whole log for the onset")
_PHASE_HINT_NCSIM = ("give the phase number on every record (0 for a simulation, 1, 2, ... for "
                     "the phases of a training; paper logs: 1 = cross-entropy, 2 = MSE), or drop "
                     "the phase column to search the whole log for the onset")


def not_numbers(values: pd.Series, numbers: pd.Series) -> np.ndarray:
    """(M,) bool: entries of ``values`` that are neither a number nor a blank (text such as
    ``CE`` or ``ten``); ``numbers`` is ``pd.to_numeric(values, errors="coerce")``."""
    text = values.astype("string").str.strip().str.lower()
    blank = values.isna().to_numpy(bool) | text.isin(_BLANK_TEXT).fillna(True).to_numpy(bool)
    return numbers.isna().to_numpy(bool) & ~blank


#: the largest phase number read (a larger one, or inf, is a damaged log, not a phase)
_LARGEST_PHASE = 2**31 - 1


def _holds_truth_values(values: pd.Series) -> bool:
    """Whether a column holds True/False (a bool column, or bools among other objects)."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return True
    if values.dtype != object:
        return False
    return any(isinstance(v, (bool, np.bool_)) for v in values.to_numpy())


def _phases(values: pd.Series, log: str, allowed: tuple[int, ...] | None) -> pd.arrays.IntegerArray:
    """Training phases as nullable integers (blanks -> <NA>).

    Text (``CE``, ``MSE``), a fractional phase, and a phase outside ``allowed`` (paper logs:
    1 or 2; None: any number >= 0) are errors: a phase that is not read would silently switch
    off the phase-2 onset rule.
    """
    hint = _PHASE_HINT_NCSIM if allowed is None else _PHASE_HINT_PAPER
    if _holds_truth_values(values):  # True would read as phase 1
        raise InputError(f"log {log}: phase values True/False are not phase numbers; {hint}")
    numbers = pd.to_numeric(values, errors="coerce")
    text = not_numbers(values, numbers)
    if text.any():
        found = listed((repr(v) for v in pd.unique(values[text].astype(str))), limit=4)
        raise InputError(f"log {log}: phase values {found} are not phase numbers; {hint}")
    unusable = numbers.notna() & ~(numbers.abs() <= _LARGEST_PHASE)  # inf, 1e30
    if unusable.any():
        raise InputError(f"log {log}: phase {numbers[unusable].iloc[0]:g} is not a phase "
                         f"number; {hint}")
    fractional = numbers.notna() & (numbers != numbers.round())
    if fractional.any():
        raise InputError(f"log {log}: phase {numbers[fractional].iloc[0]} is not a whole "
                         "number; phases are numbered 0, 1, 2, ... (paper logs: 1 = "
                         "cross-entropy, 2 = MSE)")
    known = numbers.dropna()
    bad = known[~known.isin(allowed)] if allowed is not None else known[known < 0]
    if len(bad):
        found = listed((int(v) for v in pd.unique(bad)), limit=4)
        raise InputError(f"log {log}: phase values {found} are not allowed; {hint}")
    return pd.array(numbers, dtype="Int64")


def _number_column(out: pd.DataFrame, col: str, log: str, names: dict[str, str]) -> None:
    """``out[col]`` as float64 in place; an entry that is text (not a number, not blank) is an
    error, never a silent gap."""
    numbers = pd.to_numeric(out[col], errors="coerce")
    text = not_numbers(out[col], numbers)
    if text.any():
        first = int(np.flatnonzero(text)[0])
        hint = (f"give every record its {names[col]} as a number" if col == "time" else
                "write numbers, and leave an entry blank where nothing was measured")
        raise InputError(f"log {log}: {names.get(col, col)} {str(out[col].iloc[first])!r} in "
                         f"data row {first + 1} is not a number ({int(text.sum())} such "
                         f"entries); {hint}")
    out[col] = numbers.astype(np.float64)


def _as_float(out: pd.DataFrame, log: str, names: dict[str, str]) -> pd.DataFrame:
    """time, fn and nc1_trace, and those of :data:`OPTIONAL_NUMBERS` the log has, as float64.
    Text entries, a record without a time and a negative nc1_trace (a ratio of traces) or fn
    (a mean of norms) are errors naming the log and the record."""
    for col in ("time", "fn", "nc1_trace", *(c for c in OPTIONAL_NUMBERS if c in out)):
        _number_column(out, col, log, names)
    no_time = np.isnan(out["time"].to_numpy(np.float64))
    if no_time.any():
        first = int(np.flatnonzero(no_time)[0])
        raise InputError(f"log {log}: {int(no_time.sum())} record(s) have no {names['time']} "
                         f"(the first is data row {first + 1}); give every record its "
                         f"{names['time']}, or delete the row")
    endless = np.isinf(out["time"].to_numpy(np.float64))
    if endless.any():
        first = int(np.flatnonzero(endless)[0])
        raise InputError(f"log {log}: {names['time']} is {out['time'].iloc[first]:g} in data "
                         f"row {first + 1}; give every record a finite {names['time']}")
    what = {"nc1_trace": "the trace ratio tr(Sigma_W)/tr(Sigma_B)",
            "fn": "a mean of feature norms"}
    for col, meaning in what.items():
        values = out[col].to_numpy(np.float64)
        negative = values < 0
        if negative.any():
            first = int(np.flatnonzero(negative)[0])
            raise InputError(f"log {log}: {names[col]} is {values[first]:g} at "
                             f"{names['time']} {out['time'].iloc[first]:g}; {names[col]} is "
                             f"{meaning}, never below 0: check how the log was written")
    return out


def _where(log: str, run_id: object) -> str:
    """``log X`` or, for a run other than the log's own, ``log X, run R``."""
    return f"log {log}" if str(run_id) == log else f"log {log}, run {run_id}"


def _check_phase_blanks(out: pd.DataFrame, log: str, names: dict[str, str],
                        allowed: tuple[int, ...] | None) -> None:
    """Refuse a run whose phase is blank on some records but not all: those records could not
    be placed in the phase-2 search, so the onset would silently move (a phase column that is
    blank throughout means the log has no phases, and the whole log is searched)."""
    for run_id, part in out.groupby("run_id", sort=False):
        blank = part["phase"].isna().to_numpy(bool)
        if blank.any() and not blank.all():
            times = part["time"].to_numpy(np.float64)[blank]
            hint = _PHASE_HINT_NCSIM if allowed is None else _PHASE_HINT_PAPER
            raise InputError(f"{_where(log, run_id)}: phase is blank on {int(blank.sum())} of "
                             f"{blank.size} records ({names['time']} "
                             f"{listed((f'{t:g}' for t in times), limit=4)}); {hint}")


def _drop_repeated_records(out: pd.DataFrame, log: str, names: dict[str, str]) -> pd.DataFrame:
    """One record per run, time and phase: identical copies of a record count once; copies
    that differ are an error naming the time (which one holds would be a guess)."""
    out = out.drop_duplicates()
    clash = out.duplicated(subset=["run_id", "time", "phase"], keep=False).to_numpy(bool)
    if clash.any():
        first = int(np.flatnonzero(clash)[0])
        run_id, when = out["run_id"].iloc[first], out["time"].iloc[first]
        count = int(((out["run_id"] == run_id) & (out["time"] == when)
                     & clash).sum())
        raise InputError(f"{_where(log, run_id)}: {names['time']} {when:g} has {count} records "
                         "with different values; keep one record per "
                         f"{names['time']} (and phase)")
    return out


def _check_records(out: pd.DataFrame, log: str, names: dict[str, str],
                   allowed: tuple[int, ...] | None) -> pd.DataFrame:
    """Numbers, phases and repeated records of a converted log (before sorting, so that data
    rows are named as in the file)."""
    out = _as_float(out, log, names)
    out["phase"] = _phases(out["phase"], log, allowed)
    _check_phase_blanks(out, log, names, allowed)
    return _drop_repeated_records(out, log, names)


def _same_values(first: pd.Series, second: pd.Series) -> bool:
    """Whether two columns hold the same entries: equal as read, or equal as numbers with
    blanks in the same records when both hold numbers only (0 and 0.0 are one accuracy)."""
    if first.equals(second):
        return True
    a, b = pd.to_numeric(first, errors="coerce"), pd.to_numeric(second, errors="coerce")
    if not_numbers(first, a).any() or not_numbers(second, b).any():
        return False
    return a.astype(np.float64).equals(b.astype(np.float64))


def _paper_names(frame: pd.DataFrame) -> dict[str, str]:
    """:data:`PAPER_NAMES` with each trajectory column named as this log names it (the first of
    its paper columns that the log has, e.g. ``train_acc`` for the accuracy), for messages."""
    names = dict(PAPER_NAMES)
    for col in reversed(list(frame.columns)):  # the first of two equal copies is the one kept
        if col in PAPER_COLUMNS:
            names[PAPER_COLUMNS[col]] = str(col)
    return names


def _check_column_pairs(frame: pd.DataFrame, run_id: str) -> None:
    """Refuse two columns for one trajectory column that differ (``train`` and ``train_acc``,
    or ``feat_norm`` and an extra ``fn``): which one is the value would be a guess, and the
    column order would decide it (equal copies are read as one)."""
    for target in dict.fromkeys(PAPER_COLUMNS.values()):  # in the table's order
        given = [k for k, v in PAPER_COLUMNS.items() if v == target and k in frame.columns]
        if given and target in frame.columns and target not in PAPER_COLUMNS:
            given.append(target)  # e.g. an extra fn column beside feat_norm
        if len(given) > 1 and not all(_same_values(frame[given[0]], frame[k])
                                      for k in given[1:]):
            raise InputError(f"log {run_id} has columns {' and '.join(given)}, which both name "
                             f"its {target} and differ; keep the one that holds it")


def from_paper(frame: pd.DataFrame, run_id: str) -> pd.DataFrame:
    """Convert one paper-schema log (already read) to the trajectory schema.

    Refused (:class:`InputError`): text where a number belongs, a record without an epoch, a
    negative nc1 or feat_norm, a phase other than 1 or 2 (text labels included), a phase
    blank on some records only, two different records for one epoch and phase (identical
    copies count once), two columns for one value that differ (``train`` and ``train_acc``,
    ``feat_norm`` and an extra ``fn``), epochs that restart at a later phase (they keep
    counting across phases), and condition or seed columns with more than one value (one
    file is one run). Records are sorted by epoch, then phase; header names are read without
    surrounding spaces.
    """
    missing = [c for c in PAPER_REQUIRED if c not in frame.columns]
    if missing:
        raise InputError(
            f"log {run_id} lacks column(s) {', '.join(missing)}; a paper log needs "
            "epoch, nc1 and feat_norm (and optionally phase, train, test, nc2, nc3)"
        )
    _check_column_pairs(frame, run_id)
    out = frame.rename(columns={k: v for k, v in PAPER_COLUMNS.items() if k in frame.columns})
    out = out.loc[:, ~out.columns.duplicated()].copy()
    clash = [c for c in ("run_id", "time_unit") if c in out.columns]
    if clash:
        raise InputError(
            f"log {run_id} has column(s) {', '.join(clash)}, which a paper log (epoch, nc1, "
            "feat_norm) does not carry: a paper log is one run, named by its file; drop the "
            "column(s), or write an ncsim log (run_id, time, time_unit, fn, nc1_trace, ...)")
    labels = run_labels(run_id)
    for key in ("condition", "seed"):
        if key in out.columns:  # intervention logs carry their own condition and seed
            values = out[key].dropna().unique()
            if len(values) > 1:
                raise InputError(
                    f"log {run_id} has {len(values)} values in its {key} column "
                    f"({', '.join(map(str, values[:3]))}{', ...' if len(values) > 3 else ''}); "
                    "a paper log is one run: split it into one file per run")
            labels[key] = _plain_label(values[0]) if len(values) else labels[key]
            out = out.drop(columns=key)
    out.insert(0, "run_id", run_id)
    out.insert(2, "time_unit", "epoch")
    if "phase" not in out.columns:
        out.insert(3, "phase", pd.NA)
    names = _paper_names(frame)
    out = _check_records(out, run_id, names, PAPER_PHASES)
    _check_phase_order(out, run_id, names)
    for key, value in labels.items():
        out[key] = value
    return _in_time_order(out, ["time", "phase"])


def _plain_label(value: Any) -> Any:
    """A label read from a log column as the file name would give it: a whole number read as
    a float (a seed column with a blank cell is parsed as floats) becomes an int, so seed
    0.0 and the file name's seed 0 are one seed."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    return value.item() if isinstance(value, np.generic) else value


def blank_run_ids(ids: pd.Series) -> np.ndarray:
    """(M,) bool: records whose run id is missing (NaN, None) or empty text."""
    text = ids.astype("string").str.strip()
    return (ids.isna() | text.eq("").fillna(False)).to_numpy(bool)


def _check_run_ids(ids: pd.Series, log: str) -> None:
    """Refuse a ``run_id`` column with blank entries (they would be dropped or crash later)."""
    blank = blank_run_ids(ids)
    if not blank.any():
        return
    if blank.all():
        raise InputError(f"log {log}: the run_id column is empty; fill it in, or drop the column "
                         "to name the run after the file")
    first = int(np.flatnonzero(blank)[0])
    raise InputError(f"log {log}: {int(blank.sum())} of {blank.size} records have no run_id "
                     f"(the first is data row {first + 1}); give every record its run's id")


def is_paper_name(name: str) -> bool:
    """Whether a file stem is one of the paper's documented log names (``<family>_s<seed>``
    with a family of :data:`PAPER_FAMILIES`, or a name of :data:`PAPER_UNSEEDED`), from which
    :func:`run_labels` reads model and dataset."""
    match = _NAME.match(name)
    base = match.group("condition") if match else name
    return _paper_cell(base, seeded=match is not None) is not None


def _default_labels(out: pd.DataFrame, default_id: str, own_ids: bool) -> dict[str, object]:
    """Labels of an ncsim log that lacks them: from the file name (:func:`run_labels`) when it
    is a paper log's name or the file is one run named after it; a table with its own run ids
    and another name (a simulated grid, a study) gets ``unlabelled`` model and dataset with
    each run its own condition (its run id), so runs that differ in their settings never share
    a group."""
    if is_paper_name(default_id) or not own_ids:
        return run_labels(default_id)
    return {"model": UNLABELLED, "dataset": UNLABELLED, "condition": out["run_id"],
            "seed": pd.NA}


def from_ncsim(frame: pd.DataFrame, default_id: str) -> pd.DataFrame:
    """Check an ncsim trajectory table and fill missing labels.

    Without a ``run_id`` column every record belongs to one run named ``default_id``; with one,
    every record needs an id (a blank one is an :class:`InputError`, never dropped). Missing
    model / dataset / condition / seed come from :func:`_default_labels`. Records are checked
    as a paper log's are (:func:`from_paper`), except that a phase may be any whole number
    >= 0 (0: a simulation); a run whose label columns hold more than one value is refused.
    """
    missing = [c for c in NCSIM_REQUIRED if c not in frame.columns]
    if missing:
        paper = ("; it has an 'epoch' column too: a paper log (epoch, nc1, feat_norm) is read "
                 "as an ncsim log when it also has a 'time' column (a wall clock?): drop or "
                 "rename that column" if "epoch" in frame.columns else "")
        raise InputError(f"log {default_id} lacks column(s) {', '.join(missing)}; an ncsim log "
                         f"needs time, fn and nc1_trace{paper}")
    out = frame.copy()
    own_ids = "run_id" in out.columns
    if own_ids:
        _check_run_ids(out["run_id"], default_id)
    else:
        out.insert(0, "run_id", default_id)
    if "time_unit" not in out.columns:
        out["time_unit"] = "epoch"
    if "phase" not in out.columns:
        out["phase"] = pd.NA
    out = _check_records(out, default_id, NCSIM_NAMES, None)
    _check_phase_order(out, default_id, NCSIM_NAMES)
    _check_one_label_per_run(out, default_id)
    defaults = _default_labels(out, default_id, own_ids)
    for key in LABELS:
        if key not in out.columns:
            out[key] = defaults[key]
    return _in_time_order(out, ["run_id", "time", "phase"])


def _check_one_label_per_run(out: pd.DataFrame, log: str) -> None:
    """Refuse a run whose model, dataset, condition or seed column holds more than one value
    (its records would be read under the first one's labels)."""
    for key in (k for k in LABELS if k in out.columns):
        counts = out.groupby("run_id", sort=False)[key].nunique(dropna=True)
        if (counts > 1).any():
            run_id = counts.index[int(np.flatnonzero(counts.to_numpy() > 1)[0])]
            values = out.loc[out["run_id"] == run_id, key].dropna().unique()
            raise InputError(f"{_where(log, run_id)} has {len(values)} values in its {key} "
                             f"column ({listed(values, 3)}); one run has one {key}: give each "
                             f"its own run_id")


def _check_phase_order(out: pd.DataFrame, log: str, names: dict[str, str]) -> None:
    """Refuse a run whose times restart at a later phase: a phase whose records lie before an
    earlier phase's last one would be read interleaved with it (one shared time, the end of a
    phase and the start of the next, is allowed)."""
    phased = out.dropna(subset=["phase"])
    if phased.empty:
        return
    span = phased.groupby(["run_id", "phase"], sort=True)["time"].agg(["min", "max"])
    for run_id, part in span.groupby(level=0, sort=False):
        later = part["min"].iloc[::-1].cummin().iloc[::-1].shift(-1)  # phases after each
        bad = np.flatnonzero((part["max"] > later).to_numpy())
        if bad.size:
            first = part.index[bad[0]][1]
            raise InputError(
                f"{_where(log, run_id)}: phase {first} has {names['time']}s up to "
                f"{part['max'].iloc[bad[0]]:g} but a later phase starts at "
                f"{later.iloc[bad[0]]:g}; the {names['time']}s restart at a phase: number "
                f"them on across the phases (a paper log's epochs keep counting)")


def _in_time_order(out: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``out`` sorted by ``keys`` (time, then phase: two records at one time are the end of a
    phase and the start of the next, whatever the file's row order)."""
    return out.sort_values(keys, kind="stable", na_position="last").reset_index(drop=True)


def read_log(path: str | Path) -> pd.DataFrame:
    """Read one log file (paper CSV or ncsim CSV/Parquet, also compressed, e.g. ``.csv.gz``)
    into the trajectory schema.

    The run id of a paper log is the file name without its extension(s) (:func:`log_name`).
    """
    path = Path(path)
    frame = _read_frame(path)
    if "epoch" in frame.columns and "time" not in frame.columns:
        return from_paper(frame, log_name(path))
    if "time" in frame.columns:
        return from_ncsim(frame, log_name(path))
    raise InputError(f"log {path} has neither an 'epoch' (paper schema) nor a 'time' column "
                     "(ncsim schema)")


def is_epoch_log(path: str | Path) -> bool:
    """Whether a table file has an ``epoch`` (paper schema) or a ``time`` column (ncsim schema),
    read from its header only. A file that cannot be read counts as a log, so that
    :func:`read_log` reports why (absent, empty, corrupt)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            columns = pq.read_schema(path).names
        else:
            columns = list(pd.read_csv(path, nrows=0).columns)
    except (ValueError, OSError, pd.errors.ParserError, ImportError):
        return True
    names = {str(c).strip() for c in columns}  # as read_log reads the header
    return "epoch" in names or "time" in names


def split_logs(paths: list[str | Path]) -> tuple[list[Path], list[Path]]:
    """(per-epoch logs, other tables) among ``paths``, in the order given: a per-seed summary
    such as the paper's ``*_summary.csv`` (no ``epoch`` or ``time`` column) is another table
    (:func:`is_epoch_log`)."""
    logs: list[Path] = []
    others: list[Path] = []
    for path in map(Path, paths):
        (logs if is_epoch_log(path) else others).append(path)
    return logs, others


def epoch_logs(paths: list[str | Path]) -> tuple[list[Path], list[Path]]:
    """:func:`split_logs` for a reader of whole folders: (per-epoch logs, other tables to skip).

    One path that is not a per-epoch log gets :func:`read_log`'s own error; paths none of which
    is one are an :class:`InputError` listing them."""
    logs, others = split_logs(paths)
    if others and len(paths) == 1:
        read_log(paths[0])  # one file that is no log: its own one-line error
    if others and not logs:
        raise InputError(f"none of the {len(paths)} files is a per-epoch log (each has neither "
                         f"an 'epoch' (paper schema) nor a 'time' column (ncsim schema)): "
                         f"{listed(map(str, others))}; give training or simulation logs")
    return logs, others


def read_logs(paths: list[str | Path] | str | Path) -> pd.DataFrame:
    """Read several logs (or one path) into one trajectory table (run ids must be unique; a log
    without records is refused, naming its file)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise InputError("no log files given; pass one or more CSV or Parquet logs")
    parts = [read_log(p) for p in paths]
    empty = [str(p) for p, part in zip(paths, parts, strict=True) if part.empty]
    if empty:
        raise InputError(f"log(s) without records: {', '.join(empty)}; a log needs at least one "
                         "row below its header")
    table = pd.concat(parts, ignore_index=True)
    holders: dict[str, list[str]] = {}
    for path, part in zip(paths, parts, strict=True):
        for rid in part["run_id"].unique():  # 1 and "1" print alike: one id
            holders.setdefault(str(rid), []).append(str(path))
    dup = sorted((rid for rid, files in holders.items() if len(files) > 1), key=str)
    if dup:
        where = "; ".join(f"{rid} in {', '.join(holders[rid])}" for rid in dup)
        raise InputError(f"run id(s) appear in several logs: {where}; each run needs its own id "
                         "(a paper log's is its file name, an ncsim log's its run_id column)")
    return table
