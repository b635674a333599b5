"""The report's predictions and planning answers (analysis.predict's numbers, laid out for report.json):
`--predict N,D` / `--predict C` requests, the L(N, D) side of `--budget` recommendations and of the targets, the
`--size N` plans, each with its horizon and consistency flags; and the CLI summary lines that print them.
"""

from __future__ import annotations

import math

from analysis.predict import HORIZON, checks, compute_optimal, loss_at, loss_C_at, size_plan


def parse_request(v) -> tuple[float, ...]:
    """`--predict` value -> (N, D) or (C,): "7e9,2e12", "1e23", a number, or a pair. One-line ValueError if bad."""
    parts = v.split(",") if isinstance(v, str) else list(v) if isinstance(v, list | tuple) else [v]
    try:
        nums = tuple(float(x) for x in parts)
    except (TypeError, ValueError):
        nums = ()
    if len(nums) not in (1, 2) or not all(0 < x < math.inf for x in nums):
        raise ValueError(
            f"--predict {v!r}: give N,D (parameters and tokens, two positive numbers, e.g. 7e9,2e12) or one "
            f"compute budget C in FLOPs (e.g. 1e23)"
        )
    return nums


def _why_no(r: dict, sec: str) -> str:
    why = (r.get("skipped") or {}).get(sec) or (r.get("not_applicable") or {}).get(sec)
    if not why and sec == "loss":  # L(C) is fitted on the IsoFLOP minima: absent with them
        iso = (r.get("skipped") or {}).get("isoflop") or (r.get("not_applicable") or {}).get("isoflop")
        why = f"it is fitted on IsoFLOP minima, and isoflop: {iso}" if iso else None
    return why or "not fitted"


def one_prediction(r: dict, req: tuple[float, ...]) -> dict:
    """An (N, D) request: L(N, D) there (and L(C) at C = 6*N*D); a (C,) request: L(C) and L(N, D)'s optimum at C."""
    par, lc = r.get("parametric"), r.get("loss")
    if len(req) == 2:
        N, D = req
        C = 6 * N * D
        out: dict = {"N": N, "D": D, "C": C}
        out["loss"] = loss_at(par, N, D)[0] if par else None
        if not par:
            out["loss_why"] = f"no L(N, D): {_why_no(r, 'parametric')}"
    else:
        (C,) = req
        out = {"C": C}
        if par:
            out["compute_optimal"] = compute_optimal(par, C)
    out["loss_C"] = loss_C_at(lc, C) if lc else None
    if not lc:
        out["loss_C_why"] = f"no L(C): {_why_no(r, 'loss')}"
    losses = {"L(N, D)": out.get("loss"), f"L(C) ({lc['form'] if lc else ''})": out["loss_C"]}
    out["horizon"], out["flags"] = checks(r, C, losses)
    return out


def target_extras(r: dict, e: dict) -> None:
    """A target (extrapolation entry): L(N, D) at its (N = M/6, D), why a loss is missing, horizon and flags."""
    par = r.get("parametric")
    if par:
        e["loss_ND"] = loss_at(par, e["M"] / 6, e["D"])[0] | {"N": e["M"] / 6}
    elif not e.get("loss"):
        e["loss_why"] = f"no L(N, D): {_why_no(r, 'parametric')}"
    if not e.get("loss"):  # e.g. a table of (N, D) rows: no IsoFLOP minima, so no L(C)
        e["loss_C_why"] = f"no L(C): {_why_no(r, 'loss')}" + ("; see loss_ND (L(N, D) at the target)" if par else "")
    e["horizon"], e["flags"] = checks(r, e["C"], {"L(C)": e.get("loss"), "L(N, D)": e.get("loss_ND")})


def budget_extras(r: dict, rec: dict, sizes=()) -> None:
    """A `--budget` recommendation: L(N, D)'s compute-optimal N, D and loss at C; each `--size` N at this budget;
    horizon and flags."""
    par = r.get("parametric")
    C = rec["C"]
    if par:
        rec["L_ND"] = compute_optimal(par, C)
        rec["sizes"] = [size_plan(par, N, C)["at_budget"] | {"N": N} for N in sizes]
    rec["horizon"], rec["flags"] = checks(
        r, C, {"L(C)": rec.get("loss"), "L(N, D) at its optimum": (rec.get("L_ND") or {}).get("loss")}
    )


def size_plans(r: dict, sizes=()) -> list[dict]:
    """`--size N`: the compute-optimal D (and C, loss) for each model size N, from L(N, D)."""
    par = r.get("parametric")
    out = []
    for N in sizes:
        if not par:
            out.append({"N": N, "why": f"no L(N, D): {_why_no(r, 'parametric')}"})
            continue
        p = size_plan(par, N)
        co = p["compute_optimal"]
        p["horizon"], p["flags"] = checks(r, co["C"]["value"], {})
        out.append(p)
    return out


def _num(x, f: str) -> str:
    """A bound: infinite (or None, as report.json writes infinity) is "unbounded"."""
    return "unbounded" if x is None or math.isinf(x) else format(x, f)


def fmt(v: dict | None, f: str = ".4g") -> str:
    """`2.31 [2.2, 2.4]`: a value with its interval ("-" when absent; "never" for an unreachable value)."""
    if not v or v.get("value") is None:
        return "never" if v and "ci95" in v else "-"
    if math.isinf(v["value"]):
        return "never"
    s = format(v["value"], f)
    ci = v.get("ci95")
    if ci and not any(x is not None and math.isnan(x) for x in ci):
        s += f" [{_num(ci[0], f)}, {_num(ci[1], f)}]"
    return s


def _horizon_note(h: dict | None) -> str:
    if not h or not h.get("ratio"):
        return ""
    return f"; {h['ratio']:.3g}x the largest fitted C" + (f" (> {HORIZON:g}x: EXTRAPOLATED)" if h["beyond"] else "")


def summary_lines(rep: dict) -> list[str]:
    """The predictions of a report, one line each, every number with its 95% interval, flags after `!`."""
    out = []
    for t, e in (rep.get("extrapolation") or {}).items():
        parts = [f"C {e['C']:.3g}, D {e['D']:.3g}"]
        for k, lab in (("loss", "L(C)"), ("loss_ND", "L(N, D)")):
            if e.get(k):
                parts.append(f"loss {lab} {fmt(e[k])}")
        for k in ("eta_opt", "B_opt"):
            if e.get(k):
                parts.append(f"{k} {fmt(e[k], '.3g')}")
        out.append(f"  {t}: " + ", ".join(parts) + _horizon_note(e.get("horizon")))
        out += [f"    ({e[k]})" for k in ("loss_C_why", "loss_why") if e.get(k)]
        out += [f"    ! {f}" for f in e.get("flags", [])]
    for p in rep.get("predictions") or []:
        if "N" in p:
            head = f"  predict N={p['N']:.3g}, D={p['D']:.3g} (C {p['C']:.3g}): loss L(N, D) {fmt(p['loss'])}"
        else:
            co = p.get("compute_optimal")
            head = f"  predict C={p['C']:.3g}: " + (
                f"L(N, D) optimum N {fmt(co['N'], '.3g')}, D {fmt(co['D'], '.3g')}, loss {fmt(co['loss'])}"
                if co
                else "no L(N, D)"
            )
        if p.get("loss_C"):
            head += f"; L(C) {fmt(p['loss_C'])}"
        out.append(head + _horizon_note(p.get("horizon")))
        out += [f"    ! {f}" for f in p.get("flags", [])]
    for r in rep.get("recommendations") or []:
        nd = r.get("L_ND")
        line = f"  budget C={r['C']:.3g}: M_opt {fmt(r.get('M_opt'), '.3g')} ({r['M_opt_source']})"
        if r.get("loss"):
            line += f", L(C) {fmt(r['loss'])}"
        if nd:
            line += f"; L(N, D) optimum N {fmt(nd['N'], '.3g')}, D {fmt(nd['D'], '.3g')}, loss {fmt(nd['loss'])}"
        out.append(line + _horizon_note(r.get("horizon")))
        for s in r.get("sizes") or []:
            out.append(
                f"    N={s['N']:.3g}: D {s['D']:.3g} -> loss {fmt(s['loss'])}; D to match the optimum's loss "
                + (s["never"] if "never" in s else fmt(s["D_loss_matched"], ".3g"))
            )
        out += [f"    ! {f}" for f in r.get("flags", [])]
    for s in rep.get("sizes") or []:
        co = s.get("compute_optimal")
        if not co:
            out.append(f"  size N={s['N']:.3g}: {s['why']}")
            continue
        out.append(
            f"  size N={s['N']:.3g}: compute-optimal D {fmt(co['D'], '.3g')} (C {fmt(co['C'], '.3g')}), "
            f"loss {fmt(co['loss'])}" + _horizon_note(s.get("horizon"))
        )
        out += [f"    ! {f}" for f in s.get("flags", [])]
    return out
