"""Tiny datasets shared by the training tests."""

from __future__ import annotations

import numpy as np
import torch

from ncsim.validate.data import Dataset


def gaussian_dataset(n_per_class: int = 4, classes: int = 3, dim: int = 6,
                     seed: int = 0) -> Dataset:
    """classes x n_per_class Gaussian samples in ``dim`` inputs, class c shifted by 2 e_c; no
    test set. x: (N, dim) float32, y: (N,) class-major."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    x = rng.normal(size=(y.size, dim)) + 2.0 * np.eye(classes, dim)[y]
    return Dataset("tiny", torch.tensor(x, dtype=torch.float32), torch.tensor(y),
                   torch.zeros(0, dim), torch.zeros(0, dtype=torch.long), classes)
