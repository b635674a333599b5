"""Power laws y = coef * C^exponent: the one `PowerLaw` type, DeepSeek's published coefficients and the one printer.

Neutral base layer: the sweep planner (which centres grids on eta_opt/B_opt/M_opt) and the analysis (which fits and
compares against DeepSeek) both import from here, so neither depends on the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class PowerLaw:
    """y = coef * C^exponent, with its 95% bootstrap CI block when fitted (empty for published coefficients)."""

    coef: float
    exponent: float
    ci95: dict = field(default_factory=dict)  # {"coef": [lo, hi], "exponent": [lo, hi]}
    n_points: int = 0
    n_budgets: int = 0
    warnings: list = field(default_factory=list)

    def __call__(self, C: Any) -> Any:
        """The law at C: a float for a scalar C, an array for an array."""
        if np.ndim(C) == 0:  # NaN (never a complex number) for C <= 0, as for arrays
            return float(self.coef * np.float64(C) ** self.exponent)
        return self.coef * np.asarray(C, dtype=float) ** self.exponent

    def inverse(self, y: float) -> float:
        """The C at which the law predicts y."""
        return (y / self.coef) ** (1.0 / self.exponent)

    def as_dict(self) -> dict:
        return {
            "coef": self.coef,
            "exponent": self.exponent,
            "ci95": self.ci95,
            "n_points": self.n_points,
            "n_budgets": self.n_budgets,
            "warnings": list(self.warnings),
        }


# DeepSeek LLM (arXiv 2401.02954, Sec. 3): eta_opt and B_opt (tokens per step) Eq. 1, M_opt and D_opt Eq. 4.
DEEPSEEK: dict[str, PowerLaw] = {
    "eta_opt": PowerLaw(0.3118, -0.1250),
    "B_opt": PowerLaw(0.2920, 0.3271),
    "M_opt": PowerLaw(0.1715, 0.5243),
    "D_opt": PowerLaw(5.8316, 0.4757),
}


def format_law(law: PowerLaw | dict | None, digits: int = 3, ci: bool = True) -> str:
    """`0.3118 * C^-0.125   exponent 95% CI [-0.2, -0.05]`: the one way a fitted law is printed (CLI, report)."""
    if law is None:
        return "-"
    d = law.as_dict() if isinstance(law, PowerLaw) else law
    s = f"{d['coef']:.4g} * C^{d['exponent']:.{digits}f}"
    lo_hi = (d.get("ci95") or {}).get("exponent")
    if ci and lo_hi and all(v is not None and np.isfinite(v) for v in lo_hi):
        s += f"   exponent 95% CI [{lo_hi[0]:.{digits}f}, {lo_hi[1]:.{digits}f}]"
    return s
