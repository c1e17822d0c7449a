"""The benchmark runner on a tiny workload, and its accuracy check."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from ncsim.bench import _benchmarks, bench, run_bench


def test_runner_times_ncsim_and_peers_on_a_tiny_workload():
    results = run_bench(("W1",), repeats=1, size="tiny", threads=1, log=lambda m: None)
    w1 = results["workloads"]["W1"]
    assert set(w1["solvers"]) == {"ncsim_dopri5", "scipy_dop853_loop", "torchdiffeq_dopri5",
                                  "torchode_dopri5"}
    for row in w1["solvers"].values():
        assert row["median_s"] > 0 and row["fn_error"] <= 1e-6
    assert set(w1["ratios"]) == set(w1["solvers"]) - {"ncsim_dopri5"}
    assert results["machine"]["torch_threads"] == 1
    json.dumps(results)


def test_accuracy_check_fails_loudly_on_a_wrong_result():
    _, peers = _benchmarks()
    ref = np.array([1.0, 0.5])
    assert peers.check_accuracy("ok", ref + 1e-8, ref, 1e-6) < 1e-6
    with pytest.raises(AssertionError, match="exceeds the stated accuracy"):
        peers.check_accuracy("wrong", ref * 1.01, ref, 1e-6)
    with pytest.raises(AssertionError):
        peers.check_accuracy("nan", np.array([np.nan, 0.5]), ref, 1e-6)


def test_cli_writes_json(tmp_path):
    out = tmp_path / "r.json"
    result = CliRunner().invoke(bench, ["--workload", "W2", "--workload", "W2n", "--size",
                                        "tiny", "--repeats", "1", "--threads", "1", "--out",
                                        str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    rows = data["workloads"]["W2"]
    assert rows and all(r["max_rel_diff"] <= 1e-9 for r in rows)
    rows = data["workloads"]["W2n"]
    assert [(r["n"], r["records"]) for r in rows] == [(20, 20), (50, 20), (20, 2), (50, 2)]
    assert all(r["max_rel_diff"] <= 1e-9 and r["classes"]["steps_total"] > 0 for r in rows)
