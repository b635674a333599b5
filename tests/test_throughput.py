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
from sweeps.throughput import PROBE_TIMED_S, PROBE_WARMUP_S, Throughput

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
    assert [d for d, _ in machine.calls] == [16, 80] and thr.recheck_note is None


def test_throughput_recheck_is_true_or_false():
    with pytest.raises(ValueError, match=r"^sweep\.throughput_recheck='yes' must be true or false"):
        SweepConfig(throughput_recheck="yes")  # type: ignore[arg-type]
