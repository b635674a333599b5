"""One training run: `python -m scaling.train model=tiny train.tokens=2e5 optim.lr=3e-3`.

Parses the Hydra config, calls scaling.run.single.train_run (train, resume or skip the run in Hydra's output dir)
and prints one line. Bad input is one line on stderr and exit 2, with nothing left behind.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from scaling.base.cli import EXIT_FAILED, fail, run_hydra
from scaling.base.configs import HYDRA_CONFIG_PATH
from scaling.base.hydra_outputs import undo
from scaling.base.lock import RunLocked
from scaling.run.single import train_run


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


PROG = "scaling.train"


@hydra.main(config_path=HYDRA_CONFIG_PATH, config_name="run", version_base=None)
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        result = train_run(cfg, out_dir)
    except ValueError as e:  # bad input: one line, and no half-made run dir left behind
        undo(out_dir)  # exactly what Hydra wrote for this invocation; a directory that was there stays as it was
        fail(PROG, e)
    except RunLocked as e:  # another live process owns this run: leave it alone (not a failure of this one)
        print(f"skipped: {e}")
        return
    except OSError as e:  # a full or read-only disk: one line; the failure is in result.json where it could be
        fail(PROG, f"run failed writing to {out_dir}: {e}", code=EXIT_FAILED)
    print(
        f"{result['status']}: val_loss={_fmt(result['val_loss'])} val_bpb={_fmt(result['val_bpb'])} "
        f"D={result['D']:,} C={result['C']:.3g} -> {out_dir}"
    )


def cli() -> None:
    """`scaling-train` and `python -m scaling.train`: a Hydra error (unknown key, bad override) is one line, exit 2."""
    run_hydra(PROG, main)


if __name__ == "__main__":
    cli()
