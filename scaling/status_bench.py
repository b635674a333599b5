"""Benchmark of the status view: `python -m scaling.status_bench [N]` (default 10,000 run directories).

Generates N run directories in a temp dir, shaped like a real study's (10 sweeps, each with a plan.csv; records,
configs and 20-line logs of the same size as scaling.train's; runs completed, diverged, failed, running, killed,
cut-off logs, missing configs, and plan rows not started), then times the whole view (scan, classify, ETA, render)
against a reference measured in the same run on the same files: reading and parsing every result.json and nothing
else, the least any status built on run records must do. Prints medians of 3 rounds and the ratio to both the
reference and a 2 s budget (a view polled every few seconds must cost well under that). The page cache is warm (the
files were just written), as on a login node polling a study it is watching.
"""

from __future__ import annotations

from scaling.benchmarks.status import bench


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m scaling.status_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("n", type=int, nargs="?", default=10_000, help="run directories to generate (10000)")
    return bench(ap.parse_args(argv).n)


if __name__ == "__main__":
    raise SystemExit(main())
