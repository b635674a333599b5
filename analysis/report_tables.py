"""The markdown of report.md's run-level tables: loss against size per IsoFLOP budget, the lr x batch grids,
the data-repetition list, and the runs left out (each reason once, with its runs). Every text that came from a
record or a table (run ids, grid labels, reasons quoting them) goes through `md`."""

from __future__ import annotations

from analysis.escape import md

MAX_IDS = 20  # run ids listed per reason (the rest are in runs.csv)
MAX_REPEATS = 8  # most repeated runs named in the Data repetition section


def g(v, f=".4g") -> str:
    return "-" if v is None else format(v, f)


def _ids(ids: list[str]) -> str:
    more = f", ... ({len(ids) - MAX_IDS} more in runs.csv)" if len(ids) > MAX_IDS else ""
    return ", ".join(md(i) for i in ids[:MAX_IDS]) + more


def isoflop_runs_md(tables: list[dict]) -> list[str]:
    """Per budget: loss against size, one row per run; the best run in bold, runs outside the fitted window
    marked."""
    if not tables:
        return []
    out = [
        "",
        "#### Loss against size per budget",
        "",
        "One row per run, by model size; **bold** = the lowest loss of the budget, `out` = outside the window the "
        "parabola was fitted on.",
    ]
    for t in tables:
        vertex = f", parabola vertex M={t['vertex_M']:.3g}" if t.get("vertex_M") else ""
        out += [
            "",
            f"C = {t['C']:.3g} FLOPs ({t['n_runs']} runs{vertex}; {'in' if t['used'] else 'left out of'} the law)",
            "",
            "| M (FLOPs/token) | N | D (tokens) | epochs | loss | window | run |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in t["rows"]:
            loss = g(r["loss"], ".5g")
            out.append(
                f"| {g(r['M'], '.3g')} | {g(r['N'], '.3g')} | {g(r['D'], '.3g')} | {g(r['epochs'], '.3g')} | "
                f"{f'**{loss}**' if r['best'] else loss} | {'' if r['in_window'] else 'out'} | {md(r['run_id'])} |"
            )
        if t["n_runs"] > len(t["rows"]):
            out.append(f"| ... | | | | | | {t['n_runs'] - len(t['rows'])} more in runs.csv |")
    return out


def hparams_grids_md(grids: list[dict]) -> list[str]:
    """Each lr x batch grid as a loss table (DeepSeek's Fig. 2): rows batch size, columns learning rate."""
    if not grids:
        return []
    out = [
        "",
        "#### Loss over each lr x batch grid",
        "",
        "Rows: batch size (tokens); columns: peak learning rate; cells: final loss. **bold** = the grid's best run, "
        "`*` = inside the near-optimal band, `div` = diverged, `-` = not run.",
    ]
    for t in grids:
        ep = f", {t['epochs']:.3g} epochs" if t.get("epochs") is not None else ""
        auto = t["grid"].startswith("C=") and " M=" in t["grid"]  # the loader's label: C and M say it
        label = "Grid" if auto else f"Grid {md(t['grid'])}:"
        head = f"{label} C = {t['C']:.3g} FLOPs, M = {t['M']:.3g}{ep} ({t['n_runs']} runs" + (
            f", {t['n_diverged']} diverged)" if t["n_diverged"] else ")"
        )
        out += ["", head, ""]
        if "loss" not in t:
            out.append(f"({t['too_wide']})")
            continue
        out += [
            "| B \\ lr | " + " | ".join(f"{v:.3g}" for v in t["lr"]) + " |",
            "|---" * (len(t["lr"]) + 1) + "|",
        ]
        for B, row, marks in zip(t["batch_size"], t["loss"], t["mark"]):
            cells = []
            for v, m in zip(row, marks):
                if v is None:
                    cells.append("div" if m == "diverged" else "-")
                else:
                    s = f"{v:.4f}"
                    cells.append(f"**{s}**" if m == "best" else f"{s}\\*" if m == "band" else s)
            out.append(f"| {B:,.0f} | " + " | ".join(cells) + " |")
    return out


def repetition_md(rep: dict | None) -> list[str]:
    if not rep:
        return []
    out = [
        "## Data repetition",
        "",
        f"{rep['n_runs']} of the {rep['n_known']} usable runs that record their epochs trained for more than one "
        f"epoch over their training split (at most {rep['max_epochs']:.3g}). A repeated token is worth less than a "
        "fresh one (Muennighoff et al. 2023: little loss up to about 4 epochs, fast decay beyond), so D overstates the "
        "data these runs saw and their loss sits above what fresh data would give; the laws inherit that bias. "
        "Use a larger corpus, or smaller budgets. Every run's epochs are in runs.csv (column `epochs`) and in the "
        "tables below.",
        "",
        "| epochs | runs |",
        "|---|---|",
    ]
    out += [f"| {b['epochs']} | {b['n_runs']} |" for b in rep.get("bins") or []]
    top = rep["runs"][:MAX_REPEATS]
    out += ["", "Most repeated: " + ", ".join(f"{md(r['run_id'])} ({r['epochs']:.3g})" for r in top), ""]
    return out


def _dup_key(reason: str) -> tuple[str, str | None]:
    """A duplicate's reason names the run it repeats: group duplicates under one reason, keeping that run."""
    tail = " (same dataset,"
    if reason.startswith("duplicate of run ") and tail in reason:
        k = reason.rindex(tail)
        return "duplicate of an earlier run" + reason[k:], reason[len("duplicate of run ") : k]
    return reason, None


def excluded_md(excluded: list[dict]) -> list[str]:
    """Runs never used, grouped by reason: each reason once, then its runs."""
    if not excluded:
        return []
    groups: dict[str, list[str]] = {}
    for e in excluded:
        key, of = _dup_key(e["reason"])
        groups.setdefault(key, []).append(e["run_id"] if of is None else f"{e['run_id']} (of {of})")
    out = [f"### Excluded before fitting ({len(excluded)} runs, never used)", ""]
    out += [f"- {md(k)}: {len(ids)} run{'s' if len(ids) > 1 else ''}: {_ids(ids)}" for k, ids in groups.items()]
    return out + [""]


def left_out_md(left: list[dict]) -> list[str]:
    """Runs left out of one law (used by the others), grouped by law and reason. An IsoFLOP budget's reason is in
    the IsoFLOP budget table already, so it is referred to, not repeated."""
    if not left:
        return []
    groups: dict[tuple[str, str], list[str]] = {}
    for e in left:
        reason = e["reason"]
        if e["section"] == "isoflop" and reason.startswith("budget C=") and ":" in reason:
            reason = reason.split(":", 1)[0] + " (why: the IsoFLOP budget table)"
        groups.setdefault((e["section"], reason), []).append(e["run_id"])
    out = [f"### Left out of one law ({len(left)} runs, used by the others)", ""]
    out += [
        f"- {md(sec)}: {md(reason)}: {len(ids)} run{'s' if len(ids) > 1 else ''}: {_ids(ids)}"
        for (sec, reason), ids in groups.items()
    ]
    return out + [""]
