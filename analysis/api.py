"""The notebook API: `fit_runs(source) -> FitResult`, the laws as callables with their CIs, the run table with
exclusion reasons, the report dicts, and the figures on your own axes.

    from analysis import fit_runs
    res = fit_runs("runs/")                    # a runs dir, a result.json, a CSV path or a DataFrame (or a list)
    res.laws["eta_opt"](1e21), res.laws["eta_opt"].ci95
    res.runs[res.runs.excluded != ""]          # every run, with why it was left out
    res.plot("isoflop", ax=ax)                 # returns the figure; matplotlib's backend is left alone
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import losscurve
from analysis import predict as P
from analysis.fit import analyse
from analysis.options import OPTION_NAMES, FitOptions
from scaling.base.studyfile import STUDY_NAME, read_study


@dataclass
class ParametricLaw:
    """L(N, D) = E + A/N^alpha + B/D^beta with the 95% bootstrap CI of each parameter, and its predictions with
    intervals (analysis.predict: each bootstrap resample's refit evaluated at the point, 95% percentile band):

        L = res.laws["L_ND"]
        L(7e9, 2e12)                      # the point prediction (arrays broadcast)
        L.interval(7e9, 2e12)             # (lo, hi) of the 95% bootstrap interval, same shape
        L.predict(7e9, 2e12)              # {"value", "ci95"}
        L.compute_optimal(1e23)           # {"N", "D", "loss"}, each {"value", "ci95"}, at C = 6*N*D
        L.plan(1.3e9, C=1e22)             # the D for a model you built: compute-optimal, and loss-matched at C
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    ci95: dict = field(default_factory=dict)
    boot_theta: np.ndarray | None = field(default=None, repr=False)  # (R, 5): log A, log B, log E, alpha, beta

    @classmethod
    def from_section(cls, p: dict) -> ParametricLaw:
        return cls(p["E"], p["A"], p["B"], p["alpha"], p["beta"], p.get("ci95", {}), p.get("boot_theta"))

    def __call__(self, N, D):
        return self.E + self.A / np.asarray(N, float) ** self.alpha + self.B / np.asarray(D, float) ** self.beta

    @property
    def _par(self) -> dict:
        theta = [np.log(self.A), np.log(self.B), np.log(self.E), self.alpha, self.beta]
        return {"theta": theta, "boot_theta": self.boot_theta}

    def predict(self, N: float, D: float) -> dict:
        """L(N, D) at one point: {"value", "ci95"} (no ci95 when fitted without a bootstrap)."""
        return P.loss_at(self._par, N, D)[0]

    def interval(self, N, D) -> tuple[np.ndarray, np.ndarray]:
        """The 95% bootstrap interval of L(N, D), broadcast over N and D (ValueError without a bootstrap)."""
        if self.boot_theta is None:
            raise ValueError("L(N, D) was fitted with bootstrap=0: no interval; refit with bootstrap > 0")
        shape = np.broadcast_shapes(np.shape(N), np.shape(D))
        pts = P.loss_at(self._par, N, D)
        lo, hi = (np.array([p["ci95"][i] for p in pts]).reshape(shape) for i in (0, 1))
        return lo, hi

    def compute_optimal(self, C: float) -> dict:
        return P.compute_optimal(self._par, C)

    def plan(self, N: float, C: float | None = None, loss: float | None = None) -> dict:
        return P.size_plan(self._par, N, C, loss)


@dataclass
class LossLaw:
    """L(C) on the IsoFLOP minima (the form chosen by the backtest and the data, `form_why` says why), with its
    parameters' CIs; `predict(C)` gives {"value", "ci95"} at C."""

    fit: dict

    def __call__(self, C):
        return losscurve.predict(self.fit, C)

    @property
    def ci95(self) -> dict:
        return (self.fit.get(self.fit["form"]) or {}).get("ci95", {})

    @property
    def form_why(self) -> str:
        return self.fit.get("form_why", "")

    def predict(self, C: float) -> dict:
        return P.loss_C_at(self.fit, C)


@dataclass
class FitResult:
    """What `fit_runs` returns; `laws` are those of `dataset` (use `for_dataset` for the others)."""

    report: dict
    runs: pd.DataFrame
    dataset: str
    laws: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        r = self.report["datasets"][self.dataset]
        hp, iso = r.get("hparams") or {}, r.get("isoflop") or {}
        laws: dict[str, Any] = {k: hp[k] for k in ("eta_opt", "B_opt") if k in hp}
        laws |= {f"{k}_MD": v for k, v in (hp.get("MD") or {}).items()}
        laws |= {k: iso[k] for k in ("M_opt", "D_opt") if k in iso}
        if "loss" in r:
            laws["L_C"] = LossLaw(r["loss"])
        if "parametric" in r:
            p = r["parametric"]
            laws["L_ND"] = ParametricLaw.from_section(p)
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
        """One figure on ax; returns it. Kinds: 'isoflop', 'optimal_scaling', 'hparams', 'loss_curve',
        'parametric' (= 'iso_loss': L(N, D)'s loss contours over C and N, the compute-optimal frontier with its
        band, the runs), 'fit_diagnostic' (observed vs predicted L(N, D) and residuals; a pair of axes).

        The figure `analysis.fit` saves as plots/<kind>.png: it draws the runs whatever failed to fit, and its
        title says what was fitted. ValueError when the data has no runs of the kind the figure shows, or for
        'fit_diagnostic' when L(N, D) was not fitted."""
        from analysis import plots

        r, df = self.sections, self.runs[self.runs.dataset == self.dataset]
        multi = len(self.report["datasets"]) > 1
        try:
            return plots.figure(kind, r, df, ax=ax, title=f" [{self.dataset}]" if multi else "")
        except ValueError as e:
            raise ValueError(f"dataset {self.dataset!r}: {e}") from None


def fit_runs(source, *, out_dir: str | Path | None = None, **options) -> FitResult:
    """Fit every law on `source` (runs dir, result.json, CSV path, DataFrame, or a list of them).

    `options` are FitOptions fields (analysis.options: band, bootstrap, seed, ..., budgets, targets, predict,
    sizes, metric, limits, dataset), given as loosely as a notebook writes them: predict a list of "N,D", (N, D) or
    a compute C (one string or one tuple is one request) -> the report's `predictions`; sizes `--size` model sizes
    N; metric "loss" (nats/token) or "bpb" (bits per byte). Nothing is written unless out_dir is given (then as
    the CLI writes it).
    A study's directory (scaling.study wrote its study.json) is fitted with the study's analysis options, except
    those given here, and says so (on stderr and in the report's provenance).
    """
    sources = list(source) if isinstance(source, list | tuple) else [source]
    options, from_study = study_options(sources, options)
    report, runs = analyse(sources, out_dir, FitOptions(**options), write=out_dir is not None)
    if from_study:
        report["provenance"]["options_from"] = from_study
    return FitResult(report, runs, report["dataset"])


def study_options(sources: list, options: dict) -> tuple[dict, str | None]:
    """(options, the note saying so): a single study directory's analysis options under the caller's own."""
    if len(sources) != 1 or not isinstance(sources[0], str | Path):
        return options, None
    study = read_study(sources[0])
    used = {k: v for k, v in ((study or {}).get("analysis") or {}).items() if k in OPTION_NAMES and k not in options}
    if not used:
        return options, None
    note = (
        f"{Path(sources[0]) / STUDY_NAME}: fitting with the study's analysis options "
        + ", ".join(f"{k}={v!r}" for k, v in used.items())
        + " (pass them to fit_runs to override)"
    )
    print(f"fit_runs: {note}", file=sys.stderr)
    return used | options, note
