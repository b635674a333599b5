"""Parameter and FLOP accounting (DeepSeek LLM, Sec. 3.2), pure arithmetic: works for 67B without building it.

DeepSeek measures model scale by M, the non-embedding FLOPs per token of a training step (forward + backward):
every non-embedding matmul weight costs 6 FLOPs per token (2 forward, 4 backward), and attention's scores
and weighted values cost 6 * 2 * d_attn * l_seq per layer (each query meets l_seq keys; the paper counts the
full, unmasked sequence). The vocabulary projection is excluded, as the paper does. For MHA with an FFN
exactly 8/3 * d wide this is the paper's M = 72 n_layer d^2 + 12 n_layer d l_seq.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .config import ModelConfig


@dataclass(frozen=True)
class FlopCount:
    N1: float  # non-embedding parameters: the decoder blocks' matmul weights (norms excluded)
    N2: float  # N1 + the vocabulary matrix counted once (the paper's Table 3)
    params: float  # parameters of the instantiated model: N1 + norms + embedding (+ LM head if untied)
    M: float  # exact non-embedding training FLOPs per token from the real shapes
    M_formula: float  # DeepSeek's 72 n_layer d^2 + 12 n_layer d l_seq (assumes MHA and FFN = 8/3 d)
    M_6N1: float  # 6 * N1
    M_6N2: float  # 6 * N2
    train_flops_per_token: float  # M + the LM head (6 d V): what a training step really spends, for throughput

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def count_flops(cfg: ModelConfig) -> FlopCount:
    """Exact counts for a ModelConfig (GQA and the real FFN width included)."""
    assert cfg.n_kv_head is not None and cfg.ffn_hidden is not None  # resolved by ModelConfig.__post_init__
    return flops_from_shapes(
        n_layer=cfg.n_layer,
        d_model=cfg.d_model,
        d_attn=cfg.n_head * cfg.head_dim,
        d_kv=cfg.n_kv_head * cfg.head_dim,
        ffn_hidden=cfg.ffn_hidden,
        vocab_size=cfg.vocab_size,
        seq_len=cfg.seq_len,
        tie_embeddings=cfg.tie_embeddings,
    )


def flops_from_shapes(
    *,
    n_layer: int,
    d_model: int,
    d_attn: int,
    d_kv: int,
    ffn_hidden: float,
    vocab_size: int,
    seq_len: int,
    tie_embeddings: bool = False,
) -> FlopCount:
    """The arithmetic behind count_flops, on bare shapes.

    d_attn = n_head * head_dim (query/output width), d_kv = n_kv_head * head_dim (key/value width).
    ffn_hidden may be fractional (e.g. exactly 8/3 * d) to evaluate the paper's idealised shapes (Table 3),
    which no real model has.
    """
    attn = d_model * d_attn + 2 * d_model * d_kv + d_attn * d_model  # q, k, v, o projections
    ffn = 3 * d_model * ffn_hidden  # gate, up, down
    n1 = n_layer * (attn + ffn)
    vocab = vocab_size * d_model
    norms = (2 * n_layer + 1) * d_model  # two RMSNorms per block + the final one
    M = 6 * n1 + 12 * n_layer * d_attn * seq_len
    return FlopCount(
        N1=n1,
        N2=n1 + vocab,
        params=n1 + norms + (1 if tie_embeddings else 2) * vocab,
        M=M,
        M_formula=72 * n_layer * d_model**2 + 12 * n_layer * d_model * seq_len,
        M_6N1=6 * n1,
        M_6N2=6 * (n1 + vocab),
        train_flops_per_token=M + 6 * vocab,
    )
