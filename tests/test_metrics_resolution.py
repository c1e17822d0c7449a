"""NC metrics at the edge of floating-point resolution: scale, close means, rank-deficient
means on a large offset, identical features, and shape checks of the block functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ncsim.errors import InputError
from ncsim.metrics import (
    StreamingNC,
    class_statistics,
    mean_noise,
    nc1,
    nc2_etf,
    nc2_etf_w,
    nc3,
    nc3_paper,
    nc_metrics,
)
from ncsim.models.gram import GramObjective
from ncsim.spec import ModelSpec


def _run(k: int, p: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n)
    h = rng.normal(size=(k, p))[y] + 0.4 * rng.normal(size=(k * n, p))
    return h, y, rng.normal(size=(k, p))


def _metrics(h, y, k, w, dtype=torch.float64, scale=1.0):
    ht = torch.as_tensor(h * scale, dtype=dtype).unsqueeze(0)
    wt = torch.as_tensor(w * scale, dtype=dtype).unsqueeze(0)
    return {name: float(v[0]) for name, v in nc_metrics(ht, torch.as_tensor(y), k, wt).items()}


@pytest.mark.parametrize(("dtype", "scales"), [
    (torch.float64, (1e-100, 1e-60, 1e60, 1e100)),
    (torch.float32, (1e-12, 1e-8, 1e8, 1e9)),
])
def test_etf_distances_are_scale_invariant(dtype, scales):
    """nc2_etf and nc2_etf_w do not depend on the scale of features and classifier, far past
    where their Gram (scale^4) would over- or underflow (it gave inf at 1e-100 and exactly 1 at
    1e100 in float64; 1 at 1e9 in float32)."""
    k, p = 10, 32
    h, y, w = _run(k, p, 20, seed=3)
    base = _metrics(h, y, k, w, dtype)
    rel = 1e-12 if dtype == torch.float64 else 2e-5
    for scale in scales:
        got = _metrics(h, y, k, w, dtype, scale)
        for name in ("nc2_etf", "nc2_etf_w"):
            assert got[name] == pytest.approx(base[name], rel=rel), (scale, name)


@pytest.mark.parametrize("gap", [1e-4, 1e-6])
def test_cdnv_of_close_means_keeps_its_digits(gap):
    """Two class means a gap apart (d = 1): cdnv from the differences themselves agrees with an
    exact rational reference to 1e-9 in float64 (the Gram form lost 5.6e-6 at gap 1e-6)."""
    means = [0.0, 1.0, 1.0 + gap]
    spread = [-0.25, 0.25]
    h = np.array([[m + s] for m in means for s in spread])
    y = np.repeat(np.arange(3), 2)
    var = 0.25**2
    pairs = [(0, 1), (0, 2), (1, 2)]
    dist2 = [(means[a] - means[b]) ** 2 for a, b in pairs]
    # the means are exact: (m + 0.25 + m - 0.25)/2 = m in floating point
    want = sum(var / d for d in dist2) / 3
    got = _metrics(h, y, 3, np.ones((3, 1)))["cdnv"]
    assert got == pytest.approx(want, rel=1e-9)


def _rank_deficient(offset: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """K = 6, p = 12: classes 4 and 5 share a mean, within-class noise in every direction,
    plus a common offset. Returns features (N, p) and labels (N,)."""
    k, p, n = 6, 12, 8
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, p))
    centres[5] = centres[4]
    y = np.repeat(np.arange(k), n)
    noise = 0.3 * rng.normal(size=(k * n, p))
    for c in range(k):
        noise[y == c] -= noise[y == c].mean(0)
    return centres[y] + noise + offset, y


def _truncated_nc1(h: np.ndarray, y: np.ndarray, k: int) -> float:
    """tr(Sigma_W Sigma_B^+)/K with a hard pinv cut at 1e-6 of the largest eigenvalue, in
    float64 on the given (possibly already rounded) features."""
    mu = np.array([h[y == c].mean(0) for c in range(k)])
    mbar = mu - h.mean(0)
    d = h - mu[y]
    sigma_w = d.T @ d / len(y)
    sigma_b = mbar.T @ mbar / k
    return float(np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-6, hermitian=True)) / k)


@pytest.mark.parametrize(("dtype", "offset", "rel"), [
    (torch.float64, 0.0, 1e-12),
    (torch.float64, 1e6, 1e-9),
    (torch.float64, 1e9, 1e-5),
    (torch.float32, 0.0, 1e-5),
    (torch.float32, 1e3, 1e-4),
])
def test_nc1_of_rank_deficient_means_on_an_offset(dtype, offset, rel):
    """Two classes share a mean: nc1 acts as the truncated pinv even when the means' rounding
    (from a large common offset) sits near the cut of the soft pseudo-inverse (float32 with
    offset 1e3 gave 4.53 against 0.043 before the cubic filter and its rounding floor)."""
    for seed in range(3):
        h, y = _rank_deficient(offset, seed)
        ht = torch.as_tensor(h, dtype=dtype)
        want = _truncated_nc1(ht.double().numpy(), y, 6)  # the same, rounded, input
        got = float(nc1(ht.unsqueeze(0), torch.as_tensor(y), 6)[0])
        assert got == pytest.approx(want, rel=rel), seed


def test_identical_features_are_no_collapse():
    """Every sample the same vector: the class means coincide to rounding, so nc1, nc1_trace
    and cdnv are NaN (0/0), never a small number that passes an onset test (before, 43 of 300
    such draws gave nc1_trace < 0.01 in float64); nc2 and nc3 are NaN, class_mean_norm 0."""
    rng = np.random.default_rng(0)
    for dtype in (torch.float64, torch.float32):
        for trial in range(40):
            k, p, n = int(rng.integers(2, 10)), int(rng.integers(1, 32)), int(rng.integers(1, 12))
            h0 = rng.normal(size=p) * 10.0 ** rng.uniform(-3, 3)
            h = np.tile(h0, (k * n, 1))
            y = np.repeat(np.arange(k), n)
            got = _metrics(h, y, k, rng.normal(size=(k, p)), dtype)
            for name in ("nc1", "nc1_trace", "cdnv", "nc2_etf", "nc2_angle", "nc3"):
                assert math.isnan(got[name]), (dtype, trial, name, got[name])
            assert got["class_mean_norm"] == 0.0


def test_identical_features_streaming_and_gram():
    """The streaming accumulator and the Gram-state metrics give NaN too."""
    k, p, n = 4, 6, 5
    h0 = np.random.default_rng(1).normal(size=p) * 3.0
    h = torch.as_tensor(np.tile(h0, (k * n, 1)))
    y = torch.as_tensor(np.repeat(np.arange(k), n))
    acc = StreamingNC(k, p)
    acc.update(h[:7], y[:7])
    acc.update(h[7:], y[7:])
    got = acc.compute()
    assert math.isnan(got["nc1"]) and math.isnan(got["nc1_trace"]) and math.isnan(got["cdnv"])
    model = ModelSpec(kind="ufm", loss="ce", bias="none", classes=k, per_class=n, dim=p)
    gram = GramObjective(model, "cpu", torch.float64)
    w = torch.as_tensor(np.random.default_rng(2).normal(size=(1, k, p)))
    state = gram.from_parameters(h.T.unsqueeze(0), w, None)
    out = gram.metrics(state)
    for name in ("nc1", "nc1_trace", "cdnv", "nc2_etf", "nc3"):
        assert math.isnan(float(out[name][0])), name


def test_mean_noise_is_the_documented_rounding_level():
    """s_n = 8 eps (sqrt K + sqrt p) max|h|, per run, in the features' dtype."""
    h = torch.tensor([[[1.0, -3.0], [2.0, 0.5]], [[0.1, 0.2], [0.0, -0.4]]], dtype=torch.float64)
    st = class_statistics(h, torch.tensor([0, 1]), 2)
    eps = torch.finfo(torch.float64).eps
    want = [8 * eps * (2**0.5 + 2**0.5) * 3.0, 8 * eps * (2**0.5 + 2**0.5) * 0.4]
    np.testing.assert_allclose(st.mean_noise.numpy(), want, rtol=1e-15)
    assert float(mean_noise(torch.tensor([1.0]), 4, 9, torch.float32)[0]) == pytest.approx(
        8 * torch.finfo(torch.float32).eps * 5.0)


def test_block_functions_check_shapes():
    """Mismatched or malformed (R, K, p) blocks are refused, not broadcast (nc3_paper of R = 2
    against R = 1 returned two values) or failed inside torch."""
    w2 = torch.randn(2, 3, 5, dtype=torch.float64)
    m1 = torch.randn(1, 3, 5, dtype=torch.float64)
    for fn in (nc3, nc3_paper):
        with pytest.raises(InputError, match="one shape"):
            fn(w2, m1)
        with pytest.raises(InputError, match="one shape"):
            fn(w2, torch.randn(2, 3, 4, dtype=torch.float64))
    with pytest.raises(InputError, match=r"\(R, K, p\)"):
        nc2_etf_w(torch.randn(3, 5, dtype=torch.float64))
    with pytest.raises(InputError, match=r"\(R, K, p\)"):
        nc2_etf(np.zeros((1, 3, 5)))
    with pytest.raises(InputError, match="K >= 2"):
        nc2_etf(torch.randn(1, 1, 5, dtype=torch.float64))


def test_zero_feature_dimension_and_numpy_p():
    """p = 0 is refused (it returned all NaN); StreamingNC takes a numpy integer p like K."""
    with pytest.raises(InputError, match="p >= 1"):
        nc_metrics(torch.zeros(1, 4, 0, dtype=torch.float64), torch.tensor([0, 0, 1, 1]), 2,
                   torch.zeros(1, 2, 0, dtype=torch.float64))
    acc = StreamingNC(np.int64(3), np.int64(5))
    assert (acc.K, acc.p) == (3, 5) and isinstance(acc.p, int)


def test_gram_float32_nc1_keeps_its_digits_for_full_rank_means():
    """The float32 Gram-state nc1 of well-spread means stays within 1e-5 of the float64 value
    (a rounding floor from the Gram's sqrt(eps) noise raised delta and put it 1.3e-3 off)."""
    k, n, d = 10, 20, 256
    model = ModelSpec(kind="ufm", loss="ce", bias="none", classes=k, per_class=n, dim=d)
    gram = GramObjective(model, "cpu", torch.float32)
    y = gram.labels
    rng = np.random.default_rng(4)
    h = rng.normal(size=(k, d))[y.numpy()] + 0.5 * rng.normal(size=(k * n, d))
    w = rng.normal(size=(k, d))
    want = float(nc_metrics(torch.as_tensor(h).unsqueeze(0), y, k,
                            torch.as_tensor(w).unsqueeze(0))["nc1"][0])
    h32 = torch.as_tensor(h.T, dtype=torch.float32).unsqueeze(0)
    w32 = torch.as_tensor(w, dtype=torch.float32).unsqueeze(0)
    got = float(gram.metrics(gram.from_parameters(h32, w32, None))["nc1"][0])
    assert got == pytest.approx(want, rel=1e-5)


def test_cdnv_of_large_batches_from_the_float64_gram_agrees(monkeypatch):
    """Past the direct-difference budget the pair distances come from a float64 Gram: cdnv
    agrees with the direct path to 1e-12 (float64) and 1e-6 (float32 features)."""
    import ncsim.metrics as metrics

    k, p = 12, 16
    h, y, w = _run(k, p, 5, seed=9)
    for dtype, rel in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        direct = _metrics(h, y, k, w, dtype)["cdnv"]
        monkeypatch.setattr(metrics, "_DIRECT_PAIR_TERMS", 0)
        gram = _metrics(h, y, k, w, dtype)["cdnv"]
        monkeypatch.undo()
        assert gram == pytest.approx(direct, rel=rel), dtype
