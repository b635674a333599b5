"""A model shape for a target M, using the shape search of model.shapes (the sweeps use it too) with a
DeepSeek-like rule: d_model/n_layer ~ 128 (within a factor 2), head_dim 128, d_model a multiple of 128, MHA."""

from __future__ import annotations

from model import ModelConfig
from model.shapes import ShapeRule, shape_for_M

DEEPSEEK_RULE = ShapeRule(
    name="deepseek",
    aspect=128.0,
    aspect_tol=2.0,
    head_dims=(128,),
    min_heads=1,
    kv_group=1,
    d_multiple=128,
    min_layers=1,
    max_layers=256,
    min_d=128,
    max_d=65536,
)


def recommend_shape(M_target: float, base: ModelConfig, rule: ShapeRule = DEEPSEEK_RULE) -> ModelConfig:
    """The shape whose count_flops M is nearest M_target; vocab, seq_len and the FFN rule come from `base`."""
    return shape_for_M(M_target, rule, base).cfg
