"""Atomic table writes."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from ncsim.errors import InputError
from ncsim.io import read_table, write_table


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_write_read_round_trip_and_permissions(tmp_path, suffix):
    frame = pd.DataFrame({"run_id": ["a", "b"], "fn": [1.5, 2.0]})
    path = write_table(frame, tmp_path / f"runs{suffix}")
    pd.testing.assert_frame_equal(read_table(path), frame)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_failed_write_keeps_the_old_file(tmp_path):
    path = write_table(pd.DataFrame({"x": [1]}), tmp_path / "t.csv")

    class Broken(pd.DataFrame):
        def to_csv(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_table(Broken({"x": [2]}), path)
    assert read_table(path)["x"].tolist() == [1]
    assert len(list(tmp_path.iterdir())) == 1


def test_unknown_format_and_missing_table(tmp_path):
    with pytest.raises(InputError, match="unknown table format"):
        write_table(pd.DataFrame(), tmp_path / "t.x", fmt="xlsx")
    with pytest.raises(InputError, match="does not exist"):
        read_table(tmp_path / "none.parquet")
