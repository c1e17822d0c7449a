"""Mutation probes of the validation training pieces: the IDX reader's magic bytes, ResNet-20's
28x28 padding rule, and small contracts of the training helpers that no other test pinned."""

from __future__ import annotations

import struct

import numpy as np
import pandas as pd
import pytest
import torch

from ncsim.errors import InputError
from ncsim.validate.data import load_dataset, read_idx
from ncsim.validate.networks import ResNet20, build_network
from ncsim.validate.train import (
    Phase,
    TrainConfig,
    extract,
    flow_time_factor,
    nc_record,
    summarize,
)


def _idx(array: np.ndarray, magic: bytes = b"\x00\x00") -> bytes:
    """IDX bytes of a uint8 array with the given first two (magic) bytes."""
    header = magic + bytes([0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype="u1").tobytes()


@pytest.mark.parametrize("magic", [b"\x00\x01", b"\x01\x00", b"\x00\xff"])
def test_read_idx_refuses_either_magic_byte_off_zero(tmp_path, magic):
    """An IDX file starts with two zero bytes; a nonzero first or second byte is no IDX file
    (the rest of the header being a valid one does not make it one)."""
    path = tmp_path / "labels"
    path.write_bytes(_idx(np.array([7, 8], np.uint8), magic))
    with pytest.raises(InputError, match=r"labels is not an IDX file"):
        read_idx(path)
    path.write_bytes(_idx(np.array([7, 8], np.uint8)))
    assert read_idx(path).tolist() == [7, 8]


def _stem_input_shape(model: ResNet20, x: torch.Tensor) -> tuple[int, ...]:
    seen = []
    handle = model.stem[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape))
    with torch.no_grad():
        model.features(x)
    handle.remove()
    return tuple(seen[0])


@pytest.mark.parametrize(("size", "stem"), [
    ((28, 28), (2, 1, 32, 32)), ((28, 30), (2, 1, 28, 30)), ((30, 28), (2, 1, 30, 28)),
    ((32, 32), (2, 1, 32, 32)), ((8, 8), (2, 1, 8, 8)),
])
def test_resnet20_zero_pads_only_28_by_28_images(size, stem):
    """Only 28x28 images (MNIST's) are zero-padded to 32x32; an image with one side 28 and
    the other not is used as it is."""
    torch.manual_seed(0)
    model = ResNet20(1, 10).eval()
    assert _stem_input_shape(model, torch.randn(2, 1, *size)) == stem


@pytest.mark.parametrize("training", [False, True])
def test_extract_and_nc_record_restore_the_models_mode(training):
    """extract and nc_record run the network in eval mode and hand it back in the mode it came
    in (an eval-mode network stays in eval mode, BatchNorm layers included)."""
    data = load_dataset("gaussian", per_class=4, test_per_class=2, classes=3, dim=4, seed=0)
    torch.manual_seed(0)
    model = build_network("cnn", data.input_shape, data.classes, width=8)
    model.train(training)
    feats, logits = extract(model, data.x_train, batch=5)
    assert feats.shape == (12, 8) and logits.shape == (12, 3)
    assert all(m.training == training for m in model.modules())
    nc_record(model, data, "ce", batch=5)
    assert all(m.training == training for m in model.modules())


def test_summarize_reports_the_last_accuracy_and_the_first_finite_phase2_nc1():
    """final_accuracy is the last record's training accuracy (not the best one), and
    nc1_start_phase2 the first phase-2 record whose metric is not NaN (records below
    nc_min_accuracy leave it empty)."""
    log = pd.DataFrame({
        "time": [0.0, 1.0, 2.0, 3.0, 4.0],
        "phase": [1, 1, 2, 2, 2],
        "fn": [1.0, 2.0, 3.0, 3.5, 4.0],
        "accuracy": [0.5, 1.0, 0.8, 1.0, 0.9],
        "nc1_trace": [0.9, 0.7, np.nan, 0.5, 0.005],
    })
    out = summarize(log)
    assert out["final_accuracy"] == 0.9
    assert out["nc1_start_phase2"] == 0.5
    shuffled = summarize(log.iloc[[3, 0, 4, 2, 1]])  # rows out of time order: read in order
    assert shuffled == out


def test_step_matching_caps_the_warmup_below_the_rescaled_phase():
    """A phase of 10 epochs with 9 warm-up epochs shrunk to 2 epochs keeps a warm-up of 1
    epoch (round(9 x 0.2) = 2 would fill the phase, which validate refuses); the rescaled
    configuration validates."""
    config = TrainConfig(phases=(Phase(epochs=10, warmup=9, batch_size=10),),
                         reference_train_size=20)
    small = config.validate().for_train_size(100)
    assert small.phases[0].epochs == 2 and small.phases[0].warmup == 1
    small.validate()


def test_step_matching_rounds_the_intervention_epoch_to_the_nearest():
    """An intervention at epoch 9 of a 10-epoch phase shrunk to 2 epochs moves to
    round(9 x 2 / 10) = round(1.8) = 2, not to the floor 1; in the second phase of a
    (10, 10) -> (2, 2) rescaling, epoch 17 moves to 2 + round(1.4) = 3."""
    one = TrainConfig(phases=(Phase(epochs=10, batch_size=10),), intervention_epoch=9,
                      reference_train_size=20)
    assert one.validate().for_train_size(100).intervention_epoch == 2
    two = TrainConfig(phases=(Phase(epochs=10, batch_size=10), Phase("mse", 10, batch_size=10)),
                      intervention_epoch=17, reference_train_size=20)
    assert two.validate().for_train_size(100).intervention_epoch == 3


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_flow_time_factor_is_nan_for_adaptive_optimisers(optimizer):
    """Adam and AdamW steps have no gradient-flow time: NaN whatever the momentum field says;
    plain SGD without momentum: 1."""
    assert np.isnan(flow_time_factor(Phase(optimizer=optimizer, momentum=0.0)))
    assert np.isnan(flow_time_factor(Phase(optimizer=optimizer, momentum=0.9)))
    assert flow_time_factor(Phase(optimizer="sgd", momentum=0.0)) == 1.0
