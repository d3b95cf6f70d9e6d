"""``vlitc.lock``: what a release was built from, so that it can be rebuilt byte for byte.

It records the resolved recipe, the hashes of every source file and of the image set, the model
identifiers, the package versions, the seed and every step key. :func:`differences` says exactly
what differs between two locks (a frozen rebuild compares its own lock with the release's).
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from vlitc.errors import InputError, Location
from vlitc.release import layout

LOCK_NAME = layout.LOCK
LOCK_FORMAT = 1
#: distributions whose versions can change the bytes of a release
PACKAGES = ("vlitc", "numpy", "pillow", "pyarrow", "jinja2", "orjson", "scikit-learn",
            "sentence-transformers", "torch", "open_clip_torch", "openai", "anthropic", "networkx")
#: params of filters and tasks that name a model
MODEL_PARAMS = ("model", "pretrained", "generator", "embedding_model", "judge")


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (``None`` when not installed), plus Python's."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def image_set_hash(images: Iterable[tuple[str, str]]) -> str:
    """sha256 over the sorted ``(reference, content sha256)`` pairs of a release's images."""
    h = hashlib.sha256()
    for ref, sha in sorted(set(images)):
        h.update(f"{ref}\t{sha}\n".encode())
    return h.hexdigest()


def model_ids(recipe: Mapping) -> dict[str, dict]:
    """Generators (provider and model) and any model a task or filter names, by recipe path."""
    out: dict[str, dict] = {}
    for name, g in sorted((recipe.get("generators") or {}).items()):
        if isinstance(g, dict):
            out[f"generators.{name}"] = {k: g[k] for k in ("provider", "model", "base_url")
                                         if k in g}
    entries = [(f"tasks.{n}", t) for n, t in sorted((recipe.get("tasks") or {}).items())]
    entries += [(f"filters[{i}]", f) for i, f in enumerate(recipe.get("filters") or [])]
    for where, spec in entries:
        if isinstance(spec, dict):
            found = {k: spec[k] for k in MODEL_PARAMS if isinstance(spec.get(k), str)}
            if found:
                out[where] = found
    return out


def make_lock(recipe: Mapping, steps: Iterable[Mapping], images: Mapping[str, Any],
              packages: Mapping[str, str | None]) -> dict:
    """The lock of one build: pure over its inputs (no clock, no host names)."""
    steps = list(steps)
    sources = {str(s["id"]).split(":", 1)[1]: dict(sorted((s.get("files") or {}).items()))
               for s in steps if str(s.get("id", "")).startswith("source:")}
    return {
        "lock": LOCK_FORMAT,
        "name": recipe.get("name"), "version": recipe.get("version"), "seed": recipe.get("seed"),
        "recipe": recipe,
        "sources": sources,
        "images": dict(images),
        "models": model_ids(recipe),
        "packages": dict(packages),
        "steps": {str(s["id"]): s.get("key") for s in steps},
    }


def dumps(lock: Mapping) -> bytes:
    """Canonical bytes: sorted keys, two-space indent, trailing newline."""
    return (json.dumps(lock, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def read(path: str | Path) -> dict:
    """Read a lock (a release folder or the file itself); malformed locks are located errors."""
    p = Path(path)
    if p.is_dir():
        p = p / LOCK_NAME
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read lock: {e.strerror}", Location(str(p)),
                         hint="a release folder holds vlitc.lock next to README.md") from None
    try:
        lock = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON: {e.msg}", Location(str(p), e.lineno, e.colno)) from None
    if not isinstance(lock, dict) or lock.get("lock") != LOCK_FORMAT:
        raise InputError(f"not a vlitc lock of format {LOCK_FORMAT}", Location(str(p)),
                         hint="rebuild the release with this vlitc version")
    return lock


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Every leaf that differs, as ``path: expected -> actual`` lines (sorted, exact)."""
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        out: list[str] = []
        for k in sorted(set(expected) | set(actual), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in actual:
                out.append(f"{sub}: only in the lock ({_short(expected[k])})")
            elif k not in expected:
                out.append(f"{sub}: not in the lock ({_short(actual[k])})")
            else:
                out += differences(expected[k], actual[k], sub)
        return out
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [d for i, (a, b) in enumerate(zip(expected, actual, strict=True))
                for d in differences(a, b, f"{path}[{i}]")]
    return [] if expected == actual else [f"{path}: {_short(expected)} -> {_short(actual)}"]


def verify(lock: Mapping, current: Mapping, ignore: Iterable[str] = ()) -> list[str]:
    """What differs between a release's lock and the lock of a rebuild (empty: same inputs)."""
    skip = tuple(ignore)
    return [d for d in differences(lock, current) if not d.startswith(skip)]


def _short(v: Any, n: int = 60) -> str:
    s = json.dumps(v, sort_keys=True, ensure_ascii=False)
    return s if len(s) <= n else s[: n - 1] + "…"
