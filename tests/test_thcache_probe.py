"""Mutation probe of the derivation cache and the compiled expressions: atomic writes, the
source key, the folder's precedence, matrix comparison, and compiled results' dtypes."""

from __future__ import annotations

import importlib.util
import itertools
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
import torch

from ncsim.theory import cache
from ncsim.theory import symbols as S
from ncsim.theory.compile import compile_expr

x = sp.Symbol("x", positive=True)
_COPIES = itertools.count()


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    """Derivations registered here stay out of the package's list."""
    monkeypatch.setattr(cache, "REGISTERED", list(cache.REGISTERED))


# ---------------------------------------------------------------- whole-file writes


def _failing_dump(seen):
    """A pickle.dump that writes part of a pickle, then fails as a full disk does."""

    def dump(value, handle, protocol=None):
        seen.append(value)
        handle.write(b"\x80partial")
        raise OSError(28, "No space left on device")

    return dump


def test_a_write_that_fails_midway_keeps_the_old_file_and_leaves_no_temporary(
        monkeypatch, tmp_path):
    """A disk that fills up during the dump: the kept file still holds its old value, no
    temporary file stays behind, and the error is swallowed (best effort)."""
    path = tmp_path / "ncsim.toy-key.pickle"
    old = {"root": sp.sqrt(2)}
    cache._write(path, old)
    seen = []
    monkeypatch.setattr(pickle, "dump", _failing_dump(seen))
    cache._write(path, {"root": sp.sqrt(3)})
    monkeypatch.undo()
    assert cache._read(path) == old
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert len(seen) == 1


def test_the_kept_file_is_replaced_only_once_written_whole(monkeypatch, tmp_path):
    """While the new value is being dumped, a reader of the kept file (another process) still
    sees the old, whole value; afterwards it sees the new one."""
    path = tmp_path / "ncsim.toy-key.pickle"
    cache._write(path, {"root": sp.sqrt(2)})
    real_dump = pickle.dump
    mid_write = []

    def dump(value, handle, protocol=None):
        real_dump(value, handle, protocol=protocol)
        handle.flush()
        mid_write.append(cache._read(path))

    monkeypatch.setattr(pickle, "dump", dump)
    cache._write(path, {"root": sp.sqrt(3)})
    monkeypatch.undo()
    assert mid_write == [{"root": sp.sqrt(2)}]
    assert cache._read(path) == {"root": sp.sqrt(3)}
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


# ---------------------------------------------------------------- the source key


def _load_copy(folder: Path):
    """Import a copy of cache.py that sits in ``folder`` (its sibling sources are folder's)."""
    spec = importlib.util.spec_from_file_location(f"_thcache_copy_{next(_COPIES)}",
                                                  folder / "cache.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def package_copy(tmp_path):
    """A folder with a copy of cache.py and one sibling source, a.py."""
    folder = tmp_path / "theory"
    folder.mkdir()
    shutil.copy(cache.__file__, folder / "cache.py")
    (folder / "a.py").write_text("value = 1\n")
    return folder


def test_source_key_covers_every_sibling_source_and_its_name(package_copy):
    """Editing a sibling .py file, or renaming it, gives a new key; a non-.py file beside
    them does not; the same sources give the same key."""
    first = _load_copy(package_copy).source_key()
    assert _load_copy(package_copy).source_key() == first
    (package_copy / "notes.txt").write_text("not a source")
    assert _load_copy(package_copy).source_key() == first
    (package_copy / "a.py").write_text("value = 2\n")
    edited = _load_copy(package_copy).source_key()
    assert edited != first
    (package_copy / "a.py").write_text("value = 1\n")
    (package_copy / "a.py").rename(package_copy / "b.py")
    assert _load_copy(package_copy).source_key() not in (first, edited)


def test_source_key_is_that_of_the_sources_at_import(package_copy):
    """A process whose sources are edited after import keeps the key of the code it runs:
    the key first asked for after an edit is the key of the sources as imported."""
    running = _load_copy(package_copy)
    (package_copy / "a.py").write_text("value = 2\n")
    key = running.source_key()
    (package_copy / "a.py").write_text("value = 1\n")
    assert key == _load_copy(package_copy).source_key()


def test_numeric_results_are_filed_under_the_source_key(monkeypatch, tmp_path):
    """A numeric cache file carries the current source key (so it counts as current, and a
    changed source makes it stale)."""
    monkeypatch.setenv("NCSIM_CACHE_DIR", str(tmp_path))

    @cache.numeric(float)
    def half(k):
        return k / 2

    assert half(3) == 1.5
    (path,) = tmp_path.glob("*.pickle")
    assert f"-{cache.source_key()}-" in path.name and cache.is_current(path)


# ---------------------------------------------------------------- the folder


def test_ncsim_cache_dir_wins_over_xdg_cache_home(monkeypatch, tmp_path):
    """NCSIM_CACHE_DIR, set or set empty, takes precedence over XDG_CACHE_HOME."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("NCSIM_CACHE_DIR", str(tmp_path / "mine"))
    assert cache.cache_dir() == tmp_path / "mine"
    monkeypatch.setenv("NCSIM_CACHE_DIR", "")
    assert cache.cache_dir() is None


# ---------------------------------------------------------------- verify


def test_verify_tells_a_reshaped_matrix_from_the_same_entries(monkeypatch, tmp_path):
    """A kept 1 x 4 matrix with the same entries, in order, as the derived 2 x 2 differs."""
    monkeypatch.setenv("NCSIM_CACHE_DIR", str(tmp_path))

    def square():
        return {"m": sp.Matrix([[x, 1], [0, x + 1]])}

    cached = cache.derivation(square)
    path = cache.cache_file(square)
    path.parent.mkdir(parents=True, exist_ok=True)
    cache._write(path, {"m": sp.Matrix([[x, 1, 0, x + 1]])})
    assert cache.verify(cached) == "differs"
    assert cache._read(path)["m"].shape == (2, 2)


def test_a_kept_matrix_reads_back_without_deriving(monkeypatch, tmp_path):
    """A derivation returning a (mutable) matrix is read back from its file, not derived
    again."""
    monkeypatch.setenv("NCSIM_CACHE_DIR", str(tmp_path))
    calls = []

    def mats():
        calls.append(1)
        return {"m": sp.Matrix([[x, 2]]), "e": x + 1}

    first = cache.derivation(mats)()
    again = cache.derivation(mats)()
    assert calls == [1] and again == first and again["m"].shape == (1, 2)


# ---------------------------------------------------------------- compiled expressions


def test_a_compiled_integer_constant_is_a_float_array():
    """A constant expression (2) broadcast to the arguments' shape is float, as for any other
    expression, also for integer numpy arguments."""
    two = compile_expr(sp.Integer(2), [S.K, S.n])
    got = two(np.array([3, 4]), 5)
    assert got.dtype == np.float64 and np.array_equal(got, [2.0, 2.0])


def test_compiled_expression_broadcasts_a_column_against_a_row():
    """K / n on a (2, 1) column and a (3,) row: the (2, 3) table of quotients, in argument
    order (K first), integer numpy inputs divided exactly."""
    f = compile_expr(S.K / S.n, [S.K, S.n])
    got = f(np.array([[2], [6]]), np.array([1, 2, 4]))
    np.testing.assert_array_equal(got, [[2.0, 1.0, 0.5], [6.0, 3.0, 1.5]])
    t = f(torch.tensor([[2], [6]]), torch.tensor([1, 2, 4]))
    assert t.dtype == torch.float64
    np.testing.assert_array_equal(t.numpy(), [[2.0, 1.0, 0.5], [6.0, 3.0, 1.5]])


def test_compiled_expression_passes_nan_and_inf_through():
    """NaN in, NaN out (no silent replacement); log of +inf is +inf; elementwise."""
    f = compile_expr(sp.log(S.n) + S.K, [S.K, S.n])
    got = f(np.array([1.0, np.nan, 0.0]), np.array([1.0, 1.0, np.inf]))
    assert got[0] == 1.0 and np.isnan(got[1]) and got[2] == np.inf
    t = f(torch.tensor([1.0, float("nan"), 0.0]), torch.tensor([1.0, 1.0, float("inf")]))
    assert t[0].item() == 1.0 and torch.isnan(t[1]) and t[2].item() == float("inf")


def test_a_tensor_after_a_python_number_takes_the_torch_path():
    """The torch path is taken when any argument, not only the first, is a tensor: K / n at
    K = 3 (a python float), n = [2, 4] (an integer tensor) is the float64 tensor [1.5, 0.75],
    and broadcast(0.01, int tensor) gives float64 tensors (0.01 not truncated)."""
    from ncsim.theory._backend import _Torch, broadcast, namespace

    f = compile_expr(S.K / S.n, [S.K, S.n])
    got = f(3.0, torch.tensor([2, 4]))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    assert torch.equal(got, torch.tensor([1.5, 0.75], dtype=torch.float64))
    assert namespace(0.01, torch.tensor([3])) is _Torch
    lam, k = broadcast(0.01, torch.tensor([3, 4]))
    assert isinstance(lam, torch.Tensor) and lam.dtype == k.dtype == torch.float64
    assert torch.equal(lam, torch.tensor([0.01, 0.01], dtype=torch.float64))
