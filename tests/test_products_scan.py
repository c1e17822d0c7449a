"""Extreme-input scan of ncsim.products, ncsim.heap, ncsim.threads and bench's pure helpers:
products against an exact (math.fsum) reference, on the numpy route and on torch's.

Fixed findings: products.matmul on the numpy route raised numpy's ValueError for batch
shapes that do not broadcast (torch's RuntimeError now, as bmm); the numpy route took
tensors with torch's lazy negative bit and failed; heap.keep_freed_memory let a float byte
count through to ctypes (ArgumentError, after one setting was made).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from thread_helpers import torch_threads

from ncsim import heap, products
from ncsim.bench import _with_ratios, timed

F64 = torch.float64


@pytest.fixture(params=[True, False], ids=["numpy", "torch"])
def route(request, monkeypatch):
    """Run the test on the numpy route (forced on) and on torch's, torch on one thread."""
    monkeypatch.setattr(products, "HOST_BLAS", request.param)
    with torch_threads(1):
        yield request.param


@pytest.fixture
def host(monkeypatch):
    """The numpy route forced on (whatever this machine's default), torch on one thread."""
    monkeypatch.setattr(products, "HOST_BLAS", True)
    with torch_threads(1):
        yield


def _exact(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a @ b by math.fsum, sum of |terms|) for a (R, m, k), b (R, k, n)."""
    r_, m, _ = a.shape
    n = b.shape[2]
    out, mag = np.empty((r_, m, n)), np.empty((r_, m, n))
    for r in range(r_):
        for i in range(m):
            for j in range(n):
                terms = a[r, i, :] * b[r, :, j]
                out[r, i, j] = math.fsum(terms)
                mag[r, i, j] = np.abs(terms).sum()
    return out, mag


def _layouts(rng: np.random.Generator, shape_a, shape_b, scale: float):
    """Operands in four layouts: contiguous, a column-major, b column-major, a strided slice."""
    a = rng.standard_normal(shape_a) * scale
    b = rng.standard_normal(shape_b) / scale
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    wide = torch.from_numpy(np.repeat(a, 2, axis=2))[:, :, ::2]
    return [(ta, tb), (ta.transpose(1, 2).contiguous().transpose(1, 2), tb),
            (ta, tb.transpose(1, 2).contiguous().transpose(1, 2)),
            (wide, tb.transpose(1, 2).contiguous().transpose(1, 2))]


@pytest.mark.parametrize("scale", [1e-150, 1.0, 1e150])
@pytest.mark.parametrize(("r", "m", "k", "n"), [(1, 1, 1, 1), (1, 3, 64, 2), (7, 4, 33, 5)])
def test_products_are_within_rounding_of_an_exact_sum_in_every_layout(route, scale, r, m, k, n):
    """bmm, matmul and bmm into out: within k ulps of math.fsum, any layout and scale."""
    rng = np.random.default_rng(r * 100 + k)
    for a, b in _layouts(rng, (r, m, k), (r, k, n), scale):
        exact, mag = _exact(a.numpy(), b.numpy())
        tol = k * 1.2e-16 * mag + 1e-300
        out = torch.empty(r, m, n, dtype=F64)
        for got in (products.bmm(a, b), products.matmul(a, b), products.bmm(a, b, out=out)):
            assert got.dtype == F64 and got.shape == (r, m, n)
            assert (np.abs(got.numpy() - exact) <= tol).all()


@pytest.mark.parametrize("alpha", [1.0, -0.5, 3.0, 0.0])
def test_baddbmm_is_within_rounding_of_c_plus_alpha_times_the_exact_product(route, alpha):
    """baddbmm(c, a, b, alpha) = c + alpha * (a @ b) to rounding, c broadcast from (m, n)."""
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((4, 3, 17)), rng.standard_normal((4, 17, 5))
    c = rng.standard_normal((3, 5))
    exact, mag = _exact(a, b)
    got = products.baddbmm(torch.from_numpy(c), torch.from_numpy(a), torch.from_numpy(b),
                           alpha=alpha).numpy()
    tol = (abs(alpha) * mag + np.abs(c)) * 20 * 1.2e-16
    assert got.shape == (4, 3, 5)
    assert (np.abs(got - (c + alpha * exact)) <= tol).all()


@pytest.mark.parametrize(("shape_a", "shape_b"), [((0, 3, 4), (0, 4, 5)), ((2, 0, 4), (2, 4, 5)),
                                                  ((2, 3, 0), (2, 0, 5)), ((2, 3, 4), (2, 4, 0))])
def test_a_zero_dimension_gives_torchs_empty_or_zero_result(route, shape_a, shape_b):
    """A zero batch, row, inner or column dimension: torch's shape, and zeros for k = 0."""
    a, b = torch.ones(shape_a, dtype=F64), torch.ones(shape_b, dtype=F64)
    c = torch.full((shape_a[0], shape_a[1], shape_b[2]), 2.0, dtype=F64)
    assert torch.equal(products.bmm(a, b), torch.bmm(a, b))
    assert torch.equal(products.matmul(a, b), torch.matmul(a, b))
    assert torch.equal(products.baddbmm(c, a, b, alpha=3.0), torch.baddbmm(c, a, b, alpha=3.0))


def test_nan_and_inf_propagate_through_zero_factors(route):
    """NaN * 0 and inf * 0 give NaN (no silent zero), in bmm and matmul."""
    a = torch.zeros(1, 2, 3, dtype=F64)
    a[0, 0, 1] = math.nan
    b = torch.zeros(1, 3, 2, dtype=F64)
    for got in (products.bmm(a, b), products.matmul(a, b)):
        assert got[0, 0].isnan().all() and (got[0, 1] == 0).all()
    v = torch.zeros(1, 1, 2, dtype=F64)
    m = torch.zeros(1, 2, 3, dtype=F64)
    m[0, 0, 0] = math.inf
    for got in (products.bmm(v, m), products.matmul(v, m)):
        assert got[0, 0, 0].isnan() and (got[0, 0, 1:] == 0).all()


def test_subnormal_products_are_kept_and_overflow_is_silent(host):
    """1e-160 * 1e-160 terms sum to a subnormal (no flush to zero); 1e300 squared is inf, silent."""
    tiny = products.bmm(torch.full((1, 1, 4), 1e-160, dtype=F64),
                        torch.full((1, 4, 1), 1e-160, dtype=F64))
    assert tiny.item() == pytest.approx(4e-320, rel=1e-3) and tiny.item() > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = torch.full((1, 1, 3), 1e300, dtype=F64)
        m = torch.full((1, 3, 2), 1e300, dtype=F64)
        bigs = (products.bmm(v, m), products.matmul(v, m))
    for big in bigs:
        assert big.shape == (1, 1, 2) and (big == math.inf).all()


def test_out_aliasing_an_operand_gets_the_true_product_on_the_numpy_route(host):
    """bmm(a, b, out=a) and out=b: numpy copies overlapping operands, the result is a @ b."""
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(3, 4, 4, generator=gen, dtype=F64)
    b = torch.randn(3, 4, 4, generator=gen, dtype=F64)
    exact = torch.from_numpy(_exact(a.numpy(), b.numpy())[0])
    a2, b2 = a.clone(), b.clone()
    assert torch.allclose(products.bmm(a2, b, out=a2), exact, rtol=1e-14, atol=1e-14)
    assert torch.allclose(products.bmm(a, b2, out=b2), exact, rtol=1e-14, atol=1e-14)


def test_one_and_two_threads_agree_to_rounding():
    """bmm and matmul on 1 thread (numpy route where taken) and 2 (torch) agree."""
    from ncsim.threads import bounded_threads

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(10, 32, 200, generator=gen, dtype=F64)
    b = torch.randn(10, 200, 32, generator=gen, dtype=F64)
    got = {}
    for count in (1, 2):
        with bounded_threads(count):
            got[count] = (products.bmm(a, b), products.matmul(a, b))
    for one, two in zip(got[1], got[2], strict=True):
        torch.testing.assert_close(one, two, rtol=1e-13, atol=1e-12)


def test_matmul_batch_mismatch_raises_torchs_error_on_the_numpy_route(host):
    """Batch dimensions that do not broadcast: torch's RuntimeError, as on torch's route."""
    a, b = torch.ones(2, 3, 4, dtype=F64), torch.ones(3, 4, 5, dtype=F64)
    with pytest.raises(RuntimeError):
        products.matmul(a, b)


def test_a_negative_bit_view_is_multiplied_as_torch_does(host):
    """A float64 view with torch's negative bit (complex conj().imag) gives torch's product."""
    a = torch.randn(2, 3, 4, dtype=torch.complex128).conj().imag
    b = torch.randn(2, 4, 5, dtype=F64)
    assert a.is_neg()
    torch.testing.assert_close(products.bmm(a, b), torch.bmm(a.resolve_neg(), b))


@pytest.mark.parametrize("kwargs", [{"trim_threshold": 1.5},
                                    {"trim_threshold": float(2**20)}])
def test_a_non_integer_threshold_is_rejected_with_a_value_error(kwargs):
    """A float byte count is refused with keep_freed_memory's own ValueError."""
    with pytest.raises(ValueError, match="byte count"):
        heap.keep_freed_memory(**kwargs)


def test_one_timed_repeat_is_its_own_median_and_a_numpy_integer_is_a_count():
    """timed with repeats 1 reports that time as the median; np.int64(2) runs twice."""
    stats, out = timed(lambda: 7, 1)
    assert out == 7 and len(stats["times_s"]) == 1
    assert stats["median_s"] == stats["times_s"][0]
    stats, _ = timed(lambda: None, np.int64(2))
    assert len(stats["times_s"]) == 2
    assert stats["median_s"] == float(np.median(stats["times_s"]))


def test_ratios_of_equal_timings_are_one_and_others_match_numpy_division():
    """Equal times give ratio 1 everywhere; unequal ones give numpy's quotients."""
    times = {"ncsim_dopri5": 2.5, "ncsim_tsit5": 2.0, "peer_a": 5.0, "peer_b_tsit5": 3.0}
    entry = {"solvers": {k: {"dtype": "float64", "median_s": v} for k, v in times.items()}}
    out = _with_ratios(entry, ("float64",))
    assert out["ratios"] == {"peer_a": float(np.divide(5.0, 2.5)),
                             "peer_b_tsit5": float(np.divide(3.0, 2.0))}
    assert out["fastest_ncsim"] == "ncsim_tsit5" and out["fastest_peer"] == "peer_b_tsit5"
    assert out["speedup_vs_fastest_peer"] == 1.5
    same = {"solvers": {k: {"dtype": "float64", "median_s": 1.0} for k in times}}
    out = _with_ratios(same, ("float64",))
    assert set(out["ratios"].values()) == {1.0} and out["speedup_vs_fastest_peer"] == 1.0
