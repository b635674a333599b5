"""The CUDA path (bf16 autocast, fused AdamW, per-block torch.compile). Skips cleanly on machines without a GPU."""
from __future__ import annotations

import pytest
import torch

from model import LLaMA, ModelConfig
from scaling.trainer import autocast_ctx, build_optimizer

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _train_steps(model: torch.nn.Module, device: torch.device, steps: int = 20) -> list[float]:
    opt = build_optimizer(model, 3e-3, (0.9, 0.95), 1e-8, 0.1, device)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randint(0, model.cfg.vocab_size, (8, model.cfg.seq_len + 1), generator=g).to(device)
    losses = []
    for _ in range(steps):
        with autocast_ctx(device, torch.bfloat16):
            _, loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def test_bf16_compiled_training_learns_and_matches_eager():
    device = torch.device("cuda")
    cfg = ModelConfig(n_layer=2, d_model=128, n_head=4, n_kv_head=2, vocab_size=512, seq_len=64, ffn_multiple_of=64)
    torch.manual_seed(0)
    eager = LLaMA(cfg).to(device)
    compiled = LLaMA(cfg).to(device)
    compiled.load_state_dict(eager.state_dict())
    for layer in compiled.layers:
        layer.compile()
    a, b = _train_steps(eager, device), _train_steps(compiled, device)
    assert a[-1] < a[0] - 1.0                                  # it memorises the batch
    assert b[-1] == pytest.approx(a[-1], rel=0.05)             # compile changes speed, not the numbers (bf16 noise)
    assert all(p.dtype == torch.float32 for p in compiled.parameters())  # master weights stay fp32 under autocast
