"""Every figure draws its runs whatever failed to fit and says so in its title; the CLI's PNG and `res.plot` are
the same figure; no matplotlib warnings; tick labels of the training-curve figures do not collide."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from analysis import fit_runs, plots
from analysis.curve_plots import hparams_valley, isoflop_curves
from analysis.curves import load_curves
from analysis.synthetic import write_study
from tests.test_analysis_report import failing_study


@pytest.fixture(scope="module")
def failing(tmp_path_factory):
    """A study where eta/B, M_opt/D_opt and L(C) are not fitted (only L(N, D) is), written as the CLI writes it."""
    base = tmp_path_factory.mktemp("figs")
    root = write_study(failing_study(), base / "runs")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no matplotlib (or other) warning while the figures are made
        res = fit_runs(root, out_dir=base / "out", bootstrap=20)
    return res, base / "out" / "plots"


def _points(fig: Figure) -> int:
    return sum(len(c.get_offsets()) for ax in fig.axes for c in ax.collections if isinstance(c, PathCollection))


def _titles(fig: Figure) -> str:
    return " | ".join(" ".join(ax.get_title().split()) for ax in fig.axes)  # titles are wrapped


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png")  # as plots._save writes it
    return buf.getvalue()


def test_each_figure_draws_its_runs_when_its_law_is_not_fitted(failing):
    res, _ = failing
    r, runs = res.sections, res.runs[res.runs.excluded == ""]
    assert not {"hparams", "isoflop", "loss"} & set(r) and "parametric" in r
    n_iso, n_hp = int((runs.sweep == "isoflop").sum()), int((runs.sweep == "hparams").sum())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        iso = res.plot("isoflop")
        assert _points(iso) == n_iso == 15 and "M_opt law not fitted" in _titles(iso)
        assert len(iso.axes[0].get_legend().get_texts()) == 3  # one entry per budget, with why it is left out
        assert "left out: best run at the edge" in iso.axes[0].get_legend().get_texts()[0].get_text()
        hp = res.plot("hparams")
        assert _points(hp) >= 2 * n_hp and _titles(hp).count("law not fitted: only 2 budget(s)") == 2
        opt = res.plot("optimal_scaling")  # the budgets' vertices, hollow: left out of the law
        assert _points(opt) >= 2 * 2 and "law not fitted" in _titles(opt)
        loss = res.plot("loss_curve")  # raised "no loss fit" before
        assert _points(loss) == 3 and "L(C) not fitted" in _titles(loss)
        no_par = {k: v for k, v in r.items() if k != "parametric"} | {"skipped": {"parametric": "only 3 runs"}}
        par = plots.figure("parametric", no_par, res.runs)
        assert _points(par) == n_iso and "L(N, D) not fitted: only 3 runs" in _titles(par)
        assert not par.axes[0].lines  # no frontier without a fit


def test_the_cli_png_is_the_figure_res_plot_returns(failing):
    res, pngs = failing
    written = sorted(p.stem for p in pngs.glob("*.png"))
    assert set(plots.FIGURES) <= set(written)  # every figure, although three laws are missing
    for kind in plots.FIGURES:
        assert _png(res.plot(kind)) == (pngs / f"{kind}.png").read_bytes(), kind


def test_a_figure_of_runs_that_are_not_in_the_data_is_an_error(failing):
    res, _ = failing
    grid_only = res.runs[res.runs.sweep == "hparams"]
    with pytest.raises(ValueError, match="no isoflop runs"):
        plots.figure("isoflop", res.sections, grid_only)


def _curve_runs(root: Path, lrs, tokens) -> None:
    """Runs whose metrics.jsonl span a narrow token range, in an hparams grid over a narrow lr range."""
    for i, (lr, batch) in enumerate((lr, b) for lr in lrs for b in (256, 512)):
        d = root / f"hp{i}"
        d.mkdir(parents=True)
        rec = {"run_id": d.name, "sweep": "hparams", "budget": 1e10, "status": "completed", "M": 1e5}
        rec |= {"lr": lr, "batch_size": batch, "val_loss": 3 + (np.log(lr / 2e-3)) ** 2}
        (d / "result.json").write_text(json.dumps(rec))
    for i, M in enumerate((1e5, 2e5, 4e5)):
        d = root / f"iso{i}"
        d.mkdir(parents=True)
        rec = {"run_id": d.name, "sweep": "isoflop", "budget": 1e12, "status": "completed", "M": M}
        (d / "result.json").write_text(json.dumps(rec))
    for d in root.iterdir():
        lines = [{"step": s + 1, "tokens": t, "loss": 5 - s / 10, "loss_ema": 5 - s / 10} for s, t in enumerate(tokens)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def _overlaps(fig: Figure) -> list[tuple[str, str]]:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    hits = []
    for ax in fig.axes:
        labels = [t for t in ax.xaxis.get_ticklabels(which="both") if t.get_visible() and t.get_text()]
        boxes = [t.get_window_extent(renderer) for t in labels]
        hits += [
            (labels[i].get_text(), labels[j].get_text())
            for i in range(len(boxes))
            for j in range(i + 1, len(boxes))
            if boxes[i].overlaps(boxes[j])
        ]
    return hits


@pytest.mark.parametrize(
    "lrs, tokens",
    [
        ((1.1e-3, 1.3e-3, 1.6e-3, 1.9e-3), np.linspace(1.1e7, 9.5e7, 30)),  # under a decade: minor labels
        ((2e-4, 6e-4, 2e-3, 6e-3, 2e-2), np.geomspace(1e5, 1e9, 30)),  # several decades
    ],
)
def test_tick_labels_of_the_curve_figures_do_not_collide(tmp_path, lrs, tokens):
    _curve_runs(tmp_path / "runs", lrs, tokens)
    df = load_curves(tmp_path / "runs")
    fig = Figure(figsize=(5.2 * 3, 4.0))  # the panel size write_curve_plots gives each budget
    a, b, _ = fig.subplots(1, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hparams_valley(df, 1e10, ax=a)
        isoflop_curves(df, 1e12, ax=b)
        assert _overlaps(fig) == []
    shown = [t.get_text() for t in a.xaxis.get_ticklabels() if t.get_text()]
    assert 2 <= len(shown) <= 5
