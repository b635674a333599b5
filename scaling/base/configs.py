"""The one home for finding configuration: the shipped `conf/` tree, model configs and study files.

`conf/` is installed as the package `scaling.conf` (setup.py maps it), so a wheel installed anywhere finds it the
same way as an editable checkout: through importlib.resources, and for Hydra apps through `pkg://scaling.conf`.
A user's own config folder (their models, studies, launchers) joins Hydra's search path with
`hydra.searchpath=[file:///path/to/my_conf]` or `--config-dir`; `load_model_config` and `load_study` find names
there too (`dirs`, from `search_dirs` of a command line) and also take a path to a YAML file directly.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
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


def _group_options(group: str, dirs: Sequence[Path] = ()) -> list[str]:
    return sorted({p.stem for d in (conf_dir(), *dirs) for p in (Path(d) / group).glob("*.yaml")})


def _yaml_for(group: str, name_or_path: str | Path, what: str | None = None, dirs: Sequence[Path] = ()) -> Path:
    """A config by name or by path to a YAML file; one-line error when neither exists. A name is looked up as Hydra
    looks it up: the shipped conf/<group>/ first, then each of `dirs` (--config-dir, then hydra.searchpath)."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")):
        path = Path(text).expanduser()
    else:
        found = [d / group / f"{text}.yaml" for d in (conf_dir(), *map(Path, dirs))]
        path = next((f for f in found if f.is_file()), found[0])
    if not path.is_file():
        given = f" ({path} is not a file)" if text.endswith((".yaml", ".yml")) else ""
        where = ", ".join(f"{d}/{group}/" for d in dirs)
        raise ValueError(
            f"unknown {what or group} {text!r}{given}: choose one of {_group_options(group, dirs)} (conf/{group}/"
            f"{', ' + where if where else ''}) or give a path to a YAML file"
        )
    return path


def resolve_name(group: str, name_or_path: str, dirs: Sequence[Path] = ()) -> str:
    """The YAML path of a name found only in `dirs`, else `name_or_path` as given (a shipped name or a path)."""
    if str(name_or_path).endswith((".yaml", ".yml")) or (conf_dir() / group / f"{name_or_path}.yaml").is_file():
        return name_or_path
    return next((str(p) for d in dirs if (p := Path(d) / group / f"{name_or_path}.yaml").is_file()), name_or_path)


def pop_config_dir(args: Sequence[str]) -> tuple[str | None, list[str]]:
    """Hydra's `--config-dir DIR` / `-cd DIR` / `--config-dir=DIR` in `args` (the last one, as Hydra takes it), and the
    other arguments."""
    found: str | None = None
    rest: list[str] = []
    it = iter(args)
    for a in it:
        if a in ("--config-dir", "-cd"):
            found = next(it, "")
        elif a.startswith(("--config-dir=", "-cd=")):
            found = a.split("=", 1)[1]
        else:
            rest.append(a)
    if found == "":
        raise ValueError("--config-dir needs a folder, e.g. --config-dir my_conf")
    return found, rest


def search_dirs(overrides: Sequence[str], config_dir: str | Path | None = None) -> list[Path]:
    """The config folders a command line adds to Hydra's search path, in Hydra's order: `config_dir` (--config-dir),
    then the file:// (or plain) and pkg:// entries of `hydra.searchpath=[...]` overrides. ValueError for a folder
    that does not exist."""
    dirs = [Path(config_dir)] if config_dir is not None else []
    searchpath: list[str] = []
    given = [a for a in overrides if "searchpath" in a.split("=", 1)[0]]
    parsed = []
    if given:  # Hydra's own parser reads the list syntax; not imported by commands that never see overrides
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.errors import OverrideParseException

        try:
            parsed = OverridesParser.create().parse_overrides(given)
        except OverrideParseException as e:
            raise ValueError(f"cannot read {' '.join(given)}: {' '.join(str(e).split())}") from None
    for o in parsed:
        if o.key_or_group == "hydra.searchpath":
            value = o.value()
            searchpath += [str(v) for v in (value if isinstance(value, list) else [value])]
    for entry in searchpath:
        if entry.startswith("pkg://"):
            try:
                dirs.append(Path(str(resources.files(entry.removeprefix("pkg://")))))
            except ModuleNotFoundError:
                raise ValueError(f"hydra.searchpath entry {entry}: no such package") from None
        else:
            dirs.append(Path(entry.removeprefix("file://")))
    for d in dirs:
        if not d.expanduser().is_dir():
            raise ValueError(
                f"config folder {d} is not a directory (--config-dir / hydra.searchpath); give the folder that "
                "holds model/, study/, ... as conf/ does"
            )
    return [d.expanduser().resolve() for d in dirs]


def add_config_dir_arg(ap: argparse.ArgumentParser, used_for: str | None) -> None:
    """--config-dir/-cd for an argparse command, as the Hydra commands take it; `used_for` says what is looked up
    there (None: the command reads only run directories, whose config.yaml is complete, so nothing is)."""
    why = (
        f"{used_for} are also looked up there (after the shipped conf/)"
        if used_for
        else "accepted as by every command, unused here: a run directory's config.yaml is complete"
    )
    ap.add_argument("--config-dir", "-cd", metavar="DIR", help=f"a config folder laid out like conf/: {why}")


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
    name_or_path: str | Path,
    vocab_size: int | None = None,
    what: str = "model",
    dirs: Sequence[Path] = (),
    **overrides: Any,
) -> ModelConfig:
    """conf/model/<name>.yaml (or a YAML path) -> ModelConfig, the one loader every command uses.

    Models whose vocabulary comes from the tokenizer (`vocab_size: ${data.vocab_size}`) take `vocab_size`, else the
    default corpus's. `overrides` replace fields (e.g. seq_len=256). Keys that are not ModelConfig fields are an
    error, so a typo in a user's model file is caught here. `what` names the model in errors (e.g. "target").
    """
    path = _yaml_for("model", name_or_path, what, dirs)
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


def study_path(name_or_path: str | Path, dirs: Sequence[Path] = ()) -> Path:
    """The YAML file of a study given by name (conf/study/<name>.yaml, or <dir>/study/<name>.yaml of a config folder
    in `dirs`) or path; one-line error when neither exists."""
    return _yaml_for("study", name_or_path, dirs=dirs)


def load_study(name_or_path: str | Path, dirs: Sequence[Path] = ()) -> dict:
    """A study by name (conf/study/<name>.yaml, or <dir>/study/<name>.yaml of a config folder in `dirs`) or by path to
    a YAML file of the same shape."""
    path = _yaml_for("study", name_or_path, dirs=dirs)
    try:
        study = OmegaConf.to_container(_load_yaml(path), resolve=True)
    except OmegaConfBaseException as e:
        raise ValueError(f"{path}: {' '.join(str(e).split())}") from None
    if not isinstance(study, dict):
        raise ValueError(f"{path}: a study file is a mapping of keys (stages, budgets), got {type(study).__name__}")
    return study
