"""FitOptions: every option of a fit, in one typed value validated once when it is built.

The same names are the flags of `python -m analysis.fit`, the keys of a study file's `analysis` section and the
keywords of `fit_runs`, so a notebook writes `FitOptions(band=0.01, budgets=[1e21])` and the CLI builds the same
value from its flags. Building one from bad values raises a one-line ValueError naming the flag.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from analysis.isoflop import DEFAULT_ESTIMATOR, ESTIMATORS, WINDOW
from analysis.planning import parse_request
from analysis.plausible import DEFAULT_LIMITS, Limits

MAX_BOOTSTRAP = 1_000_000  # resamples; CIs stop moving long before, and beyond it the arrays do not fit in memory


@dataclass(frozen=True)
class FitOptions:
    """The options of `analysis.fit` (CLI flags of the same names; `limits` holds --loss-range and --max-compute).

    Built from loose values (a list, one number, one --predict string, a mapping for `limits`, as notebooks and
    study files give them) it stores them typed: tuples of floats, parsed --predict requests, a Limits.
    """

    # the laws (analysis.sections)
    band: float = 0.0025  # near-optimal band, relative to each grid's best loss
    bootstrap: int = 1000  # resamples (0 = no CIs)
    seed: int = 0
    min_budgets: int = 3
    rtol: float = 1.15  # C ratio within which runs without `budget` group
    off_centre: float = 2 / 3  # IsoFLOP vertex limit, as a fraction of the fitted half-width
    iso_window: float = WINDOW  # decades either side of each profile's best size (0 = all points)
    iso_estimator: str = DEFAULT_ESTIMATOR  # joint | window | all | adaptive (analysis.isoflop)
    hparams_form: str = "C"  # "C" (DeepSeek) or "MD" (Step Law): which form extrapolates
    tie: bool = False  # parametric alpha = beta
    fix_E: float | None = None  # parametric E fixed
    robust: float | None = None  # parametric: drop runs beyond this many robust SDs, refit once
    # what the laws are asked
    targets: tuple[str, ...] | None = None  # None: DeepSeek 7B and 67B for run records, none for published tables
    target_tokens: float = 2e12  # training tokens D of the targets
    budgets: tuple[float, ...] = ()  # --budget: recommendations at these C
    predict: tuple[tuple[float, ...], ...] = ()  # --predict: (N, D) or (C,) requests
    sizes: tuple[float, ...] = ()  # --size: model sizes N (parameters)
    # what is read
    metric: str = "loss"  # "loss" (nats/token) or "bpb" (bits per byte)
    limits: Limits = DEFAULT_LIMITS  # plausible losses and compute (analysis.plausible)
    dataset: str | None = None  # the dataset whose fits fill the report's top-level sections

    def __post_init__(self) -> None:
        self._check_laws()
        limits = Limits(**self.limits) if isinstance(self.limits, Mapping) else self.limits
        limits.check()
        self._set("limits", limits)
        self._set("predict", tuple(parse_request(v) for v in _listed(self.predict, _one_request)))
        self._set("budgets", _positive("--budget", self.budgets))
        self._set("target_tokens", _positive("--target-tokens", (self.target_tokens,))[0])
        self._set("sizes", _positive("--size", self.sizes))
        if self.targets is not None:
            self._set("targets", tuple(str(t) for t in _listed(self.targets)))

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # frozen: only __post_init__ stores the typed values

    def _check_laws(self) -> None:
        finite = all(np.isfinite(v) for v in (self.band, self.rtol, self.off_centre, self.iso_window))
        ok = self.band >= 0 and 0 <= self.bootstrap <= MAX_BOOTSTRAP and self.min_budgets >= 2 and self.rtol > 1
        if not (finite and ok and self.iso_window >= 0 and self.off_centre > 0):
            raise ValueError(
                f"need finite --band >= 0, 0 <= --bootstrap <= {MAX_BOOTSTRAP:,}, --min-budgets >= 2, --rtol > 1 "
                "and --iso-window >= 0 "
                f"(got band {self.band:g}, bootstrap {self.bootstrap}, min budgets {self.min_budgets}, "
                f"rtol {self.rtol:g}, iso window {self.iso_window:g})"
            )
        if self.iso_estimator not in ESTIMATORS:
            raise ValueError(f"--iso-estimator must be one of {', '.join(ESTIMATORS)}, not {self.iso_estimator!r}")
        if self.hparams_form not in ("C", "MD"):
            raise ValueError(f"--hparams-form must be C or MD, not {self.hparams_form!r}")
        if any(v is not None and not (v > 0 and np.isfinite(v)) for v in (self.fix_E, self.robust)):
            raise ValueError(f"--fix-E and --robust need a positive finite value (got {self.fix_E}, {self.robust})")

    def provenance(self, targets: list[str]) -> dict:
        """The options as report.json's provenance states them: `targets` those the fit extrapolated to (the
        default resolved), sequences as lists, `dataset` left to the report's own key."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "dataset"}
        return out | {
            "targets": list(targets),
            "budgets": list(self.budgets),
            "predict": [list(q) for q in self.predict],
            "sizes": list(self.sizes),
            "limits": self.limits.__dict__,
        }


def _one_request(v: Any) -> bool:
    """A string ("7e9,2e12") or a tuple of numbers ((7e9, 2e12)) is one --predict request; a list is several."""
    return isinstance(v, str) or (isinstance(v, tuple) and bool(v) and all(np.ndim(x) == 0 for x in v))


def _listed(v: Any, is_one: Callable[[Any], bool] = lambda v: False) -> list:
    """v as a list of values: one value (a number, a string, a path, or what `is_one` calls one) becomes a list of
    it."""
    scalar = not isinstance(v, Iterable) or (isinstance(v, np.ndarray) and v.ndim == 0)
    return [v] if scalar or is_one(v) or isinstance(v, str | Path) else list(v)


def _positive(flag: str, v: Any) -> tuple[float, ...]:
    """One number or several, each positive and finite, as floats (one-line ValueError naming the flag)."""
    vals = _listed(v)
    bad = [x for x in vals if not _positive_finite(x)]
    if bad:
        raise ValueError(f"{flag} needs positive finite numbers (FLOPs / tokens), got {bad[0]!r}")
    return tuple(float(x) for x in vals)


def _positive_finite(v: Any) -> bool:
    try:
        return 0 < float(v) < math.inf
    except (TypeError, ValueError):
        return False


DEFAULT_OPTIONS = FitOptions()
OPTION_NAMES = tuple(f.name for f in fields(FitOptions))
