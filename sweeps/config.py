"""The `sweep:` section of conf/sweep.yaml as one typed, validated value: `SweepConfig.from_cfg(cfg.sweep)`.

Every sweep.* key is read here and nowhere else, so a key the YAML sets is the value the sweep uses (no `.get(key,
default)` that could disagree with the YAML). An unknown key -- a typo added with `+sweep.n_shape=5`, or one in a
user's YAML -- is a one-line error naming the nearest valid key; `check_overrides` does the same for command-line
overrides before Hydra composes anything (Hydra's own message would say "use +key", which adds the typo).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from model.shapes import ShapeRule

from .packing import parse_pack
from .plan import SweepSettings

# sweep.reuse -> the kinds of sweep whose runs share trunks (sweeps.reuse): IsoFLOP profiles only when asked for
# (`all`): their measured loss penalty is in sweeps/README.md#reusing-the-first-stage-trunks-and-branches-sweepreuse
REUSE: dict[str, tuple[str, ...]] = {"auto": ("hparams",), "all": ("hparams", "isoflop"), "off": ()}


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """conf/sweep.yaml's `sweep:` keys (its comments explain each); defaults equal the YAML's (a test checks)."""

    dir: str = "runs"
    dry_run: bool = False
    laws: str = "deepseek"
    n_shapes: int = 9
    span: float = 1.2
    lr_points: int = 5
    batch_points: int = 5
    lr_span: float = 8.0
    batch_span: float = 8.0
    min_steps: int = 50
    pack: str = "auto"
    extend: int = 2  # rounds of points added beyond a grid edge holding the best run (sweeps.extend); 0 = off
    seeds: int = 1  # seeds per point (sweeps.seeds): data order and init
    reuse: str = "auto"  # trunk/branch training (sweeps.reuse, scaling.run.trunk): auto | all | off
    reuse_span: float = 1.0  # with reuse, budgets within this many decades of C share a model (hparams) or
    # a shape's lr and batch (IsoFLOP)
    shape_rule: str = "auto"
    shape_rules: dict[str, Any] = field(default_factory=dict)
    throughput_cache: str = "~/.cache/scaling-lab/throughput.json"
    throughput_recheck: bool = True  # re-time one cached shape and scale the cached speeds to today's load
    measure_max_params: float = 1.0e7
    assumed_flops_per_s: float = 4.0e14
    gpu_memory_gb: float = 80.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once (YAML ints where floats are meant, `off` for 0)
        for name in (
            "span",
            "lr_span",
            "batch_span",
            "reuse_span",
            "measure_max_params",
            "assumed_flops_per_s",
            "gpu_memory_gb",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"sweep.{name}={v!r} must be a finite number")
            set_(self, name, float(v))
        for name in ("assumed_flops_per_s", "gpu_memory_gb", "reuse_span"):
            if not getattr(self, name) > 0:
                raise ValueError(f"sweep.{name}={getattr(self, name)!r} must be > 0")
        if self.measure_max_params < 0:
            raise ValueError(f"sweep.measure_max_params={self.measure_max_params!r} must be >= 0 (0: measure nothing)")
        for name in ("dry_run", "throughput_recheck"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"sweep.{name}={getattr(self, name)!r} must be true or false")
        extend = 0 if self.extend is False or str(self.extend).lower() == "off" else self.extend
        if isinstance(extend, bool) or not isinstance(extend, int) or not 0 <= extend <= 10:
            raise ValueError(
                f"sweep.extend={self.extend!r} must be a number of rounds from 0 (off) to 10 (default 2): how often "
                f"a grid whose best run sits at an edge is extended beyond it"
            )
        set_(self, "extend", extend)
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or not 1 <= self.seeds <= 100:
            raise ValueError(f"sweep.seeds={self.seeds!r} must be an integer from 1 to 100 (runs per point)")
        parse_pack(self.pack)
        set_(self, "pack", str(self.pack))
        if str(self.reuse) not in REUSE:
            raise ValueError(f"sweep.reuse={self.reuse!r}: use one of {', '.join(REUSE)}")
        for name in ("dir", "laws", "shape_rule", "throughput_cache"):
            set_(self, name, str(getattr(self, name)))
        if not isinstance(self.shape_rules, Mapping):
            raise ValueError(f"sweep.shape_rules must map rule names to rules, got {self.shape_rules!r}")
        rules = self.rules  # every rule validated now, not only the one chosen
        if self.shape_rule != "auto" and self.shape_rule not in rules:
            raise ValueError(f"sweep.shape_rule={self.shape_rule!r} is unknown; use auto or one of {', '.join(rules)}")
        if self.shape_rule == "auto" and not {"cpu", "gpu"} <= set(rules):
            raise ValueError("sweep.shape_rule=auto needs rules named cpu and gpu under sweep.shape_rules")
        _ = self.settings  # the grid's own checks (>= 3 points, spans)

    @property
    def settings(self) -> SweepSettings:
        """The grid settings the planner (sweeps.plan) takes."""
        return SweepSettings(**{k: getattr(self, k) for k in SweepSettings.__dataclass_fields__ if hasattr(self, k)})

    @property
    def rules(self) -> dict[str, ShapeRule]:
        return {name: ShapeRule.from_cfg(str(name), dict(node)) for name, node in self.shape_rules.items()}

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_cfg(cls, node: Mapping[str, Any]) -> SweepConfig:
        """From the composed `sweep` node (a plain mapping: scaling.base.configs.node_dict); unknown keys named."""
        for key in node:
            check_key(str(key))
        return cls(**{str(k): v for k, v in node.items()})


def nearest(key: str, valid: Iterable[str]) -> str | None:
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return match[0] if match else None


def check_key(key: str) -> None:
    """`key` (the part after `sweep.`) names a SweepConfig field, else a one-line error naming the nearest one."""
    valid = SweepConfig.keys()
    if key in valid:
        return
    near = nearest(key, valid)
    hint = f"did you mean sweep.{near}? " if near else ""
    raise ValueError(f"sweep.{key} is not a sweep key: {hint}(sweep keys: {', '.join(valid)})")


def override_key(text: str) -> str:
    """The config key of a Hydra override string: `+sweep.n_shapes=5` -> `sweep.n_shapes`."""
    return text.split("=", 1)[0].lstrip("~+").strip()


def check_overrides(overrides: Iterable[str]) -> None:
    """Every `sweep.*` override names a sweep key, with `+`, `++` or without: checked before Hydra composes, so a typo
    is named with the nearest valid key instead of Hydra's hint to add it with `+`."""
    for text in overrides:
        key = override_key(str(text))
        if key.startswith("sweep."):
            check_key(key.split(".")[1])
