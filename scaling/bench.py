"""Train-step benchmark: our LLaMA against HF LlamaForCausalLM with the same shapes, same machine, same run.

    python -m scaling.bench                       # 4 layers, d 256 (conf/model/small.yaml), fp32 on CPU
    python -m scaling.bench --threads 1           # on a shared CPU: see "Threads" below
    python -m scaling.bench --model base_124m --device cuda --dtype bf16 --compile

A step is the trainer's own scaling.run.step.TrainStep (forward, loss, backward, clip, fused AdamW) for ours and HF's
model alike. "synced" is our model in the per-step loop TrainStep replaced (loss and gradient norm read on the host
every step): `shared_step_vs_synced` >= 1 says the shared step is not slower. The contenders and a matmul probe run in
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
import sys

import torch

from scaling.base.configs import add_config_dir_arg, resolve_name, search_dirs
from scaling.benchmarks.step import run, run_pack


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small", help="a conf/model/*.yaml name (default: small)")
    p.add_argument("--vocab", type=int, default=4096, help="vocabulary size for configs that take it from data")
    p.add_argument("--seq-len", type=int, default=None, help="override the config's seq_len")
    p.add_argument("--d-model", type=int, default=None, help="override the config's d_model (with --n-layer, --n-head)")
    p.add_argument("--n-layer", type=int, default=None, help="override the config's n_layer")
    p.add_argument("--n-head", type=int, default=None, help="override the config's n_head (and n_kv_head)")
    p.add_argument("--batch-seqs", type=int, default=8, help="sequences per step")
    p.add_argument("--steps", type=int, default=10, help="timed rounds (one step of each model per round)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default=None, help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--compile", action="store_true", help="torch.compile each decoder block, ours and HF's")
    p.add_argument("--no-hf", action="store_true", help="skip the HF comparison")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument(
        "--pack",
        type=int,
        default=None,
        metavar="K",
        help="packed training: K same-shape runs as one stacked model vs the same K runs one after another "
        "(scaling.run.pack), at the CPU demo's stage-1 shapes and at --model",
    )
    add_config_dir_arg(p, "--model names")
    args = p.parse_args(argv)
    try:
        args.model = resolve_name("model", args.model, search_dirs([], args.config_dir))
        run_pack(args) if args.pack else run(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
