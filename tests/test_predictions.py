"""Predictions from the fitted laws: L(N, D) with intervals at any (N, D), the planning answers, the
horizon and irreducible-loss flags, the L(C) form chosen by the backtest and the data, and the report/CLI text."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis import fit_runs
from analysis.fit import main
from analysis.planning import one_prediction, parse_request
from analysis.predict import HORIZON, checks
from analysis.report import jsonable, markdown
from analysis.synthetic import Truth, make_study, write_study
from tests.helpers import shifted_isoflop_study

TRUTH = Truth()


def _grid(n_sizes=6, ratios=(5, 10, 20, 40, 80, 160), noise=0.003, seed=0, truth=TRUTH) -> pd.DataFrame:
    """An over-training grid: every size at every tokens-per-parameter ratio, (N, D, loss) rows only."""
    rng = np.random.default_rng(seed)
    N, R = np.meshgrid(np.geomspace(2e7, 1e9, n_sizes), np.asarray(ratios, float))
    N, D = N.ravel(), (N * R).ravel()
    L = truth.loss(6 * N, D) * (1 + noise * rng.standard_normal(N.size))
    return pd.DataFrame({"sweep": "grid", "N": N, "D": D, "loss": L, "run_id": [f"g{i}" for i in range(N.size)]})


def _md(res) -> str:
    """report.md as the CLI writes it, without writing the figures."""
    return markdown(jsonable(res.report))


@pytest.fixture(scope="module")
def grid_res():
    return fit_runs(_grid(), bootstrap=300, predict=["3e9,6e10", (2e8, 4e9)], targets="deepseek_7b")


def test_predict_nd_interval_in_report_and_api(grid_res):
    preds = grid_res.report["predictions"]
    assert [(p["N"], p["D"]) for p in preds] == [(3e9, 6e10), (2e8, 4e9)]
    L = grid_res.laws["L_ND"]
    for p in preds:
        v, (lo, hi) = p["loss"]["value"], p["loss"]["ci95"]
        assert lo < v < hi and v == pytest.approx(L(p["N"], p["D"]))
        assert lo <= float(TRUTH.loss(6 * p["N"], p["D"])) <= hi  # the interval holds the truth
        assert L.predict(p["N"], p["D"]) == p["loss"]
    # The documented way to the interval at any (N, D), broadcast like the law itself.
    lo, hi = L.interval(np.array([3e9, 2e8]), np.array([6e10, 4e9]))
    assert lo.shape == (2,) and list(lo) == [p["loss"]["ci95"][0] for p in preds]
    far = L.interval(1e11, 1e13)  # further from the data: a wider interval
    assert far[1] - far[0] > hi[1] - lo[1]


def test_targets_on_an_nd_table_say_why_there_is_no_lc_loss(grid_res):
    e = grid_res.sections["extrapolation"]["deepseek_7b"]
    assert e.get("loss") is None and "no L(C)" in e["loss_C_why"] and "isoflop" in e["loss_C_why"]
    assert "see loss_ND" in e["loss_C_why"]
    lo, hi = e["loss_ND"]["ci95"]
    assert lo <= e["loss_ND"]["value"] <= hi and e["loss_ND"]["N"] == pytest.approx(e["M"] / 6)


def test_compute_optimal_and_the_d_for_a_built_model(grid_res):
    L = grid_res.laws["L_ND"]
    C = 1e21
    co = L.compute_optimal(C)
    N_true = float(TRUTH.M_opt(C)) / 6
    assert co["N"]["ci95"][0] <= N_true <= co["N"]["ci95"][1]
    assert co["N"]["value"] * co["D"]["value"] * 6 == pytest.approx(C)
    # The budget at which N is compute-optimal inverts N_opt(C); its D is C/(6N).
    plan = L.plan(1e9, C=C)
    c = plan["compute_optimal"]
    assert L.compute_optimal(c["C"]["value"])["N"]["value"] == pytest.approx(1e9, rel=1e-6)
    assert c["D"]["value"] == pytest.approx(c["C"]["value"] / 6e9)
    # A 1e9 model (below N_opt at 1e21) matches the compute-optimal loss only when trained longer than C buys it.
    b = plan["at_budget"]
    assert b["D"] == pytest.approx(C / 6e9) and b["loss"]["value"] > b["compute_optimal_loss"]["value"]
    assert b["D_loss_matched"]["value"] > b["D"]
    assert L(1e9, b["D_loss_matched"]["value"]) == pytest.approx(b["compute_optimal_loss"]["value"], rel=1e-9)
    # A model too small to ever reach that loss: never, with the reason.
    tiny = L.plan(1e6, C=C)["at_budget"]
    assert np.isinf(tiny["D_loss_matched"]["value"]) and "cannot match" in tiny["never"]


def test_checks_flag_the_horizon_and_losses_below_the_irreducible_loss():
    r = {"parametric": {"E": 2.29, "ci95": {"E": [1.94, 2.47]}, "C_range": [1e15, 1e17]}}
    h, flags = checks(r, 1e23, {"L(C) (power)": {"value": 0.351}, "L(N, D)": {"value": 2.4}})
    assert h["beyond"] and h["ratio"] == pytest.approx(1e6)
    assert any(f"beyond the {HORIZON:g}x" in f for f in flags)
    below = [f for f in flags if "below the study's irreducible loss" in f]
    assert len(below) == 1 and "0.351" in below[0] and "E=2.29 [1.94, 2.47]" in below[0]
    h, flags = checks(r, 5e19, {"L(N, D)": {"value": 2.4}})
    assert not h["beyond"] and h["ratio"] == pytest.approx(500) and flags == []


def test_a_request_without_its_law_says_why():
    r = {"skipped": {"parametric": "needs >= 10 runs"}, "not_applicable": {"loss": "no isoflop runs"}}
    p = one_prediction(r, (1e9, 2e10))
    assert p["loss"] is None and "needs >= 10 runs" in p["loss_why"] and "no isoflop runs" in p["loss_C_why"]


@pytest.mark.parametrize("bad", ["1e9,abc", "1,2,3", "-1e9,2e10", "", "inf"])
def test_bad_predict_request_is_one_line(bad):
    with pytest.raises(ValueError, match="--predict"):
        parse_request(bad)
    assert parse_request("7e9,2e12") == (7e9, 2e12) and parse_request(1e23) == (1e23,)


def test_cli_prints_every_prediction_with_its_interval_and_flags(tmp_path, capsys):
    path = tmp_path / "grid.csv"
    _grid().to_csv(path, index=False)
    try:
        rc = main(
            [
                str(path),
                "--bootstrap",
                "100",
                "--no-plots",
                "--predict",
                "3e9,6e10",
                "--predict",
                "1e26",
                "--size",
                "5e8",
            ]
        )
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == 0, err
    line = next(x for x in out.splitlines() if "predict N=3e+09" in x)
    assert "loss L(N, D) " in line and "[" in line  # the value and its interval
    far = next(x for x in out.splitlines() if "predict C=1e+26" in x)
    assert "EXTRAPOLATED" in far and "optimum N" in far and "[" in far
    assert "beyond the 1000x" in err  # also a warning
    rep = json.loads((tmp_path / "grid_analysis" / "report.json").read_text())
    p = rep["predictions"][0]
    assert set(p) >= {"N", "D", "loss"} and set(p["loss"]) == {"value", "ci95"}
    assert rep["sizes"][0]["compute_optimal"]["D"]["ci95"][0] > 0
    md = (tmp_path / "grid_analysis" / "report.md").read_text()
    sec = md[md.index("## Predictions") :]
    assert "| 3e+09 | 6e+10 | 1.08e+21 |" in sec and "**(> 1000x)**" in sec and "**Flags**" in sec
    assert "Model sizes you built" in sec


def test_bad_predict_on_the_cli_is_exit_2_before_writing(tmp_path, capsys):
    path = tmp_path / "grid.csv"
    _grid().to_csv(path, index=False)
    with pytest.raises(SystemExit) as e:
        main([str(path), "--no-plots", "--predict", "3e9;6e10"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "--predict '3e9;6e10'" in err
    assert not (tmp_path / "grid_analysis").exists()


def test_three_budgets_take_the_floor_of_l_nd_and_stay_above_it(tmp_path):
    """The CPU demo's case: three IsoFLOP budgets, a target eleven decades away. L(C) may not fall below E."""
    recs = make_study(budgets=(1e15, 1e16, 1e17), n_diverged=0, n_failed=0, seed=4)
    res = fit_runs(write_study(recs, tmp_path / "runs"), bootstrap=200, budgets=1e24)
    loss, par = res.sections["loss"], res.sections["parametric"]
    assert loss["form"] == "saturating_E" and "irreducible loss of L(N, D)" in loss["form_why"]
    for t, e in res.sections["extrapolation"].items():
        assert e["loss"]["value"] > par["E"] and e["loss"]["ci95"][0] > 0
        assert e["horizon"]["beyond"] and any("beyond the 1000x" in f for f in e["flags"]), t
    assert any("deepseek_7b: C=" in w and "beyond the 1000x" in w for w in res.report["warnings"])
    rec = res.report["recommendations"][0]
    assert rec["horizon"]["beyond"] and {"N", "D", "loss"} <= set(rec["L_ND"])


def test_lc_form_chosen_by_the_backtest_with_reasons(tmp_path):
    res = fit_runs(write_study(make_study(seed=1), tmp_path / "runs"), bootstrap=100, targets=())
    loss = res.sections["loss"]
    errs = loss["backtest"]["errors_pct"]
    assert set(errs) == {"saturating", "saturating_E", "power"}
    assert loss["form"] == min(errs, key=lambda f: abs(errs[f]))
    assert loss["form_why"].startswith("chosen by the backtest") and loss["backtest"]["form"] == loss["form"]
    assert res.laws["L_C"].predict(1e21)["ci95"][0] < res.laws["L_C"](1e21) < res.laws["L_C"].predict(1e21)["ci95"][1]


def test_a_budget_left_out_of_the_m_opt_law_keeps_its_minimum_in_lc(tmp_path):
    recs = shifted_isoflop_study({1e20: 1.0, 1e21: 0.5})  # optimum beyond the grid's edge / off-centre but inside it
    # the window estimator leaves the off-centre budget out of the M_opt law (the joint one keeps it)
    res = fit_runs(write_study(recs, tmp_path / "runs"), bootstrap=100, targets=(), iso_estimator="window")
    iso, loss = res.sections["isoflop"], res.sections["loss"]
    assert sorted(b["C"] for b in iso["budgets"] if not b["used"]) == pytest.approx([1e20, 1e21])
    kept = {round(np.log10(b["C"])): b["in_M_opt_law"] for b in loss["budgets"]}
    assert kept == {17: True, 18: True, 19: True, 21: False}
    (gone,) = loss["dropped_budgets"]
    assert gone["C"] == pytest.approx(1e20) and "outside the fitted sizes" in gone["why"]
    md = _md(res)
    assert "kept although left out of the M_opt law" in md and "left out of L(C) too" in md


def test_metric_bpb_fits_bits_per_byte_and_says_so(tmp_path):
    recs = make_study(budgets=(1e17, 1e18, 1e19, 1e20), n_diverged=0, n_failed=0, seed=3)
    per_byte = 1 / (np.log(2) * 4.2)  # nats/token -> bits/byte at 4.2 bytes per token
    for r in recs:
        r["val_bpb"] = r["val_loss"] * per_byte
    recs[0]["val_bpb"] = None  # a record without bpb: excluded by name, only under --metric bpb
    root = write_study(recs, tmp_path / "runs")
    nats = fit_runs(root, bootstrap=0, targets=())
    bpb = fit_runs(root, bootstrap=0, targets=(), metric="bpb")
    assert bpb.report["metric"] == {"name": "bpb", "unit": "bits/byte", "label": "validation bits per byte"}
    assert nats.report["metric"]["unit"] == "nats/token"
    assert bpb.laws["L_ND"].E == pytest.approx(nats.laws["L_ND"].E * per_byte, rel=0.05)
    assert bpb.laws["L_ND"].alpha == pytest.approx(nats.laws["L_ND"].alpha, rel=0.1)
    why = bpb.runs.set_index("run_id").excluded
    assert why[recs[0]["run_id"]].startswith("no bits per byte for --metric bpb") and (why != "").sum() == 1
    md = _md(bpb)
    assert "Fitted metric: validation bits per byte (`--metric bpb`); every loss below is in bits/byte." in md
    bpb_t = fit_runs(root, bootstrap=0, metric="bpb", targets="deepseek_7b")
    assert "DeepSeek fits L(C) on bits per byte, these losses are bits/byte" in _md(bpb_t)
    assert bpb.plot("isoflop").axes[0].get_ylabel() == "validation bits per byte"
    # A table gives bpb as a column; without it --metric bpb names the missing column.
    df = pd.DataFrame({"sweep": "grid", "N": [1e8], "D": [1e9], "loss": [3.0]})
    with pytest.raises(ValueError, match=r"missing required column\(s\): bpb"):
        fit_runs(df, metric="bpb")
    with pytest.raises(ValueError, match="--metric 'nats'"):
        fit_runs(df, metric="nats")


def test_table_labels_never_claim_nats_and_keep_a_free_loss_kind():
    df = _grid().assign(loss_kind="smoothed train")
    res = fit_runs(df, bootstrap=0)
    lab = res.plot("fit_diagnostic").axes[0].get_ylabel()
    assert lab == "observed loss (smoothed train) (unit not stated)"
    assert "nats" not in res.plot("iso_loss").axes[-1].get_ylabel()  # the colorbar's label


def test_repeated_run_ids_warn():
    df = _grid()
    df.loc[3, "run_id"] = df.loc[2, "run_id"]
    w = fit_runs(df, bootstrap=0).report["warnings"]
    assert any("1 run_id(s) name more than one row, e.g. 'g2' (2 rows)" in x for x in w)


def test_parametric_minimum_runs_is_the_first_thing_its_error_says():
    with pytest.raises(ValueError) as e:
        fit_runs(_grid().iloc[:7], bootstrap=0)
    assert "parametric: needs >= 10 runs (MIN_RUNS" in str(e.value) and "got 7" in str(e.value)
    res = fit_runs(_grid().iloc[:9], bootstrap=0, tie=True)  # one fewer per constraint
    assert res.sections["parametric"]["n_runs"] == 9


def test_datasets_side_by_side_show_l_nd(tmp_path):
    df = pd.concat([_grid().assign(dataset="web"), _grid(truth=Truth(alpha=0.3), seed=1).assign(dataset="code")])
    res = fit_runs(df, bootstrap=50)
    md = _md(res)
    assert "L(N, D) = E + A/N^alpha + B/D^beta per dataset" in md
    assert f"| code | 36 | {res.for_dataset('code').laws['L_ND'].E:.4g} [" in md


def test_deepseek_line_says_when_the_table_uses_another_model_scale(tmp_path):
    recs = [r for r in make_study(budgets=(1e17, 1e18, 1e19, 1e20), seed=5) if r["sweep"] == "isoflop"]
    df = pd.DataFrame({"sweep": "isoflop", "N": [r["M"] / 6 for r in recs], "C": [r["C"] for r in recs]})
    df["loss"] = [r["val_loss"] for r in recs]
    fig = fit_runs(df, bootstrap=0).plot("optimal_scaling")
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("DeepSeek" in t and "this table's scale is 6N" in t for t in texts)
    rec = fit_runs(write_study(recs, tmp_path / "runs"), bootstrap=0, targets=()).plot("optimal_scaling")
    assert not any("this table" in t.get_text() for t in rec.axes[0].get_legend().get_texts())


def test_nd_figures_are_written_and_plot_kinds(tmp_path, grid_res):
    fig = grid_res.plot("fit_diagnostic")
    assert len(fig.axes) == 3 and fig.axes[1].get_xscale() == "log"  # two panels and the colorbar
    assert grid_res.plot("iso_loss").axes[0].get_yscale() == "log"
    fit_runs(_grid(), bootstrap=0, out_dir=tmp_path / "out")
    assert {"parametric.png", "fit_diagnostic.png"} <= {p.name for p in (tmp_path / "out" / "plots").iterdir()}


def test_study_summary_prints_every_prediction_with_its_interval(tmp_path, capsys):
    """scaling.study's closing summary (the CPU demo's): no bare point predictions, the horizon said."""
    from scaling.study import print_summary

    recs = make_study(budgets=(1e13, 3e13, 1e14), n_diverged=0, n_failed=0, seed=6)
    print_summary(fit_runs([write_study(recs, tmp_path / "runs")], bootstrap=100).report, tmp_path, 60.0)
    out = capsys.readouterr().out
    for t in ("deepseek_7b", "deepseek_67b"):
        line = next(x for x in out.splitlines() if x.strip().startswith(f"{t}:"))
        assert "loss L(C) " in line and "loss L(N, D) " in line and "EXTRAPOLATED" in line
        assert line.count("[") >= 4  # L(C), L(N, D), eta_opt and B_opt each with an interval
    assert "beyond the 1000x DeepSeek validated" in out


def test_lc_stands_on_well_determined_minima_when_the_m_opt_law_cannot(tmp_path):
    recs = make_study(budgets=(1e17, 1e18, 1e19), n_diverged=0, n_failed=0, seed=2)
    for C in (1e18, 1e19):  # two off-centre profiles: only one budget for M_opt, but three good minima
        iso = [r for r in recs if r["sweep"] == "isoflop" and r["budget"] == C]
        for r, x in zip(iso, np.linspace(-0.6, 0.6, len(iso))):
            r["M"] = float(TRUTH.M_opt(C) * 10 ** (0.5 + x))
            r["D"] = C / r["M"]
            r["val_loss"] = float(TRUTH.loss(r["M"], r["D"]))
    # the window estimator leaves off-centre budgets out of the M_opt law (the joint one keeps them)
    res = fit_runs(write_study(recs, tmp_path / "runs"), bootstrap=100, targets=(), iso_estimator="window")
    assert "isoflop" in res.sections["skipped"] and "L_C" in res.laws
    assert [b["in_M_opt_law"] for b in res.sections["loss"]["budgets"]] == [True, False, False]
    for b in res.sections["loss"]["budgets"]:  # the minima L(C) rests on are the true compute-optimal losses
        Mo = float(TRUTH.M_opt(b["C"]))
        assert b["loss_min"] == pytest.approx(float(TRUTH.loss(Mo, b["C"] / Mo)), rel=0.003)
    assert res.plot("loss_curve").axes[0].get_xscale() == "log"
