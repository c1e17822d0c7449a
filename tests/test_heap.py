"""The process keeps its freed heap (ncsim.heap): large blocks are reused, not paged in again."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from ncsim import heap

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _huge_pages_always() -> bool:
    """Whether transparent huge pages back every large mapping (then a 64 MiB block faults
    ~32 times, not 16,384, and the fault counts below say nothing)."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as fh:
            return "[always]" in fh.read()
    except OSError:
        return False

# Minor page faults of five 64 MiB tensors allocated, filled and freed one after the other,
# after warm-up ones until two in a row come without faults (at most 20). With the setting the
# heap took 2 to 5 blocks to settle over 15 processes, and a fault-free block could come
# before it had (16384, 0, 16384, 16384, 16384, 0, 0, ...). Without the setting glibc maps and
# unmaps each (16,384 faults apiece).
_FAULTS = """
import resource, sys, torch
from ncsim.heap import keep_freed_memory, mmap_threshold
if sys.argv[1] == "keep":
    assert keep_freed_memory()
    if mmap_threshold() < 2**27:  # an older glibc: 64 MiB blocks are still mapped afresh
        print(-1)
        sys.exit()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
quiet = 0
for _ in range(20):
    start = faults()
    torch.ones(2**23, dtype=torch.float64)
    quiet = quiet + 1 if faults() - start < 1_000 else 0
    if quiet == 2:
        break
before = faults()
for _ in range(5):
    x = torch.ones(2**23, dtype=torch.float64)
    del x
print(faults() - before)
"""


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True,
                          text=True, check=True, timeout=120)
    return int(done.stdout.strip())


@pytest.mark.skipif(not GLIBC, reason="the heap thresholds are glibc's")
@pytest.mark.skipif(_huge_pages_always(), reason="huge pages hide the faults of a fresh block")
def test_freed_blocks_are_reused_without_page_faults():
    kept = _faults("keep")
    if kept < 0:
        pytest.skip("this glibc caps the mmap threshold below the 64 MiB blocks")
    assert _faults("default") > 5 * 10_000
    assert kept < 1_000


@pytest.mark.skipif(not GLIBC, reason="the heap thresholds are glibc's")
def test_keep_freed_memory_reports_that_it_took_effect():
    assert heap.keep_freed_memory()
    assert heap.kept()
    assert heap.mmap_threshold() in (heap.MMAP_THRESHOLD_BYTES,
                                     heap.FALLBACK_MMAP_THRESHOLD_BYTES)


def test_a_refused_threshold_falls_back_to_older_glibcs_cap(monkeypatch):
    """An older glibc refuses mmap thresholds above 32 MiB; the setting then takes 32 MiB."""
    calls = []

    def older_glibc(param, value):
        calls.append((param, value))
        return int(param != heap._M_MMAP_THRESHOLD or value <= 2**25)

    monkeypatch.setattr(heap, "_mallopt", lambda: older_glibc)
    monkeypatch.setattr(heap, "_taken_mmap_threshold", 0)
    assert heap.keep_freed_memory()
    assert heap.mmap_threshold() == heap.FALLBACK_MMAP_THRESHOLD_BYTES
    assert calls == [(heap._M_TRIM_THRESHOLD, heap.TRIM_THRESHOLD_BYTES),
                     (heap._M_MMAP_THRESHOLD, heap.MMAP_THRESHOLD_BYTES),
                     (heap._M_MMAP_THRESHOLD, heap.FALLBACK_MMAP_THRESHOLD_BYTES)]


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(heap, "_mallopt", lambda: None)
    monkeypatch.setattr(heap, "_taken_mmap_threshold", 0)
    assert not heap.keep_freed_memory()
    assert not heap.kept()


@pytest.mark.parametrize("kwargs", [{"mmap_threshold": 0}, {"trim_threshold": -1},
                                    {"mmap_threshold": 2**31}])
def test_thresholds_outside_a_c_int_are_rejected(kwargs):
    with pytest.raises(ValueError, match="byte count"):
        heap.keep_freed_memory(**kwargs)


def test_command_line_keeps_freed_memory(monkeypatch):
    import ncsim.cli

    calls = []
    monkeypatch.setattr(ncsim.heap, "keep_freed_memory", lambda: calls.append(True) or True)
    monkeypatch.setattr(ncsim.cli, "cli", lambda: None)
    ncsim.cli.main()
    assert calls == [True]


def test_release_gives_freed_heap_back_and_is_a_no_op_elsewhere(monkeypatch):
    """release_freed_memory runs glibc's malloc_trim (the peak-memory measurement of the
    benchmarks relies on it); other C libraries: nothing, and it says so."""
    assert heap.release_freed_memory() is GLIBC
    monkeypatch.setattr(heap, "_mallopt", lambda: None)
    assert heap.release_freed_memory() is False
