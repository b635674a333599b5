"""Intervals that know what they are conditional on (issues 20, 21): the joint IsoFLOP estimator, bootstraps that
resample trunks with their branches, in chunks, and the second level that adds the scatter between budgets/grids."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import approx_fprime

from analysis import between as bt
from analysis import fit_runs, resample
from analysis.design import SCENARIOS, TRUTHS, Design, draw, simulate, simulate_hparams
from analysis.isoflop import IsoRuns, fit_isoflop
from analysis.isojoint import JointModel, shape
from analysis.load import load_runs
from analysis.synthetic import Truth, make_study, write_study


def _inside(ci, v) -> bool:
    return ci[0] <= v <= ci[1]


# --- resampling units ------------------------------------------------------------------------------------------


def test_units_group_branches_of_a_trunk_and_keep_lone_runs_apart():
    strata = np.array([0, 0, 0, 1, 1, 1])
    trunk = np.array(["t1", None, "t1", "t1", np.nan, "t2"], dtype=object)
    u = resample.units(strata, trunk)
    assert u.of_run[0] == u.of_run[2] == u.of_run[3]  # one trunk, branched at two budgets: one unit
    assert len({u.of_run[1], u.of_run[4], u.of_run[5], u.of_run[0]}) == 4 and u.clustered
    assert u.stratum[u.of_run[0]] == -1  # spans budgets: drawn across them
    assert u.stratum[u.of_run[1]] == 0 and u.stratum[u.of_run[5]] == 1
    w = resample.weights(u, 200, np.random.default_rng(0))
    assert np.all(w[:, 0] == w[:, 2]) and np.all(w[:, 0] == w[:, 3])  # branches drawn together
    assert not np.all(w[:, 1] == w[:, 4])
    plain = resample.units(strata)
    assert not plain.clustered and list(plain.stratum) == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("n_strata", [3, 200])  # a loop over few strata, one vectorised draw for many
def test_draws_are_stratified_and_every_unit_is_as_likely(n_strata):
    sizes = np.resize([3, 5, 8], n_strata)
    u = resample.units(np.repeat(np.arange(n_strata), sizes))
    c = resample.draw_counts(u, 4000, np.random.default_rng(1))
    for s, n in enumerate(sizes):
        cols = np.flatnonzero(u.stratum == s)
        assert np.all(c[:, cols].sum(1) == n)  # each budget keeps its number of runs
    assert np.allclose(c.mean(0), 1, atol=0.08)


def test_chunks_bound_the_weights_held_at_once():
    u = resample.units(np.zeros(1_000_000))
    step = resample.chunk_size(1_000_000, 1000, per_row=3)
    assert step * 1_000_000 * 3 <= resample.CHUNK_CELLS or step == 1
    seen = [sl for sl, w in resample.resamples(resample.units(np.zeros(50)), 1000, np.random.default_rng(0))]
    assert seen[0].start == 0 and seen[-1].stop == 1000
    assert sum(s.stop - s.start for s in seen) == 1000
    assert u.n_units == 1_000_000


def test_progress_line_only_after_a_while():
    quiet, loud = io.StringIO(), io.StringIO()
    p = resample.Progress("IsoFLOP", 100, after_s=1e9, stream=quiet)
    p.update(50)
    q = resample.Progress("IsoFLOP", 100, after_s=0.0, stream=loud)
    q.update(50)
    q.update(60)  # within 10 s of the last line: silent
    q.update(100)  # done: silent
    assert quiet.getvalue() == ""
    lines = loud.getvalue().splitlines()
    assert len(lines) == 1 and "IsoFLOP: 50/100 bootstrap resamples" in lines[0]


# --- the second level ------------------------------------------------------------------------------------------


def test_paule_mandel_sees_extra_scatter_and_only_that():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, 12)
    X = np.stack([np.ones_like(x), x], -1)
    s2 = np.full(12, 0.01**2)
    quiet = 1 + 2 * x + 0.01 * rng.standard_normal(12) * 0.5  # less scatter than the precision says
    assert bt.paule_mandel(X, quiet, s2) == 0
    noisy = 1 + 2 * x + 0.1 * rng.standard_normal(12)
    tau2 = bt.paule_mandel(X, noisy, s2)
    assert 0.05**2 < tau2 < 0.2**2
    w = 1 / (s2 + tau2)
    beta = np.linalg.lstsq(X * np.sqrt(w)[:, None], noisy * np.sqrt(w), rcond=None)[0]
    assert np.sum(w * (noisy - X @ beta) ** 2) == pytest.approx(10, rel=1e-6)  # K - p
    assert bt.paule_mandel(X[:2], noisy[:2], s2[:2]) == 0  # no degrees of freedom: none measurable


def test_pivotal_draws_of_the_between_scatter_are_calibrated_with_three_budgets():
    """The tau^2 draws solve Q(tau^2) = chi2_{K-p}: their 95th percentile bounds the true tau^2 in ~95% of studies,
    even with one degree of freedom (where the point estimate is 0 about half of the time)."""
    rng = np.random.default_rng(0)
    X = np.stack([np.ones(3), [0.0, 1.0, 2.0]], -1)
    s, tau = np.array([0.05, 0.08, 0.05]), 0.08
    hits, zeros = 0, 0
    for _ in range(200):
        y = X @ [1.0, 0.5] + rng.normal(0, np.sqrt(s**2 + tau**2))
        info = bt.scatter(X, y, y + rng.normal(0, s, (400, 3)))
        zeros += info["tau"] == 0
        t2 = bt._solve_q(*info["_grid"], rng.chisquare(info["df"], 4000))  # what draw_effects draws from
        assert bt.draw_effects(info, 5, rng).shape == (5, 3)
        hits += tau**2 <= np.percentile(t2, 95)
    assert 0.9 <= hits / 200 <= 0.99 and zeros > 40
    assert np.all(bt.draw_effects({"df": 0, "K": 2, "tau": 0.0}, 10, rng) == 0)
    assert "no degrees of freedom" in bt.describe({"df": 0, "K": 2, "tau": 0.0}, "M_opt law")


# --- the joint IsoFLOP fit -------------------------------------------------------------------------------------


def test_shape_is_the_chinchilla_profile_and_its_derivatives_are_right():
    t = np.linspace(-3, 3, 13)
    al, be = 0.3, 0.5
    g, dt, da, db = shape(t, al, be, deriv=True)
    # the profile E + A' e^(-alpha t) + B' e^(beta t) with its minimum at t = 0, minus the minimum, per curvature
    A, B = 1 / al, 1 / be  # alpha A = beta B: minimum at 0
    f = A * np.exp(-al * t) + B * np.exp(be * t)
    curv = al * al * A + be * be * B
    np.testing.assert_allclose(g, (f - f[6]) / curv, atol=1e-12)
    eps = 1e-6
    np.testing.assert_allclose(dt, (shape(t + eps, al, be)[0] - shape(t - eps, al, be)[0]) / (2 * eps), atol=1e-7)
    for d, which in ((da, 0), (db, 1)):
        num = [
            approx_fprime(np.log([al, be]), lambda p, i=i: shape(t[i], *np.exp(p))[0], 1e-7)[which]
            for i in range(len(t))
        ]
        np.testing.assert_allclose(d, num, rtol=1e-4, atol=1e-6)


def test_block_elimination_step_equals_the_dense_normal_equations():
    rng = np.random.default_rng(0)
    K, n = 4, 6
    k = np.repeat(np.arange(K), n)
    x = np.tile(np.linspace(-0.7, 0.7, n), K) + np.repeat(np.linspace(-0.5, 0.5, K), n)
    z = np.linspace(-1, 1, K)
    for free in (False, True):
        m = JointModel(k, x, z, free_vertex=free, noise_var=1e-4)
        glob = np.array([np.log(0.3), np.log(0.5)]) if free else np.array([0.05, 0.45, np.log(0.3), np.log(0.5)])
        th = m.pack(glob, 0.5 * z if free else None, np.full(K, 3.0), np.full(K, 0.05))
        W = rng.integers(0, 3, (2, len(k))).astype(float)
        Y = m.predict(th[None])[0] + 0.01 * rng.standard_normal((2, len(k)))
        ths = np.stack([th, th + 0.01 * rng.standard_normal(m.P)])
        lam = np.array([1e-3, 1.0])
        got = m.step(ths, W, Y, lam)
        for r in range(2):  # dense reference: finite-difference Jacobian, damped normal equations
            J = np.stack(
                [
                    (m.predict((ths[r] + e)[None])[0] - m.predict((ths[r] - e)[None])[0]) / 2e-6
                    for e in np.eye(m.P) * 1e-6
                ],
                -1,
            )
            H = J.T @ (J * W[r][:, None])
            g = J.T @ (W[r] * (m.predict(ths[r][None])[0] - Y[r]))
            H[m.shape_idx, m.shape_idx] += m.prior_w
            g[m.shape_idx] += m.prior_w * (ths[r][m.shape_idx] - np.log(0.35))
            H += np.diag(lam[r] * np.diag(H))
            np.testing.assert_allclose(got[r], -np.linalg.solve(H, g), rtol=1e-4, atol=1e-9)
        fixed = m.step(np.stack([th, th]), W, Y, lam, fixed=True)
        np.testing.assert_allclose(fixed, m.step(np.stack([th, th]), W, Y, lam), rtol=1e-8, atol=1e-12)


def test_joint_fit_recovers_the_law_exactly_from_noiseless_profiles():
    t = TRUTHS["skewed"]
    Cs = np.geomspace(1e18, 1e21, 4)
    b, M, L = [], [], []
    for C, off in zip(Cs, (-0.8, 0.3, 0.9, -0.2)):  # off-centre grids
        m = 10 ** (np.log10(t.M_opt(C)) + off + np.linspace(-1.2, 1.2, 9))
        b += [C] * 9
        M += list(m)
        L += list(t.loss(m, C / m))
    r = fit_isoflop(IsoRuns(np.array(b), np.array(M), np.array(b), np.array(L)), n_boot=0)
    assert r["M_opt"].exponent == pytest.approx(t.a, abs=3e-4)
    assert r["shape"]["alpha"] == pytest.approx(t.alpha, rel=1e-3) and r["shape"]["beta"] == pytest.approx(
        t.beta, rel=1e-3
    )
    for x in r["budgets"]:
        assert x["used"] and np.log10(x["M_opt"] / t.M_opt(x["C"])) == pytest.approx(0, abs=1e-4)
        assert x["loss_min"] == pytest.approx(float(t.loss(t.M_opt(x["C"]), x["C"] / t.M_opt(x["C"]))), rel=1e-6)


# --- trunks through the loader and the fit ---------------------------------------------------------------------


def test_trunk_column_is_read_from_records_and_csv(tmp_path):
    recs = make_study(budgets=(1e17, 1e18, 1e19), n_sizes=5, lr_steps=3, bs_steps=3, n_diverged=0, n_failed=0)
    for i, r in enumerate(recs):
        if r["sweep"] == "isoflop":
            r["trunk"] = f"trunk-{i % 5}"
    runs, _ = load_runs([write_study(recs, tmp_path / "r")])
    iso = runs[runs.sweep == "isoflop"]
    assert set(iso.trunk) == {f"trunk-{i}" for i in range(5)} and runs[runs.sweep == "hparams"].trunk.isna().all()
    df = pd.DataFrame(
        {"sweep": "isoflop", "C": 1e18, "M": [1e9, 2e9, 4e9], "loss": [3.0, 2.9, 3.0], "trunk": [7, None, 7]}
    )
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    got, _ = load_runs([path])
    assert got.trunk.iloc[0] == got.trunk.iloc[2] and got.trunk.isna().iloc[1]


def test_fit_resamples_trunks_when_runs_name_them(tmp_path):
    d = replace(SCENARIOS["centred"][0], trunk_noise=0.004, noise=0.002)
    b, M, L, tr = draw(d, TRUTHS["default"], np.random.default_rng(3))
    assert tr is not None and len(set(tr)) < len(tr)  # sizes recur across budgets: shared trunks
    df = pd.DataFrame({"sweep": "isoflop", "C": b, "M": M, "loss": L, "budget": b, "trunk": [f"t{x}" for x in tr]})
    with_trunks = fit_runs(df, bootstrap=300)
    naive = fit_runs(df.drop(columns="trunk"), bootstrap=300)
    assert with_trunks.laws["M_opt"].exponent == pytest.approx(naive.laws["M_opt"].exponent)  # same point fit
    assert with_trunks.sections["isoflop"]["resampled"].startswith(f"{len(set(tr))} trunks")
    assert naive.sections["isoflop"]["resampled"] == "runs within budgets"


# --- the design check: fast versions of the README's tables ----------------------------------------------------


def test_design_draws_trunks_on_a_lattice_and_shifts_budgets():
    d = Design((1e18, 1e19, 1e20), sizes=5, span=1.0, noise=0.0, miss=0.0, trunk_noise=0.01)
    b, M, L, tr = draw(d, Truth(), np.random.default_rng(0))
    step = 1.0 / 4
    np.testing.assert_allclose(np.log10(M) / step, np.round(np.log10(M) / step), atol=1e-9)
    for t in set(tr):
        assert len(set(M[tr == t])) == 1  # one trunk, one model size
    d2 = Design((1e18, 1e19), sizes=5, noise=0.0, miss=0.0, budget_shift=0.3)
    b2, M2, L2, _ = draw(d2, Truth(), np.random.default_rng(1))
    best = [np.log10(M2[b2 == C][np.argmin(L2[b2 == C])] / Truth().M_opt(C)) for C in d2.budgets]
    assert max(abs(x) for x in best) > 0.05  # the optimum moved with its budget
    with pytest.raises(ValueError, match="--budget-shift"):
        Design((1e18, 1e19), budget_shift=-1).check()


def test_joint_estimator_beats_the_window_off_centre_and_is_honest():
    d, t = SCENARIOS["off-centre 0.5 dec"]
    d = replace(d, budgets=tuple(np.geomspace(1e18, 1e20, 8)))
    joint = simulate(d, reps=12, n_boot=200, truth=TRUTHS[t], estimator="joint")
    window = simulate(d, reps=12, n_boot=200, truth=TRUTHS[t], estimator="window")
    assert joint["fitted"] == 1 and joint["coverage"] >= 0.75 and abs(joint["bias"]) < 0.03
    assert window["fitted"] < 0.7 or window["median_width"] > 1.5 * joint["median_width"]


def test_second_level_widens_the_law_when_budgets_carry_their_own_noise():
    d = replace(SCENARIOS["centred"][0], budget_shift=0.15, noise=0.002)
    runs_only = simulate(d, reps=12, n_boot=200, truth=TRUTHS["default"], between=False)
    both = simulate(d, reps=12, n_boot=200, truth=TRUTHS["default"], between=True)
    assert both["median_width"] > 1.5 * runs_only["median_width"]
    assert both["coverage"] >= runs_only["coverage"] and both["coverage"] >= 0.75
    h = simulate_hparams((1e18, 1e19, 1e20, 1e21), reps=8, n_boot=200, grid_shift=0.1, between=True)
    h0 = simulate_hparams((1e18, 1e19, 1e20, 1e21), reps=8, n_boot=200, grid_shift=0.1, between=False)
    assert h["eta_opt"]["median_width"] > h0["eta_opt"]["median_width"]


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["centred", "off-centre 0.5 dec", "wide, skewed"])
def test_joint_estimator_coverage_at_least_93_percent(scenario):
    d, t = SCENARIOS[scenario]
    r = simulate(d, reps=150, n_boot=400, seed=1, truth=TRUTHS[t], estimator="joint")
    assert r["fitted"] >= 0.95 and r["coverage"] >= 0.93, r


@pytest.mark.slow
def test_two_level_intervals_cover_with_budget_noise_and_trunks():
    d = replace(SCENARIOS["centred"][0], budget_shift=0.1, budget_loss=0.003)
    r = simulate(d, reps=150, n_boot=400, seed=2, truth=TRUTHS["default"])
    assert r["coverage"] >= 0.93 and r["loss_coverage"] >= 0.93, r
    h = simulate_hparams(tuple(np.geomspace(1e18, 1e20, 5)), reps=150, n_boot=400, grid_shift=0.1)
    assert h["eta_opt"]["coverage"] >= 0.93 and h["B_opt"]["coverage"] >= 0.93, h
    t = replace(SCENARIOS["centred"][0], noise=0.002, trunk_noise=0.005)
    assert simulate(t, reps=150, n_boot=400, seed=3, truth=TRUTHS["default"])["coverage"] >= 0.93


def test_hparams_bootstrap_from_sums_matches_the_direct_weighted_fits():
    from analysis.hparams import _line_from_sums, _solve3, planefit
    from analysis.powerlaw import linefit

    rng = np.random.default_rng(0)
    x, y, x2 = rng.normal(20, 1, 50), rng.normal(-3, 0.5, 50), rng.normal(10, 1, 50)
    w = rng.integers(0, 3, (4, 50)).astype(float)
    b, m = linefit(np.broadcast_to(x, w.shape), np.broadcast_to(y, w.shape), w)
    xc = x - 20
    b2, m2 = _line_from_sums(w.sum(1), w @ xc, w @ (xc * xc), w @ y, w @ (xc * y), 20.0)
    np.testing.assert_allclose(m2, m, rtol=1e-9)
    np.testing.assert_allclose(b2, b, rtol=1e-9)
    X = np.stack([np.ones(50), x - 20, x2 - 10], -1)
    A = np.einsum("ni,rn,nj->rij", X, w, X)
    c = _solve3(A, np.einsum("ni,rn,n->ri", X, w, y))
    c[:, 0] -= c[:, 1] * 20 + c[:, 2] * 10
    np.testing.assert_allclose(c, planefit(x, x2, y, w), rtol=1e-8)
