"""Text from a run's checkpoint: load a run directory's model and tokenizer (data, never code) and continue a prompt
with the model's KV-cached `generate` (what `python -m scaling.sample` prints)."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from model import LLaMA, ModelConfig
from scaling.base.record import config_hash, read_config
from scaling.base.safe_read import read_capped
from scaling.run.checkpoint import CKPT_NAME, load_checkpoint
from scaling.run.dcp_read import UntrustedCheckpoint, checkpoint_dir, load_checked
from scaling.run.parallel import DCP_META, sharded_meta

PROG = "python -m scaling.sample"


@dataclass
class Sample:
    text: str  # prompt + continuation, decoded
    continuation: str
    tokens: list[int]  # the generated token ids only
    step: int  # optimizer step of the checkpoint that produced it
    steps: int | None  # planned steps of the run (None when unknown)
    status: str  # the run's status: completed / diverged / failed / unfinished


def load_run(run_dir: Path, device: str = "cpu") -> tuple[LLaMA, dict, dict]:
    """(model in eval mode, the run's resolved config, its checkpoint); ValueError naming what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir} is not a directory; pass a run directory (it holds config.yaml and ckpt.pt)")
    cfg = read_config(run_dir)
    sharded = not (run_dir / CKPT_NAME).is_file() and (run_dir / DCP_META).is_file()
    if not (run_dir / CKPT_NAME).is_file() and not sharded:
        raise ValueError(
            f"{run_dir} has no {CKPT_NAME} (nor a sharded {DCP_META}): the run has not checkpointed yet (a "
            f"checkpoint is written every train.ckpt_every_s seconds and at the end)"
        )
    try:
        model_cfg = ModelConfig.from_dict(cfg["model"])
    except Exception as e:  # noqa: BLE001 -- any unreadable config is the same bad input
        raise ValueError(f"{run_dir / 'config.yaml'} is not a readable run config ({type(e).__name__}: {e})") from None
    if sharded:
        model = LLaMA(model_cfg)
        meta = load_sharded_model(run_dir, model, config_hash(cfg))
        return model.to(device).eval(), cfg, meta
    with warnings.catch_warnings():  # load_checkpoint's warning speaks of resuming training: the error below says it
        warnings.simplefilter("ignore")
        ckpt = load_checkpoint(run_dir, config_hash(cfg))
    if ckpt is None or not isinstance(ckpt.get("model"), dict):
        raise ValueError(f"{run_dir / CKPT_NAME} is unreadable or belongs to another config than config.yaml")
    model = LLaMA(model_cfg)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), cfg, ckpt


def load_sharded_model(run_dir: Path, model: LLaMA, chash: str) -> dict:
    """The model weights of a sharded (FSDP) run's checkpoint, gathered whole into `model` in this one process
    (DCP reshards on load; no process group needed); returns the checkpoint's loop state (its step)."""
    meta = sharded_meta(run_dir, chash)
    if meta is None:
        raise ValueError(f"{run_dir / DCP_META} is unreadable or belongs to another config than config.yaml")
    try:
        ckpt_dir = checkpoint_dir(run_dir, meta.get("path"))
        state = {"model": model.state_dict()}
        with warnings.catch_warnings():  # DCP warns that no process group exists: one process is the intent here
            warnings.simplefilter("ignore")
            load_checked(state, ckpt_dir, run_dir)
    except UntrustedCheckpoint as e:
        raise ValueError(f"{run_dir}: sharded checkpoint refused ({e})") from None
    model.load_state_dict(state["model"])
    return meta


def sample(
    run_dir: Path,
    prompt: str,
    max_new_tokens: int = 64,
    temperature: float = 0.8,
    top_k: int | None = 50,
    seed: int = 0,
    device: str = "cpu",
) -> Sample:
    """Continue `prompt` with the run's model (the library form of the CLI)."""
    from scaling.data import prepare_data  # the tokenizer cache of the run's data config (built if missing)

    check_options(max_new_tokens, temperature, top_k, device)
    model, cfg, ckpt = load_run(run_dir, device)
    data = prepare_data(cfg["data"])
    # A pretrained tokenizer's vocabulary may be padded in the model (data.vocab_size above the tokenizer's size,
    # scaling.data.vocab), never the other way round.
    if data.vocab_size > model.cfg.vocab_size:
        raise ValueError(
            f"the tokenizer has {data.vocab_size} ids but the model only {model.cfg.vocab_size}: "
            f"the data cache does not match this run"
        )
    # Training documents start with BOS, so a prompt does too: the model continues it as the start of a document.
    ids = [data.bos_id, *data.encode(prompt)]
    gen = torch.Generator(device=device).manual_seed(seed)
    out = model.generate(
        torch.tensor([ids], device=device), max_new_tokens, temperature=temperature, top_k=top_k, generator=gen
    )[0].tolist()
    new = out[len(ids) :]
    status = run_status(Path(run_dir))
    return Sample(
        text=data.decode(out),
        continuation=data.decode(new),
        tokens=new,
        step=int(ckpt.get("step", 0)),
        steps=planned_steps(cfg),
        status=status,
    )


def check_options(max_new_tokens: int, temperature: float, top_k: int | None, device: str) -> None:
    """ValueError (one line) for options no run could sample with: checked before any run is loaded."""
    if max_new_tokens < 1 or not 0 <= temperature < math.inf or (top_k is not None and top_k < 1):
        raise ValueError(
            f"need --max-new-tokens >= 1, a finite --temperature >= 0 and --top-k >= 0 (0 = all); got "
            f"{max_new_tokens}, {temperature}, {top_k}"
        )
    _check_device(device)


def _check_device(device: str) -> None:
    """A device string torch knows and this machine has, else ValueError (never a traceback from torch)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"--device {device!r} is not a torch device ({e}); use cpu or cuda[:N]") from None
    kind = dev.type
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device!r}: this machine has no usable CUDA GPU; use --device cpu")
    if kind == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if kind not in ("cpu", "cuda") and not getattr(getattr(torch.backends, kind, None), "is_available", bool)():
        raise ValueError(f"--device {device!r} is not available on this machine; use cpu or cuda[:N]")


def best_per_budget(root: Path) -> list[tuple[float, Path, float]]:
    """(budget, run dir, val_loss) of the completed isoflop run with the lowest val_loss at each budget below root."""
    best: dict[float, tuple[Path, float]] = {}
    for f in sorted(Path(root).rglob("result.json")):
        try:
            rec = json.loads(read_capped(f))  # bounded, and a FIFO named result.json is skipped, not waited on
        except (OSError, ValueError):
            continue  # scaling.status names unreadable records; here they simply cannot be the best
        if not (isinstance(rec, dict) and rec.get("sweep") == "isoflop" and rec.get("status") == "completed"):
            continue
        budget, loss = rec.get("budget"), rec.get("val_loss")
        if isinstance(budget, (int, float)) and isinstance(loss, (int, float)):
            if budget not in best or loss < best[budget][1]:
                best[float(budget)] = (f.parent, float(loss))
    return [(b, d, loss) for b, (d, loss) in sorted(best.items())]


def run_status(run_dir: Path) -> str:
    try:
        return str(json.loads(read_capped(run_dir / "result.json")).get("status", "unfinished"))
    except (OSError, ValueError, AttributeError):
        return "unfinished"


def planned_steps(cfg: dict) -> int | None:
    try:
        return round(float(cfg["train"]["tokens"]) / int(cfg["train"]["batch_size"]))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
