"""analysis.design: the design check fits synthetic studies as analysis.fit fits runs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from analysis.design import Design, draw, simulate
from analysis.synthetic import Truth


def test_draw_centres_each_grid_near_the_true_optimum():
    d = Design(budgets=(1e19, 1e20), sizes=5, span=1.0, noise=0.0, miss=0.0)
    b, M, L, trunk = draw(d, Truth(), np.random.default_rng(0))
    assert trunk is None  # no trunk noise: every run trained alone
    for C in d.budgets:
        m = M[b == C]
        assert len(m) == 5 and np.log10(m.max() / m.min()) == pytest.approx(1.0)
        assert np.log10(m).mean() == pytest.approx(np.log10(Truth().M_opt(C)))
        assert np.argmin(L[b == C]) == 2  # noiseless and centred: the middle size is best


def test_more_budgets_over_a_wider_span_give_a_narrower_honest_ci():
    narrow = simulate(Design(budgets=(1e19, 2e19, 4e19), noise=0.003), reps=30, n_boot=300)
    wide = simulate(Design(budgets=(1e19, 4e19, 1.6e20, 6.4e20), noise=0.003), reps=30, n_boot=300)
    assert narrow["fitted"] > 0.8 and wide["fitted"] > 0.8
    assert wide["median_width"] < 0.7 * narrow["median_width"]
    assert wide["median_abs_err"] < 0.1
    assert wide["coverage"] >= 0.8  # honest intervals (30 studies: ~0.95 +- 0.04)


@pytest.mark.parametrize(
    "args, match",
    [
        (["--budgets", "1e19"], "at least 2 positive"),
        (["--budgets", "1e19,abc"], "at least 2 positive"),
        (["--budgets", "1e19,1e20", "--sizes", "2"], "--sizes 2"),
        (["--budgets", "1e19,1e20", "--noise", "-1"], "--noise -1"),
        (["--budgets", "1e19,1e20", "--estimator", "parabola"], "--estimator"),
        (["--sizes", "7"], "--budgets is required"),
    ],
)
def test_bad_design_is_one_line_exit_2(args, match):
    r = subprocess.run([sys.executable, "-m", "analysis.design", *args], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and match in r.stderr
