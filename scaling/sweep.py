"""Sweeps: `python -m scaling.sweep +isoflop=1e17`, `+hparams=1e17`, `sweep.dry_run=true`, `hydra/launcher=joblib`.

A Hydra multirun (conf/sweep.yaml) whose sweeper (sweeps.sweeper, `hydra/sweeper: scaling`) plans the points and
whose launcher runs this task function once per point: one scaling.train run with its own run dir and record.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from omegaconf import DictConfig

from scaling.base.cli import EXIT_FAILED, run_hydra
from scaling.base.configs import HYDRA_CONFIG_PATH
from scaling.base.lock import RunLocked, run_watchdog
from scaling.run.single import train_run


@hydra.main(config_path=HYDRA_CONFIG_PATH, config_name="sweep", version_base=None)
def main(cfg: DictConfig) -> str:
    """One sweep point: its status, "skipped" when another process finished it meanwhile, "busy" when a live process
    owns its run dir (scaling.base.lock)."""
    run_watchdog()  # in a local worker (joblib): die with the sweep rather than train on as an orphan
    if "trunk" in cfg:  # a trunk and its branches (sweeps.reuse): each branch lands in its own run dir
        from scaling.run.trunk import trunk_job

        results = trunk_job(cfg, Path(str(HydraConfig.get().sweep.dir)))
        return "trunk: " + ", ".join(str(r.get("status", "skipped")) for r in results)
    if "pack" in cfg:  # a pack of same-shape runs (sweeps.packing): each run still lands in its own run dir
        from scaling.run.pack import pack_job

        results = pack_job(cfg, Path(str(HydraConfig.get().sweep.dir)))
        return "packed: " + ", ".join(str(r.get("status", "skipped")) for r in results)
    try:
        result = train_run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except RunLocked:
        return "busy"
    return "skipped" if result.get("skipped") else result["status"]


def register_sweeper() -> None:
    """Make `hydra/sweeper: scaling` instantiable however the project is installed.

    Hydra instantiates only plugins it found by walking the hydra_plugins namespace. A regular install puts
    sweeps/hydra_plugin there as hydra_plugins.scaling_sweeper (setup.py's package mapping) and Hydra finds it; an
    editable install (PEP 660 finder) keeps it importable but invisible to that walk, and a plain checkout has no
    such module at all. Registering the class by hand covers all three (a no-op when it was found).
    """
    try:
        from hydra_plugins.scaling_sweeper import ScalingSweeper
    except ImportError:  # plain checkout: load sweeps/hydra_plugin under its plugin name
        path = Path(__file__).resolve().parent.parent / "sweeps" / "hydra_plugin" / "__init__.py"
        spec = importlib.util.spec_from_file_location("hydra_plugins.scaling_sweeper", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        ScalingSweeper = module.ScalingSweeper
    Plugins.instance().register(ScalingSweeper)


def cli() -> None:
    """Bad input -> one line on stderr and exit 2; failed runs -> one line and exit 1 (scaling.base.cli.run_hydra)."""
    from sweeps.config import check_overrides
    from sweeps.sweeper import SweepFailed

    def sweep() -> None:
        check_overrides(sys.argv[1:])  # a sweep.* typo named with its nearest key, with `+` or without
        try:
            main()
        except SweepFailed as e:
            print(f"scaling.sweep: {e}", file=sys.stderr)
            sys.exit(EXIT_FAILED)

    register_sweeper()
    run_hydra("scaling.sweep", sweep)


if __name__ == "__main__":
    cli()
