"""What the fitted `loss` is: the metric (`--metric loss`: nats per token, `bpb`: bits per byte, DeepSeek's choice,
comparable across tokenizers) and the loss kind (validation, training, or a table's own words), for labels and
reports. A table's `loss` column states no unit, so its labels say "unit not stated" rather than guess nats/token.
"""

from __future__ import annotations

import pandas as pd

KINDS = {"validation": "validation", "training": "training"}
UNITS = {"nats/token": "nats/token", "bits/byte": "bits/byte", "as given": "unit not stated"}


def _one(values, default: str) -> list[str]:
    vals = sorted({str(v) for v in values if isinstance(v, str) and v})
    return vals or [default]


def unit(df: pd.DataFrame) -> str:
    """The unit of df's `loss` ("nats/token", "bits/byte", "unit not stated", or a mix, named)."""
    us = _one(df["unit"] if "unit" in df else [], "nats/token")
    return UNITS.get(us[0], us[0]) if len(us) == 1 else "mixed units: " + ", ".join(UNITS.get(u, u) for u in us)


def label(df: pd.DataFrame) -> str:
    """An axis label for df's `loss`: its kind in the table's own words and its unit, e.g. 'validation loss
    (nats/token)', 'validation bits per byte', 'loss (smoothed train) (unit not stated)'."""
    kinds = _one(df["loss_kind"] if "loss_kind" in df else [], "validation")
    u = unit(df)
    what = "bits per byte" if u == "bits/byte" else "loss"
    if len(kinds) > 1:
        kind = f"{what} (mixed kinds: {', '.join(kinds)})"
    elif kinds[0] in KINDS:
        kind = f"{KINDS[kinds[0]]} {what}"
    else:
        kind = f"{what} ({kinds[0]})"
    return kind if u == "bits/byte" else f"{kind} ({u})"


def metric_info(df: pd.DataFrame, metric: str) -> dict:
    """report.json `metric`: the fitted metric, its unit and the axis label, for one dataset's runs."""
    return {"name": metric, "unit": unit(df), "label": label(df)}
