"""``ncsim validate``: train a network, analyse training logs, compare with the simulator.

Thin commands over :mod:`ncsim.validate`; all logic lives in the library modules.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import click
import numpy as np
import pandas as pd

from ncsim.cli_errors import OutPath, check_out_file, check_out_folder, handle_errors
from ncsim.errors import InputError, listed, require
from ncsim.io import to_jsonable

FORMATS = ("table", "json")
#: text columns of the compare table, printed below it (one line each) rather than in it
COMPARE_NOTES = ("time_mapping", "lambda_h_rule", "calibration_note", "onset_simulated_source",
                 "theory_note")
TABLE_SUFFIXES = (".csv", ".parquet")


def _records(frame: pd.DataFrame) -> list[dict]:
    rows = frame.astype(object).where(pd.notna(frame), None).to_dict(orient="records")
    return to_jsonable(rows)


def _whole_as_int(values: pd.Series) -> pd.Series:
    """Times as nullable integers when every finite one is a whole number (epochs print as
    250, not 250.0); unchanged otherwise (flow time 1.25, a log-time interpolated onset)."""
    numbers = values.to_numpy(np.float64)
    known = numbers[~np.isnan(numbers)]
    whole = np.isfinite(known).all() and np.array_equal(known, np.round(known))
    return values.astype("Int64") if whole and np.all(np.abs(known) < 2.0**53) else values


def _check_threshold(threshold: float) -> None:
    require(math.isfinite(threshold) and threshold > 0,
            f"--onset-threshold must be a finite number > 0 (onset when nc1_trace falls below "
            f"it), got {threshold}")


def _print_table(title: str, frame: pd.DataFrame) -> None:
    click.echo(f"# {title}")
    with pd.option_context("display.width", 200, "display.max_columns", 40,
                           "display.float_format", "{:.6g}".format):
        click.echo(frame.to_string(index=False) if len(frame) else "(none)")
    click.echo("")


def _note_missing_fn_star(runs: pd.DataFrame) -> None:
    """Say on stderr which collapsed runs have no fn at their onset record (no fn*)."""
    missing = runs[runs["status"].eq("collapsed") & runs["fn_star"].isna()]
    if missing.empty:
        return
    click.echo(f"note: {len(missing)} collapsed run(s) have no fn at their onset record, so no "
               f"fn* ({listed(missing['run'])}); they are left out of the fn* statistics and the "
               "lead-time fit", err=True)


@click.group(name="validate")
def validate() -> None:
    """Check theory and simulation against real training."""


@validate.command("analyze")
@click.argument("logs", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--preset", type=click.Choice(["rupa2026", "ncsim"]), default="rupa2026",
              show_default=True, help="onset rule: rupa2026 = first phase-2 epoch below the "
              "threshold (whole log when it has no phase 2), at the paper's per-condition "
              "threshold; ncsim = whole log, threshold 0.01")
@click.option("--onset-threshold", type=float, default=None,
              help="onset when the metric < threshold, for every run [rupa2026 with nc1_trace: "
              "the paper's threshold per condition, 0.05 for depth2, depth3 (and _ext), "
              "actGELU, actTanh and mlp5_cifar10, 0.01 for the others (column 'threshold'); "
              "otherwise 0.01]")
@click.option("--interpolate/--no-interpolate", default=False, show_default=True,
              help="interpolate the crossing between records in (log time, log metric) and "
              "take fn there, as 'ncsim simulate' does by default; without it the onset is "
              "the first record below (the paper's rule)")
@click.option("--metric", default="nc1_trace", show_default=True, help="onset metric column")
@click.option("--threshold-fit", type=click.Choice(["mean", "power"]), default="mean",
              show_default=True, help="lead-time threshold: group-mean fn*, or the paper's "
              "log-log fit of group-mean fn* against the number in the condition (width)")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--out", type=OutPath(path_type=Path), default=None,
              help="also write the run table here (.csv or .parquet)")
@handle_errors
def analyze_cmd(logs: tuple[Path, ...], preset: str, onset_threshold: float | None,
                interpolate: bool, metric: str, threshold_fit: str, fmt: str,
                out: Path | None) -> None:
    """Onset and fn* per run, fn* statistics per group, lead-time predictor.

    The onset column onset_epoch holds the log's time axis: epochs for training logs, the
    flow time t for ncsim simulation tables. Files without an 'epoch' or 'time' column
    (per-seed summaries such as the paper's *_summary.csv) are skipped with a note on stderr,
    so a whole folder (*.csv) can be given.
    """
    from ncsim.io import write_table
    from ncsim.validate.analysis import OnsetRule, analyze
    from ncsim.validate.logs import epoch_logs, read_logs

    if not logs:
        raise InputError("give at least one log file (paper CSV or ncsim log)")
    per_epoch, others = epoch_logs(list(logs))
    if others:
        click.echo(f"note: skipped {len(others)} file(s) that are not per-epoch logs (no "
                   f"'epoch' or 'time' column): {listed(map(str, others), limit=20)}", err=True)
    if out is not None:
        require(out.suffix.lower() in TABLE_SUFFIXES, f"--out {out}: name the run table .csv or "
                ".parquet")
        require(not out.is_dir(), f"--out {out} is a folder; give a file name ending in .csv "
                "or .parquet")
        check_out_file(out)
    rule = OnsetRule.preset(preset, onset_threshold)
    rule = OnsetRule(metric=metric, threshold=rule.threshold, phase=rule.phase,
                     interpolate=interpolate)
    # the paper's thresholds are nc1 thresholds: another metric gets 0.01 unless one is given
    per_condition = preset == "rupa2026" and onset_threshold is None and metric == "nc1_trace"
    result = analyze(read_logs(per_epoch), rule, threshold_fit, per_condition)
    _note_missing_fn_star(result["runs"])
    runs = result["runs"].copy()
    runs["onset_epoch"] = _whole_as_int(runs["onset_epoch"])
    if out is not None:
        write_table(result["runs"], out)
    if fmt == "json":
        rule_json = to_jsonable(vars(rule))
        if per_condition:  # each run's threshold is in its 'threshold' column
            rule_json.update(threshold=None, per_condition_threshold=True)
        click.echo(json.dumps({
            "rule": rule_json,
            "runs": _records(runs),
            "groups": _records(result["groups"]),
            "leads": _records(result["leads"]),
            "lead_summary": to_jsonable(result["lead_summary"]),
        }))
        return
    shown = "the paper's threshold per condition" if per_condition else rule.threshold
    how = "interpolated" if interpolate else "first record below"
    _print_table(f"runs (onset: {metric} < {shown}, {how}, preset {preset}; min_metric: whole "
                 "log, min_searched: the records searched)",
                 runs[["run", "model", "dataset", "condition", "seed", "onset_epoch", "fn_star",
                       "min_metric", "min_metric_searched", "threshold", "status"]]
                 .rename(columns={"min_metric_searched": "min_searched"}))
    groups = result["groups"]
    _print_table("groups (fn* mean, sample std, CV, 95% Student-t interval)",
                 groups[["model", "dataset", "condition", "n_runs", "n_collapsed", "n_vanishing",
                         "fn_star_mean", "fn_star_std", "fn_star_cv", "fn_star_ci_low",
                         "fn_star_ci_high", "onset_mean", "onset_std"]])
    _print_table(f"lead time (threshold fit: {threshold_fit})",
                 result["leads"][["run", "onset_epoch", "fn_pred_in_sample", "lead_in_sample",
                                  "fn_pred_held_out", "lead_held_out"]])
    summary = pd.DataFrame(result["lead_summary"]).T.reset_index(names="method")
    _print_table("lead-time predictor: in-sample vs leave-one-seed-out", summary)


def _split_ints(text: str | None, option: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{option}: give integers separated by commas, got {text!r}") from None


def _train_config(preset_name: str, epochs: str | None, arch: str | None, depth: int | None,
                  width: int | None, act: str | None, overrides: dict) -> object:
    import dataclasses

    from ncsim.validate.train import preset

    net = {k: v for k, v in (("arch", arch), ("depth", depth), ("width", width),
                             ("activation", act)) if v is not None}
    config = preset(preset_name, _split_ints(epochs, "--epochs"), **net)
    phase_over = {k: v for k, v in overrides.items() if v is not None}
    if phase_over:
        config = dataclasses.replace(config, phases=tuple(
            dataclasses.replace(p, **phase_over) for p in config.phases))
    return config


def _condition_label(config) -> str:
    """The run's condition: the architecture with its width (mlp512), or the architecture alone
    where the width is not a parameter of it (resnet20)."""
    return config.arch if config.arch == "resnet20" else f"{config.arch}{config.width}"


@validate.command("train")
@click.option("--dataset", default="digits", show_default=True,
              help="gaussian, digits, mnist1d, fashion_mnist, mnist, cifar10")
@click.option("--data-root", type=click.Path(path_type=Path), default=None,
              help="folder of the IDX / CIFAR files (mnist, cifar10, fashion_mnist)")
@click.option("--per-class", type=int, default=None, help="balanced subset: samples per class")
@click.option("--test-per-class", type=int, default=None,
              help="balanced test subset: test samples per class [all; each NC record runs "
              "the model over the test set for test_accuracy]")
@click.option("--preset", "preset_name", type=click.Choice(["mlp", "resnet20", "cpu-small"]),
              default="mlp", show_default=True,
              help="mlp, resnet20: the paper's two-phase protocol (CE then MSE); cpu-small: a "
              "full-batch CPU run that collapses in seconds (digits, 10 per class by default)")
@click.option("--epochs", default=None, help="epochs per phase, e.g. 200,300")
@click.option("--arch", type=click.Choice(["mlp", "cnn", "resnet20"]), default=None,
              help="architecture [preset's]")
@click.option("--depth", type=int, default=None, help="MLP hidden layers (>= 1)")
@click.option("--width", type=int, default=None, help="hidden width")
@click.option("--activation", default=None,
              help="linear, relu, leaky_relu, tanh, gelu, silu")
@click.option("--optimizer", default=None, help="adam, adamw or sgd (every phase)")
@click.option("--lr", type=float, default=None, help="learning rate (every phase)")
@click.option("--weight-decay", type=float, default=None, help="weight decay (every phase)")
@click.option("--schedule", default=None, help="cosine, step or constant (every phase)")
@click.option("--batch-size", type=int, default=None, help="batch size (every phase)")
@click.option("--warmup", type=int, default=None,
              help="epochs of linear lr warm-up at the start of every phase [preset's]")
@click.option("--nc-every", type=int, default=None,
              help="epochs between NC records [default: 10; cpu-small: 50]")
@click.option("--nc-dense", type=int, default=0, show_default=True,
              help="also record each of the first N epochs of every phase (the transient "
              "after a phase switch)")
@click.option("--nc-min-accuracy", type=float, default=0.0, show_default=True,
              help="leave NC columns empty below this train accuracy (paper: 0.99)")
@click.option("--reference-train-size", type=int, default=None,
              help="take, in every phase, the optimiser steps the protocol takes on this many "
              "training samples (60000: MNIST's): epochs, milestones, warm-up, --nc-every, "
              "--checkpoint-every and --intervene-epoch are rescaled to the data given; the "
              "log and run.json hold the rescaled values [epochs as given]")
@click.option("--intervene-epoch", type=int, default=None,
              help="rescale the last hidden layer after this many epochs")
@click.option("--alpha", type=float, default=1.0, show_default=True, help="rescale factor")
@click.option("--seed", type=int, default=0, show_default=True,
              help="seed of the initialisation, the batch order and the data subset")
@click.option("--seeds", default=None,
              help="train several seeds (e.g. 0,1,2) into one log (run ids ..._s{seed}): at "
              "once with the stacked trainer on a GPU, one after another on the CPU; the data "
              "subset uses --seed; no checkpoints, intervention or --amp")
@click.option("--device", default="cpu", show_default=True)
@click.option("--amp/--no-amp", default=False, help="mixed precision training steps")
@click.option("--onset-threshold", type=float, default=0.01, show_default=True)
@click.option("--out", type=OutPath(path_type=Path), default=Path("validate_run"),
              show_default=True, help="output folder: log.parquet, log.csv, figure, checkpoints")
@click.option("--checkpoint-every", type=int, default=0, show_default=True)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--progress/--no-progress", default=True, help="progress bar on stderr")
@handle_errors
def train_cmd(dataset: str, data_root: Path | None, per_class: int | None,
              test_per_class: int | None, preset_name: str,
              epochs: str | None, arch: str | None, depth: int | None, width: int | None,
              activation: str | None, optimizer: str | None, lr: float | None,
              weight_decay: float | None, schedule: str | None, batch_size: int | None,
              warmup: int | None, nc_every: int | None, nc_dense: int, nc_min_accuracy: float,
              reference_train_size: int | None, intervene_epoch: int | None, alpha: float,
              seed: int, seeds: str | None, device: str, amp: bool, onset_threshold: float,
              out: Path,
              checkpoint_every: int, fmt: str, progress: bool) -> None:
    """Train a network with the two-phase protocol and NC tracking; write the log and a figure."""
    import dataclasses

    from ncsim.io import provenance, write_json, write_table
    from ncsim.validate.data import load_dataset
    from ncsim.validate.plots import plot_training
    from ncsim.validate.train import summarize, train

    _check_threshold(onset_threshold)
    check_out_folder(out)
    if preset_name == "cpu-small" and per_class is None:
        from ncsim.validate.train import CPU_SMALL_DATA

        per_class = CPU_SMALL_DATA["per_class"]
    config = _train_config(preset_name, epochs, arch, depth, width, activation,
                           {"optimizer": optimizer, "lr": lr, "weight_decay": weight_decay,
                            "schedule": schedule, "batch_size": batch_size, "warmup": warmup})
    seed_list = _split_ints(seeds, "--seeds")
    if seed_list is not None and (intervene_epoch is not None or amp or checkpoint_every):
        raise InputError("--seeds (stacked training) has no --intervene-epoch, --amp or "
                         "--checkpoint-every")
    run_id = f"{config.arch}_{dataset}" if seed_list else f"{config.arch}_{dataset}_s{seed}"
    config = dataclasses.replace(
        config, nc_every=nc_every if nc_every is not None else config.nc_every,
        nc_dense=nc_dense, nc_min_accuracy=nc_min_accuracy,
        reference_train_size=reference_train_size, seed=seed, device=device,
        amp=amp, intervention_epoch=intervene_epoch, intervention_alpha=alpha,
        checkpoint_dir=None if seed_list else str(out / "checkpoints"),
        checkpoint_every=checkpoint_every,
        run_id=run_id, data_args={"name": dataset, "per_class": per_class,
                                  "test_per_class": test_per_class, "seed": seed,
                                  "root": None if data_root is None else str(data_root)},
        labels={"model": config.arch, "dataset": dataset,
                "condition": _condition_label(config)}).validate()
    data = load_dataset(dataset, per_class=per_class, test_per_class=test_per_class, seed=seed,
                        root=data_root)
    _remove_old_checkpoints(out / "checkpoints")
    result = train(config, data, progress=progress,
                   seeds=None if seed_list is None else list(seed_list))
    write_table(result.log, out / "log.parquet")
    write_table(result.log, out / "log.csv")
    runs = result.runs or [result]
    summaries = [{"run": r.config.run_id, "seed": r.config.seed,
                  **summarize(r.log, onset_threshold),
                  "fn_before_intervention": r.fn_before_intervention} for r in runs]
    write_json({"config": result.config.to_dict(), "seeds": [r.config.seed for r in runs],
                "summary": summaries[0] if len(summaries) == 1 else summaries,
                "provenance": provenance(device, "float32")}, out / "run.json")
    plot_training(runs[0].log, out / "training.png", onset=summaries[0]["onset_epoch"])
    if fmt == "json":
        click.echo(json.dumps(to_jsonable({"runs": summaries, "out": str(out)})))
        return
    _print_table(f"training run (log: {out / 'log.parquet'})", pd.DataFrame(summaries))


def _remove_old_checkpoints(folder: Path) -> None:
    """Delete the checkpoints an earlier training wrote into ``folder`` (phase{j}_end.pt,
    epoch{k}.pt), with a note: the new log and run.json replace that training's, and a
    checkpoint left behind would pair the old network with the new log."""
    import re

    pattern = r"(phase\d+_end|epoch\d+)\.pt"
    old = [p for p in folder.glob("*.pt") if re.fullmatch(pattern, p.name)]
    for path in old:
        path.unlink()
    if old:
        click.echo(f"note: removed {len(old)} checkpoint(s) of an earlier training in {folder}",
                   err=True)


@validate.command("compare")
@click.option("--run", "run_dir", type=click.Path(path_type=Path), required=True,
              help="folder written by 'ncsim validate train' (two-phase CE -> MSE run)")
@click.option("--per-class", type=int, default=None,
              help="class-balanced subsample (n per class) for the UFM surrogate "
              "[default: min(20, smallest class)]")
@click.option("--onset-threshold", type=float, default=0.01, show_default=True)
@click.option("--horizon", type=float, default=10.0, show_default=True,
              help="simulate at least this multiple of the network's MSE-phase time")
@click.option("--wd-horizon", type=float, default=5.0, show_default=True,
              help="simulate at least this multiple of the surrogate's collapse time scale "
              "1 / (2 eta_H lambda_H)")
@click.option("--max-steps", type=int, default=20_000, show_default=True,
              help="step budget of the surrogate integration (past it: extrapolated onset)")
@click.option("--lambda-h-rule", type=click.Choice(("response", "balance")), default="response",
              show_default=True,
              help="feature-block calibration: 'response' fits eta_H and lambda_H to the "
              "network's feature velocity at the MSE start; 'balance' takes lambda_H = "
              "lambda_W |W|^2 / |H|^2 of the final network, eta_H = 1")
@click.option("--out", type=OutPath(path_type=Path), default=None,
              help="output folder (default: the run folder)")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@handle_errors
def compare_cmd(run_dir: Path, per_class: int | None, onset_threshold: float, horizon: float,
                wd_horizon: float, max_steps: int, lambda_h_rule: str, out: Path | None,
                fmt: str) -> None:
    """Measured vs simulated (UFM surrogate) onset and fn*, next to the closed-form fn*.

    \b
    Needs a run whose MSE phase (phase 2) uses SGD (--optimizer sgd, e.g. --preset
    cpu-small): Adam and AdamW steps have no gradient-flow time, and such a run is refused
    (exit status 2) before anything is simulated.
    \b
    Units (theory.md section 0.3): nn.MSELoss (mean over N x K entries, no 1/2) is 2/K
    times ncsim's data term, so weight decay wd is lambda_w = K wd / 2 in ncsim (K = 10,
    wd 0.002: 0.01) and the network's time t runs ncsim's flow at t_ncsim = (2/K) t
    (column t_ncsim_per_t = 2/K). The network's time is t = lr x steps / (1 - momentum)
    (heavy-ball or Nesterov momentum), counted from the MSE start; the training log's
    flow_time column is lr x steps from the start of training (no momentum factor), so
    t = (flow_time - flow_time at the MSE start) / (1 - momentum). Progress goes to stderr;
    the table to stdout, its text columns below it.
    """
    from ncsim.io import write_table
    from ncsim.validate.compare import compare_run
    from ncsim.validate.plots import plot_overlay

    if max_steps < 1:
        raise InputError(f"--max-steps must be >= 1, got {max_steps}")
    _check_threshold(onset_threshold)
    check_out_folder(out)
    result = compare_run(run_dir, per_class, onset_threshold, horizon,
                         wd_horizon=wd_horizon, max_steps=max_steps,
                         lambda_h_rule=lambda_h_rule,
                         report=lambda message: click.echo(f"compare: {message}", err=True))
    out = out or run_dir
    table = result["table"]
    write_table(table, out / "compare.csv")
    write_table(result["simulated"], out / "surrogate_trajectory.parquet")
    row = table.iloc[0]
    plot_overlay(result["measured"], result["simulated"], out / "compare.png",
                 {"network": row["onset_measured"], "surrogate": row["onset_simulated"]})
    if fmt == "json":
        click.echo(json.dumps({"runs": _records(table)}))
        return
    numbers = table.drop(columns=[c for c in COMPARE_NOTES if c in table.columns])
    _print_table(f"network vs UFM surrogate (time: {row['time_mapping']})", numbers.T
                 .reset_index().rename(columns={"index": "quantity", 0: "value"}))
    click.echo("# notes")
    for column in COMPARE_NOTES:
        if column in table.columns and str(row[column]):
            click.echo(f"{column}: {row[column]}")
