"""Mutation probes of the validation datasets and networks: the test subset's seed, the
CIFAR-10 pixel range check, the class count taken from both splits, labels that are negative
or not integers (IDX and CIFAR files), and the small CNN's width and smallest input."""

from __future__ import annotations

import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from ncsim.errors import InputError
from ncsim.validate.data import balanced_subset, load_dataset
from ncsim.validate.networks import MLP, build_network


def _idx(array, code: int = 0x08, dtype: str = "u1") -> bytes:
    """IDX bytes of ``array`` with element type ``code`` stored as ``dtype`` (big-endian)."""
    array = np.asarray(array)
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def _mnist_folder(root: Path, train_labels, test_labels, code: int = 0x08,
                  dtype: str = "u1") -> Path:
    """A tiny MNIST-style folder of 2 x 3 pixel images with the given labels."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n_tr, n_te = len(train_labels), len(test_labels)
    (root / "train-images-idx3-ubyte").write_bytes(_idx(rng.integers(0, 256, (n_tr, 2, 3))))
    (root / "train-labels-idx1-ubyte").write_bytes(_idx(train_labels, code, dtype))
    (root / "t10k-images-idx3-ubyte").write_bytes(_idx(rng.integers(0, 256, (n_te, 2, 3))))
    (root / "t10k-labels-idx1-ubyte").write_bytes(_idx(test_labels))
    return root


def _cifar_folder(root: Path, pixel: int = 7, label: int = 1) -> Path:
    """CIFAR-10 python batches of 2 images each; the first image of data_batch_1 gets one pixel
    of value ``pixel`` and the label ``label``."""
    root.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        rows = np.zeros((2, 3 * 32 * 32), dtype=np.int64)
        labels = [0, 1]
        if name == "data_batch_1":
            rows[0, 0] = pixel
            labels = [label, 1]
        with open(root / name, "wb") as handle:
            pickle.dump({b"data": rows, b"labels": labels}, handle, protocol=2)
    return root


def test_test_subset_is_drawn_with_seed_plus_one():
    """The test subset is balanced_subset(y_test, n, seed + 1): rows of the full test set."""
    full = load_dataset("digits", normalize=False)
    y_full = full.y_test.numpy()
    sub = load_dataset("digits", test_per_class=3, seed=2, normalize=False)
    rows = balanced_subset(y_full, 3, 3)
    assert sub.y_test.tolist() == y_full[rows].tolist()
    assert np.array_equal(sub.x_test.numpy(), full.x_test.numpy()[rows])
    assert not np.array_equal(rows, balanced_subset(y_full, 3, 2))


def test_cifar_pixel_values_above_255_are_refused(tmp_path):
    """A CIFAR batch pixel of 300 is an InputError, not a silent uint8 wrap to 44."""
    _cifar_folder(tmp_path, pixel=300)
    with pytest.raises(InputError, match=r"data_batch_1 is not a CIFAR-10 python batch \(its "
                                         r"pixel values leave 0\.\.255\)"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_in_range_pixels_read_back(tmp_path):
    """The in-range control of the CIFAR pixel check: pixel 255 reads back as 255."""
    data = load_dataset("cifar10", root=_cifar_folder(tmp_path, pixel=255), normalize=False)
    assert data.x_train.shape == (10, 3, 32, 32) and float(data.x_train[0, 0, 0, 0]) == 255.0
    assert data.classes == 2


def test_class_count_is_one_more_than_the_largest_label_of_either_split(tmp_path):
    """classes = 1 + the largest label of either split (a class 2 seen in training only)."""
    root = _mnist_folder(tmp_path, [0, 1, 2, 0, 1, 2], [1, 0, 1])
    data = load_dataset("mnist", root=root, normalize=False)
    assert data.classes == 3
    assert data.y_test.tolist() == [1, 0, 1]


@pytest.mark.parametrize(("train_labels", "test_labels", "missing"), [
    ([0, 1, 2, 0, 1, 2], [3, 1, 0], "class 3 (K = 4"),
    ([0, 1, 3, 0, 1, 3], [0, 1, 3], "class 2 (K = 4"),
    ([2, 3, 2, 3, 2, 3], [2, 3, 2], "class 0, 1 (K = 4"),
])
def test_a_class_without_training_samples_is_refused(tmp_path, train_labels, test_labels,
                                                      missing):
    """Labels with a gap, or a class seen only in the test set, are refused at load with the
    missing classes named (training would fail at its first NC record otherwise)."""
    root = _mnist_folder(tmp_path, train_labels, test_labels)
    expected = re.escape(f"mnist training set has no sample of {missing}")
    with pytest.raises(InputError, match=expected):
        load_dataset("mnist", root=root, normalize=False)


def test_negative_idx_labels_are_refused(tmp_path):
    """A labels file (IDX type int8) holding -1 should be an InputError naming the file."""
    root = _mnist_folder(tmp_path, [0, 1, -1, 0, 1, -1], [0, 1, 0], code=0x09, dtype="i1")
    with pytest.raises(InputError, match="train-labels-idx1-ubyte"):
        load_dataset("mnist", root=root)


def test_float_idx_labels_are_refused(tmp_path):
    """A labels file of IDX type float32 (0x0D) should be an InputError naming the file."""
    root = _mnist_folder(tmp_path, [0, 0.5, 1.7, 0, 1, 2], [0, 1, 0], code=0x0D, dtype=">f4")
    with pytest.raises(InputError, match="train-labels-idx1-ubyte"):
        load_dataset("mnist", root=root)


def test_negative_cifar_labels_are_refused(tmp_path):
    """A CIFAR batch with label -1 should be an InputError naming the batch."""
    _cifar_folder(tmp_path, label=-1)
    with pytest.raises(InputError, match="data_batch_1"):
        load_dataset("cifar10", root=tmp_path)


@pytest.mark.parametrize("kwargs, word", [({"width": 0}, "width"), ({"depth": 0}, "depth")])
def test_mlp_refuses_zero_width_and_depth(kwargs, word):
    """MLP width or depth 0 is an InputError, not a network with 0-d features."""
    with pytest.raises(InputError, match=rf"MLP {word} must be an integer >= 1, got 0"):
        MLP(64, 10, **kwargs)


def test_cnn_refuses_zero_width():
    """build_network('cnn', ..., width=0) should be an InputError like the MLP's."""
    with pytest.raises(InputError, match="width"):
        build_network("cnn", (1, 8, 8), 10, width=0)


def test_cnn_refuses_inputs_too_small_for_two_pools():
    """A (1, 3) signal cannot pass two 2-wide max-pools: an InputError naming the shape."""
    with pytest.raises(InputError, match=r"\(1, 3\)"):
        build_network("cnn", (1, 3), 10)
