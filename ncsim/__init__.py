"""ncsim: simulate the onset of neural collapse.

Public API: the run specification (:mod:`ncsim.spec`), the batched simulator
(:func:`simulate`, defined in :mod:`ncsim.flow`), NC metrics (:mod:`ncsim.metrics`) and onset
detection (:mod:`ncsim.onset`).

``import ncsim`` stays light (the specification and numpy): :func:`simulate` pulls in torch and
the flow modules, so ``ncsim.simulate`` is imported the first time it is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from ncsim.flow.simulate import simulate

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
    "simulate",
]


def __getattr__(name: str) -> Any:
    """``ncsim.simulate`` on first use (it imports torch; ``import ncsim`` does not)."""
    if name == "simulate":
        from ncsim.flow import simulate

        return simulate
    raise AttributeError(f"module 'ncsim' has no attribute {name!r}")
