"""OUT/tags.parquet: the tagger's probabilities per item, so a re-run or --rethreshold needs no model.

One row per item (key, file, image hash, probabilities as a fixed-size float32 list); the model's
identity, the tag names and categories sit in the schema metadata under "datakit".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from datakit.errors import UsageError
from datakit.imageio import atomic_path
from datakit.manifest import hash_file

PROBS_FILE = "tags.parquet"


def read_store(out: Path) -> tuple[dict, dict[str, tuple[str, np.ndarray]]]:
    """(metadata, {key: (image hash, probabilities)}) from OUT/tags.parquet; empty when absent or unreadable."""
    path = out / PROBS_FILE
    if not path.is_file():
        return {}, {}
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(b"datakit", b"{}"))
        keys = table.column("key").to_pylist()
        hashes = table.column("image_hash").to_pylist()
        flat = table.column("probs").combine_chunks().flatten().to_numpy().astype(np.float32)
    except Exception:
        return {}, {}  # a damaged store only costs a re-run of the model
    width = len(meta.get("names", [])) or (len(flat) // max(1, len(keys)))
    rows = {k: (h, flat[i * width : (i + 1) * width]) for i, (k, h) in enumerate(zip(keys, hashes))}
    return meta, rows


def write_store(out: Path, meta: dict, rows: dict[str, tuple[str, np.ndarray]], files: dict[str, str]) -> None:
    """Write OUT/tags.parquet atomically: one row per item (key, file, image hash, probabilities)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = list(rows)
    width = len(meta["names"])
    flat = np.concatenate([rows[k][1] for k in keys]).astype(np.float32) if keys else np.zeros(0, np.float32)
    probs = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), width)
    table = pa.table(
        {"key": keys, "file": [files.get(k) for k in keys], "image_hash": [rows[k][0] for k in keys], "probs": probs}
    ).replace_schema_metadata({"datakit": json.dumps(meta)})
    with atomic_path(out / PROBS_FILE) as tmp:
        pq.write_table(table, tmp)


def read_probabilities(out_dir: str | os.PathLike):
    """OUT/tags.parquet as a pandas DataFrame: one row per image file, one column per tag (for analysis)."""
    import pandas as pd

    meta, rows = read_store(Path(out_dir))
    if not rows:
        raise UsageError(f"no readable {PROBS_FILE} in {out_dir}")
    import pyarrow.parquet as pq

    files = pq.read_table(Path(out_dir) / PROBS_FILE, columns=["key", "file"]).to_pydict()
    index = [f or k for k, f in zip(files["key"], files["file"])]
    return pd.DataFrame(np.stack([p for _, p in rows.values()]), index=index, columns=meta["names"])


def file_stamp(path: Path) -> list:
    """(resolved path, size, mtime): what says a model file is unchanged since its hash was stored."""
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def stored_model_hash(path: Path, out: Path) -> str:
    """The model file's content hash; taken from OUT/tags.parquet when the file is unchanged since.

    WD14 models are 0.3-1.3 GB: hashing one costs a second or two on every run otherwise.
    """
    store = out / PROBS_FILE
    if store.is_file():
        import pyarrow.parquet as pq

        try:
            meta = json.loads((pq.read_schema(store).metadata or {}).get(b"datakit", b"{}"))
            if meta.get("model_hash") and meta.get("model_stamp") == file_stamp(path):
                return meta["model_hash"]
        except Exception:
            pass  # unreadable store: hash the file
    return hash_file(path)
