"""A sweep's closed loop, without training: typed sweep.* keys, seeds, grids extended beyond an edge holding the best
run (on synthetic loss surfaces), feasibility said before spending, the laws a study centres its next stage on, and
the vocabulary a plan is made with."""

from __future__ import annotations

import json
import math

import pytest
from omegaconf import OmegaConf

from model import ModelConfig, count_flops
from model.shapes import ShapeRule, smallest_shape
from scaling.base.configs import conf_dir
from scaling.base.laws import DEEPSEEK, PowerLaw
from sweeps import feasible, gate
from sweeps.config import SweepConfig, check_overrides
from sweeps.extend import extend, unbracketed
from sweeps.laws import Laws
from sweeps.packing import group_key
from sweeps.plan import Point, SweepSettings, hparams_points, isoflop_points, plan
from sweeps.seeds import point_losses, with_seeds

CONF = conf_dir()
NODE = OmegaConf.to_container(OmegaConf.load(CONF / "sweep.yaml").sweep, resolve=True)
RULES = {n: ShapeRule.from_cfg(n, r) for n, r in NODE["shape_rules"].items()}
S3 = SweepSettings(n_shapes=5, span=1.0, lr_points=3, batch_points=3, min_steps=10)


def tiny(seq_len: int = 32, vocab: int = 512) -> ModelConfig:
    node = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "tiny.yaml"))
    return ModelConfig.from_dict(node | {"vocab_size": vocab, "seq_len": seq_len})


def law_with(eta: float | None = None, M: float | None = None) -> Laws:
    """DeepSeek's laws with eta_opt's or M_opt's coefficient scaled: grids centred where a test wants them."""
    d = Laws.deepseek()
    return Laws(
        PowerLaw(d.eta_opt.coef * (eta or 1), d.eta_opt.exponent),
        d.B_opt,
        PowerLaw(d.M_opt.coef * (M or 1), d.M_opt.exponent),
        source="test",
    )


# ------------------------------------------------------------------------------------------ typed sweep.* keys
def test_sweep_config_defaults_are_the_yamls():
    sc = SweepConfig.from_cfg(NODE)  # every key of conf/sweep.yaml is a SweepConfig key
    default = SweepConfig(shape_rules=NODE["shape_rules"])
    for key in NODE:
        if key not in ("shape_rules", "throughput_cache"):
            assert getattr(default, key) == getattr(sc, key), key  # no default that contradicts the YAML
    assert sc.extend == 2 and sc.seeds == 1 and sc.settings.n_shapes == 9 and set(sc.rules) == {"cpu", "width", "gpu"}


@pytest.mark.parametrize("override", ["+sweep.n_shape=5", "sweep.n_shape=5", "++sweep.n_shape=5"])
def test_a_sweep_key_typo_names_the_nearest_key(override):
    with pytest.raises(ValueError, match=r"^sweep\.n_shape is not a sweep key: did you mean sweep\.n_shapes\?"):
        check_overrides(["model.n_layer=2", override])
    check_overrides(["sweep.n_shapes=5", "+sweep.shape_rules.mine.min_d=8", "sweep.extend=0", "seed=3"])
    with pytest.raises(ValueError, match=r"did you mean sweep\.n_shapes\?"):
        SweepConfig.from_cfg(NODE | {"n_shape": 5})  # added with `+`: no longer silently ignored


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("extend", -1, "sweep.extend=-1 must be a number of rounds"),
        ("seeds", 0, "sweep.seeds=0 must be an integer from 1"),
        ("pack", "sometimes", "sweep.pack='sometimes'"),
        ("lr_points", 2, "at least 3 points"),
        ("shape_rule", "nope", "sweep.shape_rule='nope' is unknown"),
        ("gpu_memory_gb", 0, "sweep.gpu_memory_gb=0.0 must be > 0"),
        ("reuse", "yes", "sweep.reuse='yes'"),
    ],
)
def test_bad_sweep_values_are_one_line_errors(key, value, match):
    with pytest.raises(ValueError, match=match) as e:
        SweepConfig.from_cfg(NODE | {key: value})
    assert "\n" not in str(e.value)


def test_extend_off_spellings():
    assert SweepConfig.from_cfg(NODE | {"extend": False}).extend == 0
    assert SweepConfig.from_cfg(NODE | {"extend": "off"}).extend == 0


# ------------------------------------------------------------------------------------------------------- seeds
def test_seeds_repeat_every_point_and_keep_the_first_seeds_ids():
    base = hparams_points(3e9, Laws.deepseek(), RULES["cpu"], tiny(), S3)
    assert with_seeds(base, 1, 1337) == base and not any("seed=" in o for p in base for o in p.overrides())
    pts = with_seeds(base, 3, 1337)
    assert len(pts) == 3 * len(base)
    assert [p.run_id for p in pts[: len(base)]] == [p.run_id for p in base]  # raising sweep.seeds reuses runs
    assert pts[len(base)].run_id == base[0].run_id + "_seed1338" and pts[-1].run_id.endswith("_seed1339")
    assert "seed=1338" in pts[len(base)].overrides() and "seed=1337" in pts[0].overrides()
    assert group_key(pts[0]) != group_key(pts[len(base)])  # a pack never mixes seeds
    loss = {p.run_id: 3.0 + 0.01 * (p.seed - 1337) for p in pts}
    means = point_losses(base, 3, 1337, loss)
    assert means[base[0].run_id] == pytest.approx(3.01)
    loss[pts[len(base)].run_id] = None  # a diverged repeat
    del loss[pts[-1].run_id]  # a repeat not finished yet
    means = point_losses(base, 3, 1337, loss)
    assert means[base[0].run_id] == math.inf and base[-1].run_id not in means


# ------------------------------------------------------------------------------------------------------ extend
def bowl(lr_star: float, B_star: float):
    """A loss surface with its optimum at (lr_star, B_star): quadratic in log10 lr and log10 B."""
    return lambda p: 3 + math.log10(p.lr / lr_star) ** 2 + 0.3 * math.log10(p.batch_size / B_star) ** 2


def rounds(points: list[Point], f, n: int, rule: ShapeRule, base: ModelConfig) -> tuple[list[Point], int, list]:
    """Train (f gives each point's loss) and extend, up to n rounds, as the sweeper does."""
    points, stuck = list(points), []
    for r in range(1, n + 1):
        ext = extend(points, {p.run_id: f(p) for p in points}, rule, base, S3, r)
        stuck += ext.stuck
        if not ext.points:
            return points, r - 1, stuck
        points += ext.points
    return points, n, stuck


def test_an_hparams_grid_is_extended_until_it_brackets_its_optimum():
    base = tiny()
    grid = hparams_points(3e9, Laws.deepseek(), RULES["cpu"], base, S3)
    lrs = sorted({p.lr for p in grid})
    Bs = sorted({p.batch_size for p in grid})
    f = bowl(lrs[-1] * 8, Bs[1])  # two grid steps (sqrt 8) above the largest lr
    two, n2, _ = rounds(grid, f, 2, RULES["cpu"], base)
    assert n2 == 2 and [g.edges for g in unbracketed(two, {p.run_id: f(p) for p in two})] == [[("lr", "high")]]
    three, n3, stuck = rounds(grid, f, 5, RULES["cpu"], base)
    assert n3 == 3 and not unbracketed(three, {p.run_id: f(p) for p in three}) and not stuck
    new_lrs = sorted({p.lr for p in three})
    assert len(new_lrs) == 6 and all(
        b / a == pytest.approx(math.sqrt(8), rel=0.01) for a, b in zip(new_lrs, new_lrs[1:])
    )
    assert {(p.batch_size, p.lr) for p in three} == {(b, lr) for b in Bs for lr in new_lrs}  # still a full grid
    added = [p for p in three if p.added]
    assert len(added) == 9 and all("largest lr" in p.added and p.added.startswith("round ") for p in added)
    for p in added:  # the same budget, in whole steps, as every planned point
        assert p.D % p.batch_size == 0 and abs(p.shape.M * p.D / 3e9 - 1) <= 0.01 and p.notes == ()


def test_both_axes_extend_and_the_grid_stays_rectangular():
    base = tiny()
    grid = hparams_points(3e9, Laws.deepseek(), RULES["cpu"], base, S3)
    lrs, Bs = sorted({p.lr for p in grid}), sorted({p.batch_size for p in grid})
    f = bowl(lrs[0] / 3, Bs[-1] * 2)
    ext = extend(grid, {p.run_id: f(p) for p in grid}, RULES["cpu"], base, S3, 1)
    cells = {(p.batch_size, p.lr) for p in grid + ext.points}
    assert len(cells) == 16 and len(ext.points) == 7  # a new lr and a new batch size, and their corner
    assert len({p.lr for p in ext.points}) == 4 and max(p.batch_size for p in ext.points) > Bs[-1]
    assert "smallest lr, its largest batch size" in ext.added[0]
    # every id of the widened grid spells its batch with the grid's own padding, so run dirs sort by batch
    widths = {len(p.run_id.split("_B")[1].split("_")[0]) for p in grid + ext.points if p.batch_size < Bs[-1]}
    assert widths == {len(str(Bs[-1]))}


def test_a_batch_of_one_sequence_cannot_shrink_and_says_so():
    base = tiny()
    grid = hparams_points(3e9, Laws.deepseek(), RULES["cpu"], base, S3)
    smallest = min(p.batch_size for p in grid)
    one = [p for p in grid if p.batch_size == smallest]
    f = bowl(sorted({p.lr for p in grid})[1], base.seq_len / 10)
    loss = {p.run_id: f(p) for p in grid}
    if smallest > base.seq_len:  # shrink once to one sequence, then it is stuck
        grid += extend(grid, loss, RULES["cpu"], base, S3, 1).points
        loss = {p.run_id: f(p) for p in grid}
    assert one
    ext = extend(grid, loss, RULES["cpu"], base, S3, 2)
    assert not ext.points and "one sequence (seq_len=32)" in ext.stuck[0]


def iso_grid(C: float, base: ModelConfig) -> list[Point]:
    return isoflop_points(C, law_with(M=3.0), RULES["cpu"], base, S3)


def test_an_isoflop_profile_is_extended_below_its_smallest_size():
    base = tiny()
    grid = iso_grid(1e12, base)
    Ms = sorted(p.shape.M for p in grid)
    assert Ms[0] > 4 * smallest_shape(RULES["cpu"], base).M  # room below for the rule
    f = lambda p: 3 + math.log10(p.shape.M / (Ms[0] / 2)) ** 2  # noqa: E731 - the vertex below the grid
    out, n, stuck = rounds(grid, f, 4, RULES["cpu"], base)
    assert n >= 1 and not stuck and not unbracketed(out, {p.run_id: f(p) for p in out})
    added = [p for p in out if p.added]
    assert all(p.shape.M < Ms[0] and p.lr == grid[0].lr and "smallest model" in p.added for p in added[:1])
    for p in added:
        assert abs(p.shape.M * p.D / 1e12 - 1) <= 0.01 and p.run_id.startswith("iso_C1e+12_L")


def test_an_off_centre_vertex_extends_the_profile():
    base = tiny()
    grid = iso_grid(1e12, base)
    Ms = sorted(p.shape.M for p in grid)
    x0, x1, second = math.log10(Ms[0]), math.log10(Ms[-1]), math.log10(Ms[1])
    star = x0 + 0.55 * (second - x0)  # nearer the second size than the first: the best run is not at the edge ...
    assert (star - x0) / (x1 - x0) < 1 / 6  # ... but the vertex is in the outer sixth: analysis.fit would drop it
    star = 10**star
    f = lambda p: 3 + math.log10(p.shape.M / star) ** 2  # noqa: E731
    ext = extend(grid, {p.run_id: f(p) for p in grid}, RULES["cpu"], base, S3, 1)
    assert len(ext.points) == 1 and ext.points[0].shape.M < Ms[0] and "outer sixth" in ext.added[0]


def test_a_profile_at_the_rules_smallest_model_is_stuck_and_says_what_would_bracket_it():
    base = tiny()
    grid = isoflop_points(5e9, Laws.deepseek(), RULES["cpu"], base, S3)  # slid to the rule's smallest models
    f = lambda p: 3 + math.log10(p.shape.M / 1e3) ** 2  # noqa: E731 - a vertex far below any model
    ext = extend(grid, {p.run_id: f(p) for p in grid}, RULES["cpu"], base, S3, 1)
    assert not ext.points and "smallest model (L1 d16" in ext.stuck[0] and "min_d" in ext.stuck[0]


# --------------------------------------------------------------------------------------------------- feasible
def test_a_budget_whose_vertex_lies_below_every_profile_is_a_warning_before_training():
    base, rule = tiny(64), RULES["width"]
    s = SweepSettings(n_shapes=5, span=1.0, min_steps=10)
    laws = Laws.deepseek()
    lines = feasible.report(
        [("isoflop", 5e10)], plan("isoflop", 5e10, laws, rule, base, s), laws, rule, base, s, 10**6, "x"
    )
    warn = [x for x in lines if x.startswith("warning: C=5e+10 cannot bracket a vertex")]
    assert len(warn) == 1 and "smaller smallest shape" in warn[0] and "larger budget (C >=" in warn[0]
    assert f"vocab {base.vocab_size}" in warn[0] and "seq_len=64" in warn[0]
    C_ok = float(warn[0].split("larger budget (C >= ")[1].split(")")[0])
    ok = feasible.report(
        [("isoflop", C_ok * 1.5)], plan("isoflop", C_ok * 1.5, laws, rule, base, s), laws, rule, base, s, 10**9, "x"
    )
    assert not any("cannot bracket" in x for x in ok)


def test_a_fitted_laws_interval_is_checked_against_the_grid():
    base, rule = tiny(64), RULES["width"]
    s = SweepSettings(n_shapes=5, span=1.0, lr_points=3, batch_points=3, min_steps=10)
    d = Laws.deepseek()
    wide = PowerLaw(d.eta_opt.coef, -0.1, ci95={"exponent": [-0.9, 0.66]})
    laws = Laws(wide, d.B_opt, d.M_opt, source="test", centre={"eta_opt": 1e10})
    pts = plan("hparams", 1e12, laws, rule, base, s)
    lines = feasible.report([("hparams", 1e12)], pts, laws, rule, base, s, 10**9, "x")
    assert any(x.startswith("warning: eta_opt's exponent 95% CI [-0.900, 0.660]") and "spans zero" in x for x in lines)
    assert any(x.startswith("note: C=1e+12 may not bracket eta_opt") for x in lines)
    lo, hi = feasible.interval(wide, 1e12, 1e10)
    assert lo == pytest.approx(wide(1e10) * 100**-0.9) and hi == pytest.approx(wide(1e10) * 100**0.66)


def test_the_largest_clean_budget_matches_the_plans_epochs():
    base, rule = tiny(64), RULES["width"]
    s = SweepSettings(n_shapes=5, span=1.0, min_steps=10)
    laws, T = Laws.deepseek(), 2_000_000
    for kind in ("isoflop", "hparams"):
        C = feasible.largest_clean_budget(kind, laws, rule, base, s, T)
        inside = max(p.D for p in plan(kind, C * 0.8, laws, rule, base, s)) / T
        outside = max(p.D for p in plan(kind, C * 1.25, laws, rule, base, s)) / T
        assert inside < 1.05 and outside > 0.95, (kind, C, inside, outside)


# ------------------------------------------------------------------------------------------------------- gate
def fitted_report(eta_ci, B_ci) -> dict:
    budgets = [{"C": c, "used": True} for c in (1e10, 1e11)]
    return {
        "hparams": {
            "eta_opt": {"coef": 0.02, "exponent": 0.199, "ci95": {"exponent": eta_ci}},
            "B_opt": {"coef": 0.5, "exponent": 0.3, "ci95": {"exponent": B_ci}},
            "budgets": budgets,
        },
        "skipped": {},
    }


def test_the_next_stage_is_centred_on_usable_laws_else_the_prior_named(tmp_path):
    report = fitted_report([-0.90, 0.66], [0.12, 0.52])
    laws, lines = gate.choose(report)
    eta, B, M = laws["hparams"]["eta_opt"], laws["hparams"]["B_opt"], laws["isoflop"]["M_opt"]
    centre = math.sqrt(1e10 * 1e11)
    assert eta["exponent"] == DEEPSEEK["eta_opt"].exponent  # the prior's exponent ...
    assert eta["coef"] * centre ** eta["exponent"] == pytest.approx(0.02 * centre**0.199)  # ... through the fit
    assert B == {
        "coef": 0.5,
        "exponent": 0.3,
        "ci95": {"exponent": [0.12, 0.52]},
        "source": "fitted on stage 1",
        "centre_C": pytest.approx(centre),
    }
    assert M["exponent"] == DEEPSEEK["M_opt"].exponent and "prior" in M["source"]
    warn = [x for x in lines if x.startswith("warning:")]
    assert len(warn) == 1 and "eta_opt" in warn[0] and "[-0.900, 0.660] spans zero" in warn[0]
    path = tmp_path / "analysis" / "report.json"
    path.parent.mkdir()
    path.write_text(json.dumps(report))
    centring, _ = gate.write(path)
    read = Laws.load(str(centring))  # sweep.laws reads it like a report.json
    assert read.eta_opt(1e12) == pytest.approx(eta["coef"] * 1e12 ** eta["exponent"])
    assert read.B_opt.ci95 == {"exponent": [0.12, 0.52]} and read.centre["B_opt"] == pytest.approx(centre)
    assert read.name("eta_opt").startswith("prior: DeepSeek's exponent") and read.name("B_opt") == "fitted on stage 1"


# ------------------------------------------------------------------------------------------------- vocabulary
def test_the_plan_uses_the_tokenizers_vocabulary(tmp_path, make_cfg):
    """data.tokenizer=PATH/tokenizer.json planned with the default data.vocab_size (2048): N2, the throughput key,
    time estimates and GPU sizing were all of another model than the runs'."""
    from hydra import compose, initialize_config_dir

    from scaling.base.configs import node_dict
    from sweeps.sweeper import ScalingSweeper
    from tests.test_data_sources import byte_bpe, prose, widen

    small = byte_bpe(tmp_path / "small.json", [prose(i, 2000) for i in range(10)], vocab=300)
    tok = widen(small, tmp_path / "tokenizer.json", 4096)
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(
            "sweep", overrides=["data=files", f"data.path={tmp_path}", f"data.tokenizer={tok}", "model.seq_len=64"]
        )
    assert cfg.data.vocab_size == 2048  # what the config says; the tokenizer has 4096 ids
    sweeper = ScalingSweeper()
    sweeper.config, sweeper.sc = cfg, SweepConfig.from_cfg(node_dict(cfg.sweep))
    points, _, _ = sweeper.make_plan([("isoflop", 1e13)])
    for p in points:
        assert p.shape.cfg.vocab_size == 4096
        assert p.row()["N2"] == count_flops(p.shape.cfg).N2
    big = points[0].shape.flops
    assert big.N2 > count_flops(ModelConfig.from_dict({**vars(points[0].shape.cfg), "vocab_size": 2048})).N2
