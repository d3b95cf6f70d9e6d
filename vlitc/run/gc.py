"""``vlitc cache gc``: keep what the last build of each recipe uses, remove the rest, and the
temp files that interrupted builds left behind. Paid results are never touched: the LLM
responses (``llm/``), the per-item caches (``items/``) and the per-image tables (``rows/``)
go only with ``--all``."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson

from vlitc.errors import UserError
from vlitc.run.fingerprint import step_key
from vlitc.run.store import LOCK_FILE, entry_objects, hold

#: folders of diskcache and SQLite stores, which keep their own files
_OWN_FILES = ("llm", "items", "files", "rows")


def collect(root: Path, everything: bool = False) -> dict:
    freed = {"entries": 0, "objects": 0, "temp": 0, "bytes": 0}
    if not root.is_dir():
        return freed
    held = hold(root, exclusive=True)
    if held is None and (root / LOCK_FILE).exists():
        raise UserError(f"a build is using the cache {root}; run `vlitc cache gc` when it has finished")
    try:
        _temp_files(root, freed)
        _collect(root, everything, freed)
    finally:
        if held is not None:
            held.close()
    return freed


def _temp_files(root: Path, freed: dict) -> None:
    """Temp files of builds that are gone: everything in ``tmp/``, and the ``.tmp-*`` files
    an atomic write was interrupted in (never inside the diskcache stores)."""
    doomed = list((root / "tmp").glob("*"))
    for sub in root.iterdir():
        if sub.is_dir() and sub.name not in _OWN_FILES and sub.name != "tmp":
            doomed += sub.rglob(".tmp-*")
    doomed += root.glob(".tmp-*")
    for p in doomed:
        if p.is_dir() and not p.is_symlink():
            freed["bytes"] += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
            shutil.rmtree(p, ignore_errors=True)
        else:
            freed["bytes"] += p.lstat().st_size
            p.unlink(missing_ok=True)
        freed["temp"] += 1


def _collect(root: Path, everything: bool, freed: dict) -> None:
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
                keep_objects |= entry_objects(orjson.loads(entry.read_bytes()))
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
        for sub in ("state", "items", "llm", "files", "rows", "tmp"):
            shutil.rmtree(root / sub, ignore_errors=True)
        (root / "materialized.json").unlink(missing_ok=True)
