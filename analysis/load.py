"""Load run records (result.json trees, CSVs or a DataFrame) into one DataFrame with an `excluded` reason column.

Every number is read as float64 *before* anything is derived: a CSV of integer M and D would otherwise compute
C = M*D in int64 and wrap around above 9.2e18 FLOPs.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.files import cap_for, find_named, read_bytes
from analysis.plausible import DEFAULT_LIMITS, Limits, duplicates, numbers_reason
from scaling.base.record import RESULT_NAME, RunRecord
from scaling.base.safe_read import Refused, open_regular

# CSV contract: required columns, and the optional ones we read when present.
CSV_REQUIRED = ("sweep", "loss")
CSV_OPTIONAL = (
    "C",
    "M",
    "N",
    "D",
    "N1",
    "N2",
    "lr",
    "batch_size",
    "status",
    "dataset",
    "budget",
    "grid",
    "run_id",
    "seq_len",
    "loss_kind",
    "bpb",
    "epochs",
    "seed",
    "trunk",
)
SWEEPS = ("isoflop", "hparams", "grid")
NUMERIC = [
    "budget",
    "C",
    "M",
    "N",
    "D",
    "N1",
    "N2",
    "params",
    "lr",
    "batch_size",
    "seq_len",
    "epochs",
    "loss",
    "bpb",
    "seed",
]
TEXT = ["run_id", "sweep", "grid", "trunk", "status", "dataset", "path", "loss_kind", "unit", "scale", "excluded"]
METRICS = {"loss": "nats/token", "bpb": "bits/byte"}  # --metric: what `loss` holds for the fits
COLUMNS = [
    "run_id",
    "sweep",
    "budget",
    "grid",
    "trunk",
    "C",
    "M",
    "N",
    "D",
    "N1",
    "N2",
    "params",
    "lr",
    "batch_size",
    "seq_len",
    "epochs",
    "loss",
    "bpb",
    "loss_kind",
    "unit",
    "scale",
    "status",
    "dataset",
    "path",
    "excluded",
    "seed",  # repeats of a point differ only here (sweep.seeds; analysis.seeds averages them)
]


class InputError(ValueError):
    """Bad input (one line), carrying the warnings gathered so far so that they are not lost with the error."""

    def __init__(self, msg: str, warnings: list[str] | None = None):
        super().__init__(msg)
        self.warnings = list(warnings or [])


def finite_or_nan(x) -> float:
    """A finite float or NaN; never raises (records and logs are untrusted). A JSON true/false is not a number."""
    if isinstance(x, bool | np.bool_):
        return math.nan
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def _record_row(data: dict, path: Path) -> dict:
    rec = RunRecord.from_dict(data)  # the one schema check (ValueError naming the problem)
    model = rec.model if isinstance(rec.model, dict) else {}
    return {
        "run_id": str(rec.run_id or path.parent.name),
        "sweep": rec.sweep,
        "budget": finite_or_nan(rec.budget),
        "C": finite_or_nan(rec.C),
        "M": finite_or_nan(rec.M),
        "N": math.nan,
        "D": finite_or_nan(rec.D),
        "N1": finite_or_nan(rec.N1),
        "N2": finite_or_nan(rec.N2),
        "params": finite_or_nan(rec.params),
        "lr": finite_or_nan(rec.lr),
        "batch_size": finite_or_nan(rec.batch_size),
        "seq_len": finite_or_nan(rec.seq_len if rec.seq_len is not None else model.get("seq_len")),
        "epochs": finite_or_nan(rec.epochs),  # passes over the training split (D / its tokens); > 1 repeats data
        "loss": finite_or_nan(rec.val_loss),
        "bpb": finite_or_nan(rec.val_bpb),
        "loss_kind": "validation",
        "unit": "nats/token",
        "status": str(rec.status),
        "dataset": str(rec.dataset or "unknown"),
        "seed": finite_or_nan(rec.seed),
        "path": str(path),
        # the run this one branched from (its trunk): branches of one trunk share its noise (analysis.resample)
        "trunk": data.get("trunk"),
        # scaling.train writes M, D and C as numbers: anything else there is a corrupt record, never a value to derive
        "_corrupt": "; ".join(
            f"{k}={v!r} in result.json is not a number"
            for k, v in (("M", rec.M), ("D", rec.D), ("C", rec.C))
            if v is not None and math.isnan(finite_or_nan(v))
        ),
    }


def _load_json_tree(root: Path, warnings: list[str]) -> list[dict]:
    files = find_named(root, RESULT_NAME, warnings) if root.is_dir() else [root]
    rows = []
    for f in files:
        try:
            rows.append(_record_row(RunRecord.from_dict(json.loads(read_bytes(f))).to_dict(), f))
        except Refused as e:  # a FIFO would hang the read, a huge file exhaust memory: named, never read
            warnings.append(f"skipping {e}")
        except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError) as e:  # JSONDecodeError too
            warnings.append(f"skipping corrupt {f}: {type(e).__name__}: {e}")
    return rows


def from_frame(df: pd.DataFrame, source: str, metric: str = "loss") -> pd.DataFrame:
    """A table following the CSV contract (a CSV read by pandas, or a notebook's DataFrame) -> loader columns.

    With metric "bpb" the table needs a `bpb` column (bits per byte) instead of `loss`."""
    df = df.copy()
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in ("sweep", metric) if c not in df.columns]
    has = set(df.columns)
    if "C" not in has and not ({"M", "D"} <= has or {"N", "D"} <= has):
        missing.append("C (or M and D, or N and D)")
    if missing:
        raise InputError(
            f"{source} is missing required column(s): {', '.join(missing)} "
            f"(required: sweep, {metric}, and C or M+D or N+D; optional: {', '.join(CSV_OPTIONAL[1:])})"
        )
    if df.empty:
        raise InputError(f"{source} has a header but no data rows: add one row per run")
    out = pd.DataFrame(index=df.index)
    for c in COLUMNS:
        if c in df.columns and c not in ("path", "excluded", "scale", "unit"):
            out[c] = df[c]
    out["path"] = source
    if "run_id" not in out:
        out["run_id"] = [f"{Path(source).stem}:{i}" for i in range(len(df))]
    if "status" not in out:
        out["status"] = "completed"
    if "loss_kind" not in out:
        out["loss_kind"] = "as given"
    out["unit"] = "as given"  # a table's loss column states no unit (a bpb column does: its name)
    return out


def _load_csv(path: Path, metric: str = "loss") -> pd.DataFrame:
    try:
        with os.fdopen(open_regular(path, cap_for(path)), "rb") as f:
            df = pd.read_csv(f)
    except Refused as e:
        raise InputError(f"{e}: pass a CSV file") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path} is empty: expected a header row and one row per run") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable CSV ({' '.join(str(e).split())})") from None
    return from_frame(df, str(path), metric)


def _text(s: pd.Series, default: str | None) -> pd.Series:
    """Strip strings; missing values -> default."""
    return s.astype(object).map(
        lambda v: default if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip()
    )


def _numeric(s: pd.Series) -> pd.Series:
    """Numbers of a column, NaN for anything else: True/False are not 1/0 (a loss of True is no loss)."""
    if s.dtype == bool:
        return pd.Series(np.nan, index=s.index)
    if s.dtype == object:
        s = s.mask(s.map(lambda v: isinstance(v, bool | np.bool_)))
    return pd.to_numeric(s, errors="coerce")


def _derive(df: pd.DataFrame) -> pd.DataFrame:
    """Fill M, D, C, N where the others define them, in float64: M = C/D or 6N; D = C/M; C = M*D; N = M/6."""
    for c in COLUMNS:
        if c not in df:
            df[c] = None if c in TEXT else np.nan
    num = df[NUMERIC].apply(_numeric).astype("float64")
    df[NUMERIC] = num.where(np.isfinite(num))
    # Which convention the model scale M follows: given, 6N (Chinchilla-style tables), or C/D.
    df["scale"] = np.where(
        df["M"].notna(), "M", np.where((df["C"] / df["D"]).notna(), "C/D", np.where(df["N"].notna(), "6N", ""))
    )
    # A table giving N, D and C (and no M) must satisfy C = 6*N*D, the convention N is read in: keep the mismatch.
    with np.errstate(invalid="ignore", divide="ignore"):
        df["_6nd_mismatch"] = ((df["C"] - 6 * df["N"] * df["D"]).abs() / df["C"]).where(df["M"].isna())
    df["M"] = df["M"].fillna(df["C"] / df["D"]).fillna(6 * df["N"])
    df["D"] = df["D"].fillna(df["C"] / df["M"])
    df["C"] = df["C"].fillna(df["M"] * df["D"])
    # N is the FLOPs-equivalent parameter count of the parametric fit, so that C = 6*N*D always holds.
    df["N"] = df["N"].fillna(df["M"] / 6)
    df["sweep"] = _text(df["sweep"], None)
    df["grid"] = _text(df["grid"], None)
    df["trunk"] = _text(df["trunk"], None)
    df["status"] = _text(df["status"], "completed")
    df["dataset"] = _text(df["dataset"], "unknown")
    df["loss_kind"] = _text(df["loss_kind"], "as given")
    df["unit"] = _text(df["unit"], "as given")
    df["run_id"] = df["run_id"].astype(str)
    return df


def _exclusion(r, lim: Limits, metric: str = "loss") -> str:
    if r.status != "completed":
        return f"status {r.status}"
    if r.sweep not in SWEEPS:
        return f"not part of a sweep (sweep={r.sweep!r}; expected one of {', '.join(SWEEPS)})"
    if metric == "bpb" and not math.isfinite(r.loss):
        return "no bits per byte for --metric bpb (val_bpb in result.json, column bpb in a table)"
    why = numbers_reason(r, lim)
    if why:
        return why
    if r.sweep == "hparams" and not (r.lr > 0 and r.batch_size > 0):
        return "hparams run without positive lr/batch_size"
    return ""


def _repeated_ids(df: pd.DataFrame) -> list[str]:
    """One warning when a run_id names more than one row: runs.csv, the report's run lists and --robust's
    dropped runs name runs by id, so a repeated id makes them ambiguous (the rows are still fitted)."""
    counts = df.run_id.value_counts()
    rep = counts[counts > 1]
    if rep.empty:
        return []
    return [
        f"{len(rep)} run_id(s) name more than one row, e.g. {rep.index[0]!r} ({int(rep.iloc[0])} rows): the report "
        f"and runs.csv name runs by run_id, so give each run its own id (rows are fitted as they are)"
    ]


def _load_input(p: str | Path | pd.DataFrame, k: int, metric: str, warnings: list[str]) -> pd.DataFrame:
    """One input (a DataFrame, a CSV, a result.json or a tree of them) as loader rows, not yet derived."""
    if isinstance(p, pd.DataFrame):
        return from_frame(p, f"dataframe{k}", metric)
    p = Path(p)
    if not p.exists():
        raise InputError(f"{p} does not exist")
    if p.suffix.lower() == ".csv":
        return _load_csv(p, metric)
    rows = _load_json_tree(p, warnings)
    if not rows:
        raise InputError(
            f"no readable result.json under {p} (expected <run_dir>/result.json files written by "
            f"scaling.train, or a .csv following the analysis CSV contract)",
            warnings,
        )
    return pd.DataFrame(rows)


def _mark_excluded(df: pd.DataFrame, limits: Limits, metric: str) -> None:
    """Fill `excluded` with each run's reason; a corrupt record says so unless its status already excludes it."""
    df["excluded"] = [_exclusion(r, limits, metric) for r in df.itertuples()]
    if "_corrupt" in df:
        bad = df["_corrupt"].fillna("").astype(str)
        hit = (bad != "") & ~df["excluded"].str.startswith("status ")
        df.loc[hit, "excluded"] = "corrupt record: " + bad[hit]


def _drop_duplicates(df: pd.DataFrame) -> list[str]:
    """Exclude the repeats of a usable row (one measurement counted twice narrows every CI without adding
    information); a warning when any."""
    dup = duplicates(df, df.excluded == "")
    if not (dup != "").any():
        return []
    df.loc[dup != "", "excluded"] = dup[dup != ""]
    return [
        f"{int((dup != '').sum())} duplicated row(s) dropped, e.g. {df.run_id[dup != ''].iloc[0]}: "
        f"{dup[dup != ''].iloc[0]}"
    ]


def _mismatch_6nd(df: pd.DataFrame, limits: Limits) -> list[str]:
    """A warning when usable rows give a C that is not 6*N*D (see `_derive`)."""
    off = (df.excluded == "") & (df["_6nd_mismatch"] > limits.mismatch)
    if not off.any():
        return []
    i = off.idxmax()
    return [
        f"{int(off.sum())} row(s) with C differing from 6*N*D by more than {limits.mismatch:.0%} (N is read as "
        f"C/(6D)-consistent parameters; check which N the table gives); e.g. {df.at[i, 'run_id']}: "
        f"C={df.at[i, 'C']:.4g}, 6ND={6 * df.at[i, 'N'] * df.at[i, 'D']:.4g}"
    ]


def _require_usable(df: pd.DataFrame, warnings: list[str]) -> None:
    if (df["excluded"] == "").sum() == 0:
        counts = df["excluded"].value_counts().to_dict()
        raise InputError(
            f"no completed runs usable for fitting among {len(df)} runs "
            f"({'; '.join(f'{n} x {k}' for k, n in counts.items())})",
            warnings,
        )


def load_runs(
    paths: list[str | Path | pd.DataFrame], limits: Limits = DEFAULT_LIMITS, metric: str = "loss"
) -> tuple[pd.DataFrame, list[str]]:
    """All runs below `paths` (dirs of result.json, result.json files, CSVs or DataFrames) -> (frame, warnings).

    Every run appears once; `excluded` is "" for runs the fits may use, else the reason they may not.
    metric "bpb" fits bits per byte: `loss` then holds the records' val_bpb (a table's `bpb` column), `unit` says so.
    Raises InputError (a ValueError) with a one-line message on bad input.
    """
    if metric not in METRICS:
        raise InputError(f"--metric {metric!r}: choose loss (nats/token) or bpb (bits per byte)")
    if not len(paths):
        raise InputError("no input given: pass a runs directory, a result.json or a CSV")
    warnings: list[str] = []
    frames = [_load_input(p, k, metric, warnings) for k, p in enumerate(paths)]
    df = _derive(pd.concat(frames, ignore_index=True))
    if metric == "bpb":
        df["loss"], df["unit"] = df["bpb"], METRICS["bpb"]
    _mark_excluded(df, limits, metric)
    warnings += _drop_duplicates(df)
    warnings += _repeated_ids(df)
    warnings += _mismatch_6nd(df, limits)
    _require_usable(df, warnings)
    return df[COLUMNS].reset_index(drop=True), warnings
