"""Installed as `hydra_plugins.scaling_sweeper` (pyproject package-dir mapping): Hydra only instantiates plugin classes
found under the hydra_plugins namespace, so this module gives the sweeper (code in sweeps.sweeper) that name."""
from sweeps.sweeper import ScalingSweeper as _ScalingSweeper


class ScalingSweeper(_ScalingSweeper):
    """The class Hydra registers: `_target_: hydra_plugins.scaling_sweeper.ScalingSweeper`."""
