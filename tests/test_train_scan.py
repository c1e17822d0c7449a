"""Scan of ncsim.validate.data / train / networks over odd and extreme inputs.

Held invariants: records equal a naive numpy reference of the DESIGN definitions, a diverged
run reports no onset, steps and flow time, record epochs, bit-identical seeds. Fixed findings:
IDX headers whose size wraps 2^64 or that declare more than 64 dimensions, empty IDX splits,
a huge label (set(range(K)) and a megabyte message), NaN / inf / float32-overflowing float
images, a gaussian separation past float32, an lr or weight decay past float32 in torch's
optimisers, ResNet-20 batches of one sample on a one-position last stage, one sample per
class (NC1 = 0 untrained, a fake onset), and the accuracy of NaN logits (argmax read 1/K).
"""

from __future__ import annotations

import math
import struct
import warnings

import numpy as np
import pytest
import torch

from ncsim.errors import InputError
from ncsim.validate.data import Dataset, balanced_subset, load_dataset, read_idx
from ncsim.validate.train import (
    Phase,
    TrainConfig,
    accuracy,
    build_model,
    extract,
    nc_record,
    summarize,
    train,
)


def _idx(code: int, shape: tuple[int, ...], payload: bytes = b"") -> bytes:
    """An IDX file: magic 0 0 code ndim, big-endian dims, then the payload."""
    return (bytes([0, 0, code, len(shape)]) + b"".join(struct.pack(">I", s) for s in shape)
            + payload)


def _idx_folder(root, n_train: int, n_test: int, classes: int = 3, side: int = 2,
                train_labels=None, label_code: int = 0x08, image_code: int = 0x08,
                images=None):
    """MNIST-style folder of the four IDX files (uint8 images unless ``images`` is given)."""
    root.mkdir(exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % classes
        if split == "train" and train_labels is not None:
            labels = np.asarray(train_labels)
        pixels = (np.arange(n * side * side) % 251).astype(np.uint8).tobytes() \
            if images is None else images(n)
        (root / f"{split}-images-idx3-ubyte").write_bytes(
            _idx(image_code, (n, side, side), pixels))
        dtype = {0x08: ">u1", 0x0C: ">i4"}[label_code]
        (root / f"{split}-labels-idx1-ubyte").write_bytes(
            _idx(label_code, (n,), labels.astype(dtype).tobytes()))
    return root


def _gauss(per_class: int = 6, classes: int = 3, dim: int = 4) -> Dataset:
    return load_dataset("gaussian", per_class=per_class, classes=classes, dim=dim, seed=0)


def _one_phase(loss: str = "ce", epochs: int = 2, optimizer: str = "sgd", lr: float = 0.1,
               wd: float = 0.0, batch: int = 8) -> tuple[Phase, ...]:
    return (Phase(loss, epochs, optimizer, lr, wd, schedule="constant", batch_size=batch),)


def _naive_nc(h, y, K, W):
    """DESIGN section 2 definitions, written out in numpy (float64)."""
    n = len(y)
    mu = np.stack([h[y == c].mean(0) for c in range(K)])
    mbar = mu - h.mean(0)
    d = h - mu[y]
    sigma_w = d.T @ d / n
    sigma_b = mbar.T @ mbar / K
    gram = mbar @ mbar.T
    target = (np.eye(K) - 1 / K) / math.sqrt(K - 1)
    wc = W - W.mean(0)
    norms = np.linalg.norm(mbar, axis=1)
    var = np.array([np.mean(np.sum((h[y == c] - mu[c]) ** 2, 1)) for c in range(K)])
    pairs = [(var[i] + var[j]) / (2 * np.sum((mu[i] - mu[j]) ** 2))
             for i in range(K) for j in range(i + 1, K)]
    return {
        "fn": np.linalg.norm(h, axis=1).mean(),
        "nc1": np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10, hermitian=True)) / K,
        "nc1_trace": np.trace(sigma_w) / np.trace(sigma_b),
        "nc2_etf": np.linalg.norm(gram / np.linalg.norm(gram) - target),
        "nc2_equinorm": norms.std(ddof=1) / norms.mean(),
        "nc3": np.sum((wc / np.linalg.norm(wc) - mbar / np.linalg.norm(mbar)) ** 2),
        "cdnv": np.mean(pairs),
        "within_energy": np.trace(sigma_w),
        "class_mean_norm": norms.mean(),
    }


# ----------------------------------------------------------------------------- held invariants
@pytest.mark.parametrize("classes, width, act", [(2, 1, "linear"), (5, 1, "tanh"),
                                                 (5, 3, "tanh"), (2, 7, "tanh")])
def test_records_match_a_naive_reference_at_narrow_widths(classes, width, act):
    """A record's NC metrics equal the DESIGN formulas on the stored features, p < K-1 too."""
    data = _gauss(per_class=7, classes=classes, dim=5)
    config = TrainConfig(depth=1, width=width, activation=act, nc_every=1, eval_batch=8,
                         phases=_one_phase("mse", lr=0.05, wd=1e-3))
    result = train(config, data)
    h, _ = extract(result.model, data.x_train, 8)
    W = result.model.classifier.weight.detach().double().numpy()
    ref = _naive_nc(h.double().numpy(), data.y_train.numpy(), classes, W)
    row = result.log.iloc[-1]
    for name, value in ref.items():
        assert row[name] == pytest.approx(value, rel=1e-8, abs=1e-12), name


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_a_diverged_run_records_nan_and_reports_no_onset(loss):
    """lr 1e3: loss and nc1_trace NaN, fn not finite at the end; summarize finds no onset."""
    phases = (Phase("ce", 1, "sgd", 0.1, 0.0, schedule="constant", batch_size=8),
              Phase(loss, 2, "sgd", 1e3, 0.0, schedule="constant", batch_size=8))
    log = train(TrainConfig(depth=2, width=8, nc_every=1, phases=phases), _gauss()).log
    last = log.iloc[-1]
    assert math.isnan(last["loss"]) and math.isnan(last["nc1_trace"])
    assert not math.isfinite(last["fn"])
    out = summarize(log)
    assert math.isnan(out["onset_epoch"]) and math.isnan(out["fn_star"])
    assert out["status"] != "collapsed"


def test_a_batch_larger_than_the_dataset_is_one_full_batch():
    """batch_size > n and batch_size = n give the same log: one step per epoch."""
    data = _gauss()
    n = data.x_train.shape[0]
    logs = [train(TrainConfig(depth=1, width=4, nc_every=1, phases=_one_phase(batch=b)),
                  data).log for b in (n, n + 1, 2**31 - 1)]
    assert logs[0]["steps"].tolist() == [0, 1, 2]
    for other in logs[1:]:
        assert other.equals(logs[0])


@pytest.mark.parametrize("batch", [1, 5, 17, 18])
def test_steps_are_ceil_n_over_batch_and_flow_time_lr_times_steps(batch):
    """Every epoch takes ceil(n / b) steps; at a constant lr, flow_time = lr x steps."""
    data = _gauss()  # n = 18
    log = train(TrainConfig(depth=1, width=4, nc_every=1, phases=_one_phase(lr=0.3,
                                                                          batch=batch)),
                data).log
    per_epoch = math.ceil(18 / batch)
    assert log["steps"].tolist() == [0, per_epoch, 2 * per_epoch]
    assert log["flow_time"].to_numpy() == pytest.approx(0.3 * log["steps"].to_numpy(), rel=1e-12)


def test_nc_every_beyond_the_run_records_epoch_zero_and_phase_ends_once():
    """nc_every > total epochs: records at epoch 0 and at each phase end, no time twice."""
    phases = (Phase("ce", 2, "sgd", 0.1, 0.0, schedule="constant", batch_size=8),
              Phase("mse", 3, "sgd", 0.1, 0.0, schedule="constant", batch_size=8))
    log = train(TrainConfig(depth=1, width=4, nc_every=10**9, phases=phases), _gauss()).log
    assert list(zip(log["time"], log["phase"], strict=True)) == [(0.0, 1), (2.0, 1), (5.0, 2)]


def test_same_seed_gives_bit_identical_logs_at_extreme_shapes():
    """Width 1, batch 1, K = 2: the same seed twice gives the same log bit for bit."""
    import pandas as pd

    torch.set_num_threads(1)
    data = _gauss(per_class=4, classes=2, dim=3)
    config = TrainConfig(depth=3, width=1, nc_every=1, phases=_one_phase("mse", batch=1))
    pd.testing.assert_frame_equal(train(config, data).log, train(config, data).log,
                                  check_exact=True)


def test_an_empty_test_set_gives_nan_test_accuracy():
    """A Dataset with no test samples trains and records test_accuracy NaN."""
    g = _gauss()
    data = Dataset("notest", g.x_train, g.y_train, g.x_train[:0], g.y_train[:0], 3)
    log = train(TrainConfig(depth=1, width=4, nc_every=1, phases=_one_phase()), data).log
    assert log["test_accuracy"].isna().all() and log["accuracy"].notna().all()


def test_a_huge_declared_idx_shape_is_truncated_without_allocating(tmp_path):
    """Header (2^32-1)^3 with no data: InputError 'truncated', nothing of that size made."""
    path = tmp_path / "huge"
    path.write_bytes(_idx(0x08, (2**32 - 1,) * 3))
    with pytest.raises(InputError, match="truncated"):
        read_idx(path)


def test_idx_zero_items_read_as_empty_plain_and_gzip(tmp_path):
    """A 0-item IDX file reads as an empty array of its shape, plain or gzip-compressed."""
    import gzip

    blob = _idx(0x08, (0, 28, 28))
    (tmp_path / "a").write_bytes(blob)
    (tmp_path / "b").write_bytes(gzip.compress(blob))
    for name in ("a", "b"):
        assert read_idx(tmp_path / name).shape == (0, 28, 28)


# ----------------------------------------------------------------------------- findings
@pytest.mark.parametrize("shape", [(2**22, 2**21, 2**21), (2**16,) * 4])
def test_an_idx_header_whose_size_overflows_is_an_input_error(tmp_path, shape):
    """A header whose element count passes 2^64 is an InputError, not a ValueError."""
    path = tmp_path / "wrap"
    path.write_bytes(_idx(0x08, shape))
    with pytest.raises(InputError):
        read_idx(path)


def test_an_idx_file_of_65_dimensions_is_an_input_error(tmp_path):
    """IDX allows 255 dimensions, numpy 64: more is an InputError naming the file."""
    path = tmp_path / "deep"
    path.write_bytes(_idx(0x08, (1,) * 65, b"\x07"))
    with pytest.raises(InputError, match="deep"):
        read_idx(path)


@pytest.mark.parametrize("test_per_class", [None, 2])
def test_an_empty_idx_test_split_loads_or_is_an_input_error(tmp_path, test_per_class):
    """A valid 0-item t10k split: an empty test set or an InputError, never a ValueError."""
    root = _idx_folder(tmp_path / "d", 12, 0)
    try:
        data = load_dataset("mnist", root=root, test_per_class=test_per_class)
    except InputError:
        return
    assert data.x_test.shape[0] == 0 and data.classes == 3


def test_an_empty_idx_training_split_is_an_input_error(tmp_path):
    """No training samples: an InputError, without warnings."""
    root = _idx_folder(tmp_path / "d", 0, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError):
            load_dataset("mnist", root=root)


def test_one_huge_label_is_refused_with_a_short_message(tmp_path):
    """Labels 0, 1, 10^6 in an int32 IDX file: an InputError of reasonable length."""
    root = _idx_folder(tmp_path / "d", 3, 3, train_labels=[0, 1, 10**6], label_code=0x0C)
    with pytest.raises(InputError) as err:
        load_dataset("mnist", root=root)
    assert len(str(err.value)) < 2000


@pytest.mark.parametrize("value", [1e300, math.nan, math.inf])
def test_non_finite_or_overflowing_idx_pixels_are_refused(tmp_path, value):
    """Float64 IDX images of 1e300, NaN or inf: an InputError naming the file, no warning."""
    root = _idx_folder(tmp_path / "d", 6, 6, image_code=0x0E,
                       images=lambda n: np.full((n, 2, 2), value, ">f8").tobytes())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match="images"):
            load_dataset("mnist", root=root)


def test_a_gaussian_separation_beyond_float32_is_refused():
    """separation past float32's range: an InputError rather than an overflow warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError):
            load_dataset("gaussian", per_class=2, classes=2, dim=2, separation=1e300)


@pytest.mark.parametrize("optimizer, lr, wd", [("sgd", 1e39, 0.0), ("adam", 3.4e38, 0.0),
                                               ("sgd", 0.1, 1e39)])
def test_an_lr_or_decay_beyond_float32_is_an_input_error_or_trains(optimizer, lr, wd):
    """lr or weight decay past float32: an InputError, or a run that records (NaN) values."""
    config = TrainConfig(depth=1, width=4, phases=_one_phase(optimizer=optimizer, lr=lr, wd=wd,
                                                             epochs=1))
    try:
        log = train(config, _gauss()).log
    except InputError:
        return
    assert len(log) == 2


@pytest.mark.parametrize("batch", [1, 5])
def test_resnet20_on_4x4_images_with_a_batch_of_one(batch):
    """4x4 images, a one-sample batch: an InputError or a finished run, not a ValueError."""
    x = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    config = TrainConfig(arch="resnet20", phases=(Phase("ce", 1, "sgd", 0.1, 0.0,
                                                        batch_size=batch),))
    try:
        log = train(config, Dataset("tiny", x, y, x, y, 2)).log
    except InputError:
        return
    assert len(log) == 2


def test_resnet20_on_8x8_images_takes_a_last_batch_of_one():
    """Digits-sized 8x8 inputs: a last batch of one sample trains (2x2 last stage)."""
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    config = TrainConfig(arch="resnet20", phases=(Phase("ce", 1, "sgd", 0.1, 0.0,
                                                        batch_size=5),))
    log = train(config, Dataset("tiny", x, y, x, y, 2)).log
    assert log["steps"].tolist() == [0, 2]


def test_one_sample_per_class_is_no_collapse():
    """per_class = 1, lr 0: no onset is reported (or the set is refused)."""
    data = _gauss(per_class=1, classes=3, dim=4)
    phases = (Phase("ce", 1, "sgd", 0.0, 0.0, schedule="constant"),
              Phase("mse", 2, "sgd", 0.0, 0.0, schedule="constant"))
    try:
        log = train(TrainConfig(depth=1, width=8, nc_every=1, phases=phases), data).log
    except InputError:
        return
    assert summarize(log)["status"] != "collapsed"


def test_the_accuracy_of_nan_logits_is_not_chance():
    """A network with NaN classifier weights records NaN accuracies, not the share of class 0."""
    data = _gauss()
    model = build_model(TrainConfig(depth=2, width=8), data)
    with torch.no_grad():
        model.classifier.weight.fill_(math.nan)
    values = nc_record(model, data, "ce", 7, test=True)
    assert math.isnan(values["accuracy"]) and math.isnan(values["test_accuracy"])
    assert math.isnan(values["loss"])


def test_accuracy_counts_infinite_logits_by_their_order():
    """Infinite (not NaN) logits still decide: +inf at the label is a hit, elsewhere a miss."""
    logits = torch.tensor([[math.inf, 0.0], [0.0, -math.inf], [1.0, math.inf]])
    assert accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3, rel=0, abs=0)


def test_balanced_subset_of_no_samples_without_a_count_is_empty():
    """per_class None on an empty label array gives no indices."""
    assert balanced_subset(np.zeros(0, np.int64), None, 0).shape == (0,)


def test_missing_classes_are_named_below_k_and_counted_past_ten():
    """The message names the missing classes in 0..K-1 only, the first ten, then a count."""
    from ncsim.validate.data import _require_every_class_trained

    with pytest.raises(InputError, match=r"class 1, 3, 4 \(K = 6"):
        _require_every_class_trained(np.array([0, 2, 5]), 6, "x")
    with pytest.raises(InputError, match=r"class 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 and 999988 more"):
        _require_every_class_trained(np.array([0, 1, 10**6]), 10**6 + 1, "x")


def test_stacked_training_refuses_one_sample_per_class_too():
    """train_stacked (the accelerator path of seeds) applies the same data checks as train."""
    from ncsim.validate.stacked import train_stacked

    config = TrainConfig(depth=1, width=4, phases=_one_phase(epochs=1))
    with pytest.raises(InputError, match="at most one training sample"):
        train_stacked(config, _gauss(per_class=1), [0, 1])


def test_a_schedule_growing_past_float32_is_refused_before_training():
    """A step schedule with gamma > 1 is bounded by its peak lr, gamma < 1 by lr alone."""
    grow = Phase("ce", 4, "sgd", 1e20, 0.0, schedule="step", milestones=(1, 2), gamma=1e6)
    with pytest.raises(InputError, match=r"reaches 10\^32"):
        grow.validate()
    Phase("ce", 4, "sgd", 1e30, 0.0, schedule="step", milestones=(1, 2), gamma=1e-6).validate()
    Phase("ce", 4, "sgd", 1e20, 0.0, schedule="cosine", milestones=(1, 2), gamma=1e6).validate()


def test_a_run_that_diverges_to_nan_is_summarised_diverged():
    """MSE at lr 100 ends with a NaN loss: status diverged, final_fn the last finite fn."""
    log = train(TrainConfig(depth=2, width=8, nc_every=1,
                            phases=_one_phase("mse", lr=100.0, epochs=2)), _gauss()).log
    assert math.isnan(log["loss"].iloc[-1])
    out = summarize(log)
    finite_fn = log["fn"][np.isfinite(log["fn"])]
    assert out["status"] == "diverged"
    assert out["final_fn"] == float(finite_fn.iloc[-1])


@pytest.mark.parametrize("loss, fn, status", [
    ([1.0, 0.5, math.nan], [1.0, 1.0, math.nan], "diverged"),
    ([1.0, 0.5, math.inf], [1.0, 1.0, 1.0], "diverged"),
    ([1.0, 0.5, 0.2], [1.0, 1.0, math.inf], "diverged"),
    ([math.nan, math.nan, math.nan], [1.0, 1.0, 1.0], "not_collapsed"),
    ([1.0, 0.5, 0.2], [1.0, 1.0, math.nan], "not_collapsed"),
])
def test_divergence_is_read_from_the_last_loss_after_finite_ones_or_an_infinite_fn(
        loss, fn, status):
    """A blank loss column or a blank last fn decides nothing; a NaN loss after finite ones or
    an infinite fn is a divergence."""
    import pandas as pd

    log = pd.DataFrame({"run_id": "r", "time": [0.0, 1.0, 2.0], "phase": 1, "loss": loss,
                        "fn": fn, "nc1_trace": [1.0, 0.5, 0.4], "accuracy": 1.0})
    assert summarize(log)["status"] == status


def test_a_phase_of_more_than_1e7_epochs_is_refused():
    """epochs 2^64 (it would never end) is an InputError naming the bound; 1e7 is accepted."""
    with pytest.raises(InputError, match="epochs per phase must be at most 1e\\+07"):
        Phase("ce", 2**64, "sgd", 0.1, 0.0).validate()
    Phase("ce", 10**7, "sgd", 0.1, 0.0).validate()


def test_ended_diverged_of_no_records_or_one_record_decides_nothing():
    """No records, or a single record with a NaN loss (no finite loss before it): not diverged."""
    import pandas as pd

    from ncsim.validate.analysis import ended_diverged

    assert not ended_diverged(pd.DataFrame({"fn": [], "loss": []}))
    assert not ended_diverged(pd.DataFrame({"fn": [1.0], "loss": [math.nan]}))
    assert ended_diverged(pd.DataFrame({"fn": [1.0, math.inf], "loss": [1.0, 1.0]}))
