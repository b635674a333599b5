"""FitOptions: one typed value for every option of a fit, built alike from the CLI's flags, a notebook's keywords and
a study file's analysis section, and refused with a one-line error naming the flag when a value is bad."""

from __future__ import annotations

import pytest

from analysis.fit import options_from_args, parser
from analysis.options import FitOptions
from analysis.plausible import Limits
from scaling.study import analysis_options
from sweeps.study import StudySpec


def test_loose_values_are_stored_typed():
    loose = FitOptions(
        budgets=1e21,
        sizes=["1e9", 2e9],
        predict="7e9,2e12",
        targets="deepseek_7b",
        target_tokens="1e12",
        limits={"loss_max": 30},
    )
    typed = FitOptions(
        budgets=(1e21,),
        sizes=(1e9, 2e9),
        predict=((7e9, 2e12),),
        targets=("deepseek_7b",),
        target_tokens=1e12,
        limits=Limits(loss_max=30),
    )
    assert loose == typed
    assert FitOptions(predict=[(7e9, 2e12), "1e23", 1e22]).predict == ((7e9, 2e12), (1e23,), (1e22,))
    assert FitOptions(predict=(1e23,)).predict == ((1e23,),)  # one tuple of numbers is one request


@pytest.mark.parametrize(
    "given, flag",
    [
        ({"bootstrap": -1}, "--bootstrap"),
        ({"iso_estimator": "median"}, "--iso-estimator"),
        ({"hparams_form": "N"}, "--hparams-form"),
        ({"fix_E": -1.0}, "--fix-E"),
        ({"limits": {"loss_min": 5.0, "loss_max": 1.0}}, "--loss-range"),
        ({"predict": "1,2,3"}, "--predict"),
        ({"budgets": [1e21, -1.0]}, "--budget"),
        ({"target_tokens": 0}, "--target-tokens"),
        ({"sizes": ["big"]}, "--size"),
    ],
)
def test_a_bad_value_is_refused_naming_its_flag(given, flag):
    with pytest.raises(ValueError) as e:
        FitOptions(**given)
    assert flag in str(e.value) and "\n" not in str(e.value)


def test_the_cli_builds_the_options_its_flags_name():
    argv = ["runs", "--budget", "1e21", "1e22", "--predict", "7e9,2e12", "--predict", "1e23", "--size", "1e9"]
    argv += [
        "--band",
        "0.01",
        "--bootstrap",
        "7",
        "--seed",
        "3",
        "--targets",
        "deepseek_67b",
        "--target-tokens",
        "1e12",
    ]
    argv += ["--min-budgets", "2", "--rtol", "1.3", "--iso-window", "1.0", "--iso-estimator", "window"]
    argv += ["--hparams-form", "MD", "--tie-exponents", "--fix-E", "1.7", "--robust", "3", "--metric", "bpb"]
    argv += ["--loss-range", "0.1", "15", "--max-compute", "1e25", "--dataset", "web"]
    expected = FitOptions(
        band=0.01,
        bootstrap=7,
        seed=3,
        min_budgets=2,
        rtol=1.3,
        iso_window=1.0,
        iso_estimator="window",
        hparams_form="MD",
        tie=True,
        fix_E=1.7,
        robust=3.0,
        targets=("deepseek_67b",),
        target_tokens=1e12,
        budgets=(1e21, 1e22),
        predict=((7e9, 2e12), (1e23,)),
        sizes=(1e9,),
        metric="bpb",
        limits=Limits(loss_min=0.1, loss_max=15.0, C_max=1e25),
        dataset="web",
    )
    assert options_from_args(parser().parse_args(argv)) == expected
    assert options_from_args(parser().parse_args(["runs"])) == FitOptions()


def _spec(analysis: dict) -> StudySpec:
    raw = {"dir": "runs/x", "hparams": {"budgets": [1e10, 2e10, 4e10]}, "isoflop": {"budgets": [1e11, 2e11, 4e11]}}
    return StudySpec.from_dict(raw | {"analysis": analysis}, "study.yaml")


def test_a_study_analysis_section_is_a_fit_options_value():
    assert analysis_options(_spec({"band": 0.01, "budgets": [1e21], "limits": {"loss_max": 30}})) == FitOptions(
        band=0.01, budgets=(1e21,), limits=Limits(loss_max=30)
    )
    with pytest.raises(ValueError, match=r"study.yaml: unknown key analysis.bootstrp: did you mean analysis.bootstrap"):
        analysis_options(_spec({"bootstrp": 10}))
    with pytest.raises(ValueError, match=r"study.yaml: analysis: .*--bootstrap"):
        analysis_options(_spec({"bootstrap": -1}))
