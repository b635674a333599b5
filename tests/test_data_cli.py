"""`python -m scaling.prepare` as a user calls it: --config-dir like scaling-train's, --export of a corpus's text, and
bad input as one line and exit 2 (in-process: the command's main with an argv)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from test_data import VOCAB, split_docs, write_docs

from scaling.data import prepare_data
from scaling.data.shards import split_key
from scaling.prepare import main

TINY = ["data.max_bytes=200000", "data.vocab_size=512"]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def own_conf(tmp_path: Path, corpus: Path) -> Path:
    """A user's config folder with a data option of their own, next to the shipped ones."""
    conf = tmp_path / "my_conf" / "data"
    conf.mkdir(parents=True)
    (conf / "mine.yaml").write_text(
        f"defaults:\n  - files\n  - _self_\npath: {corpus}\nvocab_size: {VOCAB}\nval_fraction: 0.2\n"
    )
    return conf.parent


def test_config_dir_adds_the_users_configs(tmp_path, capsys):
    write_docs(tmp_path / "corpus", 12)
    conf = own_conf(tmp_path, tmp_path / "corpus")
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    for argv in (
        ["--config-dir", str(conf), "data=mine", cache],
        [f"--config-dir={conf}", "data=mine", cache],
        ["data=mine", "-cd", str(conf), cache],
    ):
        code, out, err = run(argv, capsys)
        assert code == 0, err
        assert out.startswith("prepared files@")
    same = prepare_data(
        {
            "name": "files",
            "path": str(tmp_path / "corpus"),
            "vocab_size": VOCAB,
            "val_fraction": 0.2,
            "max_bytes": None,
            "tokenizer": None,
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    assert str(same.dir) in out  # the same cache entry as the overrides written out
    # with hydra.searchpath as well: both are searched, as by Hydra
    other = tmp_path / "their_conf" / "data"
    other.mkdir(parents=True)
    (other / "theirs.yaml").write_text((conf / "data" / "mine.yaml").read_text())
    code, out, err = run(
        ["--config-dir", str(conf), f"hydra.searchpath=[file://{other.parent}]", "data=theirs", cache], capsys
    )
    assert code == 0 and str(same.dir) in out, err
    odd = tmp_path / "their, 'conf'"  # a folder name Hydra's override syntax needs quoted
    other.parent.rename(odd)
    code, out, err = run(["--config-dir", str(odd), "data=theirs", cache], capsys)
    assert code == 0 and str(same.dir) in out, err
    code, _, err = run(["--config-dir", str(tmp_path / "nope"), "data=mine"], capsys)
    assert code == 2 and "--config-dir" in err and "is not a directory" in err and err.count("\n") == 1
    code, _, err = run(["--config-dir"], capsys)
    assert code == 2 and "--config-dir needs a folder" in err
    code, _, err = run(["data=sotu", "--export"], capsys)
    assert code == 2 and "--export needs a file or folder" in err
    code, _, err = run(["--frobnicate", "data=sotu"], capsys)
    assert code == 2 and "unknown option --frobnicate" in err


@pytest.mark.parametrize("target", ["sotu.jsonl", "sotu.jsonl.gz", "sotu.jsonl.zst", "folder"])
def test_export_writes_the_corpus_text(tmp_path, capsys, target):
    if target.endswith(".zst"):
        pytest.importorskip("zstandard")
    out = tmp_path / target
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    code, stdout, err = run(["data=sotu", *TINY, cache, "--export", str(out)], capsys)
    assert code == 0, err
    assert stdout.startswith("exported ") and "MB of text" in stdout
    files = [out] if target != "folder" else [out / "train.jsonl", out / "val.jsonl"]
    rows = []
    for f in files:
        raw = f.read_bytes()
        raw = gzip.decompress(raw) if f.name.endswith(".gz") else raw
        if f.name.endswith(".zst"):
            import zstandard

            raw = zstandard.ZstdDecompressor().stream_reader(raw).read()
        rows += [json.loads(line) for line in raw.decode().splitlines()]
    assert not list((tmp_path / "cache").glob("data/sotu-*"))  # exported, not tokenized
    # the documents a build of the same config tokenizes, split the same way
    data = prepare_data(
        {
            "name": "sotu",
            "path": None,
            "vocab_size": 512,
            "val_fraction": 0.05,
            "max_bytes": 200000,
            "tokenizer": None,
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    for split in ("train", "val"):
        assert sorted(split_docs(data, split)) == sorted(r["text"] for r in rows if r["split"] == split)
    assert all(r["split"] == ("val" if split_key(r["id"]) < 0.05 else "train") for r in rows)
    assert sum(len(r["text"].encode()) for r in rows) == sum(data.meta["bytes"].values()) == 200000
    # the export reads back as a corpus of the same documents
    back = prepare_data(
        {
            "name": "files",
            "path": str(out),
            "vocab_size": 512,
            "val_fraction": 0.05,
            "max_bytes": None,
            "tokenizer": None,
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    assert sorted(split_docs(back, "train") + split_docs(back, "val")) == sorted(r["text"] for r in rows)
    # never over an existing file
    before = {f: f.read_bytes() for f in files}
    code, _, err = run(["data=sotu", *TINY, cache, "--export", str(out)], capsys)
    assert code == 2 and ("exists" in err or "already holds" in err)
    assert {f: f.read_bytes() for f in files} == before


def test_export_refuses_token_files(tmp_path, capsys):
    pytest.importorskip("tokenizers")
    from test_data import prose
    from test_data_sources import byte_bpe

    tok = byte_bpe(tmp_path / "tokenizer.json", [prose(i, 2000) for i in range(5)], vocab=300)
    argv = ["data=tokens", f"data.path={tmp_path}", f"data.tokenizer={tok}", "--export", str(tmp_path / "x.jsonl")]
    code, _, err = run(argv, capsys)
    assert code == 2 and "data=tokens has no text to export" in err and not (tmp_path / "x.jsonl").exists()


def test_over_long_path_is_bad_input_not_a_disk_failure(tmp_path, capsys):
    long = tmp_path / ("x" * 5000) / "shard.jsonl"
    code, _, err = run(["data=files", f"data.path={long}", f"data.cache_dir={tmp_path / 'cache'}"], capsys)
    assert code == 2 and err.count("\n") == 1 and "File name too long" in err and len(err) < 400
    assert not (tmp_path / "cache").exists()
