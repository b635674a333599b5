"""The newcomer path end to end: a miniature study from scaling.sweep to analysis.fit, and the README's promises."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from tests.helpers import ROOT, TINY_DATA

# Budgets a hundred times below the CPU demo's: 27 + 15 runs of a second or two each.
MINI_STUDY = {
    "dir": None,
    "overrides": [
        *TINY_DATA,
        "model.seq_len=32",
        "sweep.shape_rule=cpu",
        "sweep.min_steps=10",
        "train.threads=1",
        "train.eval_tokens=8192",
        "train.progress=false",
    ],
    "hparams": {"budgets": [3e9, 6e9, 1.2e10], "overrides": ["sweep.lr_points=3", "sweep.batch_points=3"]},
    "isoflop": {"budgets": [6e9, 1.2e10, 2.4e10], "overrides": ["sweep.n_shapes=5"]},
    "analysis": {"bootstrap": 200, "band": 0.0025, "min_budgets": 3},
}


@pytest.mark.slow
def test_miniature_study_end_to_end(tmp_path, cache_dir):
    study = MINI_STUDY | {"dir": str(tmp_path / "study")}
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(study))
    out = subprocess.run(
        [sys.executable, "-m", "scaling.study", str(tmp_path / "mini.yaml"), "--samples"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    root = tmp_path / "study"
    results = [json.loads(p.read_text()) for p in root.glob("*/*/result.json")]
    planned = sum(len((root / stage / "plan.csv").read_text().splitlines()) - 1 for stage in ("hparams", "isoflop"))
    assert len(results) == planned >= 27 + 3 * 3  # every planned run has its record
    for r in results:
        assert r["status"] in ("completed", "diverged")
        assert abs(r["D_planned"] * r["M"] / r["budget"] - 1) < 0.01
    # Stage 2 was centred with the laws fitted in stage 1, not DeepSeek's.
    fitted = json.loads((root / "hparams" / "analysis" / "report.json").read_text())["hparams"]
    iso_lrs = {r["lr"] for r in results if r["sweep"] == "isoflop"}
    eta = fitted["eta_opt"]
    assert len(iso_lrs) == 3 and all(
        r["lr"] == float(f"{eta['coef'] * r['budget'] ** eta['exponent']:.3g}")
        for r in results
        if r["sweep"] == "isoflop"
    )
    report = json.loads((root / "analysis" / "report.json").read_text())
    for law in (report["hparams"]["eta_opt"], report["hparams"]["B_opt"]):
        lo, hi = law["ci95"]["exponent"]
        assert lo <= law["exponent"] <= hi and lo < hi
    # Every IsoFLOP budget was analysed: fitted into the law, or named with its reason (at these tiny budgets the
    # optimum can lie below the smallest shape; the fit itself is tested on synthetic data in test_analysis.py).
    fitted_budgets = {b["budget"] for b in report.get("isoflop", {}).get("budgets", []) if b["used"] or b["warnings"]}
    reason = report["skipped"].get("isoflop", "")
    for C in MINI_STUDY["isoflop"]["budgets"]:
        assert C in fitted_budgets or f"C={C:.2g}" in reason, (C, fitted_budgets, reason)
    md = (root / "analysis" / "report.md").read_text()
    assert "## Samples" in md and md.count("(val_loss ") == 3  # one greedy sample per IsoFLOP budget
    assert {"deepseek_7b", "deepseek_67b"} <= set(report["extrapolation"])
    plots = {p.name for p in (root / "analysis" / "plots").glob("*.png")}
    assert {"hparams.png", "isoflop.png"} <= plots, plots
    assert "eta_opt" in out.stdout and "deepseek_7b" in out.stdout  # the printed summary

    again = subprocess.run(
        [sys.executable, "-m", "scaling.study", str(tmp_path / "mini.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    n_iso = len((root / "isoflop" / "plan.csv").read_text().splitlines()) - 1
    assert again.returncode == 0 and "27 skipped" in again.stdout and f"{n_iso} skipped" in again.stdout, again.stdout[
        -2000:
    ]


def test_readme_set_up_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    commands = re.search(r"```bash\n(python3 -m venv .*?)\n(python3 -m venv .*?)\n```", readme)
    assert commands, "README must open with the two set-up commands"
    demo, tests = commands.groups()
    assert demo.endswith("python -m scaling.study") and tests.endswith("python -m pytest -m 'slow or not slow'")
    assert "torch==2.13.0" in demo and "torch==2.13.0" in tests
    assert tests in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
def test_unknown_study_is_one_line_error():
    out = subprocess.run(
        [sys.executable, "-m", "scaling.study", "nosuch"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    err = out.stderr.strip()
    assert err.startswith("scaling.study: error: unknown study 'nosuch'") and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "text, match",
    [
        ("stages: [\n", "not readable YAML"),  # not a yaml ParserError traceback
        ("- a\n", "a study file is a mapping"),  # not an AssertionError
        ("x: ${nope.y}\n", "nope.y"),  # not an OmegaConf InterpolationKeyError
    ],
)
def test_a_broken_study_or_target_file_is_one_value_error_naming_it(tmp_path, text, match):
    from scaling.base.configs import load_model_config, load_study

    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
        load_study(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    if "mapping" not in match:
        with pytest.raises(ValueError, match=match):
            load_model_config(path, what="target")
    (tmp_path / "partial.yaml").write_text("n_layer: 2\n")  # a model file missing keys names the file too
    with pytest.raises(ValueError, match=r"partial\.yaml: ModelConfig is missing"):
        load_model_config(tmp_path / "partial.yaml")


def test_a_dry_run_plans_stage_2_on_stage_1s_last_fit(tmp_path, monkeypatch):
    """A dry run of a study whose stage 1 was fitted used DeepSeek's laws for stage 2, and so reported every
    finished IsoFLOP run as 'a run of another config'."""
    import scaling.study as study

    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(study, "sweep", lambda stage, budgets, d, overrides: calls.append((stage, overrides)))
    monkeypatch.setattr(study, "plan_seconds", lambda d: 0.0)
    root = tmp_path / "demo"
    study.run_study("cpu_demo", [], dry_run=True, out=root)
    assert "sweep.laws=deepseek" in calls[-1][1]  # nothing fitted yet
    fit = root / "hparams" / "analysis" / "report.json"
    fit.parent.mkdir(parents=True)
    fit.write_text("{}")
    calls.clear()
    study.run_study("cpu_demo", [], dry_run=True, out=root)
    assert calls[-1][0] == "isoflop" and f"sweep.laws={fit}" in calls[-1][1]
    assert "sweep.dry_run=true" in calls[-1][1]
