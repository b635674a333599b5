"""Real-corpus sources and pretrained tokenizers: compressed JSONL and parquet shards, globs, tokenizer.json (incl. a
102,400-token vocabulary trained end to end), exact bits per byte, and one-line errors for bad shards."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from test_data import cache_entries, cfg, prose, split_docs

from scaling.data import prepare_data
from scaling.data.corpora import open_corpus
from scaling.data.settings import DataSettings

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
zstandard = pytest.importorskip("zstandard")
tokenizers = pytest.importorskip("tokenizers")

SEP = "<|endoftext|>"


def rows(n: int, seed: int = 0, n_bytes: int = 1500) -> list[dict]:
    return [{"id": f"d{seed}-{i}", "body": prose(100 * seed + i, n_bytes), "lang": "en"} for i in range(n)]


def write_jsonl(path: Path, data: list[dict]) -> Path:
    raw = "".join(json.dumps(r) + "\n" for r in data).encode()
    if path.name.endswith(".gz"):
        raw = gzip.compress(raw)
    elif path.name.endswith(".zst"):
        raw = zstandard.ZstdCompressor().compress(raw)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return path


def write_parquet(path: Path, data: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(data), path, row_group_size=7)  # several row groups per file
    return path


def byte_bpe(path: Path, texts: list[str], vocab: int = 400) -> Path:
    """A small byte-level BPE tokenizer.json (GPT-2/DeepSeek style), trained here: nothing is downloaded."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[SEP],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.save(str(path))
    return path


def widen(small: Path, out: Path, size: int) -> Path:
    """`small` with its vocabulary spread to `size` ids: merged tokens move to the top ids (so the token files need
    uint32) and unused filler pieces fill the gap, like a large production vocabulary."""
    spec = json.loads(small.read_text())
    vocab = spec["model"]["vocab"]
    n = len(vocab)
    base = 1 + 256  # the special token, then the byte alphabet keep their ids
    shift = size - n
    spec["model"]["vocab"] = {t: (i if i < base else i + shift) for t, i in vocab.items()}
    spec["model"]["vocab"].update({f"\u0100fill{k}": base + k for k in range(shift)})
    out.write_text(json.dumps(spec))
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    write_jsonl(root / "a" / "part-0.jsonl.gz", rows(12, 0))
    write_jsonl(root / "a" / "part-1.jsonl.zst", rows(12, 1))
    write_parquet(root / "b" / "part-2.parquet", rows(20, 2))
    return root


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory, shards) -> Path:
    return byte_bpe(tmp_path_factory.mktemp("tok") / "tokenizer.json", [prose(i, 3000) for i in range(30)])


def all_texts(root: Path) -> set[str]:
    return {r["body"] for seed, n in ((0, 12), (1, 12), (2, 20)) for r in rows(n, seed)}


def test_compressed_jsonl_and_parquet_shards_stream_by_document(tmp_path, shards):
    c = cfg(tmp_path, shards, text_field="body", id_field="id")
    corpus = open_corpus(DataSettings.from_cfg(c))
    assert [f.name for f in corpus.files] == ["part-0.jsonl.gz", "part-1.jsonl.zst", "part-2.parquet"]
    ids = [d for d, _ in corpus.read()]
    assert ids[:2] == ["a/part-0.jsonl.gz#d0-0", "a/part-0.jsonl.gz#d0-1"] and ids[-1] == "b/part-2.parquet#d2-19"
    data = prepare_data(c)
    assert set(split_docs(data, "train")) | set(split_docs(data, "val")) == all_texts(shards)
    assert data.meta["docs"]["val"] >= 1 and sum(data.meta["docs"].values()) == 44
    # a glob selects shards; the same documents under the same relative ids make the same split
    globbed = prepare_data(cfg(tmp_path, f"{shards}/*/part-[01].*", text_field="body", id_field="id"))
    assert set(split_docs(globbed, "train")) | set(split_docs(globbed, "val")) == {
        r["body"] for s in (0, 1) for r in rows(12, s)
    }


def test_pretrained_tokenizer_exact_bits_per_byte(tmp_path, shards, tokenizer_json):
    data = prepare_data(cfg(tmp_path, shards, text_field="body", tokenizer=str(tokenizer_json), vocab_size=400))
    assert data.meta["vocab_size"] == 400 and data.tokenizer_fingerprint.startswith("hf400@")
    assert (data.dir / "tokenizer.json").read_bytes() == tokenizer_json.read_bytes()
    assert data.train_tokens().dtype == np.uint16
    assert data.tokenizer.token_to_id(SEP) == data.bos_id
    train, val = split_docs(data, "train"), split_docs(data, "val")
    assert set(train) | set(val) == all_texts(shards) and not set(train) & set(val)
    # byte-level BPE is lossless: per-token bytes add up to each split's UTF-8 bytes exactly
    for split in ("train", "val"):
        tokens = np.asarray(getattr(data, f"{split}_tokens")())
        assert int(data.token_bytes[tokens].sum()) == data.meta["bytes"][split]
    vs = data.val_set(seq_len=16, eval_tokens=160, batch_seqs=4)
    targets = np.concatenate([y.numpy().ravel() for _, y in vs.batches()])
    assert vs.n_bytes == int(data.token_bytes[targets].sum()) > 0
    assert vs.bpb(2.0) == pytest.approx(2.0 * vs.n_tokens / (np.log(2) * vs.n_bytes))
    text = "Unseen: naïve 東京 ✓ <|endoftext|> stays text\n"
    assert data.decode(data.encode(text)) == text and data.bos_id not in data.encode(text)


def test_every_format_reads_the_same_documents(tmp_path):
    """The reader, not the file format, decides the documents: the same rows give the same (id, text) stream."""
    data = rows(30, 7)
    paths = [write_jsonl(tmp_path / f"x{suffix}", data) for suffix in (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz")]
    paths.append(write_parquet(tmp_path / "x.parquet", data))
    expected = [(r["id"], r["body"]) for r in data]
    for path in paths:
        corpus = open_corpus(DataSettings.from_cfg(cfg(tmp_path, path, text_field="body", id_field="id")))
        assert [(i.split("#", 1)[1], t) for i, t in corpus.read()] == expected, path.name
    # without an id field the id is a hash of the text, the same in every format
    hashed = {
        tuple(
            i.split("#", 1)[1]
            for i, _ in open_corpus(
                DataSettings.from_cfg(cfg(tmp_path, p, text_field="body", id_field=None) | {"text_field": "body"})
            ).read()
        )
        for p in paths
    }
    assert len(hashed) == 1


@pytest.mark.slow  # ~10 s: a 102,400 x d embedding, its tokenizer and a real training step
def test_vocab_102400_trains_end_to_end(tmp_path, make_cfg, shards, tokenizer_json):
    from model import count_flops
    from scaling.run.single import train_run

    big = widen(tokenizer_json, tmp_path / "big.json", 102_400)
    c = make_cfg(
        "data=files",
        f"data.path={shards}/a",
        "data.text_field=body",
        f"data.tokenizer={big}",
        "data.max_bytes=null",
        "model=tiny",
        "model.seq_len=32",
        "train.tokens=128",
        "train.batch_size=64",
        "train.eval_tokens=64",
        "train.device=cpu",
        "train.threads=1",
    )
    result = train_run(c, tmp_path / "run")
    assert result["status"] == "completed" and np.isfinite(result["val_loss"]) and result["val_bpb"] > 0
    assert result["model"]["vocab_size"] == 102_400 and result["tokenizer"].startswith("hf102400@")
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["config_hash"] == result["config_hash"] and saved["model"]["vocab_size"] == 102_400
    from model import ModelConfig

    flops = count_flops(ModelConfig.from_dict({**json.loads(json.dumps(saved["model"]))}))
    assert saved["N2"] == flops.N2 and saved["params"] == flops.params
    data = prepare_data({**c.data, "vocab_size": 102_400, "cache_dir": c.data.cache_dir})
    tokens = np.asarray(data.train_tokens())
    assert tokens.dtype == np.uint32 and int(tokens.max()) >= 2**16  # merged tokens live above uint16
    assert int(data.token_bytes[tokens].sum()) == data.meta["bytes"]["train"]


@pytest.mark.parametrize(
    "make, over, match",
    [
        ("badgz", {}, r"cannot decompress .*part-0.jsonl.gz .*fetch it again or remove it"),
        ("badzst", {}, r"cannot decompress .*part-0.jsonl.zst"),
        ("badline", {}, r"part-0.jsonl.gz:2 is not valid JSON"),
        ("nofield", {}, r"part-0.parquet has no column 'body' \(columns: text, id\); set data.text_field"),
        ("badparquet", {}, r"cannot read .*part-0.parquet as parquet"),
        ("badtok", {"tokenizer": "TOK"}, r"does not parse as a Hugging Face tokenizer.json"),
        (
            "lossy",
            {"tokenizer": "TOK", "vocab_size": 400},
            r"the tokenizer data.tokenizer=.*lossy.json is not lossless on document .* bits per byte would be wrong",
        ),
        (  # same byte count, other bytes: only comparing the bytes themselves finds it
            "lowercase",
            {"tokenizer": "TOK", "vocab_size": 400},
            r"data.tokenizer=.*lowercase.json is not lossless on document part-0.jsonl#d5-0 .*at byte 0 the text "
            r"has b'[A-Z].*', its tokens spell b'[a-z]",
        ),
        ("trunczst", {}, r"cannot decompress .*part-0.jsonl.zst \(the file ends inside a zstd frame\)"),
        ("surrogate", {}, r"part-0.jsonl:2 has a lone surrogate \('\\ud800'\) in 'body' at character 4"),
        (None, {"vocab_size": 2**32 + 1}, r"exceeds 2\^32"),
        (None, {"tokenizer": "TOK", "vocab_size": 300}, r"data.vocab_size=300 is smaller than the vocabulary"),
    ],
)
def test_bad_shards_and_tokenizers_are_one_line_errors(tmp_path, tokenizer_json, make, over, match):
    d = tmp_path / "bad"
    good = rows(3, 5)
    if make == "badgz":
        (d / "part-0.jsonl.gz").parent.mkdir(parents=True)
        (d / "part-0.jsonl.gz").write_bytes(gzip.compress(b'{"body": "x"}\n' * 50)[:40])
    elif make == "badzst":
        d.mkdir()
        (d / "part-0.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd garbage")
    elif make == "trunczst":  # a shard cut short (a failed download): zstd would read it as a shorter corpus
        whole = write_jsonl(d / "part-0.jsonl.zst", rows(40, 5)).read_bytes()
        (d / "part-0.jsonl.zst").write_bytes(whole[: len(whole) // 2])
    elif make == "surrogate":
        d.mkdir()
        (d / "part-0.jsonl").write_text('{"body": "fine text"}\n{"body": "bad\\ud800 text"}\n{"body": "more"}\n')
    elif make == "badline":
        write_jsonl(d / "part-0.jsonl.gz", good).write_bytes(
            gzip.compress((json.dumps(good[0]) + "\n{oops\n").encode())
        )
    elif make == "nofield":
        write_parquet(d / "part-0.parquet", [{"text": "a", "id": 1}])
    elif make == "badparquet":
        d.mkdir()
        (d / "part-0.parquet").write_bytes(b"PAR1 not really")
    else:
        write_jsonl(d / "part-0.jsonl", good)
    tok = tokenizer_json
    if make == "badtok":
        tok = tmp_path / "tokenizer.json"
        tok.write_text('{"model": ')
    elif make == "lowercase":
        spec = json.loads(tokenizer_json.read_text())
        spec["normalizer"] = {"type": "Lowercase"}
        tok = tmp_path / "lowercase.json"
        tok.write_text(json.dumps(spec))
    elif make == "lossy":
        spec = json.loads(tokenizer_json.read_text())
        spec["normalizer"] = {"type": "Replace", "pattern": {"String": "e"}, "content": "ee"}  # rewrites the text
        tok = tmp_path / "lossy.json"
        tok.write_text(json.dumps(spec))
    over = {k: (str(tok) if v == "TOK" else v) for k, v in over.items()}
    with pytest.raises(ValueError, match=match) as err:
        prepare_data(cfg(tmp_path, d, text_field="body", **over))
    assert "\n" not in str(err.value)
    assert cache_entries(tmp_path) == []  # nothing half-written, no work folder left


def test_hf_dataset_on_disk(tmp_path, tokenizer_json):
    datasets = pytest.importorskip("datasets")
    data = rows(25, 3)
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(data), "test": datasets.Dataset.from_list(rows(3, 4))}
    ).save_to_disk(str(tmp_path / "dd"))
    c = cfg(tmp_path, tmp_path / "dd", name="hf", text_field="body", tokenizer=str(tokenizer_json), vocab_size=400)
    prepared = prepare_data(c)
    assert set(split_docs(prepared, "train")) | set(split_docs(prepared, "val")) == {r["body"] for r in data}
    assert prepared.dataset_fingerprint.startswith("hf@") and prepared.meta["docs"]["val"] >= 1
    ids = [d for d, _ in open_corpus(DataSettings.from_cfg(c)).read()]
    assert ids[:2] == ["train#d3-0", "train#d3-1"]  # the id column names documents: a stable split
    with pytest.raises(ValueError, match=r"has no split 'validation' \(splits: train, test\); set data.split"):
        prepare_data(c | {"split": "validation"})
    with pytest.raises(ValueError, match=r"has no column 'text' \(columns: id, body, lang\)"):
        prepare_data(c | {"text_field": "text"})
    assert cache_entries(tmp_path) == [prepared.dir.name]


def test_pretokenized_bin_and_npy_with_their_tokenizer(tmp_path, shards, tokenizer_json):
    made = prepare_data(cfg(tmp_path, shards, text_field="body", tokenizer=str(tokenizer_json), vocab_size=400))
    for ext in (".bin", ".npy"):
        folder = tmp_path / f"tok{ext}"
        folder.mkdir()
        for split in ("train", "val"):
            arr = np.asarray(getattr(made, f"{split}_tokens")())
            arr.tofile(folder / f"{split}.bin") if ext == ".bin" else np.save(folder / f"{split}.npy", arr)
        data = prepare_data(cfg(tmp_path, folder, name="tokens", tokenizer=str(tokenizer_json), vocab_size=400))
        assert np.array_equal(data.train_tokens(), made.train_tokens()) and data.dataset_fingerprint.startswith(
            "tokens@"
        )
        assert data.meta["bytes"] == made.meta["bytes"] and data.meta["docs"] == made.meta["docs"]  # exact bytes
        vs, ref = data.val_set(16, 160, 4), made.val_set(16, 160, 4)
        assert vs.n_bytes == ref.n_bytes and vs.bpb(2.0) == ref.bpb(2.0)
    (folder / "val.npy").unlink()
    np.save(folder / "val.npy", np.array([1, 2, 999], dtype=np.uint16))
    with pytest.raises(ValueError, match=r"val.npy holds id 999 at position 2, outside the 400-token vocabulary"):
        prepare_data(cfg(tmp_path, folder, name="tokens", tokenizer=str(tokenizer_json), vocab_size=400))
    with pytest.raises(ValueError, match=r"data=tokens needs the tokenizer the token files were made with"):
        prepare_data(cfg(tmp_path, folder, name="tokens"))


def test_vocab_size_comes_from_a_pretrained_tokenizer(make_cfg, tokenizer_json):
    from scaling.data import resolve_vocab

    c = make_cfg(f"data.tokenizer={tokenizer_json}")  # the test configs have data.vocab_size=512 > 400
    assert resolve_vocab(c).model.vocab_size == 512  # a larger value pads the embedding and is kept
    small = make_cfg(f"data.tokenizer={tokenizer_json}", "data.vocab_size=64")
    fixed = resolve_vocab(small)
    assert fixed.data.vocab_size == fixed.model.vocab_size == 400 and small.data.vocab_size == 64  # a copy
    plain = make_cfg()
    assert resolve_vocab(plain) is plain  # SentencePiece: trained to data.vocab_size, nothing to resolve
    with pytest.raises(ValueError, match="data.tokenizer=/nonexistent/tokenizer.json is not a file"):
        resolve_vocab(make_cfg("data.tokenizer=/nonexistent/tokenizer.json"))


def test_run_vocab_size_is_the_tokenizers_for_the_planner(tmp_path, make_cfg, tokenizer_json):
    """Issue 19's newcomer: a 4,096-id tokenizer.json with the default data.vocab_size=2048. The function a planner
    calls gives the vocabulary the runs will train with (4,096), not the composed config's 2,048."""
    from scaling.data import resolve_vocab, run_vocab_size

    big = widen(tokenizer_json, tmp_path / "tokenizer.json", 4096)
    c = make_cfg(f"data.tokenizer={big}", "data.vocab_size=2048")
    assert c.data.vocab_size == c.model.vocab_size == 2048  # as composed: what the planner used to count with
    assert run_vocab_size(c) == resolve_vocab(c).model.vocab_size == 4096
    assert run_vocab_size(make_cfg(f"data.tokenizer={tmp_path}", "data.vocab_size=2048")) == 4096  # a directory
    assert run_vocab_size(make_cfg(f"data.tokenizer={big}", "data.vocab_size=5000")) == 5000  # padding is kept
    assert run_vocab_size(make_cfg("data.vocab_size=2048")) == 2048  # SentencePiece is trained to the config's size
    with pytest.raises(ValueError, match="data.tokenizer=/nonexistent/tokenizer.json is not a file"):
        run_vocab_size(make_cfg("data.tokenizer=/nonexistent/tokenizer.json"))


def test_tiny_corpus_split_is_the_same_for_every_tokenizer(tmp_path, tokenizer_json):
    """With 3 documents and a 1% validation share no id hashes below the threshold: one document is still moved to
    validation — the same one whether the split is known before encoding (SentencePiece) or fixed after it."""
    d = tmp_path / "tiny"
    write_jsonl(d / "rows.jsonl", rows(3, 9, n_bytes=4000))
    from scaling.data.shards import split_key

    assert all(split_key(f"rows.jsonl#d9-{i}") >= 0.01 for i in range(3))  # so the fix-up really runs
    spm = prepare_data(cfg(tmp_path, d, text_field="body", val_fraction=0.01, vocab_size=320))
    hf = prepare_data(
        cfg(tmp_path, d, text_field="body", val_fraction=0.01, tokenizer=str(tokenizer_json), vocab_size=400)
    )
    assert spm.meta["docs"] == hf.meta["docs"] == {"train": 2, "val": 1}
    assert split_docs(spm, "val") == split_docs(hf, "val")
