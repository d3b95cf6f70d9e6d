"""Facts about the files a step wrote (the release itself is put together by
:mod:`vlitc.release.layout`)."""

from __future__ import annotations

from pathlib import Path

import orjson


def count_records(path: Path) -> int | None:
    """Records in an exported file: JSON array items, JSON lines, or Parquet rows."""
    name = path.name
    if name.endswith(".jsonl"):
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    if name.endswith(".json"):
        try:
            data = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError:
            return None
        return len(data) if isinstance(data, list) else None
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return None
