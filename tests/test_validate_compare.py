"""Network vs UFM surrogate comparison on a tiny training run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from ncsim.validate.cli import validate
from ncsim.validate.surrogate import SurrogateState, calibrate_lambda_h, lambda_w_ncsim


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
                                        "--horizon", "2", "--format", "json"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)["runs"][0]
    assert row["K"] == 10 and row["d"] == 16 and row["lambda_h"] > 0
    assert (out / "compare.csv").exists() and (out / "compare.png").exists()
    bad = CliRunner().invoke(validate, ["compare", "--run", str(tmp_path / "none")])
    assert bad.exit_code == 2 and "validate train" in bad.stderr
