"""Extreme-parameter scan of ncsim.metrics and ncsim.onset: invariants and findings.

References are naive float64 numpy (metrics, on data first divided by an exact power of two)
and mpmath (onset interpolation), written from the module docstrings.
"""

import math
import warnings

import mpmath
import numpy as np
import pytest
import torch

from ncsim import metrics as M
from ncsim import onset as O

F64, F32 = torch.float64, torch.float32
SCALE_FREE = ("nc1", "nc1_trace", "nc2_etf", "nc2_etf_w", "nc2_equinorm", "nc2_equinorm_w",
              "nc2_angle", "nc3", "nc3_paper", "nc4", "cdnv")


def _reference(h, y, K, W):
    """Naive float64 metrics of one run (h (N, p), W (K, p)), from the module docstring."""
    s = 2.0 ** math.floor(math.log2(np.abs(h).max()))
    x, N = h / s, h.shape[0]
    mu = np.stack([x[y == c].mean(0) for c in range(K)])
    mb = mu - x.mean(0)
    e = x - mu[y]
    sw, sb = e.T @ e / N, mb.T @ mb / K
    etf_target = (np.eye(K) - 1 / K) / math.sqrt(K - 1)

    def etf(m):
        g = m @ m.T
        return np.linalg.norm(g / np.linalg.norm(g) - etf_target)

    wc = W - W.mean(0)
    nm, wn = np.linalg.norm(mb, axis=1), np.linalg.norm(W, axis=1)
    u = mb / nm[:, None]
    var = np.array([np.mean(np.sum(e[y == c] ** 2, 1)) for c in range(K)])
    pairs = [(var[a] + var[b]) / (2 * np.sum((mu[a] - mu[b]) ** 2))
             for a in range(K) for b in range(a + 1, K)]
    dist = ((x[:, None, :] - mu[None]) ** 2).sum(-1)
    return {
        "fn": np.linalg.norm(x, axis=1).mean() * s,
        "nc1": np.trace(sw @ np.linalg.pinv(sb, rcond=1e-12)) / K,
        "nc1_trace": np.trace(sw) / np.trace(sb),
        "nc2_etf": etf(mb),
        "nc2_etf_w": etf(wc),
        "nc2_equinorm": nm.std(ddof=1) / nm.mean(),
        "nc2_equinorm_w": wn.std(ddof=1) / wn.mean(),
        "nc2_angle": np.abs(u @ u.T + 1 / (K - 1))[~np.eye(K, dtype=bool)].sum() / (K * (K - 1)),
        "nc3": np.sum((wc / np.linalg.norm(wc) - mb / np.linalg.norm(mb)) ** 2),
        "nc3_paper": 1 - np.mean(np.sum(W / wn[:, None] * u, 1)),
        "nc4": np.mean(np.argmax(x @ W.T, 1) != np.argmin(dist, 1)),
        "cdnv": np.mean(pairs),
        "class_mean_norm": nm.mean() * s,
        "within_energy": np.trace(sw) * s * s,
        "w_norm": np.linalg.norm(W),
    }


def _data(K=4, n=3, p=6, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(K), n)
    h = np.repeat(rng.normal(size=(K, p)) * 3, n, 0) + rng.normal(size=(K * n, p))
    return h, y, rng.normal(size=(K, p))


def _metrics(h, y, K, W, dtype=F64):
    h, W = np.asarray(h), np.asarray(W)
    h = h if h.ndim == 3 else h[None]
    W = W if W.ndim == 3 else W[None]
    out = M.nc_metrics(torch.tensor(h, dtype=dtype), torch.tensor(y), K,
                       torch.tensor(W, dtype=dtype))
    return {k: v.tolist() for k, v in out.items()}


def _close(a, b, rtol, atol=0.0):
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= atol + rtol * abs(b)


# ------------------------------------------------------------------------------ metrics


@pytest.mark.parametrize("K,n,p", [(2, 3, 1), (3, 2, 2), (4, 3, 6), (10, 2, 23)])
@pytest.mark.parametrize("exp2", [-495, -100, 0, 100, 495])
def test_float64_metrics_match_naive_reference_from_1e_minus_149_to_1e149(K, n, p, exp2):
    """float64 nc_metrics equal a naive float64 reference at feature scales 2^+-495."""
    h, y, W = _data(K, n, p, seed=K + p)
    h = h * 2.0**exp2
    got, ref = _metrics(h, y, K, W), _reference(h, y, K, W)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for k, want in ref.items():
            assert _close(got[k][0], float(want), 1e-8, 0 if k in ("fn", "class_mean_norm",
                          "within_energy", "w_norm") else 1e-12), (k, got[k][0], want)


@pytest.mark.parametrize("dtype", [F64, F32])
def test_mixed_scale_batch_equals_runs_one_at_a_time_and_is_scale_invariant(dtype):
    """Runs at scales 1e-140..1e140 (f64) / 1e-15..1e15 (f32) in one batch: each equals its
    own call; scale-free metrics equal the unit run's; fn, class_mean_norm are degree 1."""
    h, y, W = _data()
    exps = (-140, -60, 0, 60, 140) if dtype == F64 else (-15, -5, 0, 5, 15)
    hs = np.stack([h * 10.0**e for e in exps])
    batch = _metrics(hs, y, 4, np.stack([W] * len(exps)), dtype)
    tol = 1e-9 if dtype == F64 else 2e-3
    unit = exps.index(0)
    for i, e in enumerate(exps):
        one = _metrics(hs[i], y, 4, W, dtype)
        for k in batch:
            assert _close(batch[k][i], one[k][0], 1e-12 if dtype == F64 else 1e-5), (k, e)
        for k in SCALE_FREE:
            assert _close(batch[k][i], batch[k][unit], tol, tol * 1e-3), (k, e)
        for k in ("fn", "class_mean_norm"):
            assert _close(batch[k][i], batch[k][unit] * 10.0**e, tol), (k, e)


def test_float32_agrees_with_float64_on_well_conditioned_data():
    """float32 metrics agree with float64 ones to float32 accuracy at scales 1e-15..1e15."""
    h, y, W = _data(K=5, n=4, p=8, seed=3)
    for e in (-15, 0, 15):
        x = h * 10.0**e
        a, b = _metrics(x, y, 5, W, F32), _metrics(x, y, 5, W, F64)
        for k in a:
            assert _close(a[k][0], b[k][0], 1e-3, 1e-5), (k, e)


def test_metrics_invariant_under_sample_and_class_permutations():
    """Permuting samples, or relabelling classes with W's rows, leaves every metric unchanged."""
    h, y, W = _data(K=6, n=3, p=5, seed=4)
    rng = np.random.default_rng(9)
    base = _metrics(h, y, 6, W)
    perm = rng.permutation(len(y))
    cls = rng.permutation(6)
    for other in (_metrics(h[perm], y[perm], 6, W),
                  _metrics(h, np.argsort(cls)[y], 6, W[cls])):
        for k in base:
            assert _close(other[k][0], base[k][0], 1e-10, 1e-14), k


@pytest.mark.parametrize("scale", [1e-140, 1e140])
def test_streaming_equals_batched_at_extreme_scales(scale):
    """StreamingNC over three batches gives the batched metrics at feature scales 1e+-140."""
    h, y, W = _data(K=3, n=4, p=5, seed=5)
    x, wt = torch.tensor(h * scale), torch.tensor(W)
    yt = torch.tensor(y)
    s = M.StreamingNC(3, 5)
    chunks = np.array_split(np.arange(len(y)), 3)
    for c in chunks:
        s.update(x[c], yt[c])
    s.begin_nc4()
    for c in chunks:
        s.update_nc4(x[c], x[c] @ wt.T)
    got = s.compute(wt)
    want = _metrics(h * scale, y, 3, W)
    for k, v in got.items():
        assert _close(v, want[k][0], 1e-8, 1e-12), k


def test_non_finite_run_leaves_the_other_runs_of_a_batch_untouched():
    """A run with a NaN / inf feature is NaN where it must be; the clean run in its batch is
    what it is alone (to 1e-14)."""
    h, y, W = _data(seed=6)
    alone = _metrics(h, y, 4, W)
    for bad in (math.nan, math.inf):
        hb = h.copy()
        hb[0, 0] = bad
        out = _metrics(np.stack([h, hb]), y, 4, np.stack([W, W]))
        for k in out:
            assert _close(out[k][0], alone[k][0], 1e-14), (k, bad)
        assert math.isnan(out["nc1"][1]) and math.isnan(out["nc1_trace"][1])


@pytest.mark.parametrize("offset", [0.0, 1e-150, 1.0, 1e150])
def test_identical_features_give_nan_not_a_rounding_residue(offset):
    """All features equal (at 0 or 1e+-150): nc1, nc1_trace, nc2_etf, cdnv NaN; fn exact."""
    _, y, W = _data(K=3, n=2, p=4)
    out = _metrics(np.full((6, 4), offset), y, 3, W)
    for k in ("nc1", "nc1_trace", "nc2_etf", "nc2_equinorm", "nc2_angle", "nc3", "cdnv"):
        assert math.isnan(out[k][0]), k
    assert out["fn"][0] == pytest.approx(2 * offset, rel=1e-15)
    assert out["within_energy"][0] == 0.0 and out["class_mean_norm"][0] == 0.0


@pytest.mark.parametrize("scale", [1.0, 1e-100, 1e100])
def test_equal_class_means_with_spread_give_infinite_nc1(scale):
    """Class means all equal, within spread nonzero: nc1 = nc1_trace = cdnv = +inf."""
    rng = np.random.default_rng(7)
    e, m = rng.normal(size=(3, 4)), rng.normal(size=4)
    h = np.concatenate([[m + e[c], m - e[c]] for c in range(3)]) * scale
    out = _metrics(h, np.repeat(np.arange(3), 2), 3, rng.normal(size=(3, 4)))
    assert out["nc1"][0] == out["nc1_trace"][0] == out["cdnv"][0] == math.inf


@pytest.mark.parametrize("w_scale", [1e-150, 1e150])
def test_classifier_metrics_are_scale_invariant_in_w_up_to_1e150(w_scale):
    """nc2_etf_w, nc2_equinorm_w, nc3, nc3_paper, nc4 of W * 1e+-150 equal those of W."""
    h, y, W = _data(seed=8)
    a, b = _metrics(h, y, 4, W), _metrics(h, y, 4, W * w_scale)
    for k in ("nc2_etf_w", "nc2_equinorm_w", "nc3", "nc3_paper", "nc4"):
        assert _close(b[k][0], a[k][0], 1e-12, 1e-15), k


def test_exactly_collapsed_features_on_large_offset_give_zero_nc1():
    """Every sample at its class mean, means on a 1e12 offset: nc1 = nc1_trace = cdnv = 0."""
    rng = np.random.default_rng(10)
    y = np.repeat(np.arange(3), 2)
    h = (rng.normal(size=(3, 4)) + 1e12)[y]
    out = _metrics(h, y, 3, rng.normal(size=(3, 4)))
    assert out["nc1"][0] == out["nc1_trace"][0] == out["cdnv"][0] == 0.0


def _pm_2e19(dtype):
    x = torch.tensor([-1.0, -1.0 + 2**-10, 1.0, 1.0 + 2**-10], dtype=F64) * 2e19
    return x.to(dtype).reshape(1, 4, 1)


def test_float32_nc1_trace_of_features_near_2e19_is_not_a_false_zero():
    """float32 K=2, p=1 features at +-2e19: nc1_trace / cdnv are NaN or the f64 values."""
    y = torch.tensor([0, 0, 1, 1])
    want = M.nc_metrics(_pm_2e19(F64), y, 2, torch.tensor([[[-1.0], [1.0]]], dtype=F64))
    got = M.nc_metrics(_pm_2e19(F32), y, 2, torch.tensor([[[-1.0], [1.0]]]))
    assert float(want["nc1_trace"][0]) == pytest.approx(2.384e-7, rel=1e-3)
    for k in ("nc1_trace", "cdnv", "nc3"):  # squares past float32's range: no digits left
        assert math.isnan(float(got[k][0])), k


def test_nc3_paper_of_a_huge_classifier_is_not_a_silent_one():
    """nc3_paper(W * 1e200) is nc3_paper(W) (0.0821 here) or NaN, never a finite other value."""
    y = torch.tensor([0, 0, 1, 1])
    rng = np.random.default_rng(0)
    h = torch.tensor(rng.normal(size=(1, 4, 2)) + np.array([[3, 0]] * 2 + [[-3, 0]] * 2))
    W = torch.tensor([[[1.0, 0.5], [-1.0, 0.2]]], dtype=F64)
    mbar = M.class_statistics(h, y, 2).means_centred
    want = float(M.nc3_paper(W, mbar))
    got = float(M.nc3_paper(W * 1e200, mbar))
    assert want == pytest.approx(0.0821, abs=1e-4) and math.isnan(got)


# ------------------------------------------------------------------------------ onset

_VALUES = [0.0, 1e-300, 1e-150, 0.005, 0.01, 0.5, 3.0, 1e150, 1e300, -1.0, math.inf,
           -math.inf, math.nan]
_TIMES = [-1.0, 0.0, 1e-300, 1e-5, 1.0, 2.0, 1e5, 1e150, 1e300]


def _ref_onset(t, v, thr, stay):
    """Onset time by the module docstring's rules, interpolated in mpmath."""
    keep = np.isfinite(t) & ~np.isnan(v)
    tt, vv = t[keep], v[keep]
    hits = [i for i in range(len(vv) - stay + 1) if all(vv[i:i + stay] < thr)]
    if not hits:
        return math.nan
    i = hits[0]
    if i == 0:
        return float(tt[0])
    t0, t1, v0, v1 = tt[i - 1], tt[i], vv[i - 1], vv[i]
    if math.isinf(v0) or math.isinf(v1) or t0 == t1:
        return float(t1)
    f = mpmath.log if v0 > 0 and v1 > 0 and thr > 0 else mpmath.mpf
    a, b, c = f(v0), f(v1), f(thr)
    frac = min(max((c - a) / (b - a), 0), 1)
    if t0 > 0:
        return float(mpmath.exp(mpmath.log(t0) + frac * (mpmath.log(t1) - mpmath.log(t0))))
    return float(t0 + frac * (mpmath.mpf(t1) - t0))


def test_onset_time_matches_an_mpmath_reference_on_extreme_series():
    """onset_time of 400 random series (values 1e-300..1e300, +-inf, NaN, times -1..1e300)
    agrees with an mpmath evaluation of the documented rules, without warnings."""
    rng = np.random.default_rng(11)
    mpmath.mp.prec = 120
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(400):
            T = int(rng.integers(1, 6))
            t = np.sort(rng.choice(_TIMES, size=T))
            v = rng.choice(_VALUES, size=T)
            thr = float(rng.choice([0.01, 1.0, 0.0, 1e-300, 1e300]))
            stay = int(rng.integers(1, 3))
            got, want = O.onset_time(t, v, thr, stay), _ref_onset(t, v, thr, stay)
            span = np.abs(t).max()
            assert (math.isnan(got) and math.isnan(want)) or abs(got - want) <= 1e-14 * span \
                or got == pytest.approx(want, rel=1e-12), (t, v, thr, stay)


def test_batched_onsets_equal_scalar_onsets_bit_for_bit_on_extreme_series():
    """onsets_and_fn of 300 extreme series equals onset_and_fn of each, bit for bit."""
    rng = np.random.default_rng(12)
    t = np.array([0.0, 1e-300, 1e-5, 1.0, 1.0, 1e5, 1e150, 1e300])
    values = rng.choice(_VALUES, size=(300, t.size))
    fn = rng.choice(_VALUES, size=(300, t.size))
    for thr, stay in ((0.01, 1), (1e-300, 2), (0.0, 1)):
        when, fn_on = O.onsets_and_fn(t, values, fn, thr, stay)
        for i in range(values.shape[0]):
            w1, f1 = O.onset_and_fn(t, values[i], fn[i], thr, stay)
            assert np.array_equal([when[i], fn_on[i]], [w1, f1], equal_nan=True), i


def test_interpolated_onset_never_precedes_the_record_before_the_crossing():
    """onset_time([123, 184.5], [0.01000000000000001, 0.001]) lies in [123, 184.5]."""
    t = np.array([123.0, 184.5])
    assert 123.0 <= O.onset_time(t, np.array([0.01000000000000001, 0.001])) <= 184.5


def test_fn_at_onset_on_an_intervention_time_comes_from_the_crossing_segment():
    """nc1 at the threshold on both sides of a fn jump at t=2, below at t=4: fn* = 100."""
    t = np.array([1.0, 2.0, 2.0, 4.0])
    nc1 = np.array([0.1, 0.01, 0.01, 0.001])
    fn = np.array([1.0, 1.0, 100.0, 100.0])
    assert O.onset_and_fn(t, nc1, fn, threshold=0.01) == (2.0, 100.0)


def _float32_batch(scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features (1, 12, 3), labels, W (1, 3, 3)) of a K = 3 set with spread and noise, the
    features at ``scale``, in float64."""
    gen = torch.Generator().manual_seed(7)
    y = torch.arange(3).repeat(4)
    h = (torch.eye(3, dtype=F64)[y] + 0.1 * torch.randn(12, 3, generator=gen, dtype=F64))
    w = torch.eye(3, dtype=F64) + 0.2 * torch.randn(3, 3, generator=gen, dtype=F64)
    return (h * scale).unsqueeze(0), y, w.unsqueeze(0)


def test_every_scale_free_metric_is_nan_once_float32_squares_overflow():
    """float32 features at 1e18 give the float64 values (squares fit); at 3e19 (|h|^2 past
    3.4e38) every scale-free metric is NaN, not a plausible number (nc1_trace was 0)."""
    for scale, fits in ((1e18, True), (3e19, False)):
        h, y, w = _float32_batch(scale)
        want = M.nc_metrics(h, y, 3, w)
        got = M.nc_metrics(h.float(), y, 3, w.float())
        for k in ("nc1", "nc1_trace", "nc2_etf", "nc2_equinorm", "nc2_angle", "nc3",
                  "nc3_paper", "nc4", "cdnv"):
            if fits:
                assert float(got[k][0]) == pytest.approx(float(want[k][0]), rel=1e-3,
                                                         abs=1e-6), k
            else:
                assert math.isnan(float(got[k][0])), k


def test_a_classifier_whose_squares_overflow_leaves_its_metrics_nan():
    """W at 1e200 (float64): the metrics of W's norms are NaN and w_norm inf; nc4 (logits
    ~1e200 still fit) and the feature metrics are those of the unit-scale W; at 1e308 the
    logits overflow too and nc4 is NaN."""
    h, y, w = _float32_batch(1.0)
    unit = M.nc_metrics(h, y, 3, w)
    huge = M.nc_metrics(h, y, 3, w * 1e200)
    for k in ("nc2_etf_w", "nc2_equinorm_w", "nc3", "nc3_paper"):
        assert math.isnan(float(huge[k][0])), k
    assert float(huge["w_norm"][0]) == math.inf
    for k in ("nc1", "nc1_trace", "nc2_etf", "nc2_angle", "cdnv", "fn", "nc4"):
        assert float(huge[k][0]) == float(unit[k][0]), k
    means = M.class_statistics(h, y, 3).means
    assert math.isnan(float(M.nc4(h * 10, w * 1e308, None, means * 10)[0]))
    assert math.isnan(float(M.nc_metrics(h * 10, y, 3, w * 1e308)["nc4"][0]))


def test_streaming_nc4_with_an_infinite_logit_is_nan():
    """StreamingNC: a batch whose logits hold an inf makes nc4 NaN, as the batched nc4."""
    h, y, w = _float32_batch(1.0)
    stream = M.StreamingNC(3, 3)
    stream.update(h[0], y)
    stream.begin_nc4()
    logits = h[0] @ w[0].T
    stream.update_nc4(h[0, :6], logits[:6])
    bad = logits[6:].clone()
    bad[0, 1] = math.inf
    stream.update_nc4(h[0, 6:], bad)
    assert math.isnan(stream.compute(w[0])["nc4"])
    clean = M.StreamingNC(3, 3)
    clean.update(h[0], y)
    clean.begin_nc4()
    clean.update_nc4(h[0], logits)
    assert clean.compute(w[0])["nc4"] == pytest.approx(float(M.nc_metrics(h, y, 3, w)["nc4"][0]))
