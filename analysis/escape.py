"""Text the reports did not write (run ids, dataset names, paths, grid labels: anything from a record or a table)
made inert where it lands: markdown (report.md) and spreadsheet cells (runs.csv).

- `md(text)`: one line of literal markdown text. Newlines and other control characters become spaces (a name can
  add no heading, list item or table row), `|` cannot split a table cell, HTML cannot open a tag, and markdown
  punctuation cannot start emphasis, code, links or images. The text reads the same once rendered.
- `csv_safe(df)`: text cells that a spreadsheet would evaluate (starting with =, +, -, @, tab or CR) are prefixed
  with a quote ', OWASP's rule for CSV injection. Numbers, including negative ones in numeric columns and text
  cells that are plain numbers such as "-1.5", are left as they are: a spreadsheet reads them as numbers.
"""

from __future__ import annotations

import re

import pandas as pd

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
_PUNCT = re.compile(r"([\\`*\[\]|~])")
_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")  # `_` inside a word never starts emphasis
_ENTITY = re.compile(r"&(?=#?\w+;)")  # only an `&` that would start an entity changes meaning
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def md(text: object) -> str:
    """`text` as one line of literal markdown (see the module docstring)."""
    s = _CONTROL.sub(" ", str(text)).strip()
    s = _ENTITY.sub("&amp;", s).replace("<", "&lt;")  # no tag can open; `>` alone closes nothing
    s = _PUNCT.sub(r"\\\1", s)
    s = _UNDERSCORE.sub(r"\\_", s)
    if s[:1] in ("#", "+", "-", "=", ">"):  # would start a heading, list item or quote at the start of a line
        s = "\\" + s
    return re.sub(r"^(\d+)([.)])(\s)", r"\1\\\2\3", s)  # "1. x" would start a numbered list


def _number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def cell(value: object) -> object:
    """One runs.csv cell: a text cell a spreadsheet would run as a formula gets a leading quote."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _number(value.strip()):
        return "'" + value
    return value


def csv_safe(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of df whose text columns hold no cell a spreadsheet would run as a formula."""
    out = df.copy()
    for c in out.columns:
        if not pd.api.types.is_numeric_dtype(out[c]):  # text and object columns; numbers stay numbers
            out[c] = out[c].map(cell)
    return out
