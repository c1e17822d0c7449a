"""Model objectives in float32, Gram-form nc1 and initial states against independent references.

Each expected value here comes from outside the code path it checks: the float64 objective
at the same (rounded) state, numpy's own algebra on a Gaussian drawn from the
documented generator sequence, a pseudo-inverse worked out by hand, and the per-run draws
of the initial state built one by one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from thread_helpers import torch_threads

from ncsim.errors import InputError
from ncsim.models import Penalties, UFMObjective, initial_parts, initial_state
from ncsim.models.gram import GramObjective
from ncsim.spec import InitSpec, ModelSpec

F64 = torch.float64


def _penalties(depth: int, runs: int, dtype: torch.dtype = F64) -> Penalties:
    """Decays that differ block by block and run by run (a swapped decay changes f)."""
    w = torch.tensor([[0.03 + 0.02 * l + 0.01 * r for r in range(runs)] for l in range(depth)],
                     dtype=dtype)
    h = torch.tensor([0.11 + 0.05 * r for r in range(runs)], dtype=dtype)
    b = torch.tensor([0.27 + 0.1 * r for r in range(runs)], dtype=dtype)
    return Penalties(w, h, b)


# --------------------------------------------------------------------------------------------
# precision of the float32 path
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "depth", "loss"), [("ufm", 1, "ce"), ("ufm", 1, "mse"),
                                                     ("deep", 2, "ce"), ("deep", 3, "mse")])
def test_float32_objective_is_computed_in_float32(kind, depth, loss):
    """A float32 batch stays float32: the data loss, f, the gradient and the velocity of the
    parameter form (and loss, f and velocity of the Gram form at depth 1) have the state's
    dtype, not a float64 promoted from a float64 one-hot matrix. Their values are those of
    the float64 objective at the same (float32-rounded) state to float32 precision
    (relative 1e-5: a few hundred float32 roundings of numbers of size ~1)."""
    model = ModelSpec(kind=kind, depth=depth, activation="tanh", loss=loss, bias="reg",
                      classes=3, per_class=(2, 1, 3), dim=4, width=5)
    inits = [InitSpec(seed=s, scale=0.6) for s in range(2)]
    y32 = initial_state(model, inits, "cpu", torch.float32)
    y64 = y32.double()
    obj32, obj64 = UFMObjective(model, "cpu", torch.float32), UFMObjective(model, "cpu", F64)
    pen32, pen64 = _penalties(depth, 2, torch.float32), _penalties(depth, 2)
    got = [*obj32.value(y32, pen32), obj32.gradient(y32, pen32), obj32.velocity(y32, pen32)]
    want = [*obj64.value(y64, pen64), obj64.gradient(y64, pen64), obj64.velocity(y64, pen64)]
    for name, g, w in zip(["loss", "f", "gradient", "velocity"], got, want, strict=True):
        assert g.dtype == torch.float32, name
        torch.testing.assert_close(g.double(), w, rtol=1e-5, atol=1e-6, msg=name)
    if depth == 1:
        lay = obj64.layout
        gram32 = GramObjective(model, "cpu", torch.float32)
        s64 = GramObjective(model, "cpu", F64).from_parameters(
            lay.view(y64, "H"), lay.view(y64, "W1"), lay.view(y64, "b"))
        s32 = s64.float()
        for name, g, w in zip(["gram loss", "gram f"], gram32.value(s32, pen32),
                              obj64.value(y64, pen64), strict=True):
            assert g.dtype == torch.float32, name
            torch.testing.assert_close(g.double(), w, rtol=1e-5, atol=1e-6, msg=name)
        assert gram32.velocity(s32, pen32).dtype == torch.float32


# --------------------------------------------------------------------------------------------
# the gaussian start of a wide one-layer UFM is the documented LQ draw
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "scale"), [(11, 0.7), (2**32 - 1, 0.05)])
def test_wide_gaussian_start_is_the_lq_factorisation_of_the_documented_draw(seed, scale):
    """For d > N + K the start is M = [H^T; W] = scale L F^T (``ncsim.models.init``): L is
    drawn from ``numpy.random.default_rng(seed)`` as the strict lower triangle row by row
    (N(0, 1)), then the diagonal sqrt(chi^2(d - i)), and F is the Haar frame of the next
    (d, N + K) Gaussian G: its QR factor Q with diag(R) > 0. Redrawn here from that
    sequence, L gives M M^T = scale^2 L L^T, and F = M^T (scale L)^-T has orthonormal
    columns with F^T G upper triangular with a positive diagonal and F (F^T G) = G. That
    pins the draw order, the degrees of freedom, the single application of the scale and
    the sign convention that makes F Haar (a QR without it is not)."""
    model = ModelSpec(loss="ce", bias="free", classes=3, per_class=(1, 2, 1), dim=11)
    p, d = model.num_samples + model.classes, model.dim
    parts = initial_parts(model, InitSpec(seed=seed, scale=scale))
    m = torch.cat([parts["H"].T, parts["W1"]]).numpy()
    assert m.shape == (p, d) and not parts["b"].any()
    rng = np.random.default_rng(seed)
    lower = np.zeros((p, p))
    rows, cols = np.tril_indices(p, -1)
    lower[rows, cols] = rng.standard_normal(rows.size)
    lower[np.arange(p), np.arange(p)] = np.sqrt(rng.chisquare(d - np.arange(p)))
    g = rng.standard_normal((d, p))
    gram = m @ m.T
    np.testing.assert_allclose(gram, scale**2 * lower @ lower.T, rtol=0,
                               atol=1e-13 * np.abs(gram).max())
    frame = np.linalg.solve(scale * lower, m).T  # (d, p)
    np.testing.assert_allclose(frame.T @ frame, np.eye(p), rtol=0, atol=1e-13)
    r = frame.T @ g
    assert np.abs(np.tril(r, -1)).max() < 1e-12 * np.abs(r).max()
    assert np.all(np.diag(r) > 0)
    np.testing.assert_allclose(frame @ r, g, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------
# nc1 of the float32 Gram form where the class means span fewer than K - 1 directions
# --------------------------------------------------------------------------------------------


def test_float32_gram_nc1_of_collinear_class_means_is_the_pseudo_inverse_value():
    """K = 3 classes of 4 samples, class means at -e1, 0, e1 (collinear: Sigma_B has rank 1)
    and within-class spread 0.1 along e1 and along e2, each with a zero class mean; the whole
    configuration rotated into a generic basis of R^6. Then Sigma_W = 0.01 (e1 e1^T + e2 e2^T),
    Sigma_B = (2/3) e1 e1^T, Sigma_B^+ = (3/2) e1 e1^T and nc1 = tr(Sigma_W Sigma_B^+) / K
    = 0.005 exactly: the pseudo-inverse ignores the spread along e2, where the means do not
    move. Each Gram form rounds the zero eigenvalue of the means' Gram to ~eps of the other,
    and only its filter level (relative 1e-10 in float64, 1e-7 in float32) keeps that
    residue from counting the e2 spread: float64 measured 3e-8 off, asserted within 1e-6;
    float32 measured 0.0050097, asserted within 1% (with the float64 level on float32
    numbers it is ~97)."""
    model = ModelSpec(loss="ce", classes=3, per_class=4, dim=6)
    n = model.num_samples
    labels = torch.arange(3).repeat_interleave(4)
    h = torch.zeros(6, n, dtype=F64)
    h[0] = labels.double() - 1.0 + 0.1 * torch.tensor([(-1.0) ** (i // 2) for i in range(n)])
    h[1] = 0.1 * torch.tensor([(-1.0) ** i for i in range(n)])
    rot = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(3),
                                      dtype=F64))[0]
    w = torch.randn(1, 3, 6, generator=torch.Generator().manual_seed(4), dtype=F64)
    state = GramObjective(model, "cpu", F64).from_parameters((rot @ h)[None], w, None)
    exact = GramObjective(model, "cpu", F64).metrics(state)["nc1"]
    assert float(exact[0]) == pytest.approx(0.005, rel=1e-6)
    single = GramObjective(model, "cpu", torch.float32).metrics(state.float())["nc1"]
    assert single.dtype == torch.float32
    assert float(single[0]) == pytest.approx(0.005, rel=1e-2)


# --------------------------------------------------------------------------------------------
# initial states of a batch drawn on several threads
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("runs", [48, 61, 64])
def test_every_row_of_a_threaded_batch_is_its_own_seeds_draw(runs):
    """With 16 runs or more per thread the rows are drawn on several Python threads, each
    writing a chunk of rows into one uninitialised (R, P) tensor. Every row, the last of
    each chunk included, must be the draw of its own seed (``initial_parts``), whatever the
    batch size (48 and 64 divide evenly into 3 threads' chunks, 61 does not). The expected
    rows are built after the call and the memory the batch is likely to get is filled with
    NaN first, so a row that no thread writes cannot hold its expected values by chance."""
    from ncsim.models.ufm import state_layout

    model = ModelSpec(kind="ufm", loss="mse", bias="free", classes=3, per_class=(2, 3, 2),
                      dim=5)
    layout = state_layout(model)
    inits = [InitSpec(seed=1000 + 7 * s, scale=0.2 + 0.01 * s) for s in range(runs)]
    with torch_threads(3):
        stale = torch.full((runs, layout.size), float("nan"), dtype=F64)
        del stale
        got = initial_state(model, inits, "cpu", F64)
    for r, init in enumerate(inits):
        want = layout.pack({k: v.unsqueeze(0) for k, v in initial_parts(model, init).items()})
        assert torch.equal(got[r], want[0]), f"row {r}"



@pytest.mark.parametrize("seed", [1.7, 2.0, True, "3"])
def test_a_seed_that_is_not_an_integer_is_refused_by_the_draw_itself(seed):
    """``initial_state`` called directly (without ``RunSpec.validate``) must not draw seed 1's
    start for a seed of 1.7: a seed that is not an integer (a float, even a whole one, a bool,
    text) is an InputError naming the value."""
    model = ModelSpec(loss="ce", classes=3, per_class=2, dim=4)
    with pytest.raises(InputError, match="seed must be an integer"):
        initial_state(model, [InitSpec(seed=seed)], torch.device("cpu"), F64)
    assert initial_state(model, [InitSpec(seed=np.int64(2))], torch.device("cpu"), F64).equal(
        initial_state(model, [InitSpec(seed=2)], torch.device("cpu"), F64))
