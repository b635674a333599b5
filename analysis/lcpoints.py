"""Which IsoFLOP budgets' minima L(C) may use. The M_opt law needs the *location* of each profile's minimum; L(C)
needs only its *height*, which a flat or off-centre profile still pins down (the profile is flat exactly where the
location is uncertain). So a budget left out of the M_opt law keeps its minimum in L(C) when the parabola's vertex
lies inside the sizes it was fitted on and (with a bootstrap) at least 90% of resampled parabolas have a minimum;
otherwise L(C) leaves it out too and says why.
"""

from __future__ import annotations

import numpy as np

MIN_FINITE = 0.9  # share of bootstrap parabolas that must have a minimum


def _why_not(b: dict, n_boot: int) -> str:
    """Why this budget's minimum is not well determined ("" when it is)."""
    if b.get("loss_min") is None or b.get("M_opt") is None:
        return "its parabola has no minimum"
    lo, hi = (b.get("window") or {}).get("M", b.get("M_range", [0.0, np.inf]))
    if not lo * (1 - 1e-9) <= b["M_opt"] <= hi * (1 + 1e-9):
        return f"its minimum (M={b['M_opt']:.3g}) lies outside the fitted sizes {lo:.3g}..{hi:.3g}"
    if n_boot:
        share = float(np.mean(np.isfinite(b["boot_loss"])))
        if share < MIN_FINITE:
            return f"only {share:.0%} of bootstrap parabolas have a minimum"
    return ""


def loss_points(budgets: list[dict], n_boot: int) -> tuple[list[dict], list[dict]]:
    """(budgets for L(C), each with `in_M_opt_law` and NaN M_opt when outside that law; budgets left out, with why)."""
    pts, dropped = [], []
    for b in sorted(budgets, key=lambda b: b["C"]):
        why = _why_not(b, n_boot)
        if why:
            dropped.append({"C": b["C"], "why": why, "in_M_opt_law": bool(b["used"])})
            continue
        pts.append(
            {
                "C": b["C"],
                "loss_min": b["loss_min"],
                "M_opt": b["M_opt"] if b["used"] else np.nan,  # the M_opt backtest trusts law budgets only
                "boot_loss": b.get("boot_loss"),
                "in_M_opt_law": bool(b["used"]),
            }
        )
    return pts, dropped
