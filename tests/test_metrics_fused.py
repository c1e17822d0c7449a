"""nc_metrics computes nc1 and nc4 from one product of the centred features
(``ncsim.metrics._sample_metrics``); these tests hold it to the metrics computed one by one
(``nc1_from_stats``, ``nc4``) and to brute-force nearest means and logits."""

from __future__ import annotations

import pytest
import torch

from ncsim.metrics import (
    METRIC_NAMES,
    class_statistics,
    nc1_from_stats,
    nc4,
    nc_metrics,
    nc_metrics_from_stats,
)


def _random(r: int, counts: tuple[int, ...], p: int, offset: float, seed: int,
            dtype: torch.dtype = torch.float64):
    """Features (r, N, p) of len(counts) classes with means spread ~3 around ``offset``,
    labels (N,) in shuffled order, weights (r, K, p) and bias (r, K)."""
    gen = torch.Generator().manual_seed(seed)
    k = len(counts)
    labels = torch.repeat_interleave(torch.arange(k), torch.tensor(counts))
    labels = labels[torch.randperm(len(labels), generator=gen)]
    centres = 3.0 * torch.randn(r, k, p, generator=gen, dtype=torch.float64) + offset
    feats = centres[:, labels] + torch.randn(r, len(labels), p, generator=gen,
                                             dtype=torch.float64)
    weights = torch.randn(r, k, p, generator=gen, dtype=torch.float64)
    bias = torch.randn(r, k, generator=gen, dtype=torch.float64)
    return feats.to(dtype), labels, weights.to(dtype), bias.to(dtype)


def _one_by_one(feats, labels, k, weights, bias, global_mean="sample"):
    return nc_metrics_from_stats(class_statistics(feats, labels, k, global_mean), feats,
                                 weights, bias)


@pytest.mark.parametrize("global_mean", ["sample", "class_average"])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("p", [7, 2])  # p < K - 1 takes the other side of the pseudo-inverse
def test_fused_route_equals_the_metrics_one_by_one(global_mean, with_bias, p):
    feats, labels, weights, bias = _random(5, (9, 4, 12, 7, 6), p, offset=0.5, seed=1)
    bias = bias if with_bias else None
    fused = nc_metrics(feats, labels, 5, weights, bias, global_mean)
    plain = _one_by_one(feats, labels, 5, weights, bias, global_mean)
    assert tuple(fused) == METRIC_NAMES
    torch.testing.assert_close(fused["nc1"], plain["nc1"], rtol=1e-13, atol=0)
    assert float(fused["nc4"].max()) > 0.0  # the features are noisy: some samples mismatch
    assert torch.equal(fused["nc4"], plain["nc4"])
    for name in METRIC_NAMES:
        torch.testing.assert_close(fused[name], plain[name], rtol=1e-13, atol=0)


def test_fused_route_in_float32():
    feats, labels, weights, bias = _random(4, (6, 6, 6), 5, offset=0.0, seed=2,
                                           dtype=torch.float32)
    fused = nc_metrics(feats, labels, 3, weights, bias)
    plain = _one_by_one(feats, labels, 3, weights, bias)
    assert fused["nc1"].dtype == torch.float32 and fused["nc4"].dtype == torch.float32
    torch.testing.assert_close(fused["nc1"], plain["nc1"], rtol=1e-5, atol=0)
    torch.testing.assert_close(fused["nc4"], plain["nc4"], rtol=0, atol=0)


def _brute_nc4(feats, labels, k, weights, bias):
    """Fraction of samples whose first argmax logit differs from their first nearest class
    mean, by explicit differences in float64 (no expansion of the distances)."""
    f, w = feats.double(), weights.double()
    onehot = torch.nn.functional.one_hot(labels, k).double()
    means = onehot.T @ f / onehot.sum(0).unsqueeze(-1)
    dist = ((f.unsqueeze(-2) - means.unsqueeze(-3)) ** 2).sum(-1)  # (R, N, K)
    logits = f @ w.transpose(-1, -2) + (0.0 if bias is None else bias.double().unsqueeze(-2))
    return (logits.argmax(-1) != dist.argmin(-1)).double().mean(-1)


def test_nc4_on_a_large_common_offset_keeps_its_digits():
    """Features 1e9 from the origin with spreads ~3: expanded about the origin, the distances
    would lose every digit (1e18 eps ~ 100 per product term); about the first class mean
    they keep them. (Subtracting the offset from the stored features is exact.)"""
    feats, labels, weights, bias = _random(6, (8, 8, 8, 8), 4, offset=1e9, seed=3)
    want = _brute_nc4(feats - 1e9, labels, 4, weights, bias + 1e9 * weights.sum(-1))
    got = nc_metrics(feats, labels, 4, weights, bias)["nc4"]
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert 0.0 < float(got.max()) < 1.0


def test_nc4_ties_on_a_grid_take_the_first_class_on_both_sides():
    """Integer features whose class means are integers: exact ties in the distances and in
    the logits, resolved to the first class as ``nc4`` (and argmax/argmin) resolve them."""
    gen = torch.Generator().manual_seed(5)
    r, k, per, p = 4, 4, 6, 3
    centres = torch.randint(-2, 3, (r, k, p), generator=gen).double()
    half = torch.randint(-2, 3, (r, k, per // 2, p), generator=gen).double()
    dev = torch.cat([half, -half], dim=2)  # each class's deviations sum to 0: integer means
    feats = (centres.unsqueeze(2) + dev).reshape(r, k * per, p)
    labels = torch.arange(k).repeat_interleave(per)
    weights = torch.randint(-1, 2, (r, k, p), generator=gen).double()
    bias = torch.randint(-1, 2, (r, k), generator=gen).double()
    stats = class_statistics(feats, labels, k)
    assert torch.equal(stats.means, centres)
    dist = ((feats.unsqueeze(-2) - centres.unsqueeze(-3)) ** 2).sum(-1)
    logits = feats @ weights.transpose(-1, -2) + bias.unsqueeze(-2)
    assert (dist == dist.amin(-1, keepdim=True)).sum(-1).gt(1).any()  # ties occur on both sides
    assert (logits == logits.amax(-1, keepdim=True)).sum(-1).gt(1).any()
    want = (logits.argmax(-1) != dist.argmin(-1)).double().mean(-1)
    got = nc_metrics(feats, labels, k, weights, bias)["nc4"]
    assert torch.equal(got, want)
    assert torch.equal(nc4(feats, weights, bias, stats.means), want)


def test_collapsed_features_read_the_class_logits():
    """Every sample on its class mean: nc4 is the share of samples whose class row of W mu + b
    does not win, counted by hand."""
    means = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]])
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    feats = means[:, labels]
    weights = torch.tensor([[[1.0, 0.0], [1.0, 0.5], [0.0, 0.0]]])
    bias = torch.tensor([[0.0, 0.0, 0.25]])
    # logits of mu_0: (1, 1, 0.25) -> class 0 (first of the tie); mu_1: (0, 0.5, 0.25) -> 1;
    # mu_2: (-1, -1.5, 0.25) -> 2; nearest means are the classes themselves
    assert float(nc_metrics(feats, labels, 3, weights, bias)["nc4"][0]) == 0.0
    bias = torch.tensor([[0.0, 0.75, 0.0]])  # mu_0 now goes to class 1: its 2 samples mismatch
    assert float(nc_metrics(feats, labels, 3, weights, bias)["nc4"][0]) == pytest.approx(2 / 6)


def test_within_scale_gives_sigma_w_and_nc1_of_the_sample_rows():
    """The batched statistics keep the centred features unscaled with s = 1/sqrt(N): s^2 F^T F
    is Sigma_W, and nc1 from them equals nc1 from the same factor pre-scaled (s = 1)."""
    from dataclasses import replace

    feats, labels, _, _ = _random(3, (5, 5, 5), 4, offset=0.0, seed=6)
    stats = class_statistics(feats, labels, 3)
    n = feats.shape[1]
    assert stats.within_scale == pytest.approx(n ** -0.5, rel=1e-15)
    centred = feats - stats.means[:, labels]
    torch.testing.assert_close(stats.sigma_w, centred.transpose(-1, -2) @ centred / n,
                               rtol=1e-13, atol=0)
    scaled = replace(stats, within_factor=stats.within_factor * stats.within_scale,
                     within_scale=1.0)
    torch.testing.assert_close(nc1_from_stats(scaled), nc1_from_stats(stats), rtol=1e-13, atol=0)
