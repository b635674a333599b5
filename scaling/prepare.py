"""Tokenize a corpus once into the data cache: `python -m scaling.prepare data=files data.path=/data/fineweb/*.parquet`.

Takes the same overrides as `scaling.train` (it composes the same `run` config, so the cache entry is exactly the
one a run of that config reads) and builds it: in parallel over `data.num_proc` processes (all cores by default),
unit by unit, resumable after a kill (rerun the same command), and waiting on a lock while another process prepares
the same entry. On a terminal a progress bar counts units and megabytes of text; a log gets no bar. `scaling.sweep`
and `scaling.study` do this before launching, so the launched runs only read the cache. Prints one summary line;
bad input is one line on stderr and exit 2, with nothing left in the cache.

Options (before or after the overrides):
  --config-dir DIR, -cd DIR   add DIR to the config search path, as `scaling-train --config-dir DIR` does: your
                              own data/*.yaml (data=mine), models, optimizers
  --export OUT                write the corpus's text instead of tokenizing it: one JSON line per document
                              {"id", "split", "text"} in corpus order (data.max_bytes applies), to OUT.jsonl (or
                              .jsonl.gz, .jsonl.zst) or to a directory OUT as train.jsonl and val.jsonl. An existing
                              file is never overwritten. `data=files data.path=OUT` reads it back.
                              Example: python -m scaling.prepare data=wiki --export wiki.jsonl
  -h, --help                  this text
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from scaling.base.cli import fail, one_line
from scaling.base.configs import conf_dir, pop_config_dir, search_dirs
from scaling.data import prepare_data, resolve_vocab
from scaling.data.prepared import PreparedData

PROG = "scaling.prepare"


def describe(data: PreparedData) -> str:
    m = data.meta
    ratio = sum(m["bytes"].values()) / max(sum(m["tokens"].values()), 1)
    return (
        f"{data.dataset_fingerprint} {data.tokenizer_fingerprint}: train {m['tokens']['train']:,} tokens "
        f"({m['docs']['train']:,} docs, {m['bytes']['train'] / 1e6:,.1f} MB), val {m['tokens']['val']:,} tokens "
        f"({m['docs']['val']:,} docs), {ratio:.2f} bytes/token, vocab {m['vocab_size']:,} ({m['dtype']}) "
        f"-> {data.dir}"
    )


def parse_args(args: list[str]) -> tuple[list[str], str | None, str | None]:
    """(Hydra overrides, --config-dir, --export) from the command line; a flag without its value is a ValueError."""
    config_dir, rest = pop_config_dir(args)
    overrides: list[str] = []
    export: str | None = None
    it = iter(rest)
    for a in it:
        if a == "--export" or a.startswith("--export="):
            export = a.split("=", 1)[1] if "=" in a else next(it, "")
            if not export or export.startswith("-"):
                raise ValueError("--export needs a file or folder, e.g. --export wiki.jsonl")
        elif a.startswith("-"):
            raise ValueError(f"unknown option {a}; the options are --config-dir DIR and --export OUT (see --help)")
        else:
            overrides.append(a)
    return overrides, config_dir, export


def _quoted(path: Path) -> str:
    text = str(path).replace("\\", "\\\\").replace("'", "\\'")
    return f"'file://{text}'"


def compose_run(overrides: list[str], config_dir: str | None = None) -> DictConfig:
    """The `run` config of these overrides, with `config_dir` on the search path where Hydra's --config-dir puts it:
    after the shipped configs and before hydra.searchpath's entries, so it adds options (data=mine) next to them."""
    if config_dir is not None:
        dirs = search_dirs(overrides, config_dir)  # validated: one line for a folder that does not exist
        overrides = [o for o in overrides if o.split("=", 1)[0].lstrip("+") != "hydra.searchpath"]
        overrides.append(f"hydra.searchpath=[{','.join(map(_quoted, dirs))}]")
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        return compose("run", overrides=overrides)


def main(argv: list[str] | None = None) -> PreparedData | None:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip())
        sys.exit(0)
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        overrides, config_dir, export = parse_args(args)
        cfg = resolve_vocab(compose_run(overrides, config_dir))
        if export is not None:
            _export(cfg, Path(os.path.expanduser(export)))
            return None
        data = prepare_data(cfg.data, progress=True)
    except (ValueError, HydraException, OmegaConfBaseException) as e:
        fail(PROG, one_line(e))
    except OSError as e:  # a full or read-only disk
        fail(PROG, f"{type(e).__name__}: {e}", code=1)
    print(f"prepared {describe(data)}")
    return data


def _export(cfg: DictConfig, out: Path) -> None:
    from scaling.data.export import export_corpus
    from scaling.data.settings import DataSettings

    done = export_corpus(DataSettings.from_cfg(cfg.data), out)
    where = done["out"] if isinstance(done["out"], Path) else ", ".join(map(str, done["out"].values()))
    docs, size = done["docs"], done["bytes"]
    print(
        f"exported {sum(docs.values()):,} documents ({sum(size.values()) / 1e6:,.1f} MB of text; train "
        f"{docs['train']:,}, val {docs['val']:,}) of {done['source']} -> {where}"
    )


def cli() -> None:
    """`scaling-prepare` (a console script exits with main's return value, so it must not return the data)."""
    main()


if __name__ == "__main__":
    cli()
