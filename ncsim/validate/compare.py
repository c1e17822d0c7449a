"""Measured onset of a trained network versus its simulated UFM surrogate and the closed form.

Input: a training run folder written by ``ncsim validate train`` (``checkpoints/phase1_end.pt``
= the state at the start of the MSE phase, ``checkpoints/phase2_end.pt`` = the final state,
``log.parquet``). The surrogate (see :mod:`ncsim.validate.surrogate`) starts from the network's
features and classifier at the start of the MSE phase on a class-balanced subsample of n per
class, with the same K, d and lambda_W; its feature block (eta_H, lambda_H) is calibrated by the
``response`` rule (fitted to the network's own feature velocity, the default) or the
``balance`` rule.

Time units. ncsim's gradient flow is ``d theta/dt = -grad f`` with ``f = (1/N) sum 1/2 |z - y|^2
+ ...``; PyTorch's ``nn.MSELoss`` (mean over the N x K entries, no 1/2) is (2/K) times ncsim's
data term, so a network with coupled L2 ``wd`` minimises (2/K) f with ``lambda_W = K wd / 2`` and
its gradient flow in its own time t runs ncsim's flow at ``t_ncsim = (2/K) t``. The network's time
is ``t = lr x steps`` for plain GD/SGD and ``t = lr x steps / (1 - m)`` for SGD with momentum m
(heavy ball or Nesterov: the steady-state step is lr / (1 - m) times the gradient). All times in
the table are in this unit t, counted from the start of the MSE phase.

The training log's ``flow_time`` column is ``lr x steps`` (the sum of the scheduled lr over the
steps from the start of training, with no momentum factor); this module's t is ``(flow_time -
flow_time at the MSE start) / (1 - m)``. The table's ``t_ncsim_per_t`` is 2/K and ``lambda_w``
is ``K wd / 2`` (the conversion rules of the theory reference, section 0.3: nn.MSELoss has the
data weight a = 2/(NK)). ``lambda_w_x_mse_duration`` is lambda_w times the network's MSE
phase in the surrogate's time (``t_ncsim_per_t`` x its duration in t): how much weight decay
the network's MSE phase amounts to; ``surrogate_t_end`` is the surrogate's horizon in its own
time (at least ``horizon`` times that duration).

Adam and AdamW divide each coordinate by its running gradient scale, so their steps follow no
time of the gradient flow of f: a run whose phase 2 uses them is refused (:class:`InputError`,
before anything is simulated), since no onset of the surrogate could be set against the
network's; train with ``--optimizer sgd`` (e.g. the ``cpu-small`` preset). Every row of the
table therefore has a valid time mapping, named in its ``time_mapping`` column.

``calibration_note`` flags a weak response fit (``calibration_r2_data`` below
:data:`ncsim.validate.surrogate.WEAK_R2` = 0.5): the simulated onset is then a rough guide only.

Horizon and cost. The surrogate's collapse is driven by its feature penalty: after it fits the
targets, the within-class spread outside the row space of W decays as ``exp(-eta_H lambda_H
t_ncsim)`` (its variance, hence nc1_trace, at the rate ``2 eta_H lambda_H``). The integration
therefore runs to ``max(horizon x the MSE-phase time, wd_horizon / (2 eta_H lambda_H))`` in ncsim
time, i.e. to its own onset, within a step budget (``max_steps``). The balance calibration gives
a small lambda_H (1e-5 or less) with eta_H = 1 while the classifier's rate |H|^2 / N is large, a
stiff system whose explicit integration to the onset may exceed the budget; the row then has
``onset_simulated`` NaN, ``status_simulated = "max_steps"``, the time reached
(``onset_simulated_lower_bound``: the surrogate has not collapsed before it; the onset itself
when it has) and the extrapolation ``onset_simulated_estimate = t_reached + (K/2)
ln(nc1_trace(t_reached) / threshold) / (2 eta_H lambda_H)`` (network units; eta_H lambda_H is a
rate in ncsim time), with ``onset_simulated_source`` naming which of the two the ratio column
uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ncsim.errors import InputError, is_integer, require
from ncsim.onset import is_vanishing, onset_and_fn, onset_time, value_at
from ncsim.validate import surrogate as sg
from ncsim.validate.analysis import VANISH_TOL
from ncsim.validate.data import load_dataset
from ncsim.validate.train import load_checkpoint


def _measured(log: pd.DataFrame, threshold: float, factor: float = 1.0
              ) -> tuple[pd.DataFrame, float, float]:
    missing = [c for c in ("time", "phase", "flow_time", "nc1_trace", "fn") if c not in log]
    require(not missing, f"the training log lacks column(s) {', '.join(missing)}; give the "
            "log.parquet written by 'ncsim validate train' (flow_time = lr x steps)")
    phase2 = log[log["phase"] == 2].sort_values("time")
    require(len(phase2) > 0, "the training log has no MSE phase (phase 2)")
    before = log[log["time"] <= phase2["time"].iloc[0] - 0.5].sort_values("time")
    t0 = float(before["flow_time"].iloc[-1]) if len(before) else 0.0
    curve = phase2.assign(t=(phase2["flow_time"].to_numpy(np.float64) - t0) * factor)
    t = curve["t"].to_numpy(np.float64)
    require(not bool(np.any(t < 0)), f"the MSE phase's flow_time falls below the end of the "
            f"cross-entropy phase ({t0:g}) on {int(np.sum(t < 0))} record(s): flow_time must "
            "keep counting across the phases; give the log 'ncsim validate train' wrote")
    in_time = log.sort_values("time", kind="stable")  # the final fn is the latest record's
    if is_vanishing(in_time["fn"].to_numpy(np.float64), VANISH_TOL):  # no collapse, as analyze
        return curve, math.nan, math.nan
    onset, fn_on = onset_and_fn(t, curve["nc1_trace"].to_numpy(np.float64),
                                curve["fn"].to_numpy(np.float64), threshold, interpolate=False)
    return curve, onset, fn_on


def _same_training(run_dir: Path, checkpoint: Path, config: dict[str, Any]) -> None:
    """Refuse a checkpoint written by another training than the folder's run.json (and so
    its log): a later 'validate train' into the same folder (with --seeds, which writes no
    checkpoints, or before its checkpoints) would pair the old network with the new log."""
    import json

    from ncsim.io import to_jsonable

    path = run_dir / "run.json"
    if not path.exists():
        return
    try:
        recorded = json.loads(path.read_text()).get("config")
    except (OSError, ValueError, AttributeError) as err:
        raise InputError(f"{path} is not the JSON object 'validate train' writes ({err}); "
                         "train again, or remove it to compare the checkpoint alone") from err
    if not isinstance(recorded, dict):
        return
    ours = to_jsonable(config)
    differ = sorted(k for k in set(ours) | set(recorded) if ours.get(k) != recorded.get(k))
    require(not differ,
            f"{checkpoint} comes from another training than {path} (they differ in "
            f"{', '.join(differ)}): the log is not that network's; train again into an empty "
            "folder, or into this one without --seeds")


RULES = {
    "response": "response: eta_H, lambda_H fitted to the network's feature velocity at the "
                "start of the MSE phase",
    "balance": "balance: lambda_W |W|^2 / |H|^2 at the final network state, eta_H = 1",
}


def compare_run(run_dir: str | Path, per_class: int | None = None, threshold: float = 0.01,
                horizon: float = 10.0, seed: int = 0, wd_horizon: float = 5.0,
                max_steps: int = 20_000, lambda_h_rule: str = "response",
                report: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Compare a training run with its UFM surrogate.

    Parameters
    ----------
    run_dir : folder of ``ncsim validate train`` output.
    per_class : n, samples per class of the surrogate (None: min(20, smallest class)).
    threshold : onset when nc1_trace < threshold (both curves, first record below).
    horizon : simulate at least ``horizon`` x the network's MSE-phase duration.
    seed : seed of the class-balanced subsample.
    wd_horizon : simulate at least ``wd_horizon / (2 eta_H lambda_H)`` (ncsim time, the surrogate's
        collapse time scale).
    max_steps : step budget of the surrogate integration.
    lambda_h_rule : "response" or "balance" (:mod:`ncsim.validate.surrogate`).
    report : called with a one-line message at each stage past the input checks (calibration
        done, simulation started and finished), e.g. to print progress on stderr; None: silent.

    Returns
    -------
    dict with ``table`` (one-row DataFrame), ``measured`` and ``simulated`` curves (column t).
    """
    require(math.isfinite(horizon) and horizon > 0 and math.isfinite(wd_horizon)
            and wd_horizon >= 0,
            f"horizon must be a finite number > 0 and wd_horizon a finite number >= 0, got "
            f"{horizon} and {wd_horizon}; they set how far the surrogate is simulated")
    require(is_integer(seed) and seed >= 0,
            f"seed must be an integer >= 0 (it draws the class-balanced subsample), got {seed!r}")
    run_dir = Path(run_dir)
    start_ckpt = run_dir / "checkpoints" / "phase1_end.pt"
    final_ckpt = run_dir / "checkpoints" / "phase2_end.pt"
    log_path = run_dir / "log.parquet"
    for path in (start_ckpt, log_path):
        if not path.exists():
            raise InputError(f"{path} not found; give a folder written by 'ncsim validate train' "
                             "with a two-phase (CE then MSE) protocol")
    from ncsim.io import read_table
    from ncsim.validate.train import Phase, decayed_names, flow_time_factor

    require(lambda_h_rule in sg.CALIBRATIONS, f"unknown lambda_H rule {lambda_h_rule!r}; "
            f"allowed: {', '.join(sg.CALIBRATIONS)}")

    say = report or (lambda message: None)
    model0, state0 = load_checkpoint(start_ckpt)
    config = state0["config"]
    _same_training(run_dir, start_ckpt, config)
    model_final = None
    if final_ckpt.exists():
        model_final, state_final = load_checkpoint(final_ckpt)
        _same_training(run_dir, final_ckpt, state_final["config"])
    phase2 = config["phases"][1] if len(config["phases"]) > 1 else None
    require(phase2 is not None and phase2["loss"] == "mse",
            "compare needs a run whose second phase uses the MSE loss")
    phase2_spec = Phase(**{**phase2, "milestones": tuple(phase2.get("milestones", ()))})
    step_factor = flow_time_factor(phase2_spec)
    require(math.isfinite(step_factor),
            f"the MSE phase of {run_dir} uses {phase2['optimizer']}: its steps have no "
            "gradient-flow time, so its onset cannot be set against the surrogate's; train "
            "the run with --optimizer sgd (e.g. 'ncsim validate train --preset cpu-small')")
    args = dict(config.get("data_args") or {})
    require("name" in args, f"{start_ckpt} does not record its dataset; retrain with ncsim")
    data = load_dataset(**args)  # every recorded argument (gaussian: classes, dim, ...)
    require(data.classes == state0["classes"]
            and data.input_shape == tuple(state0["input_shape"]),
            f"the dataset rebuilt from {start_ckpt} ({data.classes} classes, inputs "
            f"{data.input_shape}) does not match the network ({state0['classes']} classes, "
            f"inputs {tuple(state0['input_shape'])}); retrain with ncsim")
    K = data.classes
    counts = np.bincount(data.y_train.cpu().numpy(), minlength=K)
    if per_class is None:
        per_class = int(min(20, counts.min()))
    require(is_integer(per_class) and 1 <= per_class <= counts.min(),
            f"--per-class must lie in [1, {counts.min()}] (the smallest class of the run's "
            f"training set) and be an integer, got {per_class!r}")
    start = sg.network_state(model0, data, per_class, seed)
    final = start
    if model_final is not None:
        final = sg.network_state(model_final, data, per_class, seed)
    lam_w = sg.lambda_w_ncsim(phase2["weight_decay"], K)
    factor = sg.time_factor(K)
    if lambda_h_rule == "balance":
        cal = sg.Calibration("balance", lambda_h=sg.calibrate_lambda_h(final, lam_w))
    else:
        _, v_data, v_decay = sg.feature_velocities(
            model0, data, start.index, phase2["weight_decay"],
            decayed_names(model0, int(phase2.get("decay_last", 0))))
        cal = sg.calibrate_response(start, v_data, v_decay, factor)
        if sg.has_batch_norm(model0):
            cal.note = "; ".join(filter(None, (
                "BatchNorm evaluated with running statistics (training steps use batch "
                "statistics): eta_H and lambda_H are approximate", cal.note)))
    rate = cal.eta_h * cal.lambda_h  # ncsim-time decay rate of the surrogate's features
    log = read_table(log_path)
    if "run_id" in log and config.get("run_id") is not None:  # the checkpoint's own run
        ids = sorted(map(str, log["run_id"].unique()))
        if config["run_id"] not in ids:
            held = {0: "no record of", 1: f"run {', '.join(ids)}, not"}.get(
                len(ids), f"runs {', '.join(ids)}, none of them")
            raise InputError(f"{log_path} holds {held} the checkpoint's run "
                             f"{config['run_id']!r}; give the folder's own log")
        log = log[log["run_id"] == config["run_id"]]
    curve, onset_net, fn_net = _measured(log, threshold, step_factor)
    duration = float(curve["t"].max())
    require(math.isfinite(duration), "the MSE phase of the log has no finite flow_time (a "
            "blank flow_time on the records around the phase change?); give the log "
            "'ncsim validate train' wrote")
    require(duration > 0, "the MSE phase of the log has zero duration (lr = 0?)")
    t_end = horizon * duration * factor
    if rate > 0:
        t_end = max(t_end, wd_horizon / (2.0 * rate))
    require(math.isfinite(t_end), f"horizon {horizon:g} x the MSE phase's duration "
            f"({duration:g}) or wd_horizon {wd_horizon:g} overflows the surrogate's t_end; "
            "give a smaller horizon")
    spec = sg.surrogate_spec(start, lam_w, cal.lambda_h, t_end, threshold, max_steps=max_steps,
                             eta_h=cal.eta_h)
    from ncsim.flow import simulate

    # progress only past every input check, so that an input error stays one line
    say(f"surrogate calibrated ({cal.rule} rule, {per_class} samples per class): eta_H "
        f"{cal.eta_h:.4g}, lambda_H {cal.lambda_h:.4g}, r2_data {cal.r2_data:.3g}")
    say(f"simulating the surrogate to t_ncsim = {t_end:.4g} (= {t_end / factor:.4g} network "
        f"time t; at most {max_steps} steps)")
    sim = simulate([spec])
    say(f"surrogate: {sim.runs['status'].iloc[0]} after {int(sim.runs['steps'].iloc[0])} steps")
    traj = sg.simulated_curve(sim.trajectories, factor)
    t = traj["t"].to_numpy(np.float64)
    onset_sim = onset_time(t, traj["nc1_trace"].to_numpy(np.float64), threshold,
                           interpolate=False)
    vanishing = str(sim.runs["status"].iloc[0]) == "vanishing"
    if vanishing:  # nc1 of vanishing features is no collapse (README: never reported as one)
        onset_sim = math.nan
    fn_sim = value_at(t, traj["fn"].to_numpy(np.float64), onset_sim, False)
    t_reached = float(t[-1])
    nc1_reached = float(traj["nc1_trace"].iloc[-1])
    if math.isfinite(onset_sim):
        estimate, source = onset_sim, "simulated"
    elif vanishing:
        estimate, source = math.nan, "none (the surrogate's features vanish)"
    else:
        gap = math.log(max(nc1_reached / threshold, 1.0))
        rest = gap / (2.0 * rate) / factor if rate > 0 else (math.inf if gap > 0 else 0.0)
        estimate, source = t_reached + rest, "extrapolated"
    mapping = ("t = lr x steps" if step_factor == 1.0
               else f"t = lr x steps / (1 - momentum) = {step_factor:g} lr x steps")
    fn_theory, regime = sg.closed_form_fn_star(spec)
    row = {
        "run": log["run_id"].iloc[0] if "run_id" in log else run_dir.name,
        "K": K, "d": start.H.shape[0], "n_per_class": per_class,
        "weight_decay": phase2["weight_decay"], "lambda_w": lam_w, "lambda_h": cal.lambda_h,
        "eta_h": cal.eta_h, "lambda_h_rule": RULES[cal.rule],
        "calibration_r2_data": cal.r2_data, "calibration_r2_decay": cal.r2_decay,
        "calibration_note": cal.note,
        "optimizer": phase2["optimizer"], "time_mapping": mapping,
        "time_unit": "t from MSE start",
        "t_ncsim_per_t": factor, "lambda_w_x_mse_duration": lam_w * factor * duration,
        "surrogate_t_end": t_end,
        "onset_measured": onset_net, "onset_simulated": onset_sim,
        "onset_simulated_lower_bound": onset_sim if math.isfinite(onset_sim) else t_reached,
        "onset_simulated_estimate": estimate, "onset_simulated_source": source,
        "onset_ratio_sim_over_measured": (estimate / onset_net
                                          if onset_net and math.isfinite(onset_net) else math.nan),
        "collapse_time_scale": 1.0 / (2.0 * rate) / factor if rate > 0 else math.inf,
        "fn_star_measured": fn_net, "fn_star_simulated": fn_sim,
        "fn_star_closed_form": fn_theory, "theory_note": regime,
        "fn_star_ratio_sim_over_measured": fn_sim / fn_net if fn_net else math.nan,
        "fn_star_ratio_closed_form_over_measured": (fn_theory / fn_net if fn_net
                                                    else math.nan),
        "fn_start": start.fn, "fn_final_measured": float(curve["fn"].iloc[-1]),
        "fn_final_simulated": float(traj["fn"].iloc[-1]),
        "nc1_final_measured": float(curve["nc1_trace"].iloc[-1]),
        "nc1_final_simulated": float(traj["nc1_trace"].iloc[-1]),
        "status_simulated": str(sim.runs["status"].iloc[0]),
    }
    if not math.isfinite(fn_theory):
        row["theory_note"] = regime or "closed form not available"
    return {"table": pd.DataFrame([row]), "measured": curve, "simulated": traj}
