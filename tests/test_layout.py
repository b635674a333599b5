"""The folders show the architecture: the README's file map names every module by its relative path, and every
command module directly in scaling/ is in the top layer of the import contracts."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("model", "scaling", "sweeps", "analysis")


def readme_map() -> set[str]:
    """Relative paths of the README's ## Layout block, from its indentation (two spaces a level)."""
    section = (ROOT / "README.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1]
    stack: list[str] = []
    paths = set()
    for line in block.splitlines():
        m = re.match(r"^( *)(\S+)", line)
        if not m:
            continue
        depth, name = len(m.group(1)) // 2, m.group(2)
        stack = stack[:depth]
        paths.add("/".join([*stack, name]).rstrip("/"))
        if name.endswith("/"):
            stack.append(name.rstrip("/"))
    return paths


def test_readme_layout_lists_every_module_by_path():
    listed = readme_map()
    missing = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if path.name == "__init__.py" or "hydra_plugin" in rel.parts:
                continue
            if str(rel) not in listed:
                missing.append(str(rel))
    assert not missing, f"README ## Layout does not mention: {missing}"
    stale = [p for p in listed if p.endswith(".py") and not (ROOT / p).exists()]
    assert not stale, f"README ## Layout names files that do not exist: {stale}"


def test_every_command_is_in_the_top_layer():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    top = {m.strip() for m in layers[0].split("|")}
    commands = {f"scaling.{p.stem}" for p in (ROOT / "scaling").glob("*.py") if p.name != "__init__.py"}
    assert commands == top, f"scaling/ commands {sorted(commands)} vs top layer {sorted(top)}"
    packages = {f"scaling.{p.name}" for p in (ROOT / "scaling").iterdir() if (p / "__init__.py").exists()}
    layered = {m.strip() for layer in layers for m in layer.split("|")}
    assert packages <= layered | {"scaling.conf"}, f"subpackages of scaling/ in no layer: {packages - layered}"
