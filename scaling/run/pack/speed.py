"""Speed of packing: what `python -m scaling.bench --pack K` and the sweep's `sweep.pack=auto` measure."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from model import LLaMA, ModelConfig
from scaling.run.pack.model import PackedParams, rope_of
from scaling.run.pack.optim import PackedAdamW, PackedStep
from scaling.run.step import TrainStep, build_optimizer


def pack_contenders(
    cfg: ModelConfig, K: int, x: torch.Tensor, y: torch.Tensor, device: torch.device, amp: torch.dtype | None
) -> dict[str, Callable[[], None]]:
    """One optimizer step of K runs (same init, learning rates 1e-4..1e-4*K) two ways: `sequential`, the K
    single-run train steps (scaling.run.step.TrainStep) one after another, and `packed`, one PackedStep."""
    lrs = [1e-4 * (k + 1) for k in range(K)]  # small: no drift into slow denormals or NaN while timing
    singles = []
    for lr in lrs:
        torch.manual_seed(0)
        model = LLaMA(cfg).to(device)
        singles.append(
            (
                TrainStep(
                    model,
                    build_optimizer(model, lr, (0.9, 0.95), 1e-8, 0.1, device),
                    device=device,
                    amp=amp,
                    grad_clip=1.0,
                ),
                lr,
            )
        )
    torch.manual_seed(0)
    template = LLaMA(cfg).to(device)
    row = {n: p.detach() for n, p in template.named_parameters()}
    params = PackedParams(template, [row] * K, device)
    adam = PackedAdamW(K, params.flat.shape[1], params.n_decay, (0.9, 0.95), 1e-8, device)
    packed = PackedStep(params, adam, cfg, rope_of(template), [0.1] * K, [1.0] * K, device, amp)

    def sequential() -> None:
        for step, lr in singles:
            step([(x, y)], lr)

    def one_packed() -> None:
        packed([(x, y)], lrs)

    return {"sequential": sequential, "packed": one_packed}


def measure_speedup(
    cfg: ModelConfig, K: int, seqs: int, device: torch.device, amp: torch.dtype | None, rounds: int = 3
) -> float:
    """Sequential over packed seconds per step of K runs of this shape at `seqs` sequences per step: the median
    of `rounds` interleaved rounds after one warm-up round (a fraction of a second for CPU-demo shapes)."""
    torch.manual_seed(1)
    xy = torch.randint(0, cfg.vocab_size, (seqs, cfg.seq_len + 1), device=device)
    fns = pack_contenders(cfg, K, xy[:, :-1].contiguous(), xy[:, 1:].contiguous(), device, amp)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds + 1):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if r:  # round 0 warms up
                times[name].append(time.perf_counter() - t0)
    return statistics.median(times["sequential"]) / statistics.median(times["packed"])
