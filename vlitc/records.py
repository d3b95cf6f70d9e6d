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
     "conversations": [{"id": "a1", "turns": [{"role": "user", "content": "..."}, ...],
                        "where": "llava.json:12", "system": "...", "meta": {...}}],
                                          # existing instruction data: one entry per conversation
     "meta": {...}}

``image`` is ``None`` (text only), one image reference (a dict), or a list of two or more
(multi-image data: LLaVA-OneVision, M4-Instruct); :func:`images_of` reads all three the same way.

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

The image placeholder is explicit: :data:`IMAGE_TOKEN` appears once per image. With one image it
sits at the start of the first user turn; with several, in user turns, in the order of the images
(at the start of the first user turn unless the data placed them).
"""

from __future__ import annotations

from typing import Any

IMAGE_TOKEN = "<image>"
ROLES = ("user", "assistant")

Record = dict[str, Any]
Sample = dict[str, Any]

ANNOTATION_LAYERS = ("captions", "objects", "qas", "ocr", "regions", "relations", "conversations")


Image = dict[str, Any]
_LAYER_NAMES = frozenset({*ANNOTATION_LAYERS, "meta"})


def images_of(x: Record | Sample) -> list[Image]:
    """The image references of a record or sample as a list (empty for text only)."""
    img = x.get("image")
    if img is None:
        return []
    if isinstance(img, list):
        return img
    return [img]


def image_value(images: list[Image] | Image | None) -> Image | list[Image] | None:
    """The ``image`` field for some images: ``None``, the one reference, or the list of several."""
    if images is None or isinstance(images, dict):
        return images
    if not images:
        return None
    return images[0] if len(images) == 1 else list(images)


def one_image(x: Record | Sample) -> Image:
    """The image of a single-image record or sample, else ``{}`` (text only or several images):
    what annotation layers (boxes in pixels of one image) refer to."""
    img = x.get("image")
    return img if isinstance(img, dict) else {}


def image_key(img: Image) -> str:
    """What identifies one image: its content hash, else ``root/path``."""
    return img.get("sha256") or f"{img.get('root', '')}/{img.get('path', '')}"


def image_refs_key(x: Record | Sample) -> str:
    """What identifies the images of a sample (several joined by ``|``; empty for text only)."""
    return "|".join(image_key(i) for i in images_of(x))


def image_record(
    rid: str, source: str, image: Image | list[Image] | None = None, **layers: Any
) -> Record:
    """Build an image record; unknown layer names raise (no silent typos)."""
    unknown = layers.keys() - _LAYER_NAMES
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
    image: Image | list[Image] | None = None,
    meta: dict | None = None,
    own: bool = False,
) -> Sample:
    """Build a sample, putting one image placeholder per image at the start of the first user
    turn unless the turns already hold placeholders (multi-image data placing them itself).
    ``own``: the turns (a new list of new dicts) and ``meta`` become the sample's, uncopied."""
    if not own:
        turns = [dict(t) for t in turns]
    if type(image) is dict:  # one image (the usual case)
        if turns and IMAGE_TOKEN not in turns[0]["content"]:
            turns[0]["content"] = IMAGE_TOKEN + "\n" + turns[0]["content"]
        return {"id": sid, "task": task, "source": source, "image": image, "turns": turns,
                "meta": meta if own and meta is not None else dict(meta or {})}
    image = image_value(image)
    n = 0 if image is None else 1 if isinstance(image, dict) else len(image)
    if n == 1 and turns and IMAGE_TOKEN not in turns[0]["content"] or \
            n > 1 and turns and not any(IMAGE_TOKEN in t["content"] for t in turns):
        turns[0]["content"] = IMAGE_TOKEN + "\n" + (IMAGE_TOKEN + "\n") * (n - 1) + turns[0]["content"]
    return {
        "id": sid,
        "task": task,
        "source": source,
        "image": image,
        "turns": turns,
        "meta": meta if own and meta is not None else dict(meta or {}),
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
    counts = [str(t.get("content", "")).count(IMAGE_TOKEN) for t in turns]
    placeholders = sum(counts)
    n = len(images_of(s))
    if n == 1:
        if placeholders != 1:
            out.append(f"{placeholders} image placeholders, expected 1")
        elif not str(turns[0].get("content", "")).startswith(IMAGE_TOKEN):
            out.append("image placeholder is not at the start of the first user turn")
    elif n:
        if placeholders != n:
            out.append(f"{placeholders} image placeholders for {n} images")
        elif any(c for i, c in enumerate(counts) if i % 2):
            out.append("image placeholder in an assistant turn")
    elif placeholders:
        out.append("text-only sample has an image placeholder")
    for i, t in enumerate(turns):
        if not str(t.get("content", "")).strip():
            out.append(f"turn {i} is empty")
    return out


def is_sound(s: Sample) -> bool:
    """True exactly when :func:`vlitc.records.structure_problems` finds nothing, without building
    its messages (anything unusual, e.g. a non-string turn, answers False and gets the full check)."""
    turns = s.get("turns")
    if type(turns) is list and len(turns) == 2:  # one question and its answer, said at once
        q, a = turns
        if type(q) is dict and type(a) is dict:
            qt, at = q.get("content"), a.get("content")
            if type(qt) is str and type(at) is str and qt and at and q.get("role") == "user" \
                    and a.get("role") == "assistant" and not qt.isspace() and not at.isspace():
                image = s.get("image")
                if type(image) is dict:
                    return qt.startswith(IMAGE_TOKEN) and qt.count(IMAGE_TOKEN) + at.count(IMAGE_TOKEN) == 1
                return image is None and IMAGE_TOKEN not in qt and IMAGE_TOKEN not in at
    if not turns or len(turns) % 2:
        return False
    placeholders = 0
    for i, t in enumerate(turns):
        if type(t) is not dict:
            return False
        text = t.get("content")
        if type(text) is not str or t.get("role") != ROLES[i % 2] or not text or text.isspace():
            return False
        placeholders += text.count(IMAGE_TOKEN)
    image = s.get("image")
    if type(image) is dict:
        return placeholders == 1 and turns[0]["content"].startswith(IMAGE_TOKEN)
    if image is not None:  # several images: the full check places their placeholders
        return False
    return placeholders == 0


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
    img = one_image(rec)
    size = [img.get("width"), img.get("height")] if img else (rec.get("meta") or {}).get("image_size")
    if size and not isinstance(rec.get("image"), list):
        out["width"], out["height"] = size[0], size[1]
    if "objects" in rec:  # an annotated image with no objects still grounds its text
        out["objects"] = [
            {"category": o["category"], "bbox": o["bbox"], "iscrowd": bool(o.get("iscrowd", False))}
            for o in rec["objects"] or []
        ]
    if "ocr" in rec:
        out["ocr"] = [t["text"] for t in rec["ocr"] or []]
    if rec.get("captions"):
        out["captions"] = list(rec["captions"])
    return out
