"""python -m analysis.bench: time analysis.fit on synthetic studies, each against a naive reference measured in
the same process, so the printed ratios do not depend on the machine.

- `study`: one 1000-run study (IsoFLOP + hparams) with 1000 bootstrap resamples; target <= 20 s. Reference: the
  IsoFLOP bootstrap as a Python loop of np.polyfit per budget per resample (50 resamples, scaled).
- `published`: 15 datasets x 120 IsoFLOP runs (the size of Porian et al.'s 15 published configurations) with the
  parametric L(N, D) fit and 1000 resamples each; target <= 30 s. Reference: the parametric bootstrap the obvious
  way, one scipy L-BFGS-B refit per resample from the point fit (20 resamples, scaled).
- `memory`: `python -m analysis.fit` on a 1,000,000-row CSV (20 budgets: hparams grids of 7 x 5 (lr, batch) and
  IsoFLOP profiles of 15 sizes, every configuration run with many seeds; 0.3% IsoFLOP rows, 3,000 runs for the
  parametric fit, whose bootstrap costs ~35 s per 3,000 runs) with 1000 resamples, in
  a child process: its peak RSS (target <= 2 GB: the bootstrap works in chunks, O(rows + resamples)) and time.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.fit import analyse
from analysis.isoflop import IsoRuns, fit_isoflop
from analysis.options import FitOptions
from analysis.parametric import _minimise, fit_parametric
from analysis.synthetic import Truth, make_study, write_study


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


def naive_parametric_boot(N, D, L, theta: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """Parametric bootstrap the obvious way: one L-BFGS-B refit per resample (reference only)."""
    rng = np.random.default_rng(seed)
    logN, logD, logL = np.log(N), np.log(D), np.log(L)
    out = []
    for _ in range(n_boot):
        w = np.bincount(rng.integers(0, len(L), len(L)), minlength=len(L)).astype(float)
        out.append(_minimise(theta, logN, logD, logL, w).theta)
    return np.array(out)


def published_like(n_datasets: int = 15, budgets: int = 8, sizes: int = 15, seed: int = 0) -> pd.DataFrame:
    """IsoFLOP tables of n_datasets configurations (exponents varied around Chinchilla's), as one CSV-style table."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_datasets):
        truth = Truth(alpha=0.34 + rng.uniform(-0.05, 0.05), beta=0.37 + rng.uniform(-0.05, 0.05))
        recs = make_study(
            truth,
            np.geomspace(1e17, 1e20, budgets),
            n_sizes=sizes,
            span=0.8,
            lr_steps=0,
            bs_steps=0,
            n_diverged=0,
            n_failed=0,
            dataset=f"config{k:02d}",
            seed=seed + k,
        )
        frames.append(
            pd.DataFrame(
                {
                    "sweep": "isoflop",
                    "N": [r["M"] / 6 for r in recs],
                    "C": [r["C"] for r in recs],
                    "loss": [r["val_loss"] for r in recs],
                    "dataset": f"config{k:02d}",
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def bench_study(n_budgets: int, n_boot: int, plots: bool) -> dict:
    recs = make_study(budgets=np.geomspace(1e17, 1e20, n_budgets), n_sizes=15, n_diverged=0, n_failed=0, seed=0)
    with tempfile.TemporaryDirectory() as d:
        write_study(recs, f"{d}/runs")
        t0, c0 = time.perf_counter(), time.process_time()
        rep, _ = analyse([f"{d}/runs"], options=FitOptions(bootstrap=n_boot), plots=plots)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
    iso = [r for r in recs if r["sweep"] == "isoflop"]
    b, M, C, L = (np.array([r[k] for r in iso]) for k in ("budget", "M", "C", "val_loss"))
    t0 = time.perf_counter()
    fit_isoflop(IsoRuns(b, M, C, L), n_boot)
    vec = (time.perf_counter() - t0) / max(n_boot, 1)
    n_ref = 50
    t0 = time.perf_counter()
    naive_isoflop_boot(b, np.log10(M), C, L, n_ref)
    naive = (time.perf_counter() - t0) / n_ref
    print(
        f"study: analysis.fit on {len(recs)} runs ({rep['provenance']['n_used']} used), {n_boot} resamples: "
        f"{total:.2f} s; IsoFLOP bootstrap per resample: vectorised {vec * 1e3:.3f} ms, naive loop "
        f"{naive * 1e3:.3f} ms ({naive / vec:.0f}x)"
    )
    return {"runs": len(recs), "seconds": total, "cpu_seconds": cpu, "target": 20, "speedup": naive / vec}


def bench_published(n_datasets: int, n_boot: int) -> dict:
    df = published_like(n_datasets)
    t0, c0 = time.perf_counter(), time.process_time()
    rep, _ = analyse([df], options=FitOptions(bootstrap=n_boot), write=False, plots=False)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    one = df[df.dataset == "config00"]
    N, C, L = one.N.to_numpy(), one.C.to_numpy(), one.loss.to_numpy()
    D = C / (6 * N)
    t0 = time.perf_counter()
    p = fit_parametric(N, D, L, n_boot, seed=0)
    vec = (time.perf_counter() - t0) / max(n_boot, 1)  # point fit included: an upper bound per resample
    n_ref = 20
    t0 = time.perf_counter()
    naive_parametric_boot(N, D, L, np.array(p["theta"]), n_ref)
    naive = (time.perf_counter() - t0) / n_ref
    n_par = sum("parametric" in r for r in rep["datasets"].values())
    print(
        f"published: analysis.fit on {n_datasets} datasets x {len(one)} runs ({n_par} parametric fits), "
        f"{n_boot} resamples: {total:.2f} s; parametric bootstrap per resample: batched {vec * 1e3:.3f} ms, "
        f"L-BFGS-B per resample {naive * 1e3:.3f} ms ({naive / vec:.0f}x)"
    )
    return {"runs": len(df), "seconds": total, "cpu_seconds": cpu, "target": 30, "speedup": naive / vec}


def big_table(rows: int, seed: int = 0, iso_share: float = 0.003, budgets: int = 20) -> pd.DataFrame:
    """A CSV-style table of `rows` runs from Truth(): per budget, IsoFLOP profiles (15 sizes over +-0.6 decades
    around M_opt) and a 7 x 5 (lr, batch) grid of the M_opt model, each configuration with many seeds (0.5% noise)."""
    t = Truth()
    rng = np.random.default_rng(seed)
    Cs = np.geomspace(1e18, 1e21, budgets)
    n_iso = max(int(rows * iso_share) // (budgets * 15), 1)
    n_hp = max((rows - n_iso * budgets * 15) // (budgets * 35), 1)
    frames = []
    for C in Cs:
        M = np.repeat(t.M_opt(C) * 10 ** np.linspace(-0.6, 0.6, 15), n_iso)
        lr = np.repeat(t.eta_opt(C) * 2 ** (np.arange(7) / 2 - 1.5), 5 * n_hp)
        bs = np.tile(np.repeat(t.B_opt(C) * 2 ** (np.arange(5) / 2 - 1), n_hp), 7)
        Mh = np.full(len(lr), t.M_opt(C))
        for sweep, m, a, b in (("isoflop", M, None, None), ("hparams", Mh, lr, bs)):
            L = t.loss(m, C / m, a, b, C if a is not None else None) * (1 + 0.005 * rng.standard_normal(len(m)))
            frames.append(
                pd.DataFrame(
                    {
                        "sweep": sweep,
                        "budget": C,
                        "M": m,
                        "D": C / m,
                        "lr": a if a is not None else t.eta_opt(C),
                        "batch_size": b if b is not None else t.B_opt(C),
                        "loss": L,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True).iloc[:rows]


def bench_memory(rows: int, n_boot: int) -> dict:
    """Peak RSS and time of `python -m analysis.fit` on a `rows`-row CSV, in a child process."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "big.csv"
        big_table(rows).to_csv(path, index=False)
        cmd = [sys.executable, "-m", "analysis.fit", str(path), "--out", f"{d}/out", "--no-plots"]
        t0 = time.perf_counter()
        r = subprocess.run(cmd + ["--bootstrap", str(n_boot)], capture_output=True, text=True)
        total = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    rss_gb, cpu = ru.ru_maxrss / 2**20, ru.ru_utime + ru.ru_stime  # Linux reports KiB
    if r.returncode:
        raise SystemExit(f"analysis.fit failed: {r.stderr.strip().splitlines()[-1:]}")
    progress = [x for x in r.stderr.splitlines() if "bootstrap resamples" in x]
    print(
        f"memory: analysis.fit on {rows:,} rows, {n_boot} resamples: {total:.1f} s wall, {cpu:.1f} s CPU, "
        f"peak RSS {rss_gb:.2f} GB "
        f"({len(progress)} progress lines on stderr)"
    )
    return {"runs": rows, "seconds": total, "cpu_seconds": cpu, "target": None, "rss_gb": rss_gb, "target_gb": 2.0}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m analysis.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", choices=("study", "published", "memory", "all"), default="all")
    ap.add_argument("--rows", type=int, default=1_000_000, help="memory: rows of the table")
    ap.add_argument("--budgets", type=int, default=20, help="study: budgets, each 15 IsoFLOP + 35 hparams runs")
    ap.add_argument("--datasets", type=int, default=15, help="published: datasets of 120 IsoFLOP runs")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--plots", action="store_true", help="study: include plotting in the timing")
    a = ap.parse_args(argv)
    results = {}
    if a.case in ("study", "all"):
        results["study"] = bench_study(a.budgets, a.bootstrap, a.plots)
    if a.case in ("published", "all"):
        results["published"] = bench_published(a.datasets, a.bootstrap)
    if a.case == "memory":  # minutes: not part of "all"
        r = bench_memory(a.rows, a.bootstrap)
        print(
            f"case=memory runs={r['runs']} bootstrap={a.bootstrap} seconds={r['seconds']:.1f} "
            f"cpu_seconds={r['cpu_seconds']:.1f} "
            f"peak_rss_gb={r['rss_gb']:.2f} target_gb={r['target_gb']} ok={int(r['rss_gb'] <= r['target_gb'])}"
        )
        return
    for name, r in results.items():
        print(
            f"case={name} runs={r['runs']} bootstrap={a.bootstrap} seconds={r['seconds']:.2f} "
            f"cpu_seconds={r['cpu_seconds']:.2f} target_seconds={r['target']} speedup_vs_reference={r['speedup']:.1f} "
            f"ok={int(r['seconds'] <= r['target'])}"
        )


if __name__ == "__main__":
    main()
