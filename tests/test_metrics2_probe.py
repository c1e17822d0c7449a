"""Mutation probe of ncsim.metrics: naive numpy oracles, streaming vs one-shot, batched vs loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncsim.metrics import (
    METRIC_NAMES,
    StreamingNC,
    nc2_etf,
    nc2_etf_w,
    nc4,
    nc_metrics,
)

COUNTS = (3, 8, 5, 11, 4)  # imbalanced on purpose
K = len(COUNTS)


def _labels():
    y = np.concatenate([np.full(c, k) for k, c in enumerate(COUNTS)])
    return np.random.default_rng(0).permutation(y)


def _data(r, p, seed, spread=2.0):
    rng = np.random.default_rng(seed)
    y = _labels()
    centres = spread * rng.standard_normal((r, K, p))
    h = centres[:, y, :] + rng.standard_normal((r, len(y), p))
    w = rng.standard_normal((r, K, p))
    b = rng.standard_normal((r, K))
    return h, y, w, b


def _naive(h, y, w, b, global_mean):
    """Every metric of one run straight from the definitions (float64 numpy, loops)."""
    n, p = h.shape
    mu = np.stack([h[y == c].mean(0) for c in range(K)])
    mg = h.mean(0) if global_mean == "sample" else mu.mean(0)
    mbar = mu - mg
    sw = np.zeros((p, p))
    for i in range(n):
        d = h[i] - mu[y[i]]
        sw += np.outer(d, d) / n
    sb = sum(np.outer(m, m) for m in mbar) / K
    out = {"fn": np.mean([np.linalg.norm(x) for x in h])}
    out["nc1"] = np.trace(sw @ np.linalg.pinv(sb, rcond=1e-9, hermitian=True)) / K
    out["nc1_trace"] = np.trace(sw) / np.trace(sb)

    def etf(x):
        g = x @ x.T
        t = (np.eye(K) - np.ones((K, K)) / K) / np.sqrt(K - 1)
        return np.linalg.norm(g / np.linalg.norm(g) - t)

    def cv(x):
        nr = np.linalg.norm(x, axis=1)
        return np.std(nr, ddof=1) / np.mean(nr)

    wc = w - w.mean(0)
    out["nc2_etf"] = etf(mbar)
    out["nc2_etf_w"] = etf(wc)
    out["nc2_equinorm"] = cv(mbar)
    out["nc2_equinorm_w"] = cv(w)
    pairs = []
    for c in range(K):
        for d in range(K):
            if c != d:
                cos = mbar[c] @ mbar[d] / np.linalg.norm(mbar[c]) / np.linalg.norm(mbar[d])
                pairs.append(abs(cos + 1.0 / (K - 1)))
    out["nc2_angle"] = np.mean(pairs)
    out["nc3"] = np.linalg.norm(wc / np.linalg.norm(wc) - mbar / np.linalg.norm(mbar)) ** 2
    cosines = [w[c] @ mbar[c] / np.linalg.norm(w[c]) / np.linalg.norm(mbar[c]) for c in range(K)]
    out["nc3_paper"] = 1.0 - np.mean(cosines)
    mism = 0
    for i in range(n):
        pred = int(np.argmax(w @ h[i] + b))
        ncc = int(np.argmin([np.linalg.norm(h[i] - mu[c]) for c in range(K)]))
        mism += pred != ncc
    out["nc4"] = mism / n
    var = [np.mean([np.sum((x - mu[c]) ** 2) for x in h[y == c]]) for c in range(K)]
    cd = [
        (var[c] + var[d]) / (2 * np.sum((mu[c] - mu[d]) ** 2))
        for c in range(K)
        for d in range(c + 1, K)
    ]
    out["cdnv"] = np.mean(cd)
    out["class_mean_norm"] = np.mean([np.linalg.norm(m) for m in mbar])
    out["within_energy"] = np.trace(sw)
    out["w_norm"] = np.linalg.norm(w)
    return out


def _t(x):
    return torch.as_tensor(x, dtype=torch.float64)


def _assert_metrics(got, want, rtol=1e-10, atol=1e-13):
    for name in want:
        np.testing.assert_allclose(
            float(got[name]), want[name], rtol=rtol, atol=atol, equal_nan=True, err_msg=name
        )


@pytest.mark.parametrize("global_mean", ["sample", "class_average"])
@pytest.mark.parametrize("p", [3, 9])  # p < K-1 and p > K
def test_every_metric_matches_naive_oracle_imbalanced(global_mean, p):
    """Batched nc_metrics on imbalanced classes equal the loop-based numpy definitions."""
    h, y, w, b = _data(r=3, p=p, seed=p)
    got = nc_metrics(_t(h), torch.as_tensor(y), K, _t(w), _t(b), global_mean)
    assert tuple(got) == METRIC_NAMES
    for r in range(3):
        _assert_metrics({k: v[r] for k, v in got.items()}, _naive(h[r], y, w[r], b[r], global_mean))


def test_global_mean_choice_changes_results_for_imbalanced_classes():
    """Global means "sample" and "class_average" differ on imbalanced classes where they should."""
    h, y, w, b = _data(r=1, p=6, seed=3)
    a = nc_metrics(_t(h), torch.as_tensor(y), K, _t(w), _t(b), "sample")
    c = nc_metrics(_t(h), torch.as_tensor(y), K, _t(w), _t(b), "class_average")
    for name in ("nc1", "nc1_trace", "nc2_etf", "nc2_angle", "nc3", "class_mean_norm"):
        assert abs(float(a[name][0]) - float(c[name][0])) > 1e-6, name
    for name in ("fn", "within_energy", "cdnv", "nc4", "w_norm", "nc2_etf_w"):
        assert float(a[name][0]) == pytest.approx(float(c[name][0]), rel=1e-12), name


def _stream(h, y, w, b, chunks, global_mean):
    acc = StreamingNC(K, h.shape[1])
    edges = np.cumsum([0, *chunks])
    for lo, hi in zip(edges[:-1], edges[1:]):
        acc.update(_t(h[lo:hi]), torch.as_tensor(y[lo:hi]))
    acc.begin_nc4()
    for lo, hi in zip(edges[:-1], edges[1:]):
        acc.update_nc4(_t(h[lo:hi]), _t(h[lo:hi] @ w.T + b))
    return acc.compute(_t(w), _t(b), global_mean)


@pytest.mark.parametrize("global_mean", ["sample", "class_average"])
def test_streaming_uneven_batches_with_gaps_match_oracle(global_mean):
    """StreamingNC over uneven batches (an empty one, ones missing classes) = oracle."""
    h, y, w, b = _data(r=1, p=7, seed=11)
    order = np.argsort(y, kind="stable")  # class-sorted: early batches lack most classes
    h, y = h[0][order], y[order]
    chunks = [2, 0, 1, 9, 5, 0, 12, 2]
    assert sum(chunks) == len(y)
    got = _stream(h, y, w[0], b[0], chunks, global_mean)
    assert tuple(got) == METRIC_NAMES
    _assert_metrics(got, _naive(h, y, w[0], b[0], global_mean))


def test_nc4_ties_take_the_first_index():
    """nc4 ties: first argmax of the logits and first nearest class mean (hand example)."""
    means = _t([[[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]]])  # average mean (1, 1) exact
    one = _t([[[1.0, 0.0]]])  # equidistant (1) from means 0 and 1
    w = _t([[[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])  # logits (1, 1, 0, 0)
    assert float(nc4(one, w, None, means)[0]) == 0.0  # argmax 0 == argmin 0
    b = _t([[0.0, 0.5, 0.0, 0.0]])  # logits (1, 1.5, 0, 0): argmax 1 != nearest 0
    assert float(nc4(one, w, b, means)[0]) == 1.0
    w1 = _t([[[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]])  # logits (0, 1, 0, 1): argmax 1
    assert float(nc4(one, w1, None, means)[0]) == 1.0  # nearest is 0 (first of the tie)
    feats = _t([[[1.0, 0.0], [0.0, 1.0], [2.0, 1.9]]])  # nearest 0, 0 (tie with 2), 3
    w2 = _t([[[0.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])  # logits argmax 0, 2, 2
    assert float(nc4(feats, w2, None, means)[0]) == pytest.approx(2.0 / 3.0, abs=1e-15)


def test_nc4_exact_distance_tie_with_non_dyadic_average_mean():
    """h = (1, 0) is at distance exactly 1 from means 0 and 1: NCC class is the first, 0
    (the means' average, 2/3, is not a binary fraction)."""
    means = _t([[[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]]])  # average (2/3, 2/3): rounded
    w = _t([[[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]])  # logits (1, 1, 0): argmax 0
    assert float(nc4(_t([[[1.0, 0.0]]]), w, None, means)[0]) == 0.0


def _loop_equal(h, y, w, b):
    got = nc_metrics(_t(h), torch.as_tensor(y), K, _t(w), _t(b))
    for r in range(h.shape[0]):
        one = nc_metrics(
            _t(h[r : r + 1]), torch.as_tensor(y), K, _t(w[r : r + 1]), _t(b[r : r + 1])
        )
        for name in METRIC_NAMES:
            np.testing.assert_allclose(
                float(got[name][r]),
                float(one[name][0]),
                rtol=1e-10,
                atol=0,
                equal_nan=True,
                err_msg=f"{name} run {r}",
            )
    return got


def test_batched_runs_with_different_offsets_match_loop():
    """A run with a 1e8 offset must not cost another run of the batch its NC4 precision."""
    h, y, w, b = _data(r=2, p=4, seed=5, spread=1e-3)
    h[0] += 1e8
    got = _loop_equal(h, y, w, b)
    assert float(got["nc4"][1]) == pytest.approx(_naive(h[1], y, w[1], b[1], "sample")["nc4"])


def test_batched_runs_with_different_scales_match_loop():
    """nc1's pseudo-inverse cut is per run: a 1e-6-scaled run beside a unit run is unchanged."""
    h, y, w, b = _data(r=2, p=6, seed=8)
    h[0] *= 1e-6
    got = _loop_equal(h, y, w, b)
    want = _naive(h[0], y, w[0], b[0], "sample")
    assert float(got["nc1"][0]) == pytest.approx(want["nc1"], rel=1e-10)


def test_batched_run_with_identical_features_stays_unresolved():
    """A run of identical features gives NaN NC1/NC2 even when batched with a spread run."""
    h, y, w, b = _data(r=2, p=5, seed=2)
    h[0] = 0.1 * np.arange(1, 6)  # identical features: no between-class spread
    got = _loop_equal(h, y, w, b)
    for name in ("nc1", "nc1_trace", "nc2_etf", "nc2_angle", "nc3", "nc3_paper"):
        assert np.isnan(float(got[name][0])), name
    assert float(got["class_mean_norm"][0]) == 0.0


def test_etf_distances_are_per_run_scale_invariant_in_batch():
    """nc2_etf / nc2_etf_w of runs at scales 1e-150, 1, 1e150 equal those of the unit run."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, K, 6))
    x = x - x.mean(1, keepdims=True)
    batch = _t(np.concatenate([1e-150 * x, x, 1e150 * x]))
    for fn in (nc2_etf, nc2_etf_w):
        got = fn(batch).numpy()
        np.testing.assert_allclose(got, np.full(3, float(fn(_t(x))[0])), rtol=1e-12)
