"""The gaussian init of the wide one-layer UFM, drawn through its Gram factor.

For d > N + K, M = [H^T; W] is drawn as L F^T (Bartlett factor times a Haar frame), and the
Gram form starts from L alone. These tests check the three things that make this a valid
definition of "iid N(0, scale^2) entries": the distribution (moments of many seeded draws,
deterministic), the exactness of the Gram start (same inner products as the d-space start),
and that nothing of size d is drawn on the Gram path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from thread_helpers import torch_threads

from ncsim.flow import simulate
from ncsim.flow.simulate import run_id
from ncsim.models import initial_parts, initial_state
from ncsim.models.gram import GramObjective, initial_gram_state
from ncsim.models.init import draws_gram_factor, gram_factor
from ncsim.models.ufm import state_layout
from ncsim.spec import InitSpec, ModelSpec, RunSpec, SolverSpec

WIDE = ModelSpec(loss="ce", classes=2, per_class=2, dim=9)  # p = N + K = 6 < d = 9


def _entries(model: ModelSpec, seeds: range, scale: float) -> np.ndarray:
    """(seeds, d N + K d) entries of H and W1 of many seeded gaussian inits."""
    rows = []
    for seed in seeds:
        parts = initial_parts(model, InitSpec(seed=seed, scale=scale))
        rows.append(np.concatenate([parts["H"].numpy().ravel(), parts["W1"].numpy().ravel()]))
    return np.array(rows)


def test_rule_is_the_wide_one_layer_ufm():
    assert draws_gram_factor(WIDE)
    assert not draws_gram_factor(ModelSpec(classes=2, per_class=2, dim=6))  # d = N + K
    assert not draws_gram_factor(ModelSpec(kind="deep", depth=2, classes=2, per_class=2,
                                           dim=40, width=3))


def test_factor_draw_has_the_moments_of_iid_gaussian_entries():
    """Over 4000 seeds, the 54 entries of (H, W) have mean 0, covariance scale^2 I and fourth
    moment 3 scale^4 within 5 standard errors, and their pooled values pass a KS test
    against N(0, scale^2): the distribution of iid N(0, scale^2) entries."""
    scale, draws = 0.3, 4000
    x = _entries(WIDE, range(draws), scale) / scale
    se = 1.0 / np.sqrt(draws)
    assert np.abs(x.mean(axis=0)).max() < 5 * se
    cov = np.cov(x, rowvar=False)
    assert np.abs(np.diag(cov) - 1.0).max() < 5 * np.sqrt(2) * se
    off = cov[~np.eye(cov.shape[0], dtype=bool)]
    assert np.abs(off).max() < 5 * se
    assert abs(np.mean(x**4) - 3.0) < 5 * np.sqrt(96 / x.size)  # pooled; var(x^4) = 96
    assert stats.kstest(x.ravel(), "norm").pvalue > 1e-3


def test_the_moment_check_fails_on_draws_scaled_wrong():
    """The moment check above can fail: the factor draws scaled by 1.05 break its variance
    test (so it measures something)."""
    x = 1.05 * _entries(WIDE, range(4000), 0.3) / 0.3
    assert np.abs(np.diag(np.cov(x, rowvar=False)) - 1.0).max() > 5 * np.sqrt(2 / 4000)


def test_gram_factor_is_bartlett():
    """L is lower triangular with a positive diagonal, and over many seeds its squared
    diagonal at row i has the mean d - i of chi^2 with d - i degrees of freedom (times
    scale^2), its strict lower triangle variance scale^2."""
    scale, draws = 2.0, 3000
    factors = np.array([gram_factor(WIDE, InitSpec(seed=s, scale=scale))[0].numpy()
                        for s in range(draws)]) / scale
    p = WIDE.num_samples + WIDE.classes
    assert factors.shape == (draws, p, p)
    assert np.all(np.triu(factors, 1) == 0)
    diag = np.diagonal(factors, axis1=1, axis2=2)
    assert np.all(diag > 0)
    dof = WIDE.dim - np.arange(p)
    se = np.sqrt(2 * dof / draws)
    assert np.all(np.abs((diag**2).mean(axis=0) - dof) < 5 * se)
    rows, cols = np.tril_indices(p, -1)
    lower = factors[:, rows, cols]
    assert abs(lower.var() - 1.0) < 5 * np.sqrt(2 / lower.size)


@pytest.mark.parametrize("bias", ["none", "free"])
def test_gram_start_has_the_inner_products_of_the_d_space_start(bias):
    """The Gram path (from L alone) and the projection of the d-space start (L F^T) agree to
    rounding: F has orthonormal columns."""
    model = ModelSpec(loss="mse", bias=bias, classes=3, per_class=(2, 3, 4), dim=300)
    inits = [InitSpec(seed=s, scale=0.05 * (s + 1)) for s in range(3)]
    lay = state_layout(model)
    y = initial_state(model, inits, "cpu", torch.float64)
    exact = GramObjective(model, "cpu", torch.float64)
    projected = exact.from_parameters(lay.view(y, "H"), lay.view(y, "W1"),
                                      lay.view(y, "b") if "b" in lay else None)
    got = initial_gram_state(model, inits)
    scale = projected.abs().max()
    assert (got - projected).abs().max() / scale < 1e-14
    assert not torch.equal(got[0], got[1])


def test_mixed_batch_projects_the_other_inits():
    """In a Gram batch a gaussian init starts from its factor and an explicit or spectral
    init from the projection of its d-space parameters, each in its own row."""
    model = ModelSpec(loss="ce", classes=3, per_class=2, dim=12)
    rng = np.random.default_rng(0)
    arrays = {"H": rng.normal(size=(12, 6)), "W": [rng.normal(size=(3, 12))]}
    inits = [InitSpec(seed=4, scale=0.2), InitSpec(kind="arrays", arrays=arrays),
             InitSpec(kind="spectral", scale=0.5, seed=1), InitSpec(seed=5, scale=0.1)]
    got = initial_gram_state(model, inits)
    exact = GramObjective(model, "cpu", torch.float64)
    for row, init in enumerate(inits):
        parts = initial_parts(model, init)
        alone = exact.from_parameters(parts["H"][None], parts["W1"][None], None)
        torch.testing.assert_close(got[row:row + 1], alone, rtol=1e-14, atol=1e-15)


def test_gram_path_draws_nothing_of_size_d():
    """At d = 10^9 a d-space draw would need 10^9 (N + K) numbers; the Gram start needs only
    the (N + K)^2 of L, and its B has the trace d-ish scale^2 N expected of chi^2 draws."""
    model = ModelSpec(loss="ce", classes=2, per_class=3, dim=10**9)
    init = InitSpec(seed=0, scale=1e-4)
    state = initial_gram_state(model, [init])
    b = GramObjective(model, "cpu", torch.float64).blocks(state)[2][0]
    assert abs(float(torch.trace(b)) / (model.dim * 1e-8 * 6) - 1.0) < 1e-3


def test_factor_draw_is_the_seeds_alone():
    """The same seed gives the same start in any batch and on any number of threads; the
    d-space start and the factor share the generator's first draws (L)."""
    inits = [InitSpec(seed=s % 5, scale=0.1) for s in range(40)]
    with torch_threads(2):
        many = initial_state(WIDE, inits, "cpu", torch.float64)
    alone = initial_state(WIDE, [InitSpec(seed=3, scale=0.1)], "cpu", torch.float64)
    assert torch.equal(many[3], alone[0]) and torch.equal(many[8], alone[0])
    factor, _ = gram_factor(WIDE, InitSpec(seed=3, scale=0.1))
    parts = initial_parts(WIDE, InitSpec(seed=3, scale=0.1))
    m = torch.cat([parts["H"].T, parts["W1"]])
    torch.testing.assert_close(m @ m.T, factor @ factor.T, rtol=1e-14, atol=1e-16)


def test_narrow_models_keep_the_entry_by_entry_draw():
    """At d <= N + K the draw is torch's, entry by entry in the order H, W1, bit for bit."""
    model = ModelSpec(loss="ce", classes=3, per_class=2, dim=9)  # d = N + K
    parts = initial_parts(model, InitSpec(seed=7, scale=0.5))
    gen = torch.Generator().manual_seed(7)
    h = torch.randn(9, 6, generator=gen, dtype=torch.float64) * 0.5
    w = torch.randn(3, 9, generator=gen, dtype=torch.float64) * 0.5
    assert torch.equal(parts["H"], h) and torch.equal(parts["W1"], w)


def test_run_ids_mark_the_factor_draw_only():
    """A run drawn through its factor has an id of its own (stored results of the old
    entry-by-entry draw are not reused); other runs keep theirs."""
    import hashlib
    import json

    def unmarked(spec: RunSpec) -> str:
        row = spec.to_row()
        row.pop("solver_cuda_graphs", None)
        row.pop("solver_reduction", None)
        text = json.dumps(row, sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    wide, narrow = RunSpec(model=WIDE), RunSpec(model=ModelSpec(classes=2, per_class=2, dim=6))
    assert run_id(wide) != unmarked(wide)
    assert run_id(narrow) == unmarked(narrow)
    spectral = RunSpec(model=WIDE, init=InitSpec(kind="spectral", seed=0))
    assert run_id(spectral) == unmarked(spectral)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_gram_and_d_space_runs_agree_from_the_factor_draw(loss):
    """End to end: a wide run in the Gram form and in the d-space form (which builds
    L F^T) give the same trajectory."""
    model = ModelSpec(loss=loss, classes=3, per_class=3, dim=40)
    init = InitSpec(seed=2, scale=0.2)
    gram, plain = (simulate([RunSpec(model=model, init=init, solver=SolverSpec(
        t_end=5.0, records=6, rtol=1e-11, atol=1e-13, reduction=form))])
        for form in ("gram", "none"))
    for col in ("loss", "fn", "nc1", "w_norm"):
        a, b = gram.trajectories[col].to_numpy(), plain.trajectories[col].to_numpy()
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)


def test_wide_starts_agree_across_thread_counts_to_rounding():
    """At W2's shapes (N + K = 210, d = 4096) the QR of the frame and the Gram products may
    round differently on one and on two threads: the starts agree to 1e-13 of their size
    (2e-14 measured)."""
    model = ModelSpec(loss="ce", classes=10, per_class=20, dim=4096)
    inits = [InitSpec(seed=s, scale=0.01) for s in range(2)]
    starts = []
    for threads in (1, 2):
        with torch_threads(threads):
            starts.append((initial_state(model, inits, "cpu", torch.float64),
                           initial_gram_state(model, inits)))
    for one, two in zip(*starts, strict=True):
        assert (one - two).abs().max() <= 1e-13 * one.abs().max()
