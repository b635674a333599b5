"""A validated run: `check_config` resolves and checks a config once (typed values, one-line ValueErrors naming the
key), `setup_run` builds everything the run trains with (data, device, record so far) without writing anything.
Single, packed and branched runs all start here, and `result_record` ends them, so analysis cannot tell them apart."""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from model import ModelConfig, count_flops
from scaling.base.record import (
    FINISHED,
    SCHEMA_VERSION,
    config_hash,
    device_name,
    git_sha,
    read_config,
    read_result,
)
from scaling.data import prepare_data, resolve_vocab
from scaling.run.config import OptimConfig, TrainConfig
from scaling.run.distributed import Dist, barrier, init_distributed
from scaling.run.loop import LoopSpec, LoopState
from scaling.run.parallel import check_resumable, choose_mode, resolve_amp, resolve_device
from scaling.run.schedule import warmup_steps

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
    parallel: str  # single | ddp | fsdp (scaling.run.parallel.choose_mode)
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
    (scaling.run.pack) sets up each of its runs with this too."""
    entered = time.perf_counter()
    c, model_cfg, train_cfg, optim_cfg = check_config(cfg)
    chash = config_hash(c)
    finished = _finished_record(out_dir, chash)
    if finished is not None:
        return finished

    dist_env = init_distributed(resolve_device(train_cfg.device, Dist()).type)
    device = resolve_device(train_cfg.device, dist_env)
    amp = resolve_amp(train_cfg.dtype, device)
    steps, batch, accum = plan_steps(train_cfg, model_cfg.seq_len, dist_env.world_size)
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)

    data = _prepare_data(c["data"], dist_env)
    flops = count_flops(model_cfg)
    parallel = choose_mode(train_cfg.parallel, dist_env.world_size, int(flops.params), device)
    check_resumable(out_dir, chash, parallel)
    if dist_env.is_main:
        _warn_epochs(steps * batch, data)

    # Everything above is validation: the run directory is written to only after this returns.
    base = _record(c, out_dir, model_cfg, steps, batch, data, device, dist_env.world_size, chash)
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


def _finished_record(out_dir: Path, chash: str) -> dict | None:
    """The record of a run already finished with this config in out_dir (marked skipped), None when it still has to
    train; a run of another config there is a ValueError."""
    previous = read_result(out_dir)
    held = previous.get("config_hash") if previous is not None else interrupted_hash(out_dir)
    if held is not None and held != chash:
        raise ValueError(
            f"{out_dir} already holds a run with another config (hash {held} != {chash}); "
            f"give this run another run.id / output dir instead of mixing them"
        )
    if previous is not None and previous.get("status") in FINISHED:
        log.info("skip %s: already %s (val_loss %s)", out_dir, previous["status"], previous.get("val_loss"))
        return previous | {"skipped": True}
    return None


def _prepare_data(data_cfg: dict, dist_env: Dist) -> Any:
    """The prepared corpus; the tokenizer cache is built once (by rank 0) and read by the others."""
    if dist_env.is_main:
        data = prepare_data(data_cfg)
    barrier(dist_env)
    if not dist_env.is_main:
        data = prepare_data(data_cfg)
    return data


def _warn_epochs(D: int, data: Any) -> None:
    """A run that repeats its training data says so: its loss is no longer a fresh-data loss."""
    epochs = D / data.train_tokens_count
    if epochs > 1:
        warnings.warn(
            f"this run repeats its training data: {epochs:.2f} epochs over {data.train_tokens_count:,} "
            f"tokens of {data.dataset_fingerprint}",
            stacklevel=1,
        )


def _record(
    c: dict,
    out_dir: Path,
    model_cfg: ModelConfig,
    steps: int,
    batch: int,
    data: Any,
    device: torch.device,
    world_size: int,
    chash: str,
) -> dict:
    """result.json's fields known before training (scaling.base.record.RunRecord): identity, shape, M, D, C,
    optimizer, data and provenance."""
    flops, D = count_flops(model_cfg), steps * batch
    return {
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
        "epochs": D / data.train_tokens_count,
        "dataset": data.dataset_fingerprint,
        "tokenizer": data.tokenizer_fingerprint,
        "seed": c["seed"],
        "git_sha": git_sha(),
        "torch": torch.__version__,
        "device": device_name(device),
        "world_size": world_size,
        "config_hash": chash,
    }


def shared_key(resolved: dict, own: set[tuple[str, str]]) -> str:
    """What runs trained together (a pack, a trunk's branches) must share: the resolved config without the keys in
    `own` (each run's own) and without the job's pack/trunk groups, as a canonical string."""
    shared = {
        g: {k: v for k, v in vs.items() if (g, k) not in own} if isinstance(vs, dict) else vs
        for g, vs in resolved.items()
        if g not in ("pack", "trunk")
    }
    return repr(sorted(shared.items(), key=lambda kv: kv[0]))


def differing_keys(a: dict, b: dict, own: set[tuple[str, str]]) -> list[str]:
    """The `group.key`s, other than `own`, in which two resolved configs differ (for the one-line refusals)."""
    return sorted(
        f"{g}.{k}"
        for g in b
        if isinstance(b[g], dict)
        for k in b[g]
        if (g, k) not in own and b[g].get(k) != (a.get(g) or {}).get(k)
    )


def loop_spec(run: RunSetup) -> LoopSpec:
    """The loop's plain values for a run (shared with scaling.run.pack)."""
    optim = run.optim
    return LoopSpec(
        steps=run.steps,
        batch_size=run.batch_size,
        accum=run.accum,
        peak_lr=float(optim.lr),
        schedule=optim.schedule,
        warmup=optim.warmup_steps or warmup_steps(run.steps, optim.warmup_frac, optim.max_warmup_steps),
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
    Shared by single and packed runs (scaling.run.pack), so that analysis cannot tell them apart."""
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


def interrupted_hash(out_dir: Path) -> str | None:
    """Config hash of an unfinished run in out_dir (its config.yaml), None when there is none."""
    try:
        return config_hash(read_config(out_dir))
    except ValueError:
        return None
