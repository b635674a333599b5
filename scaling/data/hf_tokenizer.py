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


def from_sentencepiece(model_file: Path, model_type: str = "bpe") -> Any:
    """A tokenizers.Tokenizer with the pieces, ids and encoding of a trained SentencePiece model."""
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
    # split=True: "▁" starts a new word and no piece spans two, as SentencePiece's split_by_whitespace.
    tok.pre_tokenizer = tk.pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=True)
    tok.decoder = tk.decoders.Sequence(
        [tk.decoders.Replace("\u2581", " "), tk.decoders.ByteFallback(), tk.decoders.Fuse()]
    )
    tok.add_special_tokens([tk.AddedToken(pieces[i], special=True, normalized=False) for i in special])
    return tok


def hf_tokenizer_files(
    tokenizer_file: Path, sep_id: int, model_max_length: int, model_type: str = "bpe"
) -> tuple[dict[str, str], str]:
    """({file name: text} for the export, the separator's token text) from the run's tokenizer file."""
    tk = _tokenizers()
    if tokenizer_file.suffix == ".model":
        tok = from_sentencepiece(tokenizer_file, model_type)
    else:
        tok = tk.Tokenizer.from_file(str(tokenizer_file))
    sep = tok.id_to_token(sep_id)
    if sep is None:
        raise ValueError(f"the separator id {sep_id} is not in {tokenizer_file}")
    tok.post_processor = tk.processors.TemplateProcessing(
        single=f"{sep} $A", pair=f"{sep} $A {sep} $B:1", special_tokens=[(sep, sep_id)]
    )
    unk = tok.id_to_token(tok.token_to_id("<unk>")) if tok.token_to_id("<unk>") is not None else None
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
