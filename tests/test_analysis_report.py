"""report.md reads top-down as a result (laws with CIs and what they rest on, what to try next, per-budget tables,
each reason once), epochs and data repetition reach every output, names from records cannot break report.md or
runs.csv, and an --out that would overwrite an input is refused before anything is written."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import fit_runs
from analysis.advice import next_steps
from analysis.escape import md
from analysis.fit import main
from analysis.isoflop import fit_budget
from analysis.report import PENALTY_NOTE
from analysis.synthetic import Truth, make_study, write_study

T = Truth()


def failing_study(dataset: str = "web@1234") -> list[dict]:
    """hparams grids at 2 budgets (law needs 3); IsoFLOP budgets that all fail: the best run at the largest size
    (1e17), at the smallest (1e18), two sizes only (1e19)."""
    recs = make_study(budgets=(1e17, 1e18, 1e19), n_sizes=5, lr_steps=5, bs_steps=3, seed=3, dataset=dataset)
    recs = [r for r in recs if not (r["sweep"] == "hparams" and r["budget"] == 1e19)]
    iso = {C: [r for r in recs if r["sweep"] == "isoflop" and r["budget"] == C] for C in (1e17, 1e18, 1e19)}
    for C, shift in ((1e17, -0.9), (1e18, 0.9)):  # the optimum lies beyond the largest / the smallest size
        for r, x in zip(iso[C], np.linspace(-0.6, 0.6, 5)):
            r["M"] = float(T.M_opt(C) * 10 ** (shift + x))
    for k, r in enumerate(iso[1e19]):
        r["M"] = float(T.M_opt(1e19) * (1 + k % 2))  # two distinct sizes
    for C in iso:
        for k, r in enumerate(iso[C]):
            r["D"] = r["C"] / r["M"]
            r["val_loss"] = float(T.loss(r["M"], r["D"]) * (1 + 1e-4 * k))  # repeats of a size are not duplicates
    for r in recs:
        r["epochs"] = 3.2 if r["budget"] == 1e19 else 0.4
    return recs


@pytest.fixture(scope="module")
def failing(tmp_path_factory) -> tuple[Path, dict, str]:
    root = write_study(failing_study(), tmp_path_factory.mktemp("failing") / "runs")
    res = fit_runs(root, out_dir=root.parent / "out", bootstrap=50)
    return root.parent / "out", res.report, (root.parent / "out" / "report.md").read_text()


def test_report_opens_with_the_laws_and_what_to_try_next(failing):
    out, rep, text = failing
    d = rep["datasets"]["web@1234"]
    assert set(d["skipped"]) == {"hparams", "isoflop", "loss"} and "parametric" in d  # L(C): no well-determined minimum
    heads = [line for line in text.splitlines() if line.startswith("## ")]
    assert heads[0].startswith("## Laws of dataset web@1234") and "fitted: parametric" in heads[0]
    laws = text.split("\n## ")[1]  # the first section: every law, fitted or not, with why
    assert "| L(N, D) = E + A/N^alpha + B/D^beta | E=" in laws and "alpha [" in laws  # a fit with its interval
    assert "| eta_opt(C), B_opt(C) | **not fitted** | - | only 2 budget(s) with hparams runs" in laws
    assert "| L(C) | **not fitted** |" in laws and "it needs >= 3 such budgets and has 0" in laws
    assert "**What to try next**" in laws
    assert "train lr x batch grids at 1 more compute budget(s)" in laws
    assert "C=1e+18: add sizes below M=" in laws  # its best run is the smallest size
    assert "C=1e+17: add sizes above M=" in laws and "C=1e+19: train >= 5 sizes" in laws
    assert d["next_steps"]["isoflop"][-1].startswith("the law needs >= 3 usable budgets and has 0")


def test_each_reason_is_stated_once(failing):
    out, rep, text = failing
    budgets = rep["datasets"]["web@1234"]["isoflop_budgets"]
    assert len(budgets) == 3 and not any(b["used"] for b in budgets)
    for b in budgets:
        for w in b["warnings"]:
            assert text.count(md(w)) == 1, w  # in the IsoFLOP budget table only
    assert "isoflop not fitted" not in text  # the warning that repeats the laws table is left out of report.md
    assert text.count("budget C=1e+18 left out of the IsoFLOP law (why: the IsoFLOP budget table)") == 1
    assert text.count("- status diverged: 2 runs:") == 1  # excluded runs grouped by reason


def test_per_budget_tables_of_loss_against_size_and_the_lr_batch_grid(failing):
    out, rep, text = failing
    tables = rep["datasets"]["web@1234"]["tables"]
    iso = sorted(tables["isoflop"], key=lambda t: t["C"])
    assert [t["C"] for t in iso] == pytest.approx([1e17, 1e18, 1e19])
    rows = iso[1]["rows"]
    assert len(rows) == 5 and [r["M"] for r in rows] == sorted(r["M"] for r in rows)
    assert [r["best"] for r in rows] == [True, False, False, False, False]  # the smallest size is the best run
    assert "#### Loss against size per budget" in text
    for r in rows:  # each run once, with its loss, in report.md
        assert text.count(f"| {md(r['run_id'])} |") == 1
    grids = tables["hparams"]
    assert len(grids) == 2 and all(g["n_runs"] == 15 and g["n_diverged"] == 1 for g in grids)
    g = grids[0]
    assert len(g["loss"]) == len(g["batch_size"]) and all(len(row) == len(g["lr"]) for row in g["loss"])
    assert sum(m == "best" for row in g["mark"] for m in row) == 1
    assert sum(m == "diverged" for row in g["mark"] for m in row) == 1
    block = text[text.index("#### Loss over each lr x batch grid") :]
    assert "| B \\ lr |" in block and "div" in block and "**" in block


def test_epochs_and_the_repetition_warning_in_every_output(failing):
    out, rep, text = failing
    runs = pd.read_csv(out / "runs.csv")
    assert "epochs" in runs.columns and sorted(set(runs.epochs.dropna())) == [0.4, 3.2]
    r = rep["repetition"]
    assert r["n_runs"] == 5 and r["max_epochs"] == 3.2 and r["bins"] == [{"epochs": "2-4", "n_runs": 5}]
    assert any("repeat their training data (up to 3.2 epochs" in w for w in rep["warnings"])
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["repetition"]["n_runs"] == 5
    assert on_disk["datasets"]["web@1234"]["tables"]["isoflop"][2]["rows"][0]["epochs"] == 3.2
    assert "## Data repetition" in text and text.count("repeat their training data") == 0  # said once, as a section


def test_epochs_column_of_a_csv_is_read(tmp_path):
    recs = make_study(budgets=(1e17, 1e18, 1e19), n_diverged=0, n_failed=0)
    df = pd.DataFrame([{k: v for k, v in r.items() if k != "model"} for r in recs]).rename(columns={"val_loss": "loss"})
    df["epochs"] = np.where(df.sweep == "isoflop", 1.5, 0.5)
    res = fit_runs(df, bootstrap=0)
    assert res.report["repetition"]["n_runs"] == int((df.sweep == "isoflop").sum())


def test_no_repetition_no_warning(tmp_path):
    recs = make_study(budgets=(1e17, 1e18, 1e19), n_diverged=0, n_failed=0)
    res = fit_runs(write_study(recs, tmp_path / "runs"), bootstrap=0, out_dir=tmp_path / "out")
    assert res.report["repetition"] is None and "Data repetition" not in (tmp_path / "out" / "report.md").read_text()


def test_best_run_at_the_edge_and_a_vertex_outside_the_grid_are_told_apart():
    logM = np.log10([1e8, 2e8, 4e8, 8e8, 1.6e9])
    rng = np.random.default_rng(0)
    edge = fit_budget(logM, np.full(5, 1e18), np.array([3.0, 3.05, 3.2, 3.5, 3.9]), 0, rng)
    assert edge["warnings"][0].startswith("best run at the edge of the grid: M=1e+08 is the smallest of 5 sizes")
    # The case: the best run is the second of five sizes, the parabola's vertex falls below the grid.
    vert = fit_budget(logM, np.full(5, 1e18), np.array([3.087, 3.017, 3.27, 3.637, 3.813]), 0, rng)
    w = vert["warnings"][0]
    assert w.startswith("vertex outside the fitted sizes") and "best run (M=2e+08, size 2 of 5) is inside" in w
    assert vert["best_M"] == pytest.approx(2e8) and vert["M_opt"] < 1e8
    advice = next_steps(
        {"skipped": {"isoflop": "x"}, "isoflop_budgets": [edge | {"used": False}, vert | {"used": False}]}
    )["isoflop"]
    assert advice[0].startswith("C=1e+18: add sizes below M=1e+08")
    assert advice[1].startswith("C=1e+18: add sizes around the best run (M=2e+08)")


def _hp_frame(noise: float, seed: int) -> pd.DataFrame:
    recs = make_study(budgets=(1e17, 1e18, 1e19), noise=noise, seed=seed, n_diverged=0, n_failed=0)
    rows = [{k: v for k, v in r.items() if k != "model"} for r in recs if r["sweep"] == "hparams"]
    return pd.DataFrame(rows).rename(columns={"val_loss": "loss"})


@pytest.mark.parametrize("noise, negative", [(1e-5, True), (2e-3, False)])
def test_a_negative_penalty_is_explained(tmp_path, noise, negative):
    res = fit_runs(_hp_frame(noise, 0), bootstrap=0, out_dir=tmp_path / "out")
    pens = [b["penalty_pct"] for b in res.sections["hparams"]["budgets"]]
    assert any(p < 0 for p in pens) == negative  # noise-free grids: the law points between cells
    assert (PENALTY_NOTE in (tmp_path / "out" / "report.md").read_text()) == negative


EVIL_DATASET = "web|<img src=x onerror=alert(1)>\n# injected heading"
EVIL_IDS = ['=HYPERLINK("http://x","y")', "@SUM(A1)", "+1+cmd", "-1.5", "a|b\n## fake", "`code` *em* [l](u)"]


def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_names_from_records_cannot_break_report_md_or_runs_csv(tmp_path):
    recs = make_study(budgets=(1e17, 1e18, 1e19), n_diverged=0, n_failed=0, dataset=EVIL_DATASET)
    iso = [r for r in recs if r["sweep"] == "isoflop"]
    for r, rid in zip(iso, EVIL_IDS):
        r["run_id"] = rid
    recs[-1]["lr"] = -0.001  # excluded by its lr; its cell stays a number in runs.csv
    for i, r in enumerate(recs):
        r["_dir"] = f"run{i:03d}"
    root = tmp_path / "runs"
    for r in recs:
        d = root / r.pop("_dir")
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps(r))
    out = tmp_path / "out"
    fit_runs(root, out_dir=out, bootstrap=0)
    text = (out / "report.md").read_text()
    assert "<img" not in text and "\n# injected" not in text and "\n## fake" not in text
    allowed = ("# Scaling-law report", "## Laws", "## Warnings", "## Dataset ", "## Runs not used", "## Provenance")
    allowed += ("### ", "#### ", "## Data repetition", "## Recommendations", "## Datasets side by side")
    assert all(line.startswith(allowed) for line in text.splitlines() if line.startswith("#"))
    block: list[str] = []
    for line in text.splitlines() + [""]:  # every row of a table has its header's number of cells
        if line.startswith("|"):
            block.append(line)
            continue
        if block:
            assert len({_unescaped_pipes(x) for x in block}) == 1, block
        block = []
    with open(out / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    ids = [r["run_id"] for r in rows]
    for rid in EVIL_IDS[:3]:
        assert "'" + rid in ids  # a spreadsheet shows it as text, never runs it
    assert "-1.5" in ids and "'-1.5" not in ids  # a number stays a number
    assert any(r["lr"] == "-0.001" for r in rows)  # numeric negatives untouched


def test_out_that_would_overwrite_an_input_is_refused_before_anything_is_written(tmp_path, capsys):
    recs = make_study(budgets=(1e17, 1e18, 1e19), n_diverged=0, n_failed=0)
    d = tmp_path / "data"
    d.mkdir()
    df = pd.DataFrame([{k: v for k, v in r.items() if k != "model"} for r in recs]).rename(columns={"val_loss": "loss"})
    df.to_csv(d / "runs.csv", index=False)
    before = (d / "runs.csv").read_bytes()
    with pytest.raises(SystemExit) as e:
        main([str(d / "runs.csv"), "--out", str(d), "--bootstrap", "0"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert "would overwrite the input" in err and "runs.csv" in err
    assert sorted(p.name for p in d.iterdir()) == ["runs.csv"] and (d / "runs.csv").read_bytes() == before
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "report.json").hardlink_to(d / "runs.csv")  # another name for the same file
    with pytest.raises(SystemExit):
        main([str(d / "runs.csv"), "--out", str(tmp_path / "elsewhere"), "--bootstrap", "0"])
    assert (d / "runs.csv").read_bytes() == before
    assert main([str(d / "runs.csv"), "--out", str(tmp_path / "fine"), "--bootstrap", "0", "--no-plots"]) == 0
