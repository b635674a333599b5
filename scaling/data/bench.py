"""Prepare-step benchmark: `python -m scaling.data.bench [--size 1G] [--num-proc N] [--tokenizer PATH]`.

Generates a corpus of `.jsonl.gz` shards (English-like text, Zipf-distributed words; 1 GB of raw text by default),
then in the same run measures
- the reference: the tokenizer's own batch encode (`encode_batch_fast`, the call prepare makes) on a sample of the
  same documents in 1 MB batches, in a fresh process with one thread (RAYON_NUM_THREADS=1), 3 rounds before and 3
  after the prepare (the median is used, so a load that drifts hits both); times the processes used, it is what a
  perfectly parallel tokenizer would reach;
- `prepare_data` on the whole corpus (decompress, parse, split, encode, check bytes, write, concatenate), in a fresh
  process with a fresh cache: MB/s of raw text, tokens/s, and the peak RSS of the preparer and of its largest worker.
The tokenizer is a byte-level BPE `tokenizer.json` (32,768 ids, trained here on a sample unless --tokenizer is
given). The last line is key=value pairs for scripts; `prepare_vs_reference` = prepare tokens/s over
(reference tokens/s x processes). The load average is printed: on a shared machine compare runs at similar load.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARD_BYTES = 64 << 20
ROUNDS = 3  # reference rounds before and after the prepare run  # raw text per shard: a unit of the prepare step
WORDS = 20_000


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().rstrip("B")
    try:
        return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(float(t))
    except (ValueError, IndexError):
        raise SystemExit(f"scaling.data.bench: error: --size={text!r} is not a size; use e.g. 1G, 256M") from None


def _lexicon(rng: np.random.Generator) -> np.ndarray:
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    p = 1.0 / np.arange(1, 27) ** 0.9
    lengths = np.clip(rng.poisson(4.5, WORDS), 1, 14)
    words = ["".join(rng.choice(letters, n, p=p / p.sum())) for n in lengths]
    return np.array(words)


def generate(root: Path, size: int, seed: int = 0) -> tuple[int, int]:
    """Shards of JSON lines {"id", "text"} until `size` bytes of raw UTF-8 text: (bytes, documents)."""
    rng = np.random.default_rng(seed)
    lexicon = _lexicon(rng)
    zipf = 1.0 / np.arange(1, WORDS + 1) ** 1.05
    zipf /= zipf.sum()
    total = docs = shard = 0
    root.mkdir(parents=True, exist_ok=True)
    while total < size:
        lines: list[str] = []
        raw = 0
        while raw < min(SHARD_BYTES, size - total):
            n = int(rng.integers(200, 1500))  # words: 1-9 kB documents, like web pages
            words = lexicon[rng.choice(WORDS, n, p=zipf)]
            ends = rng.random(n) < 0.07
            text = " ".join(w + (". " if e else "") for w, e in zip(words.tolist(), ends.tolist())).replace(". ", ".\n")
            if rng.random() < 0.05:
                text = "Café — naïve 東京. " + text  # some multi-byte characters
            lines.append(json.dumps({"id": f"{shard}-{len(lines)}", "text": text}, ensure_ascii=False))
            raw += len(text.encode())
        with gzip.open(root / f"shard-{shard:05d}.jsonl.gz", "wt", compresslevel=1, encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        total += raw
        docs += len(lines)
        shard += 1
    return total, docs


def train_tokenizer(root: Path, out: Path, vocab: int = 32_768) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    first = sorted(root.glob("*.jsonl.gz"))[0]
    with gzip.open(first, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(3000), f)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tok.save(str(out))
    return out


_REFERENCE = """
import gzip, json, resource, sys, time
from pathlib import Path
from scaling.data.pretrained import load
tok = load(Path(sys.argv[1]))
texts, size = [], 0
for shard in sorted(Path(sys.argv[2]).glob("*.jsonl.gz")):
    with gzip.open(shard, "rt", encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"]); size += len(texts[-1].encode())
            if size >= int(sys.argv[3]): break
    if size >= int(sys.argv[3]): break
encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # the call prepare makes (no character offsets)
batches, batch, held = [], [], 0  # 1 MB batches, as prepare encodes
for text in texts:
    batch.append(text); held += len(text)
    if held >= 1 << 20:
        batches.append(batch); batch, held = [], 0
batches.append(batch)
encode(texts[:50], add_special_tokens=False)  # warm-up
seconds = []
for _ in range(int(sys.argv[4])):
    t = time.perf_counter()
    n = sum(len(e.ids) for b in batches for e in encode(b, add_special_tokens=False))
    seconds.append(time.perf_counter() - t)
print(json.dumps({"bytes": size, "tokens": n, "seconds": seconds}))
"""

_PREPARE = """
import json, resource, sys, time
from scaling.data import prepare_data
cfg = {"name": "files", "path": sys.argv[1], "vocab_size": 32768, "val_fraction": 0.005, "max_bytes": None,
       "tokenizer": sys.argv[2], "cache_dir": sys.argv[3], "num_proc": int(sys.argv[4])}
t = time.perf_counter()
data = prepare_data(cfg, progress=True)
dt = time.perf_counter() - t
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec(), so it would report the launching process's peak
hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:"))
print(json.dumps({"seconds": dt, "bytes": sum(data.meta["bytes"].values()), "tokens": sum(data.meta["tokens"].values()),
                  "rss_main_mb": hwm / 1024,
                  "rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def _python(code: str, *args: str, threads: int | None = None) -> dict:
    env = os.environ | ({"RAYON_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"} if threads else {})
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="scaling.data.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1G", help="raw text to generate (default 1G; e.g. 256M on a busy machine)")
    ap.add_argument("--num-proc", type=int, default=os.cpu_count() or 1, help="prepare processes (default: all cores)")
    ap.add_argument(
        "--tokenizer", type=Path, help="a tokenizer.json (default: a 32,768-id byte-level BPE trained here)"
    )
    ap.add_argument("--sample", default="16M", help="text the single-thread reference encodes (default 16M)")
    ap.add_argument("--dir", type=Path, help="where to generate (default: a temporary folder, removed afterwards)")
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    work = args.dir or Path(tempfile.mkdtemp(prefix="scaling-data-bench-"))
    try:
        t = time.perf_counter()
        corpus = work / "corpus"
        if not corpus.is_dir():
            raw, docs = generate(corpus, size)
            print(
                f"generated {raw / 1e6:,.0f} MB of text ({docs:,} documents) as "
                f"{sum(f.stat().st_size for f in corpus.iterdir()) / 1e6:,.0f} MB of .jsonl.gz in "
                f"{time.perf_counter() - t:.0f} s"
            )
        tok = args.tokenizer or train_tokenizer(corpus, work / "tokenizer.json")
        ref_args = (str(tok), str(corpus), str(parse_size(args.sample)), str(ROUNDS))
        before = _python(_REFERENCE, *ref_args, threads=1)
        shutil.rmtree(work / "cache", ignore_errors=True)
        # one tokenizer thread per process here too, so "x processes" compares like with like
        prep = _python(_PREPARE, str(corpus), str(tok), str(work / "cache"), str(args.num_proc), threads=1)
        after = _python(_REFERENCE, *ref_args, threads=1)  # before and after: a load that drifts hits both
        rounds = sorted(before["seconds"] + after["seconds"])
        ref = {"bytes": before["bytes"], "tokens": before["tokens"], "seconds": statistics.median(rounds)}
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    ref_tps, prep_tps = ref["tokens"] / ref["seconds"], prep["tokens"] / prep["seconds"]
    ratio = prep_tps / (ref_tps * args.num_proc)
    mb_s = prep["bytes"] / prep["seconds"] / 1e6
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load:.2f}; prepare with {args.num_proc} processes")
    print(
        f"reference (tokenizer encode_batch_fast, 1 thread, {ref['bytes'] / 1e6:.0f} MB sample in 1 MB batches, median "
        f"of {len(rounds)} rounds before and after prepare, {rounds[0]:.1f}-{rounds[-1]:.1f} s): "
        f"{ref['bytes'] / ref['seconds'] / 1e6:.2f} MB/s, {ref_tps:,.0f} tokens/s"
    )
    print(
        f"prepare ({prep['bytes'] / 1e6:,.0f} MB, {prep['tokens']:,} tokens): {prep['seconds']:.1f} s, "
        f"{prep['bytes'] / prep['seconds'] / 1e6:.2f} MB/s, {prep_tps:,.0f} tokens/s = {ratio:.2f} x reference x "
        f"{args.num_proc} processes"
    )
    print(f"peak RSS: preparer {prep['rss_main_mb']:.0f} MB, largest worker {prep['rss_worker_mb']:.0f} MB")
    print(
        f"size_mb={prep['bytes'] / 1e6:.0f} num_proc={args.num_proc} prepare_mb_s={mb_s:.3f} "
        f"prepare_tokens_s={prep_tps:.0f} reference_tokens_s={ref_tps:.0f} prepare_vs_reference={ratio:.3f} "
        f"rss_main_mb={prep['rss_main_mb']:.0f} rss_worker_mb={prep['rss_worker_mb']:.0f} load={load:.2f}"
    )


if __name__ == "__main__":
    main()
