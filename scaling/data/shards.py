"""Tokenize one work unit of a corpus into its own train/val token files, written atomically.

A unit's outputs are `<i>.train.bin`, `<i>.val.bin` and `<i>.json` (its counts), each renamed into place when
complete and the JSON last, so a unit is finished exactly when its JSON exists: a build killed at any moment keeps
its finished units and redoes only the rest. Documents go to the validation split by a hash of their id alone
(`split_key`), so the split never depends on how the corpus was cut into units.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from scaling.base.atomic import atomic_file, write_atomic
from scaling.data.sources import Doc

# Text encoded per tokenizer call: large enough for the tokenizer's batching, small enough that its per-token
# bookkeeping (HF Encoding objects are ~100 B/token) stays well under the 1 GB memory goal.
ENCODE_CHUNK_BYTES = 1 << 20
SPLITS = ("train", "val")


class Encoder(Protocol):
    vocab_size: int
    bos_id: int

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def token_bytes(self) -> np.ndarray: ...


def split_key(doc_id: str) -> float:
    """Uniform in [0, 1) from the document id alone: a document never changes split when others are added."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big") / 2**64


@dataclass(frozen=True)
class UnitJob:
    out_dir: Path  # the build's units/ folder
    val_fraction: float
    overrides: dict[str, str]  # doc_id -> split, to guarantee a non-empty split in tiny corpora (see prepare.py)
    dtype: str


def unit_stem(out_dir: Path, index: int) -> Path:
    return out_dir / f"{index:06d}"


def read_unit_stats(out_dir: Path, index: int, dtype: str) -> dict[str, Any] | None:
    """The finished unit's counts, or None when it is not finished (or its files do not match them)."""
    stem = unit_stem(out_dir, index)
    try:
        stats = json.loads(stem.with_suffix(".json").read_text())
        size = np.dtype(dtype).itemsize
        if all(Path(f"{stem}.{k}.bin").stat().st_size == stats["tokens"][k] * size for k in SPLITS):
            return stats
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def encode_unit(
    docs: Iterator[Doc], index: int, job: UnitJob, encoder: Encoder, token_bytes: np.ndarray, where: str
) -> dict[str, Any]:
    """Tokenize `docs` into unit `index` of job.out_dir; returns the counts also written to its JSON."""
    stem = unit_stem(job.out_dir, index)
    stats: dict[str, Any] = {k: {s: 0 for s in SPLITS} for k in ("docs", "bytes", "tokens")}
    stats |= {"min_key": None, "max_val_key": None, "ids": [], "overrides": job.overrides}
    with atomic_file(Path(f"{stem}.train.bin"), "wb") as f_train, atomic_file(Path(f"{stem}.val.bin"), "wb") as f_val:
        files = {"train": f_train, "val": f_val}
        pending: dict[str, list[Doc]] = {s: [] for s in SPLITS}
        pending_bytes = dict.fromkeys(SPLITS, 0)

        def flush(split: str) -> None:
            if not pending[split]:
                return
            ids = [d for d, _ in pending[split]]
            texts = [t for _, t in pending[split]]
            arr = _stream(encoder.encode_batch(texts), encoder.bos_id, job.dtype)
            _check_lossless(arr, encoder.bos_id, token_bytes, texts, ids, where)
            arr.tofile(files[split])  # documents are separated by the bos token; windows may span documents
            stats["tokens"][split] += len(arr)
            pending[split], pending_bytes[split] = [], 0

        for doc_id, text in docs:
            key = split_key(doc_id)
            split = job.overrides.get(doc_id) or ("val" if key < job.val_fraction else "train")
            if stats["min_key"] is None or key < stats["min_key"][0]:
                stats["min_key"] = [key, doc_id]
            if split == "val" and (stats["max_val_key"] is None or key > stats["max_val_key"][0]):
                stats["max_val_key"] = [key, doc_id]
            if len(stats["ids"]) < 2 and doc_id not in stats["ids"]:
                stats["ids"].append(doc_id)  # two distinct ids are enough to know a split is possible
            n_bytes = len(text.encode())
            pending[split].append((doc_id, text))
            pending_bytes[split] += n_bytes
            stats["docs"][split] += 1
            stats["bytes"][split] += n_bytes
            if pending_bytes[split] >= ENCODE_CHUNK_BYTES:
                flush(split)
        for split in SPLITS:
            flush(split)
    write_atomic(stem.with_suffix(".json"), json.dumps(stats) + "\n")  # last: marks the unit finished
    return stats


def _stream(encoded: list[list[int]], bos: int, dtype: str) -> np.ndarray:
    """[bos, *doc] for every document, as one array."""
    lengths = np.fromiter((len(e) + 1 for e in encoded), dtype=np.int64, count=len(encoded))
    out = np.empty(int(lengths.sum()), dtype=dtype)
    starts = np.cumsum(lengths) - lengths
    out[starts] = bos
    for s, e in zip(starts.tolist(), encoded):
        out[s + 1 : s + 1 + len(e)] = e
    return out


def _check_lossless(
    arr: np.ndarray, bos: int, token_bytes: np.ndarray, texts: list[str], ids: list[str], where: str
) -> None:
    """Bits per byte divides by the bytes the target tokens stand for: they must add up to each document's bytes."""
    starts = np.flatnonzero(arr == bos)
    spelled = np.add.reduceat(token_bytes[arr], starts) if len(arr) else np.zeros(0, dtype=np.int64)
    if len(starts) == len(texts):
        actual = np.fromiter((len(t.encode()) for t in texts), dtype=np.int64, count=len(texts))
        bad = np.flatnonzero(spelled != actual)
        if not len(bad):
            return
        i = int(bad[0])
        detail = f"its tokens spell {int(spelled[i])} bytes, the text has {int(actual[i])}"
    else:  # the separator appeared inside a document: it cannot separate documents
        i, detail = 0, "the document separator token appears inside the text"
    raise ValueError(
        f"the tokenizer is not lossless on document {ids[i]} of {where} ({detail}), so bits per byte "
        "would be wrong; use a byte-level BPE tokenizer.json without a normaliser or added prefix space"
    )
