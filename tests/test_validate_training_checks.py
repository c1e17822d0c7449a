"""Training side of the validation module against independent references: damaged input files,
a training loop written out by hand, finite-difference feature velocities (tiny data)."""

from __future__ import annotations

import copy
import gzip
import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from ncsim.errors import InputError
from ncsim.validate import surrogate as sg
from ncsim.validate.cli import validate
from ncsim.validate.data import balanced_subset, load_dataset, read_idx
from ncsim.validate.networks import build_network
from ncsim.validate.train import (
    BATCH_ORDER_OFFSET,
    Phase,
    TrainConfig,
    decayed_names,
    load_checkpoint,
    train,
)


def idx_file(array: np.ndarray) -> bytes:
    """IDX bytes of a uint8 array, written field by field (magic, dims big-endian, data)."""
    head = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    return head + array.astype(np.uint8).tobytes()


def mnist_folder(root: Path, gz: bool = True) -> None:
    """A tiny MNIST-style folder: 6 train images (3 classes x 2), 3 test images, 2 x 3 pixels."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    parts = {"train-images-idx3-ubyte": rng.integers(0, 256, (6, 2, 3)),
             "train-labels-idx1-ubyte": np.array([0, 1, 2, 0, 1, 2]),
             "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 2, 3)),
             "t10k-labels-idx1-ubyte": np.array([2, 1, 0])}
    for name, array in parts.items():
        data = idx_file(array)
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", per_class=12, seed=0)


# ============================================================================= damaged files
def test_truncated_gzip_idx_is_an_input_error_naming_the_file(tmp_path):
    """A truncated .gz (an interrupted download) raised EOFError, which the command line turned
    into 'Aborted.' with exit status 130; it is an InputError naming the file."""
    whole = gzip.compress(idx_file(np.arange(200).reshape(10, 20) % 256))
    (tmp_path / "cut.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match="cut.gz is a damaged or truncated gzip file"):
        read_idx(tmp_path / "cut.gz")


def test_gz_name_without_gzip_content_is_an_input_error(tmp_path):
    """A file named .gz that is not gzip raised gzip.BadGzipFile (a traceback)."""
    (tmp_path / "plain.gz").write_bytes(idx_file(np.arange(4)))
    with pytest.raises(InputError, match="plain.gz is named .gz but is not gzip-compressed"):
        read_idx(tmp_path / "plain.gz")


def test_gzip_content_is_recognised_by_its_magic_bytes(tmp_path):
    """A gzip-compressed IDX file without the .gz suffix is read, not called 'not an IDX file'."""
    array = np.arange(12).reshape(3, 4)
    (tmp_path / "packed").write_bytes(gzip.compress(idx_file(array)))
    np.testing.assert_array_equal(read_idx(tmp_path / "packed"), array)


def test_unreadable_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        read_idx(tmp_path)
    with pytest.raises(InputError, match="cannot read"):
        read_idx(tmp_path / "absent")


def test_cli_truncated_idx_exits_2_with_one_line(tmp_path):
    """The command line answers a truncated IDX download with exit status 2 and one line naming
    the file and what to do (it printed 'Aborted.' and exited 130)."""
    mnist_folder(tmp_path / "mnist")
    path = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    result = CliRunner().invoke(validate, ["train", "--dataset", "mnist", "--data-root",
                                           str(tmp_path / "mnist"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "train-images-idx3-ubyte.gz" in lines[0]
    assert "Traceback" not in result.output and "--data-root" in lines[0]
    assert not (tmp_path / "o").exists()


def test_idx_images_must_be_images(tmp_path):
    """An images file holding a 1-D array was accepted as inputs of shape (1,)."""
    mnist_folder(tmp_path, gz=False)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_file(np.arange(6)))
    with pytest.raises(InputError, match=r"train-images-idx3-ubyte holds an array of shape "
                                         r"\(6,\), not images"):
        load_dataset("mnist", root=tmp_path)


def test_mnist_folder_round_trip(tmp_path):
    """The tiny folder (gzip and plain) reads back as written, with one channel axis."""
    for gz in (True, False):
        mnist_folder(tmp_path / str(gz), gz=gz)
        data = load_dataset("mnist", root=tmp_path / str(gz), normalize=False)
        assert data.x_train.shape == (6, 1, 2, 3) and data.classes == 3
        assert data.y_test.tolist() == [2, 1, 0]


def cifar_folder(root: Path) -> np.ndarray:
    """CIFAR-10 python batches of 10 images each (one per class), pixels written plane by plane
    (R, G, B, as the CIFAR page describes); returns the (60, 3, 32, 32) images in file order."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)  # (N, H, W, C)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for j, name in enumerate(names):
        part = images[10 * j: 10 * j + 10]
        rows = np.concatenate([part[..., c].reshape(10, -1) for c in range(3)], axis=1)
        with open(root / name, "wb") as handle:
            pickle.dump({b"data": rows, b"labels": list(range(10))}, handle, protocol=2)
    return images.transpose(0, 3, 1, 2)


def test_cifar_batches_decode_plane_by_plane(tmp_path):
    images = cifar_folder(tmp_path / "cifar-10-batches-py")
    data = load_dataset("cifar10", root=tmp_path, normalize=False)
    assert data.x_train.shape == (50, 3, 32, 32) and data.x_test.shape == (10, 3, 32, 32)
    np.testing.assert_array_equal(data.x_train.numpy(), images[:50])
    np.testing.assert_array_equal(data.x_test.numpy(), images[50:])


def test_cifar_batch_that_cannot_be_opened_is_an_input_error(tmp_path):
    """A batch path that is a folder raised IsADirectoryError (a traceback)."""
    cifar_folder(tmp_path)
    (tmp_path / "test_batch").unlink()
    (tmp_path / "test_batch").mkdir()
    with pytest.raises(InputError, match="cannot read .*test_batch"):
        load_dataset("cifar10", root=tmp_path)


def test_damaged_checkpoint_is_an_input_error(tmp_path, digits):
    """A truncated or foreign .pt file raised torch's RuntimeError / OSError / UnpicklingError
    (a traceback from 'ncsim validate compare'); it is an InputError naming the file."""
    config = TrainConfig(depth=1, width=4, phases=(Phase("ce", 1, batch_size=64),), nc_every=1,
                         checkpoint_dir=str(tmp_path / "ck"))
    path = train(config, digits).checkpoints[0]
    model, state = load_checkpoint(path)
    assert state["epoch"] == 1 and not model.training
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:3000])
    (tmp_path / "text.pt").write_text("hello\n")
    for name in ("cut.pt", "text.pt"):
        with pytest.raises(InputError, match=f"{name} is not a readable checkpoint"):
            load_checkpoint(tmp_path / name)
    with pytest.raises(InputError, match="is not a file"):
        load_checkpoint(tmp_path)


# ============================================================================= arguments
def test_numpy_integer_depth_and_width_train(digits):
    """TrainConfig accepts numpy integers, so the network must too: MLP refused depth
    np.int64(2) with 'MLP depth must be >= 1, got 2'."""
    config = TrainConfig(depth=np.int64(2), width=np.int64(6),
                         phases=(Phase("ce", 1, batch_size=64),), nc_every=1)
    model = train(config, digits).model
    assert [m.out_features for m in model.body if isinstance(m, torch.nn.Linear)] == [6, 6]
    with pytest.raises(InputError, match="MLP depth must be an integer >= 1, got 2.5"):
        build_network("mlp", (1, 8, 8), 10, depth=2.5)


def test_subset_larger_than_a_class_names_the_split_and_the_limit():
    """The error named 'per_class' for a too large test_per_class and said nothing of the
    largest count that works."""
    with pytest.raises(InputError, match=r"^digits training set: class 0 has 142 samples, "
                                         r"fewer than per_class = 500; ask for at most 139 "):
        load_dataset("digits", per_class=500)
    with pytest.raises(InputError, match=r"^digits test set: .* fewer than test_per_class = "
                                         r"100; ask for at most 35 "):
        load_dataset("digits", test_per_class=100)
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    assert balanced_subset(y, 2, 0).tolist()[2:4] == [3, 4]
    with pytest.raises(InputError, match="at most 2 per class"):
        balanced_subset(y, 3, 0)


# ============================================================================= training loop
def test_training_loop_equals_a_loop_written_out_by_hand(digits):
    """Two phases (CE with Adam, warm-up and cosine; MSE with heavy-ball SGD, a step schedule
    and decay on the last two Linear layers) against a hand-written loop: same initialisation
    and batch order, lr set by formula, coupled L2 and momentum written out."""
    ph1 = Phase("ce", 3, "adam", 1e-2, 1e-3, schedule="cosine", batch_size=40, warmup=1)
    ph2 = Phase("mse", 4, "sgd", 0.05, 2e-3, momentum=0.9, nesterov=False, schedule="step",
                milestones=(2,), gamma=0.5, batch_size=64, decay_last=2)
    config = TrainConfig(arch="mlp", depth=3, width=16, phases=(ph1, ph2), nc_every=2, seed=7)
    result = train(config, digits)

    torch.manual_seed(7)
    net = build_network("mlp", digits.input_shape, 10, 3, 16, "relu")
    gen = torch.Generator().manual_seed(7 + BATCH_ORDER_OFFSET)
    x, y, n = digits.x_train, digits.y_train, digits.x_train.shape[0]
    flow_time, steps, lrs = 0.0, 0, []
    adam = torch.optim.Adam(net.parameters(), lr=1.0)
    for e in range(3):
        lr = 1e-2 * min(1.0, (e + 1) / 2) * 0.5 * (1 + math.cos(math.pi * e / 3))
        lrs.append(lr)
        for group in adam.param_groups:
            group["lr"] = lr
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, 40):
            idx = perm[start:start + 40]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            adam.zero_grad()
            loss.backward()
            with torch.no_grad():
                for p in net.parameters():
                    p.grad += 1e-3 * p
            adam.step()
            flow_time, steps = flow_time + lr, steps + 1
    decayed = {"body.5.weight", "body.5.bias", "classifier.weight", "classifier.bias"}
    velocity: dict[str, torch.Tensor] = {}
    for e in range(4):
        lr = 0.05 * (0.5 if e >= 2 else 1.0)
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, 64):
            idx = perm[start:start + 64]
            loss = ((net(x[idx]) - F.one_hot(y[idx], 10).float()) ** 2).mean()
            net.zero_grad()
            loss.backward()
            with torch.no_grad():
                for name, p in net.named_parameters():
                    g = p.grad + (2e-3 * p if name in decayed else 0.0)
                    velocity[name] = g if name not in velocity else 0.9 * velocity[name] + g
                    p -= lr * velocity[name]
            flow_time, steps = flow_time + lr, steps + 1
    for mine, theirs in zip(net.parameters(), result.model.parameters(), strict=True):
        torch.testing.assert_close(theirs, mine, rtol=0, atol=2e-6)
    log = result.log
    assert log["time"].tolist() == [0, 2, 3, 4, 6, 7]
    assert log["phase"].tolist() == [1, 1, 1, 2, 2, 2]
    assert log["phase_loss"].tolist() == ["ce"] * 3 + ["mse"] * 3
    assert int(log["steps"].iloc[-1]) == steps == 3 * 3 + 4 * 2
    assert log["flow_time"].iloc[-1] == pytest.approx(flow_time, rel=1e-12)
    assert log["lr"].iloc[0] == pytest.approx(lrs[0], rel=1e-12)  # the first epoch's lr
    assert decayed_names(result.model, 2) == decayed


def test_final_record_equals_numpy_formulas_of_the_paper(digits):
    """The last record against the definitions written in numpy (DESIGN section 2, float64
    features of the final network, captured at the input of its last Linear layer): fn, the
    trace ratio, Papyan's tr(Sigma_W Sigma_B^+)/K, the paper's NC2 |cos + 1/(K-1)| and NC3
    1 - mean cos(w_c, mu_c), NC4 (argmax vs nearest class mean), MSE loss, accuracy."""
    phases = (Phase("ce", 2, "adam", 1e-2, 1e-4, batch_size=32),
              Phase("mse", 2, "sgd", 0.05, 1e-3, schedule="constant", batch_size=40))
    result = train(TrainConfig(depth=2, width=24, phases=phases, nc_every=2, seed=3), digits)
    row = result.log.iloc[-1]
    net = copy.deepcopy(result.model).double().eval()
    caught: list[torch.Tensor] = []
    net.classifier.register_forward_hook(lambda mod, args, out: caught.append(args[0]))
    with torch.no_grad():
        z = net(digits.x_train.double()).numpy()
    h, y, K = caught[0].numpy(), digits.y_train.numpy(), digits.classes
    W = net.classifier.weight.detach().numpy()
    mu = np.stack([h[y == c].mean(axis=0) for c in range(K)])
    M = mu - h.mean(axis=0)
    sigma_w = sum((h[y == c] - mu[c]).T @ (h[y == c] - mu[c]) for c in range(K)) / len(y)
    sigma_b = M.T @ M / K
    unit_m = M / np.linalg.norm(M, axis=1, keepdims=True)
    unit_w = W / np.linalg.norm(W, axis=1, keepdims=True)
    cos = unit_m @ unit_m.T
    nearest = ((h[:, None, :] - mu[None]) ** 2).sum(axis=2).argmin(axis=1)
    ref = {
        "fn": np.linalg.norm(h, axis=1).mean(),
        "nc1_trace": np.trace(sigma_w) / np.trace(sigma_b),
        "nc1": np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10, hermitian=True)) / K,
        "nc2_angle": np.abs(cos[~np.eye(K, dtype=bool)] + 1 / (K - 1)).mean(),
        "nc3_paper": 1 - (unit_w * unit_m).sum(axis=1).mean(),
        "nc4": (z.argmax(axis=1) != nearest).mean(),
        "loss": ((z - np.eye(K)[y]) ** 2).mean(),
        "accuracy": (z.argmax(axis=1) == y).mean(),
    }
    for name, value in ref.items():  # the record passes float32 features
        assert row[name] == pytest.approx(value, rel=2e-6, abs=1e-9), name
    assert row["phase"] == 2 and row["time"] == 4


def test_log_columns_follow_the_trajectory_table_order(digits):
    """DESIGN section 3: run_id, time, time_unit, phase, loss, fn, nc1, ... as a simulation's
    table (training logs had phase_loss, steps, flow_time and lr before the metrics and the loss
    after them); the training columns follow, for the stacked trainer too."""
    from ncsim.flow.simulate import RECORDED
    from ncsim.io import TRAJECTORY_KEYS
    from ncsim.metrics import METRIC_NAMES
    from ncsim.validate.stacked import train_stacked

    config = TrainConfig(depth=1, width=4, phases=(Phase("ce", 1, batch_size=64),), nc_every=1,
                         labels={"model": "mlp"})
    core = [*TRAJECTORY_KEYS, "loss", *METRIC_NAMES]
    assert [c for c in RECORDED if c != "objective"] == core[4:]
    tail = ["accuracy", "test_accuracy", "weight_norm", "phase_loss", "steps", "flow_time", "lr",
            "seed", "model"]
    for log in (train(config, digits).log, train_stacked(config, digits, [0])[0].log):
        columns = list(log.columns)
        assert columns[:len(core)] == core
        assert columns[-len(tail):] == tail


def test_records_use_eval_mode_features_of_batchnorm_networks():
    """ResNet-20's record (fn) is taken in eval mode: running statistics, not batch ones."""
    data = load_dataset("gaussian", per_class=2, classes=2, dim=4, seed=0)
    images = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    data = type(data)("tiny", images, data.y_train, images[:0], data.y_test[:0], 2)
    config = TrainConfig(arch="resnet20", phases=(Phase("ce", 1, "sgd", 0.0, 0.0,
                                                        batch_size=4),), nc_every=1)
    result = train(config, data)
    net = result.model.eval()
    with torch.no_grad():
        fn_eval = float(net.features(images).double().norm(dim=1).mean())
        fn_train = float(net.train().features(images).double().norm(dim=1).mean())
    assert result.log["fn"].iloc[-1] == pytest.approx(fn_eval, rel=1e-6)
    assert abs(fn_train - fn_eval) > 1e-3 * fn_eval


# ============================================================================= surrogate
@pytest.mark.parametrize("last", [0, 2])
def test_feature_velocities_equal_central_differences(digits, last):
    """dH/dt of the network's gradient flow (data and decay parts) against central finite
    differences of the features along -grad(nn.MSELoss) and -wd theta, in float64."""
    torch.manual_seed(1)
    net = build_network("mlp", digits.input_shape, 10, depth=2, width=12)
    index = balanced_subset(digits.y_train.numpy(), 1, 0)
    wd = 3e-2
    decayed = decayed_names(net, last)
    h, v_data, v_decay = sg.feature_velocities(net, digits, index, wd, decayed)
    ref = copy.deepcopy(net).double()
    x = digits.x_train.double()
    loss = ((ref(x) - F.one_hot(digits.y_train, 10).double()) ** 2).mean()
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    names = [name for name, _ in ref.named_parameters()]
    data_dir = [-g for g in grads]
    decay_dir = [-wd * p.detach() if decayed is None or name in decayed else torch.zeros_like(p)
                 for name, p in ref.named_parameters()]

    def features_at(direction: list[torch.Tensor], eps: float) -> np.ndarray:
        moved = copy.deepcopy(ref)
        with torch.no_grad():
            for p, d in zip(moved.parameters(), direction, strict=True):
                p += eps * d
        return moved.features(x[torch.as_tensor(index)]).detach().numpy().T

    eps = 1e-5
    for v, direction in ((v_data, data_dir), (v_decay, decay_dir)):
        fd = (features_at(direction, eps) - features_at(direction, -eps)) / (2 * eps)
        assert np.abs(fd - v).max() <= 1e-7 * np.abs(v).max()
    assert len(names) == 6
    if last == 2:  # features homogeneous of degree 1 in the decayed last hidden layer
        np.testing.assert_allclose(v_decay, -wd * h, rtol=0, atol=1e-14 * np.abs(h).max())


@pytest.mark.parametrize(("phase_kw", "word"), [
    ({"lr": "0.1"}, "lr must be a finite number"),
    ({"lr": True}, "lr must be a finite number"),
    ({"weight_decay": None}, "weight decay must be a finite number"),
    ({"gamma": "x"}, "gamma must be a finite number"),
    ({"momentum": "0.9"}, "momentum must be in"),
    ({"milestones": 5}, "milestones must be integers"),
])
def test_phase_fields_of_the_wrong_type_are_input_errors(phase_kw, word):
    """Wrong types from the Python API raised TypeError from math.isfinite or a comparison
    (or, for lr=True, were accepted)."""
    with pytest.raises(InputError, match=word):
        Phase(**phase_kw).validate()


@pytest.mark.parametrize(("config_kw", "word"), [
    ({"nc_min_accuracy": "0.9"}, "nc_min_accuracy must be a fraction"),
    ({"intervention_epoch": 1, "intervention_alpha": "2"}, "alpha must be a finite number"),
])
def test_config_fields_of_the_wrong_type_are_input_errors(config_kw, word):
    with pytest.raises(InputError, match=word):
        TrainConfig(**config_kw).validate()


@pytest.mark.parametrize("seeds", [[0.5, 1.5], ["a"], [-1], [2**31]])
def test_seeds_must_be_integers(seeds):
    """Fractional seeds were truncated silently (0.5, 1.5 trained seeds 0 and 1); text raised
    ValueError."""
    from ncsim.validate.stacked import check_seeds

    with pytest.raises(InputError, match=r"seeds must be integers in \[0, 2\^31\)"):
        check_seeds(TrainConfig(), seeds)
    assert check_seeds(TrainConfig(), [np.int64(2), 0]) == [2, 0]


def test_training_seed_beyond_2_to_the_31_is_refused():
    """torch keeps the low 32 bits of a seed: seed 2^32 + s would start as seed s does."""
    with pytest.raises(InputError, match=r"seed must be an integer in \[0, 2\^31\)"):
        TrainConfig(seed=2**32).validate()
    TrainConfig(seed=2**31 - 1).validate()


def test_cli_test_per_class_subsets_the_test_set(tmp_path):
    """--test-per-class reaches the dataset: the recorded data arguments (what the run
    loaded and what compare rebuilds) give K x test_per_class test samples."""
    import json

    out = tmp_path / "run"
    result = CliRunner().invoke(validate, [
        "train", "--dataset", "gaussian", "--per-class", "4", "--test-per-class", "3",
        "--epochs", "1,1", "--depth", "1", "--width", "8", "--batch-size", "16",
        "--nc-every", "1", "--no-progress", "--format", "json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    args = json.loads((out / "run.json").read_text())["config"]["data_args"]
    assert args["test_per_class"] == 3
    assert load_dataset(**args).y_test.numel() == 10 * 3
    assert load_dataset(**{**args, "test_per_class": None}).y_test.numel() > 10 * 3


def test_condition_label_names_resnet20_without_a_width():
    from ncsim.validate.cli import _condition_label

    assert _condition_label(TrainConfig(arch="resnet20", width=512)) == "resnet20"
    assert _condition_label(TrainConfig(arch="mlp", width=512)) == "mlp512"
