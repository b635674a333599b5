"""analysis: synthetic studies from known laws are recovered within their CIs; bad input gives one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import fit_runs
from analysis.extrapolate import extrapolate, load_model, recommend
from analysis.fit import main
from analysis.synthetic import Truth, make_study, write_study
from tests.helpers import shifted_isoflop_study

ROOT = Path(__file__).resolve().parent.parent
TRUTH = Truth()


def cli(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    """The real command line, in a fresh interpreter (what a user runs)."""
    return subprocess.run(
        [sys.executable, "-m", "analysis.fit", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def main_inproc(capsys, *args) -> subprocess.CompletedProcess:
    """analysis.fit.main in this process (fast), returned like cli()."""
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:  # bad input: scaling.base.cli.fail exits 2 after one line
        rc = e.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out, err)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return write_study(make_study(seed=1), tmp_path_factory.mktemp("study") / "runs")


@pytest.fixture(scope="module")
def report(study) -> dict:
    return fit_runs([study], bootstrap=300, targets=("deepseek_7b", "deepseek_67b")).report


def _inside(ci, v) -> bool:
    return ci[0] <= v <= ci[1]


def test_recovers_true_exponents_within_ci(report):
    hp, iso, par, loss = report["hparams"], report["isoflop"], report["parametric"], report["loss"]
    assert _inside(hp["eta_opt"].ci95["exponent"], TRUTH.eta_exp)
    assert _inside(hp["B_opt"].ci95["exponent"], TRUTH.bs_exp)
    assert _inside(iso["M_opt"].ci95["exponent"], TRUTH.a)
    assert _inside(iso["D_opt"].ci95["exponent"], 1 - TRUTH.a)
    for k, v in (("alpha", TRUTH.alpha), ("beta", TRUTH.beta), ("a", TRUTH.a), ("E", TRUTH.E)):
        assert _inside(par["ci95"][k], v), k
    s = loss["saturating"]
    assert _inside(s["ci95"]["alpha"], TRUTH.alpha * TRUTH.beta / (TRUTH.alpha + TRUTH.beta))
    assert _inside(s["ci95"]["E"], TRUTH.E)
    # CIs must be informative, not merely wide enough to contain anything.
    assert np.diff(iso["M_opt"].ci95["exponent"])[0] < 0.05 and np.diff(hp["B_opt"].ci95["exponent"])[0] < 0.3


@pytest.mark.slow
def test_ci_coverage_over_seeds(tmp_path):
    """95% CIs should cover the truth in most independent studies (a CI that is too narrow fails here)."""
    aC = TRUTH.alpha * TRUTH.beta / (TRUTH.alpha + TRUTH.beta)
    hits = []
    for seed in range(10, 18):
        r = fit_runs([write_study(make_study(seed=seed), tmp_path / str(seed))], bootstrap=200, targets=()).report
        hits.append(
            [
                _inside(r["hparams"]["eta_opt"].ci95["exponent"], TRUTH.eta_exp),
                _inside(r["hparams"]["B_opt"].ci95["exponent"], TRUTH.bs_exp),
                _inside(r["isoflop"]["M_opt"].ci95["exponent"], TRUTH.a),
                _inside(r["parametric"]["ci95"]["a"], TRUTH.a),
                _inside(r["loss"]["saturating"]["ci95"]["alpha"], aC),
            ]
        )
    assert np.all(np.sum(hits, axis=0) >= 6), np.sum(hits, axis=0)


def test_budget_optima_and_penalty(report):
    for b in report["isoflop"]["budgets"]:
        assert b["used"] and abs(np.log(b["M_opt"] / TRUTH.M_opt(b["C"]))) < 0.1
    assert all(abs(b["penalty_pct"]) < 0.5 for b in report["hparams"]["budgets"])
    bt = report["loss"]["backtest"]
    assert abs(bt["loss_err_pct"]) < 1 and abs(bt["M_opt_err_pct"]) < 10


def test_counting_conventions_side_by_side(report):
    conv = report["conventions"]
    assert set(conv) == {"M", "6N1", "6N2"}
    # 6*N1 undercounts small models' attention FLOPs, so M_opt grows faster in 6*N1 units (DeepSeek Table 3).
    assert conv["6N1"]["M_opt"].exponent > conv["M"]["M_opt"].exponent


def test_deepseek_reference_matches_paper_choices():
    for name in ("deepseek_7b", "deepseek_67b"):
        p = extrapolate(name, 2e12, {})["reference"]["paper"]
        assert abs(p["lr_rel_diff"]) < 0.10 and abs(p["batch_rel_diff"]) < 0.10, (name, p)


def test_extrapolation_has_cis(report):
    e = report["extrapolation"]["deepseek_7b"]
    assert e["C"] == pytest.approx(e["M"] * 2e12)
    for k in ("eta_opt", "B_opt", "loss"):
        lo, hi = e[k]["ci95"]
        assert lo <= e[k]["value"] <= hi
    assert e["compute_optimal"]["D"]["value"] == pytest.approx(e["compute_optimal"]["C"]["value"] / e["M"])


def test_recommended_shape_realises_M_opt(report):
    r = recommend(1e21, report["datasets"][report["dataset"]], load_model("deepseek_7b"))
    assert abs(np.log(r["M"] / r["M_opt"]["value"])) < 0.1
    assert r["shape"]["d_model"] % 128 == 0 and r["shape"]["d_model"] // r["shape"]["n_head"] == 128


@pytest.mark.slow
def test_cli_end_to_end(study, tmp_path):
    bad = cli(tmp_path / "missing")
    assert bad.returncode == 2 and bad.stderr.startswith("analysis.fit: error: ") and "Traceback" not in bad.stderr
    out = tmp_path / "rep"
    p = cli(study, "--out", out, "--bootstrap", "100", "--budget", "1e21")
    assert p.returncode == 0, p.stderr
    assert {f.name for f in (out / "plots").glob("*.png")} == {
        "isoflop.png",
        "optimal_scaling.png",
        "hparams.png",
        "loss_curve.png",
        "parametric.png",
        "fit_diagnostic.png",
    }
    rep = json.loads((out / "report.json").read_text())
    for sec, law in (("hparams", "eta_opt"), ("hparams", "B_opt"), ("isoflop", "M_opt"), ("isoflop", "D_opt")):
        assert set(rep[sec][law]) >= {"coef", "exponent", "ci95"} and len(rep[sec][law]["ci95"]["exponent"]) == 2
    assert {"C", "M_opt", "D_opt", "loss_min", "n_runs", "warnings"} <= set(rep["isoflop"]["budgets"][0])
    assert {"M", "N1", "N2", "C", "D", "eta_opt", "B_opt", "loss", "reference"} <= set(
        rep["extrapolation"]["deepseek_67b"]
    )
    assert rep["recommendations"][0]["shape"]["n_layer"] > 0 and "provenance" in rep
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False)
    bad = runs[runs.status != "completed"]
    assert len(bad) == 10 and set(bad.excluded) == {"status diverged", "status failed"}
    assert {e["reason"] for e in rep["excluded"]} == {"status diverged", "status failed"}
    assert "# Scaling-law report" in (out / "report.md").read_text()


def test_default_out_dir_and_corrupt_result_skipped(tmp_path, capsys):
    root = write_study(make_study(seed=1, n_diverged=0, n_failed=0), tmp_path / "runs")
    bad = sorted(root.iterdir())[3] / "result.json"
    bad.write_text('{"status": "completed", "val_loss": ')
    p = main_inproc(capsys, root, "--bootstrap", "0", "--no-plots", "--targets")
    assert p.returncode == 0, p.stderr
    assert f"skipping corrupt {bad}" in p.stderr and "JSONDecodeError" in p.stderr
    rep = json.loads((root / "analysis" / "report.json").read_text())
    assert rep["provenance"]["n_runs"] == len(list(root.glob("*/result.json"))) - 1 and "isoflop" in rep


@pytest.mark.parametrize("case", ["empty", "no_complete", "two_budgets", "csv_columns", "missing", "bad_target"])
def test_bad_input_one_line_error(tmp_path, capsys, case):
    if case == "empty":
        arg, want = tmp_path, "no readable result.json"
    elif case == "no_complete":
        recs = make_study(budgets=(1e17, 1e18, 1e19))
        for r in recs:
            r["status"], r["val_loss"] = "diverged", None
        arg, want = write_study(recs, tmp_path / "runs"), "no completed runs usable for fitting among"
    elif case == "two_budgets":
        # 8 isoflop runs: too few for the parametric law too, so no law at all can be fitted.
        arg = write_study(make_study(budgets=(1e17, 1e18), n_sizes=4), tmp_path / "runs")
        want = "no law could be fitted (synthetic@00000000: hparams: only 2 budget(s) with hparams runs"
    elif case == "csv_columns":
        arg = tmp_path / "pub.csv"
        pd.DataFrame({"C": [1e18], "N": [1e8]}).to_csv(arg, index=False)
        want = "missing required column(s): sweep, loss"
    elif case == "missing":
        arg, want = tmp_path / "nope", "does not exist"
    else:
        arg = write_study(make_study(budgets=(1e17, 1e18, 1e19)), tmp_path / "runs")
        p = main_inproc(capsys, arg, "--targets", "deepseek_700b", "--no-plots")
        assert p.returncode == 2 and "unknown target 'deepseek_700b'" in p.stderr and "Traceback" not in p.stderr
        return
    p = main_inproc(capsys, arg, "--no-plots", "--bootstrap", "10")
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("analysis.fit: error: ") and want in lines[0], p.stderr


def test_law_with_too_few_budgets_is_absent_with_reason(tmp_path):
    recs = [
        r
        for r in make_study(budgets=(1e17, 1e18, 1e19), n_diverged=0, n_failed=0)
        if not (r["sweep"] == "hparams" and r["budget"] == 1e19)
    ]
    rep = fit_runs([write_study(recs, tmp_path / "runs")], bootstrap=20, targets=()).report
    assert "hparams" not in rep and "only 2 budget(s) with hparams runs; need >= 3" in rep["skipped"]["hparams"]
    # Three budgets: no free-E saturating form, but L(N, D)'s E gives L(C) a floor, and the report says why.
    assert "isoflop" in rep and "needs >= 4 budgets" in rep["loss"]["saturating_skipped"]
    assert rep["loss"]["form"] == "saturating_E" and "no backtest can compare" in rep["loss"]["form_why"]
    assert "needs >= 4 budgets" in rep["loss"]["backtest"]["skipped"]
    rep2 = fit_runs([write_study(recs, tmp_path / "runs")], bootstrap=20, targets=(), min_budgets=2).report
    assert "2 budgets" in rep2["hparams"]["eta_opt"].warnings[0]


def test_isoflop_edge_and_off_centre_budgets_excluded_by_the_window_estimator(tmp_path):
    recs = shifted_isoflop_study({1e20: 1.0, 1e21: 0.5})  # optimum beyond the edge / off-centre
    rep = fit_runs([write_study(recs, tmp_path / "runs")], bootstrap=50, targets=(), iso_estimator="window").report
    b = {x["budget"]: x for x in rep["isoflop"]["budgets"]}
    assert not b[1e20]["used"] and b[1e20]["warnings"][0].startswith("best run at the edge of the grid")
    assert not b[1e21]["used"] and b[1e21]["warnings"][0].startswith("off-centre")
    assert all(b[c]["used"] for c in (1e17, 1e18, 1e19)) and rep["isoflop"]["M_opt"].n_budgets == 3
    assert _inside(rep["isoflop"]["M_opt"].ci95["exponent"], TRUTH.a)
    assert rep["isoflop"]["estimator"] == "window"


def test_joint_estimator_keeps_an_off_centre_budget_and_drops_an_unbracketed_one(tmp_path):
    recs = shifted_isoflop_study({1e20: 1.0, 1e21: 0.5})
    rep = fit_runs([write_study(recs, tmp_path / "runs")], bootstrap=50, targets=()).report
    iso = rep["isoflop"]
    b = {x["budget"]: x for x in iso["budgets"]}
    assert iso["estimator"] == "joint" and "joint fit" in iso["estimator_text"]
    assert not b[1e20]["used"] and b[1e20]["warnings"][0].startswith("best run at the edge of the grid")
    # off-centre but bracketed: the joint fit uses it, and locates its minimum (noiseless runs)
    assert b[1e21]["used"] and abs(np.log10(b[1e21]["M_opt"] / TRUTH.M_opt(1e21))) < 0.02
    assert iso["M_opt"].n_budgets == 4 and _inside(iso["M_opt"].ci95["exponent"], TRUTH.a)
    assert abs(iso["M_opt"].exponent - TRUTH.a) < 0.01


@pytest.mark.slow
def test_datasets_fitted_separately(tmp_path):
    other = Truth(alpha=0.30, beta=0.42, B=4000.0)
    recs = make_study(seed=3, dataset="web@aaaa", n_diverged=0, n_failed=0) + make_study(
        truth=other, seed=4, dataset="code@bbbb", n_diverged=0, n_failed=0
    )
    rep = fit_runs([write_study(recs, tmp_path / "runs")], bootstrap=100, targets=()).report
    d = rep["datasets"]
    assert set(d) == {"web@aaaa", "code@bbbb"} and any("fitted separately" in w for w in rep["warnings"])
    assert _inside(d["web@aaaa"]["isoflop"]["M_opt"].ci95["exponent"], TRUTH.a)
    assert _inside(d["code@bbbb"]["isoflop"]["M_opt"].ci95["exponent"], other.a)


def test_csv_input_chinchilla_style_with_clustered_budgets(tmp_path, capsys):
    rng = np.random.default_rng(5)
    recs = [r for r in make_study(seed=5) if r["sweep"] == "isoflop"]
    # Published data: N and C only, C scattered by up to +-5% around each budget, no budget column.
    C = np.array([r["C"] for r in recs]) * rng.uniform(0.95, 1.05, len(recs))
    df = pd.DataFrame(
        {"sweep": "isoflop", "N": [r["M"] / 6 for r in recs], "C": C, "loss": [r["val_loss"] for r in recs]}
    )
    path = tmp_path / "published.csv"
    df.to_csv(path, index=False)
    p = main_inproc(capsys, path, "--bootstrap", "100", "--no-plots", "--targets")
    assert p.returncode == 0, p.stderr
    rep = json.loads((tmp_path / "published_analysis" / "report.json").read_text())
    assert len(rep["isoflop"]["budgets"]) == 5 and "hparams" in rep["not_applicable"]
    assert _inside(rep["isoflop"]["M_opt"]["ci95"]["exponent"], TRUTH.a)
