"""Strict values of the training side of the validation module, against schedules and
formulas written out here: the lr, steps and flow_time columns of the step and cosine
schedules and of the warm-up (separate and stacked seeds), the warm-up of a shortened preset,
a training resumed from a checkpoint, checkpointed configurations and ResNet-20's feature
scale, repeated rescaling of the last hidden layer, the per-channel normalisation (constant
channels included), IDX file names and float32 elements and independent Gaussian test draws
(tiny data, well under 2 s each)."""

from __future__ import annotations

import json
import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ncsim.errors import InputError
from ncsim.validate.data import Dataset, load_dataset, read_idx
from ncsim.validate.networks import build_network
from ncsim.validate.stacked import train_stacked
from ncsim.validate.train import (
    BATCH_ORDER_OFFSET,
    Phase,
    TrainConfig,
    decayed_names,
    load_checkpoint,
    make_optimizer,
    nc_record,
    preset,
    train,
)


def sgd_phase(epochs: int, lr: float, **kw) -> Phase:
    """Plain full-batch SGD on the 12 blobs (one step per epoch), no decay, no momentum."""
    base = {"loss": "ce", "epochs": epochs, "optimizer": "sgd", "lr": lr, "weight_decay": 0.0,
            "momentum": 0.0, "batch_size": 64}
    return Phase(**{**base, **kw})


def tiny(phases: tuple[Phase, ...], **kw) -> TrainConfig:
    return TrainConfig(arch="mlp", depth=1, width=4, phases=phases, nc_every=1, **kw)


def flow_times(lrs: list[float]) -> list[float]:
    """flow_time of the records 0, 1, ... with one step per epoch: partial sums of the lrs."""
    return [0.0] + [float(v) for v in np.cumsum(lrs)]


# ============================================================================= lr schedules
def test_step_schedule_columns_follow_gamma_at_each_milestone(blobs):
    """Step schedule without warm-up, lr 0.2, gamma 0.5, milestones 1 and 3 over 5 epochs:
    epoch e (from 0) trains at 0.2 x 0.5^(number of milestones <= e) = 0.2, 0.1, 0.1, 0.05,
    0.05. The record after epoch e shows the next epoch's lr (the phase end: the schedule's
    next value, 0.05), flow_time the sum of the lrs used, steps one per epoch. Products of
    0.2 and powers of two are exact up to one rounding (rel 1e-12)."""
    phase = sgd_phase(5, 0.2, schedule="step", milestones=(1, 3), gamma=0.5)
    log = train(tiny((phase,)), blobs).log
    used = [0.2, 0.1, 0.1, 0.05, 0.05]
    assert log["time"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert log["steps"].tolist() == [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose(log["lr"], used + [0.05], rtol=1e-12)
    np.testing.assert_allclose(log["flow_time"], flow_times(used), rtol=1e-12)


def test_cosine_records_end_the_phase_at_zero_lr_and_the_next_phase_starts_fresh(blobs):
    """Cosine over 4 epochs at lr 0.1: epoch e trains at 0.05 (1 + cos(pi e / 4)); the record
    at the phase end shows the finished cosine's next value, 0 (not the next phase's lr), and
    the second phase (constant 0.03) records 0.03. flow_time sums the lrs actually used
    (0.1 + 0.0854 + 0.05 + 0.0146 = 0.25 over the cosine, then 0.03 per epoch)."""
    cosine = [0.05 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    phases = (sgd_phase(4, 0.1, schedule="cosine"),
              sgd_phase(2, 0.03, loss="mse", schedule="constant"))
    log = train(tiny(phases), blobs).log
    assert log["phase"].tolist() == [1, 1, 1, 1, 1, 2, 2]
    np.testing.assert_allclose(log["lr"].iloc[:4], cosine, rtol=1e-12)
    assert log["lr"].iloc[4] == pytest.approx(0.0, abs=1e-15)
    np.testing.assert_allclose(log["lr"].iloc[5:], [0.03, 0.03], rtol=1e-12)
    np.testing.assert_allclose(log["flow_time"], flow_times(cosine + [0.03, 0.03]), rtol=1e-12)
    assert log["flow_time"].iloc[4] == pytest.approx(0.25, rel=1e-12)


def test_warmup_lr_column_starts_at_the_first_ramped_epoch(blobs):
    """Warm-up of 2 epochs on a constant lr 0.3: epochs train at 0.3 x (e + 1) / 3 = 0.1, 0.2,
    then 0.3. The epoch-0 record carries the lr of the first epoch, 0.1 (the ramped one, not
    the phase's nominal 0.3), and so do the stacked seeds' logs."""
    phase = sgd_phase(3, 0.3, schedule="constant", warmup=2)
    used = [0.1, 0.2, 0.3]
    expected_lr = [0.1, 0.2, 0.3, 0.3]
    log = train(tiny((phase,)), blobs).log
    np.testing.assert_allclose(log["lr"], expected_lr, rtol=1e-12)
    np.testing.assert_allclose(log["flow_time"], flow_times(used), rtol=1e-12)
    for run in train_stacked(tiny((phase,)), blobs, [0, 1]):
        np.testing.assert_allclose(run.log["lr"], expected_lr, rtol=1e-12)
        np.testing.assert_allclose(run.log["flow_time"], flow_times(used), rtol=1e-12)


@pytest.mark.parametrize(("epochs", "warmup"), [(30, 1), (70, 2), (520, 13)])
def test_shortened_preset_warmup_rounds_to_the_nearest_epoch(epochs, warmup):
    """cpu-small's 100-epoch warm-up of a 4000-epoch phase, stretched to E epochs, lasts
    100 x E / 4000 epochs rounded to the nearest integer: 0.75 -> 1, 1.75 -> 2, 13.0 -> 13
    (truncation would give 0, 1 and 13; 0 would drop the warm-up altogether)."""
    assert preset("cpu-small", epochs=(50, epochs)).phases[1].warmup == warmup


# ============================================================================= checkpoints
def test_training_resumed_from_a_checkpoint_ends_where_the_uninterrupted_one_does(blobs,
                                                                                   tmp_path):
    """Nesterov SGD (momentum 0.9, coupled decay, a milestone at epoch 3), 3 steps per epoch:
    the network and optimiser state of the epoch-2 checkpoint, stepped by hand through
    epochs 2 and 3 (lr 0.1 then 0.05, the batch order's generator replayed past two epochs),
    give bit for bit the final parameters of the uninterrupted training and its last
    record. The momentum buffers matter: a fresh optimiser from the same weights ends
    elsewhere."""
    phase = Phase("ce", 4, "sgd", 0.1, 1e-3, momentum=0.9, nesterov=True, schedule="step",
                  milestones=(3,), gamma=0.5, batch_size=5)
    config = TrainConfig(arch="mlp", depth=2, width=6, phases=(phase,), nc_every=1, seed=2,
                         checkpoint_dir=str(tmp_path), checkpoint_every=2)
    result = train(config, blobs)

    def resume(with_state: bool) -> tuple[nn.Module, int, float]:
        model, state = load_checkpoint(tmp_path / "epoch00002.pt")
        assert state["epoch"] == 2
        model.train()
        opt = make_optimizer(model.named_parameters(), phase, decayed_names(model, 0))
        if with_state:
            opt.load_state_dict(state["optimizer"])
        gen = torch.Generator().manual_seed(config.seed + BATCH_ORDER_OFFSET)
        for _ in range(2):
            torch.randperm(12, generator=gen)
        steps, flow = state["steps"], state["flow_time"]
        for lr in (0.1, 0.05):
            for group in opt.param_groups:
                group["lr"] = lr
            perm = torch.randperm(12, generator=gen)
            for start in range(0, 12, 5):
                idx = perm[start:start + 5]
                loss = F.cross_entropy(model(blobs.x_train[idx]), blobs.y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps, flow = steps + 1, flow + lr
        return model, steps, flow

    model, steps, flow = resume(True)
    for (name, p), (_, q) in zip(result.model.named_parameters(), model.named_parameters(),
                                 strict=True):
        assert torch.equal(p, q), name
    last = result.log.iloc[-1]
    assert last["time"] == 4.0 and last["steps"] == steps == 12
    assert last["flow_time"] == pytest.approx(flow, rel=1e-12)
    row = nc_record(model, blobs, "ce", batch=64)
    for name in ("loss", "fn", "nc1_trace", "nc2_angle", "accuracy", "weight_norm"):
        assert row[name] == last[name], name
    fresh, _, _ = resume(False)
    gap = max(float((p - q).detach().abs().max())
              for p, q in zip(result.model.parameters(), fresh.parameters(), strict=True))
    assert gap > 1e-4


def test_checkpoint_every_counts_epochs_from_the_start_of_training(blobs, tmp_path):
    """checkpoint_every = 2 over phases of 3 + 3 epochs: checkpoints at the global epochs 2
    and 4 and at both phase ends (3, 6), in that order, each holding its epoch, phase and the
    log's steps (one per epoch) of that epoch; a count restarted at the phase start would
    save epoch 5 instead of 4."""
    phases = (sgd_phase(3, 0.1, schedule="constant"),
              sgd_phase(3, 0.1, loss="mse", schedule="constant"))
    result = train(tiny(phases, checkpoint_dir=str(tmp_path), checkpoint_every=2), blobs)
    names = ["epoch00002.pt", "phase1_end.pt", "epoch00004.pt", "phase2_end.pt"]
    assert [p.name for p in result.checkpoints] == names
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    for name, epoch, phase_no in zip(names, (2, 3, 4, 6), (1, 1, 2, 2), strict=True):
        _, state = load_checkpoint(tmp_path / name)
        assert (state["epoch"], state["phase"], state["steps"]) == (epoch, phase_no, epoch)


def test_checkpoint_and_json_configs_round_trip_to_the_training_config(blobs, tmp_path):
    """The configuration stored in a checkpoint rebuilds the one trained, and so does its
    dict written as JSON (where the step milestones become lists): from_dict gives back
    Phase milestones as tuples, so the rebuilt config equals the original, for the paper's
    ResNet-20 protocol too."""
    phase = sgd_phase(2, 0.1, schedule="step", milestones=(1,))
    config = tiny((phase,), checkpoint_dir=str(tmp_path))
    train(config, blobs)
    _, state = load_checkpoint(tmp_path / "phase1_end.pt")
    assert TrainConfig.from_dict(state["config"]) == config
    for original in (config, preset("resnet20")):
        text = json.loads(json.dumps(original.to_dict()))
        assert isinstance(text["phases"][0]["milestones"], list)
        rebuilt = TrainConfig.from_dict(text)
        assert rebuilt == original
        assert all(isinstance(p.milestones, tuple) for p in rebuilt.phases)


def test_resnet20_checkpoint_keeps_the_intervention(tmp_path):
    """ResNet-20 rescales its pooled features with a buffer: after the intervention (alpha 3
    at epoch 1, lr 0) the record's fn is 3 x fn_before_intervention (float32 rounding: rel
    1e-5), and the checkpoint written after it rebuilds a network whose record repeats the
    log's (same state, same computation), not the unscaled fn / 3."""
    images = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 0, 1])
    data = Dataset("tiny", images, labels, images[:0], labels[:0], 2)
    frozen = sgd_phase(1, 0.0, schedule="constant")
    config = TrainConfig(arch="resnet20", phases=(frozen,), nc_every=1, eval_test=False,
                         intervention_epoch=1, intervention_alpha=3.0,
                         checkpoint_dir=str(tmp_path))
    result = train(config, data)
    fn = float(result.log["fn"].iloc[-1])
    assert fn == pytest.approx(3.0 * result.fn_before_intervention, rel=1e-5)
    model, _ = load_checkpoint(tmp_path / "phase1_end.pt")
    assert nc_record(model, data, "ce", batch=4, test=False)["fn"] == pytest.approx(fn,
                                                                                   rel=1e-12)


# ============================================================================= networks
@pytest.mark.parametrize(("arch", "shape"), [("mlp", (1, 6)), ("cnn", (1, 8, 8)),
                                             ("resnet20", (1, 28, 28))])
def test_rescaling_twice_multiplies_the_factors(arch, shape):
    """rescale_last_hidden(alpha) multiplies the features by alpha, so alpha = 2 then 1.5
    gives 3 x the features on every network (float64, eval mode; ReLU is positively
    homogeneous, so only rounding separates them). Random biases make the MLP's bias count."""
    torch.manual_seed(4)
    net = build_network(arch, shape, 3, depth=2, width=5).double().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear):
                m.bias.normal_()
        x = torch.randn(3, *shape, dtype=torch.float64)
        before = net.features(x)
        net.rescale_last_hidden(2.0)
        net.rescale_last_hidden(1.5)
        torch.testing.assert_close(net.features(x), 3.0 * before, rtol=1e-12, atol=1e-12)


# ============================================================================= stacked
@pytest.mark.parametrize("what", ["intervention", "checkpoints", "amp"])
def test_seeds_refuse_what_stacking_cannot_do_on_every_device(blobs, tmp_path, what):
    """Several seeds (one after another on the CPU, vectorised elsewhere) refuse an
    intervention, checkpoints and mixed precision alike, instead of silently dropping them
    on an accelerator."""
    extra = {"intervention": {"intervention_epoch": 1, "intervention_alpha": 2.0},
             "checkpoints": {"checkpoint_dir": str(tmp_path)}, "amp": {"amp": True}}[what]
    config = tiny((sgd_phase(1, 0.1),), **extra)
    with pytest.raises(InputError, match="no intervention, checkpoints or mixed precision"):
        train(config, blobs, seeds=[0, 1])
    with pytest.raises(InputError, match="no intervention, checkpoints or mixed precision"):
        train_stacked(config, blobs, [0, 1])
    assert not any(tmp_path.iterdir())


# ============================================================================= data
def write_cifar(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 python batches (2 training images per batch, 3 test images) whose planes have
    different ranges: R constant 200, G over 0..255, B over 0..15. Returns the raw uint8
    images (train, test) as (N, 3, 32, 32)."""
    rng = np.random.default_rng(3)
    out = []
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        n = 3 if name == "test_batch" else 2
        planes = np.stack([np.full((n, 1024), 200), rng.integers(0, 256, (n, 1024)),
                           rng.integers(0, 16, (n, 1024))], axis=1).astype(np.uint8)
        with open(root / name, "wb") as handle:
            pickle.dump({b"data": planes.reshape(n, 3072), b"labels": [(i + k) % 3
                                                                       for k in range(n)]},
                        handle)
        out.append(planes.reshape(n, 3, 32, 32))
    return np.concatenate(out[:5]), out[5]


def test_normalisation_is_per_channel_and_leaves_constant_channels_at_zero(tmp_path):
    """Each channel is standardised with its own mean and unbiased std over the training
    images and pixels (numpy, float64, from the raw bytes); the test images get the training
    statistics. A constant channel (std 0) becomes 0, not NaN. One pooled mean and std for
    all channels would leave channel means ~ -1.1, 0.5 and -1.3 (values 200, ~128, ~7.5)."""
    raw_train, raw_test = write_cifar(tmp_path)
    d = load_dataset("cifar10", root=tmp_path)
    x, xt = raw_train.astype(np.float64), raw_test.astype(np.float64)
    assert torch.equal(d.x_train[:, 0], torch.zeros(10, 32, 32))
    assert torch.equal(d.x_test[:, 0], torch.zeros(3, 32, 32))
    for c in (1, 2):
        mean, std = x[:, c].mean(), x[:, c].std(ddof=1)
        np.testing.assert_allclose(d.x_train[:, c].numpy(), (x[:, c] - mean) / std,
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(d.x_test[:, c].numpy(), (xt[:, c] - mean) / std,
                                   rtol=1e-5, atol=1e-5)


def idx_file(array: np.ndarray, code: int, fmt: str) -> bytes:
    """IDX bytes: 0, 0, element type, ndim, big-endian uint32 sizes, big-endian elements."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=fmt).tobytes()


def test_idx_float32_elements_are_big_endian(tmp_path):
    """Element type 0x0D is a big-endian float32: 1.5 is 3f c0 00 00, -2 is c0 00 00 00."""
    (tmp_path / "f").write_bytes(b"\x00\x00\x0d\x01" b"\x00\x00\x00\x02"
                                 b"\x3f\xc0\x00\x00" b"\xc0\x00\x00\x00")
    out = read_idx(tmp_path / "f")
    assert out.tolist() == [1.5, -2.0] and out.dtype == np.dtype(">f4")


def test_idx_files_named_with_a_dot_before_idx_are_found(tmp_path):
    """Some MNIST copies name the files ``train-images.idx3-ubyte`` (a dot, not a dash, before
    ``idx``), compressed or not; they load as the dash-named files do, every image and label
    in file order (no subset, no normalisation)."""
    import gzip

    rng = np.random.default_rng(1)
    x_tr = rng.integers(0, 256, (6, 4, 5), dtype=np.uint8)
    x_te = rng.integers(0, 256, (3, 4, 5), dtype=np.uint8)
    y_tr, y_te = np.arange(6, dtype=np.uint8) % 3, np.arange(3, dtype=np.uint8)
    (tmp_path / "train-images.idx3-ubyte").write_bytes(idx_file(x_tr, 0x08, ">u1"))
    (tmp_path / "train-labels.idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_file(y_tr, 0x08, ">u1")))
    (tmp_path / "t10k-images.idx3-ubyte.gz").write_bytes(
        gzip.compress(idx_file(x_te, 0x08, ">u1")))
    (tmp_path / "t10k-labels.idx1-ubyte").write_bytes(idx_file(y_te, 0x08, ">u1"))
    d = load_dataset("mnist", root=tmp_path, normalize=False)
    np.testing.assert_array_equal(d.x_train[:, 0].numpy(), x_tr)
    np.testing.assert_array_equal(d.x_test[:, 0].numpy(), x_te)
    assert d.y_train.tolist() == y_tr.tolist() and d.y_test.tolist() == y_te.tolist()


def test_gaussian_test_samples_are_fresh_draws():
    """The test set shares the class means but not the noise: test minus training sample
    (same position, same class) is the difference of two independent N(0, I) vectors, of
    variance 2 per coordinate. Over 3 x 2000 x 4 values the sample variance has a relative
    standard error of sqrt(2 / 24000) ~ 0.9%; 5% is > 5 standard errors, and a test set that
    repeated the training samples would give 0."""
    d = load_dataset("gaussian", per_class=2000, classes=3, dim=4, seed=5, normalize=False)
    diff = (d.x_test - d.x_train).double().numpy()
    assert torch.equal(d.y_test, d.y_train)
    assert diff.var() == pytest.approx(2.0, rel=0.05)
    assert abs(diff.mean()) < 5 * math.sqrt(2.0 / diff.size)


# ============================================================================= intervention
@pytest.mark.parametrize("act", ["tanh", "gelu", "silu"])
def test_intervention_is_refused_for_activations_it_cannot_rescale(act):
    """Scaling the last hidden layer's weight and bias by alpha multiplies act(z) by alpha
    only for a positively homogeneous act; for tanh, gelu and silu the features would change
    by another factor (tanh at alpha 3: 1.34x on the cpu-small data), so the configuration is
    refused, naming the activations that work."""
    with pytest.raises(InputError, match=r"only for a positively homogeneous activation "
                                         r"\(linear, relu, leaky_relu\); with activation "
                                         f"'{act}'"):
        tiny((sgd_phase(2, 0.1),), activation=act, intervention_epoch=1,
             intervention_alpha=3.0).validate()
    tiny((sgd_phase(2, 0.1),), activation=act).validate()  # without the intervention: fine


@pytest.mark.parametrize("act", ["linear", "relu", "leaky_relu"])
def test_intervention_multiplies_fn_by_alpha_for_homogeneous_activations(blobs, act):
    """lr 0, intervention alpha 3 at epoch 1: the record taken after it has fn = 3 x
    fn_before_intervention (float32 features: rel 1e-5)."""
    frozen = sgd_phase(1, 0.0, schedule="constant")
    result = train(tiny((frozen,), activation=act, intervention_epoch=1,
                        intervention_alpha=3.0, eval_test=False), blobs)
    assert float(result.log["fn"].iloc[-1]) == pytest.approx(
        3.0 * result.fn_before_intervention, rel=1e-5)


def test_cli_refuses_an_intervention_with_tanh(tmp_path):
    from cli_helpers import error_line, invoke

    line = error_line(invoke(["validate", "train", "--preset", "cpu-small", "--epochs", "1,1",
                              "--activation", "tanh", "--intervene-epoch", "1", "--alpha", "3",
                              "--out", str(tmp_path / "x")]))
    assert "positively homogeneous activation (linear, relu, leaky_relu)" in line
    assert not (tmp_path / "x").exists()
