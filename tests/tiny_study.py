"""The tiny simulated study of the study and command-line tests.

K = 3, n = 4, d = 8, lambda = 1e-2: one part "ufm" over the seeds 0 .. seeds - 1, and a
quick variant with seed 0 alone.
"""

from __future__ import annotations

from pathlib import Path

TEMPLATE = """
name = "tiny"
title = "Tiny"
question = "q?"
claim = "c."
analysis = "invariance"

[simulated]
classes = 3
per_class = 4
dim = 8
t_end = {t_end}
records = {records}
rtol = {rtol}
atol = 1e-10
lambda = 1e-2
chunk = {chunk}

[[parts]]
name = "ufm"
model = "simulated"
[parts.grid]
seed = {seeds}

[quick]
[quick.parts.ufm.grid]
seed = [0]
"""


def write_tiny_study(folder: Path, seeds: int = 2, chunk: int = 2, t_end: float = 300.0,
                     records: int = 40, rtol: float = 1e-5, extra: str = "") -> Path:
    """Write the study as ``folder / "tiny.toml"`` (``extra``: TOML appended) and return the
    path."""
    path = folder / "tiny.toml"
    path.write_text(TEMPLATE.format(seeds=list(range(seeds)), chunk=chunk, t_end=t_end,
                                    records=records, rtol=rtol) + extra)
    return path
