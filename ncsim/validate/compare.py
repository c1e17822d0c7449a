"""Measured onset of a trained network versus its simulated UFM surrogate and the closed form.

Input: a training run folder written by ``ncsim validate train`` (``checkpoints/phase1_end.pt``
= the state at the start of the MSE phase, ``checkpoints/phase2_end.pt`` = the final state,
``log.parquet``). The surrogate (see :mod:`ncsim.validate.surrogate`) starts from the network's
features and classifier at the start of the MSE phase on a class-balanced subsample of n per
class, with the same K, d and lambda_W, and lambda_H from the balance calibration.

All times are in the network's unit t = lr x steps, counted from the start of the MSE phase.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ncsim.errors import InputError, require
from ncsim.onset import onset_time, value_at
from ncsim.validate import surrogate as sg
from ncsim.validate.data import load_dataset
from ncsim.validate.train import load_checkpoint


def _measured(log: pd.DataFrame, threshold: float) -> tuple[pd.DataFrame, float, float]:
    require("flow_time" in log.columns, "the training log lacks flow_time (t = lr x steps)")
    phase2 = log[log["phase"] == 2].sort_values("time")
    require(len(phase2) > 0, "the training log has no MSE phase (phase 2)")
    before = log[log["time"] <= phase2["time"].iloc[0] - 0.5]
    t0 = float(before["flow_time"].iloc[-1]) if len(before) else 0.0
    curve = phase2.assign(t=phase2["flow_time"].to_numpy(np.float64) - t0)
    t = curve["t"].to_numpy(np.float64)
    onset = onset_time(t, curve["nc1_trace"].to_numpy(np.float64), threshold, interpolate=False)
    return curve, onset, value_at(t, curve["fn"].to_numpy(np.float64), onset, False)


def compare_run(run_dir: str | Path, per_class: int = 20, threshold: float = 0.01,
                horizon: float = 10.0, seed: int = 0) -> dict[str, Any]:
    """Compare a training run with its UFM surrogate.

    Parameters
    ----------
    run_dir : folder of ``ncsim validate train`` output.
    per_class : n, samples per class of the surrogate.
    threshold : onset when nc1_trace < threshold (both curves, first record below).
    horizon : simulate up to ``horizon`` x the network's MSE-phase duration.

    Returns
    -------
    dict with ``table`` (one-row DataFrame), ``measured`` and ``simulated`` curves (column t).
    """
    run_dir = Path(run_dir)
    start_ckpt = run_dir / "checkpoints" / "phase1_end.pt"
    final_ckpt = run_dir / "checkpoints" / "phase2_end.pt"
    log_path = run_dir / "log.parquet"
    for path in (start_ckpt, log_path):
        if not path.exists():
            raise InputError(f"{path} not found; give a folder written by 'ncsim validate train' "
                             "with a two-phase (CE then MSE) protocol")
    from ncsim.io import read_table

    model0, state0 = load_checkpoint(start_ckpt)
    config = state0["config"]
    phase2 = config["phases"][1] if len(config["phases"]) > 1 else None
    require(phase2 is not None and phase2["loss"] == "mse",
            "compare needs a run whose second phase uses the MSE loss")
    args = dict(config.get("data_args") or {})
    require("name" in args, f"{start_ckpt} does not record its dataset; retrain with ncsim")
    data = load_dataset(args["name"], per_class=args.get("per_class"), seed=args.get("seed", 0),
                        root=args.get("root"))
    K = data.classes
    start = sg.network_state(model0, data, per_class, seed)
    final = start
    if final_ckpt.exists():
        final = sg.network_state(load_checkpoint(final_ckpt)[0], data, per_class, seed)
    lam_w = sg.lambda_w_ncsim(phase2["weight_decay"], K)
    lam_h = sg.calibrate_lambda_h(final, lam_w)
    log = read_table(log_path)
    curve, onset_net, fn_net = _measured(log, threshold)
    factor = sg.time_factor(K)
    duration = float(curve["t"].max())
    require(duration > 0, "the MSE phase of the log has zero duration (lr = 0?)")
    spec = sg.surrogate_spec(start, lam_w, lam_h, horizon * duration * factor, threshold)
    from ncsim.flow import simulate

    sim = simulate([spec])
    traj = sg.simulated_curve(sim.trajectories, factor)
    t = traj["t"].to_numpy(np.float64)
    onset_sim = onset_time(t, traj["nc1_trace"].to_numpy(np.float64), threshold,
                           interpolate=False)
    fn_sim = value_at(t, traj["fn"].to_numpy(np.float64), onset_sim, False)
    fn_theory, regime = sg.closed_form_fn_star(spec)
    row = {
        "run": log["run_id"].iloc[0] if "run_id" in log else run_dir.name,
        "K": K, "d": start.H.shape[0], "n_per_class": per_class,
        "weight_decay": phase2["weight_decay"], "lambda_w": lam_w, "lambda_h": lam_h,
        "lambda_h_rule": "balance: lambda_W |W|^2 / |H|^2 at the final network state",
        "time_unit": "t = lr x steps from MSE start",
        "onset_measured": onset_net, "onset_simulated": onset_sim,
        "fn_star_measured": fn_net, "fn_star_simulated": fn_sim,
        "fn_star_closed_form": fn_theory, "theory_note": regime,
        "fn_start": start.fn, "fn_final_measured": float(curve["fn"].iloc[-1]),
        "fn_final_simulated": float(traj["fn"].iloc[-1]),
        "nc1_final_measured": float(curve["nc1_trace"].iloc[-1]),
        "nc1_final_simulated": float(traj["nc1_trace"].iloc[-1]),
        "status_simulated": str(sim.runs["status"].iloc[0]),
    }
    if not math.isfinite(fn_theory):
        row["theory_note"] = regime or "closed form not available"
    return {"table": pd.DataFrame([row]), "measured": curve, "simulated": traj}
