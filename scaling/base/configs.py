"""The one home for finding configuration: the shipped `conf/` tree, model configs and study files.

`conf/` is installed as the package `scaling.conf` (setup.py maps it), so a wheel installed anywhere finds it the
same way as an editable checkout: through importlib.resources, and for Hydra apps through `pkg://scaling.conf`.
A user's own config folder (their models, studies, launchers) joins Hydra's search path with
`hydra.searchpath=[file:///path/to/my_conf]` or `--config-dir`; `load_model_config` and `load_study` also take a
path to a YAML file directly.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from model import ModelConfig

CONF_PACKAGE = "scaling.conf"
# For @hydra.main(config_path=HYDRA_CONFIG_PATH): Hydra's package search path, valid for any kind of install.
HYDRA_CONFIG_PATH = f"pkg://{CONF_PACKAGE}"


def node_dict(node: Any, resolve: bool = True) -> dict[str, Any]:
    """A config node as a plain dict (OmegaConf.to_container, typed): what validated dataclasses are built from."""
    out = OmegaConf.to_container(node, resolve=resolve) if OmegaConf.is_config(node) else node
    if not isinstance(out, dict):
        raise ValueError(f"expected a mapping of keys, got {type(out).__name__}: {out!r}")
    return out  # type: ignore[return-value]


def conf_dir() -> Path:
    """The directory of the shipped configs (conf/ in a checkout, site-packages/scaling/conf in a wheel)."""
    try:
        root = resources.files(CONF_PACKAGE)
    except ModuleNotFoundError:  # a plain checkout on sys.path without any install
        return Path(__file__).resolve().parent.parent / "conf"
    return Path(str(root))


def _group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def _yaml_for(group: str, name_or_path: str | Path, what: str | None = None) -> Path:
    """A config by name (conf/<group>/<name>.yaml) or by path to a YAML file; one-line error when neither exists."""
    text = str(name_or_path)
    path = Path(text).expanduser() if text.endswith((".yaml", ".yml")) else conf_dir() / group / f"{text}.yaml"
    if not path.is_file():
        given = f" ({path} is not a file)" if text.endswith((".yaml", ".yml")) else ""
        raise ValueError(
            f"unknown {what or group} {text!r}{given}: choose one of {_group_options(group)} (conf/{group}/) or give "
            f"a path to a YAML file"
        )
    return path


def _load_yaml(path: Path) -> Any:
    """OmegaConf.load with a one-line ValueError naming the file for a YAML syntax error or an unreadable file."""
    try:
        return OmegaConf.load(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{path} is not readable YAML ({type(e).__name__}: {' '.join(str(e).split())})") from None


def default_vocab_size() -> int:
    """data.vocab_size of the default corpus: what `${data.vocab_size}` means for a model loaded outside a run."""
    node = OmegaConf.load(conf_dir() / "data" / "sotu.yaml")
    return int(OmegaConf.select(node, "vocab_size"))


def load_model_config(
    name_or_path: str | Path, vocab_size: int | None = None, what: str = "model", **overrides: Any
) -> ModelConfig:
    """conf/model/<name>.yaml (or a YAML path) -> ModelConfig, the one loader every command uses.

    Models whose vocabulary comes from the tokenizer (`vocab_size: ${data.vocab_size}`) take `vocab_size`, else the
    default corpus's. `overrides` replace fields (e.g. seq_len=256). Keys that are not ModelConfig fields are an
    error, so a typo in a user's model file is caught here. `what` names the model in errors (e.g. "target").
    """
    path = _yaml_for("model", name_or_path, what)
    data = {"vocab_size": vocab_size if vocab_size is not None else default_vocab_size()}
    try:
        raw = OmegaConf.merge({"data": data}, {"model": _load_yaml(path)})
        fields = node_dict(raw.model)
    except OmegaConfBaseException as e:  # e.g. an interpolation to a key that does not exist
        raise ValueError(f"{path}: {' '.join(str(e).split())}") from None
    except ValueError as e:
        raise ValueError(str(e) if str(path) in str(e) else f"{path}: {e}") from None
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"{path}: unknown model key(s) {unknown}; the keys are ModelConfig's fields: {sorted(known)}")
    fields.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ModelConfig.from_dict(fields)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: {e}") from None


def study_path(name_or_path: str | Path) -> Path:
    """The YAML file of a study given by name (conf/study/<name>.yaml) or path; one-line error when neither exists."""
    return _yaml_for("study", name_or_path)


def load_study(name_or_path: str | Path) -> dict:
    """A study by name (conf/study/<name>.yaml) or by path to a YAML file of the same shape."""
    path = _yaml_for("study", name_or_path)
    try:
        study = OmegaConf.to_container(_load_yaml(path), resolve=True)
    except OmegaConfBaseException as e:
        raise ValueError(f"{path}: {' '.join(str(e).split())}") from None
    if not isinstance(study, dict):
        raise ValueError(f"{path}: a study file is a mapping of keys (stages, budgets), got {type(study).__name__}")
    return study
