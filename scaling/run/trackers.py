"""Experiment trackers for a run: `train.loggers=[tensorboard,wandb,mlflow]` (default none).

metrics.jsonl stays the source of truth; a tracker is a view of the same rows for people who watch runs in
TensorBoard, Weights & Biases or MLflow. Only rank 0 opens trackers. Each is optional and offline-safe: a package
that is not installed, a server that cannot be reached, or a tracker that fails mid-run gives ONE warning and the
run goes on without it.

Where each writes, and how a sweep's runs are grouped:
  tensorboard  <run dir>/tb/ (event files); `tensorboard --logdir <sweep dir>` shows a sweep's runs side by side, and
               its HParams tab one row per run: HPARAM_KEYS (lr, batch_size, M, D, C, ...) against final/val_loss
  wandb        <run dir>/wandb/; project $WANDB_PROJECT (default scaling-lab), group "<sweep dir> C=<budget>",
               job_type the sweep kind; offline unless WANDB_MODE says otherwise or WANDB_API_KEY is set
               (offline runs upload later with `wandb sync <run dir>/wandb/offline-run-*`)
  mlflow       $MLFLOW_TRACKING_URI, else MLflow's local file store <sweep dir>/mlruns (`mlflow ui
               --backend-store-uri <sweep dir>/mlruns`); experiment = the sweep dir's name, run name = run id
Every run is tagged with TAG_KEYS (run_id, sweep, budget, M, D, lr, batch_size, config_hash, group). Metrics are
logged against tokens trained (so runs with different batch sizes line up) under METRIC_KEYS' names; val/loss at
every train.eval_every steps (0, the default: the final evaluation only). At the end, FINAL_KEYS and the final
evaluation as a last val/loss point are logged at the run's last step (its tokens trained).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

BACKENDS = ("tensorboard", "wandb", "mlflow")
TAG_KEYS = ("run_id", "sweep", "budget", "M", "D", "lr", "batch_size", "config_hash", "group")
# metrics.jsonl column -> tracker key
METRIC_KEYS = {
    "loss": "train/loss",
    "loss_ema": "train/loss_ema",
    "lr": "train/lr",
    "grad_norm": "train/grad_norm",
    "tokens_per_s": "train/tokens_per_s",
    "val_loss": "val/loss",
    "flops": "train/flops",
}
# result.json key -> tracker summary key, logged once at the end, at the last step
FINAL_KEYS = {
    "val_loss": "final/val_loss",
    "val_bpb": "final/val_bpb",
    "train_loss": "final/train_loss",
    "tokens_per_s": "final/tokens_per_s",
    "wall_time_s": "final/wall_time_s",
}
# record keys -> TensorBoard HParams columns (model.n_layer/d_model are the model's shape); metrics: FINAL_KEYS' tags
HPARAM_KEYS = ("lr", "batch_size", "M", "D", "C", "budget", "sweep", "n_layer", "d_model")


def check_loggers(names: Any) -> list[str]:
    """train.loggers as a list of backend names; ValueError naming the bad entry (call before writing anything)."""
    if names is None:
        return []
    if isinstance(names, str):  # train.loggers=tensorboard or "tensorboard,wandb": what people type on a command line
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not isinstance(names, Sequence):
        raise ValueError(f"train.loggers={names!r} must be a list, e.g. train.loggers=[tensorboard,wandb]")
    out = []
    for n in names:
        if n not in BACKENDS:
            raise ValueError(f"train.loggers: unknown tracker {n!r}; choose among {', '.join(BACKENDS)}")
        if n not in out:
            out.append(str(n))
    return out


def run_tags(record: dict, run_dir: Path) -> dict[str, Any]:
    """The tags every tracker gets, from the run's record (result.json keys)."""
    sweep_dir = Path(run_dir).resolve().parent.name
    budget = record.get("budget")
    group = f"{sweep_dir} C={float(budget):.3g}" if isinstance(budget, (int, float)) else sweep_dir
    tags = {k: record.get(k) for k in TAG_KEYS if k != "group"}
    return tags | {"group": group}


class Trackers:
    """The open trackers of one run: `log(row)` for each metrics.jsonl row, `close(result)` at the end."""

    def __init__(self, backends: list[_Backend], M: float | None = None):
        self.backends = backends
        self.M = M
        self.tokens = 0  # the last step logged, in tokens: where the final values go

    def __bool__(self) -> bool:
        return bool(self.backends)

    def log(self, row: dict) -> None:
        if not self.backends:
            return
        tokens = int(row.get("tokens") or 0)
        self.tokens = max(self.tokens, tokens)
        values = {
            METRIC_KEYS[k]: float(v)
            for k, v in row.items()
            if k in METRIC_KEYS and isinstance(v, (int, float)) and math.isfinite(v)
        }
        if self.M:
            values[METRIC_KEYS["flops"]] = float(self.M) * tokens
        self._each("log", values, tokens)

    def close(self, result: dict | None = None) -> None:
        """The final values at the run's last step: its tokens trained (result D), else the last step logged."""
        result = result or {}
        summary = {
            v: float(result[k])
            for k, v in FINAL_KEYS.items()
            if isinstance(result.get(k), (int, float)) and math.isfinite(result[k])
        }
        if "final/val_loss" in summary:  # the final evaluation ends the val/loss curve (periodic ones stop before it)
            summary[METRIC_KEYS["val_loss"]] = summary["final/val_loss"]
        status = str(result.get("status") or "unfinished")
        D = result.get("D")
        tokens = int(D) if isinstance(D, (int, float)) and math.isfinite(D) and D > 0 else self.tokens
        self._each("close", summary, status, tokens)
        self.backends = []

    def _each(self, method: str, *args: Any) -> None:
        for b in list(self.backends):
            try:
                getattr(b, method)(*args)
            except Exception as e:  # noqa: BLE001 -- a tracker never takes a run down: warn once, drop it
                warnings.warn(
                    f"train.loggers: {b.name} failed ({type(e).__name__}: {_first_line(e)}); "
                    f"continuing without it (metrics.jsonl has every row)",
                    stacklevel=3,
                )
                self.backends.remove(b)


def open_trackers(names: Sequence[str], run_dir: Path, record: dict, is_main: bool = True) -> Trackers:
    """Open the named trackers for a run (on rank 0 only); each one that cannot start gives one warning."""
    if not is_main or not names:
        return Trackers([])
    tags = run_tags(record, run_dir)
    backends: list[_Backend] = []
    for name in check_loggers(list(names)):
        try:
            backends.append(
                _TensorBoard(Path(run_dir), tags, record)
                if name == "tensorboard"
                else _OPENERS[name](Path(run_dir), tags)
            )
        except ImportError as e:
            warnings.warn(
                f"train.loggers: {name} is not installed ({e.name or e}); pip install -e '.[{name}]'. "
                f"The run goes on, logging to metrics.jsonl only",
                stacklevel=2,
            )
        except Exception as e:  # noqa: BLE001 -- unreachable server, bad credentials, full disk: the run goes on
            warnings.warn(
                f"train.loggers: {name} could not start ({type(e).__name__}: {_first_line(e)}); "
                f"the run goes on, logging to metrics.jsonl only",
                stacklevel=2,
            )
    return Trackers(backends, record.get("M"))


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


def _plain(v: Any) -> Any:
    return v if v is None or isinstance(v, (str, int, float, bool)) else str(v)


class _Backend:
    name = ""

    def log(self, values: dict[str, float], tokens: int) -> None:
        raise NotImplementedError

    def close(self, summary: dict[str, float], status: str, tokens: int) -> None:
        raise NotImplementedError


class _TensorBoard(_Backend):
    name = "tensorboard"

    def __init__(self, run_dir: Path, tags: dict[str, Any], record: dict | None = None):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.writer = SummaryWriter(log_dir=str(run_dir / "tb"))
        table = "\n".join(f"| {k} | {v} |" for k, v in tags.items())
        self.writer.add_text("run", f"| key | value |\n| --- | --- |\n{table}", global_step=0)
        self.events = cast(Any, self.writer.file_writer)  # made by the constructor (typed Optional)
        self.events.add_summary(_session_start(hparams(record or tags)))

    def log(self, values: dict[str, float], tokens: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, global_step=tokens)
        self.writer.flush()

    def close(self, summary: dict[str, float], status: str, tokens: int) -> None:
        self.writer.add_text("status", status, global_step=tokens)
        for k, v in summary.items():
            self.writer.add_scalar(k, v, global_step=tokens)
        self.events.add_summary(_session_end(status))
        self.writer.close()


def hparams(record: dict) -> dict[str, float | str]:
    """The run's HParams columns (HPARAM_KEYS that it has: a lone run has no sweep or budget)."""
    model = record.get("model")
    model = model if isinstance(model, dict) else {}
    values = {k: record.get(k, model.get(k)) for k in HPARAM_KEYS}
    return {k: v if isinstance(v, str) else float(v) for k, v in values.items() if isinstance(v, (int, float, str))}


def _hparams_summary(tag: str, data: Any) -> Any:
    """A Summary holding HParams plugin data (what tensorboard.plugins.hparams.summary writes, without TensorFlow)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import metadata

    return Summary(
        value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR)]
    )


def _session_start(values: dict[str, float | str]) -> Any:
    """SessionStartInfo only: without an experiment summary, TensorBoard builds the HParams table from every run's
    start info and their scalar tags (final/val_loss, ...), so a sweep's runs share one table."""
    import time

    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    info = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    for k, v in values.items():
        if isinstance(v, str):
            info.hparams[k].string_value = v
        else:
            info.hparams[k].number_value = v
    return _hparams_summary(metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=info))


def _session_end(status: str) -> Any:
    import time

    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    code = {"completed": "STATUS_SUCCESS", "unfinished": "STATUS_ABORTED"}.get(status, "STATUS_FAILURE")
    info = plugin_data_pb2.SessionEndInfo(status=api_pb2.Status.Value(code), end_time_secs=time.time())
    return _hparams_summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=info))


class _WandB(_Backend):
    name = "wandb"

    def __init__(self, run_dir: Path, tags: dict[str, Any]):
        import wandb

        mode: Any = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "scaling-lab"),
            dir=str(run_dir),
            mode=mode,
            name=str(tags.get("run_id")),
            group=tags["group"],
            job_type=str(tags.get("sweep") or "run"),
            config={k: _plain(v) for k, v in tags.items()},
            reinit="create_new",
            # A server that does not answer must not hold the run: give up after 30 s (then one warning).
            settings=wandb.Settings(init_timeout=30, silent=True, console="off"),
        )

    def log(self, values: dict[str, float], tokens: int) -> None:
        self.run.log(values, step=tokens)

    def close(self, summary: dict[str, float], status: str, tokens: int) -> None:
        if summary:
            self.run.log(summary, step=tokens)
        self.run.summary.update(summary | {"status": status})
        self.run.finish(exit_code=0 if status in ("completed", "diverged") else 1)


@contextlib.contextmanager
def _quiet_retries() -> Iterator[None]:
    """MLflow's HTTP client logs a warning per retry (urllib3) before it gives up: an unreachable server must be
    the ONE warning our handler gives, so these are held back while MLflow calls run (other code's stay as set)."""
    loggers = [logging.getLogger(n) for n in ("urllib3.connectionpool", "urllib3.util.retry", "mlflow")]
    levels = [x.level for x in loggers]
    for x in loggers:
        x.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for x, level in zip(loggers, levels, strict=True):
            x.setLevel(level)


class _MLflow(_Backend):
    name = "mlflow"

    def __init__(self, run_dir: Path, tags: dict[str, Any]):
        with _quiet_retries():
            self._open(run_dir, tags)

    def _open(self, run_dir: Path, tags: dict[str, Any]) -> None:
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        # MLflow retries an unreachable server for minutes by default; a run should warn and go on much sooner.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        if not uri:
            # MLflow 3 keeps the file store in maintenance mode behind this opt-in; it needs no server or database
            # migration (a new sqlite store takes ~10 s to create) and each run writes only its own directory.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (run_dir.resolve().parent / "mlruns").as_uri()
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        name = run_dir.resolve().parent.name
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            try:
                exp_id = self.client.create_experiment(name)
            except Exception:  # noqa: BLE001 -- another run of the sweep created it first
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
        self.run_id = self.client.create_run(
            exp_id, run_name=str(tags.get("run_id")), tags={k: str(v) for k, v in tags.items()}
        ).info.run_id

    def log(self, values: dict[str, float], tokens: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        with _quiet_retries():
            self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, tokens) for k, v in values.items()])

    def close(self, summary: dict[str, float], status: str, tokens: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        with _quiet_retries():
            if summary:
                self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, tokens) for k, v in summary.items()])
            self.client.set_tag(self.run_id, "status", status)
            self.client.set_terminated(self.run_id, "FINISHED" if status in ("completed", "diverged") else "FAILED")


_OPENERS = {"tensorboard": _TensorBoard, "wandb": _WandB, "mlflow": _MLflow}
