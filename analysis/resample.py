"""Bootstrap resampling of independent units, in chunks of resamples.

What is independent. Branches of one trunk (runs continued from one shared training run, the `trunk` column) share
that trunk's noise, so the unit a bootstrap draws is a trunk with all its branches; a run trained alone is its own
unit. Units that live in one stratum (one budget, one hparams grid) are drawn within it, so each stratum keeps its
number of units, as the classic resample-runs-within-budgets bootstrap does; units that span strata (a trunk
branched at several budgets) are drawn together, across strata.

Memory. A resample is a vector of run weights (how often each run was drawn), and a bootstrap of R resamples of n
runs needs R x n of them. They are made and consumed `chunk_size` resamples at a time, so memory is
O(n + R * (what the fit keeps per resample)), never O(n * R).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

CHUNK_CELLS = 16_000_000  # numbers a chunk may hold at once (128 MB of float64), its fit's temporaries included
PROGRESS_AFTER_S = 10.0  # a bootstrap that runs longer than this prints a progress line to stderr


@dataclass(frozen=True)
class Units:
    """Which independent unit each run belongs to, and each unit's stratum (-1: spans strata)."""

    of_run: np.ndarray  # (n,) int: unit index of each run
    stratum: np.ndarray  # (n_units,) int: stratum of each unit, -1 where its runs span several

    @property
    def n_units(self) -> int:
        return len(self.stratum)

    @property
    def clustered(self) -> bool:
        """True when some unit holds more than one run (shared trunks)."""
        return self.n_units < len(self.of_run)


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip())


def units(strata, trunk=None) -> Units:
    """Units from each run's stratum label and its trunk id (None/NaN/"": the run is its own unit)."""
    strata = np.asarray(strata)
    n = len(strata)
    _, s_id = np.unique(strata, return_inverse=True)
    keys: list = []
    if trunk is None:
        keys = list(range(n))
    else:
        keys = [("run", i) if _is_missing(t) else ("trunk", str(t)) for i, t in enumerate(trunk)]
    index: dict = {}
    of_run = np.array([index.setdefault(k, len(index)) for k in keys], dtype=np.int64)
    stratum = np.full(len(index), -2, dtype=np.int64)
    for u, s in zip(of_run, s_id):
        stratum[u] = s if stratum[u] in (-2, s) else -1
    return Units(of_run, stratum)


def chunk_size(n_rows: int, n_boot: int, per_row: int = 1, most: int | None = None) -> int:
    """Resamples per chunk so that chunk * n_rows * per_row stays within CHUNK_CELLS (at least 1, at most `most`)."""
    step = min(n_boot, CHUNK_CELLS // max(1, n_rows * per_row), most or n_boot)
    return int(max(1, step))


def draw_counts(u: Units, R: int, rng: np.random.Generator) -> np.ndarray:
    """(R, n_units) draw counts: within each stratum, its units drawn with replacement as many times as it has.

    A few strata: one rng.integers draw each (a single stratum draws exactly what resampling runs with
    rng.integers always drew, so unclustered fits keep their intervals). Many strata (thousands of grids): one
    vectorised draw for all, unit slot j of stratum s picking first_s + floor(U * size_s), with no loop over them."""
    counts = np.zeros((R, u.n_units))
    strata = np.unique(u.stratum)
    if len(strata) <= 64:
        for s in strata:
            members = np.flatnonzero(u.stratum == s)
            k = len(members)
            pick = rng.integers(0, k, (R, k)) + (np.arange(R) * k)[:, None]  # flat index into an (R, k) table
            counts[:, members] = np.bincount(pick.ravel(), minlength=R * k).reshape(R, k)
        return counts
    order = np.argsort(u.stratum, kind="stable")
    _, first, size = np.unique(u.stratum[order], return_index=True, return_counts=True)
    slot_first = np.repeat(first, size)  # (n_units,) in stratum order
    slot_size = np.repeat(size, size)
    pick = order[slot_first + (rng.random((R, u.n_units)) * slot_size).astype(np.int64)]
    flat = pick + (np.arange(R) * u.n_units)[:, None]
    return np.bincount(flat.ravel(), minlength=R * u.n_units).reshape(R, u.n_units).astype(float)


def weights(u: Units, R: int, rng: np.random.Generator) -> np.ndarray:
    """(R, n) run weights of R resamples: each run weighs its unit's draw count."""
    return draw_counts(u, R, rng)[:, u.of_run]


class Progress:
    """A progress line on stderr for a long bootstrap: silent for the first PROGRESS_AFTER_S seconds (so short fits
    print nothing), then at most one line every 10 s."""

    def __init__(self, label: str, total: int, after_s: float = PROGRESS_AFTER_S, stream=None):
        self.label, self.total, self.after = label, total, after_s
        self.t0 = self.last = time.monotonic()
        self.stream = stream if stream is not None else sys.stderr
        self.printed = False

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.t0 < self.after or (self.printed and now - self.last < 10) or done >= self.total:
            return
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - done) / max(rate, 1e-9)
        print(
            f"analysis.fit: {self.label}: {done}/{self.total} bootstrap resamples, {now - self.t0:.0f} s, "
            f"~{eta:.0f} s left",
            file=self.stream,
            flush=True,
        )
        self.last, self.printed = now, True


def resamples(
    u: Units, n_boot: int, rng: np.random.Generator, per_row: int = 1, label: str = "", most: int | None = None
) -> Iterator[tuple[slice, np.ndarray]]:
    """(rows of the output, (r, n) weights) chunk by chunk, for n_boot resamples in all (chunks of at most `most`)."""
    step = chunk_size(len(u.of_run), n_boot, per_row, most)
    prog = Progress(label or "bootstrap", n_boot)
    for s in range(0, n_boot, step):
        r = min(step, n_boot - s)
        yield slice(s, s + r), weights(u, r, rng)
        prog.update(s + r)
