"""Installed as `hydra_plugins.scaling_sweeper` (setup.py maps it): Hydra only instantiates plugin classes found under
the hydra_plugins namespace, so this module gives the sweeper that name.

It is deliberately thin. Hydra imports every `hydra_plugins` module whenever any Hydra app in the environment starts,
so the real sweeper (sweeps.sweeper: torch, the planner, the data checks) is imported only when a sweep is set up.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper


class ScalingSweeper(Sweeper):
    """The class Hydra registers (`_target_: hydra_plugins.scaling_sweeper.ScalingSweeper`); delegates to
    sweeps.sweeper.ScalingSweeper."""

    def __init__(self, **params: Any) -> None:
        self.params = params
        self.impl: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        from sweeps.sweeper import ScalingSweeper as Impl

        self.impl = Impl(**self.params)
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.impl.sweep(arguments)
