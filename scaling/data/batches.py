"""Deterministic training batches and a fixed validation set over token memmaps.

Training windows are (seq_len+1)-token spans of train.bin starting every seq_len tokens: their inputs do not
overlap and each token is a target once per epoch. Sample g of the run is window perm_e[g % n] of epoch e = g // n, with
perm_e a permutation seeded by (seed, e): a batch depends only on (seed, step), so resuming at step k replays
exactly, and the epoch count is exact (tokens consumed / tokens per epoch).
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported when the first batch is made: the prepare step never needs it (~250 MB RSS)
    import torch


class DataRepeatWarning(UserWarning):
    """A run trains on some tokens more than once (more than one epoch)."""


def _windows(n_tokens: int, seq_len: int, split: str) -> int:
    n = (n_tokens - 1) // seq_len
    if n < 1:
        more = " or raise data.val_fraction" if split == "val" else ""
        raise ValueError(
            f"the {split} split has {n_tokens} tokens, fewer than seq_len+1={seq_len + 1}; "
            f"lower the model's seq_len or use more data{more}"
        )
    return n


def _stack(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    rows = np.stack([tokens[s : s + seq_len + 1] for s in starts]).astype(np.int64)
    return torch.from_numpy(rows[:, :-1].copy()), torch.from_numpy(rows[:, 1:].copy())


class TrainBatches:
    def __init__(self, tokens: np.ndarray, seq_len: int, batch_seqs: int, seed: int):
        if seq_len < 1 or batch_seqs < 1:
            raise ValueError(f"seq_len={seq_len} and batch_seqs={batch_seqs} must be positive")
        self.tokens, self.seq_len, self.batch_seqs, self.seed = tokens, seq_len, batch_seqs, seed
        self.n_windows = _windows(len(tokens), seq_len, "train")
        self.tokens_per_epoch = self.n_windows * seq_len
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) >= 2:  # a batch spans at most two epochs unless it is larger than one
                self._perms.pop(next(iter(self._perms)))
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
        return self._perms[epoch]

    def batch_at(
        self, step: int, rank: int = 0, world_size: int = 1, micro: int = 0, accum: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) int64 of shape (batch_seqs // (world_size * accum), seq_len): micro-batch `micro` of rank
        `rank`'s contiguous slice of the global batch of `step`. The global batch (the union over ranks and
        micro-batches) depends only on (seed, step), not on how it is split."""
        if self.batch_seqs % (world_size * accum) or not (0 <= rank < world_size and 0 <= micro < accum):
            raise ValueError(
                f"a batch of {self.batch_seqs} sequences cannot be split into world_size={world_size} x "
                f"accum={accum} (rank {rank}, micro {micro}); use a batch divisible by world_size*accum"
            )
        local = self.batch_seqs // (world_size * accum)
        g = step * self.batch_seqs + (rank * accum + micro) * local + np.arange(local)
        starts = np.array([self._perm(int(e))[p] for e, p in zip(g // self.n_windows, g % self.n_windows)])
        return _stack(self.tokens, starts * self.seq_len, self.seq_len)

    def epochs_for(self, tokens: int) -> float:
        """Passes over the training split that consuming `tokens` training tokens makes."""
        return tokens / self.tokens_per_epoch

    def check_repeats(self, tokens: int) -> float:
        """epochs_for(tokens), warning (DataRepeatWarning) when it is above 1: the run repeats data."""
        epochs = self.epochs_for(tokens)
        if epochs > 1:
            warnings.warn(
                f"this run makes {epochs:.2f} epochs over {self.tokens_per_epoch:,} training tokens, so it "
                "repeats data; use fewer tokens or a larger corpus for clean scaling points",
                DataRepeatWarning,
                stacklevel=2,
            )
        return epochs


class ValSet:
    """`eval_tokens` of val.bin as evenly strided non-overlapping windows (all of it if it is smaller): the
    same every run and spread over the whole split rather than its first few documents."""

    def __init__(self, tokens: np.ndarray, seq_len: int, eval_tokens: int, batch_seqs: int, token_bytes: np.ndarray):
        available = _windows(len(tokens), seq_len, "val")
        n = min(available, max(1, eval_tokens // seq_len))
        self.tokens, self.seq_len, self.batch_seqs = tokens, seq_len, batch_seqs
        self.starts = np.arange(n) * available // n * seq_len
        self.n_tokens = n * seq_len  # targets evaluated
        self.n_bytes = int(sum(token_bytes[tokens[s + 1 : s + seq_len + 1]].sum() for s in self.starts))

    def batches(self, rank: int = 0, world_size: int = 1):
        """Yield (x, y) batches of this rank's windows (every world_size-th). Under DDP average the per-rank
        summed losses by the total token count, not the per-rank means."""
        mine = self.starts[rank::world_size]
        for i in range(0, len(mine), self.batch_seqs):
            yield _stack(self.tokens, mine[i : i + self.batch_seqs], self.seq_len)

    def bpb(self, loss_nats: float) -> float:
        """Bits per byte from the mean loss (nats/token) over this set, using the exact bytes of its targets."""
        return loss_nats * self.n_tokens / (math.log(2) * self.n_bytes)
