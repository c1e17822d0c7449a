"""Probe tests for the infrastructure modules: the BLAS-name check of ncsim.products, the
settings ncsim.heap reports (with a fake mallopt) and ncsim.threads.set_threads's BLAS bound."""

from __future__ import annotations

import pytest
import torch

from ncsim import heap, products


@pytest.mark.parametrize("name, expected", [
    ("scipy-openblas", True), ("OpenBLAS", True), ("MKL", True), ("mkl-rt", True),
    ("Accelerate", True), ("blis", True), ("armpl", True), ("blas", False), ("", False),
    ("cblas", False),
])
def test_optimised_blas_names_ignore_case(name, expected):
    """optimised() matches the BLAS names case-insensitively and refuses the reference BLAS."""
    assert products.optimised(name) is expected


def _fake_mallopt(trim_ok: bool, max_mmap: int):
    """A mallopt that records its calls, accepts a trim threshold iff ``trim_ok`` and an mmap
    threshold up to ``max_mmap`` bytes."""
    calls = []

    def mallopt(param, value):
        calls.append((param, value))
        if param == heap._M_TRIM_THRESHOLD:
            return int(trim_ok)
        return int(value <= max_mmap)

    return mallopt, calls


def test_keep_freed_memory_reports_a_refused_trim_threshold(monkeypatch):
    """A refused trim threshold makes keep_freed_memory return False (the mmap one still set)."""
    mallopt, calls = _fake_mallopt(trim_ok=False, max_mmap=2**31)
    monkeypatch.setattr(heap, "_mallopt", lambda: mallopt)
    monkeypatch.setattr(heap, "_taken_mmap_threshold", 0)
    assert heap.keep_freed_memory(2**28, 2**27) is False
    assert heap.mmap_threshold() == 2**28 and heap.kept()
    assert calls == [(heap._M_TRIM_THRESHOLD, 2**27), (heap._M_MMAP_THRESHOLD, 2**28)]


def test_keep_freed_memory_falls_back_to_the_older_glibc_limit(monkeypatch):
    """An mmap threshold refused by the C library is retried at 32 MiB, which is then reported."""
    mallopt, calls = _fake_mallopt(trim_ok=True, max_mmap=heap.FALLBACK_MMAP_THRESHOLD_BYTES)
    monkeypatch.setattr(heap, "_mallopt", lambda: mallopt)
    monkeypatch.setattr(heap, "_taken_mmap_threshold", 0)
    assert heap.keep_freed_memory() is True
    assert heap.mmap_threshold() == heap.FALLBACK_MMAP_THRESHOLD_BYTES
    assert calls[1:] == [(heap._M_MMAP_THRESHOLD, heap.MMAP_THRESHOLD_BYTES),
                         (heap._M_MMAP_THRESHOLD, heap.FALLBACK_MMAP_THRESHOLD_BYTES)]


def test_keep_freed_memory_reports_nothing_taken_when_every_mmap_threshold_is_refused(
        monkeypatch):
    """With both mmap thresholds refused, it returns False and kept() stays False."""
    mallopt, _ = _fake_mallopt(trim_ok=True, max_mmap=0)
    monkeypatch.setattr(heap, "_mallopt", lambda: mallopt)
    monkeypatch.setattr(heap, "_taken_mmap_threshold", 0)
    assert heap.keep_freed_memory() is False
    assert not heap.kept() and heap.mmap_threshold() == 0


@pytest.mark.parametrize("kwargs, match", [
    ({"mmap_threshold": 0}, r"mmap_threshold must be a byte count in \(0, 2\*\*31\), got 0"),
    ({"trim_threshold": 2**31}, r"trim_threshold must be a byte count .* got 2147483648"),
])
def test_keep_freed_memory_refuses_bad_sizes(monkeypatch, kwargs, match):
    """Byte counts outside (0, 2**31) are refused before mallopt is called."""
    mallopt, calls = _fake_mallopt(trim_ok=True, max_mmap=2**31)
    monkeypatch.setattr(heap, "_mallopt", lambda: mallopt)
    monkeypatch.setattr(heap, "_taken_mmap_threshold", 0)
    with pytest.raises(ValueError, match=match):
        heap.keep_freed_memory(**kwargs)
    assert calls == []


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def test_set_threads_bounds_the_blas_libraries_too():
    """set_threads bounds numpy's/scipy's BLAS, not only torch (a worker's products use them)."""
    from ncsim.threads import set_threads

    torch_before = torch.get_num_threads()
    try:
        set_threads(1)
        assert _blas_threads() and set(_blas_threads()) == {1}
        set_threads(2)
        assert set(_blas_threads()) == {2} and torch.get_num_threads() == 2
    finally:
        set_threads(1)
        torch.set_num_threads(torch_before)
    assert set(_blas_threads()) == {1}


@pytest.mark.parametrize("width", [2, 3])
def test_theory_columns_not_applicable_when_the_hidden_width_is_below_the_rank(width):
    """Deep MSE (rank K = 4 minimiser) with a hidden width < 4 but d = 20: all columns NaN,
    and the regime names the hidden width, not d."""
    from ncsim.spec import ModelSpec, Regularization, RunSpec
    from ncsim.theory.columns import COLUMNS, theory_columns

    spec = RunSpec(model=ModelSpec(kind="deep", loss="mse", classes=4, per_class=5, dim=20,
                                   depth=2, width=width),
                   reg=Regularization(1e-2, 1e-2)).validate()
    row = theory_columns(spec)
    assert row["theory_regime"] == ("not_applicable: the hidden width below the rank of the "
                                    "minimiser")
    assert row["collapsed_theory"] is None
    for key in COLUMNS:
        if key not in ("collapsed_theory", "theory_regime"):
            assert row[key] != row[key], key
