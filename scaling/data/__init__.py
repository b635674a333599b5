"""Data for the scaling lab: corpora, tokenizer, cached token memmaps, deterministic batches."""

from scaling.data.batches import DataRepeatWarning, TrainBatches, ValSet
from scaling.data.prepare import prepare_data
from scaling.data.prepared import PreparedData
from scaling.data.vocab import resolve_vocab, run_vocab_size

__all__ = [
    "DataRepeatWarning",
    "PreparedData",
    "TrainBatches",
    "ValSet",
    "prepare_data",
    "resolve_vocab",
    "run_vocab_size",
]
