"""One training run: `python -m scaling.train model=tiny train.tokens=2e5 optim.lr=3e-3`.

train_run() is the unit every sweep point calls. It trains exactly D = steps·B tokens, evaluates on a fixed
validation set and leaves a complete record in the run directory (config.yaml, metrics.jsonl, ckpt.pt,
result.json). It is idempotent: a finished run with the same config is returned as is, an interrupted one resumes
from its checkpoint, a failed one is trained again.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from model import LLaMA, ModelConfig, count_flops
from scaling.checkpoint import load_checkpoint, save_checkpoint, truncate_metrics
from scaling.cli import EXIT_FAILED, fail, run_hydra
from scaling.configs import HYDRA_CONFIG_PATH
from scaling.data import prepare_data, resolve_vocab
from scaling.distributed import Dist, any_across, barrier, init_distributed
from scaling.lock import RunLocked, acquire, release
from scaling.parallel import (
    check_resumable,
    checkpoint_blocks,
    choose_mode,
    compile_blocks,
    grad_sync,
    load_sharded,
    resolve_amp,
    resolve_device,
    save_sharded,
    shard,
    wrap_ddp,
)
from scaling.record import (
    FINISHED,
    SCHEMA_VERSION,
    config_hash,
    device_name,
    git_sha,
    read_result,
    write_atomic,
    write_record,
)
from scaling.schedule import warmup_steps
from scaling.step import TrainStep, build_optimizer
from scaling.trackers import open_trackers
from scaling.train_config import OptimConfig, TrainConfig
from scaling.trainer import (
    LoopSpec,
    LoopState,
    RunContext,
    checkpoint_state,
    evaluate,
    loop_meta,
    loop_state_from,
    restore_state,
    run_loop,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSetup:
    """A validated run, ready to train: typed configs, data, the record so far, and where and how it computes."""

    resolved: dict  # the resolved config as written to config.yaml
    model_cfg: ModelConfig
    train: TrainConfig
    optim: OptimConfig
    seed: int
    data: Any  # scaling.data's prepared corpus (train_batch, val_set)
    record: dict  # result.json's fields known before training
    steps: int
    batch_size: int  # tokens per optimizer step, all ranks
    accum: int  # micro-batches per step per rank
    run_dir: Path
    dist_env: Dist
    device: torch.device
    amp: torch.dtype | None
    parallel: str  # single | ddp | fsdp (scaling.parallel.choose_mode)
    config_hash: str
    entered: float  # perf_counter() when train_run was called: start-up time is measured from here


def plan_steps(train: TrainConfig, seq_len: int, world_size: int) -> tuple[int, int, int]:
    """(steps, batch_size, accum) from train.tokens and train.batch_size, with one-line errors for bad sizes."""
    tokens, batch = float(train.tokens), int(train.batch_size)
    if batch <= 0 or batch % seq_len:
        raise ValueError(
            f"train.batch_size={batch} must be a positive multiple of model.seq_len={seq_len} "
            f"(B counts tokens per step); try train.batch_size={max(1, round(batch / seq_len)) * seq_len}"
        )
    if tokens < batch:
        raise ValueError(
            f"train.tokens={tokens:g} is smaller than one batch (train.batch_size={batch}); "
            f"raise train.tokens or lower train.batch_size"
        )
    micro = int(train.micro_batch_size or batch // world_size)
    if micro % seq_len or batch % (micro * world_size):
        raise ValueError(
            f"train.micro_batch_size={micro} must be a multiple of model.seq_len={seq_len} that divides "
            f"train.batch_size={batch} / world size {world_size}"
        )
    return round(tokens / batch), batch, batch // (micro * world_size)


def check_config(cfg: DictConfig) -> tuple[dict, ModelConfig, TrainConfig, OptimConfig]:
    """The run's config resolved and validated (one-line ValueErrors naming the key); a sweep checks every planned
    run with this before launching any."""
    c = OmegaConf.to_container(resolve_vocab(cfg), resolve=True)  # a pretrained tokenizer sets data.vocab_size
    assert isinstance(c, dict)  # a config group, never a list or a scalar
    if c["model"].get("vocab_size") != c["data"]["vocab_size"]:
        raise ValueError(
            f"model.vocab_size={c['model'].get('vocab_size')} disagrees with data.vocab_size="
            f"{c['data']['vocab_size']}; the tokenizer sets it: use model.vocab_size=${{data.vocab_size}}"
        )
    model_cfg = ModelConfig.from_dict(c["model"])
    train_cfg, optim_cfg = TrainConfig.from_dict(c["train"]), OptimConfig.from_dict(c["optim"])
    plan_steps(train_cfg, model_cfg.seq_len, 1)
    return c, model_cfg, train_cfg, optim_cfg


def setup_run(cfg: DictConfig, out_dir: Path) -> RunSetup | dict:
    """Validate a run and build everything it trains with; nothing is written yet. A run already finished with this
    config returns its record (marked skipped); one of another config in out_dir is a ValueError. Packed training
    (scaling.packed) sets up each of its runs with this too."""
    entered = time.perf_counter()
    c, model_cfg, train_cfg, optim_cfg = check_config(cfg)
    chash = config_hash(c)
    previous = read_result(out_dir)
    held = previous.get("config_hash") if previous is not None else _interrupted_hash(out_dir)
    if held is not None and held != chash:
        raise ValueError(
            f"{out_dir} already holds a run with another config (hash {held} != {chash}); "
            f"give this run another run.id / output dir instead of mixing them"
        )
    if previous is not None and previous.get("status") in FINISHED:
        log.info("skip %s: already %s (val_loss %s)", out_dir, previous["status"], previous.get("val_loss"))
        return previous | {"skipped": True}

    dist_env = init_distributed(resolve_device(train_cfg.device, Dist()).type)
    device = resolve_device(train_cfg.device, dist_env)
    amp = resolve_amp(train_cfg.dtype, device)
    steps, batch, accum = plan_steps(train_cfg, model_cfg.seq_len, dist_env.world_size)
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)

    # The tokenizer cache is built once (by rank 0) and read by the others.
    if dist_env.is_main:
        data = prepare_data(c["data"])
    barrier(dist_env)
    if not dist_env.is_main:
        data = prepare_data(c["data"])

    flops = count_flops(model_cfg)
    parallel = choose_mode(train_cfg.parallel, dist_env.world_size, int(flops.params), device)
    check_resumable(out_dir, chash, parallel)
    D = steps * batch
    epochs = D / data.train_tokens_count
    if epochs > 1 and dist_env.is_main:
        warnings.warn(
            f"this run repeats its training data: {epochs:.2f} epochs over {data.train_tokens_count:,} "
            f"tokens of {data.dataset_fingerprint}",
            stacklevel=1,
        )

    # Everything above is validation: the run directory is written to only after this returns.
    base = {
        "schema_version": SCHEMA_VERSION,
        "run_id": c["run"]["id"] or out_dir.name,
        "status": "running",
        "error": None,
        "sweep": c["run"]["sweep"],
        "budget": c["run"]["budget"],
        "model": {
            k: getattr(model_cfg, k)
            for k in ("n_layer", "d_model", "n_head", "n_kv_head", "ffn_hidden", "vocab_size", "seq_len")
        },
        **{k: v for k, v in flops.as_dict().items() if k in ("N1", "N2", "params", "M", "M_formula", "M_6N1", "M_6N2")},
        "D": D,
        "C": flops.M * D,
        "lr": float(c["optim"]["lr"]),
        "batch_size": batch,
        "seq_len": model_cfg.seq_len,
        "steps": steps,
        "epochs": epochs,
        "dataset": data.dataset_fingerprint,
        "tokenizer": data.tokenizer_fingerprint,
        "seed": c["seed"],
        "git_sha": git_sha(),
        "torch": torch.__version__,
        "device": device_name(device),
        "world_size": dist_env.world_size,
        "config_hash": chash,
    }
    return RunSetup(
        resolved=c,
        model_cfg=model_cfg,
        train=train_cfg,
        optim=optim_cfg,
        seed=c["seed"],
        data=data,
        record=base,
        steps=steps,
        batch_size=batch,
        accum=accum,
        run_dir=out_dir,
        dist_env=dist_env,
        device=device,
        amp=amp,
        parallel=parallel,
        config_hash=chash,
        entered=entered,
    )


def train_run(cfg: DictConfig, out_dir: Path) -> dict:
    """Train (or resume, or skip) the run described by cfg in out_dir; returns its result record."""
    run = setup_run(cfg, out_dir)
    if isinstance(run, dict):  # already finished with this config
        return run
    dist_env, base, chash, started = run.dist_env, run.record, run.config_hash, time.time()
    owner, locked = None, None
    if dist_env.is_main:
        try:
            owner = acquire(out_dir)  # one owner per run dir (scaling.lock): RunLocked if taken
        except RunLocked as e:
            locked = e
    if any_across(locked is not None, dist_env, run.device):  # every rank stops, not only the one that holds the lock
        raise locked or RunLocked(f"{out_dir} is being trained by another process (found by rank 0)")
    try:
        done = read_result(out_dir)  # another owner may have finished it since we looked
        if done is not None and done.get("status") in FINISHED and done.get("config_hash") == chash:
            return done | {"skipped": True}
        result = _train(run)
    except Exception as e:
        if dist_env.is_main:
            try:  # where the disk still allows: a full or read-only disk must not hide the original error
                write_record(
                    out_dir,
                    base
                    | {"status": "failed", "error": f"{type(e).__name__}: {e}", "wall_time_s": time.time() - started},
                )
            except OSError as w:
                log.error("could not record the failure in %s: %s", out_dir / "result.json", w)
        raise
    finally:
        if owner is not None:
            release(out_dir, owner)
    return result


def _train(run: RunSetup) -> dict:
    started = time.time()
    dist_env, device, amp, out_dir = run.dist_env, run.device, run.amp, run.run_dir
    if dist_env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(out_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(run.resolved)))
    torch.manual_seed(run.seed)
    model = LLaMA(run.model_cfg).to(device)
    if run.train.activation_checkpointing:
        checkpoint_blocks(model)
    if run.train.compile:
        compile_blocks(model)
    if run.parallel == "fsdp":
        shard(model, amp)  # before the optimizer: it must hold the sharded parameters
    optim = run.optim
    optimizer = build_optimizer(model, optim.lr, optim.betas, optim.eps, optim.weight_decay, device)
    spec = loop_spec(run)
    if run.parallel == "fsdp":
        meta = load_sharded(out_dir, model, optimizer, run.config_hash)
        state = loop_state_from(meta) if meta else LoopState()
    else:
        ckpt = load_checkpoint(out_dir, run.config_hash)
        state = restore_state(model, optimizer, ckpt) if ckpt else LoopState()
    earlier_s = state.wall_time_s  # the segments before this one (a resumed run's wall time counts them all)
    if dist_env.is_main:
        truncate_metrics(out_dir / "metrics.jsonl", state.step)
        if state.step:
            log.info(
                "%s: resuming from step %d of %d (%s checkpoint)",
                out_dir.name,
                state.step,
                run.steps,
                "sharded" if run.parallel == "fsdp" else "single-file",
            )
    wrapped = wrap_ddp(model, device) if run.parallel == "ddp" else model

    def save(loop_state: LoopState) -> None:
        loop_state.wall_time_s = earlier_s + time.time() - started
        if run.parallel == "fsdp":  # collective: every rank writes its shards
            save_sharded(out_dir, model, optimizer, loop_meta(spec, loop_state), dist_env)
        elif dist_env.is_main:
            save_checkpoint(out_dir, checkpoint_state(model, optimizer, spec, loop_state))

    seq_len = run.model_cfg.seq_len
    micro_seqs = run.batch_size // (run.accum * dist_env.world_size) // seq_len

    def micro_batch(step: int, micro: int):
        return run.data.train_batch(
            step=step,
            micro=micro,
            accum=run.accum,
            micro_seqs=micro_seqs,
            seq_len=seq_len,
            seed=run.seed,
            rank=dist_env.rank,
            world_size=dist_env.world_size,
        )

    # Fixed, evenly spaced validation windows; ValSet knows their exact byte count for bits per byte.
    val_set = run.data.val_set(seq_len=seq_len, eval_tokens=run.train.eval_tokens, batch_seqs=micro_seqs)

    def val_batches():
        return val_set.batches(rank=dist_env.rank, world_size=dist_env.world_size)

    step = TrainStep(
        wrapped,
        optimizer,
        device=device,
        amp=amp,
        grad_clip=float(optim.grad_clip),
        grad_sync=grad_sync(wrapped, run.parallel),
    )
    trackers = open_trackers(run.train.loggers, out_dir, run.record, dist_env.is_main)  # rank 0; [] by default
    ctx = RunContext(
        model=model,
        step=step,
        spec=spec,
        micro_batch=micro_batch,
        val_batches=val_batches,
        save_checkpoint=save,
        run_dir=out_dir,
        dist_env=dist_env,
        device=device,
        amp=amp,
        progress=run.train.progress,
        trackers=trackers,
    )
    startup_s = time.perf_counter() - run.entered  # data cache, model build, checkpoint: all before step 1
    state = run_loop(ctx, state)
    val_loss = val_tokens = None
    if state.status == "completed":
        val_loss, val_tokens = evaluate(model, val_batches(), device, amp, dist_env)
        save(state)
    result = result_record(run, state, val_loss, val_tokens, val_set.bpb, earlier_s + time.time() - started, startup_s)
    if run.parallel != "single":
        result["parallel"] = run.parallel
    trackers.close(result)
    if dist_env.is_main:
        write_record(out_dir, result)
        log.info(
            "%s: %s, val_loss %s nats/token, %s bits/byte",
            result["run_id"],
            result["status"],
            _fmt(result["val_loss"]),
            _fmt(result["val_bpb"]),
        )
    return result


def loop_spec(run: RunSetup) -> LoopSpec:
    """The loop's plain values for a run (shared with scaling.packed)."""
    optim = run.optim
    return LoopSpec(
        steps=run.steps,
        batch_size=run.batch_size,
        accum=run.accum,
        peak_lr=float(optim.lr),
        schedule=optim.schedule,
        warmup=warmup_steps(run.steps, optim.warmup_frac, optim.max_warmup_steps),
        min_lr_frac=optim.min_lr_frac,
        diverge_factor=float(run.train.diverge_factor),
        log_every=run.train.log_every,
        eval_every=run.train.eval_every,
        ckpt_every_s=float(run.train.ckpt_every_s),
        config_hash=run.config_hash,
    )


def result_record(
    run: RunSetup,
    state: LoopState,
    val_loss: float | None,
    val_tokens: int | None,
    bpb: Callable[[float], float],
    wall_time_s: float,
    startup_s: float,
) -> dict:
    """result.json of a finished (completed or diverged) run: the record so far plus what training measured.
    Shared by single and packed runs (scaling.packed), so that analysis cannot tell them apart."""
    batch, base = run.batch_size, run.record
    result = base | {
        "status": state.status,
        "error": state.reason,
        "D": state.step * batch,
        "C": base["M"] * state.step * batch,
        "D_planned": base["D"],
        "val_loss": val_loss if val_loss is None or math.isfinite(val_loss) else None,
        "val_bpb": bpb(val_loss) if val_loss is not None else None,
        "val_tokens": val_tokens,
        "train_loss": state.loss_ema,
        "initial_loss": state.initial_loss,
        "tokens_per_s": state.step * batch / state.train_time_s if state.train_time_s else None,
        "wall_time_s": wall_time_s,
        "startup_s": startup_s,
    }
    if state.status == "diverged":
        result["steps_done"] = state.step
        result["diverged_at_step"] = state.diverged_at_step
    return result


def _interrupted_hash(out_dir: Path) -> str | None:
    """Config hash of an unfinished run in out_dir (its config.yaml), None when there is none."""
    try:
        stored = OmegaConf.to_container(OmegaConf.load(out_dir / "config.yaml"), resolve=True)
        return config_hash(stored) if isinstance(stored, dict) else None
    except (OSError, KeyError, TypeError, ValueError):
        return None


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


PROG = "scaling.train"


@hydra.main(config_path=HYDRA_CONFIG_PATH, config_name="run", version_base=None)
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        result = train_run(cfg, out_dir)
    except ValueError as e:  # bad input: one line, and no half-made run dir left behind
        _remove_if_empty(out_dir)
        fail(PROG, e)
    except RunLocked as e:  # another live process owns this run: leave it alone (not a failure of this one)
        print(f"skipped: {e}")
        return
    except OSError as e:  # a full or read-only disk: one line; the failure is in result.json where it could be
        fail(PROG, f"run failed writing to {out_dir}: {e}", code=EXIT_FAILED)
    print(
        f"{result['status']}: val_loss={_fmt(result['val_loss'])} val_bpb={_fmt(result['val_bpb'])} "
        f"D={result['D']:,} C={result['C']:.3g} -> {out_dir}"
    )


def _remove_if_empty(out_dir: Path) -> None:
    """Remove a run dir that holds nothing but Hydra's own bookkeeping (created before validation could run), and
    the parents Hydra made for it (runs/train/) when they are left empty: bad input leaves nothing behind."""
    if out_dir.exists() and all(p.name == ".hydra" or p.suffix == ".log" for p in out_dir.iterdir()):
        shutil.rmtree(out_dir, ignore_errors=True)
        cwd = Path.cwd().resolve()
        for parent in out_dir.resolve().parents:
            if parent == cwd or cwd not in parent.parents or any(parent.iterdir()):
                break
            parent.rmdir()


def cli() -> None:
    """`scaling-train` and `python -m scaling.train`: a Hydra error (unknown key, bad override) is one line, exit 2."""
    run_hydra(PROG, main)


if __name__ == "__main__":
    cli()
