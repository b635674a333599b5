"""The one "bad input" convention of every command: one line on stderr naming what was wrong and the fix, exit 2.

Exit codes across the project: 0 success, 1 a run or sweep failed (rerun resumes), 2 bad input (nothing was
written or launched).
"""

from __future__ import annotations

import sys
from typing import NoReturn

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def fail(prog: str, message: object, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print `prog: error: message` as one line and exit (2 by default)."""
    text = " ".join(str(message).split()) or type(message).__name__
    print(f"{prog}: error: {text}", file=sys.stderr)
    sys.exit(code)
