"""Datasets for validation runs, as tensors (no DataLoader, no download at run time).

Available:

- ``gaussian``: synthetic Gaussian mixture: K class means drawn as random directions of norm
  ``separation``, samples = mean + N(0, I_dim) noise.
- ``digits``: scikit-learn's 8x8 digits (1797 images, K = 10); 20% of each class is held out.
- ``mnist1d``: MNIST-1D (length-40 signals, K = 10) generated offline by
  ``mnist1d.data.make_dataset`` (its ``get_dataset`` would download and is never used).
- ``fashion_mnist``: IDX files of the Debian package ``dataset-fashion-mnist``
  (/usr/share/datasets/fashion-mnist) or of a folder given with ``root``.
- ``mnist``: IDX files (``train-images-idx3-ubyte[.gz]`` ...) in a user folder ``root``.
- ``cifar10``: the CIFAR-10 python batches (``data_batch_1..5``, ``test_batch``) in ``root`` or
  ``root/cifar-10-batches-py``.

Every dataset is returned as float32 inputs of shape (N, C, *spatial) (images (N, C, H, W),
signals and vectors (N, 1, L)) and int64 labels (N,). Balanced subsets keep ``per_class``
samples of each class, chosen by a seeded permutation (deterministic). Inputs are normalised
per channel with the mean and std of the training samples kept (the subset's, not the full
set's). Gzip-compressed IDX files are recognised by their first bytes; a missing, damaged or
truncated file is an :class:`~ncsim.errors.InputError` naming it.
"""

from __future__ import annotations

import gzip
import math
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ncsim.errors import InputError, first_line, is_finite_number, is_integer, require

DATASETS = ("gaussian", "digits", "mnist1d", "fashion_mnist", "mnist", "cifar10")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
GAUSSIAN_PER_CLASS = 100  # training samples per class of the gaussian mixture by default


@dataclass
class Dataset:
    """Train and test tensors of one dataset.

    x_train : (N, C, *spatial) float32. y_train : (N,) int64 in [0, K).
    x_test : (M, C, *spatial) float32. y_test : (M,) int64.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, e.g. (1, 28, 28)."""
        return tuple(self.x_train.shape[1:])

    def to(self, device: str | torch.device) -> Dataset:
        """Copy with every tensor on ``device``."""
        return Dataset(self.name, self.x_train.to(device), self.y_train.to(device),
                       self.x_test.to(device), self.y_test.to(device), self.classes)


# ----------------------------------------------------------------------------- file readers
#: the first two bytes of every gzip stream (RFC 1952)
GZIP_MAGIC = b"\x1f\x8b"
#: the most dimensions a numpy array has (IDX headers allow 255)
NUMPY_MAX_DIMS = 64
#: the largest float32 value
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: the largest gaussian mixture separation (its inputs are float32: at most 3.4e38 in size)
SEPARATION_MAX = 1e30
#: how many missing classes an error message names
MISSING_SHOWN = 10


def _read_bytes(path: Path, hint: str) -> bytes:
    """The bytes of ``path``, decompressed when it is a gzip stream (named ``.gz`` or not).

    A file that cannot be read, or a damaged or truncated gzip stream, is an
    :class:`InputError` naming the file.
    """
    tail = f"; {hint}" if hint else ""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise InputError(f"cannot read {path} ({err.strerror or type(err).__name__})"
                         f"{tail}") from None
    if data[:2] != GZIP_MAGIC:
        require(path.suffix != ".gz", f"{path} is named .gz but is not gzip-compressed; "
                f"replace it with the original download or drop the .gz suffix{tail}")
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
        raise InputError(f"{path} is a damaged or truncated gzip file ({err}); replace it "
                         f"with an intact copy{tail}") from None


def read_idx(path: str | Path, hint: str = "") -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array of its stored shape.

    Parameters
    ----------
    path : the file; gzip streams are recognised by their first bytes (``.gz`` or not).
    hint : what to do about a bad file, appended to the error message ("" = nothing).

    Raises
    ------
    InputError : naming the file, when it cannot be read, is a damaged gzip stream, is not an
        IDX file, or its data do not match its header's shape.
    """
    path = Path(path)
    tail = f"; {hint}" if hint else ""
    data = _read_bytes(path, hint)
    require(len(data) >= 4 and data[0] == 0 and data[1] == 0, f"{path} is not an IDX file{tail}")
    kinds = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    require(data[2] in kinds, f"{path}: unknown IDX element type {data[2]:#x}{tail}")
    ndim = data[3]
    require(ndim <= NUMPY_MAX_DIMS, f"{path}: the IDX header declares {ndim} dimensions; "
            f"numpy arrays hold at most {NUMPY_MAX_DIMS}{tail}")
    start = 4 + 4 * ndim
    require(len(data) >= start, f"{path}: IDX header is truncated ({ndim} dimensions need "
            f"{start} header bytes, the file has {len(data)}){tail}")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(kinds[data[2]])
    expected = math.prod(shape) * dtype.itemsize  # Python integers: no wrap past 2^64
    require(len(data) - start >= expected, f"{path}: IDX file is truncated{tail}")
    require(len(data) - start == expected, f"{path}: IDX file holds more data than its header's "
            f"shape {shape} ({len(data) - start} data bytes for {expected}){tail}")
    return np.frombuffer(data, dtype=dtype, offset=start).reshape(shape)


def _find_idx(root: Path, stem: str, provider: str) -> Path:
    for name in (stem, f"{stem}.gz", stem.replace("-idx", ".idx"),
                 stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).exists():
            return root / name
    raise InputError(f"missing {stem}[.gz] in {root}; {provider}")


def _require_nonnegative_labels(labels: np.ndarray, source: object, hint: str) -> None:
    """Integer labels (N,) read from ``source``: an :class:`InputError` naming it when one is
    negative (class labels are 0 .. K-1)."""
    lowest = int(labels.min()) if labels.size else 0
    require(lowest >= 0, f"{source} holds negative labels (down to {lowest}); class labels are "
            f"integers >= 0; {hint}")


def _require_float32_range(images: np.ndarray, source: object, hint: str) -> None:
    """Float images read from ``source``: an :class:`InputError` naming it when a value is NaN,
    infinite or beyond float32's range (the inputs are float32 tensors)."""
    if images.dtype.kind != "f" or images.size == 0:
        return
    finite = bool(np.isfinite(images).all())
    largest = float(np.abs(images).max()) if finite else math.inf
    require(finite and largest <= FLOAT32_MAX,
            f"{source} holds images with " + ("NaN or infinite values" if not finite else
                                               f"values up to {largest:.3g}")
            + f", which float32 inputs cannot hold (at most {FLOAT32_MAX:.3g} in size); {hint}")


def _read_idx_split(root: Path, provider: str) -> tuple[np.ndarray, ...]:
    if not root.is_dir():
        raise InputError(f"dataset folder {root} does not exist; {provider}")
    out = []
    for split in ("train", "t10k"):
        image_path = _find_idx(root, f"{split}-images-idx3-ubyte", provider)
        images = read_idx(image_path, provider)
        label_path = _find_idx(root, f"{split}-labels-idx1-ubyte", provider)
        labels = read_idx(label_path, provider)
        require(images.ndim == 3, f"{image_path} holds an array of shape {images.shape}, not "
                f"images (N, rows, columns); {provider}")
        require(labels.ndim == 1, f"{label_path} holds an array of shape {labels.shape}, not "
                f"labels (N,); {provider}")
        require(labels.dtype.kind in "iu", f"{label_path} holds {labels.dtype} values, not "
                f"integer class labels; {provider}")
        _require_nonnegative_labels(labels, label_path, provider)
        _require_float32_range(images, image_path, provider)
        require(images.shape[0] == labels.shape[0],
                f"{root}: {split}-images holds {images.shape[0]} images but {split}-labels "
                f"holds {labels.shape[0]} labels; use image and label files of the same set")
        out += [images, labels]
    return tuple(out)


#: what pickle.load raises on a damaged or foreign file: its own UnpicklingError, and (the
#: pickle documentation: "not necessarily limited to") EOFError on a truncated file,
#: ValueError (e.g. text read as a protocol-0 opcode; UnicodeDecodeError is one), and
#: AttributeError, ImportError, IndexError, KeyError, TypeError and OverflowError from a
#: stream that names or calls the wrong things
CORRUPT_PICKLE_ERRORS: tuple[type[Exception], ...] = (
    pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError, IndexError,
    KeyError, TypeError, OverflowError)
CIFAR_HINT = ("CIFAR-10 needs the python batches (data_batch_1..5, test_batch) from "
              "cifar-10-python.tar.gz extracted in --data-root")
CIFAR_PIXELS = 3 * 32 * 32


def _load_pickle(path: Path) -> object:
    """Unpickle one file; an unreadable, damaged or foreign file is an :class:`InputError`
    naming it."""
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle, encoding="bytes")
    except CORRUPT_PICKLE_ERRORS as err:
        reason = first_line(err)
        raise InputError(f"{path} is not a readable CIFAR-10 python batch (unpickling "
                         f"failed: {reason}); replace it with the file of the same name "
                         f"from a fresh extract of cifar-10-python.tar.gz") from None
    except OSError as err:
        raise InputError(f"cannot read {path} ({err.strerror or type(err).__name__}); "
                         f"{CIFAR_HINT}") from None


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch -> (images (M, 3, 32, 32) uint8, labels (M,) int64)."""
    batch = _load_pickle(path)
    bad = f"{path} is not a CIFAR-10 python batch"
    require(isinstance(batch, dict) and b"data" in batch and b"labels" in batch,
            f"{bad} (a batch is a dict with the keys b'data' and b'labels'); {CIFAR_HINT}")
    try:
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch[b"labels"])
    except (ValueError, TypeError):  # ragged or odd contents
        raise InputError(f"{bad} (its data or labels are no arrays); {CIFAR_HINT}") from None
    require(data.dtype.kind in "iu" and data.ndim == 2 and data.shape[1] == CIFAR_PIXELS,
            f"{bad} (its data is {data.dtype} of shape {data.shape}, not integer rows of "
            f"{CIFAR_PIXELS} pixels); {CIFAR_HINT}")
    require(data.size == 0 or (data.min() >= 0 and data.max() <= 255),
            f"{bad} (its pixel values leave 0..255); {CIFAR_HINT}")
    require(labels.ndim == 1 and labels.dtype.kind in "iu",
            f"{bad} (its labels are not a list of integers); {CIFAR_HINT}")
    _require_nonnegative_labels(labels, path, CIFAR_HINT)
    require(data.shape[0] == labels.shape[0], f"{path} holds {data.shape[0]} images but "
            f"{labels.shape[0]} labels; {CIFAR_HINT}")
    return data.astype(np.uint8).reshape(-1, 3, 32, 32), labels.astype(np.int64)


def read_cifar10(root: str | Path) -> tuple[np.ndarray, ...]:
    """CIFAR-10 python batches -> (x_train (50000,3,32,32) uint8, y_train, x_test, y_test).

    A missing batch, a damaged one (unpickling fails) or one without integer images of 3 x 32 x 32
    pixels (values 0..255) and as many integer labels is an :class:`InputError` naming the file.
    """
    root = Path(root)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    parts = []
    for names in ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]):
        xs, ys = [], []
        for name in names:
            if not (root / name).exists():
                raise InputError(f"missing {root / name}; {CIFAR_HINT}")
            x, y = _cifar_batch(root / name)
            xs.append(x)
            ys.append(y)
        parts += [np.concatenate(xs), np.concatenate(ys)]
    return tuple(parts)


# ----------------------------------------------------------------------------- sources
def _gaussian(classes: int, dim: int, per_class: int, separation: float, seed: int):
    require(is_integer(classes) and classes >= 2,
            f"gaussian: classes must be an integer >= 2, got {classes!r}")
    require(is_integer(dim) and dim >= 1, f"gaussian: dim must be an integer >= 1, got {dim!r}")
    require(is_finite_number(separation) and 0 < separation <= SEPARATION_MAX,
            f"gaussian: separation must be a finite number > 0 and at most {SEPARATION_MAX:.0e} "
            f"(the inputs are float32), got {separation!r}")
    gen = np.random.default_rng(seed)
    means = gen.standard_normal((classes, dim))
    means *= separation / np.linalg.norm(means, axis=1, keepdims=True)
    y = np.repeat(np.arange(classes), per_class)
    x_tr = means[y] + gen.standard_normal((y.size, dim))
    x_te = means[y] + gen.standard_normal((y.size, dim))
    return x_tr[:, None, :], y, x_te[:, None, :], y.copy()


def _digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise InputError("dataset 'digits' needs scikit-learn (pip install scikit-learn)") from None
    bunch = load_digits()
    x = bunch.images.astype(np.float64)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    test = np.zeros(y.size, dtype=bool)
    for c in range(10):  # deterministic: the last 20% of each class is the test set
        idx = np.flatnonzero(y == c)
        test[idx[int(round(0.8 * idx.size)):]] = True
    return x[~test], y[~test], x[test], y[test]


def _mnist1d():
    """The standard MNIST-1D set (its generator's seed 42), made offline."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise InputError("dataset 'mnist1d' needs the package mnist1d (pip install mnist1d)") \
            from None
    args = get_dataset_args()
    args.seed = 42
    data = make_dataset(args)  # generated offline, never downloaded
    return (np.asarray(data["x"], np.float64)[:, None, :], np.asarray(data["y"], np.int64),
            np.asarray(data["x_test"], np.float64)[:, None, :],
            np.asarray(data["y_test"], np.int64))


def _idx_images(root: Path, provider: str):
    x_tr, y_tr, x_te, y_te = _read_idx_split(root, provider)
    return x_tr[:, None], y_tr.astype(np.int64), x_te[:, None], y_te.astype(np.int64)


def require_count(value: object, name: str) -> None:
    """:class:`InputError` unless ``value`` (samples per class) is None or an integer >= 1."""
    require(value is None or (is_integer(value) and value >= 1),
            f"{name} must be an integer >= 1 (samples per class) or None (keep all), got "
            f"{value!r}")


def balanced_subset(y: np.ndarray, per_class: int | None, seed: int, name: str = "per_class",
                    where: str = "") -> np.ndarray:
    """Indices of ``per_class`` samples of each class, seeded, sorted by class; all indices in
    their order when ``per_class`` is None.

    ``name`` and ``where`` (e.g. "digits training set") word the error. Raises InputError
    when a class has fewer samples than asked, naming the largest count every class has.
    """
    classes = np.unique(y)
    if per_class is None:
        return np.arange(y.size)
    require_count(per_class, name)
    require(y.size > 0, f"{where + ': ' if where else ''}there are no samples to take "
            f"{name} = {per_class} per class from; drop {name} or use a set with samples")
    counts = {c: int(np.count_nonzero(y == c)) for c in classes}
    short = [c for c in classes if counts[c] < per_class]
    if short:
        c = short[0]
        raise InputError(f"{where + ': ' if where else ''}class {c} has {counts[c]} samples, "
                         f"fewer than {name} = {per_class}; ask for at most "
                         f"{min(counts.values())} per class (the smallest class)")
    gen = np.random.default_rng(seed)
    out = []
    for c in classes:
        idx = np.flatnonzero(y == c)
        out.append(np.sort(gen.permutation(idx)[:per_class]))
    return np.concatenate(out)


def _require_every_class_trained(y_train: np.ndarray, classes: int, name: str) -> None:
    """Refuse a training set that lacks one of the classes 0..K-1 (K = 1 + the largest label).

    The NC metrics need a mean of every class, and a class without training samples gives its
    classifier row nothing to learn.
    """
    present = np.unique(y_train)  # a subset of 0..K-1: K - present.size classes are missing
    n_missing = classes - present.size
    if n_missing == 0:
        return
    candidates = np.arange(min(classes, present.size + MISSING_SHOWN))
    first = np.setdiff1d(candidates, present)[:MISSING_SHOWN]
    shown = ", ".join(map(str, first.tolist()))
    more = f" and {n_missing - first.size} more" if n_missing > first.size else ""
    raise InputError(f"{name} training set has no sample of class {shown}{more} (K = {classes}: "
                     "1 + the largest label of either split); every class 0..K-1 needs "
                     "training samples for the NC metrics: number the classes 0..K-1 without "
                     "gaps")


def load_dataset(
    name: str,
    per_class: int | None = None,
    test_per_class: int | None = None,
    seed: int = 0,
    root: str | Path | None = None,
    normalize: bool = True,
    classes: int = 10,
    dim: int = 32,
    separation: float = 3.0,
) -> Dataset:
    """Load a dataset as tensors.

    Parameters
    ----------
    name : one of ``DATASETS``.
    per_class : training samples per class (balanced subset); None keeps all (gaussian: 100).
    test_per_class : test samples per class; None keeps all.
    seed : seed of the subset choice and of the ``gaussian`` mixture (MNIST-1D is always the
        standard set, made with its generator's seed 42; ``seed`` picks its subset).
    root : folder of the IDX / CIFAR files (mnist, cifar10; fashion_mnist defaults to the
        Debian package folder).
    normalize : standardise each channel with the mean and std (unbiased) of the training
        samples kept (the subset, when ``per_class`` is given); the test set gets the same.
    classes, dim, separation : K, dimension and mean norm of the ``gaussian`` mixture.
    """
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    require(is_integer(seed) and seed >= 0,
            f"the data seed must be an integer >= 0, got {seed!r}")
    require_count(per_class, "per_class")
    require_count(test_per_class, "test_per_class")
    if name == "gaussian":
        arrays = _gaussian(classes, dim, GAUSSIAN_PER_CLASS if per_class is None else per_class,
                           separation, seed)
    elif name == "digits":
        arrays = _digits()
    elif name == "mnist1d":
        arrays = _mnist1d()
    elif name == "fashion_mnist":
        folder = Path(root) if root is not None else FASHION_DIR
        arrays = _idx_images(folder, "install the Debian package dataset-fashion-mnist "
                             "(apt-get install dataset-fashion-mnist) or pass --data-root")
    elif name == "mnist":
        require(root is not None, "dataset 'mnist' is read from a local folder of IDX files; "
                "pass --data-root DIR holding train-images-idx3-ubyte[.gz] etc.")
        arrays = _idx_images(Path(root), "MNIST needs the four IDX files "
                             "(train/t10k images/labels) in --data-root")
    else:
        require(root is not None, "dataset 'cifar10' is read from a local folder; pass "
                "--data-root DIR holding the CIFAR-10 python batches")
        arrays = read_cifar10(root)
    x_tr, y_tr, x_te, y_te = arrays
    keep = balanced_subset(y_tr, per_class if name != "gaussian" else None, seed, "per_class",
                           f"{name} training set")
    keep_te = balanced_subset(y_te, test_per_class, seed + 1, "test_per_class",
                              f"{name} test set")
    require(keep.size > 0, f"the {name} training set has no samples; training needs at least "
            "one sample of every class")
    x_tr = torch.as_tensor(np.asarray(x_tr[keep], dtype=np.float32))
    x_te = torch.as_tensor(np.asarray(x_te[keep_te], dtype=np.float32))
    if normalize:
        axes = [0] + list(range(2, x_tr.ndim))
        mean = x_tr.mean(dim=axes, keepdim=True)
        std = x_tr.std(dim=axes, keepdim=True).clamp_min(1e-8)
        x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    k = int(max(y_tr.max(), y_te.max() if y_te.size else 0)) + 1
    _require_every_class_trained(y_tr, k, name)
    return Dataset(name, x_tr.contiguous(), torch.as_tensor(y_tr[keep]),
                   x_te.contiguous(), torch.as_tensor(y_te[keep_te]), k)
