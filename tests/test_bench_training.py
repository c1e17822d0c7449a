"""V1: the DataLoader training peer against ncsim's training loop, and the V1 benchmark."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from click.testing import CliRunner

from ncsim.bench import _benchmarks, bench, bench_v1
from ncsim.validate.data import FASHION_DIR, Dataset, load_dataset
from ncsim.validate.train import BATCH_ORDER_OFFSET, Phase, TrainConfig, preset, train

_benchmarks()  # puts the source tree's ``benchmarks`` package on the path
from benchmarks import training_peer as peer  # noqa: E402
from benchmarks.workloads import V1_SIZES, v1  # noqa: E402

needs_fashion = pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", per_class=12, test_per_class=4)


def _mlp(phases: tuple[Phase, ...]) -> TrainConfig:
    return TrainConfig(arch="mlp", depth=3, width=32, phases=phases, nc_every=1)


def test_sampler_draws_the_batch_order_of_ncsims_loop():
    sampler = peer.EpochPermutations(10, seed=7 + BATCH_ORDER_OFFSET)
    gen = torch.Generator().manual_seed(7 + BATCH_ORDER_OFFSET)
    for _ in range(3):  # one fresh permutation per epoch, as train() draws them
        assert list(sampler) == torch.randperm(10, generator=gen).tolist()
    assert len(sampler) == 10


@pytest.mark.parametrize("phases", [
    (Phase("ce", 2, "adam", 1e-3, 1e-4, schedule="cosine", batch_size=32),
     Phase("mse", 2, "adam", 1e-3, 1e-4, schedule="cosine", batch_size=32)),
    (Phase("ce", 3, "sgd", 0.05, 1e-3, schedule="step", milestones=(1,), batch_size=50),
     Phase("mse", 2, "sgd", 0.05, 1e-3, momentum=0.0, schedule="constant", batch_size=50)),
])
def test_dataloader_loop_trains_exactly_as_ncsim(digits, phases):
    config = _mlp(phases)
    ours = train(config, digits).log
    theirs = peer.dataloader_training(config, digits)
    assert ours["time"].tolist() == theirs["time"].tolist() == [0.0, 1, 2, 3, 4, 5][
        :sum(p.epochs for p in phases) + 1]
    assert ours["phase"].tolist() == theirs["phase"].tolist()
    # the same computation: only the metric sums differ (streaming float64 against one batch)
    assert peer.log_difference(ours, theirs) < 1e-10
    assert ours["loss"].iloc[-1] != ours["loss"].iloc[0]  # it did train


def test_dataloader_loop_matches_a_batchnorm_network():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(30) % 3
    images = torch.randn(30, 1, 28, 28, generator=gen) + labels.view(-1, 1, 1, 1)
    data = Dataset("blobs", images, labels, images[:6], labels[:6], 3)
    config = preset("resnet20", epochs=(1, 1), nc_every=1)  # SGD, Nesterov, step schedule
    config = dataclasses.replace(config, phases=tuple(
        dataclasses.replace(p, batch_size=8, lr=0.01) for p in config.phases))
    ours = train(config, data).log
    theirs = peer.dataloader_training(config, data)
    assert peer.log_difference(ours, theirs) < 1e-10


def test_log_difference_sees_every_kind_of_mismatch(digits):
    config = _mlp((Phase("ce", 1, batch_size=64), Phase("mse", 1, batch_size=64)))
    log = peer.dataloader_training(config, digits)
    assert peer.log_difference(log, log.copy()) == 0.0
    shifted = log.copy()
    shifted.loc[2, "nc1_trace"] *= 1.01
    assert peer.log_difference(shifted, log) == pytest.approx(0.01)
    assert peer.log_difference(shifted, log, rows=2) == 0.0  # the first two records agree
    # entry by entry: 5% off on the smallest value of a column is 5%, however large the rest
    small = log.copy()
    smallest = int(log["within_energy"].abs().idxmin())
    small.loc[smallest, "within_energy"] *= 1.05
    assert peer.log_difference(small, log) == pytest.approx(0.05)
    for bad in (math.nan, math.inf):  # a NaN or inf of one log only is a mismatch, both ways
        holed = log.copy()
        holed.loc[1, "nc2_etf"] = bad
        assert peer.log_difference(holed, log) == math.inf
        assert peer.log_difference(log, holed) == math.inf
    both = log.copy()
    both.loc[1, "nc2_etf"] = math.nan
    assert peer.log_difference(both, both.copy()) == 0.0
    assert peer.log_difference(log.iloc[:2], log) == math.inf
    other = log.copy()
    other.loc[2, "accuracy"] = log["accuracy"].iloc[-1] - 0.25
    assert peer.final_accuracy_difference(other, log) == pytest.approx(0.25)


def test_protocol_columns_match_ncsim_and_catch_a_wrong_schedule(digits):
    config = _mlp((Phase("ce", 2, "sgd", 0.05, schedule="step", milestones=(1,),
                         batch_size=50),))
    ours, theirs = train(config, digits).log, peer.dataloader_training(config, digits)
    assert peer.protocol_mismatch(ours, theirs) == []
    assert theirs["steps"].tolist() == [0, 3, 6] and theirs["lr"].tolist()[-1] == 0.05 * 0.1
    late = dataclasses.replace(config, phases=(dataclasses.replace(config.phases[0],
                                                                   milestones=(2,)),))
    assert peer.protocol_mismatch(ours, peer.dataloader_training(late, digits)) == ["lr"]
    assert peer.protocol_mismatch(ours, theirs.iloc[:2]) == ["time"]


def test_dataloader_loop_refuses_what_it_does_not_do(digits):
    warm = _mlp((Phase("ce", 2, warmup=1),))
    with pytest.raises(ValueError, match="warm-up"):
        peer.dataloader_training(warm, digits)
    adamw = _mlp((Phase("ce", 1, "adamw"),))
    with pytest.raises(ValueError, match="adam or sgd"):
        peer.dataloader_training(adamw, digits)


def test_v1_cases_follow_the_paper_presets():
    cases = {c.name: c for c in v1("full")}
    assert set(cases) == {"mlp5", "resnet20", "mlp5_seeds4"}
    mlp = cases["mlp5"].config
    assert (mlp.arch, mlp.depth, mlp.width, mlp.nc_every) == ("mlp", 5, 512, 1)
    assert [p.loss for p in mlp.phases] == ["ce", "mse"]
    res = cases["resnet20"].config
    assert res.phases[0].optimizer == "sgd" and res.phases[0].batch_size == 128
    assert cases["mlp5_seeds4"].seeds == (0, 1, 2, 3)
    gpu = {c.name: c for c in v1("full", "cuda")}
    assert gpu["mlp5"].per_class is None and gpu["mlp5"].config.device == "cuda"
    assert gpu["mlp5_seeds8"].seeds == tuple(range(8))
    assert set(V1_SIZES) == {"full", "full-gpu", "small", "tiny"}


@needs_fashion
def test_v1_benchmark_checks_and_times_both_loops():
    rows = bench_v1("tiny", 1, "cpu", lambda m: None)
    assert [r["case"] for r in rows] == ["mlp5", "resnet20", "mlp5_seeds2"]
    for row in rows:
        assert "error" not in row["dataloader"], row["dataloader"]
        assert row["speedup"] == pytest.approx(row["dataloader"]["median_s"]
                                               / row["ncsim"]["median_s"])
    assert rows[0]["max_rel_diff"] < 1e-10 and rows[1]["max_rel_diff"] < 1e-10
    stacked = rows[2]  # on the CPU the seeds run one by one: their logs are exact too
    assert stacked["seeds"] == 2 and stacked["max_rel_diff"] < 1e-10
    first = rows[0]  # the epoch time is what the records leave of the training's time
    assert first["nc_record_s"] > 0
    if first["epoch_s"] > 0:
        assert first["tracking_overhead_nc_every_10"] == pytest.approx(
            first["nc_record_s"] / (10 * first["epoch_s"]), rel=1e-12)
    else:  # timing noise: the records, timed again, took the whole training time
        assert math.isnan(first["epoch_s"]) and math.isnan(first["tracking_overhead_nc_every_10"])
    assert "nc_record_s" not in stacked
    json.dumps(rows)


@needs_fashion
def test_a_training_peer_that_disagrees_is_reported_not_fatal(monkeypatch):
    real = peer.dataloader_training

    def drifting(config, data):
        log = real(config, data)
        log["loss"] = log["loss"] * 1.5
        return log

    monkeypatch.setattr(peer, "dataloader_training", drifting)
    rows = bench_v1("tiny", 1, "cpu", lambda m: None)
    assert all("differs from ncsim's" in r["dataloader"]["error"] for r in rows[:2])
    assert all("speedup" not in r for r in rows[:2])


def test_cli_v1_without_the_data_exits_with_a_clear_line(tmp_path):
    result = CliRunner().invoke(bench, ["--workload", "V1", "--size", "tiny", "--repeats",
                                        "1", "--data-root", str(tmp_path), "--out",
                                        str(tmp_path / "r.json")])
    assert result.exit_code == 2
    assert "dataset-fashion-mnist" in result.output
    assert not (tmp_path / "r.json").exists()


def test_v1_stacked_case_compares_each_seed_with_its_own_peer_run(digits):
    from ncsim.bench import _check_training

    case = dataclasses.replace(v1("tiny")[-1], seeds=(0, 1))
    config = _mlp((Phase("ce", 1, batch_size=64), Phase("mse", 1, batch_size=64)))
    logs = [peer.dataloader_training(dataclasses.replace(config, seed=s), digits)
            for s in (0, 1)]
    row: dict = {}
    _check_training(case, logs, [log.copy() for log in logs], row, peer, exact=False)
    assert row == {"first_record_rel_diff": 0.0, "trend_rel_diff": 0.0,
                   "final_accuracy_diff": 0.0}
    swapped = [logs[1], logs[0]]  # seed 1's start is not seed 0's
    with pytest.raises(AssertionError, match="differs from ncsim's"):
        _check_training(case, logs, swapped, {}, peer, exact=False)
    ours, late = [log.copy() for log in logs], [log.copy() for log in logs]
    ours[1].loc[ours[1].index[-1], "accuracy"] = 0.90
    late[1].loc[late[1].index[-1], "accuracy"] = 0.84  # 7% off (loose), 0.06 absolute
    with pytest.raises(AssertionError, match="final training accuracies"):
        _check_training(case, ours, late, {}, peer, exact=False)
    rescheduled = [log.copy() for log in logs]
    rescheduled[0]["lr"] *= 2.0  # a loop with another learning rate: caught even when loose
    with pytest.raises(AssertionError, match="lr differ"):
        _check_training(case, logs, rescheduled, {}, peer, exact=False)
    drifted = [log.copy() for log in logs]
    drifted[0].loc[drifted[0].index[-1], "nc1"] *= 1.5  # a late record: only exact sees it
    loose: dict = {}
    _check_training(case, logs, drifted, loose, peer, exact=False)
    assert set(loose) == {"first_record_rel_diff", "trend_rel_diff", "final_accuracy_diff"}
    with pytest.raises(AssertionError, match="differs from ncsim's"):
        _check_training(case, logs, drifted, {}, peer, exact=True)
    # a loop that trains otherwise (its loss 20% off after the start) fails even when loose
    off = [log.copy() for log in logs]
    off[1].loc[off[1].index[1:], "loss"] *= 1.2
    with pytest.raises(AssertionError, match="loss, fn or accuracy"):
        _check_training(case, logs, off, {}, peer, exact=False)
    nan = [log.copy() for log in logs]
    nan[1].loc[nan[1].index[-1], "accuracy"] = math.nan
    with pytest.raises(AssertionError):
        _check_training(case, logs, nan, {}, peer, exact=False)


def test_tracking_cost_separates_the_epoch_time_or_says_it_cannot(monkeypatch):
    """Epoch time = (training time - records x record time) / epochs; overhead at nc_every = 10
    = record / (10 epochs). When the records, timed again, exceed the training time (noise on
    a tiny training) both are NaN instead of a negative epoch time."""
    import ncsim.bench as bench_mod

    monkeypatch.setattr(bench_mod, "timed", lambda f, repeats, device: ({"median_s": 0.5}, None))
    config = dataclasses.replace(_mlp((Phase(epochs=2),)), eval_test=False)
    result = type("Result", (), {"config": config, "model": None, "log": [0, 1, 2, 3]})()
    data = type("Data", (), {"to": lambda self, device: self})()
    cost = bench_mod._tracking_cost(result, data, 3, "cpu", total_s=10.0)
    assert cost == {"nc_record_s": 0.5, "epoch_s": 4.0,
                    "tracking_overhead_nc_every_10": 0.5 / 40.0}
    cost = bench_mod._tracking_cost(result, data, 3, "cpu", total_s=1.5)
    assert cost["nc_record_s"] == 0.5
    assert math.isnan(cost["epoch_s"]) and math.isnan(cost["tracking_overhead_nc_every_10"])


def test_v1_data_is_checked_before_any_workload_runs(tmp_path, monkeypatch):
    """W1 and V1 without the Fashion-MNIST files: the error comes before W1 is timed (a full
    W1 takes minutes), exit status 2, no JSON."""
    import ncsim.bench as bench_mod

    timed = []
    monkeypatch.setattr(bench_mod, "bench_w1", lambda *a, **k: timed.append("W1") or [])
    result = CliRunner().invoke(bench, ["--workload", "W1", "--workload", "V1", "--size",
                                        "tiny", "--repeats", "1", "--data-root", str(tmp_path),
                                        "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 2 and "missing train-images-idx3-ubyte" in result.output
    assert timed == [] and not (tmp_path / "r.json").exists()
