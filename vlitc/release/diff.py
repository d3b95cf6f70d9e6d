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
