"""python -m analysis.design: before spending compute, how tight a CI will this IsoFLOP design give M_opt's
exponent, and is that CI honest?

It draws `reps` synthetic studies from known laws (analysis.synthetic.Truth): at each budget, `sizes` model sizes
evenly spaced in log M over `span` decades, centred on the true M_opt (or on DeepSeek's published M_opt law, which
a real grid is usually centred on, with `--centre deepseek`) up to a random miss of +-`miss` decades, each loss
multiplied by (1 + noise * N(0, 1)). Noise that is shared can be added: `--budget-shift` (each budget's optimum
displaced by its own N(0, shift^2) decades: its data order, its hparams) and `--budget-loss` (each budget's losses
moved together), and `--trunk-noise` (runs branched from one trunk, one model size continued to several budgets,
share that trunk's loss offset). Every study is fitted exactly as analysis.fit fits real runs
(analysis.isoflop.fit_isoflop: the estimator, the exclusion rules, the bootstrap that resamples trunks or runs within
budgets, the scatter between budgets). It reports, for each estimator asked for:

- `fitted`: the share of studies where enough budgets survived the exclusion rules to fit the law at all;
- `coverage`: the share of fitted studies whose 95% CI holds the true exponent (honest CIs give ~0.95);
- `median_width`: the median width of that CI, the number to compare with the precision you need;
- `bias`: the mean fitted - true exponent; `median_abs_err`: the median |fitted - true|.

`noise` is relative seed-to-seed noise of a final loss: measure it on two seeds of one run of yours (tiny CPU runs:
~0.5-1%; the residuals of the CPU demo's IsoFLOP parabolas are larger, because a tiny model with too few steps
stalls on a loss plateau, which no parabola describes).

    python -m analysis.design --budgets 2e19,5e19,1.2e20 --sizes 7 --span 1 --noise 0.01
    python -m analysis.design --budgets 1e18,1e19,1e20 --centre deepseek --span 1.4 --estimator joint,all
    python -m analysis.design --table estimators      # the README's tables (minutes each)
    python -m analysis.design --table calibration
    python -m analysis.design --table trunks
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from analysis.hparams import HparamsRuns, fit_hparams
from analysis.isoflop import ESTIMATORS, IsoRuns, fit_isoflop
from analysis.losscurve import fit_losscurve, samples
from analysis.sections import loss_between
from analysis.synthetic import Truth
from scaling.base.cli import fail
from scaling.base.laws import DEEPSEEK


def _off_truth() -> Truth:
    """A truth far from DeepSeek's: M_opt exponent 0.40 (DeepSeek: 0.524), its M_opt at C = 1e19 half a decade
    below DeepSeek's law, so that grids centred on DeepSeek's law put the optimum off-centre by ~0.5 decade."""
    t = Truth(alpha=0.45, beta=0.30)
    gap = np.log10(DEEPSEEK["M_opt"](1e19) / t.M_opt(1e19)) - 0.5
    # M_opt scales as A^(1/(alpha+beta)): raising A by 10^(gap*(alpha+beta)) moves it up by `gap` decades
    return replace(t, A=t.A * 10 ** (gap * (t.alpha + t.beta)))


TRUTHS = {
    "default": Truth(),
    "offcentre": _off_truth(),
    "skewed": Truth(E=1.7, A=100.0, B=3e4, alpha=0.15, beta=0.55),  # |beta - alpha| = 0.4: a strongly skewed profile
}


@dataclass(frozen=True)
class Design:
    budgets: tuple[float, ...]
    sizes: int = 7
    span: float = 1.0  # decades of M per budget
    noise: float = 0.01  # relative loss noise (1 sigma)
    miss: float = 0.2  # decades: how far off its centre each grid's centre may fall (uniform)
    centre: str = "truth"  # grids centred on the true M_opt, or on DeepSeek's published law ("deepseek")
    budget_shift: float = 0.0  # decades (1 sigma): each budget's own displacement of its optimum
    budget_loss: float = 0.0  # relative (1 sigma): each budget's own loss offset
    trunk_noise: float = 0.0  # relative (1 sigma): a loss offset shared by the branches of one trunk

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
        if self.centre not in ("truth", "deepseek"):
            raise ValueError(f"--centre {self.centre!r}: truth or deepseek")
        for name, v, hi in (("--budget-shift", self.budget_shift, 1), ("--budget-loss", self.budget_loss, 0.5)):
            if not 0 <= v < hi:
                raise ValueError(f"{name} {v}: a standard deviation in [0, {hi})")
        if not 0 <= self.trunk_noise < 0.5:
            raise ValueError(f"--trunk-noise {self.trunk_noise}: relative loss noise in [0, 0.5)")


def draw(
    design: Design, truth: Truth, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """One synthetic IsoFLOP study: (budget, M, loss, trunk), one row per run; trunk is None unless trunk noise.

    With trunks, every grid's sizes sit on one lattice of step span/(sizes-1) decades, so a size recurs at several
    budgets: one trunk, branched at each, whose offset all those branches share."""
    budget, M, loss, trunk = [], [], [], []
    step = design.span / (design.sizes - 1)
    offsets: dict[int, float] = {}
    for C in design.budgets:
        opt = float(np.log10(truth.M_opt(C)))
        centre = (np.log10(DEEPSEEK["M_opt"](C)) if design.centre == "deepseek" else opt) + rng.uniform(
            -design.miss, design.miss
        )
        if design.trunk_noise > 0:
            lattice = int(round(centre / step)) + np.arange(design.sizes) - design.sizes // 2
            logm = lattice * step
            trunk.append(lattice)
            for i in lattice:
                offsets.setdefault(int(i), design.trunk_noise * float(rng.standard_normal()))
            shared = np.array([offsets[int(i)] for i in lattice])
        else:
            logm = centre + np.linspace(-design.span / 2, design.span / 2, design.sizes)
            shared = np.zeros(design.sizes)
        m = 10**logm
        shift = 10 ** (design.budget_shift * rng.standard_normal())  # this budget's optimum moves by `shift`
        L = truth.loss(m / shift, C / (m / shift)) * (1 + design.budget_loss * rng.standard_normal())
        budget.append(np.full(design.sizes, C))
        M.append(m)
        loss.append(L * (1 + shared) * (1 + design.noise * rng.standard_normal(design.sizes)))
    tr = np.concatenate(trunk).astype(object) if trunk else None
    return np.concatenate(budget), np.concatenate(M), np.concatenate(loss), tr


def _loss_min_true(truth: Truth, C: float) -> float:
    M = float(truth.M_opt(C))
    return float(truth.loss(M, C / M))


def simulate(
    design: Design,
    reps: int = 200,
    n_boot: int = 1000,
    seed: int = 0,
    truth: Truth | None = None,
    estimator: str = "joint",
    between: bool = True,
    cluster: bool = True,
    loss: bool = True,
) -> dict:
    """Fit `reps` synthetic studies of this design; coverage and width of the M_opt exponent's 95% CI (and, with
    `loss`, of L(C) at the middle budget). `between`: the second level (scatter between budgets) on; `cluster`:
    resample trunks (False: runs, as if branches were independent)."""
    design.check()
    truth = truth or Truth()
    rng = np.random.default_rng(seed)
    min_budgets = min(3, len(design.budgets))
    C_mid = float(np.exp(np.mean(np.log(design.budgets))))
    L_mid = _loss_min_true(truth, C_mid)
    est, lo_hi, lc_cov, lc_w, skipped = [], [], [], [], 0
    for rep in range(reps):
        b, M, L, tr = draw(design, truth, rng)
        r = fit_isoflop(
            IsoRuns(b, M, b, L, tr if cluster else None), n_boot=n_boot, seed=rep, min_budgets=min_budgets,
            estimator=estimator, between=between,
        )  # fmt: skip
        if "skipped" in r or not np.all(np.isfinite(r["M_opt"].ci95["exponent"])):
            skipped += 1
            continue
        est.append(r["M_opt"].exponent)
        lo_hi.append(r["M_opt"].ci95["exponent"])
        if not loss:
            continue
        used = [x for x in r["budgets"] if x["used"]]
        Cs, Ls = [x["C"] for x in used], [x["loss_min"] for x in used]
        boot_L = np.stack([x["boot_loss"] for x in used], -1)
        lc = fit_losscurve(Cs, Ls, boot_L, min_budgets)
        if "skipped" not in lc:
            if between:
                lc = loss_between(Cs, Ls, boot_L, lc, partial(fit_losscurve, Cs, Ls, min_budgets=min_budgets), seed=rep)
            s = samples(lc, C_mid)
            if s is None or not np.isfinite(s).any():
                continue
            lo, hi = np.percentile(s[np.isfinite(s)], [2.5, 97.5])
            lc_cov.append(lo <= L_mid <= hi)
            lc_w.append((hi - lo) / L_mid)
    return _stats(np.array(est), np.array(lo_hi).reshape(-1, 2), truth.a, reps, skipped) | {
        "loss_coverage": float(np.mean(lc_cov)) if lc_cov else float("nan"),
        "loss_median_rel_width": float(np.median(lc_w)) if lc_w else float("nan"),
        "span_decades": float(np.log10(max(design.budgets) / min(design.budgets))),
    }


def _stats(est: np.ndarray, ci: np.ndarray, true: float, reps: int, skipped: int) -> dict:
    n = len(est)
    cov = (ci[:, 0] <= true) & (true <= ci[:, 1]) if n else np.zeros(0, bool)
    return {
        "reps": reps,
        "fitted": n / reps,
        "coverage": float(cov.mean()) if n else float("nan"),
        "median_width": float(np.median(ci[:, 1] - ci[:, 0])) if n else float("nan"),
        "bias": float(np.mean(est - true)) if n else float("nan"),
        "median_abs_err": float(np.median(np.abs(est - true))) if n else float("nan"),
        "true_exponent": true,
    }


def simulate_hparams(
    budgets: Sequence[float],
    reps: int = 200,
    n_boot: int = 1000,
    seed: int = 0,
    noise: float = 0.003,
    grid_shift: float = 0.0,
    between: bool = True,
    truth: Truth | None = None,
) -> dict:
    """lr x batch grids (7 x 5 in sqrt(2) steps, one model at its true M_opt per budget, centres jittered by half a
    step), each grid's optimum displaced by its own N(0, grid_shift^2) decades in lr and in batch size: coverage
    and width of the eta_opt and B_opt exponents' CIs as analysis.fit computes them."""
    truth = truth or Truth()
    rng = np.random.default_rng(seed)
    out: dict = {k: ([], []) for k in ("eta_opt", "B_opt")}
    skipped = 0
    for rep in range(reps):
        rows = []
        for C in budgets:
            eta, bs = float(truth.eta_opt(C)), float(truth.B_opt(C))
            se, sb = 10 ** (grid_shift * rng.standard_normal(2))
            jl, jb = rng.uniform(-0.25, 0.25, 2)
            M = float(truth.M_opt(C))
            for i in np.arange(7) - 3:
                for j in np.arange(5) - 2:
                    lr, b = eta * 2 ** ((i + jl) / 2), bs * 2 ** ((j + jb) / 2)
                    L = truth.loss(M, C / M, lr / se, b / sb, C) * (1 + noise * rng.standard_normal())
                    rows.append((C, lr, b, L))
        Cr, lr, B, L = (np.array(c) for c in zip(*rows))
        r = fit_hparams(
            HparamsRuns(Cr, Cr, Cr, lr, B, L),
            n_boot=n_boot,
            seed=rep,
            min_budgets=min(3, len(budgets)),
            between=between,
        )
        if "skipped" in r:
            skipped += 1
            continue
        for k in out:
            out[k][0].append(r[k].exponent)
            out[k][1].append(r[k].ci95["exponent"])
    return {
        k: _stats(np.array(e), np.array(ci).reshape(-1, 2), getattr(truth, "eta_exp" if k == "eta_opt" else "bs_exp"),
                  reps, skipped)
        for k, (e, ci) in out.items()
    }  # fmt: skip


# The tables of the README: designs from the issue (centred; off-centre by half a decade, as a grid centred on
# DeepSeek's law is when the truth differs; wide and skewed, as published profiles are) at 3, 5 and 8 budgets.
def _budgets(k: int) -> tuple[float, ...]:
    return tuple(float(c) for c in np.geomspace(1e18, 1e20, k))


SCENARIOS = {
    "centred": (Design(_budgets(5), 7, 1.0, 0.005, 0.2), "default"),
    "off-centre 0.5 dec": (Design(_budgets(5), 7, 1.4, 0.005, 0.0, centre="deepseek"), "offcentre"),
    "wide, skewed": (Design(_budgets(5), 13, 3.0, 0.003, 1.0), "skewed"),
}


def _fmt(r: dict) -> str:
    return (
        f"{r['bias']:+.4f} | {r['median_width']:.3f} | {r['coverage']:.1%} | {r['fitted']:.0%}"
        if r["fitted"]
        else "- | - | - | 0%"
    )


def table_estimators(reps: int, n_boot: int, ks=(3, 5, 8), seed: int = 0) -> list[str]:
    out = [
        "| design | budgets | estimator | bias | median CI width | coverage | fitted |",
        "|---|---|---|---|---|---|---|",
    ]
    print("\n".join(out), flush=True)
    for name, (d, t) in SCENARIOS.items():
        for k in ks:
            for e in ESTIMATORS:
                r = simulate(replace(d, budgets=_budgets(k)), reps, n_boot, seed, TRUTHS[t], e, loss=False)
                out.append(f"| {name} | {k} | {e} | {_fmt(r)} |")
                print(out[-1], flush=True)
    return out


def table_calibration(reps: int, n_boot: int, ks=(3, 5, 8), seed: int = 0, shift: float = 0.1) -> list[str]:
    out = [
        "| design | budgets | law | CI from | median CI width | coverage |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(out), flush=True)
    for name in ("centred", "off-centre 0.5 dec"):
        d, t = SCENARIOS[name]
        d = replace(d, budget_shift=shift, budget_loss=0.003)
        for k in ks:
            for on in (False, True):
                r = simulate(replace(d, budgets=_budgets(k)), reps, n_boot, seed, TRUTHS[t], "joint", between=on)
                src = "runs and budgets" if on else "runs only"
                out.append(f"| {name} | {k} | M_opt exponent | {src} | {r['median_width']:.3f} | {r['coverage']:.1%} |")
                out.append(
                    f"| {name} | {k} | L(C) at the middle budget | {src} | {r['loss_median_rel_width']:.2%} of L | "
                    f"{r['loss_coverage']:.1%} |"
                )
                print("\n".join(out[-2:]), flush=True)
    for g in (shift, 0.0):  # grids with their own noise, and without (what the second level costs then)
        for k in ks:
            for on in (False, True):
                h = simulate_hparams(_budgets(k), reps, n_boot, seed, grid_shift=g, between=on)
                src = "runs and grids" if on else "runs only"
                for law in ("eta_opt", "B_opt"):
                    r = h[law]
                    out.append(
                        f"| hparams grids{'' if g else ', no grid noise'} | {k} | {law} exponent | {src} | "
                        f"{r['median_width']:.3f} | {r['coverage']:.1%} |"
                    )
                    print(out[-1], flush=True)
    return out


def table_trunks(reps: int, n_boot: int, ks=(3, 5, 8), seed: int = 0, trunk_noise: float = 0.005) -> list[str]:
    """Shared-trunk noise: each model size is one trunk branched at every budget whose grid holds it. Level 1 alone
    shows what resampling runs instead of trunks does; both levels, what the default interval gives."""
    out = ["| design | budgets | resampled | levels | median CI width | coverage |", "|---|---|---|---|---|---|"]
    print("\n".join(out), flush=True)
    d, t = SCENARIOS["centred"]
    d = replace(d, noise=0.002, trunk_noise=trunk_noise)
    for k in ks:
        for on in (False, True):
            for cluster in (False, True):
                r = simulate(
                    replace(d, budgets=_budgets(k)), reps, n_boot, seed, TRUTHS[t], "joint", between=on,
                    cluster=cluster, loss=False,
                )  # fmt: skip
                what = "trunks (with their branches)" if cluster else "runs (naive)"
                lev = "runs and budgets" if on else "runs only"
                out.append(
                    f"| centred, shared trunks | {k} | {what} | {lev} | {r['median_width']:.3f} | {r['coverage']:.1%} |"
                )
                print(out[-1], flush=True)
    return out


TABLES = {"estimators": table_estimators, "calibration": table_calibration, "trunks": table_trunks}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m analysis.design", description=__doc__.split("\n\n")[0])
    ap.add_argument("--budgets", help="comma-separated FLOP budgets, e.g. 2e19,5e19,1.2e20")
    ap.add_argument("--sizes", type=int, default=7, help="model sizes per budget (default 7)")
    ap.add_argument("--span", type=float, default=1.0, help="decades of model size per budget (default 1)")
    ap.add_argument("--noise", type=float, default=0.01, help="relative loss noise, 1 sigma (default 0.01)")
    ap.add_argument("--miss", type=float, default=0.2, help="decades a grid's centre may miss M_opt (default 0.2)")
    ap.add_argument("--centre", choices=("truth", "deepseek"), default="truth", help="what the grids are centred on")
    ap.add_argument("--truth", choices=tuple(TRUTHS), default=None, help="the true laws (default: offcentre "
                    "with --centre deepseek, else default)")  # fmt: skip
    ap.add_argument("--budget-shift", type=float, default=0.0, help="decades: SD of each budget's own optimum shift")
    ap.add_argument("--budget-loss", type=float, default=0.0, help="relative SD of each budget's own loss offset")
    ap.add_argument("--trunk-noise", type=float, default=0.0, help="relative SD of a loss offset shared by a trunk")
    ap.add_argument("--estimator", default="joint", help=f"comma-separated, of {', '.join(ESTIMATORS)}")
    ap.add_argument("--table", choices=tuple(TABLES), help="print one of the README's tables (markdown)")
    ap.add_argument("--reps", type=int, default=200, help="synthetic studies (default 200)")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples per fit (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def _check_counts(a: argparse.Namespace) -> None:
    if a.reps < 10 or a.bootstrap < 100:
        raise ValueError(f"--reps {a.reps} --bootstrap {a.bootstrap}: use >= 10 studies and >= 100 resamples")


def _print_table(a: argparse.Namespace) -> None:
    t0 = time.time()
    TABLES[a.table](a.reps, a.bootstrap, seed=a.seed)
    print(f"({a.reps} studies per row, {a.bootstrap} resamples per fit, seed {a.seed}; {time.time() - t0:.0f} s)")


def _design_of(a: argparse.Namespace) -> tuple[Design, list[str]]:
    """The design and the estimators the options ask for; ValueError naming the bad option."""
    if not a.budgets:
        raise ValueError("--budgets is required (or --table NAME), e.g. --budgets 2e19,5e19,1.2e20")
    try:
        budgets = tuple(float(x) for x in a.budgets.split(",") if x.strip())
    except ValueError:
        budgets = ()
    estimators = [e.strip() for e in a.estimator.split(",") if e.strip()]
    bad = [e for e in estimators if e not in ESTIMATORS]
    if bad or not estimators:
        raise ValueError(f"--estimator {a.estimator!r}: choose from {', '.join(ESTIMATORS)}")
    design = Design(budgets, a.sizes, a.span, a.noise, a.miss, a.centre, a.budget_shift, a.budget_loss, a.trunk_noise)
    design.check()
    return design, estimators


def _print_design(design: Design, a: argparse.Namespace, estimators: list[str]) -> None:
    b = design.budgets
    truth = TRUTHS[a.truth or ("offcentre" if a.centre == "deepseek" else "default")]
    print(
        f"design: {len(b)} budgets over {np.log10(max(b) / min(b)):.2f} decades, {a.sizes} sizes "
        f"over {a.span:g} decades each centred on {'DeepSeek' if a.centre == 'deepseek' else 'the true'} M_opt, "
        f"noise {a.noise:.2%}; {a.reps} synthetic studies fitted as analysis.fit fits runs"
    )
    for est in estimators:
        r = simulate(design, a.reps, a.bootstrap, a.seed, truth, est)
        print(
            f"{est}: M_opt exponent (true {r['true_exponent']:.3f}): 95% CI median width {r['median_width']:.3f}, "
            f"covers the truth in {r['coverage']:.0%} of fitted studies, bias {r['bias']:+.4f}, median |error| "
            f"{r['median_abs_err']:.3f}; law fitted in {r['fitted']:.0%} of studies (the rest lost budgets to the "
            f"exclusion rules)"
        )
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--nd" in args:  # (N, D) grid studies: analysis.design_nd
        from analysis.design_nd import main as nd_main

        return nd_main([a for a in args if a != "--nd"])
    a = _parser().parse_args(args)
    try:
        _check_counts(a)
        if a.table:
            return _print_table(a)
        design, estimators = _design_of(a)
    except ValueError as e:
        fail("analysis.design", e)
    _print_design(design, a, estimators)


if __name__ == "__main__":
    main()
