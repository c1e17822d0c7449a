"""Second mutation probe of the theory cache: foreign files, verify's statuses and rewrites,
empty derivations, numeric file names and result types, and numeric keys of equal numbers."""

from __future__ import annotations

import re

import pytest
import sympy as sp

from ncsim.errors import InputError
from ncsim.theory import cache

x = sp.Symbol("x", positive=True)


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    """Derivations registered here stay out of the package's list."""
    monkeypatch.setattr(cache, "REGISTERED", list(cache.REGISTERED))


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A cache folder of this test (never the user's)."""
    monkeypatch.setenv("NCSIM_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    return tmp_path / "cache"


def _toy(calls):
    def toy():
        calls.append(1)
        return {"root": sp.sqrt(2), "log": sp.log(x) / 3}

    return toy


# ---------------------------------------------------------------- reading kept files


def test_a_dict_with_one_non_expression_value_is_a_miss(folder):
    """A kept dict whose values are expressions but for one float is not read back: derived."""
    calls = []
    toy = _toy(calls)
    path = cache.cache_file(toy)
    cache._write(path, {"root": sp.sqrt(3), "log": 0.5})
    assert cache._read(path) is None
    assert cache.derivation(toy)() == {"root": sp.sqrt(2), "log": sp.log(x) / 3}
    assert calls == [1] and cache._read(path)["log"] == sp.log(x) / 3


def test_a_value_read_back_is_not_written_again(folder, monkeypatch):
    """A derivation read from its file neither derives nor rewrites the file."""
    calls = []
    toy = _toy(calls)
    cache.derivation(toy)()
    writes = []
    monkeypatch.setattr(cache, "_write", lambda path, value: writes.append(path))
    assert cache.derivation(toy)()["root"] == sp.sqrt(2)
    assert calls == [1] and writes == []


def test_an_empty_derivation_is_derived_once_and_read_back(folder):
    """A derivation returning {} runs once: its file ({}) is a hit for a new process."""
    calls = []

    def empty():
        calls.append(1)
        return {}

    assert cache.derivation(empty)() == {}
    assert cache._read(cache.cache_file(empty)) == {}
    assert cache.derivation(empty)() == {} and calls == [1]


# ---------------------------------------------------------------- verify


def test_verify_finds_a_kept_file_with_an_extra_key_differs_and_rewrites_it(folder):
    """A kept dict with the derived keys plus another one differs; the file is replaced."""
    cached = cache.derivation(_toy([]))
    path = cache.cache_file(cached.uncached)
    cache._write(path, {"root": sp.sqrt(2), "log": sp.log(x) / 3, "old": sp.Integer(1)})
    assert cache.verify(cached) == "differs"
    assert cache._read(path) == {"root": sp.sqrt(2), "log": sp.log(x) / 3}


def test_verify_leaves_a_file_that_is_the_same_as_written(folder):
    """"same" (an equal expression written otherwise) keeps the kept file's bytes untouched."""
    cached = cache.derivation(_toy([]))
    path = cache.cache_file(cached.uncached)
    other_form = sp.log(x) / 3 + sp.sin(x) ** 2 + sp.cos(x) ** 2 - 1
    cache._write(path, {"root": sp.sqrt(2), "log": other_form})
    content = path.read_bytes()
    assert cache.verify(cached) == "same"
    assert path.read_bytes() == content


def test_verify_calls_a_dict_of_non_expressions_unreadable(folder):
    """A kept dict with the right keys but float values is "unreadable" (not "differs"), and
    is replaced by the derivation."""
    cached = cache.derivation(_toy([]))
    path = cache.cache_file(cached.uncached)
    cache._write(path, {"root": 1.4142135623730951, "log": 0.0})
    assert cache.verify(cached) == "unreadable"
    assert cache._read(path) == {"root": sp.sqrt(2), "log": sp.log(x) / 3}


def test_verify_with_the_cache_off_gives_the_whole_message(monkeypatch):
    """The InputError of verify with the cache off names the setting and the two remedies."""
    monkeypatch.setenv("NCSIM_CACHE_DIR", "")
    with pytest.raises(InputError) as caught:
        cache.verify(cache.derivation(_toy([])))
    assert str(caught.value) == ("the derivation cache is off (NCSIM_CACHE_DIR is set empty); "
                                 "set it to a folder, or unset it, to keep and check "
                                 "derivations")


# ---------------------------------------------------------------- numeric results


def test_numeric_file_name_is_module_name_source_key_and_a_20_digit_digest(folder):
    """One numeric result file: <module>.<qualname>-<source key>-<20 hex digits>.pickle."""
    @cache.numeric(float)
    def half(k):
        return k / 2

    assert half(3) == 1.5
    (path,) = folder.iterdir()
    prefix = re.escape(f"{__name__}.{half.__qualname__}-{cache.source_key()}-")
    assert re.fullmatch(prefix + r"[0-9a-f]{20}\.pickle", path.name), path.name


def test_numeric_value_not_of_the_result_type_is_returned_as_is_and_not_reused(folder):
    """A function returning an int where float is declared: the int is returned unchanged,
    and its file, not holding a float, is a miss for a new process (the function runs)."""
    calls = []

    @cache.numeric(float)
    def seven(k):
        calls.append(k)
        return 7

    got = seven(1)
    assert got == 7 and type(got) is int
    seven.cache_clear()
    assert type(seven(1)) is int and calls == [1, 1]


def test_numeric_keys_tell_equal_numbers_of_other_types_apart(folder):
    """f(1), f(1.0), f(True), f(0.0), f(-0.0) each give the uncached function's own value."""
    @cache.numeric(str)
    def kind(v):
        return repr(v)

    for value in (1, 1.0, True, 0.0, -0.0):
        assert kind(value) == repr(value), value


def test_numeric_disk_keys_tell_equal_numbers_of_other_types_apart(folder):
    """On disk (a new process each call) 1, 1.0, True, 0.0 and -0.0 are five keys, and each
    reads back its own value."""
    @cache.numeric(str)
    def kind(v):
        return repr(v)

    values = (1, 1.0, True, 0.0, -0.0)
    for value in values:
        kind.cache_clear()
        assert kind(value) == repr(value), value
    assert len(list(folder.iterdir())) == len(values)
    for value in values:
        kind.cache_clear()
        assert kind(value) == repr(value), value
