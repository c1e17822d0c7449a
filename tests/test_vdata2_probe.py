"""Mutation probes (second pass) of the datasets and log readers: text spellings of a blank
value that pandas itself does not read as missing (``Null``, ``NONE``) must still be gaps."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ncsim.errors import InputError
from ncsim.validate.logs import from_paper, read_log


def test_capitalised_null_and_none_in_a_paper_csv_read_as_gaps(tmp_path):
    """``Null`` and ``NONE`` (not in pandas' own NA list) are blanks, not text errors."""
    path = tmp_path / "myrun_s0.csv"
    path.write_text(
        "epoch,phase,train,test,nc1,nc2,nc3,feat_norm\n"
        "10,1,0.5,0.4,,Null,NONE,2.0\n"
        "20,2,0.99,0.9,0.3,0.1,0.2,3.0\n"
    )
    table = read_log(path)
    assert table["time"].tolist() == [10.0, 20.0]
    assert math.isnan(table["nc2_angle"].iloc[0]) and math.isnan(table["nc3_paper"].iloc[0])
    assert table["nc2_angle"].iloc[1] == 0.1 and table["nc3_paper"].iloc[1] == 0.2


def test_text_null_in_a_read_frame_is_a_gap_but_a_word_is_refused():
    """In a frame given directly, ``null`` is a gap while ``ten`` is an error naming it."""
    frame = pd.DataFrame({"epoch": [1, 2], "nc1": [0.5, "null"], "feat_norm": [1.0, 2.0]})
    out = from_paper(frame, "x_s0")
    assert out["nc1_trace"].iloc[0] == 0.5 and math.isnan(out["nc1_trace"].iloc[1])
    bad = pd.DataFrame({"epoch": [1, 2], "nc1": [0.5, "ten"], "feat_norm": [1.0, 2.0]})
    with pytest.raises(InputError, match=r"nc1 'ten' in data row 2 is not a number"):
        from_paper(bad, "x_s0")
