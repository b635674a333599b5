"""analysis input defects (issues 10 and 11): int64 overflow of C = M*D, hparams grids never merged across models,
implausible losses/compute excluded by name, duplicated rows dropped, header-only CSVs, no-progress parametric
fits, corrupt-record warnings kept when nothing can be fitted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import fit_runs
from analysis import parametric as P
from analysis.fit import main
from analysis.plausible import Limits
from analysis.synthetic import Truth, make_study, write_study

TRUTH = Truth()


def _inproc(capsys, *args) -> tuple[int, str]:
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def test_integer_M_and_D_do_not_overflow(tmp_path):
    """C = M*D above 9.2e18 from integer CSV columns must be computed in float, never wrap around."""
    recs = [r for r in make_study(budgets=(1e19, 1e20, 1e21), seed=3) if r["sweep"] == "isoflop"]
    df = pd.DataFrame(
        {
            "sweep": "isoflop",
            "M": [int(r["M"]) for r in recs],
            "D": [int(r["D"]) for r in recs],
            "loss": [r["val_loss"] for r in recs],
        }
    )
    assert df.M.dtype == np.int64 and (df.M.astype(float) * df.D > 2**63).all()
    path = tmp_path / "ints.csv"
    df.to_csv(path, index=False)
    rep = fit_runs([path], bootstrap=50).report
    assert rep["excluded"] == [] and rep["provenance"]["n_used"] == len(df)
    Cs = sorted(b["C"] for b in rep["isoflop"]["budgets"])
    np.testing.assert_allclose(Cs, [1e19, 1e20, 1e21], rtol=0.01)


def _two_model_study(budgets=(1e18, 1e19, 1e20), shift=0.35) -> list[dict]:
    """Per budget two models (M_opt/4 and 4*M_opt) on their own lr x batch grids; a model's optimal lr scales as
    M^-shift at fixed C, so pooling both grids into one band would pick one model's runs only."""
    template = make_study(budgets=budgets[:1], n_sizes=1, lr_steps=0, bs_steps=0, n_diverged=0, n_failed=0)[0]
    recs = []
    for C in budgets:
        for f in (0.25, 4.0):
            M = float(TRUTH.M_opt(C)) * f
            eta = float(TRUTH.eta_opt(C)) * f**-shift
            for i in range(-2, 3):
                for j in range(-1, 2):
                    lr, bs = eta * 2 ** (i / 2), float(TRUTH.B_opt(C)) * 2 ** (j / 2)
                    loss = float(TRUTH.loss(M, C / M)) * (
                        1 + 0.01 * np.log(lr / eta) ** 2 + 0.006 * np.log(bs / TRUTH.B_opt(C)) ** 2
                    )
                    recs.append(
                        template
                        | {
                            "run_id": f"hp-{C:.0e}-{f}-{i}-{j}",
                            "sweep": "hparams",
                            "budget": C,
                            "M": M,
                            "D": C / M,
                            "C": C,
                            "lr": lr,
                            "batch_size": bs,
                            "val_loss": loss,
                        }
                    )
    return recs


def test_hparams_grids_of_different_models_at_one_budget_stay_apart(tmp_path):
    rep = fit_runs([write_study(_two_model_study(), tmp_path / "runs")], bootstrap=50, targets=()).report
    grids = rep["hparams"]["budgets"]
    assert len(grids) == 6 and all(g["n_models"] == 1 for g in grids)
    for g in grids:  # each grid's best lr is its own model's optimum, not the other model's
        f = g["M"] / float(TRUTH.M_opt(g["budget"]))
        assert abs(np.log(g["best_lr"] / (float(TRUTH.eta_opt(g["budget"])) * f**-0.35))) < 0.01
    assert not any("mix model sizes" in w for w in rep["warnings"])


def test_grid_column_that_mixes_models_is_reported(tmp_path):
    recs = [r for r in _two_model_study() if r["sweep"] == "hparams"]
    df = pd.DataFrame(
        {
            "sweep": "hparams",
            "M": [r["M"] for r in recs],
            "D": [r["D"] for r in recs],
            "lr": [r["lr"] for r in recs],
            "batch_size": [r["batch_size"] for r in recs],
            "loss": [r["val_loss"] for r in recs],
            "grid": [f"C{r['budget']:.0e}" for r in recs],
        }
    )
    path = tmp_path / "grids.csv"
    df.to_csv(path, index=False)
    rep = fit_runs([path], bootstrap=0).report
    assert len(rep["hparams"]["budgets"]) == 3 and all(g["n_models"] == 2 for g in rep["hparams"]["budgets"])
    assert any("3 hparams grid(s) mix model sizes" in w for w in rep["warnings"])
    assert "grid mixes 2 model sizes" in rep["hparams"]["budgets"][0]["note"]


@pytest.fixture(scope="module")
def clean_recs() -> list[dict]:
    return make_study(budgets=(1e17, 1e18, 1e19), n_diverged=0, n_failed=0, seed=6)


@pytest.fixture(scope="module")
def clean(clean_recs, tmp_path_factory) -> tuple:
    """The clean study's run dir and its report (bad runs are added as a second input dir)."""
    root = write_study(clean_recs, tmp_path_factory.mktemp("clean") / "runs")
    return root, fit_runs([root], bootstrap=50, targets=()).report


def test_implausible_losses_and_compute_are_excluded_by_name(tmp_path, clean_recs, clean):
    root, clean = clean
    hp = next(r for r in clean_recs if r["sweep"] == "hparams" and r["budget"] == 1e17)
    bad = [
        hp | {"run_id": f"bad{i}", **kv}
        for i, kv in enumerate(
            [
                {"val_loss": 1e-300},
                {"val_loss": 0.0},
                {"val_loss": -1.0},
                {"val_loss": 1e300},
                {"C": 1e300},
                {"M": -5.0, "C": None},
                {"val_loss": 25.0},
            ]
        )
    ]
    dirty = [root, write_study(bad, tmp_path / "dirty")]
    rep = fit_runs(dirty, bootstrap=50, targets=()).report
    why = {e["run_id"]: e["reason"] for e in rep["excluded"]}
    assert set(why) == {f"bad{i}" for i in range(7)}
    assert why["bad0"].startswith("implausible loss 1e-300 (plausible: (0.01, 20] nats/token")
    assert why["bad1"].startswith("implausible loss 0 ") and why["bad2"].startswith("implausible loss -1 ")
    assert why["bad3"].startswith("implausible loss 1e+300") and why["bad4"].startswith("implausible C 1e+300")
    assert why["bad5"].startswith("non-positive M") and why["bad6"].startswith("implausible loss 25")
    for k in ("eta_opt", "B_opt"):  # the fit is exactly the clean one
        assert rep["hparams"][k].exponent == pytest.approx(clean["hparams"][k].exponent, abs=1e-12)
    # The limits are options: a loss of 25 nats is plausible for a user who says so.
    wide = fit_runs(dirty, bootstrap=0, targets=(), limits=Limits(loss_max=30)).report
    assert "bad6" not in {e["run_id"] for e in wide["excluded"]}


def test_duplicated_rows_are_dropped_with_a_warning(tmp_path, clean_recs, clean):
    root, clean = clean
    dup = [r | {"run_id": r["run_id"] + "-copy"} for r in clean_recs if r["budget"] == 1e18]
    rep = fit_runs([root, write_study(dup, tmp_path / "dup")], bootstrap=50, targets=()).report
    assert any(w.startswith(f"{len(dup)} duplicated row(s) dropped") for w in rep["warnings"])
    reasons = {e["run_id"]: e["reason"] for e in rep["excluded"]}
    assert set(reasons) == {r["run_id"] for r in dup}
    assert all(v.startswith("duplicate of run ") for v in reasons.values())
    assert rep["hparams"]["eta_opt"].ci95 == clean["hparams"]["eta_opt"].ci95


def test_header_only_csv_is_one_line_error(tmp_path, capsys):
    path = tmp_path / "empty.csv"
    path.write_text("sweep,N,C,loss\n")
    rc, err = _inproc(capsys, path, "--no-plots")
    assert rc == 2 and err.strip().splitlines() == [
        f"analysis.fit: error: {path} has a header but no data rows: add one row per run"
    ]


def test_parametric_never_reports_its_starting_point():
    rng = np.random.default_rng(1)
    N, D = 10 ** rng.uniform(7, 9, 40), 10 ** rng.uniform(9, 11, 40)
    L = TRUTH.E + TRUTH.A / N**TRUTH.alpha + TRUTH.B / D**TRUTH.beta
    L[0] = -1.0  # what an unchecked table can hold: log L is NaN and the optimiser cannot move
    with np.errstate(invalid="ignore"):
        r = P.fit_parametric(N, D, L, n_boot=20)
    assert "E" not in r and "skipped" in r, r


def test_corrupt_record_warnings_survive_when_nothing_can_be_fitted(tmp_path, capsys):
    recs = make_study(budgets=(1e17,), n_sizes=4, n_diverged=0, n_failed=0)
    root = write_study(recs, tmp_path / "runs")
    bad = root / "corrupt" / "result.json"
    bad.parent.mkdir()
    bad.write_text('{"status": "completed", "val_loss": ')
    rc, err = _inproc(capsys, root, "--no-plots", "--bootstrap", "0")
    lines = err.strip().splitlines()
    assert rc == 2 and lines[-1].startswith("analysis.fit: error: no law could be fitted")
    assert any(f"skipping corrupt {bad}" in w for w in lines[:-1])


def test_parametric_start_that_is_the_optimum_is_a_result():
    """The no-progress guard must not reject data whose exact optimum is a grid start (zero gradient there)."""
    rng = np.random.default_rng(2)
    N, D = 10 ** rng.uniform(7, 9, 40), 10 ** rng.uniform(9, 11, 40)
    a, b, e, al, be = P.GRID[np.argmin(np.abs(P.GRID - [5.0, 10.0, 0.5, 0.5, 0.5]).sum(1))]
    L = np.exp(e) + np.exp(a) / N**al + np.exp(b) / D**be
    r = P.fit_parametric(N, D, L, n_boot=0)
    assert "skipped" not in r and r["alpha"] == pytest.approx(al, abs=1e-6) and r["E"] == pytest.approx(np.exp(e))


@pytest.mark.parametrize(
    "bad",
    [
        ["--budget", "-1"],  # not a TypeError traceback (complex power)
        ["--budget", "nan"],  # not "sweep.shape_rule=deepseek allows no shape"
        ["--budget", "1e400"],  # not "math domain error"
        ["--target-tokens", "-1"],  # not a traceback
        ["--target-tokens", "nan"],  # not a traceback after report files were half written
        ["--band", "nan"],  # NaN passed `band < 0`: traceback after writing
        ["--rtol", "nan"],  # NaN passed `rtol <= 1`: fitted silently
        ["--iso-window", "nan"],
        ["--fix-E", "inf"],
        ["--bootstrap", "100000000000000000000"],  # was numpy's "Maximum allowed dimension exceeded"
    ],
)
def test_non_finite_or_negative_options_are_one_line_errors_before_writing(tmp_path, capsys, bad):
    runs = write_study(make_study(budgets=(1e17, 1e18, 1e19), n_sizes=5, lr_steps=3, bs_steps=3), tmp_path / "r")
    out = tmp_path / "out"
    rc, err = _inproc(capsys, runs, "--out", out, "--bootstrap", "5", "--no-plots", *bad)
    assert rc == 2 and bad[0] in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_boolean_loss_is_no_loss_not_one(tmp_path):
    """A record's "val_loss": true (or a CSV/DataFrame cell True) was read as a loss of 1.0 and fitted."""
    recs = make_study(budgets=(1e17, 1e18, 1e19), n_sizes=5, lr_steps=3, bs_steps=3)
    recs[0]["val_loss"] = True
    res = fit_runs(write_study(recs, tmp_path / "r"), bootstrap=0)
    row = res.runs.set_index("run_id").loc[recs[0]["run_id"]]
    assert row.excluded == "no finite loss" and not row.loss == 1.0
    df = pd.DataFrame({"sweep": "isoflop", "M": [r["M"] for r in recs[:5]], "D": [r["D"] for r in recs[:5]]})
    df["loss"] = pd.Series([True, 4.0, 4.1, 4.2, 4.3], dtype=object)
    from analysis.load import load_runs

    runs, _ = load_runs([df])
    assert runs.excluded.iloc[0] == "no finite loss" and (runs.excluded.iloc[1:] == "").all()


def test_run_without_budget_joins_its_sweeps_recorded_budget():
    """One run whose budget is blank/corrupt formed a second group at the same C: its budget lost a point and
    the singleton was reported as "only 1 distinct model sizes"."""
    from analysis.budgets import assign_budgets

    recs = [r for r in make_study(budgets=(1e17, 1e18, 1e19), n_sizes=5) if r["sweep"] == "isoflop"]
    df = pd.DataFrame({k: [r[k] for r in recs] for k in ("budget", "C", "sweep", "dataset")})
    df.loc[2, "budget"] = np.nan
    df.loc[7, "C"] *= 1.05  # a missed budget still joins the one within rtol
    df.loc[7, "budget"] = np.nan
    got = assign_budgets(df)
    assert got[2] == 1e17 and got[7] == 1e18 and got.nunique() == 3
    far = df.copy()
    far.loc[2, "C"] = 1e15  # nothing recorded within rtol: its own cluster, as before
    assert assign_budgets(far)[2] == pytest.approx(1e15)


def test_out_that_is_a_file_is_one_line_error_before_fitting(tmp_path, capsys):
    runs = write_study(make_study(budgets=(1e17, 1e18, 1e19), n_sizes=5, lr_steps=3, bs_steps=3), tmp_path / "r")
    (tmp_path / "afile").write_text("keep me")
    rc, err = _inproc(capsys, runs, "--out", tmp_path / "afile", "--bootstrap", "5", "--no-plots")
    assert rc == 2 and "is a file" in err and len(err.strip().splitlines()) == 1  # not "[Errno 17] File exists"
    assert (tmp_path / "afile").read_text() == "keep me"


@pytest.mark.parametrize("version", ["1", True, 0, -3])
def test_a_record_with_a_bogus_schema_version_is_named_not_called_newer(version):
    from scaling.base.record import RunRecord

    with pytest.raises(ValueError, match="not a version number") as e:  # "1" was "newer than this code reads"
        RunRecord.from_dict({"run_id": "r", "status": "completed", "schema_version": version})
    assert "newer" not in str(e.value)


def test_hparams_grids_that_do_not_bracket_their_optimum_are_said(clean_recs):
    """A grid with a single lr gave eta_opt = that lr * C^0 with a [0, 0] CI and no word of warning."""
    df = pd.DataFrame([{k: v for k, v in r.items() if k != "model"} for r in clean_recs])
    df = df.rename(columns={"val_loss": "loss"})
    hp = df.sweep == "hparams"

    def warnings(d):
        return fit_runs([d], bootstrap=0).report["warnings"]

    assert not any("bracket" in w for w in warnings(df))
    assert any("do not bracket their optimum" in w and "a single lr" in w for w in warnings(df.assign(lr=1e-3)))
    median = df.groupby(["sweep", "budget"]).lr.transform("median")
    low = df[~hp | (df.lr <= median)]  # keep each grid's low lrs only: its best lr is its largest
    assert any("best lr at the grid's edge" in w for w in warnings(low))


def test_one_corrupt_record_neither_fits_nor_turns_off_the_extrapolation(tmp_path):
    """A record with M="abc" had M silently derived as C/D and, being "not M", made the whole runs dir count as a
    published table: the DeepSeek 7B/67B extrapolation vanished ("off for published tables")."""
    recs = make_study(budgets=(1e17, 1e18, 1e19), n_sizes=5, lr_steps=3, bs_steps=3)
    recs[1]["M"] = "abc"
    rep = fit_runs([write_study(recs, tmp_path / "r")], bootstrap=0).report
    assert "deepseek_7b" in rep["extrapolation"]
    res = fit_runs(tmp_path / "r", bootstrap=0)
    row = res.runs.set_index("run_id").loc[recs[1]["run_id"]]
    assert row.excluded == "corrupt record: M='abc' in result.json is not a number"


def test_the_lr_x_batch_grid_tables_read_by_compute_not_by_run_dir_name(tmp_path):
    """Run dirs list hp_C1e+18 before hp_C3e+17; the report's grid tables read as the laws do, smallest C first."""
    recs = make_study(budgets=(3e17, 1e18, 1e19), n_sizes=5, lr_steps=3, bs_steps=3)
    for r in recs:  # named as the sweeper names them
        r["run_id"] = f"{r['sweep'][:2]}_C{r['budget']:.3g}_{r['run_id']}"
    rep = fit_runs([write_study(recs, tmp_path / "r")], bootstrap=0).report
    (dataset,) = rep["datasets"].values()
    tables = dataset["tables"]["hparams"]
    Cs = [t["C"] for t in tables]
    assert len(Cs) == 3 and Cs == sorted(Cs)
