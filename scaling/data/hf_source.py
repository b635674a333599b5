"""`data=hf`: a Hugging Face `datasets` dataset already on disk, never downloaded at run time.

`data.path` is a `save_to_disk` folder (a Dataset, or a DatasetDict whose `data.split` is used) or a local dataset
folder of data files that `datasets.load_dataset` reads offline (its Arrow conversion goes to the data cache).
Rows are read as memory-mapped Arrow in contiguous ranges (the work units), so memory stays bounded and forked
workers share the mapping. `datasets` is an optional extra: pip install 'scaling-lab[datasets]'.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from scaling.data.settings import DataSettings
from scaling.data.sources import UNIT_BYTES, Corpus, Doc, doc_hash

BATCH_ROWS = 1000


def _datasets():
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # a run never downloads: local folders only
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import datasets
    except ImportError:
        raise ValueError("data=hf needs the datasets package: pip install 'scaling-lab[datasets]'") from None
    return datasets


def load(s: DataSettings):
    """The dataset (one split) at data.path, with one-line errors."""
    datasets = _datasets()
    path = s.path
    assert path is not None
    if not path.is_dir():
        raise ValueError(
            f"data.path={path} is not a folder; give a datasets save_to_disk folder or a local dataset "
            "folder (for single shard files use data=files)"
        )
    try:
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(str(path), cache_dir=str(s.cache_dir / "hf"))
    except Exception as e:  # datasets raises many types (FileNotFoundError, DatasetNotFoundError, ArrowInvalid...)
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise ValueError(
            f"cannot load the dataset at data.path={path} offline ({type(e).__name__}: {first}); give a "
            "save_to_disk folder or a folder of local data files"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        if s.split not in ds:
            raise ValueError(
                f"the dataset at {path} has no split '{s.split}' (splits: {', '.join(ds)}); set data.split"
            )
        ds = ds[s.split]
    if s.text_field not in ds.column_names:
        raise ValueError(
            f"the dataset at {path} has no column '{s.text_field}' (columns: "
            f"{', '.join(ds.column_names)}); set data.text_field to the column that holds the text"
        )
    if s.id_field is not None and s.id_field not in ds.column_names:
        raise ValueError(
            f"the dataset at {path} has no column '{s.id_field}' (data.id_field; columns: "
            f"{', '.join(ds.column_names)}); fix data.id_field or leave it unset"
        )
    return ds


def hf_corpus(s: DataSettings) -> Corpus:
    ds = load(s)
    id_col = s.id_field or ("id" if "id" in ds.column_names else None)
    ds = ds.select_columns([s.text_field] + ([id_col] if id_col else []))
    files = tuple(sorted({Path(f["filename"]) for f in ds.cache_files}))
    if not files:
        raise ValueError(
            f"the dataset at {s.path} lives in memory only; save it with save_to_disk and point "
            "data.path at that folder"
        )
    n = ds.num_rows
    total = sum(f.stat().st_size for f in files)
    per_unit = max(1, int(n * UNIT_BYTES / total)) if total else n or 1
    if s.max_bytes is not None:
        per_unit = max(n, 1)  # a prefix of the corpus: one unit, read in order
    units = tuple((a, min(a + per_unit, n)) for a in range(0, n, per_unit))
    where = f"dataset {s.path}"

    def read(unit: tuple[int, int]) -> Iterator[Doc]:
        start, stop = unit
        for a in range(start, stop, BATCH_ROWS):
            batch = ds[a : min(a + BATCH_ROWS, stop)]
            ids = batch[id_col] if id_col else [None] * len(batch[s.text_field])
            for k, (text, doc_id) in enumerate(zip(batch[s.text_field], ids)):
                if not isinstance(text, str):
                    raise ValueError(
                        f"{where} row {a + k} has a non-text '{s.text_field}' ({type(text).__name__}); "
                        "drop or fill such rows"
                    )
                yield f"{s.split}#{doc_hash(text) if doc_id is None else doc_id}", text

    sizes = tuple(int(total * (b - a) / max(n, 1)) for a, b in units)
    return Corpus("hf", f"{where} ({s.split})", files, units, sizes, read)
