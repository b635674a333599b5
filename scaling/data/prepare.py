"""prepare_data: corpus -> by-document train/val split -> tokenizer -> token memmaps, cached; built once.

A cache entry is one directory keyed on (corpus content hash, split settings, tokenizer), holding the tokenizer
(tokenizer.model, trained here, or a pretrained tokenizer.json), train.bin, val.bin (uint16 when the vocabulary fits,
like nanoGPT, else uint32) and meta.json. It is published by renaming a complete directory into place, so it is
either complete or absent.

The build works in `.work/<entry>/` under a per-entry lock (a second preparer waits, then finds the entry built):
the tokenizer first (SentencePiece is trained on the training split only), then every work unit of the corpus is
tokenized on its own (in parallel over `data.num_proc` processes) into atomically written unit files, then the units
are concatenated in corpus order. A build killed at any point (kill -9 included) resumes from its finished units
and produces the same bytes as an uninterrupted one. Bad input (ValueError) removes the work folder: once the
input is fixed, its content hash — and so the entry — differs anyway.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from scaling.base.atomic import write_atomic, write_atomic_bytes
from scaling.data.cache import building, content_hash, locked
from scaling.data.corpora import Corpus, limit, open_corpus
from scaling.data.prepared import PreparedData, load_encoder
from scaling.data.settings import DataSettings
from scaling.data.shards import SPLITS, Spelling, UnitJob, encode_unit, read_unit_stats, split_key
from scaling.data.tokenizer import train_tokenizer

FORMAT = 1  # bump when the layout or the pipeline changes, so old cache entries are not reused
_FIELD_DEFAULTS = {"text_field": "text", "id_field": None, "split": "train"}


def _digest(*parts: Any) -> str:
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()


def prepare_data(data_cfg: Mapping, progress: bool = False) -> PreparedData:
    """Load the tokenized corpus described by the `data` config from the cache, building it on a miss."""
    s = DataSettings.from_cfg(data_cfg)
    if s.name == "tokens":
        from scaling.data.token_files import prepare_token_files

        return prepare_token_files(s)
    corpus = open_corpus(s)
    root = s.cache_dir / "data"
    fields = {k: getattr(s, k) for k, v in _FIELD_DEFAULTS.items() if getattr(s, k) != v}
    # only non-default fields join the key, so the default corpora keep the keys (and caches) they always had
    data_key = _digest(
        FORMAT,
        s.name,
        content_hash(corpus.files, root / ".hashes"),
        s.max_bytes,
        s.val_fraction,
        *([fields] if fields else []),
    )
    if s.tokenizer_file is None:
        tok_key = _digest(data_key, s.vocab_size, s.tokenizer)
        tok_label = f"{s.tokenizer['model_type']}{s.vocab_size}"
    else:
        tok_bytes = s.tokenizer_file.read_bytes()
        tok_key = _digest(data_key, "tokenizer.json", hashlib.blake2b(tok_bytes, digest_size=16).hexdigest())
        tok_vocab = load_encoder(s.tokenizer_file).vocab_size
        if s.vocab_size < tok_vocab:
            raise ValueError(
                f"data.vocab_size={s.vocab_size} is smaller than the vocabulary of {s.tokenizer_file} "
                f"({tok_vocab}); set data.vocab_size>={tok_vocab} (scaling.data.resolve_vocab does)"
            )
        tok_label = f"{'sp' if s.tokenizer_file.suffix == '.model' else 'hf'}{tok_vocab}"
    final = root / f"{s.name}-{data_key[:10]}-{tok_key[:10]}"
    if final.is_dir() and not _complete(final):
        warnings.warn(f"discarding damaged data cache {final}; rebuilding it", stacklevel=2)
        broken = final.with_name(f".tmp-{final.name}-broken-{os.getpid()}")
        os.rename(final, broken)
        shutil.rmtree(broken, ignore_errors=True)
    if not final.is_dir():
        with locked(root / ".locks" / f"{final.name}.lock"):
            if not final.is_dir():  # another preparer may have built it while we waited
                fingerprints = {
                    "dataset_fingerprint": f"{s.name}@{data_key[:8]}",
                    "tokenizer_fingerprint": f"{tok_label}@{tok_key[:8]}",
                }
                _build(s, corpus, root / ".work" / final.name, final, fingerprints, progress)
    return PreparedData(final, json.loads((final / "meta.json").read_text()))


def _complete(d: Path) -> bool:
    """Cheap integrity check of an entry (stat only): files present with the sizes meta.json promises."""
    try:
        meta = json.loads((d / "meta.json").read_text())
        size = np.dtype(meta["dtype"]).itemsize
        return any((d / t).is_file() for t in ("tokenizer.model", "tokenizer.json")) and all(
            (d / f"{k}.bin").stat().st_size == n * size for k, n in meta["tokens"].items()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _build(
    s: DataSettings, corpus: Corpus, work: Path, final: Path, fingerprints: dict[str, str], progress: bool
) -> None:
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        tok_file, overrides = _tokenizer(s, corpus, work, progress)
        t1 = time.perf_counter()
        vocab = load_encoder(tok_file).vocab_size
        dtype = "uint16" if vocab <= 2**16 else "uint32"
        label = "(trained SentencePiece)" if s.tokenizer_file is None else f"data.tokenizer={s.tokenizer_file}"
        job = UnitJob(work / "units", s.val_fraction, overrides, dtype, label)
        job.out_dir.mkdir(exist_ok=True)
        stats = _encode_units(s, corpus, job, tok_file, progress)
        if s.tokenizer_file is not None:  # pretrained: the split is only known now; fix a degenerate one
            fix = _overrides(_totals(stats), stats)
            if fix:
                fixed = UnitJob(job.out_dir, s.val_fraction, fix, dtype, label)
                for i, st in enumerate(stats):
                    if any(doc_id in fix for doc_id in _unit_ids(st)):
                        stats[i] = _encode_one(i, corpus, fixed, tok_file, s.max_bytes, None, None)
        totals = _totals(stats)
        _check_split(totals, corpus)
        with building(final) as tmp:
            for split in SPLITS:
                _concatenate(
                    [Path(f"{job.out_dir}/{i:06d}.{split}.bin") for i in range(len(stats))], tmp / f"{split}.bin"
                )
            for f in work.glob("tokenizer.*"):
                shutil.copyfile(f, tmp / f.name)
            meta = {
                "format": FORMAT,
                "name": s.name,
                "source": corpus.label,
                **fingerprints,
                "vocab_size": vocab,
                "bos_id": load_encoder(tok_file).bos_id,
                "dtype": dtype,
                "val_fraction": s.val_fraction,
                "max_bytes": s.max_bytes,
                "tokenizer": s.tokenizer if s.tokenizer_file is None else {"file": str(s.tokenizer_file)},
                **{k: totals[k] for k in ("docs", "bytes", "tokens")},
                "build_s": {"tokenizer": round(t1 - t0, 3), "encode": round(time.perf_counter() - t1, 3)},
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    except ValueError:
        shutil.rmtree(work, ignore_errors=True)  # bad input: nothing of this build stays in the cache
        raise
    shutil.rmtree(work, ignore_errors=True)


def _tokenizer(s: DataSettings, corpus: Corpus, work: Path, progress: bool) -> tuple[Path, dict[str, str]]:
    """The build's tokenizer file in `work` (made once, kept across a resume) and the split overrides."""
    if s.tokenizer_file is not None:  # a tokenizer.json, or the SentencePiece model of pre-tokenized files
        target = work / ("tokenizer.model" if s.tokenizer_file.suffix == ".model" else "tokenizer.json")
        if not target.is_file():
            write_atomic_bytes(target, s.tokenizer_file.read_bytes())
        return target, {}
    model, split_file = work / "tokenizer.model", work / "split.json"
    if model.is_file() and split_file.is_file():
        return model, json.loads(split_file.read_text())
    # SentencePiece learns from the training split only, so the split must be known first: one pass over the ids
    stats = [_id_stats(corpus, s)]
    totals = _totals(stats)
    _check_split(totals, corpus, before_overrides=True)
    overrides = _overrides(totals, stats)

    # SentencePiece skips a sentence over max_sentence_length bytes: skipping it here gives the same model
    # without handing it a 100 MB line (a document without newlines) to copy
    longest = int(s.tokenizer.get("max_sentence_length", 4192))

    def train_lines() -> Iterator[str]:
        for doc_id, text in limit(corpus.read(), s.max_bytes):
            split = overrides.get(doc_id) or ("val" if split_key(doc_id) < s.val_fraction else "train")
            if split == "train":
                for line in _lines(text, longest):
                    if line.strip() and (len(line) <= longest // 4 or len(line.encode()) <= longest):
                        yield line

    if progress:
        print(
            f"training the SentencePiece tokenizer (vocab {s.vocab_size}) on the training split of {corpus.label}",
            file=sys.stderr,
            flush=True,
        )
    scratch = work / ".spm"  # a fixed name: the model embeds its path, and a rebuild must give the same bytes
    scratch.mkdir(exist_ok=True)
    train_tokenizer(train_lines(), s.vocab_size, s.tokenizer, scratch / "tokenizer.model", corpus.label)
    write_atomic(split_file, json.dumps(overrides))
    os.replace(scratch / "tokenizer.vocab", work / "tokenizer.vocab")
    os.replace(scratch / "tokenizer.model", model)  # last: the tokenizer is done once this exists
    shutil.rmtree(scratch, ignore_errors=True)
    return model, overrides


def _id_stats(corpus: Corpus, s: DataSettings) -> dict[str, Any]:
    """What the split needs to know about the whole corpus, in constant memory (see shards.encode_unit)."""
    st: dict[str, Any] = {"docs": {"train": 0, "val": 0}, "min_key": None, "max_val_key": None, "ids": []}
    for doc_id, _ in limit(corpus.read(), s.max_bytes):
        key = split_key(doc_id)
        split = "val" if key < s.val_fraction else "train"
        st["docs"][split] += 1
        if st["min_key"] is None or key < st["min_key"][0]:
            st["min_key"] = [key, doc_id]
        if split == "val" and (st["max_val_key"] is None or key > st["max_val_key"][0]):
            st["max_val_key"] = [key, doc_id]
        if len(st["ids"]) < 2 and doc_id not in st["ids"]:
            st["ids"].append(doc_id)
    return st


def split_overrides(corpus: Corpus, s: DataSettings) -> dict[str, str]:
    """The documents a build moves to the other split so that both are non-empty (see _overrides); one pass over
    the ids. A corpus of fewer than 2 documents gets none (the build refuses it)."""
    stats = [_id_stats(corpus, s)]
    totals = _totals(stats)
    return _overrides(totals, stats) if totals["distinct"] >= 2 else {}


def _totals(stats: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: {sp: sum(st[k][sp] for st in stats) for sp in SPLITS}
        for k in ("docs", "bytes", "tokens")
        if all(k in st for st in stats)
    }
    out["distinct"] = len({i for st in stats for i in st["ids"]})
    return out


def _check_split(totals: dict[str, Any], corpus: Corpus, before_overrides: bool = False) -> None:
    if totals["distinct"] == 0:
        raise ValueError(f"corpus {corpus.label} has no text; point data.path at non-empty UTF-8 files")
    if totals["distinct"] < 2:
        raise ValueError(
            f"the corpus {corpus.label} has 1 document; the validation split is by document, so give at "
            "least 2 (several files, or one JSONL line per document)"
        )
    if not before_overrides and min(totals["docs"].values()) == 0:
        raise ValueError(
            f"the corpus {corpus.label} has no document for one of the splits (all copies of one "
            "document?); give at least 2 different documents"
        )


def _overrides(totals: dict[str, Any], stats: list[dict[str, Any]]) -> dict[str, str]:
    """At least one validation document and never all: the lowest-keyed document joins val, or the highest-keyed
    validation document joins train (the same documents whichever way the corpus was cut)."""
    if totals["docs"]["val"] == 0:
        return {min((st["min_key"] for st in stats if st["min_key"]), key=lambda k: k[0])[1]: "val"}
    if totals["docs"]["train"] == 0:
        return {max((st["max_val_key"] for st in stats if st["max_val_key"]), key=lambda k: k[0])[1]: "train"}
    return {}


def _unit_ids(st: dict[str, Any]) -> set[str]:
    return {k[1] for k in (st["min_key"], st["max_val_key"]) if k}


# ---- encoding the units, in this process or in a pool of forked workers -------------------------------------


def _lines(text: str, longest: int) -> Iterator[str]:
    """The lines of text.split("\\n") of at most `longest` characters, one at a time: neither the list of lines
    nor a longer line (over `longest` bytes) is ever copied."""
    start = 0
    while start <= len(text):
        end = text.find("\n", start)
        end = len(text) if end == -1 else end
        if end - start <= longest:
            yield text[start:end]
        start = end + 1


_JOB: tuple[Corpus, UnitJob, Path, int | None] | None = None  # set before forking: workers inherit it
_TEXT: Any = None  # a shared counter of text bytes encoded (multiprocessing.Value), for the progress bar
_ENCODER: Any = None


def _encode_one(
    i: int,
    corpus: Corpus,
    job: UnitJob,
    tok_file: Path,
    max_bytes: int | None,
    threads: int | None,
    on_text: Callable[[int], None] | None,
) -> dict[str, Any]:
    global _ENCODER
    if _ENCODER is None or _ENCODER[0] != tok_file:
        enc = load_encoder(tok_file, threads=threads)
        _ENCODER = (tok_file, enc, Spelling(enc.token_pieces()))
    _, enc, spelling = _ENCODER
    docs = limit(corpus.read_unit(corpus.units[i]), max_bytes)
    return encode_unit(docs, i, job, enc, spelling, f"corpus {corpus.label}", on_text)


def _worker_init() -> None:
    # one thread per worker process: the parallelism is the processes (HF tokenizers reads this lazily)
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _count_text(n: int) -> None:
    with _TEXT.get_lock():
        _TEXT.value += n


def _worker(i: int) -> tuple[int, dict[str, Any]]:
    assert _JOB is not None
    corpus, job, tok_file, max_bytes = _JOB
    return i, _encode_one(i, corpus, job, tok_file, max_bytes, 1, _count_text if _TEXT is not None else None)


def _encode_units(s: DataSettings, corpus: Corpus, job: UnitJob, tok_file: Path, progress: bool) -> list[dict]:
    global _JOB, _TEXT
    n = len(corpus.units)
    stats: list[dict | None] = [read_unit_stats(job.out_dir, i, job.dtype) for i in range(n)]
    todo = [i for i in range(n) if stats[i] is None]
    procs = min(s.num_proc or os.cpu_count() or 1, len(todo)) if todo else 0
    done_text = sum(sum(st["bytes"].values()) for st in stats if st is not None)
    bar = Progress(corpus.name, n, n - len(todo), done_text, max(procs, 1), progress)
    try:
        if procs <= 1:
            for i in todo:
                stats[i] = _encode_one(i, corpus, job, tok_file, s.max_bytes, None, bar.add_text)
                bar.unit_done()
        else:
            ctx = multiprocessing.get_context("fork")
            _JOB, _TEXT = (corpus, job, tok_file, s.max_bytes), ctx.Value("q", 0) if bar.shown else None
            with ctx.Pool(procs, initializer=_worker_init) as pool:
                results = pool.imap_unordered(_worker, todo)
                while True:
                    try:
                        i, st = results.next(timeout=0.5)
                    except multiprocessing.TimeoutError:
                        pass
                    except StopIteration:
                        break
                    else:
                        stats[i] = st
                        bar.unit_done()
                    if _TEXT is not None:
                        bar.set_text(done_text + _TEXT.value)
    finally:
        _JOB = _TEXT = None
        bar.close()
    return [st for st in stats if st is not None]


class Progress:
    """prepare's progress bar on stderr, only when stderr is a terminal (never in a log file): units done and the
    bytes of text encoded (not of the compressed shards), with its rate."""

    def __init__(self, name: str, units: int, done: int, text: int, procs: int, enabled: bool):
        self.shown = enabled and sys.stderr.isatty()
        self.text = self.start_text = text
        self.t0 = time.perf_counter()
        self.procs = procs
        self.bar = None
        if self.shown:
            from tqdm import tqdm

            self.bar = tqdm(
                total=units,
                initial=done,
                desc=f"prepare {name}",
                bar_format="{desc}: {n_fmt}/{total_fmt} units |{bar}| {postfix} [{elapsed}<{remaining}]",
                file=sys.stderr,
                dynamic_ncols=True,
            )
            self._postfix()
        elif enabled and done:  # a log file gets one line, not a bar
            print(f"prepare {name}: {done}/{units} units done before, resuming", file=sys.stderr, flush=True)

    def _postfix(self) -> None:
        if self.bar is not None:
            rate = (self.text - self.start_text) / 1e6 / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.set_postfix_str(f"{self.text / 1e6:,.1f} MB of text, {rate:,.2f} MB/s, {self.procs} processes")

    def add_text(self, n: int) -> None:
        self.set_text(self.text + n)

    def set_text(self, total: int) -> None:
        if total != self.text:
            self.text = total
            self._postfix()

    def unit_done(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _concatenate(parts: list[Path], out: Path) -> None:
    with open(out, "wb") as dst:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, dst, 16 << 20)
        dst.flush()
        os.fsync(dst.fileno())  # durable before the rename publishes the entry
