"""`<study dir>/study.json`: what a study is (its stages, budgets and analysis options), written by scaling.study
before stage 1 so that the tools reading a study's directory can be study-aware: scaling.status shows its stages
and the one not planned yet, analysis.fit_runs fits it with the options the study used.

    {"schema_version": 1, "name": ..., "file": ..., "analysis": {band, bootstrap, ...},
     "stages": [{"kind": "hparams", "dir": "hparams", "budgets": [...], "runs_per_budget": 25}, ...],
     "fit_dir": "analysis"}

Directory names are relative to the study dir, so a study moved or copied elsewhere still reads.
"""

from __future__ import annotations

import json
from pathlib import Path

from scaling.base.atomic import write_atomic

STUDY_NAME = "study.json"
STUDY_SCHEMA = 1


def write_study(root: Path, info: dict) -> Path:
    path = Path(root) / STUDY_NAME
    write_atomic(path, json.dumps({"schema_version": STUDY_SCHEMA} | info, indent=1))
    return path


def read_study(root: Path | str) -> dict | None:
    """The study.json of a directory, or None when it is not a study's (or the file is unreadable: callers then
    treat the directory as plain runs, which is what it also is)."""
    try:
        data = json.loads((Path(root) / STUDY_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("stages"), list):
        return None
    return data
