"""The `data` config group, parsed and validated once (conf/data/*.yaml)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CORPORA = ("sotu", "wiki", "files", "hf", "tokens")
NEEDS_PATH = ("files", "hf", "tokens")

# SentencePiece options we rely on; data.tokenizer overrides or extends them (any SentencePieceTrainer option).
# identity normalisation + no whitespace rewriting + no dummy prefix make the tokenizer lossless, so the
# byte length of every token is exact and bits-per-byte is computed on the raw UTF-8 text.
TOKENIZER_DEFAULTS: dict[str, Any] = {
    "model_type": "bpe",
    "byte_fallback": True,
    "character_coverage": 0.9995,
    "input_sentence_size": 200_000,  # lines sampled for training: keeps training ~seconds on any corpus
    "shuffle_input_sentence": True,
    "max_sentence_length": 16384,  # bytes; longer lines are skipped by the trainer (SOTU has 8 KB paragraphs)
    "normalization_rule_name": "identity",
    "remove_extra_whitespaces": False,
    "add_dummy_prefix": False,
}
# Set by us: the vocabulary size has one source of truth (data.vocab_size), the rest is plumbing.
_RESERVED = {"vocab_size", "input", "sentence_iterator", "model_prefix", "model_writer", "num_threads", "minloglevel"}
# text_field/id_field/split/num_proc are absent from sotu.yaml on purpose: adding a key there would change the
# config hash (and so the identity) of every existing run on the default corpus.
_KEYS = {
    "name",
    "path",
    "vocab_size",
    "val_fraction",
    "max_bytes",
    "tokenizer",
    "cache_dir",
    "text_field",
    "id_field",
    "split",
    "num_proc",
}
MAX_VOCAB = 2**32  # token files are uint16 or uint32


@dataclass(frozen=True)
class DataSettings:
    name: str
    path: Path | None
    vocab_size: int
    val_fraction: float
    max_bytes: int | None
    tokenizer: dict[str, Any]  # SentencePiece trainer options (used when tokenizer_file is None)
    cache_dir: Path
    tokenizer_file: Path | None = None  # a pretrained Hugging Face tokenizer.json instead of training one
    text_field: str = "text"  # JSONL/parquet/datasets column holding the document text
    id_field: str | None = None  # column holding a stable document id (default "id" when present, else a hash)
    split: str = "train"  # which split of a datasets DatasetDict (data=hf)
    num_proc: int | None = None  # processes for tokenizing; None -> all cores

    @classmethod
    def from_cfg(cls, cfg: Mapping) -> DataSettings:
        if isinstance(cfg, DictConfig):
            # a missing data.path (???) stays the string "???"
            cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
        unknown = set(cfg) - _KEYS
        if unknown:
            raise ValueError(f"unknown data.{sorted(unknown)[0]}; the data config keys are {', '.join(sorted(_KEYS))}")
        name, path = _corpus(cfg)
        vocab = _vocab_size(cfg.get("vocab_size"))
        val_fraction, max_bytes = _split_and_size(cfg)
        tok, tok_file = _tokenizer(cfg.get("tokenizer"))
        if name == "tokens" and tok_file is None:
            raise ValueError(
                "data=tokens needs the tokenizer the token files were made with: "
                "data.tokenizer=PATH/tokenizer.json (or PATH/tokenizer.model)"
            )
        num_proc = cfg.get("num_proc")
        if num_proc is not None and (not isinstance(num_proc, int) or isinstance(num_proc, bool) or num_proc < 1):
            raise ValueError(f"data.num_proc={num_proc!r} must be a positive integer or null (all cores)")
        for key in ("text_field", "id_field", "split"):
            value = cfg.get(key)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"data.{key}={value!r} must be a non-empty column name")
        cache_dir = cfg.get("cache_dir") or os.environ.get("SCALING_CACHE") or "~/.cache/scaling-lab"
        return cls(
            name=name,
            path=_abs(path, "data.path") if path else None,
            vocab_size=vocab,
            val_fraction=float(val_fraction),
            max_bytes=max_bytes,
            tokenizer=tok,
            cache_dir=_cache_dir(cache_dir),
            tokenizer_file=tok_file,
            text_field=cfg.get("text_field") or "text",
            id_field=cfg.get("id_field"),
            split=cfg.get("split") or "train",
            num_proc=num_proc,
        )


def _corpus(cfg: Mapping) -> tuple[str, Any]:
    """(data.name, data.path or None), checked together: files, hf and tokens need a path, the others take none."""
    name = cfg.get("name")
    if name not in CORPORA:
        raise ValueError(
            f"unknown corpus data.name={name!r}; use one of {', '.join(CORPORA)} "
            "(files, hf and tokens need data.path=...)"
        )
    path = None if cfg.get("path") in (None, "", "???") else cfg.get("path")
    if name in NEEDS_PATH and not path:
        raise ValueError(f"data.name={name} needs data.path=<{_PATH_HELP[name]}>")
    if name not in NEEDS_PATH and path:
        raise ValueError(
            f"data.path is only read with data.name=files, hf or tokens (got data.name={name}); use data=files"
        )
    return name, path


def _vocab_size(vocab: Any) -> int:
    if not isinstance(vocab, int) or isinstance(vocab, bool) or vocab <= 0:
        raise ValueError(f"data.vocab_size={vocab!r} must be a positive integer, e.g. 2048")
    if vocab > MAX_VOCAB:
        raise ValueError(
            f"data.vocab_size={vocab} exceeds 2^32, the largest vocabulary uint32 token files hold; "
            "use a smaller tokenizer"
        )
    return vocab


def _split_and_size(cfg: Mapping) -> tuple[int | float, int | None]:
    """(data.val_fraction, data.max_bytes), checked."""
    val_fraction = cfg.get("val_fraction", 0.05)
    if not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 0.5:
        raise ValueError(f"data.val_fraction={val_fraction!r} must be a number in (0, 0.5), e.g. 0.05")
    max_bytes = cfg.get("max_bytes")
    if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes <= 0):
        raise ValueError(f"data.max_bytes={max_bytes!r} must be a positive integer or null (whole corpus)")
    return val_fraction, max_bytes


_PATH_HELP = {
    "files": "a file, directory or glob of .txt/.md/.jsonl[.gz|.zst]/.parquet shards",
    "hf": "a datasets save_to_disk folder or a local dataset folder",
    "tokens": "a folder with train.bin/val.bin (or .npy) token files",
}


def shown(path: Any, keep: int = 120) -> str:
    """A path for a one-line message: an absurdly long one is shortened to its two ends and its length."""
    text = str(path)
    if len(text) <= keep:
        return text
    return f"{text[: keep // 2]}...{text[-keep // 3 :]} ({len(text):,} characters)"


def _usable(path: Path, key: str) -> Path:
    """`path`, or a one-line ValueError when the system cannot even look it up (a name over the file system's
    limit, a loop of links, no permission): that is bad input, not a failing disk."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        pass  # the readers say what is missing
    except OSError as e:
        raise ValueError(f"{key}={shown(path)} cannot be used ({e.strerror}); give an existing, shorter path") from None
    return path


def _abs(path: Any, key: str) -> Path:
    text = os.path.expanduser(str(path))
    if any(c in text for c in "*?["):
        return Path(text)  # a glob, kept as written
    return _usable(Path(text), key).resolve()


def _cache_dir(value: Any) -> Path:
    path = Path(os.path.expanduser(str(value)))
    limit = os.pathconf("/", "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    if any(len(part.encode(errors="surrogateescape")) > limit for part in path.parts) or len(str(path)) > 3000:
        raise ValueError(
            f"data.cache_dir={shown(path)} is too long a path for the file system (names up to {limit} bytes); "
            "give a shorter data.cache_dir or SCALING_CACHE"
        )
    return path


def tokenizer_path(value: str) -> Path:
    """The pretrained tokenizer file that data.tokenizer=PATH names (a directory means its tokenizer.json)."""
    path = _usable(Path(os.path.expanduser(value)), "data.tokenizer").resolve()
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise ValueError(
            f"data.tokenizer={shown(value)} is not a file; give sentencepiece or the path to a Hugging Face "
            "tokenizer.json"
        )
    return path


def _tokenizer(value: Any) -> tuple[dict[str, Any], Path | None]:
    """data.tokenizer: SentencePiece trainer options (a mapping, or `sentencepiece` for the defaults) or the path to
    a pretrained tokenizer file."""
    if value is None or value == "sentencepiece":
        return dict(TOKENIZER_DEFAULTS), None
    if isinstance(value, str):
        return dict(TOKENIZER_DEFAULTS), tokenizer_path(value)
    if not isinstance(value, Mapping):
        raise ValueError(
            f"data.tokenizer={value!r} must be sentencepiece, a path to tokenizer.json, or a mapping of "
            "SentencePiece trainer options"
        )
    tok = dict(value)
    clash = _RESERVED & set(tok)
    if clash:
        raise ValueError(
            f"data.tokenizer.{sorted(clash)[0]} is set by the data pipeline; set data.vocab_size instead"
            if "vocab_size" in clash
            else f"data.tokenizer.{sorted(clash)[0]} cannot be set; remove it"
        )
    return {**TOKENIZER_DEFAULTS, **tok}, None
