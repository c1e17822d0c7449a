"""Compile sympy expressions to vectorised numpy and torch functions (cached)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import sympy as sp
import torch

from ncsim.theory._backend import is_torch

_TORCH_MODULE = [{"log": torch.log, "exp": torch.exp, "sqrt": torch.sqrt}, "torch"]


def compile_expr(expr: sp.Expr, args: Sequence[sp.Symbol]) -> Callable[..., Any]:
    """Return ``f(*arrays)`` evaluating ``expr``; torch inputs give torch outputs.

    Parameters
    ----------
    expr : sympy expression without piecewise parts (positive parts are applied by the caller).
    args : the symbols, in call order. Arrays broadcast against each other, and the result
        has the broadcast shape even where the expression does not use every argument; integer
        tensors are evaluated in float64.
    """
    f_np = sp.lambdify(list(args), expr, modules="numpy")
    f_torch = sp.lambdify(list(args), expr, modules=_TORCH_MODULE)

    def evaluate(*values: Any) -> Any:
        if is_torch(*values):
            like = next(v for v in values if isinstance(v, torch.Tensor))
            dtype = like.dtype if like.is_floating_point() else torch.float64
            vals = torch.broadcast_tensors(*[
                v if isinstance(v, torch.Tensor) and v.is_floating_point()
                else torch.as_tensor(v, dtype=dtype, device=like.device) for v in values])
            out = f_torch(*vals)
            if isinstance(out, torch.Tensor) and out.shape == vals[0].shape:
                return out
            return torch.full_like(vals[0], 0.0) + out  # an argument the result does not use
        out = f_np(*values)
        shape = np.broadcast_shapes(*(np.shape(v) for v in values))
        return out if np.shape(out) == shape else np.full(shape, out, dtype=float)

    evaluate.__doc__ = f"Compiled: {sp.sstr(expr)}"
    return evaluate
