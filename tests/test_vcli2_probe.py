"""Second mutation probe of ``ncsim validate`` (ncsim/validate/cli.py): what train hands to the
data loader, the trainer and run.json (seed, test subset, data root, dense records, reference
size, labels, cpu-small's subset, device), the --seeds checks and table, analyze's notes on
stderr and its json keys, and the arguments compare gives the library."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from cli_helpers import error_line, invoke, tiny_train_args

import ncsim.io as io_mod
import ncsim.validate.compare as compare_mod
import ncsim.validate.data as data_mod
import ncsim.validate.plots as plots_mod
import ncsim.validate.train as train_mod
from ncsim.validate.analysis import OnsetRule, analyze
from ncsim.validate.logs import read_logs


def _spy(monkeypatch, module, name: str) -> list:
    """Wrap ``module.name`` so each call's (args, kwargs) is recorded; returns the record."""
    real = getattr(module, name)
    calls: list = []

    def wrapped(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)
    return calls


def _log(path: Path, fn: list[float]) -> str:
    """A paper-style depth2 log: nc1 falls below the paper's 0.05 at epoch 40 (phase 2)."""
    pd.DataFrame({"epoch": [10, 20, 30, 40, 50], "phase": [1, 1, 2, 2, 2], "train": 1.0,
                  "test": 0.9, "nc1": [0.5, 0.04, 0.1, 1e-3, 5e-4], "nc2": 0.1, "nc3": 0.1,
                  "feat_norm": fn}).to_csv(path, index=False)
    return str(path)


def _summary_file(path: Path) -> str:
    """A per-seed summary table (no 'epoch' or 'time' column): not a per-epoch log."""
    pd.DataFrame({"seed": [0], "fn_star": [1.0]}).to_csv(path, index=False)
    return str(path)


# ----------------------------------------------------------------------------- train
def test_train_passes_seed_test_subset_and_root_to_the_loader_and_config(tmp_path,
                                                                        monkeypatch):
    """--seed 3 --test-per-class 2 --data-root D --nc-dense 2 --reference-train-size 60: the
    loader gets them all, and the trainer's config has them (data_args, nc_dense,
    reference_train_size) with labels model mlp, dataset gaussian, condition mlp8."""
    loads = _spy(monkeypatch, data_mod, "load_dataset")
    trains = _spy(monkeypatch, train_mod, "train")
    out, root = tmp_path / "run", tmp_path / "data"
    result = invoke([*tiny_train_args(out, "1,1", 1), "--seed", "3", "--data-root", str(root),
                     "--nc-dense", "2", "--reference-train-size", "60"])
    assert result.exit_code == 0, result.output
    assert loads == [(("gaussian",), {"per_class": 3, "test_per_class": 2, "seed": 3,
                                      "root": root})]
    ((config, _data), kwargs) = trains[0]
    assert kwargs == {"progress": False, "seeds": None}
    assert config.data_args == {"name": "gaussian", "per_class": 3, "test_per_class": 2,
                                "seed": 3, "root": str(root)}
    assert (config.nc_dense, config.reference_train_size, config.seed) == (2, 60, 3)
    assert config.labels == {"model": "mlp", "dataset": "gaussian", "condition": "mlp8"}
    assert config.run_id == "mlp_gaussian_s3"


def test_train_cpu_small_keeps_a_given_per_class(tmp_path, monkeypatch):
    """--preset cpu-small takes 10 per class only when --per-class is not given: with
    --per-class 2 the loader and data_args get 2."""
    loads = _spy(monkeypatch, data_mod, "load_dataset")
    out = tmp_path / "run"
    result = invoke(["validate", "train", "--preset", "cpu-small", "--per-class", "2",
                     "--test-per-class", "1", "--epochs", "1,1", "--nc-every", "1",
                     "--no-progress", "--format", "json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert [kw["per_class"] for _, kw in loads] == [2]
    config = json.loads((out / "run.json").read_text())["config"]
    assert config["data_args"]["per_class"] == 2


def test_train_run_json_provenance_names_the_device_and_float32(tmp_path, monkeypatch):
    """run.json's provenance is made for the --device given (cpu) and dtype float32, not
    provenance's default float64."""
    calls = _spy(monkeypatch, io_mod, "provenance")
    out = tmp_path / "run"
    result = invoke([*tiny_train_args(out, "1,1", 1), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert calls == [(("cpu", "float32"), {})]
    provenance = json.loads((out / "run.json").read_text())["provenance"]
    assert (provenance["device"], provenance["dtype"]) == ("cpu", "float32")


def test_train_seeds_refuse_an_intervention_at_epoch_zero(tmp_path):
    """--seeds with --intervene-epoch 0 is refused too (0 is an epoch, not 'none'), before
    any training."""
    out = tmp_path / "run"
    line = error_line(invoke([*tiny_train_args(out, "1,1", 1), "--seeds", "0,1",
                              "--intervene-epoch", "0"]))
    assert line == ("Error: --seeds (stacked training) has no --intervene-epoch, --amp or "
                    "--checkpoint-every")
    assert not (out / "log.csv").exists()


def test_train_seeds_table_has_a_row_per_seed(tmp_path):
    """--seeds 0,1 --format table: the training-run table lists both runs."""
    out = tmp_path / "run"
    result = invoke([*tiny_train_args(out, "1,1", 1), "--seeds", "0,1", "--format", "table"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"# training run (log: {out / 'log.parquet'})"
    rows = [line.split()[:2] for line in lines[2:] if line.strip()]
    assert rows == [["mlp_gaussian_s0", "0"], ["mlp_gaussian_s1", "1"]]


# ----------------------------------------------------------------------------- analyze
def test_analyze_fn_star_note_lists_only_the_runs_without_fn(tmp_path):
    """Two collapsed runs, fn blank at the onset record of s0 only: the stderr note is one
    line naming s0 alone."""
    gap = _log(tmp_path / "depth2_s0.csv", [1.0, 1.5, 2.0, float("nan"), 3.5])
    whole = _log(tmp_path / "depth2_s1.csv", [1.0, 1.5, 2.0, 4.0, 4.5])
    result = invoke(["validate", "analyze", gap, whole])
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "note: 1 collapsed run(s) have no fn at their onset record, so no fn* (depth2_s0); "
        "they are left out of the fn* statistics and the lead-time fit\n")


def test_analyze_notes_every_skipped_file_even_one(tmp_path):
    """One summary table beside a log is skipped with a note naming it; three are all named
    (the list holds up to 20)."""
    log = _log(tmp_path / "depth2_s0.csv", [1.0, 1.5, 2.0, 3.0, 3.5])
    one = _summary_file(tmp_path / "a_summary.csv")
    result = invoke(["validate", "analyze", log, one, "--format", "json"])
    assert result.exit_code == 0, result.output
    assert result.stderr == (f"note: skipped 1 file(s) that are not per-epoch logs (no 'epoch' "
                             f"or 'time' column): {one}\n")
    more = [one, _summary_file(tmp_path / "b_summary.csv"),
            _summary_file(tmp_path / "c_summary.csv")]
    result = invoke(["validate", "analyze", log, *more, "--format", "json"])
    assert result.exit_code == 0, result.output
    assert result.stderr == (f"note: skipped 3 file(s) that are not per-epoch logs (no 'epoch' "
                             f"or 'time' column): {', '.join(more)}\n")


def test_analyze_json_has_every_key_and_the_librarys_lead_summary(tmp_path):
    """--format json: keys rule, runs, groups, leads and lead_summary; lead_summary equals
    the library's for the same logs and rule."""
    logs = [_log(tmp_path / "depth2_s0.csv", [1.0, 1.5, 2.0, 3.0, 3.5]),
            _log(tmp_path / "depth2_s1.csv", [1.0, 1.5, 2.0, 4.0, 4.5])]
    result = invoke(["validate", "analyze", *logs, "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert sorted(data) == ["groups", "lead_summary", "leads", "rule", "runs"]
    expected = analyze(read_logs(logs), OnsetRule.preset("rupa2026", None), "mean", True)
    assert data["lead_summary"] == io_mod.to_jsonable(expected["lead_summary"])
    assert data["lead_summary"]["in_sample"]["n_crossed"] == 2


# ----------------------------------------------------------------------------- compare
def test_compare_hands_every_option_to_the_library(tmp_path, monkeypatch):
    """--per-class 5 --onset-threshold 0.02 --horizon 3 --wd-horizon 7 --max-steps 50
    --lambda-h-rule balance reach compare_run as given."""
    seen: dict = {}
    table = pd.DataFrame({"onset_measured": [2.5], "onset_simulated": [3.25],
                          "time_mapping": ["t"]})
    frame = pd.DataFrame({"time": [0.0, 1.0], "nc1_trace": [1.0, 0.5]})

    def compare_run(run_dir, per_class, threshold, horizon, **kwargs):
        seen["args"] = (Path(run_dir), per_class, threshold, horizon)
        seen["kwargs"] = {k: v for k, v in kwargs.items() if k != "report"}
        return {"table": table, "simulated": frame, "measured": frame}

    monkeypatch.setattr(compare_mod, "compare_run", compare_run)
    monkeypatch.setattr(plots_mod, "plot_overlay", lambda *a, **k: None)
    run = tmp_path / "run"
    run.mkdir()
    result = invoke(["validate", "compare", "--run", str(run), "--per-class", "5",
                     "--onset-threshold", "0.02", "--horizon", "3", "--wd-horizon", "7",
                     "--max-steps", "50", "--lambda-h-rule", "balance", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert seen["args"] == (run, 5, 0.02, 3.0)
    assert seen["kwargs"] == {"wd_horizon": 7.0, "max_steps": 50, "lambda_h_rule": "balance"}
    assert json.loads(result.stdout) == {"runs": [{"onset_measured": 2.5,
                                                   "onset_simulated": 3.25,
                                                   "time_mapping": "t"}]}
