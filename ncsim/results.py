"""Writing a simulation's results: tables, spec sidecar and a figure, into one folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ncsim.spec import RunSpec

#: run-table columns a grid can vary (the command line's grid axes), in its grid order
AXIS_COLUMNS = ("classes", "per_class", "dim", "depth", "width", "leaky_slope", "lambda_w",
                "lambda_h", "lambda_b", "init_scale", "init_seed", "time_scale_eta_h",
                "time_scale_eta_w", "time_scale_eta_b", "solver_t_end", "solver_dt",
                "solver_rtol", "solver_atol", "solver_records", "solver_t_first",
                "solver_max_steps", "solver_gtol", "onset_threshold", "onset_stay")


def varying_columns(runs: pd.DataFrame, candidates: tuple[str, ...] = AXIS_COLUMNS) -> list[str]:
    """Spec columns whose values differ between runs (the grid axes); an axis unset (None)
    for some runs and set for others varies too."""
    return [c for c in candidates
            if c in runs and runs[c].astype(str).nunique(dropna=False) > 1]


def write_simulation(result, out: Path, table_format: str, specs: list[RunSpec]) -> None:
    """Write ``runs``, ``trajectories``, ``spec.json`` (each run's spec row under its run id,
    and the provenance: versions, and the runs' devices and dtypes, comma-separated in order
    of first use when they differ) and ``trajectories.png`` into ``out``.

    An earlier simulation's files in ``out`` are removed first and the run table is written
    last: each file is written atomically, and an interrupted write leaves some of this
    simulation's files but never a mix of two simulations; a run table in ``out`` means the
    whole write finished.
    """
    from ncsim.flow.simulate import unique_run_ids
    from ncsim.io import FORMATS, provenance, table_path, write_json, write_table
    from ncsim.plots import save_figure, trajectory_figure

    for fmt in FORMATS:
        for name in ("runs", "trajectories"):
            table_path(out / name, fmt).unlink(missing_ok=True)
    for name in ("spec.json", "trajectories.png"):
        (out / name).unlink(missing_ok=True)
    write_table(result.trajectories, table_path(out / "trajectories", table_format), table_format)
    rows = [{"run_id": rid, **s.to_row()} for rid, s in zip(unique_run_ids(specs), specs)]
    devices = dict.fromkeys(s.solver.device for s in specs)  # distinct, in order of first use
    dtypes = dict.fromkeys(s.solver.dtype for s in specs)
    write_json({"runs": rows, "provenance": provenance(",".join(devices), ",".join(dtypes))},
               out / "spec.json")
    axes = varying_columns(result.runs)
    fig = trajectory_figure(result.trajectories, result.runs,
                            label_column=axes[0] if axes else None)
    save_figure(fig, out / "trajectories.png")
    write_table(result.runs, table_path(out / "runs", table_format), table_format)
