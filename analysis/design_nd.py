"""python -m analysis.design --nd: before training an (N, D) grid (over-training grids, model ladders), how well will
L(N, D) = E + A/N^alpha + B/D^beta be determined, and are its intervals honest?

It draws `reps` synthetic grids from known laws (analysis.synthetic.Truth): every model size in `N` trained for
every tokens-per-parameter ratio in `ratios` (D = ratio * N), each loss multiplied by (1 + noise * N(0, 1)); fits
each exactly as analysis.fit fits runs (analysis.parametric.fit_parametric: the multi-start Huber fit and the
bootstrap over runs); and reports, for alpha, beta, E and the compute-optimal exponent a = beta/(alpha + beta), and
for L(N, D) at each `predict` point and the compute-optimal N at each `budget`:

- `coverage`: the share of fitted grids whose 95% interval holds the truth (honest intervals give ~0.95);
- `median_width` (relative for predictions: width / truth) and `median_abs_err` (relative for predictions).

    python -m analysis.design --nd --N 2e7,5e7,1e8,2e8,5e8 --ratios 5,10,20,40,80 --noise 0.005
    python -m analysis.design --nd --N 1e8,3e8,1e9 --ratios 20,100,500 --predict 7e9,2e12 --budget 1e23
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from analysis.parametric import fit_parametric, min_runs
from analysis.predict import compute_optimal, loss_at
from analysis.synthetic import Truth
from scaling.base.cli import fail


@dataclass(frozen=True)
class NDDesign:
    N: tuple[float, ...]  # model sizes (parameters)
    ratios: tuple[float, ...] = (5.0, 10.0, 20.0, 40.0, 80.0)  # tokens per parameter, D = ratio * N
    noise: float = 0.005  # relative loss noise (1 sigma)

    def check(self) -> None:
        """One-line ValueError naming the bad value."""
        if len(self.N) < 2 or any(not np.isfinite(n) or n <= 0 for n in self.N):
            raise ValueError(f"--N {self.N}: give at least 2 positive model sizes, e.g. 2e7,5e7,1e8,2e8")
        if len(self.ratios) < 2 or any(not np.isfinite(r) or r <= 0 for r in self.ratios):
            raise ValueError(
                f"--ratios {self.ratios}: give at least 2 positive tokens-per-parameter ratios, e.g. 5,20,80"
            )
        if len(set(self.N)) != len(self.N) or len(set(self.ratios)) != len(self.ratios):
            raise ValueError(f"--N {self.N} --ratios {self.ratios}: each value once")
        if len(self.N) * len(self.ratios) < min_runs():
            raise ValueError(
                f"--N x --ratios gives {len(self.N) * len(self.ratios)} runs; the L(N, D) fit needs >= {min_runs()}"
            )
        if not 0 <= self.noise < 0.5:
            raise ValueError(f"--noise {self.noise}: relative loss noise in [0, 0.5), e.g. 0.005 for 0.5%")


def draw(design: NDDesign, truth: Truth, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic grid: (N, D, loss), one row per run (every size at every ratio)."""
    N, R = np.meshgrid(np.asarray(design.N, float), np.asarray(design.ratios, float))
    N, D = N.ravel(), (N * R).ravel()
    L = truth.loss(6 * N, D) * (1 + design.noise * rng.standard_normal(N.size))
    return N, D, L


def _score(rows: list[tuple[float, float, float, float]], relative: bool) -> dict:
    """rows of (value, lo, hi, truth) -> coverage, median width and median |error| (relative to the truth)."""
    if not rows:
        return {"n": 0, "coverage": float("nan"), "median_width": float("nan"), "median_abs_err": float("nan")}
    v, lo, hi, t = (np.array(c, float) for c in zip(*rows))
    scale = np.abs(t) if relative else 1.0
    return {
        "n": len(rows),
        "coverage": float(np.mean((lo <= t) & (t <= hi))),
        "median_width": float(np.median((hi - lo) / scale)),
        "median_abs_err": float(np.median(np.abs(v - t) / scale)),
    }


def simulate(
    design: NDDesign,
    reps: int = 100,
    n_boot: int = 200,
    seed: int = 0,
    truth: Truth | None = None,
    predict: Sequence[tuple[float, float]] = (),
    budgets: Sequence[float] = (),
) -> dict:
    """Fit `reps` synthetic grids of this design: coverage, width and error of the parameters and predictions."""
    design.check()
    truth = truth or Truth()
    rng = np.random.default_rng(seed)
    true = {"alpha": truth.alpha, "beta": truth.beta, "E": truth.E, "a": truth.a}
    par_rows: dict[str, list] = {k: [] for k in true}
    pred_rows: list[list] = [[] for _ in predict]
    opt_rows: list[list] = [[] for _ in budgets]
    fitted = 0
    for rep in range(reps):
        N, D, L = draw(design, truth, rng)
        p = fit_parametric(N, D, L, n_boot=n_boot, seed=rep)
        if "skipped" in p:
            continue
        fitted += 1
        for k, t in true.items():
            lo, hi = p["ci95"][k] if n_boot else (np.nan, np.nan)
            par_rows[k].append((p[k], lo, hi, t))
        for rows, (n, d) in zip(pred_rows, predict):
            v = loss_at(p, n, d)[0]
            rows.append((v["value"], *v.get("ci95", [np.nan, np.nan]), float(truth.loss(6 * n, d))))
        for rows, C in zip(opt_rows, budgets):
            v = compute_optimal(p, C)["N"]
            rows.append((v["value"], *v.get("ci95", [np.nan, np.nan]), float(truth.M_opt(C)) / 6))
    return {
        "reps": reps,
        "fitted": fitted / reps,
        "n_runs": len(design.N) * len(design.ratios),
        "params": {k: _score(par_rows[k], False) | {"true": true[k]} for k in true},
        "predictions": [
            {"N": n, "D": d, "true": float(truth.loss(6 * n, d))} | _score(rows, True)
            for (n, d), rows in zip(predict, pred_rows)
        ],
        "compute_optimal_N": [
            {"C": C, "true": float(truth.M_opt(C)) / 6} | _score(rows, True) for C, rows in zip(budgets, opt_rows)
        ],
    }


def _floats(s: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in s.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"{what} {s!r}: give comma-separated numbers") from None


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m analysis.design --nd", description=__doc__.split("\n\n")[0])
    ap.add_argument("--N", required=True, help="comma-separated model sizes (parameters), e.g. 2e7,5e7,1e8,2e8")
    ap.add_argument("--ratios", default="5,10,20,40,80", help="tokens per parameter, D = ratio*N (default 5..80)")
    ap.add_argument("--noise", type=float, default=0.005, help="relative loss noise, 1 sigma (default 0.005)")
    ap.add_argument("--predict", action="append", default=[], metavar="N,D", help="score L(N, D) here (repeatable)")
    ap.add_argument("--budget", action="append", type=float, default=[], metavar="C", help="score N_opt(C)")
    ap.add_argument("--reps", type=int, default=100, help="synthetic grids (default 100)")
    ap.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples per fit (default 200)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        design = NDDesign(_floats(a.N, "--N"), _floats(a.ratios, "--ratios"), a.noise)
        design.check()
        predict = [_floats(p, "--predict") for p in a.predict]
        if any(len(p) != 2 or min(p) <= 0 for p in predict):
            raise ValueError(f"--predict {a.predict}: give N,D as two positive numbers, e.g. 7e9,2e12")
        if any(not 0 < c < float("inf") for c in a.budget):
            raise ValueError(f"--budget {a.budget}: give positive FLOP budgets")
        if a.reps < 10 or a.bootstrap < 100:
            raise ValueError(f"--reps {a.reps} --bootstrap {a.bootstrap}: use >= 10 grids and >= 100 resamples")
    except ValueError as e:
        fail("analysis.design", e)
    r = simulate(design, a.reps, a.bootstrap, a.seed, predict=[(p[0], p[1]) for p in predict], budgets=a.budget)
    print(
        f"(N, D) grid: {len(design.N)} sizes x {len(design.ratios)} tokens-per-parameter ratios = {r['n_runs']} runs, "
        f"noise {design.noise:.2%}; {a.reps} synthetic grids fitted as analysis.fit fits runs "
        f"(L(N, D) fitted in {r['fitted']:.0%})"
    )
    print("| quantity | truth | 95% CI coverage | median CI width | median abs error |")
    print("|---|---|---|---|---|")
    for k, s in r["params"].items():
        print(f"| {k} | {s['true']:.4g} | {s['coverage']:.0%} | {s['median_width']:.4f} | {s['median_abs_err']:.4f} |")
    for s in r["predictions"]:
        print(
            f"| L({s['N']:.3g}, {s['D']:.3g}) | {s['true']:.4g} | {s['coverage']:.0%} | {s['median_width']:.2%} "
            f"(relative) | {s['median_abs_err']:.2%} |"
        )
    for s in r["compute_optimal_N"]:
        print(
            f"| N_opt({s['C']:.3g}) | {s['true']:.4g} | {s['coverage']:.0%} | {s['median_width']:.2%} (relative) | "
            f"{s['median_abs_err']:.2%} |"
        )


if __name__ == "__main__":
    main()
