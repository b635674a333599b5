"""sweep.seeds in the analysis: a point's repeats fit as one point at their mean loss, and their spread is reported
beside the near-optimal band (analysis.seeds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import fit_runs
from analysis.synthetic import Truth


def grid_table(seeds: int, noise: float, rng: np.random.Generator) -> pd.DataFrame:
    """hparams grids (5 lr x 3 batch) at three budgets from known laws; each point trained with `seeds` seeds."""
    t, rows = Truth(), []
    for C in (1e17, 1e18, 1e19):
        M = float(t.M_opt(C))
        for lr in t.eta_opt(C) * np.geomspace(0.25, 4, 5):
            for bs in t.B_opt(C) * np.geomspace(0.5, 2, 3):
                base = float(t.loss(M, C / M, lr, bs, C))
                for s in range(seeds):
                    rows.append(
                        {
                            "sweep": "hparams",
                            "C": C,
                            "M": M,
                            "lr": lr,
                            "batch_size": bs,
                            "budget": C,
                            "seed": 1337 + s,
                            "loss": base * (1 + noise * rng.standard_normal()),
                        }
                    )
    return pd.DataFrame(rows)


def test_repeats_fit_as_their_mean_and_report_the_spread():
    rng = np.random.default_rng(0)
    runs = grid_table(3, 0.004, rng)
    means = runs.groupby(["C", "lr", "batch_size"], sort=False, as_index=False).agg(
        {"sweep": "first", "M": "first", "budget": "first", "loss": "mean"}
    )
    a = fit_runs(runs, bootstrap=50, band=0.01)
    b = fit_runs(means, bootstrap=50, band=0.01)
    for law in ("eta_opt", "B_opt"):  # the same points, so the same laws
        assert a.laws[law].exponent == pytest.approx(b.laws[law].exponent, rel=1e-9)
    seeds = a.sections["seeds"]
    assert seeds["points"] == 45 and seeds["runs"] == 135 and seeds["seeds_max"] == 3
    assert 0.002 < seeds["spread_rel_median"] < 0.006  # the 0.4% noise put in
    assert a.report["seeds"] == seeds and a.sections["n_used"] == 135
    # every repeat of a point in the band is marked in the band, as its mean is
    band = a.runs[a.runs.in_band]
    assert len(band) % 3 == 0 and len(band) == 3 * int(b.runs.in_band.sum())
    assert not any("seed-to-seed spread" in w for w in a.report["warnings"])


def test_a_spread_wider_than_the_band_is_a_warning():
    runs = grid_table(2, 0.02, np.random.default_rng(1))
    res = fit_runs(runs, bootstrap=0, band=0.0025)
    assert any(
        "seed-to-seed spread" in w and "exceeds the near-optimal band (0.250%)" in w for w in res.report["warnings"]
    )


def test_runs_without_repeats_are_fitted_as_before():
    runs = grid_table(1, 0.004, np.random.default_rng(2))
    res = fit_runs(runs, bootstrap=0, band=0.01)
    assert "seeds" not in res.sections and "seeds" not in res.report


def test_fit_runs_on_a_study_uses_the_studys_options_and_says_so(tmp_path, capsys):
    from analysis.synthetic import make_study, write_study
    from scaling.base.studyfile import write_study as write_study_file

    write_study(make_study(budgets=(1e17, 1e18, 1e19), n_diverged=0, n_failed=0), tmp_path / "hparams")
    write_study_file(tmp_path, {"name": "t", "stages": [], "analysis": {"band": 0.01, "bootstrap": 0, "nope": 1}})
    res = fit_runs(tmp_path)
    opts = res.report["provenance"]["options"]
    assert opts["band"] == 0.01 and opts["bootstrap"] == 0  # not fit_runs' defaults (0.0025, 1000)
    note = res.report["provenance"]["options_from"]
    assert "study.json" in note and "band=0.01" in note and "fit_runs: " + note in capsys.readouterr().err
    told = fit_runs(tmp_path, band=0.02)  # told otherwise: the caller wins, the rest still comes from the study
    assert (
        told.report["provenance"]["options"]["band"] == 0.02 and told.report["provenance"]["options"]["bootstrap"] == 0
    )
    plain = fit_runs(tmp_path / "hparams", bootstrap=0)  # not a study dir
    assert plain.report["provenance"]["options"]["band"] == 0.0025 and "options_from" not in plain.report["provenance"]
