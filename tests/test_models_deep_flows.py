"""Flows of the deep UFM against references that do not call the package's model code.

- derivatives at the kinks of relu / leaky_relu: the documented convention (0 and the slope at
  u = 0) against autograd of ``torch.where`` forms whose branch at 0 is that convention;
- symmetries of the flow: relabelled classes, rotated feature and hidden spaces (linear head),
  permuted hidden units (any activation) and all time scales times c (time divided by c) leave
  every recorded quantity unchanged;
- the NC1 trajectory (both forms) of a batch that mixes depths against scipy's DOP853 on an
  autograd gradient, with the metrics written out in numpy;
- the end state of a long deep linear run from a Gaussian start against the per-mode closed form
  of the deep linear UFM (``reference/theory.md`` section 3.1) solved here by Newton's method;
- seeds: the initial state depends on the whole seed (seeds from 2^32 on are refused).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from ncsim.errors import InputError
from ncsim.flow import simulate
from ncsim.flow.simulate import _Batch
from ncsim.models import initial_parts
from ncsim.models.activations import activation
from ncsim.spec import InitSpec, ModelSpec, Regularization, RunSpec, SolverSpec, TimeScale

F64 = torch.float64
METRICS = ["loss", "objective", "fn", "nc1", "nc1_trace", "nc2_etf", "nc2_etf_w",
           "nc2_equinorm", "nc2_equinorm_w", "nc2_angle", "nc3", "nc3_paper", "nc4", "cdnv",
           "class_mean_norm", "within_energy", "w_norm"]

# --------------------------------------------------------------------------------------------
# naive reference (matrix form, autograd)
# --------------------------------------------------------------------------------------------


def _act(name: str, u: torch.Tensor, slope: float) -> torch.Tensor:
    """Activation from its formula; relu and leaky_relu as ``torch.where(u > 0, ...)``, whose
    autograd derivative at u = 0 is that of the second branch (0 and ``slope``)."""
    if name == "linear":
        return u
    if name == "relu":
        return torch.where(u > 0, u, torch.zeros_like(u))
    if name == "leaky_relu":
        return torch.where(u > 0, u, slope * u)
    if name == "tanh":
        return torch.sinh(u) / torch.cosh(u)
    if name == "gelu":
        return 0.5 * u * (1.0 + torch.erf(u / math.sqrt(2.0)))
    if name == "silu":
        return u / (1.0 + torch.exp(-u))
    raise AssertionError(name)


def _blocks(model: ModelSpec, row: torch.Tensor
            ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
    """(H (d, N), [W_1 .. W_L], b (K,) or None) of a flat state row, offsets computed here."""
    n, d, k = model.num_samples, model.dim, model.classes
    m = model.width if model.width is not None else d
    shapes = [(d, n)] + ([(k, d)] if model.depth == 1 else
                         [(m, d)] + [(m, m)] * (model.depth - 2) + [(k, m)])
    out, start = [], 0
    for a, b in shapes:
        out.append(row[start:start + a * b].reshape(a, b))
        start += a * b
    bias = row[start:start + k] if model.bias != "none" else None
    assert start + (k if bias is not None else 0) == row.numel()
    return out[0], out[1:], bias


def _objective(spec: RunSpec, row: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(f, penultimate features (p, N)) of DESIGN.md section 2 at the state row."""
    model = spec.model
    h, ws, b = _blocks(model, row)
    counts = model.class_counts
    labels = np.repeat(np.arange(model.classes), counts)
    a = h
    for w in ws[:-1]:
        a = _act(model.activation, w @ a, model.leaky_slope)
    z = ws[-1] @ a + (b[:, None] if b is not None else 0.0)
    y = torch.zeros(model.classes, len(labels), dtype=F64)
    y[labels, np.arange(len(labels))] = 1.0
    if model.loss == "mse":
        loss = 0.5 * ((z - y) ** 2).sum() / len(labels)
    else:
        top = z.max(dim=0).values.detach()
        lse = top + torch.log(torch.exp(z - top).sum(dim=0))
        loss = (lse - (z * y).sum(dim=0)).sum() / len(labels)
    lws = spec.reg.per_layer(model.depth)
    f = loss + spec.reg.lambda_h / 2 * (h ** 2).sum()
    f = f + sum(lam / 2 * (w ** 2).sum() for lam, w in zip(lws, ws, strict=True))
    if b is not None:
        f = f + spec.reg.lambda_b / 2 * (b ** 2).sum()
    return f, a


def _velocity(spec: RunSpec, y: np.ndarray) -> np.ndarray:
    """-eta * grad f (autograd), eta block by block from the spec."""
    row = torch.from_numpy(y).clone().requires_grad_(True)
    f, _ = _objective(spec, row)
    (g,) = torch.autograd.grad(f, row)
    model, ts = spec.model, spec.time_scale
    h, ws, b = _blocks(model, g)
    etas = [ts.eta_h, *ts.per_layer(model.depth)]
    parts = [-e * x.reshape(-1) for e, x in zip(etas, [h, *ws], strict=True)]
    if b is not None:
        parts.append(-ts.eta_b * b)
    return torch.cat(parts).numpy()


def _nc1_forms(feats: np.ndarray, counts: tuple[int, ...]) -> tuple[float, float]:
    """(tr(Sw Sb^+)/K, tr Sw / tr Sb) of features (p, N), sample global mean."""
    k, n = len(counts), feats.shape[1]
    labels = np.repeat(np.arange(k), counts)
    means = np.stack([feats[:, labels == c].mean(axis=1) for c in range(k)], axis=1)
    dev = feats - means[:, labels]
    sw = dev @ dev.T / n
    centred = means - feats.mean(axis=1, keepdims=True)
    sb = centred @ centred.T / k
    return float(np.trace(sw @ np.linalg.pinv(sb)) / k), float(np.trace(sw) / np.trace(sb))


def _arrays_spec(model: ModelSpec, arrays: dict, reg: Regularization,
                 ts: TimeScale | None = None, solver: SolverSpec | None = None) -> RunSpec:
    """A run from the given arrays (default: unit time scales, dopri5 at rtol 1e-11 to t = 4)."""
    ts = ts or TimeScale()
    solver = solver or SolverSpec(t_end=4.0, rtol=1e-11, atol=1e-13, records=5, gtol=0,
                                  reduction="none")
    return RunSpec(model=model, reg=reg, init=InitSpec(kind="arrays", arrays=arrays),
                   time_scale=ts, solver=solver)


def _records(spec: RunSpec) -> np.ndarray:
    """(T, Q) recorded METRICS of one run."""
    return simulate([spec], theory=False).trajectories[METRICS].to_numpy()


def _assert_same_records(got: np.ndarray, want: np.ndarray, rel: float, what: str) -> None:
    assert got.shape == want.shape, what
    assert np.isfinite(want).all(), what
    err = np.abs(got - want) / np.maximum(np.abs(want), 1e-12)
    worst = int(np.argmax(err.max(axis=0)))
    assert err.max() <= rel, f"{what}: {METRICS[worst]} off by {err.max():.2e} relative"


def _start(model: ModelSpec, seed: int, bias_scale: float = 0.3) -> dict:
    """A Gaussian start as arrays (a random bias for a model that has one)."""
    parts = initial_parts(model, InitSpec(seed=seed, scale=0.5))
    rng = np.random.default_rng(seed)
    return {"H": parts["H"].numpy(), "W": [parts[f"W{l + 1}"].numpy()
                                           for l in range(model.depth)],
            "b": bias_scale * rng.normal(size=model.classes) if model.has_bias else None}


# --------------------------------------------------------------------------------------------
# kinks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "slope"), [("relu", 0.01), ("leaky_relu", 0.2)])
def test_derivative_at_the_kink_is_the_documented_convention(name, slope):
    """relu'(0) = 0 and leaky_relu'(0) = slope (``ncsim.models.activations``), in the activation
    itself and in the gradient of a state whose pre-activations are exactly 0 for a whole sample
    (a zero feature column) and for a whole hidden unit (a zero row of W_1)."""
    sigma, sigma_grad = activation(name, slope)
    u = torch.tensor([-1.0, 0.0, 2.0], dtype=F64)
    want = [slope if name == "leaky_relu" else 0.0] * 2 + [1.0]
    assert sigma_grad(u).tolist() == want
    model = ModelSpec(kind="deep", depth=3, activation=name, leaky_slope=slope, loss="ce",
                      bias="free", classes=3, per_class=(2, 1, 2), dim=3, width=4)
    spec = RunSpec(model=model, reg=Regularization(lambda_w=0.1, lambda_h=0.2))
    batch = _Batch([spec])
    state = torch.randn(batch.y0.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    h, ws, _ = _blocks(model, state[0])
    h[:, 2] = 0.0  # sample 2: every pre-activation of layer 1 is 0
    ws[0][1] = 0.0  # hidden unit 1 of layer 1: 0 for every sample
    row = state[0].clone().requires_grad_(True)
    f, _ = _objective(spec, row)
    (want_grad,) = torch.autograd.grad(f, row)
    got = batch.objective.gradient(state, batch.penalties)[0]
    torch.testing.assert_close(got, want_grad, rtol=1e-12, atol=1e-14)
    got_h, got_ws, _ = _blocks(model, got)
    if name == "relu":  # no signal passes a kink at 0: the zero column keeps only its decay
        assert float(got_h[:, 2].abs().max()) == 0.0
        assert float(got_ws[0][1].abs().max()) == 0.0
    else:
        assert float(got_h[:, 2].abs().max()) > 0.0


# --------------------------------------------------------------------------------------------
# symmetries
# --------------------------------------------------------------------------------------------

SYMMETRY_MODELS = [
    ModelSpec(kind="deep", depth=2, activation="tanh", loss="ce", bias="free", classes=3,
              per_class=(2, 4, 3), dim=5, width=4),
    ModelSpec(kind="deep", depth=3, activation="linear", loss="mse", bias="reg", classes=3,
              per_class=(2, 4, 3), dim=4, width=5),
    ModelSpec(kind="ufm", loss="ce", bias="reg", classes=3, per_class=(2, 4, 3), dim=4),
]


def _reg(model: ModelSpec) -> Regularization:
    return Regularization(lambda_w=tuple(0.01 * (l + 1) for l in range(model.depth)),
                          lambda_h=0.02, lambda_b=0.1 if model.bias == "reg" else 0.0)


@pytest.mark.parametrize("index", range(len(SYMMETRY_MODELS)))
def test_relabelled_classes_give_the_same_records(index):
    """Classes (with their samples, classifier rows and bias entries) in another order, so the
    class counts are permuted too: every recorded metric is the same."""
    model = SYMMETRY_MODELS[index]
    arrays = _start(model, seed=3)
    base = _records(_arrays_spec(model, arrays, _reg(model)))
    order = [2, 0, 1]
    labels = np.repeat(np.arange(model.classes), model.class_counts)
    columns = np.concatenate([np.flatnonzero(labels == c) for c in order])
    permuted = dataclasses.replace(model,
                                   per_class=tuple(model.class_counts[c] for c in order))
    ws = [w.copy() for w in arrays["W"]]
    ws[-1] = ws[-1][order]
    moved = {"H": arrays["H"][:, columns], "W": ws,
             "b": None if arrays["b"] is None else arrays["b"][order]}
    got = _records(_arrays_spec(permuted, moved, _reg(model)))
    _assert_same_records(got, base, 1e-9, "relabelled classes")


@pytest.mark.parametrize("index", range(len(SYMMETRY_MODELS)))
def test_rotated_or_permuted_spaces_give_the_same_records(index):
    """Feature space rotated (H -> Q_0 H, W_1 -> W_1 Q_0^T); hidden spaces rotated for a linear
    head, their units permuted for a non-linear one (W_l -> P_l W_l P_(l-1)^T): every recorded
    metric is the same (the flow is equivariant, the metrics invariant)."""
    model = SYMMETRY_MODELS[index]
    arrays = _start(model, seed=4)
    base = _records(_arrays_spec(model, arrays, _reg(model)))
    rng = np.random.default_rng(5)

    def rotation(size: int) -> np.ndarray:
        q, r = np.linalg.qr(rng.normal(size=(size, size)))
        return q * np.sign(np.diag(r))

    width = model.hidden_width
    hidden = [rotation(width) if model.activation == "linear" else
              np.eye(width)[rng.permutation(width)] for _ in range(model.depth - 1)]
    qs = [rotation(model.dim), *hidden]
    ws = arrays["W"]
    moved_ws = [qs[l + 1] @ ws[l] @ qs[l].T for l in range(model.depth - 1)]
    moved_ws.append(ws[-1] @ qs[-1].T)
    moved = {"H": qs[0] @ arrays["H"], "W": moved_ws, "b": arrays["b"]}
    got = _records(_arrays_spec(model, moved, _reg(model)))
    _assert_same_records(got, base, 1e-9, "rotated spaces")


def test_permuted_hidden_units_of_a_relu_head_give_the_same_steps():
    """A relu head integrated with fixed rk4 steps: permuting its hidden units permutes every
    step, so the records agree to rounding."""
    model = ModelSpec(kind="deep", depth=3, activation="relu", loss="mse", bias="none",
                      classes=3, per_class=(2, 3, 1), dim=4, width=5)
    solver = SolverSpec(method="rk4", dt=0.05, t_end=6.0, records=5, gtol=0)
    arrays = _start(model, seed=6)
    base = _records(_arrays_spec(model, arrays, _reg(model), solver=solver))
    rng = np.random.default_rng(7)
    p1, p2 = (np.eye(5)[rng.permutation(5)] for _ in range(2))
    ws = arrays["W"]
    moved = {"H": arrays["H"], "W": [p1 @ ws[0], p2 @ ws[1] @ p1.T, ws[2] @ p2.T], "b": None}
    got = _records(_arrays_spec(model, moved, _reg(model), solver=solver))
    _assert_same_records(got, base, 1e-11, "permuted relu units")


@pytest.mark.parametrize("index", range(len(SYMMETRY_MODELS)))
def test_all_time_scales_times_c_run_the_flow_c_times_faster(index):
    """eta_theta -> c eta_theta for every block is the time change t -> c t: the records at
    times t / c equal those of the unscaled flow at t."""
    model = SYMMETRY_MODELS[index]
    arrays = _start(model, seed=8)
    c = 4.0
    solver = SolverSpec(t_end=4.0, t_first=0.05, rtol=1e-11, atol=1e-13, records=5, gtol=0,
                        reduction="none")
    fast = SolverSpec(t_end=4.0 / c, t_first=0.05 / c, rtol=1e-11, atol=1e-13, records=5,
                      gtol=0, reduction="none")
    base = _records(_arrays_spec(model, arrays, _reg(model), solver=solver))
    scaled = TimeScale(eta_h=c, eta_w=c, eta_b=c if model.has_bias else 1.0)
    got = _records(_arrays_spec(model, arrays, _reg(model), ts=scaled, solver=fast))
    _assert_same_records(got, base, 1e-8, "time scales times c")


# --------------------------------------------------------------------------------------------
# trajectories of a mixed batch against DOP853
# --------------------------------------------------------------------------------------------

MIXED = [
    RunSpec(model=ModelSpec(kind="deep", depth=3, activation="gelu", loss="ce", bias="reg",
                            classes=3, per_class=(2, 3, 1), dim=4, width=5),
            reg=Regularization(lambda_w=(0.01, 0.03, 0.02), lambda_h=0.02, lambda_b=0.05),
            init=InitSpec(scale=0.7, seed=2),
            time_scale=TimeScale(eta_h=1.3, eta_w=(1.0, 0.6, 2.0), eta_b=0.4),
            solver=SolverSpec(t_end=20, rtol=1e-10, atol=1e-12, records=6, gtol=0)),
    RunSpec(model=ModelSpec(kind="deep", depth=2, activation="silu", loss="mse", bias="none",
                            classes=3, per_class=(2, 3, 1), dim=4, width=3),
            reg=Regularization(lambda_w=0.02, lambda_h=0.01),
            init=InitSpec(scale=0.7, seed=3),
            solver=SolverSpec(t_end=20, rtol=1e-10, atol=1e-12, records=6, gtol=0)),
]


@pytest.mark.slow
def test_nc1_of_a_mixed_depth_batch_follows_dop853_and_the_single_runs():
    """One call with two depths and activations: fn, nc1 (pinv form) and nc1_trace of each run
    at every record time agree with DOP853 (rtol 1e-12) on the autograd gradient, the metrics
    computed here in numpy (relative 1e-7), and with the run simulated alone (1e-12)."""
    together = simulate(MIXED, theory=False)
    for r, spec in enumerate(MIXED):
        rid = together.runs["run_id"][r]
        got = together.trajectories[together.trajectories["run_id"] == rid]
        got = got[["fn", "nc1", "nc1_trace"]].to_numpy()
        alone = simulate([spec], theory=False).trajectories[["fn", "nc1", "nc1_trace"]]
        np.testing.assert_allclose(got, alone.to_numpy(), rtol=1e-12, atol=0)
        y0 = _Batch([spec]).y0[0].numpy()
        times = spec.solver.record_times()
        sol = solve_ivp(lambda _t, y, s=spec: _velocity(s, y), (0.0, spec.solver.t_end), y0,
                        method="DOP853", rtol=1e-12, atol=1e-14, t_eval=times)
        assert sol.success
        want = []
        for y in sol.y.T:
            _, feats = _objective(spec, torch.from_numpy(y))
            feats = feats.numpy()
            want.append([np.linalg.norm(feats, axis=0).mean(),
                         *_nc1_forms(feats, spec.model.class_counts)])
        np.testing.assert_allclose(got, np.array(want), rtol=1e-7, atol=0)


# --------------------------------------------------------------------------------------------
# deep linear equilibrium
# --------------------------------------------------------------------------------------------


def _mode_singular_value(n: int, samples: int, m: int, lam: float) -> float:
    """Root sigma > 0 of the per-mode problem min (sigma - sqrt n)^2 / 2N + M/2 Lam
    sigma^(2/M) (theory.md 3.1), by Newton from sqrt n; checked to beat sigma = 0."""
    s = math.sqrt(n)
    for _ in range(100):
        grad = (s - math.sqrt(n)) / samples + lam * s ** (2.0 / m - 1.0)
        curv = 1.0 / samples + lam * (2.0 / m - 1.0) * s ** (2.0 / m - 2.0)
        s -= grad / curv
    value = (s - math.sqrt(n)) ** 2 / (2 * samples) + m / 2 * lam * s ** (2.0 / m)
    assert value < n / (2 * samples)
    return s


@pytest.mark.slow
@pytest.mark.parametrize(("depth", "lambda_w", "lambda_h", "bias"),
                         [(2, (0.02, 0.03), 0.025, "none"),
                          (3, (0.01, 0.02, 0.015), 0.02, "free")])
def test_deep_linear_end_state_is_the_per_mode_closed_form(depth, lambda_w, lambda_h, bias):
    """A deep linear MSE head (width != d, unequal decays) from a Gaussian start runs to the
    collapsed minimum of theory.md 3.1: every one of the K (no bias) or K - 1 (free bias)
    singular values of W_L ... W_1 H is the per-mode root sigma, the factors are
    lambda-balanced (lambda_l |W_l|^2 = r Lam sigma^(2/M), r modes) and the penultimate
    features have Gram (lambda_L / Lam) (Zc^T Zc)^(L/M), Zc = sigma / sqrt n times the (centred)
    label matrix, which gives fn."""
    k, n = 3, 4
    model = ModelSpec(kind="deep", depth=depth, activation="linear", loss="mse", bias=bias,
                      classes=k, per_class=n, dim=5, width=4)
    spec = RunSpec(model=model, reg=Regularization(lambda_w=lambda_w, lambda_h=lambda_h),
                   init=InitSpec(scale=0.6, seed=1),
                   solver=SolverSpec(t_end=3000, rtol=1e-10, atol=1e-12, records=10,
                                     gtol=1e-11))
    result = simulate(spec, theory=False)
    row = result.runs.iloc[0]
    assert row["status"] == "ok"
    state = result.final_state(row["run_id"])
    h, ws = state["H"], state["W"]
    m = depth + 1
    lam = (lambda_h * math.prod(lambda_w)) ** (1.0 / m)
    sigma = _mode_singular_value(n, k * n, m, lam)
    modes = k if bias == "none" else k - 1
    logits = h
    for w in ws:
        logits = w @ logits
    sv = np.linalg.svd(logits, compute_uv=False)
    np.testing.assert_allclose(sv[:modes], sigma, rtol=1e-8)
    assert np.all(sv[modes:] < 1e-8)
    energies = [lambda_h * np.sum(h ** 2)] + [lw * np.sum(w ** 2)
                                              for lw, w in zip(lambda_w, ws, strict=True)]
    np.testing.assert_allclose(energies, modes * lam * sigma ** (2.0 / m), rtol=1e-8)
    labels = np.repeat(np.eye(k), n, axis=1)
    target = labels if bias == "none" else labels - 1.0 / k
    vals, vecs = np.linalg.eigh((sigma ** 2 / n) * target.T @ target)
    power = (vecs * np.clip(vals, 0.0, None) ** (depth / m)) @ vecs.T
    fn_want = np.sqrt(np.clip(np.diag(power) * lambda_w[-1] / lam, 0.0, None)).mean()
    assert abs(row["final_fn"] - fn_want) <= 1e-8 * fn_want


# --------------------------------------------------------------------------------------------
# seeds
# --------------------------------------------------------------------------------------------

SEED_MODELS = [
    (ModelSpec(kind="deep", depth=2, activation="tanh", classes=3, per_class=2, dim=4), "gaussian"),
    (ModelSpec(kind="deep", depth=2, classes=3, per_class=2, dim=4), "spectral"),
    (ModelSpec(kind="ufm", classes=2, per_class=2, dim=9), "gaussian"),  # Gram-factor draw
]


@pytest.mark.parametrize(("model", "kind"), SEED_MODELS)
def test_seeds_from_2_to_the_32_are_refused_rather_than_aliased(model, kind):
    """torch's CPU generator keeps the low 32 bits of its seed (the premise, checked), so seed
    s + 2^32 would start where seed s starts: such a seed is refused with a message that names
    the range, and the largest allowed seed draws its own start."""
    draw = [torch.randn(4, generator=torch.Generator().manual_seed(s), dtype=F64)
            for s in (5, 5 + 2**32)]
    assert torch.equal(*draw)
    top = initial_parts(model, InitSpec(kind=kind, seed=2**32 - 1))
    other = initial_parts(model, InitSpec(kind=kind, seed=2**32 - 2))
    assert not torch.equal(top["H"], other["H"])
    for seed in (2**32, 2**32 + 5, 2**63 - 1):
        with pytest.raises(InputError, match=r"seed \d+ is out of range: .*\[0, 2\^32\)"):
            initial_parts(model, InitSpec(kind=kind, seed=seed))
    spec = RunSpec(model=model, init=InitSpec(kind=kind, seed=2**32 + 5),
                   solver=SolverSpec(t_end=1.0, records=3))
    with pytest.raises(InputError, match=r"seed must be an integer in \[0, 2\^32\)"):
        simulate(spec, theory=False)
