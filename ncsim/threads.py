"""Thread counts of the compute libraries: torch's and numpy's BLAS (which runs the CPU
float64 products, :mod:`ncsim.products`) bounded together."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def bounded_threads(count: int | None) -> Iterator[None]:
    """Inside the block torch and every BLAS library loaded in the process use ``count``
    threads (None: leave them as they are); restored afterwards."""
    if count is None:
        yield
        return
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
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(count)
    threadpool_limits(limits=count, user_api="blas")
