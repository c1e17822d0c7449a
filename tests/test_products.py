"""Batched products: the numpy route gives torch's products, and is taken only where it may."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from thread_helpers import blas_threads, torch_threads

from ncsim import products


def _operands(dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(5, 4, 7, generator=gen, dtype=dtype)
    b = torch.randn(5, 3, 7, generator=gen, dtype=dtype).transpose(1, 2)  # (5, 7, 3), strided
    return a, b


def test_bmm_equals_torch_for_strided_operands_and_views_as_out(matmul_calls):
    a, b = _operands()
    expected = torch.bmm(a, b)
    np.testing.assert_allclose(products.bmm(a, b).numpy(), expected.numpy(), rtol=1e-13,
                               atol=1e-13)
    np.testing.assert_allclose(products.bmm(a.transpose(1, 2).contiguous().transpose(1, 2),
                                            b).numpy(), expected.numpy(), rtol=1e-13, atol=1e-13)
    buffer = torch.zeros(5, 28, dtype=torch.float64)  # out is a view inside each row, as in
    out = buffer[:, 4:16].view(5, 4, 3)  # the stage buffer of the integrator
    returned = products.bmm(a, b, out=out)
    assert returned is out
    np.testing.assert_allclose(buffer[:, 4:16].view(5, 4, 3).numpy(), expected.numpy(),
                               rtol=1e-13, atol=1e-13)
    assert (buffer[:, :4] == 0).all() and (buffer[:, 16:] == 0).all()
    assert len(matmul_calls) == 3


def test_baddbmm_equals_torch_with_alpha_and_broadcast_input(matmul_calls):
    a, b = _operands(seed=1)
    scale = torch.linspace(0.5, 2.0, 5, dtype=torch.float64).view(-1, 1, 1)
    c = scale * torch.ones(5, 4, 3, dtype=torch.float64)
    for alpha in (1.0, -0.25):
        np.testing.assert_allclose(products.baddbmm(c, a, b, alpha=alpha).numpy(),
                                   torch.baddbmm(c, a, b, alpha=alpha).numpy(),
                                   rtol=1e-13, atol=1e-13)
    broadcast = torch.randn(1, 4, 3, dtype=torch.float64)
    np.testing.assert_allclose(products.baddbmm(broadcast, a, b).numpy(),
                               torch.baddbmm(broadcast, a, b).numpy(), rtol=1e-13, atol=1e-13)
    assert len(matmul_calls) == 3


def test_float32_autograd_and_the_switch_stay_with_torch(matmul_calls, monkeypatch):
    a32, b32 = _operands(torch.float32)
    assert torch.equal(products.bmm(a32, b32), torch.bmm(a32, b32))
    a, b = _operands()
    a.requires_grad_(True)
    products.bmm(a, b).sum().backward()  # the route would break the graph
    np.testing.assert_allclose(a.grad.numpy(), b.sum(2).unsqueeze(1).expand(5, 4, 7).numpy(),
                               rtol=1e-13)
    monkeypatch.setattr(products, "HOST_BLAS", False)
    a, b = _operands()
    assert torch.equal(products.bmm(a, b), torch.bmm(a, b))
    assert matmul_calls == []


def test_torch_func_transforms_stay_with_torch(matmul_calls):
    a, b = _operands()
    tangent = torch.ones_like(a)
    _, derivative = torch.func.jvp(lambda x: products.bmm(x, b), (a,), (tangent,))
    np.testing.assert_allclose(derivative.numpy(), torch.bmm(tangent, b).numpy(), rtol=1e-13)
    stacked = torch.stack([a, 2.0 * a])
    mapped = torch.func.vmap(lambda x: products.baddbmm(x[:, :, :3], x, b))(stacked)
    for i in range(2):
        np.testing.assert_allclose(
            mapped[i].numpy(), torch.baddbmm(stacked[i, :, :, :3], stacked[i], b).numpy(),
            rtol=1e-13)
    assert matmul_calls == []


def test_forward_mode_autograd_and_torch_bookkeeping_are_kept(matmul_calls):
    import torch.autograd.forward_ad as fwad

    a, b = _operands()
    tangent = torch.ones_like(a)
    with fwad.dual_level():
        dual = products.bmm(fwad.make_dual(a, tangent), b)
        np.testing.assert_allclose(fwad.unpack_dual(dual).tangent.numpy(),
                                   torch.bmm(tangent, b).numpy(), rtol=1e-13)
    assert matmul_calls == []
    np.testing.assert_allclose(products.bmm(a.to_sparse(), b).numpy(),  # a sparse operand
                               torch.bmm(a, b).numpy(), rtol=1e-13)
    assert matmul_calls == []
    out = torch.zeros(5, 4, 3, dtype=torch.float64)
    version = out._version
    products.bmm(a, b, out=out)  # autograd sees the write, as for torch's in-place ops
    assert len(matmul_calls) == 1 and out._version > version
    with torch.inference_mode():
        held = torch.zeros(5, 4, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="[Ii]nference"):
        products.bmm(a, b, out=held)  # torch's rule for inference tensors holds


def test_the_route_is_off_when_torch_runs_on_several_threads(matmul_calls):
    a, b = _operands()
    before = torch.get_num_threads()
    with torch_threads(2):  # torch then splits the batch over its threads; numpy would not
        np.testing.assert_allclose(products.bmm(a, b).numpy(), torch.bmm(a, b).numpy(),
                                   rtol=1e-13)
        assert matmul_calls == []
    products.bmm(a, b)
    assert len(matmul_calls) == int(before == 1)


def test_the_route_is_on_only_for_an_optimised_numpy_blas():
    assert products.optimised(products.numpy_blas())  # numpy's wheels ship OpenBLAS
    default = products.host_route_default(products.numpy_blas(), products.cpu_vendor(),
                                          torch.backends.mkl.is_available())
    assert products.HOST_BLAS is default
    for name in ("scipy-openblas", "openblas64", "mkl-sdl", "accelerate"):
        assert products.optimised(name)
    for name in ("blas", "cblas", "netlib", ""):  # reference BLAS, or numpy does not say
        assert not products.optimised(name)


def test_mismatched_shapes_raise_torch_errors_on_both_routes(monkeypatch):
    a, b = _operands()
    for host in (True, False):
        monkeypatch.setattr(products, "HOST_BLAS", host)
        with pytest.raises(RuntimeError):
            products.bmm(a, a)
        with pytest.raises(RuntimeError):
            products.bmm(a[0], b[0])
        with pytest.raises(RuntimeError):
            products.baddbmm(torch.zeros(5, 4, 3, dtype=torch.float64), a, a)


def test_bounded_threads_bounds_torch_and_blas_and_restores_them():
    from ncsim.threads import bounded_threads

    def blas():
        return set(blas_threads().values())

    # two threads before: the bound and the restoring both show
    with torch_threads(2, blas=True):
        assert blas_threads() and blas() == {2}  # numpy's OpenBLAS is loaded
        with bounded_threads(1):
            assert torch.get_num_threads() == 1
            assert blas() == {1}
        assert torch.get_num_threads() == 2 and blas() == {2}
        with bounded_threads(None):
            assert torch.get_num_threads() == 2 and blas() == {2}


def test_matmul_broadcasts_as_torch_does(matmul_calls):
    gen = torch.Generator().manual_seed(3)
    onehot = torch.randn(4, 6, generator=gen, dtype=torch.float64)  # (K, N) against (R, N, p)
    features = torch.randn(5, 6, 3, generator=gen, dtype=torch.float64)
    np.testing.assert_allclose(products.matmul(onehot, features).numpy(),
                               torch.matmul(onehot, features).numpy(), rtol=1e-13)
    weights = torch.randn(5, 2, 3, generator=gen, dtype=torch.float64)
    np.testing.assert_allclose(products.matmul(features, weights.transpose(-1, -2)).numpy(),
                               torch.matmul(features, weights.transpose(-1, -2)).numpy(),
                               rtol=1e-13)
    assert len(matmul_calls) == 2
    with pytest.raises(RuntimeError):
        products.matmul(features, features)  # torch's own error for shapes that do not fit


def test_overflow_gives_torchs_inf_and_nan_without_a_warning(matmul_calls):
    """numpy warns on overflow in matmul, torch does not: the route is silent like torch (the
    integrator's divergence test finds the inf or NaN)."""
    import warnings

    a = torch.full((2, 3, 4), 1e200, dtype=torch.float64)
    b = torch.full((2, 4, 5), 1e200, dtype=torch.float64)
    b[1, 0, 0] = -1e200  # inf - inf in a sum: NaN or -inf, as the BLAS orders it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = products.bmm(a, b)
        got_matmul = products.matmul(a, b)
    expected = torch.bmm(a, b)
    assert len(matmul_calls) == 2  # both through numpy
    assert not got.isfinite().any() and not got_matmul.isfinite().any()
    assert torch.equal(got[0], expected[0])  # +inf everywhere


@pytest.mark.parametrize(("blas", "vendor", "mkl", "route"), [
    ("scipy-openblas", "AuthenticAMD", True, True),  # MKL on AMD: numpy's OpenBLAS
    ("scipy-openblas", "GenuineIntel", True, False),  # MKL on Intel: torch's own
    ("scipy-openblas", "GenuineIntel", False, True),  # torch without MKL (e.g. OpenBLAS)
    ("scipy-openblas", "", True, True),  # vendor unknown (no /proc/cpuinfo)
    ("blas", "AuthenticAMD", True, False),  # the reference BLAS: never
    ("", "AuthenticAMD", False, False),
])
def test_the_default_route_follows_the_blas_and_the_cpu_vendor(blas, vendor, mkl, route):
    """numpy's BLAS unless torch multiplies with MKL on an Intel CPU (measured there as fast
    or faster), and never the reference BLAS."""
    assert products.host_route_default(blas, vendor, mkl) is route


def test_cpu_vendor_reads_the_vendor_line(monkeypatch, tmp_path):
    """cpu_vendor is the vendor_id field of /proc/cpuinfo, "" where it cannot be read."""
    real_open = open
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n")

    def fake_open(path, *args, **kwargs):
        if path == "/proc/cpuinfo":
            return real_open(info, *args, **kwargs)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)
    assert products.cpu_vendor() == "AuthenticAMD"
    info.unlink()
    assert products.cpu_vendor() == ""
