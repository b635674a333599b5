"""Predictions from the fitted laws, with bootstrap intervals, and the planning answers of L(N, D).

- `loss_at(par, N, D)`: L(N, D) at any (N, D);
- `compute_optimal(par, C)`: the N and D that minimise L(N, D) at C = 6*N*D, and the loss there;
- `size_plan(par, N, C)`: for a model size N you built, the D at which N is compute-optimal, and, at a budget C,
  the D that C buys it and the D it needs to match the loss of the compute-optimal model of C (over-training);
- `loss_C_at(loss, C)`: L(C) on the IsoFLOP minima at C.

Every value comes with the 95% percentile interval of the same quantity over the fit's bootstrap resamples (each
resample refitted, the quantity recomputed on it): conditional on the law's form holding at the predicted point,
and covering only the scatter of the runs the law was fitted on. `checks` flags what that interval cannot show: a
prediction past HORIZON times the largest fitted compute, or a loss below the study's own irreducible loss.

`par` is the report's parametric section (`theta` = log A, log B, log E, alpha, beta; `boot_theta` (R, 5)).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis import losscurve
from analysis.powerlaw import percentile_ci

HORIZON = 1000.0  # x the largest fitted compute: DeepSeek's own validated reach (its laws fitted to 3e20, used at 3e23)
INTERVALS = (
    "95% percentile bootstrap intervals: runs resampled with replacement and every law refitted; conditional on the "
    "law's form holding at the predicted point, so they widen with the distance from the data but cannot show a "
    "change of form beyond it"
)


def _split(theta: np.ndarray) -> tuple[np.ndarray, ...]:
    """theta (..., 5) -> A, B, E, alpha, beta, each (..., 1) so that they broadcast against (K,) points."""
    t = np.asarray(theta, float)[..., None]
    a, b, e, al, be = (t[..., i, :] for i in range(5))
    return np.exp(a), np.exp(b), np.exp(e), al, be


def _thetas(par: dict) -> tuple[np.ndarray, np.ndarray | None]:
    boot = par.get("boot_theta")
    return np.asarray(par["theta"], float), None if boot is None else np.asarray(boot, float)


def ci95(samples: np.ndarray) -> list[float]:
    """Percentile interval that keeps infinite samples (an unreachable loss is an unbounded D, not a lost sample)."""
    s = np.asarray(samples, float)
    s = s[~np.isnan(s)]
    if s.size == 0:
        return [float("nan"), float("nan")]
    if np.isfinite(s).all():
        return percentile_ci(s)
    lo, hi = np.quantile(s, [0.025, 0.975], method="inverted_cdf")
    return [float(lo), float(hi)]


def _with_ci(fn, par: dict, *args) -> list[dict]:
    """fn(theta (..., 5), *args) -> (..., K): the point value and, when bootstrapped, the interval, per point K."""
    theta, boot = _thetas(par)
    point = fn(theta, *args)
    out: list[dict] = [{"value": float(v)} for v in point]
    if boot is not None:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            s = fn(boot, *args)  # (R, K)
        for k, o in enumerate(out):
            o["ci95"] = ci95(s[:, k])
    return out


def _loss(theta, N, D):
    A, B, E, al, be = _split(theta)
    return E + A / N**al + B / D**be


def _G(theta):
    """N_opt = G * (C/6)^a and a = beta/(alpha + beta) (Chinchilla Approach 3's closed form)."""
    A, B, _, al, be = _split(theta)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return (al * A / (be * B)) ** (1 / (al + be)), be / (al + be)


def n_opt(theta, C):
    G, a = _G(theta)
    return G * (C / 6) ** a


def _D_opt(theta, C):
    return C / (6 * n_opt(theta, C))


def _loss_opt(theta, C):
    N = n_opt(theta, C)
    return _loss(theta, N, C / (6 * N))


def _C_for_N(theta, N):
    """The budget at which N is the compute-optimal size: invert N_opt(C) = N."""
    G, a = _G(theta)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return 6 * (N / G) ** (1 / a)


def _D_for_N(theta, N):
    return _C_for_N(theta, N) / (6 * N)


def _D_to_reach(theta, N, L):
    """The D at which L(N, D) = L; +inf where N can never reach L (L <= E + A/N^alpha)."""
    A, B, E, al, be = _split(theta)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        rest = L - E - A / N**al
        return np.where(rest > 0, (B / np.where(rest > 0, rest, 1.0)) ** (1 / be), np.inf)


def _D_matched(theta, N, C):
    """The D at which N matches the loss of C's compute-optimal model (each resample its own target loss)."""
    return _D_to_reach(theta, N, _loss_opt(theta, C))


def _arr(x) -> np.ndarray:
    return np.atleast_1d(np.asarray(x, float)).ravel()


def loss_at(par: dict, N, D) -> list[dict]:
    """L(N, D) at each (N, D) pair (broadcast): [{"value", "ci95"}]."""
    N, D = np.broadcast_arrays(_arr(N), _arr(D))
    return _with_ci(_loss, par, N, D)


def compute_optimal(par: dict, C: float) -> dict:
    """The compute-optimal allocation of L(N, D) at budget C (C = 6*N*D): N, D and the loss, with intervals."""
    c = _arr(C)
    return {
        "C": float(c[0]),
        "N": _with_ci(n_opt, par, c)[0],
        "D": _with_ci(_D_opt, par, c)[0],
        "loss": _with_ci(_loss_opt, par, c)[0],
    }


def size_plan(par: dict, N: float, C: float | None = None, loss: float | None = None) -> dict:
    """For a model size N you built: the D (and C = 6*N*D) at which N is compute-optimal, the loss there; with a
    budget C, the D = C/(6N) it buys N and the loss, and the D at which N matches the loss of C's compute-optimal
    model; with a target loss, the D at which N reaches it (None in the interval: never, whatever D)."""
    n = _arr(N)
    out: dict[str, Any] = {
        "N": float(n[0]),
        "compute_optimal": {
            "C": _with_ci(_C_for_N, par, n)[0],
            "D": _with_ci(_D_for_N, par, n)[0],
            "loss": _with_ci(lambda th, x: _loss(th, x, _D_for_N(th, x)), par, n)[0],
        },
    }
    if C is not None:
        c = _arr(C)
        D = c / (6 * n)
        out["at_budget"] = {
            "C": float(c[0]),
            "D": float(D[0]),
            "loss": _with_ci(_loss, par, n, D)[0],
            "compute_optimal_loss": _with_ci(_loss_opt, par, c)[0],
            "D_loss_matched": _with_ci(_D_matched, par, n, c)[0],
        }
        m = out["at_budget"]["D_loss_matched"]
        out["at_budget"]["C_loss_matched"] = {k: _scale(v, 6 * n[0]) for k, v in m.items()}
        floor = _loss(_thetas(par)[0], n, np.array([np.inf]))[0]
        if not np.isfinite(m["value"]):
            out["at_budget"]["never"] = (
                f"N={n[0]:.3g} cannot match the compute-optimal loss at any D: its floor E + A/N^alpha = {floor:.4g}"
            )
    if loss is not None:
        out["to_reach"] = {"loss": float(loss), "D": _with_ci(_D_to_reach, par, n, np.array([float(loss)]))[0]}
    return out


def _scale(v, f: float):
    return [float(x * f) for x in v] if isinstance(v, list) else float(v * f)


def loss_C_at(loss: dict, C: float) -> dict:
    """L(C) (its chosen form) at C, with the interval of that form's bootstrap."""
    out = {"value": float(losscurve.predict(loss, C)), "form": loss["form"]}
    s = losscurve.samples(loss, C)
    if s is not None and np.isfinite(s).any():
        out["ci95"] = percentile_ci(s)
    return out


def irreducible(r: dict) -> dict | None:
    """The study's irreducible-loss estimate: E of L(N, D) when fitted, else E of a saturating L(C)."""
    par = r.get("parametric")
    if par:
        return {"value": par["E"], "ci95": (par.get("ci95") or {}).get("E"), "source": "L(N, D)"}
    loss = r.get("loss") or {}
    if "saturating" in loss:
        s = loss["saturating"]
        return {"value": s["E"], "ci95": (s.get("ci95") or {}).get("E"), "source": "L(C) = E + A*C^-alpha"}
    return None


def fitted_C_max(r: dict) -> float | None:
    """The largest compute any of the dataset's laws was fitted on (the horizon's reference)."""
    cs = [(r.get("parametric") or {}).get("C_range", [0, 0])[1], (r.get("loss") or {}).get("C_range", [0, 0])[1]]
    cs += [b["C"] for b in (r.get("isoflop") or {}).get("budgets", []) if b.get("used")]
    cs += [b["C"] for b in (r.get("hparams") or {}).get("budgets", [])]
    c = max(cs, default=0.0)
    return float(c) if c > 0 else None


def checks(r: dict, C: float, losses: dict[str, dict | None]) -> tuple[dict, list[str]]:
    """The horizon of a prediction at C, and a flag for every loss (by label) below the study's irreducible loss."""
    flags = []
    cmax = fitted_C_max(r)
    horizon = {"C_max_fitted": cmax, "ratio": None, "beyond": False}
    if cmax:
        ratio = C / cmax
        horizon |= {"ratio": ratio, "beyond": bool(ratio > HORIZON)}
        if ratio > HORIZON:
            flags.append(
                f"C={C:.3g} is {ratio:.3g}x the largest fitted compute ({cmax:.3g}), beyond the {HORIZON:g}x "
                f"DeepSeek validated: an extrapolation of the law's form, not a measured trend"
            )
    E = irreducible(r)
    if E is not None:
        for label, v in losses.items():
            if v and v.get("value") is not None and v["value"] < E["value"]:
                ci = E.get("ci95")
                flags.append(
                    f"{label} {v['value']:.4g} is below the study's irreducible loss E={E['value']:.4g}"
                    + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "")
                    + f" from {E['source']}: that loss is not reachable"
                )
    return horizon, flags
