"""Load run records (result.json trees or a CSV) into one DataFrame with an `excluded` reason column."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

# CSV contract: required columns, and the optional ones we read when present.
CSV_REQUIRED = ("sweep", "loss")
CSV_OPTIONAL = ("C", "M", "N", "D", "N1", "N2", "lr", "batch_size", "status", "dataset", "budget", "run_id", "seq_len")
SWEEPS = ("isoflop", "hparams")
COLUMNS = ["run_id", "sweep", "budget", "C", "M", "N", "D", "N1", "N2", "params", "lr", "batch_size", "seq_len",
           "loss", "status", "dataset", "path", "excluded"]


def _num(x) -> float:
    """A finite float or NaN; never raises (records are untrusted)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def _record_row(rec: dict, path: Path) -> dict:
    if not isinstance(rec, dict):
        raise ValueError("top level is not a JSON object")
    if "status" not in rec:
        raise ValueError("missing key 'status'")
    model = rec.get("model") or {}
    return {
        "run_id": str(rec.get("run_id") or path.parent.name), "sweep": rec.get("sweep"),
        "budget": _num(rec.get("budget")), "C": _num(rec.get("C")), "M": _num(rec.get("M")),
        "N": math.nan, "D": _num(rec.get("D")), "N1": _num(rec.get("N1")), "N2": _num(rec.get("N2")),
        "params": _num(rec.get("params")), "lr": _num(rec.get("lr")), "batch_size": _num(rec.get("batch_size")),
        "seq_len": _num(rec.get("seq_len", model.get("seq_len") if isinstance(model, dict) else None)),
        "loss": _num(rec.get("val_loss")), "status": str(rec["status"]),
        "dataset": str(rec.get("dataset") or "unknown"), "path": str(path),
    }


def _load_json_tree(root: Path, warnings: list[str]) -> list[dict]:
    files = [root] if root.is_file() else sorted(root.rglob("result.json"))
    rows = []
    for f in files:
        try:
            rows.append(_record_row(json.loads(f.read_text()), f))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, AttributeError) as e:
            warnings.append(f"skipping corrupt {f}: {type(e).__name__}: {e}")
    return rows


def _load_csv(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable CSV ({e})") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in CSV_REQUIRED if c not in df.columns]
    has = set(df.columns)
    if "C" not in has and not ({"M", "D"} <= has or {"N", "D"} <= has):
        missing.append("C (or M and D, or N and D)")
    if missing:
        raise ValueError(f"{path} is missing required column(s): {', '.join(missing)} "
                         f"(required: sweep, C, loss; optional: {', '.join(CSV_OPTIONAL[1:])})")
    out = pd.DataFrame(index=df.index)
    for c in COLUMNS:
        if c in df.columns and c not in ("path", "excluded"):
            out[c] = df[c]
    out["path"] = str(path)
    if "run_id" not in out:
        out["run_id"] = [f"{path.stem}:{i}" for i in range(len(df))]
    if "status" not in out:
        out["status"] = "completed"
    return out


def _derive(df: pd.DataFrame) -> pd.DataFrame:
    """Fill M, D, C, N where the others define them: M = C/D or 6N; D = C/M; C = M*D; N = M/6."""
    for c in COLUMNS:
        if c not in df:
            df[c] = None if c in ("sweep", "status", "dataset", "run_id", "path", "excluded") else np.nan
    num = ["budget", "C", "M", "N", "D", "N1", "N2", "params", "lr", "batch_size", "seq_len", "loss"]
    df[num] = df[num].apply(pd.to_numeric, errors="coerce").where(lambda x: np.isfinite(x))
    df["M"] = df["M"].fillna(df["C"] / df["D"]).fillna(6 * df["N"])
    df["D"] = df["D"].fillna(df["C"] / df["M"])
    df["C"] = df["C"].fillna(df["M"] * df["D"])
    # N is the FLOPs-equivalent parameter count of the parametric fit, so that C = 6*N*D always holds.
    df["N"] = df["N"].fillna(df["M"] / 6)
    df["sweep"] = df["sweep"].where(df["sweep"].notna(), None).map(lambda s: None if s is None else str(s).strip())
    df["status"] = df["status"].astype(object).fillna("completed").astype(str).str.strip()
    df["dataset"] = df["dataset"].astype(object).fillna("unknown").astype(str)
    df["run_id"] = df["run_id"].astype(str)
    return df


def _exclusion(r) -> str:
    if r.status != "completed":
        return f"status {r.status}"
    if not np.isfinite(r.loss):
        return "no finite loss"
    if r.sweep not in SWEEPS:
        return f"not part of a sweep (sweep={r.sweep!r})"
    if not (np.isfinite(r.C) and r.C > 0 and np.isfinite(r.M) and r.M > 0):
        return "C or M missing or non-positive"
    if r.sweep == "hparams" and not (r.lr > 0 and r.batch_size > 0):
        return "hparams run without lr/batch_size"
    return ""


def load_runs(paths: list[str | Path]) -> tuple[pd.DataFrame, list[str]]:
    """All runs below `paths` (dirs of result.json, single result.json files, or CSVs) -> (frame, warnings).

    Every run appears once; `excluded` is "" for runs the fits may use, else the reason they may not.
    """
    if not paths:
        raise ValueError("no input given: pass a runs directory, a result.json or a CSV")
    warnings: list[str] = []
    frames = []
    for p in map(Path, paths):
        if not p.exists():
            raise ValueError(f"{p} does not exist")
        if p.suffix.lower() == ".csv":
            frames.append(_load_csv(p))
            continue
        rows = _load_json_tree(p, warnings)
        if not rows:
            raise ValueError(f"no readable result.json under {p} (expected <run_dir>/result.json files written by "
                             f"scaling.train, or a .csv following the analysis CSV contract)")
        frames.append(pd.DataFrame(rows))
    df = _derive(pd.concat(frames, ignore_index=True))
    if df.empty:
        raise ValueError(f"no runs found in {', '.join(map(str, paths))}")
    df["excluded"] = [_exclusion(r) for r in df.itertuples()]
    if (df["excluded"] == "").sum() == 0:
        counts = df["excluded"].value_counts().to_dict()
        raise ValueError(f"no completed runs usable for fitting among {len(df)} runs "
                         f"({'; '.join(f'{n} x {k}' for k, n in counts.items())})")
    return df[COLUMNS].reset_index(drop=True), warnings
