"""The tiny simulated studies of the study and command-line tests.

K = 3, n = 4, d = 8, lambda = 1e-2: one part "ufm" over the seeds 0 .. seeds - 1, and a
quick variant with seed 0 alone; and a tiny intervention study (H rescaled at t = 20).
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


# A trained part whose runs fail: MNIST is read from a local folder (--data-root) not given here.
BROKEN_PART = """
[[parts]]
name = "broken"
model = "trained"
dataset = "mnist"
epochs = [1, 1]
"""

# A second simulated part of the tiny study (seeds 10 and 11).
MORE_PART = """
[[parts]]
name = "more"
model = "simulated"
[parts.grid]
seed = [10, 11]
"""

# A trained part on a Gaussian mixture (one epoch per phase): a training that runs anywhere.
NET_PART = """
[[parts]]
name = "net"
model = "trained"
dataset = "gaussian"
epochs = [1, 1]
"""


KICK_PART = """
[[parts]]
name = "kick"
model = "simulated"
intervene_time = 20.0
[parts.grid]
intervene_alpha = [0.5]
"""


def write_tiny_study(folder: Path, seeds: int = 2, chunk: int = 2, t_end: float = 300.0,
                     records: int = 40, rtol: float = 1e-5, extra: str = "") -> Path:
    """Write the study as ``folder / "tiny.toml"`` (``extra``: TOML appended) and return the
    path."""
    path = folder / "tiny.toml"
    path.write_text(TEMPLATE.format(seeds=list(range(seeds)), chunk=chunk, t_end=t_end,
                                    records=records, rtol=rtol) + extra)
    return path


INTERVENTION_TEMPLATE = """
name = "{name}"
title = "{title}"
question = "q?"
claim = "c."
analysis = "intervention"

[simulated]
classes = 3
per_class = 4
dim = 8
t_end = {t_end}
records = {records}
rtol = 1e-6
atol = 1e-9
lambda = 1e-2
intervene_time = 20.0

[[parts]]
name = "ufm"
model = "simulated"
[parts.grid]
intervene_alpha = {alphas}

[quick]
"""


def intervention_study(name: str, title: str, t_end: float, records: int,
                       alphas: list[float]) -> str:
    """The tiny intervention study's TOML: one part "ufm" over the rescaling factors
    ``alphas`` of H at t = 20, integrated to ``t_end`` with ``records`` records."""
    return INTERVENTION_TEMPLATE.format(name=name, title=title, t_end=t_end, records=records,
                                        alphas=alphas)
