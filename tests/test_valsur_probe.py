"""Mutation probe of the surrogate, stacked-training and log-reading modules: hand-written
paper logs with known readings, and the checks a log format variant must meet."""

from __future__ import annotations

import numpy as np
import pytest

from ncsim.errors import InputError
from ncsim.validate import surrogate as sg
from ncsim.validate.logs import read_log

# The first rows of a paper log as released (width128_s0.csv), with a phase change added.
PAPER_ROWS = (
    "epoch,phase,train,test,nc1,nc2,nc3,feat_norm\n"
    "10,1,0.99385,0.9762,0.4987231194972992,0.17941954731941223,0.417494535446167,"
    "40.777774810791016\n"
    "20,1,0.9961333333333333,0.9776,0.4456493556499481,0.16993652284145355,0.3640747666358948,"
    "40.42588424682617\n"
    "30,2,1.0,0.98,0.004,0.01,0.02,12.5\n"
)


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_paper_columns_map_to_their_trajectory_columns_at_the_logged_epoch(tmp_path):
    """epoch is the time as logged (no 0/1 offset), nc1/nc2/nc3/feat_norm/train/test land in
    nc1_trace/nc2_angle/nc3_paper/fn/accuracy/test_accuracy, and the phases are kept."""
    out = read_log(_write(tmp_path, "width128_s0.csv", PAPER_ROWS))
    assert out["time"].tolist() == [10.0, 20.0, 30.0]
    assert out["phase"].tolist() == [1, 1, 2]
    assert out["nc1_trace"].tolist() == pytest.approx([0.4987231194972992, 0.4456493556499481,
                                                       0.004], rel=1e-15)
    assert out["nc2_angle"].tolist() == pytest.approx([0.17941954731941223, 0.16993652284145355,
                                                       0.01], rel=1e-15)
    assert out["nc3_paper"].tolist() == pytest.approx([0.417494535446167, 0.3640747666358948,
                                                       0.02], rel=1e-15)
    assert out["fn"].tolist() == pytest.approx([40.777774810791016, 40.42588424682617, 12.5],
                                               rel=1e-15)
    assert out["accuracy"].tolist() == pytest.approx([0.99385, 0.9961333333333333, 1.0])
    assert out["test_accuracy"].tolist() == pytest.approx([0.9762, 0.9776, 0.98])
    assert (out["model"].iloc[0], out["dataset"].iloc[0], out["condition"].iloc[0],
            out["seed"].iloc[0]) == ("mlp", "mnist", "width128", 0)


def test_compressed_paper_log_keeps_the_documented_name(tmp_path):
    """``gelu_s3.csv.gz`` is the run gelu_s3: a GELU run (condition actGELU) of the MLP on
    MNIST, read through the compression."""
    import gzip

    path = tmp_path / "gelu_s3.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(PAPER_ROWS)
    out = read_log(path)
    assert set(out["run_id"]) == {"gelu_s3"}
    assert (out["model"].iloc[0], out["condition"].iloc[0], out["seed"].iloc[0]) == (
        "mlp", "actGELU", 3)


def test_a_trailing_comma_on_every_data_line_keeps_the_columns_in_place(tmp_path):
    """Data lines with one blank field more than the header (a trailing comma) are read with
    each value under its own header name, not shifted by a row index taken from the epochs."""
    path = _write(tmp_path, "shift_s0.csv", "epoch,nc1,feat_norm\n10,0.5,40,\n20,0.3,30,\n")
    out = read_log(path)
    assert out["time"].tolist() == [10.0, 20.0]
    assert out["nc1_trace"].tolist() == [0.5, 0.3]
    assert out["fn"].tolist() == [40.0, 30.0]


def test_data_lines_with_an_extra_value_are_refused(tmp_path):
    """A data line with a value beyond the header's columns is refused with its line number:
    which column it belongs to would be a guess."""
    path = _write(tmp_path, "shift_s0.csv", "epoch,nc1,feat_norm\n10,0.5,40,7\n20,0.3,30,8\n")
    with pytest.raises(InputError, match="line 2 has 4 fields but the header names 3") as err:
        read_log(path)
    assert str(err.value).startswith(f"log {path}: ")  # one message, not wrapped in another
    one = _write(tmp_path, "one_s0.csv", "epoch,nc1,feat_norm\n10,0.5,40\n20,0.3,30,7\n")
    with pytest.raises(InputError, match="line 3"):  # pandas' own refusal, made one line
        read_log(one)


def test_a_header_naming_nc1_twice_is_refused(tmp_path):
    """A header with two nc1 columns is refused (which one is nc1 would be a guess), as two
    different accuracy columns are."""
    path = _write(tmp_path, "dup_s0.csv", "epoch,nc1,nc1,feat_norm\n10,0.5,0.7,40\n"
                  "20,0.3,0.2,30\n")
    with pytest.raises(InputError, match="names column\\(s\\) nc1 more than once"):
        read_log(path)


def test_surrogate_unit_conversions_by_hand():
    """nn.MSELoss with coupled L2 wd over K classes: lambda_W = K wd / 2 (10 classes, wd 5e-4:
    2.5e-3) and t_ncsim = (2 / K) t; the spec's lambda_b is lambda_W."""
    assert sg.lambda_w_ncsim(5e-4, 10) == pytest.approx(2.5e-3, rel=1e-15)
    assert sg.time_factor(10) == pytest.approx(0.2, rel=1e-15)
    assert sg.time_factor(10) * sg.lambda_w_ncsim(5e-4, 10) == pytest.approx(5e-4, rel=1e-12)


def test_calibration_reads_the_decay_rate_from_the_decay_velocity_only():
    """r2_decay compares the decay velocity (not the data velocity) with -rate H: a pure
    decay velocity gives r2_decay = 1 whatever the data velocity, and lambda_H = rate / eta_H."""
    rng = np.random.default_rng(3)
    K, n = 3, 2
    state = sg.SurrogateState(H=rng.standard_normal((5, K * n)), W=rng.standard_normal((K, 5)),
                              b=0.2 * rng.standard_normal(K), per_class=n)
    onehot = np.repeat(np.eye(K), n, axis=1)
    g = state.W.T @ (state.W @ state.H + state.b[:, None] - onehot) / (K * n)
    factor = sg.time_factor(K)
    cal = sg.calibrate_response(state, factor * (-4.0 * g), factor * (-0.5 * state.H), factor)
    assert cal.eta_h == pytest.approx(4.0, rel=1e-12)
    assert cal.lambda_h == pytest.approx(0.125, rel=1e-12)
    assert cal.r2_data == pytest.approx(1.0, abs=1e-12)
    assert cal.r2_decay == pytest.approx(1.0, abs=1e-12)
    assert cal.note == ""


def test_surrogate_spec_first_record_scales_with_a_short_horizon():
    """The first recorded time is min(1e-3, t_end / 1e4): a short horizon (t_end 0.5) is
    recorded from 5e-5 on, four decades before its end; a long one from 1e-3."""
    rng = np.random.default_rng(0)
    state = sg.SurrogateState(H=rng.standard_normal((4, 6)), W=rng.standard_normal((3, 4)),
                              b=np.zeros(3), per_class=2)
    short = sg.surrogate_spec(state, 0.01, 0.002, 0.5)
    assert short.solver.t_first == pytest.approx(5e-5, rel=1e-12)
    assert short.solver.t_end == 0.5
    assert sg.surrogate_spec(state, 0.01, 0.002, 100.0).solver.t_first == 1e-3
