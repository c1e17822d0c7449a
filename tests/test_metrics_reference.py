"""Neural-collapse metrics and onset detection against naive references written from the
definitions of DESIGN.md section 2 (and the conventions in the docstrings of ncsim.metrics and
ncsim.onset where DESIGN.md leaves a detail open).

The references are deliberately plain: float64 numpy, explicit loops over samples and classes,
explicit cosines, ``numpy.linalg.pinv`` for Sigma_B^+. Divisions by zero follow IEEE rules
(0/0 = NaN, x/0 = inf) so that degenerate inputs can be compared as well.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from ncsim.metrics import METRIC_NAMES, class_statistics, nc_metrics
from ncsim.models.gram import GramObjective
from ncsim.onset import crossing_time, lead_time, onset_time, value_at
from ncsim.spec import ModelSpec

RTOL = 1e-10
ATOL = 1e-13

# metrics that are ratios of norms / traces: undefined (NaN) when the class means coincide
SCALE_FREE_H = ("nc1", "nc1_trace", "nc2_etf", "nc2_equinorm", "nc2_angle", "nc3", "nc3_paper",
                "cdnv")


# --------------------------------------------------------------------------------------------
# naive reference of every metric (one run)
# --------------------------------------------------------------------------------------------


def _div(a: float, b: float) -> float:
    """a / b with IEEE semantics (NaN for 0/0, +-inf for x/0), no warning."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(a) / np.float64(b))


def _norm(x: np.ndarray) -> float:
    return math.sqrt(sum(float(v) * float(v) for v in np.ravel(x)))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return _div(float(a @ b), _norm(a) * _norm(b))


def _cv(values: list[float]) -> float:
    """std (ddof = 1) / mean."""
    k = len(values)
    mean = sum(values) / k
    var = sum((v - mean) ** 2 for v in values) / (k - 1)
    return _div(math.sqrt(var), mean)


def _etf_distance(x: np.ndarray) -> float:
    """|| G/|G|_F - (I - 11^T/K)/sqrt(K-1) ||_F, G_ab = x_a . x_b, written entry by entry."""
    k = x.shape[0]
    g = np.array([[float(x[a] @ x[c]) for c in range(k)] for a in range(k)])
    gn = _norm(g)
    total = 0.0
    for a in range(k):
        for c in range(k):
            target = ((1.0 if a == c else 0.0) - 1.0 / k) / math.sqrt(k - 1)
            total += (_div(g[a, c], gn) - target) ** 2
    return math.sqrt(total)


def reference_metrics(h, y, k, w, b=None, global_mean="sample", pinv_rcond=1e-12):
    """Every metric of METRIC_NAMES for one run, straight from the definitions.

    h (N, p) features (rows), y (N,) labels, w (K, p) classifier, b (K,) or None.
    """
    h = np.asarray(h, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    y = np.asarray(y)
    n, p = h.shape
    counts = [0] * k
    sums = np.zeros((k, p))
    for i in range(n):
        counts[y[i]] += 1
        sums[y[i]] += h[i]
    mu = np.array([sums[c] / counts[c] for c in range(k)])
    if global_mean == "sample":
        mu_g = sum(h[i] for i in range(n)) / n
    else:
        mu_g = sum(mu[c] for c in range(k)) / k
    mbar = np.array([mu[c] - mu_g for c in range(k)])

    sigma_w = np.zeros((p, p))
    var = [0.0] * k
    for i in range(n):
        d = h[i] - mu[y[i]]
        sigma_w += np.outer(d, d) / n
        var[y[i]] += float(d @ d) / counts[y[i]]
    sigma_b = np.zeros((p, p))
    for c in range(k):
        sigma_b += np.outer(mbar[c], mbar[c]) / k
    tr_w = float(np.trace(sigma_w))
    tr_b = float(np.trace(sigma_b))

    out: dict[str, float] = {}
    out["fn"] = sum(_norm(h[i]) for i in range(n)) / n
    if tr_b > 0:
        pinv = np.linalg.pinv(sigma_b, rcond=pinv_rcond, hermitian=True)
        out["nc1"] = float(np.trace(sigma_w @ pinv)) / k
    else:  # Sigma_B = 0: undefined (never "collapsed"): tr(Sigma_W)/0
        out["nc1"] = _div(tr_w, 0.0)
    out["nc1_trace"] = _div(tr_w, tr_b)

    wc = np.array([w[c] - sum(w[a] for a in range(k)) / k for c in range(k)])
    out["nc2_etf"] = _etf_distance(mbar)
    out["nc2_etf_w"] = _etf_distance(wc)
    m_norms = [_norm(mbar[c]) for c in range(k)]
    w_norms = [_norm(w[c]) for c in range(k)]
    out["nc2_equinorm"] = _cv(m_norms)
    out["nc2_equinorm_w"] = _cv(w_norms)
    dev = [abs(_cos(mbar[c], mbar[a]) + 1.0 / (k - 1))
           for c in range(k) for a in range(k) if a != c]
    out["nc2_angle"] = sum(dev) / len(dev)

    wc_f, m_f = _norm(wc), _norm(mbar)
    out["nc3"] = sum((_div(wc[c, j], wc_f) - _div(mbar[c, j], m_f)) ** 2
                     for c in range(k) for j in range(p))
    out["nc3_paper"] = 1.0 - sum(_cos(w[c], mbar[c]) for c in range(k)) / k

    mismatch = 0
    for i in range(n):
        logits = [float(w[c] @ h[i]) + (0.0 if b is None else float(b[c])) for c in range(k)]
        dist = [_norm(h[i] - mu[c]) for c in range(k)]
        mismatch += int(np.argmax(logits)) != int(np.argmin(dist))
    out["nc4"] = mismatch / n

    ratios = [_div(var[c] + var[a], 2.0 * _norm(mu[c] - mu[a]) ** 2)
              for c in range(k) for a in range(c + 1, k)]
    out["cdnv"] = sum(ratios) / len(ratios)
    out["class_mean_norm"] = sum(m_norms) / k
    out["within_energy"] = tr_w
    out["w_norm"] = _norm(w)
    assert set(out) == set(METRIC_NAMES)
    return out


def _close(got: float, want: float, rtol: float = RTOL, atol: float = ATOL) -> bool:
    if math.isnan(want) or math.isnan(got):
        return math.isnan(want) and math.isnan(got)
    if math.isinf(want) or math.isinf(got):
        return got == want
    return math.isclose(got, want, rel_tol=rtol, abs_tol=atol)


def _assert_metrics(got: dict, want: dict, run: int = 0, skip: tuple[str, ...] = (),
                    rtol: float = RTOL, atol: float = ATOL) -> None:
    bad = []
    for name in METRIC_NAMES:
        if name in skip:
            continue
        g = float(got[name][run])
        if not _close(g, want[name], rtol, atol):
            bad.append((name, g, want[name]))
    assert not bad, bad


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------


def _labels(counts, seed) -> np.ndarray:
    y = np.concatenate([np.full(c, i) for i, c in enumerate(counts)])
    return np.random.default_rng(seed).permutation(y)


def _centres(k: int, p: int, rng: np.random.Generator) -> np.ndarray:
    """(K, p) well-spread class centres: a rotated, perturbed simplex when p >= K-1, a random
    Gaussian set otherwise (cond of the centred means stays small, see _cond)."""
    if p >= k - 1:
        return _simplex(k, p, 2.0, rng) + 0.4 * rng.normal(size=(k, p))
    return 2.0 * rng.normal(size=(k, p))


def _run(counts, p, seed, spread=0.7, offset=1.0):
    """Features around class centres, a random classifier and bias: h (N, p), y, w, b."""
    rng = np.random.default_rng(seed)
    k = len(counts)
    y = _labels(counts, seed)
    h = _centres(k, p, rng)[y] + spread * rng.normal(size=(len(y), p))
    h = h + offset * rng.normal(size=p)
    w = rng.normal(size=(k, p))
    b = 0.3 * rng.normal(size=k)
    return h, y, w, b


def _cond(h, y, k, global_mean="sample") -> float:
    """Ratio of the largest to the smallest non-zero singular value of the centred means."""
    mu = np.array([h[y == c].mean(0) for c in range(k)])
    mu_g = h.mean(0) if global_mean == "sample" else mu.mean(0)
    s = np.linalg.svd(mu - mu_g, compute_uv=False)[: min(h.shape[1], k - 1)]
    return float(s[0] / s[-1])


def _t(x) -> torch.Tensor | None:
    return None if x is None else torch.as_tensor(np.asarray(x), dtype=torch.float64)


def _code(h, y, k, w, b=None, global_mean="sample") -> dict:
    """nc_metrics on one run (R = 1)."""
    return nc_metrics(_t(h)[None], torch.as_tensor(y, dtype=torch.int64), k, _t(w)[None],
                      None if b is None else _t(b)[None], global_mean=global_mean)


def _simplex(k: int, p: int, scale: float, seed: int | np.random.Generator) -> np.ndarray:
    """(K, p) simplex ETF with |row| = scale, randomly rotated into R^p (p >= K - 1)."""
    e = np.eye(k) - 1.0 / k
    e = e / np.linalg.norm(e, axis=1, keepdims=True) * scale
    u, _, _ = np.linalg.svd(e)
    e = e @ u[:, : k - 1]  # (K, K-1), same Gram
    basis, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(p, k - 1)))  # (p, K-1)
    return e @ basis.T


BALANCED = (5, 5, 5, 5)
UNBALANCED = (3, 6, 4, 8, 5)

CASES = [
    # (counts, p, with_bias, global_mean)
    (BALANCED, 2, True, "sample"),  # d < K - 1
    (BALANCED, 3, False, "sample"),  # d = K - 1
    (BALANCED, 7, True, "sample"),  # d > K - 1
    (UNBALANCED, 2, False, "sample"),
    (UNBALANCED, 4, True, "sample"),
    (UNBALANCED, 9, False, "sample"),
    (UNBALANCED, 3, True, "class_average"),
    (UNBALANCED, 4, False, "class_average"),
    (UNBALANCED, 9, True, "class_average"),
]


def _case_id(case) -> str:
    counts, p, bias, gm = case
    k = len(counts)
    rel = "lt" if p < k - 1 else ("eq" if p == k - 1 else "gt")
    bal = "bal" if len(set(counts)) == 1 else "unbal"
    return f"{bal}-K{k}-d{p}({rel})-{'bias' if bias else 'nobias'}-{gm}"


# --------------------------------------------------------------------------------------------
# nc_metrics against the reference
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_random_runs_match_reference(case):
    """Every metric equals its definition (rel 1e-10) on random runs: balanced / unbalanced
    classes, with / without bias, d < K-1, d = K-1, d > K-1, both global means. The centred
    means are well conditioned here (see the nc1 tests below for ill-conditioned ones)."""
    counts, p, with_bias, gm = case
    k = len(counts)
    for seed in range(3):
        h, y, w, b = _run(counts, p, seed)
        b = b if with_bias else None
        assert _cond(h, y, k, gm) < 30
        got = _code(h, y, k, w, b, gm)
        assert tuple(got) == METRIC_NAMES
        _assert_metrics(got, reference_metrics(h, y, k, w, b, gm))


def test_bias_enters_nc4_only():
    """The bias changes nc4 (and only nc4), as in the definition argmax(W h + b): a bias that
    puts class 0 above every logit makes the classifier say 0 everywhere, so nc4 is then the
    fraction of samples whose nearest class mean is not class 0's. (A random bias may leave
    every prediction as it was, depending on the draw.)"""
    h, y, w, b = _run(BALANCED, 3, seed=4, spread=1.5)
    b = np.zeros(4)
    b[0] = 10.0 * np.abs(h @ w.T).max()
    with_b, without_b = _code(h, y, 4, w, b), _code(h, y, 4, w)
    means = np.array([h[y == c].mean(0) for c in range(4)])
    nearest = np.linalg.norm(h[:, None, :] - means[None], axis=2).argmin(1)
    assert float(with_b["nc4"]) == pytest.approx(np.mean(nearest != 0), abs=1e-15)
    assert float(with_b["nc4"]) != float(without_b["nc4"])
    _assert_metrics(with_b, reference_metrics(h, y, 4, w, b))
    for name in METRIC_NAMES:
        if name != "nc4":
            assert float(with_b[name]) == float(without_b[name]), name


@pytest.mark.parametrize("p", [4, 9])
def test_exact_simplex_etf_collapse(p):
    """Exactly collapsed simplex ETF (h_i = mu_{y_i}, centred means an ETF, W = alpha * Mbar,
    b cancelling a common offset): every NC metric is at its collapsed value 0 (to 1e-12),
    and fn, class_mean_norm, w_norm equal their closed forms."""
    k, scale, alpha = 5, 2.0, 0.7
    counts = (4,) * k
    m = _simplex(k, p, scale, seed=1)
    offset = np.random.default_rng(2).normal(size=p)
    y = _labels(counts, 0)
    h = m[y] + offset
    w = alpha * m
    b = -(w @ offset)
    got = _code(h, y, k, w, b)
    for name in ("nc1", "nc1_trace", "nc2_etf", "nc2_etf_w", "nc2_equinorm", "nc2_equinorm_w",
                 "nc2_angle", "nc3", "nc3_paper", "nc4", "cdnv", "within_energy"):
        assert abs(float(got[name][0])) < 1e-12, (name, float(got[name][0]))
    fn = np.mean([np.linalg.norm(m[c] + offset) for c in y])
    assert float(got["fn"][0]) == pytest.approx(fn, rel=1e-12)
    assert float(got["class_mean_norm"][0]) == pytest.approx(scale, rel=1e-12)
    assert float(got["w_norm"][0]) == pytest.approx(alpha * scale * math.sqrt(k), rel=1e-12)
    _assert_metrics(got, reference_metrics(h, y, k, w, b), atol=1e-12)


def test_exact_etf_collapse_unbalanced_depends_on_global_mean():
    """Unbalanced classes collapsed onto an ETF: with mu_G = class-mean average every NC metric
    is 0; with mu_G = sample mean the centred means are not an ETF (nc2, nc3 > 0) while the
    within-class metrics stay 0. Both agree with the reference."""
    k, p = 5, 6
    counts = UNBALANCED
    m = _simplex(k, p, 1.5, seed=3)
    y = _labels(counts, 1)
    h = m[y]
    w = 1.3 * m
    avg = _code(h, y, k, w, None, "class_average")
    for name in ("nc1", "nc1_trace", "nc2_etf", "nc2_etf_w", "nc2_equinorm", "nc2_angle",
                 "nc3", "nc3_paper", "nc4", "cdnv", "within_energy"):
        assert abs(float(avg[name][0])) < 1e-12, name
    sample = _code(h, y, k, w, None, "sample")
    for name in ("nc1", "nc1_trace", "nc4", "cdnv", "within_energy"):
        assert abs(float(sample[name][0])) < 1e-12, name
    for name in ("nc2_etf", "nc2_equinorm", "nc2_angle", "nc3", "nc3_paper"):
        assert float(sample[name][0]) > 1e-3, name
    _assert_metrics(avg, reference_metrics(h, y, k, w, None, "class_average"), atol=1e-12)
    _assert_metrics(sample, reference_metrics(h, y, k, w, None, "sample"), atol=1e-12)


def test_one_class_collapsed_others_not():
    """One class with zero spread (Var_c = 0) among spread classes: every metric equals the
    reference, and the collapsed class's variance enters cdnv as 0."""
    counts = UNBALANCED
    k = len(counts)
    h, y, w, b = _run(counts, 6, seed=7)
    mu0 = h[y == 0].mean(0)
    h[y == 0] = mu0
    got = _code(h, y, k, w, b)
    _assert_metrics(got, reference_metrics(h, y, k, w, b))
    assert 0 < float(got["nc1_trace"][0]) < math.inf


def test_within_spread_orthogonal_to_the_means_is_invisible_to_nc1():
    """d > K-1 with all within-class spread orthogonal to the span of the class means:
    tr(Sigma_W Sigma_B^+) = 0 by the definition (Sigma_B^+ lives on that span), so nc1 = 0,
    while nc1_trace = tr(Sigma_W)/tr(Sigma_B) > 0."""
    k, p = 4, 6
    counts = (3, 4, 5, 6)
    y = _labels(counts, 2)
    rng = np.random.default_rng(5)
    means = np.zeros((k, p))
    means[:, : k - 1] = rng.normal(size=(k, k - 1))
    noise = np.zeros((len(y), p))
    noise[:, k - 1:] = rng.normal(size=(len(y), p - k + 1))
    for c in range(k):  # remove the sample class means of the noise: the means stay exact
        noise[y == c] -= noise[y == c].mean(0)
    # mu_G must lie in the span too: the coordinates >= K-1 of every mu_c and mu_G are 0
    h = means[y] + noise
    w = rng.normal(size=(k, p))
    got = _code(h, y, k, w)
    ref = reference_metrics(h, y, k, w)
    assert abs(ref["nc1"]) < 1e-12
    assert abs(float(got["nc1"][0])) < 1e-12
    assert float(got["nc1_trace"][0]) > 0.1
    _assert_metrics(got, ref, atol=1e-12)


def test_all_zero_features_give_nan_not_garbage():
    """Features all zero: fn, class_mean_norm, within_energy are 0; the W-only metrics are
    finite and equal their definitions; every scale-free metric of the features (nc1,
    nc1_trace, nc2_etf, nc2_equinorm, nc2_angle, nc3, nc3_paper, cdnv) is NaN (0/0), never 0
    (which would read as collapse); nc4 follows its tie rule; no exception, no warning."""
    k, p = 4, 3
    y = _labels(BALANCED, 3)
    h = np.zeros((len(y), p))
    rng = np.random.default_rng(0)
    w = rng.normal(size=(k, p))
    b = np.array([0.1, 0.5, -0.2, 0.0])  # argmax b = 1 != nearest mean (all tie: index 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got_b = _code(h, y, k, w, b)
        got = _code(h, y, k, w)
    for name in SCALE_FREE_H:
        assert math.isnan(float(got[name][0])), name
    for name in ("fn", "class_mean_norm", "within_energy"):
        assert float(got[name][0]) == 0.0, name
    assert float(got["nc4"][0]) == 0.0  # all logits 0 and all distances 0: index 0 both
    assert float(got_b["nc4"][0]) == 1.0
    _assert_metrics(got, reference_metrics(h, y, k, w))
    _assert_metrics(got_b, reference_metrics(h, y, k, w, b))


def test_equal_class_means_with_spread_give_inf():
    """Coinciding class means with within-class spread: tr(Sigma_B) = 0, so nc1 and
    nc1_trace are +inf (tr(Sigma_W)/0) and cdnv is +inf; the metrics built on the normalised
    centred means (nc2_etf, nc2_equinorm, nc2_angle, nc3, nc3_paper) are NaN; the rest equal
    the reference."""
    k, p = 3, 2
    y = np.repeat(np.arange(k), 4)
    # dyadic, per-class symmetric spread: every class mean is exactly (0.5, -1)
    spread = np.array([[0.25, 0.125], [-0.25, -0.125], [0.0625, -0.5], [-0.0625, 0.5]])
    h = np.tile(spread, (k, 1)) + np.array([0.5, -1.0])
    w = np.random.default_rng(1).normal(size=(k, p))
    got = _code(h, y, k, w)
    for name in ("nc1", "nc1_trace", "cdnv"):
        assert float(got[name][0]) == math.inf, name
    for name in ("nc2_etf", "nc2_equinorm", "nc2_angle", "nc3", "nc3_paper"):
        assert math.isnan(float(got[name][0])), name
    _assert_metrics(got, reference_metrics(h, y, k, w))


def test_class_statistics_match_reference():
    """class_statistics: counts, class means, mu_G (sample mean / class-mean average),
    Sigma_W, Sigma_B, tr(Sigma_W), Var_c, fn and the weights z of mu_G equal loops over the
    samples (rel 1e-12), unbalanced classes, two runs."""
    counts = UNBALANCED
    k, p = len(counts), 3
    y = _labels(counts, 4)
    hs = [_run(counts, p, seed)[0] for seed in (5, 6)]
    for gm in ("sample", "class_average"):
        st = class_statistics(torch.stack([_t(h) for h in hs]), torch.as_tensor(y), k, gm)
        assert st.counts.tolist() == list(counts)
        z = np.array(counts) / sum(counts) if gm == "sample" else np.full(k, 1.0 / k)
        np.testing.assert_allclose(st.mean_weights.numpy(), z, rtol=1e-15)
        for r, h in enumerate(hs):
            n = len(y)
            mu = np.array([sum(h[i] for i in range(n) if y[i] == c) / counts[c]
                           for c in range(k)])
            mu_g = sum(h[i] for i in range(n)) / n if gm == "sample" else mu.mean(0)
            sw = sum(np.outer(h[i] - mu[y[i]], h[i] - mu[y[i]]) for i in range(n)) / n
            sb = sum(np.outer(mu[c] - mu_g, mu[c] - mu_g) for c in range(k)) / k
            var = [sum(_norm(h[i] - mu[c]) ** 2 for i in range(n) if y[i] == c) / counts[c]
                   for c in range(k)]
            fn = sum(_norm(h[i]) for i in range(n)) / n
            for got, want in ((st.means[r], mu), (st.global_mean[r], mu_g),
                              (st.sigma_w[r], sw), (st.sigma_b[r], sb),
                              (st.class_var[r], var), (st.within_energy[r], np.trace(sw)),
                              (st.feature_norm[r], fn), (st.means_centred[r], mu - mu_g)):
                np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-14)


def test_a_centred_mean_at_zero_gives_nan_cosines():
    """A class mean equal to the global mean (centred mean 0, others not): the cosines with it
    are undefined, so nc2_angle and nc3_paper are NaN; the other metrics stay finite and equal
    the reference."""
    k, p = 3, 2
    y = np.repeat(np.arange(k), 4)
    means = np.array([[1.0, 0.5], [-1.0, -0.5], [0.0, 0.0]])  # balanced: mu_G = mu_2 = 0
    # dyadic, per-class symmetric spread: every mean (and mu_G) is exact in floating point
    spread = np.array([[0.25, 0.125], [-0.25, -0.125], [0.0625, -0.5], [-0.0625, 0.5]])
    h = means[y] + np.tile(spread, (k, 1))
    w = np.random.default_rng(8).normal(size=(k, p))
    got = _code(h, y, k, w)
    ref = reference_metrics(h, y, k, w)
    for name in ("nc2_angle", "nc3_paper"):
        assert math.isnan(ref[name]) and math.isnan(float(got[name][0])), name
    _assert_metrics(got, ref, skip=("nc2_angle", "nc3_paper"), atol=1e-12)


@pytest.mark.parametrize("offset", [1e2, 1e4])
def test_large_common_offset(offset):
    """A common offset much larger than the class structure (|mu_G| / |mu_c - mu_G| up to
    ~1e4): nc_metrics still equals the reference to 1e-10."""
    counts = UNBALANCED
    k, p = len(counts), 6
    h, y, w, b = _run(counts, p, seed=5, offset=offset)
    _assert_metrics(_code(h, y, k, w, b), reference_metrics(h, y, k, w, b))


def test_batch_of_runs_equals_single_calls_and_reference():
    """A batch of heterogeneous runs (random, exact ETF collapse, one class collapsed, all
    zero) gives, run by run, the single-run values (to 1e-12) and the reference: a degenerate
    run does not contaminate the others."""
    k, p = 4, 5
    counts = (4, 6, 5, 3)
    y = _labels(counts, 9)
    rng = np.random.default_rng(11)
    w, b = rng.normal(size=(k, p)), 0.3 * rng.normal(size=k)
    h = _centres(k, p, rng)[y] + 0.7 * rng.normal(size=(len(y), p))
    m = _simplex(k, p, 1.0, seed=4)
    h2 = _centres(k, p, rng)[y] + 0.5 * rng.normal(size=(len(y), p))
    h2[y == 2] = h2[y == 2].mean(0)
    runs = [(h, w, b), (m[y], 0.5 * m, np.zeros(k)), (h2, -w, b),
            (np.zeros((len(y), p)), w, b)]
    hb = torch.stack([_t(r[0]) for r in runs])
    wb = torch.stack([_t(r[1]) for r in runs])
    bb = torch.stack([_t(r[2]) for r in runs])
    yt = torch.as_tensor(y, dtype=torch.int64)
    batch = nc_metrics(hb, yt, k, wb, bb)
    for r, (h_r, w_r, b_r) in enumerate(runs):
        one = nc_metrics(hb[r:r + 1], yt, k, wb[r:r + 1], bb[r:r + 1])
        for name in METRIC_NAMES:
            assert _close(float(batch[name][r]), float(one[name][0]), 1e-12, 1e-15), (r, name)
        _assert_metrics(batch, reference_metrics(h_r, y, k, w_r, b_r), run=r, atol=1e-12)


# --------------------------------------------------------------------------------------------
# nc1: the pseudo-inverse
# --------------------------------------------------------------------------------------------


def _ill_conditioned(k, p, squeeze, seed=1, n=6):
    """Runs whose centred class means have one direction shrunk by ``squeeze`` (singular-value
    ratio ~ squeeze) and exact class means (per-class noise has zero mean)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n)
    base = _centres(k, p, rng)
    noise = 0.1 * rng.normal(size=(len(y), p))
    for c in range(k):
        noise[y == c] -= noise[y == c].mean(0)
    u, s, vt = np.linalg.svd(base - base.mean(0), full_matrices=False)
    s = s.copy()
    s[min(p, k - 1) - 1] *= squeeze
    means = base.mean(0) + (u * s) @ vt
    return means[y] + noise, y, rng.normal(size=(k, p))


def _documented_soft_nc1(h, y, k) -> float:
    """nc1 with the documented filter: sum_i (f_i/s_i)^2 v_i^T Sigma_W v_i,
    f_i = s_i^4/(s_i^4 + delta^2), delta = 1e-10 sum_i s_i^2 (s_i, v_i: SVD of Mbar; the
    rounding-level term of delta is ~1e-19 here, far below)."""
    mu = np.array([h[y == c].mean(0) for c in range(k)])
    mbar = mu - h.mean(0)
    d = h - mu[y]
    sigma_w = d.T @ d / len(y)
    _, s, vt = np.linalg.svd(mbar, full_matrices=False)
    r = min(h.shape[1], k - 1)
    s, vt = s[:r], vt[:r]
    delta = 1e-10 * float(np.sum(s**2))
    f = s**4 / (s**4 + delta**2)
    return float(sum((f[i] / s[i]) ** 2 * (vt[i] @ sigma_w @ vt[i]) for i in range(r)))


@pytest.mark.parametrize("squeeze", [1.0, 1e-2, 1e-3, 1e-4, 3e-5, 1e-5, 1e-6])
def test_nc1_is_the_documented_soft_pseudo_inverse(squeeze):
    """nc1 equals the filter-factor form documented in ncsim.metrics (soft cut at singular
    values s ~ sqrt(delta)) over a sweep of conditioning of the centred means (cond 1.7 to
    1.7e6), to 1e-12 + 10 eps cond^2 (the rounding of a solve with the Gram B B^T)."""
    k, p = 5, 4
    h, y, w = _ill_conditioned(k, p, squeeze)
    got = float(_code(h, y, k, w)["nc1"][0])
    tol = 1e-12 + 10.0 * np.finfo(np.float64).eps * _cond(h, y, k) ** 2
    assert got == pytest.approx(_documented_soft_nc1(h, y, k), rel=tol)


@pytest.mark.parametrize("squeeze", [1.0, 1e-2, 1e-3])
def test_nc1_within_documented_bound_of_exact_pinv(squeeze):
    """Relative gap between nc1 and tr(Sigma_W Sigma_B^+)/K (exact pinv) is below the documented
    bound 2 (delta_rel (K-1) cond^2)^2 (the factor 2: nc1 squares B^+)."""
    k, p = 5, 4
    h, y, w = _ill_conditioned(k, p, squeeze)
    got = float(_code(h, y, k, w)["nc1"][0])
    want = reference_metrics(h, y, k, w, pinv_rcond=1e-15)["nc1"]
    bound = 2.0 * (1e-10 * (k - 1) * _cond(h, y, k) ** 2) ** 2
    assert abs(got - want) / want <= max(bound, 1e-12)


# --------------------------------------------------------------------------------------------
# Gram-space metrics of the one-layer UFM
# --------------------------------------------------------------------------------------------

GRAM_CASES = [
    # (counts, d, bias)
    ((4, 4, 4, 4), 2, "none"),
    ((4, 4, 4, 4), 3, "free"),
    ((4, 4, 4, 4), 8, "none"),
    ((3, 6, 4, 8, 5), 2, "free"),
    ((3, 6, 4, 8, 5), 4, "none"),
    ((3, 6, 4, 8, 5), 9, "free"),
]


def _gram_id(case) -> str:
    counts, d, bias = case
    return _case_id((counts, d, bias != "none", "sample"))


@pytest.mark.parametrize("case", GRAM_CASES, ids=_gram_id)
def test_gram_metrics_match_reference(case):
    """GramObjective.metrics on the Gram state of (H, W, b) equals the reference metrics of
    the same parameters (rel 1e-10), for d < K-1, d = K-1, d > K-1, balanced / unbalanced,
    with / without bias, three runs in one batch."""
    counts, d, bias = case
    k = len(counts)
    model = ModelSpec(kind="ufm", loss="ce", bias=bias, classes=k, per_class=counts, dim=d)
    gram = GramObjective(model, "cpu", torch.float64)
    y = gram.labels.numpy()
    hs, ws, bs = [], [], []
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        h = _centres(k, d, rng)[y] + 0.7 * rng.normal(size=(len(y), d)) + rng.normal(size=d)
        assert _cond(h, y, k) < 30
        hs.append(h)
        ws.append(rng.normal(size=(k, d)))
        bs.append(0.3 * rng.normal(size=k) if model.has_bias else None)
    h_t = torch.stack([_t(h).T for h in hs])  # (R, d, N)
    w_t = torch.stack([_t(w) for w in ws])
    b_t = torch.stack([_t(b) for b in bs]) if model.has_bias else None
    got = gram.metrics(gram.from_parameters(h_t, w_t, b_t))
    assert tuple(got) == METRIC_NAMES
    for r in range(3):
        _assert_metrics(got, reference_metrics(hs[r], y, k, ws[r], bs[r]), run=r)


def test_gram_metrics_exact_etf_and_zero_features():
    """Gram-space metrics at an exactly collapsed simplex ETF (every NC metric 0 to 1e-12) and
    for all-zero features (NaN for the scale-free feature metrics, as nc_metrics), in one
    batch, without warnings."""
    k, d = 4, 5
    model = ModelSpec(kind="ufm", loss="mse", bias="free", classes=k, per_class=3, dim=d)
    gram = GramObjective(model, "cpu", torch.float64)
    y = gram.labels.numpy()
    m = _simplex(k, d, 1.2, seed=6)
    w = 0.8 * m
    b = np.zeros(k)
    h_t = torch.stack([_t(m[y]).T, torch.zeros(d, len(y), dtype=torch.float64)])
    w_t = torch.stack([_t(w), _t(w)])
    b_t = torch.stack([_t(b), _t(b)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = gram.metrics(gram.from_parameters(h_t, w_t, b_t))
    for name in ("nc1", "nc1_trace", "nc2_etf", "nc2_etf_w", "nc2_equinorm", "nc2_equinorm_w",
                 "nc2_angle", "nc3", "nc3_paper", "nc4", "cdnv", "within_energy"):
        assert abs(float(got[name][0])) < 1e-12, (name, float(got[name][0]))
    _assert_metrics(got, reference_metrics(m[y], y, k, w, b), run=0, atol=1e-12)
    for name in SCALE_FREE_H:
        assert math.isnan(float(got[name][1])), name
    _assert_metrics(got, reference_metrics(np.zeros((len(y), d)), y, k, w, b), run=1)


# --------------------------------------------------------------------------------------------
# onset: naive references
# --------------------------------------------------------------------------------------------


def reference_onset(times, values, threshold, stay=1, interpolate=True) -> float:
    """First time the metric is below ``threshold`` and stays below for ``stay`` consecutive
    finite records (non-finite records are gaps, skipped). Interpolated: the point where the
    straight line through (log t, log v) of the record before and the first record below meets
    log threshold (linear in v when a value is <= 0, linear in t when the earlier t <= 0)."""
    recs = [(float(t), float(v)) for t, v in zip(times, values)
            if math.isfinite(t) and math.isfinite(v)]
    for i in range(len(recs)):
        if i + stay > len(recs):
            break
        if not all(recs[j][1] < threshold for j in range(i, i + stay)):
            continue
        if not interpolate or i == 0:
            return recs[i][0]
        return _reference_interp(recs[i - 1], recs[i], threshold)
    return math.nan


def _reference_interp(rec0, rec1, level) -> float:
    """Time where the straight line through two records meets ``level``: in (log t, log v),
    linear in v when a value or the level is <= 0, linear in t when the earlier t is <= 0."""
    (t0, v0), (t1, v1) = rec0, rec1
    if v0 > 0 and v1 > 0 and level > 0:
        frac = (math.log(level) - math.log(v0)) / (math.log(v1) - math.log(v0))
    else:
        frac = (level - v0) / (v1 - v0)
    if t0 > 0:
        return t0 * (t1 / t0) ** frac
    return t0 + frac * (t1 - t0)


def reference_crossing(times, values, level, direction, interpolate=True) -> float:
    """First time the series reaches ``level`` (v <= level for "below", v >= level for
    "above"), interpolated like the onset."""
    recs = [(float(t), float(v)) for t, v in zip(times, values)
            if math.isfinite(t) and math.isfinite(v)]
    for i, (t1, v1) in enumerate(recs):
        if (v1 <= level) if direction == "below" else (v1 >= level):
            if not interpolate or i == 0:
                return t1
            return _reference_interp(recs[i - 1], recs[i], level)
    return math.nan


def reference_value_at(times, values, when) -> float:
    """Value at ``when``: linear in (log t, log value) between the finite records around it
    (in value when one is <= 0); the record itself at a record time; first / last finite
    value outside the recorded range."""
    recs = [(float(t), float(v)) for t, v in zip(times, values)
            if math.isfinite(t) and math.isfinite(v)]
    if not recs or not math.isfinite(when):
        return math.nan
    if when <= recs[0][0]:
        return recs[0][1]
    for (t0, v0), (t1, v1) in zip(recs, recs[1:]):
        if t0 < when <= t1:
            frac = math.log(when / t0) / math.log(t1 / t0)
            if v0 > 0 and v1 > 0:
                return v0 * (v1 / v0) ** frac
            return v0 + frac * (v1 - v0)
    return recs[-1][1]


def _same(a: float, b: float, rel: float = 1e-12) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rel, abs_tol=0.0)


NAN = math.nan
ONSET_SERIES = {
    # name: (times, values)
    "crossing-at-record": ([1.0, 10.0, 100.0, 1000.0], [1.0, 0.1, 0.01 * 0.999, 1e-4]),
    "between-records": ([10.0, 100.0, 1000.0], [0.1, 0.001, 1e-5]),
    "recross": ([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
                [0.5, 0.005, 0.02, 0.004, 0.003, 0.05, 0.001]),
    "never": ([1.0, 2.0, 3.0], [0.5, 0.2, 0.0101]),
    "touch-threshold": ([1.0, 2.0, 3.0], [0.5, 0.01, 0.02]),
    "equal-then-below": ([1.0, 2.0, 3.0], [0.5, 0.01, 0.005]),
    "nan-records": ([1.0, 10.0, 100.0, 1000.0, 1e4], [NAN, 0.5, NAN, 0.005, 0.001]),
    "nan-inside-stay": ([1.0, 10.0, 100.0, 1000.0], [0.5, 0.005, NAN, 0.004]),
    "first-record-below": ([0.5, 1.0], [0.001, 0.0005]),
    "from-t0": ([0.0, 1.0, 2.0], [1.0, 0.001, 1e-4]),
    "exact-zero-value": ([1.0, 10.0, 100.0], [1.0, 0.0, 0.0]),
    "all-nan": ([1.0, 2.0, 3.0], [NAN, NAN, NAN]),
    "inf-records": ([1.0, 2.0, 4.0, 8.0], [math.inf, 0.5, 0.002, math.inf]),
}


@pytest.mark.parametrize("name", sorted(set(ONSET_SERIES) - {"all-nan"}))
@pytest.mark.parametrize("stay", [1, 2, 3])
@pytest.mark.parametrize("interpolate", [True, False])
def test_onset_time_matches_reference(name, stay, interpolate):
    """onset_time equals the reference (first crossing below 0.01, ``stay`` consecutive finite
    records, log-log interpolation) on hand-made series."""
    times, values = ONSET_SERIES[name]
    got = onset_time(np.array(times), np.array(values), 0.01, stay, interpolate)
    want = reference_onset(times, values, 0.01, stay, interpolate)
    assert _same(got, want), (got, want)


def test_onset_hand_values():
    """Hand-computed onsets: a record just below the threshold; a crossing between records
    (log-log midpoint); a first crossing that re-crosses (stay 1 vs stay 2 vs stay 3); a
    never-crossing series (NaN); a value equal to the threshold (not below); NaN gaps (the
    interpolation spans them); the first record below (its own time); an earlier record at
    t = 0 (linear in time)."""
    s = {k: (np.array(t), np.array(v)) for k, (t, v) in ONSET_SERIES.items()}
    # 0.01 * 0.999 at t = 100 after 0.1 at t = 10: log-log interpolation lands just before 100
    t_at = onset_time(*s["crossing-at-record"], 0.01)
    assert t_at == pytest.approx(10.0 * 10.0 ** (1.0 / (1.0 - math.log10(0.999))), rel=1e-12)
    assert onset_time(*s["crossing-at-record"], 0.01, interpolate=False) == 100.0
    # 0.1 -> 0.001 over 10 -> 100: log-log straight line, 0.01 at sqrt(10 * 100)
    assert onset_time(*s["between-records"], 0.01) == pytest.approx(math.sqrt(1e3), rel=1e-12)
    assert onset_time(*s["recross"], 0.01, stay=1, interpolate=False) == 2.0
    assert onset_time(*s["recross"], 0.01, stay=2, interpolate=False) == 8.0
    assert math.isnan(onset_time(*s["recross"], 0.01, stay=3))
    assert math.isnan(onset_time(*s["never"], 0.01))
    assert math.isnan(onset_time(*s["touch-threshold"], 0.01))
    # a record exactly at the threshold is not below it; interpolation then lands on it
    assert onset_time(*s["equal-then-below"], 0.01, interpolate=False) == 3.0
    assert onset_time(*s["equal-then-below"], 0.01) == 2.0
    # gap at t = 100: the crossing is interpolated from (10, 0.5) to (1000, 0.005)
    want = 10.0 * 100.0 ** (math.log(0.02) / math.log(0.01))
    assert onset_time(*s["nan-records"], 0.01) == pytest.approx(want, rel=1e-12)
    assert onset_time(*s["nan-inside-stay"], 0.01, stay=2, interpolate=False) == 10.0
    assert onset_time(*s["first-record-below"], 0.01) == 0.5
    # earlier record at t = 0: linear in time, log in value
    frac = math.log(0.01) / math.log(0.001)
    assert onset_time(*s["from-t0"], 0.01) == pytest.approx(frac, rel=1e-12)


def test_onset_all_nan_stay_1_is_nan():
    """A series without a finite record (e.g. a training log that never reached the terminal
    phase) has no onset: NaN."""
    times, values = ONSET_SERIES["all-nan"]
    assert math.isnan(onset_time(np.array(times), np.array(values), 0.01, stay=1))


@pytest.mark.parametrize("stay", [2, 3])
def test_onset_all_nan_with_stay_is_nan(stay):
    """A series without a finite record has no onset for any ``stay``: NaN, not an error
    (training logs leave NC metrics empty before the terminal phase)."""
    times, values = ONSET_SERIES["all-nan"]
    assert math.isnan(onset_time(np.array(times), np.array(values), 0.01, stay=stay))


@pytest.mark.parametrize(("direction", "level"), [("below", 2.0), ("above", 2.0)])
@pytest.mark.parametrize("interpolate", [True, False])
def test_crossing_and_lead_time_match_reference(direction, level, interpolate):
    """crossing_time (first record at or past the level, log-log interpolation) and lead_time
    (onset minus crossing) equal the references, with NaN gaps and a record exactly at the
    level."""
    times = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
    falling = np.array([9.0, NAN, 5.0, 2.0, 1.0, 0.5])
    rising = 1.0 / falling * 4.0  # 4/9, NaN, 0.8, 2.0, 4.0, 8.0
    series = falling if direction == "below" else rising
    got = crossing_time(times, series, level, direction, interpolate)
    want = reference_crossing(times, series, level, direction, interpolate)
    assert _same(got, want) and want == 8.0  # a record exactly at the level: its own time
    shifted = series * (1.1 if direction == "below" else 0.9)  # level now between records
    got = crossing_time(times, shifted, level, direction, interpolate)
    want = reference_crossing(times, shifted, level, direction, interpolate)
    assert _same(got, want)
    auto = crossing_time(times, shifted, level, "auto", interpolate)
    assert _same(auto, want)
    lead = lead_time(times, shifted, 100.0, level, direction, interpolate)
    assert _same(lead, 100.0 - want)


def test_crossing_never_and_lead_nan():
    """No crossing gives NaN crossing time and NaN lead; NaN onset gives NaN lead."""
    times = np.array([1.0, 2.0, 3.0])
    fn = np.array([5.0, 4.0, 3.0])
    assert math.isnan(crossing_time(times, fn, 1.0, "below"))
    assert math.isnan(lead_time(times, fn, 10.0, 1.0, "below"))
    assert math.isnan(lead_time(times, fn, NAN, 4.5, "below"))
    assert lead_time(times, fn, 10.0, 4.5, "below", interpolate=False) == 8.0


@pytest.mark.parametrize("when", [0.5, 1.0, 1.5, 3.0, 5.0, 8.0, 20.0, 40.0, NAN])
@pytest.mark.parametrize("fn", [[3.0, NAN, 2.0, 1.5, NAN, 1.0], [3.0, NAN, 0.0, 1.5, -0.5, 1.0]],
                         ids=["positive", "with_zero_and_negative"])
def test_value_at_matches_reference(when, fn):
    """value_at (fn at onset): linear in (log time, log value) between the finite records
    around ``when`` (in value next to a value <= 0), the record value at a record time, the
    first / last finite value outside the range."""
    times = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
    got = value_at(times, np.array(fn), when)
    want = reference_value_at(times, fn, when)
    assert _same(got, want), (got, want)


def test_fn_at_onset_on_a_power_law():
    """fn at onset for nc1 = t^-2 and fn = 10 t^-1/2 recorded at 4 log-spaced records per
    decade, threshold 0.005: the onset sqrt(200) lies between records and is exact (log-log),
    and so is fn there, 10 / 200^(1/4). A series linear in log t is not a power law: between
    the records 10 and 10^1.25 the log-log line lies below it (log is concave), by
    0.37% at the onset."""
    times = np.geomspace(1.0, 1e3, 13)
    when = onset_time(times, times**-2.0, 0.005)
    assert when == pytest.approx(math.sqrt(200.0), rel=1e-12)
    fn = value_at(times, 10.0 * times**-0.5, when)
    assert fn == pytest.approx(10.0 / math.sqrt(when), rel=1e-12)
    lin = value_at(times, 2.0 + 3.0 * np.log(times), when)
    v0, v1 = 2.0 + 3.0 * math.log(10.0), 2.0 + 3.0 * math.log(10**1.25)
    frac = (math.log(when) - math.log(10.0)) / (math.log(10**1.25) - math.log(10.0))
    assert lin == pytest.approx(v0 * (v1 / v0) ** frac, rel=1e-12)
    assert lin / (2.0 + 3.0 * math.log(when)) - 1.0 == pytest.approx(-0.003705, abs=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_value_at_inverts_crossing_time(seed):
    """fn at the time fn crosses a level is that level: value_at undoes crossing_time's
    interpolation (both linear in (log time, log value)), falling or rising, with a record
    at t = 0."""
    rng = np.random.default_rng(seed)
    times = np.concatenate([[0.0], np.geomspace(0.01, 100.0, 9)])
    fn = np.exp(np.cumsum(rng.normal(0.0, 0.5, times.size)))
    for level in rng.uniform(fn.min(), fn.max(), 5):
        direction = "below" if fn[0] > level else "above"
        when = crossing_time(times, fn, level, direction)
        assert value_at(times, fn, when) == pytest.approx(level, rel=1e-12)
