"""Quiet consoles: a launcher's line per job holds the run id and what varies (not every override), parallel workers
draw no progress bars, and a run's tqdm bar appears on a terminal only (never in a log file)."""

from __future__ import annotations

import importlib
import logging

import pytest
from hydra.core.utils import filter_overrides

from sweeps.console import LAUNCHER_LOGGERS, NO_BAR, quiet_jobs, short_job_lines, short_lines

# A study's shared overrides (conf/study/cpu_demo.yaml) and two hparams points' own (sweeps.plan.Point.overrides).
SHARED = [
    "data.vocab_size=512",
    "model.seq_len=64",
    "sweep.shape_rule=width",
    "train.threads=1",
    "train.eval_tokens=32768",
    "train.log_every=25",
    "sweep.pack=auto",
    "sweep.lr_points=5",
    "sweep.batch_points=5",
]


def point(run_id: str, batch: int, lr: float) -> list[str]:
    return [
        "model.n_layer=2",
        "model.d_model=24",
        "model.n_head=2",
        "model.n_kv_head=2",
        "model.ffn_hidden=null",
        f"train.tokens={batch * 200}",
        f"train.batch_size={batch}",
        f"optim.lr={lr!r}",
        f"run.id={run_id}",
        "run.sweep=hparams",
        "run.budget=6000000000.0",
    ]


JOBS = [
    SHARED + point("hp_C6e+09_B512_lr0.00139", 512, 0.00139),
    SHARED + point("hp_C6e+09_B1024_lr0.0005", 1024, 5e-4),
]


def test_a_job_line_is_its_run_id_and_the_keys_that_vary():
    long = " ".join(filter_overrides(JOBS[0]))
    short = short_lines(JOBS)[long]
    assert short == "run.id=hp_C6e+09_B512_lr0.00139 train.tokens=102400 train.batch_size=512 optim.lr=0.00139"
    assert len(long) > 3 * len(short)
    packs = [[*SHARED, *point(f"pack_hp_C6e+09_B{b}_x2", b, 1e-3), f"+pack.run_ids=['a{b}','b{b}']"] for b in (4, 8)]
    assert list(short_lines(packs).values()) == [  # a pack's members are in its id and the plan, not repeated
        "run.id=pack_hp_C6e+09_B4_x2 train.tokens=800 train.batch_size=4",
        "run.id=pack_hp_C6e+09_B8_x2 train.tokens=1600 train.batch_size=8",
    ]


@pytest.mark.parametrize("module", LAUNCHER_LOGGERS)
def test_the_launchers_log_their_job_lines_through_the_filtered_loggers(module, caplog):
    """The loggers named are the ones the launchers really use: a Hydra upgrade that renamed one fails here."""
    log = importlib.import_module(module).log
    assert log.name == module
    with caplog.at_level(logging.INFO, logger=module), short_job_lines(JOBS):
        log.info("\t#{} : {}".format(3, " ".join(filter_overrides(JOBS[1]))))  # as the launchers format it
        log.info("Launching 2 jobs locally")  # anything else passes unchanged
    assert [r.getMessage() for r in caplog.records] == [
        "\t#3 : run.id=hp_C6e+09_B1024_lr0.0005 train.tokens=204800 train.batch_size=1024 optim.lr=0.0005",
        "Launching 2 jobs locally",
    ]
    with caplog.at_level(logging.INFO, logger=module):  # the filter is gone after the launch
        log.info("\t#0 : " + " ".join(filter_overrides(JOBS[0])))
    assert "data.vocab_size=512" in caplog.records[-1].getMessage()


def test_parallel_jobs_train_without_a_bar_unless_asked():
    assert quiet_jobs(JOBS, parallel=False) == JOBS
    assert all(j[-1] == NO_BAR for j in quiet_jobs(JOBS, parallel=True))
    asked = [[*JOBS[0], "train.progress=true"]]
    assert quiet_jobs(asked, parallel=True) == asked


def test_a_runs_bar_is_not_written_to_a_log_file(make_cfg, tmp_path, capfd):
    from scaling.run.single import train_run

    cfg = make_cfg("train.tokens=8192", "train.batch_size=1024", "train.eval_tokens=4096", "train.progress=true")
    assert train_run(cfg, tmp_path / "run")["status"] == "completed"
    err = capfd.readouterr().err  # stderr is a pipe here, as in a sweep's log: no bar, no redraws
    assert "tok/s" not in err and "\r" not in err
