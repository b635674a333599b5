"""Feasible before it spends: what a plan can find, said before anything trains (dry run or not).

Per IsoFLOP budget: can its profile bracket a vertex with this shape rule, vocabulary and sequence length? The
centring law's M_opt(C) -- and its 95% interval, when the law was fitted -- is compared with the vertices a profile
of the plan's span can centre on: the rule's smallest (largest) model bounds the profile's left (right) side, and
analysis.fit leaves a profile out when its vertex lies in the outer sixth of its sizes (off-centre), so no profile
can locate a vertex below smallest_M * 10^(span/6) (above largest_M / 10^(span/6)). sweep.extend cannot help there:
it adds sizes only where the rule has them. Such a budget gets `warning: C=<budget> cannot bracket ...` with why and
what would (a smaller smallest shape, a larger budget, more data).

Per hparams budget: a learning-rate interval wider than the grid, or B_opt(C) above the largest batch that still
leaves sweep.min_steps steps (the batch axis then cannot be extended either).

Data: the largest budget whose every run trains on at most one epoch of the corpus's training split.

Intervals of a fitted law at C are its exponent's 95% CI pivoted at the centre of the budgets it was fitted on:
conditional on the law's value there (the best-determined point of a line fit), so they understate the spread near
that centre and are honest about the extrapolation away from it. Published (DeepSeek) laws carry no interval.
"""

from __future__ import annotations

import math

from model import ModelConfig
from model.shapes import ShapeRule, largest_shape, smallest_shape
from scaling.base.laws import PowerLaw

from .extend import EDGE_FRACTION
from .laws import Laws
from .plan import Point, SweepSettings


def interval(law: PowerLaw, C: float, centre: float | None) -> tuple[float, float] | None:
    """The law's 95% interval at C (exponent CI pivoted at `centre`, see the module docstring); None without a CI."""
    e = (law.ci95 or {}).get("exponent")
    if not centre or not e or not all(v is not None and math.isfinite(v) for v in e):
        return None
    y0 = law(centre)
    ends = [y0 * (C / centre) ** x for x in e]
    return min(ends), max(ends)


def spans_zero(law: PowerLaw) -> tuple[float, float] | None:
    """The exponent's 95% CI when it contains zero (the data do not say which way the law goes), else None."""
    e = (law.ci95 or {}).get("exponent")
    if e and all(v is not None and math.isfinite(v) for v in e) and e[0] <= 0 <= e[1]:
        return float(e[0]), float(e[1])
    return None


def _iv(iv: tuple[float, float] | None) -> str:
    return f"[{iv[0]:.3g}, {iv[1]:.3g}]" if iv else ""


def isoflop_lines(C: float, pts: list[Point], laws: Laws, rule: ShapeRule, base: ModelConfig) -> list[str]:
    lo, hi = smallest_shape(rule, base), largest_shape(rule, base)
    Ms = sorted(p.shape.M for p in pts)
    span = math.log10(Ms[-1] / Ms[0])
    margin = 10 ** (span * (1 - EDGE_FRACTION) / 2)  # a vertex must lie this far inside a profile's end sizes
    reach = (lo.M * margin, hi.M / margin)
    m = laws.M_opt(C)
    iv = interval(laws.M_opt, C, laws.centre.get("M_opt"))
    said = f"M_opt(C)={m:.3g} ({laws.name('M_opt')}{', 95% interval ' + _iv(iv) if iv else ''})"
    law = laws.M_opt
    out = []
    for side, beyond, end, fix in (
        ("below", m < reach[0], lo, "a smaller smallest shape"),
        ("above", m > reach[1], hi, "a larger largest shape"),
    ):
        if not beyond:
            continue
        target = lo.M * 10 ** (span / 2) if side == "below" else hi.M / 10 ** (span / 2)
        budget = law.inverse(target) if law.exponent > 0 else None
        shape_fix = (
            f"{fix} (M <= {m / 10 ** (span / 2):.3g}: lower sweep.shape_rules.{rule.name}.min_d or min_layers, or a "
            f"shorter model.seq_len)"
            if side == "below"
            else f"{fix} (M >= {m * 10 ** (span / 2):.3g}: raise sweep.shape_rules.{rule.name}.max_d or max_layers)"
        )
        better = f" or a {'larger' if side == 'below' else 'smaller'} budget (C {'>=' if side == 'below' else '<='} "
        better = better + f"{budget:.2g})" if budget else ""
        limit = reach[0 if side == "below" else 1]
        out.append(
            f"warning: C={C:.3g} cannot bracket a vertex: {said} lies {side} M={limit:.3g}, "
            f"the {'lowest' if side == 'below' else 'highest'} vertex a {span:.2f}-decade profile can centre on under "
            f"shape rule {rule.name} (its {'smallest' if side == 'below' else 'largest'} model L{end.n_layer} "
            f"d{end.d_model} has M={end.M:.3g} at seq_len={base.seq_len}, vocab {base.vocab_size}); "
            f"{shape_fix}{better} would"
        )
    if out:
        return out
    if iv and (iv[0] < reach[0] or iv[1] > reach[1]):
        out.append(
            f"note: C={C:.3g} may not bracket a vertex: {said} reaches beyond the vertices shape rule {rule.name} "
            f"can centre a profile on ({_iv(reach)})"
        )
    elif iv and (iv[0] < Ms[0] or iv[1] > Ms[-1]):
        out.append(
            f"note: C={C:.3g}: {said} reaches beyond the profile's sizes {_iv((Ms[0], Ms[-1]))}; sweep.extend adds "
            f"sizes beyond an edge that holds the best run"
        )
    return out


def hparams_lines(C: float, pts: list[Point], laws: Laws, s: SweepSettings) -> list[str]:
    out = []
    lrs = sorted({p.lr for p in pts})
    iv = interval(laws.eta_opt, C, laws.centre.get("eta_opt"))
    if iv and (iv[0] < lrs[0] or iv[1] > lrs[-1]):
        out.append(
            f"note: C={C:.3g} may not bracket eta_opt: its 95% interval at C {_iv(iv)} ({laws.name('eta_opt')}) is "
            f"wider than the lr grid {_iv((lrs[0], lrs[-1]))}; sweep.extend adds learning rates beyond an edge "
            f"that holds the best run"
        )
    B, Bs = laws.B_opt(C), sorted({p.batch_size for p in pts})
    if B > Bs[-1] * math.sqrt(Bs[-1] / Bs[-2]):  # beyond the top batch's half step: its best run sits there
        D = pts[0].D
        out.append(
            f"warning: C={C:.3g} cannot bracket B_opt: B_opt(C)={B:.3g} ({laws.name('B_opt')}) is above "
            f"{Bs[-1]} tokens, the largest batch that leaves sweep.min_steps={s.min_steps} steps of D={D:.3g} "
            f"tokens; a larger budget or a smaller sweep.min_steps would"
        )
    return out


def _bisect(f, lo: float = 0.0, hi: float = 35.0) -> float:
    """The log10 C where the increasing function f(log10 C) crosses 0 (40 halvings)."""
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return 10**hi


def largest_clean_budget(kind: str, laws: Laws, rule: ShapeRule, base: ModelConfig, s: SweepSettings, T: int) -> float:
    """The largest C whose every run trains at most T tokens (one epoch), from the planner's rules: an IsoFLOP
    profile's smallest model is M_opt(C) / 10^(span/2) (slid into the rule's range), an hparams grid's model is
    the one nearest M_opt(C). Approximate (shapes are rounded): the plan's own epochs column is exact."""
    lo, hi = smallest_shape(rule, base).M, largest_shape(rule, base).M

    def excess(logC: float) -> float:
        C = 10**logC
        if kind == "isoflop":
            M = min(max(laws.M_opt(C) / 10 ** (s.span / 2), lo), hi / 10**s.span)
        else:
            M = min(max(laws.M_opt(C), lo), hi)
        return math.log(C / M / T)

    return _bisect(excess)


def report(
    wants: list[tuple[str, float]],
    points: list[Point],
    laws: Laws,
    rule: ShapeRule,
    base: ModelConfig,
    s: SweepSettings,
    train_tokens: int,
    dataset: str,
) -> list[str]:
    """The plan's feasibility lines: one `warning:` per budget that cannot work (why, what would), `note:` lines
    where it may not, the laws whose exponent's interval spans zero, and the corpus's largest clean budget."""
    out = []
    for name in ("eta_opt", "B_opt", "M_opt"):
        z = spans_zero(getattr(laws, name))
        if z and (name != "M_opt" or "isoflop" in dict(wants)):  # M_opt centres IsoFLOP profiles only
            out.append(
                f"warning: {name}'s exponent 95% CI [{z[0]:.3f}, {z[1]:.3f}] ({laws.name(name)}) spans zero: the data "
                f"it was fitted on do not say whether it rises or falls with C, and this plan is centred on it"
            )
    for kind, C in wants:
        pts = [p for p in points if p.sweep == kind and p.budget == C]
        if pts:
            out += isoflop_lines(C, pts, laws, rule, base) if kind == "isoflop" else hparams_lines(C, pts, laws, s)
    clean = {kind: largest_clean_budget(kind, laws, rule, base, s, train_tokens) for kind in dict(wants)}
    over = [f"{k} C={C:.3g}" for k, C in wants if C > clean[k] * 1.02]
    out.append(
        f"data: {train_tokens:,} training tokens ({dataset}): every run trains on <= 1 epoch up to C~"
        + ", ".join(f"{v:.2g} ({k})" for k, v in clean.items())
        + (f"; above it: {', '.join(over)} (more data, or smaller budgets)" if over else "")
    )
    return out
