"""The results folder of a study: per-run part files, consolidated tables, resume.

Layout of ``DIR``::

    study.json              the resolved study (spec, variant, provenance)
    parts/<run_id>.run.parquet    one finished run's row (written last, atomically)
    parts/<run_id>.traj.parquet   its trajectory rows (written first, atomically)
    runs.parquet            one row per run, unique ``run_id`` (consolidated from parts/)
    trajectories.parquet    long-format trajectories of every run
    figures/                figures of the report
    report.md, report.html  the report

A run is finished when its ``.run.parquet`` file can be read and its trajectory is whole:
the run row records how many trajectory rows were written (``trajectory_rows``, a bookkeeping
column left out of ``runs.parquet``), and a trajectory file that is missing, unreadable or of
another length makes the run unfinished, so it is computed again. Since every file is renamed
into place, a killed study leaves only whole files and resumes from the finished runs. A
failed run has ``status = "failed"`` and an ``error`` message; it is retried only on request.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from ncsim.errors import InputError
from ncsim.io import read_table, write_json, write_table
from ncsim.study.spec import spec_dir, variant_name

FAILED = "failed"
TRAJECTORY_ROWS = "trajectory_rows"  # in each part row: the rows of its trajectory file


class Store:
    """Results folder of one study."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.parts = self.root / "parts"
        self.figures = self.root / "figures"

    # ------------------------------------------------------------------ paths
    def run_file(self, run_id: str) -> Path:
        return self.parts / f"{run_id}.run.parquet"

    def traj_file(self, run_id: str) -> Path:
        return self.parts / f"{run_id}.traj.parquet"

    @property
    def runs_path(self) -> Path:
        return self.root / "runs.parquet"

    @property
    def trajectories_path(self) -> Path:
        return self.root / "trajectories.parquet"

    @property
    def study_path(self) -> Path:
        return self.root / "study.json"

    # ------------------------------------------------------------------ one runner at a time
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder for one runner (``flock`` on ``DIR/.lock``). A second runner on the
        same folder fails at once with :class:`InputError`; the lock goes with the process, so
        a killed runner leaves none behind. Where ``flock`` does not exist the folder is not
        locked."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no flock on this platform
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise InputError(f"{self.root} is in use by another 'ncsim study run' ({holder});"
                                 " wait for it to finish or use another --out") from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}")
            fh.flush()
            yield

    # ------------------------------------------------------------------ study
    def bind(self, study: dict[str, Any], force: bool = False) -> None:
        """Record the study in the folder; refuse a folder holding another study."""
        if self.study_path.exists() and not force:
            old = self.study()
            # a study.json without "quick" holds the full variant (as the message reads it)
            if (old.get("name"), bool(old.get("quick"))) != (study["name"],
                                                             bool(study["quick"])):
                raise InputError(self._other_study_message(old, study))
        self.parts.mkdir(parents=True, exist_ok=True)
        self.clean_temporary()
        write_json(study, self.study_path)

    def _other_study_message(self, old: dict[str, Any], new: dict[str, Any]) -> str:
        """Why the folder refuses ``new``: the study it holds, the command that goes on with
        that one, and the ways out for the new one."""
        resume = f"ncsim study run {_spec_argument(old)}{' --quick' if old.get('quick') else ''}"
        held, asked = variant_name(bool(old.get("quick"))), variant_name(new["quick"])
        return (f"{self.root} holds the {held} variant of study {old.get('name')!r}, not the "
                f"{asked} variant of {new['name']!r} asked for; use another "
                f"--out or --force (which records the new study here and recomputes its runs; "
                f"the other study's files stay). To go on with the study it holds: "
                f"{resume} --out {self.root}")

    def clean_temporary(self) -> int:
        """Remove temporary files left by a killed writer (safe: the runner holds
        :meth:`lock`, so no other writer is alive)."""
        stale = [*self.root.glob(".*.tmp"), *self.parts.glob(".*.tmp")]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def study(self) -> dict[str, Any]:
        """The study recorded in ``study.json``; :class:`InputError` when there is none or
        it is damaged (cut short, not JSON)."""
        import json

        if not self.study_path.exists():
            raise InputError(f"{self.root} is not a study folder (no study.json)")
        try:
            study = json.loads(self.study_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(self.damaged_study(f"not valid JSON: {err}")) from None
        if not isinstance(study, dict):
            raise InputError(self.damaged_study("not a JSON object"))
        return study

    def damaged_study(self, why: str) -> str:
        """The one-line message of a damaged study.json (what is wrong, what to do)."""
        return (f"{self.study_path} is damaged ({why}); remove it and run 'ncsim study run "
                f"SPEC --out {self.root}' with this folder's study: finished runs in "
                f"{self.parts} are kept")

    # ------------------------------------------------------------------ runs
    def rows(self, columns: list[str]) -> dict[str, dict[str, Any]]:
        """The values of ``columns`` (those it has) in every finished run's file, by run id.

        An unreadable run file, or a trajectory that is missing, unreadable or not of the
        length the row records, leaves the run out (it counts as not finished). Read with
        pyarrow's ``ParquetFile``: 0.7 ms per file against 2.3 ms for one column through
        pandas; a trajectory's length comes from its footer."""
        import pyarrow.parquet as pq

        out = {}
        for path in sorted(self.parts.glob("*.run.parquet")):
            run_id = path.name[: -len(".run.parquet")]
            try:
                table = pq.ParquetFile(path)
                present = [c for c in {*columns, TRAJECTORY_ROWS}
                           if c in table.schema_arrow.names]
                values = table.read(columns=present)
                row = {c: values.column(c)[0].as_py() for c in present}
                if not self._trajectory_whole(run_id, row.get(TRAJECTORY_ROWS)):
                    continue
            except Exception:  # an unreadable or empty file counts as not finished
                continue
            out[run_id] = {c: row[c] for c in columns if c in row}
        return out

    def _trajectory_whole(self, run_id: str, expected: int | None) -> bool:
        """Whether the run's trajectory file has the ``expected`` rows (none: no file); with
        ``expected`` unknown (rows written before it was recorded), whether a file that is
        there can be read."""
        import pyarrow.parquet as pq

        path = self.traj_file(run_id)
        if not path.exists():
            return not expected
        rows = pq.ParquetFile(path).metadata.num_rows  # raises for a damaged file
        return expected is None or rows == expected

    def statuses(self) -> dict[str, str]:
        """Status of every finished (or failed) run, by run id."""
        return {rid: str(row["status"]) for rid, row in self.rows(["status"]).items()
                if "status" in row}

    def stored(self, column: str) -> dict[str, Any]:
        """The value of ``column`` in every finished run's row that has it, by run id."""
        return {rid: row[column] for rid, row in self.rows([column]).items() if column in row}

    def pending(self, run_ids: list[str], force: bool = False,
                retry_failed: bool = False) -> list[str]:
        """Run ids still to compute."""
        if force:
            return list(run_ids)
        done = self.statuses()
        return [r for r in run_ids
                if r not in done or (retry_failed and done[r] == FAILED)]

    def write_run(self, run_id: str, row: dict[str, Any], traj: pd.DataFrame | None) -> None:
        """Write one finished run: trajectory first, then the run row (its completion mark).

        A row stored before (a run computed again) is removed first, so that an interruption
        between the two writes leaves the run unfinished, never the old row beside the new
        trajectory."""
        self.run_file(run_id).unlink(missing_ok=True)
        if traj is not None and len(traj):
            traj = traj.drop(columns="run_id", errors="ignore")
            traj.insert(0, "run_id", run_id)  # first, as in every table
            write_table(traj, self.traj_file(run_id))
        else:
            self.traj_file(run_id).unlink(missing_ok=True)
        frame = pd.DataFrame([{"run_id": run_id, **{k: v for k, v in row.items()
                                                    if k != "run_id"},
                               TRAJECTORY_ROWS: len(traj) if traj is not None else 0}])
        write_table(frame, self.run_file(run_id))

    def consolidate(self, run_ids: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Gather the part files into runs.parquet and trajectories.parquet (atomically).

        run_ids : keep these runs only, in this order (default: the runs of the bound study,
            or every part file without one); a repeated id counts once, at its first place,
            in both tables.
        """
        done = self.statuses()
        if run_ids is None:
            run_ids = self.study_run_ids() or sorted(done)
        ids = [r for r in dict.fromkeys(run_ids) if r in done]
        rows = [pd.read_parquet(self.run_file(r)) for r in ids]
        runs = _concat(rows) if rows else _no_runs()
        runs = runs.drop(columns=TRAJECTORY_ROWS, errors="ignore")
        if len(runs):
            runs = runs.drop_duplicates("run_id", keep="last").reset_index(drop=True)
        trajs = [pd.read_parquet(self.traj_file(r)) for r in ids if self.traj_file(r).exists()]
        traj = _concat(trajs) if trajs else _no_runs()
        # runs.parquet last: its time stamp tells tables() that both tables are current, so an
        # interrupted consolidation is redone instead of pairing new runs with old trajectories
        write_table(traj, self.trajectories_path)
        write_table(runs, self.runs_path)
        # what is returned is what a later read gives (an integer column with a missing value
        # reads back as floats, a text column's None as NaN)
        return read_table(self.runs_path), read_table(self.trajectories_path)

    def study_run_ids(self) -> list[str]:
        """The run ids of the bound study, in its order (none without study.json)."""
        if not self.study_path.exists():
            return []
        study = self.study()
        if "run_ids" in study:
            return list(study["run_ids"])
        from ncsim.study.spec import Study

        return [d.run_id for d in Study.from_dict(study).runs()]

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The consolidated tables, consolidated again first when a part file is newer, a
        run in them is no longer finished (its files deleted or damaged), or a table cannot
        be read (cut short: the part files hold the same rows)."""
        if not self.runs_path.exists() or not self.trajectories_path.exists():
            return self.consolidate()
        stamp = self.runs_path.stat().st_mtime_ns
        if any(p.stat().st_mtime_ns > stamp for p in self.parts.glob("*.run.parquet")):
            return self.consolidate()
        tables = self._read_tables()
        if tables is None or not set(tables[0]["run_id"]) <= set(self.statuses()):
            return self.consolidate()
        return tables

    def _read_tables(self) -> tuple[pd.DataFrame, pd.DataFrame] | None:
        """runs.parquet and trajectories.parquet as written, or None when either is damaged
        (unreadable, or without a run_id column)."""
        try:
            runs, traj = read_table(self.runs_path), read_table(self.trajectories_path)
        except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
            return None
        if "run_id" not in runs or "run_id" not in traj:
            return None
        return runs, traj


def _no_runs() -> pd.DataFrame:
    """An empty table with a text run_id column."""
    return pd.DataFrame({"run_id": pd.Series([], dtype=object)})


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The frames one below the other. A column that holds flags in one frame and other
    values in another is joined as objects, so the flags stay flags (pandas alone would join
    True and 2 as the integers 1 and 2)."""
    flags = {c for f in frames for c in f.columns if f[c].dtype == bool}
    mixed = {c for c in flags if any(c in f and f[c].dtype != bool for f in frames)}
    if mixed:
        frames = [f.astype({c: object for c in mixed if c in f}) for f in frames]
    return pd.concat(frames, ignore_index=True)


def _spec_argument(study: dict[str, Any]) -> str:
    """How ``ncsim study run`` names the recorded study ``study``: its name when it is a study
    shipped with the package, else the file it was read from."""
    source = study.get("source")
    if source is None or Path(source).parent == spec_dir():
        return str(study.get("name"))
    return str(source)
