"""Values of the training side of the validation module against independent references:
optimiser set-up per phase, the paper presets, record timing around the intervention,
checkpoint contents, the onset rule of ``summarize``, normalisation statistics and the
networks' initialisation, last hidden layer and pooled features (tiny data, well under 2 s)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ncsim.validate.data import Dataset, load_dataset
from ncsim.validate.networks import build_network
from ncsim.validate.train import (
    Phase,
    TrainConfig,
    flow_time_factor,
    load_checkpoint,
    make_optimizer,
    nc_record,
    preset,
    summarize,
    train,
)


def frozen(epochs: int) -> tuple[Phase, ...]:
    """One phase at lr 0: the network never changes, so every record sees the same features
    unless the intervention rescales them."""
    return (Phase("mse", epochs, "sgd", 0.0, 0.0, momentum=0.0, schedule="constant",
                  batch_size=64),)


def mean_feature_norm(model: nn.Module, x: torch.Tensor) -> float:
    """fn = mean over samples of |h_i|, in float64, with h the features in eval mode."""
    model.eval()
    with torch.no_grad():
        h = model.features(x).double()
    return float(torch.linalg.vector_norm(h, dim=1).mean())


# ============================================================================= optimiser
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_uses_the_phases_momentum(blobs, nesterov):
    """Full-batch SGD with momentum 0.5 over three epochs against the momentum recursion
    written out: v <- m v + g, then theta <- theta - lr v (heavy ball) or
    theta <- theta - lr (g + m v) (Nesterov). A momentum other than the paper's 0.9 must be
    the one used; float32 steps of size ~1e-2 agree to 1e-6."""
    m, lr = 0.5, 0.2
    phase = Phase("ce", 3, "sgd", lr, 0.0, momentum=m, nesterov=nesterov, schedule="constant",
                  batch_size=64)
    config = TrainConfig(arch="mlp", depth=1, width=6, phases=(phase,), nc_every=3, seed=5)
    got = dict(train(config, blobs).model.named_parameters())
    torch.manual_seed(5)
    net = build_network("mlp", blobs.input_shape, 3, depth=1, width=6)
    velocity: dict[str, torch.Tensor] = {}
    for _ in range(3):
        net.zero_grad()
        F.cross_entropy(net(blobs.x_train), blobs.y_train).backward()
        with torch.no_grad():
            for name, p in net.named_parameters():
                g = p.grad.clone()
                velocity[name] = g if name not in velocity else m * velocity[name] + g
                p -= lr * (g + m * velocity[name] if nesterov else velocity[name])
    for name, p in net.named_parameters():
        torch.testing.assert_close(got[name].detach(), p.detach(), rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("momentum", [0.5, 0.9])
def test_flow_time_factor_is_the_steady_step_of_momentum_sgd(momentum, nesterov):
    """Under a constant gradient g, momentum SGD (heavy ball or Nesterov) settles to a step of
    lr g / (1 - m): the optimiser that ``make_optimizer`` builds moves by
    lr x flow_time_factor x g per step once m^steps is negligible (m^600 < 1e-27); the step is
    a difference of positions up to ~600 x larger, so float64 rounding leaves ~1e-12 of it."""
    lr, g = 0.01, 3.0
    phase = Phase("mse", 1, "sgd", lr, 0.0, momentum=momentum, nesterov=nesterov)
    theta = nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = make_optimizer([theta], phase)
    previous = 0.0
    for _ in range(600):
        opt.zero_grad()
        (g * theta).sum().backward()
        opt.step()
        value = float(theta.detach())
        step, previous = previous - value, value
    assert step == pytest.approx(lr * g * flow_time_factor(phase), rel=1e-10)
    assert flow_time_factor(phase) == pytest.approx(1.0 / (1.0 - momentum), rel=1e-15)


def test_paper_presets_set_the_papers_optimisers():
    """arXiv 2604.00230: ResNet-20 with SGD (Nesterov, momentum 0.9, lr 0.1, weight decay 1e-3,
    batch 128), x0.1 at epochs 100, 150 of 200 and 300, 450 of 600; MLP-5 of width 512 with Adam
    (lr 1e-3, weight decay 1e-4, cosine, batch 256) for 200 + 300 epochs. The optimiser built
    for a ResNet-20 phase is Nesterov SGD with those values."""
    res = preset("resnet20")
    assert res.arch == "resnet20" and [p.loss for p in res.phases] == ["ce", "mse"]
    assert [p.epochs for p in res.phases] == [200, 600]
    assert [p.milestones for p in res.phases] == [(100, 150), (300, 450)]
    for p in res.phases:
        assert (p.optimizer, p.lr, p.momentum, p.nesterov, p.weight_decay, p.schedule,
                p.gamma, p.batch_size, p.decay_last, p.warmup) == (
            "sgd", 0.1, 0.9, True, 1e-3, "step", 0.1, 128, 0, 0)
        group = make_optimizer([nn.Parameter(torch.zeros(1))], p).param_groups[0]
        assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, True, 1e-3)
    mlp = preset("mlp")
    assert (mlp.arch, mlp.depth, mlp.width) == ("mlp", 5, 512)
    assert [p.epochs for p in mlp.phases] == [200, 300]
    for p in mlp.phases:
        assert (p.optimizer, p.lr, p.weight_decay, p.schedule, p.batch_size) == (
            "adam", 1e-3, 1e-4, "cosine", 256)


def test_cpu_small_preset_is_the_documented_protocol():
    """``cpu-small``: MLP depth 4, width 128, records every 50 epochs; phase 1 CE with Adam
    (lr 1e-3, no decay, constant) for 50 full-batch steps; phase 2 MSE with heavy-ball SGD
    (lr 0.1, momentum 0.9, no Nesterov, constant after a 100-epoch warm-up) and weight decay
    2e-3 on the last two Linear layers for 4000 full-batch steps."""
    small = preset("cpu-small")
    assert (small.arch, small.depth, small.width, small.nc_every) == ("mlp", 4, 128, 50)
    one, two = small.phases
    assert (one.loss, one.epochs, one.optimizer, one.lr, one.weight_decay, one.schedule,
            one.warmup, one.decay_last) == ("ce", 50, "adam", 1e-3, 0.0, "constant", 0, 0)
    assert (two.loss, two.epochs, two.optimizer, two.lr, two.weight_decay, two.momentum,
            two.nesterov, two.schedule, two.warmup, two.decay_last) == (
        "mse", 4000, "sgd", 0.1, 2e-3, 0.9, False, "constant", 100, 2)
    # full batch at any training-set size (60,000 Fashion-MNIST images included): one step
    # per epoch, so 4000 epochs are 4000 steps whatever the data
    assert one.batch_size >= 2**31 - 1 and two.batch_size >= 2**31 - 1
    group = make_optimizer([nn.Parameter(torch.zeros(1))], two).param_groups[0]
    assert (group["momentum"], group["nesterov"]) == (0.9, False)


def test_preset_milestones_scale_to_the_nearest_epoch():
    """Shortened ResNet-20 protocol: milestone m of a phase of E epochs moves to m x e / E
    rounded to the nearest integer: 150 x 5 / 200 = 3.75 -> 4 and 450 x 9 / 600 = 6.75 -> 7
    (truncation would give 3 and 6)."""
    short = preset("resnet20", epochs=(5, 9))
    assert [p.epochs for p in short.phases] == [5, 9]
    assert short.phases[0].milestones[1] == 4
    assert short.phases[1].milestones[1] == 7


# ============================================================================= records
def test_records_skip_the_test_set_when_eval_test_is_off(blobs):
    """``eval_test=False``: every record's test_accuracy is NaN; with the default it is a
    fraction of the 6 test samples."""
    off = train(TrainConfig(arch="mlp", depth=1, width=4, phases=frozen(2), nc_every=1,
                            eval_test=False), blobs).log
    assert off["test_accuracy"].isna().all() and len(off) == 3
    on = train(TrainConfig(arch="mlp", depth=1, width=4, phases=frozen(2), nc_every=1),
               blobs).log
    assert on["test_accuracy"].notna().all()
    assert all(float(v * 6).is_integer() for v in on["test_accuracy"])


def test_stacked_records_skip_the_test_set_when_eval_test_is_off(blobs):
    """The vectorised loop honours ``eval_test=False`` as the separate training does: every
    record's test_accuracy is NaN for every seed."""
    from ncsim.validate.stacked import train_stacked

    config = TrainConfig(arch="mlp", depth=1, width=4, phases=frozen(2), nc_every=1,
                         eval_test=False)
    for run in train_stacked(config, blobs, [0, 1]):
        assert len(run.log) == 3 and run.log["test_accuracy"].isna().all()


def test_weight_norm_counts_parameters_not_buffers():
    """ResNet-20's weight_norm is the Euclidean norm of its parameters (convolutions,
    BatchNorm scales and shifts, classifier), written here as a float64 sum; BatchNorm running
    statistics and the feature-scale buffer are not parameters (the running variances alone,
    all ones at initialisation, would add 1 per BatchNorm channel to the squared norm)."""
    torch.manual_seed(0)
    net = build_network("resnet20", (1, 28, 28), 2)
    images = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 0, 1])
    data = Dataset("tiny", images, labels, images[:0], labels[:0], 2)
    squares = 0.0
    for p in net.parameters():
        squares += float(np.sum(p.detach().numpy().astype(np.float64) ** 2))
    row = nc_record(net, data, "ce", batch=4, test=False)
    assert row["weight_norm"] == pytest.approx(math.sqrt(squares), rel=1e-12)
    bn_channels = sum(m.num_features for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    assert math.sqrt(squares + bn_channels) > 1.01 * math.sqrt(squares)


def test_intervention_at_epoch_zero_precedes_the_first_record(blobs):
    """intervention_epoch = 0: the network initialised from the seed is rescaled before the
    epoch-0 record, so that record's fn is alpha x the fresh network's fn (computed here),
    which is fn_before_intervention; at lr 0 the later records repeat it."""
    alpha = 2.5
    config = TrainConfig(arch="mlp", depth=2, width=8, phases=frozen(2), nc_every=1, seed=3,
                         intervention_epoch=0, intervention_alpha=alpha)
    result = train(config, blobs)
    torch.manual_seed(3)
    fresh = mean_feature_norm(build_network("mlp", blobs.input_shape, 3, 2, 8), blobs.x_train)
    fn = result.log.set_index("time")["fn"]
    assert fn.index.tolist() == [0.0, 1.0, 2.0]
    assert result.fn_before_intervention == pytest.approx(fresh, rel=1e-6)
    assert fn[0.0] == pytest.approx(alpha * fresh, rel=1e-6)
    assert fn[2.0] == pytest.approx(fn[0.0], rel=1e-12)


def test_intervention_epoch_is_recorded_off_the_record_grid(blobs):
    """nc_every = 4 records epochs 0, 4 and the phase end 5; an intervention at epoch 3 adds a
    record of epoch 3 taken after the rescaling (fn x alpha at lr 0)."""
    config = TrainConfig(arch="mlp", depth=1, width=6, phases=frozen(5), nc_every=4,
                         intervention_epoch=3, intervention_alpha=0.5)
    log = train(config, blobs).log.set_index("time")
    assert log.index.tolist() == [0.0, 3.0, 4.0, 5.0]
    assert log.loc[3.0, "fn"] == pytest.approx(0.5 * log.loc[0.0, "fn"], rel=1e-6)


def test_intervention_at_the_last_epoch_rescales_the_final_record(blobs):
    """The intervention epoch may be the last epoch (it lies in [0, total]); the final record
    is then taken after the rescaling, and fn_before_intervention is the record before it."""
    config = TrainConfig(arch="mlp", depth=1, width=6, phases=frozen(2), nc_every=1,
                         intervention_epoch=2, intervention_alpha=3.0)
    result = train(config.validate(), blobs)
    fn = result.log.set_index("time")["fn"]
    assert result.fn_before_intervention == pytest.approx(fn[1.0], rel=1e-6)
    assert fn[2.0] == pytest.approx(3.0 * fn[1.0], rel=1e-6)


def test_checkpoints_hold_the_steps_and_flow_time_of_their_epoch(blobs, tmp_path):
    """A checkpoint saved at an epoch carries that epoch, its phase and the log's steps and
    flow_time of the same epoch: 12 samples in batches of 5 make 3 steps per epoch, lr 0.1
    gives flow_time 0.3 per epoch."""
    phase = Phase("ce", 3, "sgd", 0.1, 0.0, momentum=0.0, schedule="constant", batch_size=5)
    config = TrainConfig(arch="mlp", depth=1, width=4, phases=(phase,), nc_every=1,
                         checkpoint_dir=str(tmp_path), checkpoint_every=1)
    log = train(config, blobs).log.set_index("time")
    for epoch, name in ((1, "epoch00001.pt"), (2, "epoch00002.pt"), (3, "phase1_end.pt")):
        _, state = load_checkpoint(tmp_path / name)
        assert (state["epoch"], state["phase"]) == (epoch, 1)
        assert state["steps"] == int(log.loc[float(epoch), "steps"]) == 3 * epoch
        assert state["flow_time"] == log.loc[float(epoch), "flow_time"]
        assert state["flow_time"] == pytest.approx(0.3 * epoch, rel=1e-12)


def test_summarize_onset_is_the_first_phase2_record_below_the_threshold():
    """The paper's rule: the onset epoch is the time of the first phase-2 record whose
    nc1_trace is below the threshold (no interpolation between records), and fn* the fn of that
    record; a phase-1 record below it does not count."""
    log = pd.DataFrame({
        "run_id": "r", "time": [0.0, 10.0, 20.0, 30.0, 40.0, 50.0],
        "phase": [1, 1, 2, 2, 2, 2],
        "nc1_trace": [0.5, 0.005, 0.04, 0.02, 0.004, 0.002],
        "fn": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        "accuracy": [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]})
    out = summarize(log)
    assert out["onset_epoch"] == 40.0 and out["fn_star"] == 5.0
    assert out["status"] == "collapsed" and out["final_accuracy"] == 1.0
    assert out["nc1_start_phase2"] == 0.04


# ============================================================================= data
def test_normalisation_uses_the_unbiased_std_of_the_kept_training_samples():
    """Normalised inputs = (x - mean) / std with the mean and the unbiased (ddof = 1) std of all
    values of the training samples kept, written in numpy from the raw data; the test set gets
    the training statistics. On 4 x 3 values the biased std would be sqrt(12/11) = 1.044 times
    smaller, far outside float32 rounding."""
    kw = dict(per_class=2, classes=2, dim=3, seed=4, test_per_class=1)
    raw = load_dataset("gaussian", normalize=False, **kw)
    norm = load_dataset("gaussian", **kw)
    x = raw.x_train.double().numpy()
    mean, std = x.mean(), x.std(ddof=1)
    np.testing.assert_allclose(norm.x_train.numpy(), (x - mean) / std, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norm.x_test.numpy(), (raw.x_test.double().numpy() - mean) / std,
                               rtol=1e-5, atol=1e-6)
    assert torch.equal(norm.y_train, raw.y_train) and torch.equal(norm.y_test, raw.y_test)


# ============================================================================= networks
def test_initialisation_follows_kaiming_normal():
    """MLP Linear weights: Kaiming normal for ReLU over the fan-in, std sqrt(2 / fan_in);
    ResNet-20 convolutions: Kaiming normal over the fan-out, std sqrt(2 / (out x k x k)).
    The sample std of every tensor (seeded) lies within 20% of its target; the smallest tensor
    (the 1-channel stem, 144 weights) has a relative standard error of 6%, and the wrong fan
    would be 2x (MLP input layer, fan-in 64 against fan-out 256) or 4x (stem) off."""
    torch.manual_seed(0)
    mlp = build_network("mlp", (1, 8, 8), 10, depth=2, width=256)
    for m in mlp.modules():
        if isinstance(m, nn.Linear):
            target = math.sqrt(2.0 / m.in_features)
            assert float(m.weight.detach().std()) == pytest.approx(target, rel=0.2)
    res = build_network("resnet20", (1, 28, 28), 10)
    convs = [m for m in res.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 21
    for m in convs:
        k = m.kernel_size[0] * m.kernel_size[1]
        target = math.sqrt(2.0 / (m.out_channels * k))
        assert float(m.weight.detach().std()) == pytest.approx(target, rel=0.2), m


def test_mlp_intervention_rescales_only_the_last_hidden_layer():
    """With non-zero biases everywhere (a trained network has them), rescaling scales the
    features by alpha exactly only when it is the last hidden Linear layer that is scaled
    (ReLU is positively homogeneous); every other layer is left unchanged."""
    torch.manual_seed(1)
    net = build_network("mlp", (1, 6), 3, depth=3, width=5).double()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear):
                m.bias.normal_()
    linears = [m for m in net.body if isinstance(m, nn.Linear)]
    assert net.last_hidden is linears[-1]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(7, 1, 6, dtype=torch.float64)
    with torch.no_grad():
        h = net.features(x)
        net.rescale_last_hidden(1.7)
        torch.testing.assert_close(net.features(x), 1.7 * h, rtol=1e-12, atol=1e-12)
    changed = [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == ["body.5.weight", "body.5.bias"]


def test_resnet20_block_adds_the_shortcut_before_its_last_relu():
    """He et al.'s basic block, written out with functional ops in eval mode:
    relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x)), with the projection shortcut
    bn(conv1x1 stride 2) where the shape changes and the identity elsewhere. Random BatchNorm
    statistics and affine values make every term visible."""
    torch.manual_seed(3)
    net = build_network("resnet20", (3, 32, 32), 4).double().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()

    def bn(m: nn.BatchNorm2d, u: torch.Tensor) -> torch.Tensor:
        scale = m.weight / torch.sqrt(m.running_var + m.eps)
        return ((u - m.running_mean[:, None, None]) * scale[:, None, None]
                + m.bias[:, None, None])

    for block, shape in ((net.blocks[1], (2, 16, 8, 8)), (net.blocks[3], (2, 16, 8, 8))):
        x = torch.randn(*shape, dtype=torch.float64)
        with torch.no_grad():
            u = torch.relu(bn(block.bn1, F.conv2d(x, block.conv1.weight,
                                                  stride=block.conv1.stride, padding=1)))
            u = bn(block.bn2, F.conv2d(u, block.conv2.weight, padding=1))
            if isinstance(block.shortcut, nn.Identity):
                short = x
            else:
                conv, norm = block.shortcut
                short = bn(norm, F.conv2d(x, conv.weight, stride=2))
            torch.testing.assert_close(block(x), torch.relu(u + short), rtol=1e-12,
                                       atol=1e-12)
    assert isinstance(net.blocks[1].shortcut, nn.Identity)
    assert not isinstance(net.blocks[3].shortcut, nn.Identity)


def test_resnet20_features_are_the_global_average_of_the_last_stage():
    """ResNet-20's 64-d features are the spatial mean of the last block's output (8 x 8 maps
    for 32 x 32 inputs), computed here from a hook on the last block, in eval mode."""
    torch.manual_seed(2)
    net = build_network("resnet20", (3, 32, 32), 4).eval()
    seen: dict[str, torch.Tensor] = {}
    net.blocks[-1].register_forward_hook(lambda _m, _i, out: seen.update(maps=out))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        feats = net.features(x)
    maps = seen["maps"]
    assert maps.shape == (3, 64, 8, 8)
    torch.testing.assert_close(feats, maps.mean(dim=(2, 3)), rtol=1e-6, atol=1e-7)


def test_a_diverging_training_logs_nan_records_instead_of_failing():
    """SGD at lr 1e3 on a small Gaussian task: the weights blow up within three epochs. Every
    epoch is still logged (loss, fn and nc1_trace NaN once they overflow) instead of the
    training ending on torch's eigh error inside the NC record, which lost the whole log."""
    data = load_dataset("gaussian", per_class=20, classes=4, dim=8, separation=4.0, seed=0)
    step = {"optimizer": "sgd", "lr": 1e3, "weight_decay": 0.0, "momentum": 0.0,
            "nesterov": False, "schedule": "constant", "batch_size": 80}
    config = TrainConfig(arch="mlp", depth=3, width=16, nc_every=1, seed=1,
                         phases=(Phase("ce", 3, **step), Phase("mse", 3, **step)))
    log = train(config, data).log
    assert list(log["time"]) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert math.isfinite(log["nc1_trace"].iloc[0])
    assert log[["loss", "fn", "nc1_trace"]].iloc[-4:].isna().all().all()
