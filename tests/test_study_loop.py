"""The newcomer's study at miniature scale: their own corpus (Wikipedia leads) and byte-level BPE tokenizer, made here,
and a prior that puts every first grid's optimum outside it -- the learning rates 4x too low and M_opt 4x too high,
as DeepSeek's laws were for the newcomer's corpus. Without sweep.extend no grid brackets its optimum and no M_opt
comes out (what the newcomer got); with it every grid is extended until it brackets, and M_opt is fitted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scaling.base.laws import DEEPSEEK

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # two miniature studies: minutes


def make_corpus(out: Path, n_bytes: int = 2_000_000, vocab: int = 1024) -> tuple[Path, Path]:
    """Wikipedia leads (the installed `wiki` corpus) as a JSONL file of their own, and a byte-level BPE trained on
    it."""
    tokenizers = pytest.importorskip("tokenizers")
    from scaling.data.corpora import open_corpus
    from scaling.data.settings import DataSettings

    docs, size = [], 0
    for doc_id, text in open_corpus(DataSettings.from_cfg({"name": "wiki", "vocab_size": vocab})).read():
        if text.strip():
            docs.append({"id": doc_id, "text": text})
            size += len(text.encode())
        if size >= n_bytes:
            break
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "leads.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    m, pre, dec, tr = tokenizers.models, tokenizers.pre_tokenizers, tokenizers.decoders, tokenizers.trainers
    tok = tokenizers.Tokenizer(m.BPE())
    tok.pre_tokenizer, tok.decoder = pre.ByteLevel(add_prefix_space=False), dec.ByteLevel()
    trainer = tr.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([d["text"] for d in docs], trainer)
    tok.save(str(out / "tokenizer.json"))
    return corpus, out / "tokenizer.json"


def prior(path: Path) -> Path:
    law = {k: {"coef": v.coef, "exponent": v.exponent} for k, v in DEEPSEEK.items()}
    law["eta_opt"]["coef"] /= 4
    law["M_opt"]["coef"] *= 4
    path.write_text(
        json.dumps({"hparams": {k: law[k] for k in ("eta_opt", "B_opt")}, "isoflop": {"M_opt": law["M_opt"]}})
    )
    return path


def study_file(tmp: Path, name: str, corpus: Path, tok: Path, extend: int) -> Path:
    study = {
        "dir": str(tmp / name),
        "overrides": [
            "data=files",
            f"data.path={corpus}",
            f"data.tokenizer={tok}",
            "data.vocab_size=1024",
            "model.seq_len=32",
            # 2 layers, width from 4 in steps of 2: at these budgets the IsoFLOP vertex is a width-8 to 12 model
            "sweep.shape_rule=width",
            "sweep.shape_rules.width.min_d=4",
            "sweep.shape_rules.width.d_multiple=2",
            "sweep.shape_rules.width.head_dims=[2,4,8]",
            "sweep.shape_rules.width.min_heads=1",
            "sweep.min_steps=10",
            f"sweep.extend={extend}",
            f"sweep.laws={prior(tmp / 'prior.json')}",
            "train.threads=1",
            "train.eval_tokens=4096",
            "hydra/launcher=joblib",  # two single-threaded runs at a time, as the CPU demo
            "hydra.launcher.n_jobs=2",
            "train.log_every=50",
            "train.progress=false",
        ],
        "hparams": {"budgets": [1e9, 2e9, 4e9], "overrides": ["sweep.lr_points=3", "sweep.batch_points=3"]},
        # 7 sizes: a parabola's bootstrap needs them (with 5, resamples often miss an end and have no minimum)
        "isoflop": {"budgets": [1e9, 2e9, 4e9], "overrides": ["sweep.n_shapes=7", "sweep.span=1.0"]},
        "analysis": {"bootstrap": 200, "band": 0.01, "min_budgets": 3},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def run_study(path: Path) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-m", "scaling.study", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=1500
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-3000:]
    return out


def test_sweep_extend_brackets_every_grid_and_fits_M_opt_where_the_newcomer_got_nothing(tmp_path, cache_dir):
    corpus, tok = make_corpus(tmp_path / "data")

    before = run_study(study_file(tmp_path, "before", corpus, tok, extend=0))
    report = json.loads((tmp_path / "before" / "analysis" / "report.json").read_text())
    assert "M_opt" not in (report.get("isoflop") or {}) and "isoflop" in report["skipped"]  # no M_opt: as today
    stage1 = json.loads((tmp_path / "before" / "hparams" / "analysis" / "report.json").read_text())
    assert all(b["grid_warnings"] for b in stage1["hparams"]["budgets"])  # every first grid at its edge
    assert before.stdout.count("still does not bracket its optimum after 0 extension round(s)") >= 3
    console = before.stdout.split("== stage 1 fitted")[1].split("== stage 2/3")[0]  # between the stages
    assert "eta_opt = " in console and ": 3 of 3 hparams grid(s) do not bracket their optimum" in console

    # The same study with sweep.extend on, resumed from the first's stage 1 (its finished runs are reused).
    shutil.copytree(
        tmp_path / "before" / "hparams", tmp_path / "after" / "hparams", ignore=shutil.ignore_patterns("analysis")
    )
    after = run_study(study_file(tmp_path, "after", corpus, tok, extend=3))
    assert "27 skipped" in after.stdout  # stage 1's planned grids were not trained again
    assert "extend: round 1" in after.stdout and "still does not bracket" not in after.stdout
    stage1 = json.loads((tmp_path / "after" / "hparams" / "analysis" / "report.json").read_text())
    assert not any(b["grid_warnings"] for b in stage1["hparams"]["budgets"])  # every grid brackets its optimum
    report = json.loads((tmp_path / "after" / "analysis" / "report.json").read_text())
    assert "M_opt" in report["isoflop"] and all(b["used"] for b in report["isoflop"]["budgets"])
    plan = (tmp_path / "after" / "isoflop" / "plan.csv").read_text()
    assert "IsoFLOP profile C=" in plan and "; added L2 d" in plan  # plan.csv says what was added and why
    assert "M_opt = " in after.stdout.split("== stage 3 fitted")[1]
