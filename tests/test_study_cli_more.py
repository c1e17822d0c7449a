"""The ``ncsim simulate`` and ``ncsim study`` commands as a user runs them.

What the README and the command-line contract (DESIGN section 4) promise: every command and
option exists, the defaults are those the help states, the written tables agree with each other
and with :mod:`ncsim.onset`, the study report's numbers are those of its tables, reruns change
nothing, a second study never mixes into a folder, and unusable input or output folders are one
line on stderr with exit status 2, before any work is done.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import shlex
import shutil
from pathlib import Path

import click
import numpy as np
import pandas as pd
import pytest
from cli_helpers import error_line as _error_line
from cli_helpers import invoke as _invoke
from click.testing import CliRunner
from tiny_study import intervention_study, write_tiny_study

import ncsim.flow
from ncsim.cli import cli
from ncsim.onset import onset_time, value_at

# the module ncsim.flow.simulate (the package attribute of that name is its function)
FLOW = importlib.import_module("ncsim.flow.simulate")

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["simulate", "-K", "3", "-n", "2", "-d", "4", "--t-end", "300", "--records", "25",
         "--no-progress"]
SUMMARY = re.compile(r"^study (\w+) \((quick|full)\): (\d+) runs, (\d+) computed, (\d+) already "
                     r"done, (\d+) failed, [0-9.]+ s$")




def _summary(result) -> tuple[str, str, int, int, int, int]:
    """(name, variant, total, computed, done, failed) of a study run's first stdout line; the
    exit status is 0, or 1 when runs failed."""
    assert result.exit_code == (1 if " 0 failed" not in result.stdout else 0), result.output
    match = SUMMARY.match(result.stdout.splitlines()[0])
    assert match, result.stdout
    name, variant, *counts = match.groups()
    return (name, variant, *map(int, counts))


def _no_compute(monkeypatch) -> list:
    """Make any simulation fail the test; returns the list of calls (expected to stay empty)."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the simulation ran although the input was refused")

    monkeypatch.setattr(ncsim.flow, "simulate", refuse)  # what ``ncsim simulate`` calls
    monkeypatch.setattr(FLOW, "simulate", refuse)  # what the study runs call
    return calls


def _read_only(path: Path, monkeypatch) -> None:
    """Make ``path`` a folder the process may not write into. Root ignores permission bits,
    so for root the operating system's answer (``os.access``) is replaced for this folder."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o500)
    if os.geteuid() == 0:
        real = os.access

        def access(target, mode, *args, **kwargs):
            if Path(target).resolve() == path.resolve() and mode & os.W_OK:
                return False
            return real(target, mode, *args, **kwargs)

        monkeypatch.setattr(os, "access", access)


def _markdown_table(text: str, header_start: str) -> pd.DataFrame:
    """The Markdown table of ``text`` whose header row starts with ``header_start``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return pd.DataFrame(rows[2:], columns=rows[0])


# ------------------------------------------------------------------ commands of the contract

SIMULATE_OPTIONS = ("--model", "--loss", "--bias", "-K", "--classes", "-n", "--per-class", "-d",
                    "--dim", "--depth", "--activation", "--lambda-w", "--lambda-h", "--lambda-b",
                    "--init-scale", "--seed", "--t-end", "--solver", "--dt", "--rtol", "--atol",
                    "--dtype", "--device", "--records", "--onset-metric", "--onset-threshold",
                    "--out", "--format")


def test_simulate_help_lists_every_option_of_the_contract():
    """``ncsim simulate --help`` names every option DESIGN section 4 lists, with the choices it
    lists for --model, --loss, --bias and --format."""
    result = _invoke(["simulate", "--help"])
    assert result.exit_code == 0 and result.stderr == ""
    names = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", result.stdout))
    missing = [opt for opt in SIMULATE_OPTIONS if opt not in names]
    assert not missing
    for choices in ("[ufm|deep]", "[ce|mse]", "[none|free|reg]", "[table|json]"):
        assert choices in result.stdout


@pytest.mark.parametrize("path", [
    ["theory", "equilibrium"], ["theory", "threshold"], ["theory", "onset"],
    ["theory", "derive"], ["validate", "train"], ["validate", "analyze"],
    ["validate", "compare"], ["study", "list"], ["study", "run"], ["study", "report"],
    ["bench"],
])
def test_every_contract_command_has_help(path):
    """Each command of DESIGN section 4 answers --help with exit status 0 and its usage line;
    the theory commands offer json, latex and text."""
    result = _invoke([*path, "--help"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Usage: cli {' '.join(path)} ")
    if path[0] == "theory":
        assert "--format [json|latex|text]" in result.stdout


def _readme_commands() -> list[list[str]]:
    """Every ``ncsim ...`` command line of the README's bash blocks, as tokens."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n", " ", block)
        for line in joined.splitlines():
            for piece in line.split("&&"):
                tokens = shlex.split(piece, comments=True)
                if tokens and tokens[0] == "ncsim":
                    commands.append(tokens[1:])
    return commands


def test_readme_commands_exist_with_their_options_and_studies():
    """Every ``ncsim`` command line in the README names an existing (sub-)command, options that
    command has, and, for ``study run``, a study that ``load_study`` finds."""
    from ncsim.study.spec import resolve_path

    commands = _readme_commands()
    assert len(commands) >= 15
    ctx = click.Context(cli)
    studies = []
    for tokens in commands:
        command, rest = cli, list(tokens)
        while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
            command = command.get_command(ctx, rest.pop(0))
            assert command is not None, tokens
        known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        used = [t for t in rest if re.fullmatch(r"--?[A-Za-z][\w-]*", t)]
        assert set(used) <= known | {"-h", "--help"}, (tokens, set(used) - known)
        if tokens[:2] == ["study", "run"] and len(tokens) > 2 and not tokens[2].startswith("-"):
            studies.append(tokens[2])
    assert studies
    for name in studies:
        resolve_path(name)  # raises InputError for a study that does not exist


def test_simulate_defaults_are_those_the_help_states(monkeypatch):
    """Without options, simulate integrates the one-layer CE UFM the help describes: K 10,
    n 20, d 32, lambda_W = lambda_H = 5e-4, init 0.1, seed 0, t_end 2e4, dopri5 rtol 1e-8,
    atol 1e-10, 200 records, onset nc1_trace < 0.01 (one record, interpolated), float64 CPU."""
    seen = []

    class Stop(Exception):
        pass

    def capture(specs, **kwargs):
        seen.extend(specs)
        raise Stop

    monkeypatch.setattr(ncsim.flow, "simulate", capture)
    result = _invoke(["simulate"])
    assert isinstance(result.exception, Stop)
    (spec,) = seen
    row = spec.to_row()
    expected = {"kind": "ufm", "loss": "ce", "bias": "none", "classes": 10, "per_class": 20,
                "dim": 32, "depth": 1, "activation": "linear", "lambda_w": 5e-4,
                "lambda_h": 5e-4, "lambda_b": 0.0, "init_kind": "gaussian", "init_scale": 0.1,
                "init_seed": 0, "solver_method": "dopri5", "solver_t_end": 2e4,
                "solver_rtol": 1e-8, "solver_atol": 1e-10, "solver_records": 200,
                "solver_dtype": "float64", "solver_device": "cpu", "solver_reduction": "auto",
                "onset_metric": "nc1_trace", "onset_threshold": 0.01, "onset_stay": 1,
                "onset_interpolate": True}
    assert {k: row[k] for k in expected} == expected


# ------------------------------------------------------------------ simulate tables


@pytest.mark.parametrize(("extra", "fmt"), [
    ([], "parquet"),
    (["--no-interpolate"], "csv"),
    (["--onset-metric", "nc1", "--onset-threshold", "0.05"], "parquet"),
    (["--onset-metric", "nc3", "--onset-threshold", "0.1", "--onset-stay", "3"], "csv"),
    (["--lambda-w", "0.3", "--lambda-h", "0.3"], "parquet"),  # vanishing runs
])
def test_simulate_onset_columns_equal_onset_of_the_trajectory_table(tmp_path, extra, fmt):
    """For every run of the written tables, onset_time and fn_at_onset equal
    ncsim.onset.onset_time / value_at applied to its rows of the trajectory table (with the
    run's own metric, threshold, stay and interpolation), and final_fn is the last fn record;
    the run ids of both tables are the same. A vanishing run's metric crosses too, but it has
    no onset (NaN): its norms vanish, which is not collapse."""
    out = tmp_path / "res"
    result = _invoke([*SMALL, "--seed", "0,1", *extra, "--out", str(out), "--table-format",
                      fmt])
    assert result.exit_code == 0, result.output
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    runs, traj = read(out / f"runs.{fmt}"), read(out / f"trajectories.{fmt}")
    assert len(runs) == 2 and set(traj["run_id"]) == set(runs["run_id"])
    assert list(traj.columns[:4]) == ["run_id", "time", "time_unit", "phase"]
    for _, run in runs.iterrows():
        part = traj[traj["run_id"] == run["run_id"]]
        assert part["time"].is_monotonic_increasing
        t = part["time"].to_numpy(float)
        when = onset_time(t, part[run["onset_metric"]].to_numpy(float), run["onset_threshold"],
                          int(run["onset_stay"]), bool(run["onset_interpolate"]))
        fn_on = value_at(t, part["fn"].to_numpy(float), when, bool(run["onset_interpolate"]))
        assert math.isfinite(when)
        if run["status"] == "vanishing":
            assert math.isnan(run["onset_time"]) and math.isnan(run["fn_at_onset"])
        else:
            assert run["onset_time"] == pytest.approx(when, rel=1e-12)
            assert run["fn_at_onset"] == pytest.approx(fn_on, rel=1e-12)
        assert run["final_fn"] == pytest.approx(part["fn"].iloc[-1], rel=1e-9)
        assert run["t_final"] == pytest.approx(t[-1], rel=1e-12)
    if "--lambda-w" in extra:
        assert set(runs["status"]) == {"vanishing"}
    else:
        assert set(runs["status"]) == {"ok"}


def test_simulate_json_stdout_is_the_written_run_table(tmp_path):
    """--format json with --out prints one JSON object (one line) whose runs are the rows of
    the written run table (NaN as null); the progress bar goes to stderr only."""
    out = tmp_path / "res"
    result = _invoke([*SMALL[:-1], "--lambda-w", "1e-3,0.3", "--out", str(out), "--format",
                      "json", "--progress"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1
    rows = json.loads(result.stdout)["runs"]
    assert "simulate" in result.stderr and "2/2" in result.stderr
    table = pd.read_parquet(out / "runs.parquet")
    assert [r["run_id"] for r in rows] == list(table["run_id"])
    for row, (_, want) in zip(rows, table.iterrows()):
        assert set(row) == set(table.columns)
        for key, value in want.items():
            if isinstance(value, float) and math.isnan(value):
                assert row[key] is None, key
            else:
                assert row[key] == value, key


def test_simulate_out_holds_only_the_last_simulation(tmp_path):
    """Simulating into a folder that holds an earlier simulation's tables in the other format
    leaves only the new tables: a stale runs.csv next to a new runs.parquet would describe
    other runs than spec.json."""
    out = tmp_path / "res"
    first = _invoke([*SMALL, "--seed", "0,1", "--out", str(out), "--table-format", "csv"])
    assert first.exit_code == 0, first.output
    second = _invoke([*SMALL, "--seed", "5", "--out", str(out)])
    assert second.exit_code == 0, second.output
    assert sorted(p.name for p in out.iterdir()) == [
        "runs.parquet", "spec.json", "trajectories.parquet", "trajectories.png"]
    runs = pd.read_parquet(out / "runs.parquet")
    assert list(runs["init_seed"]) == [5]
    assert [r["init_seed"] for r in json.loads((out / "spec.json").read_text())["runs"]] == [5]


def test_simulate_unusable_out_is_one_line_before_computing(tmp_path, monkeypatch):
    """An --out below a file, or in a folder that cannot be written, is refused with one line
    naming the folder, before the simulation starts and without writing anything."""
    calls = _no_compute(monkeypatch)
    (tmp_path / "afile").write_text("x")
    line = _error_line(_invoke([*SMALL, "--out", str(tmp_path / "afile" / "res")]))
    assert "afile" in line and "not a folder" in line
    locked = tmp_path / "locked"
    _read_only(locked, monkeypatch)
    line = _error_line(_invoke([*SMALL, "--out", str(locked / "res")]))
    assert str(locked) in line and "not writable" in line
    assert calls == [] and list(locked.iterdir()) == []


# ------------------------------------------------------------------ study run: one tiny study


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny study (3 seeds) run once from the command line: (spec, out, result)."""
    base = tmp_path_factory.mktemp("tiny")
    spec = write_tiny_study(base, seeds=3, records=20)
    out = base / "out"
    result = CliRunner().invoke(cli, ["study", "run", str(spec), "--out", str(out),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    return spec, out, result


def _copy(tiny, tmp_path: Path) -> Path:
    """A copy of the tiny study's folder (so that a test may change it)."""
    out = tmp_path / "out"
    shutil.copytree(tiny[1], out)
    return out


def test_study_run_prints_its_summary_and_the_paths(tiny):
    """The run prints the summary line (3 runs computed, none failed) and the paths of the
    table and the report, which exist; nothing else on stdout and nothing on stderr."""
    spec, out, result = tiny
    assert _summary(result) == ("tiny", "full", 3, 3, 0, 0)
    assert result.stdout.splitlines()[1:] == [f"table: {out / 'runs.parquet'}",
                                              f"report: {out / 'report.md'}"]
    assert result.stderr == ""
    for name in ("runs.parquet", "trajectories.parquet", "report.md", "report.html",
                 "verdict.json", "study.json"):
        assert (out / name).is_file(), name


def test_study_tables_agree_with_each_other_and_with_onset(tiny):
    """The run table has one row per run of the study (in study order) with the columns of
    DESIGN section 3; the trajectory table has the long-format columns and the same runs; each
    run's onset_time and fn_at_onset are those of ncsim.onset on its trajectory rows."""
    from ncsim.study.spec import load_study

    spec, out, _ = tiny
    runs = pd.read_parquet(out / "runs.parquet")
    traj = pd.read_parquet(out / "trajectories.parquet")
    assert list(runs["run_id"]) == [d.run_id for d in load_study(spec).runs()]
    assert list(runs["seed"]) == [0, 1, 2]
    needed = {"status", "steps", "t_final", "final_fn", "final_nc1_trace", "onset_time",
              "fn_at_onset", "fn_star_theory", "onset_time_theory", "ncsim_version", "device",
              "dtype", "init_seed"}
    assert needed <= set(runs.columns)
    assert {"run_id", "time", "time_unit", "phase", "loss", "fn", "nc1", "nc1_trace", "nc2_etf",
            "nc3", "nc4"} <= set(traj.columns)
    assert set(traj["run_id"]) == set(runs["run_id"])
    assert (runs["status"] == "ok").all()
    for _, run in runs.iterrows():
        part = traj[traj["run_id"] == run["run_id"]].sort_values("time")
        assert len(part) == 20
        t = part["time"].to_numpy(float)
        when = onset_time(t, part["nc1_trace"].to_numpy(float), 0.01)
        assert run["onset_time"] == pytest.approx(when, rel=1e-12)
        assert run["fn_at_onset"] == pytest.approx(
            value_at(t, part["fn"].to_numpy(float), when), rel=1e-12)


def test_study_report_numbers_are_those_of_the_run_table(tiny):
    """The report's fn* table and verdict.json hold the numbers recomputed here from the run
    table: runs, collapsed runs, mean fn*, CV of fn* and of the onset time (std with ddof 1
    over mean), the mean closed-form fn*; the verdict follows the 8% rule."""
    _, out, _ = tiny
    runs = pd.read_parquet(out / "runs.parquet")
    fn_star, onset = runs["fn_at_onset"].to_numpy(float), runs["onset_time"].to_numpy(float)
    cv_fn = fn_star.std(ddof=1) / fn_star.mean()
    cv_onset = onset.std(ddof=1) / onset.mean()
    text = (out / "report.md").read_text()
    table = _markdown_table(text, "| part |")
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["part"], row["n_runs"], row["n_collapsed"]) == ("ufm", "3", "3")
    for column, value in (("fn_star_mean", fn_star.mean()), ("fn_star_cv", cv_fn),
                          ("onset_cv", cv_onset),
                          ("fn_star_theory_mean", runs["fn_star_theory"].mean())):
        assert row[column] == f"{value:.4g}", column
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["numbers"] == {"ufm": {"cv": pytest.approx(cv_fn, rel=1e-12), "n": 3}}
    assert verdict["verdict"] == ("supports" if cv_fn < 0.08 else "contradicts")
    assert f"**Verdict: {verdict['verdict']}.** {verdict['reason']}" in text
    assert f"CV {100 * cv_fn:.1f}% (n=3)" in verdict["reason"]
    assert "Runs: 3 (ok: 3)." in text and "full variant" in text


def test_study_report_figures_exist_and_html_matches_markdown(tiny):
    """Every figure the report shows exists, figures/ holds no other file, and report.html
    shows the same images, captions (stars included) and table cells as report.md."""
    _, out, _ = tiny
    text = (out / "report.md").read_text()
    shown = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert shown and len(shown) == len(set(shown))
    assert sorted(shown) == sorted(f"figures/{p.name}" for p in (out / "figures").iterdir())
    page = (out / "report.html").read_text()
    assert re.findall(r'<img src="([^"]+)"', page) == shown
    captions = re.findall(r"!\[([^\]]*)\]", text)
    for caption in captions:
        assert f"<p><i>{caption}</i></p>" in page, caption
    cells = _markdown_table(text, "| part |").iloc[0]
    assert "".join(f"<td>{c}</td>" for c in cells) in page


def test_study_rerun_is_idempotent(tiny, tmp_path):
    """A second run in the same folder computes nothing, leaves every part file untouched and
    writes the same run table, trajectory table, report and verdict."""
    spec, _, _ = tiny
    out = _copy(tiny, tmp_path)
    parts = {p.name: p.stat().st_mtime_ns for p in (out / "parts").iterdir()}
    before = {name: (out / name).read_text() for name in ("report.md", "report.html",
                                                            "verdict.json")}
    runs, traj = pd.read_parquet(out / "runs.parquet"), pd.read_parquet(
        out / "trajectories.parquet")
    result = _invoke(["study", "run", str(spec), "--out", str(out), "--no-progress"])
    assert _summary(result) == ("tiny", "full", 3, 0, 3, 0)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "parts").iterdir()} == parts
    assert {name: (out / name).read_text() for name in before} == before
    pd.testing.assert_frame_equal(pd.read_parquet(out / "runs.parquet"), runs)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "trajectories.parquet"), traj)


def test_study_resume_recomputes_only_lost_or_damaged_runs(tiny, tmp_path):
    """A run whose part file is gone and a run whose part file is cut short are computed
    again, the intact run is not; the recomputed rows equal the first ones (timings aside)."""
    spec, _, _ = tiny
    out = _copy(tiny, tmp_path)
    first = pd.read_parquet(out / "runs.parquet")
    lost, damaged, intact = (out / "parts" / f"{rid}.run.parquet" for rid in first["run_id"])
    lost.unlink()
    damaged.write_bytes(damaged.read_bytes()[:100])
    kept = intact.stat().st_mtime_ns
    result = _invoke(["study", "run", str(spec), "--out", str(out), "--no-progress"])
    assert _summary(result) == ("tiny", "full", 3, 2, 1, 0)
    assert intact.stat().st_mtime_ns == kept
    again = pd.read_parquet(out / "runs.parquet")
    timing = [c for c in first if c.endswith("_s")]
    pd.testing.assert_frame_equal(again.drop(columns=timing), first.drop(columns=timing))


def test_study_quick_variant_and_default_folder(tmp_path, monkeypatch):
    """--quick runs the quick variant (seed 0 alone) into ncsim-out/NAME-quick by default and
    says so in the summary, the report and verdict.json."""
    spec = write_tiny_study(tmp_path, seeds=3, records=20)
    monkeypatch.chdir(tmp_path)
    result = _invoke(["study", "run", str(spec), "--quick", "--no-progress"])
    assert _summary(result) == ("tiny", "quick", 1, 1, 0, 0)
    out = Path("ncsim-out") / "tiny-quick"
    assert result.stdout.splitlines()[1] == f"table: {out / 'runs.parquet'}"
    runs = pd.read_parquet(out / "runs.parquet")
    assert list(runs["seed"]) == [0]
    assert "(`tiny`, quick variant)" in (out / "report.md").read_text()
    assert json.loads((out / "verdict.json").read_text())["quick"] is True


def _other_study(folder: Path) -> Path:
    """A second study in its own file: another name, one part "wide", seed 7."""
    folder.mkdir()
    text = write_tiny_study(folder, seeds=1, records=20).read_text()
    text = text.replace('name = "tiny"', 'name = "other"').replace('name = "ufm"',
                                                                   'name = "wide"')
    text = text.replace("quick.parts.ufm", "quick.parts.wide").replace("seed = [0]",
                                                                       "seed = [7]")
    path = folder / "other.toml"
    path.write_text(text)
    return path


def test_second_study_in_a_folder_is_refused_and_force_does_not_mix(tiny, tmp_path):
    """Another study in a folder that holds one is refused (one line naming --out and
    --force) and changes nothing; with --force the tables, the report, the verdict and the
    figures hold the new study's runs only."""
    out = _copy(tiny, tmp_path)
    other = _other_study(tmp_path / "other")
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    line = _error_line(_invoke(["study", "run", str(other), "--out", str(out),
                                "--no-progress"]))
    assert "study 'tiny'" in line and "another --out or --force" in line
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files

    result = _invoke(["study", "run", str(other), "--out", str(out), "--force",
                      "--no-progress"])
    assert _summary(result) == ("other", "full", 1, 1, 0, 0)
    runs = pd.read_parquet(out / "runs.parquet")
    traj = pd.read_parquet(out / "trajectories.parquet")
    assert list(runs["part"]) == ["wide"] and list(runs["seed"]) == [7]
    assert set(traj["run_id"]) == set(runs["run_id"])
    text = (out / "report.md").read_text()
    assert "`other`" in text and "`tiny`" not in text and "ufm" not in text
    assert json.loads((out / "verdict.json").read_text())["study"] == "other"
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == ["fn_star_groups.png", "trajectories_wide.png"]


def test_failed_runs_are_counted_on_every_run_with_the_remedy(tmp_path):
    """A run that failed is counted in the summary of the run that computed it and of every
    later run that keeps it, with a note on stderr naming --retry-failed, and the command
    exits with status 1 (after writing the tables and the report)."""
    extra = '\n[[parts]]\nname = "broken"\nmodel = "trained"\ndataset = "mnist"\n' \
            'epochs = [1, 1]\n'
    spec = write_tiny_study(tmp_path, seeds=1, records=12, extra=extra)
    out = tmp_path / "out"
    first = _invoke(["study", "run", str(spec), "--out", str(out), "--no-progress"])
    assert _summary(first) == ("tiny", "full", 2, 2, 0, 1)
    again = _invoke(["study", "run", str(spec), "--out", str(out), "--no-progress"])
    assert _summary(again) == ("tiny", "full", 2, 0, 2, 1)
    for result in (first, again):
        assert "1 run(s) failed" in result.stderr and "--retry-failed" in result.stderr
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert (out / "report.md").exists()
    runs = pd.read_parquet(out / "runs.parquet")
    assert list(runs["status"]) == ["ok", "failed"]


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_study_run_bad_workers_is_one_line_and_writes_nothing(tmp_path, workers):
    """--workers below 1 is refused with one line naming the option, before the results
    folder is made."""
    spec = write_tiny_study(tmp_path, seeds=1)
    out = tmp_path / "out"
    line = _error_line(_invoke(["study", "run", str(spec), "--executor", "process",
                                "--workers", workers, "--out", str(out)]))
    assert "--workers" in line and workers in line
    assert not out.exists()


def test_study_run_unusable_out_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    """An --out that is a file, lies below a file, or cannot be written is refused with one
    line naming it; nothing is computed or written."""
    calls = _no_compute(monkeypatch)
    spec = write_tiny_study(tmp_path, seeds=1)
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out, text in ((afile, "is a file"), (afile / "sub", "not a folder")):
        line = _error_line(_invoke(["study", "run", str(spec), "--out", str(out)]))
        assert str(afile) in line and text in line, line
    assert afile.read_text() == "x"
    locked = tmp_path / "locked"
    _read_only(locked, monkeypatch)
    for out in (locked, locked / "sub"):
        line = _error_line(_invoke(["study", "run", str(spec), "--out", str(out)]))
        assert str(locked) in line and "not writable" in line, line
    assert calls == [] and list(locked.iterdir()) == []


def test_study_report_of_a_missing_or_non_study_folder_is_one_line(tmp_path):
    """``study report`` of a folder that does not exist says so; of a folder without a study
    it says that no study.json was found; neither writes a report."""
    line = _error_line(_invoke(["study", "report", str(tmp_path / "absent")]))
    assert line == f"Error: {tmp_path / 'absent'} does not exist; give the --out folder of a " \
                   "study run"
    assert not (tmp_path / "absent").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _error_line(_invoke(["study", "report", str(empty)]))
    assert "holds no study" in line and list(empty.iterdir()) == []


def test_study_report_that_cannot_be_written_is_one_line(tiny, tmp_path, monkeypatch):
    """When the report cannot be written (a read-only folder), ``study report`` exits 2 with
    one line naming the file and the reason, no traceback."""
    import ncsim.study.report as report

    out = _copy(tiny, tmp_path)

    def denied(path, write):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(report, "atomic_write", denied)
    line = _error_line(_invoke(["study", "report", str(out)]))
    assert str(out / "report.md") in line and "Permission denied" in line


def test_report_command_rewrites_the_same_report(tiny, tmp_path):
    """``study report DIR`` on a finished study writes the report the run wrote."""
    out = _copy(tiny, tmp_path)
    before = (out / "report.md").read_text()
    (out / "report.md").unlink()
    result = _invoke(["study", "report", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"report: {out / 'report.md'}\nreport: {out / 'report.html'}\n"
    assert (out / "report.md").read_text() == before


# ------------------------------------------------------------------ intervention rows

INTERVENTION = intervention_study("iv", "Intervention", 300.0, 30, [0.5, 1.0])


def test_intervention_row_describes_the_whole_run(tmp_path, monkeypatch):
    """An intervention run's row gives the spec of the run (t_end, records and first record
    time as written, gaussian init), the steps of both segments together and the closed-form
    columns of the run's own spec (not of the continued segment's array init)."""
    from ncsim.study.compute import run_chunk
    from ncsim.study.spec import load_study, run_spec
    from ncsim.theory.columns import theory_columns

    path = tmp_path / "iv.toml"
    path.write_text(INTERVENTION)
    descs = load_study(path).runs()
    steps = []
    real = FLOW.simulate

    def counting(specs, **kwargs):
        result = real(specs, **kwargs)
        steps.append(int(result.runs["steps"].sum()))
        return result

    monkeypatch.setattr(FLOW, "simulate", counting)
    results = run_chunk(descs)
    assert len(steps) == 4
    for k, (desc, (rid, row, traj)) in enumerate(zip(descs, results)):
        assert rid == desc.run_id and row["status"] == "ok"
        assert (row["solver_t_end"], row["solver_records"]) == (300.0, 30)
        assert row["solver_t_first"] is None and row["init_kind"] == "gaussian"
        assert row["t_final"] == 300.0 and traj["time"].max() == 300.0
        assert row["steps"] == steps[2 * k] + steps[2 * k + 1]
        theory = theory_columns(run_spec(desc.params))
        assert math.isfinite(theory["onset_time_theory"])
        for key in ("fn_star_theory", "onset_time_theory", "lambda_crit_theory"):
            assert row[key] == pytest.approx(theory[key], rel=1e-12), key
        assert np.isfinite(row["fn_after_intervention"])


def test_intervention_whose_first_segment_runs_out_of_steps_is_not_continued(tmp_path):
    """When the flow runs out of steps before intervene_time, the run ends there: status
    max_steps, t_final and the last record before intervene_time, no second segment; the
    control arm (alpha = 1) is not reported as collapsed at a shifted time."""
    from ncsim.study.compute import run_chunk
    from ncsim.study.spec import load_study

    path = tmp_path / "iv.toml"
    path.write_text(INTERVENTION.replace("intervene_time = 20.0",
                                         "intervene_time = 100.0\nmax_steps = 24")
                    .replace("[0.5, 1.0]", "[1.0]"))
    ((rid, row, traj),) = run_chunk(load_study(path).runs())
    assert row["status"] == "max_steps"
    assert row["t_final"] < 100.0 and row["solver_t_end"] == 300.0
    assert set(traj["phase"]) == {1} and traj["time"].max() <= row["t_final"]
    assert math.isnan(row["onset_time"]) and math.isnan(row["fn_after_intervention"])


def test_intervention_whose_second_segment_stalls_keeps_the_stalled_status(tmp_path,
                                                                            monkeypatch):
    """A stalled flow is reported "stalled" even when its records crossed the onset threshold
    (simulate's own order of statuses); the intervention's second segment kept "ok" instead.
    The second segment's status is set to "stalled" here, the flows themselves are real."""
    import sys

    from ncsim.study.compute import run_chunk
    from ncsim.study.spec import load_study

    module = sys.modules["ncsim.flow.simulate"]
    real = module.simulate
    calls = []

    def second_stalls(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(result)
        if len(calls) == 2:
            result.runs["status"] = "stalled"
        return result

    monkeypatch.setattr(module, "simulate", second_stalls)
    path = tmp_path / "iv.toml"
    path.write_text(INTERVENTION.replace("[0.5, 1.0]", "[1.0]"))
    ((rid, row, traj),) = run_chunk(load_study(path).runs())
    assert len(calls) == 2 and math.isfinite(row["onset_time"])
    assert row["status"] == "stalled"


def test_quick_report_shows_the_quick_note_and_the_tables_start_with_run_id(tmp_path):
    """A quick variant's report carries its [quick] note (what its runs can decide) in the
    Markdown, the HTML and verdict.json; a full variant has none. The study's tables start
    with run_id, as simulate's do (DESIGN.md section 3)."""
    spec = write_tiny_study(tmp_path, seeds=1, records=12)
    text = spec.read_text()
    assert "[quick]" in text
    spec.write_text(text.replace("[quick]", '[quick]\nnote = "a smoke test only"', 1))
    quick, full = tmp_path / "q", tmp_path / "f"
    assert _invoke(["study", "run", str(spec), "--quick", "--out", str(quick),
                    "--no-progress"]).exit_code == 0
    assert _invoke(["study", "run", str(spec), "--out", str(full), "--no-progress"]).exit_code == 0
    assert "*Quick variant.* a smoke test only" in (quick / "report.md").read_text()
    assert "<i>Quick variant.</i> a smoke test only" in (quick / "report.html").read_text()
    assert json.loads((quick / "verdict.json").read_text())["quick_note"] == "a smoke test only"
    assert "Quick variant" not in (full / "report.md").read_text()
    assert "quick_note" not in json.loads((full / "verdict.json").read_text())
    for name in ("runs.parquet", "trajectories.parquet"):
        assert pd.read_parquet(full / name).columns[0] == "run_id"


def test_a_study_file_that_is_not_text_is_one_line(tmp_path):
    """A binary file given as a study spec is refused with one line, not a decoding
    traceback."""
    spec = tmp_path / "bin.toml"
    spec.write_bytes(b"\xff\xfe\x00binary")
    line = _error_line(_invoke(["study", "run", str(spec), "--out", str(tmp_path / "o")]))
    assert "not a text file in UTF-8" in line and "bin.toml" in line


def test_report_of_a_study_folder_holding_another_study_covers_both(tmp_path):
    """`study run NAME` without --out writes into ncsim-out/NAME-quick, inside the folder of
    the default study; `study report ncsim-out` reports both (each with its variant), while a
    study run still writes its own report only."""
    spec = write_tiny_study(tmp_path, seeds=1, records=12)
    root = tmp_path / "root"
    assert _invoke(["study", "run", str(spec), "--out", str(root),
                    "--no-progress"]).exit_code == 0
    assert _invoke(["study", "run", str(spec), "--quick", "--out", str(root / "tiny-quick"),
                    "--no-progress"]).exit_code == 0
    assert _invoke(["study", "run", str(spec), "--out", str(root),
                    "--no-progress"]).exit_code == 0
    own = (root / "report.md").read_text()
    assert own.count("## ") == 1 and "full variant" in own
    assert _invoke(["study", "report", str(root)]).exit_code == 0
    both = (root / "report.md").read_text()
    assert both.count("## ") == 2 and "full variant" in both and "quick variant" in both
    assert "| tiny | full |" in both and "| tiny | quick |" in both
    assert "](tiny-quick/figures/" in both  # the nested study's figures, by relative path
