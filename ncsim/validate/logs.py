"""Read training logs (the paper's CSV schema and ncsim's own logs) into the trajectory schema.

The paper's per-epoch logs (arXiv 2604.00230, released CSVs) have the columns
``epoch, phase, train, test, nc1, nc2, nc3, feat_norm``; NC columns are empty until the training
accuracy reaches 0.99. Some variants lack ``phase`` (intervention logs hold only the MSE phase)
or name the accuracy ``train_acc``. Their ``nc1`` is the trace ratio tr(Sigma_W)/tr(Sigma_B),
``nc2`` the mean |cos + 1/(K-1)| and ``nc3`` the paper's 1 - mean cos, so they map to ncsim's
``nc1_trace``, ``nc2_angle`` and ``nc3_paper``.

Output (long format, one row per run and logged epoch): ``run_id, time, time_unit ("epoch"),
phase (1 = cross-entropy, 2 = MSE, <NA> when unknown), fn, nc1_trace, nc2_angle, nc3_paper,
accuracy, test_accuracy`` plus any extra numeric column, and the run labels ``model, dataset,
condition, seed``. ncsim's own training logs already use this schema and are read as they are.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ncsim.errors import InputError

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

#: file-name prefix -> (model, dataset) of the paper's released logs
PAPER_CELLS = (
    ("resnet20_mnist", "resnet20", "mnist"),
    ("resnet20_fashion", "resnet20", "fashion_mnist"),
    ("cifar10", "resnet20", "cifar10"),
    ("mlp5_cifar10", "mlp5", "cifar10"),
    ("vit", "vit", "mnist"),
    ("e8_mlp_mnist", "mlp5", "mnist"),
)
_NAME = re.compile(r"^(?P<condition>.+?)_s(?P<seed>\d+)(?P<suffix>_[A-Za-z0-9]+)?$")


def run_labels(name: str) -> dict[str, object]:
    """Model, dataset, condition and seed read from a paper log's file stem.

    ``width128_s0`` -> (mlp, mnist, width128, 0); ``depth2_s1_ext`` -> condition ``depth2_ext``;
    ``cifar10_s2`` -> (resnet20, cifar10, cifar10, 2). Files without ``_s<seed>`` get seed <NA>.
    """
    match = _NAME.match(name)
    if match:
        condition = match.group("condition") + (match.group("suffix") or "")
        seed: object = int(match.group("seed"))
    else:
        condition, seed = name, pd.NA
    model, dataset = "mlp", "mnist"
    for prefix, cell_model, cell_data in PAPER_CELLS:
        if name.startswith(prefix):
            model, dataset = cell_model, cell_data
            break
    return {"model": model, "dataset": dataset, "condition": condition, "seed": seed}


def _read_frame(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise InputError(f"log file {path} does not exist; check the path")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise InputError(f"cannot read log {path}: {str(err).splitlines()[0]}; a log is a CSV "
                         "file or a Parquet file (.parquet)") from None


def _phases(values: pd.Series, run_id: str) -> pd.arrays.IntegerArray:
    """Training phases as nullable integers (text and blanks -> <NA>); a fractional phase is
    an error."""
    numbers = pd.to_numeric(values, errors="coerce")
    fractional = numbers.notna() & (numbers != numbers.round())
    if fractional.any():
        raise InputError(f"log {run_id}: phase {numbers[fractional].iloc[0]} is not a whole "
                         "number; phases are numbered 0, 1, 2, ... (paper logs: 1 = "
                         "cross-entropy, 2 = MSE)")
    return pd.array(numbers, dtype="Int64")


def _as_float(out: pd.DataFrame) -> pd.DataFrame:
    """time, fn and nc1_trace as float64 (text -> NaN)."""
    for col in ("time", "fn", "nc1_trace"):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(np.float64)
    return out


def from_paper(frame: pd.DataFrame, run_id: str) -> pd.DataFrame:
    """Convert one paper-schema log (already read) to the trajectory schema."""
    missing = [c for c in PAPER_REQUIRED if c not in frame.columns]
    if missing:
        raise InputError(
            f"log {run_id} lacks column(s) {', '.join(missing)}; a paper log needs "
            "epoch, nc1 and feat_norm (and optionally phase, train, test, nc2, nc3)"
        )
    out = frame.rename(columns={k: v for k, v in PAPER_COLUMNS.items() if k in frame.columns})
    out = out.loc[:, ~out.columns.duplicated()].copy()
    labels = run_labels(run_id)
    for key in ("condition", "seed"):
        if key in out.columns:  # intervention logs carry their own condition and seed
            labels[key] = out[key].iloc[0] if len(out) else labels[key]
            out = out.drop(columns=key)
    out.insert(0, "run_id", run_id)
    out.insert(2, "time_unit", "epoch")
    if "phase" not in out.columns:
        out.insert(3, "phase", pd.NA)
    out["phase"] = _phases(out["phase"], run_id)
    for key, value in labels.items():
        out[key] = value
    return _as_float(out).sort_values("time", kind="stable").reset_index(drop=True)


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
    """Whether a file stem reads as a paper log's name (``<condition>_s<seed>``, or a name
    starting with one of :data:`PAPER_CELLS`), from which :func:`run_labels` reads labels."""
    return bool(_NAME.match(name)) or any(name.startswith(p) for p, _, _ in PAPER_CELLS)


def _default_labels(out: pd.DataFrame, default_id: str) -> dict[str, object]:
    """Labels of an ncsim log that lacks them: from a paper-style file name, else
    ``unlabelled`` model and dataset with each run its own condition (its run id), so runs of
    one table that differ in their settings (a simulated grid, a study) never share a group."""
    if is_paper_name(default_id):
        return run_labels(default_id)
    return {"model": "unlabelled", "dataset": "unlabelled", "condition": out["run_id"],
            "seed": pd.NA}


def from_ncsim(frame: pd.DataFrame, default_id: str) -> pd.DataFrame:
    """Check an ncsim trajectory table and fill missing labels.

    Without a ``run_id`` column every record belongs to one run named ``default_id``; with one,
    every record needs an id (a blank one is an :class:`InputError`, never dropped). Missing
    model / dataset / condition / seed come from a paper-style file name (:func:`run_labels`);
    otherwise model and dataset are ``unlabelled`` and each run is its own condition.
    """
    missing = [c for c in NCSIM_REQUIRED if c not in frame.columns]
    if missing:
        raise InputError(f"log {default_id} lacks column(s) {', '.join(missing)}; an ncsim log "
                         "needs time, fn and nc1_trace")
    out = frame.copy()
    if "run_id" in out.columns:
        _check_run_ids(out["run_id"], default_id)
    else:
        out.insert(0, "run_id", default_id)
    if "time_unit" not in out.columns:
        out["time_unit"] = "epoch"
    if "phase" not in out.columns:
        out["phase"] = pd.NA
    out["phase"] = _phases(out["phase"], default_id)
    defaults = _default_labels(out, default_id)
    for key in LABELS:
        if key not in out.columns:
            out[key] = defaults[key]
    return _as_float(out).sort_values(["run_id", "time"], kind="stable").reset_index(drop=True)


def read_log(path: str | Path) -> pd.DataFrame:
    """Read one log file (paper CSV or ncsim CSV/Parquet) into the trajectory schema.

    The run id of a paper log is the file name without its extension.
    """
    path = Path(path)
    frame = _read_frame(path)
    if "epoch" in frame.columns and "time" not in frame.columns:
        return from_paper(frame, path.stem)
    if "time" in frame.columns:
        return from_ncsim(frame, path.stem)
    raise InputError(f"log {path} has neither an 'epoch' (paper schema) nor a 'time' column "
                     "(ncsim schema)")


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
    holders: dict[object, list[str]] = {}
    for path, part in zip(paths, parts, strict=True):
        for rid in part["run_id"].unique():
            holders.setdefault(rid, []).append(str(path))
    dup = sorted((rid for rid, files in holders.items() if len(files) > 1), key=str)
    if dup:
        where = "; ".join(f"{rid} in {', '.join(holders[rid])}" for rid in dup)
        raise InputError(f"run id(s) appear in several logs: {where}; each run needs its own id "
                         "(a paper log's is its file name, an ncsim log's its run_id column)")
    return table
