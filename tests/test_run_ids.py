"""Hparams run directories sort as the grid does (batch size, then learning rate) in `ls`, and a sweep dir made with
the earlier ids (lr1.39e-03, B unpadded) keeps its runs: a rerun finds them under their old names."""

from __future__ import annotations

from decimal import Decimal

import pytest
from test_sweep_plan import plan_auto, tiny

from sweeps.plan import adopt_legacy_ids, fmt_lr, legacy_run_ids


@pytest.mark.parametrize("C", [6e9, 1e17, 2e19])
def test_ids_sort_by_batch_then_lr(C):
    points, _ = plan_auto("hparams", C, tiny(64 if C < 1e12 else 128))
    ids = [p.run_id for p in points]
    assert len(set(ids)) == len(ids) == 25
    assert sorted(ids) == [p.run_id for p in sorted(points, key=lambda p: (p.batch_size, p.lr))]
    assert len({p.batch_size for p in points}) == 5 and len({p.lr for p in points}) == 5
    for p in points:  # the lr in the name is the lr trained, exactly
        assert Decimal(p.run_id.split("_lr")[1]) == Decimal(repr(p.lr))


def test_fmt_lr_is_plain_decimals_that_order_as_the_rates():
    rates = [1e-05, 6.94e-04, 0.0005, 0.00139, 0.0139, 0.3]
    assert [fmt_lr(r) for r in rates] == ["0.00001", "0.000694", "0.0005", "0.00139", "0.0139", "0.3"]
    assert sorted(rates, key=fmt_lr) == sorted(rates)


def test_a_sweep_dir_with_legacy_ids_keeps_them(tmp_path):
    points, _ = plan_auto("hparams", 6e9, tiny(64))
    old = legacy_run_ids(points[3])[0]
    assert old != points[3].run_id and "e-0" in old  # e.g. hp_C6e+09_B128_lr1.39e-03
    (tmp_path / old).mkdir()
    adopted = adopt_legacy_ids(points, tmp_path)
    assert adopted[3].run_id == old and adopted[3].lr == points[3].lr
    assert [p.run_id for i, p in enumerate(adopted) if i != 3] == [p.run_id for i, p in enumerate(points) if i != 3]
    (tmp_path / points[3].run_id).mkdir()  # a run under the new name wins: nothing is ever trained twice
    assert adopt_legacy_ids(points, tmp_path)[3].run_id == points[3].run_id
    iso, _ = plan_auto("isoflop", 2e11, tiny(64))
    assert adopt_legacy_ids(iso, tmp_path) == iso and legacy_run_ids(iso[0]) == []


def test_an_extension_run_under_its_unpadded_id_keeps_it(tmp_path):
    points, _ = plan_auto("hparams", 6e9, tiny(64))
    p = next(p for p in points if len(str(p.batch_size)) < max(len(str(q.batch_size)) for q in points))
    unpadded = legacy_run_ids(p)[1]
    assert unpadded != p.run_id and unpadded.replace("_B", "_B0") == p.run_id
    (tmp_path / unpadded).mkdir()
    assert adopt_legacy_ids([p], tmp_path)[0].run_id == unpadded
