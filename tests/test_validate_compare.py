"""Network vs UFM surrogate comparison on a tiny training run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ncsim.validate.cli import validate
from ncsim.validate.surrogate import SurrogateState, calibrate_lambda_h, lambda_w_ncsim

THREADS = torch.get_num_threads()


def test_balance_calibration():
    rng = np.random.default_rng(0)
    state = SurrogateState(H=rng.standard_normal((4, 6)), W=rng.standard_normal((3, 4)),
                           b=np.zeros(3), per_class=2)
    lam_h = calibrate_lambda_h(state, 0.5)
    assert 0.5 * (state.W ** 2).sum() == pytest.approx(lam_h * (state.H ** 2).sum(), rel=1e-12)
    assert lambda_w_ncsim(1e-4, 10) == pytest.approx(5e-4)


def test_compare_command(tmp_path):
    out = tmp_path / "run"
    train = ["train", "--dataset", "digits", "--per-class", "10", "--epochs", "3,3",
             "--depth", "1", "--width", "16", "--nc-every", "3", "--out", str(out),
             "--no-progress", "--format", "json"]
    res = CliRunner().invoke(validate, train)
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(validate, ["compare", "--run", str(out), "--per-class", "3",
                                        "--horizon", "2", "--max-steps", "2000",
                                        "--format", "json"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)["runs"][0]
    assert row["K"] == 10 and row["d"] == 16 and row["lambda_h"] > 0
    assert row["time_mapping_valid"] is False and "invalid" in row["time_mapping"]
    assert row["onset_simulated"] is None and row["onset_simulated_estimate"] is None
    assert (out / "compare.csv").exists() and (out / "compare.png").exists()
    bad = CliRunner().invoke(validate, ["compare", "--run", str(tmp_path / "none")])
    assert bad.exit_code == 2 and "validate train" in bad.stderr


@pytest.mark.slow
def test_compare_on_collapsing_preset(tmp_path):
    """cpu-small preset (measured: onset 2500 t, fn* 3.81; closed form 3.67, ratio 0.965).

    The balance-calibrated surrogate (lambda_H ~ 5e-6) is stiff and collapses on its time scale
    1 / (2 lambda_H) ~ 5e5 t: its onset lies past the step budget and is extrapolated
    (1.9e6 t, ratio ~760 to the measured onset).
    """
    torch.set_num_threads(1)
    try:
        out = tmp_path / "run"
        res = CliRunner().invoke(validate, ["train", "--preset", "cpu-small", "--out", str(out),
                                            "--no-progress", "--format", "json"])
        assert res.exit_code == 0, res.output
        res = CliRunner().invoke(validate, ["compare", "--run", str(out), "--horizon", "2",
                                            "--max-steps", "5000", "--format", "json"])
        assert res.exit_code == 0, res.output
    finally:
        torch.set_num_threads(THREADS)
    row = json.loads(res.stdout)["runs"][0]
    assert row["time_mapping_valid"] is True
    for col in ("onset_measured", "onset_simulated_lower_bound", "onset_simulated_estimate",
                "fn_star_measured", "fn_star_closed_form", "collapse_time_scale"):
        assert row[col] is not None and np.isfinite(row[col]), col
    assert 2000 <= row["onset_measured"] <= 3000
    assert 0.8 < row["fn_star_closed_form"] / row["fn_star_measured"] < 1.25
    if row["onset_simulated"] is not None:
        assert row["onset_simulated_source"] == "simulated"
    else:
        assert row["onset_simulated_source"] == "extrapolated"
        assert row["status_simulated"] == "max_steps"
        assert row["onset_simulated_estimate"] > row["onset_simulated_lower_bound"]
    assert 200 < row["onset_ratio_sim_over_measured"] < 3000
