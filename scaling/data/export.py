"""The text of a corpus as JSON lines a user can read and reuse: `python -m scaling.prepare data=wiki --export F`.

One row per document, in corpus order: {"id", "split", "text"}, `split` being the one `prepare_data` gives it (by a
hash of the id; data.max_bytes applies). OUT is a `.jsonl`, `.jsonl.gz` or `.jsonl.zst` file, or a directory that
receives `train.jsonl` and `val.jsonl`. `data=files data.path=OUT` reads either back as the same documents (under
new ids, so the split is drawn again). Files are written atomically; an existing file is never overwritten.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

from scaling.base.atomic import atomic_file
from scaling.data.corpora import limit, open_corpus
from scaling.data.settings import DataSettings, shown
from scaling.data.shards import SPLITS, split_key, utf8_size
from scaling.data.sources import JSONL_SUFFIXES, optional

FILE_SUFFIXES = tuple(s for s in JSONL_SUFFIXES if s.startswith(".jsonl"))


def export_targets(out: Path) -> dict[str, Path] | Path:
    """Where --export OUT writes: one file, or {split: file} in a directory. ValueError before anything is written
    when a target exists or OUT is neither."""
    if out.name.lower().endswith(FILE_SUFFIXES):
        if out.exists():
            raise ValueError(f"--export {shown(out)} exists; remove it or give another path")
        if not out.parent.is_dir():
            raise ValueError(f"--export {shown(out)}: {shown(out.parent)} is not a directory; create it first")
        return out
    if out.exists() and not out.is_dir():
        raise ValueError(
            f"--export {shown(out)} is a file; give a {'/'.join(FILE_SUFFIXES)} file that does not exist or a directory"
        )
    targets = {split: out / f"{split}.jsonl" for split in SPLITS}
    taken = [str(t) for t in targets.values() if t.exists()]
    if taken:
        raise ValueError(f"--export {shown(out)} already holds {shown(taken[0])}; remove it or give another directory")
    return targets


def _open(stack: ExitStack, path: Path) -> IO[bytes]:
    raw = stack.enter_context(atomic_file(path, "wb"))  # renamed into place only when every row is written
    name = path.name.lower()
    if name.endswith(".gz"):
        gz = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0)
        stack.callback(gz.close)  # before atomic_file's fsync and rename (callbacks run last in, first out)
        return gz  # type: ignore[return-value]
    if name.endswith(".zst"):
        zstandard = optional("zstandard", path)
        return stack.enter_context(zstandard.ZstdCompressor().stream_writer(raw, closefd=False))
    return raw


def _split_of(s: DataSettings, docs: Iterator[tuple[str, str]]) -> Iterator[tuple[str, str, str]]:
    for doc_id, text in docs:
        yield doc_id, ("val" if split_key(doc_id) < s.val_fraction else "train"), text


def export_corpus(s: DataSettings, out: Path) -> dict[str, Any]:
    """Write the documents of the corpus `s` describes to `out` (see the module); returns what was written."""
    if s.name == "tokens":
        raise ValueError("data=tokens has no text to export (token files only); export the corpus that made them")
    targets = export_targets(out)
    corpus = open_corpus(s)
    from scaling.data.prepare import split_overrides  # the fix-up that gives tiny corpora both splits

    overrides = split_overrides(corpus, s)
    counts = {k: dict.fromkeys(SPLITS, 0) for k in ("docs", "bytes")}
    with ExitStack() as stack:
        files = (
            dict.fromkeys(SPLITS, _open(stack, targets))
            if isinstance(targets, Path)
            else {split: _open(stack, path) for split, path in targets.items()}
        )
        for doc_id, split, text in _split_of(s, limit(corpus.read(), s.max_bytes)):
            split = overrides.get(doc_id, split)
            row = {"id": doc_id, "split": split, "text": text}
            files[split].write(json.dumps(row, ensure_ascii=False).encode() + b"\n")
            counts["docs"][split] += 1
            counts["bytes"][split] += utf8_size(text)
    return {"source": corpus.label, "out": targets, **counts}
