"""A study file (conf/study/*.yaml) as one validated value, checked whole before stage 1 trains anything.

Sections, keys and budgets are checked here; every stage's overrides (the study's, the stage's and the command
line's) are composed into the sweep config Hydra will compose for that stage, so a typo in stage 2's overrides stops
the study before stage 1 instead of after it, and every sweep.* key is validated (sweeps.config). The analysis options
are checked by the study command (scaling.study), which knows analysis.fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scaling.base.cli import one_line
from scaling.base.configs import conf_dir, node_dict

from .config import SweepConfig, check_overrides, nearest, override_key

STAGES = ("hparams", "isoflop")  # DeepSeek's order
SECTIONS = ("dir", "overrides", "hparams", "isoflop", "analysis", "sample_prompt")
STAGE_KEYS = ("budgets", "overrides")
# Set by the study for each stage: an override of them would send both stages to one directory. sweep.laws is the
# prior stage 1 is centred on (DeepSeek's by default); stage 2 is centred on stage 1's fit (sweeps.gate), never set.
RESERVED = ("sweep.dir", "sweep.dry_run", "hparams", "isoflop")


@dataclass(frozen=True)
class Stage:
    kind: str  # hparams | isoflop
    budgets: tuple[float, ...]
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class StudySpec:
    path: str  # the study file, named in every error
    dir: str
    overrides: tuple[str, ...]
    stages: tuple[Stage, ...]
    analysis: dict[str, Any]
    sample_prompt: str | None = None

    def stage(self, kind: str) -> Stage:
        return next(s for s in self.stages if s.kind == kind)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], path: str) -> StudySpec:
        """Sections, keys and budgets of a loaded study file; one-line ValueError naming the file and the key."""
        for key in raw:
            if key not in SECTIONS:
                near = nearest(str(key), SECTIONS)
                hint = f"did you mean {near}? " if near else ""
                raise ValueError(f"{path}: unknown section {key!r}: {hint}(sections: {', '.join(SECTIONS)})")
        missing = [k for k in ("dir", *STAGES) if k not in raw]
        if missing:
            raise ValueError(
                f"{path}: missing section(s) {', '.join(missing)} (a study has dir, hparams and isoflop; "
                f"see conf/study/cpu_demo.yaml)"
            )
        stages = tuple(_stage(kind, raw[kind], path) for kind in STAGES)
        analysis = raw.get("analysis") or {}
        if not isinstance(analysis, Mapping):
            raise ValueError(f"{path}: analysis must map analysis.fit options to values, got {analysis!r}")
        prompt = raw.get("sample_prompt")
        return cls(
            path=path,
            dir=str(raw["dir"]),
            overrides=_overrides(raw.get("overrides"), f"{path}: overrides"),  # sweep.laws there: stage 1's prior
            stages=stages,
            analysis=dict(analysis),
            sample_prompt=None if prompt is None else str(prompt),
        )

    def stage_overrides(self, kind: str, extra: list[str]) -> list[str]:
        """What a stage's sweep gets, in order (later wins): the study's, the command line's, the stage's."""
        return [*self.overrides, *extra, *self.stage(kind).overrides]

    def compose(self, kind: str, extra: list[str]) -> SweepConfig:
        """The stage's sweep config as Hydra will compose it (every override checked: unknown keys, bad groups,
        bad values), and its sweep.* keys typed; a one-line ValueError naming the stage otherwise."""
        from hydra import compose, initialize_config_dir
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        where = f"{self.path}: stage {kind}"
        overrides = self.stage_overrides(kind, extra)
        try:
            check_overrides(overrides)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        try:
            with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
                cfg = compose("sweep", overrides=overrides)
            return SweepConfig.from_cfg(node_dict(cfg.sweep))
        except (HydraException, OmegaConfBaseException) as e:
            raise ValueError(f"{where}: {one_line(e)}") from None
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None


def _stage(kind: str, node: Any, path: str) -> Stage:
    if not isinstance(node, Mapping):
        raise ValueError(f"{path}: {kind} must be a mapping with budgets (and overrides), got {node!r}")
    for key in node:
        if key not in STAGE_KEYS:
            near = nearest(str(key), STAGE_KEYS)
            hint = f"did you mean {kind}.{near}? " if near else ""
            raise ValueError(f"{path}: unknown key {kind}.{key}: {hint}(keys: {', '.join(STAGE_KEYS)})")
    budgets = node.get("budgets")
    if not isinstance(budgets, list | tuple) or not budgets:
        raise ValueError(f"{path}: {kind}.budgets must be a non-empty list of compute budgets in FLOPs, e.g. [1e17]")
    reserved = RESERVED + (("sweep.laws",) if kind == "isoflop" else ())
    overrides = _overrides(node.get("overrides"), f"{path}: {kind}.overrides", reserved)
    return Stage(kind, tuple(_budget(kind, b, path) for b in budgets), overrides)


def _budget(kind: str, value: Any, path: str) -> float:
    from .sweeper import parse_budget  # the sweep's own rule for a budget

    try:
        return parse_budget(kind, value)
    except ValueError as e:
        raise ValueError(f"{path}: {kind}.budgets: {e}") from None


def _overrides(value: Any, where: str, reserved: tuple[str, ...] = RESERVED) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where} must be a list of Hydra overrides (strings like sweep.n_shapes=9), got {value!r}")
    for text in value:
        key = override_key(text)
        if key in reserved or "=" not in text:
            why = "the study sets it for each stage" if key in reserved else "an override is key=value"
            raise ValueError(f"{where}: {text!r}: {why}")
    return tuple(value)


def runs_per_budget(kind: str, sc: SweepConfig) -> int:
    """Runs a stage plans per budget before any extension (for the study's ETA before the stage is planned)."""
    grid = sc.n_shapes if kind == "isoflop" else sc.lr_points * sc.batch_points
    return grid * sc.seeds
