"""Images in requests: how an image is named in a request, prepared for a provider, drawn on
(region boxes) and counted in tokens.

A request's image part names the image by the sha256 of its file plus the preparation the
generator asks for; the bytes are attached only when the request is sent. Preparation (Pillow)
applies the EXIF orientation, converts to RGB, shrinks the image to fit ``max_side`` and
``max_pixels`` and re-encodes it (JPEG at ``quality``, or PNG). The key of a request holds the
image's sha256 and the *resolved* preparation (the prepared width and height, format, quality,
detail), so changing ``max_side`` re-sends exactly the requests whose prepared image changes,
and a rebuild prepares nothing: the size comes from the image's header (remembered by hash) and
the prepared files are cached on disk, one per (image hash, preparation).

Derived images (:func:`draw_boxes`): a copy of an image with one or several numbered boxes drawn
on it (ViP-LLaVA style visual prompts), written once under the cache by content hash; samples
made from it reference that file, and the export writes it into the release, so the trained
model sees the same pixels as the generator did.

Image tokens (:func:`image_tokens`): OpenAI's tile rule (``low``: a flat base; ``high``/``auto``:
fit in 2048x2048, shortest side at most 768, then base + per-tile tokens per 512-px tile) and
Anthropic's pixel rule (width x height / 750), overridable per generator under ``prices``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlitc.hashing import digest
from vlitc.paths import atomic_write

#: the image root of derived images (boxes drawn) in records and samples
DERIVED_ROOT = "@derived"
#: bump when what a prepared or derived file holds changes for the same inputs
PREP_VERSION = 1
DERIVE_VERSION = 1
DETAILS = ("low", "high", "auto")
FORMATS = ("jpeg", "png")

#: preparation defaults per provider, from each provider's own documented limits: OpenAI scales
#: ``high`` images to fit 2048x2048 (shortest side 768) and ``low`` ones to 512x512; Anthropic
#: resizes images whose long edge exceeds 1568 px or that exceed about 1.15 megapixels
PREP_DEFAULTS: dict[str, dict[str, Any]] = {
    "openai": {"max_side": 2048, "max_pixels": None, "format": "jpeg", "quality": 90,
               "detail": "auto"},
    "anthropic": {"max_side": 1568, "max_pixels": 1_150_000, "format": "jpeg", "quality": 90},
    "mock": {"max_side": 2048, "max_pixels": None, "format": "jpeg", "quality": 90},
}
LOW_DETAIL_SIDE = 512

#: the JSON schema of a generator's ``image`` settings
PREP_SCHEMA: dict = {
    "type": "object",
    "additionalProperties": False,
    "description": "how images are prepared for this generator (defaults: the provider's limits)",
    "properties": {
        "max_side": {"type": "integer", "minimum": 16, "description": "longest side, pixels"},
        "max_pixels": {"type": "integer", "minimum": 256, "description": "width x height cap"},
        "format": {"enum": list(FORMATS), "description": "re-encoding"},
        "quality": {"type": "integer", "minimum": 1, "maximum": 100, "description": "JPEG quality"},
        "detail": {"enum": list(DETAILS), "description": "OpenAI image detail"},
        "urls": {"type": "boolean",
                 "description": "send an image's http(s) URL when its source gives one "
                                "(default false: the prepared image's bytes)"},
    },
}

#: OpenAI image-token rules per model prefix: (base tokens, tokens per 512-px tile); ``low`` costs
#: the base only. gpt-4o-mini counts many more tokens per image at a lower token price.
OPENAI_IMAGE_RULES: dict[str, tuple[int, int]] = {
    "gpt-4o": (85, 170),
    "gpt-4o-mini": (2833, 5667),
    "gpt-4.1": (85, 170),
    "gpt-4-turbo": (85, 170),
    "": (85, 170),
}
ANTHROPIC_PIXELS_PER_TOKEN = 750


# ------------------------------------------------------------------------------------------
# what a request names


@dataclass(frozen=True)
class ImageSource:
    """An image a request shows: its file, the sha256 of that file, and an http(s) URL when its
    source gives one."""

    sha256: str
    path: str
    url: str | None = None


def image_part(source: ImageSource) -> dict:
    """A message content part showing ``source`` (bytes attached when the request is sent)."""
    return {"type": "image", "image": source}


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def has_images(messages: list[dict]) -> bool:
    return any(isinstance(m.get("content"), list)
               and any(p.get("type") == "image" for p in m["content"]) for m in messages)


def text_of(content: str | list) -> str:
    """The text of a message's content (its text parts joined by blank lines)."""
    if isinstance(content, str):
        return content
    return "\n\n".join(p["text"] for p in content if p.get("type") == "text")


# ------------------------------------------------------------------------------------------
# preparation parameters


@dataclass(frozen=True)
class Prep:
    """How a generator wants its images: size caps, encoding, and (OpenAI) detail."""

    max_side: int | None = 2048
    max_pixels: int | None = None
    format: str = "jpeg"
    quality: int = 90
    detail: str | None = None
    urls: bool = False

    @classmethod
    def for_generator(cls, provider: str, config: dict | None) -> Prep:
        base = dict(PREP_DEFAULTS.get(provider, PREP_DEFAULTS["openai"]))
        base.update({k: v for k, v in (config or {}).items() if v is not None})
        if provider != "openai":
            base.pop("detail", None)
        if base.get("detail") == "low" and not (config or {}).get("max_side"):
            base["max_side"] = LOW_DETAIL_SIDE
        return cls(max_side=base.get("max_side"), max_pixels=base.get("max_pixels"),
                   format=str(base.get("format", "jpeg")), quality=int(base.get("quality", 90)),
                   detail=base.get("detail"), urls=bool(base.get("urls", False)))

    def target(self, width: int, height: int) -> tuple[int, int]:
        """The prepared size of a ``width`` x ``height`` image (never enlarged)."""
        scale = 1.0
        if self.max_side and max(width, height) > self.max_side:
            scale = self.max_side / max(width, height)
        if self.max_pixels and width * height * scale * scale > self.max_pixels:
            scale = math.sqrt(self.max_pixels / (width * height))
        if scale >= 1.0:
            return width, height
        return max(1, int(width * scale + 1e-6)), max(1, int(height * scale + 1e-6))

    def key_part(self, src: ImageSource, size: tuple[int, int]) -> dict:
        """How the image appears in a request's key: hash and resolved preparation, no bytes."""
        if self.urls and src.url:
            part: dict[str, Any] = {"type": "image", "sha256": src.sha256, "url": src.url}
        else:
            w, h = self.target(*size)
            part = {"type": "image", "sha256": src.sha256, "size": [w, h], "format": self.format}
            if self.format == "jpeg":
                part["quality"] = self.quality
        if self.detail is not None:
            part["detail"] = self.detail
        return part

    @property
    def media_type(self) -> str:
        return "image/jpeg" if self.format == "jpeg" else "image/png"


# ------------------------------------------------------------------------------------------
# image tokens


def openai_tokens(width: int, height: int, detail: str | None, model: str = "",
                  rule: tuple[int, int] | None = None) -> int:
    """OpenAI's tile rule for one image of the given size."""
    if rule is None:
        best = max((p for p in OPENAI_IMAGE_RULES if model.startswith(p)), key=len)
        rule = OPENAI_IMAGE_RULES[best]
    base, tile = rule
    if detail == "low":
        return base
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        s = 2048 / max(w, h)
        w, h = w * s, h * s
    if min(w, h) > 768:
        s = 768 / min(w, h)
        w, h = w * s, h * s
    return base + tile * math.ceil(w / 512) * math.ceil(h / 512)


def anthropic_tokens(width: int, height: int, pixels_per_token: float = ANTHROPIC_PIXELS_PER_TOKEN
                     ) -> int:
    """Anthropic's pixel rule: about width x height / 750 tokens."""
    return int(math.ceil(width * height / pixels_per_token))


def image_tokens(provider: str, model: str, width: int, height: int, detail: str | None,
                 prices: dict | None = None) -> int:
    """Tokens one prepared image costs on ``provider`` (``prices`` may override the rule:
    ``image_base_tokens`` / ``image_tile_tokens`` for OpenAI, ``image_pixels_per_token`` for
    Anthropic, or ``image_tokens``: a flat count per image for any provider)."""
    prices = prices or {}
    if prices.get("image_tokens") is not None:
        return int(prices["image_tokens"])
    if provider == "anthropic":
        return anthropic_tokens(width, height,
                                float(prices.get("image_pixels_per_token")
                                      or ANTHROPIC_PIXELS_PER_TOKEN))
    rule = None
    if prices.get("image_base_tokens") is not None or prices.get("image_tile_tokens") is not None:
        best = max((p for p in OPENAI_IMAGE_RULES if model.startswith(p)), key=len)
        dflt = OPENAI_IMAGE_RULES[best]
        rule = (int(prices.get("image_base_tokens", dflt[0])),
                int(prices.get("image_tile_tokens", dflt[1])))
    return openai_tokens(width, height, detail, model, rule)


# ------------------------------------------------------------------------------------------
# preparing and drawing


@dataclass(frozen=True)
class Prepared:
    """A prepared image, ready to attach: its bytes, media type, size and sha256."""

    data: bytes
    media_type: str
    width: int
    height: int
    sha256: str

    @functools.cached_property
    def _b64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")

    def b64(self) -> str:
        """The bytes as base64 (encoded once per prepared image)."""
        return self._b64

    def data_uri(self) -> str:
        return f"data:{self.media_type};base64,{self.b64()}"


def _oriented(im: Any) -> Any:
    from PIL import ImageOps

    return ImageOps.exif_transpose(im)


def _rgb(im: Any) -> Any:
    from PIL import Image

    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.split()[-1])
        return bg
    return im.convert("RGB") if im.mode != "RGB" else im


def oriented_size(path: Path) -> tuple[int, int]:
    """An image's size after its EXIF orientation, from its header (no decode)."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        try:
            orient = im.getexif().get(0x0112, 1)
        except Exception:  # a broken EXIF block is no orientation
            orient = 1
    return (h, w) if orient in (5, 6, 7, 8) else (w, h)


def encode(im: Any, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpeg":
        im.save(buf, format="JPEG", quality=quality, optimize=False)
    else:
        im.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def prepare_bytes(path: Path, prep: Prep) -> tuple[bytes, int, int]:
    """Decode, orient, convert and shrink one image; the encoded bytes and their size."""
    from PIL import Image

    with Image.open(path) as raw:
        im = _rgb(_oriented(raw))
        size = prep.target(*im.size)
        if size != im.size:
            im = im.resize(size, Image.Resampling.LANCZOS)
        return encode(im, prep.format, prep.quality), im.size[0], im.size[1]


#: ViP-LLaVA-style marks: a thick outline in a colour that stands out, with the box's number
BOX_COLOURS = ((255, 0, 255), (0, 255, 255), (255, 128, 0), (128, 0, 255))


def draw_boxes(path: Path, boxes: list[list[float]], numbered: bool) -> Any:
    """A copy of the image at ``path`` (oriented, RGB) with ``boxes`` (pixels, x1 y1 x2 y2)
    outlined, numbered 1, 2, ... when ``numbered``."""
    from PIL import Image, ImageDraw, ImageFont

    with Image.open(path) as raw:
        im = _rgb(_oriented(raw)).copy()
    d = ImageDraw.Draw(im)
    width = max(3, round(max(im.size) / 120))
    size = max(10, round(max(im.size) / 24))
    font = ImageFont.load_default(size=size)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        colour = BOX_COLOURS[i % len(BOX_COLOURS)]
        pad = width // 2 + 1  # just outside the box, so the outline does not hide its edges
        d.rectangle([x1 - pad, y1 - pad, x2 + pad, y2 + pad], outline=colour, width=width)
        if numbered:
            label = str(i + 1)
            tx, ty = x1 + width, max(0, y1 - size - width) if y1 > size else y1 + width
            d.text((tx, ty), label, fill=colour, font=font)
    return im


class ImageStore:
    """Prepared and derived images on disk, and image headers remembered by content hash.

    ``<root>/prepared/ab/<key>.<ext>``: one file per (image sha256, resolved preparation);
    ``<root>/derived/<sha256>.png``: images with boxes drawn, named by their own hash;
    ``<root>/index``: a diskcache (JSON rows) of headers: sha256 -> oriented size.
    ``prepared_count`` counts images actually decoded and encoded by this object.
    """

    MEMORY = 512  # prepared images kept in memory (most recent)

    def __init__(self, root: Path):
        self.root = Path(root)
        self._index: Any = None
        self._lock = threading.Lock()
        self._mem: OrderedDict[str, Prepared] = OrderedDict()
        self._sizes: dict[str, tuple[int, int]] = {}
        self.prepared_count = 0
        self.prepare_seconds = 0.0

    @property
    def index(self) -> Any:
        if self._index is None:
            from vlitc.diskstore import open_cache

            self._index = open_cache(self.root / "index")  # JSON values, never pickles
        return self._index

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    def size_of(self, src: ImageSource) -> tuple[int, int]:
        """The oriented size of an image, from the header once, then remembered by hash."""
        known = self._sizes.get(src.sha256)
        if known is not None:
            return known
        key = f"hdr:{src.sha256}"
        hit = self.index.get(key)
        if isinstance(hit, list) and len(hit) == 2:
            size = (int(hit[0]), int(hit[1]))
        else:
            size = oriented_size(Path(src.path))
            self.index.set(key, list(size))
        self._sizes[src.sha256] = size
        return size

    def in_memory(self, src: ImageSource, prep: Prep) -> Prepared | None:
        """The prepared image if this store holds it in memory (no disk, no decode)."""
        with self._lock:
            return self._mem.get(self._key(src, prep))

    def _key(self, src: ImageSource, prep: Prep) -> str:
        w, h = prep.target(*self.size_of(src))
        return digest({"v": PREP_VERSION, "sha256": src.sha256, "size": [w, h],
                        "format": prep.format, "quality": prep.quality})

    def key_part(self, src: ImageSource, prep: Prep) -> dict:
        return prep.key_part(src, self.size_of(src))

    def _path(self, key: str, prep: Prep) -> Path:
        ext = "jpg" if prep.format == "jpeg" else "png"
        return self.root / "prepared" / key[:2] / f"{key}.{ext}"

    def prepared(self, src: ImageSource, prep: Prep) -> Prepared:
        """The prepared image: from memory, from disk, or decoded and encoded once now."""
        import time

        w, h = prep.target(*self.size_of(src))
        key = self._key(src, prep)
        with self._lock:
            hit = self._mem.get(key)
            if hit is not None:
                self._mem.move_to_end(key)
                return hit
        path = self._path(key, prep)
        try:
            data = path.read_bytes()
        except OSError:
            t0 = time.perf_counter()
            data, w, h = prepare_bytes(Path(src.path), prep)
            atomic_write(path, data)
            with self._lock:
                self.prepared_count += 1
                self.prepare_seconds += time.perf_counter() - t0
        out = Prepared(data, prep.media_type, w, h, hashlib.sha256(data).hexdigest())
        with self._lock:
            self._mem[key] = out
            while len(self._mem) > self.MEMORY:
                self._mem.popitem(last=False)
        return out

    def derive(self, src: ImageSource, boxes: list[list[float]], numbered: bool) -> dict:
        """:func:`derive` into this store's ``derived/`` folder."""
        return derive(src, boxes, numbered, self.root / "derived")


def derive(src: ImageSource, boxes: list[list[float]], numbered: bool, folder: Path) -> dict:
    """The image with ``boxes`` drawn, as ``{"path", "sha256", "width", "height"}`` of a PNG in
    ``folder`` named by what it is derived from (image hash, boxes, style): drawn once, then
    found by name."""
    key = digest({"v": DERIVE_VERSION, "sha256": src.sha256,
                   "boxes": [[round(float(v), 2) for v in b] for b in boxes],
                   "numbered": numbered})
    rel = f"{key}.png"
    target = Path(folder) / rel
    try:  # a file left in the folder is used only if it decodes whole as a PNG
        data = target.read_bytes()
        from PIL import Image

        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            size = im.size
            im.load()
    except Exception:  # missing, truncated, not a PNG: Pillow raises many types; draw it again
        im = draw_boxes(Path(src.path), boxes, numbered)
        data = encode(im, "png", 0)
        size = im.size
        atomic_write(target, data)
    return {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "width": size[0],
            "height": size[1]}


def source_of(image: dict, path: Path) -> ImageSource:
    """The :class:`ImageSource` of a record's or sample's image found at ``path``."""
    from vlitc.hashing import sha256_file

    url = image.get("url")
    url = url if isinstance(url, str) and url.startswith(("http://", "https://")) else None
    return ImageSource(image.get("sha256") or sha256_file(path), str(path), url=url)
