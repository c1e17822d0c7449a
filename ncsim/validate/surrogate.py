"""UFM surrogate of a trained network: its own penultimate features and classifier as the
initial point of a one-layer UFM with MSE loss, simulated by :func:`ncsim.flow.simulate`.

Conversion to ncsim's convention (``f = (1/N) sum 1/2 |W h_i + b - y_i|^2 + lambda_W/2 |W|^2 +
lambda_H/2 |H|^2 + lambda_b/2 |b|^2``):

- The network's MSE phase minimises ``nn.MSELoss`` (mean over the N x K entries, no 1/2) plus
  coupled L2 ``wd/2 |theta|^2``. Its data term is (2/K) times ncsim's, so dividing the objective
  by 2/K gives ``lambda_W = lambda_b = K wd / 2`` and gradient-flow time ``t_ncsim = (2/K) t``
  with the network's time ``t = lr x steps``. Times are reported in the network's unit t.
- lambda_H (the network has no feature penalty; its features are produced by a body under
  weight decay) is calibrated by the balance identity of UFM critical points: at any critical
  point of ``L(WH + b) + lambda_W/2 |W|^2 + lambda_H/2 |H|^2``, ``lambda_W |W|_F^2 =
  lambda_H |H|_F^2``. Applied to the network's final (trained) classifier W and features H of
  the same subsample, ``lambda_H = lambda_W |W|_F^2 / |H|_F^2``; when no final state is given,
  the state at the start of the MSE phase is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ncsim.errors import require
from ncsim.validate.data import Dataset, balanced_subset
from ncsim.validate.train import extract


@dataclass
class SurrogateState:
    """Class-sorted subsample of a network state.

    H : (d, N) float64 features, columns grouped by class (class-major, n per class).
    W : (K, d) classifier weight. b : (K,) classifier bias. per_class : n.
    """

    H: np.ndarray
    W: np.ndarray
    b: np.ndarray
    per_class: int

    @property
    def fn(self) -> float:
        return float(np.linalg.norm(self.H, axis=0).mean())


def network_state(model: torch.nn.Module, data: Dataset, per_class: int, seed: int = 0
                  ) -> SurrogateState:
    """Features, classifier and bias of ``model`` on a class-balanced subsample of ``data``."""
    y = data.y_train.cpu().numpy()
    idx = balanced_subset(y, per_class, seed)  # sorted by class
    x = data.x_train[torch.as_tensor(idx, device=data.x_train.device)]
    feats, _ = extract(model, x)
    return SurrogateState(
        H=feats.double().cpu().numpy().T.copy(),
        W=model.classifier.weight.detach().double().cpu().numpy().copy(),
        b=model.classifier.bias.detach().double().cpu().numpy().copy(),
        per_class=per_class,
    )


def lambda_w_ncsim(weight_decay: float, classes: int) -> float:
    """ncsim lambda_W of a network trained with nn.MSELoss and coupled L2 ``weight_decay``."""
    return classes * weight_decay / 2.0


def time_factor(classes: int) -> float:
    """t_ncsim / t_network (= 2/K for nn.MSELoss)."""
    return 2.0 / classes


def calibrate_lambda_h(state: SurrogateState, lambda_w: float) -> float:
    """Balance calibration ``lambda_H = lambda_W |W|_F^2 / |H|_F^2`` (see module docstring)."""
    h2 = float((state.H ** 2).sum())
    require(h2 > 0, "the network's features are all zero; cannot calibrate lambda_H")
    return lambda_w * float((state.W ** 2).sum()) / h2


def surrogate_spec(state: SurrogateState, lambda_w: float, lambda_h: float, t_end: float,
                   threshold: float = 0.01, records: int = 200, max_steps: int = 20_000):
    """RunSpec of the UFM-MSE surrogate started at ``state``.

    Parameters
    ----------
    state : initial H, W, b. lambda_w, lambda_h : ncsim regularisation.
    t_end : final time in ncsim units. threshold : nc1_trace onset threshold.
    records : recorded times (log-spaced). max_steps : step budget of the integration.

    The one-layer UFM is integrated in the Gram-space form when it is smaller (``reduction =
    "auto"``: d > N + K), whose cost does not depend on d.
    """
    from ncsim.spec import InitSpec, ModelSpec, OnsetSpec, Regularization, RunSpec, SolverSpec

    d, N = state.H.shape
    K = state.W.shape[0]
    require(K * state.per_class == N, "surrogate state must hold n samples of every class")
    bias = "reg" if lambda_w > 0 else "free"
    model = ModelSpec(kind="ufm", loss="mse", bias=bias, classes=K, per_class=state.per_class,
                      dim=d)
    reg = Regularization(lambda_w=lambda_w, lambda_h=lambda_h,
                         lambda_b=lambda_w if bias == "reg" else 0.0)
    init = InitSpec(kind="arrays", arrays={"H": state.H, "W": [state.W], "b": state.b})
    solver = SolverSpec(method="dopri5", t_end=t_end, records=records,
                        t_first=min(1e-3, t_end / 1e4), rtol=1e-6, atol=1e-8,
                        max_steps=max_steps, reduction="auto")
    return RunSpec(model=model, reg=reg, init=init, solver=solver,
                   onset=OnsetSpec(metric="nc1_trace", threshold=threshold, interpolate=False))


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
