"""Train-step benchmark: our LLaMA against HF LlamaForCausalLM with the same shapes, same machine, same run.

    python -m scaling.bench                       # 4 layers, d 256 (conf/model/small.yaml), fp32 on CPU
    python -m scaling.bench --threads 1           # on a shared CPU: see "Threads" below
    python -m scaling.bench --model base_124m --device cuda --dtype bf16 --compile

A step is forward, loss, backward and AdamW, as the trainer does it. The contenders and a matmul probe run in
interleaved rounds (ours, HF, probe, ours, HF, probe, ...) and every figure is a median over rounds, so a load
that comes and goes hits all of them alike.

Definitions. FLOPs of a step: count_flops's train_flops_per_token (DeepSeek's M, attention counted unmasked,
+ 6 d V for the LM head) times tokens. fraction_of_peak = those FLOP/s over the FLOP/s of a square matmul
(n = 1024 on CPU in fp32, 4096 on CUDA in bf16): the machine's practical ceiling for the dominant op. Also
printed: the same FLOPs over the time that the step's linear-layer GEMMs alone take at their real shapes and
layouts (forward, input grad, weight grad): a ceiling that no implementation of this model can beat.

Threads. OpenMP needs all its threads on a core at every parallel region; when other processes compete for a
2-core machine, a 2-thread step stalls a scheduler time slice at each of its hundreds of ops and runs several
times slower than with 1 thread. The load average is printed: compare runs only at similar load.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import OmegaConf

from model import LLaMA, ModelConfig, count_flops
from scaling.configs import load_model_config
from scaling.trainer import autocast_ctx, build_optimizer

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


def step_gemms(cfg: ModelConfig, tokens: int, device: torch.device,
               dtype: torch.dtype) -> tuple[Callable[[], None], float]:
    """A probe (function, FLOPs per call): every linear-layer GEMM of one training step at its real shape and
    layout, y = x W^T, dx = dy W, dW = dy^T x, with no other work in between."""
    C, F, V = cfg.d_model, cfg.ffn_hidden, cfg.vocab_size
    d_attn, d_kv = cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim
    linears = [(C, d_attn), (C, d_kv), (C, d_kv), (d_attn, C), (C, F), (C, F), (F, C)] * cfg.n_layer + [(C, V)]
    operands = {}
    for fan_in, fan_out in set(linears):
        operands[fan_in, fan_out] = tuple(torch.randn(*s, device=device, dtype=dtype)
                                          for s in ((tokens, fan_in), (fan_out, fan_in), (tokens, fan_out)))

    def probe() -> None:
        for shape in linears:
            x, w, dy = operands[shape]
            x @ w.t(), dy @ w, dy.t() @ x
    return probe, sum(3 * 2 * tokens * i * o for i, o in linears)


def hf_twin(model_cfg: ModelConfig) -> torch.nn.Module:
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as e:
        raise ValueError("the HF comparison needs transformers: pip install -e .[hf]") from e
    cfg = LlamaConfig(vocab_size=model_cfg.vocab_size, hidden_size=model_cfg.d_model,
                      intermediate_size=model_cfg.ffn_hidden, num_hidden_layers=model_cfg.n_layer,
                      num_attention_heads=model_cfg.n_head, num_key_value_heads=model_cfg.n_kv_head,
                      max_position_embeddings=model_cfg.seq_len, rms_norm_eps=model_cfg.norm_eps,
                      rope_theta=model_cfg.rope_theta, tie_word_embeddings=model_cfg.tie_embeddings,
                      attention_bias=False, mlp_bias=False, attn_implementation="sdpa")
    return LlamaForCausalLM(cfg)


def step_fn(model: torch.nn.Module, is_hf: bool, x: torch.Tensor, y: torch.Tensor, device: torch.device,
            amp: torch.dtype | None) -> Callable[[], None]:
    """One optimizer step: forward, loss, backward, AdamW, with the trainer's optimizer and autocast."""
    opt = build_optimizer(model, 1e-4, (0.9, 0.95), 1e-8, 0.1, device)

    def step() -> None:
        with autocast_ctx(device, amp):
            loss = model(input_ids=x, labels=x).loss if is_hf else model(x, y)[1]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small", help="a conf/model/*.yaml name (default: small)")
    p.add_argument("--vocab", type=int, default=4096, help="vocabulary size for configs that take it from data")
    p.add_argument("--seq-len", type=int, default=None, help="override the config's seq_len")
    p.add_argument("--batch-seqs", type=int, default=8, help="sequences per step")
    p.add_argument("--steps", type=int, default=10, help="timed rounds (one step of each model per round)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default=None, help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--compile", action="store_true", help="torch.compile each decoder block, ours and HF's")
    p.add_argument("--no-hf", action="store_true", help="skip the HF comparison")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = p.parse_args(argv)
    try:
        run(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def run(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    amp = torch.bfloat16 if dtype == "bf16" else None
    cfg = load_model_config(args.model, vocab_size=args.vocab, seq_len=args.seq_len)
    flops = count_flops(cfg)
    tokens = args.batch_seqs * cfg.seq_len
    torch.manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (args.batch_seqs, cfg.seq_len + 1), device=device)
    x, y = x[:, :-1].contiguous(), x[:, 1:].contiguous()
    load_before = os.getloadavg()[0]

    models = {"ours": LLaMA(cfg).to(device)}
    if not args.no_hf:
        models["HF"] = hf_twin(cfg).to(device)
    steps, warm_s = {}, {}
    for name, model in models.items():
        if args.compile:
            for layer in (model.layers if name == "ours" else model.model.layers):
                layer.compile()
        steps[name] = step_fn(model, name == "HF", x, y, device, amp)
        warm_s[name] = warm_up(steps[name], device, args.warmup)
    peak_dtype = torch.bfloat16 if amp else torch.float32
    square, square_flops = square_matmul(device, peak_dtype, 4096 if device.type == "cuda" else 1024)
    gemms, gemm_flops = step_gemms(cfg, tokens, device, peak_dtype)
    gemms()
    t = time_rounds(steps | {"square": square, "gemms": gemms}, device, args.steps)

    step_flops = flops.train_flops_per_token * tokens
    achieved, peak = step_flops / t["ours"], square_flops / t["square"]
    gemm_rate = gemm_flops / t["gemms"]
    load = f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus"
    print(f"model {args.model}: {cfg.n_layer} layers, d {cfg.d_model}, {cfg.n_head} heads ({cfg.n_kv_head} kv), "
          f"ffn {cfg.ffn_hidden}, vocab {cfg.vocab_size}, seq {cfg.seq_len}; {tokens} tokens/step; {device} {dtype}"
          f"{' compiled' if args.compile else ''}; {torch.get_num_threads()} threads; {load}")
    if device.type == "cpu" and torch.get_num_threads() > 1 and load_before >= (os.cpu_count() or 1) - 0.5:
        print("note: other processes are using the cores; multi-threaded steps stall on them (see --help: Threads)")
    for name, s in t.items():
        if name in steps:
            vs = f"  ours {t['HF'] / t['ours']:.2f}x faster" if name == "HF" else ""
            print(f"{name:5s}: {tokens / s:12,.0f} tokens/s  ({s * 1e3:.1f} ms/step, median of {args.steps}; "
                  f"warm-up{' + compile' if args.compile else ''} {warm_s[name]:.1f} s){vs}")
    print(f"FLOPs/step {step_flops:.3g} (M + LM head); ours achieves {achieved / 1e9:.1f} GFLOP/s = "
          f"{achieved / peak:.1%} of the square-matmul peak {peak / 1e9:.1f} GFLOP/s")
    print(f"the step's linear-layer GEMMs alone: {t['gemms'] * 1e3:.1f} ms at {gemm_rate / 1e9:.1f} GFLOP/s "
          f"({gemm_rate / peak:.0%} of the square peak); ours spends {t['ours'] / t['gemms']:.2f}x that time")
    kv = {"model": args.model, "device": device.type, "dtype": dtype, "compiled": int(args.compile),
          "threads": torch.get_num_threads(), "load": f"{load_before:.2f}",
          "tokens_per_s": f"{tokens / t['ours']:.0f}",
          "hf_tokens_per_s": f"{tokens / t['HF']:.0f}" if "HF" in t else "nan",
          "speedup_vs_hf": f"{t['HF'] / t['ours']:.3f}" if "HF" in t else "nan",
          "achieved_flops": f"{achieved:.4g}", "peak_flops": f"{peak:.4g}", "fraction_of_peak": f"{achieved / peak:.3f}",
          "gemm_only_s": f"{t['gemms']:.4g}", "fraction_of_gemm_bound": f"{t['gemms'] / t['ours']:.3f}"}
    print(" ".join(f"{k}={v}" for k, v in kv.items()))


if __name__ == "__main__":
    main()
