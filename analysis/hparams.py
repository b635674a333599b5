"""Batch size and learning rate laws (DeepSeek §3.1): per grid (one model at one budget) the near-optimal band is
every run with loss <= (1 + band) * best loss; the laws are fitted on all band points of all grids, in two forms:

- C form (DeepSeek): eta_opt = k*C^e, B_opt = k*C^e.
- MD form (Step Law, arXiv 2503.04715): eta_opt = a*N^alpha*D^beta, B_opt = c*D^gamma, with N = M/6 unless given.

Grids are never merged across models: two models trained at nearly the same C have different optima, and pooling
them into one band moves the exponents (the caller groups by model and budget, or by a `grid` column)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis import between as bt
from analysis import resample
from analysis.powerlaw import PowerLaw, law_ci, linefit, percentile_ci


@dataclass
class NDLaw:
    """y = coef * N^N_exponent * D^D_exponent (Step Law form), with 95% bootstrap CIs of each parameter."""

    coef: float
    N_exponent: float
    D_exponent: float
    ci95: dict = field(default_factory=dict)
    n_points: int = 0

    def __call__(self, N, D):
        return self.coef * np.asarray(N, float) ** self.N_exponent * np.asarray(D, float) ** self.D_exponent

    def as_dict(self) -> dict:
        return {
            "coef": self.coef,
            "N_exponent": self.N_exponent,
            "D_exponent": self.D_exponent,
            "ci95": self.ci95,
            "n_points": self.n_points,
        }


def planefit(x1: np.ndarray, x2: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least squares y = c0 + c1*x1 + c2*x2 along the last axis, batched -> (..., 3); NaN where singular."""
    X = np.stack(np.broadcast_arrays(np.ones_like(x1), x1, x2), -1)
    A = np.einsum("...ni,...n,...nj->...ij", X, w, X)
    rhs = np.einsum("...ni,...n,...n->...i", X, w, y)
    scale = np.maximum(np.abs(A).max((-1, -2)), 1e-300)
    det = np.linalg.det(A / scale[..., None, None])
    ok = np.abs(det) > 1e-10
    c = np.linalg.solve(np.where(ok[..., None, None], A, np.eye(3)), rhs[..., None])[..., 0]
    return np.where(ok[..., None], c, np.nan)


def _quad_design(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], -1)


def penalty(lr: np.ndarray, B: np.ndarray, loss: np.ndarray, lr_fit: float, B_fit: float, near: float = 0.05) -> dict:
    """Loss penalty (%) of training at (lr_fit, B_fit) instead of the grid's best run.

    The loss surface is a quadratic in (log10 lr, log10 B) fitted on the runs within `near` (5%) of the best
    loss, where a quadratic is a fair local model (the far, diverging corners of a grid are not).
    """
    x, y = np.log10(lr), np.log10(B)
    m = loss <= (1 + near) * loss.min()
    if m.sum() < 6 or len(np.unique(x[m])) < 3 or len(np.unique(y[m])) < 3:
        m = np.ones_like(m)
    if m.sum() < 6 or len(np.unique(x)) < 3 or len(np.unique(y)) < 3:
        return {"penalty_pct": None, "note": "grid too small for a quadratic loss surface (need 3 lr x 3 B)"}
    coef, *_ = np.linalg.lstsq(_quad_design(x[m], y[m]), loss[m], rcond=None)
    pred = float(_quad_design(np.log10(lr_fit), np.log10(B_fit)) @ coef)
    inside = x.min() <= np.log10(lr_fit) <= x.max() and y.min() <= np.log10(B_fit) <= y.max()
    return {
        "penalty_pct": 100 * (pred - loss.min()) / loss.min(),
        "loss_at_fit": pred,
        "note": "" if inside else "fitted point outside the grid: surface extrapolated",
    }


def _md_laws(lN, lD, llr, lB, w, n_band: int) -> dict | None:
    """Step-Law form on band points (w = band weights), batched over leading axes; None when N and D are collinear."""
    c = planefit(lN, lD, llr, w)
    b0, g = linefit(lD, lB, w)
    if c.ndim == 1:
        if not np.all(np.isfinite(c)) or not np.isfinite(g):
            return None
        return {
            "eta_opt": NDLaw(float(10 ** c[0]), float(c[1]), float(c[2]), n_points=n_band),
            "B_opt": NDLaw(float(10**b0), 0.0, float(g), n_points=n_band),
        }
    return {"eta_opt": c, "B_opt": np.stack([b0, np.zeros_like(g), g], -1)}


def _nd_ci(samples: np.ndarray) -> dict:
    return {
        "coef": [10**v for v in percentile_ci(samples[:, 0])],
        "N_exponent": percentile_ci(samples[:, 1]),
        "D_exponent": percentile_ci(samples[:, 2]),
    }


def _line_from_sums(Sw, Sx, Sxx, Sy, Sxy, x0: float) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares line from its sums (x centred at x0): (intercept at x = 0, slope); NaN if degenerate."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = Sx / Sw, Sy / Sw
        sxx = Sxx - Sw * mx * mx
        slope = np.where(sxx > 1e-12 * np.maximum(Sw, 1), (Sxy - Sw * mx * my) / sxx, np.nan)
    return my - slope * mx - slope * x0, slope


@dataclass(frozen=True)
class HparamsRuns:
    """lr x batch runs, one entry each: `group` labels its grid (one model at one budget), `budget` its nominal
    budget; C, peak lr, batch size B (tokens) and loss; N, D and M where known (None: the Step-Law MD form, which
    needs N and D varying on their own, is left out); `trunk` the trunk a branch was cut from (None/NaN for runs
    trained alone; None: no run shares one), whose branches the bootstrap draws together."""

    group: np.ndarray
    budget: np.ndarray
    C: np.ndarray
    lr: np.ndarray
    B: np.ndarray
    loss: np.ndarray
    N: np.ndarray | None = None
    D: np.ndarray | None = None
    M: np.ndarray | None = None
    trunk: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "group", np.asarray(self.group))
        for name in ("budget", "C", "lr", "B", "loss", "N", "D", "M"):
            v = getattr(self, name)
            object.__setattr__(self, name, None if v is None else np.asarray(v, float))


@dataclass(frozen=True)
class _Logs:
    """log10 of each run's C, N, D, lr and batch size: the coordinates the laws are fitted in."""

    c: np.ndarray
    N: np.ndarray
    D: np.ndarray
    lr: np.ndarray
    B: np.ndarray

    @classmethod
    def of(cls, runs: HparamsRuns) -> _Logs:
        # Without N and D, placeholders keep the shapes: D constant makes the MD plane singular, so it is not fitted.
        N = np.asarray(runs.N if runs.N is not None else runs.C / 6, float)
        D = np.asarray(runs.D if runs.D is not None else np.ones_like(runs.C), float)
        return cls(np.log10(runs.C), np.log10(N), np.log10(D), np.log10(runs.lr), np.log10(runs.B))

    def take(self, order: np.ndarray) -> _Logs:
        return _Logs(self.c[order], self.N[order], self.D[order], self.lr[order], self.B[order])


@dataclass(frozen=True)
class _Grids:
    """The runs in grid order (per-grid reductions are contiguous slices from `starts`), with the independent units
    the bootstrap draws (trunks with their branches, or runs) within grids."""

    gid: np.ndarray  # each run's grid index, sorted
    starts: np.ndarray  # first run of each grid
    loss: np.ndarray
    logs: _Logs
    in_band: np.ndarray
    units: resample.Units

    @classmethod
    def of(cls, groups: list[np.ndarray], logs: _Logs, loss: np.ndarray, in_band: np.ndarray, trunk) -> _Grids:
        gid = np.empty(len(loss), int)
        for j, g in enumerate(groups):
            gid[g] = j
        order = np.argsort(gid, kind="stable")
        gid = gid[order]
        starts = np.flatnonzero(np.r_[True, np.diff(gid) != 0])
        u = resample.units(gid, None if trunk is None else np.asarray(trunk, object)[order])
        return cls(gid, starts, loss[order], logs.take(order), in_band[order], u)

    @property
    def n_grids(self) -> int:
        return len(self.starts)

    def mean(self, v: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
        """Each grid's (weighted) mean of v."""
        w = np.ones(len(v)) if w is None else w
        return np.add.reduceat(w * v, self.starts) / np.add.reduceat(w, self.starts)


@dataclass(frozen=True)
class _Products:
    """The products of the runs' centred coordinates whose weighted sums are all a least-squares line or plane
    needs: F (runs, products), columns 1, c, c^2, lr, c lr, B, c B (c = log C), then with MD N, D, N^2, N D, D^2,
    N lr, D lr, D B; `centre` the means of log C, N, D taken out (the sums keep their precision)."""

    F: np.ndarray
    centre: dict[str, float]

    @classmethod
    def of(cls, lg: _Logs, with_md: bool) -> _Products:
        m = {k: float(np.mean(v)) for k, v in (("c", lg.c), ("N", lg.N), ("D", lg.D))}
        c, N, D = lg.c - m["c"], lg.N - m["N"], lg.D - m["D"]
        cols = [np.ones(len(c)), c, c * c, lg.lr, c * lg.lr, lg.B, c * lg.B]
        if with_md:
            cols += [N, D, N * N, N * D, D * D, N * lg.lr, D * lg.lr, D * lg.B]
        return cls(np.stack(cols, -1), m)


@dataclass
class _Samples:
    """Bootstrap samples of the laws: C form (log10 coef, exponent), each grid's band mean, MD form (or None)."""

    C: dict[str, np.ndarray]
    per_grid: dict[str, np.ndarray]
    MD: dict[str, np.ndarray] | None

    @classmethod
    def empty(cls, n_boot: int, n_grids: int, with_md: bool) -> _Samples:
        laws = ("eta_opt", "B_opt")
        C = {k: np.full((n_boot, 2), np.nan) for k in laws}
        per_grid = {k: np.full((n_boot, n_grids), np.nan) for k in laws}
        return cls(C, per_grid, {k: np.full((n_boot, 3), np.nan) for k in laws} if with_md else None)


def _bootstrap(grids: _Grids, band: float, n_boot: int, rng, with_md: bool, between: bool):
    """Resample runs (trunks) within grids in chunks, recompute each grid's band, refit on the pooled band points;
    then add the scatter between grids. -> ({law: {log_coef, exponent}}, {law: between info}, MD samples or None).

    A weighted least-squares line or plane needs only weighted sums of products of the run's coordinates, so each
    chunk's band weights meet a fixed (runs x products) table in one matrix product, whatever the number of runs."""
    P = _Products.of(grids.logs, with_md)
    s = _Samples.empty(n_boot, grids.n_grids, with_md)
    for sl, w in resample.resamples(grids.units, n_boot, rng, per_row=6, label="hparams"):
        _refit_chunk(grids, P, band, w, s, sl)
    infos = _second_level(grids, s, between, rng)
    boot = {k: {"log_coef": v[:, 0], "exponent": v[:, 1]} for k, v in s.C.items()}
    return boot, infos, s.MD


def _refit_chunk(grids: _Grids, P: _Products, band: float, w: np.ndarray, s: _Samples, sl: slice) -> None:
    """One chunk of resamples (run weights w, rows sl of the samples): each grid's band, then the laws refitted."""
    loss, starts, m = grids.loss, grids.starts, P.centre
    gmin = np.minimum.reduceat(np.where(w > 0, loss, np.inf), starts, axis=1)  # (R, G) best drawn loss per grid
    wb = w * (loss <= (1 + band) * gmin[:, grids.gid])
    S = wb @ P.F
    Sw, Sc, Scc = S[:, 0], S[:, 1], S[:, 2]
    Wg = np.add.reduceat(wb, starts, axis=1)
    for name, iy in (("eta_opt", 3), ("B_opt", 5)):
        b0, e = _line_from_sums(Sw, Sc, Scc, S[:, iy], S[:, iy + 1], m["c"])
        s.C[name][sl] = np.stack([b0, e], -1)
        with np.errstate(invalid="ignore", divide="ignore"):
            s.per_grid[name][sl] = np.add.reduceat(wb * P.F[:, iy], starts, axis=1) / Wg
    if s.MD is not None:
        A = np.stack(
            [np.stack([Sw, S[:, 7], S[:, 8]], -1), np.stack([S[:, 7], S[:, 9], S[:, 10]], -1),
             np.stack([S[:, 8], S[:, 10], S[:, 11]], -1)], -2,
        )  # fmt: skip
        ce = _solve3(A, np.stack([S[:, 3], S[:, 12], S[:, 13]], -1))
        ce[:, 0] -= ce[:, 1] * m["N"] + ce[:, 2] * m["D"]
        b0, g = _line_from_sums(Sw, S[:, 8], S[:, 11], S[:, 5], S[:, 14], m["D"])
        s.MD["eta_opt"][sl] = ce
        s.MD["B_opt"][sl] = np.stack([b0, np.zeros_like(g), g], -1)


def _second_level(grids: _Grids, s: _Samples, between: bool, rng) -> dict:
    """The scatter of each grid's optimum (the mean over its band points) about the law in the grids' C (and N, D),
    drawn into the samples in place: a pooled fit on band points weighs each grid by its number of band points,
    and so does the second level."""
    lg, G, band_w = grids.logs, grids.n_grids, grids.in_band.astype(float)
    nb = np.add.reduceat(band_w, grids.starts)
    Xc = np.stack([np.ones(G), grids.mean(lg.c)], -1)
    XN = np.stack([np.ones(G), grids.mean(lg.N), grids.mean(lg.D)], -1)
    XD = np.stack([np.ones(G), grids.mean(lg.D)], -1)
    infos = {}
    for name, v in (("eta_opt", lg.lr), ("B_opt", lg.B)):
        y = grids.mean(v, band_w)
        infos[name] = _add_between(Xc, y, s.per_grid[name], nb, s.C[name], between, rng, name)
        if s.MD is not None:
            X, cols = (XN, [0, 1, 2]) if name == "eta_opt" else (XD, [0, 2])
            sub = s.MD[name][:, cols]
            infos[name + "_MD"] = _add_between(X, y, s.per_grid[name], nb, sub, between, rng, name + " (MD form)")
            s.MD[name][:, cols] = sub
    return infos


def _solve3(A: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Batched 3x3 normal equations as planefit solves them: NaN rows where (scaled) singular."""
    scale = np.maximum(np.abs(A).max((-1, -2)), 1e-300)
    det = np.linalg.det(A / scale[..., None, None])
    ok = np.abs(det) > 1e-10
    c = np.linalg.solve(np.where(ok[..., None, None], A, np.eye(3)), rhs[..., None])[..., 0]
    return np.where(ok[..., None], c, np.nan)


def _add_between(X, y, y_boot, nb, samples, on: bool, rng, what: str) -> dict:
    """Scatter of the grids' optima y about the law beyond their run-level precision; with `on`, drawn into the law's
    samples (R, p) in place."""
    info = bt.scatter(X, y, y_boot, robust=False)  # a band mean is bounded by its grid; its IQR can be 0
    if on and info["df"] >= 1 and np.linalg.matrix_rank(X) == X.shape[1]:
        samples += bt.draw_effects(info, len(samples), rng) @ bt.hat(X, nb).T
    info["added"] = bool(on)
    info["text"] = bt.describe(info, what, "grids") if on else f"{what}: scatter between grids not added (off)"
    return bt.public(info)


def _bands(group: np.ndarray, loss: np.ndarray, band: float) -> tuple[list[np.ndarray], np.ndarray]:
    """(each grid's runs, in order of first appearance; each run's membership of its grid's near-optimal band)."""
    groups = [np.flatnonzero(group == g) for g in dict.fromkeys(group.tolist())]
    in_band = np.zeros(len(loss), bool)
    for g in groups:
        in_band[g] = loss[g] <= (1 + band) * loss[g].min()
    return groups, in_band


def fit_hparams(
    runs: HparamsRuns,
    band: float = 0.0025,
    n_boot: int = 1000,
    seed: int = 0,
    min_budgets: int = 3,
    between: bool = True,
) -> dict:
    """Laws on `runs`, one near-optimal band per grid.

    The bootstrap resamples runs within each grid (trunks with all their branches, where runs.trunk names them),
    recomputes each grid's band and refits; with `between`, the scatter of the grids' optima about the law beyond
    that run-level precision is added (analysis.between).

    Returns {"eta_opt", "B_opt": PowerLaw, "MD": {...} (when N, D vary independently), "budgets": [one per grid],
    "in_band": bool mask, "boot": ...} or {"skipped": reason, ...}.
    """
    rng = np.random.default_rng(seed)
    groups, in_band = _bands(runs.group, runs.loss, band)
    res: dict = {"band": band, "in_band": in_band, "budgets": [], "n_grids": len(groups)}
    n_budgets = len(np.unique(runs.budget))
    if n_budgets < min_budgets:
        res["skipped"] = f"only {n_budgets} budget(s) with hparams runs; need >= {min_budgets}"
        return res
    lg = _Logs.of(runs)
    w = in_band.astype(float)
    laws = {}
    for name, v in (("eta_opt", lg.lr), ("B_opt", lg.B)):
        b0, e = linefit(lg.c, v, w)
        laws[name] = PowerLaw(float(10**b0), float(e), n_points=int(in_band.sum()), n_budgets=n_budgets)
    md = _md_laws(lg.N, lg.D, lg.lr, lg.B, w, int(in_band.sum())) if np.all(np.isfinite(lg.N + lg.D)) else None
    if n_boot:
        grids = _Grids.of(groups, lg, runs.loss, in_band, runs.trunk)
        res["boot"], res["between"], bm = _bootstrap(grids, band, n_boot, rng, md is not None, between)
        for name in ("eta_opt", "B_opt"):
            laws[name].ci95 = law_ci(res["boot"][name]["log_coef"], res["boot"][name]["exponent"])
        if md is not None and bm is not None:
            for k in ("eta_opt", "B_opt"):
                md[k].ci95 = _nd_ci(bm[k])
            res["boot_MD"] = bm
    if n_budgets < 3:
        for law in laws.values():
            law.warnings.append(f"fit from {n_budgets} budgets: the CI reflects within-budget scatter only")
    if md is None:
        res["MD_skipped"] = "N and D do not vary independently across the grids: the MD form is not identifiable"
    else:
        res["MD"] = md
    res["budgets"] = [_grid_row(runs, g, lg, in_band, laws, md) for g in groups]
    return res | laws


def _grid_row(runs: HparamsRuns, g: np.ndarray, lg: _Logs, in_band: np.ndarray, laws: dict, md: dict | None) -> dict:
    """One grid's report row: its best run, the laws' eta and B at its C (and N, D) and their loss penalty."""
    lr, B, loss = runs.lr[g], runs.B[g], runs.loss[g]
    M = runs.M[g] if runs.M is not None else np.full(len(g), np.nan)
    Cg = float(np.exp(np.log(runs.C[g]).mean()))
    best = int(np.argmin(loss))
    Ms = np.unique(M[np.isfinite(M)])
    pen = penalty(lr, B, loss, float(laws["eta_opt"](Cg)), float(laws["B_opt"](Cg)))
    row = {
        "budget": float(runs.budget[g[0]]),
        "grid": str(runs.group[g[0]]),
        "C": Cg,
        "M": float(np.exp(np.log(M).mean())),
        "n_models": int(len(Ms)),
        "n_runs": int(len(g)),
        "n_band": int(in_band[g].sum()),
        "loss_min": float(loss[best]),
        "best_lr": float(lr[best]),
        "best_batch_size": float(B[best]),
        "eta_fit": float(laws["eta_opt"](Cg)),
        "B_fit": float(laws["B_opt"](Cg)),
        **pen,
    }
    row["grid_warnings"] = _grid_edges(lr, B, loss)
    if len(Ms) > 1:
        row["note"] = (
            row.get("note", "") + f" grid mixes {len(Ms)} model sizes (M {Ms[0]:.3g}..{Ms[-1]:.3g}): "
            f"its band pools different models"
        ).strip()
    if md is not None:
        Ng, Dg = float(10 ** lg.N[g].mean()), float(10 ** lg.D[g].mean())
        e_md, b_md = float(md["eta_opt"](Ng, Dg)), float(md["B_opt"](Ng, Dg))
        p_md = penalty(lr, B, loss, e_md, b_md)
        row |= {"eta_fit_MD": e_md, "B_fit_MD": b_md, "penalty_pct_MD": p_md["penalty_pct"]}
    return row


def _grid_edges(lr: np.ndarray, B: np.ndarray, loss: np.ndarray) -> list[str]:
    """Why a grid bounds eta/B instead of locating them: one value only, or its best run at an edge (published grids
    cannot be re-centred, so this is said, not refused)."""
    edges = []
    for what, v in (("lr", lr), ("batch size", B)):
        vals = np.unique(v)
        if len(vals) == 1:
            edges.append(f"a single {what} ({vals[0]:.3g})")
        elif len(vals) >= 3 and v[np.argmin(loss)] in (vals[0], vals[-1]):
            edges.append(f"best {what} at the grid's edge")
    return edges
