"""The train-step benchmark behind `python -m scaling.bench`: our LLaMA's TrainStep against HF LlamaForCausalLM with
the same shapes on the same machine in the same run, and packed against sequential steps (--pack K)."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from model import LLaMA, ModelConfig, count_flops
from scaling.base.configs import load_model_config
from scaling.run.parallel import compile_blocks, resolve_amp
from scaling.run.step import TrainStep, autocast_ctx, build_optimizer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def square_matmul(device: torch.device, dtype: torch.dtype, n: int) -> tuple[Callable[[], None], float]:
    """A probe (function, FLOPs per call): ~0.2 s of square n x n matmuls."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    sync(device)
    t0 = time.perf_counter()
    a @ b
    sync(device)
    reps = max(1, min(1000, round(0.2 / max(time.perf_counter() - t0, 1e-6))))

    def probe() -> None:
        for _ in range(reps):
            a @ b

    return probe, 2 * n**3 * reps


def step_gemms(
    cfg: ModelConfig, tokens: int, device: torch.device, dtype: torch.dtype
) -> tuple[Callable[[], None], float]:
    """A probe (function, FLOPs per call): every linear-layer GEMM of one training step at its real shape and
    layout, y = x W^T, dx = dy W, dW = dy^T x, with no other work in between."""
    assert cfg.ffn_hidden is not None and cfg.n_kv_head is not None  # ModelConfig fills both in
    C, F, V = cfg.d_model, cfg.ffn_hidden, cfg.vocab_size
    d_attn, d_kv = cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim
    linears = [(C, d_attn), (C, d_kv), (C, d_kv), (d_attn, C), (C, F), (C, F), (F, C)] * cfg.n_layer + [(C, V)]
    operands: dict[tuple[int, int], tuple[torch.Tensor, ...]] = {}
    for fan_in, fan_out in set(linears):
        operands[fan_in, fan_out] = tuple(
            torch.randn(*s, device=device, dtype=dtype)
            for s in ((tokens, fan_in), (fan_out, fan_in), (tokens, fan_out))
        )

    def probe() -> None:
        for shape in linears:
            x, w, dy = operands[shape]
            x @ w.t(), dy @ w, dy.t() @ x

    return probe, sum(3 * 2 * tokens * i * o for i, o in linears)


def hf_twin(model_cfg: ModelConfig) -> torch.nn.Module:
    """HF's LlamaForCausalLM of the same network, configured by the export's own to_hf_config (one definition of
    "the same network"), with SDPA attention as ours."""
    try:
        from transformers import LlamaForCausalLM

        from model.hf import to_hf_config
    except ImportError as e:
        raise ValueError("the HF comparison needs transformers: pip install -e .[hf]") from e
    cfg = to_hf_config(model_cfg)
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg)


class HFLoss(torch.nn.Module):
    """HF's model behind our (x, y) -> (logits, loss) interface, so that it trains with the same TrainStep."""

    def __init__(self, hf: torch.nn.Module):
        super().__init__()
        self.hf = hf

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.hf(input_ids=x, labels=x)  # HF shifts the labels itself
        return out.logits, out.loss


def step_fn(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, amp: torch.dtype | None
) -> Callable[[], None]:
    """One optimizer step of the trainer's own TrainStep (forward, loss, backward, clip, fused AdamW)."""
    step = TrainStep(
        model, build_optimizer(model, 1e-4, (0.9, 0.95), 1e-8, 0.1, device), device=device, amp=amp, grad_clip=1.0
    )

    def run_step() -> None:
        step([(x, y)], 1e-4)  # its outputs stay on the device, unread, as between the trainer's logging steps

    return run_step


def synced_step_fn(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, amp: torch.dtype | None
) -> Callable[[], None]:
    """The reference for the shared step: a loop that reads the loss and the gradient norm on the
    host every step (two device syncs) and synchronises the device at the end of the step."""
    opt = build_optimizer(model, 1e-4, (0.9, 0.95), 1e-8, 0.1, device)

    def step() -> None:
        with autocast_ctx(device, amp):
            _, loss = model(x, y)
            loss.backward()
        loss.detach().float().item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)

    return step


def time_rounds(fns: dict[str, Callable[[], None]], device: torch.device, rounds: int) -> dict[str, float]:
    """Median seconds per call of each function, called in interleaved rounds."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def warm_up(step: Callable[[], None], device: torch.device, n: int) -> float:
    """Run n steps (compilation happens here); return their total seconds."""
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    sync(device)
    return time.perf_counter() - t0


def _contenders(
    args: argparse.Namespace, cfg: ModelConfig, x: torch.Tensor, y: torch.Tensor, device: torch.device, amp
) -> tuple[dict, dict[str, float]]:
    """The steps timed against each other (ours, ours in the per-step-sync loop, HF's), each warmed up."""
    models: dict[str, torch.nn.Module] = {"ours": LLaMA(cfg).to(device)}
    models["synced"] = LLaMA(cfg).to(device)  # the same model in the per-step-sync loop the shared step replaced
    if not args.no_hf:
        models["HF"] = HFLoss(hf_twin(cfg)).to(device)
    steps, warm_s = {}, {}
    for name, model in models.items():
        if args.compile and isinstance(model, HFLoss):
            for layer in model.hf.model.layers:  # type: ignore[union-attr]
                layer.compile()
        elif args.compile and isinstance(model, LLaMA):
            compile_blocks(model)  # as train.compile=true does
        steps[name] = (synced_step_fn if name == "synced" else step_fn)(model, x, y, device, amp)
        warm_s[name] = warm_up(steps[name], device, args.warmup)
    return steps, warm_s


def _print_steps(t: dict[str, float], steps: dict, warm_s: dict[str, float], tokens: int, args) -> None:
    for name, sec in t.items():
        if name in steps:
            vs = ""
            if name in ("HF", "synced"):
                vs = (
                    f"  ours {t[name] / t['ours']:.2f}x faster"
                    if name == "HF"
                    else f"  shared step {t[name] / t['ours']:.3f}x its speed"
                )
            print(
                f"{name:6s}: {tokens / sec:12,.0f} tokens/s  ({sec * 1e3:.1f} ms/step, median of {args.steps}; "
                f"warm-up{' + compile' if args.compile else ''} {warm_s[name]:.1f} s){vs}"
            )


def run(args: argparse.Namespace) -> dict[str, str]:
    """Benchmark, print the report, and return its last line's key=value pairs (scaling.gpucheck reads them)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amp = resolve_amp(args.dtype or "auto", device)  # the runs' rule: bf16 autocast on CUDA, fp32 on CPU
    dtype = "bf16" if amp else "fp32"
    cfg = _bench_config(args)
    flops = count_flops(cfg)
    tokens = args.batch_seqs * cfg.seq_len
    torch.manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (args.batch_seqs, cfg.seq_len + 1), device=device)
    x, y = x[:, :-1].contiguous(), x[:, 1:].contiguous()
    load_before = os.getloadavg()[0]

    steps, warm_s = _contenders(args, cfg, x, y, device, amp)
    peak_dtype = torch.bfloat16 if amp else torch.float32
    square, square_flops = square_matmul(device, peak_dtype, 4096 if device.type == "cuda" else 1024)
    gemms, gemm_flops = step_gemms(cfg, tokens, device, peak_dtype)
    gemms()
    t = time_rounds(steps | {"square": square, "gemms": gemms}, device, args.steps)

    step_flops = flops.train_flops_per_token * tokens
    achieved, peak = step_flops / t["ours"], square_flops / t["square"]
    gemm_rate = gemm_flops / t["gemms"]
    _print_header(args, cfg, tokens, device, dtype, load_before)
    _print_steps(t, steps, warm_s, tokens, args)
    print(
        f"FLOPs/step {step_flops:.3g} (M + LM head); ours achieves {achieved / 1e9:.1f} GFLOP/s = "
        f"{achieved / peak:.1%} of the square-matmul peak {peak / 1e9:.1f} GFLOP/s"
    )
    print(
        f"the step's linear-layer GEMMs alone: {t['gemms'] * 1e3:.1f} ms at {gemm_rate / 1e9:.1f} GFLOP/s "
        f"({gemm_rate / peak:.0%} of the square peak); ours spends {t['ours'] / t['gemms']:.2f}x that time"
    )
    kv = {"model": args.model, "device": device.type, "dtype": dtype} | _result_kv(
        args, tokens, t, load_before, achieved, peak
    )
    print(" ".join(f"{k}={v}" for k, v in kv.items()))
    return kv


def _bench_config(args: argparse.Namespace) -> ModelConfig:
    """The benchmarked model: a named config with the command line's shape overrides (heads all full: no GQA)."""
    return load_model_config(
        args.model,
        vocab_size=args.vocab,
        seq_len=args.seq_len,
        d_model=args.d_model,
        n_layer=args.n_layer,
        n_head=args.n_head,
        n_kv_head=args.n_head,
    )


def _print_header(
    args: argparse.Namespace, cfg: ModelConfig, tokens: int, device: torch.device, dtype: str, load_before: float
) -> None:
    """What was measured, and on how busy a machine (the load average before and after)."""
    load = f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus"
    print(
        f"model {args.model}: {cfg.n_layer} layers, d {cfg.d_model}, {cfg.n_head} heads ({cfg.n_kv_head} kv), "
        f"ffn {cfg.ffn_hidden}, vocab {cfg.vocab_size}, seq {cfg.seq_len}; {tokens} tokens/step; {device} {dtype}"
        f"{' compiled' if args.compile else ''}; {torch.get_num_threads()} threads; {load}"
    )
    if device.type == "cpu" and torch.get_num_threads() > 1 and load_before >= (os.cpu_count() or 1) - 0.5:
        print("note: other processes are using the cores; multi-threaded steps stall on them (see --help: Threads)")


def _result_kv(
    args: argparse.Namespace, tokens: int, t: dict[str, float], load_before: float, achieved: float, peak: float
) -> dict[str, Any]:
    """The report's measured key=value pairs (after model, device, dtype): speeds, speed-ups and FLOP/s fractions."""
    return {
        "compiled": int(args.compile),
        "threads": torch.get_num_threads(),
        "load": f"{load_before:.2f}",
        "tokens_per_s": f"{tokens / t['ours']:.0f}",
        "hf_tokens_per_s": f"{tokens / t['HF']:.0f}" if "HF" in t else "nan",
        "speedup_vs_hf": f"{t['HF'] / t['ours']:.3f}" if "HF" in t else "nan",
        "shared_step_vs_synced": f"{t['synced'] / t['ours']:.3f}",
        "achieved_flops": f"{achieved:.4g}",
        "peak_flops": f"{peak:.4g}",
        "fraction_of_peak": f"{achieved / peak:.3f}",
        "gemm_only_s": f"{t['gemms']:.4g}",
        "fraction_of_gemm_bound": f"{t['gemms'] / t['ours']:.3f}",
    }


# The CPU demo's stage-1 shapes (conf/study/cpu_demo.yaml; `python -m scaling.study --dry-run`): 2 layers, seq 64,
# vocab 512; d 16 (2 heads) at C = 2e10 and 6e10 (batches of 4-43 sequences), d 24 (3 heads) at 2e11 (8-64).
DEMO_STAGE1 = [(16, 2, 4), (16, 2, 16), (24, 3, 8), (24, 3, 32)]  # (d_model, n_head, sequences per step)


def run_pack(args: argparse.Namespace) -> None:
    """Packed vs sequential throughput of the same K runs, measured in the same run (interleaved rounds, medians)."""
    from scaling.run.pack.speed import pack_contenders

    K = args.pack
    if K < 1:
        raise ValueError(f"--pack {K}: give the number of runs to pack, >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amp = resolve_amp(args.dtype or "auto", device)  # the runs' rule: bf16 autocast on CUDA, fp32 on CPU
    dtype = "bf16" if amp else "fp32"
    points = [
        (f"demo stage-1 d{d} x{seqs}", load_model_config("tiny", vocab_size=512, d_model=d, n_head=h, seq_len=64), seqs)
        for d, h, seqs in DEMO_STAGE1
    ]
    points.append(
        (args.model, load_model_config(args.model, vocab_size=args.vocab, seq_len=args.seq_len), args.batch_seqs)
    )
    load_before = os.getloadavg()[0]
    print(
        f"packed training: K={K} runs of one shape, one stacked step vs K single steps; {device} {dtype}; "
        f"{torch.get_num_threads()} threads; median of {args.steps} interleaved rounds"
    )
    demo_seq = demo_pack = 0.0
    kv: dict[str, str] = {}
    for name, cfg, seqs in points:
        torch.manual_seed(1)
        xy = torch.randint(0, cfg.vocab_size, (seqs, cfg.seq_len + 1), device=device)
        x, y = xy[:, :-1].contiguous(), xy[:, 1:].contiguous()
        fns = pack_contenders(cfg, K, x, y, device, amp)  # scaling.run.pack
        for fn in fns.values():
            warm_up(fn, device, args.warmup)
        t = time_rounds(fns, device, args.steps)
        tokens = K * seqs * cfg.seq_len
        speedup = t["sequential"] / t["packed"]
        print(
            f"{name:24s} (L{cfg.n_layer} d{cfg.d_model} V{cfg.vocab_size} T{cfg.seq_len}): sequential "
            f"{tokens / t['sequential']:10,.0f} tok/s ({t['sequential'] * 1e3:7.1f} ms), packed "
            f"{tokens / t['packed']:10,.0f} tok/s ({t['packed'] * 1e3:7.1f} ms): {speedup:.2f}x"
        )
        if name.startswith("demo"):  # per token: every run of a budget trains the same D, whatever its batch
            demo_seq, demo_pack = demo_seq + t["sequential"] / tokens, demo_pack + t["packed"] / tokens
        else:
            kv[f"pack_speedup_{args.model}"] = f"{speedup:.3f}"
    print(f"demo stage-1 shapes together (equal tokens at each, as the runs of a budget): {demo_seq / demo_pack:.2f}x")
    kv = {
        "K": str(K),
        "device": device.type,
        "dtype": dtype,
        "threads": str(torch.get_num_threads()),
        "load": f"{load_before:.2f}",
        "pack_speedup": f"{demo_seq / demo_pack:.3f}",
        **kv,
    }
    print(" ".join(f"{k}={v}" for k, v in kv.items()))
