"""Where a sweep's predictions come from: power laws eta_opt(C), B_opt(C), M_opt(C) in compute C (FLOPs).

DeepSeek's published fits (arXiv 2401.02954, Sec. 3) by default, or the fits of `analysis.fit` (report.json), so a
study can run in DeepSeek's order: fit eta/B on small hparams grids first, then centre IsoFLOP grids with them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
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
    # Per law: the geometric centre of the budgets it was fitted on (where its 95% interval is pivoted:
    # sweeps.feasible) and what it is (e.g. "fitted on stage 1", "DeepSeek's"); empty for published laws.
    centre: dict[str, float] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)

    def name(self, law: str) -> str:
        """Where one law comes from, for plan lines and warnings."""
        return self.names.get(law, self.source)

    @classmethod
    def deepseek(cls) -> Laws:
        return cls(DEEPSEEK["eta_opt"], DEEPSEEK["B_opt"], DEEPSEEK["M_opt"], source="deepseek")

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
        laws, fallback, centre, names = {}, [], {}, {}
        for name, section in REPORT_SECTION.items():
            fit = (report.get(section) or {}).get(name) if isinstance(report, dict) else None
            if fit is None:
                laws[name] = DEEPSEEK[name]
                fallback.append(name)
                names[name] = "DeepSeek's"
                continue
            try:
                law = PowerLaw(float(fit["coef"]), float(fit["exponent"]), ci95=dict(fit.get("ci95") or {}))
                names[name] = str(fit.get("source") or path)
                c = fit.get("centre_C") or fitted_centre(report.get(section) or {})
                if c:
                    centre[name] = float(c)
            except (KeyError, TypeError, ValueError, AttributeError):
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
        source = str(path) + (f" (DeepSeek's {', '.join(fallback)})" if fallback else "")
        return cls(**laws, source=source, centre=centre, names=names)

    @classmethod
    def load(cls, spec: str) -> Laws:
        """sweep.laws: `deepseek` or a path to a report.json."""
        return cls.deepseek() if str(spec) == "deepseek" else cls.from_report(spec)


def fitted_centre(section: dict) -> float | None:
    """Geometric centre of the budgets a report section's laws were fitted on (the IsoFLOP law's: the used ones)."""
    Cs = [
        float(b["C"])
        for b in section.get("budgets") or []
        if isinstance(b, dict) and b.get("used", True) and isinstance(b.get("C"), int | float) and b["C"] > 0
    ]
    return math.exp(sum(math.log(c) for c in Cs) / len(Cs)) if Cs else None
