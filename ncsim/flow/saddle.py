"""Is a state at rest a saddle? The largest growth rate of the linearised flow there.

A gradient flow dy/dt = v(y) = -eta grad f(y) stops early when |grad f| <= gtol. That test
cannot tell a minimum from a saddle: an init of scale 1e-10 next to the origin of a UFM, whose
origin is a saddle below the critical weight decay, has |grad f| ~ 1e-12 and would stop at
once, although the flow leaves the origin and collapses. The Jacobian J = dv/dy = -eta Hess f
has the eigenvalues of -Hess f up to positive time scales (Sylvester's law of inertia), so the
state is a saddle exactly when J has an eigenvalue mu > 0; along its eigenvector the flow grows
like exp(mu t). (A reduced state, Gram or class means, carries the same growth rates.)

:func:`growth_rate` estimates the largest real part of J's spectrum by Arnoldi's method
(:data:`KRYLOV_DIM` steps, classical Gram-Schmidt applied twice) on central differences of the
velocity, with one fixed start vector for every run, so a run's estimate depends on its state
alone, never on its batch. The Krylov space of the extreme eigenvalues converges first; the
UFMs' Hessians at the origin have a handful of distinct eigenvalues (two per singular value of
the label gradient, and the decays), which 24 steps resolve. The start vector is a generic
Gaussian draw, so it meets every unstable direction; one whose overlap with it lies below the
noise of the difference quotients (about 2.5e-9 in float64, 1.6e-3 in float32) ends the space
before it is found and goes unseen.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

KRYLOV_DIM = 24
_START_SEED = 0


def _noise(dtype: torch.dtype) -> float:
    """Relative accuracy of a central-difference Jacobian product: eps^(2/3) (3.7e-11 in
    float64, 2.4e-5 in float32), the optimum of its truncation and rounding errors."""
    return float(torch.finfo(dtype).eps) ** (2.0 / 3.0)


def _start_vector(p: int, device: torch.device) -> torch.Tensor:
    """The Krylov start (P,) shared by every run: a fixed Gaussian draw of unit norm."""
    gen = torch.Generator().manual_seed(_START_SEED)
    v = torch.randn(p, generator=gen, dtype=torch.float64)
    return (v / v.norm()).to(device)


def _norm(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norms (C,) of the rows of x (C, P), scaled by their largest entry so that
    entries past 1e154 do not overflow in the squares (0 for a zero row)."""
    top = x.abs().amax(dim=1)
    safe = torch.where(top > 0, top, torch.ones_like(top))
    return top * (x / safe.unsqueeze(1)).norm(dim=1)


def _jacobian_products(f: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor,
                       rows: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """J v (C, P) float64 for the runs ``rows`` (C,) of the batch y (M, P), v (C, P) of unit
    norm: central differences with a step eps^(1/3) x |y_row| (a floor where y is ~0)."""
    scale = _norm(y[rows].double()).clamp(min=torch.finfo(y.dtype).tiny ** 0.25)
    step = float(torch.finfo(y.dtype).eps) ** (1.0 / 3.0) * scale  # (C,)
    shift = (step.unsqueeze(1) * v).to(y.dtype)
    plus, minus = y.clone(), y.clone()
    plus[rows] += shift
    minus[rows] -= shift
    diff = f(plus)[rows].double() - f(minus)[rows].double()
    return diff / (2.0 * step.unsqueeze(1))


def growth_rate(f: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor,
                rows: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(largest real part, largest modulus) of the Ritz values of J = dv/dy at the states
    y[rows]: two arrays (C,) float64, in the flow's time units (1 / time).

    f : the batch's velocity, (M, P) -> (M, P). Only the rows ``rows`` (C,) are perturbed
        (2 x min(:data:`KRYLOV_DIM`, P) evaluations of f on the whole batch).
    An invariant Krylov space found early (Arnoldi breakdown, to the noise of the difference
    quotients) ends that run's space there: its Ritz values are then J's own eigenvalues.
    """
    count, p = int(rows.shape[0]), y.shape[1]
    m = min(KRYLOV_DIM, p)
    basis = torch.zeros(count, m + 1, p, dtype=torch.float64, device=y.device)
    hess = torch.zeros(count, m + 1, m, dtype=torch.float64, device=y.device)
    basis[:, 0] = _start_vector(p, y.device)
    dims = torch.full((count,), m, dtype=torch.long, device=y.device)  # Krylov dimension
    floor = 100.0 * _noise(y.dtype)
    for j in range(m):
        w = _jacobian_products(f, y, rows, basis[:, j])
        size = w.norm(dim=1)
        known = basis[:, : j + 1]
        coeffs = torch.zeros(count, j + 1, dtype=torch.float64, device=y.device)
        for _ in range(2):  # Gram-Schmidt twice: orthogonal to rounding
            c = torch.einsum("cjp,cp->cj", known, w)
            w = w - torch.einsum("cjp,cj->cp", known, c)
            coeffs += c
        beta = w.norm(dim=1)
        hess[:, : j + 1, j] = coeffs
        hess[:, j + 1, j] = beta
        # an invariant space, to the noise of the difference quotients: the run's space ends
        ended = (dims == m) & ~(beta > floor * size)
        dims = torch.where(ended, torch.full_like(dims, j + 1), dims)
        basis[:, j + 1] = w / beta.clamp(min=1e-300).unsqueeze(1)
    hess_host, dims_host = hess.cpu().numpy(), dims.cpu().numpy()
    rate, radius = np.empty(count), np.empty(count)
    for i, k in enumerate(dims_host):  # the Ritz values of each run's own space
        block = hess_host[i, :k, :k]
        if not np.isfinite(block).all():  # a NaN velocity next to the state: no rate, so
            rate[i] = radius[i] = math.nan  # no escape is claimed (saddle_escapes: False)
            continue
        ritz = np.linalg.eigvals(block)
        rate[i], radius[i] = ritz.real.max(), np.abs(ritz).max()
    return rate, radius


def saddle_escapes(f: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor,
                   rows: torch.Tensor, time_left: torch.Tensor) -> tuple[torch.Tensor,
                                                                        torch.Tensor]:
    """Which of the runs ``rows`` (C,) of the batch y (M, P), each at rest, sit at a saddle the
    flow leaves before t_end: (escapes (C,) bool, growth rate mu (C,) float64), on y's device.

    A run escapes when mu x time_left >= 1 (the unstable direction grows by at least e before
    t_end) and mu lies above the noise of the difference quotients (100 eps^(2/3) times the
    spectral radius: a minimum's flat directions, such as the UFM's rotations of (W, H), give
    Ritz values of ~0, never counted as growth).
    """
    rate, radius = growth_rate(f, y, rows)
    mu = torch.as_tensor(rate, dtype=torch.float64, device=y.device)
    noise = 100.0 * _noise(y.dtype) * torch.as_tensor(radius, dtype=torch.float64,
                                                       device=y.device)
    return (mu > noise) & (mu * time_left.double() >= 1.0), mu
