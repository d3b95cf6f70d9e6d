"""Small inline SVG charts for the report: horizontal bars and histograms, no plotting library.

Output is deterministic text (fixed number formatting), so a report is byte-identical across
builds of the same data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from html import escape

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1")


def _num(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def bars(title: str, rows: Sequence[tuple[str, float]], width: int = 560) -> str:
    """A horizontal bar chart of ``(label, value)`` rows."""
    row_h, label_w, pad = 22, 170, 8
    height = pad * 2 + 24 + row_h * max(len(rows), 1)
    top = max((v for _, v in rows), default=0) or 1
    span = width - label_w - 70
    out = [_head(title, width, height)]
    for i, (label, value) in enumerate(rows):
        y = pad + 24 + i * row_h
        w = span * value / top
        out.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{escape(label[:28])}</text>')
        out.append(f'<rect x="{label_w}" y="{y + 3}" width="{_num(w)}" height="{row_h - 6}" '
                   f'fill="{PALETTE[i % len(PALETTE)]}"><title>{escape(label)}: {_num(value)}</title></rect>')
        out.append(f'<text x="{_num(label_w + w + 4)}" y="{y + 15}">{_num(value)}</text>')
    return "".join(out) + "</svg>"


def histogram(title: str, values: Sequence[float] | Mapping[float, int], bins: int = 20,
              width: int = 560) -> str:
    """A histogram of ``values`` over ``bins`` equal bins between their min and max; ``values``
    may be a tally (value -> how many times it occurs: a running statistic), drawn the same."""
    height, pad, base = 200, 36, 160
    out = [_head(title, width, height)]
    tally = values if isinstance(values, Mapping) else Counter(values)
    if not tally:
        return "".join(out) + '<text x="20" y="60">no data</text></svg>'
    lo, hi = min(tally), max(tally)
    step = (hi - lo) / bins if hi > lo else 1.0
    counts = [0] * bins
    for v, k in tally.items():
        counts[min(int((v - lo) / step), bins - 1)] += k
    top = max(counts)
    bw = (width - 2 * pad) / bins
    for i, c in enumerate(counts):
        h = (base - 30) * c / top
        out.append(f'<rect x="{_num(pad + i * bw)}" y="{_num(base - h)}" width="{_num(bw - 1)}" '
                   f'height="{_num(h)}" fill="{PALETTE[0]}"><title>{_num(lo + i * step)}–'
                   f'{_num(lo + (i + 1) * step)}: {c}</title></rect>')
    out.append(f'<line x1="{pad}" y1="{base}" x2="{width - pad}" y2="{base}" stroke="#333"/>')
    out.append(f'<text x="{pad}" y="{base + 16}">{_fmt(lo)}</text>')
    out.append(f'<text x="{width - pad}" y="{base + 16}" text-anchor="end">{_fmt(hi)}</text>')
    out.append(f'<text x="{width // 2}" y="{base + 32}" text-anchor="middle">n = {sum(tally.values())}, '
               f'max bin {top}</text>')
    return "".join(out) + "</svg>"


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _head(title: str, width: int, height: int) -> str:
    return (f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{escape(title)}" font-family="sans-serif" font-size="12">'
            f'<text x="8" y="18" font-weight="bold" font-size="14">{escape(title)}</text>')
