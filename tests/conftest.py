"""Test-session settings: one thread for torch and the BLAS libraries, and freed heap kept
(as the command line does: :mod:`ncsim.heap`).

The test problems are small, so their cost is per-operation overhead; a second intra-op
thread only adds contention on a shared 2-core machine (10-40x slower under load).
"""

from ncsim.heap import keep_freed_memory
from ncsim.threads import set_threads

set_threads(1)
keep_freed_memory()
