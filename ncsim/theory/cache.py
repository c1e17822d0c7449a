"""A disk cache of the symbolic derivations, so that sympy derives them once per installation.

The derivations (``solve``, ``simplify``, ``integrate``) take 2-8 s of CPU in all, which every
process that asks for a closed form would otherwise pay again: each ``ncsim simulate`` call
with its theory columns, each study worker. :func:`derivation` keeps a derivation's result,
a dict of sympy expressions, as a pickle file named after the function and a key of

- the bytes of every source file of :mod:`ncsim.theory` (a changed derivation, or a changed
  symbol it builds on, is a new key), read once when this module is imported, i.e. the
  sources of the code the process runs (a key read at the first derivation would name the
  files on disk then: a long-lived process, such as a study worker, whose sources are edited
  or upgraded under it would file its old derivation under the new sources' key),
- the sympy version and the Python version (the pickle's classes).

The folder is ``$NCSIM_CACHE_DIR``, else ``$XDG_CACHE_HOME/ncsim``, else ``~/.cache/ncsim``;
``NCSIM_CACHE_DIR=""`` turns the disk cache off. The cache is best effort: a folder that
cannot be written, or a file that cannot be read back as such a dict (truncated, from
another program), means the derivation runs as without it (and rewrites an unreadable file).
Each file holds ``{"file": its own name, "value": the result}``: a file renamed or copied
under another name (another derivation's, another source key's) is a miss, not another
derivation's value served. Files are written whole (a temporary file renamed), so processes
that derive at once do not see each other's partial files.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import pickle
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sympy as sp

Derivation = Callable[[], dict[str, sp.Expr]]  # expressions and matrices of them
T = TypeVar("T")
REGISTERED: list[Derivation] = []  # every cached derivation, in the order of import


def cache_dir() -> Path | None:
    """The folder of the derivation cache, or None when ``NCSIM_CACHE_DIR`` is set empty or
    no folder can be found (no XDG_CACHE_HOME and no home directory: the cache is off)."""
    chosen = os.environ.get("NCSIM_CACHE_DIR")
    if chosen is not None:
        return Path(chosen).expanduser() if chosen else None
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = Path.home() / ".cache"
        except RuntimeError:  # no HOME and no passwd entry
            return None
    return Path(base) / "ncsim"


@functools.cache
def source_key() -> str:
    """Hex digest of the theory package's sources, sympy's version and Python's version."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    digest.update(f"sympy {sp.__version__} python {sys.version_info[:2]}".encode())
    return digest.hexdigest()[:20]


source_key()  # the key of the sources being imported, not of whatever is on disk later


def cache_file(func: Derivation) -> Path | None:
    """Where ``func``'s result is kept (None: the disk cache is off)."""
    folder = cache_dir()
    if folder is None:
        return None
    return folder / f"{func.__module__}.{func.__qualname__}-{source_key()}.pickle"


def _load(path: Path) -> Any:
    """The value kept in ``path``, or None when there is none to read back: no file, a damaged
    one, or one whose record names another file (renamed or copied here)."""
    try:
        with path.open("rb") as handle:
            record = pickle.load(handle)
    except Exception:  # missing, truncated or another program's file: a cache miss
        return None
    if isinstance(record, dict) and record.keys() == {"file", "value"} \
            and record["file"] == path.name:
        return record["value"]
    return None


def _read(path: Path) -> dict[str, sp.Expr] | None:
    """The dict of expressions in ``path``, or None when there is none to read back."""
    value = _load(path)
    if isinstance(value, dict) and all(isinstance(k, str)
                                       and isinstance(v, (sp.Basic, sp.MatrixBase))
                                       for k, v in value.items()):
        return value
    return None


def _write(path: Path, value: Any) -> None:
    """Keep ``value`` in ``path`` as ``{"file": path.name, "value": value}``, written whole (a
    temporary file renamed); errors are ignored."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                pickle.dump({"file": path.name, "value": value}, handle,
                            protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError:
        pass  # a folder that cannot be written: derive again next time


def derivation(func: Derivation) -> Derivation:
    """Cache ``func`` (no arguments, returning a dict of sympy expressions) in this process and
    on disk (:func:`cache_file`). Each call returns its own copy of the dict (the expressions
    are immutable), so a caller that edits it changes nothing for later callers."""

    @functools.cache
    def kept() -> dict[str, sp.Expr]:
        path = cache_file(func)
        value = _read(path) if path is not None else None
        if value is None:
            value = func()
            if path is not None:
                _write(path, value)
        return value

    @functools.wraps(func)
    def cached() -> dict[str, sp.Expr]:
        return dict(kept())

    cached.uncached = func  # the derivation itself, for tests and for checking a cache
    cached.cache_clear = kept.cache_clear
    REGISTERED.append(cached)
    return cached


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (one cache key for 10 and np.int64(10))."""
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value


@functools.cache
def _numeric_versions() -> str:
    """numpy's and scipy's versions: a numeric search (scipy's optimisers on numpy arrays)
    found under other versions is searched again."""
    import numpy
    import scipy

    return f"numpy {numpy.__version__} scipy {scipy.__version__}"


def numeric(result_type: type) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Cache a numeric function of plain arguments (numbers, strings) in this process and on
    disk, one file per argument tuple (``repr`` of the bound arguments and numpy's and scipy's
    versions, hashed) under the same source key as the derivations; a file that does not hold
    a ``result_type`` is a miss.

    For slow numeric searches that every process would otherwise repeat (e.g. the lower-rank
    check of deep CE heads, up to seconds per parameter point)."""

    def wrap(func: Callable[..., T]) -> Callable[..., T]:
        signature = inspect.signature(func)

        @functools.lru_cache(maxsize=4096)
        def by_key(key: tuple[tuple[str, Any], ...], spelled: str) -> T:
            # ``spelled`` = repr(key) keys the memory cache as the disk: 1, 1.0 and True (or
            # 0.0 and -0.0) are equal in ``key`` but are other arguments
            folder = cache_dir()
            path = None
            if folder is not None:
                digest = hashlib.sha256(repr((key, _numeric_versions())).encode()
                                        ).hexdigest()[:20]
                path = folder / (f"{func.__module__}.{func.__qualname__}-{source_key()}-"
                                 f"{digest}.pickle")
                value = _load(path)
                if isinstance(value, result_type):
                    return value
            value = func(**dict(key))
            if path is not None:
                _write(path, value)
            return value

        @functools.wraps(func)
        def cached(*args: Any, **kwargs: Any) -> T:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            key = tuple((k, _plain(v)) for k, v in bound.arguments.items())
            try:
                hash(key)
            except TypeError:  # a list or an array: not a key; the function judges it
                return func(**bound.arguments)
            return by_key(key, repr(key))

        cached.uncached = func
        cached.cache_clear = by_key.cache_clear
        return cached

    return wrap


def kept_files(folder: Path) -> list[Path]:
    """ncsim's files in the cache folder (derivations and numeric results, of any sources)."""
    return sorted(folder.glob("ncsim.*.pickle")) if folder.is_dir() else []


def temporary_files(folder: Path) -> list[Path]:
    """The temporaries of ncsim's writes in the cache folder (``.ncsim.*.pickle.XXXX``): left
    by a process killed between writing and renaming, or of a write under way."""
    return sorted(folder.glob(".ncsim.*.pickle.*")) if folder.is_dir() else []


def is_current(path: Path) -> bool:
    """Whether ``path`` was filed under the source key of the code running now."""
    return f"-{source_key()}" in path.name


def _same_expression(a: Any, b: Any) -> bool:
    """Two expressions (or matrices of them) equal as written, or with a difference that sympy
    simplifies to zero."""
    if isinstance(a, sp.MatrixBase) or isinstance(b, sp.MatrixBase):
        if not (isinstance(a, sp.MatrixBase) and isinstance(b, sp.MatrixBase)
                and a.shape == b.shape):
            return False
        return all(_same_expression(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) or sp.simplify(a - b) == 0


def verify(func: Derivation) -> str:
    """Derive ``func`` again and compare with its kept file; the file is then rewritten with
    the new derivation unless it was the same.

    Returns "same", "differs" (other keys, or an expression whose difference does not
    simplify to zero), "unreadable" (not a dict of expressions) or "missing" (no file; one is
    written). Raises InputError when the disk cache is off.
    """
    path = cache_file(func)
    if path is None:
        from ncsim.errors import InputError

        raise InputError("the derivation cache is off (NCSIM_CACHE_DIR is set empty); set it "
                         "to a folder, or unset it, to keep and check derivations")
    kept = _read(path) if path.exists() else None
    fresh = func.uncached()
    if kept is None:
        status = "unreadable" if path.exists() else "missing"
    elif kept.keys() == fresh.keys() and all(_same_expression(kept[k], fresh[k])
                                             for k in fresh):
        return "same"
    else:
        status = "differs"
    _write(path, fresh)
    func.cache_clear()
    return status


def verify_all() -> dict[str, str]:
    """:func:`verify` every registered derivation; ``{"module.name": status}`` in the order of
    registration (importing :mod:`ncsim.theory` registers the package's own)."""
    return {f"{f.__module__}.{f.__qualname__}": verify(f) for f in REGISTERED}
