"""Pretrained Hugging Face tokenizers (a `tokenizer.json`, e.g. GPT-2's or DeepSeek's byte-level BPE).

Bits per byte needs the exact UTF-8 bytes each token stands for. Byte-level BPE pieces are bytes spelled with
GPT-2's printable byte alphabet, so they map back exactly; SentencePiece-style pieces (`▁` for a space, `<0xNN>`
byte fallback) are handled too. Special tokens stand for no bytes, and the text is encoded with special tokens
matched as plain text, so a document that contains "<|endoftext|>" is not silently shortened. Whether a tokenizer
really is lossless on a corpus (no normaliser, no added prefix space) is checked document by document as it is
encoded (scaling.data.shards), never assumed.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

# Document separators, most preferred first: a document starts with this token, as <s> does with SentencePiece.
SEPARATORS = (
    "<s>",
    "<|begin_of_text|>",
    "<｜begin▁of▁sentence｜>",
    "<bos>",
    "<|endoftext|>",
    "</s>",
    "<|end_of_text|>",
    "<｜end▁of▁sentence｜>",
    "<eos>",
)
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise ValueError(
            "a pretrained data.tokenizer needs the tokenizers package: pip install 'scaling-lab[corpora]'"
        ) from None
    return tokenizers


@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in character -> the byte it spells (the inverse of bytes_to_unicode)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, n = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(keep, chars)}


def load(path: Path):
    """The tokenizers.Tokenizer in `path`, set to read special-token text as text; one-line error if unparsable."""
    tk = _tokenizers()
    try:
        tok = tk.Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust parser raises a bare Exception with a multi-line serde message
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(
            f"data.tokenizer={path} does not parse as a Hugging Face tokenizer.json ({first}); "
            "give the tokenizer.json a tokenizers/transformers model was saved with"
        ) from None
    tok.encode_special_tokens = True
    return tok


def vocab_size(tok) -> int:
    """Ids run 0..size-1 (holes included): the model's embedding must have at least this many rows."""
    return max(tok.get_vocab(with_added_tokens=True).values()) + 1


def separator_id(tok, path: Path) -> int:
    vocab = tok.get_vocab(with_added_tokens=True)
    for piece in SEPARATORS:
        if piece in vocab:
            return vocab[piece]
    raise ValueError(
        f"tokenizer {path} has none of the document separator tokens {', '.join(SEPARATORS)}; "
        "add one as a special token (tokenizer.add_special_tokens) and save it again"
    )


def token_pieces(tok) -> list[bytes]:
    """The UTF-8 bytes each id stands for (none for special tokens and ids that are not in the vocabulary)."""
    config = json.loads(tok.to_str())
    byte_level = "ByteLevel" in json.dumps([config.get("decoder"), config.get("pre_tokenizer")])
    specials = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    added = {i: t.content for i, t in tok.get_added_tokens_decoder().items()}
    table = byte_decoder()
    out = [b""] * vocab_size(tok)
    for piece, i in tok.get_vocab(with_added_tokens=True).items():
        if i in specials:
            continue
        if i in added:  # added tokens are stored as the text they match, not in the byte alphabet
            out[i] = added[i].encode()
        elif byte_level and all(c in table for c in piece):
            out[i] = bytes(table[c] for c in piece)  # one stand-in character per byte
        elif m := _BYTE_PIECE.fullmatch(piece):
            out[i] = bytes([int(m.group(1), 16)])
        else:
            out[i] = piece.replace("\u2581", " ").encode()
    return out


def token_bytes(tok) -> np.ndarray:
    """How many UTF-8 bytes each id stands for (see token_pieces): what bits per byte divides by."""
    return np.array([len(p) for p in token_pieces(tok)], dtype=np.int64)


class HFEncoder:
    """A tokenizer.json behind the interface the data pipeline uses (see SentencePieceEncoder)."""

    kind = "hf"

    def __init__(self, path: Path):
        self.path = path
        self.tok = load(path)
        self.vocab_size = vocab_size(self.tok)
        self.bos_id = separator_id(self.tok, path)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # the _fast variant skips character offsets, which we never read: the same ids, less work and memory
        encode = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)
        return [e.ids for e in encode(texts, add_special_tokens=False)]

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)

    def token_bytes(self) -> np.ndarray:
        return token_bytes(self.tok)

    def token_pieces(self) -> list[bytes]:
        return token_pieces(self.tok)
