"""Command line: ``ncsim simulate | theory | validate | study | bench``.

Commands are thin: they parse options into specs, call the library and print or write the
result. ``--format json`` prints one JSON object on stdout and nothing else there (NaN as
null, an infinity as the string "inf"); progress
goes to stderr. Bad input exits with status 2 and one line on stderr, before any file is
written.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from ncsim.cli_errors import OutPath, check_out_folder, fail, handle_errors
from ncsim.errors import InputError
from ncsim.params import COUNTS, INTEGERS, NUMBERS, grid
from ncsim.spec import (
    ACTIVATIONS,
    BIASES,
    DEFAULT_REG_LAMBDA_B,
    DEFAULT_TOLERANCES,
    DTYPES,
    LOSSES,
    MODELS,
    ONSET_METRICS,
    REDUCTIONS,
    SOLVERS,
    InitSpec,
    ModelSpec,
    OnsetSpec,
    Regularization,
    RunSpec,
    SolverSpec,
    TimeScale,
)
from ncsim.threads import THREADS_MAX

SUBCOMMANDS = {
    "theory": "ncsim.theory.cli:theory",
    "validate": "ncsim.validate.cli:validate",
    "study": "ncsim.study.cli:study",
    "bench": "ncsim.bench:bench",
}


# click >= 8.2 raises this for a group called without a command (8.1 printed the help)
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class NcsimGroup(click.Group):
    """Click group with lazily imported sub-groups and one-line errors (exit status 2)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        names.update(n for n in SUBCOMMANDS if self._load(n) is not None)
        return sorted(names)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return super().get_command(ctx, name) or self._load(name)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as err:
            if err.name and module.startswith(err.name):
                return None
            raise

    def main(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.exceptions.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(130)
        except _NO_ARGS_IS_HELP as err:  # a group called without a command: its help
            click.echo(err.ctx.get_help() if err.ctx is not None else err.format_message())
            sys.exit(0)
        except click.exceptions.ClickException as err:
            fail(err.format_message())
        except InputError as err:
            fail(str(err))
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=NcsimGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ncsim")
def cli() -> None:
    """Simulate the onset of neural collapse (NC) in unconstrained-features models."""


def main() -> None:
    """Console entry point. The process keeps its freed heap for reuse (:mod:`ncsim.heap`)."""
    from ncsim.heap import keep_freed_memory

    keep_freed_memory()
    cli()


# ---------------------------------------------------------------------------- simulate

GRID_OPTIONS = ("classes", "per_class", "dim", "depth", "width", "leaky_slope", "lambda_w",
                "lambda_h", "lambda_b", "init_scale", "seed", "eta_h", "eta_w", "eta_b", "t_end",
                "dt", "rtol", "atol", "records", "t_first", "max_steps", "gtol",
                "onset_threshold", "onset_stay")
MAX_RUNS = 1_000_000
SIMULATE_EPILOG = (
    "A numeric option takes one value, a comma list or a log range lo..hi:count (count "
    "log-spaced values from lo to hi, both > 0; hi below lo counts down); a repeated value "
    "counts once. Several make a grid with one run per point (at most 1000000), in the order "
    "of this list: -K, -n, -d, --depth, --width, --leaky-slope, --lambda-w, --lambda-h, "
    "--lambda-b, --init-scale, --seed, --eta-h, --eta-w, --eta-b, --t-end, --dt, --rtol, "
    "--atol, --records, --t-first, --max-steps, --gtol, --onset-threshold, --onset-stay, the "
    "last varying fastest (--threads takes one number). json: NaN is null, an infinity is "
    "the string \"inf\". Exit status 0 whatever the runs' statuses (diverged, "
    "not_collapsed, ... are in the status column); 2 for bad input.")
#: grid options that are SolverSpec / OnsetSpec fields (absent: the dataclass default)
SOLVER_AXES = ("dt", "t_end", "records", "t_first", "max_steps", "gtol")
ONSET_AXES = {"onset_threshold": "threshold", "onset_stay": "stay"}
TABLE_COLUMNS = ("status", "onset_time", "fn_at_onset", "fn_star_theory", "onset_time_theory",
                 "final_fn", "final_nc1_trace", "steps")


def _choice(values: tuple[str, ...]) -> click.Choice:
    return click.Choice(list(values), case_sensitive=False)


def _check_class_counts(classes: int, axes: dict[str, Any]) -> None:
    """Refuse -K or -n beside --class-counts unless -K names the number of counts.

    classes: the number of counts given; axes: the grid options given on the command line.
    """
    given_k = [int(k) for k in axes.get("classes", ())]
    if "per_class" in axes or any(k != classes for k in given_k):
        named = " and ".join(flag for flag, name in (("-K", "classes"), ("-n", "per_class"))
                             if name in axes)
        raise InputError(f"--class-counts sets K = {classes} and the samples per class, so "
                         f"{named} cannot be given beside it (-K only as {classes}); drop "
                         f"{named} or --class-counts")


def build_specs(options: dict[str, Any]) -> list[RunSpec]:
    """Run specs of the grid given by the simulate options (validated)."""
    axes = {name: options[name] for name in GRID_OPTIONS if options.get(name) is not None}
    counts = options.get("class_counts")
    if counts:
        _check_class_counts(len(counts), axes)
    usual = DEFAULT_TOLERANCES.get(options["dtype"], DEFAULT_TOLERANCES["float64"])
    specs = []
    for point in grid(axes, limit=MAX_RUNS):
        classes = int(point.get("classes", 10))
        per_class: int | tuple[int, ...] = int(point.get("per_class", 20))
        if counts:
            per_class = tuple(int(c) for c in counts)
            classes = len(per_class)
        depth = int(point.get("depth", 1))
        model = ModelSpec(
            kind=options["model"], loss=options["loss"], bias=options["bias"], classes=classes,
            per_class=per_class, dim=int(point.get("dim", 32)), depth=depth,
            width=int(point["width"]) if "width" in point else None,
            activation=options["activation"],
            **({"leaky_slope": point["leaky_slope"]} if "leaky_slope" in point else {}),
        )
        lambda_b = point.get("lambda_b", DEFAULT_REG_LAMBDA_B if options["bias"] == "reg" else 0.0)
        spec = RunSpec(
            model=model,
            reg=Regularization(lambda_w=point.get("lambda_w", 5e-4),
                               lambda_h=point.get("lambda_h", 5e-4), lambda_b=lambda_b),
            init=InitSpec(kind=options["init"], scale=point.get("init_scale", 0.1),
                          seed=int(point.get("seed", 0))),
            time_scale=TimeScale(eta_h=point.get("eta_h", 1.0), eta_w=point.get("eta_w", 1.0),
                                 eta_b=point.get("eta_b", 1.0)),
            solver=SolverSpec(
                method=options["solver"], rtol=point.get("rtol", usual[0]),
                atol=point.get("atol", usual[1]), dtype=options["dtype"],
                device=options["device"], reduction=options["reduction"],
                cuda_graphs=options["cuda_graphs"],
                **{k: point[k] for k in SOLVER_AXES if k in point},
            ),
            onset=OnsetSpec(metric=options["onset_metric"], interpolate=options["interpolate"],
                            **{field: point[k] for k, field in ONSET_AXES.items() if k in point}),
        )
        specs.append(spec.validate())
    return specs


def _model_options(func):
    opts = [
        click.option("--model", type=_choice(MODELS), default="ufm", show_default=True,
                     help="ufm: Z = W H + b; deep: H feeds an L-layer head."),
        click.option("--loss", type=_choice(LOSSES), default="ce", show_default=True),
        click.option("--bias", type=_choice(BIASES), default="none", show_default=True,
                     help="none | free (lambda_b = 0) | reg (lambda_b > 0)."),
        click.option("-K", "--classes", type=INTEGERS, default=None, help="Classes K [10]."),
        click.option("-n", "--per-class", type=INTEGERS, default=None,
                     help="Samples per class n [20]."),
        click.option("--class-counts", type=COUNTS, default=None,
                     help="Class counts n_1,...,n_K (imbalance). They set K and n: no -n "
                          "beside them, and -K only as their number."),
        click.option("-d", "--dim", type=INTEGERS, default=None, help="Feature dimension d [32]."),
        click.option("--depth", type=INTEGERS, default=None,
                     help="Weight matrices L incl. the classifier (deep) [1]."),
        click.option("--width", type=INTEGERS, default=None, help="Hidden width (deep) [d]."),
        click.option("--activation", type=_choice(ACTIVATIONS), default="linear",
                     show_default=True),
        click.option("--leaky-slope", type=NUMBERS, default=None,
                     help="Negative slope of leaky_relu [0.01]."),
        click.option("--lambda-w", type=NUMBERS, default=None, help="Weight decay of W [5e-4]."),
        click.option("--lambda-h", type=NUMBERS, default=None, help="Feature decay [5e-4]."),
        click.option("--lambda-b", type=NUMBERS, default=None,
                     help="Bias decay, used with --bias reg [1e-3 there]."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def _check_simulation_folder(out: Path | None) -> None:
    """``--out`` names a folder: refuse one named like a file of its contents (``x.csv`` would
    become a folder of Parquet tables), then check that it can be written."""
    if out is not None and out.suffix.lower() in (".csv", ".parquet", ".json", ".png"):
        hint = " and --table-format csv" if out.suffix.lower() == ".csv" else ""
        raise InputError(f"--out {out} looks like a file name, but --out is a folder (runs, "
                         f"trajectories, spec.json and a figure go into it); give a folder, "
                         f"e.g. --out {out.with_suffix('')}{hint}")
    check_out_folder(out)


@cli.command(epilog=SIMULATE_EPILOG)
@_model_options
@click.option("--init", type=_choice(("gaussian", "spectral", "etf")), default="gaussian",
              show_default=True, help="Initialisation (spectral/etf: balanced, aligned).")
@click.option("--init-scale", type=NUMBERS, default=None, help="Init scale [0.1].")
@click.option("--seed", type=INTEGERS, default=None, help="Seed(s) [0].")
@click.option("--eta-h", type=NUMBERS, default=None, help="Time scale of H [1].")
@click.option("--eta-w", type=NUMBERS, default=None, help="Time scale of the W_l [1].")
@click.option("--eta-b", type=NUMBERS, default=None, help="Time scale of b [1].")
@click.option("--t-end", type=NUMBERS, default=None, help="Final time [2e4].")
@click.option("--solver", type=_choice(SOLVERS), default="dopri5", show_default=True)
@click.option("--dt", type=NUMBERS, default=None, help="Step (gd, rk4) or first step.")
@click.option("--rtol", type=NUMBERS, default=None,
              help="Relative tolerance [1e-8 in float64, 1e-5 in float32].")
@click.option("--atol", type=NUMBERS, default=None,
              help="Absolute tolerance [1e-10 in float64, 1e-7 in float32].")
@click.option("--dtype", type=_choice(DTYPES), default="float64", show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--reduction", type=_choice(REDUCTIONS), default="auto", show_default=True,
              help="State of the one-layer UFM: none (H, W, b), gram (Z, WW^T, H^TH; cost "
                   "independent of d; needs d >= N + K, or for CE d >= K - 1 with both decays "
                   "> 0 and eta_w = eta_h), classes (MSE "
                   "only: class means, deviation propagator, W, b; cost independent of n), "
                   "auto (the cheapest that applies).")
@click.option("--cuda-graphs/--no-cuda-graphs", default=False, show_default=True,
              help="Capture each chunk of steps and the records' metrics calls as CUDA "
                   "graphs and replay them (dopri5, tsit5 on a CUDA device).")
@click.option("--records", type=INTEGERS, default=None,
              help="Record times: 0 and records - 1 log-spaced times up to t_end [200].")
@click.option("--t-first", type=NUMBERS, default=None, help="First non-zero record time.")
@click.option("--max-steps", type=INTEGERS, default=None, help="Step budget per run [1000000].")
@click.option("--gtol", type=NUMBERS, default=None,
              help="Steady state when |grad f| <= gtol at a point the flow does not leave "
                   "before t_end (a saddle it leaves is followed); 0 follows every run to "
                   "t_end [1e-10].")
@click.option("--onset-metric", type=_choice(ONSET_METRICS), default="nc1_trace",
              show_default=True)
@click.option("--onset-threshold", type=NUMBERS, default=None,
              help="Onset when the metric falls below this [0.01].")
@click.option("--onset-stay", type=INTEGERS, default=None,
              help="Records the metric must stay below the threshold [1].")
@click.option("--interpolate/--no-interpolate", default=True, show_default=True,
              help="Interpolate the crossing time in log-time.")
@click.option("--out", type=OutPath(file_okay=False, path_type=Path), default=None,
              help="Write runs, trajectories, spec sidecar and a figure to this folder.")
@click.option("--table-format", type=_choice(("parquet", "csv")), default="parquet",
              show_default=True)
@click.option("--format", "fmt", type=_choice(("table", "json")), default="table",
              show_default=True)
@click.option("--progress/--no-progress", default=None, help="Progress bar [on for grids].")
@click.option("--theory/--no-theory", default=True, show_default=True,
              help="Closed-form prediction columns (fn_star_theory, onset_time_theory, ...): "
                   "a few ms of CPU per distinct parameter point; leave them out for large "
                   "grids on an accelerator.")
@click.option("--threads", type=click.IntRange(min=1, max=THREADS_MAX), default=None,
              help="Torch and BLAS CPU threads (small problems on shared machines run best "
                   "with 1).")
@handle_errors
def simulate(**options: Any) -> None:
    """Integrate one run or a grid (numeric options take lists and 1e-4..1e-1:16 ranges)."""
    from ncsim.flow import cut_short, stopped_at_rest
    from ncsim.flow import simulate as run_simulation
    from ncsim.results import write_simulation
    from ncsim.threads import bounded_threads

    specs = build_specs(options)
    _check_simulation_folder(options["out"])
    show = options["progress"] if options["progress"] is not None else len(specs) > 1
    with bounded_threads(options["threads"]):
        result = run_simulation(specs, progress=show, theory=options["theory"])
    stalled = int((result.runs["status"] == "stalled").sum())
    if stalled:
        click.echo(f"note: {stalled} run(s) stalled: the adaptive steps chatter at a kink of the "
                   "flow (ReLU-type activations); integrate them with a fixed step, e.g. "
                   "--solver rk4 --dt 0.5 (or --solver gd)", err=True)
    cut = int(cut_short(result.runs).sum())
    if cut:
        click.echo(f"note: {cut} collapsed run(s) ran out of steps before t_end (stop "
                   "max_steps): their final columns are at t_final; raise --max-steps to "
                   "follow them to t_end", err=True)
    at_rest = int(stopped_at_rest(result.runs).sum())
    if at_rest:
        click.echo(f"note: {at_rest} run(s) stopped at rest before t_end without collapsing "
                   "(|grad f| <= gtol at a minimum, or at a saddle the flow would not leave "
                   "before t_end); give --gtol 0 to follow them to t_end", err=True)
    if options["out"] is not None:
        write_simulation(result, options["out"], options["table_format"], specs)
    if options["fmt"] == "json":
        from ncsim.io import to_jsonable

        rows = result.runs.to_dict(orient="records")
        click.echo(json.dumps(to_jsonable({"runs": rows})))
    else:
        click.echo(format_run_table(result.runs))


def format_run_table(runs) -> str:
    """Readable text table: the grid axes and the main results."""
    from ncsim.results import varying_columns

    axes = varying_columns(runs)
    columns = ["run_id", *axes, *[c for c in TABLE_COLUMNS if c in runs]]
    with __import__("pandas").option_context("display.width", 200, "display.max_rows", 500):
        return runs[columns].to_string(index=False, float_format=lambda v: f"{v:.6g}")
