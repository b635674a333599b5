"""Where a sweep's predictions come from: power laws eta_opt(C), B_opt(C), M_opt(C) in compute C (FLOPs).

DeepSeek's published fits (arXiv 2401.02954, Sec. 3) by default, or the fits of `analysis.fit` (report.json), so a
study can run in DeepSeek's order: fit eta/B on small hparams grids first, then centre IsoFLOP grids with them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from scaling.base.laws import DEEPSEEK, PowerLaw

# report.json section holding each law (analysis.fit writes hparams.{eta_opt,B_opt} and isoflop.{M_opt,D_opt}).
REPORT_SECTION = {"eta_opt": "hparams", "B_opt": "hparams", "M_opt": "isoflop"}


@dataclass(frozen=True)
class Laws:
    eta_opt: PowerLaw
    B_opt: PowerLaw
    M_opt: PowerLaw
    source: str  # printed with the plan, so a plan always says which laws centred it

    @classmethod
    def deepseek(cls) -> Laws:
        return cls(**{name: DEEPSEEK[name] for name in REPORT_SECTION}, source="deepseek")

    @classmethod
    def from_report(cls, path: str | Path) -> Laws:
        """Laws fitted by analysis.fit; a law missing from the report falls back to DeepSeek's (with a note)."""
        path = Path(path).expanduser()
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(
                f"sweep.laws={path}: cannot read a report.json ({type(e).__name__}: {e}); "
                f"use sweep.laws=deepseek or the report written by analysis.fit"
            ) from None
        laws, fallback = {}, []
        for name, section in REPORT_SECTION.items():
            fit = (report.get(section) or {}).get(name) if isinstance(report, dict) else None
            if fit is None:
                laws[name] = DEEPSEEK[name]
                fallback.append(name)
                continue
            try:
                law = PowerLaw(float(fit["coef"]), float(fit["exponent"]))
            except (KeyError, TypeError, ValueError):
                raise ValueError(
                    f"sweep.laws={path}: {section}.{name} must be {{coef, exponent}}, got {fit!r}"
                ) from None
            if not (law.coef > 0 and math.isfinite(law.coef) and math.isfinite(law.exponent) and law.exponent != 0):
                raise ValueError(
                    f"sweep.laws={path}: {section}.{name} = {fit!r} is not a usable power law (coef > 0, exponent != 0)"
                )
            laws[name] = law
        if fallback:
            them = "it" if len(fallback) == 1 else "them"
            print(f"note: {path} has no {', '.join(fallback)}: using DeepSeek's for {them}")
        return cls(**laws, source=str(path) + (f" (DeepSeek's {', '.join(fallback)})" if fallback else ""))

    @classmethod
    def load(cls, spec: str) -> Laws:
        """sweep.laws: `deepseek` or a path to a report.json."""
        return cls.deepseek() if str(spec) == "deepseek" else cls.from_report(spec)
