"""Shape rule: which (n_layer, d_model, n_head, n_kv_head) a sweep trains for a target M (non-embedding FLOPs/token).

Among all n_layer in [min_layers, max_layers] and d_model multiples of d_multiple whose aspect ratio d_model/n_layer
lies within a factor aspect_tol of `aspect`, pick the shape whose exact M (model.count_flops) is nearest the target,
scored |ln(M/M_target)| + 0.1 |ln(aspect/target aspect)|: missing M dominates, the aspect breaks near-ties.
Heads: the largest head_dim in head_dims that leaves >= min_heads heads; KV heads: n_head / kv_group (GQA when > 1).
FFN width follows the model's LLaMA rule (ffn_hidden null), so M grows smoothly with d_model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import ModelConfig
from .flops import FlopCount, count_flops

ASPECT_WEIGHT = 0.1  # how much a factor e of aspect mismatch costs, in units of ln(M) miss


@dataclass(frozen=True)
class ShapeRule:
    name: str
    aspect: float  # preferred d_model / n_layer
    aspect_tol: float  # accepted factor around it
    head_dims: tuple[int, ...]
    min_heads: int
    kv_group: int  # query heads per KV head: 1 = multi-head attention
    d_multiple: int  # d_model granularity (a multiple of the smallest head_dim)
    min_layers: int
    max_layers: int
    min_d: int
    max_d: int

    def __post_init__(self) -> None:
        for f in ("min_heads", "kv_group", "d_multiple", "min_layers", "max_layers", "min_d", "max_d"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"sweep.shape_rule.{f}={v!r} must be a positive integer")
        if not self.head_dims or any(h < 2 or h % 2 for h in self.head_dims):
            raise ValueError(f"sweep.shape_rule.head_dims={list(self.head_dims)} must be even positive integers")
        if self.d_multiple % min(self.head_dims):
            raise ValueError(
                f"sweep.shape_rule.d_multiple={self.d_multiple} must be a multiple of the smallest "
                f"head_dim {min(self.head_dims)}"
            )
        if not (self.aspect > 0 and self.aspect_tol >= 1):
            raise ValueError(
                f"sweep.shape_rule: aspect={self.aspect} must be > 0 and aspect_tol={self.aspect_tol} >= 1"
            )
        if self.min_layers > self.max_layers or self.min_d > self.max_d:
            raise ValueError("sweep.shape_rule: need min_layers <= max_layers and min_d <= max_d")

    @classmethod
    def from_cfg(cls, name: str, node: Mapping[str, Any]) -> ShapeRule:
        fields = {f.name for f in dataclasses.fields(cls)} - {"name"}
        unknown, missing = set(node) - fields, fields - set(node)
        if unknown or missing:
            raise ValueError(
                f"sweep.shape_rules.{name}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}"
            )
        values: dict[str, Any] = {k: tuple(v) if k == "head_dims" else v for k, v in node.items()}
        return cls(name=name, **values)


@dataclass(frozen=True)
class Shape:
    n_layer: int
    d_model: int
    n_head: int
    n_kv_head: int
    flops: FlopCount
    cfg: ModelConfig

    @property
    def M(self) -> float:
        return self.flops.M


def heads(d_model: int, rule: ShapeRule) -> tuple[int, int]:
    """(n_head, n_kv_head) for d_model under the rule."""
    fits = [h for h in rule.head_dims if d_model % h == 0]
    head_dim = max([h for h in fits if d_model // h >= rule.min_heads], default=min(fits))
    n_head = d_model // head_dim
    n_kv = max(k for k in range(1, n_head + 1) if n_head % k == 0 and k * rule.kv_group <= max(n_head, rule.kv_group))
    return n_head, n_kv


def make_shape(n_layer: int, d_model: int, rule: ShapeRule, base: ModelConfig) -> Shape:
    n_head, n_kv = heads(d_model, rule)
    cfg = dataclasses.replace(base, n_layer=n_layer, d_model=d_model, n_head=n_head, n_kv_head=n_kv, ffn_hidden=None)
    return Shape(n_layer, d_model, n_head, n_kv, count_flops(cfg), cfg)


def _d_range(n_layer: int, rule: ShapeRule) -> range:
    """d_model multiples allowed at this depth (empty when the aspect band misses [min_d, max_d])."""
    m = rule.d_multiple
    lo = max(rule.min_d, math.ceil(rule.aspect / rule.aspect_tol * n_layer - 1e-9))
    hi = min(rule.max_d, math.floor(rule.aspect * rule.aspect_tol * n_layer + 1e-9))
    return range(-(-lo // m) * m, hi // m * m + 1, m)


def shape_for_M(M_target: float, rule: ShapeRule, base: ModelConfig) -> Shape:
    """The shape under the rule whose exact M is nearest M_target (see module docstring for the score)."""
    best, best_score = None, math.inf
    for n_layer in range(rule.min_layers, rule.max_layers + 1):
        ds = _d_range(n_layer, rule)
        if not ds:
            continue
        # M grows with d_model: bisect for the first d with M >= target, then compare it with its neighbour.
        lo, hi = 0, len(ds) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if make_shape(n_layer, ds[mid], rule, base).M >= M_target:
                hi = mid
            else:
                lo = mid + 1
        for i in {max(lo - 1, 0), lo}:
            s = make_shape(n_layer, ds[i], rule, base)
            score = abs(math.log(s.M / M_target)) + ASPECT_WEIGHT * abs(math.log(s.d_model / s.n_layer / rule.aspect))
            if score < best_score:
                best, best_score = s, score
    if best is None:
        raise ValueError(f"sweep.shape_rule={rule.name} allows no shape (check aspect, aspect_tol, min_d, max_d)")
    return best


def _extremes(rule: ShapeRule, base: ModelConfig) -> list[Shape]:
    return [
        make_shape(n, ds[i], rule, base)
        for n in range(rule.min_layers, rule.max_layers + 1)
        if (ds := _d_range(n, rule))
        for i in (0, -1)
    ]


def smallest_shape(rule: ShapeRule, base: ModelConfig) -> Shape:
    """The cheapest model the rule allows (M grows with both depth and width)."""
    return min(_extremes(rule, base), key=lambda s: s.M)


def largest_shape(rule: ShapeRule, base: ModelConfig) -> Shape:
    return max(_extremes(rule, base), key=lambda s: s.M)
