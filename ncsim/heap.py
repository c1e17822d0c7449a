"""Keep freed memory in the process's heap, so that large temporaries are reused, not paged in
again.

glibc's malloc serves a block above its mmap threshold (128 KiB at first, raised
dynamically up to 32 MiB) with a fresh mapping and unmaps it when it is freed. It also hands the
free top of the heap back to the kernel once it passes the trim threshold (twice the mmap
threshold). Then the next block of that size is paged in again, one page fault per 4 KiB. A flow's
step allocates several (R, P) temporaries, and a record allocates several (M, N, p) ones, of
megabytes each. In W1 on the CPU that cost 830,000 minor faults and 1.5 s of kernel time in an
11.6 s run. With the thresholds raised it cost 114,000 faults and 0.3 s.

The command line raises the thresholds for its own process (:func:`ncsim.cli.main`), and so do the
study executors' worker processes. A Python caller may call :func:`keep_freed_memory` for its
own. The cost is that the process keeps its peak heap after the peak, instead of returning it to
the system. Other C libraries (musl, macOS) have no such thresholds, and the call does nothing
there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

from ncsim.errors import is_integer

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 2**30
"""Blocks below this come from the heap; larger ones are mapped on their own."""

FALLBACK_MMAP_THRESHOLD_BYTES = 2**25
"""The largest mmap threshold older glibc releases accept (HEAP_MAX_SIZE / 2 on 64-bit); taken
when the larger one is refused."""

TRIM_THRESHOLD_BYTES = 2**30
"""Free memory at the top of the heap kept for reuse, instead of being returned to the system."""

_taken_mmap_threshold = 0


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc, else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name is not None else None


@functools.cache
def _mallopt():
    """glibc's ``mallopt``, or None when the process does not run on glibc."""
    libc = _glibc()
    if libc is None:
        return None
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD_BYTES,
                      trim_threshold: int = TRIM_THRESHOLD_BYTES) -> bool:
    """Serve blocks below ``mmap_threshold`` bytes from the heap, and keep up to
    ``trim_threshold`` bytes of free heap, for the rest of the process (glibc only).

    A glibc that refuses ``mmap_threshold`` (older ones stop at 32 MiB) gets
    :data:`FALLBACK_MMAP_THRESHOLD_BYTES`. Returns whether both settings took effect; False
    on other C libraries. Both must be positive and fit a C int.
    """
    global _taken_mmap_threshold
    for name, value in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if not (is_integer(value) and 0 < value < 2**31):
            raise ValueError(f"{name} must be a byte count in (0, 2**31), got {value} (an "
                             "integer)")
    mallopt = _mallopt()
    if mallopt is None:
        return False
    trimmed = bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    for threshold in (mmap_threshold, min(mmap_threshold, FALLBACK_MMAP_THRESHOLD_BYTES)):
        if mallopt(_M_MMAP_THRESHOLD, threshold):
            _taken_mmap_threshold = threshold
            break
    return trimmed and _taken_mmap_threshold > 0


def kept() -> bool:
    """Whether :func:`keep_freed_memory` took effect in this process (benchmark records)."""
    return _taken_mmap_threshold > 0


def mmap_threshold() -> int:
    """The mmap threshold :func:`keep_freed_memory` set in this process, in bytes (0: none)."""
    return _taken_mmap_threshold


def release_freed_memory() -> bool:
    """Give the heap's free memory back to the system now (glibc ``malloc_trim(0)``: the free
    top of the heap and the free pages inside it), whatever :func:`keep_freed_memory` set.
    Returns whether it ran (False on other C libraries). Used before a memory measurement, so
    that memory freed by earlier work does not hide the next block's growth."""
    if _mallopt() is None:
        return False
    trim = _glibc().malloc_trim
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    trim(0)
    return True
