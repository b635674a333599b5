"""Time estimates for a plan: training FLOP/s measured on this device for the plan's smallest and largest shapes,
cached, log-interpolated in M. A plan with a shape too big to measure here (a GPU-scale plan dry-run on a laptop)
is estimated entirely from an assumed FLOP/s, and the table says so.

A step costs a fixed part (optimizer, launch and Python overhead) plus a part per sequence, so small models run far
faster per token at large batches: each end shape is timed at 2 sequences and at SEQS_HI (when tokens allow), and a
run's estimate uses the step time a + b * sequences at its own batch size. Measured on the CPU demo, one batch for
every estimate overstated its IsoFLOP stage (batches of 23-59 sequences) 3.5x: 50.0 min planned, 14.2 min of runs.

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
SEQS_LO = 2  # measure()'s default batch
SEQS_HI = 16  # the larger batch an end shape is also timed at, as long as it stays within HI_TOKENS
HI_TOKENS = 8192  # tokens of the larger timing batch at most: never a memory risk for a shape measure() may time


def seqs_hi(seq_len: int) -> int:
    """The larger timing batch in sequences: SEQS_HI, fewer for long sequences; SEQS_LO when no larger one fits."""
    return max(SEQS_LO, min(SEQS_HI, HI_TOKENS // seq_len))


Measure = Callable[..., float]  # measure()'s signature: (cfg, device, *, warmup_s, timed_s, amp) -> FLOP/s


def read_table(cache: Path) -> dict:
    """The throughput cache's measurements; empty when the file is missing or not a table this module wrote."""
    try:
        table = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}


def cached(cache: Path, key: str, measure: Callable[[], float]) -> float:
    """A measurement kept in the throughput cache under `key`: measured (and added to the file) only when absent,
    so that a later plan on this machine decides from the same number (sweep.pack=auto's pack speed-ups: a ratio
    near its threshold would otherwise flip with the load of the moment, and a fresh study would not repeat)."""
    known = read_table(cache).get(key)
    if isinstance(known, (int, float)):
        return float(known)
    value = measure()
    table = read_table(cache)  # re-read: what others wrote meanwhile is kept
    table[key] = value
    write_atomic(cache, json.dumps(table, indent=1, sort_keys=True))
    return value


def shape_key(device: torch.device, amp: torch.dtype | None, s: Shape) -> str:
    """The cache key of a shape's measurements on this device, precision, torch and thread count."""
    c = s.cfg
    return (
        f"{device}|{amp or 'fp32'}|torch {torch.__version__}|threads {torch.get_num_threads()}|"
        f"L{c.n_layer} d{c.d_model} "
        f"h{c.n_head} kv{c.n_kv_head} ffn{c.ffn_hidden} V{c.vocab_size} T{c.seq_len}"
    )


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
        self.hi = seqs_hi(ends[0].cfg.seq_len)
        # (M, FLOP/s at SEQS_LO sequences, FLOP/s at self.hi sequences) of the end shapes
        self.speeds = self._speeds(ends, cache, recheck) if measurable else []
        self.measured = [(m, f_lo) for m, f_lo, _ in self.speeds]

    def _key(self, s: Shape, seqs: int = SEQS_LO) -> str:
        return shape_key(self.device, self.amp, s) + (f" seqs {seqs}" if seqs != SEQS_LO else "")

    def _speeds(self, ends: list[Shape], cache: Path, recheck: bool) -> list[tuple[float, float, float]]:
        """(M, FLOP/s at SEQS_LO, FLOP/s at self.hi sequences) of the ends: measured now where the cache lacks them,
        else cached and, with recheck, scaled by today's load (a speed measured now needs no scaling)."""
        table = read_table(cache)
        wanted = [(s, n) for s in ends for n in dict.fromkeys((SEQS_LO, self.hi))]
        cached = [(s, n) for s, n in wanted if self._key(s, n) in table]
        fresh = [(s, n) for s, n in wanted if self._key(s, n) not in table]
        for s, n in fresh:
            kw: dict = {"amp": self.amp} | ({"seqs": n} if n != SEQS_LO else {})
            table[self._key(s, n)] = self._measure(s.cfg, self.device, **kw)
        if fresh:
            write_atomic(cache, json.dumps(table, indent=1, sort_keys=True))
        lows = [s for s, n in cached if n == SEQS_LO]
        load = self._probe(min(lows, key=lambda s: s.M), table) if recheck and lows else 1.0
        scale = {self._key(s, n): load for s, n in cached}

        def speed(s: Shape, n: int) -> float:
            return table[self._key(s, n)] * scale.get(self._key(s, n), 1.0)

        return sorted((s.M, speed(s, SEQS_LO), speed(s, self.hi)) for s in ends)

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

    def _at_batch(self, f_lo: float, f_hi: float, seqs: float) -> float:
        """FLOP/s at `seqs` sequences per step, from the speeds at SEQS_LO and self.hi: the step time a + b*seqs
        through both (a >= 0: a faster small batch is noise, read as no fixed part), held at self.hi's beyond it."""
        if self.hi == SEQS_LO or seqs <= 0:
            return f_lo
        seqs = min(seqs, self.hi)  # never beyond the larger timed batch: caches and memory bandwidth stop the gain
        t_lo, t_hi = SEQS_LO / f_lo, self.hi / f_hi  # seconds per step, in units of one sequence's FLOPs
        b = (t_hi - t_lo) / (self.hi - SEQS_LO)
        a = t_lo - b * SEQS_LO
        if a < 0 or b <= 0:
            a, b = 0.0, t_hi / self.hi
        return seqs / (a + b * seqs)

    def flops_per_s(self, s: Shape, batch_size: int | None = None) -> tuple[float, bool]:
        """(FLOP/s, measured?) for a shape, at its batch size (tokens per step) when given, else at SEQS_LO
        sequences: measured ones interpolated in log M, the rest assumed."""
        if not self.speeds:
            return self.assumed, False
        seqs = batch_size / s.cfg.seq_len if batch_size else SEQS_LO
        (m0, *f0), (m1, *f1) = self.speeds[0], self.speeds[-1]
        r0, r1 = self._at_batch(f0[0], f0[1], seqs), self._at_batch(f1[0], f1[1], seqs)
        if m1 == m0 or s.M <= m0:
            return r0, True
        w = math.log(s.M / m0) / math.log(m1 / m0)
        return math.exp((1 - w) * math.log(r0) + w * math.log(r1)), True

    def seconds(self, s: Shape, D: int, eval_tokens: int = 0, batch_size: int | None = None) -> tuple[float, bool]:
        """Training D tokens at batch_size tokens per step plus the final evaluation (a forward pass: ~1/3 of a
        training step's FLOPs, in batches at least as large)."""
        rate, measured = self.flops_per_s(s, batch_size)
        return (D + eval_tokens / 3) * s.flops.train_flops_per_token / rate, measured
