"""Mutation probe (third) of ncsim.validate.logs: exact refusal messages for malformed logs,
phase limits, run-id and file-name parsing, folder splitting, and the onset read from
synthetic logs against a naive reference (all logs built in tmp_path)."""

from __future__ import annotations

import zipfile

import numpy as np
import pandas as pd
import pytest

from ncsim.errors import InputError
from ncsim.validate import logs
from ncsim.validate.analysis import OnsetRule, run_table

PAPER_HINT = ("give phase 1 (cross-entropy) or 2 (MSE) as a number on every row, or drop the "
              "phase column to search the whole log for the onset")
NCSIM_HINT = ("give the phase number on every record (0 for a simulation, 1, 2, ... for the "
              "phases of a training; paper logs: 1 = cross-entropy, 2 = MSE), or drop the phase "
              "column to search the whole log for the onset")
NUMBER_HINT = "write numbers, and leave an entry blank where nothing was measured"


def write(path, text):
    """Write ``text`` to ``path`` as bytes (no newline translation) and return the path."""
    path.write_bytes(text.encode())
    return path


def refusal(path_or_call):
    """The InputError message of reading a log (a path) or of a call."""
    with pytest.raises(InputError) as info:
        if callable(path_or_call):
            path_or_call()
        else:
            logs.read_log(path_or_call)
    return str(info.value)


# ----------------------------------------------------------------------------- unreadable files
def test_a_pandas_parse_error_is_reported_on_one_line(tmp_path):
    """A zipped log (not checked before pandas) whose line has extra fields: pandas' error,
    whose text ends in a newline, is cut to its first line inside the one-line message."""
    path = tmp_path / "run.csv.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("run.csv", "epoch,nc1,feat_norm\n0,1,1\n1,0.5,2,7,8\n")
    message = refusal(path)
    assert "\n" not in message
    assert message.startswith(f"cannot read log {path}: ")
    assert "Expected 3 fields in line 3, saw 5; a log is a CSV file or a Parquet file " \
           "(.parquet)" in message


def test_a_long_cut_last_line_is_quoted_to_sixty_characters(tmp_path):
    """The message for a last line without its line end quotes that line's first 60
    characters."""
    last = "10,0.5,2." + "1" * 70
    path = write(tmp_path / "run.csv", f"epoch,nc1,feat_norm\n0,1.0,1.0\n{last}")
    assert refusal(path) == (
        f"log {path}: the last line ({last[:60]!r}) has no line end, so the file may be cut "
        "short and its last number too; complete the file or remove that line (or, if it is "
        "whole, end it with a newline)")


def test_a_header_naming_columns_twice_lists_them_sorted(tmp_path):
    """Columns named twice are listed in sorted order, not in header order."""
    path = write(tmp_path / "run.csv", "nc1,feat_norm,epoch,nc1,epoch\n1,1,0,1,0\n")
    assert refusal(path) == (
        f"log {path}: the header names column(s) epoch, nc1 more than once, so which one holds "
        "the value is a guess: keep one column of each name")


# ----------------------------------------------------------------------------- phases
def test_the_first_unusable_phase_is_named(tmp_path):
    """Of two unusable phases (1e30, then inf) the first in the file is named."""
    path = write(tmp_path / "sim.csv", "time,fn,nc1_trace,phase\n0,1,1,1e30\n1,1,1,inf\n")
    assert refusal(path) == f"log sim: phase 1e+30 is not a phase number; {NCSIM_HINT}"


@pytest.mark.parametrize("phase", ["-inf", "-1e30"])
def test_a_negative_huge_phase_is_no_phase_number(tmp_path, phase):
    """-inf and -1e30 are unusable phases (their size is checked, not only their sign): the
    same message as +inf, never a crash converting them to integers."""
    path = write(tmp_path / "sim.csv", f"time,fn,nc1_trace,phase\n0,1,1,1\n1,1,1,{phase}\n")
    expected = f"{float(phase):g}"
    assert refusal(path) == f"log sim: phase {expected} is not a phase number; {NCSIM_HINT}"


def test_the_first_fractional_phase_is_named(tmp_path):
    """Of two fractional phases (0.5, then 1.5) the first in the file is named."""
    path = write(tmp_path / "sim.csv", "time,fn,nc1_trace,phase\n0,1,1,0.5\n1,1,1,1.5\n")
    assert refusal(path) == ("log sim: phase 0.5 is not a whole number; phases are numbered "
                             "0, 1, 2, ... (paper logs: 1 = cross-entropy, 2 = MSE)")


def test_a_phase_a_hair_off_a_whole_number_is_refused(tmp_path):
    """Phase 1.0000001 is not a whole number: refused, not rounded (no tolerance)."""
    path = write(tmp_path / "sim.csv", "time,fn,nc1_trace,phase\n0,1,1,1\n1,1,1,1.0000001\n")
    assert refusal(path).startswith("log sim: phase 1.0000001 is not a whole number; ")


def test_blank_phases_of_an_ncsim_log_list_four_times_and_give_the_ncsim_hint(tmp_path):
    """Blank phase on 6 of 7 ncsim records: four times listed, 'and 2 more', and the ncsim
    hint (phase 0 for a simulation), not the paper's."""
    rows = "".join(f"{t},1,1,{'0' if t == 0 else ''}\n" for t in range(7))
    path = write(tmp_path / "sim.csv", "time,fn,nc1_trace,phase\n" + rows)
    assert refusal(path) == (f"log sim: phase is blank on 6 of 7 records (time 1, 2, 3, 4 "
                             f"and 2 more); {NCSIM_HINT}")


def test_blank_phases_of_a_paper_log_give_the_paper_hint(tmp_path):
    """Blank phase on some paper-log records: the paper's hint (phase 1 or 2)."""
    path = write(tmp_path / "run.csv", "epoch,phase,nc1,feat_norm\n0,1,1,1\n1,,1,1\n")
    assert refusal(path) == f"log run: phase is blank on 1 of 2 records (epoch 1); {PAPER_HINT}"


# ----------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("column", ["nc2", "nc3", "train", "test"])
def test_text_in_an_optional_paper_column_names_the_paper_column(tmp_path, column):
    """Text in nc2, nc3, train or test is refused, naming the column as the paper log does
    (nc2, not nc2_angle), the data row and the count."""
    path = write(tmp_path / "run.csv", f"epoch,nc1,feat_norm,{column}\n0,1.0,1.0,0.5\n"
                                       f"1,0.5,2.0,ten\n2,0.25,3.0,0.5\n")
    assert refusal(path) == (f"log run: {column} 'ten' in data row 2 is not a number (1 such "
                             f"entries); {NUMBER_HINT}")


def test_a_numpy_string_entry_is_quoted_as_its_text():
    """A numpy string among the numbers of a frame is quoted as its text ('ten')."""
    frame = pd.DataFrame({"epoch": [0, 1], "feat_norm": [1.0, 1.0],
                          "nc1": pd.Series([0.5, np.str_("ten")], dtype=object)})
    assert refusal(lambda: logs.from_paper(frame, "x")) == (
        f"log x: nc1 'ten' in data row 2 is not a number (1 such entries); {NUMBER_HINT}")


@pytest.mark.parametrize("column", ["train_acc", "test_acc", "train", "test"])
def test_text_in_an_accuracy_column_names_the_files_column(tmp_path, column):
    """Text in an accuracy column is refused naming the column as the file spells it."""
    path = write(tmp_path / "run.csv", f"epoch,nc1,feat_norm,{column}\n0,1.0,1.0,0.5\n"
                                       "1,0.5,2.0,ten\n")
    assert refusal(path).startswith(f"log run: {column} 'ten' in data row 2 is not a number")


def test_equal_text_in_both_accuracy_columns_names_the_first(tmp_path):
    """Two equal copies with text are one column, named as the first the file gives."""
    path = write(tmp_path / "run.csv", "epoch,nc1,feat_norm,train_acc,train\n"
                                       "0,1.0,1.0,0.5,0.5\n1,0.5,2.0,ten,ten\n")
    assert refusal(path).startswith("log run: train_acc 'ten' in data row 2 is not a number")


def test_equal_accuracy_columns_written_as_int_and_float_are_one_column(tmp_path):
    """``train`` 0,1 and ``train_acc`` 0.0,1.0 hold the same accuracies: read as one."""
    path = write(tmp_path / "run.csv", "epoch,nc1,feat_norm,train,train_acc\n"
                                       "0,1.0,1.0,0,0.0\n1,0.5,2.0,1,1.0\n")
    assert logs.read_log(path)["accuracy"].tolist() == [0.0, 1.0]


@pytest.mark.parametrize("second", ["0.0,2.0", "0.0,", "0.0,ten"],
                         ids=["other-value", "blank-in-one", "text-in-one"])
def test_accuracy_columns_that_differ_as_numbers_are_refused(tmp_path, second):
    """``train`` 0,1 against a ``train_acc`` with another value, a blank or text: refused."""
    a, b = second.split(",")
    path = write(tmp_path / "run.csv", "epoch,nc1,feat_norm,train,train_acc\n"
                                       f"0,1.0,1.0,0,{a}\n1,0.5,2.0,1,{b}\n")
    assert refusal(path) == ("log run has columns train and train_acc, which both name its "
                             "accuracy and differ; keep the one that holds it")


def test_a_blank_column_whose_name_starts_with_unnamed_is_kept(tmp_path):
    """Only pandas' own ``Unnamed: i`` columns are dropped when blank; a blank column the log
    names ``Unnamedness`` is kept."""
    path = write(tmp_path / "run.csv", "epoch,nc1,feat_norm,Unnamedness\n0,1.0,1.0,\n"
                                       "1,0.5,2.0,\n")
    out = logs.read_log(path)
    assert "Unnamedness" in out.columns and out["Unnamedness"].isna().all()


# ----------------------------------------------------------------------------- labels, names
def test_four_conditions_are_listed_as_three_and_an_ellipsis(tmp_path):
    """A condition column with four values names the first three, then ', ...'."""
    frame = pd.DataFrame({"epoch": [0, 1, 2, 3], "nc1": 1.0, "feat_norm": 1.0,
                          "condition": ["a", "b", "c", "d"]})
    assert refusal(lambda: logs.from_paper(frame, "run")) == (
        "log run has 4 values in its condition column (a, b, c, ...); a paper log is one run: "
        "split it into one file per run")


@pytest.mark.parametrize(("name", "run_id"), [("wd0.0005_s0.csv", "wd0.0005_s0"),
                                              ("run.v2.csv.gz", "run.v2")])
def test_a_file_name_with_dots_keeps_them_in_its_run_id(tmp_path, name, run_id):
    """Only the table and compression suffixes are removed from a run id; other dots stay."""
    assert logs.log_name(name) == run_id
    path = tmp_path / name
    pd.DataFrame({"epoch": [0], "nc1": [1.0], "feat_norm": [1.0]}).to_csv(path, index=False)
    assert logs.read_log(path)["run_id"].tolist() == [run_id]


# ----------------------------------------------------------------------------- folders of files
def test_a_header_with_a_spaced_epoch_is_a_log_consistently(tmp_path):
    """``' epoch'`` (a space before it) is the ``epoch`` column, for split_logs (a log) as for
    read_log (header names are read without their surrounding spaces)."""
    path = write(tmp_path / "run.csv", " epoch,nc1,feat_norm\n0,1.0,1.0\n")
    assert logs.split_logs([path]) == ([path], [])
    assert logs.read_log(path)["time"].tolist() == [0.0]


def test_epoch_logs_skips_a_summary_given_before_a_log(tmp_path):
    """A summary table given first, then a log: the summary is skipped, not read as the one
    path (read_log only runs for a single path)."""
    summary = write(tmp_path / "x_summary.csv", "seed,T_NC\n0,100\n")
    log = write(tmp_path / "run.csv", "epoch,nc1,feat_norm\n0,1.0,1.0\n")
    assert logs.epoch_logs([summary, log]) == ([log], [summary])


def test_several_empty_logs_are_all_named(tmp_path):
    """Two logs with a header only: the refusal names both files."""
    first = write(tmp_path / "a.csv", "epoch,nc1,feat_norm\n")
    second = write(tmp_path / "b.csv", "epoch,nc1,feat_norm\n")
    assert refusal(lambda: logs.read_logs([first, second])) == (
        f"log(s) without records: {first}, {second}; a log needs at least one row below its "
        "header")


def test_run_ids_in_several_logs_are_listed_sorted(tmp_path):
    """Run ids held by several logs are listed in sorted order (a before z), whatever the
    order of the files."""
    paths = []
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        for name in ("z", "a"):
            paths.append(write(tmp_path / folder / f"{name}.csv", "epoch,nc1,feat_norm\n0,1,1\n"))
    one_z, one_a, two_z, two_a = paths
    assert refusal(lambda: logs.read_logs(paths)) == (
        f"run id(s) appear in several logs: a in {one_a}, {two_a}; z in {one_z}, {two_z}; "
        "each run needs its own id (a paper log's is its file name, an ncsim log's its run_id "
        "column)")


# ----------------------------------------------------------------------------- onset vs naive
def _naive_onset(rows, threshold):
    """(epoch, fn) of the first phase-2 record (by epoch, file order within one) with
    nc1 < threshold, or (nan, nan)."""
    phase2 = sorted((r for r in rows if r[1] == 2), key=lambda r: r[0])
    for epoch, _, nc1, fn in phase2:
        if nc1 is not None and nc1 < threshold:
            return float(epoch), float(fn)
    return float("nan"), float("nan")


def test_onset_and_fn_star_of_shuffled_synthetic_logs_match_a_naive_reference(tmp_path):
    """Shuffled two-phase logs with blank nc1 entries: read_logs + run_table (rupa2026 rule)
    give the onset and fn* of a naive first-phase-2-record-below search."""
    rng = np.random.default_rng(7)
    paths, expected = [], {}
    for seed in range(6):
        rows, low = [], -3.5 if seed % 2 == 0 else -2.0  # odd seeds never reach 0.01
        switch = int(rng.integers(3, 8)) * 10
        for epoch in range(0, 200, 10):
            phase = 1 if epoch < switch else 2
            nc1 = float(np.round(10 ** rng.uniform(low, 0.0), 6))
            blank = rng.random() < 0.2
            rows.append((epoch, phase, None if blank else nc1, float(1 + epoch / 100)))
        order = rng.permutation(len(rows))
        text = "epoch,phase,nc1,feat_norm\n" + "".join(
            f"{rows[i][0]},{rows[i][1]},{'' if rows[i][2] is None else rows[i][2]},"
            f"{rows[i][3]}\n" for i in order)
        paths.append(write(tmp_path / f"depth5_s{seed}.csv", text))
        expected[f"depth5_s{seed}"] = _naive_onset(rows, 0.01)
    table = run_table(logs.read_logs(paths), OnsetRule.preset("rupa2026"))
    got = {r.run: (r.onset_epoch, r.fn_star) for r in table.itertuples()}
    assert got.keys() == expected.keys()
    for run, (onset, fn_star) in expected.items():
        np.testing.assert_equal(got[run], (onset, fn_star), err_msg=run)
    onsets = [v[0] for v in expected.values()]
    assert any(np.isfinite(onsets)) and not all(np.isfinite(onsets))  # both kinds of run
