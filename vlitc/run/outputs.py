"""Put a build's files into its output folder, atomically, and write the manifest."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import orjson

from vlitc.run.store import Store, atomic_write


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


def _same(dest: Path, size: int, sha: str, known: dict) -> bool:
    if not dest.is_file():
        return False
    st = dest.stat()
    rec = known.get(str(dest))
    return st.st_size == size and rec == [st.st_size, st.st_mtime_ns, sha]


def materialize(store: Store, files: list[dict], out_dir: Path, manifest: dict) -> None:
    """Copy each output file from the object store into ``out_dir`` unless it is already there."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = store.root / "materialized.json"
    try:
        known = json.loads(state_path.read_text())
    except (OSError, ValueError):
        known = {}
    old_manifest = out_dir / "manifest.json"
    try:
        previous = {o["path"]: o["sha256"] for o in json.loads(old_manifest.read_text())["outputs"]}
    except (OSError, ValueError, KeyError, TypeError):
        previous = {}
    current = {f["path"] for f in files}
    for rel, sha in previous.items():
        stale = out_dir / rel
        if rel not in current and _same(stale, stale.stat().st_size if stale.is_file() else -1, sha, known):
            stale.unlink()
    for f in files:
        dest = out_dir / f["path"]
        if _same(dest, f["size"], f["sha256"], known):
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(store.object_path(f["sha256"]), tmp)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        st = dest.stat()
        known[str(dest)] = [st.st_size, st.st_mtime_ns, f["sha256"]]
    atomic_write(state_path, json.dumps(known).encode())
    atomic_write(out_dir / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n")
