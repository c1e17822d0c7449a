"""Metric values where class means coincide up to rounding.

``ncsim.metrics`` (module docstring, "Resolution" and "Degenerate values"): class means carry
rounding errors of about s_n = 8 eps (sqrt(K) + sqrt(p)) max|h|, with max|h| the largest
entry of all the features; spreads not above that level count as exact zeros. So two classes
whose means are equal in exact arithmetic have coincident means however the sums round:
cdnv is inf (a pair at distance 0 with within-class variance), and nc1_trace is inf when the
only between-class spread is such a pair. The streaming accumulator must judge the rounding
level by the largest entry of every batch, as the batched metric does.
"""

from __future__ import annotations

import math

import pytest
import torch

from ncsim.errors import InputError
from ncsim.metrics import StreamingNC, cdnv, class_statistics, nc1_trace, nc4, nc_metrics

F64 = torch.float64


@pytest.mark.parametrize("seed", range(4))
def test_classes_with_the_same_samples_in_another_order_have_infinite_cdnv(seed):
    """Class 1 holds the samples of class 0 (spread 0.1 about an offset of 1e3) in another
    order, class 2 two distant samples. The means of classes 0 and 1 are equal (their sums
    may round apart by ~1e-13, far below 4 s_n = 2.4e-11), so that pair's ratio is inf
    (variance 0.03 over distance 0) and so is the mean over pairs; the other two pairs are
    finite; moving class 1 away by 1 makes every pair finite."""
    g = torch.Generator().manual_seed(seed)
    pts = 0.1 * torch.randn(7, 3, generator=g, dtype=F64) + 1e3
    perm = torch.randperm(7, generator=g)
    h = torch.cat([pts, pts[perm], pts[:2] + 5.0])[None]
    labels = torch.tensor([0] * 7 + [1] * 7 + [2] * 2)
    assert math.isinf(float(cdnv(h, labels, 3)[0]))
    stats = class_statistics(h, labels, 3)
    # the pair (0, 2) alone: (Var_0 + Var_2) / (2 |mu_0 - mu_2|^2), finite and positive
    var = stats.class_var[0]
    d2 = float(((stats.means[0, 0] - stats.means[0, 2]) ** 2).sum())
    assert 0 < float((var[0] + var[2]) / (2 * d2)) < 1
    # with the pair (0, 1) apart, cdnv is finite again
    h_apart = h.clone()
    h_apart[0, 7:14] += 1.0
    assert math.isfinite(float(cdnv(h_apart, labels, 3)[0]))


@pytest.mark.parametrize("a0", [0.3, 0.7])
def test_streaming_resolution_uses_the_largest_entry_of_every_batch(a0):
    """Class 0 = {(2e8 + a0, 2e8), (0.1, 0)} and class 1 = {(1e8 + (a0 + 0.1)/2, 1e8)} have
    the same mean in exact arithmetic: no between-class spread, nc1_trace = inf (within-class
    spread over a zero spread). Streamed with the large samples first and the small one last,
    the rounding level must still be that of the entries ~2e8 (s_n ~ 1e-6, while the
    computed means differ by up to ~1e-8): the streamed value is inf too, as batched."""
    x = torch.tensor([[2e8 + a0, 2e8], [0.1, 0.0], [1e8 + (a0 + 0.1) / 2, 1e8]], dtype=F64)
    y = torch.tensor([0, 0, 1])
    assert math.isinf(float(nc1_trace(x[None], y, 2)[0]))
    stream = StreamingNC(2, 2)
    stream.update(x[[0, 2]], y[[0, 2]])
    stream.update(x[[1]], y[[1]])
    assert math.isinf(stream.compute()["nc1_trace"])
    # the other order gives the same
    other = StreamingNC(2, 2)
    other.update(x[[1]], y[[1]])
    other.update(x[[0, 2]], y[[0, 2]])
    assert math.isinf(other.compute()["nc1_trace"])


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), 1e200])
def test_streaming_metrics_of_non_finite_features_are_nan_not_an_error(scale):
    """NaN or inf features, or finite ones whose squares pass the float64 range (1e200): the
    streaming metrics are NaN, as the batched ones are (torch's eigh failed to converge and
    raised, which ended a diverging training without its log)."""
    K, p = 3, 4
    labels = torch.arange(K).repeat_interleave(2)
    h = torch.randn(6, p, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * scale
    stream = StreamingNC(K, p)
    stream.update(h, labels)
    values = stream.compute()
    assert math.isnan(values["nc1_trace"]) and math.isnan(values["nc1"])
    weights = torch.randn(1, K, p, dtype=torch.float64)
    batched = nc_metrics(h[None], labels, K, weights)
    assert math.isnan(float(batched["nc1_trace"][0]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_features_are_refused_with_the_cast_to_make(dtype):
    """float16 / bfloat16 features: refused naming the dtype and the cast (torch's cdist has
    no half kernel on the CPU, and the metrics' sums need at least float32)."""
    h = torch.randn(1, 6, 4).to(dtype)
    labels = torch.arange(3).repeat_interleave(2)
    weights = torch.randn(1, 3, 4).to(dtype)
    for metric in (lambda: nc_metrics(h, labels, 3, weights), lambda: cdnv(h, labels, 3)):
        with pytest.raises(InputError, match=r"features must be float32 or float64, got "
                                             r"torch\.b?float16; cast them"):
            metric()


def test_nc4_with_means_of_another_class_count_blames_the_means():
    """Class means for 2 classes beside a 3-class classifier: the message names the means
    and the shape they need, not the (correct) weights."""
    features = torch.randn(1, 6, 4, dtype=torch.float64)
    weights = torch.randn(1, 3, 4, dtype=torch.float64)
    means = torch.randn(1, 2, 4, dtype=torch.float64)
    with pytest.raises(InputError, match=r"means hold 2 classes but the weights 3; give one "
                                         r"class mean per row of the weights, shape \(1, 3, 4\)"):
        nc4(features, weights, None, means)
