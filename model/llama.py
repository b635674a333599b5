"""A LLaMA-style decoder as DeepSeek LLM trains it, in one readable file.

Pre-norm blocks (RMSNorm -> attention -> residual, RMSNorm -> SwiGLU -> residual), rotary position
embeddings, grouped-query attention, a final RMSNorm and an untied LM head. Parameter names follow
Hugging Face's LlamaForCausalLM (minus its "model." prefix) so that model.hf can export and import
weights by renaming keys only.

Generation: `model.generate(idx, max_new_tokens)` decodes with a KVCache (each layer keeps its past keys and
values, K heads under GQA, so a new token costs one position, not a recomputation of the whole prefix).

Shapes: B batch, T sequence, C d_model, H query heads, K key/value heads, D head_dim, V vocab, F ffn_hidden.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


class RMSNorm(nn.Module):
    """x / rms(x) * weight: LayerNorm without centring or bias (as LLaMA and DeepSeek)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Fused kernel; in float32 it is the same arithmetic as HF's LlamaRMSNorm.
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dim: HF's RoPE convention (not interleaved pairs)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_tables(head_dim: int, seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (seq_len, head_dim), computed exactly as HF's default rotary embedding."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))  # (D/2,)
    freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)  # (T, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, D): both halves share a frequency, matching rotate_half
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, heads, T, D) by position; cos/sin (T, D) broadcast over batch and heads."""
    return x * cos + rotate_half(x) * sin


class KVCache:
    """Past keys and values of every layer for incremental decoding, preallocated up to `max_len` positions.

    Under GQA it stores the K key/value heads only (not H): the cache is H/K times smaller than the queries'
    view, and SDPA broadcasts the groups exactly as in training. `pos` is the number of positions filled.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        batch_size: int,
        max_len: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        self.max_len = cfg.seq_len if max_len is None else max_len
        if not 0 < self.max_len <= cfg.seq_len:
            raise ValueError(f"KVCache max_len={self.max_len} must be in 1..seq_len={cfg.seq_len} (RoPE tables)")
        shape = (batch_size, cfg.n_kv_head or cfg.n_head, self.max_len, cfg.head_dim)  # (B, K, L, D)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.pos = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, K, T, D) at positions pos..pos+T of `layer`; return its keys and values so far."""
        end = self.pos + k.shape[2]
        self.k[layer][:, :, self.pos : end] = k
        self.v[layer][:, :, self.pos : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.n_kv_head is not None  # resolved by ModelConfig.__post_init__
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        d_attn, d_kv = cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, d_attn, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, d_kv, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, d_kv, bias=False)
        self.o_proj = nn.Linear(d_attn, cfg.d_model, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None, layer: int = 0
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        mask, causal = None, True
        if cache is not None:
            start = cache.pos
            k, v = cache.update(layer, k, v)  # (B, K, start+T, D): the past and these T positions
            if start:  # query i sits at position start+i and sees keys 0..start+i
                causal = False
                mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)
        # Each group of H/K query heads shares one key/value head; SDPA broadcasts them without copies.
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=self.n_kv_head != self.n_head
        )  # (B, H, T, D)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))  # (B, T, C)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.ffn_hidden is not None  # resolved by ModelConfig.__post_init__
        self.gate_proj = nn.Linear(cfg.d_model, cfg.ffn_hidden, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.ffn_hidden, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_hidden, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # (B, T, F) -> (B, T, C)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None, layer: int = 0
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class LLaMA(nn.Module):
    rope_cos: torch.Tensor  # buffers, declared for the type checker
    rope_sin: torch.Tensor

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        # Derived from the config: rebuilt in float32 at construction, never saved in checkpoints.
        cos, sin = rope_tables(cfg.head_dim, cfg.seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)  # (seq_len, D)
        self.register_buffer("rope_sin", sin, persistent=False)  # (seq_len, D)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialise every parameter explicitly.

        init_scheme="deepseek" (DeepSeek LLM, Sec. 2.3): every weight matrix, embedding and LM head included,
            ~ N(0, init_std) with init_std = 0.006; RMSNorm weights = 1. There are no biases.
        init_scheme="scaled" (GPT-2 style): as "deepseek", but the two projections that write into the
            residual stream (o_proj, down_proj) use init_std / sqrt(2 * n_layer), so the residual's variance
            does not grow with depth.
        """
        std, scaled = self.cfg.init_std, self.cfg.init_scheme == "scaled"
        residual_std = std / math.sqrt(2 * self.cfg.n_layer) if scaled else std
        nn.init.normal_(self.embed_tokens.weight, mean=0.0, std=std)
        if not self.cfg.tie_embeddings:
            nn.init.normal_(self.lm_head.weight, mean=0.0, std=std)
        for block in self.blocks:
            for lin in (
                block.self_attn.q_proj,
                block.self_attn.k_proj,
                block.self_attn.v_proj,
                block.mlp.gate_proj,
                block.mlp.up_proj,
            ):
                nn.init.normal_(lin.weight, mean=0.0, std=std)
            for lin in (block.self_attn.o_proj, block.mlp.down_proj):
                nn.init.normal_(lin.weight, mean=0.0, std=residual_std)
            nn.init.ones_(block.input_layernorm.weight)
            nn.init.ones_(block.post_attention_layernorm.weight)
        nn.init.ones_(self.norm.weight)

    @property
    def blocks(self) -> list[Block]:
        """self.layers with their type: nn.ModuleList yields plain Modules to a type checker."""
        return [block for block in self.layers if isinstance(block, Block)]

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, cache: KVCache | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """idx (B, T) token ids -> logits (B, T, V); with targets (B, T) -> (logits, mean cross-entropy in nats).

        With a KVCache, idx holds the T positions after the cache's `pos` (a prompt, then one token at a time):
        their keys/values are appended and `cache.pos` advances by T.
        """
        B, T = idx.shape
        start = 0 if cache is None else cache.pos
        if start + T > (self.cfg.seq_len if cache is None else cache.max_len):
            raise ValueError(
                f"positions {start}..{start + T - 1} exceed the model's seq_len={self.cfg.seq_len}"
                + ("" if cache is None else f" or the cache's max_len={cache.max_len}")
            )
        x = self.embed_tokens(idx)  # (B, T, C)
        # Match the activations' dtype (e.g. bf16 under autocast) so RoPE does not upcast q and k.
        dtype = _compute_dtype(x)
        cos, sin = self.rope_cos[start : start + T].to(dtype), self.rope_sin[start : start + T].to(dtype)  # (T, D)
        for i, block in enumerate(self.layers):
            x = block(x, cos, sin, cache, i)
        if cache is not None:
            cache.pos += T
        logits = self.lm_head(self.norm(x))  # (B, T, V)
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T))
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Continue idx (B, T) by max_new_tokens tokens -> (B, T + max_new_tokens).

        temperature 0 is greedy (argmax); otherwise sample from softmax(logits / temperature), restricted to the
        top_k most likely tokens when given. use_cache=False recomputes the whole window for every token (the
        reference the KV cache must equal). When the sequence outgrows seq_len, the context is cut to the last
        seq_len // 2 tokens and the cache is refilled from them (positions restart, as in training windows).
        """
        if max_new_tokens < 0 or not 0 <= temperature < float("inf") or (top_k is not None and top_k < 1):
            raise ValueError("need max_new_tokens >= 0, temperature >= 0 and top_k >= 1 (or None)")
        if idx.shape[1] == 0:
            raise ValueError("generate needs a prompt of at least one token")
        was_training = self.training
        self.eval()
        seq_len, keep = self.cfg.seq_len, max(1, self.cfg.seq_len // 2)
        out, start = idx, max(0, idx.shape[1] - seq_len)  # the model sees out[:, start:]
        cache: KVCache | None = None
        for _ in range(max_new_tokens):
            if out.shape[1] - start > seq_len:  # the window is full: keep its tail, positions restart at 0
                start, cache = out.shape[1] - keep, None
            if not use_cache:
                logits = self(out[:, start:])[:, -1]
            elif cache is None:  # prefill: the whole window in one pass
                cache = KVCache(self.cfg, out.shape[0], device=out.device, dtype=self.embed_tokens.weight.dtype)
                logits = self(out[:, start:], cache=cache)[:, -1]
            else:  # one new position
                logits = self(out[:, -1:], cache=cache)[:, -1]
            out = torch.cat((out, _pick(logits.float(), temperature, top_k, generator)), dim=1)
        self.train(was_training)
        return out


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the linear layers will produce from x: autocast's if it is on, else x's own."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _pick(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> torch.Tensor:
    """Next token ids (B, 1) from last-position logits (B, V): argmax at temperature 0, else a sample."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
