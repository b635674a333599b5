"""The README's file map names every module, so the map a newcomer reads cannot silently go stale."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_layout_lists_every_module():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\s+([\w/]+\.py|[\w]+/)\s", section, flags=re.M))
    missing = []
    for pkg in ("model", "scaling", "sweeps", "analysis"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path.name == "__init__.py":
                continue
            if path.name not in listed and not (path.parent.name == "hydra_plugin" and "hydra_plugin/" in listed):
                missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"README ## Layout does not mention: {missing}"
