"""A run's tokenizer as Hugging Face tokenizer files that `AutoTokenizer.from_pretrained` loads offline.

A trained SentencePiece model (BPE or unigram) is rebuilt as a `tokenizers` pipeline of the same pieces and ids:
spaces become "▁" and split words exactly as SentencePiece splits them (the data config trains it with identity
normalisation, no dummy prefix and no whitespace rewriting: scaling.data.settings), byte fallback for unseen
characters, and for BPE one merge per way of splitting each piece, ranked by the piece's score (SentencePiece's own
BPE picks the highest-scoring adjacent pair). A pretrained tokenizer.json is kept as it is.

Both get a post-processor that starts every text with the document separator, as every training document began
with it (scaling.data.shards): `tokenizer(text)` gives the ids the model saw. The separator is also the eos token,
because the model learned to emit it where a document ends. `same_ids` checks the result on real text before an
export is written: a tokenizer that encoded differently would feed the model ids it never saw in that context.
One documented difference: text that spells a special token ("<s>") is that token for Hugging Face, while training
read it as plain characters (`encode_special_tokens=True`); `same_ids` skips such texts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise ValueError("exporting a tokenizer needs the tokenizers package: pip install 'scaling-lab[hf]'") from None
    return tokenizers


def sentencepiece_spec(model_file: Path, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """How a SentencePiece model splits and normalises text: from its own file when protobuf can read it (a model
    that came with data=tokens was not trained with our options), else from the trainer options it was made with."""
    o = {"model_type": "bpe", "split_by_whitespace": True, "add_dummy_prefix": False, **(options or {})}
    spec = {
        "model_type": str(o["model_type"]),
        "split_by_whitespace": bool(o["split_by_whitespace"]),
        "add_dummy_prefix": bool(o["add_dummy_prefix"]),
        "normalization": str(o.get("normalization_rule_name", "identity")),
        "remove_extra_whitespaces": bool(o.get("remove_extra_whitespaces", False)),
    }
    try:
        import sentencepiece.sentencepiece_model_pb2  # needs protobuf
    except ImportError:
        return spec
    pb: Any = sentencepiece.sentencepiece_model_pb2  # generated protobuf code: no type stubs
    m = pb.ModelProto()
    m.ParseFromString(Path(model_file).read_bytes())
    return {
        "model_type": pb.TrainerSpec.ModelType.Name(m.trainer_spec.model_type).lower(),
        "split_by_whitespace": m.trainer_spec.split_by_whitespace,
        "add_dummy_prefix": m.normalizer_spec.add_dummy_prefix,
        "normalization": m.normalizer_spec.name or "identity",
        "remove_extra_whitespaces": m.normalizer_spec.remove_extra_whitespaces,
    }


def from_sentencepiece(model_file: Path, options: dict[str, Any] | None = None) -> Any:
    """A tokenizers.Tokenizer with the pieces, ids and encoding of a trained SentencePiece model (`options`: the
    trainer options it was made with, used where its file cannot be read; same_ids catches any difference left)."""
    spec = sentencepiece_spec(model_file, options)
    model_type = spec["model_type"]
    if spec["normalization"] != "identity" or spec["remove_extra_whitespaces"]:
        raise ValueError(
            f"cannot export a SentencePiece tokenizer that normalises text ({spec['normalization']}"
            f"{', remove_extra_whitespaces' if spec['remove_extra_whitespaces'] else ''}): only the lossless default "
            "(normalization_rule_name=identity, remove_extra_whitespaces=false) has an exact Hugging Face equivalent"
        )
    import sentencepiece as spm

    tk = _tokenizers()
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    n = sp.get_piece_size()
    pieces = [sp.id_to_piece(i) for i in range(n)]
    special = [i for i in range(n) if sp.is_control(i) or sp.is_unknown(i)]
    unk = sp.unk_id()
    if model_type == "bpe":
        vocab = {p: i for i, p in enumerate(pieces)}
        mergeable = [i for i in range(n) if not (i in special or sp.is_byte(i) or sp.is_unused(i))]
        merges: list[tuple[str, str]] = []
        for i in sorted(mergeable, key=lambda i: (-sp.get_score(i), i)):  # highest score first, as SentencePiece
            p = pieces[i]
            splits = [(p[:k], p[k:]) for k in range(1, len(p)) if p[:k] in vocab and p[k:] in vocab]
            merges += sorted(splits, key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
        model = tk.models.BPE(
            vocab=vocab, merges=merges, byte_fallback=True, fuse_unk=True, unk_token=pieces[unk] if unk >= 0 else None
        )
    elif model_type == "unigram":
        # SentencePiece never puts control, unknown, byte or unused pieces in its lattice (they score 0, the highest):
        # scored far below every real piece they are never chosen here either; unseen characters still fall back to
        # byte pieces (byte_fallback looks them up by name).
        never = {i for i in range(n) if i in special or sp.is_byte(i) or sp.is_unused(i)}
        scores = [(p, -1e6 if i in never else sp.get_score(i)) for i, p in enumerate(pieces)]
        model = tk.models.Unigram(scores, unk_id=unk if unk >= 0 else None, byte_fallback=True)
    else:
        raise ValueError(
            f"cannot export a SentencePiece tokenizer of model_type={model_type!r}: only bpe (the default) and "
            "unigram have a Hugging Face equivalent"
        )
    tok = tk.Tokenizer(model)
    # split: "▁" starts a new word and no piece spans two, as SentencePiece's split_by_whitespace (its default).
    if spec["add_dummy_prefix"]:  # a "▁" before every text, even one that starts with a space, as SentencePiece
        tok.normalizer = tk.normalizers.Prepend("\u2581")
    tok.pre_tokenizer = tk.pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme="never", split=spec["split_by_whitespace"]
    )
    decoders = [tk.decoders.Replace("\u2581", " "), tk.decoders.ByteFallback(), tk.decoders.Fuse()]
    if spec["add_dummy_prefix"]:
        decoders.append(tk.decoders.Strip(content=" ", left=1))  # the dummy prefix is not text
    tok.decoder = tk.decoders.Sequence(decoders)
    tok.add_special_tokens([tk.AddedToken(pieces[i], special=True, normalized=False) for i in special])
    return tok


def hf_tokenizer_files(
    tokenizer_file: Path, sep_id: int, model_max_length: int, options: dict[str, Any] | None = None
) -> tuple[dict[str, str], str]:
    """({file name: text} for the export, the separator's token text) from the run's tokenizer file; `options` are
    the SentencePiece trainer options it was made with (data.tokenizer)."""
    tk = _tokenizers()
    if tokenizer_file.suffix == ".model":
        tok = from_sentencepiece(tokenizer_file, options)
    else:
        tok = tk.Tokenizer.from_file(str(tokenizer_file))
    sep = tok.id_to_token(sep_id)
    if sep is None:
        raise ValueError(f"the separator id {sep_id} is not in {tokenizer_file}")
    tok.post_processor = tk.processors.TemplateProcessing(
        single=f"{sep} $A", pair=f"{sep} $A {sep} $B:1", special_tokens=[(sep, sep_id)]
    )
    unk = "<unk>" if tok.token_to_id("<unk>") is not None else None
    config = {
        # The generic class: it runs tokenizer.json as written (a model-specific class may rebuild the pipeline).
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": sep,
        "eos_token": sep,
        "pad_token": sep,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
    } | ({"unk_token": unk} if unk else {})
    return {TOKENIZER_JSON: tok.to_str(pretty=True), TOKENIZER_CONFIG: json.dumps(config, indent=2) + "\n"}, sep


def same_ids(encoder: Any, tokenizer_json: str, texts: Iterable[str]) -> int:
    """Characters checked: the exported tokenizer.json encodes every text to the run encoder's ids (without the
    separator both add), else ValueError naming the first text that differs and where. Texts that spell a special
    token are skipped: Hugging Face reads the spelling as the token, training read it as characters."""
    tok = _tokenizers().Tokenizer.from_str(tokenizer_json)
    specials = [t.content for t in tok.get_added_tokens_decoder().values() if t.special]
    chars = 0
    for text in texts:
        if any(s in text for s in specials):
            continue
        want = list(encoder.encode(text))
        got = tok.encode(text, add_special_tokens=False).ids
        if got != want:
            at = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
            raise ValueError(
                f"the exported tokenizer encodes differently from the run's at token {at} of the text starting "
                f"{text[:40]!r} (run {want[at : at + 3]}, export {got[at : at + 3]}); not exported"
            )
        chars += len(text)
    return chars
