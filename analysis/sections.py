"""Every law on one dataset's usable runs: the sections of the report (hparams, isoflop, loss, conventions,
parametric), each absent with its reason when the data cannot support it.

A section whose sweep kind is simply not in the data (no hparams runs in an IsoFLOP table) is "not applicable",
which is not a warning; a section that had runs but could not be fitted is "skipped" with the reason.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import between as bt
from analysis.hparams import HparamsRuns, fit_hparams
from analysis.isoflop import IsoRuns, fit_isoflop
from analysis.lcpoints import loss_points
from analysis.losscurve import backtest, choose_form, fit_losscurve, predict
from analysis.options import DEFAULT_OPTIONS, FitOptions
from analysis.parametric import fit_parametric


def grid_keys(hp: pd.DataFrame) -> np.ndarray:
    """One key per lr x batch grid: the `grid` column where given, else the model (M) at its budget."""
    auto = [f"C={b:.6g} M={m:.6g}" for b, m in zip(hp.budget_group, hp.M)]
    return np.array([g if isinstance(g, str) and g else a for g, a in zip(hp.grid, auto)])


def _trunks(df: pd.DataFrame):
    """Each run's trunk id (None for runs trained alone), or None when no run shares a trunk."""
    if "trunk" not in df or df.trunk.isna().all():
        return None
    return df.trunk.to_numpy(object)


def _hparams(hp: pd.DataFrame, o: FitOptions, res: dict) -> None:
    runs = HparamsRuns(
        grid_keys(hp), hp.budget_group, hp.C, hp.lr, hp.batch_size, hp.loss, N=hp.N, D=hp.D, M=hp.M, trunk=_trunks(hp)
    )
    h = fit_hparams(runs, o.band, o.bootstrap, o.seed, o.min_budgets)
    res["in_band"] = pd.Series(h.pop("in_band"), index=hp.index)
    if "skipped" in h:
        res["skipped"]["hparams"] = h["skipped"]
        return
    h["form"] = o.hparams_form
    if o.hparams_form == "MD" and "MD" not in h:
        h["form"] = "C"
        res["warnings"].append(f"--hparams-form MD: {h['MD_skipped']}; extrapolating with the C form")
    mixed = [b for b in h["budgets"] if b["n_models"] > 1]
    if mixed:
        res["warnings"].append(
            f"{len(mixed)} hparams grid(s) mix model sizes (e.g. grid {mixed[0]['grid']}: "
            f"{mixed[0]['n_models']} sizes); their near-optimal bands pool different models"
        )
    edge = [b for b in h["budgets"] if b["grid_warnings"]]
    if edge:
        res["warnings"].append(
            f"{len(edge)} of {len(h['budgets'])} hparams grid(s) do not bracket their optimum (e.g. grid "
            f"{edge[0]['grid']} at C={edge[0]['C']:.3g}: {', '.join(edge[0]['grid_warnings'])}): there eta_opt/B_opt "
            f"are bounded by the grid, not located"
        )
    res["hparams"] = h


def _isoflop(iso: pd.DataFrame, o: FitOptions, res: dict) -> None:
    b, C, L = iso.budget_group.to_numpy(), iso.C.to_numpy(), iso.loss.to_numpy()
    trunk = _trunks(iso)

    def fit(scale: np.ndarray, C: np.ndarray, between_from: dict | None = None) -> dict:
        return fit_isoflop(
            IsoRuns(b, scale, C, L, trunk),
            o.bootstrap,
            o.seed,
            o.min_budgets,
            off_centre=o.off_centre,
            window=o.iso_window,
            estimator=o.iso_estimator,
            between_from=between_from,
        )

    r = fit(iso.M.to_numpy(), C)
    for bud in r["budgets"]:
        if not bud["used"]:
            for i in iso.index[b == bud["budget"]]:
                why = "; ".join(bud["warnings"])
                res["run_notes"].setdefault(i, []).append(
                    ("isoflop", f"budget C={bud['C']:.3g} left out of the IsoFLOP law: {why}")
                )
    res["iso_budgets"] = r["budgets"]  # L(C) reads every budget's minimum, used by the M_opt law or not
    if "skipped" in r:
        res["skipped"]["isoflop"] = r["skipped"]
        res["isoflop_budgets"] = r["budgets"]  # the per-budget fits still explain the failure (report, figures)
    else:
        res["isoflop"] = r
    conv = {}
    for name, scale in (("M", iso.M), ("6N1", 6 * iso.N1), ("6N2", 6 * iso.N2)):
        if not np.all(np.isfinite(scale)):
            conv[name] = {"skipped": f"column {name.lstrip('6')} missing for some isoflop runs"}
            continue
        # the other conventions rescale the same runs: they take the budgets' scatter from the M fit
        c = r if name == "M" else fit(scale.to_numpy(), scale.to_numpy() * iso.D.to_numpy(), r.get("boot_between"))
        conv[name] = {k: c[k] for k in ("M_opt", "D_opt")} if "M_opt" in c else {"skipped": c["skipped"]}
    if any("M_opt" in v for k, v in conv.items() if k != "M"):
        res["conventions"] = conv


def loss_between(Cs, Ls, boot_L: np.ndarray, loss: dict, refit, seed: int) -> dict:
    """L(C) with the scatter of the budgets' minimum losses about its chosen form beyond their run-level precision
    (a budget's own data order or hparams move its whole profile) drawn into every resample (analysis.between):
    `refit(boot_L)` refits with the perturbed resamples, whose intervals replace the fit's (its point fit and its
    chosen form stay)."""
    Cs, Ls = np.asarray(Cs, float), np.asarray(Ls, float)
    p = {"saturating": 3, "saturating_E": 2, "power": 2}[loss["form"]]
    info = bt.scatter_residuals(Ls - predict(loss, Cs), bt.robust_var(boot_L), p)
    info |= {"added": True, "text": bt.describe(info, "L(C)")}
    if info["df"] >= 1:
        new = refit(boot_L + bt.draw_effects(info, len(boot_L), np.random.default_rng(seed)))
        for k, v in new.items():
            if k.startswith("boot_"):
                loss[k] = v
            elif isinstance(v, dict) and "ci95" in v and isinstance(loss.get(k), dict):
                loss[k]["ci95"] = v["ci95"]
    return loss | {"between": bt.public(info)}


def _losscurve(budgets: list[dict], o: FitOptions, res: dict) -> None:
    """L(C) on every budget whose minimum is well determined (see analysis.lcpoints), its form chosen by the
    backtest and the data (analysis.losscurve.choose_form), with the E of L(N, D) as a candidate floor, and the
    scatter between budgets in its intervals (loss_between)."""
    pts, dropped = loss_points(budgets, o.bootstrap)
    par = res.get("parametric") or {}
    E = par.get("E")
    boot_E = np.exp(par["boot_theta"][:, 2]) if "boot_theta" in par and o.fix_E is None else None
    Cs, Ls, Ms = (np.array([x[k] for x in pts], float) for k in ("C", "loss_min", "M_opt"))
    boot_L = np.stack([x["boot_loss"] for x in pts], -1) if o.bootstrap and pts else None
    loss = fit_losscurve(Cs, Ls, boot_L, o.min_budgets, E_fixed=E, boot_E=boot_E)
    if "skipped" in loss:
        gone = "; ".join(f"C={d['C']:.3g}: {d['why']}" for d in dropped)
        res["skipped"]["loss"] = loss["skipped"] + (f" (left out: {gone})" if gone else "")
        return
    back = backtest(Cs, Ls, Ms, o.min_budgets, E_fixed=E)
    choose_form(loss, back)
    if "preds" in back and loss["form"] in back["preds"]:
        back["form"], back["loss_pred"] = loss["form"], back["preds"][loss["form"]]
        back["loss_err_pct"] = back["errors_pct"][loss["form"]]
    if boot_L is not None:
        loss = loss_between(
            Cs,
            Ls,
            boot_L,
            loss,
            lambda b: fit_losscurve(Cs, Ls, b, o.min_budgets, E_fixed=E, boot_E=boot_E),
            o.seed + 1,
        )
    loss["budgets"] = [{k: x[k] for k in ("C", "loss_min", "in_M_opt_law")} for x in pts]
    loss["dropped_budgets"] = dropped
    res["loss"] = loss | {"backtest": back}


def _parametric(pts: pd.DataFrame, o: FitOptions, res: dict) -> None:
    try:
        p = fit_parametric(
            pts.N.to_numpy(),
            pts.D.to_numpy(),
            pts.loss.to_numpy(),
            o.bootstrap,
            o.seed,
            tie=o.tie,
            fix_E=o.fix_E,
            robust=o.robust,
            trunk=_trunks(pts),
        )
    except (np.linalg.LinAlgError, FloatingPointError) as e:  # the other laws still stand; say why this one is absent
        p = {"skipped": f"the parametric fit failed numerically ({e}); too few or too degenerate runs"}
    if "skipped" in p:
        res["skipped"]["parametric"] = p["skipped"]
        return
    dropped = p.pop("dropped")
    p["dropped_runs"] = [str(pts.run_id.iloc[i]) for i in dropped]
    for i in pts.index[dropped]:
        res["run_notes"].setdefault(i, []).append(
            ("parametric", f"dropped by --robust {o.robust:g}: log residual beyond {o.robust:g} robust SDs")
        )
    p["sweeps"] = sorted(set(pts.sweep))
    kept = np.setdiff1d(np.arange(len(pts)), dropped)
    N, D = pts.N.to_numpy()[kept], pts.D.to_numpy()[kept]
    # What the fit rests on, for the horizon checks of predictions (C = 6*N*D in the fit's convention).
    p["N_range"], p["D_range"] = [float(N.min()), float(N.max())], [float(D.min()), float(D.max())]
    p["C_range"] = [float((6 * N * D).min()), float((6 * N * D).max())]
    res["parametric"] = p


def fit_dataset(df: pd.DataFrame, o: FitOptions = DEFAULT_OPTIONS) -> dict:
    """Every law on one dataset's usable runs (column `budget_group` set). Keys "boot" and "boot_*" hold
    bootstrap samples; "in_band" and "run_notes" ({row: [(section, reason)]}: runs left out of one law) are
    per-run results the caller moves into the run table."""
    res: dict = {"n_used": int(len(df)), "skipped": {}, "not_applicable": {}, "run_notes": {}, "warnings": []}
    hp, iso = df[df.sweep == "hparams"], df[df.sweep == "isoflop"]
    if hp.empty:
        res["not_applicable"]["hparams"] = "no hparams runs"
    else:
        _hparams(hp, o, res)
    if iso.empty:
        res["not_applicable"]["isoflop"] = "no isoflop runs"
    else:
        _isoflop(iso, o, res)
    pts = df[df.sweep.isin(("isoflop", "grid"))]
    if pts.empty:
        res["not_applicable"]["parametric"] = "no isoflop or grid runs"
    else:
        _parametric(pts, o, res)
    if "iso_budgets" in res:
        _losscurve(res.pop("iso_budgets"), o, res)
    res["n_section"] = {
        "hparams": int(len(hp)),
        "isoflop": int(len(iso)) - sum(any(s == "isoflop" for s, _ in v) for v in res["run_notes"].values()),
        "parametric": int((res.get("parametric") or {}).get("n_runs", 0)),
    }
    return res
