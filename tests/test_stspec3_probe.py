"""Probe tests of ncsim.study.spec: every refusal with its exact message, grid expansion
against a naive nested-loop reference, quick variants over the full one, types and repeats."""

from __future__ import annotations

import pytest
from study_helpers import SMALL_SIMULATED as SIM
from study_helpers import part, study_raw

from ncsim.errors import InputError
from ncsim.study.spec import TOP_KEYS, load_study, parse_study, resolve_path, spec_dir


def refusal(raw, quick=False):
    """The message with which parse_study refuses ``raw``."""
    with pytest.raises(InputError) as err:
        parse_study(raw, "s.toml", quick)
    return str(err.value)


# ----------------------------------------------------------------------------- types
@pytest.mark.parametrize(("raw", "message"), [
    (study_raw(part(), simulated={**SIM, "lambda": True}),
     "s.toml: key 'simulated.lambda': expected a number, got True"),
    (study_raw(part(init_scale=False)),
     "s.toml: key 'parts.a.init_scale': expected a number, got False"),
    (study_raw(part(grid={"init_scale": [0.5, True]})),
     "s.toml: key 'parts.a.grid.init_scale[1]': expected a number, got True"),
])
def test_a_flag_for_a_number_parameter_is_refused(raw, message):
    """true/false is not a number: a float parameter given a flag is refused, not read as 1.0."""
    assert refusal(raw) == message


def test_a_number_for_a_choice_names_the_allowed_values():
    """A choice parameter given a number: 'expected a string (one of: ...)' with the choices."""
    assert refusal(study_raw(part(loss=1))) == (
        "s.toml: key 'parts.a.loss': expected a string (one of: ce, mse), got 1")


@pytest.mark.parametrize(("value", "shown"), [(1, "1"), (0, "0"), ("yes", "'yes'")])
def test_a_flag_parameter_takes_only_true_or_false(value, shown):
    """onset_interpolate is true/false: 1, 0 or a word are refused with 'expected true/false'."""
    assert refusal(study_raw(part(onset_interpolate=value))) == (
        f"s.toml: key 'parts.a.onset_interpolate': expected true/false, got {shown}")


def test_whole_numbers_fill_a_float_axis_and_floats_do_not_fill_an_integer_one():
    """init_scale = [1, 0.5] reads 1 as 1.0; seed = [1.0] is refused naming its index."""
    runs = parse_study(study_raw(part(grid={"init_scale": [1, 0.5]})), "s.toml").runs()
    values = [d.params["init_scale"] for d in runs]
    assert values == [1.0, 0.5] and all(type(v) is float for v in values)
    assert refusal(study_raw(part(grid={"seed": [1.0]}))) == (
        "s.toml: key 'parts.a.grid.seed[0]': expected an integer, got 1.0")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("title", 5, "expected a string, got 5"),
    ("name", 5, "expected a string, got 5"),
    ("notes", ["x"], "expected a string, got ['x']"),
    ("metrics", "onset_time", "expected a list, got 'onset_time'"),
    ("simulated", [1], "expected a table, got [1]"),
    ("quick", [1], "expected a table, got [1]"),
    ("parts", {"a": 1}, "expected a list, got {'a': 1}"),
])
def test_a_top_level_key_of_the_wrong_type_is_refused(key, value, message):
    """Each top-level key has one type; another is refused naming the key and the value."""
    raw = study_raw(part())
    raw[key] = value
    assert refusal(raw) == f"s.toml: key '{key}': {message}"


@pytest.mark.parametrize(("raw", "message"), [
    (study_raw(part(grid=[1])), "s.toml: key 'parts.a.grid': expected a table, got [1]"),
    (study_raw(part(), quick={"parts": {"a": {"grid": [1]}}}),
     "s.toml: key 'quick.parts.a.grid': expected a table, got [1]"),
    (study_raw(part(), quick={"simulated": [1]}),
     "s.toml: key 'quick.simulated': expected a table, got [1]"),
    (study_raw(part(), quick={"parts": [1]}),
     "s.toml: key 'quick.parts': expected a table, got [1]"),
])
def test_a_grid_or_quick_table_that_is_not_a_table_is_refused(raw, message):
    """[parts.grid], [quick.simulated], [quick.parts] and a quick grid must be tables."""
    assert refusal(raw) == message


def test_an_unknown_top_level_key_lists_the_keys_in_schema_order():
    """An unknown top-level key is refused listing the allowed keys in their schema order."""
    assert refusal(study_raw(part(), colour=1)) == (
        "s.toml: key 'colour': unknown key; allowed: " + ", ".join(TOP_KEYS))
    assert list(TOP_KEYS)[:3] == ["name", "title", "question"]


# ----------------------------------------------------------------------------- axes
def test_a_text_axis_for_a_choice_parameter_is_refused():
    """A comma string is a grid axis only for numbers: loss = "ce,mse" asks for a list."""
    assert refusal(study_raw(part(grid={"loss": "ce,mse"}))) == (
        "s.toml: key 'parts.a.grid.loss': a grid axis must be a non-empty list or a range "
        "string like '1e-4..1e-1:8', got 'ce,mse'")


@pytest.mark.parametrize(("axis", "value", "message"), [
    ("lambda", "1e-3..x:3", "'x' is not a number; give a value, a comma list or a log range "
                            "like 1e-4..1e-1:16"),
    ("seed", "0,a", "'a' is not a number; give a value, a comma list or a log range like "
                    "1e-4..1e-1:16"),
    ("seed", "", "empty value in ''"),
])
def test_a_bad_number_text_axis_names_the_key_once(axis, value, message):
    """A range or comma axis that does not parse: the message names the axis once."""
    assert refusal(study_raw(part(grid={axis: value}))) == (
        f"s.toml: key 'parts.a.grid.{axis}': {message}")


@pytest.mark.parametrize(("grid", "key", "shown"), [
    ({"seed": [0, 0, 1]}, "seed", "0"),
    ({"seed": "0,0"}, "seed", "0"),
    ({"init_scale": [0.1, 0.1]}, "init_scale", "0.1"),
    ({"init_scale": [1, 1.0]}, "init_scale", "1.0"),
    ({"onset_interpolate": [True, True]}, "onset_interpolate", "True"),
])
def test_a_repeated_axis_value_is_refused_naming_the_value(grid, key, shown):
    """A list (or comma text) that repeats a value is refused at the axis, naming the value."""
    assert refusal(study_raw(part(grid=grid))) == (
        f"s.toml: key 'parts.a.grid.{key}': repeated grid value: {shown} appears more than "
        "once; give each value once (a repeated value is the same run, computed once)")


@pytest.mark.parametrize("written", ["1e-3..1e-3:3", "0.5..0.5:2"])
def test_a_number_range_with_equal_ends_is_refused_without_talk_of_rounding(written):
    """lambda_w = "1e-3..1e-3:3" gives 1e-3 three times: refused as a range that gives the
    value more than once (nothing was rounded)."""
    value = float(written.split("..")[0])
    assert refusal(study_raw(part(grid={"lambda_w": written}))) == (
        f"s.toml: key 'parts.a.grid.lambda_w': repeated grid value: the range {written!r} "
        f"gives {value!r} more than once; give different ends, one point or a list (a "
        "repeated value is the same run, computed once)")


def test_an_integer_range_that_rounds_two_points_to_one_is_refused():
    """seed = "1..2:3" gives 1, 1.41, 2, rounded 1, 1, 2: refused, not silently two runs."""
    assert refusal(study_raw(part(grid={"seed": "1..2:3"}))) == (
        "s.toml: key 'parts.a.grid.seed': repeated grid value: the range '1..2:3' rounds two "
        "points to 1; give fewer points or a list (a repeated value is the same run, computed "
        "once)")


def test_an_integer_range_without_repeats_expands_rounded():
    """seed = "1..100:3" gives 1, 10, 100 (log-spaced, rounded to integers)."""
    runs = parse_study(study_raw(part(grid={"seed": "1..100:3"})), "s.toml").runs()
    assert [d.params["seed"] for d in runs] == [1, 10, 100]
    assert all(type(d.params["seed"]) is int for d in runs)


def test_grid_points_that_are_the_same_run_are_refused():
    """chunk (how a run is computed, not what) as an axis makes two points one run: refused."""
    assert refusal(study_raw(part(grid={"chunk": [1, 2]}))) == (
        "s.toml: key 'parts.a.grid': the grid points {'chunk': 1} and {'chunk': 2} are the "
        "same run (it would be computed once); change the axes so that every point differs")


def test_a_part_fixed_table_holds_no_grid_axis():
    """A [simulated] default that a part varies is an axis of the part, not also fixed."""
    raw = study_raw(part(grid={"seed": [0, 1], "init_scale": [0.2, 0.3]}),
                    simulated={**SIM, "seed": 5, "init_scale": 0.1})
    study = parse_study(raw, "s.toml")
    (only,) = study.parts
    assert only["fixed"] == SIM
    assert only["grid"] == {"seed": [0, 1], "init_scale": [0.2, 0.3]}
    assert study.to_dict()["parts"][0]["fixed"] == SIM


# ----------------------------------------------------------------------------- expansion
def test_expansion_matches_a_nested_loop_over_parts_and_axes_in_file_order():
    """Runs: parts in file order, each part's axes nested in file order (last fastest)."""
    seeds, scales, lams = [2, 0, 1], "0.1..1:3", "1e-2,1e-3"
    raw = study_raw(
        {"name": "b", "model": "simulated", "dim": 6,
         "grid": {"seed": seeds, "init_scale": scales, "lambda": lams}},
        {"name": "a", "model": "simulated", "grid": {"lambda": [3e-3], "seed": [1, 0]}})
    runs = parse_study(raw, "s.toml").runs()
    expected = []
    for seed in seeds:
        for scale in (0.1, 10 ** -0.5, 1.0):
            for lam in (1e-2, 1e-3):
                expected.append(("b", {**SIM, "dim": 6, "seed": seed, "init_scale": scale,
                                       "lambda": lam}))
    for lam in (3e-3,):
        for seed in (1, 0):
            expected.append(("a", {**SIM, "lambda": lam, "seed": seed}))
    assert len(runs) == 3 * 3 * 2 + 2 == len({d.run_id for d in runs})
    assert [d.part for d in runs] == [p for p, _ in expected]
    for desc, (_, params) in zip(runs, expected):
        assert desc.params.keys() == params.keys()
        for key, value in params.items():
            assert desc.params[key] == pytest.approx(value, rel=1e-15), key


def test_unnamed_parts_are_named_by_their_index():
    """A part without a name is part0, part1, ... by its place in the file."""
    raw = study_raw({"model": "simulated", "grid": {"seed": [0]}},
                    {"model": "simulated", "grid": {"seed": [1]}})
    study = parse_study(raw, "s.toml")
    assert [p["name"] for p in study.parts] == ["part0", "part1"]
    assert [d.part for d in study.runs()] == ["part0", "part1"]


# ----------------------------------------------------------------------------- variants
def test_quick_fixed_values_override_the_part_and_the_defaults_only_in_quick():
    """A quick part's fixed value wins over the part's own and over [quick.simulated]; the
    full variant keeps its values; keys the quick variant leaves alone stay."""
    raw = study_raw(part(init_scale=0.2, eta_h=2.0),
                    quick={"note": "small", "simulated": {"dim": 3, "init_scale": 0.4},
                           "parts": {"a": {"init_scale": 0.3, "grid": {"seed": [7]}}}})
    full, quick = parse_study(raw, "s.toml"), parse_study(raw, "s.toml", quick=True)
    assert [d.params for d in full.runs()] == [
        {**SIM, "init_scale": 0.2, "eta_h": 2.0, "seed": s} for s in (0, 1)]
    assert [d.params for d in quick.runs()] == [
        {**SIM, "dim": 3, "init_scale": 0.3, "eta_h": 2.0, "seed": 7}]


def test_the_quick_note_belongs_to_the_quick_variant_only():
    """quick_note is the [quick] note on the quick variant and empty on the full one."""
    raw = study_raw(part(), quick={"note": "a smoke test"})
    assert parse_study(raw, "s.toml").quick_note == ""
    assert parse_study(raw, "s.toml", quick=True).quick_note == "a smoke test"
    assert parse_study(raw, "s.toml").to_dict()["quick_note"] == ""


# ----------------------------------------------------------------------------- files
def test_a_file_that_is_not_toml_is_refused_naming_the_file(tmp_path):
    """A study file that does not parse as TOML: '<path>: not valid TOML: <reason>'."""
    path = tmp_path / "bad.toml"
    path.write_text("name = \n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_study(path)
    assert str(err.value).startswith(f"{path}: not valid TOML: ")


def test_an_unknown_study_name_lists_the_shipped_studies():
    """An unknown study name is refused listing every shipped study by name, sorted."""
    known = ", ".join(sorted(p.stem for p in spec_dir().glob("*.toml")))
    assert "depth" in known and "width" in known
    with pytest.raises(InputError) as err:
        resolve_path("no_such_study")
    assert str(err.value) == (
        f"study 'no_such_study' not found (a .toml file or one of: {known})")


def test_a_study_in_the_studies_folder_comes_before_the_shipped_one(tmp_path, monkeypatch):
    """A name is looked up in ./studies/ first, then in the shipped specs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies").mkdir()
    local = tmp_path / "studies" / "depth.toml"
    local.write_text((spec_dir() / "width.toml").read_text(encoding="utf-8"), encoding="utf-8")
    assert resolve_path("depth").resolve() == local.resolve()
    assert resolve_path("depth.toml").resolve() == local.resolve()
    assert load_study("depth").name == "width"
    assert resolve_path("width") == spec_dir() / "width.toml"
