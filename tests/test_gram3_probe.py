"""Third probe of the Gram-space one-layer UFM (ncsim.models.gram): the velocity with scalar
time scales against an autograd d-space reference, the zero state, the truncated factor,
dtypes and the refusal of a deep model."""

from __future__ import annotations

import math

import pytest
import torch
from ufm_helpers import RUNS, labels, naive_gradients, onehot, penalties, random_point

from ncsim.metrics import METRIC_NAMES, nc_metrics
from ncsim.models.gram import GramObjective
from ncsim.models.ufm import Penalties
from ncsim.spec import ModelSpec

F64 = torch.float64
R = RUNS
LOSS_BIAS = [(loss, bias) for loss in ("ce", "mse") for bias in ("none", "free", "reg")]


def _model(loss: str, bias: str, dim: int = 9) -> ModelSpec:
    return ModelSpec(loss=loss, bias=bias, classes=3, per_class=(2, 1, 3), dim=dim)


def _point(model: ModelSpec, seed: int = 3):
    """Random H (R, d, N), W (R, K, d) x 0.6, b (R, K) or None."""
    return random_point(model, seed, 0.6)


@pytest.mark.parametrize(("loss", "bias"), LOSS_BIAS)
def test_velocity_with_scalar_time_scales_is_the_chain_rule_of_autograd(loss, bias):
    """Float time scales eta_W, eta_H, eta_b (all different, not 1): dS, dA, dB and db equal
    the d-space flow (autograd gradients) mapped through S = WH, A = WW^T, B = H^T H."""
    model = _model(loss, bias)
    h, w, b = _point(model)
    pen = penalties(bias)
    eta_w, eta_h, eta_b = 0.5, 3.0, 7.0
    g_h, g_w, g_b = naive_gradients(model, h, w, b, pen)
    d_h, d_w = -eta_h * g_h, -eta_w * g_w
    want = {"Z": d_w @ h + w @ d_h, "A": d_w @ w.mT + w @ d_w.mT, "B": d_h.mT @ h + h.mT @ d_h}
    if b is not None:
        want["b"] = -eta_b * g_b
    gram = GramObjective(model, "cpu", F64)
    got = gram.velocity(gram.from_parameters(h, w, b), pen, eta_w, eta_h, eta_b)
    torch.testing.assert_close(got, gram.layout.pack(want), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("loss", "bias"), LOSS_BIAS)
def test_zero_state_velocity_value_grad_norm_and_metrics(loss, bias):
    """S = A = B = 0: dS, dA, dB are exactly 0, db = -eta_b (G 1 + lambda_b b), the loss is
    that of Z = b 1^T, |grad f| is NaN without a bias (nothing resolved) and |db|/eta_b with
    one, and every metric equals nc_metrics of the zero point (NaN where it is 0/0)."""
    model = _model(loss, bias, dim=4)
    gram = GramObjective(model, "cpu", F64)
    pen = penalties(bias)
    k, n, d = model.classes, model.num_samples, model.dim
    h, w = torch.zeros(R, d, n, dtype=F64), torch.zeros(R, k, d, dtype=F64)
    b = (torch.tensor([[0.3, -0.2, 0.5], [0.0, 0.0, 0.0], [-1.0, 2.0, 0.1]], dtype=F64)
         if model.has_bias else None)
    state = gram.from_parameters(h, w, b)
    vel = gram.velocity(state, pen, 0.5, 3.0, 7.0)
    lay = gram.layout
    for name in ("Z", "A", "B"):
        assert bool((lay.view(vel, name) == 0).all()), name
    g_h, g_w, g_b = naive_gradients(model, h, w, b, pen)
    assert bool((g_h == 0).all() and (g_w == 0).all())
    loss_v, total = gram.value(state, pen)
    z = torch.zeros(R, k, n, dtype=F64) if b is None else b.unsqueeze(-1).expand(R, k, n)
    y = onehot(model)  # (K, N)
    ref = (0.5 * (z - y).square().sum((1, 2)) / n if loss == "mse"
           else -(torch.log_softmax(z, dim=1) * y).sum((1, 2)) / n)
    torch.testing.assert_close(loss_v, ref, rtol=1e-14, atol=1e-15)
    ref_total = ref if b is None else ref + 0.5 * pen.b * b.square().sum(1)
    torch.testing.assert_close(total, ref_total, rtol=1e-14, atol=1e-15)
    norm = gram.grad_norm(state, pen)
    if b is None:
        assert bool(norm.isnan().all())
    else:
        torch.testing.assert_close(lay.view(vel, "b"), -7.0 * g_b, rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(norm, g_b.norm(dim=1), rtol=1e-13, atol=0)
    got = gram.metrics(state)
    want = nc_metrics(h.mT, labels(model), k, w, b)
    for name in METRIC_NAMES:
        torch.testing.assert_close(got[name], want[name], rtol=1e-12, atol=1e-12,
                                   equal_nan=True, msg=name)


@pytest.mark.parametrize("dim", [2, 4])
def test_factor_to_the_rank_keeps_the_largest_directions(dim):
    """A state of rank d < N + K factored into exactly d columns gives back its Gram: the
    eigen-directions kept are the largest, not the first ones eigh returns."""
    model = _model("ce", "free", dim=dim)
    h, w, b = _point(model)
    gram = GramObjective(model, "cpu", F64)
    state = gram.from_parameters(h, w, b)
    fh, fw = gram.factor(state)
    assert fh.shape == (R, dim, model.num_samples) and fw.shape == (R, model.classes, dim)
    torch.testing.assert_close(gram.from_parameters(fh, fw, b), state, rtol=0, atol=1e-11)


def test_factor_of_a_float32_state_is_float32():
    """factor works in float64 inside but returns H and W in the state's dtype (float32)."""
    model = _model("mse", "none", dim=9)
    h, w, _ = _point(model)
    gram = GramObjective(model, "cpu", torch.float32)
    state = gram.from_parameters(h.float(), w.float(), None)
    fh, fw = gram.factor(state)
    assert fh.dtype == torch.float32 and fw.dtype == torch.float32
    torch.testing.assert_close(gram.from_parameters(fh, fw, None), state, rtol=1e-5, atol=1e-5)


def test_float32_grad_norm_is_reported_in_float64_with_the_float32_floor():
    """|grad f| of a float32 state comes back as float64 (the resolution test is done there)
    and equals the float64 norm to float32 rounding."""
    model = _model("ce", "reg")
    h, w, b = _point(model)
    pen = penalties("reg")
    g32 = GramObjective(model, "cpu", torch.float32)
    pen32 = Penalties(pen.w.float(), pen.h.float(), pen.b.float())
    got = g32.grad_norm(g32.from_parameters(h.float(), w.float(), b.float()), pen32)
    assert got.dtype == F64
    g_h, g_w, g_b = naive_gradients(model, h, w, b, pen)
    ref = (g_h.square().sum((1, 2)) + g_w.square().sum((1, 2)) + g_b.square().sum(1)).sqrt()
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=0)


def test_float32_velocity_and_value_stay_float32():
    """A float32 objective on a float32 state gives a float32 velocity, loss and objective
    that equal the float64 ones to float32 rounding."""
    model = _model("ce", "free")
    h, w, b = _point(model)
    pen = penalties("free")
    pen32 = Penalties(pen.w.float(), pen.h.float(), pen.b.float())
    g64, g32 = GramObjective(model, "cpu", F64), GramObjective(model, "cpu", torch.float32)
    s64 = g64.from_parameters(h, w, b)
    s32 = s64.float()
    vel = g32.velocity(s32, pen32, 0.5, 3.0, 7.0)
    assert vel.dtype == torch.float32
    torch.testing.assert_close(vel.double(), g64.velocity(s64, pen, 0.5, 3.0, 7.0),
                               rtol=1e-4, atol=1e-5)
    for got, ref in zip(g32.value(s32, pen32), g64.value(s64, pen)):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)


def test_a_deep_model_is_refused_with_its_message():
    """GramObjective of a two-layer model raises ValueError naming the one-layer UFM."""
    deep = ModelSpec(kind="deep", depth=2, dim=8)
    with pytest.raises(ValueError, match=r"^the Gram form needs the one-layer UFM \(model "
                                         r"'ufm'\)$"):
        GramObjective(deep, "cpu", F64)


def test_k2_n1_metrics_against_explicit_parameters():
    """K = 2, one sample per class (no within-class spread): Gram metrics equal nc_metrics of
    the explicit (W, H, b); nc1 and within_energy are exactly 0 and fn the mean |h_i|."""
    model = ModelSpec(loss="ce", bias="free", classes=2, per_class=1, dim=5)
    h, w, b = _point(model, seed=11)
    gram = GramObjective(model, "cpu", F64)
    got = gram.metrics(gram.from_parameters(h, w, b))
    want = nc_metrics(h.mT, labels(model), 2, w, b)
    for name in METRIC_NAMES:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-12,
                                   equal_nan=True, msg=name)
    assert bool((got["within_energy"] == 0).all()) and bool((got["nc1_trace"] == 0).all())
    torch.testing.assert_close(got["fn"], h.norm(dim=1).mean(1), rtol=1e-14, atol=0)
    assert not math.isnan(float(got["nc2_etf"][0]))


@pytest.mark.parametrize(("ratio", "resolved"), [(0.7, False), (1.4, True)])
def test_class_means_are_resolved_only_above_the_gram_rounding_level(ratio, resolved):
    """Centred means with tr(Mbar Mbar^T) at ``ratio`` x 16 x 16 sqrt(K) eps max|h_i|^2 (the
    Gram's own level, half the digits) are zeroed below it (class_mean_norm exactly 0) and
    kept above it (class_mean_norm = the spread of the means)."""
    model = ModelSpec(loss="mse", bias="none", classes=3, per_class=2, dim=5)
    gram = GramObjective(model, "cpu", F64)
    level = 256.0 * 3 ** 0.5 * torch.finfo(F64).eps  # max|h_i|^2 = 1 + s^2 ~ 1
    s = math.sqrt(ratio * level / 3.0)  # tr(Mbar Mbar^T) = 3 s^2 (three unit offsets)
    u = torch.tensor([[0.0, 1.0, 0.0], [0.0, -0.5, 0.75 ** 0.5], [0.0, -0.5, -0.75 ** 0.5]],
                     dtype=F64)
    feats = torch.zeros(model.num_samples, model.dim, dtype=F64)
    feats[:, 0] = 1.0
    feats[:, :3] += s * u[labels(model)]
    h = feats.T.unsqueeze(0)
    w = torch.eye(3, 5, dtype=F64).unsqueeze(0)
    norm = float(gram.metrics(gram.from_parameters(h, w, None))["class_mean_norm"][0])
    if resolved:
        assert norm == pytest.approx(s, rel=0.05)
    else:
        assert norm == 0.0


def test_float32_grad_norm_floor_uses_the_float32_eps():
    """A float32 state whose |grad f|^2 is 1e-6 of its terms' sizes (far above the float64
    floor, below 64 eps_32 of them) is not resolved: NaN, not a rounded small norm."""
    from test_gramcm2_probe import _floor_state

    gram64, state, pen, _ = _floor_state("none", 1e-6 / (64 * torch.finfo(F64).eps))
    assert float(gram64.grad_norm(state, pen)[0]) > 0  # resolved in float64
    g32 = GramObjective(gram64.model, "cpu", torch.float32)
    pen32 = Penalties(pen.w.float(), pen.h.float(), pen.b.float())
    assert math.isnan(float(g32.grad_norm(state.float(), pen32)[0]))


def _identical_classifier_rows(k: int, runs: int = 40):
    """Gram states of random H with every classifier row the same w (Wc = 0 exactly), and
    the explicit (H, W)."""
    model = ModelSpec(loss="ce", bias="none", classes=k, per_class=2, dim=6)
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(runs, 6, model.num_samples, generator=gen, dtype=F64)
    w = torch.randn(runs, 1, 6, generator=gen, dtype=F64).expand(runs, k, 6).contiguous()
    gram = GramObjective(model, "cpu", F64)
    return gram, gram.from_parameters(h, w, None), h, w


@pytest.mark.parametrize("k", [5, 6, 7])
def test_nc3_of_a_classifier_without_centred_part_is_never_infinite(k):
    """All classifier rows equal: where the centred classifier Gram rounds to a zero trace,
    nc3 is NaN (0/0), never +-inf (an infinite nc3 would read as an onset)."""
    gram, state, _, _ = _identical_classifier_rows(k)
    nc3 = gram.metrics(state)["nc3"]
    assert bool(nc3.isnan().all())  # never +-inf, never a finite rounding residue


@pytest.mark.parametrize("k", [3, 5, 6, 7])
def test_nc3_and_etf_w_of_identical_classifier_rows_are_nan(k):
    """All classifier rows equal: Wc = 0, so nc3 and nc2_etf_w are 0/0 (NaN) as at W = 0, in
    the Gram metrics and in d space alike, not a finite value made of rounding residue."""
    gram, state, h, w = _identical_classifier_rows(k, runs=8)
    model = ModelSpec(loss="ce", bias="none", classes=k, per_class=2, dim=6)
    for got in (gram.metrics(state), nc_metrics(h.mT, labels(model), k, w)):
        assert bool(got["nc3"].isnan().all()) and bool(got["nc2_etf_w"].isnan().all())
        assert bool(got["nc3_paper"].isfinite().all())  # the raw W is not centred


@pytest.mark.parametrize("k", [3, 6])
def test_a_small_resolved_centred_classifier_agrees_with_d_space(k):
    """Rows equal up to 1e-4 of their size: the centred part is resolved in the Gram (half
    the digits) and nc3, nc2_etf_w agree with d space to 1e-6."""
    gram, _, h, w = _identical_classifier_rows(k, runs=8)
    gen = torch.Generator().manual_seed(1)
    w = w + 1e-4 * torch.randn(w.shape, generator=gen, dtype=F64)
    model = ModelSpec(loss="ce", bias="none", classes=k, per_class=2, dim=6)
    got = gram.metrics(gram.from_parameters(h, w, None))
    want = nc_metrics(h.mT, labels(model), k, w)
    for name in ("nc3", "nc2_etf_w"):
        assert bool(want[name].isfinite().all())
        torch.testing.assert_close(got[name], want[name], rtol=1e-6, atol=1e-6)


def _cancelling_state(s: float, beta: float, lw: float, lh: float, above: float):
    """MSE, K = 2, n = 1, no bias: S = s I, B = beta I, A = -alpha I with alpha chosen so
    |grad f|^2 = ``above`` x 64 eps x the sum of its terms' sizes (G = g I, g = (s - 1)/2)."""
    model = ModelSpec(loss="mse", bias="none", classes=2, per_class=1, dim=4)
    gram = GramObjective(model, "cpu", F64)
    pen = Penalties(w=torch.tensor([[lw]], dtype=F64), h=torch.tensor([lh], dtype=F64),
                    b=torch.tensor([0.0], dtype=F64))
    g = (s - 1.0) / 2.0
    gs = 2.0 * g * s
    alpha = (2 * beta * (g * g + lh * lh) + 2 * (lw + lh) * gs) / (2 * (g * g + lw * lw))
    size = (2 * beta * g * g + 2 * alpha * g * g + 2 * (lw + lh) * abs(gs)
            + 2 * alpha * lw * lw + 2 * beta * lh * lh)
    target = above * 64 * torch.finfo(F64).eps * size
    alpha -= target / (2 * (g * g + lw * lw))
    eye = torch.eye(2, dtype=F64)[None]
    state = gram.layout.pack({"Z": s * eye, "A": -alpha * eye, "B": beta * eye})
    return gram, state, pen, target


# each set makes one size term a large share: lambda_H <G, S>, lambda_W^2 tr A, lambda_H^2 tr B
@pytest.mark.parametrize(("s", "beta", "lw", "lh"), [(3.0, 1.0, 0.01, 2.0),
                                                      (3.0, 1.0, 2.0, 0.01),
                                                      (3.0, 10.0, 0.01, 2.0)])
def test_grad_norm_floor_counts_the_decay_terms_sizes(s, beta, lw, lh):
    """|grad f|^2 at 0.9 x 64 eps x (sum of all term sizes, 2 (lw + lh) |<G, S>|, lw^2 |tr A|
    and lh^2 |tr B| included) is NaN; at 3 x that floor it is resolved (its square root)."""
    gram, state, pen, _ = _cancelling_state(s, beta, lw, lh, 0.9)
    assert math.isnan(float(gram.grad_norm(state, pen)[0]))
    gram, state, pen, target = _cancelling_state(s, beta, lw, lh, 3.0)
    assert float(gram.grad_norm(state, pen)[0]) == pytest.approx(math.sqrt(target), rel=0.02)
