"""Scaling-law analysis: load run records, fit DeepSeek/Chinchilla laws with bootstrap CIs, report, plot.

Pure functions live in the submodules; `analysis.fit` wires them into the CLI and `run_analysis`.
"""
from analysis.load import load_runs
from analysis.powerlaw import PowerLaw, fit_powerlaw

__all__ = ["load_runs", "PowerLaw", "fit_powerlaw", "run_analysis"]


def run_analysis(*args, **kwargs):
    """Lazy re-export of analysis.fit.run_analysis (keeps `import analysis` free of matplotlib)."""
    from analysis.fit import run_analysis as _run
    return _run(*args, **kwargs)
