"""Scaling-law analysis: load run records or published tables, fit DeepSeek/Chinchilla/Step-Law laws with
bootstrap CIs, report, plot.

Pure functions live in the submodules; `analysis.fit` wires them into the CLI and `analyse` (its options one
`analysis.options.FitOptions`); notebooks use `fit_runs` (analysis.api). Both are imported on first access, so
`import analysis` stays light.
"""

from typing import Any

from analysis.load import load_runs
from analysis.powerlaw import PowerLaw, fit_powerlaw

__all__ = ["load_runs", "PowerLaw", "fit_powerlaw", "analyse", "fit_runs"]


def __getattr__(name: str) -> Any:
    """`from analysis import fit_runs / analyse`: the real functions, imported on first use."""
    if name == "fit_runs":
        from analysis.api import fit_runs

        return fit_runs
    if name == "analyse":
        from analysis.fit import analyse

        return analyse
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
