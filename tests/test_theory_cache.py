"""The disk cache of the symbolic derivations: exact round trip, misses, and switching it off."""

from __future__ import annotations

import pickle

import pytest
import sympy as sp

from ncsim.theory import cache, deep, dynamics, ufm
from ncsim.theory.cache import cache_file, derivation

x = sp.Symbol("x", positive=True)
CALLS: list[str] = []


def toy() -> dict[str, sp.Expr]:
    """A derivation that counts its calls."""
    CALLS.append("toy")
    return {"root": sp.solve(sp.Eq(x ** 2, 2), x)[0], "log": sp.log(x) / 3}


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("NCSIM_CACHE_DIR", str(tmp_path / "cache"))
    CALLS.clear()
    return tmp_path / "cache"


def test_a_derivation_runs_once_and_a_new_process_reads_it_back(folder):
    """The first call derives and writes the file; a fresh wrapper (as in a new process)
    reads the same expressions without deriving; the process keeps its one value (each call
    a copy of it, with the same expression objects)."""
    first = derivation(toy)
    value = first()
    assert CALLS == ["toy"] and first() == value and first()["root"] is value["root"]
    path = cache_file(toy)
    assert path.parent == folder and path.is_file()
    assert path.name == f"{__name__}.toy-{cache.source_key()}.pickle"
    again = derivation(toy)()
    assert CALLS == ["toy"]
    assert again == value and again["root"] == sp.sqrt(2)
    assert [p.name for p in folder.iterdir()] == [path.name]  # no temporary file left


@pytest.mark.parametrize("content", [b"", b"not a pickle", pickle.dumps([1, 2]),
                                     pickle.dumps({"a": 1.0}), pickle.dumps({1: sp.Integer(1)})])
def test_an_unreadable_or_foreign_file_is_a_miss_and_is_rewritten(folder, content):
    """A truncated file, another program's pickle, a dict of something else: the derivation
    runs and its result replaces the file."""
    path = cache_file(toy)
    folder.mkdir()
    path.write_bytes(content)
    value = derivation(toy)()
    assert CALLS == ["toy"] and value["root"] == sp.sqrt(2)
    assert pickle.loads(path.read_bytes()) == value


def test_an_empty_setting_turns_the_disk_cache_off(monkeypatch, tmp_path):
    monkeypatch.setenv("NCSIM_CACHE_DIR", "")
    monkeypatch.chdir(tmp_path)
    CALLS.clear()
    assert cache.cache_dir() is None and cache_file(toy) is None
    derivation(toy)()
    derivation(toy)()
    assert CALLS == ["toy", "toy"] and list(tmp_path.iterdir()) == []


def test_a_folder_that_cannot_be_written_still_derives(tmp_path, monkeypatch):
    """The cache folder's place holds a file: no cache, no error, the derivation's value."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the folder would go")
    monkeypatch.setenv("NCSIM_CACHE_DIR", str(blocker / "cache"))
    CALLS.clear()
    assert derivation(toy)()["log"] == sp.log(x) / 3
    assert CALLS == ["toy"] and blocker.read_text() == "a file where the folder would go"


def test_default_folder_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv("NCSIM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / "ncsim"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "ncsim"


@pytest.mark.parametrize("func", [dynamics.derive, ufm.derive_mse, ufm.derive_ce,
                                  ufm.derive_reg_bias_mean_mode, deep.derive_mse,
                                  deep.derive_ce])
def test_every_derivation_reads_back_exactly(func):
    """Each of the package's derivations, in the test session's cache: the file holds the
    same expressions, structurally equal (so compiled alike), with the symbols' assumptions."""
    value = func()
    path = cache_file(func.uncached)
    assert path is not None and path.is_file()
    back = cache._read(path)
    assert back is not None and back.keys() == value.keys()
    for key, expr in value.items():
        assert back[key] == expr, key
        assert ({s.name: s.assumptions0 for s in back[key].free_symbols}
                == {s.name: s.assumptions0 for s in expr.free_symbols}), key


def test_lower_rank_check_is_kept_on_disk_per_argument_tuple(monkeypatch, tmp_path):
    """The lower-rank search (seconds per point at K = 10) runs once per installation: a
    second process (here: the in-process cache cleared) reads the file back, and numpy
    scalars share the key of the numbers they hold."""
    import numpy as np

    import ncsim.theory.lowrank as lowrank

    monkeypatch.setenv("NCSIM_CACHE_DIR", str(tmp_path))
    lowrank.lower_rank_check.cache_clear()
    first = lowrank.lower_rank_check(4, 3, 0.05, 2)
    files = list(tmp_path.glob("ncsim.theory.lowrank.lower_rank_check-*.pickle"))
    assert len(files) == 1
    lowrank.lower_rank_check.cache_clear()

    def no_search(*args, **kwargs):
        raise AssertionError("searched again")

    monkeypatch.setattr(lowrank, "minimize", no_search)
    assert lowrank.lower_rank_check(np.int64(4), 3, np.float64(0.05), 2) == first
    with pytest.raises(AssertionError, match="searched again"):
        lowrank.lower_rank_check(4, 3, 0.05, 2, restarts=5)  # another key
    lowrank.lower_rank_check.cache_clear()
    # another numpy or scipy: the search (scipy's L-BFGS) runs again instead of reading
    monkeypatch.setattr(cache, "_numeric_versions", lambda: "numpy 0 scipy 0")
    with pytest.raises(AssertionError, match="searched again"):
        lowrank.lower_rank_check(4, 3, 0.05, 2)
    lowrank.lower_rank_check.cache_clear()


def test_a_caller_editing_a_derivation_changes_nothing_for_the_next():
    """Each call of a cached derivation returns its own dict: deleting or replacing an entry
    in one leaves the next call's (the same expressions) intact."""
    from ncsim.theory.deep import derive_mse

    first = derive_mse()
    want = dict(first)
    first["tau_glob"] = sp.Integer(7)
    del first["Lambda_glob"]
    again = derive_mse()
    assert again == want and again is not first
