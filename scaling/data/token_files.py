"""`data=tokens`: pre-tokenized token files (nanoGPT's train.bin/val.bin, OLMo-style .npy), used in place.

The contract — what must accompany the tokens so that bits per byte stays exact:
- `data.path` is a folder with `train.bin` and `val.bin` (raw little-endian ids) or `train.npy` and `val.npy`; the
  validation file is the held-out split (we never split token files: documents cannot be recovered from ids alone).
- `data.tokenizer` is the exact tokenizer that produced them: a Hugging Face `tokenizer.json` or a SentencePiece
  `tokenizer.model`. Its vocabulary fixes the width of .bin files (uint16 when it has at most 65,536 ids, else
  uint32, as nanoGPT writes them); .npy files carry their dtype, which must be uint16 or uint32.
- Documents are separated by the tokenizer's separator token (as data=files writes them); the text of the tokens
  must be what the tokenizer would decode losslessly (a byte-level BPE, or SentencePiece with byte fallback), since
  the bytes of each token are read from the tokenizer.
Every id is checked to be below the vocabulary, and each split's bytes are counted from the tokenizer, once, into a
cache entry (meta.json and the tokenizer) that points at the files; the files are content-hashed, so editing them
makes a new entry.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from scaling.data.cache import building, content_hash, locked
from scaling.data.prepared import PreparedData, load_encoder, open_tokens
from scaling.data.settings import DataSettings

FORMAT = 1
SCAN_TOKENS = 1 << 24  # ids checked per chunk: bounded memory on files of any size


def _find(root: Path, split: str) -> Path:
    found = [root / f"{split}{ext}" for ext in (".bin", ".npy") if (root / f"{split}{ext}").is_file()]
    if len(found) != 1:
        what = "both" if found else "neither"
        raise ValueError(
            f"data.path={root} has {what} {split}.bin and {split}.npy; data=tokens needs exactly one of "
            "them per split (train and val)"
        )
    return found[0]


def _dtype(path: Path, vocab: int) -> str:
    if path.suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read {path} as .npy ({e}); write it with numpy.save") from None
        if arr.dtype not in (np.uint16, np.uint32) or arr.ndim != 1:
            raise ValueError(f"{path} holds a {arr.ndim}-d {arr.dtype} array; token files are 1-d uint16 or uint32")
        return arr.dtype.name
    dtype = "uint16" if vocab <= 2**16 else "uint32"
    if path.stat().st_size % np.dtype(dtype).itemsize:
        raise ValueError(
            f"{path} has {path.stat().st_size} bytes, not a whole number of {dtype} ids (the width the "
            f"tokenizer's {vocab:,} ids need); check it was made with this tokenizer"
        )
    return dtype


def prepare_token_files(s: DataSettings) -> PreparedData:
    root = s.path
    assert root is not None and s.tokenizer_file is not None
    if not root.is_dir():
        raise ValueError(
            f"data.path={root} is not a folder; data=tokens needs a folder with train.bin and val.bin (or .npy)"
        )
    if s.max_bytes is not None:
        raise ValueError("data.max_bytes does not apply to data=tokens (the files are used whole); remove it")
    files = {split: _find(root, split) for split in ("train", "val")}
    encoder = load_encoder(s.tokenizer_file)
    vocab = encoder.vocab_size
    if s.vocab_size < vocab:
        raise ValueError(
            f"data.vocab_size={s.vocab_size} is smaller than the vocabulary of {s.tokenizer_file} "
            f"({vocab}); set data.vocab_size>={vocab} (scaling.data.resolve_vocab does)"
        )
    dtypes = {split: _dtype(f, vocab) for split, f in files.items()}
    if len(set(dtypes.values())) > 1:
        raise ValueError(f"train and val token files have different dtypes ({dtypes}); write both with one dtype")
    cache = s.cache_dir / "data"
    tok_hash = hashlib.blake2b(s.tokenizer_file.read_bytes(), digest_size=16).hexdigest()
    data_key = hashlib.blake2b(
        json.dumps([FORMAT, "tokens", content_hash(list(files.values()), cache / ".hashes"), tok_hash]).encode(),
        digest_size=16,
    ).hexdigest()
    final = cache / f"tokens-{data_key[:10]}-{tok_hash[:10]}"
    if not (final / "meta.json").is_file():
        with locked(cache / ".locks" / f"{final.name}.lock"):
            if not (final / "meta.json").is_file():
                with building(final) as tmp:
                    _scan(files, dtypes, encoder, tmp, s, data_key, tok_hash, root)
    return PreparedData(final, json.loads((final / "meta.json").read_text()))


def _scan(
    files: dict[str, Path],
    dtypes: dict[str, str],
    encoder,
    out: Path,
    s: DataSettings,
    data_key: str,
    tok_hash: str,
    root: Path,
) -> None:
    token_bytes = encoder.token_bytes()
    counts: dict[str, dict[str, int]] = {k: {} for k in ("docs", "bytes", "tokens")}
    for split, path in files.items():
        tokens = open_tokens(path, dtypes[split])
        n_bytes = n_docs = 0
        for a in range(0, len(tokens), SCAN_TOKENS):
            chunk = np.asarray(tokens[a : a + SCAN_TOKENS])
            top = int(chunk.max()) if len(chunk) else 0
            if top >= encoder.vocab_size:
                at = a + int(np.argmax(chunk >= encoder.vocab_size))
                raise ValueError(
                    f"{path} holds id {top} at position {at}, outside the {encoder.vocab_size:,}-token "
                    f"vocabulary of {s.tokenizer_file}; give the tokenizer the files were made with"
                )
            n_bytes += int(token_bytes[chunk].sum())
            n_docs += int((chunk == encoder.bos_id).sum())
        if n_bytes == 0:
            raise ValueError(f"{path} holds no text (no tokens, or only special ones); give non-empty token files")
        counts["tokens"][split], counts["bytes"][split], counts["docs"][split] = len(tokens), n_bytes, n_docs
    tok_file = s.tokenizer_file
    assert tok_file is not None
    shutil.copyfile(tok_file, out / ("tokenizer.model" if tok_file.suffix == ".model" else "tokenizer.json"))
    meta = {
        "format": FORMAT,
        "name": "tokens",
        "source": str(root),
        "dataset_fingerprint": f"tokens@{data_key[:8]}",
        "tokenizer_fingerprint": f"{encoder.kind[:2]}{encoder.vocab_size}@{tok_hash[:8]}",
        "vocab_size": encoder.vocab_size,
        "bos_id": encoder.bos_id,
        "dtype": dtypes["train"],
        "token_files": {k: str(v) for k, v in files.items()},
        "tokenizer": {"file": str(s.tokenizer_file)},
        **counts,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
