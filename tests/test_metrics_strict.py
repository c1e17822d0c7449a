"""Strict values of the NC metrics and onset functions where two paths must agree or where a
documented convention fixes the answer.

Conventions used (``ncsim.metrics`` and ``ncsim.onset`` module docstrings):

- resolution: centred class means with |Mbar|_F <= 4 s_n, s_n = 8 eps (sqrt K + sqrt p)
  max|h|, count as exact zeros; a spread that is zero to resolution gives tr(Sigma_W)/0
  (NaN when Sigma_W = 0 too);
- the streaming accumulator works in float64 whatever the input dtype, and its metrics are
  those of the batched functions on the same samples;
- nc4 compares argmax of the logits with the nearest class mean, a purely geometric rule:
  it is unchanged by a common offset of the features that the classifier does not see;
- the Gram-space and class-means forms give the metrics of ``nc_metrics`` on the features
  they stand for;
- onset: records without a finite time are dropped, an onset at a record's own time is
  that record's time exactly, and fn at onset is the fn of the record whose metric crossed;
  ``is_vanishing`` compares the last finite fn with the largest finite fn.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from ncsim.errors import InputError
from ncsim.metrics import METRIC_NAMES, StreamingNC, class_statistics, nc4, nc_metrics
from ncsim.models.classmeans import ClassMeansObjective
from ncsim.models.gram import GramObjective
from ncsim.onset import (
    crossing_time,
    is_vanishing,
    onset_and_fn,
    onset_table,
    onset_time,
    value_at,
)
from ncsim.spec import ModelSpec

F64 = torch.float64
EPS = torch.finfo(F64).eps


def _same(got: float, want: float, rtol: float) -> bool:
    """Equal to ``rtol``, with NaN == NaN and inf == inf (the metrics' IEEE conventions)."""
    if math.isnan(want) or math.isinf(want):
        return (math.isnan(got) and math.isnan(want)) or got == want
    return math.isclose(got, want, rel_tol=rtol, abs_tol=1e-300)


def _naive_nc4(h: np.ndarray, y: np.ndarray, k: int, w: np.ndarray, b: np.ndarray) -> float:
    """Fraction of samples whose argmax logit differs from the nearest class mean, with the
    distances computed per sample and class from the features as given."""
    mu = [h[y == c].mean(0) for c in range(k)]
    bad = 0
    for i in range(len(y)):
        logits = [float(w[c] @ h[i] + b[c]) for c in range(k)]
        dist = [float(np.sum((h[i] - mu[c]) ** 2)) for c in range(k)]
        bad += int(np.argmax(logits)) != int(np.argmin(dist))
    return bad / len(y)


# --------------------------------------------------------------------------------------------
# resolution of the class means
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("units", "resolved"), [(82, False), (140, True)])
def test_centred_means_count_as_zero_up_to_four_rounding_levels(units, resolved):
    """Two classes of one sample each, h = 1 and h = 1 + delta with delta = units * eps
    (exact in float64, as are the means, mu_G = 1 + delta/2 and Mbar = -+delta/2). Then
    |Mbar|_F = delta / sqrt 2 and s_n = 8 eps (sqrt 2 + 1)(1 + delta) = 19.3 eps: 82 eps
    gives |Mbar|_F = 3.0 s_n (not resolved: class_mean_norm 0, nc2 undefined, nc1_trace 0/0
    = NaN), 140 eps gives 5.1 s_n (resolved: class_mean_norm = delta/2 exactly, a two-class
    simplex (nc2_etf = 0) with no within-class spread (nc1_trace = 0))."""
    delta = units * EPS
    h = torch.tensor([[[1.0], [1.0 + delta]]], dtype=F64)
    y = torch.tensor([0, 1])
    s_n = 8 * EPS * (2**0.5 + 1) * (1 + delta)
    ratio = delta / 2**0.5 / s_n
    assert (ratio > 4) is resolved and (3 < ratio < 6)
    out = nc_metrics(h, y, 2, torch.ones(1, 2, 1, dtype=F64))
    if resolved:
        assert float(out["class_mean_norm"][0]) == delta / 2
        assert float(out["nc1_trace"][0]) == 0.0
        assert float(out["nc2_etf"][0]) == pytest.approx(0.0, abs=1e-15)
    else:
        assert float(out["class_mean_norm"][0]) == 0.0
        assert math.isnan(float(out["nc1_trace"][0]))
        assert math.isnan(float(out["nc2_etf"][0]))


# --------------------------------------------------------------------------------------------
# streaming accumulator against the batched metrics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_streaming_with_more_dimensions_than_within_class_samples_equals_batched(seed):
    """p = 8 > N - K = 3: Sigma_W has rank 3 and five zero eigenvalues, which the
    eigendecomposition returns as +-1e-16. The streamed metrics (two batches) must still be
    the batched ones to 1e-10 (both are float64 formulas on the same statistics), with a
    finite nc1 rather than the NaN of a square root of a negative rounding eigenvalue."""
    gen = torch.Generator().manual_seed(seed)
    k, p = 3, 8
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    h = torch.randn(6, p, generator=gen, dtype=F64) + 2.0 * torch.eye(k, p, dtype=F64)[y]
    w = torch.randn(k, p, generator=gen, dtype=F64)
    acc = StreamingNC(k, p)
    acc.update(h[:4], y[:4])
    acc.update(h[4:], y[4:])
    got = acc.compute(w)
    want = nc_metrics(h[None], y, k, w[None])
    assert math.isfinite(got["nc1"]) and got["nc1"] > 0
    bad = [(n, got[n], float(want[n][0])) for n in got
           if not _same(got[n], float(want[n][0]), 1e-10)]
    assert not bad, bad


def test_streaming_accumulates_float32_batches_in_float64():
    """float32 batches are cast to float64 before any sum: the result is bit for bit that of
    the same values given as float64 (every metric, NC4 pass included), and equals the
    batched float64 metrics of those values to 1e-10."""
    gen = torch.Generator().manual_seed(3)
    k, p = 3, 5
    y = torch.arange(k).repeat(4)
    h32 = (torch.randn(12, p, generator=gen) + 3.0 * torch.eye(k, p)[y]).float()
    w32 = torch.randn(k, p, generator=gen).float()
    b32 = torch.randn(k, generator=gen).float()

    def stream(h, w, b):
        acc = StreamingNC(k, p)
        acc.update(h[:5], y[:5])
        acc.update(h[5:], y[5:])
        acc.begin_nc4()
        acc.update_nc4(h, h @ w.T + b)
        return acc.compute(w, b)

    low = stream(h32, w32, b32)
    high = stream(h32.double(), w32.double(), b32.double())
    assert low.keys() == high.keys()
    for name in low:
        assert low[name] == high[name] or (math.isnan(low[name]) and math.isnan(high[name]))
    want = nc_metrics(h32.double()[None], y, k, w32.double()[None], b32.double()[None])
    bad = [n for n in METRIC_NAMES if not _same(low[n], float(want[n][0]), 1e-10)]
    assert not bad, bad


def test_a_second_begin_nc4_restarts_the_nc4_pass():
    """begin_nc4 starts the NC4 pass afresh: a pass with logits that disagree with every
    nearest mean (nc4 = 1), then begin_nc4 and a pass with the true logits, gives the nc4 of
    the second pass alone (the batched nc4), not a mixture of both passes. A pass over 7 of
    the 15 samples is refused: NC4 is over the samples of the class means."""
    gen = torch.Generator().manual_seed(5)
    k, p = 3, 4
    y = torch.arange(k).repeat(5)
    h = torch.randn(15, p, generator=gen, dtype=F64) + 2.0 * torch.eye(k, p, dtype=F64)[y]
    w = torch.randn(k, p, generator=gen, dtype=F64)
    b = torch.randn(k, generator=gen, dtype=F64)
    acc = StreamingNC(k, p)
    acc.update(h, y)
    acc.begin_nc4()
    means = class_statistics(h[None], y, k).means[0]
    nearest = torch.cdist(h, means).argmin(1)
    wrong = torch.nn.functional.one_hot((nearest + 1) % k, k).to(F64)  # never the nearest
    acc.update_nc4(h[:7], wrong[:7])
    with pytest.raises(InputError, match="the NC4 pass saw 7 samples and pass 1 15"):
        acc.compute(w, b)
    acc.update_nc4(h[7:], wrong[7:])
    assert acc.compute(w, b)["nc4"] == 1.0
    acc.begin_nc4()
    acc.update_nc4(h, h @ w.T + b)
    want = float(nc4(h[None], w[None], b[None], means[None])[0])
    assert acc.compute(w, b)["nc4"] == want
    assert want == _naive_nc4(h.numpy(), y.numpy(), k, w.numpy(), b.numpy())


def test_streaming_refuses_logits_and_bias_of_the_wrong_shape():
    """update() checks the shape of the logits it is given, and compute() that of the bias
    (K,), as documented, instead of ignoring them."""
    k, p = 3, 4
    y = torch.arange(k).repeat(2)
    h = torch.randn(6, p, dtype=F64)
    acc = StreamingNC(k, p)
    with pytest.raises(InputError, match=r"logits must have shape \(6, 3\), got \(6, 2\)"):
        acc.update(h, y, logits=torch.zeros(6, 2, dtype=F64))
    acc.update(h, y, logits=torch.zeros(6, 3, dtype=F64))
    w = torch.randn(k, p, dtype=F64)
    with pytest.raises(InputError, match=r"bias must have shape \(3,\), got \(1, 3\)"):
        acc.compute(w, torch.zeros(1, k, dtype=F64))
    assert set(acc.compute(w, torch.zeros(k, dtype=F64))) == set(METRIC_NAMES) - {"nc4"}


def test_streaming_refuses_an_unknown_global_mean():
    """compute() and stats() take global_mean "sample" or "class_average" like the batched
    functions; any other word is refused (it must not fall back silently to one of them:
    with unbalanced classes the two give different nc1)."""
    k, p = 3, 4
    y = torch.tensor([0, 0, 0, 1, 2, 2])
    h = torch.randn(6, p, generator=torch.Generator().manual_seed(2), dtype=F64)
    acc = StreamingNC(k, p)
    acc.update(h, y)
    for call in (lambda: acc.compute(global_mean="classes"), lambda: acc.stats("mean")):
        with pytest.raises(InputError, match=r"unknown global_mean .*allowed: sample, "
                                             r"class_average"):
            call()
    sample, average = acc.compute()["nc1"], acc.compute(global_mean="class_average")["nc1"]
    assert sample == pytest.approx(float(nc_metrics(h[None], y, k, torch.ones(1, k, p,
                                         dtype=F64))["nc1"][0]), rel=1e-10)
    assert abs(sample - average) > 1e-3 * sample


# --------------------------------------------------------------------------------------------
# nc4 under a large common offset
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "offset"), [(F64, 1e9), (torch.float32, 1e5)])
def test_nc4_is_unchanged_by_a_common_offset_the_classifier_does_not_see(dtype, offset):
    """Features = class centres 3 e_c plus spread 0.5, with a last coordinate equal to
    ``offset`` for every sample; W has a zero last column. The logits and the nearest class
    mean do not depend on the offset, so nc4 must equal nc4 of the features without it (and
    the per-sample reference). |h|^2 ~ offset^2 is far beyond the precision of distances
    that differ by O(1) (eps offset^2 ~ 2e2 in float64, 6e2 in float32): distances
    expanded about the origin would mix up the classes. Batched, and streamed in float64."""
    gen = torch.Generator().manual_seed(1)
    k, p = 3, 4
    y = torch.arange(k).repeat_interleave(5)
    centres = torch.zeros(k, p, dtype=F64)
    centres[:, :k] = 3.0 * torch.eye(k, dtype=F64)
    base = centres[y] + 0.5 * torch.randn(15, p, generator=gen, dtype=F64)
    base[:, -1] = 0.0
    w = centres.clone()
    b = -0.5 * (centres * centres).sum(1)
    base, w, b = base.to(dtype), w.to(dtype), b.to(dtype)
    shifted = base.clone()
    shifted[:, -1] = offset
    want = _naive_nc4(base.double().numpy(), y.numpy(), k, w.double().numpy(),
                      b.double().numpy())
    for h in (base, shifted):
        means = class_statistics(h[None], y, k).means
        # float32 holds the fraction j/15 to 1e-7 (the fractions are 1/15 apart)
        assert float(nc4(h[None], w[None], b[None], means)[0]) == pytest.approx(want, abs=1e-7)
    if dtype == F64:
        acc = StreamingNC(k, p)
        acc.update(shifted, y)
        acc.begin_nc4()
        acc.update_nc4(shifted, shifted @ w.T + b)
        assert acc.compute(w, b)["nc4"] == want


# --------------------------------------------------------------------------------------------
# Gram-space and class-means forms against the batched metrics
# --------------------------------------------------------------------------------------------


def _gram(k: int, n: int, d: int) -> GramObjective:
    model = ModelSpec(kind="ufm", loss="ce", bias="none", classes=k, per_class=n, dim=d)
    return GramObjective(model, "cpu", F64)


@pytest.mark.parametrize("seed", range(8))
def test_gram_cdnv_of_classes_with_the_same_samples_is_infinite(seed):
    """Class 1 holds the samples of class 0 (spread 0.1 about 1e3) in another order, class 2
    the same samples moved by 5: the means of classes 0 and 1 coincide, so the pair's CDNV
    and the mean over pairs are inf, in the Gram form as in ``nc_metrics``, although the
    Gram entries (~4e6) round the squared distance of that pair to ~1e-9, not to 0."""
    k, n, d = 3, 7, 4
    gram = _gram(k, n, d)
    y = gram.labels
    gen = torch.Generator().manual_seed(seed)
    pts = 0.1 * torch.randn(n, d, generator=gen, dtype=F64) + 1e3
    perm = torch.randperm(n, generator=gen)
    h = torch.empty(k * n, d, dtype=F64)
    h[y == 0], h[y == 1], h[y == 2] = pts, pts[perm], pts + 5.0
    w = torch.randn(k, d, generator=gen, dtype=F64)
    got = gram.metrics(gram.from_parameters(h.T[None], w[None], None))
    assert math.isinf(float(nc_metrics(h[None], y, k, w[None])["cdnv"][0]))
    assert float(got["cdnv"][0]) == math.inf
    assert math.isfinite(float(got["nc1"][0])) and float(got["nc1_trace"][0]) > 0


@pytest.mark.parametrize("seed", range(6))
def test_gram_metrics_of_collapsed_features_are_never_negative(seed):
    """Every feature equals its class mean (means ~ pi + 0.3 N(0, 1)): within_energy,
    nc1_trace, nc1 and cdnv are 0 up to the Gram's rounding (eps |h|^2 ~ 1e-14 relative to
    the spread), and never below 0 (a squared distance |h_i - mu_yi|^2 cannot be negative)."""
    k, n, d = 3, 7, 4
    gram = _gram(k, n, d)
    gen = torch.Generator().manual_seed(seed)
    mu = 0.3 * torch.randn(k, d, generator=gen, dtype=F64) + math.pi
    h = mu[gram.labels]
    w = torch.randn(k, d, generator=gen, dtype=F64)
    got = gram.metrics(gram.from_parameters(h.T[None], w[None], None))
    for name in ("within_energy", "nc1_trace", "nc1", "cdnv"):
        value = float(got[name][0])
        assert 0.0 <= value < 1e-12, (name, value)


def test_class_means_form_judges_resolution_by_the_features_as_nc_metrics_does():
    """Two classes whose means lie 1e-12 apart near the origin while every feature is ~1e3
    away from its mean: the means' rounding level is that of the features' sums (s_n ~ 5e-12
    for max|h| = 1e3), so the spread is not resolved and the class-means form reports what
    ``nc_metrics`` does on the rebuilt features: class_mean_norm 0, nc1 and nc1_trace inf
    (within-class spread over a zero spread), cdnv inf."""
    model = ModelSpec(loss="mse", bias="none", classes=2, per_class=2, dim=2)
    form = ClassMeansObjective(model, "cpu", F64)
    y = form.labels
    e = torch.tensor([[1e3, -7e2], [4e2, 9e2]], dtype=F64)
    m = torch.tensor([[1e-3, 2e-3], [1e-3 + 1e-12, 2e-3]], dtype=F64)
    h = torch.empty(4, 2, dtype=F64)
    for c in range(2):
        idx = torch.nonzero(y == c).flatten()
        h[idx[0]], h[idx[1]] = m[c] + e[c], m[c] - e[c]
    w = torch.tensor([[1.0, 0.5], [-0.3, 2.0]], dtype=F64)
    state = form.from_parameters(h.T[None], w[None], None)
    got = form.metrics(state)
    feats = form.parameters(state)[0].transpose(1, 2)
    want = nc_metrics(feats, y, 2, w[None])
    assert float(want["class_mean_norm"][0]) == 0.0
    for name in ("nc1", "nc1_trace", "cdnv"):
        assert float(want[name][0]) == math.inf
    # nc4 is left out: with coincident means every nearest-mean choice is a rounding-level tie
    bad = [n for n in METRIC_NAMES if n != "nc4"
           and not _same(float(got[n][0]), float(want[n][0]), 1e-12)]
    assert not bad, bad


# --------------------------------------------------------------------------------------------
# onset conventions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_a_crossing_on_a_record_is_that_records_time_bit_for_bit(seed):
    """Random record times (exp(log t) differs from t for most of them): a crossing_time
    level met exactly by a record, and an onset whose previous record sits exactly on the
    threshold, are those records' times bit for bit, not an exp-log round trip."""
    rng = np.random.default_rng(seed)
    for _ in range(20):
        t = np.sort(rng.uniform(0.1, 50.0, 4))
        v = np.array([5.0, 0.3, 0.02, 0.001])
        assert crossing_time(t, v, 0.3, "below") == t[1]
        assert crossing_time(t, v, 0.02) == t[2]
        assert crossing_time(t, v[::-1].copy(), 0.3, "above") == t[2]
        assert onset_time(t, v, threshold=0.3) == t[1]


def test_records_without_a_finite_time_are_dropped():
    """A record at t = +inf (or -inf) is not part of the series: the only record below the
    threshold is at +inf, so there is no onset (NaN), no crossing, and value_at past the
    last finite record is that record's value; a record at -inf that is below does not
    make the onset -inf."""
    t = np.array([1.0, 2.0, math.inf])
    v = np.array([1.0, 0.5, 1e-3])
    assert math.isnan(onset_time(t, v, 0.01))
    assert math.isnan(crossing_time(t, v, 0.01, "below"))
    assert value_at(t, v, 3.0) == 0.5
    t2 = np.array([-math.inf, 1.0, 2.0, 4.0])
    v2 = np.array([1e-3, 1.0, 0.1, 1e-3])
    assert onset_time(t2, v2, 0.01) == pytest.approx(2.0 * 2.0**0.5, rel=1e-14)


@pytest.mark.parametrize("interpolate", [True, False])
def test_fn_at_an_onset_jump_after_leading_gaps_is_the_crossing_records(interpolate):
    """A training log: the NC metric is NaN (a gap) before 99% accuracy, then an intervention
    at t = 2 multiplies fn by 10 and drops the metric below 0.01 (two records at t = 2). The
    onset is t = 2 and fn at onset is the fn of the record after the jump (70), not that of
    the record before it (7), however many gaps come first."""
    times = np.array([0.0, 0.5, 1.0, 2.0, 2.0, 3.0])
    metric = np.array([np.nan, np.nan, 0.5, 0.5, 0.001, 0.0005])
    fn = np.array([9.0, 8.5, 8.0, 7.0, 70.0, 60.0])
    assert onset_and_fn(times, metric, fn, 0.01, interpolate=interpolate) == (2.0, 70.0)
    frame = pd.DataFrame({"run_id": "r", "time": times, "nc1_trace": metric, "fn": fn})
    row = onset_table(frame, threshold=0.01, interpolate=interpolate).loc["r"]
    assert (row["onset_time"], row["fn_at_onset"]) == (2.0, 70.0)


def test_an_infinite_fn_record_does_not_make_a_run_vanishing():
    """The largest fn of the vanishing rule is the largest finite one: a run whose fn
    overflowed in one record and came back to 0.9 of its finite peak 1.0 is not vanishing;
    the same run ending at 1e-4 of that peak is."""
    assert not is_vanishing(np.array([1.0, math.inf, 0.9]))
    assert is_vanishing(np.array([1.0, math.inf, 1e-4]))
    assert not is_vanishing(np.array([1.0, -math.inf, 0.9]))


@pytest.mark.parametrize("tol", [1.0, 1.5, -0.1, math.nan])
def test_onset_table_refuses_a_vanish_tol_outside_zero_to_one(tol):
    """vanish_tol is a fraction in [0, 1): 1 would call every run whose fn does not end at
    its peak vanishing, so it is refused like any value outside the range."""
    frame = pd.DataFrame({"run_id": "r", "time": [1.0, 2.0], "nc1_trace": [1.0, 1e-3],
                          "fn": [1.0, 0.5]})
    with pytest.raises(InputError, match=r"vanish_tol must be a number in \[0, 1\)"):
        onset_table(frame, vanish_tol=tol)


def test_a_run_without_any_finite_fn_is_not_vanishing_and_keeps_its_onset():
    """A log whose fn column is empty (NaN throughout, e.g. imported without features) gives
    no evidence that the features vanish: is_vanishing is False (also for an empty series),
    and onset_table keeps the onset of nc1_trace = t^-2 (threshold 1e-3: t = sqrt(1e3)
    exactly in log-log interpolation) with fn at onset NaN."""
    assert not is_vanishing(np.array([np.nan, np.nan])) and not is_vanishing(np.array([]))
    t = np.geomspace(1.0, 1000.0, 13)
    frame = pd.DataFrame({"run_id": "x", "time": t, "nc1_trace": t**-2.0, "fn": np.nan})
    row = onset_table(frame, threshold=1e-3).loc["x"]
    assert not row["vanishing"]
    assert row["onset_time"] == pytest.approx(math.sqrt(1e3), rel=1e-12)
    assert math.isnan(row["fn_at_onset"])


def test_an_empty_batch_adds_nothing_to_the_streaming_metrics():
    """A (0, p) batch between two real ones (as a loader's last, empty batch) changes no
    streamed statistic: every metric equals the stream without it, exactly."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(12, 4, generator=gen, dtype=torch.float64)
    y = torch.arange(12) % 3
    plain, with_empty = StreamingNC(3, 4), StreamingNC(3, 4)
    plain.update(x[:6], y[:6])
    plain.update(x[6:], y[6:])
    with_empty.update(x[:6], y[:6])
    with_empty.update(x[:0], y[:0])
    with_empty.update(x[6:], y[6:])
    a, b = plain.compute(), with_empty.compute()
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key
