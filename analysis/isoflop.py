"""IsoFLOP profiles (Chinchilla Approach 2, as DeepSeek §3.2): a parabola of loss in log10 M per budget, then
M_opt = M_base * C^a and D_opt = D_base * C^b across budgets, with a bootstrap that resamples runs within budgets.

The window rule. The parabola is the second-order Taylor expansion of the profile at its minimum. At fixed C the
profile is L = E + A'*M^-alpha + B'*M^beta, whose third/second derivative ratio at the minimum is (beta - alpha) per
e-fold of M: it is set by the exponents, not by C or the loss scale. A least-squares parabola on a window of
half-width h decades centred on the minimum therefore misplaces the vertex by about |beta - alpha| * ln(10) * h^2 / 10
decades: for a strongly skewed profile (|beta - alpha| = 0.5) that is 0.065 decades (16% in M) at h = 0.75, but
0.26 decades (a factor 1.8) over a 3-decade profile fitted whole. A narrower window cuts the bias further but costs
variance (the edge points carry the curvature), so h = 0.75 keeps a typical 1-1.5-decade grid whole and trims only
wide published profiles. Each profile is fitted on the sizes within `window` decades of its best size (lowest mean
loss), widened to the 5 sizes nearest it when fewer fall inside (a parabola with 2 spare degrees of freedom);
`window=0` fits every point (the classic rule).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis import between as bt
from analysis import resample
from analysis.isojoint import LN10, PRIOR_SD, Cells, JointModel, cell_means, shape, start
from analysis.powerlaw import PowerLaw, law_ci, linefit, percentile_ci


def _solve_parabolas(p: list[np.ndarray], rhs: np.ndarray) -> np.ndarray:
    """Normal equations of y = c0 + c1 x + c2 x^2 from the moments p[k] = sum w x^k (k <= 4) and
    rhs[..., k] = sum w x^k y (k <= 2); NaN rows where singular. One np.linalg.solve call for every resample."""
    A = np.stack([np.stack(p[i : i + 3], -1) for i in range(3)], -2)
    det = np.linalg.det(A)
    ok = np.abs(det) > 1e-9 * np.maximum(p[0], 1) ** 3
    A = np.where(ok[..., None, None], A, np.eye(3))
    c = np.linalg.solve(A, rhs[..., None])[..., 0]
    return np.where(ok[..., None], c, np.nan)


def parabolas(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Weighted quadratic fits y = c0 + c1 x + c2 x^2 along the last axis, batched; NaN rows where singular."""
    w = np.ones_like(x) if w is None else w
    p = [(w * x**k).sum(-1) for k in range(5)]
    return _solve_parabolas(p, np.stack([(w * x**k * y).sum(-1) for k in range(3)], -1))


def parabolas_from_cells(x: np.ndarray, W: np.ndarray, S: np.ndarray) -> np.ndarray:
    """The same fits from cell sums: x (cells,) sizes, W/S (R, cells) weight and weighted-loss totals."""
    X = np.stack([x**k for k in range(5)], -1)  # (cells, 5)
    p = list((W @ X).T)
    return _solve_parabolas(p, S @ X[:, :3])


def _vertex(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x*, y*) of each parabola; NaN where it does not open upwards (no minimum)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        good = c[..., 2] > 0
        xv = np.where(good, -c[..., 1] / (2 * c[..., 2]), np.nan)
    return xv, c[..., 0] + c[..., 1] * xv + c[..., 2] * xv**2


WINDOW = 0.75  # decades either side of the best size (see the module docstring)
MIN_WINDOW_SIZES = 5
ADAPTIVE_TOL = 0.05  # decades of vertex bias the adaptive window accepts from the profile's skew
ESTIMATORS = ("joint", "window", "all", "adaptive")
DEFAULT_ESTIMATOR = "joint"
# LM iterations of a resample's per-budget (free-vertex) refit: a budget whose resample is flat walks its vertex out
# along a sloppy valley; by then it is far outside its sizes, which is all its percentile interval needs to know.
FREE_ITERS = 20
JOINT_ITERS = 40  # from the first (shared-Jacobian) step, 8 iterations put the exponent within 1% of its SD
ESTIMATOR_TEXT = {
    "joint": "joint fit of every budget's profile (shared Chinchilla-form skew, minima on one power law)",
    "window": "a parabola per budget on the sizes within the fitting window of its best size, then a line",
    "all": "a parabola per budget on all its sizes, then a line",
    "adaptive": "a parabola per budget on a window set by the profile's measured skew, then a line",
}


def window_mask(logM: np.ndarray, loss: np.ndarray, window: float = WINDOW) -> np.ndarray:
    """Runs inside the fitting window: sizes within `window` decades of the size with the lowest mean loss,
    at least the MIN_WINDOW_SIZES sizes nearest it; every run when window <= 0."""
    xs = np.unique(logM)
    if window <= 0 or len(xs) <= MIN_WINDOW_SIZES:
        return np.ones(len(logM), bool)
    best = xs[np.argmin([loss[logM == x].mean() for x in xs])]
    keep = xs[np.abs(xs - best) <= window + 1e-9]
    if len(keep) < MIN_WINDOW_SIZES:
        keep = xs[np.argsort(np.abs(xs - best), kind="stable")[:MIN_WINDOW_SIZES]]
    return np.isin(logM, keep)


def adaptive_half_width(logM: np.ndarray, loss: np.ndarray) -> float:
    """The window the profile's own skew calls for: 0 (all sizes) unless a cubic on the whole profile finds a skew
    beyond twice its standard error; then the half-width h whose vertex bias 0.3*|c3/c2|*h^2 (a parabola on a
    window of a profile c2 v^2 + c3 v^3) is ADAPTIVE_TOL decades, at least 0.5."""
    xs = np.unique(logM)
    if len(xs) <= MIN_WINDOW_SIZES:
        return 0.0
    best = xs[np.argmin([loss[logM == x].mean() for x in xs])]
    v = logM - best
    X = np.stack([v**k for k in range(4)], -1)
    coef, *_ = np.linalg.lstsq(X, loss, rcond=None)
    dof = len(loss) - 4
    if dof < 1 or coef[2] <= 0:
        return 0.0
    resid = loss - X @ coef
    cov = np.linalg.pinv(X.T @ X) * float(resid @ resid) / dof
    if abs(coef[3]) <= 2 * np.sqrt(max(cov[3, 3], 0)):
        return 0.0
    h = float(np.sqrt(ADAPTIVE_TOL / (0.3 * abs(coef[3] / coef[2]))))
    return max(h, WINDOW) if h < (xs[-1] - xs[0]) / 2 else 0.0


def _point_budget(logM, C, loss, half_width: float, off_centre: float, joint: bool) -> tuple[dict, dict]:
    """One profile's point fit: the report row (warnings exclude the budget from the law; notes do not) and what
    its bootstrap needs (`inside`: runs in the window; `centre`, `half`: the unit coordinates of the sizes)."""
    xall = np.unique(logM)
    out: dict[str, Any] = {
        "C": float(np.exp(np.mean(np.log(C)))),
        "n_runs": int(len(loss)),
        "n_sizes": int(len(xall)),
        "warnings": [],
        "notes": [],
        "M_range": [float(10 ** xall[0]), float(10 ** xall[-1])],
    }
    inside = window_mask(logM, loss, half_width)
    means = np.array([loss[logM == x].mean() for x in xall])
    best_x = xall[int(np.argmin(means))]
    out["best_M"] = float(10**best_x)  # the size with the lowest (mean) loss; the vertex may differ
    edge_best = len(xall) >= 3 and best_x in (xall[0], xall[-1])
    xs = np.unique(logM[inside])
    centre, half = (xs[0] + xs[-1]) / 2, max((xs[-1] - xs[0]) / 2, 1e-12)
    out["window"] = {
        "M": [float(10 ** xs[0]), float(10 ** xs[-1])],
        "n_runs": int(inside.sum()),
        "n_sizes": int(len(xs)),
        "half_width_decades": float(half_width) if half_width > 0 else None,
    }
    fit = {"inside": inside, "centre": centre, "half": half, "ok": len(xs) >= 3}
    if len(xs) < 3:
        out["warnings"].append(f"only {len(xs)} distinct model sizes; need >= 3 for a parabola")
        return out, fit
    u = (logM[inside] - centre) / half  # unit coordinates keep the normal equations well conditioned
    xv, yv = _vertex(parabolas(u, loss[inside]))
    fit |= {"xv": float(xv), "yv": float(yv)}
    w = out["warnings"]
    vM = 10 ** (centre + half * xv) if np.isfinite(xv) else float("nan")
    # Two different failures: the best size itself is the smallest or largest (the minimum may lie beyond the grid:
    # extend it), or the best size is inside but the parabola's vertex falls outside the fitted sizes (the vertex
    # is extrapolated: a skewed or noisy profile; add sizes around it).
    side = "smallest" if best_x == xall[0] else "largest"
    edge_text = (
        f"best run at the edge of the grid: M={10**best_x:.3g} is the {side} of {len(xall)} sizes "
        f"(grid {10 ** xall[0]:.3g}..{10 ** xall[-1]:.3g}), so the minimum may lie beyond it "
        f"(vertex M={vM:.3g}); extend the grid {'below' if side == 'smallest' else 'above'} it"
    )
    if joint:  # the joint fit needs the minimum bracketed, nothing else from one budget alone
        if edge_best and not (np.isfinite(xv) and abs(xv) <= 1):
            w.append(edge_text)
        return out, fit
    if not np.isfinite(xv):
        w.append("too flat: the parabola has no minimum (curvature <= 0)")
    elif edge_best:
        w.append(edge_text)
    elif abs(xv) > 1:
        rank = int(np.searchsorted(xall, best_x)) + 1
        w.append(
            f"vertex outside the fitted sizes: the parabola's minimum M={vM:.3g} lies outside "
            f"{10 ** xs[0]:.3g}..{10 ** xs[-1]:.3g} while the best run (M={10**best_x:.3g}, size {rank} of "
            f"{len(xall)}) is inside; the vertex is extrapolated: add sizes around it or repeat runs (noise)"
        )
    elif abs(xv) > off_centre:
        w.append(
            f"off-centre: vertex is {abs(xv):.0%} of the half-width from the centre of the fitted sizes "
            f"{10 ** xs[0]:.3g}..{10 ** xs[-1]:.3g} (limit {off_centre:.0%}); "
            f"re-centre the grid on M~{10 ** (centre + half * xv):.3g}"
        )
    return out, fit


def _flat_warning(bx: np.ndarray, half: float) -> str | None:
    """A bootstrap of vertices (unit coordinates) too spread to locate the minimum, or None."""
    bad = np.mean(~np.isfinite(bx))
    if bad > 0.1:
        return f"too flat: {bad:.0%} of bootstrap parabolas have no minimum"
    lo, hi = percentile_ci(bx)
    if hi - lo > 2:  # in unit coordinates the fitted sizes span 2
        return (
            f"too flat: 95% CI of log10 M_opt spans {(hi - lo) * half:.2f} decades, wider than the fitted sizes "
            f"({2 * half:.2f})"
        )
    return None


def _finish_budget(out: dict, fit: dict, v: float | None, y: float | None, bv: np.ndarray, by: np.ndarray) -> dict:
    """Fill a budget's optimum (log10 M v, loss y) and its bootstrap samples into its report row."""
    M_opt = float(10**v) if v is not None and np.isfinite(v) else None
    out |= {
        "M_opt": M_opt,
        "D_opt": out["C"] / M_opt if M_opt else None,
        "loss_min": float(y) if M_opt and y is not None and np.isfinite(y) else None,
        "boot_logM": bv,
        "boot_loss": by,
    }
    if len(bv) and M_opt:
        out["ci95"] = {"M_opt": [10**q for q in percentile_ci(bv)], "loss_min": percentile_ci(by)}
    return out


def fit_budget(
    logM: np.ndarray,
    C: np.ndarray,
    loss: np.ndarray,
    n_boot: int,
    rng: np.random.Generator,
    off_centre: float = 2 / 3,
    window: float = WINDOW,
) -> dict:
    """One IsoFLOP profile on its own (a parabola on the window): vertex, loss_min, warnings and `boot_logM`/
    `boot_loss` (n_boot vertex samples, runs resampled with replacement within the window)."""
    out, fit = _point_budget(logM, C, loss, window, off_centre, joint=False)
    if not fit["ok"]:
        return _finish_budget(out, fit, None, None, np.full(n_boot, np.nan), np.full(n_boot, np.nan))
    u = (logM[fit["inside"]] - fit["centre"]) / fit["half"]
    L = loss[fit["inside"]]
    bx = by = np.zeros(0)
    if n_boot:
        idx = rng.integers(0, len(u), (n_boot, len(u)))
        bx, by = _vertex(parabolas(u[idx], L[idx]))
        if np.isfinite(fit["xv"]) and not out["warnings"] and (why := _flat_warning(bx, fit["half"])):
            out["warnings"].append(why)
    v = fit["centre"] + fit["half"] * fit["xv"] if np.isfinite(fit["xv"]) else None
    return _finish_budget(out, fit, v, fit["yv"], fit["centre"] + fit["half"] * bx, by)


def _law(lc: np.ndarray, b0: float, a: float, n: int) -> tuple[PowerLaw, PowerLaw]:
    """M_opt = 10^b0 * C^a and D_opt = C / M_opt."""
    M_law = PowerLaw(float(10**b0), float(a), n_points=n, n_budgets=n)
    D_law = PowerLaw(float(10**-b0), float(1 - a), n_points=n, n_budgets=n)
    return M_law, D_law


def _joint_start(k, x, Y, W, K):
    """Per-budget starting values for the joint fits: parabola vertex, minimum and curvature per e-fold^2."""
    v0, y0, c0 = np.zeros(K), np.zeros(K), np.zeros(K)
    for j in range(K):
        m = k == j
        c = parabolas(x[m], Y[m], W[m])
        xv, yv = _vertex(c)
        ok = np.isfinite(xv) and x[m].min() <= xv <= x[m].max()
        v0[j] = xv if ok else x[m][np.argmin(Y[m])]
        y0[j] = yv if ok else Y[m].min()
        c0[j] = 2 * c[2] / LN10**2 if ok else np.nan
    c0 = np.where(np.isfinite(c0), c0, np.nanmedian(c0) if np.isfinite(c0).any() else 0.01)
    return v0, y0, c0


def fit_isoflop(
    budget: np.ndarray,
    scale: np.ndarray,
    C: np.ndarray,
    loss: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    min_budgets: int = 3,
    off_centre: float = 2 / 3,
    window: float = WINDOW,
    estimator: str = DEFAULT_ESTIMATOR,
    trunk=None,
    between: bool = True,
    between_from: dict | None = None,
) -> dict:
    """IsoFLOP law on runs labelled by `budget`; `scale` is M (or 6*N1, 6*N2 for the counting conventions).

    `trunk`: each run's trunk id (None/NaN for runs trained alone): the bootstrap resamples trunks with their
    branches. `between`: add the scatter between budgets to the law's CI (analysis.between); `between_from`: take
    that scatter from another fit of the same runs (another model-scale convention) instead of measuring it, which
    spares the joint estimator its per-budget bootstrap.
    Returns {"budgets": [...], "M_opt": PowerLaw, "D_opt": PowerLaw, "boot": {...}, "estimator", "between"} or
    {"budgets", "skipped"}.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"--iso-estimator must be one of {', '.join(ESTIMATORS)}, not {estimator!r}")
    rng = np.random.default_rng(seed)
    budget, scale, C, loss = (np.asarray(a, float) for a in (budget, scale, C, loss))
    logM = np.log10(scale)
    ub, kb = np.unique(budget, return_inverse=True)
    joint = estimator == "joint"
    per, fits = [], []
    for j, b in enumerate(ub):
        m = kb == j
        h = {"window": window, "all": 0.0, "joint": 0.0}.get(estimator)
        if h is None:
            h = adaptive_half_width(logM[m], loss[m])
        out, fit = _point_budget(logM[m], C[m], loss[m], h, off_centre, joint)
        fit["rows"] = np.flatnonzero(m)[fit["inside"]]
        per.append(out | {"budget": float(b)})
        fits.append(fit)
    # Cells of (budget, size): every fit below needs only their weight and loss totals per resample.
    cells = Cells(kb, logM)
    in_fit = np.zeros(len(loss), bool)
    for f in fits:
        if f["ok"]:
            in_fit[f["rows"]] = True
    cell_in = np.zeros(cells.n, bool)
    cell_in[cells.of_run[in_fit]] = True
    u = resample.units(budget, trunk)
    res: dict = {
        "budgets": per,
        "estimator": estimator,
        "estimator_text": ESTIMATOR_TEXT[estimator],
        "resampled": f"{u.n_units} trunks and lone runs (branches of a trunk drawn together)"
        if u.clustered
        else "runs within budgets",
    }
    if joint:
        return _fit_joint(
            res, per, fits, cells, cell_in, logM, loss, budget, trunk, n_boot, rng, min_budgets, between, between_from
        )
    return _fit_two_stage(res, per, fits, cells, cell_in, loss, budget, trunk, n_boot, rng, min_budgets, between)


def _boot_sums(cells: Cells, loss, strata, trunk, n_boot, rng, label):
    """Per-chunk cell totals (W, S) of a run bootstrap that resamples trunks (or runs) within strata (budgets, or a
    budget's fitting window and the rest of it, so that every resample keeps the window's number of runs)."""
    u = resample.units(strata, trunk)
    for sl, w in resample.resamples(u, n_boot, rng, per_row=3, label=label):
        yield sl, *cells.sums(w, loss)


def _skip(res: dict, per: list[dict], min_budgets: int) -> dict | None:
    used = [r for r in per if r["used"]]
    if len(used) >= min_budgets:
        return None
    why = "; ".join(f"C={r['C']:.3g}: {', '.join(r['warnings'])}" for r in per if not r["used"])
    res["skipped"] = f"only {len(used)} usable budget(s) for the IsoFLOP law (of {len(per)}); need >= {min_budgets}" + (
        f" [excluded: {why}]" if why else ""
    )
    return res


def _fit_two_stage(res, per, fits, cells, cell_in, loss, budget, trunk, n_boot, rng, min_budgets, between) -> dict:
    """Approach 2: a parabola per budget (on its window), then a line through the vertices."""
    K = len(per)
    bx, by = np.full((n_boot, K), np.nan), np.full((n_boot, K), np.nan)
    cols = [np.flatnonzero(cell_in & (cells.k == j)) for j in range(K)]
    inside = np.zeros(len(loss), bool)
    for f in fits:
        inside[f["rows"]] = True
    strata = 2 * np.unique(budget, return_inverse=True)[1] + inside
    for sl, W, S in _boot_sums(cells, loss, strata, trunk, n_boot, rng, "IsoFLOP") if n_boot else ():
        for j, f in enumerate(fits):
            if f["ok"]:
                u = (cells.x[cols[j]] - f["centre"]) / f["half"]
                bx[sl, j], by[sl, j] = _vertex(parabolas_from_cells(u, W[:, cols[j]], S[:, cols[j]]))
    for j, (out, f) in enumerate(zip(per, fits)):
        if not f["ok"]:
            _finish_budget(out, f, None, None, bx[:, j], by[:, j])
            continue
        if n_boot and np.isfinite(f["xv"]) and not out["warnings"] and (why := _flat_warning(bx[:, j], f["half"])):
            out["warnings"].append(why)
        v = f["centre"] + f["half"] * f["xv"] if np.isfinite(f["xv"]) else None
        _finish_budget(out, f, v, f["yv"], f["centre"] + f["half"] * bx[:, j], by[:, j])
    for out in per:
        out["used"] = not out["warnings"]
    if _skip(res, per, min_budgets):
        return res
    used = [j for j, r in enumerate(per) if r["used"]]
    lc = np.log10([per[j]["C"] for j in used])
    lm = np.log10([per[j]["M_opt"] for j in used])
    b0, a = linefit(lc, lm)
    M_law, D_law = _law(lc, float(b0), float(a), len(used))
    if n_boot:
        bm = np.stack([per[j]["boot_logM"] for j in used], -1)  # (n_boot, budgets)
        ok = np.isfinite(bm)
        bb0, ba = linefit(lc, np.where(ok, bm, 0), ok.astype(float))
        X = np.stack([np.ones_like(lc), lc], -1)
        info = _between(X, lm, bm, None, between, bb0, ba, rng)
        res["between"], res["boot_between"] = bt.public(info), info
        M_law.ci95, D_law.ci95 = law_ci(bb0, ba), law_ci(-bb0, 1 - ba)
        res["boot"] = {"log_coef": bb0, "exponent": ba, "logM": bm, "logC": lc}
    _few_budgets(M_law, D_law, len(used))
    return res | {"M_opt": M_law, "D_opt": D_law}


def _between(X, y, y_boot, w, on: bool, bb0: np.ndarray, ba: np.ndarray, rng, given: dict | None = None) -> dict:
    """The scatter between budgets about the law (measured, or `given` by another fit of the same runs); with `on`,
    drawn into the law's samples (bb0, ba) in place. Returns the full info (its "_grid" serves `given`)."""
    info = bt.scatter(X, y, y_boot) if given is None else dict(given)
    if on and info["df"] >= 1 and info.get("_grid") is not None and info["K"] == len(X):
        u = bt.draw_effects(info, len(bb0), rng)
        H = bt.hat(X, w)
        bb0 += u @ H[0]
        ba += u @ H[1]
    info["added"] = bool(on)
    info["text"] = bt.describe(info, "M_opt law") if on else "M_opt law: scatter between budgets not added (off)"
    return info


def _few_budgets(M_law: PowerLaw, D_law: PowerLaw, n: int) -> None:
    if n < 3:
        for law in (M_law, D_law):
            law.warnings.append(
                f"fit from {n} budgets: the line passes through them exactly and the "
                f"CI reflects within-budget scatter only"
            )


def _fit_joint(res, per, fits, cells, cell_in, logM, loss, budget, trunk, n_boot, rng, min_budgets, between, given):
    """Every used budget's profile at once (analysis.isojoint); per-budget optima from the same shape, each free
    (bootstrapped too unless the between-budget scatter is `given`)."""
    for out in per:
        out["used"] = not out["warnings"]
    if _skip(res, per, min_budgets):
        for out, f in zip(per, fits):
            _finish_budget(out, f, None, None, np.zeros(0), np.zeros(0))
        return res
    used = np.array([j for j, r in enumerate(per) if r["used"]])
    Ku = len(used)
    remap = np.full(len(per), -1)
    remap[used] = np.arange(Ku)
    keep = cell_in & (remap[cells.k] >= 0)  # cells of the used budgets
    xc = float(np.mean(logM))
    sk, sx = remap[cells.k[keep]], cells.x[keep] - xc  # the used budgets' cells
    lc = np.log10([per[j]["C"] for j in used])
    z = lc - lc.mean()
    W1, S1 = _cell_totals(cells, loss, keep)
    Y1 = cell_means(W1, S1)
    v0, y0, c0 = _joint_start(sk, sx, Y1, W1, Ku)
    jm, fm = JointModel(sk, sx, z), JointModel(sk, sx, z, free_vertex=True)
    th = start(jm, Y1, W1, v0, y0, c0, iters=100)  # enough for the residuals; the regularised refit polishes
    # The shape prior's unit is the runs' noise, measured about the unregularised joint fit (a parabola's residuals
    # on a wide skewed profile are mostly misfit, which would let the prior overrule the shape the data show).
    r = jm.predict(th[None])[0] - Y1
    var = float((W1 * r * r).sum() / max(W1.sum() - jm.P, 1))
    jm.prior_w = fm.prior_w = var / PRIOR_SD**2
    th = jm.solve(th, W1[None], Y1[None], iters=500)[0]
    th_free = start(fm, Y1, W1, v0, y0, c0)
    jb = np.full((n_boot, jm.P), np.nan)
    fb = np.full((n_boot, fm.P), np.nan)
    for sl, W, S in _boot_sums(cells, loss, budget, trunk, n_boot, rng, "IsoFLOP joint fit") if n_boot else ():
        Wk, Yk = W[:, keep], cell_means(W[:, keep], S[:, keep])
        step = resample.chunk_size(len(sk), len(Wk), per_row=40)  # LM temporaries per cell
        for s in range(0, len(Wk), step):
            rows = slice(sl.start + s, min(sl.start + s + step, sl.stop))
            jb[rows] = jm.solve(th, Wk[s : s + step], Yk[s : s + step], iters=JOINT_ITERS)
            if given is None:
                fb[rows] = fm.solve(th_free, Wk[s : s + step], Yk[s : s + step], iters=FREE_ITERS)
    v_free, _, _, y_free, c_free = fm.split(th_free)
    bv, _, _, by, _ = fm.split(fb)
    for i, j in enumerate(used):
        out = per[j]
        _finish_budget(out, fits[j], xc + v_free[i], y_free[i], xc + bv[:, i], by[:, i])
        x_in = sx[sk == i]
        lo, hi = x_in.min(), x_in.max()
        if not lo <= v_free[i] <= hi:
            out["notes"].append(
                f"this budget's own minimum (M={10 ** (xc + v_free[i]):.3g}) lies outside its sizes; "
                f"the joint fit places it from the shape the other budgets share"
            )
        elif (
            n_boot
            and given is None
            and (why := _flat_warning((bv[:, i] - (lo + hi) / 2) / max((hi - lo) / 2, 1e-12), (hi - lo) / 2))
        ):
            out["notes"].append(why + "; kept: the joint fit weighs it by what its runs say")
        xs = np.linspace(lo, hi, 60)
        g = shape(LN10 * (xs - v_free[i]), *np.exp(th_free[:2]))[0]
        out["curve"] = {"M": (10 ** (xc + xs)).tolist(), "loss": (y_free[i] + c_free[i] * g).tolist()}
    for j, out in enumerate(per):
        if not out["used"]:
            _finish_budget(out, fits[j], None, None, np.zeros(0), np.zeros(0))
    m0, a = th[0], th[1]
    b0 = xc + m0 - a * lc.mean()  # log10 M_opt = xc + m0 + a (lc - mean lc)
    M_law, D_law = _law(lc, b0, a, Ku)
    res["shape"] = {"alpha": float(np.exp(th[2])), "beta": float(np.exp(th[3]))}
    if n_boot:
        ba = jb[:, 1].copy()
        bb0 = xc + jb[:, 0] - ba * lc.mean()
        X = np.stack([np.ones_like(lc), lc], -1)
        s2 = bt.robust_var(xc + bv) if given is None else np.asarray(given["s"], float) ** 2
        if len(s2) != Ku:  # the other fit kept other budgets: its scatter, equal weights
            s2 = np.ones(Ku)
        w = 1 / np.where(np.isfinite(s2) & (s2 > 0), s2, np.nanmax(s2) if np.isfinite(s2).any() else 1.0)
        info = _between(X, xc + v_free, xc + bv, w, between, bb0, ba, rng, given)
        res["between"], res["boot_between"] = bt.public(info), info
        M_law.ci95, D_law.ci95 = law_ci(bb0, ba), law_ci(-bb0, 1 - ba)
        res["boot"] = {"log_coef": bb0, "exponent": ba, "logM": xc + bv, "logC": lc}
    _few_budgets(M_law, D_law, Ku)
    return res | {"M_opt": M_law, "D_opt": D_law}


def _cell_totals(cells: Cells, loss, keep) -> tuple[np.ndarray, np.ndarray]:
    """(W, S) of the point fit (every run once) on the kept cells."""
    W, S = cells.sums(np.ones((1, len(loss))), loss)
    return W[0, keep], S[0, keep]
