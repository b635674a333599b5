"""sweep.reuse's plans (sweeps.reuse), without training: which runs share a trunk, with what lr and batch, and what a
sweep's and a study's estimates say it saves. That a branch records what its run trained alone records is
tests/test_trunk.py's."""

from __future__ import annotations

import csv
import math

import pytest
from hydra import compose, initialize_config_dir

from scaling.base.cli import fmt_seconds
from scaling.base.configs import node_dict
from sweeps.config import SweepConfig
from sweeps.extend import extend
from sweeps.plan import Point, SweepSettings
from sweeps.reuse import LATTICE, parse_reuse, plan_trunks, reuse_cost
from sweeps.seeds import with_seeds
from sweeps.sweeper import ScalingSweeper
from tests.helpers import CONF

# The CPU demo's IsoFLOP stage (conf/study/cpu_demo.yaml): its budgets, shapes and data settings.
DEMO = ["data.vocab_size=512", "model.seq_len=64", "sweep.shape_rule=width", "sweep.n_shapes=9", "sweep.span=1.0"]
DEMO_ISOFLOP = [("isoflop", C) for C in (2e11, 5e11, 1.2e12)]


def sweeper(*overrides: str) -> ScalingSweeper:
    """A sweeper with the composed sweep config, as `python -m scaling.sweep` gives it (nothing launched)."""
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose("sweep", overrides=list(overrides))
    s = ScalingSweeper()
    s.config, s.sc = cfg, SweepConfig.from_cfg(node_dict(cfg.sweep))
    return s


def demo_plan(reuse: str, seeds: int = 1) -> tuple[list[Point], list, ScalingSweeper]:
    """The demo's IsoFLOP points and trunks as the sweeper plans them under sweep.reuse=<reuse>."""
    s = sweeper(*DEMO, f"sweep.reuse={reuse}")
    kinds = parse_reuse(s.sc.reuse, str(s.config.optim.schedule))
    points = with_seeds(s.make_plan(DEMO_ISOFLOP, kinds)[0], seeds, int(s.config.seed))
    warmup = (float(s.config.optim.warmup_frac), int(s.config.optim.max_warmup_steps), None)
    points, trunks = plan_trunks(points, *warmup, kinds=kinds)
    return points, trunks, s


def shape(p: Point) -> tuple[int, int]:
    return p.shape.n_layer, p.shape.d_model


def test_sweep_reuse_names_the_kinds_of_sweep_that_share_trunks():
    assert parse_reuse("auto", "multistep") == {"hparams"}
    assert parse_reuse("all", "multistep") == {"hparams", "isoflop"}
    assert parse_reuse("off", "multistep") == set()
    assert parse_reuse("auto", "cosine") == set()  # no first stage to reuse
    with pytest.raises(ValueError, match=r"sweep.reuse=all needs optim.schedule=multistep"):
        parse_reuse("all", "cosine")


def test_isoflop_profiles_share_trunks_across_budgets_with_reuse_all():
    points, trunks, s = demo_plan("all")
    budgets: dict[tuple[int, int], list[int]] = {}
    for i, p in enumerate(points):
        budgets.setdefault(shape(p), []).append(i)
    recurring = {k: v for k, v in budgets.items() if len(v) > 1}
    assert recurring, "the demo's profiles share no shape: nothing to test"
    in_trunk = {i for t in trunks for i in t.members}
    for t in trunks:
        runs = [points[i] for i in t.members]
        assert len({p.budget for p in runs}) == len(runs) >= 2  # one branch per budget
        assert len({(shape(p), p.lr, p.batch_size, p.warmup) for p in runs}) == 1  # they differ only in D
        assert [p.steps for p in runs] == sorted(p.steps for p in runs)
        assert t.id.startswith("trunk_iso_")
    # the demo's budgets span less than sweep.reuse_span: every recurring shape is one trunk
    assert math.log10(max(C for _, C in DEMO_ISOFLOP) / min(C for _, C in DEMO_ISOFLOP)) <= s.sc.reuse_span
    assert all(set(v) <= in_trunk for v in recurring.values()) and len(trunks) == len(recurring)
    assert all(p.steps >= s.sc.min_steps for p in points)


def test_each_seed_is_its_own_trunk_in_its_own_directory():
    points, trunks, _ = demo_plan("all", seeds=2)
    assert len({t.id for t in trunks}) == len(trunks)  # two trunks in one directory: the second is locked out
    assert len({points[t.members[0]].seed for t in trunks}) == 2
    for t in trunks:
        assert len({points[i].seed for i in t.members}) == 1


def test_a_shared_shape_trains_at_the_laws_of_the_mean_of_its_budgets_on_one_lattice():
    points, _, s = demo_plan("all")
    laws = s.make_plan(DEMO_ISOFLOP[:1])[2]
    seq_len = int(s.config.model.seq_len)
    for key in {shape(p) for p in points}:
        runs = [p for p in points if shape(p) == key]
        mean = math.exp(sum(math.log(p.budget) for p in runs) / len(runs))
        lr, batch = runs[0].lr, runs[0].batch_size
        digits = math.log(1.005, LATTICE)  # lr is printed and trained with 3 significant digits: within 0.5%
        assert abs(math.log(lr / laws.eta_opt(mean), LATTICE)) <= 0.5 + digits  # the nearest lattice point
        assert abs(round(math.log(lr, LATTICE)) - math.log(lr, LATTICE)) <= digits  # on the lattice
        lowered = any("its batch lowered" in n for n in runs[0].notes)
        half_step = LATTICE**0.5 * (1 + seq_len / batch)  # the lattice, then a multiple of seq_len
        assert lowered or 1 / half_step <= batch / laws.B_opt(mean) <= half_step


def test_reuse_auto_leaves_isoflop_profiles_as_deepseek_plans_them():
    auto, trunks, _ = demo_plan("auto")
    off, _, _ = demo_plan("off")
    assert not trunks and auto == off
    for C in {p.budget for p in off}:  # one lr and one batch per budget
        assert len({(p.lr, p.batch_size) for p in off if p.budget == C}) == 1


def test_a_shared_profile_extends_with_the_lr_and_batch_of_its_edge_model():
    points, _, s = demo_plan("all")
    C = max(p.budget for p in points)
    profile = sorted((p for p in points if p.budget == C), key=lambda p: p.shape.M)
    low, top = profile[0], profile[-1]
    assert (low.lr, low.batch_size) != (top.lr, top.batch_size), "one lr and batch at this budget: nothing to test"
    settings = SweepSettings(**{**vars(s.sc.settings), "min_steps": 1})
    rule, base = s.sc.rules["width"], s.base
    for edge, slope in ((top, -1), (low, 1)):  # the vertex beyond the largest, then the smallest model
        loss = {p.run_id: 3 + slope * math.log10(p.shape.M) for p in profile}
        new = extend(profile, loss, rule, base, settings, 1).points
        assert new and new[0].lr == edge.lr and new[0].batch_size == edge.batch_size


PLAN_HEAD = ["run_id", "D", "est_seconds", "gpu_hours", "trunk", "shared_tokens"]


def test_the_study_estimate_counts_what_reuse_saves_as_the_sweep_line_does(tmp_path, monkeypatch, capsys):
    """A trunk with two branches (the shorter shares 80% of its tokens) and a run alone: with reuse the longest
    branch is trained once, whole, and the shorter pays only its decay stages."""
    import scaling.study as study

    short, long_, alone = ("a", 1000, 10.0, "t", 800), ("b", 2000, 20.0, "t", 1600), ("c", 500, 5.0, "", 0)
    table = [dict(zip(PLAN_HEAD, (r, D, est, est / 3600, t, sh))) for r, D, est, t, sh in (short, long_, alone)]
    with_reuse = long_[2] + short[2] * (1 - short[4] / short[1]) + alone[2]
    without = short[2] + long_[2] + alone[2]
    assert reuse_cost(table, "est_seconds") == pytest.approx(with_reuse)
    assert reuse_cost(table, "D") == long_[1] + (short[1] - short[4]) + alone[1]  # tokens trained

    def sweep(stage, budgets, sweep_dir, overrides):  # each stage's plan.csv, as its dry run writes it
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with (sweep_dir / "plan.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=PLAN_HEAD)
            w.writeheader()
            w.writerows(table)

    monkeypatch.setattr(study, "sweep", sweep)
    study.run_study("cpu_demo", [], dry_run=True, out=tmp_path / "demo")
    hours = f"{2 * with_reuse / 3600:,.1f} device-hours in all with reuse, {2 * without / 3600:,.1f} without"
    assert hours in capsys.readouterr().out
    ScalingSweeper._print_reuse(table, trunks=1)
    assert f"est. {fmt_seconds(with_reuse)} vs {fmt_seconds(without)} run after run" in capsys.readouterr().out
