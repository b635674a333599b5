"""Power laws y = coef * C^exponent, fitted by least squares on log10 (batched over bootstrap resamples)."""

from __future__ import annotations

import numpy as np

from scaling.base.laws import PowerLaw

__all__ = ["PowerLaw", "linefit", "fit_powerlaw", "percentile_ci", "law_ci", "band_at"]


def linefit(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares line along the last axis, batched: returns (intercept, slope), NaN where undefined.

    w = 0 masks a point (used for bootstrap resamples, band membership and dropped budgets).
    """
    x, y = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
    w = np.ones_like(x) if w is None else np.broadcast_to(np.asarray(w, float), x.shape)
    x, y = np.where(w > 0, x, 0.0), np.where(w > 0, y, 0.0)
    sw = w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = (w * x).sum(-1) / sw, (w * y).sum(-1) / sw
        dx = x - mx[..., None]
        sxx = (w * dx * dx).sum(-1)
        slope = (w * dx * (y - my[..., None])).sum(-1) / sxx
        slope = np.where(sxx > 1e-12 * np.maximum(sw, 1), slope, np.nan)
    return my - slope * mx, slope


def fit_powerlaw(C, y, w=None) -> PowerLaw:
    """y = coef * C^exponent by least squares on (log10 C, log10 y)."""
    C, y = np.asarray(C, float), np.asarray(y, float)
    if np.any(C <= 0) or np.any(y <= 0):
        raise ValueError("power-law fit needs positive C and y")
    b, m = linefit(np.log10(C), np.log10(y), w)
    return PowerLaw(float(10**b), float(m), n_points=int(len(C)))


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> list[float]:
    """Percentile interval of the finite samples ([nan, nan] if none)."""
    s = np.asarray(samples, float)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return [float("nan"), float("nan")]
    lo, hi = np.percentile(s, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def law_ci(log_coef: np.ndarray, slope: np.ndarray) -> dict:
    """ci95 block of a PowerLaw from bootstrap (log10 intercept, slope) samples. An intercept beyond float range (a
    law through 3 budgets whose scatter between them is barely measured can draw wild slopes) is an infinite bound,
    not an overflow."""
    with np.errstate(over="ignore"):
        coef = [float(np.power(10.0, v)) for v in percentile_ci(log_coef)]
    return {"coef": coef, "exponent": percentile_ci(slope)}


def band_at(C, log_coef: np.ndarray, slope: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile band of the bootstrap laws at C (for plots and extrapolation CIs)."""
    lc = np.log10(np.atleast_1d(np.asarray(C, float)))
    ok = np.isfinite(log_coef) & np.isfinite(slope)
    v = log_coef[ok, None] + slope[ok, None] * lc[None, :]
    lo, hi = np.percentile(v, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return 10**lo, 10**hi
