"""Mutation probe of ncsim.heap and ncsim.products: naive references on odd shapes, the numpy
route's fall-backs to torch, the CPU/BLAS look-ups and the libc detection."""

from __future__ import annotations

import platform
import warnings

import numpy as np
import pytest
import torch
from thread_helpers import torch_threads

from ncsim import heap, products

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.fixture
def host_route(monkeypatch, matmul_calls):
    """The numpy route switched on whatever the host (as on an AMD CPU), torch on one thread;
    numpy's matmul calls counted (conftest's ``matmul_calls``)."""
    monkeypatch.setattr(products, "HOST_BLAS", True)
    with torch_threads(1):
        yield matmul_calls


def _naive_bmm(a, b):
    """Batched product by einsum in float64 numpy (the reference)."""
    return np.einsum("rmk,rkn->rmn", a.double().numpy(), b.double().numpy())


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 3, 5, 2), (4, 1, 7, 1), (3, 2, 0, 4),
                                   (0, 2, 3, 4), (2, 0, 3, 5)])
def test_bmm_and_baddbmm_match_einsum_on_odd_strided_shapes(host_route, dtype, tol, shape):
    """bmm/baddbmm equal an einsum reference for one run, one row, k = 0 and R = 0, on
    non-contiguous operands, in float64 (numpy) and float32 (torch)."""
    r, m, k, n = shape
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(r, k, m, generator=gen, dtype=dtype).transpose(1, 2)
    b = torch.randn(r, n, 2 * k, generator=gen, dtype=dtype)[:, :, ::2].transpose(1, 2)
    c = torch.randn(1, m, n, generator=gen, dtype=dtype)
    expected = _naive_bmm(a, b)
    got = products.bmm(a, b)
    assert got.shape == (r, m, n) and got.dtype == dtype
    np.testing.assert_allclose(got.numpy(), expected, rtol=tol, atol=tol)
    np.testing.assert_allclose(products.baddbmm(c, a, b, alpha=-0.5).numpy(),
                               c.double().numpy() - 0.5 * expected, rtol=tol, atol=tol)
    out = torch.full((r, m, n), 7.0, dtype=dtype)
    assert products.bmm(a, b, out=out) is out
    np.testing.assert_allclose(out.numpy(), expected, rtol=tol, atol=tol)
    if dtype == torch.float32:
        assert host_route == []


def test_bmm_results_do_not_alias_the_operands(host_route):
    """A bmm without out returns fresh memory: writing it leaves a and b."""
    a = torch.ones(2, 3, 3, dtype=torch.float64)
    b = torch.eye(3, dtype=torch.float64).expand(2, 3, 3).contiguous()
    got = products.bmm(a, b)
    got.fill_(-1.0)
    assert (a == 1).all() and torch.equal(b[0], torch.eye(3, dtype=torch.float64))
    assert len(host_route) == 1


def test_bmm_with_an_out_of_the_same_size_but_another_shape_goes_to_torch(host_route):
    """An out of (R, n, m) for an (R, m, n) product is no fit (shape, not size, decides): torch
    resizes it and gives the product, numpy is not called."""
    gen = torch.Generator().manual_seed(7)
    a = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    b = torch.randn(2, 4, 5, generator=gen, dtype=torch.float64)
    out = torch.zeros(2, 5, 3, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = products.bmm(a, b, out=out)
    assert got.shape == (2, 3, 5)
    np.testing.assert_allclose(got.numpy(), _naive_bmm(a, b), rtol=1e-12, atol=1e-12)
    assert host_route == []


def test_invalid_operations_in_the_numpy_route_are_silent_like_torch(host_route):
    """inf * 0 gives NaN without numpy's 'invalid value' warning, as torch gives it."""
    a = torch.full((1, 2, 2), float("inf"), dtype=torch.float64)
    b = torch.zeros(1, 2, 2, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = products.bmm(a, b)
        got_matmul = products.matmul(a, b)
    assert got.isnan().all() and got_matmul.isnan().all() and len(host_route) == 2


def test_matmul_with_a_vector_operand_behaves_as_torch(host_route):
    """A 1-D operand goes to torch.matmul (matrix @ vector and vector @ matrix)."""
    m = torch.arange(6.0, dtype=torch.float64).view(2, 3)
    v = torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64)
    assert products.matmul(m, v).tolist() == [3.0, 9.0]
    assert products.matmul(torch.tensor([1.0, 2.0], dtype=torch.float64), m).tolist() == \
        [6.0, 9.0, 12.0]
    assert host_route == []


def test_baddbmm_with_a_float32_input_raises_torchs_dtype_error(host_route):
    """c of another dtype than a, b is torch's RuntimeError, not a silent float64 sum."""
    a = torch.ones(2, 3, 4, dtype=torch.float64)
    b = torch.ones(2, 4, 5, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="dtype"):
        products.baddbmm(torch.zeros(2, 3, 5, dtype=torch.float32), a, b)
    assert host_route == []


def test_cpuinfo_field_reads_the_line_that_starts_with_the_name(monkeypatch, tmp_path):
    """cpuinfo_field takes the first line starting with the name (not one mentioning it) and
    keeps colons inside the value."""
    real_open = open
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nbugs\t\t: vendor_id spectre\nvendor_id\t: AuthenticAMD\n"
                    "model name\t: Vendor CPU: rev 2 @ 2.0GHz\n")

    def fake_open(path, *args, **kwargs):
        return real_open(info if path == "/proc/cpuinfo" else path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)
    assert products.cpu_vendor() == "AuthenticAMD"
    assert products.cpuinfo_field("model name") == "Vendor CPU: rev 2 @ 2.0GHz"
    assert products.cpuinfo_field("microcode") == ""


@pytest.mark.parametrize("config, name", [
    ({"Build Dependencies": {"blas": {"name": "scipy-openblas"}}}, "scipy-openblas"),
    ({"Build Dependencies": {}}, ""),
    (None, ""),
])
def test_numpy_blas_reads_the_name_when_found_is_not_reported(monkeypatch, config, name):
    """A BLAS entry without "found" names its library; no entry, or a numpy without
    mode="dicts" (None config: TypeError), names none."""
    monkeypatch.setattr(products.np, "show_config", lambda mode=None: config)
    assert products.numpy_blas() == name


def test_glibc_is_none_on_another_c_library(monkeypatch):
    """A Linux whose libc_ver is not glibc (musl reports ("", "")) gets no mallopt and no trim."""
    monkeypatch.setattr(heap.platform, "libc_ver", lambda: ("", ""))
    heap._glibc.cache_clear()
    heap._mallopt.cache_clear()
    try:
        assert heap._glibc() is None and heap._mallopt() is None
        assert heap.release_freed_memory() is False
    finally:
        heap._glibc.cache_clear()
        heap._mallopt.cache_clear()


def test_a_later_refused_call_keeps_the_threshold_set_before(monkeypatch):
    """A refused mmap threshold leaves glibc's earlier one in force: mmap_threshold() still
    reports it and the call counts as taking effect."""
    monkeypatch.setattr(heap, "_taken_mmap_threshold", 0)
    monkeypatch.setattr(heap, "_mallopt", lambda: lambda param, value: 1)
    assert heap.keep_freed_memory(2**28, 2**28) is True
    monkeypatch.setattr(heap, "_mallopt", lambda: lambda param, value:
                        int(param == heap._M_TRIM_THRESHOLD))
    assert heap.keep_freed_memory(2**29, 2**28) is True
    assert heap.mmap_threshold() == 2**28 and heap.kept()


def test_bmm_refuses_broadcasting_that_numpy_would_do(host_route):
    """bmm needs two 3-D operands of the same batch: (1, m, k) @ (R, k, n) and 2-D operands
    are torch.bmm's RuntimeError, not numpy's broadcast product."""
    a = torch.ones(1, 3, 3, dtype=torch.float64)
    b = torch.ones(4, 3, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError):
        products.bmm(a, b)
    with pytest.raises(RuntimeError):
        products.bmm(a[0], b[0])
    assert host_route == []


@pytest.fixture
def fresh_libc_lookup():
    """_glibc and _mallopt looked up afresh in the test, and afresh again after it."""
    heap._glibc.cache_clear()
    heap._mallopt.cache_clear()
    yield
    heap._glibc.cache_clear()
    heap._mallopt.cache_clear()


@pytest.mark.skipif(not GLIBC, reason="needs a glibc to pretend it is elsewhere")
def test_glibc_is_none_off_linux_and_without_a_c_library(monkeypatch, fresh_libc_lookup):
    """Another system (even with a glibc at hand) or no C library found: no glibc, no mallopt."""
    monkeypatch.setattr(heap.platform, "system", lambda: "Darwin")
    assert heap._glibc() is None and heap._mallopt() is None
    monkeypatch.undo()
    heap._glibc.cache_clear()
    monkeypatch.setattr(heap.ctypes.util, "find_library", lambda name: None)
    assert heap._glibc() is None


@pytest.mark.parametrize("alpha", [0.0, 2.0])
def test_baddbmm_scales_by_any_alpha(host_route, alpha):
    """alpha = 0 gives c exactly, alpha = 2 twice the product plus c (numpy route)."""
    a = torch.arange(12.0, dtype=torch.float64).view(1, 3, 4)
    b = torch.ones(1, 4, 2, dtype=torch.float64)
    c = torch.full((1, 3, 2), 0.5, dtype=torch.float64)
    expected = c.numpy() + alpha * _naive_bmm(a, b)
    np.testing.assert_array_equal(products.baddbmm(c, a, b, alpha=alpha).numpy(), expected)
    assert len(host_route) == 1


def test_meta_tensors_stay_with_torch(host_route):
    """Tensors off the CPU (meta here, as an accelerator's) are torch's: bmm, baddbmm and
    matmul give torch's meta results, numpy is never called."""
    a = torch.empty(2, 3, 4, dtype=torch.float64, device="meta")
    b = torch.empty(2, 4, 5, dtype=torch.float64, device="meta")
    assert products.bmm(a, b).shape == (2, 3, 5) and products.bmm(a, b).is_meta
    assert products.baddbmm(torch.empty(2, 3, 5, dtype=torch.float64, device="meta"),
                            a, b).is_meta
    assert products.matmul(a, b).is_meta
    assert host_route == []
