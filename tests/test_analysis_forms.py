"""Forms other groups publish: windowed IsoFLOP parabolas on wide skewed profiles, Step-Law (N, D)
hparams laws, plain (N, D, loss) grids with ties/fixes/robust refits, unit warnings, report text that adds up."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis import fit_runs
from analysis.fit import main
from analysis.synthetic import Truth, make_study, write_study

SKEWED = Truth(E=1.7, A=100.0, B=3e4, alpha=0.15, beta=0.55)  # |beta - alpha| = 0.4: a strongly skewed profile
PLACEMENTS = {1e18: (-0.4, 2.6), 1e19: (-2.6, 0.4), 1e20: (-1.5, 1.5), 1e21: (-0.9, 2.1)}  # decades around M_opt


def _wide_profiles(noise=3e-4, seed=0) -> pd.DataFrame:
    """13 sizes over 3 decades per budget, the optimum off-centre (as published profiles often are)."""
    rng = np.random.default_rng(seed)
    rows = []
    for C, (lo, hi) in PLACEMENTS.items():
        m0 = np.log10(SKEWED.M_opt(C))
        for x in np.linspace(m0 + lo, m0 + hi, 13):
            loss = float(SKEWED.loss(10**x, C / 10**x)) * (1 + noise * rng.standard_normal())
            rows.append({"sweep": "isoflop", "M": 10**x, "C": C, "loss": loss})
    return pd.DataFrame(rows)


def test_windowed_isoflop_recovers_optima_of_wide_skewed_profiles():
    df = _wide_profiles()
    res = fit_runs(df, bootstrap=200, iso_estimator="window")
    buds = res.sections["isoflop"]["budgets"]
    for b in buds:
        err = abs(np.log10(b["M_opt"] / SKEWED.M_opt(b["C"])))
        assert b["used"] and err < 0.07, (b["C"], err, b["warnings"])
        assert b["window"]["half_width_decades"] == 0.75 and b["window"]["n_sizes"] < 13
    lo, hi = res.laws["M_opt"].ci95["exponent"]
    assert lo <= SKEWED.a <= hi
    # The classic rule (all points) misplaces or rejects the off-centre budgets: the window is what fixes them.
    whole = fit_runs(df, bootstrap=200, iso_estimator="all")
    bad = [
        b
        for b in whole.sections["isoflop"]["budgets"]
        if not b["used"] or abs(np.log10(b["M_opt"] / SKEWED.M_opt(b["C"]))) > 0.1
    ]
    assert len(bad) >= 2


def test_joint_isoflop_fits_wide_skewed_profiles_whole_and_tighter_than_the_window():
    df = _wide_profiles()
    joint = fit_runs(df, bootstrap=200)
    window = fit_runs(df, bootstrap=200, iso_estimator="window")
    iso = joint.sections["isoflop"]
    for b in iso["budgets"]:
        assert b["used"] and abs(np.log10(b["M_opt"] / SKEWED.M_opt(b["C"]))) < 0.03, (b["C"], b["notes"])
        assert b["window"]["n_sizes"] == b["n_sizes"]  # every size: the shared skewed shape needs no window
    # the shape the budgets share is the truth's (alpha, beta enter the profile as M^-alpha and M^beta)
    assert abs(iso["shape"]["alpha"] - SKEWED.alpha) < 0.05 and abs(iso["shape"]["beta"] - SKEWED.beta) < 0.05
    lo, hi = joint.laws["M_opt"].ci95["exponent"]
    wlo, whi = window.laws["M_opt"].ci95["exponent"]
    assert lo <= SKEWED.a <= hi and hi - lo < 0.5 * (whi - wlo)


def test_window_option_is_reported_and_can_be_set(tmp_path):
    path = tmp_path / "wide.csv"
    _wide_profiles().to_csv(path, index=False)
    rep = fit_runs([path], bootstrap=0, iso_window=1.0, iso_estimator="window").report
    assert {b["window"]["half_width_decades"] for b in rep["isoflop"]["budgets"]} == {1.0}
    assert rep["provenance"]["options"]["iso_window"] == 1.0
    assert rep["provenance"]["options"]["iso_estimator"] == "window" and rep["isoflop"]["estimator"] == "window"


def _steplaw_grids(seed=0) -> pd.DataFrame:
    """lr x batch grids at (N, D) pairs varying independently; optimum eta = 2*N^-0.7*D^0.3, B = 0.6*D^0.57."""
    rng = np.random.default_rng(seed)
    rows = []
    for N in (2e8, 5e8, 1.2e9):
        for ratio in (20, 80, 300):
            D = N * ratio
            eta, B = 2.0 * N**-0.7 * D**0.3, 0.6 * D**0.57
            base = 1.8 + 400 / N**0.34 + 2000 / D**0.37
            for i in range(-4, 5):
                for j in range(-3, 4):
                    lr, bs = eta * 2 ** (i / 2 + rng.uniform(-0.1, 0.1)), B * 2 ** (j / 2 + rng.uniform(-0.1, 0.1))
                    loss = base * (1 + 0.01 * np.log(lr / eta) ** 2 + 0.006 * np.log(bs / B) ** 2)
                    rows.append(
                        {
                            "sweep": "hparams",
                            "N": N,
                            "D": D,
                            "lr": lr,
                            "batch_size": bs,
                            "seq_len": 2048,
                            "loss": loss * (1 + 2e-4 * rng.standard_normal()),
                        }
                    )
    return pd.DataFrame(rows)


def test_steplaw_md_form_with_cis_and_penalties_side_by_side():
    res = fit_runs(_steplaw_grids(), bootstrap=200, hparams_form="MD", band=0.01)
    hp = res.sections["hparams"]
    eta, B = hp["MD"]["eta_opt"], hp["MD"]["B_opt"]
    for law, k, v in ((eta, "N_exponent", -0.7), (eta, "D_exponent", 0.3), (B, "D_exponent", 0.57)):
        lo, hi = law.ci95[k]
        assert lo <= v <= hi and hi - lo < 0.2, (k, law.ci95[k])
    assert len(hp["budgets"]) == 9 and all(g["penalty_pct_MD"] is not None for g in hp["budgets"])
    # The C form cannot follow an optimum that depends on N and D separately: its penalties are larger.
    assert np.mean([g["penalty_pct_MD"] for g in hp["budgets"]]) < np.mean([g["penalty_pct"] for g in hp["budgets"]])
    assert res.laws["eta_opt_MD"](5e8, 4e10) == pytest.approx(eta(5e8, 4e10))


def _grid_table(truth: Truth | None = None, n=80, noise=0.003, seed=0) -> pd.DataFrame:
    """Plain (N, D, loss) rows scattered over sizes and token counts: no IsoFLOP structure."""
    truth = truth or Truth()
    rng = np.random.default_rng(seed)
    N, D = 10 ** rng.uniform(7.5, 9.5, n), 10 ** rng.uniform(9, 11.5, n)
    L = (truth.E + truth.A / N**truth.alpha + truth.B / D**truth.beta) * (1 + noise * rng.standard_normal(n))
    return pd.DataFrame({"sweep": "grid", "N": N, "D": D, "loss": L, "run_id": [f"g{i}" for i in range(n)]})


def test_plain_grid_table_fits_parametric_only():
    res = fit_runs(_grid_table(), bootstrap=100)
    s = res.sections
    assert "isoflop" not in s and "hparams" not in s and s["parametric"]["sweeps"] == ["grid"]
    assert set(s["not_applicable"]) >= {"isoflop", "hparams"} and not res.report["warnings"]
    for k, v in (("alpha", 0.34), ("beta", 0.37)):
        lo, hi = s["parametric"]["ci95"][k]
        assert lo <= v <= hi


def test_parametric_ties_and_fixed_E():
    df = _grid_table(Truth(alpha=0.35, beta=0.35))
    tied = fit_runs(df, bootstrap=50, tie=True).laws["L_ND"]
    assert tied.alpha == tied.beta and tied.ci95["alpha"] == tied.ci95["beta"]
    fixed = fit_runs(df, bootstrap=50, fix_E=1.8).sections["parametric"]
    assert fixed["E"] == pytest.approx(1.8, rel=1e-12) and fixed["constraints"] == "E fixed at 1.8"


def test_robust_option_drops_outliers_and_restores_the_law():
    df = _grid_table(noise=0.002, seed=2)
    worst = df.N.nsmallest(5).index
    df.loc[worst, "loss"] *= 1.25  # five badly undertrained small runs, as in Chinchilla's digitised table
    plain = fit_runs(df, bootstrap=100).sections["parametric"]
    res = fit_runs(df, bootstrap=100, robust=3.0)
    robust = res.sections["parametric"]
    notes = res.runs.set_index("run_id").note  # the run table says which runs the robust refit left out
    assert all(notes[r].startswith("parametric: dropped by --robust 3") for r in robust["dropped_runs"])
    assert {e["run_id"] for e in res.report["left_out"]} == set(robust["dropped_runs"])
    assert set(df.run_id[worst]) <= set(robust["dropped_runs"]) and len(robust["dropped_runs"]) <= 7
    lo, hi = robust["ci95"]["alpha"]
    assert lo <= 0.34 <= hi
    assert abs(plain["alpha"] - 0.34) > abs(robust["alpha"] - 0.34)


def test_unit_and_convention_warnings(tmp_path):
    df = _steplaw_grids()
    df.loc[:4, "batch_size"] = 512.0  # sequences, not tokens
    df.loc[5:6, "lr"] = 3.0
    iso = _wide_profiles().assign(M=lambda d: d.M * 1.3)  # C no longer M*D: D is derived, so give D explicitly
    iso["D"] = iso.C / (iso.M / 1.3)
    rep = fit_runs(pd.concat([df, iso]), bootstrap=0).report
    w = " | ".join(rep["warnings"])
    assert "5 run(s) with batch size smaller than seq_len" in w and "2 run(s) with learning rate > 1" in w
    assert "run(s) with C differs from M*D by more than 5%" in w
    grid = _grid_table().assign(C=lambda d: 6 * d.N * d.D * 1.2)  # C given with a convention N does not follow
    w = " | ".join(fit_runs(grid, bootstrap=0).report["warnings"])
    assert "80 row(s) with C differing from 6*N*D by more than 5%" in w


def test_report_text_adds_up_and_lists_every_dataset(tmp_path, capsys):
    budgets = (1e17, 1e18, 1e19, 1e20)
    recs = make_study(budgets=budgets, n_diverged=1, n_failed=0, seed=2, dataset="web@a")
    for r in recs:  # one budget's profile far off its optimum: left out of the IsoFLOP law only
        if r["sweep"] == "isoflop" and r["budget"] == 1e20:
            r["M"] *= 30
            r["D"], r["val_loss"] = r["C"] / r["M"], float(Truth().loss(r["M"], r["C"] / r["M"]))
    recs += [
        r | {"dataset": "code@b", "run_id": r["run_id"] + "b"}
        for r in make_study(budgets=budgets[:3], n_diverged=0, n_failed=0, seed=3)
        if r["sweep"] == "hparams"
    ]
    root = write_study(recs, tmp_path / "runs")
    try:
        rc = main([str(root), "--no-plots", "--bootstrap", "50", "--targets"])
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == 0, err
    rep = json.loads((root / "analysis" / "report.json").read_text())
    pv = rep["provenance"]
    assert pv["n_excluded"] == len(rep["excluded"]) == 4  # the diverged runs only
    assert pv["n_used"] + pv["n_excluded"] == pv["n_runs"]
    assert len(rep["left_out"]) == 9 and all(e["section"] == "isoflop" for e in rep["left_out"])
    md = (root / "analysis" / "report.md").read_text()
    assert f"{pv['n_runs']} runs read, 4 excluded before fitting" in md and "27 of 36 isoflop runs in the law" in md
    runs = pd.read_csv(root / "analysis" / "runs.csv", keep_default_na=False)
    assert set(runs.excluded) == {"", "status diverged"} and (runs.note != "").sum() == 9
    assert "[web@a]" in out and "[code@b]" in out  # the CLI summary lists every dataset
    # code@b has no isoflop runs: that is not applicable, not a warning.
    assert not any("code@b: isoflop" in w or "code@b: parametric" in w for w in rep["warnings"])


def test_budget_recommendation_names_its_M_opt_and_uses_the_data_seq_len(tmp_path):
    recs = [r for r in make_study(budgets=(1e17, 1e18, 1e19), n_diverged=0, n_failed=0) if r["sweep"] == "hparams"]
    rep = fit_runs([write_study(recs, tmp_path / "runs")], bootstrap=0, budgets=[1e21]).report
    assert rep["recommendations"][0]["M_opt_source"].startswith("deepseek")
    assert any("no fitted M_opt law" in w for w in rep["warnings"])
    # The recommended shape trains on the data's sequences (2048 here), not the target config's (4096).
    r = rep["recommendations"][0]
    assert r["shape"]["seq_len"] == 2048 and r["B_opt"]["sequences"] == pytest.approx(r["B_opt"]["value"] / 2048)
