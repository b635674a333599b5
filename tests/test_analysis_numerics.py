"""analysis numerics: batched solvers agree with the obvious ones, the parametric gradient is right."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import approx_fprime

from analysis import parametric as P
from analysis.budgets import cluster_C
from analysis.isoflop import parabolas
from analysis.powerlaw import fit_powerlaw, law_ci, linefit


def test_batched_fits_match_numpy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 9)), rng.normal(size=(4, 9))
    c = parabolas(x, y)
    b, m = linefit(x, y)
    for i in range(4):
        np.testing.assert_allclose(c[i, ::-1], np.polyfit(x[i], y[i], 2), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose([m[i], b[i]], np.polyfit(x[i], y[i], 1), rtol=1e-10)
    law = fit_powerlaw([1e18, 1e19, 1e20], 3 * np.array([1e18, 1e19, 1e20]) ** 0.5)
    assert abs(law.coef - 3) < 1e-9 and abs(law.exponent - 0.5) < 1e-12


def test_parametric_gradient_and_batched_refit():
    rng = np.random.default_rng(1)
    N, D = 10 ** rng.uniform(7, 9, 60), 10 ** rng.uniform(9, 11, 60)
    L = (1.7 + 400 / N**0.34 + 2000 / D**0.37) * np.exp(0.01 * rng.standard_normal(60))
    lN, lD, lL, w = np.log(N), np.log(D), np.log(L), rng.integers(0, 3, 60).astype(float)
    th = np.array([6.0, 7.6, 0.5, 0.3, 0.4])
    f, g = P.objective_grad(th, lN, lD, lL, w)
    np.testing.assert_allclose(
        g, approx_fprime(th, lambda t: P.objective_grad(t, lN, lD, lL, w)[0], 1e-7), rtol=1e-3, atol=1e-8
    )
    fit = P.fit_parametric(N, D, L, n_boot=0)
    ref = P._minimise(np.array(fit["theta"]), lN, lD, lL, w)
    got = P.refit_batch(np.array(fit["theta"]), lN, lD, lL, w[None])[0]
    assert P.objective(got, lN, lD, lL, w) <= ref.fun * (1 + 1e-6)


def test_cluster_C_groups_within_tolerance():
    C = np.array([1e18, 1.04e18, 0.97e18, 3e18, 3.1e18, 1e19])
    lab = cluster_C(C)
    assert len(np.unique(lab)) == 3 and lab[0] == lab[1] == lab[2] and lab[3] == lab[4]


def test_batched_bootstrap_refits_match_one_lbfgs_per_resample():
    """The fast parametric bootstrap (active-set LM, ties) reaches the optimum L-BFGS-B reaches on each resample."""
    rng = np.random.default_rng(3)
    N, D = 10 ** rng.uniform(7, 9, 80), 10 ** rng.uniform(9, 11, 80)
    L = (1.7 + 400 / N**0.34 + 2000 / D**0.37) * np.exp(0.01 * rng.standard_normal(80))
    lN, lD, lL = np.log(N), np.log(D), np.log(L)
    W = np.stack([np.bincount(rng.integers(0, 80, 80), minlength=80) for _ in range(6)]).astype(float)
    for par in (P.Param(), P.Param(tie=True), P.Param(fix_E=1.7)):
        theta = np.array(P.fit_parametric(N, D, L, n_boot=0, tie=par.tie, fix_E=par.fix_E)["theta"])
        fast = P.refit_batch(theta, lN, lD, lL, W, par=par)
        for w, th in zip(W, fast):
            ref = P._minimise(theta, lN, lD, lL, w, par)
            assert P.objective(th, lN, lD, lL, w) <= ref.fun * (1 + 1e-6) + 1e-12
            np.testing.assert_allclose(th, ref.theta, atol=2e-3)


def test_law_ci_of_an_intercept_beyond_float_range_is_an_infinite_bound():
    # 10.0**400 raises OverflowError in Python; such a bootstrap tail must give an unbounded coefficient instead
    ci = law_ci(np.array([0.0, 1.0, 400.0, 500.0]), np.array([0.4, 0.5, 0.6, 0.7]))
    assert ci["coef"][0] == pytest.approx(10 ** np.percentile([0.0, 1.0, 400.0, 500.0], 2.5))
    assert ci["coef"][1] == float("inf")
