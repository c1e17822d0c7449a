"""Test-session settings: one torch thread.

The test problems are small, so their cost is per-operation overhead; a second intra-op
thread only adds contention on a shared 2-core machine (10-40x slower under load).
"""

import torch

torch.set_num_threads(1)
