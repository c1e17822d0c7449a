"""ncsim: simulate the onset of neural collapse.

Public API: the run specification (:mod:`ncsim.spec`), the batched simulator
(:func:`simulate`), NC metrics (:mod:`ncsim.metrics`) and onset detection (:mod:`ncsim.onset`).
"""

from __future__ import annotations

__version__ = "0.1.0"

from ncsim.errors import InputError
from ncsim.spec import (
    InitSpec,
    ModelSpec,
    OnsetSpec,
    Regularization,
    RunSpec,
    SolverSpec,
    TimeScale,
)

__all__ = [
    "InitSpec",
    "InputError",
    "ModelSpec",
    "OnsetSpec",
    "Regularization",
    "RunSpec",
    "SolverSpec",
    "TimeScale",
    "__version__",
]
