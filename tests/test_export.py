"""`python -m scaling.export RUN_DIR OUT`: a trained run loads with AutoTokenizer / LlamaForCausalLM.from_pretrained as
it is, encodes text as the run's tokenizer did, and greedy generation stops at the document separator (skipped
without the `hf` extra)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.helpers import CONF

pytest.importorskip("safetensors")
tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

from scaling.data import prepare_data  # noqa: E402
from scaling.data.hf_tokenizer import (  # noqa: E402
    TOKENIZER_JSON,
    from_sentencepiece,
    hf_tokenizer_files,
    same_ids,
    sentencepiece_spec,
)
from scaling.data.prepared import SentencePieceEncoder  # noqa: E402
from scaling.data.tokenizer import train_tokenizer  # noqa: E402
from scaling.export import main  # noqa: E402
from scaling.run.sampling import load_run  # noqa: E402
from scaling.run.single import train_run  # noqa: E402

# Six fixed sentences of distinct words, each a document: a tiny model learns them, and that each ends the document,
# in 100 steps (~4 s on one CPU thread).
WORDS = (
    "apple river stone cloud maple tiger violet copper meadow silver harbor lantern falcon orchid summit ember willow "
    "granite pepper comet marble thistle canyon velvet"
).split()
SENTENCES = [" ".join(WORDS[i : i + 4]) + "." for i in range(0, len(WORDS), 4)]
# Text the conversion must get right beyond the corpus: runs of spaces, leading/trailing space, tabs and newlines,
# characters outside the vocabulary (byte fallback).
EDGE_TEXTS = ["a  b   c", " lead", "trail ", "tab\tand\nnew\n\nlines", "ünïcödé 漢字 😀", "1234 3.14", ""]
# A special token's spelling: plain text in training (encode_special_tokens), the token for Hugging Face (the one
# documented difference, skipped by same_ids).
SPECIAL_TEXT = "<s> x </s>"


def _train(root: Path, cache_dir: Path, *overrides: str) -> Path:
    corpus = root / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": SENTENCES[i % 6]}) + "\n" for i in range(600)))
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(
            "run",
            overrides=[
                "data=files",
                f"data.path={corpus}",
                "data.vocab_size=300",
                f"data.cache_dir={cache_dir}",
                "model=tiny",
                "model.d_model=32",
                "model.n_head=2",
                "model.seq_len=32",
                "train.progress=false",
                "train.tokens=51200",
                "train.batch_size=512",
                "train.eval_tokens=512",
                "train.log_every=50",
                "train.threads=1",
                "optim.lr=1e-2",
                *overrides,
            ],
        )
    run_dir = root / "run"
    with pytest.warns(UserWarning, match="repeats its training data"):
        assert train_run(cfg, run_dir)["status"] == "completed"
    return run_dir


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, cache_dir) -> Path:
    """A run with the default tokenizer: SentencePiece BPE trained on the corpus (<s> separates documents)."""
    return _train(tmp_path_factory.mktemp("export"), cache_dir)


@pytest.fixture(scope="module")
def pretrained_tokenizer_run(tmp_path_factory, cache_dir) -> Path:
    """A run with a pretrained byte-level BPE tokenizer.json whose separator is <|endoftext|>, as GPT-2's."""
    root = tmp_path_factory.mktemp("export_pretrained")
    path = root / "tokenizer.json"
    byte_level_bpe(SENTENCES * 10).save(str(path))
    # 320 ids, padded to 384 embedding rows (as DeepSeek pads 100,015 to 102,400): the export keeps the padding
    return _train(root, cache_dir, f"data.tokenizer={path}", "data.vocab_size=384")


def byte_level_bpe(texts: list[str]):
    tk = tokenizers
    tok = tk.Tokenizer(tk.models.BPE(unk_token=None))
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    alphabet = tk.pre_tokenizers.ByteLevel.alphabet()  # all 256 bytes, as GPT-2's: any text round-trips
    trainer = tk.trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"], initial_alphabet=alphabet)
    tok.train_from_iterator(texts, trainer)
    return tok


@pytest.mark.parametrize("kind", ["sentencepiece", "tokenizer.json"])
def test_export_loads_in_transformers_and_greedy_generation_stops_at_eos(kind, request, tmp_path, capsys):
    trained_run = request.getfixturevalue("trained_run" if kind == "sentencepiece" else "pretrained_tokenizer_run")
    sep, sep_id = ("<s>", 1) if kind == "sentencepiece" else ("<|endoftext|>", 0)
    out = tmp_path / "hf"
    assert main([str(trained_run), str(out)]) == 0
    printed = capsys.readouterr()
    assert f"bos = eos = pad = {sep!r} (id {sep_id})" in printed.out
    assert "completed, checkpoint at step 100/100" in printed.err
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["vocab_size"] == (300 if kind == "sentencepiece" else 384)
    assert cfg["bos_token_id"] == cfg["eos_token_id"] == sep_id and cfg["max_position_embeddings"] == 32
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == sep_id

    tok = transformers.AutoTokenizer.from_pretrained(out)  # as it is: no arguments, no network
    hf = transformers.LlamaForCausalLM.from_pretrained(out).float().eval()
    ours, run_cfg, _ = load_run(trained_run)
    data = prepare_data(run_cfg["data"])
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (data.bos_id,) * 3 == (sep_id,) * 3
    for text in [*SENTENCES, *EDGE_TEXTS]:  # the run's ids, after the separator every document started with
        assert tok(text)["input_ids"] == [data.bos_id, *data.encode(text)], text
        assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text

    stopped = 0
    for prompt in ("apple", "maple tiger", "harbor", "comet marble"):
        enc = tok(prompt, return_tensors="pt")
        n = enc["input_ids"].shape[1]
        with torch.no_grad():
            out_ids = hf.generate(**enc, max_new_tokens=24, do_sample=False)[0, n:].tolist()
        expected = ours.generate(enc["input_ids"], 24)[0, n:].tolist()  # our KV-cached greedy decoding
        if data.bos_id in out_ids:
            stopped += 1
            end = out_ids.index(data.bos_id)
            assert end == len(out_ids) - 1  # generation stopped at the first eos
            assert out_ids == expected[: end + 1]  # the same tokens up to it
            text = tok.decode(out_ids, skip_special_tokens=True)
            assert (prompt + text).rstrip().endswith(".")  # a sentence's end, then the document's
    assert stopped == 4  # every prompt ends its document within 24 tokens


def test_tokenizer_conversion_gives_the_run_ids(cache_dir, tmp_path, make_cfg):
    """BPE (the default) and unigram SentencePiece models become tokenizer.json files with the same ids on real text;
    a converted tokenizer that differs is refused, naming where."""
    data = prepare_data(OmegaConf.to_container(make_cfg().data, resolve=True))
    val = data.val_tokens()[:20000].tolist()
    texts = [data.decode(val[i : i + 500]) for i in range(0, len(val), 500)] + [*EDGE_TEXTS, SPECIAL_TEXT]
    files, sep = hf_tokenizer_files(data.tokenizer_file, data.bos_id, 64)
    checked = same_ids(data.encoder, files[TOKENIZER_JSON], texts)
    assert sep == "<s>" and checked == sum(map(len, texts)) - len(SPECIAL_TEXT)  # the one documented difference

    from scaling.data.settings import TOKENIZER_DEFAULTS

    lines = [t for t in texts if t.strip()] * 20
    opts = {**TOKENIZER_DEFAULTS, "model_type": "unigram"}
    model_file = tmp_path / "uni" / "tokenizer.model"
    model_file.parent.mkdir()
    train_tokenizer(lines, 400, opts, model_file, "test")
    uni = SentencePieceEncoder(model_file)
    assert sentencepiece_spec(model_file, {"model_type": "bpe"})["model_type"] == "unigram"  # its file says so
    assert same_ids(uni, from_sentencepiece(model_file).to_str(), texts) > 10_000
    with pytest.raises(ValueError, match="encodes differently from the run's at token"):
        broken = from_sentencepiece(model_file)
        broken.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace(prepend_scheme="always", split=True)
        same_ids(uni, broken.to_str(), texts)  # a "▁" before each text: refused, naming where
    for model_type in ("bpe", "unigram"):  # a user's add_dummy_prefix=true: a "▁" before every text
        train_tokenizer(lines, 400, {**opts, "model_type": model_type, "add_dummy_prefix": True}, model_file, "test")
        enc, tok = SentencePieceEncoder(model_file), from_sentencepiece(model_file)
        assert same_ids(enc, tok.to_str(), texts) > 10_000
        assert all(tok.decode(tok.encode(t).ids) == enc.decode(enc.encode(t)) for t in texts if t != SPECIAL_TEXT)
    train_tokenizer(lines, 400, {**opts, "normalization_rule_name": "nmt_nfkc"}, model_file, "test")
    with pytest.raises(ValueError, match=r"normalises text \(nmt_nfkc\)"):
        from_sentencepiece(model_file)


def test_a_pretrained_tokenizer_json_is_kept_and_starts_texts_with_its_separator(tmp_path):
    tok = byte_level_bpe(SENTENCES * 10)
    src = tmp_path / "tokenizer.json"
    tok.save(str(src))
    files, sep = hf_tokenizer_files(src, 0, 128)
    out = tmp_path / "hf"
    out.mkdir()
    for name, text in files.items():
        (out / name).write_text(text)
    auto = transformers.AutoTokenizer.from_pretrained(out)
    assert sep == "<|endoftext|>" and auto.eos_token_id == auto.bos_token_id == 0
    ids = auto("apple river")["input_ids"]
    assert ids == [0, *tok.encode("apple river").ids] and auto.decode(ids[1:]) == "apple river"


@pytest.mark.parametrize("case", ["run dir", "foreign dir", "not a run"])
def test_bad_input_is_one_line_exit_2_and_nothing_is_written(trained_run, tmp_path, capsys, case):
    before = sorted(p.name for p in trained_run.iterdir())
    if case == "run dir":
        args, why = [str(trained_run), str(trained_run)], "would replace the run directory"
    elif case == "foreign dir":
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "notes.txt").write_text("keep me")
        args, why = [str(trained_run), str(tmp_path / "mine")], "holds files an export does not write (notes.txt)"
    else:
        args, why = [str(tmp_path), str(tmp_path / "hf")], "no config.yaml"
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and why in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in trained_run.iterdir()) == before
    assert not (tmp_path / "hf").exists()
    if case == "foreign dir":
        assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_an_earlier_export_is_replaced_and_the_context_length_can_be_set(trained_run, tmp_path, capsys):
    out = tmp_path / "hf"
    assert main([str(trained_run), str(out)]) == 0
    assert main([str(trained_run), str(out), "--max-position-embeddings", "128", "--config-dir", str(tmp_path)]) == 0
    assert json.loads((out / "config.json").read_text())["max_position_embeddings"] == 128
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 128
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temporary directories left behind
