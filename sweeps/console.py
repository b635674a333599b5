"""What a sweep's console shows of its jobs: one short line per job, and no progress bars from parallel workers.

Hydra's launchers log every job as `#idx : <all its overrides>`: the study's shared overrides plus the point's, ~600
characters a job. The plan table (and plan.csv) already holds every value, so the line keeps the run id and the
keys whose values differ between this sweep's jobs. Parallel workers (joblib on a terminal) would draw their tqdm
bars over each other, so their runs train without one; the sweep prints a progress line per finished run instead.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

# The modules whose logger writes the `#idx : overrides` lines (Hydra's basic launcher and the two plugins we ship).
LAUNCHER_LOGGERS = (
    "hydra._internal.core_plugins.basic_launcher",
    "hydra_plugins.hydra_joblib_launcher._core",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
)
NO_BAR = "train.progress=false"  # execution only: not in the config hash (scaling.base.record.EXECUTION_ONLY)
_LINE = re.compile(r"^(\s*#\d+ : )(.*)$", re.S)


def quiet_jobs(jobs: Sequence[list[str]], parallel: bool) -> list[list[str]]:
    """The jobs with train.progress=false when they run side by side, unless the user set train.progress."""
    if not parallel:
        return [list(j) for j in jobs]
    return [list(j) if any(o.startswith("train.progress=") for o in j) else [*j, NO_BAR] for j in jobs]


def short_lines(jobs: Sequence[list[str]]) -> dict[str, str]:
    """{the override string a launcher logs for a job: its short form} (run.id first, then the keys that vary)."""
    from hydra.core.utils import filter_overrides

    keyed = [dict(o.split("=", 1) for o in job if "=" in o) for job in jobs]
    keys = list(dict.fromkeys(k for kv in keyed for k in kv))
    # a pack's run ids are its id's runs (pack_<first id>_x<K>, listed in the plan): not repeated here
    varying = [k for k in keys if k not in ("run.id", "+pack.run_ids") and len({kv.get(k) for kv in keyed}) > 1]
    out = {}
    for job, kv in zip(jobs, keyed):
        parts = ([f"run.id={kv['run.id']}"] if "run.id" in kv else []) + [f"{k}={kv[k]}" for k in varying if k in kv]
        out[" ".join(filter_overrides(job))] = " ".join(parts)
    return out


class _ShortJobLines(logging.Filter):
    def __init__(self, lines: dict[str, str]):
        super().__init__()
        self.lines = lines

    def filter(self, record: logging.LogRecord) -> bool:
        m = _LINE.match(record.getMessage())
        if m and m.group(2) in self.lines:
            record.msg, record.args = m.group(1) + self.lines[m.group(2)], ()
        return True


@contextmanager
def short_job_lines(jobs: Sequence[list[str]]) -> Iterator[None]:
    """While launching `jobs`, the launchers' per-job lines carry only what tells the jobs apart."""
    f = _ShortJobLines(short_lines(jobs))
    loggers = [logging.getLogger(name) for name in LAUNCHER_LOGGERS]
    for lg in loggers:
        lg.addFilter(f)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(f)
