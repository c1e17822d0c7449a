"""Tests of ncsim.metrics: a naive float64 oracle, analytic cases, streaming and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ncsim.errors import InputError
from ncsim.metrics import (
    METRIC_NAMES,
    StreamingNC,
    cdnv,
    class_mean_norm,
    class_statistics,
    feature_norm,
    nc1,
    nc1_trace,
    nc2_angle,
    nc2_equinorm,
    nc2_equinorm_w,
    nc2_etf,
    nc2_etf_w,
    nc3,
    nc3_paper,
    nc4,
    nc_metrics,
)

COUNTS = (5, 7, 6, 9)
K = len(COUNTS)


# --------------------------------------------------------------------------------------------
# naive reference: plain loops over samples and classes, float64 numpy
# --------------------------------------------------------------------------------------------


def _etf_dist(x: np.ndarray) -> float:
    k = x.shape[0]
    g = x @ x.T
    g = g / np.linalg.norm(g)
    target = (np.eye(k) - np.ones((k, k)) / k) / math.sqrt(k - 1)
    return float(np.linalg.norm(g - target))


def naive_metrics(h, y, k, w=None, b=None, global_mean="sample") -> dict[str, float]:
    """Every metric of one run. h (N, p), y (N,), w (K, p), b (K,) or None."""
    h = np.asarray(h, dtype=np.float64)
    n, p = h.shape
    counts = np.zeros(k)
    sums = np.zeros((k, p))
    for i in range(n):
        counts[y[i]] += 1
        sums[y[i]] += h[i]
    means = sums / counts[:, None]
    mu_g = h.mean(0) if global_mean == "sample" else means.mean(0)
    sw = np.zeros((p, p))
    var = np.zeros(k)
    for i in range(n):
        d = h[i] - means[y[i]]
        sw += np.outer(d, d)
        var[y[i]] += d @ d
    sw /= n
    var /= counts
    mbar = means - mu_g
    sb = np.zeros((p, p))
    for c in range(k):
        sb += np.outer(mbar[c], mbar[c])
    sb /= k
    out = {
        "fn": float(np.mean([np.linalg.norm(h[i]) for i in range(n)])),
        "nc1": float(np.trace(sw @ np.linalg.pinv(sb, rcond=1e-10, hermitian=True)) / k),
        "nc1_trace": float(np.trace(sw) / np.trace(sb)),
        "nc2_etf": _etf_dist(mbar),
    }
    norms = np.array([np.linalg.norm(mbar[c]) for c in range(k)])
    out["nc2_equinorm"] = float(np.std(norms, ddof=1) / np.mean(norms))
    dev = []
    for c in range(k):
        for c2 in range(k):
            if c != c2:
                cos = mbar[c] @ mbar[c2] / (norms[c] * norms[c2])
                dev.append(abs(cos + 1.0 / (k - 1)))
    out["nc2_angle"] = float(np.mean(dev))
    ratios = []
    for c in range(k):
        for c2 in range(c + 1, k):
            dist2 = np.sum((means[c] - means[c2]) ** 2)
            ratios.append((var[c] + var[c2]) / (2.0 * dist2))
    out["cdnv"] = float(np.mean(ratios))
    out["class_mean_norm"] = float(np.mean(norms))
    out["within_energy"] = float(np.trace(sw))
    if w is not None:
        w = np.asarray(w, dtype=np.float64)
        wc = w - w.mean(0)
        out["nc2_etf_w"] = _etf_dist(wc)
        wn = np.array([np.linalg.norm(w[c]) for c in range(k)])
        out["nc2_equinorm_w"] = float(np.std(wn, ddof=1) / np.mean(wn))
        out["nc3"] = float(np.sum((wc / np.linalg.norm(wc) - mbar / np.linalg.norm(mbar)) ** 2))
        cosines = [w[c] @ mbar[c] / (wn[c] * norms[c]) for c in range(k)]
        out["nc3_paper"] = float(1.0 - np.mean(cosines))
        out["w_norm"] = float(np.linalg.norm(w))
        mism = 0
        for i in range(n):
            logits = w @ h[i] + (0.0 if b is None else np.asarray(b))
            ncc = int(np.argmin([np.linalg.norm(h[i] - means[c]) for c in range(k)]))
            mism += int(np.argmax(logits)) != ncc
        out["nc4"] = mism / n
    return out


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def _labels(counts=COUNTS, seed=0) -> torch.Tensor:
    y = np.concatenate([np.full(c, i) for i, c in enumerate(counts)])
    return torch.as_tensor(np.random.default_rng(seed).permutation(y), dtype=torch.int64)


def _data(r=3, p=6, counts=COUNTS, seed=0, dtype=torch.float64, spread=0.7):
    """Random features around random class centres, plus a random classifier and bias."""
    g = torch.Generator().manual_seed(seed)
    k = len(counts)
    y = _labels(counts, seed)
    centres = 2.0 * torch.randn(r, k, p, generator=g, dtype=torch.float64)
    h = centres[:, y] + spread * torch.randn(r, len(y), p, generator=g, dtype=torch.float64)
    h = h + torch.randn(r, 1, p, generator=g, dtype=torch.float64)  # common offset per run
    w = torch.randn(r, k, p, generator=g, dtype=torch.float64)
    b = 0.3 * torch.randn(r, k, generator=g, dtype=torch.float64)
    return h.to(dtype), y, w.to(dtype), b.to(dtype)


def _simplex(k: int, p: int, scale: float = 1.0) -> torch.Tensor:
    """(K, p) rows of a simplex ETF with |row| = scale, embedded in the first K coordinates."""
    e = torch.eye(k, dtype=torch.float64) - 1.0 / k
    e = e / torch.linalg.vector_norm(e, dim=1, keepdim=True) * scale
    out = torch.zeros(k, p, dtype=torch.float64)
    out[:, :k] = e
    q, _ = torch.linalg.qr(
        torch.randn(p, p, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    )
    return out @ q.T  # random rotation


def _assert_close(got: dict, want: dict, rtol: float, atol: float = 0.0) -> None:
    for key, value in want.items():
        g = float(got[key])
        assert math.isclose(g, value, rel_tol=rtol, abs_tol=atol), (key, g, value)


# --------------------------------------------------------------------------------------------
# against the naive oracle
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [6, 2])
@pytest.mark.parametrize("global_mean", ["sample", "class_average"])
def test_matches_naive(p, global_mean):
    h, y, w, b = _data(r=3, p=p)
    got = nc_metrics(h, y, K, w, b, global_mean=global_mean)
    assert tuple(got) == METRIC_NAMES
    for r in range(3):
        want = naive_metrics(h[r].numpy(), y.numpy(), K, w[r].numpy(), b[r].numpy(), global_mean)
        _assert_close({k: v[r] for k, v in got.items()}, want, rtol=1e-10, atol=1e-14)


def test_single_functions_match_nc_metrics():
    h, y, w, b = _data(r=2, p=5)
    all_ = nc_metrics(h, y, K, w, b)
    st = class_statistics(h, y, K)
    mbar = st.means_centred
    single = {
        "fn": feature_norm(h),
        "nc1": nc1(h, y, K),
        "nc1_trace": nc1_trace(h, y, K),
        "nc2_etf": nc2_etf(mbar),
        "nc2_etf_w": nc2_etf_w(w),
        "nc2_equinorm": nc2_equinorm(mbar),
        "nc2_equinorm_w": nc2_equinorm_w(w),
        "nc2_angle": nc2_angle(mbar),
        "nc3": nc3(w, mbar),
        "nc3_paper": nc3_paper(w, mbar),
        "nc4": nc4(h, w, b, st.means),
        "cdnv": cdnv(h, y, K),
        "class_mean_norm": class_mean_norm(mbar),
        "within_energy": st.within_energy,
    }
    for key, value in single.items():
        assert value.shape == (2,)
        # nc_metrics takes nc1 from a wider product of the centred features (equal to rounding)
        rtol = 1e-13 if key == "nc1" else 0.0
        torch.testing.assert_close(value, all_[key], rtol=rtol, atol=0)


def test_class_statistics_matrices():
    h, y, _, _ = _data(r=2, p=4)
    st = class_statistics(h, y, K)
    for r in range(2):
        hr, mr = h[r].numpy(), st.means[r].numpy()
        d = hr - mr[y.numpy()]
        np.testing.assert_allclose(st.sigma_w[r].numpy(), d.T @ d / len(y), rtol=1e-12)
        mb = mr - hr.mean(0)
        np.testing.assert_allclose(st.sigma_b[r].numpy(), mb.T @ mb / K, rtol=1e-12)
    assert st.counts.tolist() == list(COUNTS)
    torch.testing.assert_close(st.within_energy, torch.diagonal(st.sigma_w, 0, 1, 2).sum(-1))


# --------------------------------------------------------------------------------------------
# analytic cases
# --------------------------------------------------------------------------------------------


ZERO_AT_ETF = (
    "nc1",
    "nc1_trace",
    "nc2_etf",
    "nc2_etf_w",
    "nc2_equinorm",
    "nc2_equinorm_w",
    "nc2_angle",
    "nc3",
    "nc3_paper",
    "nc4",
    "cdnv",
)


@pytest.mark.parametrize(
    ("counts", "global_mean"), [((6, 6, 6, 6), "sample"), (COUNTS, "class_average")]
)
def test_simplex_etf_is_fully_collapsed(counts, global_mean):
    p = 6
    m = _simplex(K, p, scale=2.5)
    offset = torch.linspace(-1.0, 3.0, p, dtype=torch.float64)
    y = _labels(counts)
    h = (m[y] + offset).unsqueeze(0)
    w = m.unsqueeze(0)  # centred means
    got = nc_metrics(h, y, K, w, torch.zeros(1, K, dtype=torch.float64), global_mean)
    for key in ZERO_AT_ETF:
        assert abs(float(got[key])) < 1e-12, key
    assert abs(float(got["class_mean_norm"]) - 2.5) < 1e-12
    assert abs(float(got["within_energy"])) < 1e-24


def test_scaling_invariance():
    h, y, w, _ = _data(r=2, p=6)
    a = nc_metrics(h, y, K, w)
    s = nc_metrics(7.0 * h, y, K, w)
    scaled = {"fn": 7.0, "class_mean_norm": 7.0, "within_energy": 49.0}
    for key in METRIC_NAMES:
        torch.testing.assert_close(s[key], scaled.get(key, 1.0) * a[key], rtol=1e-12, atol=1e-14)


def test_orthogonal_frame_mse_optimum():
    p, scale = 7, 3.0
    q, _ = torch.linalg.qr(
        torch.randn(p, K, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    )
    w = 1.7 * q.T  # (K, p), W W^T = 1.7^2 I
    y = _labels((5, 5, 5, 5))
    h = (w[y] / scale).unsqueeze(0)
    got = nc_metrics(h, y, K, w.unsqueeze(0))
    for key in ("nc2_etf_w", "nc3", "nc2_etf", "nc1", "nc4"):
        assert abs(float(got[key])) < 1e-12, key
    assert float(nc2_etf(w.unsqueeze(0))) > 0.1  # the raw frame itself is not an ETF


@pytest.mark.parametrize("offset", [0.0, 1.0, 1e3])
@pytest.mark.parametrize("global_mean", ["sample", "class_average"])
def test_nc1_rank_deficient_means(offset, global_mean):
    """Class means in a 2-D plane of R^6 (rank 2 < K-1 = 3), within-class spread in all 6."""
    g = torch.Generator().manual_seed(0)
    y = _labels()
    centres = torch.zeros(K, 6, dtype=torch.float64)
    centres[:, :2] = torch.randn(K, 2, generator=g, dtype=torch.float64)
    noise = 0.3 * torch.randn(len(y), 6, generator=g, dtype=torch.float64)
    for c in range(K):
        noise[y == c] -= noise[y == c].mean(0)  # the class means stay in the plane
    h = centres[y] + noise
    want = naive_metrics(h.numpy(), y.numpy(), K, global_mean=global_mean)["nc1"]
    got = float(nc1((h + offset).unsqueeze(0), y, K, global_mean))
    assert got == pytest.approx(want, rel=1e-7 if offset > 1 else 1e-10)


def test_hand_example_k2():
    # class 0: (0,0), (2,0) -> mu_0 = (1,0); class 1: (0,4), (0,6) -> mu_1 = (0,5)
    h = torch.tensor([[[0.0, 0.0], [0.0, 4.0], [2.0, 0.0], [0.0, 6.0]]], dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1])
    # Sigma_W = I/2, tr = 1; mu_G = (0.5, 2.5); Mbar = +-(0.5, -2.5), tr(Sigma_B) = 6.5
    assert float(nc1_trace(h, y, 2)) == pytest.approx(2.0 / 13.0, rel=1e-14)
    # Var_0 = Var_1 = 1, |mu_0 - mu_1|^2 = 26
    assert float(cdnv(h, y, 2)) == pytest.approx(1.0 / 26.0, rel=1e-14)
    # Sigma_B = v v^T, v = (0.5, -2.5): tr(Sigma_W Sigma_B^+)/2 = (1/2)(1/2)/|v|^2 = 1/26
    assert float(nc1(h, y, 2)) == pytest.approx(1.0 / 26.0, rel=1e-14)
    assert float(feature_norm(h)) == pytest.approx((0 + 4 + 2 + 6) / 4, rel=1e-14)


def test_doubled_vertex_breaks_etf():
    k, p = 5, 8
    m = _simplex(k, p)
    m[0] *= 2.0
    # centre kept at the original ETF centre: the value rhubarbwu/neural-collapse's
    # simplex_etf_error gives (anchors.md A.1)
    assert float(nc2_etf(m.unsqueeze(0))) == pytest.approx(0.604, abs=5e-4)
    # through the pipeline the means are re-centred; still far from an ETF
    y = _labels((4,) * k)
    st = class_statistics(m[y].unsqueeze(0), y, k)
    assert float(nc2_etf(st.means_centred)) > 0.5
    assert float(nc2_equinorm(st.means_centred)) > 0.1


def test_exact_collapse_has_no_nan():
    h, y, w, b = _data(r=2, p=6, spread=0.0)
    got = nc_metrics(h, y, K, w, b)
    for key in METRIC_NAMES:
        assert torch.isfinite(got[key]).all(), key
    for key in ("nc1", "nc1_trace", "cdnv", "within_energy"):
        assert torch.all(got[key].abs() < 1e-28), key  # 0 up to the rounding of the means


def test_zero_features_conventions():
    y = _labels()
    h = torch.zeros(1, len(y), 3, dtype=torch.float64)
    w = torch.randn(1, K, 3, dtype=torch.float64)
    got = nc_metrics(h, y, K, w)
    for key in ("fn", "class_mean_norm", "within_energy", "nc4"):
        assert float(got[key]) == 0.0, key
    assert float(got["w_norm"]) > 0
    assert math.isfinite(float(got["nc2_etf_w"]))
    for key in ("nc1", "nc1_trace", "nc2_etf", "nc2_angle", "nc3", "cdnv"):
        assert math.isnan(float(got[key])), key  # 0/0: undefined, never "collapsed"


def test_within_spread_but_equal_means_is_inf():
    y = torch.tensor([0, 0, 1, 1])
    h = torch.tensor([[[1.0], [-1.0], [2.0], [-2.0]]], dtype=torch.float64)
    assert float(nc1_trace(h, y, 2)) == math.inf
    assert float(nc1(h, y, 2)) == math.inf


# --------------------------------------------------------------------------------------------
# batching, dtype
# --------------------------------------------------------------------------------------------


def test_batch_equals_single_runs():
    h, y, w, b = _data(r=4, p=6, seed=5)
    batch = nc_metrics(h, y, K, w, b)
    for r in range(4):
        one = nc_metrics(h[r : r + 1], y, K, w[r : r + 1], b[r : r + 1])
        for key in METRIC_NAMES:
            torch.testing.assert_close(one[key][0], batch[key][r], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("global_mean", ["sample", "class_average"])
def test_float32_close_to_float64(global_mean):
    h, y, w, b = _data(r=3, p=6, seed=2)
    ref = nc_metrics(h, y, K, w, b, global_mean)
    got = nc_metrics(h.float(), y, K, w.float(), b.float(), global_mean)
    for key in METRIC_NAMES:
        assert got[key].dtype == torch.float32
        torch.testing.assert_close(got[key].double(), ref[key], rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------------------------
# streaming
# --------------------------------------------------------------------------------------------


def _stream(h, y, w, b, chunks, global_mean="sample", nc4_pass=True):
    acc = StreamingNC(K, h.shape[1])
    bounds = np.cumsum([0, *chunks])
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        acc.update(h[lo:hi], y[lo:hi])
    if nc4_pass:
        acc.begin_nc4()
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            acc.update_nc4(h[lo:hi], h[lo:hi] @ w.T + b)
    return acc.compute(w, b, global_mean)


@pytest.mark.parametrize("global_mean", ["sample", "class_average"])
def test_streaming_equals_batched(global_mean):
    h, y, w, b = _data(r=1, p=6, seed=7)
    chunks = [1, 4, 13, 2, 7]
    assert sum(chunks) == len(y)
    got = _stream(h[0], y, w[0], b[0], chunks, global_mean)
    want = nc_metrics(h, y, K, w, b, global_mean)
    assert tuple(got) == METRIC_NAMES
    _assert_close(got, {k: float(v[0]) for k, v in want.items()}, rtol=1e-10, atol=1e-14)


def test_streaming_without_weights_or_nc4():
    h, y, _, _ = _data(r=1, p=3, seed=4)
    acc = StreamingNC(K, 3)
    acc.update(h[0], y)
    got = acc.compute()
    assert set(got) == set(METRIC_NAMES) - {
        "nc2_etf_w",
        "nc2_equinorm_w",
        "nc3",
        "nc3_paper",
        "w_norm",
        "nc4",
    }
    assert acc.n_samples == len(y)


def test_streaming_stable_under_large_offset():
    h, y, w, b = _data(r=1, p=6, seed=9)
    h0 = h[0] - h[0].mean(0)
    shifted = h0 + 1e6
    got = _stream(shifted, y, w[0], b[0], [3, 10, 1, 13], nc4_pass=False)
    want = naive_metrics(h0.numpy(), y.numpy(), K, w[0].numpy(), b[0].numpy())
    want.pop("fn")
    want.pop("nc4")
    # float64 has ~16 digits; the 1e6 offset leaves ~10 for the centred quantities
    _assert_close(got, want, rtol=1e-8, atol=1e-12)
    # raw second moments, E|h|^2 - |E h|^2, would keep only ~4 digits here
    x = shifted.numpy()
    raw = np.mean(np.sum(x * x, 1)) - np.sum(x.mean(0) ** 2)
    assert abs(raw - np.sum(np.var(h0.numpy(), 0))) > 1e-6


def test_streaming_nc4_pass_order():
    h, y, w, b = _data(r=1, p=3)
    acc = StreamingNC(K, 3)
    with pytest.raises(InputError, match="before begin_nc4"):
        acc.update_nc4(h[0], h[0] @ w[0].T)
    acc.update(h[0], y)
    acc.begin_nc4()
    with pytest.raises(InputError, match="pass 1 is closed"):
        acc.update(h[0], y)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


def _one_line(excinfo) -> None:
    assert isinstance(excinfo.value, ValueError)
    assert "\n" not in str(excinfo.value)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda h, y, w, b: (h, torch.where(y == 3, 4, y), w, b), "labels must lie in"),
        (lambda h, y, w, b: (h, torch.where(y == 3, -1, y), w, b), "labels must lie in"),
        (lambda h, y, w, b: (h, y[:-1], w, b), "labels must be a"),
        (lambda h, y, w, b: (h, y.double(), w, b), "integer"),
        (lambda h, y, w, b: (h[0], y, w, b), "features must be an"),
        (lambda h, y, w, b: (h, y, w[:, :3], b), "weights must have shape"),
        (lambda h, y, w, b: (h, y, w[:, :, :2], b), "weights must have shape"),
        (lambda h, y, w, b: (h, y, w, b[:, :2]), "bias must have shape"),
        (lambda h, y, w, b: (h, y, w.float(), b), "weights are"),
        (lambda h, y, w, b: (h, torch.where(y == 2, 1, y), w, b), "no samples"),
    ],
)
def test_bad_input(mutate, match):
    h, y, w, b = mutate(*_data(r=2, p=4))
    with pytest.raises(InputError, match=match) as excinfo:
        nc_metrics(h, y, K, w, b)
    _one_line(excinfo)


def test_bad_options():
    h, y, w, _ = _data(r=1, p=4)
    with pytest.raises(InputError, match="global_mean") as excinfo:
        nc_metrics(h, y, K, w, global_mean="weighted")
    _one_line(excinfo)
    with pytest.raises(InputError, match="K must be"):
        nc1(h, torch.zeros_like(y), 1)
    with pytest.raises(InputError, match="features must be a"):
        StreamingNC(K, 4).update(h[0, :, :3], y)
    with pytest.raises(InputError, match="labels must lie in"):
        StreamingNC(K, 4).update(h[0], y + 1)
    with pytest.raises(InputError, match="no samples"):
        StreamingNC(K, 4).compute()
    acc = StreamingNC(K, 4)
    acc.update(h[0], y)
    with pytest.raises(InputError, match="weights must have shape"):
        acc.compute(w)


def test_nc4_takes_the_first_of_tied_classes_as_argmax_and_argmin_do():
    """Integer logits and integer distances tie often; the mismatch uses the first tied class
    on both sides (torch.argmax/argmin), also for a NaN logit (taken as the maximum)."""
    from ncsim.metrics import _ncc_mismatch

    gen = torch.Generator().manual_seed(4)
    feats = torch.randint(-2, 3, (3, 40, 5), generator=gen).double()
    means = torch.randint(-2, 3, (3, 4, 5), generator=gen).double()
    means[:, 3] = -means[:, :3].sum(1)  # the average class mean is 0: exact integer scores
    logits = torch.randint(0, 3, (3, 40, 4), generator=gen).double()
    logits[0, 0, 2] = float("nan")
    score = (means * means).sum(-1).unsqueeze(-2) - 2.0 * feats @ means.transpose(-1, -2)
    expected = logits.argmax(-1) != score.argmin(-1)
    assert (score == score.min(-1, keepdim=True).values).sum(-1).gt(1).any()  # ties occur
    assert (logits == logits.amax(-1, keepdim=True)).sum(-1).gt(1).any()
    mismatch, finite = _ncc_mismatch(feats, logits, means)
    assert torch.equal(mismatch, expected)
    assert finite.tolist() == [False, True, True]  # the NaN logit of run 0


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16, torch.int8,
                                   torch.uint8])
def test_every_integer_label_dtype_gives_the_same_metrics(dtype):
    """uint8 (IDX files), int8, int16 and int32 labels are class indices like int64 ones:
    the same metrics, batched and streamed (they passed the check, then failed in a gather);
    a numpy K is an integer K."""
    K, n, p = 4, 5, 6
    g = torch.Generator().manual_seed(0)
    h = torch.randn(1, K * n, p, generator=g, dtype=torch.float64)
    w = torch.randn(1, K, p, generator=g, dtype=torch.float64)
    y = torch.arange(K).repeat_interleave(n)
    want = nc_metrics(h, y, K, w)
    got = nc_metrics(h, y.to(dtype), np.int64(K), w)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0, equal_nan=True)
    stream = StreamingNC(K, p)
    stream.update(h[0], y.to(dtype))
    reference = StreamingNC(K, p)
    reference.update(h[0], y)
    got_stats, want_stats = vars(stream.stats()), vars(reference.stats())
    assert got_stats.keys() == want_stats.keys()
    for name, value in want_stats.items():
        torch.testing.assert_close(got_stats[name], value, rtol=0, atol=0)


def test_features_that_are_not_a_tensor_are_refused_in_one_line():
    with pytest.raises(InputError, match=r"features must be an \(R, N, p\) tensor, got shape "
                                         r"ndarray"):
        nc_metrics(np.zeros((1, 4, 2)), torch.tensor([0, 0, 1, 1]), 2, torch.zeros(1, 2, 2))
