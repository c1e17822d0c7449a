"""``ncsim study``: list | run [SPEC] | report DIR (thin commands over the library)."""

from __future__ import annotations

from pathlib import Path

import click

from ncsim.cli_errors import OutPath, check_out_folder, handle_errors

DEFAULT_STUDY = "weight_decay"
DEFAULT_OUT = "ncsim-out"


@click.group()
def study() -> None:
    """Declarative studies: one TOML spec per question, a resumable runner and a report."""


@study.command("list")
@handle_errors
def list_cmd() -> None:
    """Name every shipped study with its question (one line each)."""
    from ncsim.study.spec import shipped_studies, tomllib

    for path in shipped_studies():
        raw = tomllib.loads(path.read_text())
        kinds = sorted({p.get("model", "?") for p in raw.get("parts", [])})
        click.echo(f"{path.stem:<20} [{'+'.join(kinds)}] {raw.get('question', '')}")


@study.command("run")
@click.argument("spec", required=False)
@click.option("--quick", is_flag=True, help="Run the quick variant (2-core CPU, < 2 min).")
@click.option("--executor", type=click.Choice(["local", "process", "dask"]), default="local",
              show_default=True, help="Where runs execute.")
@click.option("--address", default=None, help="Dask scheduler, e.g. tcp://host:8786 "
              "(without it --executor dask starts a LocalCluster of 2 workers).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Workers of --executor process, or of the Dask LocalCluster (--executor "
              "dask without --address); refused otherwise.")
@click.option("--out", type=OutPath(file_okay=False, path_type=Path), default=None,
              help=f"Results folder (default {DEFAULT_OUT}/ or {DEFAULT_OUT}/NAME[-quick]).")
@click.option("--force", is_flag=True, help="Recompute every run (of the selected parts, with "
              "--part or --model), ignoring finished ones.")
@click.option("--retry-failed", is_flag=True, help="Recompute runs that failed before.")
@click.option("--part", "parts", multiple=True, metavar="NAME",
              help="Compute only this part of the study (repeatable); the others are left "
              "for a later run on the same folder.")
@click.option("--model", type=click.Choice(["simulated", "trained"]), default=None,
              help="Compute only the parts of this kind (e.g. the simulated parts of a study "
              "whose trained parts need a GPU).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@handle_errors
def run_cmd(spec: str | None, quick: bool, executor: str, address: str | None,
            workers: int | None, out: Path | None, force: bool, retry_failed: bool,
            parts: tuple[str, ...], model: str | None, no_progress: bool) -> None:
    """Run SPEC (a .toml file or a study name); without SPEC, the quick weight-decay study.

    Finished runs in --out are skipped, so an interrupted study resumes where it stopped;
    a simulated run whose stored simulator id differs from the one its parameters give now
    (this version simulates it differently) is computed again. With --part or --model only
    some parts are computed: the report's verdict stays "incomplete" until the rest is, and
    gives the verdict of the finished parts alone beside it.
    """
    from ncsim.study.runner import run_study, select_parts
    from ncsim.study.spec import load_study, variant_name

    if spec is None:
        spec, quick = DEFAULT_STUDY, True
        out = out or Path(DEFAULT_OUT)
    loaded = load_study(spec, quick=quick)
    out = out or Path(DEFAULT_OUT) / (loaded.name + ("-quick" if quick else ""))
    check_out_folder(out)
    selection = select_parts(loaded, parts or None, model)
    summary = run_study(loaded, out, executor=executor, address=address, force=force,
                        retry_failed=retry_failed, progress=not no_progress, workers=workers,
                        parts=selection)
    chosen = ("" if selection is None else
              f" (parts {', '.join(selection)}: {summary.selected} runs)")
    click.echo(f"study {loaded.name} ({variant_name(quick)}): {summary.total} runs"
               f"{chosen}, {summary.computed} computed, {summary.skipped} already done, "
               f"{summary.failed} failed, {summary.seconds:.1f} s")
    click.echo(f"table: {out / 'runs.parquet'}")
    click.echo(f"report: {out / 'report.md'}")
    if summary.failed:  # the tables and report are written; the exit status tells scripts
        click.echo(f"note: {summary.failed} run(s) failed (their error is in the 'error' column "
                   "of the run table); --retry-failed recomputes them", err=True)
        raise SystemExit(1)


@study.command("report")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@handle_errors
def report_cmd(directory: Path) -> None:
    """Write DIR/report.md and DIR/report.html (question, figures, tables, verdict).

    A study whose runs have not all finished (interrupted, or still running) gets the verdict
    "incomplete", with how many of its runs finished and which are missing."""
    from ncsim.study.report import unfinished_studies, write_report

    path = write_report(directory)
    click.echo(f"report: {path}")
    click.echo(f"report: {path.with_suffix('.html')}")
    for folder, finished, total in unfinished_studies(directory):
        click.echo(f"note: {folder}: {finished} of {total} runs finished, so the report gives "
                   "no verdict (only that of whole finished parts, when the others have not "
                   "started); run 'ncsim study run' on that folder again to finish them",
                   err=True)
