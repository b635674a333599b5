"""One training run: `python -m scaling.train model=tiny train.tokens=2e5 optim.lr=3e-3`.

train_run() is the unit every sweep point calls. It trains exactly D = steps·B tokens, evaluates on a fixed
validation set and leaves a complete record in the run directory (config.yaml, metrics.jsonl, ckpt.pt,
result.json). It is idempotent: a finished run with the same config is returned as is, an interrupted one resumes
from its checkpoint, a failed one is trained again.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import sys
import time
import warnings
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from model import LLaMA, ModelConfig, count_flops
from scaling.configs import HYDRA_CONFIG_PATH
from scaling.checkpoint import load_checkpoint, save_checkpoint
from scaling.data import prepare_data
from scaling.distributed import Dist, barrier, init_distributed
from scaling.record import (FINISHED, SCHEMA_VERSION, config_hash, device_name, git_sha, read_result,
                            write_atomic, write_json)
from scaling.trainer import LoopSpec, LoopState, build_optimizer, checkpoint_state, evaluate, restore_state, run_loop
from scaling.schedule import warmup_steps

log = logging.getLogger(__name__)


def resolve_device(name: str, d: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and d.enabled:
        name = f"cuda:{d.local_rank}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train.device={name} but no CUDA device is available; use train.device=cpu or auto")
    return torch.device(name)


def resolve_amp(dtype: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA by default; fp32 on CPU by default (exact, deterministic; train.dtype=bf16 is faster
    on CPUs with AVX-512 BF16 — measured 2.4x on this project's 2-core CI machine — at bf16 precision)."""
    if dtype not in ("auto", "fp32", "bf16"):
        raise ValueError(f"train.dtype={dtype!r} is unknown; use auto, fp32 or bf16")
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return torch.bfloat16 if dtype == "bf16" else None


def plan_steps(cfg: dict, world_size: int) -> tuple[int, int, int]:
    """(steps, batch_size, accum) from train.tokens and train.batch_size, with one-line errors for bad sizes."""
    train, seq_len = cfg["train"], cfg["model"]["seq_len"]
    tokens, batch = float(train["tokens"]), int(train["batch_size"])
    if batch <= 0 or batch % seq_len:
        raise ValueError(f"train.batch_size={batch} must be a positive multiple of model.seq_len={seq_len} "
                         f"(B counts tokens per step); try train.batch_size={max(1, round(batch / seq_len)) * seq_len}")
    if tokens < batch:
        raise ValueError(f"train.tokens={tokens:g} is smaller than one batch (train.batch_size={batch}); "
                         f"raise train.tokens or lower train.batch_size")
    micro = int(train["micro_batch_size"] or batch // world_size)
    if micro % seq_len or batch % (micro * world_size):
        raise ValueError(f"train.micro_batch_size={micro} must be a multiple of model.seq_len={seq_len} that divides "
                         f"train.batch_size={batch} / world size {world_size}")
    return round(tokens / batch), batch, batch // (micro * world_size)


def train_run(cfg: DictConfig, out_dir: Path) -> dict:
    """Train (or resume, or skip) the run described by cfg in out_dir; returns its result record."""
    entered = time.perf_counter()
    c = OmegaConf.to_container(cfg, resolve=True)
    if c["model"].get("vocab_size") != c["data"]["vocab_size"]:
        raise ValueError(f"model.vocab_size={c['model'].get('vocab_size')} disagrees with data.vocab_size="
                         f"{c['data']['vocab_size']}; the tokenizer sets it: use model.vocab_size=${{data.vocab_size}}")
    model_cfg = ModelConfig.from_dict(c["model"])
    chash = config_hash(c)
    previous = read_result(out_dir)
    held = previous.get("config_hash") if previous is not None else _interrupted_hash(out_dir)
    if held is not None and held != chash:
        raise ValueError(f"{out_dir} already holds a run with another config (hash {held} != {chash}); "
                         f"give this run another run.id / output dir instead of mixing them")
    if previous is not None and previous.get("status") in FINISHED:
        log.info("skip %s: already %s (val_loss %s)", out_dir, previous["status"], previous.get("val_loss"))
        return previous | {"skipped": True}

    d = init_distributed(resolve_device(str(c["train"]["device"]), Dist()).type)
    device = resolve_device(str(c["train"]["device"]), d)
    amp = resolve_amp(str(c["train"]["dtype"]), device)
    steps, batch, accum = plan_steps(c, d.world_size)
    if c["train"]["threads"]:
        torch.set_num_threads(int(c["train"]["threads"]))

    # The tokenizer cache is built once (by rank 0) and read by the others.
    if d.is_main:
        data = prepare_data(c["data"])
    barrier(d)
    if not d.is_main:
        data = prepare_data(c["data"])

    flops = count_flops(model_cfg)
    D = steps * batch
    epochs = D / data.train_tokens_count
    if epochs > 1 and d.is_main:
        warnings.warn(f"this run repeats its training data: {epochs:.2f} epochs over {data.train_tokens_count:,} "
                      f"tokens of {data.dataset_fingerprint}", stacklevel=1)

    # Everything above is validation: only now is the run directory written to.
    started = time.time()
    base = {
        "schema_version": SCHEMA_VERSION, "run_id": c["run"]["id"] or out_dir.name, "status": "running",
        "error": None, "sweep": c["run"]["sweep"], "budget": c["run"]["budget"],
        "model": {k: getattr(model_cfg, k) for k in
                  ("n_layer", "d_model", "n_head", "n_kv_head", "ffn_hidden", "vocab_size", "seq_len")},
        **{k: v for k, v in flops.as_dict().items() if k in ("N1", "N2", "params", "M", "M_formula", "M_6N1",
                                                            "M_6N2")},
        "D": D, "C": flops.M * D, "lr": float(c["optim"]["lr"]), "batch_size": batch,
        "seq_len": model_cfg.seq_len, "steps": steps, "epochs": epochs,
        "dataset": data.dataset_fingerprint, "tokenizer": data.tokenizer_fingerprint, "seed": c["seed"],
        "git_sha": git_sha(), "torch": torch.__version__, "device": device_name(device),
        "world_size": d.world_size, "config_hash": chash,
    }
    try:
        result = _train(c, model_cfg, data, base, steps, batch, accum, out_dir, d, device, amp, chash, entered)
    except Exception as e:
        if d.is_main:
            write_json(out_dir / "result.json", base | {"status": "failed", "error": f"{type(e).__name__}: {e}",
                                                        "wall_time_s": time.time() - started})
        raise
    return result


def _train(c: dict, model_cfg: ModelConfig, data, base: dict, steps: int, batch: int, accum: int, out_dir: Path,
           d: Dist, device: torch.device, amp: torch.dtype | None, chash: str, entered: float) -> dict:
    started = time.time()
    if d.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(out_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(c)))
    torch.manual_seed(c["seed"])
    model = LLaMA(model_cfg).to(device)
    if c["train"]["compile"]:
        for layer in model.layers:
            layer.compile()
    o = c["optim"]
    optimizer = build_optimizer(model, o["lr"], (o["beta1"], o["beta2"]), o["eps"], o["weight_decay"], device)
    ckpt = load_checkpoint(out_dir, chash)
    state = restore_state(model, optimizer, ckpt) if ckpt else LoopState()
    if d.is_main:
        _truncate_metrics(out_dir / "metrics.jsonl", state.step)
    ddp = None
    if d.enabled:
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None)
    seq_len, micro_seqs = model_cfg.seq_len, batch // (accum * d.world_size) // model_cfg.seq_len

    def micro_batch(step: int, micro: int):
        return data.train_batch(step=step, micro=micro, accum=accum, micro_seqs=micro_seqs, seq_len=seq_len,
                                seed=c["seed"], rank=d.rank, world_size=d.world_size)

    # Fixed, evenly spaced validation windows; ValSet knows their exact byte count for bits per byte.
    val_set = data.val_set(seq_len=seq_len, eval_tokens=int(c["train"]["eval_tokens"]),
                           batch_seqs=micro_seqs)

    def val_batches():
        return val_set.batches(rank=d.rank, world_size=d.world_size)

    spec = LoopSpec(steps=steps, batch_size=batch, accum=accum, peak_lr=float(o["lr"]), schedule=o["schedule"],
                    warmup=warmup_steps(steps, o["warmup_frac"], o["max_warmup_steps"]),
                    min_lr_frac=o["min_lr_frac"], grad_clip=o["grad_clip"],
                    diverge_factor=float(c["train"]["diverge_factor"]), log_every=int(c["train"]["log_every"]),
                    eval_every=int(c["train"]["eval_every"]), ckpt_every_s=float(c["train"]["ckpt_every_s"]),
                    config_hash=chash)
    startup_s = time.perf_counter() - entered  # data cache, model build, checkpoint: all before step 1
    state = run_loop(model, optimizer, spec, state, micro_batch, val_batches, out_dir, d, device, amp,
                     bool(c["train"]["progress"]), ddp_model=ddp)
    val_loss = val_tokens = None
    if state.status == "completed":
        val_loss, val_tokens = evaluate(model, val_batches(), device, amp, d)
        if d.is_main:
            save_checkpoint(out_dir, checkpoint_state(model, optimizer, spec, state))
    result = base | {
        "status": state.status, "error": state.reason,
        "D": state.step * batch, "C": base["M"] * state.step * batch, "D_planned": base["D"],
        "val_loss": val_loss if val_loss is None or math.isfinite(val_loss) else None,
        "val_bpb": val_set.bpb(val_loss) if val_loss is not None else None,
        "val_tokens": val_tokens, "train_loss": state.loss_ema, "initial_loss": state.initial_loss,
        "tokens_per_s": state.step * batch / state.train_time_s if state.train_time_s else None,
        "wall_time_s": time.time() - started, "startup_s": startup_s,
    }
    if state.status == "diverged":
        result["steps_done"] = state.step
    if d.is_main:
        write_json(out_dir / "result.json", result)
        log.info("%s: %s, val_loss %s nats/token, %s bits/byte", result["run_id"], result["status"],
                 _fmt(result["val_loss"]), _fmt(result["val_bpb"]))
    return result


def _interrupted_hash(out_dir: Path) -> str | None:
    """Config hash of an unfinished run in out_dir (its config.yaml), None when there is none."""
    try:
        return config_hash(OmegaConf.to_container(OmegaConf.load(out_dir / "config.yaml"), resolve=True))
    except (OSError, KeyError, TypeError, ValueError):
        return None


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop log lines past the checkpoint so no step is logged twice."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    write_atomic(path, "".join(line + "\n" for line in keep))


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


@hydra.main(config_path=HYDRA_CONFIG_PATH, config_name="run", version_base=None)
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        result = train_run(cfg, out_dir)
    except ValueError as e:  # bad input: one line, and no half-made run dir left behind
        _remove_if_empty(out_dir)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"{result['status']}: val_loss={_fmt(result['val_loss'])} val_bpb={_fmt(result['val_bpb'])} "
          f"D={result['D']:,} C={result['C']:.3g} -> {out_dir}")


def _remove_if_empty(out_dir: Path) -> None:
    """Remove a run dir that holds nothing but Hydra's own bookkeeping (created before validation could run)."""
    if out_dir.exists() and all(p.name == ".hydra" or p.suffix == ".log" for p in out_dir.iterdir()):
        shutil.rmtree(out_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
