"""python -m analysis.fit PATH [PATH...]: fit eta_opt, B_opt, M_opt, D_opt, L(C) and L(N, D) with bootstrap CIs,
extrapolate to target models, write report.json, report.md, runs.csv and plots/*.png.

Library use: `analyse(paths, out_dir, FitOptions(...)) -> (report dict, run table)` (what the CLI wraps; the
options are analysis.options.FitOptions, the CLI flags by name); notebooks use `analysis.fit_runs`, which returns
the laws, the run table and the report together."""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy

from analysis.advice import next_steps
from analysis.budgets import assign_budgets
from analysis.escape import csv_safe
from analysis.extrapolate import extrapolate, load_model, recommend
from analysis.isoflop import DEFAULT_ESTIMATOR, ESTIMATORS, WINDOW
from analysis.load import InputError, load_runs
from analysis.metric import metric_info
from analysis.options import DEFAULT_OPTIONS, FitOptions
from analysis.planning import budget_extras, one_prediction, size_plans, summary_lines, target_extras
from analysis.plausible import Limits, unit_warnings
from analysis.predict import INTERVALS
from analysis.report import write_reports
from analysis.sections import fit_dataset, grid_keys
from analysis.seeds import merge_repeats
from analysis.tables import hparams_grids, isoflop_tables, repetition
from model import ModelConfig
from scaling.base.atomic import write_atomic
from scaling.base.cli import fail
from scaling.base.configs import add_config_dir_arg, resolve_name, search_dirs
from scaling.base.laws import format_law

PROG = "analysis.fit"
DEFAULT_TARGETS = ("deepseek_7b", "deepseek_67b")
TOP_SECTIONS = ("hparams", "isoflop", "loss", "parametric", "conventions", "extrapolation", "seeds")


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)


def default_out(first: Path) -> Path:
    if first.suffix.lower() == ".csv":
        return first.parent / f"{first.stem}_analysis"
    return (first if first.is_dir() else first.parent) / "analysis"


def _out_path(paths: list, out_dir) -> Path | None:
    """Where the outputs go: out_dir, else next to the first path input; None for DataFrames alone."""
    if out_dir is not None:
        return Path(out_dir)
    first = next((p for p in paths if isinstance(p, Path)), None)
    return None if first is None else default_out(first)


OUTPUTS = ("report.json", "report.md", "runs.csv")


def _same(a: Path, b: Path) -> bool:
    """Whether two paths name one file (links and hard links included)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist yet: then it is not the other
        return False


def check_out(paths, out_dir) -> None:
    """ValueError (one line) when writing the outputs would replace an input file: e.g. --out the directory of an
    input named runs.csv. Checked before anything is read or written."""
    files = [p for p in paths if isinstance(p, Path) and p.is_file()]
    out = _out_path(paths, out_dir)
    if not files or out is None:
        return
    for f in files:
        hit = next((n for n in OUTPUTS if _same(out / n, f)), None)
        if hit is not None:
            raise ValueError(
                f"--out {out} would overwrite the input {f} (the report writes {hit} there); "
                f"choose another output directory"
            )


def _foreign(df: pd.DataFrame) -> bool:
    """Input that is not this project's run records (a CSV or a DataFrame): other conventions may apply."""
    return bool((df.loss_kind != "validation").any() or (df.scale != "M").any())


def _conventions_note(sub: pd.DataFrame) -> str:
    kinds = ", ".join(sorted(set(sub.loss_kind)))
    scales = ", ".join(sorted(set(sub.scale)))
    return (
        f"data: loss {kinds}, model scale from {scales}; targets: M = non-embedding FLOPs per token from "
        f"count_flops, C = M*D, validation loss; the extrapolation mixes these conventions"
    )


def analyse(
    paths, out_dir=None, options: FitOptions = DEFAULT_OPTIONS, *, write: bool = True, plots: bool = True
) -> tuple[dict, pd.DataFrame]:
    """Load, fit every dataset separately, extrapolate, (if write) write the outputs: -> (report, run table).

    The report keeps the bootstrap samples under "boot"/"boot_*" keys (report.json drops them). Raises
    InputError/ValueError with a one-line message on bad input; InputError keeps the warnings so far.
    """
    paths = [p if isinstance(p, pd.DataFrame) else Path(p) for p in paths]
    if write and out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ValueError(f"--out {out_dir} is a file; give a directory for report.md, report.json, runs.csv, plots/")
    if write:
        check_out(paths, out_dir)
    df, warnings = load_runs(paths, options.limits, options.metric)
    try:
        report, per = _report(paths, df, warnings, options)
        if write:
            _write(report, df, per, paths, out_dir, plots)
    except InputError:
        raise
    except ValueError as e:
        raise InputError(str(e), warnings) from None
    return report, df


def _report(paths: list, df: pd.DataFrame, warnings: list[str], o: FitOptions) -> tuple[dict, dict]:
    """The report (every dataset's laws, the answers asked of the primary one, the warnings, the provenance) and
    every dataset's sections; the run table gains its per-run columns (budget_group, in_band, note)."""
    foreign = _foreign(df[df.excluded == ""])  # an excluded corrupt or failed record says nothing of conventions
    targets = _targets(o, foreign)
    shape_base = _shape_base(targets)
    _prepare(df, o, warnings)
    per, left_out = _fit_datasets(df, o, targets, foreign, warnings)
    primary = _primary(per, o.dataset, warnings)
    for name, r in per.items():
        warnings += [f"{name}: {w}" for w in r.pop("warnings")]
        warnings += [f"{name}: {k} not fitted: {v}" for k, v in r["skipped"].items()]
    answers = _answers(per, primary, o, _with_runs_seq_len(shape_base, df, primary), warnings)
    rep = _repetition(df, warnings)
    top = per[primary]
    report = {
        "schema_version": 1,
        "dataset": primary,
        **{k: top[k] for k in TOP_SECTIONS if k in top},
        "skipped": top["skipped"],
        "not_applicable": top["not_applicable"],
        "datasets": per,
        "metric": top["metric"],
        **answers,
        "excluded": [{"run_id": r.run_id, "path": r.path, "reason": r.excluded} for r in df.itertuples() if r.excluded],
        "left_out": left_out,
        "repetition": rep,
        "warnings": warnings,
        "provenance": _provenance(paths, df, o, targets),
    }
    return report, per


def _targets(o: FitOptions, foreign: bool) -> tuple[str, ...]:
    """The models to extrapolate to: as asked, else DeepSeek 7B and 67B for this project's run records and none
    for published data (whose loss and model-scale conventions differ)."""
    if o.targets is None:
        return () if foreign else DEFAULT_TARGETS
    return o.targets


def _shape_base(targets: tuple[str, ...]) -> ModelConfig:
    """The config recommended shapes are built on (vocabulary, FFN rule): the first target's, else DeepSeek 7B's.
    Every target is loaded here, so an unknown one fails before the fit."""
    models = [load_model(t) for t in targets]
    return models[0] if models else load_model("deepseek_7b")


def _with_runs_seq_len(shape: ModelConfig, df: pd.DataFrame, dataset: str) -> ModelConfig:
    """A recommended shape trains on the data's sequences: its M (attention FLOPs) and its batch in sequences use
    the seq_len of the runs the laws came from, not the target config's."""
    seq = df.loc[(df.excluded == "") & (df.dataset == dataset), "seq_len"].median()
    return dataclasses.replace(shape, seq_len=int(seq)) if np.isfinite(seq) and seq >= 1 else shape


def _prepare(df: pd.DataFrame, o: FitOptions, warnings: list[str]) -> None:
    """The run table's per-run columns before fitting: each usable run's budget group; in_band and note, filled by
    the fits."""
    ok = df.excluded == ""
    warnings += unit_warnings(df[ok], o.limits)
    df["budget_group"] = np.nan
    df.loc[ok, "budget_group"] = assign_budgets(df[ok], o.rtol)
    df["in_band"] = False
    df["note"] = ""


def _fit_datasets(
    df: pd.DataFrame, o: FitOptions, targets: tuple[str, ...], foreign: bool, warnings: list[str]
) -> tuple[dict, list[dict]]:
    """Every dataset's sections, fitted separately, with its run tables, advice and extrapolations -> (sections by
    dataset, the runs left out of one law)."""
    left_out: list[dict] = []
    per = {}
    for name, sub in df[df.excluded == ""].groupby("dataset", sort=True):
        r, sub = _fit_one(sub, o)
        left_out += _to_run_table(df, r)
        r["tables"] = run_tables(df[df.dataset == name], sub, r)
        steps = next_steps(r, o.min_budgets)
        if steps:
            r["next_steps"] = steps
        r["extrapolation"] = {t: extrapolate(t, o.target_tokens, r, o.hparams_form) for t in targets}
        r["metric"] = metric_info(sub, o.metric)
        r["scales"] = sorted(set(sub.scale))
        warnings += _target_notes(str(name), r, sub, targets, foreign, auto=o.targets is None)
        per[name] = r
    return per, left_out


def _fit_one(sub: pd.DataFrame, o: FitOptions) -> tuple[dict, pd.DataFrame]:
    """One dataset's sections on its usable runs, repeats of a point (sweep.seeds) fitted as one row at their mean
    loss -> (sections, the rows fitted)."""
    n_runs = len(sub)
    sub, repeats = merge_repeats(sub, o.band)
    r = fit_dataset(sub, o)
    if repeats.summary:
        r["n_used"], r["seeds"] = n_runs, repeats.summary
        r["run_notes"] = repeats.spread_notes(r["run_notes"])
        r["warnings"] += repeats.warnings
        if "in_band" in r:
            r["in_band"] = repeats.spread_mask(r["in_band"])
    return r, sub


def _to_run_table(df: pd.DataFrame, r: dict) -> list[dict]:
    """Move a dataset's per-run results (notes, in_band) from its sections into the run table -> left_out rows."""
    left_out = []
    for i, notes in r.pop("run_notes").items():
        df.loc[i, "note"] = "; ".join(f"{sec}: {why}" for sec, why in notes)
        left_out += [{"run_id": df.at[i, "run_id"], "section": sec, "reason": why} for sec, why in notes]
    if "in_band" in r:
        mask = r.pop("in_band")
        df.loc[mask.index, "in_band"] = mask.to_numpy()
    return left_out


def _target_notes(
    name: str, r: dict, sub: pd.DataFrame, targets: tuple[str, ...], foreign: bool, auto: bool
) -> list[str]:
    """The targets' L(C)/L(N, D) extras and their flags, and what extrapolating published data mixes -> warnings."""
    warnings = []
    for t, e in r["extrapolation"].items():
        target_extras(r, e)
        e["reference"]["note"] += f"; DeepSeek fits L(C) on bits per byte, these losses are {r['metric']['unit']}"
        warnings += [f"{name}: {t}: {f}" for f in e["flags"]]
    if targets and foreign:
        r["extrapolation_conventions"] = _conventions_note(sub)
        warnings.append(
            f"{name}: extrapolating published data to {', '.join(targets)}: {r['extrapolation_conventions']}"
        )
    elif auto and foreign:
        r["not_applicable"]["extrapolation"] = (
            "off for published tables (their loss and model-scale "
            "conventions differ from the targets'); pass --targets to ask"
        )
    return warnings


def _primary(per: dict, dataset: str | None, warnings: list[str]) -> str:
    """The dataset whose fits fill the report's top-level sections: --dataset, else the one with the most runs.
    InputError when no law could be fitted on any dataset."""
    if not any(k in r for r in per.values() for k in ("hparams", "isoflop", "parametric")):
        why = "; ".join(
            f"{n}: " + "; ".join(f"{k}: {v}" for k, v in (r["skipped"] | r["not_applicable"]).items())
            for n, r in per.items()
        )
        raise InputError(f"no law could be fitted ({why})", warnings)
    if dataset is not None and dataset not in per:
        raise InputError(f"--dataset {dataset!r} not among the datasets: {', '.join(per)}", warnings)
    primary = dataset or max(per, key=lambda n: per[n]["n_used"])
    if len(per) > 1:
        warnings.append(
            f"{len(per)} datasets fitted separately ({', '.join(per)}); top-level sections are "
            f"`{primary}` (choose with --dataset)"
        )
    return primary


def _answers(per: dict, primary: str, o: FitOptions, shape: ModelConfig, warnings: list[str]) -> dict:
    """The primary dataset's answers to --budget, --predict and --size, their flags added to warnings."""
    r = per[primary]
    recs = [recommend(C, r, shape, o.hparams_form) for C in o.budgets]
    for rec in recs:
        budget_extras(r, rec, o.sizes)
        warnings += [f"--budget {rec['C']:.3g}: {f}" for f in rec["flags"]]
    predictions = [one_prediction(r, q) for q in o.predict]
    for q, pr in zip(o.predict, predictions):
        warnings += [f"--predict {','.join(f'{x:g}' for x in q)}: {f}" for f in pr["flags"]]
        warnings += [f"--predict {','.join(f'{x:g}' for x in q)}: {pr[k]}" for k in ("loss_why",) if k in pr]
    size_rows = size_plans(r, o.sizes)
    warnings += [f"--size {s['N']:.3g}: {f}" for s in size_rows for f in s.get("flags", [])]
    warnings += [f"--size {s['N']:.3g}: {s['why']}" for s in size_rows if "why" in s]
    if any(rec["M_opt_source"] != "fit" for rec in recs):
        warnings.append(
            f"--budget: `{primary}` has no fitted M_opt law, so the recommended sizes use DeepSeek's "
            f"published M_opt(C) (marked in the report)"
        )
    return {
        "recommendations": recs,
        "predictions": predictions,
        "predictions_intervals": INTERVALS,
        "sizes": size_rows,
    }


def _repetition(df: pd.DataFrame, warnings: list[str]) -> dict | None:
    """The runs that repeat their training data (analysis.tables.repetition), with the warning they earn."""
    rep = repetition(df)
    if rep:
        worst = rep["runs"][0]
        rep["warning"] = (
            f"{rep['n_runs']} of {rep['n_known']} usable runs repeat their training data (up to "
            f"{rep['max_epochs']:.3g} epochs, e.g. {worst['run_id']}): D overstates the data they saw and their loss "
            f"sits above what fresh data would give (report.md: Data repetition; runs.csv: epochs)"
        )
        warnings.append(rep["warning"])
    return rep


def _provenance(paths: list, df: pd.DataFrame, o: FitOptions, targets: tuple[str, ...]) -> dict:
    n_excl = int((df.excluded != "").sum())
    return {
        "inputs": [str(p) if isinstance(p, Path) else "<DataFrame>" for p in paths],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "n_runs": int(len(df)),
        "n_used": int(len(df)) - n_excl,
        "n_excluded": n_excl,
        "options": o.provenance(list(targets)),
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "pandas": pd.__version__,
        },
    }


def _write(report: dict, df: pd.DataFrame, per: dict, paths: list, out_dir, plots: bool) -> None:
    """report.json, report.md, runs.csv and (with plots) plots/*.png; the files a plot could not read are warned
    of in the report."""
    warnings = report["warnings"]
    out = _out_path(paths, out_dir)
    if out is None:
        raise InputError("DataFrame input needs an output directory (out_dir=...) or write=False", warnings)
    curves = _curves(paths, warnings) if plots else None  # before the report: its file problems are warnings
    out.mkdir(parents=True, exist_ok=True)
    report["provenance"]["out_dir"] = str(out)
    table = df.rename(columns={"budget_group": "budget_used"})
    write_atomic(out / "runs.csv", csv_safe(table).to_csv(index=False))
    write_reports(report, out)
    if plots:
        _write_plots(per, report["dataset"], df, out / "plots", curves)


def _write_plots(per: dict, primary: str, df: pd.DataFrame, plots_dir: Path, curves: pd.DataFrame | None) -> None:
    from analysis import plots as P  # matplotlib only when plotting

    for name, r in per.items():
        suffix = "" if name == primary else f"_{_slug(name)}"
        P.write_all(r, df[(df.dataset == name)], plots_dir, suffix, name if len(per) > 1 else "")
    if curves is not None:
        from analysis.curve_plots import write_curve_plots

        write_curve_plots(curves, plots_dir)


MAX_CURVE_WARNINGS = 10


def _curves(paths, warnings: list[str]) -> pd.DataFrame | None:
    """The training curves below the run-dir inputs (analysis.curves), or None when there are none (e.g. copied
    result.json files without their logs); the files they could not read are added to warnings."""
    from analysis.curves import load_curves

    run_dirs = [p for p in paths if isinstance(p, Path) and p.is_dir()]
    if not run_dirs:
        return None
    try:
        curves = load_curves(run_dirs)
    except ValueError:
        return None
    found = curves.attrs.get("warnings") or []
    warnings += [f"training curves: {w}" for w in found[:MAX_CURVE_WARNINGS]]
    if len(found) > MAX_CURVE_WARNINGS:
        warnings.append(f"training curves: {len(found) - MAX_CURVE_WARNINGS} more unreadable lines or files")
    return curves


def run_tables(df: pd.DataFrame, used: pd.DataFrame, r: dict) -> dict:
    """The run-level tables of one dataset's report (analysis.tables): `df` all its runs, `used` the usable ones."""
    budgets = (r.get("isoflop") or {}).get("budgets") or r.get("isoflop_budgets") or []
    hp = df.loc[used.index[used.sweep == "hparams"]]
    return {
        "isoflop": isoflop_tables(df, budgets),
        "hparams": hparams_grids(df, pd.Series(grid_keys(hp), index=hp.index)) if len(hp) else [],
    }


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m analysis.fit", description=__doc__.split("\n\n")[0])
    _question_args(ap)
    _fit_args(ap)
    _form_args(ap)
    return ap


def _question_args(ap: argparse.ArgumentParser) -> None:
    """What to read, where to write, and what to ask of the laws."""
    ap.add_argument("paths", nargs="+", help="runs directories (every result.json below), result.json files or CSVs")
    ap.add_argument("--out", help="output directory (default: <first dir>/analysis/, or <csv stem>_analysis/)")
    ap.add_argument("--budget", type=float, nargs="*", default=[], metavar="C", help="recommend shape/D/eta/B for C")
    ap.add_argument(
        "--predict",
        action="append",
        default=[],
        metavar="N,D",
        help="L(N, D) with its 95%% CI at N parameters and D tokens (repeatable); one number C: L(C) and the "
        "compute-optimal N, D, loss of L(N, D) at C",
    )
    ap.add_argument(
        "--size",
        action="append",
        type=float,
        default=[],
        metavar="N",
        help="a model size you built (parameters, repeatable): its compute-optimal D from L(N, D), and with "
        "--budget the D each budget buys it and the D that matches the compute-optimal loss",
    )
    ap.add_argument(
        "--metric",
        choices=("loss", "bpb"),
        default="loss",
        help="fit the loss in nats/token (val_loss, a table's loss) or bits per byte (val_bpb, a table's bpb)",
    )


def _fit_args(ap: argparse.ArgumentParser) -> None:
    """How the laws are fitted (--targets and --target-tokens sit among them in --help, where they always were)."""
    ap.add_argument("--band", type=float, default=0.0025, help="near-optimal band, relative to the best loss")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0 = no CIs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--targets",
        nargs="*",
        default=None,
        help="conf/model/<name>.yaml or YAML paths (default: deepseek_7b deepseek_67b for run records, "
        "none for CSV tables)",
    )
    ap.add_argument("--target-tokens", type=float, default=2e12, help="training tokens D of the targets")
    ap.add_argument("--min-budgets", type=int, default=3, help="budgets a law needs (2 allowed, with a warning)")
    ap.add_argument("--rtol", type=float, default=1.15, help="C ratio within which runs without `budget` group")
    ap.add_argument(
        "--iso-window",
        type=float,
        default=WINDOW,
        metavar="DECADES",
        help="--iso-estimator window: fit each IsoFLOP parabola on the sizes within this many decades of its "
        "best size (at least 5 sizes; 0 = all points)",
    )
    ap.add_argument(
        "--iso-estimator",
        choices=ESTIMATORS,
        default=DEFAULT_ESTIMATOR,
        help="how M_opt(C) is fitted: joint (default: every budget's profile at once, shared skew, minima on one "
        "power law), window (a parabola per budget on --iso-window, then a line), all (parabolas on all "
        "points), adaptive (a window set by each profile's measured skew)",
    )


def _form_args(ap: argparse.ArgumentParser) -> None:
    """The laws' forms, the plausible ranges of the data, and the outputs."""
    ap.add_argument(
        "--hparams-form",
        choices=("C", "MD"),
        default="C",
        help="eta/B law used for extrapolation: C (DeepSeek, k*C^e) or MD (Step Law, a*N^x*D^y, "
        "c*D^z); both are fitted and reported",
    )
    ap.add_argument("--tie-exponents", action="store_true", help="parametric L(N, D) with alpha = beta")
    ap.add_argument("--fix-E", type=float, metavar="E", help="parametric L(N, D) with the irreducible loss fixed")
    ap.add_argument(
        "--robust",
        type=float,
        metavar="Z",
        help="parametric: drop runs whose log residual is beyond Z robust SDs (1.4826*MAD), refit once",
    )
    ap.add_argument(
        "--loss-range",
        type=float,
        nargs=2,
        default=[0.01, 20.0],
        metavar=("LO", "HI"),
        help="plausible losses (nats/token), exclusive LO: runs outside are excluded by name",
    )
    ap.add_argument(
        "--max-compute",
        type=float,
        default=1e30,
        metavar="C",
        help="largest plausible C in FLOPs: runs above are excluded by name",
    )
    ap.add_argument("--dataset", help="dataset whose fits fill the top-level report sections")
    ap.add_argument("--no-plots", action="store_true")
    add_config_dir_arg(ap, "--targets names")


def options_from_args(a: argparse.Namespace) -> FitOptions:
    """The CLI's one FitOptions (ValueError when a value is bad); --targets names are looked up in --config-dir
    too, as Hydra would find them."""
    dirs = search_dirs([], a.config_dir)
    return FitOptions(
        band=a.band,
        bootstrap=a.bootstrap,
        seed=a.seed,
        min_budgets=a.min_budgets,
        rtol=a.rtol,
        iso_window=a.iso_window,
        iso_estimator=a.iso_estimator,
        hparams_form=a.hparams_form,
        tie=a.tie_exponents,
        fix_E=a.fix_E,
        robust=a.robust,
        targets=None if a.targets is None else tuple(resolve_name("model", t, dirs) for t in a.targets),
        target_tokens=a.target_tokens,
        budgets=a.budget,
        predict=a.predict,
        sizes=a.size,
        metric=a.metric,
        limits=Limits(loss_min=a.loss_range[0], loss_max=a.loss_range[1], C_max=a.max_compute),
        dataset=a.dataset,
    )


def _summary_lines(rep: dict) -> list[str]:
    """Every dataset's laws (the CLI summary), the top-level one first."""
    names = [rep["dataset"]] + [n for n in rep["datasets"] if n != rep["dataset"]]
    out = []
    for n in names:
        d = rep["datasets"][n]
        out.append(f"  [{n}] {d['n_used']} usable runs")
        if d.get("seeds"):
            out.append(f"    seeds: {d['seeds']['line']}")
        for k, sec in (("eta_opt", "hparams"), ("B_opt", "hparams"), ("M_opt", "isoflop"), ("D_opt", "isoflop")):
            law = (d.get(sec) or {}).get(k)
            if law is not None:
                out.append(f"    {k} = {format_law(law, digits=4)}")
        p = d.get("parametric")
        if p:
            ci = p.get("ci95") or {}
            out.append(
                "    L(N, D): "
                + ", ".join(
                    f"{k}={p[k]:.4g}" + (f" [{ci[k][0]:.4g}, {ci[k][1]:.4g}]" if k in ci else "")
                    for k in ("E", "alpha", "beta", "a")
                )
            )
        lc = d.get("loss")
        if lc:
            s = lc[lc["form"]]
            out.append(
                f"    L(C) = {s['form']} (alpha {s['alpha']:.4g}"
                + (f", E {s['E']:.4g}" if "E" in s else "")
                + f"): {lc.get('form_why', '')}"
            )
        for sec, why in d["skipped"].items():
            out.append(f"    {sec}: not fitted ({why})")
    m = rep.get("metric") or {}
    lines = summary_lines(rep)
    if lines:
        out += [f"  predictions ({m.get('label', 'loss')}; 95% bootstrap intervals, see report.md):", *lines]
    return out


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    t0 = time.time()
    try:
        rep, _ = analyse(a.paths, a.out, options_from_args(a), plots=not a.no_plots)
    except (ValueError, OSError) as e:
        for w in getattr(e, "warnings", []):  # e.g. corrupt records: they must not vanish with the error
            print(f"warning: {w}", file=sys.stderr)
        fail(PROG, e)
    for w in rep["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    pv = rep["provenance"]
    print(
        f"{pv['n_runs']} runs read, {pv['n_excluded']} excluded before fitting, {pv['n_used']} usable "
        f"({time.time() - t0:.1f}s); wrote {pv['out_dir']}/report.md, report.json, runs.csv"
        + ("" if a.no_plots else ", plots/")
    )
    print("\n".join(_summary_lines(rep)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
