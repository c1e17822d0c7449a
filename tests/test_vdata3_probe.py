"""Mutation probes (third pass) of the validation datasets: IDX headers and byte orders written
by hand, gzip recognition and damage, the IDX file names tried and their order, CIFAR-10 batch
checks (pixels, label shapes, empty batches, Python 2 pickles, every unpickling error), balanced
subsets against a naive reference, normalisation and the Dataset container."""

from __future__ import annotations

import gzip
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ncsim.errors import InputError
from ncsim.validate.data import Dataset, balanced_subset, load_dataset, read_cifar10, read_idx


def _idx(array, code: int = 0x08, dtype: str = "u1") -> bytes:
    """IDX bytes of ``array``: magic 0 0 ``code`` ndim, big-endian dims, data as ``dtype``."""
    array = np.asarray(array)
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def _mnist_folder(root: Path, train_labels=(0, 1, 0, 1), test_labels=(1, 0),
                  label_bytes: bytes | None = None, suffix: str = "") -> Path:
    """A tiny MNIST-style folder of 2 x 3 pixel images (pixel value = 10 * row index)."""
    root.mkdir(parents=True, exist_ok=True)
    for split, labels in (("train", train_labels), ("t10k", test_labels)):
        images = np.repeat(10 * np.arange(len(labels)), 6).reshape(-1, 2, 3)
        (root / f"{split}-images-idx3-ubyte{suffix}").write_bytes(_idx(images))
        data = label_bytes if (label_bytes is not None and split == "train") else _idx(labels)
        (root / f"{split}-labels-idx1-ubyte{suffix}").write_bytes(data)
    return root


def _cifar_batches(root: Path, rows: int = 2, **override) -> Path:
    """CIFAR-10 python batches of ``rows`` zero images, labels 0, 1, 0, ...; ``override`` maps
    a batch name to its dict (or raw bytes)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        content = override.get(name, {b"data": np.zeros((rows, 3072), np.uint8),
                                      b"labels": [i % 2 for i in range(rows)]})
        if not isinstance(content, bytes):
            content = pickle.dumps(content, protocol=2)
        (root / name).write_bytes(content)
    return root


# ----------------------------------------------------------------------------- read_idx
def test_a_plain_file_starting_with_the_first_gzip_byte_only_is_not_an_idx_file(tmp_path):
    """Gzip is recognised by both magic bytes: 1f 00 ... is 'not an IDX file', not bad gzip."""
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(b"\x1f\x00\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(InputError, match=re.escape(f"{path} is not an IDX file; fix it")):
        read_idx(path, "fix it")


@pytest.mark.parametrize(("name", "mangle", "reason"), [
    ("deflate", lambda g: g[:10] + b"\xff" * (len(g) - 18) + g[-8:], "Error -3"),
    ("crc", lambda g: g[:-8] + b"\0\0\0\0" + g[-4:], "CRC check failed"),
])
def test_a_gzip_stream_with_damaged_content_is_an_input_error(tmp_path, name, mangle, reason):
    """Damaged deflate data (zlib.error) and a wrong CRC (BadGzipFile) name the file."""
    path = tmp_path / f"{name}.gz"
    path.write_bytes(mangle(gzip.compress(_idx(np.arange(40).reshape(5, 8)))))
    with pytest.raises(InputError, match=re.escape(f"{path} is a damaged or truncated gzip file (")
                       + f".*{reason}.*" + re.escape("); replace it with an intact copy; h")):
        read_idx(path, "h")


def test_idx_of_zero_dimensions_is_a_scalar_and_four_bytes_are_truncated(tmp_path):
    """A 0-d IDX header (4 bytes) holds one element; without it the file is truncated."""
    path = tmp_path / "scalar"
    path.write_bytes(b"\x00\x00\x08\x00\x07")
    out = read_idx(path)
    assert out.shape == () and int(out) == 7
    path.write_bytes(b"\x00\x00\x08\x00")
    with pytest.raises(InputError, match=re.escape(f"{path}: IDX file is truncated")):
        read_idx(path)


def test_the_second_magic_byte_must_be_zero(tmp_path):
    """Magic 00 01 08 01 is refused as 'not an IDX file'."""
    path = tmp_path / "bad"
    path.write_bytes(b"\x00\x01\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(InputError, match=re.escape(f"{path} is not an IDX file")):
        read_idx(path)


@pytest.mark.parametrize(("code", "stored", "values"), [
    (0x09, ">i1", [-128, -3, 0, 127]),
    (0x0B, ">i2", [-30000, -2, 1, 258]),
    (0x0C, ">i4", [-2_000_000_000, -1, 1, 16_909_060]),
    (0x0D, ">f4", [-1.5, 0.25, 3.0, 1e30]),
    (0x0E, ">f8", [-1e300, 0.1, 2.5, 1e-300]),
])
def test_idx_element_types_are_signed_and_big_endian(tmp_path, code, stored, values):
    """Each IDX element type is read with its sign and big-endian byte order, exactly."""
    path = tmp_path / "a"
    path.write_bytes(bytes([0, 0, code, 2, 0, 0, 0, 2, 0, 0, 0, 2])
                     + np.asarray(values, dtype=stored).tobytes())
    out = read_idx(path)
    assert out.shape == (2, 2)
    assert out.ravel().tolist() == np.asarray(values, dtype=stored).tolist()


def test_an_idx_header_with_a_zero_length_dimension_reads_as_an_empty_array(tmp_path):
    """A header of shape (2, 0, 3) and no data bytes is an empty array of that shape."""
    path = tmp_path / "empty"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 0, 3))
    out = read_idx(path)
    assert out.shape == (2, 0, 3) and out.dtype == np.uint8


def test_idx_dimensions_are_read_in_header_order(tmp_path):
    """Dims 2 then 3: element (i, j) is byte 3 i + j of the data."""
    path = tmp_path / "a"
    path.write_bytes(bytes([0, 0, 8, 2]) + struct.pack(">2I", 2, 3) + bytes(range(6)))
    assert read_idx(path).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_idx_trailing_bytes_are_refused_with_the_counts(tmp_path):
    """One data byte more than the header's shape: the exact 'holds more data' message."""
    path = tmp_path / "long"
    path.write_bytes(bytes([0, 0, 8, 2]) + struct.pack(">2I", 2, 3) + bytes(7))
    with pytest.raises(InputError, match=re.escape(
            f"{path}: IDX file holds more data than its header's shape (2, 3) (7 data bytes "
            "for 6); h")):
        read_idx(path, "h")


# ----------------------------------------------------------------------------- IDX folders
def test_the_plain_idx_file_is_preferred_over_its_gz_twin(tmp_path):
    """With both X and X.gz present the plain file is read."""
    root = _mnist_folder(tmp_path / "m")
    other = _idx([1, 1, 1, 1])
    (root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(other))
    data = load_dataset("mnist", root=root, normalize=False)
    assert data.y_train.tolist() == [0, 1, 0, 1]


def test_gzipped_idx_files_named_with_a_dot_before_idx_are_found(tmp_path):
    """train-images.idx3-ubyte.gz (the fourth spelling tried) is read."""
    root = tmp_path / "m"
    _mnist_folder(root, suffix=".gz")
    for path in list(root.iterdir()):
        new = root / path.name.replace("-idx", ".idx")
        new.write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    data = load_dataset("mnist", root=root, normalize=False)
    assert data.y_train.tolist() == [0, 1, 0, 1]
    assert data.x_test[:, 0, 0, 0].tolist() == [0.0, 10.0]


def test_a_missing_idx_file_and_folder_have_exact_messages(tmp_path):
    """The missing file is named as stem[.gz] in its folder; a missing folder is named."""
    root = _mnist_folder(tmp_path / "m")
    (root / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(InputError, match=re.escape(
            f"missing t10k-labels-idx1-ubyte[.gz] in {root}; MNIST needs the four IDX files")):
        load_dataset("mnist", root=root)
    gone = tmp_path / "nope"
    with pytest.raises(InputError, match=re.escape(
            f"dataset folder {gone} does not exist; MNIST needs")):
        load_dataset("mnist", root=gone)


def test_a_folder_in_place_of_an_idx_file_cannot_be_read(tmp_path):
    """A directory named train-images-idx3-ubyte is an InputError 'cannot read' naming it."""
    root = _mnist_folder(tmp_path / "m")
    (root / "train-images-idx3-ubyte").unlink()
    (root / "train-images-idx3-ubyte").mkdir()
    (root / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(_idx(np.zeros((4, 2, 3)))))
    with pytest.raises(InputError, match=re.escape(
            f"cannot read {root / 'train-images-idx3-ubyte'} (")):
        load_dataset("mnist", root=root)


def test_two_dimensional_idx_labels_are_refused_with_their_shape(tmp_path):
    """A labels file of shape (2, 2) is 'not labels (N,)', naming file and shape."""
    root = _mnist_folder(tmp_path / "m", label_bytes=_idx(np.zeros((2, 2))))
    with pytest.raises(InputError, match=re.escape(
            f"{root / 'train-labels-idx1-ubyte'} holds an array of shape (2, 2), not labels "
            "(N,)")):
        load_dataset("mnist", root=root)


@pytest.mark.parametrize(("code", "dtype"), [(0x09, "i1"), (0x0B, ">i2"), (0x0C, ">i4")])
def test_signed_idx_labels_that_are_not_negative_load_as_int64(tmp_path, code, dtype):
    """Labels of the signed IDX types load (as int64) when none is negative."""
    root = _mnist_folder(tmp_path / "m", label_bytes=_idx([1, 0, 1, 0], code, dtype))
    data = load_dataset("mnist", root=root, normalize=False)
    assert data.y_train.dtype == torch.int64 and data.y_train.tolist() == [1, 0, 1, 0]
    assert data.y_test.dtype == torch.int64 and data.classes == 2


def test_image_and_label_counts_must_agree(tmp_path):
    """4 training images with 3 labels: the exact count message."""
    root = _mnist_folder(tmp_path / "m", label_bytes=_idx([0, 1, 0]))
    with pytest.raises(InputError, match=re.escape(
            f"{root}: train-images holds 4 images but train-labels holds 3 labels")):
        load_dataset("mnist", root=root)


# ----------------------------------------------------------------------------- CIFAR-10
def _negative_pixel_rows() -> np.ndarray:
    rows = np.zeros((2, 3072), np.int64)
    rows[1, 5] = -1
    return rows


@pytest.mark.parametrize(("batch", "data", "labels", "reason"), [
    # rows of 3071 pixels: dtype and shape in the message
    ("data_batch_2", np.zeros((2, 3071), np.uint8), [0, 1],
     " is not a CIFAR-10 python batch (its data is uint8 of shape (2, 3071), not integer rows "
     "of 3072 pixels)"),
    # a pixel of -1 is refused, not wrapped to 255
    ("test_batch", _negative_pixel_rows(), [0, 1],
     " is not a CIFAR-10 python batch (its pixel values leave 0..255)"),
    # labels [[0], [1]] (2-D)
    ("data_batch_3", np.zeros((2, 3072), np.uint8), [[0], [1]],
     " is not a CIFAR-10 python batch (its labels are not a list of integers)"),
    # 2 images with 3 labels
    ("data_batch_4", np.zeros((2, 3072), np.uint8), [0, 1, 0], " holds 2 images but 3 labels"),
])
def test_damaged_cifar_batches_are_refused_naming_the_batch(tmp_path, batch, data, labels,
                                                           reason):
    """Rows of the wrong width, negative pixels, a label column and unequal image and label
    counts are each refused with the exact message naming the batch."""
    root = _cifar_batches(tmp_path, **{batch: {b"data": data, b"labels": labels}})
    with pytest.raises(InputError, match=re.escape(f"{root / batch}{reason}")):
        read_cifar10(root)


def test_an_empty_cifar_batch_adds_nothing(tmp_path):
    """A batch of 0 images and 0 integer labels is valid and adds no rows."""
    empty = {b"data": np.zeros((0, 3072), np.uint8), b"labels": np.zeros(0, np.int64)}
    root = _cifar_batches(tmp_path, data_batch_5=empty)
    x_tr, y_tr, x_te, y_te = read_cifar10(root)
    assert x_tr.shape == (8, 3, 32, 32) and y_tr.tolist() == [0, 1] * 4
    assert x_te.shape == (2, 3, 32, 32) and y_te.dtype == np.int64


def test_a_python2_cifar_batch_with_byte_string_keys_is_read(tmp_path):
    """The original batches are Python 2 pickles (str keys stored as byte strings): read."""
    content = pickle.dumps({"data": [[7] * 3072, [9] * 3072], "labels": [1, 0]}, protocol=2)
    for key in (b"data", b"labels"):  # BINUNICODE key -> Python 2 SHORT_BINSTRING
        unicode_op = b"X" + struct.pack("<I", len(key)) + key
        assert content.count(unicode_op) == 1
        content = content.replace(unicode_op, b"U" + bytes([len(key)]) + key)
    root = _cifar_batches(tmp_path, data_batch_1=content)
    x_tr, y_tr, _, _ = read_cifar10(root)
    assert y_tr[:2].tolist() == [1, 0]
    assert int(x_tr[0].min()) == 7 and int(x_tr[1].max()) == 9


_BAD_PICKLES = {
    "EOFError": b"\x80\x02}q\x00(",
    "UnpicklingError": b"\xff\xfe",
    "ValueError": b"\x80\x02cbuiltins\nchr\nJ\xff\xff\xff\x7f\x85R.",
    "OverflowError": b"\x80\x02cbuiltins\nchr\n\x8a\x06\x00\x00\x00\x00\x00\x01\x85R.",
    "IndexError": b"\x80\x02c_operator\ngetitem\n]K\x00\x86R.",
    "KeyError": b"\x80\x02c_operator\ngetitem\n}K\x00\x86R.",
    "ImportError": b"\x80\x02cnosuchmod\nX\n.",
    "AttributeError": b"\x80\x02cbuiltins\nnosuch\n.",
    "TypeError": b"I1\nI2\n\x85R.",
}


@pytest.mark.parametrize("kind", sorted(_BAD_PICKLES))
def test_every_unpickling_failure_is_an_input_error_naming_the_batch(tmp_path, kind):
    """Each error class pickle.load may raise on a foreign file becomes the InputError."""
    root = _cifar_batches(tmp_path, data_batch_2=_BAD_PICKLES[kind])
    with pytest.raises(InputError, match=re.escape(
            f"{root / 'data_batch_2'} is not a readable CIFAR-10 python batch (unpickling "
            "failed: ")):
        read_cifar10(root)


def test_the_cifar_subfolder_is_preferred_over_batches_in_root(tmp_path):
    """With batches in both root and root/cifar-10-batches-py, the subfolder's are read."""
    _cifar_batches(tmp_path, rows=2)
    _cifar_batches(tmp_path / "cifar-10-batches-py", rows=3)
    x_tr, _, x_te, _ = read_cifar10(tmp_path)
    assert x_tr.shape[0] == 15 and x_te.shape[0] == 3


# ----------------------------------------------------------------------------- subsets
def _naive_subset(y, per_class, seed):
    """Reference: per sorted class, the first per_class of a seeded permutation, sorted."""
    gen = np.random.default_rng(seed)
    out = []
    for c in sorted(set(y.tolist())):
        idx = [i for i in range(len(y)) if y[i] == c]
        chosen = gen.permutation(np.asarray(idx))[:per_class]
        out += sorted(int(i) for i in chosen)
    return out


def test_balanced_subset_matches_a_naive_reference_and_sorts_within_a_class():
    """Indices are class-major, sorted within each class, drawn by one seeded generator."""
    y = np.array([2, 0, 1, 2, 2, 0, 1, 1, 0, 2, 0, 1, 2, 0])
    for seed in range(5):
        out = balanced_subset(y, 3, seed)
        assert out.tolist() == _naive_subset(y, 3, seed)
        for c in range(3):
            part = out[3 * c:3 * c + 3]
            assert (y[part] == c).all() and part.tolist() == sorted(part.tolist())


def test_a_class_of_exactly_per_class_samples_is_kept_whole():
    """per_class equal to the smallest class count keeps that class entirely."""
    y = np.array([0, 0, 1, 1, 1, 0])
    out = balanced_subset(y, 3, 0)
    assert out.tolist() == [0, 1, 5, 2, 3, 4]


def test_a_short_class_message_names_the_first_short_class_and_the_smallest_count():
    """Counts 2, 1, 5 asked 3: class 0 is named, the advice is the minimum 1."""
    y = np.array([0, 0, 1, 2, 2, 2, 2, 2])
    with pytest.raises(InputError, match=re.escape(
            "tr: class 0 has 2 samples, fewer than n = 3; ask for at most 1 per class "
            "(the smallest class)")):
        balanced_subset(y, 3, 0, "n", "tr")


# ----------------------------------------------------------------------------- normalisation
def test_a_channel_of_tiny_spread_is_scaled_to_unit_std(tmp_path):
    """The std floor is tiny: a channel of std 1e-5 is still scaled to std 1."""
    root = tmp_path / "m"
    root.mkdir()
    images = np.zeros((4, 2, 3), np.float64)
    images[:, 0, 0] = [1e-5, -1e-5, 1e-5, -1e-5]
    (root / "train-images-idx3-ubyte").write_bytes(_idx(images, 0x0E, ">f8"))
    (root / "train-labels-idx1-ubyte").write_bytes(_idx([0, 1, 0, 1]))
    (root / "t10k-images-idx3-ubyte").write_bytes(_idx(images[:2], 0x0E, ">f8"))
    (root / "t10k-labels-idx1-ubyte").write_bytes(_idx([0, 1]))
    data = load_dataset("mnist", root=root)
    x = data.x_train.double()
    assert float(x.std()) == pytest.approx(1.0, rel=1e-4)
    assert float(data.x_test.double().std()) == pytest.approx(float(x[:2].std()), rel=1e-6)


def test_the_test_set_is_normalised_with_the_training_statistics(tmp_path):
    """x_test = (raw - mean_train) / std_train, by a numpy reference."""
    root = _mnist_folder(tmp_path / "m", train_labels=(0, 1, 0, 1, 1), test_labels=(1, 0, 1))
    data = load_dataset("mnist", root=root)
    raw_tr = np.repeat(10.0 * np.arange(5), 6)
    raw_te = np.repeat(10.0 * np.arange(3), 6)
    mean, std = raw_tr.mean(), raw_tr.std(ddof=1)
    assert np.allclose(data.x_test.numpy().ravel(), (raw_te - mean) / std, atol=1e-6)
    assert np.allclose(data.x_train.numpy().ravel(), (raw_tr - mean) / std, atol=1e-6)


# ----------------------------------------------------------------------------- container
def test_dataset_to_keeps_every_field_in_place():
    """Dataset.to copies each tensor to its own field and keeps name and classes."""
    d = Dataset("n", torch.zeros(3, 1, 2), torch.tensor([0, 1, 2]), torch.ones(2, 1, 5),
                torch.tensor([4, 5]), 7)
    out = d.to("cpu")
    assert out.name == "n" and out.classes == 7
    assert out.x_train.shape == (3, 1, 2) and out.y_train.tolist() == [0, 1, 2]
    assert out.x_test.shape == (2, 1, 5) and out.y_test.tolist() == [4, 5]
    assert out.input_shape == (1, 2)


def test_an_unpickling_error_of_several_lines_is_cut_to_its_first(tmp_path):
    """getattr(1, 'a\\nb') in a batch: the message keeps only 'a' of the reason, one line."""
    content = b"\x80\x02cbuiltins\ngetattr\nK\x01X\x03\x00\x00\x00a\nb\x86R."
    root = _cifar_batches(tmp_path, data_batch_1=content)
    with pytest.raises(InputError) as info:
        read_cifar10(root)
    message = str(info.value)
    assert "\n" not in message
    assert "(unpickling failed: 'int' object has no attribute 'a); replace it" in message


def test_negative_idx_labels_name_the_lowest_label(tmp_path):
    """int8 labels -1 and -3: the message says 'down to -3'."""
    root = _mnist_folder(tmp_path / "m", label_bytes=_idx([0, -1, -3, 1], 0x09, "i1"))
    with pytest.raises(InputError, match=re.escape(
            f"{root / 'train-labels-idx1-ubyte'} holds negative labels (down to -3); class "
            "labels are integers >= 0; MNIST needs")):
        load_dataset("mnist", root=root)


def test_a_truncated_idx_header_names_the_bytes_needed(tmp_path):
    """3 dims need 16 header bytes: a 10-byte file says so exactly."""
    path = tmp_path / "short"
    path.write_bytes(bytes([0, 0, 8, 3]) + bytes(6))
    with pytest.raises(InputError, match=re.escape(
            f"{path}: IDX header is truncated (3 dimensions need 16 header bytes, the file has "
            "10); h")):
        read_idx(path, "h")


def test_a_gaussian_mixture_of_one_class_is_refused():
    """classes = 1 is an InputError (K >= 2), with the value."""
    with pytest.raises(InputError, match=re.escape(
            "gaussian: classes must be an integer >= 2, got 1")):
        load_dataset("gaussian", classes=1, dim=3)


def test_cifar_labels_as_an_unsigned_array_are_read(tmp_path):
    """Labels stored as a uint8 numpy array are integer labels, read as int64."""
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": np.array([1, 0], np.uint8)}
    root = _cifar_batches(tmp_path, data_batch_1=batch)
    _, y_tr, _, _ = read_cifar10(root)
    assert y_tr.dtype == np.int64 and y_tr[:2].tolist() == [1, 0]
