"""A run directory as a Hugging Face model directory (what `python -m scaling.export RUN_DIR OUT` writes).

The run's checkpoint (read as data: scaling.run.sampling.load_run) becomes model.safetensors and config.json
(model.hf.export_hf), its tokenizer becomes tokenizer.json and tokenizer_config.json (scaling.data.hf_tokenizer),
and generation_config.json stops `generate` at the document separator. Nothing is written until the exported
tokenizer has been checked to encode the run's validation text to the same ids as the run's own tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.hf import WEIGHTS_NAME, export_hf
from scaling.data import prepare_data
from scaling.data.hf_tokenizer import (
    TOKENIZER_CONFIG,
    TOKENIZER_JSON,
    hf_tokenizer_files,
    same_ids,
    sentencepiece_spec,
)
from scaling.data.settings import DataSettings
from scaling.run.sampling import load_run, planned_steps, run_status

# Files an export holds: an existing directory holding only these (or nothing) may be replaced by a new export.
EXPORT_FILES = {WEIGHTS_NAME, "config.json", "generation_config.json", TOKENIZER_JSON, TOKENIZER_CONFIG}
CHECK_TOKENS = 65_536  # validation tokens whose text the exported tokenizer must encode like the run's


@dataclass
class Exported:
    out: Path
    params: int
    step: int
    steps: int | None
    status: str
    sep: str  # the separator token: bos, eos and pad of the export
    sep_id: int
    max_position_embeddings: int
    checked_chars: int  # characters of validation text encoded identically by both tokenizers
    tokenizer: str  # what the tokenizer was converted from


def check_out(out: Path, run_dir: Path) -> None:
    """ValueError unless `out` is new, empty or an earlier export: an export replaces its directory whole."""
    out, run_dir = Path(out), Path(run_dir)
    if out.resolve() == run_dir.resolve() or out.resolve() in run_dir.resolve().parents:
        raise ValueError(f"{out} would replace the run directory {run_dir}; export to a new directory")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; export to a new directory")
    if out.is_dir():
        other = sorted(p.name for p in out.iterdir() if p.name not in EXPORT_FILES)
        if other:
            raise ValueError(
                f"{out} holds files an export does not write ({', '.join(other[:3])}); export to a new directory "
                f"(an earlier export is replaced as a whole)"
            )


def export_run(run_dir: Path, out: Path, max_position_embeddings: int | None = None) -> Exported:
    """Export the run's latest checkpoint to `out`; ValueError (nothing written) for anything that does not fit."""
    run_dir, out = Path(run_dir), Path(out)
    check_out(out, run_dir)
    if max_position_embeddings is not None and max_position_embeddings < 1:
        raise ValueError(f"--max-position-embeddings must be >= 1, got {max_position_embeddings}")
    model, cfg, ckpt = load_run(run_dir)
    settings = DataSettings.from_cfg(cfg["data"])
    data = prepare_data(cfg["data"])
    # A pretrained tokenizer's vocabulary may be padded in the model (data.vocab_size above the tokenizer's size,
    # scaling.data.vocab), never the other way round.
    if data.vocab_size > model.cfg.vocab_size:
        raise ValueError(
            f"the tokenizer has {data.vocab_size} ids but the model only {model.cfg.vocab_size}: "
            f"the data cache does not match this run"
        )
    max_pos = max_position_embeddings or model.cfg.seq_len
    files, sep = hf_tokenizer_files(data.tokenizer_file, data.bos_id, max_pos, settings.tokenizer)
    checked = same_ids(data.encoder, files[TOKENIZER_JSON], _validation_texts(data.val_tokens(), data))
    export_hf(
        model,
        out,
        bos_token_id=data.bos_id,
        eos_token_id=data.bos_id,
        max_position_embeddings=max_pos,
        files=files,
    )
    if data.tokenizer_file.suffix == ".model":
        kind = f"SentencePiece {sentencepiece_spec(data.tokenizer_file, settings.tokenizer)['model_type']}"
    else:
        kind = "tokenizer.json"
    return Exported(
        out=out,
        params=sum(p.numel() for p in model.parameters()),
        step=int(ckpt.get("step", 0)),
        steps=planned_steps(cfg),
        status=run_status(run_dir),
        sep=sep,
        sep_id=data.bos_id,
        max_position_embeddings=max_pos,
        checked_chars=checked,
        tokenizer=f"{kind}, {data.vocab_size} ids",
    )


def _validation_texts(tokens: np.ndarray, data) -> list[str]:
    """The documents of the first CHECK_TOKENS validation tokens, as text."""
    head = np.asarray(tokens[:CHECK_TOKENS])
    cuts = [0, *np.flatnonzero(head == data.bos_id).tolist(), len(head)]
    return [data.decode(head[a:b].tolist()) for a, b in zip(cuts[:-1], cuts[1:]) if b - a > 1]
