"""The two record shapes every op shares: image records (from sources) and samples (from tasks).

Records are plain dicts so that millions of them stream through shards cheaply (orjson); this
module names their fields, builds them, and checks them.

Image record (what a source yields, one per image after joining)::

    {"id": "39769",                       # join key value, a string
     "source": "coco",                    # source name(s) that contributed, joined by "+"
     "image": {"root": "coco", "path": "000000039769.jpg",
               "width": 640, "height": 480, "sha256": "..."} | None,   # None: text only
     "captions":  ["two cats ...", ...],
     "objects":   [{"id": 1, "category": "cat", "bbox": [x1, y1, x2, y2],
                    "attributes": [], "iscrowd": False}],
     "qas":       [{"id": "...", "question": "...", "answers": [...], "answer": "...",
                    "answer_type": "other", "choices": [...], "rationales": [...]}],
     "ocr":       [{"text": "STOP", "bbox": [...]}],
     "regions":   [{"phrase": "cat on the left", "bbox": [...], "kind": "ref"}],
     "relations": [{"subject": 0, "predicate": "on", "object": 2}],   # indices into objects
     "conversations": [{"role": "user", "content": "..."}, ...],      # existing instruction data
     "meta": {...}}

Boxes are always absolute pixels ``[x1, y1, x2, y2]`` (see :mod:`vlitc.boxes`).

Sample (what a task yields and what filters, balance and exporters consume)::

    {"id": "brief_caption/39769/0",
     "task": "brief_caption",
     "source": "coco",
     "image": {...as above...} | None,
     "turns": [{"role": "user", "content": "<image>\\nDescribe the image briefly."},
               {"role": "assistant", "content": "Two cats sleep on a pink couch."}],
     "meta": {"record_id": "39769", "template": 3, "annotations": {...},
              "generator": ..., "requests": [...], "stats": {"min_words": {...}},
              "drop": None | {"filter": "min_words", "reason": "..."}}}

The image placeholder is explicit: :data:`IMAGE_TOKEN` appears once, at the start of the first
user turn, on every sample that has an image.
"""

from __future__ import annotations

from typing import Any

IMAGE_TOKEN = "<image>"
ROLES = ("user", "assistant")

Record = dict[str, Any]
Sample = dict[str, Any]

ANNOTATION_LAYERS = ("captions", "objects", "qas", "ocr", "regions", "relations", "conversations")


def image_record(
    rid: str, source: str, image: dict | None = None, **layers: Any
) -> Record:
    """Build an image record; unknown layer names raise (no silent typos)."""
    unknown = set(layers) - set(ANNOTATION_LAYERS) - {"meta"}
    if unknown:
        raise TypeError(f"unknown annotation layers: {sorted(unknown)}")
    rec: Record = {"id": str(rid), "source": source, "image": image}
    for name in ANNOTATION_LAYERS:
        if name in layers and layers[name] is not None:
            rec[name] = layers[name]
    rec["meta"] = layers.get("meta") or {}
    return rec


#: the fields every sample carries (built by :func:`sample`)
SAMPLE_FIELDS = frozenset({"id", "task", "source", "image", "turns", "meta"})


def sample(
    sid: str,
    task: str,
    turns: list[dict],
    *,
    source: str = "",
    image: dict | None = None,
    meta: dict | None = None,
) -> Sample:
    """Build a sample, putting the image placeholder at the start of the first user turn."""
    turns = [dict(t) for t in turns]
    if image is not None and turns and IMAGE_TOKEN not in turns[0]["content"]:
        turns[0]["content"] = f"{IMAGE_TOKEN}\n{turns[0]['content']}"
    return {
        "id": sid,
        "task": task,
        "source": source,
        "image": image,
        "turns": turns,
        "meta": dict(meta or {}),
    }


def structure_problems(s: Sample) -> list[str]:
    """Return what is wrong with a sample's conversation structure (empty when it is sound)."""
    out: list[str] = []
    turns = s.get("turns") or []
    if not turns:
        return ["no turns"]
    for i, t in enumerate(turns):
        want = ROLES[i % 2]
        if t.get("role") != want:
            out.append(f"turn {i} is {t.get('role')!r}, expected {want!r}")
            break
    if len(turns) % 2:
        out.append("conversation ends on a user turn")
    placeholders = sum(t.get("content", "").count(IMAGE_TOKEN) for t in turns)
    if s.get("image") is not None:
        if placeholders != 1:
            out.append(f"{placeholders} image placeholders, expected 1")
        elif not turns[0].get("content", "").startswith(IMAGE_TOKEN):
            out.append("image placeholder is not at the start of the first user turn")
    elif placeholders:
        out.append("text-only sample has an image placeholder")
    for i, t in enumerate(turns):
        if not str(t.get("content", "")).strip():
            out.append(f"turn {i} is empty")
    return out


def assistant_text(s: Sample) -> str:
    """All assistant turns joined by newlines."""
    return "\n".join(t["content"] for t in s.get("turns", []) if t.get("role") == "assistant")


def user_text(s: Sample) -> str:
    """All user turns joined by newlines, without the image placeholder."""
    return "\n".join(
        t["content"].replace(IMAGE_TOKEN, "").strip()
        for t in s.get("turns", [])
        if t.get("role") == "user"
    )


def grounding(rec: Record) -> dict:
    """The annotation layers a sample carries in ``meta["annotations"]`` so that filters can check
    its text against the image (objects with boxes, OCR text, image size) without the source."""
    out: dict[str, Any] = {}
    img = rec.get("image") or {}
    if img:
        out["width"], out["height"] = img.get("width"), img.get("height")
    if "objects" in rec:  # an annotated image with no objects still grounds its text
        out["objects"] = [
            {"category": o["category"], "bbox": o["bbox"], "iscrowd": bool(o.get("iscrowd", False))}
            for o in rec["objects"] or []
        ]
    if "ocr" in rec:
        out["ocr"] = [t["text"] for t in rec["ocr"] or []]
    return out
