"""Package discovery that pyproject.toml alone cannot express: every package under the four top-level names is found
automatically (a new subpackage can never be left out of the wheel), plus two mapped packages:
`scaling.conf` is the top-level conf/ tree (so an installed wheel finds its configs), and
`hydra_plugins.scaling_sweeper` is sweeps/hydra_plugin (Hydra discovers plugins only under `hydra_plugins`)."""

from setuptools import find_packages, setup

MAPPED = {"scaling.conf": "conf", "hydra_plugins.scaling_sweeper": "sweeps/hydra_plugin"}
TOP = ("scaling", "model", "sweeps", "analysis")

setup(
    packages=find_packages(include=[f"{t}{s}" for t in TOP for s in ("", ".*")], exclude=["sweeps.hydra_plugin"])
    + list(MAPPED),
    package_dir=MAPPED,
    package_data={"scaling.conf": ["*.yaml", "**/*.yaml"]},
)
