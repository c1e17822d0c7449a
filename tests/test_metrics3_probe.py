"""Mutation probe of ncsim.metrics: NC4 ties next to a far class, checks of the stats route."""

import pytest
import torch

from ncsim.errors import InputError
from ncsim.metrics import (
    StreamingNC,
    class_statistics,
    nc4,
    nc_metrics,
    nc_metrics_from_stats,
)

K = 4
BIG = 2.0**40  # squared distances to the far class (~2^81) are past float64's 53 bits


def _tie_case():
    """Integer features, class means (0,0), (2,0), (0,2) and a far class at (BIG, BIG).

    Samples (1,0) of class 1 and (0,1) of class 2 are exactly equidistant from mean 0 and
    their own class mean: the first-index rule sends both to class 0. With W = 0 and the bias
    favouring class 0, the samples whose nearest mean is not 0 are the 3 other samples of
    class 1, the 3 other ones of class 2 and the 4 of class 3: nc4 = 10 / 16.
    """
    pts = {
        0: [(-1, 0), (1, 0), (0, 1), (0, -1)],
        1: [(3, 0), (1, 0), (2, 1), (2, -1)],
        2: [(0, 3), (1, 2), (-1, 2), (0, 1)],
        3: [(BIG + 1, BIG), (BIG - 1, BIG), (BIG, BIG + 1), (BIG, BIG - 1)],
    }
    rows = [q for c in range(K) for q in pts[c]]
    labels = torch.tensor([c for c in range(K) for _ in pts[c]])
    feats = torch.tensor(rows, dtype=torch.float64).unsqueeze(0)
    weights = torch.zeros(1, K, 2, dtype=torch.float64)
    bias = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    return feats, labels, weights, bias


EXPECTED_NC4 = 10 / 16


def test_tie_case_means_are_on_the_grid():
    """The tie case's class means are exactly the intended grid points."""
    feats, labels, _, _ = _tie_case()
    means = class_statistics(feats, labels, K).means[0]
    expected = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [BIG, BIG]], dtype=torch.float64)
    assert torch.equal(means, expected)


def test_nc_metrics_nc4_keeps_first_index_ties_next_to_a_far_class():
    """nc_metrics' fused nc4 expands about the first class mean: exact ties stay ties."""
    feats, labels, weights, bias = _tie_case()
    out = nc_metrics(feats, labels, K, weights, bias)
    assert out["nc4"].item() == EXPECTED_NC4


def test_nc4_keeps_first_index_ties_next_to_a_far_class():
    """nc4 (one by one) expands about the first class mean: exact ties stay ties."""
    feats, labels, weights, bias = _tie_case()
    means = class_statistics(feats, labels, K).means
    assert nc4(feats, weights, bias, means).item() == EXPECTED_NC4


def test_nc_metrics_from_stats_nc4_keeps_first_index_ties_next_to_a_far_class():
    """The stats route (as classmeans uses it) gives the same tie-exact nc4."""
    feats, labels, weights, bias = _tie_case()
    stats = class_statistics(feats, labels, K)
    out = nc_metrics_from_stats(stats, feats, weights, bias)
    assert out["nc4"].item() == EXPECTED_NC4


def test_streaming_nc4_keeps_first_index_ties_next_to_a_far_class():
    """StreamingNC's NC4 pass, fed in two batches, gives the same tie-exact nc4."""
    feats, labels, weights, bias = _tie_case()
    h = feats[0]
    logits = h @ weights[0].T + bias[0]
    acc = StreamingNC(K, 2)
    order = torch.randperm(h.shape[0], generator=torch.Generator().manual_seed(3))
    batches = (order[:7], order[7:])
    for idx in batches:
        acc.update(h[idx], labels[idx])
    acc.begin_nc4()
    for idx in batches:
        acc.update_nc4(h[idx], logits[idx])
    assert acc.compute(weights[0], bias[0])["nc4"] == EXPECTED_NC4


def test_nc_metrics_from_stats_refuses_weights_of_the_wrong_shape():
    """nc_metrics_from_stats checks the weights' shape first, with the (R, K, p) message."""
    feats, labels, _, _ = _tie_case()
    stats = class_statistics(feats, labels, K)
    bad = torch.zeros(1, K, 3, dtype=torch.float64)
    with pytest.raises(InputError, match=r"weights must have shape \(R, K, p\) = \(1, 4, 2\)"):
        nc_metrics_from_stats(stats, feats, bad)


def test_begin_nc4_refuses_a_class_without_samples():
    """begin_nc4 needs every class's final mean: a class never seen raises at once."""
    acc = StreamingNC(3, 2)
    acc.update(torch.randn(4, 2, dtype=torch.float64), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(InputError, match=r"classes \[2\] have no samples"):
        acc.begin_nc4()
