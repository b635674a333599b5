"""Time estimates for a plan: training FLOP/s measured on this device for the plan's smallest and largest shapes,
cached, log-interpolated in M. A plan with a shape too big to measure here (a GPU-scale plan dry-run on a laptop)
is estimated entirely from an assumed FLOP/s, and the table says so.

The cache holds speeds measured once, under whatever load the machine had then; a shared machine may be twice as
busy today. So a plan re-times one cached shape for a fraction of a second (the probe) and scales every cached speed
by the probe's ratio to its cached value: the estimate reflects today's load (sweep.throughput_recheck=false skips
it and trusts the cache as it is)."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from model import LLaMA, ModelConfig, count_flops
from model.shapes import Shape
from scaling.base.atomic import write_atomic
from scaling.run.distributed import Dist
from scaling.run.parallel import resolve_amp
from scaling.run.parallel import resolve_device as resolve_run_device
from scaling.run.step import TrainStep, build_optimizer


def resolve_device(name: str) -> torch.device:
    """train.device as a run resolves it, except that a plan made without the GPU it names is timed on the CPU."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        name = "cpu"
    return resolve_run_device(name, Dist())


def measure(
    cfg: ModelConfig,
    device: torch.device,
    seqs: int = 2,
    warmup_s: float = 0.5,
    timed_s: float = 0.3,
    amp: torch.dtype | None = None,
) -> float:
    """Training FLOP/s (forward, backward, AdamW) of this shape, after warming up for warmup_s (a fresh process pays
    seconds of one-off initialisation in its first steps), from the median step over >= 3 steps and >= timed_s."""
    torch.manual_seed(0)
    model = LLaMA(cfg).to(device)
    # The trainer's own step, optimizer and the runs' precision (train.dtype), so the estimate times their step.
    # lr 0: the same cost, and no drift into slow denormals.
    train_step = TrainStep(
        model,
        build_optimizer(model, 0.0, (0.9, 0.95), 1e-8, 0.1, device),
        device=device,
        amp=amp,
        grad_clip=1.0,
    )
    x = torch.randint(cfg.vocab_size, (seqs, cfg.seq_len), device=device)

    def step() -> None:
        train_step([(x, x)], 0.0)
        if device.type == "cuda":  # a timing needs the device finished (the trainer itself never waits per step)
            torch.cuda.synchronize(device)

    def run(min_s: float, min_steps: int) -> list[float]:
        times: list[float] = []
        t0 = time.perf_counter()
        while len(times) < min_steps or time.perf_counter() - t0 < min_s:
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        return times

    run(warmup_s, 2)
    step_s = statistics.median(run(timed_s, 3))  # the median shrugs off steps stalled by other processes
    return count_flops(cfg).train_flops_per_token * seqs * cfg.seq_len / step_s


# The probe: short, because every plan pays it; long enough for dozens of steps of a CPU demo's smallest shape.
PROBE_WARMUP_S = 0.1
PROBE_TIMED_S = 0.2

Measure = Callable[..., float]  # measure()'s signature: (cfg, device, *, warmup_s, timed_s, amp) -> FLOP/s


class Throughput:
    def __init__(
        self,
        shapes: list[Shape],
        device: torch.device,
        cache: Path,
        max_params: float,
        assumed: float,
        dtype: str = "auto",
        recheck: bool = True,
        measure: Measure = measure,
    ):
        self.device, self.assumed = device, float(assumed)
        self.amp = resolve_amp(dtype, device)  # the runs' precision (train.dtype), decided where the runs decide it
        self._measure = measure
        self.recheck_note: str | None = None  # what the probe found, for the plan's console output
        by_M = sorted(shapes, key=lambda s: s.M)
        ends = list({(s.n_layer, s.d_model): s for s in by_M[:1] + by_M[-1:]}.values())
        measurable = by_M[-1].flops.params <= max_params
        self.measured = self._speeds(ends, cache, recheck) if measurable else []

    def _key(self, s: Shape) -> str:
        c = s.cfg
        return (
            f"{self.device}|{self.amp or 'fp32'}|torch {torch.__version__}|threads {torch.get_num_threads()}|"
            f"L{c.n_layer} d{c.d_model} "
            f"h{c.n_head} kv{c.n_kv_head} ffn{c.ffn_hidden} V{c.vocab_size} T{c.seq_len}"
        )

    def _speeds(self, ends: list[Shape], cache: Path, recheck: bool) -> list[tuple[float, float]]:
        """(M, FLOP/s) of the ends: measured now where the cache lacks them, else cached and, with recheck, scaled
        by today's load (a speed measured now needs no scaling)."""
        try:
            table = json.loads(cache.read_text())
        except (OSError, ValueError):
            table = {}
        cached = [s for s in ends if self._key(s) in table]
        fresh = [s for s in ends if self._key(s) not in table]
        for s in fresh:
            table[self._key(s)] = self._measure(s.cfg, self.device, amp=self.amp)
        if fresh:
            write_atomic(cache, json.dumps(table, indent=1, sort_keys=True))
        load = self._probe(min(cached, key=lambda s: s.M), table) if recheck and cached else 1.0
        scale = {self._key(s): load for s in cached}
        return sorted((s.M, table[self._key(s)] * scale.get(self._key(s), 1.0)) for s in ends)

    def _probe(self, s: Shape, table: dict[str, float]) -> float:
        """Today's speed of one cached shape (the cheapest) over its cached speed; the probe's cost is in the note."""
        t0 = time.perf_counter()
        now = self._measure(s.cfg, self.device, warmup_s=PROBE_WARMUP_S, timed_s=PROBE_TIMED_S, amp=self.amp)
        cost = time.perf_counter() - t0
        ratio = now / table[self._key(s)]
        self.recheck_note = (
            f"throughput re-checked now: {ratio:.2f}x of the cached table ({cost:.2f} s probe of "
            f"L{s.n_layer} d{s.d_model}; every cached speed scaled by it; sweep.throughput_recheck=false to skip)"
        )
        return ratio

    def flops_per_s(self, s: Shape) -> tuple[float, bool]:
        """(FLOP/s, measured?) for a shape: measured ones interpolated in log M, the rest assumed."""
        if not self.measured:
            return self.assumed, False
        (m0, f0), (m1, f1) = self.measured[0], self.measured[-1]
        if m1 == m0 or s.M <= m0:
            return f0, True
        w = math.log(s.M / m0) / math.log(m1 / m0)
        return math.exp((1 - w) * math.log(f0) + w * math.log(f1)), True

    def seconds(self, s: Shape, D: int, eval_tokens: int = 0) -> tuple[float, bool]:
        """Training D tokens plus the final evaluation (a forward pass: ~1/3 of a training step's FLOPs)."""
        rate, measured = self.flops_per_s(s)
        return (D + eval_tokens / 3) * s.flops.train_flops_per_token / rate, measured
