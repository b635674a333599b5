"""Convert between LLaMA and Hugging Face's LlamaForCausalLM format (needs the `hf` extra: transformers, safetensors).

Our parameter names are HF's minus the "model." prefix on everything but lm_head, and both use the
rotate_half RoPE convention, so conversion is a key rename: no weight permutation.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .llama import LLaMA

WEIGHTS_NAME = "model.safetensors"


def _require_hf() -> tuple[Any, Any]:
    try:
        import safetensors.torch
        import transformers
    except ImportError as e:
        raise ImportError(f"model.hf needs the optional HF extra ({e.name} is missing): pip install -e .[hf]") from e
    return transformers, safetensors.torch


def to_hf_config(
    cfg: ModelConfig,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    max_position_embeddings: int | None = None,
) -> Any:
    """The transformers.LlamaConfig describing the same network as cfg.

    Token ids belong to the tokenizer, so they are only set when the caller knows them (a run's export).
    max_position_embeddings defaults to cfg.seq_len, the context the model was trained on: RoPE computes any
    position, so transformers runs longer inputs without error, but positions past seq_len were never trained.
    """
    transformers, _ = _require_hf()
    return transformers.LlamaConfig(
        architectures=["LlamaForCausalLM"],
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.ffn_hidden,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_kv_head,
        head_dim=cfg.head_dim,
        hidden_act="silu",
        max_position_embeddings=max_position_embeddings or cfg.seq_len,
        initializer_range=cfg.init_std,
        rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_theta,  # transformers >= 5 files it under rope_parameters
        tie_word_embeddings=cfg.tie_embeddings,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
    )


def from_hf_config(hf_cfg: Any) -> ModelConfig:
    """The ModelConfig of a transformers LlamaConfig; anything our model cannot express is an error."""
    rope = getattr(hf_cfg, "rope_parameters", None) or getattr(hf_cfg, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"unsupported RoPE type {rope_type!r}: only the default (unscaled) rotary embedding is")
    if hf_cfg.hidden_act != "silu" or getattr(hf_cfg, "attention_bias", False) or getattr(hf_cfg, "mlp_bias", False):
        raise ValueError("only SwiGLU (hidden_act='silu') without attention or MLP biases is supported")
    head_dim = getattr(hf_cfg, "head_dim", None) or hf_cfg.hidden_size // hf_cfg.num_attention_heads
    if head_dim * hf_cfg.num_attention_heads != hf_cfg.hidden_size:
        raise ValueError(
            f"head_dim={head_dim} x {hf_cfg.num_attention_heads} heads != hidden_size="
            f"{hf_cfg.hidden_size}; LLaMA here needs d_model = n_head * head_dim"
        )
    return ModelConfig(
        n_layer=hf_cfg.num_hidden_layers,
        d_model=hf_cfg.hidden_size,
        n_head=hf_cfg.num_attention_heads,
        n_kv_head=hf_cfg.num_key_value_heads or hf_cfg.num_attention_heads,
        ffn_hidden=hf_cfg.intermediate_size,
        vocab_size=hf_cfg.vocab_size,
        seq_len=hf_cfg.max_position_embeddings,
        rope_theta=float(rope.get("rope_theta", getattr(hf_cfg, "rope_theta", 10000.0))),
        norm_eps=hf_cfg.rms_norm_eps,
        tie_embeddings=bool(hf_cfg.tie_word_embeddings),
        init_std=hf_cfg.initializer_range,
    )


def export_hf(
    model: LLaMA,
    out_dir: str | os.PathLike,
    *,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    max_position_embeddings: int | None = None,
    files: Mapping[str, str] | None = None,
) -> Path:
    """Write `model` as a directory that `LlamaForCausalLM.from_pretrained(out_dir)` loads.

    config.json comes from LlamaConfig.save_pretrained, weights are one model.safetensors. With token ids,
    config.json carries them and generation_config.json makes `generate` start from bos_token_id and stop at
    eos_token_id (padding with it too). `files` (name -> text, e.g. the tokenizer's files) are written beside them.
    The directory is assembled next to out_dir and renamed into place, so a crash never leaves a half-written export.
    """
    transformers, st = _require_hf()
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        to_hf_config(model.cfg, bos_token_id, eos_token_id, max_position_embeddings).save_pretrained(tmp)
        if eos_token_id is not None:
            transformers.GenerationConfig(
                bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=eos_token_id
            ).save_pretrained(tmp)
        for name, text in (files or {}).items():
            if Path(name).name != name or name in (WEIGHTS_NAME, "config.json", "generation_config.json"):
                raise ValueError(f"export file name {name!r} must be a plain name that is not one of the model's")
            (tmp / name).write_text(text)
        state = {}
        for name, tensor in model.state_dict().items():
            if name == "lm_head.weight" and model.cfg.tie_embeddings:
                continue  # HF re-ties it to the embedding on load; safetensors refuses shared storage
            hf_name = name if name.startswith("lm_head.") else f"model.{name}"
            state[hf_name] = tensor.detach().contiguous().cpu()
        st.save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def import_hf(path: str | os.PathLike) -> LLaMA:
    """Load a LlamaForCausalLM directory (config.json + *.safetensors, sharded or not) into LLaMA, in float32."""
    transformers, st = _require_hf()
    path = Path(path)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ValueError(
            f"no *.safetensors weights in {path}; re-save the model with save_pretrained(safe_serialization=True)"
        )
    model = LLaMA(from_hf_config(transformers.LlamaConfig.from_pretrained(path)))
    state = {}
    for f in files:
        for hf_name, tensor in st.load_file(str(f)).items():
            if hf_name.endswith("rotary_emb.inv_freq"):
                continue  # older checkpoints saved RoPE tables; ours are rebuilt from the config
            state[hf_name.removeprefix("model.")] = tensor.to(torch.float32)
    if model.cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
        state["lm_head.weight"] = state["embed_tokens.weight"]
    model.load_state_dict(state, strict=True)
    return model
