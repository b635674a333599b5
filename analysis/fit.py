"""python -m analysis.fit PATH [PATH...]: fit eta_opt, B_opt, M_opt, D_opt, L(C) and L(N, D) with bootstrap CIs,
extrapolate to target models, write report.json, report.md, runs.csv and plots/*.png.

Library use: `run_analysis(paths, out_dir, **options) -> report dict` (what the CLI wraps)."""
from __future__ import annotations

import argparse
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy

from analysis.budgets import assign_budgets
from scaling.laws import format_law
from analysis.extrapolate import extrapolate, load_model, recommend
from analysis.hparams import fit_hparams
from analysis.isoflop import fit_isoflop
from analysis.load import load_runs
from analysis.losscurve import backtest, fit_losscurve
from analysis.parametric import fit_parametric
from analysis.report import write_reports
from scaling.atomic import write_atomic


def fit_dataset(df: pd.DataFrame, band: float = 0.0025, n_boot: int = 1000, seed: int = 0, min_budgets: int = 3,
                off_centre: float = 2 / 3) -> dict:
    """Every law on one dataset's usable runs (column `budget_group` set). Sections the data cannot support
    are absent, with their reason under "skipped". Keys "boot" and "boot_*" hold bootstrap samples."""
    res: dict = {"n_used": int(len(df)), "skipped": {}, "run_notes": {}}
    hp, iso = df[df.sweep == "hparams"], df[df.sweep == "isoflop"]
    if hp.empty:
        res["skipped"]["hparams"] = "no completed hparams runs"
    else:
        h = fit_hparams(hp.budget_group, hp.C, hp.lr, hp.batch_size, hp.loss, band, n_boot, seed, min_budgets)
        res["in_band"] = pd.Series(h.pop("in_band"), index=hp.index)
        if "skipped" in h:
            res["skipped"]["hparams"] = h["skipped"]
        else:
            res["hparams"] = h
    if iso.empty:
        res["skipped"]["isoflop"] = "no completed isoflop runs"
        return res
    b, C, L = iso.budget_group.to_numpy(), iso.C.to_numpy(), iso.loss.to_numpy()
    r = fit_isoflop(b, iso.M.to_numpy(), C, L, n_boot, seed, min_budgets, off_centre)
    for bud in r["budgets"]:
        if not bud["used"]:
            for i in iso.index[b == bud["budget"]]:
                res["run_notes"][i] = f"budget C={bud['C']:.3g} excluded from IsoFLOP law: {'; '.join(bud['warnings'])}"
    if "skipped" in r:
        res["skipped"]["isoflop"] = r["skipped"]
    else:
        res["isoflop"] = r
        used = [x for x in r["budgets"] if x["used"]]
        Cs, Ls, Ms = ([x[k] for x in used] for k in ("C", "loss_min", "M_opt"))
        boot_L = np.stack([x["boot_loss"] for x in used], -1) if n_boot else None
        loss = fit_losscurve(Cs, Ls, boot_L, min_budgets)
        if "skipped" in loss:
            res["skipped"]["loss"] = loss["skipped"]
        else:
            res["loss"] = loss | {"backtest": backtest(Cs, Ls, Ms, min_budgets)}
    conv = {}
    for name, scale in (("M", iso.M), ("6N1", 6 * iso.N1), ("6N2", 6 * iso.N2)):
        if not np.all(np.isfinite(scale)):
            conv[name] = {"skipped": f"column {name.lstrip('6')} missing for some isoflop runs"}
            continue
        c = fit_isoflop(b, scale.to_numpy(), scale.to_numpy() * iso.D.to_numpy(), L, n_boot, seed, min_budgets, off_centre)
        conv[name] = {k: c[k] for k in ("M_opt", "D_opt")} if "M_opt" in c else {"skipped": c["skipped"]}
    res["conventions"] = conv
    try:
        p = fit_parametric(iso.N.to_numpy(), iso.D.to_numpy(), L, n_boot, seed)
    except (np.linalg.LinAlgError, FloatingPointError) as e:  # the other laws still stand; say why this one is absent
        p = {"skipped": f"the parametric fit failed numerically ({e}); too few or too degenerate isoflop runs"}
    if "skipped" in p:
        res["skipped"]["parametric"] = p["skipped"]
    else:
        res["parametric"] = p
    return res


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)


def default_out(first: Path) -> Path:
    if first.suffix.lower() == ".csv":
        return first.parent / f"{first.stem}_analysis"
    return (first if first.is_dir() else first.parent) / "analysis"


def run_analysis(paths, out_dir=None, *, budgets=(), band: float = 0.0025, bootstrap: int = 1000, seed: int = 0,
                 targets=("deepseek_7b", "deepseek_67b"), target_tokens: float = 2e12, plots: bool = True,
                 min_budgets: int = 3, rtol: float = 1.15, off_centre: float = 2 / 3, dataset: str | None = None,
                 write: bool = True) -> dict:
    """Load, fit every dataset separately, extrapolate, and (if write) write the outputs to out_dir.

    Raises ValueError with a one-line message on bad input. The returned report keeps bootstrap samples
    (keys "boot", "boot_*") for library users; report.json drops them.
    """
    paths = [Path(p) for p in paths]
    if band < 0 or bootstrap < 0 or min_budgets < 2 or rtol <= 1:
        raise ValueError("need --band >= 0, --bootstrap >= 0, --min-budgets >= 2 and --rtol > 1")
    base_models = [load_model(t) for t in targets]  # fail early on an unknown target
    shape_base = base_models[0] if base_models else load_model("deepseek_7b")  # vocab, seq_len, FFN rule
    df, warnings = load_runs(paths)
    df["budget_group"] = np.nan
    ok = df.excluded == ""
    df.loc[ok, "budget_group"] = assign_budgets(df[ok], rtol)
    df["in_band"] = False
    n_usable = int(ok.sum())  # before budget-level exclusions, which apply to the IsoFLOP law only
    per = {}
    for name, sub in df[ok].groupby("dataset", sort=True):
        r = fit_dataset(sub, band, bootstrap, seed, min_budgets, off_centre)
        for i, why in r.pop("run_notes").items():
            df.loc[i, "excluded"] = why
        if "in_band" in r:
            mask = r.pop("in_band")
            df.loc[mask.index, "in_band"] = mask.to_numpy()
        r["extrapolation"] = {t: extrapolate(t, target_tokens, r) for t in targets}
        per[name] = r
    if not any(k in r for r in per.values() for k in ("hparams", "isoflop")):
        why = "; ".join(f"{n}: " + "; ".join(f"{k}: {v}" for k, v in r["skipped"].items()) for n, r in per.items())
        raise ValueError(f"no law could be fitted ({why})")
    if dataset is not None and dataset not in per:
        raise ValueError(f"--dataset {dataset!r} not among the datasets: {', '.join(per)}")
    primary = dataset or max(per, key=lambda n: per[n]["n_used"])
    if len(per) > 1:
        warnings.append(f"{len(per)} datasets fitted separately ({', '.join(per)}); top-level sections are "
                        f"`{primary}` (choose with --dataset)")
    for name, r in per.items():
        warnings += [f"{name}: {k} not fitted: {v}" for k, v in r["skipped"].items()]
    report = {"schema_version": 1, "dataset": primary,
              **{k: per[primary][k] for k in ("hparams", "isoflop", "loss", "parametric", "conventions",
                                              "extrapolation") if k in per[primary]},
              "skipped": per[primary]["skipped"], "datasets": per,
              "recommendations": [recommend(float(C), per[primary], shape_base) for C in budgets],
              "excluded": [{"run_id": r.run_id, "path": r.path, "reason": r.excluded}
                           for r in df.itertuples() if r.excluded],
              "warnings": warnings,
              "provenance": {"inputs": [str(p) for p in paths], "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                             "n_runs": int(len(df)), "n_used": n_usable,
                             "options": {"band": band, "bootstrap": bootstrap, "seed": seed, "targets": list(targets),
                                         "target_tokens": target_tokens, "min_budgets": min_budgets, "rtol": rtol,
                                         "off_centre": off_centre, "budgets": [float(c) for c in budgets]},
                             "versions": {"python": platform.python_version(), "numpy": np.__version__,
                                          "scipy": scipy.__version__, "pandas": pd.__version__}}}
    if write:
        out = Path(out_dir) if out_dir is not None else default_out(paths[0])
        out.mkdir(parents=True, exist_ok=True)
        report["provenance"]["out_dir"] = str(out)
        write_atomic(out / "runs.csv", df.rename(columns={"budget_group": "budget_used"}).to_csv(index=False))
        write_reports(report, out)
        if plots:
            from analysis import plots as P  # matplotlib only when plotting
            for name, r in per.items():
                suffix = "" if name == primary else f"_{_slug(name)}"
                P.write_all(r, df[(df.dataset == name)], out / "plots", suffix, name)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.fit", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="runs directories (every result.json below), result.json files or CSVs")
    ap.add_argument("--out", help="output directory (default: <first dir>/analysis/, or <csv stem>_analysis/)")
    ap.add_argument("--budget", type=float, nargs="*", default=[], metavar="C", help="recommend shape/D/eta/B for C")
    ap.add_argument("--band", type=float, default=0.0025, help="near-optimal band, relative to the best loss")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0 = no CIs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--targets", nargs="*", default=["deepseek_7b", "deepseek_67b"], help="conf/model/<name>.yaml")
    ap.add_argument("--target-tokens", type=float, default=2e12, help="training tokens D of the targets")
    ap.add_argument("--min-budgets", type=int, default=3, help="budgets a law needs (2 allowed, with a warning)")
    ap.add_argument("--rtol", type=float, default=1.15, help="C ratio within which runs without `budget` group")
    ap.add_argument("--dataset", help="dataset whose fits fill the top-level report sections")
    ap.add_argument("--no-plots", action="store_true")
    a = ap.parse_args(argv)
    t0 = time.time()
    try:
        rep = run_analysis(a.paths, a.out, budgets=a.budget, band=a.band, bootstrap=a.bootstrap, seed=a.seed,
                           targets=a.targets, target_tokens=a.target_tokens, plots=not a.no_plots,
                           min_budgets=a.min_budgets, rtol=a.rtol, dataset=a.dataset)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for w in rep["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    out = rep["provenance"]["out_dir"]
    print(f"fitted {rep['provenance']['n_used']}/{rep['provenance']['n_runs']} runs in {time.time() - t0:.1f}s; "
          f"wrote {out}/report.md, report.json, runs.csv" + ("" if a.no_plots else ", plots/"))
    for k, sec in (("eta_opt", "hparams"), ("B_opt", "hparams"), ("M_opt", "isoflop"), ("D_opt", "isoflop")):
        law = (rep.get(sec) or {}).get(k)
        if law is not None:
            print(f"  {k} = {format_law(law, digits=4)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
