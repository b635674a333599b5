"""Report writers: report.json (atomic, numpy-free) and report.md (human, read top-down as a result: the laws with
their intervals and what they rest on first, then the fits in detail, then the runs not used)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from analysis import report_predictions as RP
from analysis.escape import md
from analysis.report_tables import excluded_md, hparams_grids_md, isoflop_runs_md, left_out_md, repetition_md
from scaling.base.atomic import write_atomic
from scaling.base.laws import format_law


def _internal(k: str) -> bool:
    return k == "boot" or k.startswith("boot_") or k == "in_band"


def jsonable(x):
    """Drop bootstrap internals (keys 'boot', 'boot_*'), numpy -> Python, NaN/inf -> None, PowerLaw -> dict."""
    if hasattr(x, "as_dict"):
        return jsonable(x.as_dict())
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items() if not _internal(str(k))}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _g(v, f=".4g") -> str:
    return "-" if v is None else format(v, f)


def _law(d: dict | None) -> str:
    return format_law(d, digits=4)


def _nd(d: dict) -> str:
    ci = d.get("ci95") or {}

    def one(k: str) -> str:
        lo_hi = ci.get(k)
        return f"{d[k]:.4f}" + (f" [{_g(lo_hi[0], '.4f')}, {_g(lo_hi[1], '.4f')}]" if lo_hi else "")

    n_term = "" if d["N_exponent"] == 0 else f" * N^{one('N_exponent')}"  # B_opt has no N term
    return f"{d['coef']:.4g}{n_term} * D^{one('D_exponent')} (exponent 95% CIs in brackets)"


def _window(w: dict | None) -> str:
    if not w:
        return "-"
    h = w.get("half_width_decades")
    return f"{w['M'][0]:.3g}..{w['M'][1]:.3g} ({w['n_sizes']} sizes{'' if h is None else f', +-{h:g} dec'})"


def _val(d: dict | None, key="value", f=".4g") -> str:
    if not d:
        return "-"
    s = _g(d.get(key), f)
    if d.get("ci95"):
        s += f" [{_g(d['ci95'][0], f)}, {_g(d['ci95'][1], f)}]"
    return s


def _seqs(B: dict | None) -> str:
    """B_opt in sequences with its interval."""
    return _val({"value": B["sequences"], "ci95": B.get("sequences_ci95")}, f=".4g") if B else "-"


def _short(why: str) -> str:
    """A skipped IsoFLOP law's reason lists every budget's failure: the budget table says those, once."""
    k = why.find(" [excluded: ")
    return why if k < 0 else why[:k] + " (each budget's reason: the IsoFLOP budget table)"


def _ci_exp(law: dict | None) -> str:
    lo_hi = ((law or {}).get("ci95") or {}).get("exponent")
    return "-" if not lo_hi or None in lo_hi else f"exponent [{lo_hi[0]:.4f}, {lo_hi[1]:.4f}]"


def _power(law: dict, var: str = "C") -> str:
    return f"{law['coef']:.4g} * {var}^{law['exponent']:.4f}"


def _span(Cs) -> str:
    Cs = [c for c in Cs if c is not None]
    return f"C {min(Cs):.3g}..{max(Cs):.3g}" if Cs else "C -"


LAW_NAMES = {
    "hparams": "eta_opt(C), B_opt(C)",
    "isoflop": "M_opt(C), D_opt(C)",
    "loss": "L(C)",
    "parametric": "L(N, D)",
}


Row = tuple[str, str, str, str]  # law, fit, 95% CI, what it rests on


def _hparams_rows(hp: dict | None) -> list[Row]:
    if not hp:
        return []
    grids = hp["budgets"]
    base = (
        f"{sum(b['n_band'] for b in grids)} near-optimal runs (band {hp['band']:.2%}) of "
        f"{sum(b['n_runs'] for b in grids)} in {len(grids)} lr x batch grids, {hp['eta_opt']['n_budgets']} "
        f"budgets, {_span([b['C'] for b in grids])}"
    )
    rows = [
        ("eta_opt(C), peak lr", _power(hp["eta_opt"]), _ci_exp(hp["eta_opt"]), base),
        ("B_opt(C), batch (tokens)", _power(hp["B_opt"]), _ci_exp(hp["B_opt"]), "the same runs"),
    ]
    md_ = hp.get("MD")
    if md_:
        rows += [
            ("eta_opt(N, D), Step-Law form", _nd(md_["eta_opt"]), "in the fit", "the same runs"),
            ("B_opt(D), Step-Law form", _nd(md_["B_opt"]), "in the fit", "the same runs"),
        ]
    return rows


def _isoflop_rows(iso: dict | None) -> list[Row]:
    if not iso:
        return []
    used = [b for b in iso["budgets"] if b["used"]]
    base = (
        f"the parabola vertices of {len(used)} of {len(iso['budgets'])} IsoFLOP budgets "
        f"({sum(b['n_runs'] for b in used)} runs, {_span([b['C'] for b in used])})"
    )
    return [
        ("M_opt(C), FLOPs/token", _power(iso["M_opt"]), _ci_exp(iso["M_opt"]), base),
        ("D_opt(C), tokens", _power(iso["D_opt"]), _ci_exp(iso["D_opt"]), "the same vertices (D = C/M)"),
    ]


def _loss_formula(loss: dict) -> str:
    """The L(C) form used for predictions, as a formula."""
    f = loss.get(loss["form"]) or loss["power"]
    if "E" not in f:
        return f"{f['k']:.4g} * C^-{f['alpha']:.4f}"
    # saturating, or saturating_E (E fixed at L(N, D)'s)
    fit = f"{f['E']:.4g} + {f['A']:.4g} * C^-{f['alpha']:.4f}"
    return fit + (" (E of L(N, D))" if loss["form"] == "saturating_E" else "")


def _loss_rows(loss: dict | None, iso: dict | None) -> list[Row]:
    if not loss:
        return []
    f = loss.get(loss["form"]) or loss["power"]
    lo_hi = (f.get("ci95") or {}).get("alpha")
    pts = loss.get("budgets") or []
    n_min = len(pts) if pts else (sum(b["used"] for b in iso["budgets"]) if iso else 0)
    n_extra = sum(not b.get("in_M_opt_law", True) for b in pts)
    rests = (
        f"the minima of {n_min} IsoFLOP budgets"
        + (f" ({n_extra} left out of the M_opt law, their minima well determined)" if n_extra else "")
        + "; form chosen below (Loss curve L(C))"
    )
    ci = f"alpha [{lo_hi[0]:.4f}, {lo_hi[1]:.4f}]" if lo_hi and None not in lo_hi else "-"
    return [("L(C), minimum loss", _loss_formula(loss), ci, rests)]


def _parametric_rows(par: dict | None) -> list[Row]:
    if not par:
        return []
    ci = par.get("ci95") or {}

    def pci(k: str) -> str:
        v = ci.get(k)
        return f"{k} [{v[0]:.4g}, {v[1]:.4g}]" if v and None not in v else ""

    fit = f"E={par['E']:.4g}, A={par['A']:.4g}, B={par['B']:.4g}, alpha={par['alpha']:.4f}, beta={par['beta']:.4f}"
    cis = ", ".join(x for x in (pci("E"), pci("alpha"), pci("beta")) if x) or "-"
    rests = f"{par['n_runs']} runs ({', '.join(par.get('sweeps', []))})"
    return [("L(N, D) = E + A/N^alpha + B/D^beta", fit, cis, rests)]


def _unfitted_rows(r: dict) -> list[tuple[str, Row]]:
    """(section, row) of each law the data could not support (why) or had no runs for."""
    sk = r.get("skipped") or {}
    na: dict[str, str] = r.get("not_applicable") or {}
    missing: dict[str, str] = dict(sk)
    if "isoflop" in sk and "loss" not in r and "loss" not in sk:
        missing["loss"] = "needs the IsoFLOP law (it is fitted on the budgets' minima)"
    out = [(k, (LAW_NAMES.get(k, k), "**not fitted**", "-", md(_short(why)))) for k, why in missing.items()]
    return out + [(k, (LAW_NAMES.get(k, k), "not applicable", "-", md(why))) for k, why in na.items()]


def _next_steps_md(r: dict) -> list[str]:
    nxt = r.get("next_steps") or {}
    if not nxt:
        return []
    return ["", "**What to try next**", ""] + [
        f"- {LAW_NAMES.get(k, k)}: {md(line)}" for k, lines in nxt.items() for line in lines
    ]


def _laws_md(r: dict) -> list[str]:
    """The laws of one dataset as a table: each fit with its 95% interval and what it rests on; a law that could
    not be fitted says why in the same place."""
    rows: dict[str, list[Row]] = {  # in LAW_NAMES order; a law not fitted sits where it would have been
        "hparams": _hparams_rows(r.get("hparams")),
        "isoflop": _isoflop_rows(r.get("isoflop")),
        "loss": _loss_rows(r.get("loss"), r.get("isoflop")),
        "parametric": _parametric_rows(r.get("parametric")),
    }
    for k, row in _unfitted_rows(r):
        rows.setdefault(k, []).append(row)
    out = ["| law | fit | 95% CI | rests on |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for sec in rows.values() for a, b, c, d in sec]
    return out + _next_steps_md(r)


PENALTY_NOTE = (
    "Penalty %: the loss at the law's (eta, B) on a quadratic surface fitted to the grid's best runs, relative to "
    "the grid's best run. A negative value means the surface predicts the law's point would beat the best run: "
    "the law points between grid cells, or the best run sits above the smooth surface by noise. Read it as "
    "about zero, not as a gain."
)


def _hparams_md(r: dict, ns: dict, grids: list[dict]) -> list[str]:
    hp = r.get("hparams")
    if not hp:
        return ["", "### Hyper-parameters (lr x batch grids)"] + hparams_grids_md(grids) if grids else []
    md_ = hp.get("MD")
    out = [
        "",
        f"### Hyper-parameters (near-optimal band {hp['band']:.2%}; {ns.get('hparams', '?')} runs in "
        f"{len(hp['budgets'])} lr x batch grids, one model each unless noted)",
        "",
        f"- C form: eta_opt = {_law(hp['eta_opt'])}",
        f"- C form: B_opt = {_law(hp['B_opt'])} tokens",
    ]
    if md_:
        out += [f"- MD form: eta_opt = {_nd(md_['eta_opt'])}", f"- MD form: B_opt = {_nd(md_['B_opt'])} tokens"]
    else:
        out.append(f"- MD form not fitted: {md(hp.get('MD_skipped', '-'))}")
    out += [f"- CI: {md(v['text'])}" for v in (hp.get("between") or {}).values()]
    out += [
        f"- extrapolation uses the {hp.get('form', 'C')} form",
        "",
        "| C | M | runs | in band | best lr | best B | C form lr | C form B | penalty % (C) | penalty % (MD) | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    bud = sorted(hp["budgets"], key=lambda b: (b["C"], b["M"]))
    out += [
        f"| {b['C']:.3g} | {_g(b.get('M'), '.3g')} | {b['n_runs']} | {b['n_band']} | {b['best_lr']:.3g} | "
        f"{b['best_batch_size']:.3g} | {b['eta_fit']:.3g} | {b['B_fit']:.3g} | {_g(b['penalty_pct'], '.3f')} | "
        f"{_g(b.get('penalty_pct_MD'), '.3f')} | "
        f"{md('; '.join(x for x in [b.get('note', '')] + b.get('grid_warnings', []) if x))} |"
        for b in bud
    ]
    pens = [p for b in bud for p in (b.get("penalty_pct"), b.get("penalty_pct_MD")) if p is not None]
    if any(p < 0 for p in pens):
        out += ["", PENALTY_NOTE]
    return out + hparams_grids_md(grids)


def _isoflop_md(r: dict, tables: list[dict]) -> list[str]:
    iso = r.get("isoflop")
    budgets = (iso or {}).get("budgets") or r.get("isoflop_budgets") or []
    if not budgets:
        return []
    n_used = sum(b["n_runs"] for b in budgets if b["used"])
    n_all = sum(b["n_runs"] for b in budgets)
    out = [
        "",
        f"### IsoFLOP ({n_used} of {n_all} isoflop runs in the law; the runs of budgets marked 'no' "
        f"are left out of this law only)",
        "",
    ]
    if iso:
        out += [f"- M_opt = {_law(iso.get('M_opt'))}", f"- D_opt = {_law(iso.get('D_opt'))}"]
        out += [f"- estimator: {iso.get('estimator', 'window')} ({iso.get('estimator_text', '')})"]
        out += [f"- resampled: {iso['resampled']}"] if iso.get("resampled") else []
        out += [f"- CI: {md(iso['between']['text'])}"] if iso.get("between") else []
        out += [""]
    else:
        out += ["- M_opt, D_opt: **not fitted**; each budget's reason is below", ""]
    out += [
        "| C | runs | sizes | best run M | fitted window (M) | vertex M_opt | D_opt | loss_min | used | why not |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    out += [
        f"| {b['C']:.3g} | {b['n_runs']} | {b.get('n_sizes', '-')} | {_g(b.get('best_M'), '.3g')} | "
        f"{_window(b.get('window'))} | {_g(b['M_opt'])} | {_g(b['D_opt'])} | "
        f"{_g(b['loss_min'])} | {'yes' if b['used'] else 'no'} | {md('; '.join(b['warnings'] + b.get('notes', [])))} |"
        for b in budgets
    ]
    return out + isoflop_runs_md(tables)


def _conventions_md(conv: dict | None) -> list[str]:
    if not conv:
        return []
    out = [
        "",
        "### Counting conventions (IsoFLOP exponents with model scale M, 6*N1, 6*N2)",
        "",
        "| scale | M_opt exponent a | D_opt exponent b |",
        "|---|---|---|",
    ]
    return out + [
        f"| {k} | {_law(v.get('M_opt'))} | {_law(v.get('D_opt'))} |"
        if "M_opt" in v
        else f"| {k} | {md(v.get('skipped', '-'))} | |"
        for k, v in conv.items()
    ]


def _backtest_line(bt: dict) -> list[str]:
    if "loss_pred" not in bt:
        return []
    return [
        f"- backtest (largest budget C={bt['held_out_C']:.3g} held out): loss error {bt['loss_err_pct']:+.2f}%"
        + (f", M_opt error {bt['M_opt_err_pct']:+.1f}%" if "M_opt_err_pct" in bt else "")
    ]


def _loss_curve_md(loss: dict | None) -> list[str]:
    if not loss:
        return []
    out = ["", "### Loss curve L(C)", ""]
    if "saturating" in loss:
        s = loss["saturating"]
        out.append(f"- E + A*C^-alpha: E={s['E']:.4g}, A={s['A']:.4g}, alpha={s['alpha']:.4f} (rmse {s['rmse']:.2g})")
    p = loss["power"]
    out.append(f"- k*C^-alpha: k={p['k']:.4g}, alpha={p['alpha']:.4f} (rmse {p['rmse']:.2g})")
    if loss.get("between"):
        out.append(f"- CI: {loss['between']['text']}")
    return out + _backtest_line(loss.get("backtest") or {}) + RP.loss_form_lines(loss)


def _parametric_md(par: dict | None) -> list[str]:
    if not par:
        return []
    ci = par.get("ci95", {})
    dropped = par.get("dropped_runs", [])
    robust = (
        f"; robust refit (|log residual| > {par['robust']:g} robust SD) dropped "
        f"{len(dropped)}: {', '.join(md(x) for x in dropped[:20])}"
        if par.get("robust")
        else ""
    )
    return [
        "",
        "### Parametric L(N, D) = E + A/N^alpha + B/D^beta (Epoch-corrected Approach 3)",
        "",
        f"{par['n_runs']} runs ({', '.join(par.get('sweeps', []))}); constraints: {par.get('constraints', 'none')}"
        + robust,
        "",
        "| E | A | B | alpha | beta | a = beta/(alpha+beta) |",
        "|---|---|---|---|---|---|",
        "| "
        + " | ".join(_val({"value": par[k], "ci95": ci.get(k)}) for k in ("E", "A", "B", "alpha", "beta", "a"))
        + " |",
    ]


def _target_row(t: str, e: dict) -> str:
    """One extrapolation target beside DeepSeek's reference for it."""
    ref, p = e["reference"], e["reference"].get("paper", {})
    return (
        f"| {md(t)} | {e['C']:.3g} | {_val(e.get('eta_opt'), f='.3g')} | {_seqs(e.get('B_opt'))} | "
        f"{_val(e.get('loss'))} | {_val((e.get('compute_optimal') or {}).get('D'), f='.3g')} | "
        f"{ref['eta_opt']['value']:.3g} | {ref['B_opt']['sequences']:.4g} | "
        f"{p.get('lr', '-')} / {p.get('batch_sequences', '-')} |"
    )


def _extrapolation_md(r: dict) -> list[str]:
    ex = r.get("extrapolation")
    if not ex:
        return []
    out = ["", f"**Conventions:** {md(r['extrapolation_conventions'])}"] if r.get("extrapolation_conventions") else []
    out += [
        "",
        "### Extrapolation",
        "",
        "| target | C | eta_opt | B_opt (seqs) | loss | compute-optimal D | "
        "DeepSeek ref eta | ref B (seqs) | paper lr / B |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    return out + [_target_row(t, e) for t, e in ex.items()] + RP.target_lines(r)


def _dataset_md(name: str, r: dict) -> list[str]:
    ns = r.get("n_section") or {}
    tables = r.get("tables") or {}
    out = [f"## Dataset {md(name)}: the fits in detail ({r['n_used']} usable runs)"]
    if r.get("seeds"):  # sweep.seeds (analysis.seeds): the seed-to-seed spread beside the near-optimal band
        out += ["", f"- seeds: {md(r['seeds']['line'])}"]
    out += _hparams_md(r, ns, tables.get("hparams") or [])
    out += _isoflop_md(r, tables.get("isoflop") or [])
    out += _conventions_md(r.get("conventions"))
    out += _loss_curve_md(r.get("loss"))
    out += _parametric_md(r.get("parametric"))
    return out + _extrapolation_md(r) + [""]


CONDITIONAL = (
    "What the intervals are conditional on: each resamples the independent units within each budget or grid (runs, "
    "or trunks with all their branches where runs name a `trunk`) and refits everything; for M_opt, D_opt, eta_opt, "
    "B_opt and L(C) it then adds the scatter of whole budgets (grids) about the law beyond their run-level precision, "
    "with Student-t tails for the few degrees of freedom that scatter is measured on. They assume the law's form "
    "(a power law in C; for the joint IsoFLOP estimator, profiles of the Chinchilla shape with one skew shared by all "
    "budgets), units independent once trunks are grouped, and the budgets run standing for budgets like them; they "
    "leave out extrapolation beyond the fitted range and errors shared by every run (data, tokenizer, evaluation). "
    "L(N, D) resamples runs (trunks) only."
)


def _names(report: dict) -> list[str]:
    """Dataset names, the top-level one first."""
    return [report["dataset"]] + [n for n in report["datasets"] if n != report["dataset"]]


def _header_md(report: dict, names: list[str]) -> list[str]:
    pv = report["provenance"]
    out = [
        "# Scaling-law report",
        "",
        f"{pv['n_runs']} runs read, {pv['n_excluded']} excluded before fitting, {pv['n_used']} usable"
        + (f" in {len(names)} datasets, fitted separately" if len(names) > 1 else "")
        + f"; 95% intervals are bootstrap percentile intervals ({pv['options']['bootstrap']} resamples), "
        "conditional on the model forms below and on the runs being what their records say.",
        "",
        CONDITIONAL,
        "",
    ]
    return out + RP.metric_lines(report)


def _dataset_laws_md(n: str, d: dict, names: list[str]) -> list[str]:
    fitted = [k for k in ("hparams", "isoflop", "loss", "parametric") if k in d]
    title = "## Laws" + (f" of dataset {md(n)}" if len(names) > 1 or n != "unknown" else "")
    return [f"{title} ({d['n_used']} usable runs; fitted: {', '.join(fitted) or 'none'})", ""] + _laws_md(d) + [""]


def _said_elsewhere(report: dict) -> set[str | None]:
    """Warnings another section of report.md already says, so that each is said once."""
    ds = report["datasets"]
    # A law that was not fitted is said in its laws table.
    said: set[str | None] = {f"{n}: {k} not fitted: {v}" for n, d in ds.items() for k, v in d["skipped"].items()}
    said.add((report.get("repetition") or {}).get("warning"))  # the Data repetition section says it
    return said | {  # a target's flags are said under its extrapolation (report_predictions.target_lines)
        f"{n}: {t}: {f}"
        for n, d in ds.items()
        for t, e in (d.get("extrapolation") or {}).items()
        for f in e.get("flags") or []
    }


def _warnings_md(report: dict) -> list[str]:
    said = _said_elsewhere(report)
    warnings = [w for w in dict.fromkeys(report["warnings"]) if w not in said]
    return ["## Warnings", ""] + [f"- {md(w)}" for w in warnings] + [""] if warnings else []


def _exponent(d: dict, section: str, law: str) -> str:
    return _g(((d.get(section) or {}).get(law) or {}).get("exponent"), ".4f")


def _side_by_side_md(report: dict, names: list[str]) -> list[str]:
    """With several datasets: their exponents and L(N, D) side by side."""
    if len(names) < 2:
        return []
    out = [
        "## Datasets side by side (fitted separately, never pooled)",
        "",
        "| dataset | runs | eta exponent | B exponent | M_opt exponent a | D_opt exponent b |",
        "|---|---|---|---|---|---|",
    ]
    for n in names:
        d = report["datasets"][n]
        out.append(
            f"| {md(n)} | {d['n_used']} | {_exponent(d, 'hparams', 'eta_opt')} | {_exponent(d, 'hparams', 'B_opt')} | "
            f"{_exponent(d, 'isoflop', 'M_opt')} | {_exponent(d, 'isoflop', 'D_opt')} |"
        )
    out += ["", *RP.datasets_nd_table(report)]
    return out + [f"Top-level report.json sections are dataset {md(report['dataset'])}.", ""]


def _recommendation_row(r: dict) -> str:
    s = r["shape"]
    return (
        f"| {r['C']:.3g} | {md(r['M_opt_source'])} | {s['n_layer']} x {s['d_model']}, {s['n_head']} | "
        f"{r['M']:.3g} | {r['D']:.3g} | {_val(r.get('eta_opt'), f='.3g')} | {_seqs(r.get('B_opt'))} | "
        f"{_val(r.get('loss'))} |"
    )


def _recommendations_md(recs: list[dict]) -> list[str]:
    if not recs:
        return []
    out = [
        "## Recommendations for given budgets",
        "",
        "| C | M_opt from | shape (L x d, heads) | M | D | eta | B (seqs) | loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    return out + [_recommendation_row(r) for r in recs] + [""]


def _not_used_md(report: dict) -> list[str]:
    if not (report["excluded"] or report.get("left_out")):
        return []
    return ["## Runs not used", ""] + excluded_md(report["excluded"]) + left_out_md(report.get("left_out") or [])


def _provenance_md(pv: dict) -> list[str]:
    ver = pv["versions"]
    return [
        "## Provenance",
        "",
        f"- inputs: {', '.join(md(x) for x in pv['inputs'])}",
        f"- generated {pv['time']} by analysis.fit (python {ver.get('python', '?')}, numpy {ver['numpy']}, scipy "
        f"{ver['scipy']}, pandas {ver.get('pandas', '?')})",
        f"- options: {md(', '.join(f'{k}={v}' for k, v in pv['options'].items() if k != 'limits'))}",
    ]


def markdown(report: dict) -> str:
    """report.md: the laws first (with intervals, what they rest on, what to try where one is missing), then the
    warnings, the fits in detail with their run tables, recommendations, the runs not used, and provenance."""
    names = _names(report)
    out = _header_md(report, names)
    for n in names:
        out += _dataset_laws_md(n, report["datasets"][n], names)
    out += _warnings_md(report) + repetition_md(report.get("repetition")) + _side_by_side_md(report, names)
    for n in names:
        out += _dataset_md(n, report["datasets"][n])
    out += _recommendations_md(report.get("recommendations") or []) + RP.predictions_md(report)
    out += _not_used_md(report) + _provenance_md(report["provenance"])
    return "\n".join(out) + "\n"


def write_reports(report: dict, out_dir: Path) -> None:
    write_atomic(out_dir / "report.json", json.dumps(jsonable(report), indent=1))
    write_atomic(out_dir / "report.md", markdown(jsonable(report)))
