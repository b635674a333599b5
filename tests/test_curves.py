"""Training curves as data (analysis.curves.load_curves) and their plots (analysis.curve_plots), on generated runs."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import yaml

from analysis.curve_plots import hparams_valley, isoflop_curves, write_curve_plots
from analysis.curves import load_curves
from model import ModelConfig, count_flops

SHAPE = dict(n_layer=2, d_model=32, n_head=2, n_kv_head=2, ffn_hidden=96, vocab_size=512, seq_len=64)


def _run(
    root: Path,
    rid: str,
    *,
    sweep: str,
    budget: float,
    M: float,
    lr: float,
    batch: int,
    status: str = "completed",
    steps: int = 5,
    garbage: bool = False,
    record: bool = True,
) -> None:
    d = root / sweep / rid
    d.mkdir(parents=True)
    lines = [
        json.dumps(
            {
                "step": s,
                "tokens": s * batch,
                "loss": 6.0 - 0.1 * s,
                "loss_ema": 6.0 - 0.09 * s,
                "lr": lr * s / steps,
                "grad_norm": 1.0 / s,
                "tokens_per_s": 1000.0 + s,
            }
        )
        for s in range(1, steps + 1)
    ]
    if garbage:
        lines.insert(2, "this is not json")
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n" + ('{"step": 9, "tok' if garbage else ""))
    model = {
        "model": SHAPE | {"init_std": 0.02},
        "train": {"tokens": steps * batch, "batch_size": batch},
        "optim": {"lr": lr},
        "run": {"id": rid, "sweep": sweep, "budget": budget},
        "seed": 1,
    }
    (d / "config.yaml").write_text(yaml.safe_dump(model))
    if record:
        rec = {
            "run_id": rid,
            "sweep": sweep,
            "budget": budget,
            "status": status,
            "M": M,
            "D": steps * batch,
            "C": M * steps * batch,
            "lr": lr,
            "batch_size": batch,
            "val_loss": 5.0 + lr if status == "completed" else None,
            "tokens_per_s": 1234.0,
            "model": SHAPE,
            "config_hash": f"h{rid}",
        }
        (d / "result.json").write_text(json.dumps(rec))


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    for i, M in enumerate((1e5, 2e5, 4e5)):
        _run(tmp_path, f"iso{i}", sweep="isoflop", budget=1e10, M=M, lr=1e-3, batch=256, garbage=i == 1)
        _run(tmp_path, f"isoB{i}", sweep="isoflop", budget=3e10, M=M, lr=1e-3, batch=256, steps=7)
    for b in (256, 512):
        for lr in (1e-3, 3e-3, 1e-2):
            status = "diverged" if lr == 1e-2 and b == 256 else "completed"
            _run(tmp_path, f"hp_{b}_{lr:g}", sweep="hparams", budget=1e10, M=2e5, lr=lr, batch=b, status=status)
    _run(tmp_path, "live", sweep="isoflop", budget=1e11, M=0, lr=2e-3, batch=128, record=False)  # still running
    return tmp_path


def test_one_row_per_logged_step_joined_with_the_record(runs):
    df = load_curves(runs)
    assert df.run_id.nunique() == 13 and len(df) == 3 * 5 + 3 * 7 + 6 * 5 + 5
    iso1 = df[df.run_id == "iso1"].sort_values("step")
    assert iso1.step.tolist() == [1, 2, 3, 4, 5]  # the garbage line and the cut-off last line are skipped ...
    warns = df.attrs["warnings"]
    assert any("iso1/metrics.jsonl:3: unreadable" in w for w in warns)  # ... and named, with their line numbers
    assert any("iso1/metrics.jsonl:7: unreadable line skipped (cut off mid-write)" in w for w in warns)
    np.testing.assert_allclose(iso1.flops, 2e5 * iso1.tokens)  # FLOPs so far = M * tokens
    row = iso1.iloc[-1]
    assert row.budget == 1e10 and row.sweep == "isoflop" and row.status == "completed" and row.d_model == 32
    assert row.lr == pytest.approx(1e-3) and row.run_lr == 1e-3 and row.run_val_loss == pytest.approx(5.001)
    assert row.tokens_per_s == 1005.0 and row.run_tokens_per_s == 1234.0  # step value vs the record's
    # A run without result.json (still running) is joined with its config.yaml: M from the model shape.
    live = df[df.run_id == "live"]
    assert (live.status == "unfinished").all() and live.M.iloc[0] == count_flops(ModelConfig(**SHAPE)).M
    np.testing.assert_allclose(live.flops, live.M * live.tokens)


def test_bad_input_is_named(runs, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_curves(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no readable metrics.jsonl"):
        load_curves(tmp_path / "empty")
    (runs / "hparams" / "hp_256_0.001" / "result.json").write_text("{broken")
    df = load_curves(runs)
    assert "hp_256_0.001" not in set(df.run_id)
    assert any("hp_256_0.001: skipped, result.json unreadable" in w for w in df.attrs["warnings"])


def test_plots_draw_on_the_given_axes_and_write_files(runs, tmp_path):
    from matplotlib.figure import Figure

    df = load_curves(runs)
    fig = Figure()
    ax1, ax2 = fig.subplots(1, 2)
    assert isoflop_curves(df, 1e10, ax=ax1) is fig and hparams_valley(df, 1e10, ax=ax2) is fig
    assert len(ax1.lines) == 3  # one curve per run at that budget
    assert len(ax2.lines) == 2 + 1 + 1  # one line per batch size, the diverged marks, their legend entry
    xs = [line.get_xdata() for line in ax2.lines if line.get_marker() == "x" and len(line.get_xdata())]
    assert [list(x) for x in xs] == [[1e-2]]  # the diverged run, at its learning rate
    paths = write_curve_plots(df, tmp_path / "plots")
    assert [p.name for p in paths] == ["isoflop_training_curves.png", "hparams_valley.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_importing_the_plots_leaves_the_backend_alone():
    import analysis.curve_plots as cp

    before = matplotlib.get_backend()
    matplotlib.use("svg", force=True)
    try:
        importlib.reload(cp)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before, force=True)


def test_garbage_record_values_never_crash_the_plots(tmp_path):
    d = tmp_path / "runs" / "r"
    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text(json.dumps({"step": 1, "tokens": 10, "loss": 1.0, "loss_ema": 1.0}) + "\n")
    for rec in (
        {"sweep": "isoflop", "budget": 1e10, "M": None, "status": "completed"},
        {"sweep": "hparams", "budget": 1e10, "status": "diverged", "lr": "a", "batch_size": "b"},
        {"sweep": ["x"], "budget": {"a": 1}, "M": [5]},
        {},
    ):
        (d / "result.json").write_text(json.dumps({"run_id": "r", **rec}))
        df = load_curves(tmp_path / "runs")
        assert len(df) == 1 and np.isnan(df.flops.iloc[0]) == (not isinstance(rec.get("M"), (int, float)))
        write_curve_plots(df, tmp_path / "plots")  # plots what it can; a bad value is NaN, never an exception


def test_a_boolean_or_negative_step_is_not_a_logged_step(tmp_path):
    """{"step": true} passed isinstance(step, int) and became a row with step NaN (curves) or step 1 (resume)."""
    from scaling.base.record import parse_metrics_line, read_metrics

    assert parse_metrics_line('{"step": true, "tokens": 5}') is None
    assert parse_metrics_line('{"step": -1, "tokens": 5}') is None
    assert parse_metrics_line('{"step": 3, "tokens": 5}') == {"step": 3, "tokens": 5}
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "tokens": 5}\n{"step": false, "tokens": 9}\n')
    assert read_metrics(log) == ([{"step": 1, "tokens": 5}], [2])
