import math

import pytest

from scaling.run.schedule import lr_at, warmup_steps


def test_multistep_matches_deepseek_breakpoints():
    steps, peak = 1000, 1e-3
    lrs = [lr_at(s, steps, peak, schedule="multistep", warmup=10) for s in range(steps)]
    assert lrs[0] == pytest.approx(peak / 10)  # linear warmup from peak/warmup
    assert lrs[9] == pytest.approx(peak)
    assert lrs[799] == pytest.approx(peak)  # 80% of tokens at peak
    assert lrs[800] == pytest.approx(0.316 * peak)  # then 31.6% until 90%
    assert lrs[899] == pytest.approx(0.316 * peak)
    assert lrs[900] == pytest.approx(0.1 * peak)  # then 10%
    assert lrs[-1] == pytest.approx(0.1 * peak)


def test_cosine_decays_monotonically_to_floor():
    steps, peak = 200, 2e-3
    lrs = [lr_at(s, steps, peak, schedule="cosine", warmup=5, min_lr_frac=0.1) for s in range(steps)]
    after = lrs[5:]
    assert after[0] == pytest.approx(peak)
    assert all(a >= b - 1e-15 for a, b in zip(after, after[1:]))
    assert lrs[-1] == pytest.approx(0.1 * peak)


def test_warmup_is_a_fraction_of_short_runs():
    assert warmup_steps(100, 0.05, 2000) == 5
    assert warmup_steps(10**6, 0.05, 2000) == 2000  # DeepSeek's 2000 steps cap long runs
    assert warmup_steps(3, 0.05, 2000) == 1


def test_unknown_schedule_is_one_line_error():
    with pytest.raises(ValueError, match="optim.schedule='linear' is unknown"):
        lr_at(0, 10, 1e-3, schedule="linear", warmup=1)
    assert math.isfinite(lr_at(0, 10, 1e-3))
