"""Thread counts set for the length of a test: torch's alone, or torch's and every loaded BLAS
library's together. Independent of :mod:`ncsim.threads`, which the tests check against it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from threadpoolctl import threadpool_info, threadpool_limits


@contextlib.contextmanager
def torch_threads(count: int, blas: bool = False) -> Iterator[None]:
    """Inside the block torch runs on ``count`` threads (with ``blas``, every loaded BLAS
    library too); torch's count before is restored afterwards, also when the block raises."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        if blas:
            with threadpool_limits(limits=count, user_api="blas"):
                yield
        else:
            yield
    finally:
        torch.set_num_threads(before)


def blas_threads() -> dict[str, int]:
    """{library file: thread count} of every loaded BLAS library."""
    return {p["filepath"]: p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
