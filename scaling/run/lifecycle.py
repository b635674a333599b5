"""One run directory's life, owned by one process: lock, recheck, config, metrics and trackers, final or failure record.

Every way of training a run (alone, in a pack, as a branch of a trunk) goes through `RunDir`, so a change to what a
run directory holds is made once. Under DDP/FSDP every rank holds a RunDir; only rank 0 writes.
"""

from __future__ import annotations

import logging
import time
from typing import IO, Any

from omegaconf import OmegaConf

from scaling.base.atomic import write_atomic
from scaling.base.lock import RunLocked, acquire, release
from scaling.base.record import CONFIG_NAME, FINISHED, METRICS_NAME, RESULT_NAME, read_result, write_record
from scaling.run.checkpoint import truncate_metrics
from scaling.run.distributed import any_across
from scaling.run.loop import LoopState, write_row
from scaling.run.setup import RunSetup, result_record
from scaling.run.trackers import open_trackers

log = logging.getLogger(__name__)


class RunDir:
    """The directory of one run while this process trains it.

    claim() -> open(state) -> log(row)... -> finish(...) | fail(exc), and release() in every case. `extra` holds the
    record keys that say how the run was trained (`packed_with`, `trunk`, `shared_tokens`): they go into every record
    this RunDir writes, the failure record included.
    """

    def __init__(self, run: RunSetup, extra: dict[str, Any] | None = None):
        self.run, self.path, self.extra = run, run.run_dir, dict(extra or {})
        self.is_main = run.dist_env.is_main
        self.owner: dict | None = None
        self.metrics: IO[str] | None = None
        self.trackers: Any = None
        self.started = time.time()  # this segment's start (wall time of a resumed run adds the earlier ones)
        self.earlier_s = 0.0
        self.startup_s = 0.0
        self.result: dict | None = None  # the final record, once finish() wrote it

    @property
    def run_id(self) -> str:
        return str(self.run.record["run_id"])

    def claim(self) -> dict | None:
        """Take the run dir's lock (rank 0; all ranks raise RunLocked when another live process holds it). Returns the
        record, and lets go again, when another owner finished this run since setup_run looked."""
        locked = None
        if self.is_main:
            try:
                self.owner = acquire(self.path)
            except RunLocked as e:
                locked = e
        if any_across(locked is not None, self.run.dist_env, self.run.device):
            raise locked or RunLocked(f"{self.path} is being trained by another process (found by rank 0)")
        done = read_result(self.path)
        if done is not None and done.get("status") in FINISHED and done.get("config_hash") == self.run.config_hash:
            self.release()
            return done | {"skipped": True}
        return None

    def release(self) -> None:
        self.close()
        if self.owner is not None:
            release(self.path, self.owner)
            self.owner = None

    def open(self, state: LoopState) -> None:
        """Start (or resume at state.step) writing: config.yaml, metrics.jsonl cut back to the checkpoint, trackers."""
        self.earlier_s = state.wall_time_s
        self.started = time.time()
        self.startup_s = time.perf_counter() - self.run.entered  # data cache, model build, checkpoint: before step 1
        if not self.is_main:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path / CONFIG_NAME, OmegaConf.to_yaml(OmegaConf.create(self.run.resolved)))
        truncate_metrics(self.path / METRICS_NAME, state.step)
        self.metrics = (self.path / METRICS_NAME).open("a")
        self.trackers = open_trackers(self.run.train.loggers, self.path, self.run.record | self.extra)

    def log(self, row: dict) -> None:
        """One metrics row: metrics.jsonl (the truth) and the trackers (views of it)."""
        if self.metrics is not None:
            write_row(self.metrics, row)
            if self.trackers:
                self.trackers.log(row)

    def wall_time(self) -> float:
        return self.earlier_s + time.time() - self.started

    def finish(self, state: LoopState, val_loss: float | None, val_tokens: int | None, bpb) -> dict:
        """The final record (completed or diverged) from the loop's state and the final evaluation."""
        result = (
            result_record(self.run, state, val_loss, val_tokens, bpb, self.wall_time(), self.startup_s) | self.extra
        )
        if self.run.parallel != "single":
            result["parallel"] = self.run.parallel
        if self.trackers is not None:
            self.trackers.close(result)
        if self.is_main:
            write_record(self.path, result)
            log.info("%s: %s, val_loss %s nats/token", self.run_id, result["status"], result["val_loss"])
        self.close()
        self.result = result
        return result

    def fail(self, e: BaseException) -> None:
        """Record a failure where the disk still allows: a full or read-only disk must not hide the original error."""
        if not self.is_main:
            return
        try:
            write_record(
                self.path,
                self.run.record
                | {"status": "failed", "error": f"{type(e).__name__}: {e}", "wall_time_s": time.time() - self.started}
                | self.extra,
            )
        except OSError as w:
            log.error("could not record the failure in %s: %s", self.path / RESULT_NAME, w)

    def close(self) -> None:
        if self.metrics is not None and not self.metrics.closed:
            self.metrics.close()
        self.metrics = None
