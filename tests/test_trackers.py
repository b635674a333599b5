"""Experiment trackers (scaling.run.trackers): each writes where it should for a tiny run, offline; a missing package,
an unreachable server or a tracker failing mid-run is one warning and the run goes on."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest

from scaling.run.single import train_run
from scaling.run.trackers import METRIC_KEYS, TAG_KEYS, Trackers, check_loggers, open_trackers, run_tags

FAST = [
    "train.tokens=32768",
    "train.batch_size=1024",
    "train.eval_tokens=8192",
    "train.log_every=4",
    "run.sweep=isoflop",
    "run.budget=1e10",
]
RECORD = {
    "run_id": "r1",
    "sweep": "isoflop",
    "budget": 1e10,
    "M": 1e5,
    "D": 4096,
    "lr": 1e-3,
    "batch_size": 1024,
    "config_hash": "abc",
}
ROWS = [
    {"step": s, "tokens": 1024 * s, "loss": 6.0 - s, "loss_ema": 6.0, "lr": 1e-3, "grad_norm": 0.5, "tokens_per_s": 1e4}
    for s in (1, 2, 3)
]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_logger_names_are_checked_before_anything_is_written(make_cfg, tmp_path):
    assert check_loggers(["wandb", "tensorboard", "wandb"]) == ["wandb", "tensorboard"] and check_loggers(None) == []
    assert check_loggers("tensorboard, mlflow") == ["tensorboard", "mlflow"]  # as typed on a command line
    for bad, why in ((["tensorbord"], "unknown tracker 'tensorbord'"), (3, "must be a list")):
        with pytest.raises(ValueError, match=why):
            check_loggers(bad)
    with pytest.raises(ValueError, match="tensorbord"):
        train_run(make_cfg(*FAST, "train.loggers=[tensorbord]"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_tags_group_a_sweeps_runs(tmp_path):
    tags = run_tags(RECORD, tmp_path / "isoflop" / "r1")
    assert list(tags) == list(TAG_KEYS) and tags["group"] == "isoflop C=1e+10" and tags["M"] == 1e5


def test_a_missing_package_is_one_warning(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError, as when not installed
    with pytest.warns(UserWarning, match=r"wandb is not installed .*pip install -e '\.\[wandb\]'") as w:
        t = open_trackers(["wandb"], tmp_path / "isoflop" / "r1", RECORD)
    assert len(w) == 1 and not t
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing more: logging and closing are silent no-ops
        for row in ROWS:
            t.log(row)
        t.close({"status": "completed"})
    assert open_trackers(["wandb"], tmp_path, RECORD, is_main=False).backends == []  # ranks > 0 open nothing


def test_a_tracker_failing_mid_run_is_one_warning_then_dropped():
    class Flaky:
        name = "flaky"
        calls = 0

        def log(self, values, tokens):
            Flaky.calls += 1
            raise ConnectionError("server went away")

        def close(self, summary, status):
            raise AssertionError("a dropped tracker is never called again")

    t = Trackers([Flaky()], M=1e5)
    with pytest.warns(UserWarning, match="flaky failed \\(ConnectionError: server went away\\)") as w:
        for row in ROWS:
            t.log(row)
        t.close({"status": "completed"})
    assert len(w) == 1 and Flaky.calls == 1


@pytest.mark.slow  # importing mlflow alone takes ~3 s
def test_an_unreachable_mlflow_server_is_one_warning(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.warns(UserWarning, match="mlflow could not start") as w:
        t = open_trackers(["mlflow"], tmp_path / "isoflop" / "r1", RECORD)
    assert len(w) == 1 and not t


@pytest.mark.slow  # importing mlflow alone takes ~3 s
def test_an_unreachable_mlflow_server_with_retries_is_still_one_warning(tmp_path, monkeypatch, caplog):
    """MLflow's HTTP client retries (2 by default here), and urllib3 logs a warning for each retry."""
    import logging

    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    caplog.set_level(logging.WARNING)
    with pytest.warns(UserWarning, match="mlflow could not start") as w:
        t = open_trackers(["mlflow"], tmp_path / "isoflop" / "r1", RECORD)
    logged = [r.getMessage()[:120] for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(w) == 1 and not t and logged == [], logged
    assert logging.getLogger("urllib3.connectionpool").level == logging.NOTSET  # nothing changed for others


def test_tensorboard_event_files_hold_the_metrics_rows(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "isoflop" / "r1"
    t = open_trackers(["tensorboard"], run_dir, RECORD)
    for row in ROWS:
        t.log(row)
    t.close({"status": "completed", "val_loss": 2.5})
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [1024, 2048, 3072] and [e.value for e in loss] == [5.0, 4.0, 3.0]
    assert [e.value for e in acc.Scalars("train/flops")] == [1e5 * 1024, 1e5 * 2048, 1e5 * 3072]
    # the final values at the last step (no D in this result: the last step logged), never at step 0
    assert [(e.step, e.value) for e in acc.Scalars("final/val_loss")] == [(3072, 2.5)]
    assert [(e.step, e.value) for e in acc.Scalars("val/loss")] == [(3072, 2.5)]


def _hparams_sessions(acc) -> tuple[dict, list[str]]:
    """(hparams of the session start info, statuses of the session end infos) in one run's event files."""
    from tensorboard.plugins.hparams import api_pb2, metadata

    content = acc.PluginTagToContent("hparams")
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    values = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
    ends = [metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])]
    return values, [api_pb2.Status.Name(e.status) for e in ends]


def test_tensorboard_gets_periodic_validation_final_values_at_the_last_step_and_hparams(make_cfg, tmp_path):
    """train.eval_every gives a val/loss curve that the final evaluation ends; final/* sit at the last step (tokens
    trained); the HParams plugin gets lr, batch, M, D, C of the run (a sweep's runs then share one HParams table)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "isoflop" / "r1"
    cfg = make_cfg(*FAST, "run.id=r1", "train.loggers=[tensorboard]", "train.eval_every=8")
    result = train_run(cfg, run_dir)
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    D = result["D"]
    assert D == 32768 and acc.Scalars("train/loss")[-1].step == D
    rows = [r for r in _metrics(run_dir) if "val_loss" in r]
    assert [r["step"] for r in rows] == [8, 16, 24]  # periodic evaluations; the final one is in result.json
    val = acc.Scalars("val/loss")
    assert [e.step for e in val] == [8192, 16384, 24576, D]
    assert [e.value for e in val] == pytest.approx([r["val_loss"] for r in rows] + [result["val_loss"]])
    for key, tag in (("val_loss", "final/val_loss"), ("val_bpb", "final/val_bpb"), ("train_loss", "final/train_loss")):
        assert [(e.step, e.value) for e in acc.Scalars(tag)] == [(D, pytest.approx(result[key]))]
    hp, ends = _hparams_sessions(acc)
    want = {k: result[k] for k in ("lr", "batch_size", "M", "D", "C", "budget", "sweep")}
    assert hp == pytest.approx(want | {"n_layer": result["model"]["n_layer"], "d_model": result["model"]["d_model"]})
    assert ends == ["STATUS_SUCCESS"]


@pytest.mark.slow
def test_each_tracker_writes_where_it_should_for_a_tiny_run(make_cfg, tmp_path, monkeypatch):
    for pkg in ("tensorboard", "wandb", "mlflow"):
        pytest.importorskip(pkg)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = tmp_path / "isoflop" / "r1"
    result = train_run(make_cfg(*FAST, "run.id=r1", "train.loggers=[tensorboard,wandb,mlflow]"), run_dir)
    assert result["status"] == "completed"
    rows = _metrics(run_dir)  # the source of truth, unchanged by the trackers
    assert [r["step"] for r in rows] == [4, 8, 12, 16, 20, 24, 28, 32]
    tokens = [r["tokens"] for r in rows]

    acc = EventAccumulator(str(run_dir / "tb"))  # TensorBoard: event files in the run dir
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == tokens
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx([r["loss"] for r in rows])

    (offline,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")  # W&B: one offline run in the run dir
    data = offline.read_bytes()
    assert b"train/loss" in data and b"isoflop C=1e+10" in data and result["config_hash"].encode() in data

    (mlrun,) = [p for p in (tmp_path / "isoflop" / "mlruns").glob("*/*") if (p / "metrics").is_dir()]
    steps = [int(line.split()[2]) for line in (mlrun / "metrics" / "train" / "loss").read_text().splitlines()]
    assert steps == tokens  # MLflow: the sweep dir's file store, metrics against tokens, tagged
    assert (mlrun / "tags" / "config_hash").read_text() == result["config_hash"]
    assert (mlrun / "tags" / "group").read_text() == "isoflop C=1e+10"
    _, value, step = (mlrun / "metrics" / "final" / "val_loss").read_text().split()
    assert int(step) == result["D"] and float(value) == pytest.approx(result["val_loss"])  # at the last step, not 0
    assert set(METRIC_KEYS.values()) - {"val/loss"} <= {
        f"train/{p.name}" for p in (mlrun / "metrics" / "train").iterdir()
    }


@pytest.mark.slow
def test_packed_runs_log_to_their_own_trackers(make_cfg, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from scaling.run.pack import train_pack

    cfgs = [
        make_cfg(*FAST, f"run.id=p{i}", f"optim.lr={lr}", "train.loggers=[tensorboard]")
        for i, lr in enumerate((1e-3, 3e-3))
    ]
    dirs = [tmp_path / "hparams" / f"p{i}" for i in range(2)]
    results = train_pack(cfgs, dirs)
    assert [r["status"] for r in results] == ["completed", "completed"] and results[0].get("packed_with") == ["p1"]
    for d in dirs:  # each run of the pack has its own event files holding its own rows
        acc = EventAccumulator(str(d / "tb"))
        acc.Reload()
        assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx([r["loss"] for r in _metrics(d)])
