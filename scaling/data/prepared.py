"""PreparedData: a built cache entry — tokenizer, token memmaps and their counts — and views over it."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

from scaling.data.batches import TrainBatches, ValSet
from scaling.data.tokenizer import SentencePieceEncoder

_ENCODERS: dict[tuple, Any] = {}


def open_tokens(path: Path, dtype: str) -> np.ndarray:
    """A token file as a read-only memmap: raw .bin of `dtype`, or .npy (its own header)."""
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r")
    return np.memmap(path, dtype=dtype, mode="r")


def load_encoder(path: Path, threads: int | None = None):
    """The encoder for a tokenizer file: a trained SentencePiece tokenizer.model or a Hugging Face tokenizer.json.
    Loaded once per process (a 100K-token tokenizer.json takes ~0.1 s to parse)."""
    key = (str(path), path.stat().st_mtime_ns, threads)
    if key not in _ENCODERS:
        if path.suffix == ".model":
            _ENCODERS[key] = SentencePieceEncoder(path, threads)
        else:
            from scaling.data.pretrained import HFEncoder

            _ENCODERS[key] = HFEncoder(path)
    return _ENCODERS[key]


@dataclass(frozen=True)
class PreparedData:
    dir: Path
    meta: dict[str, Any]
    _views: dict[tuple, Any] = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def encoder(self):
        """SentencePieceEncoder or pretrained.HFEncoder: encode/decode/token_bytes whatever made the tokens."""
        return load_encoder(self.tokenizer_file)

    @property
    def tokenizer_file(self) -> Path:
        model = self.dir / "tokenizer.model"
        return model if model.is_file() else self.dir / "tokenizer.json"

    @property
    def tokenizer(self):
        """The library's own tokenizer object (sentencepiece.SentencePieceProcessor or tokenizers.Tokenizer)."""
        enc = self.encoder
        return enc.sp if enc.kind == "sentencepiece" else enc.tok

    @property
    def vocab_size(self) -> int:
        return self.meta["vocab_size"]

    @property
    def bos_id(self) -> int:
        return self.meta["bos_id"]

    @property
    def dataset_fingerprint(self) -> str:
        return self.meta["dataset_fingerprint"]

    @property
    def tokenizer_fingerprint(self) -> str:
        return self.meta["tokenizer_fingerprint"]

    @property
    def train_tokens_count(self) -> int:
        return self.meta["tokens"]["train"]

    @property
    def val_tokens_count(self) -> int:
        return self.meta["tokens"]["val"]

    @property
    def val_bytes(self) -> int:
        return self.meta["bytes"]["val"]

    def _memmap(self, split: str) -> np.ndarray:
        external = self.meta.get("token_files")  # data=tokens: the user's files, used in place
        if external:
            return open_tokens(Path(external[split]), self.meta["dtype"])
        return np.memmap(self.dir / f"{split}.bin", dtype=self.meta["dtype"], mode="r")

    def train_tokens(self) -> np.ndarray:
        return self._memmap("train")

    def val_tokens(self) -> np.ndarray:
        return self._memmap("val")

    def encode(self, text: str) -> list[int]:
        return self.encoder.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.encoder.decode([int(i) for i in ids if i != self.bos_id])

    @cached_property
    def token_bytes(self) -> np.ndarray:
        return self.encoder.token_bytes()

    def bpb(self, val_loss_nats: float, n_tokens_evaluated: int, n_bytes: float | None = None) -> float:
        """Bits per byte = loss * tokens / (ln 2 * bytes). Without n_bytes, the evaluated tokens are assumed to
        cover val_bytes / val_tokens_count bytes each (exact for the whole split, an estimate for a subset);
        pass ValSet.n_bytes (or use ValSet.bpb) for the exact bytes of a subset."""
        if n_bytes is None:
            n_bytes = n_tokens_evaluated * self.val_bytes / self.val_tokens_count
        return val_loss_nats * n_tokens_evaluated / (math.log(2) * n_bytes)

    def train_batches(self, seq_len: int, batch_seqs: int, seed: int) -> TrainBatches:
        """The run's training stream; batch_seqs is the global batch in sequences (all ranks, all micro-batches)."""
        key = ("train", seq_len, batch_seqs, seed)
        if key not in self._views:
            self._views[key] = TrainBatches(self.train_tokens(), seq_len, batch_seqs, seed)
        return self._views[key]

    def val_set(self, seq_len: int, eval_tokens: int, batch_seqs: int) -> ValSet:
        key = ("val", seq_len, eval_tokens, batch_seqs)
        if key not in self._views:
            self._views[key] = ValSet(self.val_tokens(), seq_len, eval_tokens, batch_seqs, self.token_bytes)
        return self._views[key]

    def train_batch(
        self,
        step: int,
        *,
        seq_len: int,
        micro_seqs: int,
        seed: int,
        micro: int = 0,
        accum: int = 1,
        rank: int = 0,
        world_size: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Micro-batch `micro` (of `accum`) of rank `rank` at `step`: shorthand for train_batches(...).batch_at."""
        batches = self.train_batches(seq_len, micro_seqs * accum * world_size, seed)
        return batches.batch_at(step, rank, world_size, micro, accum)

    def val_batches(
        self, eval_tokens: int, seq_len: int, batch_seqs: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.val_set(seq_len, eval_tokens, batch_seqs).batches(rank, world_size)
