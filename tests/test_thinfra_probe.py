"""Mutation probe of the theory cache, the compiled expressions, the flat state layout and the
theory / study commands: small hand-checked cases that pin what users see."""

from __future__ import annotations

import types

import pytest
import sympy as sp
import torch
from cli_helpers import invoke

from ncsim.models.layout import StateLayout
from ncsim.theory import cache

# ---------------------------------------------------------------- layout


def _layout():
    return StateLayout([("H", (2, 3)), ("W1", (3,)), ("b", (1,))])


def test_layout_blocks_have_consecutive_offsets():
    """Blocks sit one after the other: H [0, 6), W1 [6, 9), b [9, 10), size 10."""
    lay = _layout()
    assert [(b.name, b.start, b.stop, b.size) for b in lay.blocks] == [
        ("H", 0, 6, 6), ("W1", 6, 9, 3), ("b", 9, 10, 1)]
    assert lay.size == 10 and "W1" in lay and "W2" not in lay


@pytest.mark.parametrize("shape", [(2, 11), (2, 9), (10,), (1, 2, 10)])
def test_layout_view_refuses_a_state_of_another_width(shape):
    """view needs a state (R, P) of exactly P columns: wider or narrower is a ValueError."""
    with pytest.raises(ValueError, match=r"state must be \(R, 10\)"):
        _layout().view(torch.zeros(shape), "H")


def test_layout_view_of_a_row_slice_and_a_strided_state():
    """view of a state that is a slice (storage offset, column stride 2) is the plain slice
    reshaped, and writing through it writes the state."""
    lay = _layout()
    big = torch.arange(3 * 20, dtype=torch.float64).reshape(3, 20)
    state = big[1:, ::2]  # (2, 10), storage offset 20, strides (20, 2)
    for b in lay.blocks:
        assert torch.equal(lay.view(state, b.name), state[:, b.start:b.stop].reshape(2, *b.shape))
    lay.write({"W1": torch.full((2, 3), -1.0)}, state)
    assert torch.equal(big[1:, 12:18:2], torch.full((2, 3), -1.0, dtype=torch.float64))
    assert big[0].min() >= 0  # the row outside the slice is untouched


def test_expand_per_block_puts_each_scalar_on_its_own_block():
    """expand_per_block: per-run scalars {H, W1, b} become (R, P) with H's value on H's six
    entries, W1's on W1's three, b's on b's one (the per-block time scales of simulate)."""
    lay = _layout()
    got = lay.expand_per_block({"H": torch.tensor([1.0, 10.0]), "W1": torch.tensor([2.0, 20.0]),
                                "b": torch.tensor([3.0, 30.0])})
    want = torch.tensor([[1.0] * 6 + [2.0] * 3 + [3.0], [10.0] * 6 + [20.0] * 3 + [30.0]])
    assert torch.equal(got, want)


def test_pack_into_out_equals_concatenation_and_row_major_order():
    """pack with and without out gives the row-major concatenation of the blocks."""
    lay = _layout()
    parts = {"H": torch.arange(6.0).reshape(1, 2, 3), "W1": torch.tensor([[6.0, 7.0, 8.0]]),
             "b": torch.tensor([[9.0]])}
    assert torch.equal(lay.pack(parts), torch.arange(10.0).reshape(1, 10))
    out = torch.zeros(1, 10)
    assert lay.pack(parts, out=out) is out and torch.equal(out, torch.arange(10.0)[None])


# ---------------------------------------------------------------- cache


def test_source_key_changes_with_the_sympy_and_python_versions(monkeypatch):
    """A derivation pickled under another sympy or Python version is filed under another key
    (the pickle's classes may differ), so it is not read back."""
    now = cache.source_key.__wrapped__()
    assert now == cache.source_key()
    monkeypatch.setattr(sp, "__version__", "0.0.1")
    other_sympy = cache.source_key.__wrapped__()
    monkeypatch.undo()
    monkeypatch.setattr(cache, "sys", types.SimpleNamespace(version_info=(2, 7, 0)))
    other_python = cache.source_key.__wrapped__()
    assert len({now, other_sympy, other_python}) == 3


def _numeric_toy(calls):
    @cache.numeric(float)
    def toy_rate(k, scale=2.0):
        calls.append((k, scale))
        return k * scale + 0.5
    return toy_rate


def test_numeric_cache_file_of_another_type_is_a_miss(monkeypatch, tmp_path):
    """A numeric result file that does not hold the result type (another program's, or an
    older result of another type) is not returned: the function runs and rewrites it."""
    monkeypatch.setenv("NCSIM_CACHE_DIR", str(tmp_path))
    calls = []
    f = _numeric_toy(calls)
    assert f(3) == 6.5
    (path,) = tmp_path.glob("*toy_rate*.pickle")
    cache._write(path, "not a number")
    f.cache_clear()
    assert f(3) == 6.5 and calls == [(3, 2.0), (3, 2.0)]
    assert cache._load(path) == 6.5


def test_numeric_cache_one_file_per_bound_argument_tuple(monkeypatch, tmp_path):
    """f(3), f(3, 2.0) and f(k=3) are one argument tuple (defaults applied): one run, one file;
    f(3, 1.0) is another."""
    monkeypatch.setenv("NCSIM_CACHE_DIR", str(tmp_path))
    calls = []
    f = _numeric_toy(calls)
    assert f(3) == f(3, 2.0) == f(k=3) == 6.5
    f.cache_clear()
    assert f(3, scale=2.0) == 6.5  # read back from the file
    assert calls == [(3, 2.0)] and len(list(tmp_path.glob("*.pickle"))) == 1
    assert f(3, 1.0) == 3.5 and len(list(tmp_path.glob("*.pickle"))) == 2


def test_cache_clear_keeps_other_programs_pickles(monkeypatch, tmp_path):
    """`ncsim theory cache` counts and --clear removes ncsim's files only, not another
    program's pickle in the same folder."""
    monkeypatch.setenv("NCSIM_CACHE_DIR", str(tmp_path))
    (tmp_path / "ncsim.theory.ufm.derive_ce-0123456789abcdef0123.pickle").write_bytes(b"old")
    (tmp_path / "other.pickle").write_bytes(b"someone else's")
    shown = invoke(["theory", "cache"])
    assert shown.exit_code == 0, shown.output
    assert "files for these sources: 0; for other sources: 1" in shown.stdout
    cleared = invoke(["theory", "cache", "--clear"])
    assert cleared.exit_code == 0 and cleared.stdout == f"removed 1 file(s) from {tmp_path}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["other.pickle"]


# ---------------------------------------------------------------- theory commands


def test_latex_table_has_one_column_per_grid_point(monkeypatch):
    """--format latex: the table's column spec is one name column and one column per grid
    point, and every row has that many cells (a valid tabular)."""
    import ncsim.theory.cli as theory_cli

    monkeypatch.setattr(theory_cli, "derivations", lambda *a: {})  # the table alone
    res = invoke(["theory", "threshold", "--loss", "mse", "-K", "3,4", "-n", "2",
                  "--format", "latex"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    start = lines.index("\\begin{tabular}{lrr}")
    body = lines[start + 1:lines.index("\\end{tabular}")]
    assert body and all(line.count("&") == 2 for line in body), body
    assert any(line.startswith("\\texttt{lambda\\_crit} & ") for line in body)


# ---------------------------------------------------------------- cache folder


def test_cache_dir_expands_a_home_relative_setting(monkeypatch, tmp_path):
    """NCSIM_CACHE_DIR=~/c is the folder c in the home folder, not a folder named '~'."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NCSIM_CACHE_DIR", "~/c")
    assert cache.cache_dir() == tmp_path / "c"


def test_empty_xdg_cache_home_counts_as_unset(monkeypatch, tmp_path):
    """XDG_CACHE_HOME set empty is ignored (XDG spec): ~/.cache/ncsim, not a relative
    folder 'ncsim' in the working directory."""
    monkeypatch.delenv("NCSIM_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert cache.cache_dir() == tmp_path / ".cache" / "ncsim"


# ---------------------------------------------------------------- compiled expressions


def test_compiled_expression_keeps_a_float32_tensor_in_float32():
    """A float32 tensor argument with a python float gives a float32 result (sqrt(K) n at
    K = 4, n = 0.5 is 1); only integer tensors are promoted to float64."""
    from ncsim.theory import symbols as S
    from ncsim.theory.compile import compile_expr

    f = compile_expr(sp.sqrt(S.K) * S.n, [S.K, S.n])
    got = f(torch.tensor([4.0, 9.0], dtype=torch.float32), 0.5)
    assert got.dtype == torch.float32 and torch.equal(got, torch.tensor([1.0, 1.5]))
    swapped = f(0.5, torch.tensor([4.0], dtype=torch.float32))  # argument order is kept
    assert torch.allclose(swapped, torch.tensor([4.0 * 0.5 ** 0.5]))


# ---------------------------------------------------------------- study commands


def test_study_list_names_kinds_and_question(monkeypatch, tmp_path):
    """`ncsim study list`: one line per study, its name padded to 20, the sorted distinct
    part kinds joined by '+', and its question."""
    import ncsim.study.spec as spec

    (tmp_path / "alpha.toml").write_text(
        'question = "Does it collapse?"\n'
        '[[parts]]\nmodel = "trained"\n[[parts]]\nmodel = "simulated"\n'
        '[[parts]]\nmodel = "trained"\n')
    (tmp_path / "beta.toml").write_text('[[parts]]\nmodel = "simulated"\n')
    monkeypatch.setattr(spec, "shipped_studies", lambda: sorted(tmp_path.glob("*.toml")))
    res = invoke(["study", "list"])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == [
        f"{'alpha':<20} [simulated+trained] Does it collapse?",
        f"{'beta':<20} [simulated] "]


def test_study_report_notes_unfinished_studies_on_stderr(monkeypatch, tmp_path):
    """`ncsim study report` prints both report paths on stdout and, for a study with runs
    missing, a note with finished / total on stderr (exit 0)."""
    import ncsim.study.report as report

    monkeypatch.setattr(report, "write_report", lambda d: tmp_path / "report.md")
    monkeypatch.setattr(report, "unfinished_studies",
                        lambda d: [(tmp_path / "s", 3, 8)])
    res = invoke(["study", "report", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == [f"report: {tmp_path / 'report.md'}",
                                       f"report: {tmp_path / 'report.html'}"]
    assert res.stderr.startswith(f"note: {tmp_path / 's'}: 3 of 8 runs finished")
    assert "ncsim study run" in res.stderr
