"""python -m analysis.bench: time analysis.fit on a synthetic 1000-run study with 1000 bootstrap resamples.

The reference, measured in the same process: a naive IsoFLOP bootstrap (a Python loop of np.polyfit per budget
per resample) on 50 resamples, scaled to the same count, against the vectorised one."""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from analysis.fit import run_analysis
from analysis.isoflop import fit_isoflop
from analysis.synthetic import make_study, write_study


def naive_isoflop_boot(budget, logM, C, loss, n_boot: int, seed: int = 0) -> np.ndarray:
    """Exponent samples the slow obvious way (reference only)."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(budget == b) for b in np.unique(budget)]
    out = []
    for _ in range(n_boot):
        xs, ys = [], []
        for g in groups:
            i = rng.choice(g, len(g))
            c = np.polyfit(logM[i], loss[i], 2)
            if c[0] > 0:
                xs.append(np.log10(C[g]).mean())
                ys.append(-c[1] / (2 * c[0]))
        out.append(np.polyfit(xs, ys, 1)[0])
    return np.array(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m analysis.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--budgets", type=int, default=20, help="budgets; each has 15 IsoFLOP + 35 hparams runs")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--plots", action="store_true", help="include plotting in the timing")
    a = ap.parse_args(argv)
    recs = make_study(budgets=np.geomspace(1e17, 1e20, a.budgets), n_sizes=15, n_diverged=0, n_failed=0, seed=0)
    with tempfile.TemporaryDirectory() as d:
        write_study(recs, f"{d}/runs")
        t0 = time.perf_counter()
        rep = run_analysis([f"{d}/runs"], bootstrap=a.bootstrap, plots=a.plots)
        total = time.perf_counter() - t0
    iso = [r for r in recs if r["sweep"] == "isoflop"]
    b, M, C, L = (np.array([r[k] for r in iso]) for k in ("budget", "M", "C", "val_loss"))
    t0 = time.perf_counter()
    fit_isoflop(b, M, C, L, a.bootstrap)
    vec = (time.perf_counter() - t0) / max(a.bootstrap, 1)
    n_ref = 50
    t0 = time.perf_counter()
    naive_isoflop_boot(b, np.log10(M), C, L, n_ref)
    naive = (time.perf_counter() - t0) / n_ref
    print(f"analysis.fit on {len(recs)} runs ({rep['provenance']['n_used']} used), {a.bootstrap} resamples: {total:.2f} s")
    print(f"IsoFLOP bootstrap per resample: vectorised {vec * 1e3:.3f} ms, naive loop {naive * 1e3:.3f} ms "
          f"({naive / vec:.0f}x)")
    print(f"runs={len(recs)} bootstrap={a.bootstrap} seconds={total:.2f} target_seconds=20 "
          f"isoflop_speedup={naive / vec:.1f} ok={int(total <= 20)}")


if __name__ == "__main__":
    main()
