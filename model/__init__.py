"""LLaMA-style decoder, its config, its FLOP accounting and the shape search for a target M (model.shapes).

`model.hf` (optional, needs transformers) converts to/from Hugging Face's format."""

from .config import ModelConfig
from .flops import FlopCount, count_flops
from .llama import LLaMA

__all__ = ["ModelConfig", "LLaMA", "count_flops", "FlopCount"]
