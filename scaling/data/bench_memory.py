"""Memory of the prepare step whatever the shape of the text: `python -m scaling.data.bench_memory [--size 100M]`.

Generates a corpus whose first document is one line of `--size` bytes of English-like text without a newline (a
`.txt` file, or one JSON line with --format jsonl) next to 40 ordinary documents, then runs `python -m
scaling.prepare data=files` on it in a fresh process with a fresh cache and reports its peak RSS: of the largest
process (the preparer or a worker: getrusage of the waited-for children) and of the whole process tree (sampled
from /proc every 20 ms; shared pages count once per process). The goal (README, issue 22): <= 1 GB for a 100 MB line.
Also times the content hash of the long shard: every byte (what a cache miss costs) against the sample digest that
keys its memo. The last line is key=value pairs for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from scaling.data.bench import _lexicon, parse_size


def _words(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lexicon = _lexicon(rng)
    zipf = 1.0 / np.arange(1, len(lexicon) + 1) ** 1.05
    return lexicon, zipf / zipf.sum()


def one_line(size: int, seed: int = 0) -> str:
    """`size` bytes of words and sentences, no newline (a scraped page or a book flattened into one field)."""
    lexicon, p = _words(seed)
    rng = np.random.default_rng(seed + 1)
    out, total = [], 0
    while total < size:
        chunk = " ".join(rng.choice(lexicon, 200_000, p=p).tolist()) + ". Café naïve 東京. "
        out.append(chunk)
        total += len(chunk.encode())
    return "".join(out).encode()[:size].decode(errors="ignore")


def generate(root: Path, size: int, fmt: str) -> int:
    root.mkdir(parents=True, exist_ok=True)
    text = one_line(size)
    if fmt == "txt":
        (root / "long.txt").write_text(text)
    else:
        (root / "long.jsonl").write_text(json.dumps({"id": "long", "text": text}, ensure_ascii=False) + "\n")
    lexicon, p = _words(0)
    rng = np.random.default_rng(2)
    for i in range(40):  # ordinary documents: the tokenizer trains on them (SentencePiece skips the long line)
        lines = [
            " ".join(rng.choice(lexicon, int(rng.integers(8, 20)), p=p).tolist()).capitalize() + "." for _ in range(400)
        ]
        (root / f"doc{i:02d}.txt").write_text("\n".join(lines) + "\n")
    return len(text.encode())


def _tree_rss(root_pid: int) -> tuple[int, int]:
    """Sums of RSS and of PSS (shared pages divided among their processes), bytes, of root_pid and its
    descendants, from /proc/PID/smaps_rollup."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    rss = pss = 0
    todo = [root_pid]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                fields = {x.split(":")[0]: int(x.split()[1]) * 1024 for x in f if x.split()[-1:] == ["kB"]}
            rss, pss = rss + fields.get("Rss", 0), pss + fields.get("Pss", 0)
        except (OSError, ValueError, IndexError):
            pass
    return rss, pss


def measure_prepare(corpus: Path, cache: Path, num_proc: int | None, extra: list[str], src: str | None = None) -> dict:
    cmd = [sys.executable, "-m", "scaling.prepare", "data=files", f"data.path={corpus}", f"data.cache_dir={cache}"]
    cmd += [f"data.num_proc={num_proc}"] if num_proc else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    env = os.environ | ({"PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])} if src else {})
    proc = subprocess.Popen(  # in src, whose scaling/ then comes first on sys.path
        [*cmd, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=src
    )
    peak = [0, 0]

    def sample() -> None:
        while proc.poll() is None:
            rss, pss = _tree_rss(proc.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    sampler.join()
    seconds = time.perf_counter() - t0
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    if proc.returncode != 0:
        raise SystemExit(f"scaling.data.bench_memory: prepare failed: {err.strip().splitlines()[-1:]}")
    return {
        "cmd": " ".join([*cmd, *extra]),
        "seconds": seconds,
        "peak_rss_largest_process": largest if largest > before * 1024 else None,
        "peak_rss_tree": peak[0],
        "peak_pss_tree": peak[1],
        "summary": out.strip(),
    }


def hash_costs(path: Path, rounds: int = 5) -> dict:
    from scaling.data.cache import SAMPLE_BLOCK_BYTES, SAMPLE_BLOCKS, sample_digest
    from scaling.data.cache import content_hash as full_hash

    size = path.stat().st_size
    fulls, samples = [], []
    with tempfile.TemporaryDirectory() as memo:
        for k in range(rounds):
            t = time.perf_counter()
            full_hash([path], Path(memo) / str(k))  # a fresh memo dir: every byte is hashed
            fulls.append(time.perf_counter() - t)
            t = time.perf_counter()
            sample_digest(path, size)
            samples.append(time.perf_counter() - t)
    return {
        "bytes": size,
        "full_s": sorted(fulls)[rounds // 2],
        "sample_s": sorted(samples)[rounds // 2],
        "sample_read": SAMPLE_BLOCKS * SAMPLE_BLOCK_BYTES,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m scaling.data.bench_memory", description=__doc__)
    ap.add_argument("--size", default="100M", help="bytes of the one-line document (default 100M)")
    ap.add_argument("--format", choices=("txt", "jsonl"), default="txt")
    ap.add_argument("--num-proc", type=int, default=None, help="data.num_proc (default: all cores)")
    ap.add_argument("--tokenizer", default=None, help="a tokenizer.json instead of the trained SentencePiece")
    ap.add_argument(
        "--src", default=None, help="run the prepare of another checkout (its root first on PYTHONPATH): a baseline"
    )
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        corpus = Path(tmp) / "corpus"
        text = generate(corpus, size, args.format)
        extra = [f"data.tokenizer={args.tokenizer}"] if args.tokenizer else []
        r = measure_prepare(corpus, Path(tmp) / "cache", args.num_proc, extra, args.src)
        h = hash_costs(next(corpus.glob("long.*")))
    gb = 1 << 30
    largest = r["peak_rss_largest_process"]
    print(f"corpus: one line of {text / 1e6:,.1f} MB ({args.format}) + 40 short documents")
    print(f"command: {'PYTHONPATH=' + args.src + ' ' if args.src else ''}{r['cmd']}")
    print(r["summary"])
    print(
        f"prepare: {r['seconds']:.1f} s; peak RSS of the largest process "
        f"{largest / 2**20:,.0f} MiB; of the process tree {r['peak_rss_tree'] / 2**20:,.0f} MiB RSS (shared pages "
        f"counted in every process), {r['peak_pss_tree'] / 2**20:,.0f} MiB PSS (goal <= 1,024 MiB)"
        if largest
        else f"prepare: {r['seconds']:.1f} s; peak RSS of the process tree {r['peak_rss_tree'] / 2**20:,.0f} MiB"
    )
    print(
        f"content hash of the {h['bytes'] / 1e6:,.1f} MB shard: every byte {h['full_s'] * 1e3:,.1f} ms, sample digest "
        f"({h['sample_read'] >> 10} KiB read) {h['sample_s'] * 1e3:,.2f} ms (medians of 5)"
    )
    print(
        f"size={text} peak_rss_largest={largest} peak_rss_tree={r['peak_rss_tree']} peak_pss_tree={r['peak_pss_tree']} "
        f"within_goal={int(max(largest or 0, r['peak_rss_tree']) <= gb)} prepare_s={r['seconds']:.2f} "
        f"hash_full_s={h['full_s']:.4f} hash_sample_s={h['sample_s']:.5f}"
    )


if __name__ == "__main__":
    main()
