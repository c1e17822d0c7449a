"""Objectives and gradients of the UFM family (one-layer, deep, deep linear), batched."""

from ncsim.models.init import initial_parts, initial_state, label_modes
from ncsim.models.layout import StateLayout
from ncsim.models.ufm import Penalties, UFMObjective, labels_for, state_layout

__all__ = [
    "Penalties",
    "StateLayout",
    "UFMObjective",
    "initial_parts",
    "initial_state",
    "label_modes",
    "labels_for",
    "state_layout",
]
