"""Training curves as data: `load_curves(path)` -> one DataFrame of every logged step of every run below `path`.

One row per metrics.jsonl line: `step, tokens, flops` (FLOPs so far = M * tokens, the x-axis of an IsoFLOP curve),
`loss, loss_ema, val_loss, lr, grad_norm, tokens_per_s` (NaN where a line lacks them), joined with its run's
record: every scalar key of result.json (`run_id, sweep, budget, status, M, N1, N2, params, D, C, batch_size, ...`),
the model shape (`n_layer, d_model, n_head, n_kv_head, ffn_hidden, vocab_size`) and `path`. Record keys that share
a name with a step column are prefixed `run_`: `run_lr` (the peak lr), `run_val_loss` (the final evaluation),
`run_tokens_per_s`. A run without result.json yet (still running, or killed) takes its keys from config.yaml, with
`status` "unfinished".

Pure: reads files, writes and prints nothing. Lines that cannot be read (a half-written last line, garbage) and runs
that cannot be joined are skipped and named in `df.attrs["warnings"]`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from analysis.files import find_named, read_bytes, read_text
from analysis.load import finite_or_nan
from model import ModelConfig, count_flops
from scaling.base.record import METRICS_NAME, parse_metrics
from scaling.base.safe_read import Refused

STEP_COLUMNS = ["step", "tokens", "flops", "loss", "loss_ema", "val_loss", "lr", "grad_norm", "tokens_per_s"]
MODEL_KEYS = ("n_layer", "d_model", "n_head", "n_kv_head", "ffn_hidden", "vocab_size")


def read_steps(path: Path, warnings: list[str]) -> list[dict[str, float]]:
    """The readable lines of one metrics.jsonl as dicts of floats; each unreadable line named in warnings."""
    try:
        text = read_text(path, errors="replace")
    except Refused as e:  # a FIFO would hang the read, a huge file exhaust memory: named, never read
        warnings.append(f"{e}; skipped")
        return []
    except OSError as e:
        warnings.append(f"{path}: unreadable ({type(e).__name__}: {e})")
        return []
    raw_rows, bad = parse_metrics(text)
    n_lines = len(text.splitlines())
    for n in bad:
        cut = n == n_lines and not text.endswith("\n")
        warnings.append(f"{path}:{n}: unreadable line skipped" + (" (cut off mid-write)" if cut else ""))
    for raw in raw_rows:
        if "tokens" not in raw:
            warnings.append(f"{path}: a line without `tokens` skipped (step {raw['step']})")
    return [{k: finite_or_nan(raw.get(k)) for k in STEP_COLUMNS if k != "flops"} for raw in raw_rows if "tokens" in raw]


def run_keys(run_dir: Path) -> dict[str, Any]:
    """The run-level columns: result.json's scalar keys (+ model shape), else what config.yaml says."""
    try:
        rec = json.loads(read_bytes(run_dir / "result.json"))
        if not isinstance(rec, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        return _from_config(run_dir)
    except (OSError, ValueError) as e:
        raise ValueError(f"result.json unreadable ({type(e).__name__}: {e})") from None
    out: dict[str, Any] = {k: v for k, v in rec.items() if v is None or isinstance(v, (str, int, float, bool))}
    model = rec.get("model")
    if isinstance(model, dict):
        out.update({k: model.get(k) for k in MODEL_KEYS})
    out.setdefault("run_id", run_dir.name)
    return out


def _from_config(run_dir: Path) -> dict[str, Any]:
    try:
        cfg = yaml.safe_load(read_text(run_dir / "config.yaml"))
        model = ModelConfig.from_dict(cfg["model"])
        run, train = cfg.get("run") or {}, cfg["train"]
        batch = int(train["batch_size"])
        steps = round(float(train["tokens"]) / batch)
    except FileNotFoundError:
        raise ValueError("neither result.json nor config.yaml") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError) as e:
        raise ValueError(f"config.yaml unreadable ({type(e).__name__}: {e})") from None
    M = count_flops(model).M
    return {
        "run_id": run.get("id") or run_dir.name,
        "sweep": run.get("sweep"),
        "budget": run.get("budget"),
        "status": "unfinished",
        "M": M,
        "D_planned": steps * batch,
        "C": M * steps * batch,
        "lr": finite_or_nan((cfg.get("optim") or {}).get("lr")),
        "batch_size": batch,
        "seq_len": model.seq_len,
        "steps": steps,
        "seed": cfg.get("seed"),
        **{k: getattr(model, k) for k in MODEL_KEYS},
    }


def load_curves(path: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """Every logged step of every run below path(s), joined with its run's record (see the module docstring)."""
    roots = [Path(path)] if isinstance(path, (str, Path)) else [Path(p) for p in path]
    warnings: list[str] = []
    frames = []
    for root in roots:
        if not root.exists():
            raise ValueError(f"{root} does not exist; pass a runs directory or a run directory")
        logs = find_named(root, METRICS_NAME, warnings) if root.is_dir() else [root]
        for log in logs:
            rows = read_steps(log, warnings)
            if not rows:
                continue
            try:
                keys = run_keys(log.parent)
            except ValueError as e:
                warnings.append(f"{log.parent}: skipped, {e}")
                continue
            df = pd.DataFrame(rows, columns=[c for c in STEP_COLUMNS if c != "flops"])
            renamed = {k if k not in STEP_COLUMNS else f"run_{k}": v for k, v in keys.items()}
            for k, v in renamed.items():
                df[k] = v
            df["path"] = str(log.parent)
            df["flops"] = finite_or_nan(keys.get("M")) * df["tokens"]
            frames.append(df)
    if not frames:
        raise ValueError(f"no readable metrics.jsonl under {', '.join(map(str, roots))} (written by scaling.train)")
    out = pd.concat(frames, ignore_index=True)
    first = ["run_id", "sweep", "budget", "status", *STEP_COLUMNS]
    for c in ("sweep", "budget", "status", "M"):  # records are untrusted: the columns plots group by always exist
        if c not in out:
            out[c] = None
    out = out[first + [c for c in out.columns if c not in first]]
    out.attrs["warnings"] = warnings
    return out
