"""Probe tests of reading training logs (ncsim.validate.logs), result tables (ncsim.io) and the
batched products (ncsim.products): column mapping, blank markers, bounds, malformed files and
round trips, each pinned with small hand-built inputs."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import invoke
from thread_helpers import torch_threads

from ncsim import io, products
from ncsim.errors import InputError
from ncsim.validate import logs

PAPER_HEADER = "epoch,phase,train,test,nc1,nc2,nc3,feat_norm\n"


def write(path, text):
    """Write ``text`` to ``path`` (bytes as given: no newline translation) and return it."""
    path.write_bytes(text.encode())
    return path


# ----------------------------------------------------------------------------- column mapping
def test_paper_columns_map_to_their_trajectory_columns_by_value(tmp_path):
    """Each paper column lands in its own trajectory column (nc2 -> nc2_angle, nc3 ->
    nc3_paper, train -> accuracy, test -> test_accuracy, feat_norm -> fn), with epoch units
    and the labels of a documented file name."""
    path = write(tmp_path / "width128_s0.csv", PAPER_HEADER
                 + "0,1,0.5,0.45,,,,1.5\n10,2,0.995,0.97,0.004,0.02,0.3,2.5\n")
    out = logs.read_log(path)
    last = out.iloc[1]
    assert (last["time"], last["phase"], last["accuracy"], last["test_accuracy"]) == (
        10.0, 2, 0.995, 0.97)
    assert (last["nc1_trace"], last["nc2_angle"], last["nc3_paper"], last["fn"]) == (
        0.004, 0.02, 0.3, 2.5)
    assert np.isnan(out["nc2_angle"].iloc[0]) and np.isnan(out["nc3_paper"].iloc[0])
    assert list(out["time_unit"]) == ["epoch", "epoch"]
    assert out.iloc[0][["model", "dataset", "condition", "seed"]].tolist() == [
        "mlp", "mnist", "width128", 0]


def test_upper_case_compression_suffix_is_dropped_from_the_run_id(tmp_path):
    """``width128_s0.csv.GZ`` is the run ``width128_s0`` (the suffix is read in any case), so
    its labels come from the documented name."""
    assert logs.log_name("width128_s0.csv.GZ") == "width128_s0"
    path = tmp_path / "width128_s0.csv.GZ"
    with gzip.open(path, "wt") as handle:
        handle.write(PAPER_HEADER + "0,1,0.5,0.5,,,,1.0\n10,2,1.0,0.98,0.002,0.01,0.03,2.5\n")
    out = logs.read_log(path)
    assert set(out["run_id"]) == {"width128_s0"}
    assert (out["model"].iloc[0], out["condition"].iloc[0]) == ("mlp", "width128")


# ----------------------------------------------------------------------------- blanks, bounds
@pytest.mark.parametrize("marker", ["na", "none", " NA ", "N/A", "<NA>"])
def test_blank_markers_pandas_keeps_as_text_are_gaps(tmp_path, marker):
    """Blank markers that pandas does not read as missing (lower-case ``na``, ``none``, one
    with spaces) are gaps in nc1, not text errors."""
    path = write(tmp_path / "run.csv", f"epoch,nc1,feat_norm\n0,{marker},1.0\n10,0.5,2.0\n")
    out = logs.read_log(path)
    assert np.isnan(out["nc1_trace"].iloc[0]) and out["nc1_trace"].iloc[1] == 0.5


def test_a_tiny_negative_nc1_is_refused(tmp_path):
    """nc1 is a ratio of traces: even -1e-15 is below 0 and refused, naming the epoch."""
    path = write(tmp_path / "run.csv", "epoch,nc1,feat_norm\n0,1.0,1.0\n10,-1e-15,2.0\n")
    with pytest.raises(InputError, match=r"nc1 is -1e-15 at epoch 10;.*never below 0"):
        logs.read_log(path)


# ----------------------------------------------------------------------------- malformed files
def test_text_in_an_optional_metric_column_is_refused(tmp_path):
    """Text such as ``ten`` in nc2 is an InputError naming the column, as in nc1."""
    path = write(tmp_path / "run.csv", "epoch,nc1,feat_norm,nc2\n0,1.0,1.0,0.5\n10,0.5,2.0,ten\n")
    with pytest.raises(InputError, match="nc2"):
        logs.read_log(path)


def test_analyze_cli_with_text_in_the_metric_column_is_a_one_line_error(tmp_path):
    """``validate analyze --metric nc2_angle`` on a log with text in nc2 exits 2, one line."""
    path = write(tmp_path / "run.csv", "epoch,nc1,feat_norm,nc2\n0,1.0,1.0,0.5\n"
                 "10,0.5,2.0,ten\n20,0.001,3.0,0.001\n")
    result = invoke(["validate", "analyze", str(path), "--metric", "nc2_angle"])
    assert result.exit_code == 2 and "Traceback" not in result.output, repr(result.exception)


@pytest.mark.parametrize("phase", ["inf", "1e30"])
def test_ncsim_log_with_an_infinite_or_huge_phase_is_an_input_error(tmp_path, phase):
    """A phase that is no usable whole number is an InputError naming the phase."""
    path = write(tmp_path / "sim.csv", f"time,fn,nc1_trace,phase\n0,1,1,{phase}\n1,1,0.5,1\n")
    with pytest.raises(InputError, match="phase"):
        logs.read_log(path)


def test_log_with_carriage_return_line_ends_is_read(tmp_path):
    """A whole log with old Mac line ends (``\\r``) reads as the same log with ``\\n``."""
    body = "epoch,nc1,feat_norm{0}0,1.0,1.0{0}10,0.5,2.0{0}"
    (tmp_path / "unix").mkdir()
    (tmp_path / "mac").mkdir()
    unix = logs.read_log(write(tmp_path / "unix" / "a.csv", body.format("\n")))
    mac = logs.read_log(write(tmp_path / "mac" / "a.csv", body.format("\r")))
    pd.testing.assert_frame_equal(mac, unix)


def test_log_with_crlf_line_ends_is_read_and_a_cut_crlf_log_refused(tmp_path):
    """CRLF line ends read as ``\\n`` ones; a CRLF log whose last line lacks its end is cut."""
    whole = write(tmp_path / "a.csv", "epoch,nc1,feat_norm\r\n0,1.0,1.0\r\n10,0.5,2.0\r\n")
    assert logs.read_log(whole)["nc1_trace"].tolist() == [1.0, 0.5]
    cut = write(tmp_path / "b.csv", "epoch,nc1,feat_norm\r\n0,1.0,1.0\r\n10,0.5,2.")
    with pytest.raises(InputError, match=r"last line \('10,0.5,2.'\) has no line end"):
        logs.read_log(cut)


# ----------------------------------------------------------------------------- tables (io)
def test_write_table_parquet_keeps_pd_na_in_an_object_column(tmp_path):
    """A seed column of objects [0, pd.NA] (what logs give unseeded runs) writes as Parquet
    and reads back as 0 and a missing value."""
    frame = pd.DataFrame({"seed": pd.Series([0, pd.NA], dtype=object)})
    back = io.read_table(io.write_table(frame, tmp_path / "t.parquet"))
    assert back["seed"].iloc[0] == 0 and pd.isna(back["seed"].iloc[1])


def test_analyze_cli_writes_a_parquet_run_table_for_an_unseeded_log(tmp_path):
    """An unseeded log's run table is written to --out runs.parquet with a missing seed."""
    path = write(tmp_path / "baseline.csv", "epoch,nc1,feat_norm\n0,1.0,1.0\n10,0.5,2.0\n"
                 "20,0.001,3.0\n")
    out = tmp_path / "runs.parquet"
    result = invoke(["validate", "analyze", str(path), "--out", str(out)])
    assert result.exit_code == 0, repr(result.exception)
    assert pd.isna(pd.read_parquet(out)["seed"].iloc[0])


# ----------------------------------------------------------------------------- records, labels
def test_one_epoch_in_both_phases_is_two_records_kept_in_file_order(tmp_path):
    """Epoch 100 ends phase 1 and starts phase 2 with other values: one record per epoch
    *and phase*, both kept (the phase-1 record first, as in the file)."""
    path = write(tmp_path / "width128_s0.csv", PAPER_HEADER
                 + "90,1,0.99,0.97,0.2,0.1,0.5,3.0\n100,1,0.995,0.97,0.1,0.1,0.5,3.1\n"
                 "100,2,0.995,0.97,0.09,0.1,0.5,3.2\n110,2,1.0,0.98,0.005,0.05,0.4,3.3\n")
    out = logs.read_log(path)
    assert out["time"].tolist() == [90.0, 100.0, 100.0, 110.0]
    assert out["phase"].tolist() == [1, 1, 2, 2]
    assert out["fn"].tolist() == [3.0, 3.1, 3.2, 3.3]


def test_paper_log_with_two_conditions_is_refused(tmp_path):
    """A condition column with two values (two runs in one file) is an InputError."""
    frame = pd.DataFrame({"epoch": [0, 10], "nc1": [1.0, 0.5], "feat_norm": [1.0, 2.0],
                          "condition": ["scale_up", "scale_down"]})
    frame.to_csv(tmp_path / "intervention_scale_up_s0.csv", index=False)
    with pytest.raises(InputError, match=r"has 2 values in its condition column \(scale_up, "
                                         r"scale_down\); a paper log is one run"):
        logs.read_log(tmp_path / "intervention_scale_up_s0.csv")


# ----------------------------------------------------------------------------- folders of files
def test_unreadable_files_count_as_logs_so_that_read_log_reports_them(tmp_path):
    """split_logs puts an empty file and an absent one with the logs (read_log then says
    why), a summary table without epoch or time with the other tables, in the given order."""
    good = write(tmp_path / "run.csv", "epoch,nc1,feat_norm\n0,1.0,1.0\n")
    empty = write(tmp_path / "empty.csv", "")
    summary = write(tmp_path / "x_summary.csv", "seed,T_NC\n0,100\n")
    absent = tmp_path / "absent.csv"
    assert logs.split_logs([summary, good, empty, absent]) == ([good, empty, absent], [summary])
    with pytest.raises(InputError, match="cannot read log .*empty.csv"):
        logs.read_logs(logs.epoch_logs([good, empty, summary])[0])


def test_epoch_logs_of_one_summary_gives_read_logs_own_error(tmp_path):
    """One file that is no per-epoch log: read_log's one-line error (neither 'epoch' nor
    'time'); several such files: the list error."""
    summary = write(tmp_path / "x_summary.csv", "seed,T_NC\n0,100\n")
    other = write(tmp_path / "y_summary.csv", "seed,T_NC\n1,120\n")
    with pytest.raises(InputError, match=r"^log .*x_summary.csv has neither an 'epoch'"):
        logs.epoch_logs([summary])
    with pytest.raises(InputError, match=r"^none of the 2 files is a per-epoch log"):
        logs.epoch_logs([summary, other])


def test_upper_case_parquet_suffix_is_read_as_parquet(tmp_path):
    """``RUN.PARQUET`` is a Parquet log (the suffix is read in any case), with its values."""
    frame = pd.DataFrame({"run_id": ["a", "a"], "time": [1.0, 0.0], "fn": [2.0, 1.0],
                          "nc1_trace": [0.5, 1.0], "phase": [0, 0]})
    frame.to_parquet(tmp_path / "RUN.PARQUET", index=False)
    assert logs.is_epoch_log(tmp_path / "RUN.PARQUET")
    out = logs.read_log(tmp_path / "RUN.PARQUET")
    assert out["time"].tolist() == [0.0, 1.0] and out["fn"].tolist() == [1.0, 2.0]
    assert out["phase"].tolist() == [0, 0]


def test_a_blank_line_inside_a_log_is_no_cut_record(tmp_path):
    """An empty line between records (pandas skips it) is not a record cut short."""
    path = write(tmp_path / "run.csv", "epoch,nc1,feat_norm\n0,1.0,1.0\n\n10,0.5,2.0\n")
    out = logs.read_log(path)
    assert out["time"].tolist() == [0.0, 10.0] and out["nc1_trace"].tolist() == [1.0, 0.5]


# ----------------------------------------------------------------------------- tables (io)
def test_csv_labels_with_infinity_but_no_finite_number_keep_their_na_text(tmp_path):
    """A text column ``inf, NA`` holds no finite number: it stays text, "NA" included (only
    a column with a finite number is read again with pandas' missing-value texts)."""
    path = write(tmp_path / "t.csv", "label,x\ninf,1\nNA,2\n")
    back = io.read_table(path)
    assert back["label"].tolist() == ["inf", "NA"]
    assert back["x"].tolist() == [1, 2]


# ----------------------------------------------------------------------------- products
def test_optimised_blas_names_are_matched_in_any_case():
    """numpy may report "OpenBLAS" or "scipy-openblas": both optimised; the reference BLAS
    ("blas", "") is not."""
    assert products.optimised("OpenBLAS") and products.optimised("scipy-openblas")
    assert products.optimised("MKL-rt") and products.optimised("Accelerate")
    assert not products.optimised("blas") and not products.optimised("")


def test_numpy_blas_is_empty_when_numpy_reports_it_not_found(monkeypatch):
    """A BLAS entry with found = False names no library ("")."""
    config = {"Build Dependencies": {"blas": {"name": "openblas", "found": False}}}
    monkeypatch.setattr(products.np, "show_config", lambda mode=None: config)
    assert products.numpy_blas() == ""
    config["Build Dependencies"]["blas"]["found"] = True
    assert products.numpy_blas() == "openblas"


@pytest.fixture
def host_route(monkeypatch):
    """The numpy route switched on, torch on one thread."""
    monkeypatch.setattr(products, "HOST_BLAS", True)
    with torch_threads(1):
        yield


def test_bmm_with_an_out_of_another_shape_behaves_as_torch(host_route):
    """An ``out`` that does not fit goes to torch.bmm (which resizes an empty out), never to
    numpy (which would refuse it)."""
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    b = torch.randn(2, 4, 5, generator=gen, dtype=torch.float64)
    out = torch.empty(0, dtype=torch.float64)
    got = products.bmm(a, b, out=out)
    assert got.shape == (2, 3, 5)
    torch.testing.assert_close(got, torch.bmm(a, b), rtol=1e-13, atol=1e-13)


def test_write_json_turns_keys_numpy_scalars_and_paths_into_plain_json(tmp_path):
    """Keys of any type become text (a numpy integer key too); a path value becomes its text,
    -inf the string "-inf", a NaN inside an array null."""
    data = {np.int64(3): tmp_path / "a.csv", 1.5: np.array([1.0, np.nan]), "m": -np.inf}
    path = io.write_json(data, tmp_path / "d.json")
    assert json.loads(path.read_text()) == {"3": str(tmp_path / "a.csv"), "1.5": [1.0, None],
                                            "m": "-inf"}


def test_paper_log_with_two_accuracy_columns_that_differ_is_refused(tmp_path):
    """Two columns that both map to ``accuracy`` with different values are an InputError."""
    path = write(tmp_path / "run.csv", "epoch,nc1,feat_norm,train,train_acc\n0,1.0,1.0,0.5,0.9\n")
    with pytest.raises(InputError, match="^log run has columns train and train_acc, which "
                                         "both name its accuracy and differ; keep the one"):
        logs.read_log(path)
    same = write(tmp_path / "same.csv", "epoch,nc1,feat_norm,train,train_acc\n0,1.0,1.0,0.5,0.5\n")
    assert list(logs.read_log(same)["accuracy"]) == [0.5]


def test_analyze_refuses_text_in_an_extra_metric_column(tmp_path):
    """An ncsim log's extra column chosen as the onset metric must hold numbers: text there is
    a one-line error naming the column and the entry, blanks are gaps."""
    path = write(tmp_path / "sim.csv", "time,fn,nc1_trace,mine\n0,1,1,0.5\n1,2,0.5,ten\n"
                 "2,3,0.001,0.001\n")
    result = invoke(["validate", "analyze", str(path), "--metric", "mine"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "the onset metric column 'mine' holds 'ten', not a number" in result.output
    (tmp_path / "b").mkdir()
    blank = write(tmp_path / "b" / "sim.csv", "time,fn,nc1_trace,mine\n0,1,1,0.5\n1,2,0.5,\n"
                  "2,3,0.001,0.001\n")
    result = invoke(["validate", "analyze", str(blank), "--metric", "mine", "--format", "json"])
    assert result.exit_code == 0, result.output


def test_read_table_of_a_csv_that_is_not_text_raises_not_an_empty_table(tmp_path):
    """A .csv file of binary bytes is an error, never read as a table without columns."""
    path = tmp_path / "t.csv"
    path.write_bytes(b"\xff\xfe\x00\x81\x8c\x00binary\n")
    with pytest.raises((InputError, UnicodeDecodeError)):
        io.read_table(path)


def test_a_last_line_ended_by_a_carriage_return_is_whole(tmp_path):
    """A last line that ends in ``\\r`` has its line end: the record is read, not refused."""
    path = write(tmp_path / "run.csv", "epoch,nc1,feat_norm\n0,1.0,1.0\n10,0.5,2.0\r")
    assert logs.read_log(path)["fn"].tolist() == [1.0, 2.0]


@pytest.mark.parametrize("header,row", [("epoch,nc1,feat_norm", "inf,0.5,2.0"),
                                        ("time,fn,nc1_trace", "-inf,2.0,0.5")])
def test_an_infinite_time_is_refused(tmp_path, header, row):
    """A record at epoch (or time) +-inf has no place on the time axis: an InputError naming
    the data row, in both schemas."""
    name = header.split(",")[0]
    path = write(tmp_path / "run.csv", f"{header}\n0,1.0,1.0\n{row}\n")
    with pytest.raises(InputError, match=f"^log run: {name} is -?inf in data row 2; give every "
                                         f"record a finite {name}$"):
        logs.read_log(path)
