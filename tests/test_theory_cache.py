"""The disk cache of the symbolic derivations: exact round trip, misses, and switching it off."""

from __future__ import annotations

import pickle

import pytest
import sympy as sp
from cli_helpers import error_line, invoke

from ncsim.errors import InputError
from ncsim.theory import cache, deep, dynamics, ufm
from ncsim.theory.cache import cache_file, derivation

x = sp.Symbol("x", positive=True)
CALLS: list[str] = []


def toy() -> dict[str, sp.Expr]:
    """A derivation that counts its calls."""
    CALLS.append("toy")
    return {"root": sp.solve(sp.Eq(x ** 2, 2), x)[0], "log": sp.log(x) / 3}


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    """The derivations registered here (toy ones) stay out of the package's list."""
    monkeypatch.setattr(cache, "REGISTERED", list(cache.REGISTERED))
    return cache.REGISTERED


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


def _record(name: str, value: object) -> bytes:
    """A kept file's bytes: the record of ``value`` filed as ``name``."""
    return pickle.dumps({"file": name, "value": value})


@pytest.mark.parametrize("content", [
    b"", b"not a pickle", pickle.dumps([1, 2]), pickle.dumps({"a": 1.0}),
    pickle.dumps({"root": sp.sqrt(2), "log": sp.log(x) / 3}),  # a bare dict, not a record
    "record", {"a": 1.0}, {1: sp.Integer(1)}, [1, 2]],
    ids=["empty", "text", "list", "float-dict", "bare-dict", "record-of-another-file",
         "record-float-dict", "record-int-key", "record-list"])
def test_an_unreadable_or_foreign_file_is_a_miss_and_is_rewritten(folder, content):
    """A truncated file, another program's pickle, a record filed under another name, a
    record of something else: the derivation runs and its result replaces the file."""
    path = cache_file(toy)
    folder.mkdir()
    if content == "record":  # toy's true value, filed under another name
        content = _record(path.name.replace("toy", "other"),
                          {"root": sp.sqrt(2), "log": sp.log(x) / 3})
    elif not isinstance(content, bytes):
        content = _record(path.name, content)
    path.write_bytes(content)
    value = derivation(toy)()
    assert CALLS == ["toy"] and value["root"] == sp.sqrt(2)
    assert cache._load(path) == value


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
    path = cache_file(func.uncached)
    if not path.is_file():  # first derived in this process under another test's folder
        func.cache_clear()
    value = func()
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


# ------------------------------------------------------------------ checking the kept files


def test_the_package_registers_its_six_derivations():
    """Importing ncsim.theory registers every cached derivation once, by module and name."""
    import ncsim.theory  # noqa: F401

    names = sorted(f"{f.__module__}.{f.__qualname__}" for f in cache.REGISTERED)
    assert names == ["ncsim.theory.deep.derive_ce", "ncsim.theory.deep.derive_mse",
                     "ncsim.theory.dynamics.derive", "ncsim.theory.ufm.derive_ce",
                     "ncsim.theory.ufm.derive_mse", "ncsim.theory.ufm.derive_reg_bias_mean_mode"]


def test_verify_finds_a_missing_a_same_an_altered_and_an_unreadable_file(folder):
    """verify: no file -> "missing" (and written); then "same"; a file holding another value
    -> "differs" and replaced by the derivation (the process's kept value with it); garbage
    -> "unreadable" and replaced; an equal expression written otherwise -> "same"."""
    cached = derivation(toy)
    path = cache_file(toy)
    assert cache.verify(cached) == "missing" and cache._read(path) == toy()
    assert cache.verify(cached) == "same"
    cached()  # the process keeps the file's value
    cache._write(path, {"root": sp.sqrt(3), "log": sp.log(x) / 3})
    cached.cache_clear()
    assert cached()["root"] == sp.sqrt(3)  # the altered file is trusted when read
    assert cache.verify(cached) == "differs"
    assert cache._read(path)["root"] == sp.sqrt(2) and cached()["root"] == sp.sqrt(2)
    cache._write(path, {"root": sp.sqrt(2)})  # a key missing
    assert cache.verify(cached) == "differs" and cache._read(path).keys() == {"root", "log"}
    path.write_bytes(b"garbage")
    assert cache.verify(cached) == "unreadable" and cache._read(path) == toy()
    other_form = sp.log(x) / 3 + sp.sin(x) ** 2 + sp.cos(x) ** 2 - 1
    assert other_form != sp.log(x) / 3  # not equal as written
    cache._write(path, {"root": sp.sqrt(2), "log": other_form})
    assert cache.verify(cached) == "same"


def test_verify_compares_matrices_entry_by_entry(folder):
    """Matrices are the same when every entry simplifies to the same; another shape differs."""
    def mats():
        return {"m": sp.Matrix([[x, 1], [0, x * (x + 1)]])}

    cached = derivation(mats)
    path = cache_file(mats)
    assert cache.verify(cached) == "missing"
    cache._write(path, {"m": sp.Matrix([[x, 1], [0, x ** 2 + x]])})
    assert cache.verify(cached) == "same"
    cache._write(path, {"m": sp.Matrix([[x, 1], [0, x ** 3]])})
    assert cache.verify(cached) == "differs"
    cache._write(path, {"m": sp.Matrix([[x, 1]])})
    assert cache.verify(cached) == "differs"
    cache._write(path, {"m": x})
    assert cache.verify(cached) == "differs"


def test_verify_refuses_when_the_cache_is_off(monkeypatch):
    monkeypatch.setenv("NCSIM_CACHE_DIR", "")
    with pytest.raises(InputError, match="the derivation cache is off"):
        cache.verify(derivation(toy))


def _only_toy(registry):
    """The toy derivation filed as ncsim's own (ncsim.toy.toy), alone in the registry."""
    def named():
        return toy()

    named.__module__, named.__qualname__ = "ncsim.toy", "toy"
    registry.clear()
    return derivation(named)


def test_cache_command_counts_and_verifies_and_clears(folder, registry):
    """`ncsim theory cache` names the folder and key and counts the files of these and of
    other sources; --verify prints one status per derivation and exits 1 when one differed;
    --clear removes ncsim's files only."""
    named = _only_toy(registry)
    folder.mkdir()
    (folder / "ncsim.theory.ufm.derive_ce-0123456789abcdef0123.pickle").write_bytes(b"old")
    (folder / "notes.txt").write_text("someone else's")
    shown = invoke(["theory", "cache"])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines() == [
        f"folder: {folder}", f"source key: {cache.source_key()}",
        "files for these sources: 0; for other sources: 1 (--clear removes all)"]
    first = invoke(["theory", "cache", "--verify"])
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines()[-1] == "ncsim.toy.toy: missing"
    cache._write(cache_file(named), {"root": sp.Integer(1), "log": sp.log(x) / 3})
    altered = invoke(["theory", "cache", "--verify"])
    assert altered.exit_code == 1
    assert altered.stdout.splitlines()[2:] == [
        "files for these sources: 1; for other sources: 1 (--clear removes all)",
        "ncsim.toy.toy: differs"]
    assert invoke(["theory", "cache", "--verify"]).exit_code == 0
    cleared = invoke(["theory", "cache", "--clear"])
    assert cleared.exit_code == 0 and cleared.stdout == f"removed 2 file(s) from {folder}\n"
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_cache_command_when_off_or_asked_both(monkeypatch, folder):
    """With the cache off the command says so, and --verify or --clear is an error; --verify
    with --clear is refused."""
    both = invoke(["theory", "cache", "--verify", "--clear"])
    assert error_line(both) == ("Error: --verify and --clear exclude each other; run one, "
                                "then the other")
    monkeypatch.setenv("NCSIM_CACHE_DIR", "")
    off = invoke(["theory", "cache"])
    assert off.exit_code == 0 and off.stdout == "cache: off (NCSIM_CACHE_DIR is set empty)\n"
    for flag in ("--verify", "--clear"):
        assert error_line(invoke(["theory", "cache", flag])) == (
            "Error: the derivation cache is off; unset NCSIM_CACHE_DIR or set it to a folder "
            "to keep derivations")
