"""GPU sizing of a plan (sweeps.sizing): GPUs from the training state, hours against the launcher's time limit x
requeues, and a `cannot finish` line, with the reason, for every point that does not fit."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from model.shapes import ShapeRule, shape_for_M
from scaling.base.configs import conf_dir, load_model_config
from sweeps.plan import Point
from sweeps.sizing import JobLimits, gpus_needed, report, size_points

SLURM_1GPU = {"_target_": "x.SlurmLauncher", "gpus_per_node": 1, "nodes": 1, "timeout_min": 240, "max_num_timeout": 3}


def point(M: float, D: int, budget: float) -> Point:
    rule = ShapeRule.from_cfg("gpu", OmegaConf.load(conf_dir() / "sweep.yaml")["sweep"]["shape_rules"]["gpu"])
    shape = shape_for_M(M, rule, load_model_config("base_124m", vocab_size=32000, seq_len=2048))
    return Point(
        run_id=f"p{M:.0e}", sweep="isoflop", budget=budget, shape=shape, D=D, batch_size=2048 * 64, lr=1e-3, M_opt=M
    )


def test_gpus_follow_the_sharded_training_state():
    gib80 = 80 * 2**30
    assert gpus_needed(124e6, gib80) == 1
    assert gpus_needed(5.8e9, gib80) == 4  # 93 GB of state: more than 40% of one GPU, 23 GB each on 4
    assert gpus_needed(20e9, gib80) == 16  # beyond a node: whole nodes of 8


def test_launcher_limits_are_timeout_times_one_plus_requeues():
    limits = JobLimits.from_launcher(SLURM_1GPU)
    assert limits.gpus == 1 and limits.hours == pytest.approx(16.0)
    eight = JobLimits.from_launcher(SLURM_1GPU | {"gpus_per_node": 8, "nodes": 2, "timeout_min": 720})
    assert eight.gpus == 16 and eight.hours == pytest.approx(48.0)
    local = JobLimits.from_launcher({"_target_": "x.BasicLauncher"})
    assert local.gpus is None and local.hours is None


def test_a_point_that_cannot_finish_is_named_with_the_reason():
    small, big = point(1e9, 10**9, 1e18), point(1e10, 10**10, 3e20)
    seconds = [1e18 / 4e14, 3e20 / 4e14]  # FLOPs at the assumed 4e14 FLOP/s per GPU
    one_gpu = size_points([small, big], seconds, JobLimits.from_launcher(SLURM_1GPU), 80)
    assert one_gpu[0].problem is None
    assert one_gpu[1].problem is not None and "needs ~208 h on 1 GPU(s), a job may run 16 h" in one_gpu[1].problem
    lines = report(one_gpu, JobLimits.from_launcher(SLURM_1GPU), 4e14, 80)
    assert "1 of 2 runs cannot finish as configured" in lines[-2]
    assert lines[-1].startswith(f"warning: {big.run_id} cannot finish: it needs ~208 h")
    node = JobLimits.from_launcher(SLURM_1GPU | {"gpus_per_node": 8, "timeout_min": 720})
    on_a_node = size_points([small, big], seconds, node, 80)
    assert all(s.problem is None for s in on_a_node) and on_a_node[1].hours == pytest.approx(3e20 / 4e14 / 8 / 3600)
    assert "every run can finish as configured" in report(on_a_node, node, 4e14, 80)[-1]
    # Memory: a 5.8B-parameter model cannot train on one 80 GB GPU however long the job.
    huge = point(3e10, 10**9, 1e20)
    assert huge.shape.flops.params > 4e9
    [z] = size_points([huge], [1.0], JobLimits.from_launcher(SLURM_1GPU | {"timeout_min": 10**6}), 80)
    assert z.problem is not None and "needs >= 4 GPUs of 80 GB, a job has 1" in z.problem
