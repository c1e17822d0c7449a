"""Which state a batch of one-layer UFM runs is integrated in (``SolverSpec.reduction``)."""

from __future__ import annotations

import functools

from ncsim.models.classmeans import class_means_applies, class_means_cheaper
from ncsim.models.gram import use_gram
from ncsim.spec import ModelSpec

FORMS = ("none", "gram", "classes")


@functools.lru_cache(maxsize=256)  # a pure function of a frozen model and a name
def state_form(model: ModelSpec, reduction: str) -> str:
    """The state form of ``model`` runs under ``reduction``: "none" (parameters H, W, b),
    "gram" (Z = W H, W W^T, H^T H; cost independent of d) or "classes" (class means and the
    deviation propagator; one-layer MSE only, cost independent of n).

    "auto" takes gram where its state is smaller than the parameters' and d >= N + K,
    else classes for the one-layer MSE UFM where it needs fewer multiply-adds (4 d + 3 K < 3 N),
    else none. An explicit form is taken as asked (``RunSpec.validate`` checks it applies).
    """
    if reduction in FORMS:
        return reduction
    if use_gram(model, "auto"):
        return "gram"
    if class_means_applies(model) and class_means_cheaper(model):
        return "classes"
    return "none"
