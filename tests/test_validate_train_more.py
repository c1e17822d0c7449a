"""Validation module: datasets, networks, training loop and UFM surrogate against references
built independently of the code under test.

- Data: IDX and CIFAR files written byte by byte here; Fashion-MNIST parsed here with gzip and
  struct; MNIST-1D regenerated here with ``mnist1d.data.make_dataset``; the digits from
  scikit-learn directly; the Gaussian mixture through its sample statistics.
- Networks: parameter counts written out layer by layer; the MLP forward pass written out with
  the activation formulas; penultimate features caught by a hook on the last ``nn.Linear``.
- Training: NC records against :func:`ncsim.metrics.nc_metrics` of features taken (by a hook)
  from checkpoints of the same epochs; lr schedules and ``t = lr x steps`` written out; one SGD
  step against the Euler step of ncsim's objective written in numpy (DESIGN.md conventions);
  Adam / AdamW first steps written out.
- Surrogate: a network whose features are free parameters (times a constant) trained with
  PyTorch's SGD is, step for step, the explicit Euler scheme of the UFM with the documented
  conversions; ncsim's own ``gd`` solver must reproduce it.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ncsim.errors import InputError
from ncsim.metrics import METRIC_NAMES, nc_metrics
from ncsim.validate import surrogate as sg
from ncsim.validate.data import FASHION_DIR, Dataset, load_dataset, read_idx
from ncsim.validate.networks import ACTIVATIONS, build_network
from ncsim.validate.stacked import train_stacked
from ncsim.validate.train import Phase, TrainConfig, load_checkpoint, train


# ----------------------------------------------------------------------------- helpers
def idx_bytes(array: np.ndarray, code: int) -> bytes:
    """An IDX file: two zero bytes, the element type, ndim, big-endian uint32 sizes, data."""
    types = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=types[code]).tobytes()


def write_idx_folder(root: Path, n_train: int, n_test: int, train_labels: int | None = None,
                     test_labels: int | None = None, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Four MNIST-style IDX files (4x5 images, 3 classes) in ``root``; returns the arrays."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    x_tr = rng.integers(0, 256, (n_train, 4, 5), dtype=np.uint8)
    x_te = rng.integers(0, 256, (n_test, 4, 5), dtype=np.uint8)
    y_tr = (np.arange(train_labels or n_train) % 3).astype(np.uint8)
    y_te = (np.arange(test_labels or n_test) % 3).astype(np.uint8)
    (root / "train-images-idx3-ubyte").write_bytes(idx_bytes(x_tr, 0x08))
    (root / "train-labels-idx1-ubyte").write_bytes(idx_bytes(y_tr, 0x08))
    (root / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(x_te, 0x08))
    (root / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(y_te, 0x08))
    return x_tr, y_tr, x_te, y_te


def last_linear_input(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Input and output of the last ``nn.Linear`` of ``model`` in a forward pass (eval mode)."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    seen: dict[str, torch.Tensor] = {}
    handle = last.register_forward_hook(
        lambda _m, inp, out: seen.update(h=inp[0].detach(), z=out.detach()))
    was = model.training
    model.eval()
    with torch.no_grad():
        logits = model(x)
    model.train(was)
    handle.remove()
    assert torch.equal(seen["z"], logits)
    return seen["h"], logits


def weight_norm(model: nn.Module) -> float:
    return math.sqrt(sum(float((p.detach().double() ** 2).sum()) for p in model.parameters()))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", per_class=10, test_per_class=3, seed=0)


# ============================================================================= data
def test_read_idx_parses_files_written_byte_by_byte(tmp_path):
    """Magic (0, 0, type, ndim), big-endian uint32 sizes, then the elements."""
    ubyte = (b"\x00\x00\x08\x03" b"\x00\x00\x00\x02" b"\x00\x00\x00\x03" b"\x00\x00\x00\x04"
             + bytes(range(24)))
    (tmp_path / "u").write_bytes(ubyte)
    out = read_idx(tmp_path / "u")
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.arange(24).reshape(2, 3, 4))
    # a size above 255 needs every byte of the big-endian size
    wide = b"\x00\x00\x08\x02" b"\x00\x00\x00\x01" b"\x00\x00\x01\x2c" + bytes(300)
    (tmp_path / "w").write_bytes(wide)
    assert read_idx(tmp_path / "w").shape == (1, 300)
    # signed 32-bit big-endian: 70000 = 0x00011170, -2 = 0xfffffffe
    (tmp_path / "i").write_bytes(b"\x00\x00\x0c\x01" b"\x00\x00\x00\x02"
                                 b"\x00\x01\x11\x70" b"\xff\xff\xff\xfe")
    np.testing.assert_array_equal(read_idx(tmp_path / "i"), [70000, -2])
    # float64 big-endian (1.5 = 0x3ff8000000000000), int8 and int16
    (tmp_path / "d").write_bytes(b"\x00\x00\x0e\x01" b"\x00\x00\x00\x01"
                                 b"\x3f\xf8\x00\x00\x00\x00\x00\x00")
    assert read_idx(tmp_path / "d").tolist() == [1.5]
    (tmp_path / "b").write_bytes(b"\x00\x00\x09\x01" b"\x00\x00\x00\x02" b"\xff\x05")
    assert read_idx(tmp_path / "b").tolist() == [-1, 5]
    (tmp_path / "s").write_bytes(b"\x00\x00\x0b\x01" b"\x00\x00\x00\x01" b"\x01\x00")
    assert read_idx(tmp_path / "s").tolist() == [256]


@pytest.mark.parametrize(("content", "word"), [
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x07", "not an IDX file"),        # wrong magic
    (b"\x00\x00\x08", "not an IDX file"),                                # no header
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x07", "element type"),           # unknown type
    (b"\x00\x00\x08\x01\x00\x00\x00\x03\x07\x08", "truncated"),          # 2 of 3 bytes
    (b"\x00\x00\x0c\x01\x00\x00\x00\x02\x00\x00\x00\x01\x00\x00", "truncated"),  # 6 of 8
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated"),                  # header cut short
    (b"\x00\x00\x08\x01\x00\x00\x00\x01\x07\x08", "more data than"),     # trailing data
])
def test_read_idx_refuses_bad_files_with_an_input_error(tmp_path, content, word):
    """Every malformed file is an InputError naming the file (the command line's exit 2),
    never a numpy error."""
    path = tmp_path / "bad-idx"
    path.write_bytes(content)
    with pytest.raises(InputError, match=word) as err:
        read_idx(path)
    assert "bad-idx" in str(err.value)


@pytest.mark.parametrize(("labels", "which"), [((6, None), "train"), ((None, 5), "t10k")])
def test_idx_folder_with_mismatched_label_count_is_refused(tmp_path, labels, which):
    """Images and labels of a split must have the same count; otherwise images would be
    dropped or paired with the wrong label silently."""
    write_idx_folder(tmp_path, 7, 4, train_labels=labels[0], test_labels=labels[1])
    with pytest.raises(InputError, match=which):
        load_dataset("mnist", root=tmp_path)
    with pytest.raises(InputError, match=which):
        load_dataset("mnist", root=tmp_path, per_class=1)


def write_cifar(root: Path, labels_short: bool = False) -> tuple[np.ndarray, ...]:
    """CIFAR-10 python batches (2 images each, test 3) with rows R(1024) G(1024) B(1024)."""
    rng = np.random.default_rng(5)
    xs, ys = [], []
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        n = 3 if name == "test_batch" else 2
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [(i + k) % 3 for k in range(n)]
        if labels_short and name == "data_batch_3":
            labels = labels[:1]
        with open(root / name, "wb") as handle:
            pickle.dump({b"data": data, b"labels": labels}, handle)
        xs.append(data)
        ys.append(np.asarray(labels))
    return np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5]


def test_cifar_batches_layout_and_label_count(tmp_path):
    """Pixel (c, i, j) of a row is byte c * 1024 + i * 32 + j of the batch row (R, G, B planes,
    row-major); a batch whose label list is shorter than its images is refused."""
    data, labels, _, _ = write_cifar(tmp_path)
    raw = load_dataset("cifar10", root=tmp_path, normalize=False)
    assert raw.x_train.shape == (10, 3, 32, 32) and raw.x_test.shape == (3, 3, 32, 32)
    for row, c, i, j in ((0, 0, 0, 0), (3, 1, 5, 7), (9, 2, 31, 30), (6, 0, 17, 2)):
        assert raw.x_train[row, c, i, j] == data[row, c * 1024 + i * 32 + j]
    np.testing.assert_array_equal(raw.y_train.numpy(), labels)
    short = tmp_path / "short"
    short.mkdir()
    write_cifar(short, labels_short=True)
    with pytest.raises(InputError, match="data_batch_3 holds 2 images but 1 labels"):
        load_dataset("cifar10", root=short)


def _parse_idx_gz(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


@pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason=f"Fashion-MNIST is not installed in {FASHION_DIR} "
                    "(apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_subset_rows_are_rows_of_the_files():
    """A balanced subset: 60000 x 28 x 28 files parsed here; every loaded image is the file's
    image of the same label; the subset is seeded and balanced; 10 classes."""
    images = _parse_idx_gz(FASHION_DIR / "train-images-idx3-ubyte.gz")
    labels = _parse_idx_gz(FASHION_DIR / "train-labels-idx1-ubyte.gz")
    assert images.shape == (60000, 28, 28) and labels.shape == (60000,)
    d = load_dataset("fashion_mnist", per_class=4, test_per_class=2, seed=3, normalize=False)
    assert d.classes == 10 and d.x_train.shape == (40, 1, 28, 28)
    assert torch.bincount(d.y_train).tolist() == [4] * 10
    assert torch.bincount(d.y_test).tolist() == [2] * 10
    flat = images.reshape(60000, -1)
    lookup = {flat[i].tobytes(): i for i in range(60000)}
    rows = [lookup[x.numpy().astype(np.uint8).tobytes()] for x in d.x_train.reshape(40, -1)]
    np.testing.assert_array_equal(labels[rows], d.y_train.numpy())
    again = load_dataset("fashion_mnist", per_class=4, test_per_class=2, seed=3, normalize=False)
    other = load_dataset("fashion_mnist", per_class=4, test_per_class=2, seed=4, normalize=False)
    assert torch.equal(again.x_train, d.x_train) and not torch.equal(other.x_train, d.x_train)


def test_mnist1d_is_generated_offline_and_subsets_by_seed(monkeypatch):
    """The loaded rows are rows of ``make_dataset`` (seed 42, default arguments) with their
    labels; the test set is the whole standard test set; ``get_dataset`` (a download) is never
    called; the seed picks the subset, not the data."""
    mnist1d_data = pytest.importorskip("mnist1d.data")

    def no_download(*args, **kwargs):
        raise AssertionError("get_dataset downloads; it must not be called")

    monkeypatch.setattr(mnist1d_data, "get_dataset", no_download)
    args = mnist1d_data.get_dataset_args()
    args.seed = 42
    ref = mnist1d_data.make_dataset(args)
    x_ref = np.asarray(ref["x"], np.float32)
    a = load_dataset("mnist1d", per_class=5, seed=0, normalize=False)
    b = load_dataset("mnist1d", per_class=5, seed=1, normalize=False)
    assert a.x_train.shape == (50, 1, 40) and a.classes == 10
    assert torch.bincount(a.y_train).tolist() == [5] * 10
    rows = []
    for x, y in zip(a.x_train[:, 0].numpy(), a.y_train.numpy(), strict=True):
        hits = np.flatnonzero((x_ref == x).all(axis=1))
        assert hits.size >= 1 and ref["y"][hits[0]] == y
        rows.append(int(hits[0]))
    assert len(set(rows)) == 50
    np.testing.assert_array_equal(a.x_test[:, 0].numpy(), np.asarray(ref["x_test"], np.float32))
    np.testing.assert_array_equal(a.y_test.numpy(), ref["y_test"])
    assert torch.equal(a.x_test, b.x_test) and not torch.equal(a.x_train, b.x_train)


def test_digits_hold_out_the_last_fifth_of_each_class():
    """scikit-learn digits: per class, the last round(0.2 n_c) images in file order are the test
    set, the rest the training set (values unchanged without normalisation)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    d = load_dataset("digits", normalize=False)
    train_rows, test_rows = [], []
    for c in range(10):
        idx = np.flatnonzero(bunch.target == c)
        cut = int(round(0.8 * idx.size))
        train_rows += list(idx[:cut])
        test_rows += list(idx[cut:])
    train_rows, test_rows = np.sort(train_rows), np.sort(test_rows)
    np.testing.assert_array_equal(d.x_train[:, 0].numpy(), bunch.images[train_rows])
    np.testing.assert_array_equal(d.y_train.numpy(), bunch.target[train_rows])
    np.testing.assert_array_equal(d.x_test[:, 0].numpy(), bunch.images[test_rows])
    assert d.x_train.shape[0] + d.x_test.shape[0] == 1797 and d.classes == 10
    norm = load_dataset("digits")
    assert float(norm.x_train.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(norm.x_train.std()) == pytest.approx(1.0, rel=1e-5)


def test_gaussian_mixture_statistics_and_seeds():
    """Class means of norm ``separation`` shared by train and test, unit isotropic noise,
    ``per_class`` samples of each class; same seed same data, another seed other data."""
    K, dim, n, sep = 3, 4, 4000, 5.0
    d = load_dataset("gaussian", per_class=n, classes=K, dim=dim, separation=sep, seed=7,
                     normalize=False)
    assert d.x_train.shape == (K * n, 1, dim) and d.x_train.dtype == torch.float32
    assert torch.bincount(d.y_train).tolist() == [n] * K == torch.bincount(d.y_test).tolist()
    x, y = d.x_train[:, 0].double().numpy(), d.y_train.numpy()
    xt, yt = d.x_test[:, 0].double().numpy(), d.y_test.numpy()
    tol = 5 / math.sqrt(n)  # five standard errors
    for c in range(K):
        mean, mean_test = x[y == c].mean(0), xt[yt == c].mean(0)
        assert abs(np.linalg.norm(mean) - sep) < tol
        assert np.abs(mean - mean_test).max() < 2 * tol
        cov = np.cov((x[y == c] - mean).T)
        assert np.abs(cov - np.eye(dim)).max() < 0.1
    same = load_dataset("gaussian", per_class=n, classes=K, dim=dim, separation=sep, seed=7,
                        normalize=False)
    other = load_dataset("gaussian", per_class=n, classes=K, dim=dim, separation=sep, seed=8,
                         normalize=False)
    assert torch.equal(same.x_train, d.x_train) and torch.equal(same.x_test, d.x_test)
    assert not torch.equal(other.x_train, d.x_train)
    small = load_dataset("gaussian", per_class=5, classes=K, dim=dim, test_per_class=2)
    assert torch.bincount(small.y_test).tolist() == [2] * K


@pytest.mark.parametrize("kwargs", [
    {"name": "gaussian", "per_class": 0},
    {"name": "digits", "per_class": 0},
    {"name": "digits", "per_class": 10_000},
    {"name": "gaussian", "seed": -1},
    {"name": "digits", "per_class": 5, "seed": -1},
])
def test_bad_dataset_arguments_are_input_errors(kwargs):
    """per_class below 1 or above a class's size, and a negative seed, are refused (the
    gaussian mixture must not turn per_class = 0 into its default 100)."""
    args = dict(kwargs)
    with pytest.raises(InputError, match="per_class|seed"):
        load_dataset(args.pop("name"), **args)


# ============================================================================= networks
def mlp_count(inp: int, K: int, depth: int, width: int) -> int:
    return inp * width + width + (depth - 1) * (width * width + width) + width * K + K


def resnet20_count(C: int, K: int) -> int:
    """ResNet-20 (CIFAR form) written out: bias-free convs, BatchNorm weight + bias."""
    def conv(cin, cout, k=3):
        return k * k * cin * cout

    def bn(c):
        return 2 * c

    total = conv(C, 16) + bn(16)
    cin = 16
    for cout in (16, 32, 64):
        for i in range(3):
            total += conv(cin, cout) + bn(cout) + conv(cout, cout) + bn(cout)
            if i == 0 and cin != cout:
                total += conv(cin, cout, 1) + bn(cout)
            cin = cout
    return total + 64 * K + K


def cnn_count(shape: tuple[int, ...], K: int, width: int) -> int:
    spatial = len(shape) - 1
    k = 3 ** spatial
    flat = 64
    for size in shape[1:]:
        flat *= (size // 2) // 2
    return (k * shape[0] * 32 + 32) + (k * 32 * 64 + 64) + (flat * width + width) + width * K + K


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_by_hand():
    """MLP-L of width w, the small CNN (1-D and 2-D) and ResNet-20 (1 and 3 channels); the
    paper's MLP-5 on MNIST has 1.46M and ResNet-20 0.272M parameters."""
    for shape, depth, width in (((1, 8, 8), 1, 7), ((1, 40), 3, 16), ((3, 4, 4), 5, 512)):
        net = build_network("mlp", shape, 10, depth=depth, width=width)
        assert n_params(net) == mlp_count(math.prod(shape), 10, depth, width)
    mlp5 = mlp_count(784, 10, 5, 512)  # MLP-5 on MNIST
    assert round(mlp5 / 1e6, 2) == 1.46 and n_params(build_network("mlp", (1, 28, 28), 10)) == mlp5
    for shape in ((1, 40), (1, 8, 8), (3, 28, 28)):
        assert n_params(build_network("cnn", shape, 7, width=24)) == cnn_count(shape, 7, 24)
    assert resnet20_count(3, 10) == 272_474
    for C, size in ((1, 28), (3, 32), (1, 32)):
        net = build_network("resnet20", (C, size, size), 4)
        assert n_params(net) == resnet20_count(C, 4), (C, size)


ACT_FORMULAS = {
    "linear": lambda u: u,
    "relu": lambda u: np.maximum(u, 0.0),
    "leaky_relu": lambda u: np.where(u > 0, u, 0.01 * u),
    "tanh": np.tanh,
    "gelu": lambda u: 0.5 * u * (1.0 + np.vectorize(math.erf)(u / math.sqrt(2.0))),
    "silu": lambda u: u / (1.0 + np.exp(-u)),
}


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_mlp_forward_written_out_for_every_activation(act):
    """h = s(W_L ... s(W_1 x + b_1) ... + b_L), z = W h + b, with the activation formulas
    written here; h is also what enters the last Linear layer; biases start at zero."""
    torch.manual_seed(3)
    net = build_network("mlp", (1, 3, 4), 5, depth=3, width=6, act=act).double()
    with torch.no_grad():
        for m in net.modules():  # non-zero biases, so that they are checked too
            if isinstance(m, nn.Linear):
                assert not m.bias.any()
                m.bias.normal_()
    x = torch.randn(9, 1, 3, 4, dtype=torch.float64)
    h = x.reshape(9, -1).numpy()
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 4 and linears[-1] is net.classifier
    for m in linears[:-1]:
        h = ACT_FORMULAS[act](h @ m.weight.detach().numpy().T + m.bias.detach().numpy())
    z = h @ net.classifier.weight.detach().numpy().T + net.classifier.bias.detach().numpy()
    np.testing.assert_allclose(net.features(x).detach().numpy(), h, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(net(x).detach().numpy(), z, rtol=1e-12, atol=1e-12)
    hooked, _ = last_linear_input(net, x)
    np.testing.assert_allclose(hooked.numpy(), h, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("shape", "act"), [((1, 12), "gelu"), ((2, 8, 8), "leaky_relu")])
def test_cnn_forward_written_out(shape, act):
    """Small CNN: [conv 3 (padding 1) -> ReLU -> max-pool 2] with 32 then 64 channels, flatten,
    Linear(., width) -> act gives h; z = W h + b (1-D and 2-D inputs)."""
    torch.manual_seed(4)
    net = build_network("cnn", shape, 3, width=9, act=act).double().eval()
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [32, 64] and len(linears) == 2
    conv = F.conv1d if len(shape) == 2 else F.conv2d
    pool = F.max_pool1d if len(shape) == 2 else F.max_pool2d
    x = torch.randn(4, *shape, dtype=torch.float64)
    u = x
    for c in convs:
        u = pool(torch.relu(conv(u, c.weight, c.bias, padding=1)), 2)
    u = u.flatten(1) @ linears[0].weight.T + linears[0].bias
    h = ACT_FORMULAS[act](u.detach().numpy())
    z = h @ net.classifier.weight.detach().numpy().T + net.classifier.bias.detach().numpy()
    with torch.no_grad():
        np.testing.assert_allclose(net.features(x).numpy(), h, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(net(x).numpy(), z, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("arch", "shape"), [("mlp", (1, 8, 8)), ("cnn", (1, 40)),
                                             ("cnn", (2, 6, 6)), ("resnet20", (1, 28, 28)),
                                             ("resnet20", (3, 32, 32))])
def test_features_are_the_input_of_the_last_linear_layer(arch, shape):
    """``features(x)`` (eval mode) is exactly what the last nn.Linear receives in ``forward``,
    and that layer is ``classifier`` (ResNet-20: the 64-d pooled features)."""
    torch.manual_seed(0)
    act = "relu" if arch == "resnet20" else "tanh"
    net = build_network(arch, shape, 6, depth=2, width=12, act=act).eval()
    x = torch.randn(5, *shape)
    hooked, logits = last_linear_input(net, x)
    with torch.no_grad():
        feats = net.features(x)
    assert torch.equal(feats, hooked)
    assert feats.shape == (5, 64 if arch == "resnet20" else 12)
    assert [m for m in net.modules() if isinstance(m, nn.Linear)][-1] is net.classifier
    assert torch.allclose(net.classifier(feats), logits)


def test_resnet20_pads_28_by_28_inputs_with_zeros():
    """A 28x28 input gives the features of the same image zero-padded to 32x32."""
    torch.manual_seed(1)
    net = build_network("resnet20", (1, 28, 28), 10).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(net.features(x), net.features(F.pad(x, (2, 2, 2, 2))),
                              rtol=0, atol=0)


@pytest.mark.parametrize(("arch", "shape", "act"), [("mlp", (1, 8, 8), "linear"),
                                                    ("mlp", (1, 8, 8), "leaky_relu"),
                                                    ("cnn", (1, 12), "relu"),
                                                    ("resnet20", (1, 28, 28), "relu"),
                                                    ("resnet20", (1, 40), "relu")])
def test_rescale_last_hidden_scales_the_features(arch, shape, act):
    """The intervention multiplies the penultimate features by alpha exactly (positively
    homogeneous activations), logits aside."""
    torch.manual_seed(2)
    net = build_network(arch, shape, 4, depth=2, width=8, act=act).double().eval()
    x = torch.randn(6, *shape, dtype=torch.float64)
    with torch.no_grad():
        before = net.features(x)
        net.rescale_last_hidden(2.5)
        after = net.features(x)
    torch.testing.assert_close(after, 2.5 * before, rtol=1e-12, atol=1e-12)


def test_unknown_network_choices_are_refused():
    """Unknown activations and networks, and an activation ResNet-20 does not have (its blocks
    are ReLU), are InputErrors listing what is allowed."""
    with pytest.raises(InputError, match="allowed"):
        build_network("mlp", (1, 8, 8), 10, act="swish")
    with pytest.raises(InputError, match="allowed"):
        build_network("vgg", (1, 8, 8), 10)
    with pytest.raises(InputError, match="relu"):
        build_network("resnet20", (1, 28, 28), 10, act="gelu")


# ============================================================================= training
def two_phase(**kw) -> TrainConfig:
    phases = (Phase("ce", 3, "adam", 2e-3, 1e-3, schedule="cosine", batch_size=32),
              Phase("mse", 3, "sgd", 0.05, 5e-3, momentum=0.9, nesterov=False,
                    schedule="step", milestones=(2,), warmup=1, batch_size=40, decay_last=2))
    base = dict(arch="mlp", depth=2, width=16, phases=phases, nc_every=1, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_training_log_is_bitwise_deterministic(digits):
    """Same seed: the same log, every column bit for bit; another seed: another log."""
    a = train(two_phase(), digits).log
    b = train(two_phase(), digits).log
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    c = train(two_phase(seed=1), digits).log
    assert not np.array_equal(a["fn"].to_numpy(), c["fn"].to_numpy())
    assert a["seed"].tolist() == [0] * len(a) and c["seed"].tolist() == [1] * len(c)


def test_nc_records_equal_metrics_of_checkpointed_networks(digits, tmp_path):
    """At every recorded epoch, the log's NC columns equal nc_metrics of the features that the
    checkpoint of that epoch feeds its last Linear layer (caught by a hook, over the whole
    training set); loss (CE in phase 1, nn.MSELoss in phase 2), accuracies and the parameter
    norm are recomputed likewise. Epoch 0 is the network initialised from the seed."""
    config = two_phase(checkpoint_dir=str(tmp_path), checkpoint_every=1)
    log = train(config, digits).log.set_index("time")
    assert log.index.tolist() == [0, 1, 2, 3, 4, 5, 6]
    torch.manual_seed(config.seed)
    models = {0: build_network("mlp", (1, 8, 8), 10, depth=2, width=16)}
    for epoch in range(1, 7):
        name = {3: "phase1_end.pt", 6: "phase2_end.pt"}.get(epoch, f"epoch{epoch:05d}.pt")
        models[epoch], state = load_checkpoint(tmp_path / name)
        assert state["epoch"] == epoch
    y, K = digits.y_train, digits.classes
    for epoch, model in models.items():
        row = log.loc[float(epoch)]
        h, z = last_linear_input(model, digits.x_train)
        ref = nc_metrics(h.double()[None], y, K, model.classifier.weight.detach().double()[None],
                         model.classifier.bias.detach().double()[None])
        for name in METRIC_NAMES:
            assert row[name] == pytest.approx(float(ref[name][0]), rel=1e-9, abs=1e-12), \
                (epoch, name)
        loss = (F.cross_entropy(z, y) if row["phase"] == 1 and epoch <= 3
                else F.mse_loss(z, F.one_hot(y, K).float()))
        assert row["phase_loss"] == ("ce" if epoch <= 3 else "mse")
        assert row["loss"] == pytest.approx(float(loss), rel=1e-6)
        assert row["accuracy"] == float((z.argmax(1) == y).double().mean())
        _, zt = last_linear_input(model, digits.x_test)
        assert row["test_accuracy"] == float((zt.argmax(1) == digits.y_test).double().mean())
        assert row["weight_norm"] == pytest.approx(weight_norm(model), rel=1e-12)
    assert log.loc[6.0, "fn"] != log.loc[0.0, "fn"]


def expected_lrs(phase: Phase) -> list[float]:
    """The lr of every epoch of ``phase``: base x warm-up ramp x schedule factor."""
    out = []
    for e in range(phase.epochs):
        ramp = min(1.0, (e + 1) / (phase.warmup + 1)) if phase.warmup else 1.0
        if phase.schedule == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * e / phase.epochs))
        elif phase.schedule == "step":
            factor = phase.gamma ** sum(e >= m for m in phase.milestones)
        else:
            factor = 1.0
        out.append(phase.lr * ramp * factor)
    return out


def test_steps_and_flow_time_are_lr_times_steps(digits):
    """steps = epochs x ceil(N / batch) per phase; flow_time = sum over steps of the step's lr
    (t = lr x steps, DESIGN.md), with the cosine, step and warm-up schedules written out here;
    the epoch-0 row carries the lr of epoch 1."""
    phases = (Phase("ce", 4, "sgd", 0.1, 0.0, momentum=0.0, schedule="cosine", batch_size=30),
              Phase("mse", 5, "sgd", 0.05, 0.0, momentum=0.5, schedule="step", milestones=(2, 4),
                    gamma=0.5, warmup=1, batch_size=100),
              Phase("mse", 2, "adam", 1e-3, 0.0, schedule="constant", batch_size=7))
    log = train(two_phase(phases=phases, nc_every=1), digits).log
    n = digits.x_train.shape[0]
    steps, flow, expected = 0, 0.0, [(0.0, 0, 0.0)]
    for phase in phases:
        per_epoch = math.ceil(n / phase.batch_size)
        for lr in expected_lrs(phase):
            steps += per_epoch
            flow += lr * per_epoch
            expected.append((float(len(expected)), steps, flow))
    assert log["time"].tolist() == [e[0] for e in expected]
    assert log["steps"].tolist() == [e[1] for e in expected]
    np.testing.assert_allclose(log["flow_time"], [e[2] for e in expected], rtol=1e-12)
    assert log["phase"].tolist() == [1] * 5 + [2] * 5 + [3] * 2
    assert log["lr"].iloc[0] == pytest.approx(0.1, rel=1e-15)
    assert (log["time_unit"] == "epoch").all()


def test_one_sgd_step_is_the_euler_step_of_the_converted_objective():
    """Full-batch SGD (no momentum) on nn.MSELoss with coupled weight decay wd on the classifier
    only (decay_last = 1): the classifier moves by exactly one Euler step of ncsim's objective
    (1/N) sum 1/2 |W h + b - y|^2 + lambda/2 (|W|^2 + |b|^2) with dt = (2/K) lr and
    lambda = K wd / 2 (written in numpy); the hidden layer by -lr x its data gradient, no decay."""
    K, lr, wd = 3, 0.05, 0.5
    data = load_dataset("gaussian", per_class=5, classes=K, dim=4, seed=2)
    phase = Phase("mse", 1, "sgd", lr, wd, momentum=0.0, schedule="constant", batch_size=15,
                  decay_last=1)
    config = TrainConfig(arch="mlp", depth=1, width=6, phases=(phase,), nc_every=1, seed=4)
    torch.manual_seed(4)
    start = build_network("mlp", (1, 4), K, depth=1, width=6).double()
    result = train(config, data)
    x, y = data.x_train.double(), data.y_train.numpy()
    h, _ = last_linear_input(start, x)
    H = h.numpy().T  # (d, N)
    W = start.classifier.weight.detach().numpy()
    b = start.classifier.bias.detach().numpy()
    N = H.shape[1]
    Y = np.eye(K)[:, y]
    R = W @ H + b[:, None] - Y
    dt, lam = (2.0 / K) * lr, K * wd / 2.0
    W1 = W - dt * (R @ H.T / N + lam * W)
    b1 = b - dt * (R.mean(axis=1) + lam * b)
    got = result.model
    np.testing.assert_allclose(got.classifier.weight.detach().double().numpy(), W1,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.classifier.bias.detach().double().numpy(), b1,
                               rtol=1e-5, atol=1e-6)
    assert np.abs(W1 - (W - dt * R @ H.T / N)).max() > 1e-3  # the decay is visible
    loss = F.mse_loss(start(x), torch.as_tensor(Y.T))
    hidden = start.last_hidden
    gw, gb = torch.autograd.grad(loss, [hidden.weight, hidden.bias])
    np.testing.assert_allclose(got.last_hidden.weight.detach().double().numpy(),
                               (hidden.weight - lr * gw).detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.last_hidden.bias.detach().double().numpy(),
                               (hidden.bias - lr * gb).detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_couples_and_adamw_decouples_the_weight_decay(optimizer):
    """First full-batch step, written out: Adam takes g = grad + wd theta and moves by
    lr g / (|g| + eps); AdamW moves by lr grad / (|grad| + eps) and shrinks theta by lr wd."""
    K, lr, wd, eps = 3, 0.01, 0.3, 1e-8
    data = load_dataset("gaussian", per_class=4, classes=K, dim=5, seed=1)
    phase = Phase("ce", 1, optimizer, lr, wd, schedule="constant", batch_size=12)
    config = TrainConfig(arch="mlp", depth=1, width=4, phases=(phase,), nc_every=1, seed=6)
    torch.manual_seed(6)
    start = build_network("mlp", (1, 5), K, depth=1, width=4).double()
    got = dict(train(config, data).model.named_parameters())
    params = dict(start.named_parameters())
    loss = F.cross_entropy(start(data.x_train.double()), data.y_train)
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
    for name, p in params.items():
        p, g = p.detach(), grads[name]
        if optimizer == "adam":
            g = g + wd * p
            new = p - lr * g / (g.abs() + eps)
        else:
            new = p * (1 - lr * wd) - lr * g / (g.abs() + eps)
        torch.testing.assert_close(got[name].detach().double(), new, rtol=1e-5, atol=2e-6,
                                   msg=name)


def test_stacked_seeds_follow_their_sequential_trainings():
    """train_stacked of a 1-D CNN with Nesterov momentum, a step schedule, warm-up, decay on
    the last two Linear layers and NC gaps: each seed's log and parameters are those of its own
    training (integer and time columns exactly, metrics up to batched-product rounding)."""
    data = load_dataset("gaussian", per_class=6, classes=3, dim=8, seed=0, test_per_class=2)
    phases = (Phase("ce", 3, "sgd", 0.05, 1e-3, momentum=0.9, nesterov=True, schedule="step",
                    milestones=(2,), batch_size=8),
              Phase("mse", 2, "sgd", 0.02, 1e-2, momentum=0.5, nesterov=False,
                    schedule="cosine", warmup=1, batch_size=5, decay_last=2))
    config = TrainConfig(arch="cnn", width=10, phases=phases, nc_every=2, nc_min_accuracy=0.5,
                         run_id="st", labels={"model": "cnn"})
    seeds = [2, 0]
    runs = train_stacked(config, data, seeds)
    exact = ["run_id", "time", "time_unit", "phase", "phase_loss", "steps", "flow_time", "lr",
             "seed", "model"]
    for seed, run in zip(seeds, runs, strict=True):
        alone = train(dataclasses.replace(config, seed=seed, run_id=f"st_s{seed}"), data)
        assert list(run.log.columns) == list(alone.log.columns)
        pd.testing.assert_frame_equal(run.log[exact], alone.log[exact], check_exact=True)
        for col in alone.log.columns.difference(exact):
            np.testing.assert_allclose(run.log[col].to_numpy(np.float64),
                                       alone.log[col].to_numpy(np.float64), rtol=1e-4,
                                       atol=1e-6, err_msg=col)
        for (name, p), (_, q) in zip(alone.model.named_parameters(),
                                     run.model.named_parameters(), strict=True):
            torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
    assert runs[0].log["time"].tolist() == [0.0, 2.0, 3.0, 4.0, 5.0]
    assert not np.allclose(runs[0].log["fn"], runs[1].log["fn"])


BAD_PHASES = [
    ({"batch_size": 2.5}, "batch size"),
    ({"batch_size": 0}, "batch size"),
    ({"gamma": 0.0}, "gamma"),
    ({"gamma": float("nan")}, "gamma"),
    ({"milestones": (-1,)}, "milestones"),
    ({"milestones": (1.5,)}, "milestones"),
    ({"weight_decay": float("inf")}, "weight decay"),
    ({"weight_decay": float("nan")}, "weight decay"),
    ({"lr": float("nan")}, "lr"),
    ({"epochs": 0}, "epochs"),
    ({"warmup": 3}, "warmup"),
    ({"momentum": 1.0}, "momentum"),
    ({"decay_last": -1}, "decay_last"),
    ({"loss": "hinge"}, "loss"),
    ({"schedule": "linear"}, "schedule"),
]
BAD_CONFIGS = [
    ({"nc_min_accuracy": 99.0}, "nc_min_accuracy"),
    ({"nc_min_accuracy": float("nan")}, "nc_min_accuracy"),
    ({"nc_every": 1.5}, "nc_every"),
    ({"nc_every": 0}, "nc_every"),
    ({"seed": 1.5}, "seed"),
    ({"seed": -1}, "seed"),
    ({"checkpoint_every": -1}, "checkpoint_every"),
    ({"eval_batch": 2.5}, "eval_batch"),
    ({"intervention_epoch": 1.5}, "intervention epoch"),
    ({"intervention_epoch": 4}, "intervention epoch"),
    ({"intervention_epoch": 1, "intervention_alpha": 0.0}, "intervention alpha"),
    ({"arch": "vgg"}, "allowed: mlp, cnn, resnet20"),
    ({"activation": "swish"}, "allowed: linear"),
    ({"width": 0}, "width"),
    ({"arch": "resnet20", "activation": "gelu"}, "allowed: relu"),
    ({"phases": ()}, "at least one phase"),
]


@pytest.mark.parametrize(("phase_kw", "word"), BAD_PHASES)
def test_bad_phases_are_refused_by_validate(phase_kw, word):
    """A bad phase field is an InputError at validation (before any data is loaded) whose one
    line names the field and says what is allowed."""
    phase = Phase(**{"loss": "ce", "epochs": 3, "batch_size": 4, **phase_kw})
    config = TrainConfig(depth=1, width=4, phases=(phase,))
    with pytest.raises(InputError, match=word) as err:
        config.validate()
    assert "\n" not in str(err.value)
    assert any(w in str(err.value) for w in ("must", "allowed", "got"))


@pytest.mark.parametrize(("config_kw", "word"), BAD_CONFIGS)
def test_bad_configs_are_refused_by_validate(config_kw, word):
    """A bad run field is an InputError at validation whose one line names the field and what
    is allowed; ``train`` refuses it too, before training."""
    config = TrainConfig(**{"depth": 1, "width": 4, "phases": (Phase("ce", 3, batch_size=4),),
                            **config_kw})
    with pytest.raises(InputError, match=word) as err:
        config.validate()
    assert "\n" not in str(err.value)
    assert any(w in str(err.value) for w in ("must", "allowed", "got", "needs"))
    data = load_dataset("gaussian", per_class=2, classes=2, dim=3)
    with pytest.raises(InputError, match=word):
        train(config, data)


def test_numpy_integers_are_accepted_where_integers_are_asked():
    """Integer fields accept numpy integers (values from arrays and grids)."""
    phase = Phase("ce", np.int64(2), batch_size=np.int64(4), milestones=(np.int64(1),))
    config = TrainConfig(depth=1, width=4, phases=(phase,), seed=np.int64(3),
                         nc_every=np.int64(1))
    assert config.validate() is config


# ============================================================================= surrogate
class ScaledFreeFeatures(nn.Module):
    """h_i = c E e_i: the features are free parameters E (d, N) times a constant c, so the
    network is the UFM with feature time scale eta_H = c^2 (in ncsim units)."""

    def __init__(self, dim: int, samples: int, classes: int, scale: float) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(11)
        self.scale = scale
        self.embed = nn.Parameter(0.5 * torch.randn(dim, samples, generator=gen))
        self.classifier = nn.Linear(dim, classes)
        with torch.no_grad():
            self.classifier.weight.copy_(0.4 * torch.randn(classes, dim, generator=gen))
            self.classifier.bias.copy_(0.2 * torch.randn(classes, generator=gen))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x @ self.embed.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def test_surrogate_reproduces_sgd_of_a_free_feature_network_step_for_step():
    """Full-batch SGD (PyTorch's, coupled weight decay wd on every parameter) of nn.MSELoss for
    S steps of lr is S Euler steps of the surrogate: lambda_W = lambda_b = K wd / 2, response
    calibration lambda_H = K wd / (2 c^2), eta_H = c^2, dt = (2/K) lr. ncsim's gd solver started
    from network_state must end at the network's features, classifier and bias; its first
    record is the network's start; its time in network units is lr x S."""
    K, n, d, c, lr, wd, S = 4, 3, 5, 2.0, 0.25, 0.02, 40
    N = K * n
    y = torch.arange(K).repeat_interleave(n)
    data = Dataset("free", torch.eye(N, dtype=torch.float64), y,
                   torch.eye(N, dtype=torch.float64), y, K)
    model = ScaledFreeFeatures(d, N, K, c).double()
    state = sg.network_state(model, data, per_class=n)
    assert state.index.tolist() == list(range(N))
    H0 = c * model.embed.detach().numpy().copy()
    np.testing.assert_array_equal(state.H, H0)
    np.testing.assert_array_equal(state.W, model.classifier.weight.detach().numpy())
    np.testing.assert_array_equal(state.b, model.classifier.bias.detach().numpy())
    _, v_data, v_decay = sg.feature_velocities(model, data, state.index, wd, decayed=None)
    cal = sg.calibrate_response(state, v_data, v_decay, sg.time_factor(K))
    assert cal.eta_h == pytest.approx(c * c, rel=1e-12)
    assert cal.lambda_h == pytest.approx(K * wd / (2 * c * c), rel=1e-12)
    lam_w = sg.lambda_w_ncsim(wd, K)
    assert lam_w == pytest.approx(K * wd / 2, rel=1e-15)

    opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd)
    target = F.one_hot(y, K).double()
    for _ in range(S):
        opt.zero_grad()
        F.mse_loss(model(data.x_train), target).backward()
        opt.step()

    dt = sg.time_factor(K) * lr
    spec = sg.surrogate_spec(state, lam_w, cal.lambda_h, t_end=S * dt, eta_h=cal.eta_h)
    assert spec.reg.lambda_b == lam_w and spec.time_scale.eta_h == cal.eta_h
    spec = dataclasses.replace(spec, solver=dataclasses.replace(
        spec.solver, method="gd", dt=dt, reduction="none", records=3, t_first=dt))
    from ncsim.flow.simulate import simulate

    res = simulate(spec, theory=False)
    run = res.runs["run_id"].iloc[0]
    final = res.final_state(run)
    np.testing.assert_allclose(final["H"], c * model.embed.detach().numpy(), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(final["W"][0], model.classifier.weight.detach().numpy(),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(final["b"], model.classifier.bias.detach().numpy(), rtol=1e-10,
                               atol=1e-12)
    assert np.abs(final["H"] - H0).max() > 1e-2  # the features did move
    traj = res.trajectories.sort_values("time")
    first = traj.iloc[0]
    assert first["time"] == 0.0
    assert first["fn"] == pytest.approx(np.linalg.norm(H0, axis=0).mean(), rel=1e-12)
    curve = sg.simulated_curve(traj, sg.time_factor(K))
    assert curve["t"].iloc[-1] == pytest.approx(lr * S, rel=1e-12)
    with torch.no_grad():
        h_end = model.features(data.x_train)
    assert traj["fn"].iloc[-1] == pytest.approx(float(h_end.norm(dim=1).mean()), rel=1e-10)


@pytest.fixture(scope="module")
def trained_mlp(digits):
    config = TrainConfig(arch="mlp", depth=2, width=32, nc_every=3, seed=0,
                         phases=(Phase("ce", 3, "adam", 2e-3, 1e-4, batch_size=25),))
    return train(config, digits)


@pytest.mark.parametrize("per_class", [2, 4, 8])
def test_surrogate_starts_at_the_trained_networks_arrays(trained_mlp, digits, per_class):
    """The surrogate's initial arrays are the trained network's own features (caught by a hook)
    of a class-sorted balanced subsample, its classifier and its bias; its t = 0 record has
    their fn and nc1_trace, whichever exact form (Gram: d > N + K; class means; parameters)
    the solver picks."""
    model = trained_mlp.model
    state = sg.network_state(model, digits, per_class=per_class, seed=2)
    idx = torch.as_tensor(state.index)
    labels = digits.y_train[idx]
    assert labels.tolist() == sorted(labels.tolist())
    assert torch.bincount(labels).tolist() == [per_class] * 10
    h, _ = last_linear_input(model, digits.x_train[idx])
    np.testing.assert_allclose(state.H, h.double().numpy().T, rtol=1e-6, atol=1e-7)
    wd, K = 1e-4, digits.classes
    spec = sg.surrogate_spec(state, sg.lambda_w_ncsim(wd, K), 1e-3, t_end=1e-3, records=2)
    arrays = spec.init.arrays
    assert arrays["H"] is state.H or np.array_equal(arrays["H"], state.H)
    np.testing.assert_array_equal(arrays["W"][0], model.classifier.weight.detach().numpy())
    np.testing.assert_array_equal(arrays["b"], model.classifier.bias.detach().numpy())
    assert spec.reg.lambda_w == pytest.approx(K * wd / 2, rel=1e-15)
    from ncsim.flow.simulate import simulate

    traj = simulate(spec, theory=False).trajectories.sort_values("time")
    first = traj.iloc[0]
    assert first["time"] == 0.0
    ref = nc_metrics(torch.as_tensor(state.H.T)[None], labels, K,
                     torch.as_tensor(state.W)[None], torch.as_tensor(state.b)[None])
    assert first["fn"] == pytest.approx(float(h.double().norm(dim=1).mean()), rel=1e-6)
    assert first["nc1_trace"] == pytest.approx(float(ref["nc1_trace"][0]), rel=1e-9)
    assert first["w_norm"] == pytest.approx(float(ref["w_norm"][0]), rel=1e-12)
