"""Mutation probe of ncsim.validate.logs: run labels, header and record checks, error rows,
phase limits, sort order of epochs logged in both phases (synthetic logs only)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from ncsim.errors import InputError
from ncsim.validate.logs import epoch_logs, from_ncsim, from_paper, read_log, run_labels


def _write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_seed_is_read_from_the_first_s_number_not_the_last():
    """In ``<cond>_s<seed>_<suffix>`` the first ``_s<digits>`` is the seed, a later one a suffix."""
    assert run_labels("width128_s0_s1") == {"model": "mlp", "dataset": "mnist",
                                             "condition": "width128_s1", "seed": 0}
    assert run_labels("myrun_s3_s7") == {"model": "unlabelled", "dataset": "unlabelled",
                                         "condition": "myrun_s7", "seed": 3}


def test_unlabelled_name_keeps_its_suffix_in_the_condition():
    """An undocumented ``<name>_s<seed>_<suffix>`` keeps the suffix in its condition."""
    assert run_labels("myrun_s0_ext") == {"model": "unlabelled", "dataset": "unlabelled",
                                          "condition": "myrun_ext", "seed": 0}


@pytest.mark.parametrize("kind", ["control", "scale_down", "scale_up"])
def test_every_documented_intervention_log_is_an_mlp_mnist_run(kind):
    """All three intervention families (control, scale_down, scale_up) are (mlp, mnist) runs."""
    assert run_labels(f"intervention_{kind}_s2") == {
        "model": "mlp", "dataset": "mnist", "condition": f"intervention_{kind}", "seed": 2}


def test_a_whitespace_only_extra_field_is_a_blank_not_a_value(tmp_path):
    """An extra field holding only spaces counts as blank (read, without pandas' ParserWarning
    of a loss of data: the check before it says none is lost), not as an extra value."""
    path = _write(tmp_path, "ws_s0.csv", "epoch,nc1,feat_norm\n0,0.5,2.0, \n1,0.4,2.5,\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = read_log(path)
    assert out["time"].tolist() == [0.0, 1.0]
    assert out["nc1_trace"].tolist() == [0.5, 0.4]
    assert out["fn"].tolist() == [2.0, 2.5]


def test_a_header_naming_a_column_twice_with_a_space_is_refused(tmp_path):
    """``nc1`` and `` nc1`` in one header name one column twice (names are compared stripped)."""
    path = _write(tmp_path, "dup_s0.csv", "epoch,nc1,feat_norm, nc1\n0,0.5,2.0,0.6\n")
    with pytest.raises(InputError, match=r"the header names column\(s\) nc1 more than once"):
        read_log(path)


def test_several_unnamed_header_fields_are_no_repeated_name(tmp_path):
    """Empty header names (trailing commas in the header) are not refused as repeated names;
    their columns are dropped where every value is blank, kept where a value stands."""
    path = _write(tmp_path, "tc_s0.csv", "epoch,nc1,feat_norm,,\n0,0.5,2.0,,\n1,0.25,3.0,,\n")
    out = read_log(path)
    assert out["time"].tolist() == [0.0, 1.0]
    assert out["nc1_trace"].tolist() == [0.5, 0.25]
    assert out["fn"].tolist() == [2.0, 3.0]
    assert not [c for c in out.columns if str(c).startswith("Unnamed")]  # blank: dropped
    kept = _write(tmp_path, "tv_s0.csv", "epoch,nc1,feat_norm,,\n0,0.5,2.0,7,\n1,0.25,3.0,8,\n")
    assert [c for c in read_log(kept).columns if str(c).startswith("Unnamed")] == ["Unnamed: 3"]


def test_a_numpy_true_among_phase_numbers_is_refused():
    """A numpy bool in an object phase column is refused, not read as phase 1."""
    frame = pd.DataFrame({"time": [0.0, 1.0], "fn": [1.0, 1.0], "nc1_trace": [1.0, 1.0],
                          "phase": pd.Series([np.True_, 2], dtype=object)})
    with pytest.raises(InputError, match="phase values True/False are not phase numbers"):
        from_ncsim(frame, "x")


def test_a_huge_phase_number_is_refused(tmp_path):
    """A phase above 2**31 - 1 (here 1e10) is a damaged log, not a phase."""
    path = _write(tmp_path, "big.csv", "time,fn,nc1_trace,phase\n0,1,1,1\n1,1,1,1e10\n")
    with pytest.raises(InputError, match=r"log big: phase 1e\+10 is not a phase number"):
        read_log(path)
    edge = _write(tmp_path, "edge.csv",
                  f"time,fn,nc1_trace,phase\n0,1,1,{2**31 - 1}\n1,1,1,{2**31 - 1}\n")
    assert read_log(edge)["phase"].tolist() == [2**31 - 1] * 2


def test_clash_count_names_only_the_records_of_that_run(tmp_path):
    """The clash message counts the clashing records of its own run, not other runs' too."""
    path = _write(tmp_path, "grid.csv",
                  "run_id,time,fn,nc1_trace\n"
                  "a,1,1.0,0.5\na,1,2.0,0.5\nb,1,1.0,0.5\nb,1,3.0,0.5\n")
    with pytest.raises(InputError, match=r"^log grid, run a: time 1 has 2 records with "):
        read_log(path)


def test_float32_seed_column_reads_as_the_integer_seed():
    """A float32 seed column (0.0 and a blank) gives the integer seed 0."""
    frame = pd.DataFrame({"epoch": [0.0, 1.0], "feat_norm": [1.0, 1.0], "nc1": [1.0, 1.0],
                          "seed": np.array([0.0, np.nan], dtype=np.float32)})
    out = from_paper(frame, "myrun")
    assert out["seed"].dtype.kind == "i"
    assert out["seed"].tolist() == [0, 0]


def test_epochs_logged_again_in_phase_two_are_refused(tmp_path):
    """Epochs 0..9 logged in phase 1 then again in phase 2: the epochs restart at a phase,
    which would interleave the phases in time (the final record a phase-1 one): refused."""
    rows = [f"{e},1,{0.5 + e},2.0" for e in range(10)]
    rows += [f"{e},2,{0.25 + e},3.0" for e in range(10)]
    path = _write(tmp_path, "both_s0.csv", "epoch,phase,nc1,feat_norm\n" + "\n".join(rows) + "\n")
    with pytest.raises(InputError, match="phase 1 has epochs up to 9 but a later phase starts "
                                         "at 0"):
        read_log(path)


def test_the_epoch_shared_by_two_phases_sorts_phase_one_first(tmp_path):
    """Phase 1 ends and phase 2 starts at epoch 9 (rows written phase 2 first): sorted by
    epoch, then phase."""
    rows = [f"{e},1,{0.5 + e},2.0" for e in range(10)] + ["9,2,0.25,3.0", "10,2,0.125,3.0"]
    rows = rows[:9] + [rows[10], rows[9], rows[11]]
    path = _write(tmp_path, "both_s0.csv", "epoch,phase,nc1,feat_norm\n" + "\n".join(rows) + "\n")
    out = read_log(path)
    assert out["time"].tolist() == [float(e) for e in range(10)] + [9.0, 10.0]
    assert out["phase"].tolist() == [1] * 10 + [2, 2]


def test_epoch_logs_of_no_paths_is_empty():
    """``epoch_logs([])`` gives two empty lists (no error: nothing was skipped)."""
    assert epoch_logs([]) == ([], [])


@pytest.mark.parametrize(("name", "text", "message"), [
    # blank run ids on data rows 2 and 4: row 2 named
    ("ids.csv", "run_id,time,fn,nc1_trace\na,1,1,1\n,2,1,1\na,3,1,1\n,4,1,1\n",
     r"2 of 4 records have no run_id \(the first is data row 2\)"),
    # text nc1 on data rows 2 and 3: row 2 and its value named
    ("txt_s0.csv", "epoch,nc1,feat_norm\n0,0.5,2\n1,ten,2\n2,eleven,2\n",
     r"nc1 'ten' in data row 2 is not a number \(2 such"),
    # negative nc1 at epochs 1 and 2: epoch 1 and its value named
    ("neg_s0.csv", "epoch,nc1,feat_norm\n0,0.5,2\n1,-0.25,2\n2,-0.5,2\n",
     r"nc1 is -0.25 at epoch 1;"),
    # no epoch on data rows 2 and 3: counted, row 2 named
    ("noep_s0.csv", "epoch,nc1,feat_norm\n0,0.5,2\n,0.4,2\n,0.3,2\n",
     r"2 record\(s\) have no epoch \(the first is data row 2\)"),
], ids=["blank_run_id", "text_entry", "negative_nc1", "missing_epoch"])
def test_refusals_name_the_first_offending_row(tmp_path, name, text, message):
    """With two offending records, each refusal names the first of them (and its value)."""
    with pytest.raises(InputError, match=message):
        read_log(_write(tmp_path, name, text))


def test_a_paper_log_with_two_seeds_is_refused(tmp_path):
    """A seed column with two values is refused (one file is one run), as a condition column."""
    path = _write(tmp_path, "run_s0.csv",
                  "epoch,nc1,feat_norm,seed\n0,0.5,2,0\n1,0.4,2,1\n")
    with pytest.raises(InputError, match=r"log run_s0 has 2 values in its seed column \(0, 1\)"):
        read_log(path)
