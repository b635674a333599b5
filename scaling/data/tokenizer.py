"""SentencePiece training with errors a user can act on, and per-token byte lengths for bits-per-byte."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm


def train_tokenizer(
    lines: Iterable[str], vocab_size: int, options: dict[str, Any], model_file: Path, corpus: str
) -> spm.SentencePieceProcessor:
    """Train on `lines` (one sentence each) and write `model_file`. The pieces do not depend on num_threads."""
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_prefix=str(model_file.with_suffix("")),
            vocab_size=vocab_size,
            num_threads=min(os.cpu_count() or 1, 16),
            minloglevel=2,
            **options,
        )
    except (RuntimeError, ValueError, TypeError) as e:
        msg = str(e)
        if m := re.search(r"value <= (\d+)", msg):
            raise ValueError(
                f"data.vocab_size={vocab_size} is too large for corpus {corpus} "
                f"(at most ~{m.group(1)} pieces); lower data.vocab_size"
            ) from None
        if m := re.search(r"smaller than required_chars\. \d+ vs (\d+)", msg):
            raise ValueError(
                f"data.vocab_size={vocab_size} is too small for corpus {corpus} (its characters and "
                f"byte tokens need {m.group(1)}); raise data.vocab_size"
            ) from None
        raise ValueError(
            f"tokenizer training failed on corpus {corpus}: {msg.splitlines()[0] if msg else e!r}; check data.tokenizer"
        ) from None
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    if sp.get_piece_size() != vocab_size:  # one source of truth: the model is built with data.vocab_size
        raise ValueError(
            f"tokenizer has {sp.get_piece_size()} pieces, not data.vocab_size={vocab_size}; "
            "remove data.tokenizer.hard_vocab_limit/use_all_vocab"
        )
    return sp


def token_pieces(sp: spm.SentencePieceProcessor) -> list[bytes]:
    """The UTF-8 bytes each token stands for: its byte for byte-fallback tokens, none for <s>/</s>/<unk>, and '▁' is
    a space. With the default lossless settings a text's tokens spell exactly its bytes."""
    out = []
    for i in range(sp.get_piece_size()):
        if sp.is_byte(i):
            out.append(bytes([int(sp.id_to_piece(i)[3:5], 16)]))  # "<0xAB>"
        elif sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            out.append(b"")
        else:
            out.append(sp.id_to_piece(i).replace("\u2581", " ").encode())
    return out


def token_bytes(sp: spm.SentencePieceProcessor) -> np.ndarray:
    """How many UTF-8 bytes each token stands for (see token_pieces): what bits per byte divides by."""
    return np.array([len(p) for p in token_pieces(sp)], dtype=np.int64)


class SentencePieceEncoder:
    """A trained SentencePiece model behind the interface the data pipeline uses: vocab_size, bos_id (the
    document separator), encode_batch, encode, decode, token_bytes and token_pieces (see pretrained.HFEncoder)."""

    kind = "sentencepiece"

    def __init__(self, model_file: Path, threads: int | None = None):
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        self.vocab_size = self.sp.get_piece_size()
        self.bos_id = self.sp.bos_id()
        self.threads = threads or min(os.cpu_count() or 1, 16)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts, num_threads=self.threads)

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)

    def token_bytes(self) -> np.ndarray:
        return token_bytes(self.sp)

    def token_pieces(self) -> list[bytes]:
        return token_pieces(self.sp)
