"""LLaMA-style decoder, its config and its FLOP accounting. `model.hf` (optional, needs transformers) converts to/from HF."""
from .config import ModelConfig
from .flops import FlopCount, count_flops
from .llama import LLaMA

__all__ = ["ModelConfig", "LLaMA", "count_flops", "FlopCount"]
