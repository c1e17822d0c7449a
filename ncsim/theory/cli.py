"""``ncsim theory``: equilibrium | threshold | onset | derive | phase-diagram | cache."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import sympy as sp

from ncsim.cli_errors import OutPath, check_out_file, handle_errors
from ncsim.errors import InputError, require
from ncsim.io import to_jsonable
from ncsim.params import distinct, grid, parse_ints, parse_values
from ncsim.spec import DEFAULT_REG_LAMBDA_B
from ncsim.theory.critical import critical_table
from ncsim.theory.derivations import derivations
from ncsim.theory.dynamics import growth_rate, nc1_rates
from ncsim.theory.equilibrium import BIASES, LOSSES, equilibrium, minimiser_rank
from ncsim.theory.phase import AXES, check_axes, phase_diagram, plot_phase
from ncsim.theory.prediction import predicted_onset

FORMATS = ("json", "latex", "text")
GRID_ORDER = ("A numeric option takes one value, a comma list or a log range lo..hi:count; "
              "a repeated value counts once; several make a grid with one result per point "
              "(at most 100000), in the order -K, -n, -d, --depth, --lambda-w, --lambda-h, "
              "--lambda-b, --init-scale, --onset-threshold, the last varying fastest. json: "
              "NaN is null, an infinity is the string \"inf\" (as in "
              "every --format json of ncsim).")


def _lower(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A choice in any case, as the other commands take it (MSE = mse)."""
    return value.lower() if isinstance(value, str) else value


def _word(name: str, default: str, choices: tuple[str, ...], *dest: str) -> Callable:
    """A word option (loss, bias, format) whose help shows its choices."""
    return click.option(name, *dest, default=default, show_default=True, callback=_lower,
                        metavar=f"[{'|'.join(choices)}]")


def _numbers(*names: str, **kwargs: Any) -> Callable:
    """A numeric option: one value, a comma list or a log range lo..hi:count."""
    return click.option(*names, show_default=True, metavar="NUMBERS", **kwargs)


def _model_options_for(phase: bool) -> Callable[[Callable], Callable]:
    """The model options of a theory command. A phase diagram uses neither the onset
    threshold nor the critical-decay ratio: there both options are hidden from --help and
    default to None, so that the command can refuse them by name when they are given."""
    hidden = {"default": None, "hidden": True} if phase else {}

    def decorate(func: Callable) -> Callable:
        opts = [
            _word("--loss", "ce", ("ce", "mse")),
            _word("--bias", "none", ("none", "free", "reg")),
            _numbers("-K", "--classes", "classes", default="10"),
            _numbers("-n", "--per-class", "per_class", default="20"),
            _numbers("-d", "--dim", "dim", default="32"),
            _numbers("--depth", default="1", help="weight matrices L (>= 2: deep linear UFM)"),
            _numbers("--lambda-w", "lambda_w", default="5e-4"),
            _numbers("--lambda-h", "lambda_h", default="5e-4"),
            _numbers("--lambda-b", "lambda_b", default=None,
                     help="bias decay, with --bias reg (1e-3 there, as in ncsim simulate)"),
            _numbers("--init-scale", "init_scale", default="0.1"),
            _numbers("--onset-threshold", "onset_threshold", **({"default": "0.01"} | hidden)),
            click.option("--ratio", default=None, metavar="NUMBER", hidden=phase,
                         help="lambda_H / lambda_W for lambda_crit, one number > 0 (default: "
                         "--lambda-h / --lambda-w of each point; 1 where a decay is 0)"),
            _word("--format", "json", ("json", "latex", "text"), "fmt"),
        ]
        for opt in reversed(opts):
            func = opt(func)
        return func

    return decorate


_model_options = _model_options_for(phase=False)


def _lambda_b_option(o: dict[str, Any]) -> str:
    """--lambda-b as given, else 1e-3 with --bias reg and 0 otherwise."""
    if o["lambda_b"] is not None:
        return o["lambda_b"]
    return repr(DEFAULT_REG_LAMBDA_B) if o["bias"] == "reg" else "0"


def _grid(o: dict[str, Any]) -> list[dict[str, Any]]:
    require(o["loss"] in LOSSES, f"unknown loss {o['loss']!r}; allowed: {', '.join(LOSSES)}")
    require(o["bias"] in BIASES, f"unknown bias {o['bias']!r}; allowed: {', '.join(BIASES)}")
    require(o["fmt"] in FORMATS, f"unknown format {o['fmt']!r}; allowed: {', '.join(FORMATS)}")
    _ratio(o["ratio"])
    axes = {
        "K": parse_ints(o["classes"], "-K/--classes"),
        "n": parse_ints(o["per_class"], "-n/--per-class"),
        "d": parse_ints(o["dim"], "-d/--dim"),
        "depth": parse_ints(o["depth"], "--depth"),
        "lambda_w": distinct(parse_values(o["lambda_w"], "--lambda-w")),
        "lambda_h": distinct(parse_values(o["lambda_h"], "--lambda-h")),
        "lambda_b": distinct(parse_values(_lambda_b_option(o), "--lambda-b")),
        "init_scale": distinct(parse_values(o["init_scale"], "--init-scale")),
    }
    if o["onset_threshold"] is not None:  # None: a phase diagram, which has no onset
        axes["onset_threshold"] = distinct(parse_values(o["onset_threshold"],
                                                        "--onset-threshold"))
    require(all(k >= 2 for k in axes["K"]), "-K/--classes must be an integer >= 2")
    require(all(v >= 1 for v in axes["n"]), "-n/--per-class must be an integer >= 1")
    require(all(v >= 1 for v in axes["d"]), "-d/--dim must be an integer >= 1")
    require(all(v >= 1 for v in axes["depth"]), "--depth must be an integer >= 1")
    for name in ("lambda_w", "lambda_h", "lambda_b"):
        require(all(v >= 0 for v in axes[name]), f"--{name.replace('_', '-')} must be >= 0")
    require(all(v > 0 for v in axes["init_scale"]), "--init-scale must be > 0")
    require(all(v > 0 for v in axes.get("onset_threshold", ())),
            "--onset-threshold must be > 0")
    if o["bias"] == "reg":
        require(all(v > 0 for v in axes["lambda_b"]),
                "bias 'reg' needs --lambda-b > 0 (use --bias free for 0)")
    else:
        require(all(v == 0 for v in axes["lambda_b"]),
                f"--lambda-b needs --bias reg, got bias {o['bias']!r}")
    return grid(axes, limit=100_000)


def _ratio(text: str | None) -> float | None:
    """The --ratio value: one finite number > 0, or None (from the decays)."""
    if text is None:
        return None
    values = parse_values(text, "--ratio")
    require(len(values) == 1 and values[0] > 0,
            f"--ratio takes one number > 0 (lambda_H / lambda_W), got {text!r}")
    return values[0]


def _row(o: dict[str, Any], p: dict[str, Any], with_onset: bool) -> dict[str, Any]:
    loss, bias = o["loss"], o["bias"]
    eq = equilibrium(loss, bias, p["K"], p["n"], p["lambda_w"], p["lambda_h"], p["lambda_b"],
                     p["depth"], check_lower_rank=bool(o.get("check_lower_rank")))
    row: dict[str, Any] = {"loss": loss, "bias": bias, **p}
    d = eq.to_dict()
    row["collapsed"] = bool(d.pop("collapsed"))
    for k, v in d.items():
        row[k] = v if v is None or isinstance(v, bool) else float(v)
    if o.get("check_lower_rank"):  # the best lower-rank state (deep CE; NaN / null elsewhere)
        for key in ("objective", "fn", "w_norm", "loss"):
            row[f"lower_rank_{key}"] = float(eq.meta.get(f"lower_rank_{key}", math.nan))
        row["lower_rank"] = eq.meta.get("lower_rank")
    ratio = _ratio(o["ratio"])
    if ratio is None:
        ratio = p["lambda_h"] / p["lambda_w"] if p["lambda_w"] > 0 and p["lambda_h"] > 0 else 1.0
        require(math.isfinite(ratio), f"lambda_H / lambda_W = {p['lambda_h']!r} / "
                f"{p['lambda_w']!r} overflows; give the ratio of lambda_crit with --ratio")
    row["ratio"] = ratio
    row.update(critical_table(loss, bias, p["K"], p["n"], p["depth"], ratio))
    row["growth_rate"] = float(growth_rate(p["K"], p["n"], p["lambda_w"], p["lambda_h"],
                                           p["depth"]))
    early, late = nc1_rates(p["K"], p["n"], p["lambda_w"], p["lambda_h"])
    row["nc1_rate_early"], row["nc1_rate_late"] = float(early), float(late)
    if p["depth"] > 1:  # the one-layer mode rates do not apply
        row["nc1_rate_early"] = row["nc1_rate_late"] = math.nan
    row["onset_time"] = row["lead_time"] = row["fn_cross_time"] = math.nan
    row["onset_regime"] = None
    # below the minimiser's rank a d-dimensional model cannot hold it (as in the run table)
    row["minimiser_rank"] = minimiser_rank(eq, p["K"])
    row["applies_at_d"] = bool(p["d"] >= row["minimiser_rank"])
    if not row["applies_at_d"]:
        row["onset_regime"] = NOT_AT_D
        return row
    if with_onset:
        try:
            pred = predicted_onset(loss, bias, p["K"], p["n"], p["d"], p["lambda_w"],
                                   p["lambda_h"], p["init_scale"], p["onset_threshold"],
                                   p["lambda_b"], p["depth"])
        except ArithmeticError as err:  # numerical trouble: reported in the row, as in the
            row["onset_regime"] = f"error: {err}"  # run table's theory columns
            return row
        row.update(onset_time=pred.onset_time, lead_time=pred.lead_time,
                   fn_cross_time=pred.fn_cross_time, onset_regime=pred.regime)
    return row


def _same_keys(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with one set of keys (a depth grid mixes one-layer and deep rows: a key that a row
    lacks, such as ``sigma_jump`` or ``norm_W2``, is NaN there)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return [{k: r.get(k, math.nan) for k in keys} for r in rows]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _tex(name: str) -> str:
    """A name in LaTeX text (underscores escaped)."""
    return name.replace("_", "\\_")


def _emit(rows: list[dict[str, Any]], fmt: str, exprs: dict[int, dict[str, sp.Expr]]) -> None:
    if fmt == "json":
        click.echo(json.dumps({"results": to_jsonable(rows)}))
        return
    if fmt == "latex":
        for depth, block in exprs.items():
            if len(exprs) > 1:
                click.echo(f"% depth {depth}")
            click.echo(_latex_exprs(block))
        keys = [k for k in rows[0] if any(_is_number(r[k]) for r in rows)]
        click.echo("\\begin{tabular}{l" + "r" * len(rows) + "}")
        for k in keys:
            cells = " & ".join(f"{r[k]:.6g}" if _is_number(r[k]) else "--" for r in rows)
            click.echo(f"\\texttt{{{_tex(k)}}} & {cells} \\\\")
        click.echo("\\end{tabular}")
        return
    for i, r in enumerate(rows):
        if len(rows) > 1:
            click.echo(f"# point {i + 1}/{len(rows)}")
        width = max(len(k) for k in r)
        for k, v in r.items():
            click.echo(f"{k:<{width}}  {v:.10g}" if isinstance(v, float) and not isinstance(
                v, bool) else f"{k:<{width}}  {'--' if v is None else v}")


def _latex_exprs(exprs: dict[str, sp.Expr]) -> str:
    lines = ["\\begin{align*}"]
    for name, e in exprs.items():
        lines.append(f"\\text{{{name.replace('_', ' ')}}} &: \\quad {sp.latex(e)} \\\\")
    lines.append("\\end{align*}")
    return "\n".join(lines)


NOT_AT_D = "not_applicable: d below the rank of the minimiser"


def _run(o: dict[str, Any], with_onset: bool, keys: list[str] | None) -> None:
    points = _grid(o)
    rows = _same_keys([_row(o, p, with_onset) for p in points])
    below = [r for r in rows if not r["applies_at_d"]]
    if below:
        click.echo(f"note: at {len(below)} of {len(rows)} point(s) d is below the rank of the "
                   f"collapsed minimiser (d = {below[0]['d']}, rank {below[0]['minimiser_rank']}"
                   f" at the first): a model of that width cannot reach it, so the columns there "
                   f"describe a model with d >= that rank and no onset is predicted "
                   f"(applies_at_d false)", err=True)
    exprs: dict[int, dict[str, sp.Expr]] = {}
    if o["fmt"] == "latex":  # the expressions of every depth of the grid
        for depth in dict.fromkeys(p["depth"] for p in points):
            block = derivations(o["loss"], depth, o["bias"])
            if keys is not None:
                block = {k: v for k, v in block.items() if any(w in k for w in keys)}
            exprs[depth] = block
    _emit(rows, o["fmt"], exprs)


@click.group("theory")
def theory() -> None:
    """Closed-form equilibria, thresholds and onset predictions (sympy-derived)."""


@theory.command("equilibrium", epilog=GRID_ORDER)
@_model_options
@click.option("--check-lower-rank", "check_lower_rank", is_flag=True,
              help="deep CE: compare the ETF state with the best state of class-mean rank "
              "1 .. K-2 (numeric, with restarts; 0.06-7 s a point at K = 10, kept in the "
              "theory cache): lower_rank_better, and the best such state's lower_rank, "
              "lower_rank_objective, lower_rank_fn, lower_rank_w_norm, lower_rank_loss")
@handle_errors
def equilibrium_cmd(**o: Any) -> None:
    """Collapsed (ETF) minimiser: norms, fn*, logits / margin, loss, and the whole theory row.

    It is the global minimiser for one layer and for MSE. For deep CE heads (depth >= 2) a
    lower-rank state can be lower: lower_rank_better is null unless --check-lower-rank
    compares them.
    """
    _run(o, True, ["objective", "sigma", "margin", "w_row", "h2", "ce", "prob", "x_max",
                   "bias", "mean"])


@theory.command("threshold", epilog=GRID_ORDER)
@_model_options
@handle_errors
def threshold_cmd(**o: Any) -> None:
    """Critical weight decay (lambda_H = ratio x lambda_W), deep jump and thresholds.

    The thresholds are lambda_crit, Lambda_crit and, for deep heads, tau_* / Lambda_* and
    sigma_jump. Every theory command prints the same row: here it also holds the equilibrium
    at the given --lambda-w / --lambda-h (as `equilibrium` prints it) and null onset
    predictions (onset_time, lead_time, fn_cross_time, onset_regime; see `onset`).
    """
    _run(o, False, ["crit", "tau", "Lambda", "jump"])


@theory.command("onset", epilog=GRID_ORDER)
@_model_options
@handle_errors
def onset_cmd(**o: Any) -> None:
    """Growth rate, NC1 rates, predicted onset and lead time (Gaussian init)."""
    _run(o, True, ["growth", "logistic", "half", "nc1", "escape"])


@theory.command("derive")
@_word("--loss", "ce", ("ce", "mse"))
@_word("--bias", "none", ("none", "free", "reg"))
@click.option("--depth", default="1", show_default=True, metavar="INTEGER")
@_word("--format", "latex", ("json", "latex", "text"), "fmt")
@handle_errors
def derive_cmd(loss: str, bias: str, depth: str, fmt: str) -> None:
    """Print the derivation's key expressions."""
    require(fmt in FORMATS, f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    depths = parse_ints(depth, "--depth")
    require(len(depths) == 1 and depths[0] >= 1, "--depth takes one integer >= 1")
    exprs = derivations(loss, depths[0], bias)
    if fmt == "latex":
        click.echo(_latex_exprs(exprs))
    elif fmt == "json":
        click.echo(json.dumps({"loss": loss, "bias": bias, "depth": depths[0],
                               "expressions": {k: sp.sstr(v) for k, v in exprs.items()},
                               "latex": {k: sp.latex(v) for k, v in exprs.items()}}))
    else:
        for k, v in exprs.items():
            click.echo(f"{k} = {sp.sstr(v)}")


#: grid parameter -> the option that sets it (for messages)
_OPTION_OF = {"K": "-K/--classes", "n": "-n/--per-class", "d": "-d/--dim", "depth": "--depth",
              "lambda_w": "--lambda-w", "lambda_h": "--lambda-h", "lambda_b": "--lambda-b",
              "init_scale": "--init-scale", "onset_threshold": "--onset-threshold"}


def _several_values_message(points: list[dict[str, Any]], x_axis: str, y_axis: str) -> str:
    """Why a phase diagram refuses the grid ``points`` (more than one): the options given
    several values, and for an axis's own option, that --xs or --ys holds its values."""
    several = [k for k in _OPTION_OF if k in points[0] and len({p[k] for p in points}) > 1]
    for axis, values in ((x_axis, "--xs"), (y_axis, "--ys")):
        own = ("lambda_w", "lambda_h") if axis == "lambda" else (axis,)
        given = [k for k in several if k in own]
        if given:
            return (f"phase-diagram: {_OPTION_OF[given[0]]} got several values, but {axis} is "
                    f"an axis: give its values with {values}, and leave "
                    f"{_OPTION_OF[given[0]]} out")
    named = ", ".join(_OPTION_OF[k] for k in several)
    return (f"phase-diagram: give one value for every other parameter ({named} got "
            "several); only --xs and --ys take lists")


@theory.command("phase-diagram")
@_model_options_for(phase=True)
@click.option("--x", "x_axis", default="lambda_w", show_default=True,
              help="x parameter: " + ", ".join(AXES))
@click.option("--y", "y_axis", default="lambda_h", show_default=True, help="y parameter")
@click.option("--xs", default="1e-4..1:25", show_default=True,
              help="x values (value, list or lo..hi:count)")
@click.option("--ys", default=None, help="y values (default: as --xs)")
@click.option("--out", type=OutPath(dir_okay=False), default=None,
              help="figure path (png/pdf)")
@handle_errors
def phase_cmd(x_axis: str, y_axis: str, xs: str, ys: str | None, out: str | None,
              **o: Any) -> None:
    """Analytic phase diagram over two parameters: rows (stdout, --format) and figure (--out).

    One row per (x, y) point, y in the outer loop and x varying fastest. K, n and depth take
    integers (a log range is rounded); the axis lambda sets lambda_w = lambda_h. Only --xs
    and --ys take lists: every other parameter takes one value.
    """
    check_axes(x_axis, y_axis, o["bias"])
    require(o["ratio"] is None, "phase-diagram does not use --ratio (it sets lambda_crit of "
            "equilibrium, threshold and onset); leave it out")
    require(o["onset_threshold"] is None, "phase-diagram does not use --onset-threshold (the "
            "phase of a point does not depend on it; it sets the onset of ncsim theory "
            "onset); leave it out")
    values = []
    for axis, text, option in ((x_axis, xs, "--xs"),
                               (y_axis, ys, "--ys") if ys is not None
                               else (y_axis, xs, "--ys (not given: the values of --xs)")):
        values.append(parse_ints(text, option) if axis in ("K", "n", "depth")
                      else distinct(parse_values(text, option)))
    xv, yv = values
    require(len(xv) * len(yv) <= 100_000, f"the phase diagram has {len(xv) * len(yv)} points "
            f"({len(xv)} x {len(yv)}); at most 100000: give fewer --xs or --ys values")
    if "lambda_b" in (x_axis, y_axis):
        lambda_b = xv if x_axis == "lambda_b" else yv
        require(all(v > 0 for v in lambda_b),
                "the axis lambda_b takes values > 0 (use --bias free for 0)")
        o = {**o, "lambda_b": repr(lambda_b[0])}  # the axis, not --lambda-b, sets lambda_b
    if out is not None:
        from matplotlib.backend_bases import FigureCanvasBase

        kinds = FigureCanvasBase.get_supported_filetypes()
        suffix = Path(out).suffix.lstrip(".").lower()
        require(suffix == "" or suffix in kinds, f"--out {out}: unknown figure format "
                f"{suffix!r}; name the file with one of: {', '.join(sorted(kinds))}")
        check_out_file(out)
    points = _grid(o)
    require(len(points) == 1, _several_values_message(points, x_axis, y_axis))
    p = points[0]
    base = {"loss": o["loss"], "bias": o["bias"], "K": p["K"], "n": p["n"], "d": p["d"],
            "depth": p["depth"], "lambda_w": p["lambda_w"], "lambda_h": p["lambda_h"],
            "lambda_b": p["lambda_b"], "init_scale": p["init_scale"]}
    try:
        rows = phase_diagram(x_axis, xv, y_axis, yv, base)
    except (ValueError, InputError) as err:
        where = ("" if ys is not None else f" (--ys was not given, so the {y_axis} values "
                 "are those of --xs)")
        raise InputError(f"{err}{where}") from None
    if out is not None:
        plot_phase(rows, x_axis, y_axis, out)
    if o["fmt"] == "json":
        click.echo(json.dumps({"x": x_axis, "y": y_axis,
                               "results": to_jsonable(rows), "figure": out}))
    elif o["fmt"] == "latex":
        click.echo("\\begin{tabular}{rrlr}")
        names = (x_axis, y_axis, "phase", "fn_star")
        click.echo(" & ".join(f"\\texttt{{{_tex(k)}}}" for k in names) + " \\\\")
        for r in rows:
            click.echo(f"{r[x_axis]:.6g} & {r[y_axis]:.6g} & {_tex(r['phase'])} & "
                       f"{r['fn_star']:.6g} \\\\")
        click.echo("\\end{tabular}")
    else:
        click.echo(f"{x_axis:>12} {y_axis:>12} {'phase':>12} {'fn_star':>12}")
        for r in rows:
            click.echo(f"{r[x_axis]:>12.6g} {r[y_axis]:>12.6g} {r['phase']:>12} "
                       f"{r['fn_star']:>12.6g}")


@theory.command("cache")
@click.option("--verify", "check", is_flag=True,
              help="Derive every expression again and compare it with the kept file; a file "
                   "that differs or cannot be read is replaced; exit 1 when one differed.")
@click.option("--clear", is_flag=True,
              help="Remove ncsim's kept files (derivations and numeric results, of every "
                   "source version) and the temporaries of interrupted writes.")
@handle_errors
def cache_cmd(check: bool, clear: bool) -> None:
    """Show the derivation cache: its folder and the files kept there."""
    import ncsim.theory  # noqa: F401  (registers every cached derivation)
    from ncsim.theory import cache

    require(not (check and clear), "--verify and --clear exclude each other; run one, then "
            "the other")
    folder = cache.cache_dir()
    if folder is None:
        require(not (check or clear), "the derivation cache is off; unset NCSIM_CACHE_DIR or "
                "set it to a folder to keep derivations")
        click.echo("cache: off (NCSIM_CACHE_DIR is set empty)")
        return
    files = cache.kept_files(folder)
    if clear:
        temporaries = cache.temporary_files(folder)
        for path in files + temporaries:
            path.unlink(missing_ok=True)
        also = (f" and {len(temporaries)} temporary file(s) of interrupted writes"
                if temporaries else "")
        click.echo(f"removed {len(files)} file(s){also} from {folder}")
        return
    current = [p for p in files if cache.is_current(p)]
    click.echo(f"folder: {folder}\nsource key: {cache.source_key()}\n"
               f"files for these sources: {len(current)}; for other sources: "
               f"{len(files) - len(current)} (--clear removes all)")
    if check:
        statuses = cache.verify_all()
        for name, status in statuses.items():
            click.echo(f"{name}: {status}")
        if "differs" in statuses.values():
            raise SystemExit(1)
