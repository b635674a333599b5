"""A run as a Hugging Face model: `python -m scaling.export RUN_DIR OUT` (or `scaling-export`; needs the hf extra).

OUT then holds model.safetensors, config.json (LlamaConfig with bos/eos ids), generation_config.json,
tokenizer.json and tokenizer_config.json, and loads as it is, offline:

    tok = AutoTokenizer.from_pretrained(OUT); model = LlamaForCausalLM.from_pretrained(OUT)
    model.generate(**tok("The Congress", return_tensors="pt"), max_new_tokens=40)   # stops at the separator

Every training document began with the tokenizer's separator (<s> for a trained SentencePiece tokenizer), so it is
bos, eos and pad: `tok(text)` starts with it, as the model saw text, and `generate` stops where the model ends a
document. max_position_embeddings is the run's seq_len unless --max-position-embeddings says otherwise: RoPE
computes any position, but positions past seq_len were never trained. The run's last checkpoint is exported
(finished or not: the header line says which). OUT must be new, empty or an earlier export (replaced as a whole).
Bad input is one line on stderr and exit 2, with nothing written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scaling.base.cli import fail
from scaling.base.configs import add_config_dir_arg, search_dirs

PROG = "python -m scaling.export"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, help="a run directory (config.yaml + ckpt.pt)")
    ap.add_argument("out", type=Path, help="the Hugging Face directory to write (new, empty or an earlier export)")
    ap.add_argument(
        "--max-position-embeddings",
        type=int,
        default=None,
        metavar="N",
        help="config.json's max_position_embeddings (default: the run's seq_len, the context it was trained on)",
    )
    add_config_dir_arg(ap, None)
    a = ap.parse_args(argv)
    try:
        search_dirs([], a.config_dir)
        from scaling.run.hf_export import export_run

        e = export_run(a.run_dir, a.out, a.max_position_embeddings)
    except ImportError as err:
        fail(PROG, f"the export needs the hf extra ({err.name or err} is missing): pip install 'scaling-lab[hf]'")
    except ValueError as err:
        fail(PROG, err)
    of = f"/{e.steps}" if e.steps else ""
    print(f"# {a.run_dir}: {e.status}, checkpoint at step {e.step}{of}", file=sys.stderr)
    print(
        f"exported {e.params:,} parameters -> {e.out}/\n"
        f"  tokenizer: {e.tokenizer}; encodes {e.checked_chars:,} characters of validation text to the run's ids\n"
        f"  bos = eos = pad = {e.sep!r} (id {e.sep_id}); max_position_embeddings {e.max_position_embeddings}\n"
        f"  load: AutoTokenizer.from_pretrained({str(e.out)!r}), LlamaForCausalLM.from_pretrained({str(e.out)!r})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
