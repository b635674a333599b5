"""Which runs of a study are done, running, stalled, diverged: `python -m scaling.status runs/ [--watch [S]]`.

Reads the run directories only, never the launcher, so it works the same for a local sweep and for 370 SLURM jobs
seen from a login node. A run directory is any directory holding config.yaml, result.json, metrics.jsonl or ckpt.pt;
its sweep is its parent directory, whose plan.csv (written by scaling.sweep) says which runs should exist.

States, per run:
  completed / diverged / failed  its result.json says so (a failed run that a live process holds again is being
                retrained: its log decides, as for a run without a record)
  running       no result yet, a metrics.jsonl line within the stall threshold (progress, tokens/s and ETA come from
                that last line)
  stalled       a live process still holds the run (its .lock) but logged nothing for longer than the threshold
  interrupted   no result, and no live process holds it: its lock names a dead process, or nothing logged for
                longer than the threshold (killed, preempted, Ctrl-C); rerunning the sweep resumes it from ckpt.pt
  not started   a plan.csv row without a run directory
  problem       cannot be trusted as done: no config.yaml, an unreadable result.json, or a record that no longer
                matches its plan.csv row (lr, batch size, steps); the reason is printed
The threshold is --stall seconds (600), or 5 times the run's own interval between log lines when that is longer.
A cut-off or garbage metrics.jsonl line is named in the output; the last readable line is used.

ETA: a running run's remaining tokens at its measured tokens/s; runs still to train (not started, interrupted,
stalled, failed) take their plan.csv estimate, rescaled by how long this sweep's finished runs really took against
theirs (by the other sweeps' finished runs when none of its own has finished: today's load, not the plan's cached
throughput); the sum is divided by the number of processes training now (a pack's runs share one process).
Under reuse (sweep.reuse) the sweep's trunks (<sweep>/trunks/) are shown too, with their state, and a running trunk
is a running process (it and the branch it trains share one); a branch still to train costs its own share of its
estimate (1 - shared_tokens/D), and each trunk what it has left up to its last branch still waiting: shared work is
counted once, as the plan's "with reuse" line counts it.

On a study's directory (scaling.study writes study.json) it first shows the stages: done, running, planned next
(a stage not planned yet, timed by its budgets at the FLOP/s this study's finished runs measured), and the study's
ETA (sweeps.study_view).

Exit code: 0 when every run is completed or diverged, 1 when anything is left to do, 2 for bad input.
`python -m scaling.status_bench` times the view on 10,000 generated run directories.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from scaling.base.cli import fail
from scaling.base.configs import add_config_dir_arg, search_dirs
from sweeps.progress import PROG, NotARunsDir, collect, finished, render
from sweeps.study_view import study_lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("root", nargs="?", type=Path, help="a runs directory (sweeps and run dirs below it)")
    ap.add_argument("--stall", type=float, default=600.0, help="seconds without a log line before a run is stalled")
    ap.add_argument("--watch", type=float, nargs="?", const=10.0, metavar="S", help="refresh every S seconds (10)")
    ap.add_argument("--max-lines", type=int, default=10, help="runs listed per state and sweep")
    add_config_dir_arg(ap, None)
    a = ap.parse_args(argv)
    try:
        search_dirs([], a.config_dir)
    except ValueError as e:
        fail(PROG, e)
    if a.root is None:
        fail(PROG, "give a runs directory, e.g. python -m scaling.status runs/")
    if not a.root.is_dir():
        fail(PROG, f"{a.root} is not a directory; give the runs directory a sweep writes into (sweep.dir)")
    if not (0 < a.stall < math.inf) or a.max_lines < 1 or (a.watch is not None and not 0 < a.watch < math.inf):
        fail(PROG, "--stall and --watch must be > 0 and --max-lines >= 1")
    while True:
        try:
            sweeps = collect(a.root, a.stall)
        except NotARunsDir as e:  # the filesystem's root, or a tree far bigger than any runs dir: never walked whole
            fail(PROG, e)
        if not sweeps:
            fail(PROG, f"no run directories or plan.csv under {a.root} (a run dir holds config.yaml/result.json)")
        text = render(sweeps, a.root, a.max_lines)
        done = finished(sweeps)
        study = study_lines(a.root, sweeps)  # a study's directory: its stages, the one not planned yet, its ETA
        if study is not None:
            text, done = "\n".join(study[0]) + "\n" + text, done and study[1]
        if a.watch is None:
            print(text)
            return 0 if done else 1
        if sys.stdout.isatty():
            print("\033[H\033[2J", end="")  # clear the screen: the view replaces itself
        print(f"{time.strftime('%H:%M:%S')}  (every {a.watch:g}s, Ctrl-C to stop)\n{text}", flush=True)
        if done:
            return 0
        try:
            time.sleep(a.watch)
        except KeyboardInterrupt:
            return 1


if __name__ == "__main__":
    sys.exit(main())
