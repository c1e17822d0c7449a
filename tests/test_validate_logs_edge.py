"""Reading training logs at their edges: phase labels, blank phases, file names and labels,
repeated epochs, text and negative values, fn missing at the onset record.

Most tables are small and synthetic (expected values worked out by hand); the tests on the
paper's released logs skip when ``../shared/reference/rupa2026-logs`` is absent.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner, Result

import ncsim.validate.analysis as analysis_module
from ncsim.errors import InputError
from ncsim.validate.analysis import OnsetRule, analyze, group_table, run_table
from ncsim.validate.cli import validate
from ncsim.validate.logs import (
    from_paper,
    is_paper_name,
    log_name,
    read_log,
    read_logs,
    run_labels,
)

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT.parent / "shared" / "reference" / "rupa2026-logs"
needs_logs = pytest.mark.skipif(not LOGS.is_dir(), reason=f"reference logs not found at {LOGS}")

#: a paper log: NC columns empty before epoch 20; nc1 dips below 0.05 in the CE phase (epoch 30)
#: and in the MSE phase at epoch 60 (fn 1.5), below 0.01 at epoch 70 (fn 1.2)
EPOCHS = [10, 20, 30, 40, 50, 60, 70, 80]
PHASE = [1, 1, 1, 1, 2, 2, 2, 2]
NC1 = [np.nan, 0.2, 0.04, 0.1, 0.08, 0.03, 0.008, 0.005]
FN = [np.nan, 9.0, 8.0, 7.0, 2.0, 1.5, 1.2, 1.1]


def paper_frame(**columns: object) -> pd.DataFrame:
    """The paper log above, with columns replaced or added by ``columns``."""
    frame = pd.DataFrame({"epoch": EPOCHS, "phase": PHASE, "train": 1.0, "test": 0.98,
                          "nc1": NC1, "nc2": 0.1, "nc3": 0.1, "feat_norm": FN})
    for key, value in columns.items():
        frame[key] = value
    return frame


def write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def analyze_cli(paths: list[Path], threshold: float = 0.05) -> Result:
    args = ["analyze", *map(str, paths), "--onset-threshold", str(threshold), "--format", "json"]
    return CliRunner().invoke(validate, args)


def one_error_line(result: Result) -> str:
    """The single ``Error: ...`` line of a run that exits with status 2."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def only_run(result: Result) -> dict:
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)["runs"]
    assert len(runs) == 1
    return runs[0]


# ----------------------------------------------------------------------------- 1. phase labels
def test_text_phase_labels_are_refused_naming_the_values(tmp_path):
    """CE / MSE in the phase column used to become <NA>, which switched the phase-2 rule off
    (onset 30 in the CE phase instead of 60); now one line names the labels and what to give."""
    path = write(paper_frame(phase=["CE"] * 4 + ["MSE"] * 4), tmp_path / "actTanh_s0.csv")
    with pytest.raises(InputError, match=r"^log actTanh_s0: phase values 'CE', 'MSE' are not "
                                         r"phase numbers; give phase 1 \(cross-entropy\) or 2 "
                                         r"\(MSE\)"):
        read_log(path)
    line = one_error_line(analyze_cli([path]))
    assert "'CE', 'MSE'" in line and "give phase 1 (cross-entropy) or 2 (MSE)" in line


def test_numeric_phases_read_as_before(tmp_path):
    """Phase numbers, also as text with spaces, give the phase-2 onset (60, fn 1.5)."""
    path = write(paper_frame(phase=[" 1", "1", "1 ", "1", "2 ", "2", "2", "2"]),
                 tmp_path / "actTanh_s0.csv")
    run = only_run(analyze_cli([path]))
    assert (run["onset_epoch"], run["fn_star"]) == (60, 1.5)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_true_false_phases_are_refused_not_read_as_one_and_zero(tmp_path, suffix):
    """A True/False phase column (a CSV's True parses as a bool, a Parquet column may be bool)
    read as phases 1 and 0: True became the cross-entropy phase. It is refused, also when
    only some cells are bools."""
    frame = paper_frame(phase=[True] * 4 + [False] * 4)
    path = tmp_path / f"depth5_s1{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    with pytest.raises(InputError, match=r"^log depth5_s1: phase values True/False are not "
                                         r"phase numbers; give phase 1 \(cross-entropy\)"):
        read_log(path)
    mixed = paper_frame(phase=pd.Series([1, 1, 1, 1, 2, 2, 2, True], dtype=object))
    with pytest.raises(InputError, match=r"phase values True/False are not phase numbers"):
        from_paper(mixed, "depth5_s2")
    assert read_log(write(paper_frame(), tmp_path / "depth5_s3.csv"))["phase"].tolist() == PHASE


@pytest.mark.parametrize("phases", [[1, 1, 1, 1, 3, 3, 3, 3], [0, 0, 0, 0, 2, 2, 2, 2]])
def test_paper_phase_other_than_one_or_two_is_refused(tmp_path, phases):
    path = write(paper_frame(phase=phases), tmp_path / "depth5_s1.csv")
    with pytest.raises(InputError, match=r"^log depth5_s1: phase values [03] are not allowed; "
                                         r"give phase 1 \(cross-entropy\) or 2 \(MSE\)"):
        read_log(path)


def test_ncsim_log_text_phase_refused_and_phase_zero_kept(tmp_path):
    """An ncsim log's phase is a whole number >= 0 (0: a simulation); text is refused."""
    frame = pd.DataFrame({"time": [0.0, 1.0], "fn": [1.0, 2.0], "nc1_trace": [0.5, 0.1],
                          "phase": ["ce", "mse"]})
    frame.to_csv(tmp_path / "sim.csv", index=False)
    with pytest.raises(InputError, match=r"^log sim: phase values 'ce', 'mse' are not phase "
                                         r"numbers; give the phase number on every record"):
        read_log(tmp_path / "sim.csv")
    frame.assign(phase=0).to_csv(tmp_path / "sim.csv", index=False)
    assert read_log(tmp_path / "sim.csv")["phase"].tolist() == [0, 0]
    frame.assign(phase=-1).to_csv(tmp_path / "sim.csv", index=False)
    with pytest.raises(InputError, match=r"^log sim: phase values -1 are not allowed"):
        read_log(tmp_path / "sim.csv")


@needs_logs
def test_tanh_log_with_text_phases_is_refused_and_numbers_give_220(tmp_path):
    """The review's case: actTanh_s0 with CE / MSE labels gave onset 110 (the CE phase) at the
    relaxed threshold; the numeric log gives 220."""
    tanh = pd.read_csv(LOGS / "actTanh_s0.csv")
    text = write(tanh.assign(phase=tanh["phase"].map({1: "CE", 2: "MSE"})),
                 tmp_path / "tanhtext_s0.csv")
    assert "'CE', 'MSE'" in one_error_line(analyze_cli([text]))
    assert only_run(analyze_cli([LOGS / "actTanh_s0.csv"]))["onset_epoch"] == 220


# ----------------------------------------------------------------------------- 2. blank phases
def test_phase_blank_on_some_records_is_refused_naming_them(tmp_path):
    """Phase blank after epoch 60: those records used to fall out of the phase-2 search, so the
    run looked not collapsed at 0.01; now the log is refused, naming the records."""
    path = write(paper_frame(phase=[1, 1, 1, 1, 2, 2, np.nan, np.nan]), tmp_path / "depth5_s1.csv")
    with pytest.raises(InputError, match=r"^log depth5_s1: phase is blank on 2 of 8 records "
                                         r"\(epoch 70, 80\); give phase 1"):
        read_log(path)
    assert "phase is blank on 2 of 8 records" in one_error_line(analyze_cli([path], 0.01))


def test_phase_blank_throughout_means_no_phases(tmp_path):
    """A phase column blank on every record is a log without phases: the whole log is searched
    (onset 30, the first record below 0.05)."""
    path = write(paper_frame(phase=np.nan), tmp_path / "depth5_s1.csv")
    run = only_run(analyze_cli([path]))
    assert (run["onset_epoch"], run["fn_star"]) == (30, 8.0)


def test_ncsim_log_blank_phase_checked_per_run(tmp_path):
    """In an ncsim table a run with phases on some records only is refused (naming the run);
    another run without any phase is fine."""
    frame = pd.DataFrame({"run_id": ["a", "a", "b", "b"], "time": [0.0, 1.0, 0.0, 1.0],
                          "fn": 1.0, "nc1_trace": 0.5, "phase": [np.nan, np.nan, 1, np.nan]})
    frame.to_parquet(tmp_path / "grid.parquet", index=False)
    with pytest.raises(InputError, match=r"^log grid, run b: phase is blank on 1 of 2 records "
                                         r"\(time 1\)"):
        read_log(tmp_path / "grid.parquet")
    frame.assign(phase=[np.nan, np.nan, 1, 2]).to_parquet(tmp_path / "grid.parquet", index=False)
    assert read_log(tmp_path / "grid.parquet")["phase"].isna().tolist() == [True] * 2 + [False] * 2


@needs_logs
def test_width256_with_phase_blank_after_300_is_refused(tmp_path):
    """The review's case: width256_s0 (onset 320, fn* 1.1002) with phase blank after epoch 300
    came out not_collapsed; now it is refused, and the original still gives 320 / 1.1002."""
    log = pd.read_csv(LOGS / "width256_s0.csv")
    log["phase"] = log["phase"].astype(float).where(log["epoch"] <= 300)
    path = write(log, tmp_path / "nanphase_s0.csv")
    assert "phase is blank on" in one_error_line(analyze_cli([path], 0.01))
    run = only_run(analyze_cli([LOGS / "width256_s0.csv"], 0.01))
    assert run["onset_epoch"] == 320 and run["fn_star"] == pytest.approx(1.1002, abs=5e-5)


# ----------------------------------------------------------------------------- 3. labels
@pytest.mark.parametrize("name", ["foo", "myexperiment", "baseline", "mnist_twophase",
                                  "wd0p0005", "vitamins_s0", "resnet20_fashion_s0"])
def test_names_the_paper_does_not_document_are_unlabelled(tmp_path, name):
    """A file with the paper's columns but a name its logs README does not list is no MNIST
    MLP: model and dataset are unlabelled."""
    got = read_log(write(paper_frame(), tmp_path / f"{name}.csv"))
    assert set(got["model"]) == {"unlabelled"} and set(got["dataset"]) == {"unlabelled"}
    assert not is_paper_name(name)


def test_undocumented_seeded_name_keeps_condition_and_seed():
    assert run_labels("myrun_s2") == {"model": "unlabelled", "dataset": "unlabelled",
                                      "condition": "myrun", "seed": 2}
    labels = run_labels("myexperiment")
    assert labels["condition"] == "myexperiment" and labels["seed"] is pd.NA


@pytest.mark.parametrize(("name", "expected"), [
    ("width128_s0", ("mlp", "mnist", "width128", 0)),
    ("depth2_s1_ext", ("mlp", "mnist", "depth2_ext", 1)),
    ("wd1e-05_s2", ("mlp", "mnist", "wd1e-05", 2)),
    ("wd0p0005_s0", ("mlp", "mnist", "wd0p0005", 0)),
    ("actTanh_s1", ("mlp", "mnist", "actTanh", 1)),
    ("intervention_scale_down_s2", ("mlp", "mnist", "intervention_scale_down", 2)),
    ("cifar10_s2", ("resnet20", "cifar10", "cifar10", 2)),
    ("resnet20_mnist_s1", ("resnet20", "mnist", "resnet20_mnist", 1)),
    ("mlp5_cifar10_s0", ("mlp5", "cifar10", "mlp5_cifar10", 0)),
    ("e8_mlp_mnist_adam_s4", ("mlp5", "mnist", "e8_mlp_mnist_adam", 4)),
    ("vit_mnist_adam_s0", ("vit", "mnist", "vit_mnist_adam", 0)),
])
def test_documented_names_keep_their_labels(name, expected):
    labels = run_labels(name)
    assert (labels["model"], labels["dataset"], labels["condition"], labels["seed"]) == expected
    assert is_paper_name(name)


def test_ce_only_ablation_is_documented_without_seed():
    labels = run_labels("ce_only_ablation")
    assert (labels["model"], labels["dataset"], labels["condition"]) == \
        ("mlp", "mnist", "ce_only_ablation")
    assert labels["seed"] is pd.NA


@pytest.mark.parametrize("suffix", [".csv.gz", ".csv.bz2", ".csv.xz"])
def test_compressed_log_is_named_without_its_suffixes(tmp_path, suffix):
    """width128_s0.csv.gz is run width128_s0, seed 0 (it used to be run 'width128_s0.csv' with
    no seed)."""
    path = tmp_path / f"width128_s0{suffix}"
    paper_frame().to_csv(path, index=False)
    got = read_log(path)
    assert set(got["run_id"]) == {"width128_s0"} and set(got["seed"]) == {0}
    assert set(got["condition"]) == {"width128"} and set(got["model"]) == {"mlp"}
    assert log_name(path) == "width128_s0" and log_name("a/b.parquet") == "b"


# ----------------------------------------------------------------------------- 4. groups
def test_gelu_seeds_join_the_actgelu_group_and_seedless_wd_log_stands_apart(tmp_path):
    """gelu_s3 / gelu_s4 are GELU runs like actGELU_s* (one group); wd0p0005.csv (no seed, no
    phase) is not a seed of the wd0p0005_s* sweep."""
    paths = [write(paper_frame(), tmp_path / f"{n}.csv")
             for n in ("actGELU_s0", "actGELU_s1", "gelu_s3", "gelu_s4",
                       "wd0p0005_s0", "wd0p0005_s1", "wd0p0005_s2")]
    paths.append(write(paper_frame().drop(columns="phase"), tmp_path / "wd0p0005.csv"))
    groups = group_table(run_table(read_logs(paths), OnsetRule.preset("rupa2026", 0.05)))
    sizes = {tuple(k): n for *k, n in groups[["model", "dataset", "condition", "n_runs"]]
             .itertuples(index=False)}
    assert sizes == {("mlp", "mnist", "actGELU"): 4, ("mlp", "mnist", "wd0p0005"): 3,
                     ("unlabelled", "unlabelled", "wd0p0005"): 1}


@needs_logs
def test_paper_gelu_and_weight_decay_groups():
    """On the released logs: one GELU group of five runs (actGELU_s0-2, gelu_s3-4) and a
    wd0p0005 group of three (the paper's N = 3); mnist_twophase.csv, which no shared document
    names, is unlabelled."""
    names = ["actGELU_s0", "actGELU_s1", "actGELU_s2", "gelu_s3", "gelu_s4", "wd0p0005",
             "wd0p0005_s0", "wd0p0005_s1", "wd0p0005_s2", "mnist_twophase"]
    runs = run_table(read_logs([LOGS / f"{n}.csv" for n in names]),
                     OnsetRule.preset("rupa2026", 0.05))
    groups = group_table(runs).set_index(["model", "dataset", "condition"])
    assert groups.loc[("mlp", "mnist", "actGELU"), "n_runs"] == 5
    assert groups.loc[("mlp", "mnist", "wd0p0005"), "n_runs"] == 3
    assert groups.loc[("unlabelled", "unlabelled", "wd0p0005"), "n_runs"] == 1
    assert groups.loc[("unlabelled", "unlabelled", "mnist_twophase"), "n_runs"] == 1
    assert len(groups) == 4


# ----------------------------------------------------------------------------- 5. silent cases
def test_conflicting_duplicate_epoch_is_refused_naming_it(tmp_path):
    """Two different records for epoch 60 (the second below the threshold) used to be read
    as both; now one line names the epoch."""
    frame = paper_frame()
    extra = frame[frame["epoch"] == 60].assign(nc1=0.005, feat_norm=9.9)
    path = write(pd.concat([frame, extra]).sort_values("epoch", kind="stable"),
                 tmp_path / "width256_s0.csv")
    with pytest.raises(InputError, match=r"^log width256_s0: epoch 60 has 2 records with "
                                         r"different values; keep one record per epoch"):
        read_log(path)
    assert "epoch 60 has 2 records" in one_error_line(analyze_cli([path]))


def test_identical_duplicate_records_count_once(tmp_path):
    """An exact copy of a record is one record. With 'stays below for 2 records', nc1 below
    0.05 at 60, above at 70, below at 80 and 90 gives onset 80; the copy of the epoch-60 record
    used to count as a second record below, giving 60."""
    frame = pd.DataFrame({"epoch": [50, 60, 60, 70, 80, 90], "phase": 2,
                          "nc1": [0.08, 0.03, 0.03, 0.08, 0.02, 0.01],
                          "feat_norm": [2.0, 1.5, 1.5, 1.4, 1.2, 1.1]})
    got = read_log(write(frame, tmp_path / "width256_s0.csv"))
    assert got["time"].tolist() == [50.0, 60.0, 70.0, 80.0, 90.0]
    runs = run_table(got, OnsetRule(threshold=0.05, phase=2, stay=2))
    assert (runs["onset_epoch"][0], runs["fn_star"][0]) == (80.0, 1.2)


def test_text_epoch_is_refused(tmp_path):
    frame = paper_frame().astype({"epoch": object})
    frame.loc[0, "epoch"] = "ten"
    path = write(frame, tmp_path / "width256_s0.csv")
    with pytest.raises(InputError, match=r"^log width256_s0: epoch 'ten' in data row 1 is not a "
                                         r"number \(1 such entries\); give every record its "
                                         r"epoch as a number"):
        read_log(path)


def test_record_without_epoch_is_refused(tmp_path):
    frame = paper_frame()
    frame.loc[2, "epoch"] = np.nan
    with pytest.raises(InputError, match=r"^log width256_s0: 1 record\(s\) have no epoch \(the "
                                         r"first is data row 3\)"):
        read_log(write(frame, tmp_path / "width256_s0.csv"))


def test_text_in_a_metric_is_refused_but_blank_markers_are_gaps(tmp_path):
    frame = paper_frame().astype({"nc1": object})
    frame.loc[3, "nc1"] = "low"
    with pytest.raises(InputError, match=r"^log width256_s0: nc1 'low' in data row 4 is not a "
                                         r"number"):
        read_log(write(frame, tmp_path / "width256_s0.csv"))
    frame.loc[3, "nc1"] = "n/a"
    assert math.isnan(read_log(write(frame, tmp_path / "width256_s0.csv"))["nc1_trace"][3])


def test_negative_nc1_is_refused(tmp_path):
    frame = paper_frame()
    frame.loc[6, "nc1"] = -0.5
    with pytest.raises(InputError, match=r"^log width256_s0: nc1 is -0.5 at epoch 70; nc1 is the "
                                         r"trace ratio"):
        read_log(write(frame, tmp_path / "width256_s0.csv"))
    ncsim = pd.DataFrame({"time": [0.0, 1.0], "fn": 1.0, "nc1_trace": [0.5, -1e-9]})
    ncsim.to_csv(tmp_path / "sim.csv", index=False)
    with pytest.raises(InputError, match=r"^log sim: nc1_trace is -1e-09 at time 1"):
        read_log(tmp_path / "sim.csv")


def test_fn_missing_at_the_onset_record_gives_no_fn_star(tmp_path):
    """fn* is feat_norm at T_NC (the paper's definition): with fn blank at the onset record
    (epoch 60) fn* is NaN, not the next record's 1.2; the group's fn* comes from the other
    run only, and the command line says so on stderr."""
    frame = paper_frame()
    frame.loc[frame["epoch"] == 60, "feat_norm"] = np.nan
    gap = write(frame, tmp_path / "width256_s0.csv")
    whole = write(paper_frame(feat_norm=[np.nan, 9.0, 8.0, 7.0, 2.0, 1.4, 1.2, 1.1]),
                  tmp_path / "width256_s1.csv")
    result = analyze(read_logs([gap, whole]), OnsetRule.preset("rupa2026", 0.05))
    runs = result["runs"].set_index("run")
    assert runs.loc["width256_s0", "onset_epoch"] == 60
    assert math.isnan(runs.loc["width256_s0", "fn_star"])
    assert runs.loc["width256_s0", "status"] == "collapsed"
    group = result["groups"].iloc[0]
    assert group["n_collapsed"] == 2 and group["fn_star_mean"] == 1.4
    assert group["onset_mean"] == 60
    cli = analyze_cli([gap, whole])
    assert cli.exit_code == 0, cli.output
    assert "1 collapsed run(s) have no fn at their onset record" in cli.stderr
    assert "width256_s0" in cli.stderr


# ----------------------------------------------------------------------------- 6., 7. documents
def test_analysis_cites_readme_not_a_missing_design_file():
    doc = analysis_module.__doc__ or ""
    assert "DESIGN.md" not in doc
    assert 'README.md, section "What ncsim computes"' in doc
    assert "## What ncsim computes" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_states_the_weight_decay_regime_rule():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "more than twice the fastest onset" in readme
    assert "OPTIMAL_FACTOR = 2" in readme


def test_negative_feature_norm_is_refused(tmp_path):
    """feat_norm is a mean of norms: a negative entry is a damaged log, refused naming the
    record, not read as a vanishing run; fn 0 is a value like any other."""
    frame = paper_frame()
    frame.loc[6, "feat_norm"] = -1.2
    with pytest.raises(InputError, match=r"^log width256_s0: feat_norm is -1.2 at epoch 70; "
                                         r"feat_norm is a mean of feature norms, never below 0"):
        read_log(write(frame, tmp_path / "width256_s0.csv"))
    frame.loc[6, "feat_norm"] = 0.0
    assert read_log(write(frame, tmp_path / "width256_s0.csv"))["fn"][6] == 0.0


def test_run_table_names_the_unit_of_its_onset_times(tmp_path):
    """onset_epoch and last_epoch are in the log's own time: epochs for a training log, the
    flow time t for a simulation's trajectories; the run table says which (time_unit)."""
    paper = read_log(write(paper_frame(), tmp_path / "width256_s0.csv"))
    sim = pd.DataFrame({"run_id": "sim", "time": [0.0, 5.0, 10.0], "time_unit": "t",
                        "fn": [1.0, 2.0, 3.0], "nc1_trace": [0.5, 0.05, 0.001]})
    sim.to_csv(tmp_path / "sim.csv", index=False)
    table = run_table(read_logs([tmp_path / "width256_s0.csv", tmp_path / "sim.csv"]),
                      OnsetRule())
    units = dict(zip(table["run"], table["time_unit"], strict=True))
    assert units == {"width256_s0": "epoch", "sim": "t"}
    assert table.set_index("run").loc["sim", "onset_epoch"] == 10.0
    assert set(paper["time_unit"]) == {"epoch"}
