"""The stacked model of a pack: K runs' parameters in one flat (K, P) buffer and the LLaMA forward with a leading run
dimension on every weight (one `bmm` per linear layer, attention once over K*B sequences)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from model import LLaMA, ModelConfig
from model.llama import apply_rope


class PackedParams:
    """K runs' parameters in one flat (K, P) buffer; each named parameter is a (K, *shape) view of its columns.

    Matrices come first so that weight decay (matrices only, as `build_optimizer`) is the column range
    [0, n_decay). The views are leaves of autograd; the optimizer updates `flat` in place.
    """

    def __init__(self, template: nn.Module, rows: Sequence[dict[str, torch.Tensor]], device: torch.device):
        named = list(template.named_parameters())  # tied weights appear once, as in the optimizer
        named = [(n, p) for n, p in named if p.dim() >= 2] + [(n, p) for n, p in named if p.dim() < 2]
        self.names = [n for n, _ in named]
        self.shapes = {n: tuple(p.shape) for n, p in named}
        self.offsets: dict[str, tuple[int, int]] = {}
        off = 0
        for n, p in named:
            self.offsets[n] = (off, off + p.numel())
            off += p.numel()
        self.n_decay = sum(p.numel() for _, p in named if p.dim() >= 2)
        self.flat = torch.empty(len(rows), off, device=device)
        for k, row in enumerate(rows):
            self.set_row(k, row)
        self._make_views()

    @property
    def K(self) -> int:
        return self.flat.shape[0]

    def _make_views(self) -> None:
        K = self.K
        self.views = {
            n: self.flat[:, a:b].view(K, *self.shapes[n]).detach().requires_grad_()
            for n, (a, b) in self.offsets.items()
        }

    def set_row(self, k: int, row: dict[str, torch.Tensor]) -> None:
        """Row k's parameters from a run's named tensors (copied into the flat buffer: the views see them)."""
        with torch.no_grad():
            for n in self.names:
                a, b = self.offsets[n]
                self.flat[k, a:b] = row[n].reshape(-1).to(self.flat.device)

    def row(self, k: int) -> dict[str, torch.Tensor]:
        return {n: self.flat[k, a:b].view(self.shapes[n]) for n, (a, b) in self.offsets.items()}

    def grads(self) -> torch.Tensor:
        """The gradient as a (K, P) tensor (one copy), and the views' grads cleared."""
        K = self.K
        parts = []
        for n in self.names:
            v = self.views[n]
            parts.append(
                v.grad.reshape(K, -1) if v.grad is not None else torch.zeros(K, v[0].numel(), device=self.flat.device)
            )
            v.grad = None
        return torch.cat(parts, dim=1)

    def keep(self, rows: list[int]) -> None:
        """Drop every run not in rows (a diverged run leaving the pack)."""
        self.flat = self.flat[rows].contiguous()
        self._make_views()


def rope_of(model: LLaMA) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's RoPE tables (cos, sin), shared by the K runs of a pack."""
    return cast(torch.Tensor, model.rope_cos), cast(torch.Tensor, model.rope_sin)


def _lin(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """h (K, N, in) @ w (K, out, in)^T -> (K, N, out): nn.Linear for K runs at once."""
    return torch.bmm(h, w.transpose(1, 2))


def _norm(h: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of h (K, N, C) with per-run weights w (K, C)."""
    return F.rms_norm(h, (h.shape[-1],), None, eps) * w[:, None, :]


def packed_losses(
    p: dict[str, torch.Tensor], cfg: ModelConfig, cos: torch.Tensor, sin: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy (nats/token) of each of the K runs on the same batch x, y (B, T) -> (K,).
    The forward of model.llama.LLaMA, with a leading run dimension on every weight."""
    B, T = x.shape
    emb = p["embed_tokens.weight"]
    K, V, C = emb.shape
    H, KV, Dh = cfg.n_head, int(cfg.n_kv_head or cfg.n_head), cfg.head_dim
    # Run k's tokens index rows k*V.. of the K stacked tables: one gather for all runs.
    idx = x.reshape(1, B * T) + torch.arange(K, device=x.device).view(K, 1) * V
    h = F.embedding(idx, emb.reshape(K * V, C))  # (K, B*T, C)
    dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else h.dtype
    cos, sin = cos[:T].to(dtype), sin[:T].to(dtype)
    for i in range(cfg.n_layer):
        w = {n.split(".", 2)[2]: t for n, t in p.items() if n.startswith(f"layers.{i}.")}
        a = _norm(h, w["input_layernorm.weight"], cfg.norm_eps)
        q = _lin(a, w["self_attn.q_proj.weight"]).view(K * B, T, H, Dh).transpose(1, 2)
        k = _lin(a, w["self_attn.k_proj.weight"]).view(K * B, T, KV, Dh).transpose(1, 2)
        v = _lin(a, w["self_attn.v_proj.weight"]).view(K * B, T, KV, Dh).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=KV != H)  # (K*B, H, T, Dh)
        h = h + _lin(o.transpose(1, 2).reshape(K, B * T, H * Dh), w["self_attn.o_proj.weight"])
        a = _norm(h, w["post_attention_layernorm.weight"], cfg.norm_eps)
        gated = F.silu(_lin(a, w["mlp.gate_proj.weight"])) * _lin(a, w["mlp.up_proj.weight"])
        h = h + _lin(gated, w["mlp.down_proj.weight"])
    head = p.get("lm_head.weight", emb)  # tied embeddings share the table
    return HeadCrossEntropy.apply(_norm(h, p["norm.weight"], cfg.norm_eps), head, y.reshape(B * T))


class HeadCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of each run's LM head: h (K, N, C), head (K, V, C), targets (N,) -> (K,).

    One run at a time, with the gradient computed in the forward pass (softmax - one-hot, then the two matmuls):
    the K runs' logits (K x N x V floats: megabytes) never exist at once, so each run's stay in cache, and the
    softmax is computed once instead of in log_softmax's forward and again in its backward. Measured at the CPU
    demo's shapes this is most of the packed step's gain over the plain cross-entropy on stacked logits, which
    ran slower per token than the single runs' on a loaded machine (cache misses). Training only: the forward
    always pays for the gradient.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, head: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        K, N, _ = h.shape
        losses = torch.empty(K, dtype=torch.float32, device=h.device)
        grad_h, grad_head = torch.empty_like(h), torch.empty(head.shape, dtype=head.dtype, device=head.device)
        rows = torch.arange(N, device=h.device)
        for k in range(K):
            logp = torch.log_softmax((h[k] @ head[k].t()).float(), dim=1)  # (N, V), as F.cross_entropy
            losses[k] = -logp[rows, y].mean()
            probs = logp.exp_()  # softmax, in place
            probs[rows, y] -= 1.0
            probs.div_(N)  # d mean(loss) / d logits
            probs = probs.to(h.dtype)
            torch.mm(probs, head[k], out=grad_h[k])
            torch.mm(probs.t(), h[k], out=grad_head[k])
        ctx.save_for_backward(grad_h, grad_head)
        return losses

    @staticmethod
    def backward(ctx, grad_losses: torch.Tensor):  # type: ignore[override]
        grad_h, grad_head = ctx.saved_tensors
        g = grad_losses.to(grad_h.dtype).view(-1, 1, 1)
        return grad_h * g, grad_head * g, None
