"""Sweeps: `python -m scaling.sweep +isoflop=1e17`, `+hparams=1e17`, `sweep.dry_run=true`, `hydra/launcher=joblib`.

A Hydra multirun (conf/sweep.yaml) whose sweeper (sweeps.sweeper, `hydra/sweeper: scaling`) plans the points and
whose launcher runs this task function once per point: one scaling.train run with its own run dir and record.
"""
from __future__ import annotations

import importlib.util
import itertools
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from scaling.configs import HYDRA_CONFIG_PATH
from scaling.train import train_run


@hydra.main(config_path=HYDRA_CONFIG_PATH, config_name="sweep", version_base=None)
def main(cfg: DictConfig) -> str:
    return train_run(cfg, Path(HydraConfig.get().runtime.output_dir))["status"]


def register_sweeper() -> None:
    """Make `hydra/sweeper: scaling` instantiable however the project is installed.

    Hydra instantiates only plugins it found by walking the hydra_plugins namespace. A regular install puts
    sweeps/hydra_plugin there as hydra_plugins.scaling_sweeper (pyproject package-dir) and Hydra finds it; an
    editable install (PEP 660 finder) keeps it importable but invisible to that walk, and a plain checkout has no
    such module at all. Registering the class by hand covers all three (a no-op when it was found).
    """
    try:
        from hydra_plugins.scaling_sweeper import ScalingSweeper
    except ImportError:  # plain checkout: load sweeps/hydra_plugin under its plugin name
        path = Path(__file__).resolve().parent.parent / "sweeps" / "hydra_plugin" / "__init__.py"
        spec = importlib.util.spec_from_file_location("hydra_plugins.scaling_sweeper", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        ScalingSweeper = module.ScalingSweeper
    Plugins.instance().register(ScalingSweeper)


def one_line(e: BaseException) -> str:
    """Hydra's composition errors span lines (e.g. the list of available launchers): fold them into one."""
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    if e.__cause__ is not None and str(e.__cause__) not in str(e):  # Hydra wraps the OmegaConf error that says why
        lines += [x.strip() for x in str(e.__cause__).splitlines() if x.strip()][:1]
    if len(lines) > 1 and lines[1].startswith("Available options"):
        options = itertools.takewhile(lambda x: not x.endswith(":"), lines[2:])  # stop at "Config search path:"
        return f"{lines[0]} (available: {', '.join(options)})"
    return " ".join(lines) or type(e).__name__


def cli() -> None:
    """Bad input -> one line on stderr and exit 2; failed runs -> one line and exit 1. HYDRA_FULL_ERROR=1 keeps
    Hydra's full traces."""
    from sweeps.sweeper import SweepFailed
    full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # makes Hydra raise instead of printing a multi-line report and exiting
    register_sweeper()
    try:
        main()
    except SweepFailed as e:
        print(f"scaling.sweep: {e}", file=sys.stderr)
        sys.exit(1)
    except (ValueError, HydraException, OmegaConfBaseException) as e:
        if full:
            raise
        print(f"scaling.sweep: error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
