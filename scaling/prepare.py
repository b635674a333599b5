"""Tokenize a corpus once into the data cache: `python -m scaling.prepare data=files data.path=/data/fineweb/*.parquet`.

Takes the same overrides as `scaling.train` (it composes the same `run` config, so the cache entry is exactly the
one a run of that config reads) and builds it with a progress bar: in parallel over `data.num_proc` processes (all
cores by default), unit by unit, resumable after a kill (rerun the same command), and waiting on a lock while another
process prepares the same entry. `scaling.sweep` and `scaling.study` do this before launching, so the launched runs
only read the cache. Prints one summary line; bad input is one line on stderr and exit 2, with nothing left in the
cache.
"""

from __future__ import annotations

import sys

from hydra import compose, initialize_config_dir

from scaling.base.cli import fail
from scaling.base.configs import conf_dir
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


def main(argv: list[str] | None = None) -> PreparedData:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip())
        sys.exit(0)
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            cfg = compose("run", overrides=args)
        data = prepare_data(resolve_vocab(cfg).data, progress=True)
    except (ValueError, HydraException, OmegaConfBaseException) as e:
        fail(PROG, e)
    except OSError as e:  # a full or read-only disk
        fail(PROG, f"{type(e).__name__}: {e}", code=1)
    print(f"prepared {describe(data)}")
    return data


def cli() -> None:
    """`scaling-prepare` (a console script exits with main's return value, so it must not return the data)."""
    main()


if __name__ == "__main__":
    cli()
