"""report.md sections for predictions and their consistency (called by analysis.report): the metric line, L(N, D)
side by side across datasets, how L(C) chose its form and which budgets it rests on, the targets' L(N, D) loss and
flags, and the `--predict` / `--budget` / `--size` answers. Every number carries its 95% interval. Names and reasons
from the data (datasets, targets, why a fit is missing) go through `analysis.escape.md`, as in the rest of report.md."""

from __future__ import annotations

from analysis.escape import md
from analysis.planning import fmt
from analysis.predict import HORIZON


def metric_lines(report: dict) -> list[str]:
    m = report.get("metric")
    if not m:
        return []
    return [f"Fitted metric: {m['label']} (`--metric {m['name']}`); every loss below is in {m['unit']}.", ""]


def datasets_nd_table(report: dict) -> list[str]:
    """L(N, D) of every dataset side by side (when more than one)."""
    if len(report["datasets"]) < 2:
        return []
    out = [
        "L(N, D) = E + A/N^alpha + B/D^beta per dataset (95% CIs):",
        "",
        "| dataset | runs | E | alpha | beta | a = beta/(alpha+beta) | A | B |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, d in report["datasets"].items():
        p = d.get("parametric")
        if not p:
            why = (d.get("skipped") or {}).get("parametric") or (d.get("not_applicable") or {}).get("parametric")
            out.append(f"| {md(n)} | - | not fitted: {md(why or '-')} | | | | | |")
            continue
        ci = p.get("ci95") or {}
        cells = [fmt({"value": p[k], "ci95": ci.get(k)}) for k in ("E", "alpha", "beta", "a", "A", "B")]
        out.append(f"| {md(n)} | {p['n_runs']} | " + " | ".join(cells) + " |")
    return out + [""]


def loss_form_lines(loss: dict) -> list[str]:
    """How L(C) chose its form, and which budget minima it rests on."""
    out = []
    if "saturating_E" in loss:
        s = loss["saturating_E"]
        out.append(
            f"- E + A*C^-alpha with E from L(N, D): E={s['E']:.4g}, A={s['A']:.4g}, alpha={s['alpha']:.4f} "
            f"(rmse {s['rmse']:.2g})"
        )
    elif loss.get("saturating_E_skipped"):
        out.append(f"- E + A*C^-alpha with E from L(N, D) not used: {md(loss['saturating_E_skipped'])}")
    if loss.get("form_why"):
        out.append(f"- **form used for predictions: {loss[loss['form']]['form']}**: {md(loss['form_why'])}")
    pts = loss.get("budgets") or []
    extra = [b for b in pts if not b["in_M_opt_law"]]
    if pts:
        out.append(
            f"- L(C) rests on {len(pts)} budget minima"
            + (
                "; kept although left out of the M_opt law (the height of a minimum is well determined where its "
                "location is not): " + ", ".join(f"C={b['C']:.3g}" for b in extra)
                if extra
                else ""
            )
        )
    for d in loss.get("dropped_budgets") or []:
        out.append(f"- budget C={d['C']:.3g} left out of L(C) too: {md(d['why'])}")
    return out


def target_lines(r: dict) -> list[str]:
    """Targets: L(N, D) at (M/6, D), why a loss is missing, and the flags."""
    ex = r.get("extrapolation") or {}
    if not ex:
        return []
    out = ["", "| target | N = M/6 | D | L(C) | L(N, D) | x largest fitted C |", "|---|---|---|---|---|---|"]
    for t, e in ex.items():
        h = e.get("horizon") or {}
        ratio = "-" if not h.get("ratio") else f"{h['ratio']:.3g}" + (" **(beyond 1000x)**" if h["beyond"] else "")
        out.append(
            f"| {md(t)} | {e['M'] / 6:.3g} | {e['D']:.3g} | {fmt(e.get('loss')) if e.get('loss') else '-'} | "
            f"{fmt(e.get('loss_ND')) if e.get('loss_ND') else '-'} | {ratio} |"
        )
    out.append("")
    note = next(iter(ex.values()))["reference"].get("note")
    if note:
        out.append(f"- DeepSeek reference: {md(note)}")
    for t, e in ex.items():
        out += [f"- **{md(t)}**: {md(f)}" for f in e.get("flags", [])]
        out += [f"- {md(t)}: {md(e[k])}" for k in ("loss_C_why", "loss_why") if e.get(k)]
    return out


def _ratio(h: dict | None) -> str:
    if not h or not h.get("ratio"):
        return "-"
    return f"{h['ratio']:.3g}" + (f" **(> {HORIZON:g}x)**" if h["beyond"] else "")


def _intro(report: dict) -> list[str]:
    unit = (report.get("metric") or {}).get("unit", "")
    return [
        "## Predictions",
        "",
        f"Dataset {md(report['dataset'])}; losses in {unit}. {report.get('predictions_intervals', '')}. "
        f"N is in the L(N, D) fit's convention (the table's N, else M/6) and C = 6*N*D. `x fitted C`: the "
        f"predicted compute over the largest compute any law was fitted on; past {HORIZON:g}x the prediction is "
        f"an extrapolation of the law's form.",
        "",
    ]


def _nd_points(nd: list[dict]) -> tuple[list[str], list[str]]:
    """`--predict N,D`: L(N, D) and L(C) at each point; (table, flags)."""
    if not nd:
        return [], []
    out = ["| N | D | C = 6ND | L(N, D) | L(C) (compute-optimal at that C) | x fitted C |", "|---|---|---|---|---|---|"]
    flags: list[str] = []
    for p in nd:
        out.append(
            f"| {p['N']:.3g} | {p['D']:.3g} | {p['C']:.3g} | {fmt(p.get('loss'))} | {fmt(p.get('loss_C'))} | "
            f"{_ratio(p.get('horizon'))} |"
        )
        flags += [f"N={p['N']:.3g}, D={p['D']:.3g}: {f}" for f in p.get("flags", [])]
        flags += [f"N={p['N']:.3g}, D={p['D']:.3g}: {p[k]}" for k in ("loss_why", "loss_C_why") if p.get(k)]
    return out + [""], flags


def _allocation_row(C: float, co: dict | None, lc: dict | None, h: dict | None) -> str:
    if not co:
        return f"| {C:.3g} | - | - | - | no L(N, D) | {fmt(lc)} | {_ratio(h)} |"
    tpp = co["D"]["value"] / co["N"]["value"]
    return (
        f"| {C:.3g} | {fmt(co['N'], '.3g')} | {fmt(co['D'], '.3g')} | {tpp:.3g} | {fmt(co['loss'])} | "
        f"{fmt(lc)} | {_ratio(h)} |"
    )


def _allocations(cs: list[dict], nd_recs: list[dict]) -> tuple[list[str], list[str]]:
    """`--predict C` and `--budget C`: the compute-optimal N, D and loss of L(N, D); (table, flags)."""
    rows = [(p["C"], p.get("compute_optimal"), p.get("loss_C"), p.get("horizon")) for p in cs]
    rows += [(r["C"], r.get("L_ND"), r.get("loss"), r.get("horizon")) for r in nd_recs]
    if not rows:
        return [], []
    out = [
        "Compute-optimal allocation from L(N, D) (`--predict C`, `--budget C`):",
        "",
        "| C | N_opt | D_opt | tokens per parameter | L(N_opt, D_opt) | L(C) | x fitted C |",
        "|---|---|---|---|---|---|---|",
    ]
    out += [_allocation_row(*row) for row in rows] + [""]
    flags = [f"C={p['C']:.3g}: {f}" for p in cs for f in p.get("flags", [])]
    return out, flags + [f"--budget {r['C']:.3g}: {f}" for r in nd_recs for f in r.get("flags", [])]


def _sizes(sizes: list[dict] | None) -> tuple[list[str], list[str]]:
    """`--size N`: the D at which N is compute-optimal; (table, flags)."""
    if not sizes:
        return [], []
    out = [
        "Model sizes you built (`--size N`): the D at which N is compute-optimal, from L(N, D):",
        "",
        "| N | compute-optimal D | its C | loss there | x fitted C |",
        "|---|---|---|---|---|",
    ]
    flags: list[str] = []
    for s in sizes:
        co = s.get("compute_optimal")
        if not co:
            out.append(f"| {s['N']:.3g} | {md(s['why'])} | | | |")
            continue
        out.append(
            f"| {s['N']:.3g} | {fmt(co['D'], '.3g')} | {fmt(co['C'], '.3g')} | {fmt(co['loss'])} | "
            f"{_ratio(s.get('horizon'))} |"
        )
        flags += [f"N={s['N']:.3g}: {f}" for f in s.get("flags", [])]
    return out + [""], flags


def _sizes_at_budgets(nd_recs: list[dict]) -> list[str]:
    """`--size N` with `--budget C`: the D each budget buys N, and the D that matches the compute-optimal loss."""
    at = [(r["C"], s) for r in nd_recs for s in r.get("sizes") or []]
    if not at:
        return []
    out = [
        "The same sizes at each `--budget` (D = C/(6N); the D and C at which N matches the compute-optimal "
        "model's loss, i.e. how far to over-train it):",
        "",
        "| C | N | D = C/6N | its loss | compute-optimal loss | D to match it | C to match it |",
        "|---|---|---|---|---|---|---|",
    ]
    for C, s in at:
        match = md(s["never"]) if s.get("never") else fmt(s["D_loss_matched"], ".3g")
        out.append(
            f"| {C:.3g} | {s['N']:.3g} | {s['D']:.3g} | {fmt(s['loss'])} | {fmt(s['compute_optimal_loss'])} | "
            f"{match} | {'-' if s.get('never') else fmt(s['C_loss_matched'], '.3g')} |"
        )
    return out + [""]


def predictions_md(report: dict) -> list[str]:
    """`--predict`, the L(N, D) side of `--budget`, and `--size`: tables with intervals, then every flag."""
    preds, recs, sizes = report.get("predictions") or [], report.get("recommendations") or [], report.get("sizes")
    nd_recs = [r for r in recs if r.get("L_ND")]
    if not (preds or nd_recs or sizes):
        return []
    out = _intro(report)
    flags: list[str] = []
    for lines, more in (
        _nd_points([p for p in preds if "N" in p]),
        _allocations([p for p in preds if "N" not in p], nd_recs),
        _sizes(sizes),
    ):
        out += lines
        flags += more
    out += _sizes_at_budgets(nd_recs)
    if flags:
        out += ["**Flags**", ""] + [f"- {md(f)}" for f in flags] + [""]
    return out
