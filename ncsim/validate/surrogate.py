"""UFM surrogate of a trained network: its own penultimate features and classifier as the
initial point of a one-layer UFM with MSE loss, simulated by :func:`ncsim.flow.simulate`.

Conversion to ncsim's convention (``f = (1/N) sum 1/2 |W h_i + b - y_i|^2 + lambda_W/2 |W|^2 +
lambda_H/2 |H|^2 + lambda_b/2 |b|^2``):

- The network's MSE phase minimises ``nn.MSELoss`` (mean over the N x K entries, no 1/2) plus
  coupled L2 ``wd/2 |theta|^2``. Its data term is (2/K) times ncsim's, so dividing the objective
  by 2/K gives ``lambda_W = lambda_b = K wd / 2`` and gradient-flow time ``t_ncsim = (2/K) t``
  with the network's time ``t = lr x steps``. Times are reported in the network's unit t.
- The feature block. The network has no feature penalty: its features are moved by a body
  under weight decay. Two calibrations are offered.

  ``response`` (default): the surrogate's feature flow ``dH/dt = -eta_H (grad_H L + lambda_H H)``
  is fitted to the network's own feature velocity at the start of the MSE phase. The network's
  gradient flow ``d theta/dt = -grad_theta (data loss) - wd theta`` (decayed parameters only)
  moves the subsample's features at ``v = J_theta h . d theta/dt``, computed exactly with two
  Jacobian-vector products (one for the data gradient over the whole training set, one for the
  decay). In ncsim time, least squares over all entries gives ``eta_H = -<v_data, G_H> /
  |G_H|^2`` with ``G_H = grad_H L`` of the surrogate (the body's neural-tangent amplification of
  the feature gradient, as one scalar) and ``eta_H lambda_H = -<v_decay, H> / |H|^2`` (the rate
  at which the body's weight decay shrinks the features: ``wd x`` the degree of homogeneity of
  the features in the decayed parameters, ``K wd / 2`` per degree in ncsim time). For a ReLU
  MLP the decay of the last hidden layer (weight and bias) gives exactly ``wd`` in the
  network's time t; an earlier layer gives ``wd`` only when the biases after it are zero (a
  layer's output is homogeneous in its weight and bias, the next layer's bias is not scaled),
  e.g. 2.98 wd, not 3 wd, for the three layers of a trained depth-3 MLP. The fractions of each
  velocity that the fit explains (``r2_data``, ``r2_decay``) are reported: a scalar cannot
  describe an anisotropic tangent kernel, and ``r2_data`` says how far it does.
  ``balance``: the balance identity of UFM critical points, ``lambda_W |W|_F^2 = lambda_H
  |H|_F^2``, applied to the network's final classifier and features of the same subsample,
  with ``eta_H = 1``. It gives the surrogate the network's end point but the UFM's own (1/N)
  feature rate, far slower than the network's, so its onset comes far later.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from ncsim.errors import is_finite_number, is_integer, listed, require
from ncsim.validate.data import Dataset, balanced_subset
from ncsim.validate.train import extract, loss_fn


@dataclass
class SurrogateState:
    """Class-sorted subsample of a network state.

    H : (d, N) float64 features, columns grouped by class (class-major, n per class).
    W : (K, d) classifier weight. b : (K,) classifier bias. per_class : n.
    index : (N,) rows of the training set the columns of H come from (None: not from a network).
    """

    H: np.ndarray
    W: np.ndarray
    b: np.ndarray
    per_class: int
    index: np.ndarray | None = None

    @property
    def fn(self) -> float:
        return float(np.linalg.norm(self.H, axis=0).mean())


def network_state(model: torch.nn.Module, data: Dataset, per_class: int, seed: int = 0
                  ) -> SurrogateState:
    """Features, classifier and bias of ``model`` on a class-balanced subsample of ``data``.

    The subsample holds ``per_class`` samples of each of the network's K classes, class-major
    (:class:`InputError` when a class has no training sample); the inputs are cast to the
    dtype and device of the model's parameters (a float64 model takes the float32 data). A
    state with non-finite features or classifier (a diverged network) is refused.
    """
    require(is_integer(per_class) and per_class >= 1,
            f"per_class must be an integer >= 1 (samples of each class), got {per_class!r}")
    K = int(model.classifier.weight.shape[0])
    y = data.y_train.cpu().numpy()
    idx = balanced_subset(y, per_class, seed)  # sorted by class
    labels = y[idx]
    missing = [c for c in range(K) if not np.any(labels == c)]
    require(not missing, f"the training set has no sample of class(es) {listed(missing)} of "
            f"the network's {K} classes; the surrogate needs {per_class} samples of every class")
    require(np.array_equal(labels, np.repeat(np.arange(K), per_class)),
            f"the training labels lie outside [0, {K}) (the network's {K} classes); give the "
            "dataset the network was trained on")
    ref = next(model.parameters())
    x = data.x_train[torch.as_tensor(idx, device=data.x_train.device)]
    feats, _ = extract(model, x.to(device=ref.device, dtype=ref.dtype))
    state = SurrogateState(
        H=feats.double().cpu().numpy().T.copy(),
        W=model.classifier.weight.detach().double().cpu().numpy().copy(),
        b=model.classifier.bias.detach().double().cpu().numpy().copy(),
        per_class=per_class, index=idx,
    )
    _require_finite(state)
    return state


def _require_finite(state: SurrogateState, *velocities: np.ndarray) -> None:
    """:class:`InputError` unless the state's H, W, b (and the given velocities) are finite."""
    require(all(np.isfinite(a).all() for a in (state.H, state.W, state.b)),
            "the network's features or classifier hold NaN or infinite values (a diverged "
            "run?); the surrogate needs a finite state: use a checkpoint from before the "
            "divergence, or train with a smaller learning rate")
    require(all(np.isfinite(v).all() for v in velocities),
            "the network's feature velocities hold NaN or infinite values (a diverged run?); "
            "the response calibration needs finite ones: use --lambda-h-rule balance or a "
            "checkpoint from before the divergence")


def lambda_w_ncsim(weight_decay: float, classes: int) -> float:
    """ncsim lambda_W of a network trained with nn.MSELoss and coupled L2 ``weight_decay``."""
    return classes * weight_decay / 2.0


def time_factor(classes: int) -> float:
    """t_ncsim / t_network (= 2/K for nn.MSELoss)."""
    return 2.0 / classes


def calibrate_lambda_h(state: SurrogateState, lambda_w: float) -> float:
    """Balance calibration ``lambda_H = lambda_W |W|_F^2 / |H|_F^2`` (see module docstring)."""
    _require_finite(state)
    h2 = float((state.H ** 2).sum())
    require(h2 > 0, "the network's features are all zero; cannot calibrate lambda_H")
    return lambda_w * float((state.W ** 2).sum()) / h2


CALIBRATIONS = ("response", "balance")


@dataclass
class Calibration:
    """How the surrogate's feature block matches the network (see the module docstring).

    rule : "response" or "balance". lambda_h : ncsim lambda_H. eta_h : time-scale factor of the
    feature block. r2_data, r2_decay : fraction of the network's data / decay feature velocity
    that the fit explains (NaN for "balance"). note : caveats of the fit ("" when none).
    """

    rule: str
    lambda_h: float
    eta_h: float = 1.0
    r2_data: float = math.nan
    r2_decay: float = math.nan
    note: str = ""


def feature_velocities(model: torch.nn.Module, data: Dataset, index: np.ndarray,
                       weight_decay: float, decayed: set[str] | None, loss: str = "mse",
                       batch: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of the samples ``index`` and their velocities under the network's gradient flow.

    The flow is ``d theta/dt = -grad_theta loss(training set) - weight_decay theta`` (the decay on
    the parameters named in ``decayed``; None: all), in the network's time ``t = lr x steps``.
    Computed in float64 on a copy of ``model`` in eval mode: BatchNorm layers use their running
    statistics, whereas training steps use batch statistics (see :func:`has_batch_norm`).

    Returns
    -------
    (H, v_data, v_decay), each (d, M) float64: features of the M samples, and dH/dt from the
    data gradient and from the weight decay.
    """
    require(loss in ("ce", "mse"), f"loss must be 'ce' or 'mse' (the network's phase loss), "
            f"got {loss!r}")
    require(is_finite_number(weight_decay) and weight_decay >= 0,
            f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    require(is_integer(batch) and batch >= 1,
            f"batch must be an integer >= 1 (samples per forward pass), got {batch!r}")
    net = copy.deepcopy(model).double().eval()
    params = dict(net.named_parameters())
    if decayed is not None:
        unknown = sorted(set(decayed) - set(params))
        require(not unknown, f"decayed names parameters the network does not have: "
                f"{listed(unknown)}; give names of model.named_parameters() (see "
                "ncsim.validate.train.decayed_names)")
    x, y = data.x_train, data.y_train
    total = x.shape[0]
    grads = {name: torch.zeros_like(p) for name, p in params.items()}
    for start in range(0, total, batch):
        xb, yb = x[start:start + batch].double(), y[start:start + batch]
        part = loss_fn(net(xb), yb, loss) * (xb.shape[0] / total)
        for name, g in zip(params, torch.autograd.grad(part, list(params.values()),
                                                       allow_unused=True)):
            if g is not None:
                grads[name] += g
    with torch.no_grad():
        tangent_data = {name: -g for name, g in grads.items()}
        tangent_decay = {name: (-weight_decay * p if decayed is None or name in decayed
                                else torch.zeros_like(p)) for name, p in params.items()}
    body = _Features(net)
    xs = x[torch.as_tensor(index, device=x.device)].double()
    primal = {f"net.{name}": p.detach() for name, p in params.items()}

    def features(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.func.functional_call(body, p, (xs,))

    def prefixed(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {f"net.{name}": v for name, v in t.items()}

    h, v_data = torch.func.jvp(features, (primal,), (prefixed(tangent_data),))
    _, v_decay = torch.func.jvp(features, (primal,), (prefixed(tangent_decay),))
    return tuple(a.detach().cpu().numpy().T.copy() for a in (h, v_data, v_decay))


def has_batch_norm(model: torch.nn.Module) -> bool:
    """Whether ``model`` has BatchNorm layers (its eval-mode velocities are then approximate)."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


class _Features(torch.nn.Module):
    """The network's penultimate features as a module (for functional calls)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


def calibrate_response(state: SurrogateState, v_data: np.ndarray, v_decay: np.ndarray,
                       time_factor_: float) -> Calibration:
    """Least-squares fit of ``-eta_H (G_H + lambda_H H)`` to the network's feature velocity.

    Parameters
    ----------
    state : the surrogate's initial state (H (d, N) of the same samples, W, b).
    v_data, v_decay : (d, N) feature velocities in the network's time (from
        :func:`feature_velocities`).
    time_factor_ : t_ncsim / t_network (:func:`time_factor`).
    """
    require(is_finite_number(time_factor_) and time_factor_ > 0,
            f"time_factor_ must be a finite number > 0 (t_ncsim / t_network), got "
            f"{time_factor_!r}")
    H, W, b = state.H, state.W, state.b
    K, N = W.shape[0], H.shape[1]
    require(state.per_class * K == N,
            f"the state's H has {N} samples but per_class x K = {state.per_class} x {K}; "
            "give the state network_state built")
    require(np.shape(v_data) == H.shape and np.shape(v_decay) == H.shape,
            f"the feature velocities must have H's shape {H.shape}, got {np.shape(v_data)} "
            f"and {np.shape(v_decay)}")
    _require_finite(state, v_data, v_decay)
    onehot = np.repeat(np.eye(K), state.per_class, axis=1)
    grad_h = W.T @ (W @ H + b[:, None] - onehot) / N
    vd, vw = v_data / time_factor_, v_decay / time_factor_
    g2, h2 = float((grad_h ** 2).sum()), float((H ** 2).sum())
    require(g2 > 0 and h2 > 0, "the surrogate's features fit the targets exactly (or are zero); "
            "the response calibration is undefined: use --lambda-h-rule balance")
    eta = -float((vd * grad_h).sum()) / g2
    rate = -float((vw * H).sum()) / h2
    require(eta > 0, f"the network's features move against the loss gradient (eta_H = {eta:.3g});"
            " the response calibration is undefined: use --lambda-h-rule balance")
    require(rate >= 0, f"the network's weight decay grows its features (rate {rate:.3g}); "
            "use --lambda-h-rule balance")

    def explained(v: np.ndarray, fit: np.ndarray) -> float:
        v2 = float((v ** 2).sum())
        return 1.0 - float(((v - fit) ** 2).sum()) / v2 if v2 > 0 else math.nan

    cal = Calibration("response", lambda_h=rate / eta, eta_h=eta,
                      r2_data=explained(vd, -eta * grad_h), r2_decay=explained(vw, -rate * H))
    cal.note = weak_fit_note(cal.r2_data)
    return cal


#: below this ``r2_data`` the response calibration is flagged as weak (:func:`weak_fit_note`)
WEAK_R2: float = 0.5


def weak_fit_note(r2_data: float) -> str:
    """A note when the scalar eta_H explains less than :data:`WEAK_R2` of the network's data
    feature velocity (``""`` otherwise, NaN included: the balance rule has no fit).

    Then the network's features move far from the UFM's feature flow scaled by one number (an
    anisotropic tangent kernel): the surrogate's time scale eta_H, hence its simulated onset,
    rests on a fit that misses most of the feature motion, and the comparison of onset times is
    a rough guide, not a test of the network's timing."""
    if not (math.isfinite(r2_data) and r2_data < WEAK_R2):
        return ""
    return (f"weak calibration: r2_data {r2_data:.3g} < {WEAK_R2:g}, the scalar eta_H explains "
            f"little of the network's feature velocity (anisotropic tangent kernel), so the "
            "simulated onset is a rough guide, not a test of the network's timing")


def surrogate_spec(state: SurrogateState, lambda_w: float, lambda_h: float, t_end: float,
                   threshold: float = 0.01, records: int = 200, max_steps: int = 20_000,
                   eta_h: float = 1.0):
    """RunSpec of the UFM-MSE surrogate started at ``state``.

    Parameters
    ----------
    state : initial H, W, b. lambda_w, lambda_h : ncsim regularisation.
    eta_h : time-scale factor of the feature block (``dH/dt = -eta_h grad_H f``).
    t_end : final time in ncsim units. threshold : nc1_trace onset threshold.
    records : recorded times (log-spaced). max_steps : step budget of the integration.

    ``reduction = "auto"`` integrates the one-layer UFM in its cheapest exact form: the
    Gram-space form when d >= N + K (cost independent of d), else the class-means form
    when 4 d + 3 K < 3 N (cost independent of n), else the parameters.
    """
    from ncsim import spec as sp

    d, N = state.H.shape
    K = state.W.shape[0]
    require(K * state.per_class == N, "surrogate state must hold n samples of every class")
    _require_finite(state)
    bias = "reg" if lambda_w > 0 else "free"
    model = sp.ModelSpec(kind="ufm", loss="mse", bias=bias, classes=K,
                         per_class=state.per_class, dim=d)
    reg = sp.Regularization(lambda_w=lambda_w, lambda_h=lambda_h,
                            lambda_b=lambda_w if bias == "reg" else 0.0)
    init = sp.InitSpec(kind="arrays", arrays={"H": state.H, "W": [state.W], "b": state.b})
    solver = sp.SolverSpec(method="dopri5", t_end=t_end, records=records,
                           t_first=min(1e-3, t_end / 1e4), rtol=1e-6, atol=1e-8,
                           max_steps=max_steps, reduction="auto")
    onset = sp.OnsetSpec(metric="nc1_trace", threshold=threshold, interpolate=False)
    return sp.RunSpec(model=model, reg=reg, init=init, solver=solver,
                      time_scale=sp.TimeScale(eta_h=eta_h), onset=onset)


def closed_form_fn_star(spec) -> tuple[float, str]:
    """Closed-form fn* of the surrogate spec from :mod:`ncsim.theory`, or NaN with a reason."""
    try:
        from ncsim.theory.columns import theory_columns
    except ImportError:
        return math.nan, "ncsim.theory not available"
    try:
        cols = theory_columns(spec)
    except Exception as err:  # the theory module is optional; report and go on
        return math.nan, f"theory failed: {err}"
    return float(cols.get("fn_star_theory", math.nan)), str(cols.get("theory_regime", ""))


def simulated_curve(trajectories, factor: float):
    """Trajectory rows with the time in the network's unit (t = t_ncsim / factor)."""
    out = trajectories.copy()
    out["t"] = out["time"].to_numpy(np.float64) / factor
    return out
