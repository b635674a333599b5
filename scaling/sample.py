"""Samples from any run: `python -m scaling.sample RUN_DIR --prompt "The Congress" [--max-new-tokens N --temperature T
--top-k K --seed S]`.

Loads the run's config.yaml (model shape, tokenizer settings) and its checkpoint (`ckpt.pt`, read with
`torch.load(weights_only=True)` through scaling.run.checkpoint: data, never code), and continues the prompt with the
model's KV-cached `generate`. Works on finished runs and on checkpointed unfinished ones (the last checkpoint), so a
researcher can see what a run has learned. Bad input is one line on stderr and exit 2.

`python -m scaling.sample RUNS_DIR --best-per-budget --prompt "..."` samples from the best completed IsoFLOP run
(lowest val_loss) of every budget below RUNS_DIR: a study's "what does compute buy" in a few lines.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scaling.base.cli import fail
from scaling.base.configs import add_config_dir_arg, search_dirs
from scaling.run.sampling import PROG, best_per_budget, check_options, sample


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "run_dir", type=Path, help="a run directory (config.yaml + ckpt.pt), or with --best-per-budget a runs directory"
    )
    ap.add_argument(
        "--best-per-budget",
        action="store_true",
        help="sample from the best completed isoflop run of each budget below run_dir",
    )
    ap.add_argument("--prompt", default="", help="text to continue (default: the start of a document)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    ap.add_argument("--top-k", type=int, default=50, help="sample among the k most likely tokens (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    add_config_dir_arg(ap, None)
    a = ap.parse_args(argv)
    try:
        search_dirs([], a.config_dir)
        check_options(a.max_new_tokens, a.temperature, a.top_k or None, a.device)
    except ValueError as e:
        fail(PROG, e)
    if a.best_per_budget:
        return _best_per_budget(a)
    try:
        top_k = None if a.top_k == 0 else a.top_k
        s = sample(a.run_dir, a.prompt, a.max_new_tokens, a.temperature, top_k, a.seed, a.device)
    except ValueError as e:
        fail(PROG, e)
    of = f"/{s.steps}" if s.steps else ""
    print(
        f"# {a.run_dir}: {s.status}, checkpoint at step {s.step}{of}; T={a.temperature} top_k={a.top_k} seed={a.seed}",
        file=sys.stderr,
    )
    print(s.text)
    return 0


def _best_per_budget(a: argparse.Namespace) -> int:
    if not a.run_dir.is_dir():
        fail(PROG, f"{a.run_dir} is not a directory; pass the runs directory of a study or sweep")
    runs = best_per_budget(a.run_dir)
    if not runs:
        fail(PROG, f"no completed isoflop run with a val_loss below {a.run_dir}")
    sampled = 0
    for budget, run_dir, loss in runs:
        try:
            s = sample(run_dir, a.prompt, a.max_new_tokens, a.temperature, a.top_k or None, a.seed, a.device)
        except ValueError as e:  # one bad run does not hide the other budgets' samples
            print(f"C={budget:.3g}  {run_dir.name}: cannot sample ({e})")
            continue
        sampled += 1
        print(f"C={budget:.3g}  {run_dir.name} (val_loss {loss:.4f}): {' '.join(s.text.split())}")
    return 0 if sampled == len(runs) else 1  # a budget without a sample is not success


if __name__ == "__main__":
    sys.exit(main())
