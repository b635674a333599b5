"""The `data` config group, parsed and validated once (conf/data/*.yaml)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CORPORA = ("sotu", "wiki", "files")

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
_KEYS = {"name", "path", "vocab_size", "val_fraction", "max_bytes", "tokenizer", "cache_dir"}


@dataclass(frozen=True)
class DataSettings:
    name: str
    path: Path | None
    vocab_size: int
    val_fraction: float
    max_bytes: int | None
    tokenizer: dict[str, Any]
    cache_dir: Path

    @classmethod
    def from_cfg(cls, cfg: Mapping) -> "DataSettings":
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)  # a missing data.path (???) stays the string "???"
        unknown = set(cfg) - _KEYS
        if unknown:
            raise ValueError(f"unknown data.{sorted(unknown)[0]}; the data config keys are {', '.join(sorted(_KEYS))}")
        name = cfg.get("name")
        if name not in CORPORA:
            raise ValueError(f"unknown corpus data.name={name!r}; use one of {', '.join(CORPORA)} (files needs data.path=...)")
        path = None if cfg.get("path") in (None, "", "???") else cfg.get("path")
        if name == "files" and not path:
            raise ValueError("data.name=files needs data.path=<a .txt/.md/.jsonl file or a directory of them>")
        if name != "files" and path:
            raise ValueError(f"data.path is only read with data.name=files (got data.name={name}); use data=files")
        vocab = cfg.get("vocab_size")
        if not isinstance(vocab, int) or isinstance(vocab, bool) or vocab <= 0:
            raise ValueError(f"data.vocab_size={vocab!r} must be a positive integer, e.g. 2048")
        val_fraction = cfg.get("val_fraction", 0.05)
        if not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 0.5:
            raise ValueError(f"data.val_fraction={val_fraction!r} must be a number in (0, 0.5), e.g. 0.05")
        max_bytes = cfg.get("max_bytes")
        if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes <= 0):
            raise ValueError(f"data.max_bytes={max_bytes!r} must be a positive integer or null (whole corpus)")
        tok = dict(cfg.get("tokenizer") or {})
        clash = _RESERVED & set(tok)
        if clash:
            raise ValueError(f"data.tokenizer.{sorted(clash)[0]} is set by the data pipeline; set data.vocab_size instead"
                             if "vocab_size" in clash else f"data.tokenizer.{sorted(clash)[0]} cannot be set; remove it")
        cache_dir = cfg.get("cache_dir") or os.environ.get("SCALING_CACHE") or "~/.cache/scaling-lab"
        return cls(
            name=name,
            path=Path(os.path.expanduser(str(path))).resolve() if path else None,
            vocab_size=vocab,
            val_fraction=float(val_fraction),
            max_bytes=max_bytes,
            tokenizer={**TOKENIZER_DEFAULTS, **tok},
            cache_dir=Path(os.path.expanduser(str(cache_dir))),
        )
