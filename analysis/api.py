"""The notebook API: `fit_runs(source) -> FitResult`, the laws as callables with their CIs, the run table with
exclusion reasons, the report dicts, and the figures on your own axes.

    from analysis import fit_runs
    res = fit_runs("runs/")                    # a runs dir, a result.json, a CSV path or a DataFrame (or a list)
    res.laws["eta_opt"](1e21), res.laws["eta_opt"].ci95
    res.runs[res.runs.excluded != ""]          # every run, with why it was left out
    res.plot("isoflop", ax=ax)                 # returns the figure; matplotlib's backend is left alone
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import losscurve
from analysis.fit import analyse
from analysis.plausible import DEFAULT_LIMITS, Limits
from analysis.sections import FitOptions
from scaling.base.studyfile import STUDY_NAME, read_study


@dataclass
class ParametricLaw:
    """L(N, D) = E + A/N^alpha + B/D^beta with the 95% bootstrap CI of each parameter."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    ci95: dict = field(default_factory=dict)

    def __call__(self, N, D):
        return self.E + self.A / np.asarray(N, float) ** self.alpha + self.B / np.asarray(D, float) ** self.beta


@dataclass
class LossLaw:
    """L(C) on the IsoFLOP minima (the preferred form of the loss-curve fit), with its parameters' CIs."""

    fit: dict

    def __call__(self, C):
        return losscurve.predict(self.fit, C)

    @property
    def ci95(self) -> dict:
        return (self.fit.get(self.fit["form"]) or {}).get("ci95", {})


@dataclass
class FitResult:
    """What `fit_runs` returns; `laws` are those of `dataset` (use `for_dataset` for the others)."""

    report: dict
    runs: pd.DataFrame
    dataset: str
    laws: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        r = self.report["datasets"][self.dataset]
        hp, iso = r.get("hparams") or {}, r.get("isoflop") or {}
        laws: dict[str, Any] = {k: hp[k] for k in ("eta_opt", "B_opt") if k in hp}
        laws |= {f"{k}_MD": v for k, v in (hp.get("MD") or {}).items()}
        laws |= {k: iso[k] for k in ("M_opt", "D_opt") if k in iso}
        if "loss" in r:
            laws["L_C"] = LossLaw(r["loss"])
        if "parametric" in r:
            p = r["parametric"]
            laws["L_ND"] = ParametricLaw(p["E"], p["A"], p["B"], p["alpha"], p["beta"], p.get("ci95", {}))
        self.laws = laws

    @property
    def sections(self) -> dict:
        """This dataset's report dict (hparams, isoflop, loss, parametric, skipped, not_applicable, ...)."""
        return self.report["datasets"][self.dataset]

    @property
    def excluded(self) -> pd.DataFrame:
        """Runs never used, with the reason."""
        return self.runs.loc[self.runs.excluded != "", ["run_id", "path", "excluded"]]

    def for_dataset(self, name: str) -> FitResult:
        if name not in self.report["datasets"]:
            raise ValueError(f"dataset {name!r} not among {', '.join(self.report['datasets'])}")
        return FitResult(self.report, self.runs, name)

    def plot(self, kind: str, ax=None):
        """One figure ('isoflop', 'optimal_scaling', 'hparams', 'loss_curve', 'parametric') on ax; returns it."""
        from analysis import plots

        r, df = self.sections, self.runs[self.runs.dataset == self.dataset]
        fns = {
            "isoflop": lambda: plots.isoflop_curves(r, df, ax=ax),
            "optimal_scaling": lambda: plots.optimal_scaling(r, ax=ax),
            "hparams": lambda: plots.hparams(r, df, ax=ax),
            "loss_curve": lambda: plots.loss_curve(r, ax=ax),
            "parametric": lambda: plots.parametric(r, df, ax=ax),
        }
        need = {"optimal_scaling": "isoflop", "loss_curve": "loss"}.get(kind, kind)
        if kind not in fns:
            raise ValueError(f"unknown plot {kind!r}; choose one of {', '.join(fns)}")
        if need not in r and (kind != "isoflop" or need in r["not_applicable"]):  # skipped profiles still plot
            raise ValueError(
                f"no {need} fit for dataset {self.dataset!r}: "
                f"{(r['skipped'] | r['not_applicable']).get(need, 'not fitted')}"
            )
        return fns[kind]()


def fit_runs(
    source,
    *,
    out_dir: str | Path | None = None,
    budgets=(),
    targets=None,
    target_tokens: float = 2e12,
    dataset: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    **options,
) -> FitResult:
    """Fit every law on `source` (runs dir, result.json, CSV path, DataFrame, or a list of them).

    `options` are FitOptions fields (band, bootstrap, seed, min_budgets, rtol, off_centre, iso_window,
    hparams_form, tie, fix_E, robust). Nothing is written unless out_dir is given (then as the CLI writes it).
    A study's directory (scaling.study wrote its study.json) is fitted with the study's analysis options, except
    those given here, and says so (on stderr and in the report's provenance).
    """
    sources = list(source) if isinstance(source, list | tuple) else [source]
    options, from_study = study_options(sources, options)
    if isinstance(targets, str | Path):  # one target, not its characters
        targets = [targets]
    if np.ndim(budgets) == 0:  # one budget
        budgets = [budgets]
    report, runs = analyse(
        sources,
        out_dir,
        budgets=budgets,
        targets=targets,
        target_tokens=target_tokens,
        dataset=dataset,
        write=out_dir is not None,
        limits=limits,
        options=FitOptions(**options),
    )
    if from_study:
        report["provenance"]["options_from"] = from_study
    return FitResult(report, runs, report["dataset"])


def study_options(sources: list, options: dict) -> tuple[dict, str | None]:
    """(options, the note saying so): a single study directory's analysis options under the caller's own."""
    if len(sources) != 1 or not isinstance(sources[0], str | Path):
        return options, None
    study = read_study(sources[0])
    fields = {f.name for f in dataclasses.fields(FitOptions)}
    used = {k: v for k, v in ((study or {}).get("analysis") or {}).items() if k in fields and k not in options}
    if not used:
        return options, None
    note = (
        f"{Path(sources[0]) / STUDY_NAME}: fitting with the study's analysis options "
        + ", ".join(f"{k}={v!r}" for k, v in used.items())
        + " (pass them to fit_runs to override)"
    )
    print(f"fit_runs: {note}", file=sys.stderr)
    return used | options, note
