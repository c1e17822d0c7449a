"""Scan of the study layer over odd inputs and odd folder states: part names used as file
names, huge grids, huge integer parameters, a --out folder holding other files, damaged part
files, changed specs and grid values one ulp apart.

Fixed findings: a part name wrote figures outside --out ('x/../../ESCAPED'), or failed after
every run (NUL byte: a traceback; 300 characters: too long); study grids had no size limit
(2e6 runs stalled building run ids; a 1e6-value axis stalled in a quadratic repeat check);
classes = 2^62 built a K-long tuple (MemoryError); a report deleted every figures/*.png of
its folder, a user's too (it now removes the figures listed in .figures-written only).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import invoke
from deadline import deadline

from ncsim.errors import InputError
from ncsim.study.runner import run_study
from ncsim.study.spec import load_study, parse_study
from ncsim.study.store import Store

STUDY = """
name = "{name}"
title = "T"
question = "q?"
claim = "c."
analysis = "invariance"

[simulated]
classes = 3
per_class = 2
dim = 4
t_end = {t_end}
records = 10
rtol = 1e-6
atol = 1e-9
lambda = 1e-2
{extra}
[[parts]]
name = "{part}"
model = "simulated"
[parts.grid]
seed = {seeds}
"""


def _spec(folder: Path, part: str = "p", seeds: str = "[0, 1]", t_end: float = 50.0,
          name: str = "s", extra: str = "") -> Path:
    """A tiny study file (K = 3, n = 2, d = 4) with one part over ``seeds`` (``extra``: lines
    of its [simulated] table)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(STUDY.format(name=name, part=part, seeds=seeds, t_end=t_end,
                                 extra=extra))
    return path


def _raw(grid: dict, **fixed) -> dict:
    """A parsed study document with one simulated part over ``grid``."""
    return {"name": "t", "title": "T", "question": "q", "claim": "c",
            "analysis": "invariance",
            "simulated": {"classes": 3, "per_class": 2, "dim": 4, "t_end": 50.0,
                          "records": 10},
            "parts": [{"name": "p", "model": "simulated", "grid": grid, **fixed}]}


def _tables(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The run table (timing columns dropped) and the trajectory table, sorted."""
    runs = pd.read_parquet(out / "runs.parquet")
    runs = runs.drop(columns=[c for c in runs if "second" in c or "wall" in c])
    traj = pd.read_parquet(out / "trajectories.parquet")
    return (runs.sort_values("run_id").reset_index(drop=True),
            traj.sort_values(["run_id", "time"]).reset_index(drop=True))


# ----------------------------------------------------------------------------- part names
def test_a_part_name_with_dotdot_writes_nothing_outside_out(tmp_path):
    """A part named 'x/../../../../ESCAPED' leaves no file outside the --out folder."""
    box = tmp_path / "a" / "box"
    spec = _spec(box, part="x/../../../../ESCAPED")
    out = box / "out"
    invoke(["study", "run", str(spec), "--out", str(out), "--no-progress"])
    outside = [p for p in tmp_path.rglob("*")
               if p.is_file() and out not in p.parents and p != spec]
    assert outside == []


def test_a_part_name_with_a_nul_byte_is_one_clear_error(tmp_path):
    """A part name with a NUL byte ends in exit 0 or one clear error (exit 2), no traceback."""
    spec = _spec(tmp_path, part="a\\u0000b")
    result = invoke(["study", "run", str(spec), "--out", str(tmp_path / "out"),
                     "--no-progress"])
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output


def test_a_too_long_part_name_is_refused_before_any_run_or_reported(tmp_path):
    """A 300-character part name: refused before any run (exit 2, no run file) or reported."""
    spec = _spec(tmp_path, part="a" * 300)
    out = tmp_path / "out"
    result = invoke(["study", "run", str(spec), "--out", str(out), "--no-progress"])
    if result.exit_code == 2:
        assert not list(out.glob("parts/*.run.parquet"))
    else:
        assert result.exit_code == 0, result.output
        assert (out / "report.md").is_file()


def test_a_part_name_with_unicode_or_an_empty_name_runs(tmp_path):
    """A part named 'ü€' runs and its report is written (names need not be ASCII)."""
    spec = _spec(tmp_path, part="ü€")
    out = tmp_path / "out"
    result = invoke(["study", "run", str(spec), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert set(pd.read_parquet(out / "runs.parquet")["part"]) == {"ü€"}
    assert (out / "report.md").is_file()


# ----------------------------------------------------------------------------- huge grids
@pytest.mark.parametrize("grid", [
    {"lambda_w": "1e-4..1e-1:2000", "lambda_h": "1e-4..1e-1:1000"},
    {"lambda_w": "1e-4..1e-1:1000000"},
], ids=["2e6_points", "1e6_axis"])
def test_a_huge_study_grid_is_refused_at_once(grid):
    """A study grid of 1e6 points or more is refused with an InputError within seconds."""
    with deadline(2.0), pytest.raises(InputError, match="points|runs"):
        parse_study(_raw(grid), "x.toml")


def test_a_huge_class_count_is_an_input_error():
    """classes = 2**62 in a study part is refused with an InputError, not MemoryError."""
    with pytest.raises(InputError):
        parse_study(_raw({"seed": [0]}, classes=2**62), "x.toml")


# ----------------------------------------------------------------------------- --out folder
def test_a_study_keeps_png_files_it_did_not_write(tmp_path):
    """A figures/mine.png in a --out folder that holds no study survives 'study run'."""
    out = tmp_path / "proj"
    (out / "figures").mkdir(parents=True)
    mine = out / "figures" / "mine.png"
    mine.write_bytes(b"\x89PNG user figure")
    invoke(["study", "run", str(_spec(tmp_path)), "--out", str(out), "--no-progress"])
    assert mine.read_bytes() == b"\x89PNG user figure"


# ----------------------------------------------------------------------------- grid values
def test_grid_values_one_ulp_apart_are_two_runs_stored_exactly():
    """lambda_w = [0.01, nextafter(0.01, 1)] gives two runs with distinct ids and values."""
    up = math.nextafter(0.01, 1.0)
    runs = parse_study(_raw({"lambda_w": [0.01, up]}), "x.toml").runs()
    assert [r.params["lambda_w"] for r in runs] == [0.01, up]
    assert len({r.run_id for r in runs}) == 2


def test_a_reversed_range_keeps_its_written_order_and_exact_ends():
    """'1e-2..1e-3:3' gives 0.01, 10**-2.5, 0.001 in that order, the ends exact."""
    runs = parse_study(_raw({"lambda_w": "1e-2..1e-3:3"}), "x.toml").runs()
    values = [r.params["lambda_w"] for r in runs]
    assert values[0] == 0.01 and values[2] == 0.001
    assert values[1] == pytest.approx(10 ** -2.5, rel=1e-15)


@pytest.mark.parametrize("grid, why", [
    ({"lambda_w": [1, 1.0]}, "appears more than once"),
    ({"lambda_w": "1e-3,1e-3"}, "appears more than once"),
    ({"lambda_w": "1e-3..1e-3:2"}, "more than once"),
    ({"lambda_w": [float("nan")]}, "expected a number"),
    ({"lambda_w": [float("inf")]}, "expected a number"),
    ({"lambda_w": [True]}, "expected a number"),
    ({"lambda_w": [[1e-3]]}, "expected a number"),
    ({"lambda_w": ["1e-3"]}, "expected a number"),
    ({"lambda_w": []}, "empty grid axis"),
    ({"lambda_w": "1e-3,,2e-3"}, "empty value"),
    ({"seed": [1, 1.0]}, "expected an integer"),
    ({"onset_interpolate": [1, 0]}, "expected true/false"),
    ({"loss": "ce,mse"}, "non-empty list"),
])
def test_odd_grid_values_are_refused_naming_the_axis(grid, why):
    """Repeated, non-finite, boolean, nested, string and empty grid values: an InputError
    naming the axis."""
    axis = next(iter(grid))
    with pytest.raises(InputError, match=rf"parts\.p\.grid\.{axis}.*{why}"):
        parse_study(_raw(grid), "x.toml")


# ----------------------------------------------------------------------------- resume
def _damage(out: Path, how: str) -> None:
    """Damage the first finished run of the folder ``out`` in the way ``how``."""
    run_file = sorted((out / "parts").glob("*.run.parquet"))[0]
    traj_file = run_file.with_name(run_file.name.replace(".run.", ".traj."))
    if how == "cut_trajectory":
        traj_file.write_bytes(traj_file.read_bytes()[:-50])
    elif how == "id_only_row":
        pd.read_parquet(run_file)[["run_id"]].to_parquet(run_file)
    elif how == "wrong_row_count":
        row = pd.read_parquet(run_file)
        row["trajectory_rows"] = 5
        row.to_parquet(run_file)
    elif how == "empty_row_file":
        run_file.write_bytes(b"")


def test_a_resumed_study_equals_a_fresh_one_bit_for_bit(tmp_path):
    """A run whose files were cut, emptied or relabelled is computed again on resume, and the
    tables equal those of a fresh study bit for bit (chunk = 1: every run is integrated alone
    both times; in a batch of another size nc2_equinorm may differ by 1e-15)."""
    study = load_study(_spec(tmp_path, seeds="[0, 1, 2]", extra="chunk = 1"))
    fresh = tmp_path / "fresh"
    run_study(study, fresh, progress=False, report=False)
    want = _tables(fresh)
    for how in ("cut_trajectory", "id_only_row", "wrong_row_count", "empty_row_file"):
        out = tmp_path / how
        run_study(study, out, progress=False, report=False)
        _damage(out, how)
        summary = run_study(study, out, progress=False, report=False)
        assert (summary.computed, summary.skipped) == (1, 2), how
        got = _tables(out)
        pd.testing.assert_frame_equal(got[0], want[0][got[0].columns], check_exact=True)
        pd.testing.assert_frame_equal(got[1], want[1], check_exact=True)


def test_a_resumed_run_in_another_batch_equals_the_fresh_one_to_round_off(tmp_path):
    """Default chunk: a run recomputed alone on resume (first computed in a batch of 3)
    equals the fresh tables to 1e-13 relative, every other value exactly."""
    study = load_study(_spec(tmp_path, seeds="[0, 1, 2]"))
    fresh, out = tmp_path / "fresh", tmp_path / "out"
    run_study(study, fresh, progress=False, report=False)
    run_study(study, out, progress=False, report=False)
    _damage(out, "empty_row_file")
    assert run_study(study, out, progress=False, report=False).computed == 1
    for got, want in zip(_tables(out), _tables(fresh)):
        want = want[got.columns]
        floats = [c for c in got if got[c].dtype.kind == "f"]
        pd.testing.assert_frame_equal(got.drop(columns=floats), want.drop(columns=floats),
                                      check_exact=True)
        pd.testing.assert_frame_equal(got[floats], want[floats], check_exact=False,
                                      rtol=1e-13, atol=0)


def test_a_changed_spec_never_mixes_and_going_back_reuses_the_kept_runs(tmp_path):
    """t_end changed in the same folder: the tables hold only the new runs; the old spec
    again computes nothing and gives its first tables bit for bit."""
    old = load_study(_spec(tmp_path / "v1"))
    new = load_study(_spec(tmp_path / "v2", t_end=80.0))
    out = tmp_path / "out"
    run_study(old, out, progress=False, report=False)
    first = _tables(out)
    run_study(new, out, progress=False, report=False)
    runs, traj = _tables(out)
    assert list(runs["t_end"]) == [80.0, 80.0]
    assert set(traj["run_id"]) == set(runs["run_id"])
    assert traj["time"].max() == pytest.approx(80.0, rel=1e-12)
    summary = run_study(old, out, progress=False, report=False)
    assert summary.computed == 0
    again = _tables(out)
    pd.testing.assert_frame_equal(again[0], first[0][again[0].columns], check_exact=True)
    pd.testing.assert_frame_equal(again[1], first[1], check_exact=True)
    assert len(Store(out).statuses()) == 4  # the parts of both specs are kept


@pytest.mark.parametrize("name", ["a/b", "a\\b", "..", "a\nb", "x" * 101])
def test_unsafe_part_names_are_refused_before_any_run(name):
    """A part name with a path separator, a control character, '..' or over 100 characters is
    an InputError naming parts[0].name."""
    raw = _raw({"seed": [0]})
    raw["parts"][0]["name"] = name
    with pytest.raises(InputError, match=r"parts\[0\]\.name.*cannot name the part's figure"):
        parse_study(raw, "x.toml")


def test_a_rerun_replaces_its_own_figures_and_keeps_the_users(tmp_path):
    """.figures-written lists what the report wrote: a re-run with another part name removes
    the old part's figure, a user's PNG stays."""
    out = tmp_path / "out"
    invoke(["study", "run", str(_spec(tmp_path, part="first")), "--out", str(out),
            "--no-progress"])
    written = (out / ".figures-written").read_text().split()
    assert "trajectories_first.png" in written
    (out / "figures" / "mine.png").write_bytes(b"user")
    invoke(["study", "run", str(_spec(tmp_path / "b", part="second")), "--out", str(out),
            "--no-progress"])
    names = {p.name for p in (out / "figures").glob("*.png")}
    assert "trajectories_first.png" not in names and "trajectories_second.png" in names
    assert "mine.png" in names and "mine.png" not in (out / ".figures-written").read_text()


def test_a_study_of_more_than_1e5_runs_is_refused_at_once():
    """Three axes of 50 values (125,000 runs) are refused before any run id is built."""
    grid = {"lambda_w": "1e-4..1e-1:50", "lambda_h": "1e-4..1e-1:50", "seed": list(range(50))}
    with deadline(2.0), pytest.raises(InputError, match="125000 runs; a study takes at most"):
        parse_study(_raw(grid), "x.toml")
