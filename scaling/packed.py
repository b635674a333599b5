"""Packed training: K runs of one shape, one data stream and one step count trained together as one stacked model.

In a batch x learning-rate grid the runs that share a batch size train the same model on the same batches for the
same number of steps; only optimizer scalars differ. Here they become one model whose every weight has a leading
run dimension K: each linear layer is one batched matmul (`bmm`) over the K runs, attention runs once over K*B
sequences, the embedding gathers from K tables at once, and the cross-entropy gives one mean loss per run. One
optimizer step updates all K runs with AdamW on a flat (K, P) buffer, with per-run learning rate (the run's own
schedule, `scaling.schedule.lr_at`), weight decay and gradient clipping (each run is clipped by its own norm).
The runs never mix: every op is independent along K, so a run that diverges (NaN, exploding loss) poisons only its
own row. It is recorded `diverged` with the same window semantics as a single run (scaling.trainer: losses are read
every `train.log_every` steps and the record names the first bad step), then leaves the pack; the others go on.

Why an explicit stacked model and not `torch.func.vmap(functional_call(LLaMA))`: vmap has no batching rule for the
CPU flash-attention kernel and falls back to a per-sample loop; measured at the CPU demo's stage-1 shape (2 layers,
d 16, K = 5, 4 x 64 tokens, 1 thread) it was 1.07x the sequential runs, and 0.59x at 64 x 64 tokens. The stacked
model calls the same functions as `model.llama` (RMSNorm via `F.rms_norm`, `apply_rope`, SDPA with GQA, SwiGLU).

Same records: every run keeps its own run directory with exactly what `scaling.train` writes there (config.yaml,
metrics.jsonl, ckpt.pt in the single-run format, result.json from `scaling.train.result_record`) plus
`packed_with` (the other runs of its pack). A packed run's checkpoint resumes as a single run and vice versa; a run
finished either way is skipped. Evaluation loads the run's row into a plain LLaMA and calls the trainer's own
`evaluate`, so validation numbers come from the same code as for single runs.

Same numbers: a packed run's loss curve equals the same run trained alone up to fp32 rounding (bmm vs mm, a
separate norm weight multiply, the AdamW formula as tensor ops instead of the fused kernel): per-step differences
are ~1e-7 relative and grow slowly over training; tests/test_packed.py bounds them (see PACK_RTOL there).
"""

from __future__ import annotations

import logging
import math
import statistics
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from model import LLaMA, ModelConfig
from model.llama import apply_rope
from scaling.checkpoint import load_checkpoint, save_checkpoint, truncate_metrics
from scaling.distributed import Dist
from scaling.lock import RunLocked, acquire, release
from scaling.record import FINISHED, read_result, write_atomic, write_record
from scaling.step import Batch, StepOutput, TrainStep, autocast_ctx, build_optimizer
from scaling.trackers import open_trackers
from scaling.train import RunSetup, loop_spec, result_record, setup_run
from scaling.trainer import (
    LogWindow,
    LoopSpec,
    LoopState,
    RunContext,
    checkpoint_state,
    evaluate,
    read_window,
    restore_state,
    write_row,
)

log = logging.getLogger(__name__)

# Config keys that may differ between the runs of one pack (optimizer scalars and the run's identity); everything
# else (model, data, seed, train.*, the other optim.* keys) must be equal.
PER_RUN_KEYS = {
    ("optim", "lr"),
    ("optim", "weight_decay"),
    ("optim", "grad_clip"),
    ("run", "id"),
    ("run", "sweep"),
    ("run", "budget"),
}


def pack_key(resolved: dict) -> str:
    """What runs must share to be packed: the resolved config without its per-run keys (a canonical string)."""
    shared = {
        group: (
            {k: v for k, v in values.items() if (group, k) not in PER_RUN_KEYS} if isinstance(values, dict) else values
        )
        for group, values in resolved.items()
        if group != "pack"
    }
    return repr(sorted(shared.items(), key=lambda kv: kv[0]))


# ---- the stacked model ----


class PackedParams:
    """K runs' parameters in one flat (K, P) buffer; each named parameter is a (K, *shape) view of its columns.

    Matrices come first so that weight decay (matrices only, as `build_optimizer`) is the column range
    [0, n_decay). The views are leaves of autograd; the optimizer updates `flat` in place.
    """

    def __init__(self, template: nn.Module, rows: Sequence[dict[str, torch.Tensor]], device: torch.device):
        named = list(template.named_parameters())  # tied weights appear once, as in the optimizer
        named = [(n, p) for n, p in named if p.dim() >= 2] + [(n, p) for n, p in named if p.dim() < 2]
        self.names = [n for n, _ in named]
        self.shapes = {n: tuple(p.shape) for n, p in named}
        self.offsets: dict[str, tuple[int, int]] = {}
        off = 0
        for n, p in named:
            self.offsets[n] = (off, off + p.numel())
            off += p.numel()
        self.n_decay = sum(p.numel() for _, p in named if p.dim() >= 2)
        self.flat = torch.empty(len(rows), off, device=device)
        for k, row in enumerate(rows):
            for n in self.names:
                a, b = self.offsets[n]
                self.flat[k, a:b] = row[n].reshape(-1).to(device)
        self._make_views()

    @property
    def K(self) -> int:
        return self.flat.shape[0]

    def _make_views(self) -> None:
        K = self.K
        self.views = {
            n: self.flat[:, a:b].view(K, *self.shapes[n]).detach().requires_grad_()
            for n, (a, b) in self.offsets.items()
        }

    def row(self, k: int) -> dict[str, torch.Tensor]:
        return {n: self.flat[k, a:b].view(self.shapes[n]) for n, (a, b) in self.offsets.items()}

    def grads(self) -> torch.Tensor:
        """The gradient as a (K, P) tensor (one copy), and the views' grads cleared."""
        K = self.K
        parts = []
        for n in self.names:
            v = self.views[n]
            parts.append(
                v.grad.reshape(K, -1) if v.grad is not None else torch.zeros(K, v[0].numel(), device=self.flat.device)
            )
            v.grad = None
        return torch.cat(parts, dim=1)

    def keep(self, rows: list[int]) -> None:
        """Drop every run not in rows (a diverged run leaving the pack)."""
        self.flat = self.flat[rows].contiguous()
        self._make_views()


def rope_of(model: LLaMA) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's RoPE tables (cos, sin), shared by the K runs of a pack."""
    return cast(torch.Tensor, model.rope_cos), cast(torch.Tensor, model.rope_sin)


def _lin(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """h (K, N, in) @ w (K, out, in)^T -> (K, N, out): nn.Linear for K runs at once."""
    return torch.bmm(h, w.transpose(1, 2))


def _norm(h: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of h (K, N, C) with per-run weights w (K, C)."""
    return F.rms_norm(h, (h.shape[-1],), None, eps) * w[:, None, :]


def packed_losses(
    p: dict[str, torch.Tensor], cfg: ModelConfig, cos: torch.Tensor, sin: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy (nats/token) of each of the K runs on the same batch x, y (B, T) -> (K,).
    The forward of model.llama.LLaMA, with a leading run dimension on every weight."""
    B, T = x.shape
    emb = p["embed_tokens.weight"]
    K, V, C = emb.shape
    H, KV, Dh = cfg.n_head, int(cfg.n_kv_head or cfg.n_head), cfg.head_dim
    # Run k's tokens index rows k*V.. of the K stacked tables: one gather for all runs.
    idx = x.reshape(1, B * T) + torch.arange(K, device=x.device).view(K, 1) * V
    h = F.embedding(idx, emb.reshape(K * V, C))  # (K, B*T, C)
    dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else h.dtype
    cos, sin = cos[:T].to(dtype), sin[:T].to(dtype)
    for i in range(cfg.n_layer):
        w = {n.split(".", 2)[2]: t for n, t in p.items() if n.startswith(f"layers.{i}.")}
        a = _norm(h, w["input_layernorm.weight"], cfg.norm_eps)
        q = _lin(a, w["self_attn.q_proj.weight"]).view(K * B, T, H, Dh).transpose(1, 2)
        k = _lin(a, w["self_attn.k_proj.weight"]).view(K * B, T, KV, Dh).transpose(1, 2)
        v = _lin(a, w["self_attn.v_proj.weight"]).view(K * B, T, KV, Dh).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=KV != H)  # (K*B, H, T, Dh)
        h = h + _lin(o.transpose(1, 2).reshape(K, B * T, H * Dh), w["self_attn.o_proj.weight"])
        a = _norm(h, w["post_attention_layernorm.weight"], cfg.norm_eps)
        gated = F.silu(_lin(a, w["mlp.gate_proj.weight"])) * _lin(a, w["mlp.up_proj.weight"])
        h = h + _lin(gated, w["mlp.down_proj.weight"])
    head = p.get("lm_head.weight", emb)  # tied embeddings share the table
    return HeadCrossEntropy.apply(_norm(h, p["norm.weight"], cfg.norm_eps), head, y.reshape(B * T))


class HeadCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of each run's LM head: h (K, N, C), head (K, V, C), targets (N,) -> (K,).

    One run at a time, with the gradient computed in the forward pass (softmax - one-hot, then the two matmuls):
    the K runs' logits (K x N x V floats: megabytes) never exist at once, so each run's stay in cache, and the
    softmax is computed once instead of in log_softmax's forward and again in its backward. Measured at the CPU
    demo's shapes this is most of the packed step's gain over the plain cross-entropy on stacked logits, which
    ran slower per token than the single runs' on a loaded machine (cache misses). Training only: the forward
    always pays for the gradient.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, head: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        K, N, _ = h.shape
        losses = torch.empty(K, dtype=torch.float32, device=h.device)
        grad_h, grad_head = torch.empty_like(h), torch.empty(head.shape, dtype=head.dtype, device=head.device)
        rows = torch.arange(N, device=h.device)
        for k in range(K):
            logp = torch.log_softmax((h[k] @ head[k].t()).float(), dim=1)  # (N, V), as F.cross_entropy
            losses[k] = -logp[rows, y].mean()
            probs = logp.exp_()  # softmax, in place
            probs[rows, y] -= 1.0
            probs.div_(N)  # d mean(loss) / d logits
            probs = probs.to(h.dtype)
            torch.mm(probs, head[k], out=grad_h[k])
            torch.mm(probs.t(), h[k], out=grad_head[k])
        ctx.save_for_backward(grad_h, grad_head)
        return losses

    @staticmethod
    def backward(ctx, grad_losses: torch.Tensor):  # type: ignore[override]
        grad_h, grad_head = ctx.saved_tensors
        g = grad_losses.to(grad_h.dtype).view(-1, 1, 1)
        return grad_h * g, grad_head * g, None


class PackedAdamW:
    """AdamW over the flat (K, P) buffer, one learning rate / weight decay per run (PyTorch's AdamW formula:
    decoupled decay p *= 1 - lr*wd, bias-corrected moments, eps outside the square root)."""

    def __init__(self, K: int, P: int, n_decay: int, betas: tuple[float, float], eps: float, device: torch.device):
        self.m = torch.zeros(K, P, device=device)
        self.v = torch.zeros(K, P, device=device)
        self.steps = 0
        self.betas, self.eps, self.n_decay = betas, eps, n_decay

    @torch.no_grad()
    def step(self, flat: torch.Tensor, grad: torch.Tensor, lrs: Sequence[float], wds: Sequence[float]) -> None:
        self.steps += 1
        b1, b2 = self.betas
        dev = flat.device
        decay = torch.tensor([1 - lr * wd for lr, wd in zip(lrs, wds)], device=dev).view(-1, 1)
        flat[:, : self.n_decay].mul_(decay)
        self.m.lerp_(grad, 1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        bc1, bc2_sqrt = 1 - b1**self.steps, math.sqrt(1 - b2**self.steps)
        step_size = torch.tensor([-lr / bc1 for lr in lrs], device=dev).view(-1, 1)
        denom = (self.v.sqrt() / bc2_sqrt).add_(self.eps)
        flat.addcmul_(self.m / denom, step_size)

    def keep(self, rows: list[int]) -> None:
        self.m, self.v = self.m[rows].contiguous(), self.v[rows].contiguous()


def clip_per_run(grad: torch.Tensor, max_norms: torch.Tensor) -> torch.Tensor:
    """Clip each run's gradient (a row of grad) to its own max norm, as clip_grad_norm_; returns the norms."""
    norms = torch.linalg.vector_norm(grad, dim=1)
    grad.mul_((max_norms / (norms + 1e-6)).clamp(max=1.0).view(-1, 1))
    return norms


class PackedStep:
    """`step(micro_batches, lrs)`: one optimizer step of K runs on the same micro-batches.
    Returns (losses (K, accum), grad norms (K,)) on the device, like scaling.step.TrainStep per run."""

    def __init__(
        self,
        params: PackedParams,
        adam: PackedAdamW,
        cfg: ModelConfig,
        rope: tuple[torch.Tensor, torch.Tensor],
        wds: list[float],
        clips: list[float],
        device: torch.device,
        amp: torch.dtype | None,
        compile: bool = False,
    ):
        self.params, self.adam, self.cfg, self.rope = params, adam, cfg, rope
        self.wds, self.clips, self.device, self.amp = wds, clips, device, amp
        self.loss_fn = torch.compile(packed_losses, dynamic=False) if compile else packed_losses

    def keep(self, rows: list[int]) -> None:
        self.params.keep(rows)
        self.adam.keep(rows)
        self.wds = [self.wds[i] for i in rows]
        self.clips = [self.clips[i] for i in rows]

    def __call__(self, micro_batches: Sequence[Batch], lrs: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
        accum, losses = len(micro_batches), []
        for x, y in micro_batches:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with autocast_ctx(self.device, self.amp):
                loss = self.loss_fn(self.params.views, self.cfg, *self.rope, x, y)  # (K,)
                # Summing the runs' losses leaves each run's gradient its own: no weight is shared.
                (loss.sum() / accum).backward()
            losses.append(loss.detach().float())
        grad = self.params.grads()
        norms = clip_per_run(grad, torch.tensor(self.clips, device=self.device))
        self.adam.step(self.params.flat, grad, lrs, self.wds)
        return torch.stack(losses, dim=1), norms.float()


# ---- the runs of a pack ----


@dataclass
class Member:
    run: RunSetup
    spec: LoopSpec
    state: LoopState
    owner: dict | None
    started: float  # time.time() when the pack took the run
    startup_s: float = 0.0
    earlier_s: float = 0.0  # wall time of the run's segments before this one (from its checkpoint)
    metrics: IO[str] | None = None
    window: LogWindow = field(default_factory=LogWindow)
    trackers: Any = None  # scaling.trackers.Trackers: each of this run's metrics rows is also sent there

    @property
    def run_id(self) -> str:
        return str(self.run.record["run_id"])


def check_packable(runs: Sequence[RunSetup]) -> None:
    """One-line ValueError unless the runs share everything but their per-run keys (and run single-process)."""
    first = runs[0]
    for r in runs[1:]:
        if pack_key(r.resolved) != pack_key(first.resolved):
            diff = sorted(
                f"{g}.{k}"
                for g in r.resolved
                if isinstance(r.resolved[g], dict)
                for k in r.resolved[g]
                if (g, k) not in PER_RUN_KEYS and r.resolved[g].get(k) != (first.resolved.get(g) or {}).get(k)
            )
            raise ValueError(
                f"runs {first.record['run_id']} and {r.record['run_id']} cannot be packed: they differ in "
                f"{', '.join(diff) or 'their config'}; a pack shares all but "
                f"{', '.join(sorted(f'{g}.{k}' for g, k in PER_RUN_KEYS))}"
            )
    if first.dist_env.enabled or first.parallel != "single":
        raise ValueError("packed training runs in one process on one device; launch packs without torchrun/DDP/FSDP")


def train_pack(cfgs: Sequence[DictConfig], run_dirs: Sequence[Path]) -> list[dict]:
    """Train (or resume, or skip) the runs described by cfgs in run_dirs as one pack; returns their records in order.

    Runs already finished are skipped (their record is returned, marked skipped); runs another live process owns
    are left alone (marked skipped, with the reason). Runs whose checkpoints stand at different steps (a kill
    between two runs' checkpoint writes) are trained as separate packs, one per step, in turn.
    """
    setups: dict[int, RunSetup] = {}
    results: dict[int, dict] = {}
    for i, (cfg, run_dir) in enumerate(zip(cfgs, run_dirs, strict=True)):
        s = setup_run(cfg, Path(run_dir))
        if isinstance(s, dict):
            results[i] = s
        else:
            setups[i] = s
    if setups:
        check_packable(list(setups.values()))
    ids = {i: str(s.record["run_id"]) for i, s in setups.items()}
    members: dict[int, Member] = {}
    try:
        for i, s in setups.items():
            try:
                owner = acquire(s.run_dir)
            except RunLocked as e:
                results[i] = {"run_id": ids[i], "skipped": True, "error": str(e)}
                continue
            done = read_result(s.run_dir)  # another owner may have finished it since we looked (as train_run)
            if done is not None and done.get("status") in FINISHED and done.get("config_hash") == s.config_hash:
                release(s.run_dir, owner)
                results[i] = done | {"skipped": True}
                continue
            members[i] = Member(run=s, spec=loop_spec(s), state=LoopState(), owner=owner, started=time.time())
        _train_members(members, results, ids)
    finally:
        for m in members.values():
            if m.owner is not None:
                release(m.run.run_dir, m.owner)
    return [results[i] for i in range(len(cfgs))]


def _train_members(members: dict[int, Member], results: dict[int, dict], ids: dict[int, str]) -> None:
    if not members:
        return
    first = next(iter(members.values())).run
    device = first.device
    torch.manual_seed(first.seed)
    template = LLaMA(first.model_cfg).to(device)  # the init every run of the pack starts from (same seed)
    init = {n: t.detach().clone() for n, t in template.state_dict().items()}
    optim = first.optim
    opt = build_optimizer(template, optim.lr, optim.betas, optim.eps, optim.weight_decay, device)
    rows, moments = {}, {}
    for i, m in members.items():
        ckpt = load_checkpoint(m.run.run_dir, m.run.config_hash)
        if ckpt:
            m.state = restore_state(template, opt, ckpt)
            rows[i] = {n: t.detach().clone() for n, t in template.named_parameters()}
            moments[i] = {
                n: (opt.state[p]["exp_avg"].clone(), opt.state[p]["exp_avg_sq"].clone())
                for n, p in template.named_parameters()
                if p in opt.state
            }
            opt.state.clear()
        else:
            rows[i], moments[i] = init, {}
    by_step: dict[int, list[int]] = {}
    for i, m in members.items():
        by_step.setdefault(m.state.step, []).append(i)
    for step in sorted(by_step):
        group = by_step[step]
        try:
            _train_group(
                {i: members[i] for i in group},
                [rows[i] for i in group],
                [moments[i] for i in group],
                template,
                opt,
                results,
                ids,
            )
        except Exception as e:
            for i in group:
                if i not in results:
                    m = members[i]
                    try:
                        write_record(
                            m.run.run_dir,
                            m.run.record
                            | {
                                "status": "failed",
                                "error": f"{type(e).__name__}: {e}",
                                "wall_time_s": time.time() - m.started,
                                "packed_with": _others(ids, group, i),
                            },
                        )
                    except OSError as w:
                        log.error("could not record the failure in %s: %s", m.run.run_dir / "result.json", w)
            raise


def _others(ids: dict[int, str], group: Sequence[int], i: int) -> list[str]:
    """`packed_with` of run i: the other runs it trained with (its group of the pack)."""
    return [ids[j] for j in group if j != i]


def _train_group(
    members: dict[int, Member],
    rows: list[dict],
    moments: list[dict],
    template: LLaMA,
    opt: torch.optim.Optimizer,
    results: dict[int, dict],
    ids: dict[int, str],
) -> None:
    """The packed loop for runs that all stand at the same step: the trainer's loop (scaling.trainer.run_loop) with
    a K-run step, per-run windows, records and checkpoints."""
    order = list(members)
    first = members[order[0]].run
    device, amp, cfg = first.device, first.amp, first.model_cfg
    params = PackedParams(template, rows, device)
    adam = PackedAdamW(len(order), params.flat.shape[1], params.n_decay, first.optim.betas, first.optim.eps, device)
    adam.steps = members[order[0]].state.step
    for k, mom in enumerate(moments):
        for n, (m1, m2) in mom.items():
            a, b = params.offsets[n]
            adam.m[k, a:b], adam.v[k, a:b] = m1.reshape(-1), m2.reshape(-1)
    step = PackedStep(
        params,
        adam,
        cfg,
        rope_of(template),
        [float(members[i].run.optim.weight_decay) for i in order],
        [float(members[i].run.optim.grad_clip) for i in order],
        device,
        amp,
        compile=first.train.compile,
    )
    seq_len, accum = cfg.seq_len, first.accum
    micro_seqs = first.batch_size // accum // seq_len
    val_set = first.data.val_set(seq_len=seq_len, eval_tokens=first.train.eval_tokens, batch_seqs=micro_seqs)
    single = Dist()
    for i in order:
        m = members[i]
        m.run.run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(m.run.run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(m.run.resolved)))
        truncate_metrics(m.run.run_dir / "metrics.jsonl", m.state.step)
        m.metrics = (m.run.run_dir / "metrics.jsonl").open("a")
        m.trackers = open_trackers(m.run.train.loggers, m.run.run_dir, m.run.record)  # [] by default
        m.startup_s = time.perf_counter() - m.run.entered
        m.earlier_s = m.state.wall_time_s  # a resumed run's wall time counts every segment, as a single run's
        m.started = time.time()  # this segment (a later step group waited for the earlier ones)

    def load_row(k: int, i: int) -> None:
        """Put run i (row k) into the template model and optimizer: the single-run format for eval/checkpoints."""
        row = params.row(k)
        with torch.no_grad():
            for n, p in template.named_parameters():
                p.copy_(row[n])
        opt.state.clear()
        if adam.steps:
            for n, p in template.named_parameters():
                a, b = params.offsets[n]
                opt.state[p] = {
                    "step": torch.tensor(float(adam.steps), dtype=torch.float32, device=device),
                    "exp_avg": adam.m[k, a:b].view_as(p).clone(),
                    "exp_avg_sq": adam.v[k, a:b].view_as(p).clone(),
                }
        for g in opt.param_groups:
            g["lr"] = members[i].spec.peak_lr
            g["weight_decay"] = float(members[i].run.optim.weight_decay) if g["weight_decay"] else 0.0

    def save(k: int, i: int) -> None:
        members[i].state.wall_time_s = members[i].earlier_s + time.time() - members[i].started
        load_row(k, i)
        save_checkpoint(members[i].run.run_dir, checkpoint_state(template, opt, members[i].spec, members[i].state))

    def finish(k: int, i: int) -> None:
        m = members[i]
        val_loss = val_tokens = None
        if m.state.status == "completed":
            load_row(k, i)
            val_loss, val_tokens = evaluate(template, val_set.batches(), device, amp, single)
            save(k, i)
        result = result_record(
            m.run, m.state, val_loss, val_tokens, val_set.bpb, m.earlier_s + time.time() - m.started, m.startup_s
        ) | {"packed_with": _others(ids, order, i)}
        write_record(m.run.run_dir, result)
        if m.trackers is not None:
            m.trackers.close(result)
        if m.metrics is not None:
            m.metrics.close()
        results[i] = result
        log.info("%s: %s (packed), val_loss %s", m.run_id, m.state.status, val_loss)

    spec0 = members[order[0]].spec
    ctxs = {
        i: cast(RunContext, types.SimpleNamespace(spec=members[i].spec, dist_env=single, device=device)) for i in order
    }
    last_ckpt, started = time.monotonic(), time.perf_counter()
    active = list(order)  # run indices, in row order
    try:
        while active:
            s = members[active[0]].state.step
            lrs = [members[i].spec.lr(s) for i in active]  # the runs share their schedule, not their peak lr
            batches = [
                first.data.train_batch(
                    step=s, micro=micro, accum=accum, micro_seqs=micro_seqs, seq_len=seq_len, seed=first.seed
                )
                for micro in range(accum)
            ]
            losses, norms = step(batches, lrs)
            for k, i in enumerate(active):
                m = members[i]
                m.state.step += 1
                m.window.steps.append(m.state.step)
                m.window.outputs.append(StepOutput(losses=losses[k], grad_norm=norms[k]))
            s += 1
            log_due = s % spec0.log_every == 0 or s == spec0.steps
            eval_due = bool(spec0.eval_every) and s % spec0.eval_every == 0 and s < spec0.steps
            if not (log_due or eval_due):
                continue
            elapsed = time.perf_counter() - started
            keep, gone = [], []
            for k, i in enumerate(active):
                m = members[i]
                last = read_window(ctxs[i], m.state, m.window)
                m.window = LogWindow()
                m.state.train_time_s += elapsed
                if m.state.status == "diverged":
                    gone.append((k, i))
                    continue
                keep.append(k)
                tok_s = m.state.step * m.spec.batch_size / max(m.state.train_time_s, 1e-9)
                row = None
                if log_due:
                    row = {
                        "step": s,
                        "tokens": s * m.spec.batch_size,
                        "loss": last[0],
                        "loss_ema": m.state.loss_ema,
                        "lr": lrs[k],
                        "grad_norm": last[1],
                        "tokens_per_s": tok_s,
                    }
                if eval_due:
                    load_row(k, i)
                    m.state.last_val_loss, _ = evaluate(template, val_set.batches(), device, amp, single)
                    row = (row or {"step": s, "tokens": s * m.spec.batch_size}) | {"val_loss": m.state.last_val_loss}
                if row is not None and m.metrics is not None:
                    write_row(m.metrics, row)
                    if m.trackers:
                        m.trackers.log(row)
            for k, i in gone:
                finish(k, i)
            if s == spec0.steps:
                for k in keep:
                    members[active[k]].state.status = "completed"
                    finish(k, active[k])
                break
            if gone:
                step.keep(keep)
                active = [active[k] for k in keep]
            if time.monotonic() - last_ckpt > spec0.ckpt_every_s:
                for k, i in enumerate(active):
                    save(k, i)
                last_ckpt = time.monotonic()
            started = time.perf_counter()
    finally:
        for i in order:
            m = members[i]
            if m.metrics is not None and not m.metrics.closed:
                m.metrics.close()


# ---- speed: what the benchmark and the sweep's `sweep.pack=auto` measure ----


def pack_contenders(
    cfg: ModelConfig, K: int, x: torch.Tensor, y: torch.Tensor, device: torch.device, amp: torch.dtype | None
) -> dict[str, Callable[[], None]]:
    """One optimizer step of K runs (same init, learning rates 1e-4..1e-4*K) two ways: `sequential`, the K
    single-run train steps (scaling.step.TrainStep) one after another, and `packed`, one PackedStep."""
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


def pack_job(cfg: DictConfig, sweep_dir: Path) -> list[dict]:
    """The sweep's task for a pack: cfg is the pack's job config with `pack.run_ids` and `pack.lrs` (one per run);
    each run is cfg with its own run.id and optim.lr, trained in sweep_dir/<run id>."""
    run_ids, lrs = list(cfg.pack.run_ids), [float(x) for x in cfg.pack.lrs]
    if len(run_ids) != len(lrs) or not run_ids:
        raise ValueError(f"pack.run_ids ({len(run_ids)}) and pack.lrs ({len(lrs)}) must be non-empty and of one length")
    base: dict[str, Any] = cast(dict, OmegaConf.to_container(cfg, resolve=False))
    base.pop("pack", None)
    cfgs = []
    for rid, lr in zip(run_ids, lrs, strict=True):
        c = OmegaConf.create(base)
        c.run.id, c.optim.lr = rid, lr
        cfgs.append(c)
    return train_pack(cfgs, [sweep_dir / rid for rid in run_ids])
