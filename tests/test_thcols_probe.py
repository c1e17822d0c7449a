"""Probe tests of the theory columns of a run row and of the saddle escape test.

- :func:`ncsim.theory.columns.theory_columns` on single hand-chosen parameter points, against
  the theory functions each column comes from: the per-layer lambda_crit through the
  geometric-mean decay, the imbalanced threshold and RMS row norm, the onset of a
  no-minimiser run at the spec's own threshold, the metastable aligned onset, collapsed_theory.
- :func:`ncsim.flow.saddle.saddle_escapes` with a stubbed growth rate: the escape boundary
  mu t = 1 is included and the noise gate is 100 eps^(2/3) times the spectral radius.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ncsim.flow import saddle
from ncsim.spec import InitSpec, ModelSpec, OnsetSpec, Regularization, RunSpec
from ncsim.theory import Lambda_crit, equilibrium, lambda_crit, theory_columns
from ncsim.theory.imbalance import imbalanced_equilibrium, label_singular_values
from ncsim.theory.prediction import predicted_onset


def _spec(loss="mse", bias="none", K=3, n=2, d=5, depth=1, lw=0.02, lh=0.03, lb=0.0,
          kind="gaussian", scale=0.3, threshold=0.01) -> RunSpec:
    model = ModelSpec(kind="ufm" if depth == 1 else "deep", loss=loss, bias=bias, classes=K,
                      per_class=n, dim=d, depth=depth)
    return RunSpec(model=model, reg=Regularization(lambda_w=lw, lambda_h=lh, lambda_b=lb),
                   init=InitSpec(kind=kind, scale=scale, seed=1),
                   onset=OnsetSpec(threshold=threshold)).validate()


# ---------------------------------------------------------------------------------------------
# theory_columns


def test_per_layer_lambda_crit_uses_the_geometric_mean_of_all_decays():
    """Depth 2, decays (0.02, 0.08) and lambda_H = 0.04: lambda_crit_theory is lambda_W1
    Lambda_crit / (0.02 * 0.08 * 0.04)^(1/3) (the L + 1 = 3 factors' geometric mean)."""
    lws, lh = (0.02, 0.08), 0.04
    row = theory_columns(_spec(d=4, depth=2, lw=lws, lh=lh))
    geo = (0.02 * 0.08 * 0.04) ** (1 / 3)
    assert geo == pytest.approx(0.04, rel=1e-12)
    want = 0.02 * float(Lambda_crit("mse", 3, 2, 2)) / geo
    assert row["lambda_crit_theory"] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("bias", ["none", "free"])
def test_imbalanced_columns_by_hand(bias):
    """Imbalanced one-layer MSE, counts (2, 3, 5), lambda_W = 0.01, lambda_H = 0.04:
    lambda_crit = s_max / N / sqrt(lambda_H / lambda_W) (s_max / N / 2), |w|* the RMS row
    norm |W|_F / sqrt(3), fn*, the loss and collapsed_theory those of the imbalanced
    minimiser."""
    counts, lw, lh = (2, 3, 5), 0.01, 0.04
    spec = RunSpec(model=ModelSpec(loss="mse", bias=bias, classes=3, per_class=counts, dim=5),
                   reg=Regularization(lambda_w=lw, lambda_h=lh)).validate()
    row = theory_columns(spec)
    eq = imbalanced_equilibrium("mse", bias, counts, lw, lh)
    s_max = float(label_singular_values(bias, counts)[0])
    assert row["lambda_crit_theory"] == pytest.approx(s_max / 10 / 2, rel=1e-12)
    assert row["w_norm_star_theory"] == pytest.approx(eq.w_norm_fro / math.sqrt(3), rel=1e-12)
    assert row["fn_star_theory"] == pytest.approx(eq.fn_star, rel=1e-12)
    assert row["loss_star_theory"] == pytest.approx(eq.loss_star, rel=1e-12)
    assert row["collapsed_theory"] is True and bool(eq.collapsed) is True
    assert math.isnan(row["onset_time_theory"])


def test_imbalanced_columns_above_the_threshold_are_not_collapsed():
    """Imbalanced MSE with decays above lambda_crit (lambda_W = lambda_H = 1): every label mode
    dies, collapsed_theory is False and fn* is 0."""
    spec = RunSpec(model=ModelSpec(loss="mse", bias="none", classes=3, per_class=(2, 3, 5),
                                   dim=5),
                   reg=Regularization(lambda_w=1.0, lambda_h=1.0)).validate()
    row = theory_columns(spec)
    assert row["collapsed_theory"] is False
    assert row["fn_star_theory"] == 0.0 and row["w_norm_star_theory"] == 0.0
    assert row["lambda_crit_theory"] < 1.0


def test_imbalanced_regularised_bias_has_no_lambda_crit_column():
    """Imbalanced MSE with a regularised bias: the equilibrium is filled, the threshold
    column (derived for bias none / free only) is NaN."""
    spec = RunSpec(model=ModelSpec(loss="mse", bias="reg", classes=3, per_class=(2, 3, 5),
                                   dim=5),
                   reg=Regularization(lambda_w=0.01, lambda_h=0.04, lambda_b=0.5)).validate()
    row = theory_columns(spec)
    assert math.isfinite(row["fn_star_theory"])
    assert math.isnan(row["lambda_crit_theory"])


def test_no_minimiser_onset_uses_the_spec_threshold():
    """lambda_H = 0 (no minimiser), one layer, Gaussian init, onset threshold 0.2: the onset
    column is predicted_onset at that threshold (it differs from the one at 0.01)."""
    spec = _spec(K=3, n=2, d=15, lw=0.01, lh=0.0, scale=0.1, threshold=0.2)
    row = theory_columns(spec)
    assert row["theory_regime"].startswith("no_minimiser")
    want = predicted_onset("mse", "none", 3, 2, 15, 0.01, 0.0, 0.1, 0.2, 0.0, 1).onset_time
    other = predicted_onset("mse", "none", 3, 2, 15, 0.01, 0.0, 0.1, 0.01, 0.0, 1).onset_time
    assert math.isfinite(want) and want != pytest.approx(other, rel=1e-3)
    assert row["onset_time_theory"] == pytest.approx(want, rel=1e-12)
    assert math.isnan(row["fn_star_theory"]) and row["collapsed_theory"] is None


def test_no_minimiser_deep_gives_no_onset():
    """lambda_H = 0 with depth 2: the one-layer early-phase onset is not used, onset NaN."""
    row = theory_columns(_spec(d=4, depth=2, lw=0.01, lh=0.0, scale=0.1))
    assert row["theory_regime"].startswith("no_minimiser")
    assert math.isnan(row["onset_time_theory"])


def test_metastable_aligned_init_has_onset_zero():
    """Deep spectral init (scale 1) with lambda = 1.1 Lambda_crit (metastable window, origin
    global): onset 0 (the run stays collapsed at the local minimum), regime 'metastable',
    collapsed_theory False (the global minimiser is the origin)."""
    lam = 1.1 * float(Lambda_crit("mse", 3, 2, 2))
    row = theory_columns(_spec(d=4, depth=2, lw=lam, lh=lam, kind="spectral", scale=1.0))
    assert row["onset_time_theory"] == 0.0
    assert row["theory_regime"].startswith("metastable")
    assert row["collapsed_theory"] is False


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_collapsed_theory_and_equilibrium_columns_match_the_equilibrium(factor):
    """One layer, lambda_H / lambda_W = 1.5, lambda_W at 0.9 / 1.1 of lambda_crit:
    collapsed_theory is lambda_W < lambda_crit (True / False) and equals the equilibrium's;
    fn*, |w|*, the loss are the equilibrium's."""
    lc = float(lambda_crit("mse", "none", 3, 2, 1, 1.5))
    lw = factor * lc
    row = theory_columns(_spec(lw=lw, lh=1.5 * lw))
    eq = equilibrium("mse", "none", 3, 2, lw, 1.5 * lw)
    assert row["lambda_crit_theory"] == pytest.approx(lc, rel=1e-12)
    assert row["collapsed_theory"] is (factor < 1) is bool(eq.collapsed)
    for key, field in (("fn_star_theory", "fn_star"), ("w_norm_star_theory", "w_norm_star"),
                       ("loss_star_theory", "loss_star")):
        assert row[key] == pytest.approx(float(getattr(eq, field)), rel=1e-12, abs=1e-300)


# ---------------------------------------------------------------------------------------------
# saddle_escapes


def _stub_rate(monkeypatch, rate, radius):
    monkeypatch.setattr(saddle, "growth_rate",
                        lambda f, y, rows: (np.asarray(rate, float), np.asarray(radius, float)))


def test_saddle_escape_boundary_mu_t_equal_one_escapes(monkeypatch):
    """mu = 0.5 exactly, time left 2 (mu t = 1, growth by exactly e) escapes; 1.999 does not."""
    _stub_rate(monkeypatch, [0.5, 0.5], [1.0, 1.0])
    y = torch.zeros(2, 3, dtype=torch.float64)
    escapes, mu = saddle.saddle_escapes(lambda v: v, y, torch.arange(2),
                                        torch.tensor([2.0, 1.999], dtype=torch.float64))
    assert escapes.tolist() == [True, False]
    assert mu.tolist() == [0.5, 0.5]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_saddle_noise_gate_is_100_eps_two_thirds_of_the_radius(monkeypatch, dtype):
    """The gate is 100 eps^(2/3) x radius: mu at 0.5 / 2 times it does not / does escape,
    with a horizon long enough that mu t >= 1 either way."""
    noise = 100.0 * float(torch.finfo(dtype).eps) ** (2 / 3)
    radius = 3.0
    _stub_rate(monkeypatch, [0.5 * noise * radius, 2.0 * noise * radius], [radius, radius])
    y = torch.zeros(2, 3, dtype=dtype)
    escapes, _ = saddle.saddle_escapes(lambda v: v, y, torch.arange(2),
                                       torch.tensor([1e20, 1e20], dtype=torch.float64))
    assert escapes.tolist() == [False, True]


def test_growth_rate_of_a_diagonal_flow_is_the_largest_signed_eigenvalue():
    """A linear flow diag(-0.5, -0.2, 0.01, ...) (every eigenvalue repeated): the rate is
    0.01 (the largest real part, not the largest |real part|), the radius 0.5; a purely
    stable diag(-0.5, -0.2) gives -0.2."""
    for values, top in (([-0.5, -0.2, 0.01], 0.01), ([-0.5, -0.2], -0.2)):
        diag = torch.tensor(np.resize(values, 12), dtype=torch.float64)
        y = torch.full((1, 12), 0.3, dtype=torch.float64)
        rate, radius = saddle.growth_rate(lambda v, d=diag: v * d, y, torch.arange(1))
        assert rate[0] == pytest.approx(top, rel=1e-7)
        assert radius[0] == pytest.approx(0.5, rel=1e-7)
