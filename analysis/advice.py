"""What to try next where a law could not be fitted: concrete changes to the sweep (or to the options), read from
the per-budget fits that failed. Pure: a dataset's report dict in, {section: [advice, ...]} out."""

from __future__ import annotations

import re


def _budget_advice(b: dict) -> list[str]:
    """One line per problem of an IsoFLOP budget left out of the law."""
    C, out = f"C={b['C']:.3g}", []
    lo, hi = b.get("M_range") or [None, None]
    for w in b.get("warnings") or []:
        if w.startswith("best run at the edge"):
            smallest = lo is not None and b.get("best_M") is not None and b["best_M"] <= lo * (1 + 1e-9)
            edge = lo if smallest else hi
            out.append(
                f"{C}: add sizes {'below' if smallest else 'above'} M={edge:.3g} (its best run is the "
                f"{'smallest' if smallest else 'largest'} size, so the minimum may be beyond the grid)"
            )
        elif w.startswith("vertex outside"):
            out.append(
                f"{C}: add sizes around the best run (M={b.get('best_M') or 0:.3g}) or repeat its neighbours with "
                f"other seeds: the profile's vertex is extrapolated past the fitted sizes"
            )
        elif w.startswith("off-centre"):
            m = re.search(r"re-centre the grid on M~(\S+)", w)
            out.append(f"{C}: re-centre the sizes on M~{m.group(1) if m else 'the vertex'} (the vertex is off-centre)")
        elif w.startswith("too flat"):
            out.append(
                f"{C}: the profile is too flat for its noise: widen the sizes to about a decade around the best "
                f"run, or repeat runs with other seeds"
            )
        elif w.startswith("only") and "distinct model sizes" in w:
            out.append(f"{C}: train >= 5 sizes spanning about a decade (it has {b.get('n_sizes', '?')})")
        else:
            out.append(f"{C}: {w}")
    return out


def next_steps(r: dict, min_budgets: int = 3) -> dict[str, list[str]]:
    """{section: advice lines} for every law of the dataset report `r` that was not fitted."""
    skipped = r.get("skipped") or {}
    out: dict[str, list[str]] = {}
    if "hparams" in skipped:
        m = re.match(r"only (\d+) budget", skipped["hparams"])
        have = int(m.group(1)) if m else None
        out["hparams"] = [
            (
                f"train lr x batch grids at {min_budgets - have} more compute budget(s) (the law needs >= "
                f"{min_budgets} budgets, has {have}); `--min-budgets 2` fits from 2, with CIs that reflect "
                f"within-budget scatter only"
                if have is not None and have < min_budgets
                else "see the reason above"
            )
        ]
    if "isoflop" in skipped:
        budgets = r.get("isoflop_budgets") or []
        used = sum(bool(b.get("used")) for b in budgets)
        lines = [a for b in budgets if not b.get("used") for a in _budget_advice(b)]
        need = max(min_budgets - used, 0)
        lines.append(
            f"the law needs >= {min_budgets} usable budgets and has {used}: fix {need} of the budgets above, or "
            f"add {need} new budget(s) with >= 5 sizes around the expected M_opt"
            if need
            else "see the reason above"
        )
        out["isoflop"] = lines
    if "loss" in skipped:
        m = re.match(r"only (\d+) budget minima; need >= (\d+)", skipped["loss"])
        out["loss"] = [
            (
                f"L(C) rests on every budget whose minimum is well determined (its vertex inside the fitted sizes), "
                f"in the M_opt law or not: it needs >= {m.group(2)} such budgets and has {m.group(1)}; the IsoFLOP "
                f"steps above that pin down a budget's vertex give it one each"
            )
            if m
            else "see the reason above"
        ]
    if "parametric" in skipped:
        why = skipped["parametric"]
        if why.startswith("only"):
            tip = "add isoflop or grid runs: the five-parameter fit needs more runs than parameters, with room to spare"
        else:
            tip = (
                "the runs do not separate the N and D terms: add runs that vary N at fixed D and D at fixed N (a "
                "grid), or constrain the fit (--tie-exponents, --fix-E)"
            )
        out["parametric"] = [tip]
    return out
