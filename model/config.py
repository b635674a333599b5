"""ModelConfig: the shape of a LLaMA-style decoder, validated once so every consumer can trust it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

INIT_SCHEMES = ("deepseek", "scaled")


def llama_ffn_hidden(d_model: int, multiple_of: int) -> int:
    """LLaMA's FFN width: floor(8/3 * d_model), rounded up to a multiple of `multiple_of`.

    8/3 keeps SwiGLU's three matrices (3 * d * 8d/3 = 8 d^2) at the cost of a 4d two-matrix MLP.
    """
    hidden = 8 * d_model // 3
    return multiple_of * -(-hidden // multiple_of)


@dataclass(kw_only=True)
class ModelConfig:
    n_layer: int
    d_model: int
    n_head: int
    n_kv_head: int | None = None  # None -> n_head (multi-head attention); fewer -> grouped-query attention
    ffn_hidden: int | None = None  # None -> llama_ffn_hidden(d_model, ffn_multiple_of)
    ffn_multiple_of: int = 256  # LLaMA's rounding of the default FFN width
    vocab_size: int
    seq_len: int  # longest sequence; RoPE tables are precomputed up to here
    rope_theta: float = 10000.0  # DeepSeek LLM 7B/67B
    norm_eps: float = 1e-6  # DeepSeek LLM 7B/67B
    tie_embeddings: bool = False  # DeepSeek keeps the LM head separate from the embedding
    init_std: float = 0.006  # DeepSeek LLM: N(0, 0.006) for every weight matrix
    init_scheme: str = "deepseek"  # "deepseek" | "scaled" (see LLaMA.init_weights)

    def __post_init__(self) -> None:
        for name in ("n_layer", "d_model", "n_head", "ffn_multiple_of", "vocab_size", "seq_len"):
            _check_positive_int(name, getattr(self, name))
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        _check_positive_int("n_kv_head", self.n_kv_head)
        if self.ffn_hidden is None:
            self.ffn_hidden = llama_ffn_hidden(self.d_model, self.ffn_multiple_of)
        _check_positive_int("ffn_hidden", self.ffn_hidden)
        for name in ("rope_theta", "norm_eps", "init_std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"ModelConfig.{name} must be a positive number, got {value!r}")
            setattr(self, name, float(value))
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(f"ModelConfig.tie_embeddings must be true or false, got {self.tie_embeddings!r}")
        if self.d_model % self.n_head:
            raise ValueError(
                f"d_model={self.d_model} must be divisible by n_head={self.n_head} "
                f"(head_dim = d_model / n_head); pick n_head among the divisors of d_model"
            )
        if self.n_head % self.n_kv_head:
            raise ValueError(
                f"n_head={self.n_head} must be divisible by n_kv_head={self.n_kv_head} "
                f"(each KV head serves a whole group of query heads)"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim = d_model / n_head = {self.head_dim} must be even for rotary embeddings")
        if self.init_scheme not in INIT_SCHEMES:
            raise ValueError(f"ModelConfig.init_scheme={self.init_scheme!r} is not one of {INIT_SCHEMES}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        """Build from a plain mapping (e.g. a resolved `cfg.model`); unknown keys are an error."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ValueError(f"unknown ModelConfig key(s) {unknown}; valid keys are {valid}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"ModelConfig is missing required key(s) {missing}")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
