"""The notebook API: fit_runs on a runs dir, a CSV or a DataFrame; callable laws with CIs; the run table with
reasons; plots on the caller's axes that return the figure and leave matplotlib's backend alone."""

from __future__ import annotations

import importlib

import matplotlib
import pandas as pd
import pytest
from matplotlib.figure import Figure

from analysis import fit_runs
from analysis.synthetic import make_study, write_study


@pytest.fixture(scope="module")
def recs() -> list[dict]:
    return make_study(budgets=(1e17, 1e18, 1e19, 1e20), seed=1)


@pytest.fixture(scope="module")
def res(recs, tmp_path_factory):
    return fit_runs(write_study(recs, tmp_path_factory.mktemp("api") / "runs"), bootstrap=100)


def test_laws_are_callable_with_cis(res):
    assert set(res.laws) >= {"eta_opt", "B_opt", "M_opt", "D_opt", "L_C", "L_ND"}
    for k in ("eta_opt", "B_opt", "M_opt", "D_opt"):
        law = res.laws[k]
        lo, hi = law.ci95["exponent"]
        assert lo <= law.exponent <= hi and law(1e21) == pytest.approx(law.coef * 1e21**law.exponent)
    L = res.laws["L_ND"]
    assert L(1e9, 2e10) == pytest.approx(L.E + L.A / 1e9**L.alpha + L.B / 2e10**L.beta)
    assert res.laws["L_C"](1e20) > res.laws["L_C"](1e22) and "alpha" in res.laws["L_C"].ci95
    assert "extrapolation" in res.sections  # run records: DeepSeek targets by default


def test_run_table_has_exclusion_reasons(res, recs):
    assert len(res.runs) == len(recs)
    assert set(res.excluded.excluded) == {"status diverged", "status failed"}
    assert {"in_band", "budget_group", "note"} <= set(res.runs.columns)


@pytest.mark.slow
def test_csv_path_and_dataframe_give_the_same_fit(recs, tmp_path):
    df = pd.DataFrame(
        [
            {k: r[k] for k in ("sweep", "budget", "M", "D", "lr", "batch_size", "status")}
            | {"loss": r["val_loss"], "run_id": r["run_id"]}
            for r in recs
        ]
    )
    path = tmp_path / "table.csv"
    df.to_csv(path, index=False)
    a, b = fit_runs(path, bootstrap=50), fit_runs(df, bootstrap=50)
    assert a.laws["M_opt"].ci95 == b.laws["M_opt"].ci95 and a.laws["eta_opt"].exponent == b.laws["eta_opt"].exponent
    assert not (tmp_path / "table_analysis").exists()  # nothing written unless out_dir is given
    fit_runs(df, bootstrap=0, out_dir=tmp_path / "out")
    assert (tmp_path / "out" / "report.json").is_file() and (tmp_path / "out" / "plots" / "isoflop.png").is_file()


def test_plots_draw_on_given_axes_and_return_the_figure(res):
    fig = Figure()
    ax = fig.add_subplot()
    assert res.plot("isoflop", ax=ax) is fig and ax.get_xscale() == "log"
    fig2 = Figure()
    axes = fig2.subplots(1, 2)
    assert res.plot("hparams", ax=axes) is fig2
    for kind in ("optimal_scaling", "loss_curve", "parametric"):
        assert isinstance(res.plot(kind), Figure)
    with pytest.raises(ValueError, match="unknown plot"):
        res.plot("nope")


def test_importing_plots_keeps_the_backend():
    before = matplotlib.get_backend()
    matplotlib.use("svg")  # a notebook's or an application's choice
    try:
        import analysis.plots

        importlib.reload(analysis.plots)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)


@pytest.mark.slow
def test_bench_runs_and_prints_ratios(capsys):
    from analysis.bench import main

    main(["--case", "published", "--datasets", "2", "--bootstrap", "20"])
    out = capsys.readouterr().out
    assert "case=published runs=240 bootstrap=20" in out and "speedup_vs_reference=" in out


def test_one_target_or_budget_need_no_list(recs):
    """One target or budget is one, not a sequence: targets="deepseek_7b" is not the targets 'd', 'e', ..."""
    df = pd.DataFrame([{k: v for k, v in r.items() if k != "model"} for r in recs]).rename(columns={"val_loss": "loss"})
    res = fit_runs(df, bootstrap=0, targets="deepseek_7b", budgets=1e21)
    assert list(res.sections["extrapolation"]) == ["deepseek_7b"]
    assert [r["C"] for r in res.report["recommendations"]] == [1e21]


def test_a_law_at_non_positive_compute_is_nan_never_complex(res):
    import math

    with pytest.warns(RuntimeWarning):
        v = res.laws["eta_opt"](-1.0)
    assert isinstance(v, float) and math.isnan(v)


def test_plot_of_a_section_that_does_not_apply_is_an_error(recs):
    hp = fit_runs(_hp_frame(recs), bootstrap=0)
    with pytest.raises(ValueError, match="no isoflop"):
        hp.plot("isoflop")  # not an empty figure


def _hp_frame(recs) -> pd.DataFrame:
    rows = [{k: v for k, v in r.items() if k != "model"} for r in recs if r["sweep"] == "hparams"]
    return pd.DataFrame(rows).rename(columns={"val_loss": "loss"})
