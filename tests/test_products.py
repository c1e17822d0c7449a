"""Batched products: the numpy route gives torch's products, and is taken only where it may."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncsim import products


@pytest.fixture
def matmul_calls(monkeypatch):
    """Count the calls of numpy's matmul made by the products module."""
    calls = []
    real = np.matmul

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(products.np, "matmul", counting)
    return calls


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


def test_mismatched_shapes_are_refused():
    a, b = _operands()
    with pytest.raises(ValueError, match=r"\(R, m, k\) and \(R, k, n\)"):
        products.bmm(a, a)
    with pytest.raises(ValueError, match=r"\(R, m, k\)"):
        products.bmm(a[0], b[0])


def test_bounded_threads_bounds_torch_and_blas_and_restores_them():
    from threadpoolctl import threadpool_info

    from ncsim.threads import bounded_threads

    def blas():
        return {p["filepath"]: p["num_threads"] for p in threadpool_info()
                if p["user_api"] == "blas"}

    torch_before, blas_before = torch.get_num_threads(), blas()
    assert blas_before  # numpy's OpenBLAS is loaded with the products module
    with bounded_threads(1):
        assert torch.get_num_threads() == 1
        assert set(blas().values()) == {1}
    assert torch.get_num_threads() == torch_before and blas() == blas_before
    with bounded_threads(None):
        assert torch.get_num_threads() == torch_before and blas() == blas_before
