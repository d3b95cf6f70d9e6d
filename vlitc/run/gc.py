"""``vlitc cache gc``: keep what the last build of each recipe uses, remove the rest."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson

from vlitc.run.fingerprint import step_key


def collect(root: Path, everything: bool = False) -> dict:
    freed = {"entries": 0, "objects": 0, "bytes": 0}
    if not root.is_dir():
        return freed
    keep_keys: set[str] = set()
    if not everything:
        for state in (root / "state").glob("*/*.json"):
            try:
                keep_keys.add(step_key(orjson.loads(state.read_bytes())))
            except (OSError, ValueError, orjson.JSONDecodeError):
                continue
    keep_objects: set[str] = set()
    for entry in (root / "steps").glob("*.json"):
        if entry.stem in keep_keys:
            try:
                data = orjson.loads(entry.read_bytes())
                for out in data["outputs"].values():
                    keep_objects.update(s["sha256"] for s in out["shards"])
                keep_objects.update(f["sha256"] for f in data.get("files", []))
                continue
            except (OSError, KeyError, orjson.JSONDecodeError):
                pass
        freed["bytes"] += entry.stat().st_size
        entry.unlink()
        freed["entries"] += 1
    for obj in (root / "objects").glob("*/*"):
        if obj.name not in keep_objects:
            freed["bytes"] += obj.stat().st_size
            obj.unlink()
            freed["objects"] += 1
    if everything:
        for sub in ("state", "items", "llm", "files", "tmp"):
            shutil.rmtree(root / sub, ignore_errors=True)
        (root / "materialized.json").unlink(missing_ok=True)
    return freed
