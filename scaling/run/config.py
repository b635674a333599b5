"""TrainConfig and OptimConfig: conf/train/*.yaml and conf/optim/*.yaml as typed values, validated once.

Like model.ModelConfig, each is built with `from_dict` from the plain mapping Hydra composed; an unknown key, a
missing one or an implausible value is a one-line ValueError naming the key and the fix, raised before anything is
written. Everything downstream (the run, the loop, the step) reads attributes instead of dict lookups.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from scaling.run.schedule import SCHEDULES
from scaling.run.trackers import check_loggers

DEVICES_HELP = "auto, cpu, cuda or cuda:N"
DTYPES = ("auto", "fp32", "bf16")
PARALLEL_MODES = ("auto", "ddp", "fsdp")

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """AdamW and the learning-rate schedule (conf/optim/adamw.yaml explains each value)."""

    lr: float
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    schedule: str = "multistep"
    warmup_frac: float = 0.05
    max_warmup_steps: int = 2000
    # A fixed warmup in steps, overriding warmup_frac: sweep.reuse sets it so that a trunk and all its branches warm
    # up alike (their runs differ in length, so warmup_frac would give each its own). None: warmup_frac of the run.
    warmup_steps: int | None = None
    min_lr_frac: float = 0.1

    def __post_init__(self) -> None:
        _positive(self, "optim", "lr", "eps", "grad_clip")
        for name in ("beta1", "beta2", "warmup_frac", "min_lr_frac"):
            value = _number(self, "optim", name)
            if not 0 <= value < 1 if name.startswith("beta") else not 0 <= value <= 1:
                raise ValueError(f"optim.{name}={value!r} must lie in [0, 1{')' if name.startswith('beta') else ']'}")
        if _number(self, "optim", "weight_decay") < 0:
            raise ValueError(f"optim.weight_decay={self.weight_decay!r} must be >= 0")
        _integer(self, "optim", "max_warmup_steps", minimum=1)
        if self.warmup_steps is not None:
            _integer(self, "optim", "warmup_steps", minimum=1)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule={self.schedule!r} is unknown; use one of {', '.join(SCHEDULES)}")

    @property
    def betas(self) -> tuple[float, float]:
        return (self.beta1, self.beta2)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> OptimConfig:
        return _from_dict(cls, "optim", values)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How much to train and how (conf/train/default.yaml explains each value)."""

    tokens: float
    batch_size: int
    micro_batch_size: int | None = None
    eval_tokens: int = 65536
    eval_every: int = 0
    log_every: int = 10
    ckpt_every_s: float = 60.0
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    threads: int | None = None
    progress: bool = True
    diverge_factor: float = 3.0
    parallel: str = "auto"
    activation_checkpointing: bool = False
    loggers: tuple[str, ...] = ()  # experiment trackers (scaling.run.trackers), e.g. (tensorboard, wandb)

    def __post_init__(self) -> None:
        _positive(self, "train", "tokens", "diverge_factor")
        _integer(self, "train", "batch_size", minimum=1)
        _integer(self, "train", "eval_tokens", minimum=1)
        _integer(self, "train", "log_every", minimum=1)
        _integer(self, "train", "eval_every", minimum=0)
        for name in ("micro_batch_size", "threads"):
            if getattr(self, name) is not None:
                _integer(self, "train", name, minimum=1)
        if _number(self, "train", "ckpt_every_s") < 0:
            raise ValueError(f"train.ckpt_every_s={self.ckpt_every_s!r} must be >= 0 (0: every logging step)")
        for name in ("compile", "progress", "activation_checkpointing"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"train.{name}={getattr(self, name)!r} must be true or false")
        device = str(self.device)
        if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
            raise ValueError(f"train.device={device!r} is unknown; use {DEVICES_HELP}")
        if self.dtype not in DTYPES:
            raise ValueError(f"train.dtype={self.dtype!r} is unknown; use {', '.join(DTYPES)}")
        if self.parallel not in PARALLEL_MODES:
            raise ValueError(f"train.parallel={self.parallel!r} is unknown; use {', '.join(PARALLEL_MODES)}")
        object.__setattr__(self, "loggers", tuple(check_loggers(self.loggers)))  # frozen: normalise once

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        return _from_dict(cls, "train", values)


def _from_dict(cls: type[T], group: str, values: Mapping[str, Any]) -> T:
    """cls(**values) with one-line errors for unknown and missing keys (a typo in a YAML file or an override)."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    valid = [f.name for f in fields]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(f"unknown {group} key(s) {unknown}; valid keys are {valid}")
    missing = [f.name for f in fields if f.default is dataclasses.MISSING and f.name not in values]
    if missing:
        raise ValueError(f"{group} is missing required key(s) {missing}")
    return cls(**dict(values))


def _number(obj: object, group: str, name: str) -> float:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{group}.{name} must be a finite number, got {value!r}")
    return float(value)


def _positive(obj: object, group: str, *names: str) -> None:
    for name in names:
        if not _number(obj, group, name) > 0:
            raise ValueError(f"{group}.{name} must be > 0, got {getattr(obj, name)!r}")


def _integer(obj: object, group: str, name: str, minimum: int) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{group}.{name} must be an integer >= {minimum}, got {value!r}")
