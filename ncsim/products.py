"""Batched matrix products of the flows, on the CPU in float64 through numpy's BLAS.

The right-hand sides multiply many small matrices per run (W H, W^T G, G H^T: 10 x 32 x 200
in the phase-diagram workload). On the CPU in float64, numpy's stacked ``matmul`` (OpenBLAS)
runs these 1.1-2.8x faster than ``torch.bmm`` (MKL), from 64 x (10 x 32 x 200) to
8 x (512 x 512 x 512), transposed operands included (``benchmarks/README.md``). The tensors
are shared with numpy, not copied. float32 stays with torch (measured 0.87-3x, mixed), as do
tensors on an accelerator and tensors that take part in autograd or ``torch.func``.
"""

from __future__ import annotations

import numpy as np
import torch

HOST_BLAS = True
"""Route CPU float64 products through numpy; switched off to emulate an accelerator's loop on
the CPU (where the loop must not read host memory)."""


_wrapped = torch._C._functorch.is_functorch_wrapped_tensor  # inside torch.func transforms


def _host_route(*tensors: torch.Tensor | None) -> bool:
    """Whether numpy may compute with ``tensors``: CPU float64 tensors with storage of their
    own, outside autograd and ``torch.func`` transforms (vmap, jvp, grad)."""
    return HOST_BLAS and all(
        t is None or (t.device.type == "cpu" and t.dtype == torch.float64
                      and not t.requires_grad and not _wrapped(t))
        for t in tensors)


def bmm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b for a (R, m, k), b (R, k, n): (R, m, n), written into ``out`` when given."""
    if not _host_route(a, b, out):
        return torch.bmm(a, b, out=out)
    if a.dim() != 3 or b.dim() != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        raise ValueError(f"bmm needs (R, m, k) and (R, k, n) tensors, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    if out is None:  # torch's allocator: numpy's fresh pages of a large result cost ~20%
        out = torch.empty(a.shape[0], a.shape[1], b.shape[2], dtype=a.dtype)
    np.matmul(a.numpy(), b.numpy(), out=out.numpy())
    return out


def baddbmm(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float = 1.0
            ) -> torch.Tensor:
    """c + alpha * a @ b (``torch.baddbmm`` with beta = 1); ``c`` broadcasts to (R, m, n)."""
    if not _host_route(a, b, c):
        return torch.baddbmm(c, a, b, alpha=alpha)
    product = bmm(a, b)
    if alpha != 1.0:
        product.mul_(alpha)
    return product.add_(c)
