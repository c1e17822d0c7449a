"""Batched matrix products of the flows, on the CPU in float64 through numpy's BLAS.

The right-hand sides multiply many small matrices per run (W H, W^T G, G H^T: 10 x 32 x 200
in the phase-diagram workload). On the CPU in float64 on one thread, numpy's ``matmul``
(OpenBLAS) runs these 1.1-2.4x faster than torch's (MKL) on an AMD EPYC core; on an Intel
Xeon core MKL is as fast or faster (numpy 0.46-1.08x as fast; the phase-diagram workload W1
took 1.02x and the wide d-space workload 1.16x torch's time through numpy):
``benchmarks/products.py``, ``benchmarks/route.py``, ``benchmarks/README.md``. The route is
on when numpy reports an optimised BLAS (its wheels ship OpenBLAS), torch's BLAS is not MKL
on an Intel CPU (:func:`host_route_default`), and torch runs on one thread (``--threads 1``,
the study executors): with more, torch splits a batched product over its threads and numpy
does not. The tensors are shared with numpy, not copied. float32 stays with torch (measured
mixed), as do tensors on an accelerator, sparse tensors and tensors that take part in
autograd (reverse or forward mode) or in ``torch.func`` transforms.
"""

from __future__ import annotations

import numpy as np
import torch

OPTIMISED_BLAS = ("openblas", "mkl", "blis", "accelerate", "armpl")
"""BLAS libraries (names as numpy reports them, lower case) that the route is for; a numpy
built on the reference BLAS would be far slower than torch."""


def numpy_blas() -> str:
    """Name of the BLAS numpy was built with, as numpy reports it ("" when it does not)."""
    try:
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except (TypeError, KeyError):  # numpy < 1.26 has no mode="dicts"
        return ""
    return str(info.get("name", "")) if info.get("found", True) else ""


def optimised(blas_name: str) -> bool:
    """Whether ``blas_name`` is one of :data:`OPTIMISED_BLAS` (scipy-openblas, mkl-rt, ...)."""
    return any(name in blas_name.lower() for name in OPTIMISED_BLAS)


def cpuinfo_field(name: str) -> str:
    """The first value of field ``name`` in Linux's /proc/cpuinfo ("vendor_id", "model
    name", ...); "" where the file or the field is missing."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_vendor() -> str:
    """The CPU's vendor string as Linux reports it ("GenuineIntel", "AuthenticAMD", ...);
    "" where /proc/cpuinfo does not say."""
    return cpuinfo_field("vendor_id")


def host_route_default(blas_name: str, vendor: str, torch_mkl: bool) -> bool:
    """Whether CPU float64 products go through numpy: with an optimised numpy BLAS
    (:func:`optimised`), unless torch multiplies with MKL on an Intel CPU (``vendor``
    "GenuineIntel"), where MKL was measured as fast or faster."""
    return optimised(blas_name) and not (torch_mkl and vendor == "GenuineIntel")


HOST_BLAS = host_route_default(numpy_blas(), cpu_vendor(), torch.backends.mkl.is_available())
"""Route CPU float64 products through numpy (:func:`host_route_default` on this machine);
switched off to emulate an accelerator's loop on the CPU (where the loop must not read host
memory)."""

_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)


def _plain(t: torch.Tensor) -> bool:
    """A CPU float64 tensor whose memory numpy may read and write behind torch's back."""
    return (t.is_cpu and t.dtype == torch.float64 and t.layout == torch.strided
            and not t.requires_grad and not t.is_neg()  # a lazy negation numpy cannot read
            and (_wrapped is None or not _wrapped(t))
            and (not t.is_inference() or torch.is_inference_mode_enabled()))


def _host_route(*tensors: torch.Tensor | None) -> bool:
    """Whether numpy computes with ``tensors`` (None entries are absent ``out``\\ s): torch on
    one thread (with more, torch splits a batched product over its threads and numpy, which
    loops over the batch, falls behind), outside forward-mode autograd, every tensor
    :func:`_plain`."""
    return (HOST_BLAS and torch.get_num_threads() == 1
            and torch.autograd.forward_ad._current_level < 0
            and all(t is None or _plain(t) for t in tensors))


def _written(out: torch.Tensor) -> torch.Tensor:
    """Tell autograd that numpy wrote into ``out`` (an in-place write of torch would)."""
    torch.autograd.graph.increment_version(out)
    return out


def _np_matmul(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None
               ) -> np.ndarray:
    """numpy's ``matmul`` on the tensors' memory, silent on overflow and invalid values as
    torch is (an inf or NaN is the caller's to find: the integrator's divergence test)."""
    with np.errstate(all="ignore"):
        return np.matmul(a.numpy(), b.numpy(), out=None if out is None else out.numpy())


def bmm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b for a (R, m, k), b (R, k, n): (R, m, n), written into ``out`` when given.
    Shapes that do not fit go to ``torch.bmm``, which raises its own error."""
    fits = (a.dim() == 3 and b.dim() == 3 and a.shape[0] == b.shape[0]
            and a.shape[2] == b.shape[1]
            and (out is None or out.shape == (a.shape[0], a.shape[1], b.shape[2])))
    if not (fits and _host_route(a, b, out)):
        return torch.bmm(a, b, out=out)
    if out is None:
        return torch.from_numpy(_np_matmul(a, b))
    _np_matmul(a, b, out)
    return _written(out)


def baddbmm(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float = 1.0
            ) -> torch.Tensor:
    """c + alpha * a @ b (``torch.baddbmm`` with beta = 1) for a (R, m, k), b (R, k, n);
    ``c`` broadcasts to (R, m, n)."""
    if not _host_route(a, b, c):
        return torch.baddbmm(c, a, b, alpha=alpha)
    product = bmm(a, b)
    if alpha != 1.0:
        product.mul_(alpha)
    return product.add_(c)


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b with ``torch.matmul``'s broadcasting of the leading dimensions (numpy's
    ``matmul`` broadcasts alike) for a (..., m, k), b (..., k, n): the metrics' products over
    all samples."""
    fits = (a.dim() >= 2 and b.dim() >= 2 and a.shape[-1] == b.shape[-2]
            and _broadcastable(a.shape[:-2], b.shape[:-2]))
    if not (fits and _host_route(a, b)):
        return torch.matmul(a, b)
    return torch.from_numpy(_np_matmul(a, b))


def _broadcastable(x: torch.Size, y: torch.Size) -> bool:
    """Whether two leading shapes broadcast (else torch raises its own error, as for bmm)."""
    try:
        torch.broadcast_shapes(x, y)
    except RuntimeError:
        return False
    return True
