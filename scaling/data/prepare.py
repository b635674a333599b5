"""prepare_data: corpus -> by-document train/val split -> SentencePiece tokenizer -> token memmaps, cached.

A cache entry is one directory keyed on (corpus content hash, split settings, tokenizer settings), holding
tokenizer.model, train.bin, val.bin (uint16 when the vocabulary fits, like nanoGPT) and meta.json. It is
built in a scratch dir and renamed into place, so it is either complete or absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from scaling.data.cache import building, content_hash
from scaling.data.corpora import Corpus, documents, open_corpus
from scaling.data.prepared import PreparedData
from scaling.data.settings import DataSettings
from scaling.data.tokenizer import train_tokenizer

FORMAT = 1  # bump when the layout or the pipeline changes, so old cache entries are not reused
ENCODE_CHUNK_BYTES = 4 << 20  # encode this much text per call: bounded memory, parallel SentencePiece


def _digest(*parts: Any) -> str:
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()


def _split_key(doc_id: str) -> float:
    """Uniform in [0, 1) from the document id alone: a document never changes split when others are added."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big") / 2**64


def split_documents(doc_ids: list[str], val_fraction: float) -> set[str]:
    """Validation ids: those whose hash falls below val_fraction, at least one and never all of them."""
    ids = sorted(set(doc_ids), key=_split_key)
    if len(ids) < 2:
        raise ValueError(f"the corpus has {len(ids)} document(s); the validation split is by document, so "
                         "give at least 2 (several files, or one JSONL line per document)")
    n_val = min(max(sum(_split_key(i) < val_fraction for i in ids), 1), len(ids) - 1)
    return set(ids[:n_val])


def prepare_data(data_cfg: Mapping) -> PreparedData:
    """Load the tokenized corpus described by the `data` config from the cache, building it on a miss."""
    s = DataSettings.from_cfg(data_cfg)
    corpus = open_corpus(s)
    root = s.cache_dir / "data"
    data_key = _digest(FORMAT, s.name, content_hash(corpus.files, root / ".hashes"), s.max_bytes, s.val_fraction)
    tok_key = _digest(data_key, s.vocab_size, s.tokenizer)
    final = root / f"{s.name}-{data_key[:10]}-{tok_key[:10]}"
    if final.is_dir() and not _complete(final):
        warnings.warn(f"discarding damaged data cache {final}; rebuilding it", stacklevel=2)
        broken = final.with_name(f".tmp-{final.name}-broken-{os.getpid()}")
        os.rename(final, broken)
        shutil.rmtree(broken, ignore_errors=True)
    if not final.is_dir():
        fingerprints = {"dataset_fingerprint": f"{s.name}@{data_key[:8]}",
                        "tokenizer_fingerprint": f"{s.tokenizer['model_type']}{s.vocab_size}@{tok_key[:8]}"}
        with building(final) as tmp:
            _build(s, corpus, tmp, fingerprints)
    return PreparedData(final, json.loads((final / "meta.json").read_text()))


def _complete(d: Path) -> bool:
    """Cheap integrity check of an entry (stat only): files present with the sizes meta.json promises."""
    try:
        meta = json.loads((d / "meta.json").read_text())
        size = np.dtype(meta["dtype"]).itemsize
        return (d / "tokenizer.model").is_file() and all(
            (d / f"{k}.bin").stat().st_size == n * size for k, n in meta["tokens"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _build(s: DataSettings, corpus: Corpus, out: Path, fingerprints: dict[str, str]) -> None:
    docs = lambda: documents(corpus, s.max_bytes)  # noqa: E731 - re-read per pass: memory stays bounded
    ids = [doc_id for doc_id, _ in docs()]
    if not ids:
        raise ValueError(f"corpus {corpus.label} has no text; point data.path at non-empty UTF-8 files")
    val_ids = split_documents(ids, s.val_fraction)

    def train_lines() -> Iterator[str]:
        for doc_id, text in docs():
            if doc_id not in val_ids:
                yield from (line for line in text.split("\n") if line.strip())

    t0 = time.perf_counter()
    sp = train_tokenizer(train_lines(), s.vocab_size, s.tokenizer, out / "tokenizer.model", corpus.label)
    t1 = time.perf_counter()
    dtype = np.uint16 if s.vocab_size <= 2**16 else np.uint32
    counts = {k: {"train": 0, "val": 0} for k in ("docs", "bytes", "tokens")}
    with open(out / "train.bin", "wb") as f_train, open(out / "val.bin", "wb") as f_val:
        files = {"train": f_train, "val": f_val}
        pending: dict[str, list[str]] = {"train": [], "val": []}
        pending_bytes = {"train": 0, "val": 0}

        def flush(split: str) -> None:
            encoded = sp.encode(pending[split], num_threads=min(os.cpu_count() or 1, 16))
            arr = np.array([t for doc in encoded for t in (sp.bos_id(), *doc)], dtype=dtype)
            arr.tofile(files[split])  # documents are separated by <s>; windows may span documents
            counts["tokens"][split] += len(arr)
            pending[split], pending_bytes[split] = [], 0

        for doc_id, text in docs():
            split = "val" if doc_id in val_ids else "train"
            n_bytes = len(text.encode())
            pending[split].append(text)
            pending_bytes[split] += n_bytes
            counts["docs"][split] += 1
            counts["bytes"][split] += n_bytes
            if pending_bytes[split] >= ENCODE_CHUNK_BYTES:
                flush(split)
        for split, f in files.items():
            flush(split)
            f.flush()
            os.fsync(f.fileno())  # durable before the rename publishes the entry
    meta = {
        "format": FORMAT, "name": s.name, "source": corpus.label, **fingerprints,
        "vocab_size": sp.get_piece_size(), "bos_id": sp.bos_id(), "dtype": np.dtype(dtype).name,
        "val_fraction": s.val_fraction, "max_bytes": s.max_bytes, "tokenizer": s.tokenizer, **counts,
        "build_s": {"tokenizer": round(t1 - t0, 3), "encode": round(time.perf_counter() - t1, 3)},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
