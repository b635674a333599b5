"""data.vocab_size from a pretrained tokenizer: the model's vocabulary must cover every id it can produce.

With `data.tokenizer=PATH/tokenizer.json` the tokenizer, not the config, decides the vocabulary: data.vocab_size is
raised to the tokenizer's size (ids 0..max), and a larger value is kept as padding of the embedding (DeepSeek pads
its 100,015 tokens to 102,400). It is applied to the composed config before anything is hashed or built, so
`model.vocab_size=${data.vocab_size}`, count_flops, the config hash and the record all see the real value.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from scaling.data.settings import tokenizer_path


@lru_cache(maxsize=8)
def _size(path: str, mtime_ns: int) -> int:
    from scaling.data import pretrained

    return pretrained.vocab_size(pretrained.load(Path(path)))


def pretrained_vocab_size(tokenizer: object) -> int | None:
    """The vocabulary of data.tokenizer when it names a tokenizer file, else None (SentencePiece is trained to size)."""
    if not isinstance(tokenizer, str) or tokenizer == "sentencepiece":
        return None
    path = tokenizer_path(tokenizer)
    if path.suffix == ".model":  # a SentencePiece model that came with pre-tokenized files
        import sentencepiece as spm

        return spm.SentencePieceProcessor(model_file=str(path)).get_piece_size()
    return _size(str(path), path.stat().st_mtime_ns)


def resolve_vocab(cfg: DictConfig) -> DictConfig:
    """cfg with data.vocab_size raised to a pretrained tokenizer's size (a copy; cfg itself is left alone)."""
    data = cfg.get("data")
    if data is None:
        return cfg
    size = pretrained_vocab_size(OmegaConf.select(cfg, "data.tokenizer"))
    if size is None or (isinstance(data.get("vocab_size"), int) and data.vocab_size >= size):
        return cfg
    out = copy.deepcopy(cfg)
    out.data.vocab_size = size
    return out


def run_vocab_size(cfg: DictConfig) -> int:
    """The vocabulary the runs of `cfg` (a composed `run` config, or a sweep's) train with: data.vocab_size raised to
    a pretrained tokenizer's size (resolve_vocab), i.e. what model.vocab_size=${data.vocab_size} becomes in every
    run. A planner counts N2, FLOPs, throughput keys, time and GPU memory with this number, never with the config's
    data.vocab_size as composed. ValueError (one line) when data.tokenizer names no file."""
    vocab = OmegaConf.select(resolve_vocab(cfg), "data.vocab_size")
    if not isinstance(vocab, int) or isinstance(vocab, bool) or vocab <= 0:
        raise ValueError(f"data.vocab_size={vocab!r} must be a positive integer, e.g. 2048")
    return vocab
