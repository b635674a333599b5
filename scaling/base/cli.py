"""The one "bad input" convention of every command: one line on stderr naming what was wrong and the fix, exit 2.

Exit codes across the project: 0 success, 1 a run or sweep failed (rerun resumes), 2 bad input (nothing was
written or launched).
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable
from typing import NoReturn

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def fail(prog: str, message: object, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print `prog: error: message` as one line and exit (2 by default)."""
    text = " ".join(str(message).split()) or type(message).__name__
    print(f"{prog}: error: {text}", file=sys.stderr)
    sys.exit(code)


def one_line(e: BaseException) -> str:
    """Hydra's composition errors span lines (e.g. the list of available launchers): fold them into one."""
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    if e.__cause__ is not None and str(e.__cause__) not in str(e):  # Hydra wraps the OmegaConf error that says why
        lines += [x.strip() for x in str(e.__cause__).splitlines() if x.strip()][:1]
    if len(lines) > 1 and lines[1].startswith("Available options"):
        options = itertools.takewhile(lambda x: not x.endswith(":"), lines[2:])  # stop at "Config search path:"
        return f"{lines[0]} (available: {', '.join(options)})"
    return " ".join(lines) or type(e).__name__


def run_hydra(prog: str, main: Callable[[], object]) -> None:
    """Run a @hydra.main entry point with the convention above: a bad override, an unknown key or a bad value is
    one line and exit 2; an OSError (a full or read-only disk) one line and exit 1. HYDRA_FULL_ERROR=1 keeps
    Hydra's full traces."""
    import yaml
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # makes Hydra raise instead of printing a multi-line report and exiting
    try:
        main()
    except (ValueError, HydraException, OmegaConfBaseException) as e:
        if full:
            raise
        fail(prog, one_line(e))
    except yaml.YAMLError as e:  # e.g. a `!!python/...` tag in a config group file: refused by the safe loader
        if full:
            raise
        fail(prog, f"a config file is not plain YAML (tags that build Python objects are refused): {one_line(e)}")
    except OSError as e:
        if full:
            raise
        fail(prog, f"{type(e).__name__}: {e}", code=EXIT_FAILED)


def fmt_seconds(s: float | None) -> str:
    """A duration as people read it in a plan or a status line: 0.0s, 42.5s, 3.2m, 1.5h, 2.0d; "?" when unknown."""
    if s is None:
        return "?"
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return f"{s / n:.1f}{unit}"
    return f"{s:.1f}s"
