"""python -m analysis.design: before spending compute, how tight a CI will this IsoFLOP design give M_opt's
exponent, and is that CI honest?

It draws `reps` synthetic studies from known laws (analysis.synthetic.Truth): at each budget, `sizes` model sizes
evenly spaced in log M over `span` decades, centred on the true M_opt up to a random miss of +-`miss` decades (a
real grid is centred on a guess), each loss multiplied by (1 + noise * N(0, 1)). Every study is fitted exactly as
analysis.fit fits real runs (analysis.isoflop.fit_isoflop: the window rule, the exclusion rules, the bootstrap that
resamples runs within budgets). It reports:

- `fitted`: the share of studies where enough budgets survived the exclusion rules to fit the law at all;
- `coverage`: the share of fitted studies whose 95% CI holds the true exponent (honest CIs give ~0.95);
- `median_width`: the median width of that CI, the number to compare with the precision you need;
- `median_abs_err`: the median |fitted - true| exponent.

`noise` is relative seed-to-seed noise of a final loss: measure it on two seeds of one run of yours (tiny CPU runs:
~0.5-1%; the residuals of the CPU demo's IsoFLOP parabolas are larger, because a tiny model with too few steps
stalls on a loss plateau, which no parabola describes).

    python -m analysis.design --budgets 2e19,5e19,1.2e20 --sizes 7 --span 1 --noise 0.01
    python -m analysis.design --budgets 2e19,5e19,1.2e20,3e20 --sizes 7 --span 1 --noise 0.005 --reps 400
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from analysis.isoflop import fit_isoflop
from analysis.synthetic import Truth
from scaling.base.cli import fail


@dataclass(frozen=True)
class Design:
    budgets: tuple[float, ...]
    sizes: int = 7
    span: float = 1.0  # decades of M per budget
    noise: float = 0.01  # relative loss noise (1 sigma)
    miss: float = 0.2  # decades: how far off the true M_opt each grid's centre may fall (uniform)

    def check(self) -> None:
        """One-line ValueError naming the bad value."""
        if len(self.budgets) < 2 or any(not np.isfinite(b) or b <= 0 for b in self.budgets):
            raise ValueError(f"--budgets {self.budgets}: give at least 2 positive FLOP budgets, e.g. 2e19,5e19,1.2e20")
        if len(set(self.budgets)) != len(self.budgets):
            raise ValueError(f"--budgets {self.budgets}: each budget once")
        if self.sizes < 3:
            raise ValueError(f"--sizes {self.sizes}: a parabola needs >= 3 model sizes per budget")
        if not 0 < self.span <= 4:
            raise ValueError(f"--span {self.span}: decades of model size per budget, in (0, 4]")
        if not 0 <= self.noise < 0.5:
            raise ValueError(f"--noise {self.noise}: relative loss noise in [0, 0.5), e.g. 0.01 for 1%")
        if not 0 <= self.miss <= self.span:
            raise ValueError(f"--miss {self.miss}: decades in [0, span]")


def draw(design: Design, truth: Truth, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic IsoFLOP study: (budget, M, loss), one row per run."""
    budget, M, loss = [], [], []
    for C in design.budgets:
        centre = np.log10(truth.M_opt(C)) + rng.uniform(-design.miss, design.miss)
        m = 10 ** (centre + np.linspace(-design.span / 2, design.span / 2, design.sizes))
        budget.append(np.full(design.sizes, C))
        M.append(m)
        loss.append(truth.loss(m, C / m) * (1 + design.noise * rng.standard_normal(design.sizes)))
    return np.concatenate(budget), np.concatenate(M), np.concatenate(loss)


def simulate(design: Design, reps: int = 200, n_boot: int = 1000, seed: int = 0, truth: Truth | None = None) -> dict:
    """Fit `reps` synthetic studies of this design; coverage and width of the M_opt exponent's 95% CI."""
    design.check()
    truth = truth or Truth()
    rng = np.random.default_rng(seed)
    min_budgets = min(3, len(design.budgets))
    widths, errs, covered, skipped = [], [], 0, 0
    for rep in range(reps):
        b, M, L = draw(design, truth, rng)
        r = fit_isoflop(b, M, b, L, n_boot=n_boot, seed=rep, min_budgets=min_budgets)
        if "skipped" in r:
            skipped += 1
            continue
        law = r["M_opt"]
        lo, hi = law.ci95["exponent"]
        if not (np.isfinite(lo) and np.isfinite(hi)):
            skipped += 1
            continue
        covered += lo <= truth.a <= hi
        widths.append(hi - lo)
        errs.append(abs(law.exponent - truth.a))
    n = len(widths)
    return {
        "reps": reps,
        "fitted": n / reps,
        "coverage": covered / n if n else float("nan"),
        "median_width": float(np.median(widths)) if n else float("nan"),
        "median_abs_err": float(np.median(errs)) if n else float("nan"),
        "true_exponent": truth.a,
        "span_decades": float(np.log10(max(design.budgets) / min(design.budgets))),
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--nd" in args:  # (N, D) grid studies: analysis.design_nd
        from analysis.design_nd import main as nd_main

        return nd_main([a for a in args if a != "--nd"])
    ap = argparse.ArgumentParser(prog="python -m analysis.design", description=__doc__.split("\n\n")[0])
    ap.add_argument("--budgets", required=True, help="comma-separated FLOP budgets, e.g. 2e19,5e19,1.2e20")
    ap.add_argument("--sizes", type=int, default=7, help="model sizes per budget (default 7)")
    ap.add_argument("--span", type=float, default=1.0, help="decades of model size per budget (default 1)")
    ap.add_argument("--noise", type=float, default=0.01, help="relative loss noise, 1 sigma (default 0.01)")
    ap.add_argument("--miss", type=float, default=0.2, help="decades a grid's centre may miss M_opt (default 0.2)")
    ap.add_argument("--reps", type=int, default=200, help="synthetic studies (default 200)")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples per fit (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(args)
    try:
        budgets = tuple(float(x) for x in a.budgets.split(",") if x.strip())
    except ValueError:
        budgets = ()
    design = Design(budgets, a.sizes, a.span, a.noise, a.miss)
    try:
        design.check()
        if a.reps < 10 or a.bootstrap < 100:
            raise ValueError(f"--reps {a.reps} --bootstrap {a.bootstrap}: use >= 10 studies and >= 100 resamples")
    except ValueError as e:
        fail("analysis.design", e)
    r = simulate(design, a.reps, a.bootstrap, a.seed)
    print(
        f"design: {len(budgets)} budgets over {r['span_decades']:.2f} decades, {a.sizes} sizes over {a.span:g} "
        f"decades each, noise {a.noise:.2%}; {a.reps} synthetic studies fitted as analysis.fit fits runs"
    )
    print(
        f"M_opt exponent (true {r['true_exponent']:.3f}): 95% CI median width {r['median_width']:.3f}, "
        f"covers the truth in {r['coverage']:.0%} of fitted studies, median |error| {r['median_abs_err']:.3f}; "
        f"law fitted in {r['fitted']:.0%} of studies (the rest lost budgets to the exclusion rules)"
    )
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))


if __name__ == "__main__":
    main()
