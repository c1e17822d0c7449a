"""Declarative studies: TOML specs, a resumable runner with local / process / Dask executors,
per-claim analyses and a Markdown / HTML report.

Public API
----------
load_study(path_or_name, quick=False) -> Study ; run_study(study, out, executor=...) ;
write_report(folder)
"""

from __future__ import annotations

from ncsim.study.report import write_report
from ncsim.study.runner import RunSummary, run_study
from ncsim.study.spec import RunDesc, Study, load_study

__all__ = ["RunDesc", "RunSummary", "Study", "load_study", "run_study", "write_report"]
