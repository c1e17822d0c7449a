"""Adversarial scan of ``ncsim bench`` (``ncsim/bench.py``) and its workloads and peers
(``benchmarks/workloads.py``, ``benchmarks/peers.py``), on the ``--size tiny`` workloads only.

Invariants checked:
- every time in the JSON is the median of its recorded repeat times (``numpy.median`` of
  ``times_s``, an even and an odd count of repeats in one run; W1, W2, W2n, W3), ``ratios``,
  ``fastest_peer``/``fastest_ncsim`` and ``speedup_vs_fastest_peer`` follow from those
  medians, each dtype on its own (a float32 row is never set against a float64 one);
- the file is strict JSON (no NaN or Infinity token) and carries the machine and versions;
- a peer that misses its accuracy in any repeat, however fast, becomes an ``error`` row and
  stays out of the ratios and of ``fastest_peer``; ncsim missing its accuracy is an
  AssertionError naming it;
- bad command-line input (unknown workload or peer, repeat counts 0 or negative, cuda
  without CUDA) is one line and exit status 2 before anything is measured.

Fixed findings:
- a peer whose package is missing (torchdiffeq and torchode are the optional ``bench``
  extra) or that raised anything but AssertionError / RuntimeError (a ValueError, as scipy
  raises) ended the whole W1 run with a traceback, every other measurement lost; it is now
  that peer's ``error`` row (``bench_w1``);
- the default result file was written in place after its name was claimed: a write that
  failed part way (a full disk; here a file-size limit of 1000 bytes) left a truncated JSON
  of 1000 bytes under the result's name; it is now written whole to a temporary file and
  then linked to the first free name (``write_unused``);
- ``--out`` was written in place (truncated, then written): a failed write destroyed the
  earlier file and left 1000 bytes of the new one; the results, printed only after the
  file was written, were lost too (a traceback, empty stdout). The JSON is now printed
  first, the file replaced atomically, and a failed write is one line naming the file;
- ``--out`` naming an existing file replaced it without a word; stderr now says so before
  the measurements start;
- W3's rows held the median ``rhs_s`` but none of the repeat times behind it (every other
  timed row has its ``times_s``): ``rhs_times_s`` and ``calls`` now (``bench_w3``).
"""

from __future__ import annotations

import json
import resource
import signal
import sys
from contextlib import contextmanager

import numpy as np
import pytest
from cli_helpers import error_line, invoke
from click.testing import CliRunner

import ncsim.bench as bench_module
from ncsim.bench import _benchmarks, bench, bench_w1, write_unused

workloads, peers = _benchmarks()


def _strict(text: str) -> dict:
    """``text`` parsed as strict JSON: a NaN or Infinity token fails the test."""

    def refuse(token: str) -> None:
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


@contextmanager
def _file_size_limit(nbytes: int):
    """Writes past ``nbytes`` of any file fail with EFBIG (as a full disk fails them) while
    the block runs; SIGXFSZ ignored, both restored afterwards."""
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, handler)


# ---------------------------------------------------------------- medians, ratios, JSON


def test_tiny_w1_json_times_are_medians_and_ratios_follow_from_them(tmp_path):
    """One real tiny W1 run in both dtypes, ncsim timed twice (an even count) and every peer
    three times (odd): each median_s is numpy's median of its times_s, each ratio and
    speedup is recomputed from the medians of its own dtype, and the file is strict JSON."""
    out = tmp_path / "w1.json"
    result = CliRunner().invoke(bench, [
        "--workload", "W1", "--size", "tiny", "--repeats", "2", "--peer-repeats", "3",
        "--threads", "1", "--dtype", "float64", "--dtype", "float32", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = _strict(out.read_text())
    assert _strict(result.stdout) == data  # the JSON printed is the JSON written
    assert data["repeats"] == 2 and data["peer_repeats"] == 3
    assert "2 timed repeat(s)" in data["warning"]
    for key in ("ncsim", "ncsim_commit", "torch", "numpy", "scipy", "torchdiffeq", "torchode",
                "cpu", "torch_threads"):
        assert key in data["machine"]
    assert data["machine"]["torch_threads"] == 1
    w1 = data["workloads"]["W1"]
    rows = w1["solvers"]
    assert set(rows) == {"ncsim_dopri5", "ncsim_tsit5", "scipy_dop853_loop",
                         "torchdiffeq_dopri5", "torchode_dopri5", "torchode_tsit5",
                         "ncsim_dopri5_float32", "ncsim_tsit5_float32",
                         "torchdiffeq_dopri5_float32", "torchode_dopri5_float32",
                         "torchode_tsit5_float32"}
    for name, row in rows.items():
        assert "error" not in row, (name, row)
        assert len(row["times_s"]) == (2 if name.startswith("ncsim") else 3)
        assert all(t > 0 for t in row["times_s"])
        assert row["median_s"] == np.median(row["times_s"]), name
        assert row["peak_mem_mb"] >= 0
        assert row["dtype"] == ("float32" if name.endswith("_float32") else "float64")
        assert row["fn_error"] <= (1e-3 if row["dtype"] == "float32" else 1e-6)
    expected_ratios = {}
    for suffix in ("", "_float32"):
        same = {n: r["median_s"] for n, r in rows.items()
                if n.endswith("_float32") == bool(suffix)}
        mine = {n: t for n, t in same.items() if n.startswith("ncsim")}
        theirs = {n: t for n, t in same.items() if not n.startswith("ncsim")}
        assert len(mine) == 2 and len(theirs) == (3 if suffix else 4)
        for name, t in theirs.items():
            method = "tsit5" if "_tsit5" in name else "dopri5"
            expected_ratios[name] = t / mine[f"ncsim_{method}{suffix}"]
        assert w1[f"fastest_ncsim{suffix}"] == min(mine, key=mine.get)
        assert w1[f"fastest_peer{suffix}"] == min(theirs, key=theirs.get)
        assert w1[f"speedup_vs_fastest_peer{suffix}"] == (
            min(theirs.values()) / min(mine.values()))
    assert w1["ratios"] == expected_ratios
    assert w1["skipped"] == ["scipy_dop853_loop_float32 (a CPU float64 peer)"]
    assert w1["peer_repeats"] == 3


def test_tiny_w2_w2n_w3_times_are_medians_of_the_recorded_repeats():
    """W2, W2n and W3 tiny with 2 repeats (an even count): each form's median_s is numpy's
    median of its times_s, each speedup the d-space median over the reduced one; W3 recorded
    only its median (``rhs_s``), not the repeat times behind it: it now records them
    (``rhs_times_s``, each of ``calls`` right-hand sides) and ``rhs_s`` is their median per
    call. The results are strict JSON."""
    from ncsim.io import to_jsonable

    results = bench_module.run_bench(("W2", "W2n", "W3"), repeats=2, size="tiny", threads=1,
                                     log=lambda m: None)
    data = _strict(json.dumps(to_jsonable(results), allow_nan=False))["workloads"]
    for workload, fast in (("W2", "gram"), ("W2n", "classes")):
        assert len(data[workload]) == (3 if workload == "W2" else 4)
        for row in data[workload]:
            for form in (fast, "none"):
                assert len(row[form]["times_s"]) == 2
                assert row[form]["median_s"] == np.median(row[form]["times_s"])
            assert row["speedup"] == row["none"]["median_s"] / row[fast]["median_s"]
            assert 0 <= row["max_rel_diff"] <= 1e-9
    assert [row["dtype"] for row in data["W3"]] == ["float32", "float64"]
    for row in data["W3"]:
        assert row["calls"] == 5 and len(row["rhs_times_s"]) == 2
        assert row["rhs_s"] == np.median(row["rhs_times_s"]) / row["calls"]
        assert row["rhs_gflops"] == pytest.approx(
            row["R"] * 6 * row["K"] * row["d"] * row["N"] / row["rhs_s"] / 1e9, rel=1e-12)


# ---------------------------------------------------------------- accuracy failures


def test_a_fast_peer_wrong_in_its_second_repeat_is_an_error_row_never_the_fastest(
        monkeypatch, tmp_path):
    """A peer that returns at once (it would be the fastest) with fn(T) right in its first
    repeat and 2e-6 off on one run in its second (W1 float64 allows 1e-6) is an error row
    in the JSON: no time, no ratio, not the fastest peer, and the command still succeeds."""
    ref = peers.reference_fn(peers.Problem.from_specs(workloads.w1(grid=2, t_end=50.0,
                                                                   records=10).specs))
    calls = []

    def fast_but_wrong(problem, **tol):
        calls.append(1)
        fn = ref.copy()
        if len(calls) == 2:
            fn[3] += 2e-6
        return {"fn": fn, "nfev": np.ones(4)}

    monkeypatch.setitem(peers.PEERS, "torchode_dopri5", fast_but_wrong)
    out = tmp_path / "w1.json"
    result = CliRunner().invoke(bench, [
        "--workload", "W1", "--size", "tiny", "--repeats", "1", "--peer-repeats", "3",
        "--threads", "1", "--skip-peer", "torchdiffeq_dopri5", "--skip-peer", "torchode_tsit5",
        "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(calls) == 2  # the third repeat is not run after a failed check
    w1 = _strict(out.read_text())["workloads"]["W1"]
    row = w1["solvers"]["torchode_dopri5"]
    assert set(row) == {"dtype", "error"} and row["dtype"] == "float64"
    assert row["error"].startswith("torchode_dopri5: fn(T) error 2.0")
    assert "exceeds the stated accuracy 1.0e-06" in row["error"]
    assert set(w1["ratios"]) == {"scipy_dop853_loop"}
    assert w1["fastest_peer"] == "scipy_dop853_loop"
    assert w1["speedup_vs_fastest_peer"] == (w1["solvers"]["scipy_dop853_loop"]["median_s"]
                                             / w1["solvers"][w1["fastest_ncsim"]]["median_s"])
    assert "torchode_dopri5: FAILED: torchode_dopri5: fn(T) error" in result.stderr


def test_ncsim_missing_its_accuracy_is_an_assertion_error_naming_it(monkeypatch):
    """ncsim dopri5 off by 1e-5 on one run (of 4) is the AssertionError of W1, naming the
    row and the stated accuracy: ncsim's own accuracy is not a row to report."""
    real = bench_module._simulate

    def off(specs):
        res = real(specs)
        res.runs.loc[res.runs.index[2], "final_fn"] += 1e-5
        return res

    monkeypatch.setattr(bench_module, "_simulate", off)
    with pytest.raises(AssertionError,
                       match=r"^ncsim_dopri5: fn\(T\) error 1\.00\de-05 exceeds the stated "
                             r"accuracy 1\.0e-06$"):
        bench_w1("tiny", 1, "cpu", False, lambda m: None)


# ---------------------------------------------------------------- peers that cannot run


def test_a_peer_package_that_is_missing_is_an_error_row(monkeypatch):
    """torchdiffeq and torchode are optional (the ``bench`` extra). Without them W1 ran
    ncsim and the scipy loop, then stopped with ModuleNotFoundError (every measurement
    lost); now each of their rows says what failed and the rest is measured."""
    monkeypatch.setitem(sys.modules, "torchdiffeq", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "torchode", None)
    said: list[str] = []
    w1 = bench_w1("tiny", 1, "cpu", True, said.append)
    rows = w1["solvers"]
    for name, module in (("torchdiffeq_dopri5", "torchdiffeq"), ("torchode_dopri5", "torchode"),
                         ("torchode_tsit5", "torchode")):
        assert set(rows[name]) == {"dtype", "error"}, rows[name]
        assert module in rows[name]["error"]
        assert any(line.startswith(f"  {name}: FAILED: ") for line in said)
    assert rows["scipy_dop853_loop"]["fn_error"] <= 1e-6
    assert set(w1["ratios"]) == {"scipy_dop853_loop"}
    assert w1["fastest_peer"] == "scipy_dop853_loop"


def test_a_peer_raising_a_value_error_is_an_error_row(monkeypatch):
    """A peer that fails with a ValueError (what scipy's solve_ivp raises for input it
    refuses) is that peer's error row, not the end of the benchmark."""

    def refuses(problem, **tol):
        raise ValueError("`y0` must be 1-dimensional")

    monkeypatch.setitem(peers.PEERS, "torchode_tsit5", refuses)
    w1 = bench_w1("tiny", 1, "cpu", True, lambda m: None,
                  skip=("torchdiffeq_dopri5", "torchode_dopri5"))
    assert w1["solvers"]["torchode_tsit5"] == {"dtype": "float64",
                                               "error": "`y0` must be 1-dimensional"}
    assert set(w1["ratios"]) == {"scipy_dop853_loop"}


# ---------------------------------------------------------------- writing the file


def test_default_result_is_never_left_half_written(tmp_path):
    """A write that fails part way (a 1000-byte file-size limit on a 5000-byte result) left
    the first 1000 bytes under the result's name; now nothing is left (no temporary file
    either), and the next result takes that name."""
    path = tmp_path / "results" / "cpu_2026-01-01.json"
    path.parent.mkdir()
    text = json.dumps({"pad": "x" * 5000})
    with _file_size_limit(1000), pytest.raises(OSError, match="File too large"):
        write_unused(path, text)
    assert list(path.parent.iterdir()) == []
    assert write_unused(path, text) == path and _strict(path.read_text()) == {"pad": "x" * 5000}


def test_default_result_falls_back_to_an_exclusive_create_without_hard_links(monkeypatch,
                                                                             tmp_path):
    """On a file system that refuses hard links the result is still written whole, under
    the first free name, and nothing else is left in the folder."""
    import os

    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted", str(src), None, str(dst))

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "cpu_2026-01-01.json"
    assert write_unused(path, "a") == path
    assert write_unused(path, "b") == path.with_name("cpu_2026-01-01_2.json")
    assert path.read_text() == "a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu_2026-01-01.json",
                                                          "cpu_2026-01-01_2.json"]


def _stand_in_results(monkeypatch, pad: int = 0) -> None:
    """``run_bench`` replaced by one that logs a line and returns a result of ``pad`` extra
    characters (nothing is measured)."""

    def run_bench(workloads, device, repeats, size, peers, threads, log, **kwargs):
        log("measuring")
        return {"device": device, "workloads": {"W2": [{"pad": "x" * pad,
                                                        "median_s": float("nan")}]}}

    monkeypatch.setattr(bench_module, "run_bench", run_bench)


def test_a_failed_out_write_keeps_the_earlier_file_and_prints_the_results(monkeypatch,
                                                                            tmp_path):
    """--out naming an earlier result, and a write that fails part way: the earlier file
    was truncated to the new file's first 1000 bytes and the results were lost (a traceback,
    nothing on stdout). Now the earlier file is intact, the JSON is on stdout and the
    failure is one line naming the file."""
    _stand_in_results(monkeypatch, pad=5000)
    out = tmp_path / "r.json"
    out.write_text('{"earlier": 1}\n')
    with _file_size_limit(1000):
        result = CliRunner().invoke(bench, ["--workload", "W2", "--out", str(out)])
    assert out.read_text() == '{"earlier": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    data = _strict(result.stdout)
    assert data["workloads"]["W2"][0] == {"pad": "x" * 5000, "median_s": None}
    error = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(error) == 1 and str(out) in error[0] and "File too large" in error[0]


def test_out_naming_an_existing_file_says_it_is_replaced_before_measuring(monkeypatch,
                                                                           tmp_path):
    """An --out that names an earlier file replaces it (the option is explicit), but says so
    on stderr before anything is measured; a new --out says nothing of the kind."""
    _stand_in_results(monkeypatch)
    out = tmp_path / "r.json"
    out.write_text('{"earlier": 1}\n')
    result = CliRunner().invoke(bench, ["--workload", "W2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == f"warning: --out {out} exists; it will be replaced by this run's results"
    assert lines[1] == "measuring"
    assert _strict(out.read_text()) == _strict(result.stdout)
    fresh = tmp_path / "new.json"
    result = CliRunner().invoke(bench, ["--workload", "W2", "--out", str(fresh)])
    assert result.exit_code == 0 and "replaced" not in result.stderr
    assert _strict(fresh.read_text())["workloads"]["W2"][0]["median_s"] is None


# ---------------------------------------------------------------- command-line input


@pytest.mark.parametrize(("args", "words"), [
    (["--workload", "W4"], "'W4' is not one of"),
    (["--workload", "w1"], "'w1' is not one of"),
    (["--repeats", "0"], "0 is not in the range x>=1"),
    (["--repeats", "-2"], "-2 is not in the range x>=1"),
    (["--peer-repeats", "0"], "0 is not in the range x>=1"),
    (["--peer-repeats", "-1"], "-1 is not in the range x>=1"),
    (["--repeats", "2.5"], "'2.5' is not a valid integer"),
    (["--skip-peer", "scipy"], "'scipy' is not one of"),
    (["--threads", "0"], "0 is not in the range"),
    (["--size", "huge"], "'huge' is not one of"),
    (["--dtype", "float16"], "'float16' is not one of"),
    (["--device", "cpu:0"], "unknown device 'cpu:0'"),
])
def test_bad_input_is_one_line_and_status_2_before_measuring(monkeypatch, args, words):
    def refuse(*a, **k):
        raise AssertionError("the benchmark started")

    monkeypatch.setattr(bench_module, "run_bench", refuse)
    assert words in error_line(invoke(["bench", *args]))


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_is_one_line_and_status_2(monkeypatch, device):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(bench_module, "run_bench",
                        lambda *a, **k: pytest.fail("the benchmark started"))
    line = error_line(invoke(["bench", "--device", device, "--workload", "W1"]))
    assert line == (f"Error: device {device!r} is not available (torch sees no CUDA device); "
                    "use device='cpu' (--device cpu)")


def test_bench_outside_a_source_tree_says_what_it_needs(monkeypatch, tmp_path):
    """Installed without its source tree (no benchmarks/ beside the package), the workloads
    cannot be imported: one InputError saying so (was a ModuleNotFoundError traceback)."""
    from pathlib import Path

    from ncsim.errors import InputError

    monkeypatch.setattr(bench_module, "ROOT", tmp_path)
    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "path", [p for p in sys.path
                                      if not (Path(p or ".") / "benchmarks").is_dir()])
    with pytest.raises(InputError, match="needs the benchmarks/ folder"):
        bench_module._benchmarks()
