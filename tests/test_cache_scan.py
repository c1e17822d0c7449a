"""Odd states of the derivation cache: damaged, mislabelled and interrupted files, concurrent
builders, odd folders, and read-back values bit-identical to a fresh derivation."""

from __future__ import annotations

import os
import pickle
import pwd
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from cli_helpers import invoke

from ncsim.errors import InputError
from ncsim.theory import cache, lower_rank_check, ufm
from ncsim.theory import symbols as S
from ncsim.theory.cache import cache_file, derivation
from ncsim.theory.compile import compile_expr

ROOT = Path(__file__).resolve().parents[1]
x = sp.Symbol("x", positive=True)


def toy_a() -> dict[str, sp.Expr]:
    """A toy derivation."""
    return {"root": sp.sqrt(2) * x, "log": sp.log(x) / 3}


def toy_b() -> dict[str, sp.Expr]:
    """Another toy derivation, with other keys."""
    return {"square": x ** 2}


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    """Toy derivations registered here stay out of the package's list."""
    monkeypatch.setattr(cache, "REGISTERED", list(cache.REGISTERED))


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("NCSIM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _env(folder: Path) -> dict[str, str]:
    return {**os.environ, "NCSIM_CACHE_DIR": str(folder), "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1"}


# a toy derivation run in a subprocess; the sleep holds both builders inside the miss at once
TOY_SCRIPT = textwrap.dedent("""
    import os, sys, time
    import sympy as sp
    from ncsim.theory.cache import derivation
    x = sp.Symbol("x", positive=True)
    if sys.argv[1] == "stall":  # stop between writing the temporary and renaming it
        real = os.replace
        def stalled(a, b):
            print("WRITTEN", flush=True)
            time.sleep(60)
            real(a, b)
        os.replace = stalled
    def toy():
        time.sleep(0.5)
        return {"root": sp.sqrt(2) * x, "log": sp.log(x) / 3}
    toy.__module__ = "ncsim.scan"
    toy.__qualname__ = "toy"
    print(sp.srepr(derivation(toy)()["root"]), flush=True)
""")


def test_two_processes_building_at_once_both_succeed_and_leave_one_whole_file(tmp_path):
    """Two builders against an empty folder: both give the value, one readable file remains."""
    script = tmp_path / "toy.py"
    script.write_text(TOY_SCRIPT)
    folder = tmp_path / "cache"
    runs = [subprocess.Popen([sys.executable, str(script), "go"], env=_env(folder),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outs = [r.communicate(timeout=120) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], [o[1][-500:] for o in outs]
    assert {o[0].strip() for o in outs} == {sp.srepr(sp.sqrt(2) * x)}
    files = sorted(p.name for p in folder.iterdir())
    assert len(files) == 1 and not files[0].startswith(".")
    assert cache._read(folder / files[0]) == toy_a()


def test_a_builder_killed_before_its_rename_leaves_no_file_under_the_final_name(tmp_path):
    """A kill between writing and renaming: no partial file is read; the next run derives."""
    script = tmp_path / "toy.py"
    script.write_text(TOY_SCRIPT)
    folder = tmp_path / "cache"
    run = subprocess.Popen([sys.executable, str(script), "stall"], env=_env(folder),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert run.stdout.readline().strip() == "WRITTEN"
    finally:
        run.kill()
        run.communicate(timeout=60)
    assert all(p.name.startswith(".") for p in folder.iterdir())  # only the temporary
    again = subprocess.run([sys.executable, str(script), "go"], env=_env(folder),
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.strip() == sp.srepr(sp.sqrt(2) * x)
    kept = [p for p in folder.iterdir() if not p.name.startswith(".")]
    assert len(kept) == 1 and cache._read(kept[0]) == toy_a()


def test_cache_clear_removes_the_temporary_of_an_interrupted_write(folder):
    """`ncsim theory cache --clear` also removes ncsim's orphaned temporaries, not another
    program's hidden files."""
    folder.mkdir()
    orphan = folder / f".ncsim.theory.ufm.derive_mse-{cache.source_key()}.pickle.ab12cd34"
    orphan.write_bytes(b"\x80\x05half a pickle")
    foreign = folder / ".other.pickle.ab12cd34"
    foreign.write_bytes(b"someone else's")
    result = invoke(["theory", "cache", "--clear"], env={"NCSIM_CACHE_DIR": str(folder)})
    assert result.exit_code == 0
    assert result.stdout == (f"removed 0 file(s) and 1 temporary file(s) of interrupted "
                             f"writes from {folder}\n")
    assert not orphan.exists() and foreign.exists()


@pytest.mark.parametrize("content", [b"", b"\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\x7f",
                                     b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x06"
                                     b"nomodx\x8c\x01A\x93."],
                         ids=["empty", "huge-length", "unknown-module"])
def test_damaged_files_are_a_miss_and_are_rewritten(folder, content):
    """An empty file, a 2^63-byte length claim and a pickle of a missing module: a miss."""
    func = derivation(toy_a)
    path = cache_file(func)
    folder.mkdir()
    path.write_bytes(content)
    assert func() == toy_a()
    assert cache._read(path) == toy_a()


def test_a_kept_file_that_is_a_folder_is_a_miss(folder):
    """A folder under the file's name: the derivation runs, the folder is left alone."""
    func = derivation(toy_a)
    cache_file(func).mkdir(parents=True)
    assert func() == toy_a()
    assert cache_file(func).is_dir() and list(folder.iterdir()) == [cache_file(func)]


@pytest.mark.parametrize("name", ["ünï cödé ✓ 日本", "bad\udcff\udcfename"],
                         ids=["unicode", "undecodable-bytes"])
def test_a_folder_with_unicode_or_undecodable_bytes_is_written_and_read_back(
        tmp_path, monkeypatch, name):
    """Non-ASCII folders (and bytes that are not UTF-8) hold the cache as any other."""
    target = tmp_path / name
    monkeypatch.setenv("NCSIM_CACHE_DIR", str(target))
    func = derivation(toy_a)
    assert func() == toy_a()
    assert cache._read(cache_file(func)) == toy_a()
    assert cache.kept_files(target) == []  # kept_files lists ncsim.* files only
    fresh = derivation(toy_a)
    assert fresh() == toy_a()


def test_cache_verify_with_a_file_for_a_folder_exits_cleanly(tmp_path, monkeypatch):
    """`cache --verify` where the folder is a file: no traceback, every derivation listed."""
    monkeypatch.setattr(cache, "REGISTERED", [])
    derivation(toy_a)
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    result = invoke(["theory", "cache", "--verify"], env={"NCSIM_CACHE_DIR": str(blocker)})
    assert result.exit_code == 0, result.output
    assert result.output.count(": missing") == 1 and "toy_a: missing" in result.output
    assert blocker.read_text() == "not a folder"


def test_a_file_of_another_derivation_is_not_served(folder):
    """toy_a's kept file copied under toy_b's name is a miss, not toy_a's value; so is a bare
    dict (no record) there."""
    func, other = derivation(toy_b), derivation(toy_a)
    assert other() == toy_a()  # toy_a's file, written by the cache
    cache_file(func).write_bytes(cache_file(other).read_bytes())
    assert func() == toy_b()
    func.cache_clear()
    cache_file(func).write_bytes(pickle.dumps(toy_a()))
    assert func() == toy_b()


def test_the_mse_derivation_kept_under_a_ce_file_gives_no_wrong_equilibrium(tmp_path):
    """MSE, K=3, n=5, lambda=1e-3: sigma = sqrt(n) - K n lambda even with ufm.derive_ce's
    kept file copied to ufm.derive_mse's name (served, it gives 13.64)."""
    folder = tmp_path / "cache"
    folder.mkdir()
    ce_name = cache_file(ufm.derive_ce).name
    cache._write(folder / ce_name, ufm.derive_ce())
    (folder / cache_file(ufm.derive_mse).name).write_bytes((folder / ce_name).read_bytes())
    code = ("from ncsim.theory import equilibrium\n"
            "print(repr(float(equilibrium('mse', 'none', 3, 5, 1e-3, 1e-3).sigma)))")
    run = subprocess.run([sys.executable, "-c", code], env=_env(folder), capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-500:]
    assert float(run.stdout) == pytest.approx(np.sqrt(5) - 3 * 5 * 1e-3, rel=1e-12)


def test_a_kept_dict_lacking_a_key_of_the_derivation_is_a_miss(folder):
    """toy_a's file holding a bare dict (no record, as from another writer) with one of its
    two keys dropped: the derivation runs again."""
    func = derivation(toy_a)
    folder.mkdir()
    cache_file(func).write_bytes(pickle.dumps({"root": sp.sqrt(2) * x}))
    assert func()["log"] == sp.log(x) / 3


def test_no_home_directory_turns_the_disk_cache_off_instead_of_raising(monkeypatch):
    """HOME unset, no passwd entry, no cache variables: the derivation still runs."""
    for name in ("HOME", "XDG_CACHE_HOME", "NCSIM_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)

    def no_entry(uid):
        raise KeyError(uid)

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    assert derivation(toy_a)() == toy_a()


@pytest.mark.parametrize("args", [(4, 5, [0.1], 2), (4, 5, np.array([0.1, 0.2]), 2),
                                  (4, 5, 0.1, [2])], ids=["list-Lam", "array-Lam", "list-depth"])
def test_lower_rank_check_refuses_an_unhashable_argument_with_input_error(folder, args):
    """lower_rank_check(K, n, [0.1], depth) raises InputError, as its uncached form does."""
    with pytest.raises(InputError):
        lower_rank_check.uncached(*args)
    with pytest.raises(InputError):
        lower_rank_check(*args)


def test_a_read_back_derivation_evaluates_bit_identically_to_a_fresh_one(folder):
    """ufm.derive_mse's sigma_star compiled from the kept file and from sympy: same bits."""
    path = cache_file(ufm.derive_mse)
    folder.mkdir()
    fresh = ufm.derive_mse()  # the session's copy (derived once per session)
    cache._write(path, fresh)
    kept = cache._read(path)
    K, n, lam, c = np.meshgrid([2.0, 3, 10, 1000], [1.0, 7, 1e4], np.geomspace(1e-9, 10, 9),
                               [0.25, 1.0], indexing="ij")
    for key in ("sigma_star", "Lambda_crit"):
        a = compile_expr(kept[key], [S.K, S.n, S.Lam, S.c])(K, n, lam, c)
        b = compile_expr(fresh[key], [S.K, S.n, S.Lam, S.c])(K, n, lam, c)
        assert np.array_equal(a, b, equal_nan=True) and a.tobytes() == b.tobytes()
