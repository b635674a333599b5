"""Time estimates from measured throughput (sweeps.throughput): the cached table is re-checked by a short probe, so a
plan made on a machine twice as busy as when the table was measured estimates twice the time. The machine is a fake
measure() whose speeds the test sets: no wall-clock asserts."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from model.shapes import Shape, ShapeRule, make_shape
from scaling.base.configs import conf_dir, load_model_config
from sweeps.config import SweepConfig
from sweeps.throughput import PROBE_TIMED_S, PROBE_WARMUP_S, SEQS_LO, Throughput, cached, seqs_hi

CPU = torch.device("cpu")
D = 1_000_000


def shapes() -> list[Shape]:
    """The CPU demo's kind of plan: 2 layers, widths 16 (smallest), 48 and 80 (largest)."""
    rule = ShapeRule.from_cfg("width", OmegaConf.load(conf_dir() / "sweep.yaml")["sweep"]["shape_rules"]["width"])
    base = load_model_config("tiny", vocab_size=512, seq_len=64)
    return [make_shape(2, d, rule, base) for d in (16, 48, 80)]


class FakeMachine:
    """measure() on a machine whose speed per width is `speeds` times `load` (1: as when the cache was filled)."""

    def __init__(self, speeds: dict[int, float], load: float = 1.0):
        self.speeds, self.load = speeds, load
        self.calls: list[tuple[int, dict]] = []

    def __call__(self, cfg, device, **kw) -> float:
        self.calls.append((cfg.d_model, kw))
        return self.speeds[cfg.d_model] * self.load


SPEEDS = {16: 2e8, 80: 6e8}  # FLOP/s of the plan's ends as the cache holds them


def throughput(cache, machine: FakeMachine, recheck: bool = True) -> Throughput:
    return Throughput(shapes(), CPU, cache, max_params=1e7, assumed=4e14, recheck=recheck, measure=machine)


def estimates(thr: Throughput) -> list[float]:
    return [thr.seconds(s, D)[0] for s in shapes()]


def test_a_machine_half_as_fast_today_doubles_every_cached_estimate(tmp_path):
    cache = tmp_path / "throughput.json"
    cached = estimates(throughput(cache, FakeMachine(SPEEDS)))  # fills the cache at load 1
    today = FakeMachine(SPEEDS, load=0.5)
    thr = throughput(cache, today)
    assert estimates(thr) == pytest.approx([2 * c for c in cached])  # both ends and the shape between them
    # one probe, of the cheapest cached shape, short
    assert today.calls == [(16, {"warmup_s": PROBE_WARMUP_S, "timed_s": PROBE_TIMED_S, "amp": None})]
    assert thr.recheck_note is not None and "0.50x of the cached table" in thr.recheck_note


def test_recheck_off_trusts_the_cache_and_times_nothing(tmp_path):
    cache = tmp_path / "throughput.json"
    cached = estimates(throughput(cache, FakeMachine(SPEEDS)))
    today = FakeMachine(SPEEDS, load=0.5)
    thr = throughput(cache, today, recheck=False)
    assert estimates(thr) == pytest.approx(cached) and today.calls == [] and thr.recheck_note is None


def test_a_speed_measured_now_is_not_scaled_again(tmp_path):
    """The cache holds only the smallest shape; the largest is measured now, under today's load already."""
    cache = tmp_path / "throughput.json"
    Throughput(shapes()[:1], CPU, cache, max_params=1e7, assumed=4e14, measure=FakeMachine(SPEEDS))
    today = FakeMachine(SPEEDS, load=0.5)
    thr = throughput(cache, today)
    assert [f for _, f in thr.measured] == pytest.approx([0.5 * SPEEDS[16], 0.5 * SPEEDS[80]])


def test_a_fresh_cache_needs_no_probe(tmp_path):
    machine = FakeMachine(SPEEDS)
    thr = throughput(tmp_path / "throughput.json", machine)
    # each end at 2 sequences and at 16 (seq_len 64: 1,024 tokens, within HI_TOKENS)
    assert [(d, kw.get("seqs", SEQS_LO)) for d, kw in machine.calls] == [(16, 2), (16, 16), (80, 2), (80, 16)]
    assert thr.recheck_note is None


class StepMachine:
    """A machine whose step costs a fixed `a` seconds plus `b` seconds per sequence: FLOP/s grow with the batch."""

    def __init__(self, a: float, b: float):
        self.a, self.b = a, b

    def __call__(self, cfg, device, seqs: int = SEQS_LO, **kw) -> float:
        from model import count_flops

        return count_flops(cfg).train_flops_per_token * seqs * cfg.seq_len / (self.a + self.b * seqs)


def test_each_run_is_timed_at_its_own_batch_size(tmp_path):
    a, b = 0.010, 0.001  # 10 ms a step whatever the batch, 1 ms per sequence
    thr = throughput(tmp_path / "throughput.json", StepMachine(a, b))
    s = shapes()[0]
    T = s.cfg.seq_len
    for seqs in (1, 2, 9, 16):  # at and between the two timed batches, and below them
        steps = D // (seqs * T)
        assert thr.seconds(s, steps * seqs * T, batch_size=seqs * T)[0] == pytest.approx(steps * (a + b * seqs))
    # beyond the larger timed batch, no further gain is assumed (caches and memory bandwidth stop it on real machines)
    steps = D // (59 * T)
    assert thr.seconds(s, steps * 59 * T, batch_size=59 * T)[0] == pytest.approx(steps * 59 * (a + b * 16) / 16)
    # without a batch size, the estimate is the 2-sequence one, as before
    assert thr.seconds(s, D)[0] == pytest.approx(D / (2 * T) * (a + 2 * b))


def test_a_faster_small_batch_is_read_as_no_fixed_cost(tmp_path):
    """Noise can make the small batch look faster per sequence: no negative fixed part, the larger batch's rate."""

    def machine(cfg, device, seqs: int = SEQS_LO, **kw) -> float:
        return 4e8 if seqs == SEQS_LO else 3e8  # per sequence, 2 sequences a step run faster than 16

    thr = throughput(tmp_path / "throughput.json", machine)  # type: ignore[arg-type]
    assert thr.flops_per_s(shapes()[0], batch_size=64 * 40)[0] == pytest.approx(3e8)
    assert thr.flops_per_s(shapes()[0], batch_size=64)[0] == pytest.approx(3e8)
    assert seqs_hi(4096) == SEQS_LO and seqs_hi(64) == 16 and seqs_hi(1024) == 8


def test_throughput_recheck_is_true_or_false():
    with pytest.raises(ValueError, match=r"^sweep\.throughput_recheck='yes' must be true or false"):
        SweepConfig(throughput_recheck="yes")  # type: ignore[arg-type]


def test_a_cached_measurement_is_taken_once_and_kept_beside_the_others(tmp_path):
    """sweep.pack=auto's speed-ups live in the throughput cache: a fresh sweep on this machine decides from the
    number the last one measured, instead of one that flips with the load near the 1.1x threshold."""
    cache = tmp_path / "throughput.json"
    estimates(throughput(cache, FakeMachine(SPEEDS)))  # the speeds are in the file
    calls: list[float] = []

    def measure() -> float:
        calls.append(1.09 + 0.02 * len(calls))  # 1.09, then 1.11: either side of the threshold
        return calls[-1]

    assert cached(cache, "pack 5|some shape", measure) == pytest.approx(1.09)
    assert cached(cache, "pack 5|some shape", measure) == pytest.approx(1.09) and len(calls) == 1
    assert cached(cache, "pack 3|some shape", measure) == pytest.approx(1.11) and len(calls) == 2
    # the speeds measured before are still there: the same plan times nothing new
    again = FakeMachine(SPEEDS)
    throughput(cache, again, recheck=False)
    assert again.calls == []
