"""Compare two releases (``vlitc diff OLD NEW``): counts per task and source, indicator shifts,
and the samples added, removed and changed (by id, on their exported content)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlitc.hashing import digest
from vlitc.release.read import read_release


def _indicators(release: Path) -> dict:
    p = release / "indicators.json" if release.is_dir() else None
    if p is not None and p.is_file():
        return json.loads(p.read_text(encoding="utf-8"))
    return {}


def _fingerprint(s: Mapping) -> str:
    body = {"image": s.get("image"), "turns": s.get("turns")}
    return digest(body, finite=False)


def flatten(d: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested indicators as ``a.b.c`` keys (counts are compared elsewhere)."""
    out: dict[str, float] = {}
    if isinstance(d, Mapping):
        for k, v in d.items():
            if k != "counts":
                out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(d, (int, float)) and not isinstance(d, bool):
        out[prefix] = float(d)
    return out


def _count_shift(old: Mapping[str, int], new: Mapping[str, int]) -> dict[str, dict]:
    return {k: {"old": old.get(k, 0), "new": new.get(k, 0), "delta": new.get(k, 0) - old.get(k, 0)}
            for k in sorted(set(old) | set(new))}


def diff_releases(old: str | Path, new: str | Path) -> dict:
    """The differences between two releases as a JSON-able dict."""
    old, new = Path(old), Path(new)
    a, b = read_release(old), read_release(new)
    ia, ib = _indicators(old), _indicators(new)
    counts = {}
    for what in ("task", "source"):
        ca = (ia.get("counts") or {}).get(what) or dict(Counter(s.get(what, "") for s in a))
        cb = (ib.get("counts") or {}).get(what) or dict(Counter(s.get(what, "") for s in b))
        counts[what] = _count_shift(ca, cb)
    fa = flatten(ia.get("indicators") or {})
    fb = flatten(ib.get("indicators") or {})
    shifts = {k: {"old": fa.get(k), "new": fb.get(k),
                  "delta": None if k not in fa or k not in fb else fb[k] - fa[k]}
              for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}
    pa = {s["id"]: _fingerprint(s) for s in a}
    pb = {s["id"]: _fingerprint(s) for s in b}
    return {
        "samples": {"old": len(pa), "new": len(pb),
                    "added": sorted(set(pb) - set(pa)), "removed": sorted(set(pa) - set(pb)),
                    "changed": sorted(k for k in set(pa) & set(pb) if pa[k] != pb[k])},
        "counts": counts,
        "indicators": shifts,
    }


def is_identical(d: Mapping) -> bool:
    s = d["samples"]
    return not (s["added"] or s["removed"] or s["changed"] or d["indicators"]
                or any(v["delta"] for c in d["counts"].values() for v in c.values()))


def format_diff(d: Mapping, show: int = 20) -> str:
    """A plain-text rendering of :func:`diff_releases` for the terminal."""
    s = d["samples"]
    lines = [f"samples: {s['old']} -> {s['new']} (+{len(s['added'])} added, "
             f"-{len(s['removed'])} removed, ~{len(s['changed'])} changed)"]
    for what, rows in d["counts"].items():
        moved = {k: v for k, v in rows.items() if v["delta"]}
        if moved:
            lines.append(f"per {what}:")
            lines += [f"  {k}: {v['old']} -> {v['new']} ({v['delta']:+d})" for k, v in moved.items()]
    if d["indicators"]:
        lines.append("indicators:")
        for k, v in d["indicators"].items():
            delta = "" if v["delta"] is None else f" ({v['delta']:+.4g})"
            lines.append(f"  {k}: {_g(v['old'])} -> {_g(v['new'])}{delta}")
    for label in ("added", "removed", "changed"):
        ids = s[label]
        if ids:
            more = f" ... and {len(ids) - show} more" if len(ids) > show else ""
            lines.append(f"{label}: {', '.join(ids[:show])}{more}")
    if is_identical(d):
        lines.append("no difference")
    return "\n".join(lines)


def _g(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def image_finder(release: Path):
    """``image -> path`` for the images a release's samples name: under the release itself (an
    export that copies, links, or an image folder beside it), else under the image folders of
    the recipe its lock recorded; ``KeyError`` when none holds the file."""
    root = release if release.is_dir() else release.parent
    bases = [root, root / "images"]
    from vlitc.errors import UserError
    from vlitc.release.lock import read as read_lock

    try:
        recipe = read_lock(root).get("recipe") or {}
    except (UserError, OSError, ValueError):  # no lock, or not one this vlitc reads
        recipe = {}
    bases += [root / str(o["image_dir"]) for o in recipe.get("outputs") or []
              if isinstance(o, dict) and isinstance(o.get("image_dir"), str)]
    for src in (recipe.get("sources") or {}).values():
        if isinstance(src, dict) and isinstance(src.get("images"), str):
            folder = Path(src["images"])
            bases += [folder, folder.parent] if folder.is_absolute() else []

    def find(image: dict) -> Path:
        ref = f"{image['root']}/{image['path']}" if image.get("root") else str(image["path"])
        for base in bases:
            if (base / ref).is_file():
                return base / ref
        raise KeyError(ref)

    return find


def diff_page(old: str | Path, new: str | Path, d: Mapping, show: int = 50,
              thumb: int = 240) -> str:
    """``vlitc diff --html``: an audit page of the added, removed and changed samples (old and
    new side by side), with their pictures inline, after the count and indicator shifts."""
    from vlitc.release import gallery, html

    old, new = Path(old), Path(new)
    a = {s["id"]: s for s in read_release(old)}
    b = {s["id"]: s for s in read_release(new)}
    find_a, find_b = image_finder(old), image_finder(new)
    s = d["samples"]
    return html.diff_page({
        "old": str(old), "new": str(new), "summary": format_diff(d, show=0),
        "added": [gallery.item(b[i], find_b, thumb) for i in s["added"][:show]],
        "removed": [gallery.item(a[i], find_a, thumb) for i in s["removed"][:show]],
        "changed": [(gallery.item(a[i], find_a, thumb), gallery.item(b[i], find_b, thumb))
                    for i in s["changed"][:show]],
        "more": {k: max(0, len(s[k]) - show) for k in ("added", "removed", "changed")},
    })
