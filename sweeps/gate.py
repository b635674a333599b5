"""Between a study's stages: which laws the next stage is centred on, and why (what scaling.study prints).

A fitted law centres the next stage when its exponent's 95% interval is usable: present and not spanning zero.
Otherwise the next stage is centred on the prior, named -- the laws the study started from (its sweep.laws,
DeepSeek's by default): the prior's exponent drawn through the fitted law's value at the centre of the budgets it
was fitted on (the data fix the level there, not the slope), or the prior law itself when nothing was fitted. A
stage is never centred on a law whose exponent's interval spans zero without a warning saying so.

The result is written as a report.json-shaped file (sections hparams/isoflop, each law {coef, exponent, ci95,
source, centre_C}) that `sweep.laws=` reads (sweeps.laws).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from scaling.base.atomic import write_atomic
from scaling.base.laws import PowerLaw

from .feasible import spans_zero
from .laws import Laws, fitted_centre

CENTRING_NAME = "centring.json"


def _law(fit: dict) -> PowerLaw:
    return PowerLaw(float(fit["coef"]), float(fit["exponent"]), ci95=dict(fit.get("ci95") or {}))


def choose(report: dict, stage: str = "stage 1", prior: Laws | None = None) -> tuple[dict, list[str]]:
    """({section: {law: {...}}} to centre the next stage on, lines for the console: one per law, `warning:` where
    the prior replaces a fitted law). `prior`: the laws the study started from (its sweep.laws; DeepSeek's)."""
    prior = prior or Laws.deepseek()
    out: dict[str, dict] = {"hparams": {}, "isoflop": {}}
    lines = []
    for section, names in (("hparams", ("eta_opt", "B_opt")), ("isoflop", ("M_opt",))):
        sec = report.get(section) or {}
        centre = fitted_centre(sec)
        for name in names:
            law0, fit = getattr(prior, name), sec.get(name)
            named = _prior_name(prior, name)
            if fit is None:
                why = (report.get("skipped") or {}).get(section) or (report.get("not_applicable") or {}).get(section)
                out[section][name] = {
                    "coef": law0.coef,
                    "exponent": law0.exponent,
                    "source": f"prior: {named} ({stage} fitted none)",
                }
                lines.append(
                    f"{name}: the prior, {named} {law0.coef:.4g} * C^{law0.exponent:.4f}: {stage} fitted none"
                    + (f" ({why})" if why else "")
                )
                continue
            law = _law(fit)
            e = list((law.ci95 or {}).get("exponent") or [])
            z = spans_zero(law)
            if len(e) == 2 and z is None and all(v is not None and math.isfinite(v) for v in e):
                out[section][name] = {
                    "coef": law.coef,
                    "exponent": law.exponent,
                    "ci95": law.ci95,
                    "source": f"fitted on {stage}",
                    **({"centre_C": centre} if centre else {}),
                }
                lines.append(
                    f"{name}: fitted on {stage}, exponent {law.exponent:.3f} (95% CI [{e[0]:.3f}, {e[1]:.3f}])"
                )
                continue
            why = f"its exponent's 95% CI [{z[0]:.3f}, {z[1]:.3f}] spans zero" if z else "it has no interval"
            anchor = centre or 1.0
            coef = law(anchor) / anchor**law0.exponent if centre else law0.coef
            source = (
                f"prior: {named} exponent {law0.exponent:.4f} through {stage}'s {name} at C={centre:.3g}"
                if centre
                else f"prior: {named}"
            )
            out[section][name] = {"coef": coef, "exponent": law0.exponent, "source": source}
            lines.append(
                f"warning: {name} fitted on {stage} ({law.coef:.4g} * C^{law.exponent:.3f}) is not used to centre "
                f"the next stage: {why}; centred on the {source}"
            )
    return out, lines


def _prior_name(prior: Laws, name: str) -> str:
    src = prior.name(name)
    return "DeepSeek's" if src in ("deepseek", "DeepSeek's") else f"the study's sweep.laws ({src})"


def write(report_path: Path, stage: str = "stage 1", prior: Laws | None = None) -> tuple[Path, list[str]]:
    """The centring file next to `report_path` (a report.json of analysis.fit), and the console lines."""
    laws, lines = choose(json.loads(Path(report_path).read_text()), stage, prior)
    path = Path(report_path).parent / CENTRING_NAME
    write_atomic(path, json.dumps(laws, indent=1))
    return path, lines
