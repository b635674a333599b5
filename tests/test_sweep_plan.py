"""Sweep planning without training: laws, shape rule, IsoFLOP and hparams grids, budget parsing, bad input."""

import json
import math

import pytest
from omegaconf import OmegaConf

from model import ModelConfig, count_flops
from model.shapes import ShapeRule, largest_shape, make_shape, shape_for_M, smallest_shape
from scaling.base.configs import conf_dir
from sweeps.laws import Laws
from sweeps.plan import C_TOLERANCE, SweepSettings, choose_rule, plan, whole_steps
from sweeps.sweeper import split_arguments

CONF = conf_dir()
SWEEP = OmegaConf.load(CONF / "sweep.yaml").sweep
RULES = {n: ShapeRule.from_cfg(n, OmegaConf.to_container(r)) for n, r in SWEEP.shape_rules.items()}
SETTINGS = SweepSettings.from_cfg(SWEEP)
DEEPSEEK = Laws.deepseek()


def tiny(seq_len: int = 128) -> ModelConfig:
    node = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "tiny.yaml"))
    return ModelConfig.from_dict(node | {"vocab_size": 2048, "seq_len": seq_len})


def plan_auto(kind: str, C: float, base: ModelConfig, s: SweepSettings = SETTINGS):
    rule = choose_rule("auto", RULES, [(kind, C)], DEEPSEEK, base, s)
    return plan(kind, C, DEEPSEEK, rule, base, s), rule


def check_points(points, C, base, s=SETTINGS):
    for p in points:
        assert abs(p.shape.M * p.D / C - 1) <= C_TOLERANCE
        assert p.D % p.batch_size == 0 and p.batch_size % base.seq_len == 0
        assert p.steps >= s.min_steps
        assert p.shape.M == count_flops(p.shape.cfg).M  # the M a run will record


def test_deepseek_laws_and_report(tmp_path, capsys):
    assert DEEPSEEK.M_opt(1e17) == pytest.approx(1.4e8, rel=0.03)  # the paper's ~1.4e8 at 1e17
    assert DEEPSEEK.eta_opt(1e11) == pytest.approx(0.3118 * 1e11**-0.125)
    report = tmp_path / "report.json"
    report.write_text(
        json.dumps({"hparams": {"eta_opt": {"coef": 0.5, "exponent": -0.1}, "B_opt": {"coef": 0.3, "exponent": 0.3}}})
    )
    laws = Laws.load(str(report))
    assert laws.eta_opt(1e10) == pytest.approx(0.5 * 1e10**-0.1)
    assert laws.M_opt == DEEPSEEK.M_opt and "no M_opt" in capsys.readouterr().out
    report.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        Laws.load(str(report))


@pytest.mark.parametrize("rule", ["cpu", "gpu"])
def test_shape_for_M_is_nearest_under_the_rule(rule):
    r, base = RULES[rule], tiny()
    lo, hi = smallest_shape(r, base).M, largest_shape(r, base).M
    for target in (lo * 3, math.sqrt(lo * hi), hi / 3):
        s = shape_for_M(target, r, base)
        assert abs(math.log(s.M / target)) < math.log(1.3)
        assert r.aspect / r.aspect_tol <= s.d_model / s.n_layer <= r.aspect * r.aspect_tol
        assert s.d_model % s.n_head == 0 and s.n_head % s.n_kv_head == 0 and s.d_model // s.n_head in r.head_dims
        # no other depth under the rule gets closer at the same aspect band: spot-check the neighbours
        for L in (s.n_layer - 1, s.n_layer + 1):
            if r.min_layers <= L <= r.max_layers:
                for d in range(r.d_multiple, r.max_d + 1, r.d_multiple):
                    if r.aspect / r.aspect_tol <= d / L <= r.aspect * r.aspect_tol:
                        other = make_shape(L, d, r, base)
                        assert abs(math.log(other.M / target)) >= abs(math.log(s.M / target)) - 0.1 * math.log(
                            r.aspect_tol
                        )


def test_isoflop_1e17_brackets_deepseek_M_opt():
    base = tiny()
    points, rule = plan_auto("isoflop", 1e17, base)
    assert rule.name == "gpu" and len(points) >= 7
    Ms = sorted(p.shape.M for p in points)
    assert Ms[0] < 1.4e8 < Ms[-1] and math.log10(Ms[-1] / Ms[0]) >= 1.0
    # centred: the grid's geometric middle is within one grid step of M_opt
    assert abs(math.log10(math.sqrt(Ms[0] * Ms[-1]) / DEEPSEEK.M_opt(1e17))) < SETTINGS.span / (SETTINGS.n_shapes - 1)
    assert {p.lr for p in points} == {float(f"{DEEPSEEK.eta_opt(1e17):.2e}")}
    check_points(points, 1e17, base)


def test_budgets_1e9_to_1e23_plan():
    for e in range(9, 24):
        C = 10.0**e
        base = tiny(32 if e == 9 else 128)  # 1e9 FLOPs: a 32-token context (see the too-small test for 128)
        for kind in ("isoflop", "hparams"):
            points, rule = plan_auto(kind, C, base)
            assert len(points) >= (5 if kind == "isoflop" else 9), (kind, C)
            check_points(points, C, base)
        if e <= 14 or e >= 17:  # auto: CPU-sized models up to ~1e15-1e16 FLOPs, DeepSeek-like shapes above
            assert rule.name == ("cpu" if e <= 14 else "gpu")


def test_too_small_budget_names_the_smallest_feasible():
    base = tiny(128)
    with pytest.raises(ValueError, match=r"too small.*smallest feasible budget is ([0-9.e+]+)$") as e:
        plan("isoflop", 1e9, DEEPSEEK, RULES["cpu"], base, SETTINGS)
    least = float(str(e.value).rsplit(" ", 1)[1])
    assert "\n" not in str(e.value)
    check_points(plan("isoflop", least * 1.01, DEEPSEEK, RULES["cpu"], base, SETTINGS), least * 1.01, base)
    with pytest.raises(ValueError, match="too small"):
        plan("isoflop", least * 0.9, DEEPSEEK, RULES["cpu"], base, SETTINGS)


def test_hparams_grid_is_centred_on_the_prediction():
    base = tiny()
    points, rule = plan_auto("hparams", 1e17, base)
    lrs, batches = sorted({p.lr for p in points}), sorted({p.batch_size for p in points})
    assert len(lrs) >= 5 and len(batches) >= 5 and len(points) == len(lrs) * len(batches)
    assert math.sqrt(lrs[0] * lrs[-1]) == pytest.approx(DEEPSEEK.eta_opt(1e17), rel=0.01)
    assert math.sqrt(batches[0] * batches[-1]) == pytest.approx(DEEPSEEK.B_opt(1e17), rel=0.05)
    assert len({(p.shape.n_layer, p.shape.d_model) for p in points}) == 1
    assert points[0].shape == shape_for_M(DEEPSEEK.M_opt(1e17), rule, base)
    assert len({p.run_id for p in points}) == len(points)
    check_points(points, 1e17, base)


def test_whole_steps_relaxes_the_batch_to_hit_one_percent():
    b, steps = whole_steps(5000, 512, 128)  # 10 steps of 512 would be 2.4% off
    assert b % 128 == 0 and abs(b * steps / 5000 - 1) <= C_TOLERANCE


@pytest.mark.parametrize(
    "args, match",
    [
        (["+isoflop=abc"], "not a number"),
        (["+isoflop=-1e17"], "positive"),
        (["+hparams=0"], "positive"),
        (["+isoflop=inf"], "positive"),
        (["seed=1"], "nothing to sweep"),
        (["+isoflop=1e17", "seed=1,2"], "only sweeps"),
    ],
)
def test_bad_budgets(args, match):
    with pytest.raises(ValueError, match=match):
        split_arguments(args)


def test_budget_forms():
    wants, rest = split_arguments(["+isoflop=[1e11,3e11]", "+isoflop=1e12,3e12", "++hparams='1e17'", "seed=3"])
    assert wants == [("hparams", 1e17), ("isoflop", 1e11), ("isoflop", 3e11), ("isoflop", 1e12), ("isoflop", 3e12)]
    assert rest == ["seed=3"]


@pytest.mark.parametrize("key", ["n_shapes", "lr_points", "batch_points"])
def test_grid_needs_three_points(key):
    with pytest.raises(ValueError, match="at least 3 points"):
        SweepSettings.from_cfg(OmegaConf.to_container(SWEEP) | {key: 2})


def _report(tmp_path, **laws) -> str:
    """A report.json with the given {name: (coef, exponent)} laws (others fall back to DeepSeek's)."""
    sections: dict = {}
    for name, (coef, exponent) in laws.items():
        sections.setdefault("isoflop" if name == "M_opt" else "hparams", {})[name] = {
            "coef": coef,
            "exponent": exponent,
        }
    path = tmp_path / "report.json"
    path.write_text(json.dumps(sections))
    return str(path)


def test_absurd_laws_are_refused_or_named_before_planning(tmp_path):
    flat = 1e-12  # a law that is constant in practice (exponent 0 is refused as not a power law)
    assert DEEPSEEK.check([1e9, 1e17, 1e24]) == []  # the published laws pass everywhere they could plan
    for law, match in (
        ({"eta_opt": (1e3, flat)}, r"eta_opt\(C=1e\+10\) = 1e\+03 is not a learning rate"),
        ({"B_opt": (0.5, flat)}, "less than one token"),
        ({"M_opt": (1e11, flat)}, "less than one token at C"),
    ):
        laws = Laws.load(_report(tmp_path, **law))
        with pytest.raises(ValueError, match=match):
            laws.check([1e10])
    laws = Laws.load(_report(tmp_path, eta_opt=(0.5, flat), B_opt=(1e12, flat), M_opt=(10.0, flat)))
    warned = "\n".join(laws.check([1e10]))
    assert "eta_opt(C=1e+10) = 0.5 is outside" in warned and "B_opt(C=1e+10) = 1e+12 tokens per step" in warned
    assert "tokens per parameter" in warned and str(tmp_path / "report.json") in warned


def test_a_batch_the_plan_lowers_from_the_law_is_said(tmp_path):
    base = tiny()
    laws = Laws.load(_report(tmp_path, B_opt=(1e12, 1e-12)))
    rule = choose_rule("auto", RULES, [("isoflop", 1e15)], laws, base, SETTINGS)
    points = plan("isoflop", 1e15, laws, rule, base, SETTINGS)
    B = points[0].batch_size
    assert B < 1e12 and all(p.batch_size == B for p in points)
    assert any(
        "B_opt(C=1e+15)=1e+12 leaves the largest model fewer than" in n and f"lowered to {B}" in n
        for n in points[0].notes
    ), points[0].notes
