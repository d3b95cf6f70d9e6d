"""No silent zero: a step that outputs nothing, and a release with no samples, are warnings that
name the counters explaining them (``vlitc build --strict`` makes them errors).

    task:chat yields no samples from 185 input records (skipped_has_image: 185)
    filter:hallucination drops all 12 samples (hallucinated objects: giraffe ...: 12)
    the release has no samples (balance: 0 of 0)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

#: counters that say how much went through, not why nothing came out
VOLUME = frozenset({"records", "samples", "measured", "exported", "dropped", "images_hashed",
                    "images_remembered", "conversations", "turns", "joined_records"})
#: step kinds whose empty output is worth a warning
CHECKED = ("source", "task", "filter")


def explain(counters: Mapping[str, int], top: int = 5) -> str:
    """The counters that explain an empty output, largest first (``skipped_has_image: 185``)."""
    why = sorted(((k, int(v)) for k, v in counters.items() if k not in VOLUME and v),
                 key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k}: {v}" for k, v in why[:top]) or "no counter explains it"


def empty_warnings(steps: Iterable[Mapping], drop_reasons: Mapping[str, Counter] | None = None,
                   released: int | None = None) -> list[str]:
    """Warnings for the steps (manifest rows: id, n_in, n_out, counters) that output nothing;
    a filter's are explained by its measure step's counters and its most common drop reasons."""
    rows = {str(s["id"]): s for s in steps}
    out = []
    for sid, s in rows.items():
        kind = sid.split(":", 1)[0]
        if kind not in CHECKED or int(s.get("n_out") or 0) > 0:
            continue
        n_in = int(s.get("n_in") or 0)
        counters = dict(s.get("counters") or {})
        if kind == "source":
            out.append(f"{sid} yields no records ({explain(counters)})")
        elif kind == "task":
            out.append(f"{sid} yields no samples from {n_in} input records ({explain(counters)})")
        elif n_in:
            label = sid.split(":", 1)[1]
            counters.update((rows.get(f"measure:{label}") or {}).get("counters") or {})
            reasons = (drop_reasons or {}).get(label) or Counter()
            why = ", ".join(f"{r}: {n}" for r, n in reasons.most_common(3))
            out.append(f"{sid} drops all {n_in} samples ({why or explain(counters)})")
    if released == 0:
        funnel = [f"{sid}: {int(s.get('n_out') or 0)}" for sid, s in rows.items()
                  if sid.split(":", 1)[0] in ("task", "merge", "filter", "balance")]
        out.append("the release has no samples (" + (", ".join(funnel) or "no task") + ")")
    return out
