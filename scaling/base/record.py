"""The run record `<run dir>/result.json`: its schema (`RunRecord`), reading and writing it, config hashing and
provenance. The one definition every writer (trainer, packed trainer, synthetic studies) and reader (sweeper,
status view, analysis loader) uses; scaling/run/README.md's run-record table documents the same keys."""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch

from scaling.base.atomic import write_atomic
from scaling.base.safe_read import read_capped

SCHEMA_VERSION = 1
FINISHED = ("completed", "diverged")  # a run in one of these states is never retrained
# Keys that change how a run is executed or logged but not what it computes: they stay out of the config hash,
# so that a run resumed on another device, or with a progress bar, is recognised as the same run.
EXECUTION_ONLY = {
    "device",
    "compile",
    "threads",
    "progress",
    "log_every",
    "ckpt_every_s",
    "micro_batch_size",
    "parallel",
    "activation_checkpointing",
    "loggers",
}


RESULT_NAME = "result.json"
CONFIG_NAME = "config.yaml"  # the resolved config the run trained with (OmegaConf YAML)
STATUSES = ("running", "completed", "diverged", "failed")


@dataclass(kw_only=True)
class RunRecord:
    """One run's record. Keys not named here (e.g. `steps_done`, `packed_with`) travel in `extra`, in file order."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    status: str  # running | completed | diverged | failed
    error: str | None = None
    sweep: str | None = None  # isoflop | hparams | None (a lone run)
    budget: float | None = None  # the sweep point's nominal C
    model: dict = field(default_factory=dict)  # n_layer, d_model, n_head, n_kv_head, ffn_hidden, vocab_size, seq_len
    N1: float | None = None
    N2: float | None = None
    params: float | None = None
    M: float | None = None  # non-embedding FLOPs per token (count_flops)
    M_formula: float | None = None
    M_6N1: float | None = None
    M_6N2: float | None = None
    D: float | None = None  # tokens trained
    C: float | None = None  # M * D
    lr: float | None = None
    batch_size: float | None = None  # tokens per optimizer step
    seq_len: int | None = None
    steps: int | None = None
    epochs: float | None = None
    dataset: str | None = None
    tokenizer: str | None = None
    seed: int | None = None
    git_sha: str | None = None
    torch: str | None = None
    device: str | None = None
    world_size: int | None = None
    config_hash: str | None = None
    D_planned: float | None = None
    val_loss: float | None = None  # nats/token
    val_bpb: float | None = None  # bits per byte
    val_tokens: int | None = None
    train_loss: float | None = None
    initial_loss: float | None = None
    tokens_per_s: float | None = None
    wall_time_s: float | None = None
    startup_s: float | None = None
    extra: dict = field(default_factory=dict)

    FIELDS: ClassVar[tuple[str, ...]]

    @classmethod
    def from_dict(cls, data: dict) -> RunRecord:
        """A record from its JSON object; ValueError (one line) when it is not one this code can read."""
        if not isinstance(data, dict):
            raise ValueError("top level is not a JSON object")
        for key in ("run_id", "status"):
            if key not in data:
                raise ValueError(f"missing key {key!r}")
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"schema_version {version!r} is not a version number (1..{SCHEMA_VERSION})")
        if version > SCHEMA_VERSION:
            raise ValueError(f"schema_version {version!r} is newer than this code reads ({SCHEMA_VERSION}); upgrade")
        known = {k: v for k, v in data.items() if k in cls.FIELDS}
        extra = {k: v for k, v in data.items() if k not in cls.FIELDS}
        return cls(**known, extra=extra)

    def to_dict(self) -> dict:
        out = {name: getattr(self, name) for name in self.FIELDS}
        return out | self.extra

    @classmethod
    def read(cls, run_dir: Path) -> RunRecord | None:
        """The run's record, or None when absent or unreadable (a rerun then trains it again)."""
        try:
            # bounded, and never blocking: a FIFO planted as result.json reads as no record
            return cls.from_dict(json.loads(read_capped(Path(run_dir) / RESULT_NAME)))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, run_dir: Path) -> None:
        write_json(Path(run_dir) / RESULT_NAME, self.to_dict())


RunRecord.FIELDS = tuple(f.name for f in fields(RunRecord) if f.name != "extra")


def write_record(run_dir: Path, record: dict) -> None:
    """Write a run's result.json atomically, as given, after checking it against RunRecord's schema: the writers
    (scaling.train, scaling.run.pack) and the readers share one definition of the record."""
    RunRecord.from_dict(record)
    write_json(Path(run_dir) / RESULT_NAME, record)


TRUNKS_DIR = "trunks"  # below a sweep dir: one directory per trunk (scaling.run.trunk)
TRUNK_RECORD = "trunk.json"  # a trunk's record: never result.json, as a trunk is not a run the analysis fits
METRICS_NAME = "metrics.jsonl"  # one JSON object per logged step: step, tokens, loss, ... (scaling/run/README.md)


def parse_metrics_line(line: str | bytes) -> dict | None:
    """One metrics.jsonl line as a dict, or None when it is not a logged step (garbage, or cut off mid-write)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    if not isinstance(row, dict):
        return None
    step = row.get("step")
    return row if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None


def read_metrics(path: Path) -> tuple[list[dict], list[int]]:
    """(rows, bad): the logged steps of a metrics.jsonl and the 1-based numbers of lines that are not (what a kill
    or a full disk leaves mid-write). A missing file has no rows. The one reader of the log: the trainer's resume,
    the training-curve loader and the status view all use it (the status view on the file's tail only)."""
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return [], []
    return parse_metrics(text)


def parse_metrics(text: str) -> tuple[list[dict], list[int]]:
    """(rows, bad) of a metrics.jsonl's text, as `read_metrics` (for callers that read the file themselves)."""
    rows: list[dict] = []
    bad: list[int] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row = parse_metrics_line(line)
        if row is None:
            bad.append(n)
        else:
            rows.append(row)
    return rows, bad


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_result(run_dir: Path) -> dict | None:
    """The run's result.json as a dict (RunRecord.to_dict), or None when absent or unreadable."""
    record = RunRecord.read(run_dir)
    return None if record is None else record.to_dict()


def read_config(run_dir: Path) -> dict:
    """The run's config.yaml as a plain dict (resolved): the one reader of that file. ValueError (one line) when it is
    missing or not a run config; YAML tags that would build objects are refused by OmegaConf's safe loader."""
    from omegaconf import OmegaConf  # the base layer's one Hydra-family import, kept off the record's import path

    path = Path(run_dir) / CONFIG_NAME
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except FileNotFoundError:
        raise ValueError(f"{run_dir} has no {CONFIG_NAME}: not a run directory written by scaling.train") from None
    except Exception as e:  # noqa: BLE001 -- any unreadable config is the same bad input
        raise ValueError(f"{path} is not a readable run config ({type(e).__name__}: {e})") from None
    if not isinstance(cfg, dict) or not all(k in cfg for k in ("model", "data", "optim", "train", "seed")):
        raise ValueError(f"{path} is not a run config (it needs model, data, optim, train and seed)")
    return cfg


def config_hash(cfg: dict) -> str:
    """Hash of everything that determines a run's numbers (model, data, optim, train, seed)."""
    train = {k: v for k, v in cfg["train"].items() if k not in EXECUTION_ONLY}
    # where the cache lives and how many processes build it change no number
    data = {k: v for k, v in cfg["data"].items() if k not in ("cache_dir", "num_proc")}
    # A fixed warmup is part of the config only when set: runs hashed before the key existed keep their hash.
    optim = {k: v for k, v in cfg["optim"].items() if not (k == "warmup_steps" and v is None)}
    key = {"model": cfg["model"], "data": data, "optim": optim, "train": train, "seed": cfg["seed"]}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
