"""Thread counts of the compute libraries: torch's, numpy's BLAS (which runs the CPU float64
products, :mod:`ncsim.products`) and scipy's BLAS bounded together.

threadpoolctl reaches the libraries loaded when a bound starts, so scipy's linear algebra is
loaded first; a BLAS library loaded later inside a bound keeps its own count."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

#: the most threads a command takes (--threads): far above any machine's cores, within the
#: integers torch.set_num_threads takes (this module imports torch only when it bounds)
THREADS_MAX = 4096


def _load_blas() -> None:
    """Load numpy's and scipy's BLAS libraries (a bound reaches only loaded ones)."""
    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401


@contextlib.contextmanager
def bounded_threads(count: int | None) -> Iterator[None]:
    """Inside the block torch and every BLAS library loaded in the process use ``count``
    threads (None: leave them as they are); restored afterwards."""
    if count is None:
        yield
        return
    _load_blas()
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        with threadpool_limits(limits=count, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


def set_threads(count: int) -> None:
    """Bound torch and the BLAS libraries to ``count`` threads for the rest of the process
    (a worker process's initialiser)."""
    _load_blas()
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(count)
    threadpool_limits(limits=count, user_api="blas")
