"""Every entry point accepts `--config-dir` as scaling.train does: the Hydra commands use it, scaling.study finds study
names there (and on hydra.searchpath) and hands it to its sweeps, analysis.fit and scaling.bench find model names
there, and the commands that read only run directories accept it and check it exists."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scaling.base.configs import conf_dir, load_study, pop_config_dir, resolve_name, search_dirs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def my_conf(tmp_path) -> Path:
    """A user's config folder laid out like conf/: a study and a model of their own."""
    conf = tmp_path / "my_conf"
    (conf / "study").mkdir(parents=True)
    text = (conf_dir() / "study" / "cpu_demo.yaml").read_text().replace("dir: runs/cpu_demo", "dir: runs/my_study")
    (conf / "study" / "my_study.yaml").write_text(text)
    (conf / "model").mkdir()
    model = (conf_dir() / "model" / "tiny.yaml").read_text().replace("n_layer: 2", "n_layer: 3")
    (conf / "model" / "my_model.yaml").write_text(model)
    return conf


def test_names_resolve_as_hydra_resolves_them(my_conf, tmp_path):
    assert pop_config_dir(["a=1", "--config-dir", "x", "b=2"]) == ("x", ["a=1", "b=2"])
    assert pop_config_dir(["-cd=y", "name"]) == ("y", ["name"])
    with pytest.raises(ValueError, match="--config-dir needs a folder"):
        pop_config_dir(["--config-dir"])
    dirs = search_dirs([f"hydra.searchpath=[file://{my_conf}]", "model=tiny"])
    assert dirs == [my_conf.resolve()] and search_dirs([], my_conf) == [my_conf.resolve()]
    assert load_study("my_study", dirs)["dir"] == "runs/my_study"
    # the shipped conf/ first, as in Hydra's search path: a shipped name is never shadowed
    assert resolve_name("model", "tiny", dirs) == "tiny"
    assert resolve_name("model", "my_model", dirs) == str(my_conf / "model" / "my_model.yaml")
    with pytest.raises(ValueError, match=r"unknown study 'nope'.*'my_study'.*my_conf/study/"):
        load_study("nope", dirs)
    with pytest.raises(ValueError, match="is not a directory"):
        search_dirs([], tmp_path / "missing")


def test_study_finds_its_name_in_the_config_dir_and_hands_it_to_every_sweep(my_conf, tmp_path, monkeypatch):
    import scaling.study as study

    calls: list[list[str]] = []
    monkeypatch.setattr(study, "sweep", lambda stage, budgets, d, overrides: calls.append([str(d), *overrides]))
    monkeypatch.setattr(study, "plan_seconds", lambda d: (0.0, 0.0))
    monkeypatch.chdir(tmp_path)
    study.main(["--config-dir", "my_conf", "my_study", "--dry-run"])
    assert len(calls) == 2 and all(c[0].startswith("runs/my_study/") for c in calls)
    assert all(f"--config-dir={my_conf.resolve()}" in c for c in calls)  # absolute: the sweeps may run elsewhere
    calls.clear()
    study.main(["my_study", f"hydra.searchpath=[file://{my_conf}]", "--dry-run"])
    assert len(calls) == 2 and all(f"hydra.searchpath=[file://{my_conf}]" in c for c in calls)


@pytest.mark.parametrize(
    "module", ["scaling.study", "scaling.sample", "scaling.status", "scaling.export", "analysis.fit", "scaling.bench"]
)
def test_a_missing_config_dir_is_one_line_exit_2(module, tmp_path, capsys):
    main = __import__(module, fromlist=["main"]).main
    positional = {"scaling.export": [str(tmp_path), "out"], "scaling.bench": []}.get(module, [str(tmp_path)])
    args = ["--config-dir", str(tmp_path / "missing"), *positional]
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "missing is not a directory" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "module, args, then",
    [
        ("scaling.sample", ["RUN"], "no config.yaml"),  # accepted; the run dir is what is wrong
        ("scaling.status", ["RUN"], "no run directories"),
        ("scaling.export", ["RUN", "OUT"], "no config.yaml"),
        ("analysis.fit", ["RUN", "--targets", "my_model"], "no readable result.json"),
    ],
)
def test_argparse_commands_accept_a_config_dir(module, args, then, my_conf, tmp_path, capsys):
    main = __import__(module, fromlist=["main"]).main
    args = [a.replace("RUN", str(tmp_path)).replace("OUT", str(tmp_path / "out")) for a in args]
    with pytest.raises(SystemExit) as e:
        main([*args, "--config-dir", str(my_conf)])
    assert e.value.code == 2 and then in capsys.readouterr().err


@pytest.mark.slow  # two interpreter starts with Hydra and torch (~5 s each on a quiet machine)
@pytest.mark.parametrize("module", ["scaling.train", "scaling.sweep"])
def test_hydra_commands_take_models_from_the_config_dir(module, my_conf):
    out = subprocess.run(
        [sys.executable, "-m", module, "--config-dir", str(my_conf), "model=my_model", "--cfg", "job"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "model:\n  n_layer: 3\n" in out.stdout


def test_fit_finds_target_models_in_the_config_dir(my_conf, tmp_path, capsys):
    import json

    from analysis.fit import main
    from analysis.synthetic import make_study, write_study

    root = write_study(make_study(budgets=(1e17, 1e18, 1e19)), tmp_path / "runs")
    args = [str(root), "--bootstrap", "0", "--no-plots", "--targets", "my_model", "deepseek_7b"]
    assert main([*args, "--config-dir", str(my_conf)]) == 0
    targets = json.loads((root / "analysis" / "report.json").read_text())["extrapolation"]
    assert {str(my_conf / "model" / "my_model.yaml"), "deepseek_7b"} <= set(targets)  # a found name is its path
    with pytest.raises(SystemExit) as e:  # without the folder the name is unknown, as before
        main(args)
    assert e.value.code == 2 and "unknown target 'my_model'" in capsys.readouterr().err
