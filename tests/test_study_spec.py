"""Study specs: validation errors name the file, the key and what is allowed; shipped specs."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny_study import TEMPLATE

from ncsim.errors import InputError
from ncsim.study.spec import load_study, shipped_studies, spec_dir, tomllib

ROOT = Path(__file__).resolve().parents[1]

GOOD = TEMPLATE.format(seeds=[0, 1], chunk=2, t_end=200.0, records=20, rtol=1e-5)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_good_spec_resolves(tmp_path):
    study = load_study(_write(tmp_path, GOOD))
    assert len(study.runs()) == 2
    assert len(load_study(_write(tmp_path, GOOD), quick=True).runs()) == 1
    assert len({r.run_id for r in study.runs()}) == 2


@pytest.mark.parametrize("edit, key, allowed", [
    (("analysis = \"invariance\"", "analysis = \"invariance\"\ncolour = 3"), "colour",
     "allowed: name"),
    (("seed = [0, 1]", "seed = [0, 1]\nwidht = [3]"), "parts.ufm.grid.widht", "allowed:"),
    (("dim = 8", "dim = 8\nfoo = 1"), "simulated.foo", "allowed:"),
    (("seed = [0, 1]", "seed = []"), "parts.ufm.grid.seed", "at least one value"),
    (("dim = 8", "dim = \"eight\""), "simulated.dim", "expected an integer"),
    (("seed = [0, 1]", "seed = [0, 1.5]"), "parts.ufm.grid.seed[1]", "expected an integer"),
    (("seed = [0, 1]", "seed = [0]\nloss = [\"hinge\"]"), "parts.ufm.grid.loss[0]",
     "allowed: ce, mse"),
    (("analysis = \"invariance\"", "analysis = \"magic\""), "analysis", "allowed:"),
    (("model = \"simulated\"", "model = \"dreamt\""), "parts.ufm.model",
     "allowed: simulated, trained"),
    (("seed = [0, 1]", "seed = \"1..0:3\""), "parts.ufm.grid.seed", "range"),
])
def test_malformed_spec_names_file_key_and_allowed(tmp_path, edit, key, allowed):
    path = _write(tmp_path, GOOD.replace(*edit, 1))
    with pytest.raises(InputError) as err:
        load_study(path)
    message = str(err.value)
    assert str(path) in message
    assert f"'{key}'" in message
    assert allowed in message
    assert "\n" not in message


def test_invalid_run_rejected_before_running(tmp_path):
    path = _write(tmp_path, GOOD.replace("dim = 8", "dim = 8\ninit = \"etf\"\nclasses = 40"))
    with pytest.raises(InputError):
        load_study(path)


def test_cli_rejects_malformed_spec_before_any_run(tmp_path):
    from ncsim.cli import cli as main

    path = _write(tmp_path, GOOD.replace("seed = [0, 1]", "seed = []"))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["study", "run", str(path), "--out", str(out)])
    assert result.exit_code == 2
    assert "parts.ufm.grid.seed" in result.output and str(path) in result.output
    assert not out.exists()


def test_shipped_specs_load_full_and_quick():
    names = [p.stem for p in shipped_studies()]
    assert {"fn_star_invariance", "lead_time", "intervention", "depth", "activation",
            "weight_decay", "width", "arch_dataset"} <= set(names)
    for path in shipped_studies():
        for quick in (False, True):
            study = load_study(path, quick=quick)
            assert study.runs()
        assert "quick" in tomllib.loads(path.read_text())


def test_studies_folder_is_a_copy_of_the_shipped_specs():
    for path in shipped_studies():
        copy = ROOT / "studies" / path.name
        assert copy.exists(), f"studies/{path.name} missing"
        assert filecmp.cmp(path, copy, shallow=False), f"studies/{path.name} differs"


def test_study_found_by_name():
    assert load_study("weight_decay", quick=True).name == "weight_decay"
    with pytest.raises(InputError, match="not found"):
        load_study("no_such_study")
    assert spec_dir().is_dir()


def test_a_name_with_toml_finds_the_shipped_study_but_a_missing_path_is_an_error(
        tmp_path, monkeypatch):
    """``depth.toml`` without a folder is the study's name; a path with a folder that does not
    exist is an error naming the path, never the shipped study of the same name."""
    monkeypatch.chdir(tmp_path)
    assert load_study("depth.toml", quick=True).source == str(spec_dir() / "depth.toml")
    for missing in (tmp_path / "nowhere" / "depth.toml", "./depth.toml", "studies/depth.toml"):
        with pytest.raises(InputError, match=r"^study file '.*depth\.toml' not found \(give "
                                             r"an existing \.toml file, or the name of a study "
                                             r"without a folder: .*depth.*\)$"):
            load_study(missing)


def test_study_list_one_line_per_study():
    from ncsim.cli import cli as main

    result = CliRunner().invoke(main, ["study", "list"])
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert len(lines) == len(shipped_studies())
    for path, line in zip(shipped_studies(), lines):
        assert line.startswith(path.stem)


# ----------------------------------------------------------------------------- run ids

def _ids(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return [d.run_id for d in load_study(path).runs()]


def _tiny(**swap: str) -> str:
    text = TEMPLATE.format(seeds=[0, 1], chunk=2, t_end=300.0, records=40, rtol=1e-5)
    for old, new in swap.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def test_run_id_is_what_the_run_computes(tmp_path):
    """chunk (batching), a default written out (solver, init_scale, reduction) or lambda
    written as lambda_w and lambda_h leave a simulated run's id alone; a parameter that
    changes the flow changes it, run by run."""
    base = _ids(tmp_path, _tiny())
    assert len(set(base)) == 2
    same = [
        _tiny(**{"chunk = 2": "chunk = 7"}),
        _tiny(**{"lambda = 1e-2": 'lambda = 1e-2\nsolver = "dopri5"\ninit_scale = 0.1\n'
                                  'reduction = "auto"\ndtype = "float64"'}),
        _tiny(**{"lambda = 1e-2": "lambda_w = 1e-2\nlambda_h = 0.01"}),
        _tiny(**{"t_end = 300.0": "t_end = 300"}),
    ]
    for text in same:
        assert _ids(tmp_path, text) == base
    other = [
        _tiny(**{"lambda = 1e-2": "lambda = 2e-2"}),
        _tiny(**{"rtol = 1e-05": "rtol = 1e-06"}),
        _tiny(**{"lambda = 1e-2": 'lambda = 1e-2\nsolver = "tsit5"'}),
    ]
    for text in other:
        assert set(_ids(tmp_path, text)).isdisjoint(base)
    seeds = _ids(tmp_path, _tiny(**{"seed = [0, 1]": "seed = [1, 2]"}))
    assert seeds[0] == base[1] and seeds[1] not in base


def test_intervention_and_training_ids(tmp_path):
    """An intervention is part of what a run computes (alpha 1 written out or not is the same);
    a trained run's id leaves out chunk and data_root."""
    from ncsim.study.spec import RunDesc

    base = {"classes": 3, "per_class": 4, "dim": 8, "t_end": 300.0, "lambda": 1e-2}
    plain = RunDesc("p", "simulated", base).run_id
    cut = RunDesc("p", "simulated", {**base, "intervene_time": 10.0}).run_id
    assert plain != cut
    assert cut == RunDesc("p", "simulated", {**base, "intervene_time": 10,
                                             "intervene_alpha": 1.0}).run_id
    assert cut != RunDesc("p", "simulated", {**base, "intervene_time": 10.0,
                                             "intervene_alpha": 0.5}).run_id
    assert RunDesc("q", "simulated", base).run_id != plain  # the part is part of it
    trained = {"dataset": "digits", "preset": "mlp", "seed": 0}
    assert RunDesc("p", "trained", trained).run_id == RunDesc(
        "p", "trained", {**trained, "chunk": 3, "data_root": "/data"}).run_id
    assert RunDesc("p", "trained", trained).run_id != RunDesc(
        "p", "trained", {**trained, "seed": 1}).run_id


def _decays(tmp_path: Path, text: str) -> list[tuple]:
    """(lambda param or None, lambda_w, lambda_h of the built spec) of every run."""
    from ncsim.study.spec import build

    path = tmp_path / "s.toml"
    path.write_text(text)
    out = []
    for desc in load_study(path).runs():
        reg = build(desc).reg
        out.append((desc.params.get("lambda"), reg.lambda_w, reg.lambda_h))
    return out


def test_lambda_beside_a_decay_at_one_level_is_refused(tmp_path):
    """lambda sets lambda_w and lambda_h; given beside one or both at one level (the part's
    grid or fixed values, or the [simulated] table) it would be overridden there while the
    run table showed it, so the study is refused, naming the place and the keys."""
    grid = _tiny(**{"seed = [0, 1]": "seed = [0]\nlambda = [1e-3]\nlambda_w = [1e-3, 1e-2]\n"
                                     "lambda_h = [1e-3]"})
    with pytest.raises(InputError, match=r"key 'parts\.ufm': sets lambda and lambda_h and "
                                         r"lambda_w, so lambda would be overridden"):
        load_study(_write(tmp_path, grid))
    one = _tiny(**{"seed = [0, 1]": "seed = [0]\nlambda = [1e-3]\nlambda_w = [1e-2]"})
    with pytest.raises(InputError, match=r"key 'parts\.ufm': sets lambda and lambda_w, so "
                                         r"lambda would be overridden by lambda_w"):
        load_study(_write(tmp_path, one))
    table = _tiny(**{"lambda = 1e-2": "lambda = 1e-2\nlambda_w = 1e-3\nlambda_h = 1e-3"})
    with pytest.raises(InputError, match=r"key 'simulated': sets lambda and lambda_h and lambda_w"):
        load_study(_write(tmp_path, table))


def test_a_part_decay_replaces_the_inherited_one_by_where_it_is_set(tmp_path):
    """[simulated] lambda = 1e-2 is inherited. A part's lambda_w and lambda_h replace it (and
    the run no longer lists it); a part's lambda_h alone keeps lambda_w = 1e-2 from it,
    written as lambda_w (the run lists no lambda it does not have); a part's lambda replaces
    inherited lambda_w and lambda_h."""
    both = _tiny(**{"seed = [0, 1]": "seed = [0]\nlambda_w = [2e-3]\nlambda_h = [3e-3]"})
    assert _decays(tmp_path, both) == [(None, 2e-3, 3e-3)]
    one = _tiny(**{"seed = [0, 1]": "seed = [0]\nlambda_h = [3e-3]"})
    assert _decays(tmp_path, one) == [(None, 1e-2, 3e-3)]
    table = _tiny(**{"lambda = 1e-2": "lambda_w = 1e-3\nlambda_h = 1e-3",
                     "seed = [0, 1]": "seed = [0]\nlambda = [5e-3]"})
    assert _decays(tmp_path, table) == [(5e-3, 5e-3, 5e-3)]


@pytest.mark.parametrize("name", ["", "../../esc", "a/b", ".hidden", "two words"])
def test_a_study_name_that_is_not_a_folder_name_is_refused(tmp_path, name):
    """The name is the default output folder (ncsim-out/<name>): an empty one would write into
    ncsim-out itself, '..' or '/' outside it; both, and names with spaces or a leading dot,
    are refused naming the key."""
    with pytest.raises(InputError, match=r"key 'name': .* is not a folder name"):
        load_study(_write(tmp_path, GOOD.replace('name = "tiny"', f'name = "{name}"')))
    assert load_study(_write(tmp_path, GOOD.replace('name = "tiny"', 'name = "wd-2.b_1"')))


def test_a_quick_override_of_one_decay_leaves_the_base_lambda_to_the_other(tmp_path):
    """The full study sets lambda (table and part grid); its quick variant overrides
    lambda_w alone (in [quick.simulated], and in a part's quick grid): the quick runs take
    lambda_w from the override and lambda_h from the base lambda, listing no lambda (before:
    lambda and lambda_w met in one table and the quick variant was refused). A quick lambda
    replaces base lambda_w and lambda_h."""
    table = _tiny(**{"seed = [0, 1]": "seed = [0]",
                     "[quick]\n": "[quick]\n[quick.simulated]\nlambda_w = 3e-3\n"})
    path = _write(tmp_path, table)
    (desc,) = load_study(path, quick=True).runs()
    from ncsim.study.spec import build

    reg = build(desc).reg
    assert (desc.params.get("lambda"), reg.lambda_w, reg.lambda_h) == (None, 3e-3, 1e-2)
    grid = _tiny(**{"seed = [0, 1]": "seed = [0]\nlambda = [1e-3, 2e-3]",
                    "[quick.parts.ufm.grid]\nseed = [0]": "[quick.parts.ufm.grid]\nseed = [0]\n"
                                                          "lambda_w = [5e-3]"})
    runs = load_study(_write(tmp_path, grid), quick=True).runs()
    assert sorted((build(d).reg.lambda_w, build(d).reg.lambda_h) for d in runs) == [
        (5e-3, 1e-3), (5e-3, 2e-3)]
    assert all("lambda" not in d.params for d in runs)
    both = _tiny(**{"lambda = 1e-2": "lambda_w = 1e-2\nlambda_h = 2e-2",
                    "[quick]\n": "[quick]\n[quick.simulated]\nlambda = 4e-3\n"})
    (desc,) = load_study(_write(tmp_path, both), quick=True).runs()
    assert (build(desc).reg.lambda_w, build(desc).reg.lambda_h) == (4e-3, 4e-3)
