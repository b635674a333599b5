"""The joint IsoFLOP fit: every budget's profile at once, their minima constrained to one power law.

At a fixed budget C the Chinchilla form L = E + A/N^alpha + B/D^beta, with D = C/M, is, in t = ln M - ln M_opt,

    L = L_min + c * g(t),   g(t) = (beta * e^(-alpha t) + alpha * e^(beta t) - alpha - beta) / (alpha beta (alpha+beta))

(g(0) = g'(0) = 0, g''(0) = 1): a bowl whose skew (g''' = beta - alpha) is set by the exponents alone, the same at
every budget. The joint fit takes each budget's depth L_min,k and curvature c_k free, shares the shape (alpha, beta),
and puts every minimum on the line log10 M_opt,k = m0 + a * log10 C_k: it estimates the exponent a directly from all
runs, so a budget whose own minimum is poorly located (off-centre, flat) weighs what its runs say about it instead
of being kept whole or dropped, and a wide skewed profile is fitted whole without the vertex bias of a parabola.
With `free_vertex` each budget's minimum is its own parameter (shape still shared): per-budget optima, as
Approach 2 reports them.

Least squares on all runs by Levenberg-Marquardt, batched over bootstrap resamples (weights per run), on cells of
runs with the same budget and size (a cell's weighted mean loss and weight are all the objective needs).
"""

from __future__ import annotations

import numpy as np

LN10 = float(np.log(10))
SHAPE_BOUNDS = (np.log(0.02), np.log(3.0))  # ln alpha, ln beta: wider than any published exponent
VERTEX_REACH = 1.0  # decades
FLAT = 1e-7
PRIOR_EXPONENT, PRIOR_SD = 0.35, 1.0  # a weak log-normal prior on alpha, beta: 0.13..0.95 at one SD
STARTS = ((0.35, 0.35), (0.2, 0.6), (0.6, 0.2))


def shape(t: np.ndarray, al: np.ndarray, be: np.ndarray, deriv: bool = False) -> tuple[np.ndarray, ...]:
    """g(t) and, with deriv, dg/dt, dg/d(ln alpha), dg/d(ln beta); alpha, beta broadcast against t."""
    ea, eb = np.exp(-al * t), np.exp(be * t)
    s = al + be
    inv = 1 / (al * be * s)
    g = be * ea
    g += al * eb
    g -= s
    g *= inv
    if not deriv:
        return (g,)
    dg_dt = (eb - ea) / s
    # d num / d alpha = -beta t e^(-alpha t) + e^(beta t) - 1, d den / d alpha = beta (2 alpha + beta); likewise beta
    dg_da = (eb - 1 - be * t * ea - g * (be * (2 * al + be))) * (inv * al)
    dg_db = (ea - 1 + al * t * eb - g * (al * (al + 2 * be))) * (inv * be)
    return g, dg_dt, dg_da, dg_db


class Cells:
    """Runs grouped by (budget, size): each run's cell, and each cell's budget index and log10 size. A weighted
    least-squares fit of a curve in (budget, size) needs only each cell's total weight and weighted loss sum."""

    def __init__(self, k: np.ndarray, x: np.ndarray):
        uniq, of_run = np.unique(np.stack([k, x], 1), axis=0, return_inverse=True)
        self.of_run = of_run.ravel()
        self.k, self.x = uniq[:, 0].astype(int), uniq[:, 1]
        self.n = len(uniq)
        self.order = np.argsort(self.of_run, kind="stable")
        self.starts = np.flatnonzero(np.r_[True, np.diff(self.of_run[self.order]) != 0])

    def sums(self, w: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(W, S): per-cell total weight and weighted sum of y, for run weights w (R, n)."""
        wo = w[:, self.order]
        W = np.add.reduceat(wo, self.starts, axis=1)
        wo *= y[self.order]
        return W, np.add.reduceat(wo, self.starts, axis=1)


def cell_means(W: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Weighted mean loss per cell (0 where a resample drew no run of the cell: it then has weight 0)."""
    return np.where(W > 0, S / np.where(W > 0, W, 1), 0.0)


class JointModel:
    """A curve through cells k (budget index, sorted), x (centred log10 size), z (centred log10 C per budget).

    theta = [globals, then Lc locals per budget]: joint [m0, a, ln alpha, ln beta | L_min_k, c_k], free_vertex
    [ln alpha, ln beta | v_k, L_min_k, c_k]; v_k (= m0 + a z_k in the joint fit) is budget k's log10 M_opt - centre,
    c_k its curvature per e-fold^2. Each local parameter touches only its budget's cells, so the normal equations are
    solved by eliminating the locals budget by budget (a Schur complement on the few globals): the cost per
    iteration is (cells x 36) per resample, not (cells x P^2).
    """

    def __init__(self, k: np.ndarray, x: np.ndarray, z: np.ndarray, free_vertex: bool = False, noise_var: float = 0):
        self.k, self.x, self.z, self.free = np.asarray(k, int), np.asarray(x, float), np.asarray(z, float), free_vertex
        if np.any(np.diff(self.k) < 0):
            raise ValueError("cells must be sorted by budget")
        self.K = len(z)
        self.G, self.Lc = (2, 3) if free_vertex else (4, 2)
        self.P = self.G + self.Lc * self.K
        self.shape_idx = [0, 1] if free_vertex else [2, 3]
        self.starts = np.flatnonzero(np.r_[True, np.diff(self.k) != 0])
        # A free vertex stays within VERTEX_REACH decades of its budget's sizes: beyond, a resample's flat profile
        # would send it (and its curvature to 0) off for ever instead of saying "anywhere far out".
        self.v_lo = np.minimum.reduceat(self.x, self.starts) - VERTEX_REACH
        self.v_hi = np.maximum.reduceat(self.x, self.starts) + VERTEX_REACH
        # The shape prior: ln alpha, ln beta ~ N(ln PRIOR_EXPONENT, PRIOR_SD^2), as pseudo-observations in units of
        # the runs' own loss variance. Profiles too narrow to show their shape (1-1.5 decades) leave the exponents
        # near it, as a parabola would; wide ones override it.
        self.prior_w = float(noise_var) / PRIOR_SD**2

    def pack(self, glob: np.ndarray, v: np.ndarray | None, y: np.ndarray, c: np.ndarray) -> np.ndarray:
        loc = [y, c] if v is None else [v, y, c]
        return np.concatenate([glob, np.stack(loc, -1).ravel()])

    def split(self, th: np.ndarray):
        """(v, alpha, beta, L_min, c) with v, L_min, c of shape (..., K)."""
        loc = th[..., self.G :].reshape(th.shape[:-1] + (self.K, self.Lc))
        if self.free:
            la, lb = th[..., 0], th[..., 1]
            v, y, c = loc[..., 0], loc[..., 1], loc[..., 2]
        else:
            m0, a, la, lb = (th[..., i] for i in range(4))
            v = m0[..., None] + a[..., None] * self.z
            y, c = loc[..., 0], loc[..., 1]
        return v, np.exp(la), np.exp(lb), y, c

    def predict(self, th: np.ndarray, jac: bool = False):
        """(R, cells) predictions and, with jac, the Jacobian's columns as (R, cells) arrays: the global ones, and
        those of each cell's own budget's local parameters (None for a column of ones). Columns, not one stacked
        array: numpy is slow on the tiny trailing axes a stacked Jacobian would have."""
        v, al, be, y, c = self.split(th)
        k = self.k
        t = LN10 * (self.x - v[..., k])
        ck = c[..., k]
        if not jac:
            g = shape(t, al[..., None], be[..., None])[0]
            g *= ck
            g += y[..., k]
            return g
        g, dt, da, db = shape(t, al[..., None], be[..., None], deriv=True)
        pred = y[..., k] + ck * g
        dv = -LN10 * ck * dt  # d pred / d v_k
        if self.free:
            return pred, [ck * da, ck * db], [dv, None, g]
        return pred, [dv, dv * self.z[k], ck * da, ck * db], [None, g]

    def sse(self, th: np.ndarray, W: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Weighted residual sum of squares plus the shape prior's penalty."""
        r = self.predict(th) - Y
        d = th[..., self.shape_idx] - np.log(PRIOR_EXPONENT)
        return (W * r * r).sum(-1) + self.prior_w * (d * d).sum(-1)

    def clip(self, th: np.ndarray) -> np.ndarray:
        th[..., self.shape_idx] = np.clip(th[..., self.shape_idx], *SHAPE_BOUNDS)
        if self.free:
            v = th[..., self.G :: self.Lc]
            th[..., self.G :: self.Lc] = np.clip(v, self.v_lo, self.v_hi)
        return th

    def _blocks(self, th: np.ndarray, W: np.ndarray, Y: np.ndarray):
        """Normal-equation blocks of each resample at its own theta: Hgg (R,G,G), gg (R,G), Hgl (R,K,G,Lc),
        Hll (R,K,Lc,Lc), gl (R,K,Lc)."""
        pred, Jg, Jl = self.predict(th, jac=True)
        Wr = W * (pred - Y)
        R, G, Lc = len(th), self.G, self.Lc

        def red(a: np.ndarray | None, b: np.ndarray | None, w: np.ndarray = W) -> np.ndarray:
            """Per-budget sums of w * a * b (None: a column of ones): (R, K)."""
            prod = (
                w if a is None and b is None else w * (a if b is None else b) if a is None or b is None else w * a * b
            )
            return np.add.reduceat(prod, self.starts, axis=1)

        Hgg = np.empty((R, G, G))
        for i in range(G):
            for j in range(i, G):
                Hgg[:, i, j] = Hgg[:, j, i] = (W * Jg[i] * Jg[j]).sum(-1)
        gg = np.stack([(Wr * a).sum(-1) for a in Jg], -1)
        Hgl = np.stack([np.stack([red(a, b) for b in Jl], -1) for a in Jg], -2)
        Hll = np.empty((R, self.K, Lc, Lc))
        for i in range(Lc):
            for j in range(i, Lc):
                Hll[..., i, j] = Hll[..., j, i] = red(Jl[i], Jl[j])
        gl = np.stack([red(b, None, Wr) for b in Jl], -1)
        return Hgg, gg, Hgl, Hll, gl

    def _blocks_fixed(self, th1: np.ndarray, W: np.ndarray, Y: np.ndarray):
        """The same blocks for every resample at one theta th1 (P,): the Jacobian is computed once and each block
        is a matrix product of the resamples' weights with fixed per-cell columns (BLAS, one pass over W)."""
        pred, Jg, Jl = self.predict(th1[None], jac=True)
        n, G, Lc, R = len(self.k), self.G, self.Lc, len(W)
        cols = np.stack([a[0] for a in Jg] + [np.ones(n) if b is None else b[0] for b in Jl], -1)  # (n, G+Lc)
        iu, ju = np.triu_indices(G + Lc)
        fixed = np.concatenate([cols[:, iu] * cols[:, ju], cols * pred[0][:, None]], 1)
        Hgg, gg = np.zeros((R, G, G)), np.zeros((R, G))
        Hgl, Hll, gl = np.zeros((R, self.K, G, Lc)), np.zeros((R, self.K, Lc, Lc)), np.zeros((R, self.K, Lc))
        ends = np.r_[self.starts[1:], n]
        for k, (a, b) in enumerate(zip(self.starts, ends)):
            m = W[:, a:b] @ fixed[a:b]
            H = np.empty((R, G + Lc, G + Lc))
            H[:, iu, ju] = H[:, ju, iu] = m[:, : len(iu)]
            g = m[:, len(iu) :] - (W[:, a:b] * Y[:, a:b]) @ cols[a:b]
            Hgg += H[:, :G, :G]
            gg += g[:, :G]
            Hgl[:, k], Hll[:, k], gl[:, k] = H[:, :G, G:], H[:, G:, G:], g[:, G:]
        return Hgg, gg, Hgl, Hll, gl

    def step(self, th: np.ndarray, W: np.ndarray, Y: np.ndarray, lam: np.ndarray, fixed: bool = False) -> np.ndarray:
        """The damped Gauss-Newton step of each resample, by block elimination of the per-budget parameters.
        fixed: every row of th is the same point, whose Jacobian then serves all resamples (one matrix product)."""
        Hgg, gg, Hgl, Hll, gl = self._blocks_fixed(th[0], W, Y) if fixed else self._blocks(th, W, Y)
        R, G, Lc = len(th), self.G, self.Lc
        si = self.shape_idx
        Hgg[:, si, si] += self.prior_w
        gg[:, si] += self.prior_w * (th[:, si] - np.log(PRIOR_EXPONENT))
        # Marquardt damping on every diagonal element, plus a tiny ridge so that an empty budget (a resample
        # that drew none of its runs) gives a zero step rather than a singular block.
        dg = np.diagonal(Hgg, axis1=1, axis2=2)
        dl = np.diagonal(Hll, axis1=2, axis2=3)
        Hgg = Hgg + np.eye(G) * (lam[:, None, None] * dg[:, None, :] + 1e-12 * dg.mean(-1)[:, None, None] + 1e-300)
        ridge = 1e-12 * dl.mean((-1, -2))[:, None, None, None] + 1e-300
        Hll = Hll + np.eye(Lc) * (lam[:, None, None, None] * dl[..., None, :] + ridge)
        Hll_inv = np.linalg.inv(Hll)
        A = np.einsum("rkgl,rklm->rkgm", Hgl, Hll_inv)  # Hgl Hll^-1
        S = Hgg - np.einsum("rkgm,rkhm->rgh", A, Hgl)
        rhs = -gg + np.einsum("rkgm,rkm->rg", A, gl)
        d_glob = np.linalg.solve(S, rhs[..., None])[..., 0]
        d_loc = -np.einsum("rklm,rkm->rkl", Hll_inv, gl + np.einsum("rkgl,rg->rkl", Hgl, d_glob))
        return np.concatenate([d_glob, d_loc.reshape(R, -1)], -1)

    def solve(self, th0: np.ndarray, W: np.ndarray, Y: np.ndarray, iters: int = 100) -> np.ndarray:
        """Levenberg-Marquardt for each row of W, Y (R, cells) from th0 ((P,) or (R, P)); a resample leaves the
        batch once it has converged. From one th0 (a bootstrap from the point fit), the first step uses th0's
        Jacobian for every resample (a matrix product), which lands each near its own optimum."""
        R = len(W)
        th = np.array(np.broadcast_to(th0, (R, self.P)), float)
        lam = np.full(R, 1e-3)
        f = self.sse(th, W, Y)
        act = np.arange(R)
        for it in range(iters):
            if not len(act):
                break
            ta, Wa, Ya = th[act], W[act], Y[act]
            with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                step = self.step(ta, Wa, Ya, lam[act], fixed=it == 0 and np.ndim(th0) == 1)
                new = self.clip(ta + step)
                f_new = self.sse(new, Wa, Ya)
            better = np.isfinite(f_new) & (f_new < f[act])
            # Converged: an accepted step that gains < FLAT of the objective (n runs' squared residuals) leaves the
            # optimum ~sqrt(FLAT * n) of its standard error away (0.5% for 300 runs); a sloppy direction (the shape
            # on a narrow profile) would otherwise crawl for ever.
            flat = better & (f[act] - f_new <= FLAT * f[act])
            th[act] = np.where(better[:, None], new, ta)
            f[act] = np.where(better, f_new, f[act])
            lam[act] = np.where(better, lam[act] / 3, lam[act] * 4)
            done = flat | (np.abs(step).max(-1) < 1e-9) | (lam[act] > 1e10) | ~np.all(np.isfinite(step), -1)
            act = act[~done]
        return th


def start(
    model: JointModel, Y: np.ndarray, W: np.ndarray, v0: np.ndarray, y0: np.ndarray, c0: np.ndarray, iters: int = 500
):
    """The point fit from per-budget estimates (vertex v0, minimum y0, curvature c0), from each shape start at once;
    the best."""
    ths = []
    for al, be in STARTS:
        shp = [np.log(al), np.log(be)]
        if model.free:
            ths.append(model.pack(np.array(shp), v0, y0, c0))
        else:
            a, m0 = np.polyfit(model.z, v0, 1) if model.K >= 2 else (0.5, v0[0])
            ths.append(model.pack(np.array([m0, a] + shp), None, y0, c0))
    R = len(ths)
    out = model.solve(np.stack(ths), np.broadcast_to(W, (R, len(W))), np.broadcast_to(Y, (R, len(Y))), iters=iters)
    return out[int(np.nanargmin(model.sse(out, W[None], Y[None])))]
