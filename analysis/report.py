"""Report writers: report.json (atomic, numpy-free) and report.md (human)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from scaling.atomic import write_atomic
from scaling.laws import format_law


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


def _dataset_md(name: str, r: dict) -> list[str]:
    ns = r.get("n_section") or {}
    out = [f"## Dataset `{name}` ({r['n_used']} usable runs)", ""]
    for sec, why in (r.get("skipped") or {}).items():
        out.append(f"- **{sec} not fitted**: {why}")
    for sec, why in (r.get("not_applicable") or {}).items():
        out.append(f"- {sec}: not applicable ({why})")
    hp = r.get("hparams")
    if hp:
        md = hp.get("MD")
        out += [
            "",
            f"### Hyper-parameters (near-optimal band {hp['band']:.2%}; {ns.get('hparams', '?')} runs in "
            f"{len(hp['budgets'])} lr x batch grids, one model each unless noted)",
            "",
            f"- C form: eta_opt = {_law(hp['eta_opt'])}",
            f"- C form: B_opt = {_law(hp['B_opt'])} tokens",
        ]
        if md:
            out += [f"- MD form: eta_opt = {_nd(md['eta_opt'])}", f"- MD form: B_opt = {_nd(md['B_opt'])} tokens"]
        else:
            out.append(f"- MD form not fitted: {hp.get('MD_skipped', '-')}")
        out += [f"- CI: {v['text']}" for v in (hp.get("between") or {}).values()]
        out += [
            f"- extrapolation uses the {hp.get('form', 'C')} form",
            "",
            "| C | M | runs | in band | best lr | best B | C form lr | C form B | penalty % (C) | "
            "penalty % (MD) | note |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        out += [
            f"| {b['C']:.3g} | {_g(b.get('M'), '.3g')} | {b['n_runs']} | {b['n_band']} | {b['best_lr']:.3g} | "
            f"{b['best_batch_size']:.3g} | {b['eta_fit']:.3g} | {b['B_fit']:.3g} | {_g(b['penalty_pct'], '.3f')} | "
            f"{_g(b.get('penalty_pct_MD'), '.3f')} | {b.get('note', '')} |"
            for b in sorted(hp["budgets"], key=lambda b: (b["C"], b["M"]))
        ]
    iso = r.get("isoflop")
    if iso:
        n_used = sum(b["n_runs"] for b in iso["budgets"] if b["used"])
        n_all = sum(b["n_runs"] for b in iso["budgets"])
        out += [
            "",
            f"### IsoFLOP ({n_used} of {n_all} isoflop runs in the law; the runs of budgets marked 'no' "
            f"are left out of this law only)",
            "",
            f"- M_opt = {_law(iso.get('M_opt'))}",
            f"- D_opt = {_law(iso.get('D_opt'))}",
            f"- estimator: {iso.get('estimator', 'window')} ({iso.get('estimator_text', '')})",
        ]
        if iso.get("between"):
            out.append(f"- CI: {iso['between']['text']}")
        out += [
            "",
            "| C | runs | fitted window (M) | M_opt | D_opt | loss_min | used | warnings |",
            "|---|---|---|---|---|---|---|---|",
        ]
        out += [
            f"| {b['C']:.3g} | {b['n_runs']} | {_window(b.get('window'))} | {_g(b['M_opt'])} | {_g(b['D_opt'])} | "
            f"{_g(b['loss_min'])} | {'yes' if b['used'] else 'no'} | {'; '.join(b['warnings'] + b.get('notes', []))} |"
            for b in iso["budgets"]
        ]
    conv = r.get("conventions")
    if conv:
        out += [
            "",
            "### Counting conventions (IsoFLOP exponents with model scale M, 6*N1, 6*N2)",
            "",
            "| scale | M_opt exponent a | D_opt exponent b |",
            "|---|---|---|",
        ]
        out += [
            f"| {k} | {_law(v.get('M_opt'))} | {_law(v.get('D_opt'))} |"
            if "M_opt" in v
            else f"| {k} | {v.get('skipped', '-')} | |"
            for k, v in conv.items()
        ]
    loss = r.get("loss")
    if loss:
        out += ["", "### Loss curve L(C)", ""]
        if "saturating" in loss:
            s = loss["saturating"]
            out.append(
                f"- E + A*C^-alpha: E={s['E']:.4g}, A={s['A']:.4g}, alpha={s['alpha']:.4f} (rmse {s['rmse']:.2g})"
            )
        p = loss["power"]
        out.append(f"- k*C^-alpha: k={p['k']:.4g}, alpha={p['alpha']:.4f} (rmse {p['rmse']:.2g})")
        if loss.get("between"):
            out.append(f"- CI: {loss['between']['text']}")
        bt = loss.get("backtest") or {}
        if "loss_pred" in bt:
            out.append(
                f"- backtest (largest budget C={bt['held_out_C']:.3g} held out): loss error "
                f"{bt['loss_err_pct']:+.2f}%, M_opt error {bt['M_opt_err_pct']:+.1f}%"
            )
    par = r.get("parametric")
    if par:
        ci = par.get("ci95", {})
        out += [
            "",
            "### Parametric L(N, D) = E + A/N^alpha + B/D^beta (Epoch-corrected Approach 3)",
            "",
            f"{par['n_runs']} runs ({', '.join(par.get('sweeps', []))}); constraints: {par.get('constraints', 'none')}"
            + (
                f"; robust refit (|log residual| > {par['robust']:g} robust SD) dropped "
                f"{len(par.get('dropped_runs', []))}: {', '.join(par.get('dropped_runs', [])[:20])}"
                if par.get("robust")
                else ""
            ),
            "",
            "| E | A | B | alpha | beta | a = beta/(alpha+beta) |",
            "|---|---|---|---|---|---|",
            "| "
            + " | ".join(_val({"value": par[k], "ci95": ci.get(k)}) for k in ("E", "A", "B", "alpha", "beta", "a"))
            + " |",
        ]
    ex = r.get("extrapolation")
    if ex:
        if r.get("extrapolation_conventions"):
            out += ["", f"**Conventions:** {r['extrapolation_conventions']}"]
        out += [
            "",
            "### Extrapolation",
            "",
            "| target | C | eta_opt | B_opt (seqs) | loss | compute-optimal D | "
            "DeepSeek ref eta | ref B (seqs) | paper lr / B |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for t, e in ex.items():
            ref, p = e["reference"], e["reference"].get("paper", {})
            B = e.get("B_opt")
            out.append(
                f"| {t} | {e['C']:.3g} | {_val(e.get('eta_opt'), f='.3g')} | "
                f"{_val({'value': B['sequences'], 'ci95': B.get('sequences_ci95')}, f='.4g') if B else '-'} | "
                f"{_val(e.get('loss'))} | {_val((e.get('compute_optimal') or {}).get('D'), f='.3g')} | "
                f"{ref['eta_opt']['value']:.3g} | {ref['B_opt']['sequences']:.4g} | "
                f"{p.get('lr', '-')} / {p.get('batch_sequences', '-')} |"
            )
    return out + [""]


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


def markdown(report: dict) -> str:
    pv = report["provenance"]
    out = [
        "# Scaling-law report",
        "",
        f"Inputs: {', '.join(map(str, pv['inputs']))}  ",
        f"Generated {pv['time']} by analysis.fit (numpy {pv['versions']['numpy']}, scipy {pv['versions']['scipy']}); "
        f"{pv['n_runs']} runs read, {pv['n_excluded']} excluded before fitting (listed at the end), {pv['n_used']} "
        f"usable; each section says how many of those it used. Bootstrap {pv['options']['bootstrap']} resamples, "
        f"95% percentile CIs.",
        "",
        CONDITIONAL,
        "",
    ]
    if report["warnings"]:
        out += ["**Warnings**", ""] + [f"- {w}" for w in report["warnings"]] + [""]
    if len(report["datasets"]) > 1:
        out += [
            "## Datasets side by side (fitted separately, never pooled)",
            "",
            "| dataset | runs | eta exponent | B exponent | M_opt exponent a | D_opt exponent b |",
            "|---|---|---|---|---|---|",
        ]
        for n, d in report["datasets"].items():

            def e(s: str, k: str, d: dict = d) -> str:
                return _g(((d.get(s) or {}).get(k) or {}).get("exponent"), ".4f")

            out.append(
                f"| {n} | {d['n_used']} | {e('hparams', 'eta_opt')} | {e('hparams', 'B_opt')} | "
                f"{e('isoflop', 'M_opt')} | {e('isoflop', 'D_opt')} |"
            )
        out += ["", f"Top-level report.json sections are dataset `{report['dataset']}`.", ""]
    for n, d in report["datasets"].items():
        out += _dataset_md(n, d)
    recs = report.get("recommendations") or []
    if recs:
        out += [
            "## Recommendations for given budgets",
            "",
            "| C | M_opt from | shape (L x d, heads) | M | D | eta | B (seqs) | loss |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in recs:
            s = r["shape"]
            out.append(
                f"| {r['C']:.3g} | {r['M_opt_source']} | {s['n_layer']} x {s['d_model']}, {s['n_head']} | "
                f"{r['M']:.3g} | {r['D']:.3g} | "
                f"{_val(r.get('eta_opt'), f='.3g')} | {_g((r.get('B_opt') or {}).get('sequences'))} | "
                f"{_val(r.get('loss'))} |"
            )
        out.append("")
    if report["excluded"]:
        out += ["## Excluded runs (never used)", "", "| run | reason |", "|---|---|"]
        out += [f"| {e['run_id']} | {e['reason']} |" for e in report["excluded"][:200]]
        if len(report["excluded"]) > 200:
            out.append(f"| ... | {len(report['excluded']) - 200} more in runs.csv |")
        out.append("")
    left = report.get("left_out") or []
    if left:
        out += ["## Runs left out of one law (used by the others)", "", "| run | law | reason |", "|---|---|---|"]
        out += [f"| {e['run_id']} | {e['section']} | {e['reason']} |" for e in left[:200]]
        if len(left) > 200:
            out.append(f"| ... | | {len(left) - 200} more in runs.csv (column `note`) |")
    return "\n".join(out) + "\n"


def write_reports(report: dict, out_dir: Path) -> None:
    write_atomic(out_dir / "report.json", json.dumps(jsonable(report), indent=1))
    write_atomic(out_dir / "report.md", markdown(jsonable(report)))
