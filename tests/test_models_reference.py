"""Deep UFMs, their initial states and their trajectories against naive references.

The references are written here from the conventions of DESIGN.md section 2 and the docstrings
of ``ncsim.spec`` and ``ncsim.models.init``, without calling the package's model code:

- the flat state is split with offsets computed here (H (d, N), W_1 .. W_L row-major, then b);
- the objective is a loop over samples, the activations are written from their formulas
  (no ``torch.nn.functional``), the cross-entropy is a hand-written log-sum-exp;
- gradients come from plain torch autograd of that objective (the package writes its gradient
  out by hand), velocities are -eta * grad f with eta taken block by block from the spec;
- trajectories are integrated by ``scipy.integrate.solve_ivp`` (DOP853) driving that gradient;
- spectral and ETF initial states are checked through basis-free identities (Gram matrices
  and projectors), so no rotation drawn by the package enters the expected values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from ncsim.errors import InputError
from ncsim.flow import simulate
from ncsim.flow.simulate import _Batch, run_id
from ncsim.models import initial_parts, initial_state
from ncsim.spec import (
    ACTIVATIONS,
    InitSpec,
    ModelSpec,
    Regularization,
    RunSpec,
    SolverSpec,
    TimeScale,
)

F64 = torch.float64
REL = 1e-12

# --------------------------------------------------------------------------------------------
# naive reference model
# --------------------------------------------------------------------------------------------


def _layer_shapes(model: ModelSpec) -> list[tuple[int, int]]:
    """(out, in) of W_1 .. W_L: one (K, d) matrix at depth 1, else d -> m -> ... -> m -> K."""
    k, d = model.classes, model.dim
    if model.depth == 1:
        return [(k, d)]
    m = model.width if model.width is not None else d
    return [(m, d)] + [(m, m)] * (model.depth - 2) + [(k, m)]


def _labels(model: ModelSpec) -> list[int]:
    """Class of each sample, class by class (class 0 first)."""
    counts = model.per_class
    counts = counts if isinstance(counts, tuple) else (counts,) * model.classes
    return [c for c, n in enumerate(counts) for _ in range(n)]


def _split(model: ModelSpec, row: torch.Tensor
           ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
    """(H, [W_1 .. W_L], b or None) of one flat state row (P,), as fresh tensors."""
    n = len(_labels(model))
    shapes = [(model.dim, n), *_layer_shapes(model)]
    if model.bias != "none":
        shapes.append((model.classes,))
    blocks, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        blocks.append(row[start:start + size].reshape(shape).clone())
        start += size
    assert start == row.numel(), "state length differs from the documented layout"
    b = blocks.pop() if model.bias != "none" else None
    return blocks[0], blocks[1:], b


def _act(name: str, u: torch.Tensor, slope: float) -> torch.Tensor:
    """Activation from its formula (tanh through expm1, gelu with the exact erf)."""
    if name == "linear":
        return u
    if name == "relu":
        return torch.where(u > 0, u, torch.zeros_like(u))
    if name == "leaky_relu":
        return torch.where(u > 0, u, slope * u)
    if name == "tanh":
        e = torch.expm1(2.0 * u)
        return e / (e + 2.0)
    if name == "gelu":
        return 0.5 * u * (1.0 + torch.erf(u / math.sqrt(2.0)))
    if name == "silu":
        return u / (1.0 + torch.exp(-u))
    raise AssertionError(name)


def _sample_loss(loss: str, z: torch.Tensor, c: int) -> torch.Tensor:
    """1/2 |z - e_c|^2 or -log softmax(z)_c of one logit vector z (K,)."""
    if loss == "mse":
        target = torch.zeros_like(z)
        target[c] = 1.0
        return 0.5 * ((z - target) ** 2).sum()
    m = z.max().detach()
    return m + torch.log(torch.exp(z - m).sum()) - z[c]


def _penultimate(model: ModelSpec, h: torch.Tensor, ws: Sequence[torch.Tensor]) -> torch.Tensor:
    """Input of the classifier for every sample (p, N), matrix form."""
    a = h
    for w in ws[:-1]:
        a = _act(model.activation, w @ a, model.leaky_slope)
    return a


def _decays(spec: RunSpec) -> tuple[list[float], float, float]:
    """(lambda_W per layer, lambda_H, lambda_b) read from the spec."""
    lw = spec.reg.lambda_w
    lws = list(lw) if isinstance(lw, tuple) else [lw] * spec.model.depth
    return lws, spec.reg.lambda_h, spec.reg.lambda_b


def _penalty(spec: RunSpec, h, ws, b) -> torch.Tensor:
    lws, lh, lb = _decays(spec)
    total = lh / 2 * (h ** 2).sum()
    for lam, w in zip(lws, ws):
        total = total + lam / 2 * (w ** 2).sum()
    if b is not None:
        total = total + lb / 2 * (b ** 2).sum()
    return total


def naive_loop_objective(spec: RunSpec, h, ws, b) -> tuple[torch.Tensor, torch.Tensor]:
    """(data loss, f) by a loop over the samples: f = (1/N) sum_i loss(z_i, y_i) + decays."""
    model = spec.model
    labels = _labels(model)
    total = torch.zeros((), dtype=F64)
    for i, c in enumerate(labels):
        a = h[:, i]
        for w in ws[:-1]:
            a = _act(model.activation, w @ a, model.leaky_slope)
        z = ws[-1] @ a
        if b is not None:
            z = z + b
        total = total + _sample_loss(model.loss, z, c)
    loss = total / len(labels)
    return loss, loss + _penalty(spec, h, ws, b)


def naive_matrix_objective(spec: RunSpec, h, ws, b) -> tuple[torch.Tensor, torch.Tensor]:
    """The same objective in matrix form (fast enough to drive an ODE solver)."""
    model = spec.model
    labels = torch.tensor(_labels(model))
    n = labels.numel()
    z = ws[-1] @ _penultimate(model, h, ws)
    if b is not None:
        z = z + b[:, None]
    y = torch.zeros(model.classes, n, dtype=F64)
    y[labels, torch.arange(n)] = 1.0
    if model.loss == "mse":
        loss = 0.5 * ((z - y) ** 2).sum() / n
    else:
        m = z.max(dim=0).values.detach()
        lse = m + torch.log(torch.exp(z - m).sum(dim=0))
        loss = (lse - (z * y).sum(dim=0)).sum() / n
    return loss, loss + _penalty(spec, h, ws, b)


def _etas(spec: RunSpec) -> list[float]:
    """eta of each block in state order: H, W_1 .. W_L, b."""
    ts, depth = spec.time_scale, spec.model.depth
    ew = list(ts.eta_w) if isinstance(ts.eta_w, tuple) else [ts.eta_w] * depth
    return [ts.eta_h, *ew] + ([ts.eta_b] if spec.model.bias != "none" else [])


def naive_velocity(spec: RunSpec, row: torch.Tensor, loop: bool = True
                   ) -> tuple[float, float, torch.Tensor]:
    """(loss, f, -eta * grad f flattened in state order) at the state row (P,), by autograd."""
    h, ws, b = _split(spec.model, row.detach().to(F64))
    leaves = [h, *ws] + ([b] if b is not None else [])
    for leaf in leaves:
        leaf.requires_grad_(True)
    objective = naive_loop_objective if loop else naive_matrix_objective
    loss, f = objective(spec, h, ws, b)
    grads = torch.autograd.grad(f, leaves)
    vel = torch.cat([-eta * g.reshape(-1) for eta, g in zip(_etas(spec), grads)])
    return float(loss.detach()), float(f.detach()), vel


def _assert_rel(got: torch.Tensor, want: torch.Tensor, rel: float, what: str) -> None:
    """max |got - want| <= rel * max |want| (and both finite)."""
    assert torch.isfinite(got).all(), what
    scale = float(want.abs().max())
    err = float((got - want).abs().max())
    assert err <= rel * scale, f"{what}: max error {err:.3e} vs scale {scale:.3e}"


# --------------------------------------------------------------------------------------------
# 1. objective and velocity
# --------------------------------------------------------------------------------------------

LOSSES_BIASES = [(loss, bias) for loss in ("ce", "mse") for bias in ("none", "free", "reg")]
DEEP_CASES = [(depth, act, loss, bias) for depth in (2, 3, 4) for act in ACTIVATIONS
              for loss, bias in LOSSES_BIASES]
# the one-layer UFM in its parameter form (reduction "none"), for the same checks
DEEP_CASES += [(1, "linear", loss, bias) for loss, bias in LOSSES_BIASES]


def _deep_specs(depth: int, act: str, loss: str, bias: str) -> list[RunSpec]:
    """Two runs of one imbalanced model: uniform and non-uniform decays and time scales
    (depth 1: the one-layer UFM integrated in its parameters)."""
    if depth == 1:
        model = ModelSpec(kind="ufm", loss=loss, bias=bias, classes=3, per_class=(2, 1, 3),
                          dim=3)
    else:
        model = ModelSpec(kind="deep", depth=depth, activation=act, loss=loss, bias=bias,
                          classes=3, per_class=(2, 1, 3), dim=3,
                          width=None if depth == 3 else 4, leaky_slope=0.2)
    lb = 0.3 if bias == "reg" else 0.0
    solver = SolverSpec(reduction="none")
    first = RunSpec(model=model, reg=Regularization(lambda_w=0.05, lambda_h=0.07, lambda_b=lb),
                    init=InitSpec(seed=1), solver=solver)
    second = RunSpec(
        model=model,
        solver=solver,
        reg=Regularization(lambda_w=tuple(0.02 + 0.03 * l for l in range(depth)),
                           lambda_h=0.11, lambda_b=2 * lb),
        init=InitSpec(seed=2),
        time_scale=TimeScale(eta_h=0.5, eta_w=tuple(1.0 + 0.7 * l for l in range(depth)),
                             eta_b=3.0),
    )
    return [first, second]


@pytest.mark.parametrize(("depth", "act", "loss", "bias"), DEEP_CASES)
def test_objective_and_velocity_equal_naive_loop(depth, act, loss, bias):
    """loss, f and the velocity -eta grad f of the simulator's batch (decays and per-block time
    scales taken from the specs) equal the per-sample loop and its autograd gradient, for
    every depth, activation, bias mode and loss on an imbalanced model (relative 1e-12)."""
    specs = _deep_specs(depth, act, loss, bias)
    batch = _Batch(specs)
    assert batch.reduced is None
    gen = torch.Generator().manual_seed(depth * 100 + len(act))
    state = 0.8 * torch.randn(batch.y0.shape, generator=gen, dtype=F64)
    loss_got, f_got = batch.objective.value(state, batch.penalties)
    vel_got = batch.velocity(state)
    velocity_one, _ = batch.select(torch.tensor([1]))
    for r, spec in enumerate(specs):
        loss_want, f_want, vel_want = naive_velocity(spec, state[r])
        assert abs(float(loss_got[r]) - loss_want) <= REL * abs(loss_want)
        assert abs(float(f_got[r]) - f_want) <= REL * abs(f_want)
        _assert_rel(vel_got[r], vel_want, REL, f"velocity of run {r}")
    _assert_rel(velocity_one(state[1:2])[0], naive_velocity(specs[1], state[1])[2], REL,
                "velocity of the selected run")


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_scalar_eta_velocity_and_gradient_equal_naive_loop(depth):
    """``UFMObjective.velocity`` with a scalar eta (the path without per-entry factors) and
    ``gradient`` equal -eta and +1 times the autograd gradient of the loop, also with the
    result written into a caller's buffer."""
    kind = "ufm" if depth == 1 else "deep"
    model = ModelSpec(kind=kind, depth=depth, activation="linear" if depth == 1 else "silu",
                      loss="ce", bias="reg", classes=4, per_class=(1, 2, 3, 2), dim=3,
                      width=None if depth == 1 else 5)
    spec = RunSpec(model=model, reg=Regularization(lambda_w=0.1, lambda_h=0.2, lambda_b=0.3))
    batch = _Batch([spec])
    state = torch.randn(batch.y0.shape, generator=torch.Generator().manual_seed(depth),
                        dtype=F64)
    _, _, minus_grad = naive_velocity(spec, state[0])
    obj, pen = batch.objective, batch.penalties
    _assert_rel(obj.gradient(state, pen)[0], -minus_grad, REL, "gradient")
    _assert_rel(obj.velocity(state, pen, 2.5)[0], 2.5 * minus_grad, REL, "velocity eta 2.5")
    buf = torch.zeros_like(state)
    obj.velocity(state, pen, 0.5, out=buf)
    _assert_rel(buf[0], 0.5 * minus_grad, REL, "velocity into a buffer")


def test_naive_matrix_form_equals_naive_loop():
    """The matrix-form reference that drives the ODE solver below equals the per-sample loop
    (value and gradient), so the trajectory tests inherit the loop's independence."""
    for depth, act, loss, bias in [(2, "tanh", "ce", "free"), (3, "gelu", "mse", "reg"),
                                   (4, "leaky_relu", "ce", "reg"), (2, "silu", "mse", "none")]:
        spec = _deep_specs(depth, act, loss, bias)[1]
        size = _Batch([spec]).y0.shape[1]
        row = torch.randn(size, generator=torch.Generator().manual_seed(7), dtype=F64)
        loop = naive_velocity(spec, row, loop=True)
        matrix = naive_velocity(spec, row, loop=False)
        assert abs(loop[0] - matrix[0]) <= REL * abs(loop[0])
        assert abs(loop[1] - matrix[1]) <= REL * abs(loop[1])
        _assert_rel(matrix[2], loop[2], REL, f"{act} matrix vs loop")


def test_feature_decay_is_summed_over_samples_and_the_loss_averaged():
    """The normalisation of f itself, checked without the naive reference (which reads the
    same formula): with every sample duplicated the data loss (1/N sum) is unchanged and
    lambda_H/2 |H|_F^2, a sum over the columns, doubles (no per-sample feature decay)."""
    small = ModelSpec(kind="deep", depth=2, activation="tanh", loss="mse", classes=2,
                      per_class=(1, 2), dim=2, width=3)
    large = ModelSpec(kind="deep", depth=2, activation="tanh", loss="mse", classes=2,
                      per_class=(2, 4), dim=2, width=3)
    reg = Regularization(lambda_w=0.0, lambda_h=0.4)
    gen = torch.Generator().manual_seed(3)
    h = torch.randn(2, 3, generator=gen, dtype=F64)
    ws = [torch.randn(3, 2, generator=gen, dtype=F64), torch.randn(2, 3, generator=gen,
                                                                   dtype=F64)]
    doubled = torch.cat([h[:, :1], h[:, :1], h[:, 1:], h[:, 1:]], dim=1)
    obj_small = _Batch([RunSpec(model=small, reg=reg)]).objective
    obj_large = _Batch([RunSpec(model=large, reg=reg)]).objective
    pen = _Batch([RunSpec(model=small, reg=reg)]).penalties
    row_small = torch.cat([h.reshape(-1), *(w.reshape(-1) for w in ws)]).unsqueeze(0)
    row_large = torch.cat([doubled.reshape(-1), *(w.reshape(-1) for w in ws)]).unsqueeze(0)
    loss_s, f_s = obj_small.value(row_small, pen)
    loss_l, f_l = obj_large.value(row_large, pen)
    assert abs(float(loss_l - loss_s)) <= REL * float(loss_s)
    assert abs(float(f_l - loss_l) - 2 * float(f_s - loss_s)) <= REL * float(f_s)
    assert abs(float(f_s - loss_s) - 0.2 * float((h ** 2).sum())) <= REL * float(f_s)


# --------------------------------------------------------------------------------------------
# 2. whole trajectories
# --------------------------------------------------------------------------------------------

TRAJECTORY_SPECS = [
    RunSpec(
        model=ModelSpec(kind="deep", depth=3, activation="tanh", loss="ce", bias="free",
                        classes=3, per_class=(2, 1, 3), dim=3, width=4),
        reg=Regularization(lambda_w=(0.01, 0.03, 0.02), lambda_h=0.02),
        init=InitSpec(scale=0.6, seed=3),
        time_scale=TimeScale(eta_h=0.5, eta_w=(1.0, 2.0, 0.7), eta_b=1.5),
        solver=SolverSpec(t_end=30, rtol=1e-10, atol=1e-12, records=12, gtol=0),
    ),
    RunSpec(
        model=ModelSpec(kind="deep", depth=2, activation="gelu", loss="mse", bias="reg",
                        classes=3, per_class=(3, 1, 2), dim=4, width=3),
        reg=Regularization(lambda_w=0.03, lambda_h=0.01, lambda_b=0.05),
        init=InitSpec(scale=0.7, seed=5),
        time_scale=TimeScale(eta_h=2.0, eta_w=(0.5, 1.0), eta_b=0.8),
        solver=SolverSpec(t_end=30, rtol=1e-10, atol=1e-12, records=12, gtol=0),
    ),
    RunSpec(
        model=ModelSpec(kind="deep", depth=4, activation="linear", loss="mse", bias="none",
                        classes=2, per_class=(2, 3), dim=3, width=3),
        reg=Regularization(lambda_w=0.02, lambda_h=0.02),
        init=InitSpec(scale=0.5, seed=8),
        solver=SolverSpec(t_end=30, rtol=1e-10, atol=1e-12, records=12, gtol=0),
    ),
]


def _fn(spec: RunSpec, row: torch.Tensor) -> float:
    """mean_i |h_i| of the penultimate features (DESIGN.md: fn)."""
    h, ws, _ = _split(spec.model, row)
    return float(_penultimate(spec.model, h, ws).norm(dim=0).mean())


# the first model again, in the same batch: other decays, time scales and init
TRAJECTORY_CASES = [
    [TRAJECTORY_SPECS[0], TRAJECTORY_SPECS[0].replace(
        reg=Regularization(lambda_w=0.04, lambda_h=0.01),
        init=InitSpec(scale=0.4, seed=9),
        time_scale=TimeScale(eta_h=1.0, eta_w=(0.6, 1.0, 1.3), eta_b=0.5))],
    [TRAJECTORY_SPECS[1]],
    [TRAJECTORY_SPECS[2]],
]


def _reference_run(spec: RunSpec, y0: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(loss, f, fn) at the spec's record times (T, 3) and the final state (P,), by DOP853
    (rtol 1e-11) on the naive velocity."""

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        return naive_velocity(spec, torch.from_numpy(y), loop=False)[2].numpy()

    times = spec.solver.record_times()
    sol = solve_ivp(rhs, (0.0, spec.solver.t_end), y0.numpy(), method="DOP853", rtol=1e-11,
                    atol=1e-13, t_eval=times)
    assert sol.success
    records = np.array([[*naive_velocity(spec, torch.from_numpy(y), loop=False)[:2],
                         _fn(spec, torch.from_numpy(y))] for y in sol.y.T])
    return records, sol.y[:, -1].copy()


@pytest.mark.parametrize("index", range(len(TRAJECTORY_CASES)))
def test_deep_trajectory_equals_dop853_on_naive_gradient(index):
    """``simulate`` (dopri5, rtol 1e-10) records the same loss, objective and fn at every record
    time as DOP853 (rtol 1e-11) driving the autograd gradient of the naive objective with the
    spec's per-block time scales, from the same initial state, for every run of a batch; the
    final state blocks and the final |grad f| (not |velocity|) agree too."""
    specs = TRAJECTORY_CASES[index]
    result = simulate(specs, theory=False)
    y0s = _Batch(specs).y0
    for r, spec in enumerate(specs):
        row = result.runs.iloc[r]
        traj = result.trajectories[result.trajectories["run_id"] == row["run_id"]]
        want, end = _reference_run(spec, y0s[r])
        np.testing.assert_allclose(traj["time"].to_numpy(), spec.solver.record_times(),
                                   rtol=1e-15)
        got = traj[["loss", "objective", "fn"]].to_numpy()
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-10)
        assert row["status"] in ("ok", "not_collapsed")
        assert row["t_final"] == spec.solver.t_end

        final = result.final_state(row["run_id"])
        h, ws, b = _split(spec.model, torch.from_numpy(end))
        scale = float(np.abs(end).max())
        for got_block, want_block in [(final["H"], h), *zip(final["W"], ws, strict=True)]:
            np.testing.assert_allclose(got_block, want_block.numpy(), rtol=0,
                                       atol=1e-7 * scale)
        assert (final["b"] is None) == (b is None)
        if b is not None:
            np.testing.assert_allclose(final["b"], b.numpy(), rtol=0, atol=1e-7 * scale)
        vel = naive_velocity(spec, torch.from_numpy(end), loop=False)[2]
        blocks = [h, *ws] + ([b] if b is not None else [])
        etas = torch.cat([torch.full((p.numel(),), e, dtype=F64)
                          for p, e in zip(blocks, _etas(spec), strict=True)])
        grad_norm = float((vel / etas).norm())
        assert abs(row["grad_norm_final"] - grad_norm) <= 1e-6 * grad_norm


# --------------------------------------------------------------------------------------------
# 3. initial states
# --------------------------------------------------------------------------------------------

GAUSS_MODEL = ModelSpec(kind="deep", depth=3, activation="relu", loss="ce", bias="reg",
                        classes=3, per_class=(2, 4, 1), dim=4, width=5)


def test_gaussian_init_is_per_run_and_independent_of_batch_and_dtype():
    """A Gaussian run's state depends on its own seed and scale only: alone, in a batch of
    other seeds and other init kinds at any position, and in float32 (the float64 draw
    rounded) it is the same; the bias starts at 0; the scale is the standard deviation
    (state(2a) = 2 state(a)); other seeds and the blocks of one run differ."""
    init = InitSpec(kind="gaussian", scale=0.3, seed=11)
    alone = initial_state(GAUSS_MODEL, [init], "cpu", F64)[0]
    others = [InitSpec(seed=s, scale=0.1 * (1 + s % 3)) for s in range(7)]
    others[2] = InitSpec(kind="spectral", seed=11, scale=0.3)
    others[5] = InitSpec(kind="etf", seed=4, scale=0.5)
    for pos in (0, 3, 7):
        batch = initial_state(GAUSS_MODEL, others[:pos] + [init] + others[pos:], "cpu", F64)
        assert torch.equal(batch[pos], alone)
    assert torch.equal(initial_state(GAUSS_MODEL, [init], "cpu", torch.float32)[0],
                       alone.float())
    double = initial_state(GAUSS_MODEL, [InitSpec(scale=0.6, seed=11)], "cpu", F64)[0]
    torch.testing.assert_close(double, 2 * alone, rtol=1e-15, atol=0)
    h, ws, b = _split(GAUSS_MODEL, alone)
    assert b is not None and torch.equal(b, torch.zeros(3, dtype=F64))
    assert bool((h != 0).all()) and all(bool((w != 0).all()) for w in ws)
    other_seed = initial_state(GAUSS_MODEL, [InitSpec(scale=0.3, seed=12)], "cpu", F64)[0]
    assert not torch.equal(other_seed[:-3], alone[:-3])
    assert not torch.equal(ws[1].reshape(-1)[:20], ws[0].reshape(-1)[:20])


def test_gaussian_init_moments_on_a_large_draw():
    """Every block is i.i.d. N(0, scale^2): mean, standard deviation, fourth moment and the
    one-sigma fraction within five standard errors, and two blocks of one run and the same
    block of two seeds are uncorrelated."""
    scale = 0.37
    model = ModelSpec(kind="deep", depth=3, activation="tanh", classes=2, per_class=150,
                      dim=200, width=200)
    h, ws, _ = _split(model, initial_state(model, [InitSpec(scale=scale, seed=9)], "cpu",
                                           F64)[0])
    other = _split(model, initial_state(model, [InitSpec(scale=scale, seed=10)], "cpu",
                                        F64)[0])[0]
    for name, block in [("H", h), ("W1", ws[0]), ("W2", ws[1]), ("W3", ws[2])]:
        x = block.reshape(-1) / scale
        n = x.numel()
        assert abs(float(x.mean())) < 5 / math.sqrt(n), name
        assert abs(float(x.std()) - 1) < 5 / math.sqrt(2 * n), name
        assert abs(float((x ** 4).mean()) - 3) < 5 * math.sqrt(96 / n), name
        p = math.erf(1 / math.sqrt(2))
        assert abs(float((x.abs() < 1).double().mean()) - p) < 5 * math.sqrt(p * (1 - p) / n)

    def corr(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a.reshape(-1), b.reshape(-1)
        return float(a @ b / (a.norm() * b.norm()))

    assert abs(corr(ws[0], ws[1])) < 5 / math.sqrt(ws[0].numel())
    assert abs(corr(h, other)) < 5 / math.sqrt(h.numel())


def _normalised_indicators(model: ModelSpec) -> torch.Tensor:
    """(K, N): column i is e_{c_i} / sqrt(n_{c_i})."""
    labels = _labels(model)
    counts = [labels.count(c) for c in range(model.classes)]
    y = torch.zeros(model.classes, len(labels), dtype=F64)
    for i, c in enumerate(labels):
        y[c, i] = 1.0 / math.sqrt(counts[c])
    return y


def _label_projector(k: int, centred: bool) -> torch.Tensor:
    """I_K, or I_K - 11^T/K for the K-1 centred modes."""
    eye = torch.eye(k, dtype=F64)
    return eye - torch.full((k, k), 1.0 / k, dtype=F64) if centred else eye


def _close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """max |got - want| <= 1e-12 (the checked quantities are of order 1)."""
    assert got.shape == want.shape, what
    err = float((got - want).abs().max()) if got.numel() else 0.0
    assert err <= 1e-12, f"{what}: max error {err:.3e}"


SPECTRAL_CASES = [
    # (loss, bias, per_class, depth, width, modes)
    ("mse", "none", 3, 2, 5, 4),
    ("mse", "none", (1, 3, 2, 2), 3, 4, 4),
    ("mse", "free", 3, 4, 6, 3),
    ("ce", "none", (2, 1, 3, 1), 2, 3, 3),
    ("ce", "reg", 2, 3, 5, 3),
]


@pytest.mark.parametrize(("loss", "bias", "per_class", "depth", "width", "modes"),
                         SPECTRAL_CASES)
def test_spectral_init_is_balanced_with_singular_values_a_on_the_label_modes(
        loss, bias, per_class, depth, width, modes):
    """Spectral init of a deep linear head (K = 4, d = 5): every factor has exactly ``modes``
    singular values equal to a (K for MSE without bias, else K - 1) and the rest 0; the
    factors are balanced (H H^T = W_1^T W_1, W_l W_l^T = W_{l+1}^T W_{l+1}); the classifier's
    row space is the label space (W_L W_L^T = a^2 P); H^T H = a^2 Y^T P Y and
    Z = a^(L+1) P Y with Y the normalised class indicators and P the identity or the centring
    projector (basis-free forms of Z = a^(L+1) U_K V^T); the bias starts at 0."""
    a = 0.7
    model = ModelSpec(kind="deep", depth=depth, activation="linear", loss=loss, bias=bias,
                      classes=4, per_class=per_class, dim=5, width=width)
    spec = RunSpec(model=model, init=InitSpec(kind="spectral", scale=a, seed=3),
                   reg=Regularization(lambda_b=0.1 if bias == "reg" else 0.0)).validate()
    row = initial_state(model, [spec.init], "cpu", F64)[0]
    h, ws, b = _split(model, row)
    for name, block in [("H", h)] + [(f"W{l + 1}", w) for l, w in enumerate(ws)]:
        sv = torch.linalg.svdvals(block)
        _close(sv[:modes], torch.full((modes,), a, dtype=F64), f"{name} singular values")
        _close(sv[modes:], torch.zeros(len(sv) - modes, dtype=F64), f"{name} null values")
    _close(h @ h.T, ws[0].T @ ws[0], "H H^T = W1^T W1")
    for l in range(depth - 1):
        _close(ws[l] @ ws[l].T, ws[l + 1].T @ ws[l + 1], f"W{l + 1} balanced")
    centred = modes < model.classes
    proj = _label_projector(model.classes, centred)
    y = _normalised_indicators(model)
    _close(ws[-1] @ ws[-1].T, a ** 2 * proj, "W_L W_L^T")
    _close(h.T @ h, a ** 2 * y.T @ proj @ y, "H^T H")
    z = ws[-1] @ _penultimate(model, h, ws)
    _close(z, a ** (depth + 1) * proj @ y, "Z")
    if b is not None:
        assert torch.equal(b, torch.zeros(model.classes, dtype=F64))
    again = initial_state(model, [spec.init], "cpu", F64)[0]
    assert torch.equal(again, row)
    rotated = initial_state(model, [InitSpec(kind="spectral", scale=a, seed=4)], "cpu", F64)[0]
    assert not torch.equal(rotated, row)


@pytest.mark.parametrize(("loss", "bias", "depth"), [("mse", "none", 2), ("ce", "free", 3),
                                                     ("mse", "reg", 1), ("ce", "none", 4)])
def test_etf_init_class_means_form_a_scaled_simplex_etf(loss, bias, depth):
    """ETF init on a balanced model (also for MSE without bias, where spectral would take K
    modes): every sample of a class has the class mean as its features (NC1 = 0); the
    feature and penultimate class means M (p, K) of a linear head have M^T M = c (I - 11^T/K)
    with c = a^2/n and a^(2L)/n (a scaled simplex ETF, global mean 0); the classifier has
    W_L W_L^T = a^2 (I - 11^T/K) and W_L^T is proportional to the penultimate means (self-dual)."""
    a, n, k = 0.8, 3, 4
    kind = "ufm" if depth == 1 else "deep"
    model = ModelSpec(kind=kind, depth=depth, loss=loss, bias=bias, classes=k, per_class=n,
                      dim=5, width=None if depth == 1 else 3)
    spec = RunSpec(model=model, init=InitSpec(kind="etf", scale=a, seed=6),
                   reg=Regularization(lambda_b=0.1 if bias == "reg" else 0.0)).validate()
    h, ws, _ = _split(model, initial_state(model, [spec.init], "cpu", F64)[0])
    labels = torch.tensor(_labels(model))
    centring = _label_projector(k, True)
    feats = _penultimate(model, h, ws)
    for name, x, c in [("H", h, a ** 2 / n), ("penultimate", feats, a ** (2 * depth) / n)]:
        means = torch.stack([x[:, labels == j].mean(dim=1) for j in range(k)], dim=1)
        _close(x, means[:, labels], f"{name}: samples equal their class mean")
        _close(means.T @ means, c * centring, f"{name}: class-mean Gram")
    means = torch.stack([feats[:, labels == j].mean(dim=1) for j in range(k)], dim=1)
    _close(ws[-1] @ ws[-1].T, a ** 2 * centring, "W_L W_L^T")
    _close(ws[-1].T, means * (math.sqrt(n) / a ** (depth - 1)), "self-duality")


def test_etf_init_of_an_imbalanced_model_scales_the_class_means_by_their_counts():
    """ETF init with class counts n_c (as the init.py docstring states): every sample equals its
    class mean, H has singular value a on K - 1 modes and rank K - 1, and the class means have
    Gram a^2 D^(-1/2) (I - 11^T/K) D^(-1/2), D = diag(n_c) (an ETF only when balanced)."""
    a, counts = 0.9, (1, 4, 2)
    model = ModelSpec(kind="deep", depth=2, activation="relu", loss="ce", classes=3,
                      per_class=counts, dim=4, width=3)
    h, _, _ = _split(model, initial_state(model, [InitSpec(kind="etf", scale=a, seed=2)],
                                          "cpu", F64)[0])
    labels = torch.tensor(_labels(model))
    means = torch.stack([h[:, labels == j].mean(dim=1) for j in range(3)], dim=1)
    _close(h, means[:, labels], "samples equal their class mean")
    _close(torch.linalg.svdvals(h), torch.tensor([a, a, 0.0, 0.0], dtype=F64),
           "H singular values")
    inv_sqrt = torch.diag(torch.tensor(counts, dtype=F64).rsqrt())
    _close(means.T @ means, a ** 2 * inv_sqrt @ _label_projector(3, True) @ inv_sqrt,
           "class-mean Gram")


@pytest.mark.parametrize("kind", ["spectral", "etf"])
def test_spectral_and_etf_inits_need_enough_width(kind):
    """A deep head narrower than the number of label modes cannot carry them: refused with a
    message that names the width; one more unit of width is accepted."""
    model = ModelSpec(kind="deep", depth=2, loss="ce", classes=5, per_class=2, dim=6, width=3)
    with pytest.raises(InputError, match=r"needs d \(and width\) >= 4.*width = 3"):
        RunSpec(model=model, init=InitSpec(kind=kind)).validate()
    RunSpec(model=ModelSpec(kind="deep", depth=2, loss="ce", classes=5, per_class=2, dim=6,
                            width=4), init=InitSpec(kind=kind)).validate()


def test_arrays_init_of_a_deep_model_is_taken_as_given():
    """An explicit deep init (H, three W of different shapes, b) lands in the right blocks,
    the bias defaults to 0 when left out, and the run gets a stable identifier."""
    model = ModelSpec(kind="deep", depth=3, activation="tanh", loss="mse", bias="free",
                      classes=2, per_class=(1, 2), dim=3, width=4)
    rng = np.random.default_rng(4)
    arrays = {"H": rng.normal(size=(3, 3)),
              "W": [rng.normal(size=(4, 3)), rng.normal(size=(4, 4)), rng.normal(size=(2, 4))],
              "b": rng.normal(size=2)}
    row = initial_state(model, [InitSpec(kind="arrays", arrays=arrays)], "cpu", F64)[0]
    h, ws, b = _split(model, row)
    np.testing.assert_array_equal(h.numpy(), arrays["H"])
    for got, want in zip(ws, arrays["W"]):
        np.testing.assert_array_equal(got.numpy(), want)
    np.testing.assert_array_equal(b.numpy(), arrays["b"])
    no_b = initial_parts(model, InitSpec(kind="arrays", arrays={**arrays, "b": None}))
    assert torch.equal(no_b["b"], torch.zeros(2, dtype=F64))
    spec = RunSpec(model=model, init=InitSpec(kind="arrays", arrays=arrays))
    moved = {**arrays, "b": arrays["b"] + 1.0}
    assert run_id(spec) == run_id(spec)
    assert run_id(spec) != run_id(spec.replace(init=InitSpec(kind="arrays", arrays=moved)))


def test_arrays_run_id_of_a_deep_head_whose_layers_share_their_row_count():
    """The identifier of an explicit init whose weight matrices have the same number of rows
    but different numbers of columns (hidden width = K here) is computed, stable, and changes
    with any weight; simulate runs the spec under that identifier from the given H."""
    model = ModelSpec(kind="deep", depth=2, activation="tanh", loss="mse", classes=2,
                      per_class=2, dim=3, width=2)
    rng = np.random.default_rng(5)
    arrays = {"H": rng.normal(size=(3, 4)), "W": [rng.normal(size=(2, 3)),
                                                  rng.normal(size=(2, 2))]}
    spec = RunSpec(model=model, reg=Regularization(lambda_w=0.01, lambda_h=0.01),
                   init=InitSpec(kind="arrays", arrays=arrays),
                   solver=SolverSpec(t_end=5, records=4, gtol=0))
    rid = run_id(spec)
    assert len(rid) == 12 and rid == run_id(spec)
    moved = {"H": arrays["H"], "W": [arrays["W"][0], arrays["W"][1] + 1e-9]}
    assert run_id(spec.replace(init=InitSpec(kind="arrays", arrays=moved))) != rid
    result = simulate(spec, theory=False)
    assert result.runs.iloc[0]["run_id"] == rid
    h0, _, _ = _split(model, _Batch([spec]).y0[0])
    np.testing.assert_array_equal(h0.numpy(), arrays["H"])


def test_arrays_run_id_is_the_digest_of_every_block_in_key_order():
    """The identifier of an explicit init hashes the float64 values of H, each W and b (None as
    NaN) in key order, whatever container holds them (nested lists, tuples, a stacked array,
    Fortran order); a changed b changes it; and the identifier of one such spec is the one
    earlier versions gave it (run ids name stored results)."""
    rng = np.random.default_rng(1)
    model = ModelSpec(loss="mse", bias="free", classes=3, per_class=2, dim=4)
    h, w, b = rng.normal(size=(4, 6)), rng.normal(size=(3, 4)), rng.normal(size=3)
    base = RunSpec(model=model)
    ids = {run_id(base.replace(init=InitSpec(kind="arrays", arrays=arrays)))
           for arrays in [{"H": h, "W": [w], "b": b},
                          {"H": h.tolist(), "W": [w.tolist()], "b": list(b)},
                          {"H": h, "W": w[None], "b": b},
                          {"H": np.asfortranarray(h), "W": (w,), "b": tuple(b)}]}
    assert ids == {"1ee0f5abab69"}
    moved = {"H": h, "W": [w], "b": b + 1e-12}
    assert run_id(base.replace(init=InitSpec(kind="arrays", arrays=moved))) not in ids


# --------------------------------------------------------------------------------------------
# 4. input the package refuses
# --------------------------------------------------------------------------------------------

DEEP = ModelSpec(kind="deep", depth=2, activation="tanh", loss="ce", classes=3, per_class=2,
                 dim=4, width=3)
HINT = r"(must|allowed|expected|needs|use | but )"

BAD_SPECS = [
    ("negative lambda_w", RunSpec(model=DEEP, reg=Regularization(lambda_w=-1e-3)),
     r"lambda_w must be a finite number >= 0"),
    ("negative per-layer lambda_w", RunSpec(model=DEEP, reg=Regularization(
        lambda_w=(1e-3, -1e-3))), r"lambda_w must be a finite number >= 0"),
    ("nan lambda_h", RunSpec(model=DEEP, reg=Regularization(lambda_h=float("nan"))),
     r"lambda_h must be a finite number >= 0"),
    ("negative lambda_b", RunSpec(model=ModelSpec(bias="reg"), reg=Regularization(
        lambda_b=-0.1)), r"lambda_b must be a finite number >= 0"),
    ("lambda_w list of the wrong length", RunSpec(model=DEEP, reg=Regularization(
        lambda_w=(1e-3, 1e-3, 1e-3))), r"lambda_w lists 3 values but depth is 2"),
    ("lambda_b without a regularised bias", RunSpec(reg=Regularization(lambda_b=0.1)),
     r"needs bias='reg' \(--bias reg\)"),
    ("regularised bias without lambda_b", RunSpec(model=ModelSpec(bias="reg")),
     r"bias 'reg' needs lambda_b > 0"),
    ("unknown activation", RunSpec(model=ModelSpec(kind="deep", depth=2, activation="swish")),
     r"unknown activation 'swish'; allowed: linear, relu"),
    ("activation on the one-layer UFM", RunSpec(model=ModelSpec(activation="relu")),
     r"needs kind='deep' \(--model deep"),
    ("unknown loss", RunSpec(model=ModelSpec(loss="hinge")), r"unknown loss 'hinge'; allowed"),
    ("unknown bias", RunSpec(model=ModelSpec(bias="learned")), r"unknown bias 'learned'"),
    ("unknown model", RunSpec(model=ModelSpec(kind="resnet")), r"unknown model 'resnet'"),
    ("one class", RunSpec(model=ModelSpec(classes=1, per_class=2)),
     r"classes K must be an integer >= 2"),
    ("class counts of the wrong length", RunSpec(model=ModelSpec(classes=3, per_class=(2, 2))),
     r"per_class gives 2 class counts but K = 3"),
    ("empty class", RunSpec(model=ModelSpec(classes=2, per_class=(2, 0))),
     r"samples per class .* must be integers >= 1"),
    ("zero dim", RunSpec(model=ModelSpec(dim=0)), r"dim d must be an integer >= 1"),
    ("zero depth", RunSpec(model=ModelSpec(kind="deep", depth=0)),
     r"depth must be an integer >= 1"),
    ("zero width", RunSpec(model=ModelSpec(kind="deep", depth=2, width=0)),
     r"width must be an integer >= 1"),
    ("negative leaky slope", RunSpec(model=ModelSpec(kind="deep", depth=2,
                                                     activation="leaky_relu",
                                                     leaky_slope=-0.1)),
     r"leaky_slope must be a finite number >= 0"),
    ("zero time scale", RunSpec(model=DEEP, time_scale=TimeScale(eta_h=0.0)),
     r"time-scale factors must be > 0"),
    ("negative layer time scale", RunSpec(model=DEEP, time_scale=TimeScale(eta_w=(1.0, -1.0))),
     r"time-scale factors must be > 0"),
    ("time-scale list of the wrong length", RunSpec(model=DEEP, time_scale=TimeScale(
        eta_w=(1.0,))), r"eta_w lists 1 values but depth is 2"),
    ("unknown init", RunSpec(init=InitSpec(kind="orthogonal")), r"unknown init 'orthogonal'"),
    ("zero init scale", RunSpec(init=InitSpec(scale=0.0)), r"init scale must be a finite"),
    ("negative seed", RunSpec(init=InitSpec(seed=-1)), r"seed must be an integer in \[0, 2\^32\)"),
    ("arrays without H", RunSpec(init=InitSpec(kind="arrays", arrays={"W": []})),
     r"init 'arrays' needs arrays="),
]


@pytest.mark.parametrize(("case", "spec", "message"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_invalid_spec_is_refused_with_a_hint(case, spec, message):
    """An invalid spec raises InputError (from ``validate`` and from ``simulate``) with one
    line that names the problem and what is allowed or what to do."""
    with pytest.raises(InputError, match=message) as err:
        spec.validate()
    text = str(err.value)
    assert "\n" not in text and re.search(HINT, text), text
    with pytest.raises(InputError, match=message):
        simulate(spec, theory=False)


def _deep_arrays(rng: np.random.Generator) -> dict:
    return {"H": rng.normal(size=(4, 6)), "W": [rng.normal(size=(3, 4)),
                                                rng.normal(size=(3, 3))]}


BAD_ARRAYS = [
    ("H transposed", lambda a: {**a, "H": a["H"].T}, r"init array H has shape \(6, 4\), "
     r"expected \(4, 6\)"),
    ("W_1 of the wrong shape", lambda a: {**a, "W": [a["W"][0].T, a["W"][1]]},
     r"init array W1 has shape \(4, 3\), expected \(3, 4\)"),
    ("classifier of the wrong shape", lambda a: {**a, "W": [a["W"][0], a["W"][1][:2]]},
     r"init array W2 has shape \(2, 3\), expected \(3, 3\)"),
    ("one W too few", lambda a: {**a, "W": a["W"][:1]}, r"need 'W' with 2 matrices"),
    ("no W", lambda a: {"H": a["H"]}, r"need 'W' with 2 matrices"),
    ("b of the wrong length", lambda a: {**a, "b": np.zeros(4)},
     r"init array b has shape \(4,\), expected \(3,\)"),
]


@pytest.mark.parametrize(("case", "edit", "message"), BAD_ARRAYS, ids=[c[0] for c in BAD_ARRAYS])
def test_init_arrays_of_the_wrong_shape_are_refused(case, edit, message):
    """Explicit init arrays that do not fit the deep model raise InputError naming the block,
    its shape and the expected one, from ``simulate`` as from ``initial_state``."""
    model = ModelSpec(kind="deep", depth=2, activation="tanh", loss="mse", bias="free",
                      classes=3, per_class=2, dim=4, width=3)
    arrays = edit(_deep_arrays(np.random.default_rng(0)))
    init = InitSpec(kind="arrays", arrays=arrays)
    with pytest.raises(InputError, match=message):
        initial_state(model, [init], "cpu", F64)
    with pytest.raises(InputError, match=message):
        simulate(RunSpec(model=model, init=init), theory=False)


def _with_entry(array: np.ndarray, value: float) -> np.ndarray:
    out = array.copy()
    out[1, 2] = value
    return out


BAD_VALUES = [
    ("NaN in H", "free", lambda a: {**a, "H": _with_entry(a["H"], np.nan)},
     r"init array H has non-finite entries"),
    ("inf in the classifier", "free",
     lambda a: {**a, "W": [a["W"][0], _with_entry(a["W"][1], -np.inf)]},
     r"init array W2 has non-finite entries"),
    ("NaN in b", "reg", lambda a: {**a, "b": np.array([0.0, np.nan, 0.0])},
     r"init array b has non-finite entries"),
    ("b for a model without bias", "none", lambda a: {**a, "b": np.ones(3)},
     r"init array b is given but the model has no bias.*(drop|bias 'free')"),
    ("a file name for H", "free", lambda a: {**a, "H": "features.npy"},
     r"init array H must be an array of numbers, got str"),
    ("ragged rows in W_1", "free",
     lambda a: {**a, "W": [[[1.0, 2.0, 3.0, 4.0]] * 2 + [[1.0]], a["W"][1]]},
     r"init array W.? must be an array of numbers, got list"),
    ("no H", "free", lambda a: {**a, "H": None}, r"init array H has shape \(\), expected"),
    ("complex H", "free", lambda a: {**a, "H": a["H"] + 5j},
     r"init array H is complex \(complex128\); .* real part \(numpy.real\)"),
    ("complex b as a list", "reg", lambda a: {**a, "b": [1.0, 2j, 0.0]},
     r"init array b is complex"),
    ("the bias under another name", "free", lambda a: {**a, "bias": np.ones(3)},
     r"init arrays have unknown keys \['bias'\]; the keys are 'H', 'W'"),
    ("a capital B", "reg", lambda a: {**a, "B": np.ones(3)}, r"unknown keys \['B'\]"),
]


@pytest.mark.parametrize(("case", "bias", "edit", "message"), BAD_VALUES,
                         ids=[c[0] for c in BAD_VALUES])
def test_init_arrays_with_values_the_model_cannot_take_are_refused(case, bias, edit, message):
    """Explicit init arrays with NaN or inf entries, entries that are not numbers, or a bias
    for a model without one (it would be dropped without a word) raise InputError from
    ``initial_state`` and ``simulate`` instead of starting a run that stalls at once or
    differs from the one asked for; the same arrays without the fault are accepted."""
    model = ModelSpec(kind="deep", depth=2, activation="tanh", loss="mse", bias=bias,
                      classes=3, per_class=2, dim=4, width=3)
    reg = Regularization(lambda_b=0.1 if bias == "reg" else 0.0)
    good = _deep_arrays(np.random.default_rng(1))
    init = InitSpec(kind="arrays", arrays=edit(good))
    with pytest.raises(InputError, match=message):
        initial_state(model, [init], "cpu", F64)
    with pytest.raises(InputError, match=message):
        simulate(RunSpec(model=model, reg=reg, init=init), theory=False)
    initial_state(model, [InitSpec(kind="arrays", arrays=good)], "cpu", F64)
