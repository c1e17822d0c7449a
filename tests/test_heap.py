"""The process keeps its freed heap (ncsim.heap): large blocks are reused, not paged in again."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from ncsim import heap

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Minor page faults of five 64 MiB tensors allocated, filled and freed one after the other,
# after four warm-up ones (the heap takes three to settle). Without the setting glibc maps and
# unmaps each (16,384 faults apiece).
_FAULTS = """
import resource, sys, torch
from ncsim.heap import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
for _ in range(4):
    torch.ones(2**23, dtype=torch.float64)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    x = torch.ones(2**23, dtype=torch.float64)
    del x
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True,
                          text=True, check=True, timeout=120)
    return int(done.stdout.strip())


@pytest.mark.skipif(not GLIBC, reason="the heap thresholds are glibc's")
def test_freed_blocks_are_reused_without_page_faults():
    assert _faults("default") > 5 * 10_000
    assert _faults("keep") < 1_000


@pytest.mark.skipif(not GLIBC, reason="the heap thresholds are glibc's")
def test_keep_freed_memory_reports_that_it_took_effect():
    assert heap.keep_freed_memory()
    assert heap.kept()


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
