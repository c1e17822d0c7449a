"""Compile sympy expressions to vectorised numpy and torch functions (cached)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sympy as sp
import torch

from ncsim.theory._backend import is_torch

_TORCH_MODULE = [{"log": torch.log, "exp": torch.exp, "sqrt": torch.sqrt}, "torch"]


def compile_expr(expr: sp.Expr, args: Sequence[sp.Symbol]) -> Callable[..., Any]:
    """Return ``f(*arrays)`` evaluating ``expr``; torch inputs give torch outputs.

    Parameters
    ----------
    expr : sympy expression without piecewise parts (positive parts are applied by the caller).
    args : the symbols, in call order. Arrays broadcast against each other.
    """
    f_np = sp.lambdify(list(args), expr, modules="numpy")
    f_torch = sp.lambdify(list(args), expr, modules=_TORCH_MODULE)

    def evaluate(*values: Any) -> Any:
        if is_torch(*values):
            like = next(v for v in values if isinstance(v, torch.Tensor))
            vals = [v if isinstance(v, torch.Tensor)
                    else torch.as_tensor(v, dtype=like.dtype, device=like.device) for v in values]
            out = f_torch(*vals)
            return out if isinstance(out, torch.Tensor) else torch.full_like(like, float(out))
        return f_np(*values)

    evaluate.__doc__ = f"Compiled: {sp.sstr(expr)}"
    return evaluate
