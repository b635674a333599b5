"""The plan as a table on stdout and as plan.csv in the sweep dir."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from scaling.base.atomic import write_atomic
from scaling.base.cli import fmt_seconds

from .plan import Point


def rows(points: list[Point], est: list[tuple[float, bool]], state: list[str]) -> list[dict[str, Any]]:
    return [
        p.row() | {"est_seconds": round(sec, 3), "est_measured": measured, "state": st}
        for p, (sec, measured), st in zip(points, est, state)
    ]


def write_csv(path: Path, table: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(table[0]))
    w.writeheader()
    w.writerows(table)
    write_atomic(path, buf.getvalue())


def format_table(table: list[dict[str, Any]]) -> str:
    head = ["run_id", "shape (L/d/h/kv)", "N2", "M", "D", "C", "lr", "batch", "steps", "epochs", "est", ""]
    body = [
        [
            r["run_id"],
            f"{r['n_layer']}/{r['d_model']}/{r['n_head']}/{r['n_kv_head']}",
            f"{r['N2']:.3g}",
            f"{r['M']:.3g}",
            f"{r['D']:.3g}",
            f"{r['C']:.4g}",
            f"{r['lr']:.3g}",
            str(r["batch_size"]),
            str(r["steps"]),
            f"{r['epochs']:.3g}" + ("!" if r["epochs"] > 1 else "") if "epochs" in r else "?",
            fmt_seconds(r["est_seconds"]) + ("" if r["est_measured"] else "*"),
            r["state"],
        ]
        for r in table
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip() for line in [head, *body])
