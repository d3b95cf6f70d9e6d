"""Bounding boxes: one canonical form, absolute pixels ``[x1, y1, x2, y2]``, and converters.

Every loader converts its dataset's own convention into the canonical form; every task and
exporter converts from it. Round trips are exact up to the declared precision.
"""

from __future__ import annotations

from collections.abc import Sequence

Box = list[float]


def from_xywh(b: Sequence[float]) -> Box:
    """COCO ``[x, y, w, h]`` (pixels) to ``[x1, y1, x2, y2]``."""
    x, y, w, h = (float(v) for v in b)
    return [x, y, x + w, y + h]


def to_xywh(b: Sequence[float]) -> Box:
    x1, y1, x2, y2 = (float(v) for v in b)
    return [x1, y1, x2 - x1, y2 - y1]


def from_normalized(b: Sequence[float], width: float, height: float) -> Box:
    """``[x1, y1, x2, y2]`` in 0..1 to pixels."""
    x1, y1, x2, y2 = (float(v) for v in b)
    return [x1 * width, y1 * height, x2 * width, y2 * height]


def to_normalized(b: Sequence[float], width: float, height: float, ndigits: int | None = None) -> Box:
    x1, y1, x2, y2 = (float(v) for v in b)
    out = [x1 / width, y1 / height, x2 / width, y2 / height]
    return [round(v, ndigits) for v in out] if ndigits is not None else out


def from_thousand(b: Sequence[float], width: float, height: float) -> Box:
    """``[x1, y1, x2, y2]`` in integer 0..1000 (Qwen-VL, Shikra style) to pixels."""
    return from_normalized([float(v) / 1000.0 for v in b], width, height)


def to_thousand(b: Sequence[float], width: float, height: float) -> list[int]:
    return [int(round(v * 1000)) for v in to_normalized(b, width, height)]


def from_square_padded_normalized(b: Sequence[float], width: float, height: float) -> Box:
    """LLaVA-1.5 boxes: normalised against the image padded to a square (longest side)."""
    side = float(max(width, height))
    dx, dy = (side - width) / 2.0, (side - height) / 2.0
    x1, y1, x2, y2 = (float(v) * side for v in b)
    return [x1 - dx, y1 - dy, x2 - dx, y2 - dy]


def to_square_padded_normalized(
    b: Sequence[float], width: float, height: float, ndigits: int | None = 2
) -> Box:
    side = float(max(width, height))
    dx, dy = (side - width) / 2.0, (side - height) / 2.0
    x1, y1, x2, y2 = (float(v) for v in b)
    out = [(x1 + dx) / side, (y1 + dy) / side, (x2 + dx) / side, (y2 + dy) / side]
    return [round(v, ndigits) for v in out] if ndigits is not None else out


def area(b: Sequence[float]) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix1, iy1 = max(a[0], b[0]), max(a[1], b[1])
    ix2, iy2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, ix2 - ix1) * max(0.0, iy2 - iy1)
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def inside(b: Sequence[float], width: float, height: float, tol: float = 1.0) -> bool:
    """Whether a box lies within the image (with ``tol`` pixels of slack) and is not empty."""
    return (
        b[0] >= -tol and b[1] >= -tol and b[2] <= width + tol and b[3] <= height + tol
        and b[2] > b[0] and b[3] > b[1]
    )


def clip(b: Sequence[float], width: float, height: float) -> Box:
    return [min(max(b[0], 0.0), width), min(max(b[1], 0.0), height),
            min(max(b[2], 0.0), width), min(max(b[3], 0.0), height)]
