"""Train-step benchmark: our LLaMA against HF LlamaForCausalLM with the same shapes, same machine, same run.

    python -m scaling.bench                       # 4 layers, d 256 (conf/model/small.yaml), fp32 on CPU
    python -m scaling.bench --model base_124m --device cuda --dtype bf16 --compile

Prints tokens/s of both, their ratio, and our achieved FLOP/s as a fraction of this machine's measured matmul
peak (fp32 on CPU, bf16 on CUDA). The last line is key=value pairs for scripts.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import OmegaConf

from model import LLaMA, ModelConfig, count_flops

CONF_MODEL = Path(__file__).resolve().parent.parent / "conf" / "model"


def load_model_config(name: str, vocab_size: int, seq_len: int | None) -> ModelConfig:
    path = CONF_MODEL / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"--model {name}: no {path}; choose one of {sorted(p.stem for p in CONF_MODEL.glob('*.yaml'))}")
    raw = OmegaConf.merge({"data": {"vocab_size": vocab_size}}, {"model": OmegaConf.load(path)})
    fields = OmegaConf.to_container(raw.model, resolve=True)
    if seq_len:
        fields["seq_len"] = seq_len
    return ModelConfig.from_dict(fields)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, seconds: float = 1.0) -> float:
    """Measured FLOP/s of a square matmul: the machine's practical ceiling for our model's dominant op."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    """One optimizer step: forward, loss, backward, AdamW (fused on CUDA), as the trainer does it."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=device.type == "cuda")

    def step() -> None:
        ctx = torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()
        with ctx:
            loss = model(input_ids=x, labels=x).loss if is_hf else model(x, y)[1]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def time_steps(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> float:
    """Median seconds per step after warm-up (the median resists the noise of shared machines)."""
    for _ in range(warmup):
        step()
    sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small", help="a conf/model/*.yaml name (default: small)")
    p.add_argument("--vocab", type=int, default=4096, help="vocabulary size for configs that take it from data")
    p.add_argument("--seq-len", type=int, default=None, help="override the config's seq_len")
    p.add_argument("--batch-seqs", type=int, default=8, help="sequences per step")
    p.add_argument("--steps", type=int, default=10, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default=None, help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--compile", action="store_true", help="torch.compile each block of our model (CUDA)")
    p.add_argument("--no-hf", action="store_true", help="skip the HF comparison")
    p.add_argument("--threads", type=int, default=None)
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
    cfg = load_model_config(args.model, args.vocab, args.seq_len)
    flops = count_flops(cfg)
    tokens = args.batch_seqs * cfg.seq_len
    torch.manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (args.batch_seqs, cfg.seq_len + 1), device=device)
    x, y = x[:, :-1].contiguous(), x[:, 1:].contiguous()

    ours = LLaMA(cfg).to(device)
    if args.compile:
        for layer in ours.layers:
            layer.compile()
    t_ours = time_steps(step_fn(ours, False, x, y, device, amp), device, args.warmup, args.steps)
    del ours
    t_hf = None
    if not args.no_hf:
        hf = hf_twin(cfg).to(device)
        t_hf = time_steps(step_fn(hf, True, x, y, device, amp), device, args.warmup, args.steps)
        del hf
    peak = matmul_peak(device, torch.bfloat16 if amp else torch.float32, 4096 if device.type == "cuda" else 1024)

    achieved = flops.train_flops_per_token * tokens / t_ours
    print(f"model {args.model}: {cfg.n_layer} layers, d {cfg.d_model}, {cfg.n_head} heads ({cfg.n_kv_head} kv), "
          f"ffn {cfg.ffn_hidden}, vocab {cfg.vocab_size}, seq {cfg.seq_len}; {tokens} tokens/step; "
          f"{device} {dtype}{' compiled' if args.compile else ''}")
    print(f"ours : {tokens / t_ours:12,.0f} tokens/s  ({t_ours * 1e3:.1f} ms/step)")
    if t_hf is not None:
        print(f"HF   : {tokens / t_hf:12,.0f} tokens/s  ({t_hf * 1e3:.1f} ms/step)  speedup {t_hf / t_ours:.2f}x")
    print(f"FLOPs/token (M + LM head) {flops.train_flops_per_token:.3g}; achieved {achieved / 1e9:.1f} GFLOP/s; "
          f"measured matmul peak {peak / 1e9:.1f} GFLOP/s -> {achieved / peak:.1%} of peak")
    kv = {"model": args.model, "device": device.type, "dtype": dtype, "tokens_per_s": f"{tokens / t_ours:.0f}",
          "hf_tokens_per_s": f"{tokens / t_hf:.0f}" if t_hf else "nan",
          "speedup_vs_hf": f"{t_hf / t_ours:.3f}" if t_hf else "nan",
          "achieved_flops": f"{achieved:.4g}", "peak_flops": f"{peak:.4g}", "fraction_of_peak": f"{achieved / peak:.3f}"}
    print(" ".join(f"{k}={v}" for k, v in kv.items()))


if __name__ == "__main__":
    main()
