"""Array helpers shared by numpy and torch inputs (vectorised over parameter arrays)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

Array = Any  # numpy.ndarray or torch.Tensor


def is_torch(*values: Any) -> bool:
    """True when any value is a torch tensor."""
    return any(isinstance(v, torch.Tensor) for v in values)


class _Numpy:
    where = staticmethod(np.where)
    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    log1p = staticmethod(np.log1p)
    expm1 = staticmethod(np.expm1)
    sqrt = staticmethod(np.sqrt)
    hypot = staticmethod(np.hypot)
    maximum = staticmethod(np.maximum)
    minimum = staticmethod(np.minimum)
    isfinite = staticmethod(np.isfinite)
    any = staticmethod(np.any)

    @staticmethod
    def asarray(v: Any, like: Any = None) -> np.ndarray:
        return np.asarray(v, dtype=float)

    @staticmethod
    def full_like(v: Any, value: float) -> np.ndarray:
        return np.full(np.shape(v), value, dtype=float)


class _Torch:
    where = staticmethod(torch.where)
    exp = staticmethod(torch.exp)
    log = staticmethod(torch.log)
    log1p = staticmethod(torch.log1p)
    expm1 = staticmethod(torch.expm1)
    sqrt = staticmethod(torch.sqrt)
    hypot = staticmethod(torch.hypot)
    maximum = staticmethod(torch.maximum)
    minimum = staticmethod(torch.minimum)
    isfinite = staticmethod(torch.isfinite)

    @staticmethod
    def any(v: Any) -> bool:
        return bool(torch.any(v))

    @staticmethod
    def asarray(v: Any, like: Any = None) -> torch.Tensor:
        if isinstance(v, torch.Tensor):
            return v.to(torch.float64) if not v.is_floating_point() else v
        device = like.device if isinstance(like, torch.Tensor) else None
        # the tensor's float dtype; float64 beside an integer tensor (whose dtype would
        # truncate a decay of 0.01 to 0)
        floating = isinstance(like, torch.Tensor) and like.is_floating_point()
        dtype = like.dtype if floating else torch.float64
        return torch.as_tensor(v, dtype=dtype, device=device)

    @staticmethod
    def full_like(v: Any, value: float) -> torch.Tensor:
        return torch.full_like(v, value)


def namespace(*values: Any) -> Any:
    """The array namespace (numpy-like helper class) for these values."""
    return _Torch if is_torch(*values) else _Numpy


def broadcast(*values: Any) -> tuple[Any, ...]:
    """Convert to float arrays of one common shape (numpy, or torch if any input is torch)."""
    xp = namespace(*values)
    like = next((v for v in values if isinstance(v, torch.Tensor)), None)
    arrays = [xp.asarray(v, like) for v in values]
    if xp is _Torch:
        return tuple(torch.broadcast_tensors(*arrays))
    return tuple(np.broadcast_arrays(*arrays))


def _opposite(a: Array, b: Array) -> Array:
    """Whether a and b are of opposite sign or one is 0 (a b <= 0 without forming the product,
    which underflows to 0 for two values below 1e-154 and would then count as a sign change);
    False where either is NaN."""
    return ((a <= 0) & (b >= 0)) | ((a >= 0) & (b <= 0))


def bisect(f: Callable[[Array], Array], lo: Array, hi: Array, iters: int = 200) -> Array:
    """Root of ``f`` in [lo, hi] by vectorised bisection; needs f(lo) and f(hi) of opposite sign.

    Where the bracket holds (sign change checked), the returned point lies within a bracket
    of width (hi - lo) 2^-iters (or of relative width 1e-16) around a root: a certified root.
    Elsewhere the result is NaN.
    """
    xp = namespace(lo, hi)
    flo, fhi = f(lo), f(hi)
    ok = _opposite(flo, fhi)
    lo, hi = lo * 1.0, hi * 1.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        fm = f(mid)
        left = _opposite(flo, fm)
        hi = xp.where(left, mid, hi)
        lo = xp.where(left, lo, mid)
        flo = xp.where(left, flo, fm)
    return xp.where(ok, 0.5 * (lo + hi), xp.full_like(lo, float("nan")))
