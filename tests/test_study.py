"""The newcomer path end to end: a miniature study from scaling.sweep to analysis.fit, and the README's promises."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sweeps.laws import fitted_centre
from tests.helpers import ROOT, TINY_DATA
from tests.test_parallel import _alive, _descendants

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
        # one model and grid per budget, as the assertions below were written for (trunk reuse has its own tests:
        # tests/test_trunk.py, including a reused sweep through joblib)
        "sweep.reuse=off",
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
    # Stage 2 was centred on stage 1's fit (sweeps.gate: the fitted law where its exponent's interval excludes zero,
    # else the prior's exponent through stage 1's fit), not on DeepSeek's laws.
    fitted = json.loads((root / "hparams" / "analysis" / "report.json").read_text())["hparams"]
    centring = json.loads((root / "hparams" / "analysis" / "centring.json").read_text())["hparams"]
    iso_lrs = {r["lr"] for r in results if r["sweep"] == "isoflop"}
    eta, fit = centring["eta_opt"], fitted["eta_opt"]
    lo, hi = fit["ci95"]["exponent"]
    assert eta["source"] == "fitted on stage 1" if not lo <= 0 <= hi else eta["source"].startswith("prior: DeepSeek's")
    centre = fitted_centre(fitted)  # the fitted and the centring law agree at the centre of stage 1's budgets
    assert eta["coef"] * centre ** eta["exponent"] == pytest.approx(fit["coef"] * centre ** fit["exponent"], rel=1e-6)
    assert len(iso_lrs) == 3 and all(
        r["lr"] == float(f"{eta['coef'] * r['budget'] ** eta['exponent']:.3g}")  # what the plan trained
        for r in results
        if r["sweep"] == "isoflop"
    )
    report = json.loads((root / "analysis" / "report.json").read_text())
    for law in (report["hparams"]["eta_opt"], report["hparams"]["B_opt"]):
        lo, hi = law["ci95"]["exponent"]
        assert lo <= law["exponent"] <= hi and lo < hi
    # Every IsoFLOP budget was analysed: fitted into the law, or named with its reason (at these tiny budgets the
    # optimum can lie below the smallest shape; the fit itself is tested on synthetic data in test_analysis.py).
    # (with the law skipped, its per-budget fits are kept as `isoflop_budgets`: the report and figures use them)
    budgets = report.get("isoflop", {}).get("budgets") or report.get("isoflop_budgets") or []
    fitted_budgets = {b["budget"] for b in budgets if b["used"] or b["warnings"]}
    reason = report["skipped"].get("isoflop", "")
    for C in MINI_STUDY["isoflop"]["budgets"]:
        # fitted, named with its reason, or counted among the usable ones of a law left out for too few of them
        counted = f"(of {len(MINI_STUDY['isoflop']['budgets'])})" in reason
        assert C in fitted_budgets or f"C={C:.2g}" in reason or counted, (C, fitted_budgets, reason)
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
    # plan.csv holds the planned runs and those sweep.extend added: a rerun replays the extension rounds from the
    # records and trains nothing
    n_hp, n_iso = (len((root / s / "plan.csv").read_text().splitlines()) - 1 for s in ("hparams", "isoflop"))
    assert again.returncode == 0 and n_hp >= 27, again.stdout[-2000:]
    for n in (n_hp, n_iso):
        assert f"{n} runs: 0 completed, 0 diverged, 0 failed, {n} skipped" in again.stdout, again.stdout[-2000:]
    assert "extend: round" not in again.stdout


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


@pytest.mark.slow
@pytest.mark.parametrize(
    "section, match",
    [
        ("isoflops: {budgets: [1e11, 2e11, 4e11]}", "unknown section 'isoflops': did you mean isoflop?"),
        ("isoflop: {budgets: [1e11, 2e11, 4e11], overrides: [+sweep.n_shape=5]}", "did you mean sweep.n_shapes?"),
        ("isoflop: {budgets: [1e11, 2e11, 4e11], overrides: [model.seq_ln=5]}", "stage isoflop: Could not override"),
        ("isoflop: {budgets: [1e11, -2e11, 4e11]}", "isoflop.budgets"),
        ("isoflop: {budgets: [1e11, 2e11]}", "fewer than analysis.min_budgets=3"),
    ],
)
def test_the_whole_study_file_is_validated_before_stage_1(tmp_path, section, match):
    """A typo in stage 2's section or overrides trained stage 1 in full and then died (KeyError: 'isoflop');
    +sweep.n_shape=5 was silently ignored."""
    path = tmp_path / "study.yaml"
    path.write_text(f"dir: {tmp_path / 'runs'}\nhparams: {{budgets: [1e10, 2e10, 4e10]}}\n{section}\n")
    for dry in ([], ["--dry-run"]):
        out = subprocess.run(
            [sys.executable, "-m", "scaling.study", str(path), *dry],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        err = out.stderr.strip()
        assert out.returncode == 2 and len(err.splitlines()) == 1 and match in err, err
        assert err.startswith(f"scaling.study: error: {path}")
    assert not (tmp_path / "runs").exists()  # nothing written


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
    monkeypatch.setattr(study, "plan_seconds", lambda d: (0.0, 0.0))
    root = tmp_path / "demo"
    study.run_study("cpu_demo", [], dry_run=True, out=root)
    assert "sweep.laws=deepseek" in calls[-1][1]  # nothing fitted yet
    fit = root / "hparams" / "analysis" / "report.json"
    fit.parent.mkdir(parents=True)
    fit.write_text("{}")
    calls.clear()
    study.run_study("cpu_demo", [], dry_run=True, out=root)
    centring = fit.parent / "centring.json"  # the laws the real run centres on (sweeps.gate)
    assert calls[-1][0] == "isoflop" and f"sweep.laws={centring}" in calls[-1][1] and centring.exists()
    assert "sweep.dry_run=true" in calls[-1][1]


def test_out_runs_the_same_study_on_another_corpus_in_another_directory(tmp_path, monkeypatch, capsys):
    """The study file's dir holds the first corpus's runs: the same study with data=wiki would plan the same run ids
    there and meet them as runs of another config (sweep.dir is the study's to set, not the command line's)."""
    import scaling.study as study

    stages: list[tuple[Path, list[str]]] = []
    monkeypatch.setattr(study, "sweep", lambda stage, budgets, d, overrides: stages.append((d, overrides)))
    monkeypatch.setattr(study, "plan_seconds", lambda d: (0.0, 0.0))  # (with reuse, without)
    study_file, wiki = tmp_path / "mini.yaml", tmp_path / "wiki"
    study_file.write_text(yaml.safe_dump(MINI_STUDY | {"dir": str(tmp_path / "study")}))
    study.main([str(study_file), "data=wiki", "--out", str(wiki), "--dry-run"])
    assert [d for d, _ in stages] == [wiki / "hparams", wiki / "isoflop"]
    assert all("data=wiki" in overrides for _, overrides in stages)
    assert (wiki / "study.json").exists() and not (tmp_path / "study").exists()
    with pytest.raises(SystemExit) as e:
        study.main([str(study_file), "data=wiki", "--out"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err == "scaling.study: error: --out needs a directory, e.g. --out runs/cpu_demo_wiki"


# ------------------------------------------------------------------------------------ a study owns its stages
def _live_process() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def _holder(pid: int) -> str:
    import socket

    from scaling.base.lock import _start_time

    return json.dumps({"host": socket.gethostname(), "pid": pid, "start": _start_time(pid), "since": "earlier"})


class _FakeSweep:
    """subprocess.Popen/run for `scaling.sweep`: a sweep that returns at once (exit 0) having trained nothing more,
    as one does when every run left is busy (held by another process) and it skipped them."""

    pid = 0
    returncode = 0

    def __init__(self, *a, **k):
        self.pid = os.getpid()

    def wait(self, timeout=None):
        return 0


def _study_with_stage_1(tmp_path) -> tuple[Path, Path]:
    """A study file and its stage-1 dir: a plan of two runs, `a` completed, `b` not finished."""
    root = tmp_path / "study"
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(MINI_STUDY | {"dir": str(root)}))
    hp = root / "hparams"
    for rid in ("a", "b"):
        (hp / rid).mkdir(parents=True)
    (hp / "plan.csv").write_text("run_id,steps\na,10\nb,10\n")
    (hp / "a" / "result.json").write_text(json.dumps({"status": "completed"}))
    return tmp_path / "mini.yaml", hp


def _run_study_main(study_file: Path, monkeypatch) -> list:
    import scaling.study as study
    import sweeps.owners as owners

    monkeypatch.setattr(owners, "GRACE_S", 0.3, raising=False)
    monkeypatch.setattr(subprocess, "Popen", _FakeSweep)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: _FakeSweep())
    fits: list = []
    fake = {"hparams": {"eta_opt": {"coef": 1.0, "exponent": -0.1}, "B_opt": {"coef": 1.0, "exponent": 0.3}}}
    monkeypatch.setattr(study, "analyse", lambda *a, **k: fits.append(a) or (fake, None))
    monkeypatch.setattr(study, "write_samples", lambda *a, **k: None)
    return fits


def test_a_rerun_never_fits_or_says_done_over_runs_another_process_trains(tmp_path, monkeypatch, capsys):
    import scaling.study as study

    study_file, hp = _study_with_stage_1(tmp_path)
    other = _live_process()  # e.g. a worker of the killed study's sweep, or a cluster job: it holds run b
    try:
        (hp / "b" / ".lock").write_text(_holder(other.pid))
        fits = _run_study_main(study_file, monkeypatch)
        with pytest.raises(SystemExit) as e:
            study.main([str(study_file)])
        out = capsys.readouterr()
        assert e.value.code == 1 and "study done" not in out.out and not fits
        assert "still being trained by other processes (b by pid" in out.err and len(out.err.splitlines()) == 1
    finally:
        other.kill()
        other.wait()
    # Its holder gone (the lock is stale now), the same rerun goes on: nothing else stands in its way here.
    with pytest.raises(SystemExit) as e:
        study.main([str(study_file)])
    assert "no finished record (e.g. b)" in capsys.readouterr().err  # the fake sweep trained nothing: said, not done


def test_a_rerun_refuses_while_a_killed_studys_sweep_still_runs(tmp_path, monkeypatch, capsys):
    import scaling.study as study

    study_file, hp = _study_with_stage_1(tmp_path)
    (hp / "b" / "result.json").write_text(json.dumps({"status": "completed"}))
    orphan = _live_process()  # the stage's sweep, left running (no PDEATHSIG on this system, say)
    try:
        (hp.parent / ".study").mkdir()
        info = json.loads(_holder(orphan.pid))
        (hp.parent / ".study" / "stage.json").write_text(json.dumps(info | {"stage": "hparams"}))
        fits = _run_study_main(study_file, monkeypatch)
        with pytest.raises(SystemExit) as e:
            study.main([str(study_file)])
        err = capsys.readouterr().err
        assert e.value.code == 1 and "stage hparams of a killed study is still running" in err and not fits
        (hp.parent / ".study" / "stage.json").unlink()
        (hp.parent / ".study" / ".lock").write_text(_holder(orphan.pid))  # a second study, alive
        with pytest.raises(SystemExit) as e:
            study.main([str(study_file)])
        err = capsys.readouterr().err
        assert e.value.code == 1 and "another scaling.study runs" in err and f"pid {orphan.pid}" in err
    finally:
        orphan.kill()
        orphan.wait()


@pytest.mark.slow
def test_a_killed_study_takes_its_stage_down_with_it(tmp_path, cache_dir):
    """kill -9 of scaling.study: its sweep (and the sweep's workers) stop too, and a rerun finds nothing running."""
    from sweeps.owners import check_no_live_stage, check_stage_free

    study = MINI_STUDY | {
        "dir": str(tmp_path / "study"),
        "overrides": [*MINI_STUDY["overrides"], "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    }
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(study))
    proc = subprocess.Popen(
        [sys.executable, "-m", "scaling.study", str(tmp_path / "mini.yaml")],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    hp = tmp_path / "study" / "hparams"
    deadline = time.time() + 300
    while not list(hp.glob("*/.lock")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert list(hp.glob("*/.lock")), "no run started training"
    sweeps = [int(c) for t in Path(f"/proc/{proc.pid}/task").glob("*") for c in (t / "children").read_text().split()]
    family = _descendants(proc.pid)
    assert sweeps and family, "the study runs its stage as child processes"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    try:
        deadline = time.time() + 30
        while any(_alive(p) for p in family) and time.time() < deadline:
            time.sleep(0.1)
        assert not [p for p in sweeps if _alive(p)], "the killed study's sweep goes on"
        # Nothing trains on: every run lock the stage holds names a dead process. (A joblib worker that had not
        # started a job yet may idle on until loky's own timeout: it holds nothing and is fed nothing.)
        check_stage_free("hparams", hp, grace_s=30)
        check_no_live_stage(tmp_path / "study", grace_s=0)
    finally:
        for p in family:  # leave no orphan behind, whatever the test finds
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def test_a_sweep_worker_whose_sweep_is_gone_never_starts_its_job(tmp_path):
    """A joblib worker still starting up when its sweep was killed is re-parented before its first job: the job's
    first line (run_watchdog) must stop it there instead of training an orphan run."""
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    code = "from scaling.base.lock import run_watchdog; run_watchdog(); print('started')"
    env = os.environ | {"SCALING_SWEEP_PID": str(dead.pid), "SCALING_SWEEP_HOST": socket.gethostname()}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == -signal.SIGKILL and "started" not in out.stdout
    # A sweep on another host (a pid means nothing here), or none at all: the job goes on.
    for extra in ({"SCALING_SWEEP_HOST": "elsewhere"}, {"SCALING_SWEEP_PID": ""}):
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env | extra, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0 and "started" in out.stdout


def test_between_stages_the_console_shows_the_laws_their_intervals_and_every_warning(tmp_path, monkeypatch, capsys):
    import scaling.study as study

    hp = {
        "eta_opt": {"coef": 0.02, "exponent": 0.199, "ci95": {"exponent": [-0.90, 0.66]}},
        "B_opt": {"coef": 0.5, "exponent": 0.3, "ci95": {"exponent": [0.12, 0.52]}},
        "budgets": [{"C": 1e10}, {"C": 1e11}],
    }
    report = {"hparams": hp, "skipped": {}, "warnings": ["x: 3 of 3 hparams grid(s) do not bracket their optimum"]}
    calls: list[tuple[str, list[str]]] = []

    def fit(paths, out, options, **outputs):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "report.json").write_text(json.dumps(report))
        return report, None

    monkeypatch.setattr(study, "sweep", lambda stage, budgets, d, overrides: calls.append((stage, overrides)))
    monkeypatch.setattr(study, "analyse", fit)
    study.run_study("cpu_demo", [], dry_run=False, out=tmp_path / "demo")
    out = capsys.readouterr().out
    between = out.split("== stage 1 fitted")[1].split("== stage 2/3")[0]
    assert "eta_opt = 0.02 * C^0.199   exponent 95% CI [-0.900, 0.660]" in between
    assert "B_opt = 0.5 * C^0.300   exponent 95% CI [0.120, 0.520]" in between
    assert "warning: x: 3 of 3 hparams grid(s) do not bracket their optimum" in between
    assert "warning: eta_opt fitted on stage 1" in between and "spans zero" in between
    assert "B_opt: fitted on stage 1" in between
    centring = tmp_path / "demo" / "hparams" / "analysis" / "centring.json"
    assert calls[1][0] == "isoflop" and f"sweep.laws={centring}" in calls[1][1]
    info = json.loads((tmp_path / "demo" / "study.json").read_text())  # what scaling.status and fit_runs read
    assert [s["kind"] for s in info["stages"]] == ["hparams", "isoflop"] and info["analysis"]["band"] == 0.01
    assert info["stages"][0]["runs_per_budget"] == 25 and info["stages"][1]["runs_per_budget"] == 9
