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
# What a plan may be centred on, at a budget C. Beyond REFUSE no run could be meant (a peak AdamW learning rate >= 1
# diverges any model; a model of M >= C FLOPs per token trains less than one token); beyond WARN the law is far
# outside anything published or trained at any scale (DeepSeek's own laws stay inside for C = 1e6..1e26: eta
# 0.055..1.8e-4, tokens per parameter 6C/M^2 104..11, B up to ~1e8 tokens per step at 1e26).
ETA_REFUSE, ETA_WARN = (1e-9, 1.0), (1e-6, 0.1)
B_REFUSE_BELOW, B_WARN_ABOVE = 1.0, 1e9  # tokens per step
TOKENS_PER_PARAM_WARN = (1.0, 1e4)  # D / N with N ~ M/6


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

    def check(self, budgets: list[float]) -> list[str]:
        """Refuse (ValueError naming the law, its value and the budget) what no plan at these budgets can mean;
        return warnings for values far outside anything trained. Called before anything is planned."""
        warnings = []
        src = f"sweep.laws={self.source}"
        for C in budgets:
            eta, B, M = self.eta_opt(C), self.B_opt(C), self.M_opt(C)
            for name, v in (("eta_opt", eta), ("B_opt", B), ("M_opt", M)):
                if not (math.isfinite(v) and v > 0):
                    raise ValueError(f"{src}: {name}(C={C:.3g}) = {v}, not a positive number; refit or use deepseek")
            if not ETA_REFUSE[0] < eta < ETA_REFUSE[1]:
                raise ValueError(
                    f"{src}: eta_opt(C={C:.3g}) = {eta:.3g} is not a learning rate any run could use (AdamW's peak "
                    f"lies in ({ETA_REFUSE[0]:g}, {ETA_REFUSE[1]:g})); check that report.json's fit, or use "
                    f"sweep.laws=deepseek"
                )
            if B < B_REFUSE_BELOW:
                raise ValueError(f"{src}: B_opt(C={C:.3g}) = {B:.3g} tokens per step is less than one token")
            if M >= C:
                raise ValueError(
                    f"{src}: M_opt(C={C:.3g}) = {M:.3g} FLOPs per token would train less than one token at C"
                )
            if not ETA_WARN[0] <= eta <= ETA_WARN[1]:
                warnings.append(
                    f"{src}: eta_opt(C={C:.3g}) = {eta:.3g} is outside [{ETA_WARN[0]:g}, {ETA_WARN[1]:g}], the peak "
                    f"learning rates trained at any scale; the grid is centred on it anyway"
                )
            if B > B_WARN_ABOVE:
                warnings.append(
                    f"{src}: B_opt(C={C:.3g}) = {B:.3g} tokens per step is beyond any batch ever trained "
                    f"(> {B_WARN_ABOVE:.0e}); the plan lowers it to what its runs' steps allow (see the notes)"
                )
            ratio = 6 * C / M**2
            if not TOKENS_PER_PARAM_WARN[0] <= ratio <= TOKENS_PER_PARAM_WARN[1]:
                warnings.append(
                    f"{src}: M_opt(C={C:.3g}) = {M:.3g} means {ratio:.3g} tokens per parameter (6C/M^2), outside "
                    f"[{TOKENS_PER_PARAM_WARN[0]:g}, {TOKENS_PER_PARAM_WARN[1]:g}]; the grid is centred on it anyway"
                )
        return warnings

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
