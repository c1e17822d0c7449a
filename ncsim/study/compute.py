"""Computing the runs of a study: simulated chunks, two-segment interventions, trainings.

:func:`run_chunk` is the unit of work every executor ships (a top-level function, so that
process pools and Dask workers can import it). It never raises: a run that fails becomes a
row with ``status = "failed"`` and the error message.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import traceback
from typing import Any

import numpy as np
import pandas as pd

from ncsim.study.spec import (
    TRAINED_ONSET_THRESHOLD,
    RunDesc,
    dataset_args,
    run_spec,
    train_config,
)

Result = tuple[str, dict[str, Any], pd.DataFrame | None]
# statuses, and values of the row's "stop", of a flow that ended before t_end (not at rest)
STOPPED_EARLY = ("diverged", "stalled", "max_steps")


def run_chunk(descs: list[RunDesc]) -> list[Result]:
    """Compute a chunk of runs; returns ``(run_id, row, trajectory)`` for each.

    Simulated runs without an intervention are integrated in one batch; if that fails, each
    run is retried alone so that one bad run does not take the others with it.
    """
    plain = [d for d in descs if d.model == "simulated" and "intervene_time" not in d.params]
    out: list[Result] = []
    if plain:
        try:
            out += _simulate(plain)
        except Exception:
            out += [r for d in plain for r in _guarded(_simulate, [d])]
    for desc in descs:
        if desc in plain:
            continue
        work = _intervention if desc.model == "simulated" else _train
        out += _guarded(lambda ds, w=work: [w(ds[0])], [desc])
    return out


def _guarded(func, descs: list[RunDesc]) -> list[Result]:
    try:
        return func(descs)
    except Exception as err:  # recorded, never raised: the study goes on
        tail = traceback.format_exc(limit=3).strip().splitlines()[-1]
        return failed_results(descs, f"{type(err).__name__}: {err}" if str(err) else tail)


def failed_results(descs: list[RunDesc], error: str) -> list[Result]:
    """The rows of runs that failed with ``error`` (status ``failed``, no trajectory)."""
    return [(d.run_id, {**_labels(d), "status": "failed", "error": error}, None)
            for d in descs]


def _labels(desc: RunDesc) -> dict[str, Any]:
    row: dict[str, Any] = {"part": desc.part, "model": desc.model}
    for key, value in desc.params.items():
        row[key] = ",".join(map(str, value)) if isinstance(value, list) else value
    return row


# ----------------------------------------------------------------------------- simulated
def _simulate(descs: list[RunDesc]) -> list[Result]:
    from ncsim.flow.simulate import run_id, simulate

    specs = [run_spec(d.params) for d in descs]
    result = simulate(specs)
    out = []
    sim_ids = list(result.runs["run_id"])
    per_run = {rid: traj for rid, traj in result.trajectories.groupby("run_id", sort=False)}
    for desc, spec, sim_id, row in zip(descs, specs, sim_ids,
                                       result.runs.to_dict("records")):
        traj = per_run.get(sim_id, result.trajectories.iloc[:0])
        # the spec's own id, not the batch's (a spec repeated in one batch is '<id>-1'
        # there): a resume that computes the copy alone stores the same row
        row = {**row, **_labels(desc), "sim_run_id": run_id(spec)}
        row.pop("run_id", None)
        out.append((desc.run_id, row, traj.drop(columns="run_id").reset_index(drop=True)))
    return out


def _segment_records(spec, t1: float) -> int:
    """Records of the first segment (to t1): the run's records split at t1 on the log-time
    grid, at least min(8, records // 2) (and 2) in the first segment and that many plus its
    start in the second, which gets ``records - n1 + 1`` (its first record is the scaled state
    at t1); at records = 3 two each."""
    solver = spec.solver
    frac = math.log(t1 / solver.first_record) / math.log(solver.t_end / solver.first_record)
    floor = max(2, min(8, solver.records // 2))
    cap = max(solver.records - floor, 2)
    return int(min(max(round(solver.records * frac), floor), cap))


def _intervention(desc: RunDesc) -> Result:
    """Simulate to ``intervene_time``, scale H by ``intervene_alpha``, continue to t_end.

    The trajectory holds both segments (``phase`` 1 and 2, times of segment 2 shifted by t1);
    onset and fn at onset are read from the joined series. When the first segment stops before
    t1 (diverged, stalled, or out of steps), the run is that segment alone, with its status.
    """
    from ncsim.flow.simulate import run_id, simulate
    from ncsim.onset import is_vanishing, onset_and_fn
    from ncsim.spec import InitSpec

    spec = run_spec(desc.params)
    t1 = float(desc.params["intervene_time"])
    alpha = float(desc.params.get("intervene_alpha", 1.0))
    solver = spec.solver
    n1 = _segment_records(spec, t1)
    first = simulate(spec.replace(solver=dataclasses.replace(solver, t_end=t1, records=n1)))
    first_row = first.runs.iloc[0].to_dict()
    traj1 = first.trajectories.drop(columns="run_id").assign(phase=1)
    # the flow ended before t1, nothing to continue: a failed status, or an ``ok`` run (its
    # onset found) whose steps ran out (stop "max_steps"); a stop at rest ("steady") stays
    # where it is, so the second segment starts from it
    if first_row["status"] in STOPPED_EARLY or first_row["stop"] in STOPPED_EARLY:
        row = {**first_row, **spec.to_row(), **_labels(desc), "sim_run_id": run_id(spec),
               "fn_before_intervention": math.nan, "fn_after_intervention": math.nan,
               "onset_before_intervention": bool(math.isfinite(first_row["onset_time"]))}
        row.pop("run_id", None)
        return desc.run_id, row, traj1
    state = first.final_state(first_row["run_id"])
    arrays = {"H": np.asarray(state["H"]) * alpha, "W": state["W"], "b": state.get("b")}
    init = InitSpec(kind="arrays", scale=spec.init.scale, seed=spec.init.seed, arrays=arrays)
    rest = dataclasses.replace(solver, t_end=solver.t_end - t1, records=solver.records - n1 + 1,
                               t_first=min(1e-2, (solver.t_end - t1) / 10))
    second = simulate(spec.replace(init=init, solver=rest))
    traj2 = second.trajectories.drop(columns="run_id").assign(phase=2)
    traj2["time"] = traj2["time"] + t1
    traj = pd.concat([traj1, traj2], ignore_index=True)
    metric = spec.onset.metric
    times = traj["time"].to_numpy(np.float64)
    when, fn_on = onset_and_fn(times, traj[metric].to_numpy(np.float64),
                               traj["fn"].to_numpy(np.float64), spec.onset.threshold,
                               spec.onset.stay, spec.onset.interpolate)
    row = second.runs.iloc[0].to_dict()
    row.pop("run_id", None)
    if math.isnan(when) and math.isfinite(row["onset_time"]):  # found at the second segment's
        # early stop, past its last record (simulate's rule), so not in the trajectories
        when, fn_on = float(row["onset_time"]) + t1, float(row["fn_at_onset"])
    # the row describes the whole run: its own spec (not the second segment's t_end, records
    # and array init), the steps of both segments, and the closed forms of its spec (the first
    # segment's, which differ from the run's in t_end and records only)
    row.update(spec.to_row())
    row.update({k: v for k, v in first_row.items()
                if k.endswith("_theory") or k == "theory_regime"})
    for key in ("steps", "rejected_steps"):
        row[key] = int(first_row[key]) + int(row[key])
    # simulate's rules and order of statuses over the whole run: vanishing against the
    # largest fn of both segments (the records and the final state), and a crossing while
    # the norms vanish is no onset; so alpha = 1 gives the plain run's row
    status = row["status"]
    if status not in ("diverged", "stalled"):
        fn_all = np.append(traj["fn"].to_numpy(np.float64), float(row["final_fn"]))
        if is_vanishing(fn_all, solver.vanish_tol):
            status = "vanishing"
        elif math.isfinite(when):
            status = "ok"
    if status == "vanishing":
        when = fn_on = math.nan
    fn2 = traj2["fn"].to_numpy(np.float64)
    row.update(_labels(desc))
    row.update({"sim_run_id": run_id(spec), "status": status, "onset_time": when,
                "fn_at_onset": fn_on,
                "t_final": float(row["t_final"]) + t1, "init_kind": spec.init.kind,
                "fn_before_intervention": float(first.runs["final_fn"].iloc[0]),
                "fn_after_intervention": float(fn2[0]),
                "onset_before_intervention": bool(math.isfinite(when) and when <= t1)})
    return desc.run_id, row, traj


# ----------------------------------------------------------------------------- trained
def _below_at_switch(log: pd.DataFrame, metric: str, threshold: float, onset: float) -> bool:
    """True when the onset is the first phase-2 record and phase 1 already ended below the
    threshold: the crossing happened before phase 2 and was not observed there."""
    phase2 = log[log["phase"] == 2]
    phase1 = log[(log["phase"] == 1) & np.isfinite(log[metric].astype(float))]
    if phase2.empty or phase1.empty:
        return False
    return bool(onset == float(phase2["time"].min())
                and float(phase1[metric].iloc[-1]) < threshold)


def _fn_at(log: pd.DataFrame, epoch: int | None) -> float:
    """fn of the record at ``epoch`` (recorded after a rescaling there); NaN without one."""
    if epoch is None:
        return math.nan
    rows = log[log["time"] == float(epoch)]
    return float(rows["fn"].iloc[-1]) if len(rows) else math.nan


# trainings in one process run one at a time: a network's initial weights are drawn from
# torch's global generator, seeded per run (ncsim.validate.train.build_model), which the
# threads of one process share: two trainings at once in a Dask worker with more than one
# thread (`dask worker`'s default: one per core) drew each other's weights
_TRAIN_LOCK = threading.Lock()


def _train(desc: RunDesc) -> Result:
    """Train one network (two-phase protocol) and read onset and fn* (paper's rule); one
    training at a time in a process (``_TRAIN_LOCK``), so that its result is that of its
    seed whatever runs in the process's other threads."""
    with _TRAIN_LOCK:
        return _train_alone(desc)


def _train_alone(desc: RunDesc) -> Result:
    """The work of :func:`_train`, under its lock."""
    from ncsim.validate.analysis import OnsetRule, run_onset
    from ncsim.validate.data import load_dataset
    from ncsim.validate.train import train

    p = desc.params
    config = dataclasses.replace(train_config(p), run_id=desc.run_id)
    data = load_dataset(**dataset_args(p), root=p.get("data_root"))
    result = train(config, data)
    log = result.log.sort_values("time", kind="stable").reset_index(drop=True)
    rule = OnsetRule(threshold=p.get("onset_threshold", TRAINED_ONSET_THRESHOLD), phase=2,
                     interpolate=False)
    summary = run_onset(log, rule)
    collapsed = summary["status"] == "collapsed"
    inherited = collapsed and _below_at_switch(log, rule.metric, rule.threshold,
                                               summary["onset_epoch"])
    status = {"collapsed": "ok"}.get(summary["status"], summary["status"])  # simulate's names
    row = {**_labels(desc), "status": status,
           "time_unit": "epoch", "onset_time": summary["onset_epoch"],
           "fn_at_onset": summary["fn_star"], "final_fn": summary["final_fn"],
           "final_nc1_trace": float(log["nc1_trace"].iloc[-1]),
           "min_nc1_trace": summary["min_metric"], "t_final": summary["last_epoch"],
           "optimizer_steps": int(log["steps"].iloc[-1]),
           "final_accuracy": float(log["accuracy"].iloc[-1]),
           "fn_before_intervention": result.fn_before_intervention,
           "fn_after_intervention": _fn_at(log, config.intervention_epoch),
           "onset_at_phase_start": inherited}
    # numbers and flags, and the two text columns of the trajectory table (whatever dtype
    # pandas gives text: object before pandas 3, str from it)
    keep = [c for c in log.columns if c != "run_id" and pd.api.types.is_numeric_dtype(log[c])
            or c in ("time_unit", "phase_loss")]
    return desc.run_id, row, log[keep]
