"""Second mutation probe of ncsim.validate.train / stacked: decayed parameter names, the
accuracy gate of the log's NC columns and the nc_min_accuracy range."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from data_helpers import gaussian_dataset

from ncsim.errors import InputError
from ncsim.metrics import METRIC_NAMES
from ncsim.validate.networks import build_network
from ncsim.validate.train import (
    Phase,
    TrainConfig,
    decayed_names,
    log_row,
    preset,
    train,
)


def test_decayed_names_of_a_small_mlp_are_the_last_linear_layers_by_hand():
    """MLP depth 3 has Linear layers body.1, body.3, body.5, classifier: the last k of them."""
    net = build_network("mlp", (6,), 3, 3, 4, "relu")
    assert decayed_names(net, 0) is None
    assert decayed_names(net, 1) == {"classifier.weight", "classifier.bias"}
    assert decayed_names(net, 2) == {"body.5.weight", "body.5.bias",
                                     "classifier.weight", "classifier.bias"}
    every = {name for name, _ in net.named_parameters()}
    assert decayed_names(net, 4) == every


def test_decay_last_beyond_the_linear_layers_is_refused():
    """decay_last = 5 on a network of 4 Linear layers is an InputError, not a silent 'all'."""
    net = build_network("mlp", (6,), 3, 3, 4, "relu")
    with pytest.raises(InputError, match="decay_last = 5 but the network has only 4 Linear"):
        decayed_names(net, 5)
    phases = (Phase("ce", 1, "sgd", 0.1, 1e-2, batch_size=12, decay_last=5),)
    config = TrainConfig(depth=3, width=4, phases=phases, nc_every=1, eval_test=False)
    with pytest.raises(InputError, match="only 4 Linear layers"):
        train(config, gaussian_dataset())


def test_cnn_decay_counts_linear_layers_only_not_convolutions():
    """A CNN has two Linear layers (hidden, classifier); its convolutions never count."""
    net = build_network("cnn", (1, 8, 8), 3, 2, 4, "relu")
    assert decayed_names(net, 2) == {"hidden.weight", "hidden.bias",
                                     "classifier.weight", "classifier.bias"}
    with pytest.raises(InputError, match="decay_last = 3 but the network has only 2 Linear"):
        decayed_names(net, 3)


def _values(accuracy):
    values = {name: 0.25 + i for i, name in enumerate(METRIC_NAMES)}
    values.update({"loss": 0.7, "accuracy": accuracy, "test_accuracy": 0.6,
                   "weight_norm": 12.5})
    return values


def test_accuracy_gate_blanks_exactly_the_metric_names_fn_included():
    """Below nc_min_accuracy every METRIC_NAMES column (fn too) is NaN; loss, accuracies and
    weight_norm stay."""
    config = TrainConfig(nc_min_accuracy=0.99, seed=4, run_id="r")
    row = log_row(config, 7, 2, Phase("mse", 5), 30, 0.3, 0.01, _values(0.5))
    for name in METRIC_NAMES:
        assert math.isnan(row[name]), name
    assert (row["loss"], row["accuracy"], row["test_accuracy"], row["weight_norm"]) == (
        0.7, 0.5, 0.6, 12.5)
    assert (row["time"], row["phase"], row["phase_loss"], row["steps"], row["seed"]) == (
        7.0, 2, "mse", 30, 4)


def test_accuracy_at_the_threshold_keeps_the_metrics():
    """The paper's rule is accuracy >= 0.99: a record exactly at the threshold is filled."""
    config = TrainConfig(nc_min_accuracy=0.99)
    row = log_row(config, 1, 1, Phase(), 1, 0.001, 0.001, _values(0.99))
    assert [row[name] for name in METRIC_NAMES] == [0.25 + i for i in range(len(METRIC_NAMES))]


def test_nc_min_accuracy_of_one_is_accepted_and_above_one_refused():
    """nc_min_accuracy is a fraction in [0, 1], 1 included (only perfect training records)."""
    assert TrainConfig(nc_min_accuracy=1.0).validate().nc_min_accuracy == 1.0
    with pytest.raises(InputError, match="nc_min_accuracy must be a fraction in"):
        TrainConfig(nc_min_accuracy=1.01).validate()


def test_on_record_receives_every_row_of_the_log_in_order():
    """on_record is called once per record (epoch 0, every nc_every, phase ends) with the row."""
    phases = (Phase("ce", 2, "adam", 1e-2, 0.0, batch_size=6),
              Phase("mse", 3, "sgd", 0.05, 1e-3, batch_size=6))
    config = TrainConfig(depth=2, width=5, phases=phases, nc_every=2, eval_test=False)
    seen = []
    result = train(config, gaussian_dataset(), on_record=seen.append)
    assert [row["time"] for row in seen] == [0.0, 2.0, 4.0, 5.0]
    assert [row["phase"] for row in seen] == [1, 1, 2, 2]
    pd.testing.assert_frame_equal(pd.DataFrame(seen), result.log)


def test_an_empty_seed_list_is_refused_by_name():
    """train(seeds=[]) is an InputError asking for seeds, not a crash in pandas."""
    config = TrainConfig(depth=2, width=4, phases=(Phase("ce", 1, batch_size=12),))
    with pytest.raises(InputError, match="give distinct seeds, got \\[\\]"):
        train(config, gaussian_dataset(), seeds=[])


@pytest.mark.parametrize("epochs", [(5,), (5, 6, 7)])
def test_preset_epochs_must_give_one_count_per_phase(epochs):
    """preset('mlp', epochs=...) with the wrong number of phase lengths is refused."""
    with pytest.raises(InputError, match="preset 'mlp' has 2 phases; give 2 epoch counts"):
        preset("mlp", epochs=epochs)
