"""COCO-format sources: captions and instances files (any dataset published in COCO format)."""

from __future__ import annotations

import itertools
import tempfile
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from vlitc.ops.base import OpContext
from vlitc.ops.registry import register
from vlitc.ops.sources._common import (
    _SHAPE_ERRORS,
    EXAMPLES,
    FILE,
    IMAGES,
    SAMPLING,
    AnnotationSource,
    Entry,
    Irregular,
    Issues,
    fit_box,
    iter_members,
    need,
    read_json,
    schema,
)


class CocoFile:
    """One parsed COCO-format file: images by id (``(file_name, width, height)``), annotations
    grouped by image id (``captions``: each annotation's ``caption`` alone), categories.

    The file is read in blocks (:func:`~vlitc.ops.sources._common.iter_members`): what is kept
    is the images and the grouped annotations, never the whole document, so a file of millions
    of captions parses in bounded memory. A file laid out otherwise (annotations before images,
    a repeated member, anything malformed) is read whole, with the same result or the same
    located error. Segmentation polygons are dropped while parsing; annotations naming an image
    the file does not list are counted (``annotation_unknown_image``) and left out.
    """

    def __init__(self, path: Path, issues: Issues, captions: bool = False):
        self.path = path
        self.captions = captions
        try:
            images, by_image, categories, unknown = self._blocks(path)
        except Irregular:
            images, by_image, categories, unknown = self._whole(path)
        self.images: dict[Any, tuple[Any, Any, Any]] = images
        self.by_image: dict[Any, list] = by_image
        self.categories: dict[int, str] = categories
        examples, n = unknown
        for example in examples:
            issues.add("annotation_unknown_image", example)
        if n > len(examples):
            issues.ctx.count("annotation_unknown_image", n - len(examples))

    def _blocks(self, path: Path) -> tuple[dict, dict, dict, tuple[list, int]]:
        images: dict[Any, tuple] = {}
        by_image: dict[Any, list] = {}
        seen: set[str] = set()
        categories: Any = None
        unknown = 0
        examples: list[dict] = []
        try:
            for key, values, piece in iter_members(path, ("images", "annotations"), drop=DROP):
                if key == "images":
                    if not piece or "annotations" in seen:  # read whole: need() says what is wrong
                        raise Irregular
                    for im in values:
                        images[im["id"]] = (im.get("file_name"), im.get("width"), im.get("height"))
                elif key == "annotations":
                    if not piece or "images" not in seen:
                        raise Irregular
                    unknown += self._group(values, images, by_image, examples)
                elif key == "categories":
                    categories = values
                seen.add(key)
            if not {"images", "annotations"} <= seen:
                raise Irregular
            cats = {c["id"]: c["name"] for c in categories or [] if isinstance(c, dict)}
        except _SHAPE_ERRORS:  # read whole, for the error as it is found there
            raise Irregular from None
        return images, by_image, cats, (examples, unknown)

    def _whole(self, path: Path) -> tuple[dict, dict, dict, tuple[list, int]]:
        doc = read_json(path, drop=DROP)
        images = {im["id"]: (im.get("file_name"), im.get("width"), im.get("height"))
                  for im in need(doc, "images", path)}
        anns = need(doc, "annotations", path)
        categories = {c["id"]: c["name"] for c in doc.get("categories") or [] if isinstance(c, dict)}
        by_image: dict[Any, list] = {}
        examples: list[dict] = []
        unknown = self._group(anns, images, by_image, examples)
        return images, by_image, categories, (examples, unknown)

    def _group(self, anns: list, images: dict, by_image: dict[Any, list], examples: list[dict]) -> int:
        """Add annotations to their image's group (``captions``: the caption alone); the
        number naming an image the file does not list, the first :data:`EXAMPLES` of them
        added to ``examples``."""
        caption, unknown = self.captions, 0
        for a in anns:
            iid = a.get("image_id")
            if iid in images:
                kept = a.get("caption") if caption else a
                lst = by_image.get(iid)
                if lst is None:
                    by_image[iid] = [kept]
                else:
                    lst.append(kept)
            else:
                unknown += 1
                if len(examples) < EXAMPLES:
                    examples.append({"file": self.path.name, "annotation": a.get("id"), "image_id": iid})
        return unknown


#: keys dropped while parsing a COCO file
DROP = ("segmentation",)

#: a COCO-format file at least this large (and read alone: a captions or an instances file) is
#: grouped on disk (:class:`SpilledCocoFile`), in bounded memory; a smaller one in memory (at
#: about this size both take the same time; below it, memory is faster)
SPILL_MIN_BYTES = 96 << 20
#: the most partitions a file grouped on disk is cut into (each an open file while it is read)
SPILL_PARTS = 256
#: the fewest images in one partition
SPILL_MIN_IMAGES = 1 << 16


class SpilledCocoFile:
    """A COCO-format file grouped on disk: what :class:`CocoFile` gives, image by image in the
    file's order, with no more than one partition of images and their annotations in memory.

    One pass over the file (in blocks, :func:`~vlitc.ops.sources._common.iter_members`) writes
    the images, in order, to one file and each annotation (``captions``: its caption alone),
    with its image's place, to the partition of images that place lies in; :meth:`groups` then
    reads one partition at a time. The grouping, the order and the counts of annotations naming
    no listed image are those of :class:`CocoFile`. A file it does not read so raises
    :class:`~vlitc.ops.sources._common.Irregular` before anything is given out (a layout the
    blocks do not follow, an image id that is not an integer or is repeated, an annotation's
    image id that only compares equal to an integer): :class:`CocoFile` then reads it."""

    def __init__(self, path: Path, workdir: Path, captions: bool = False):
        self.path, self.dir, self.captions = path, workdir, captions
        self.ids = array("q")
        self.categories: dict[int, str] = {}
        self.unknown = 0
        self.examples: list[dict] = []
        self._index: tuple[Any, Any] | None = None
        self._shift = 0
        self._parts: dict[int, BinaryIO] = {}
        self._images = open(workdir / "images", "wb")  # noqa: SIM115 (closed below)
        try:
            self._read()
        except (*_SHAPE_ERRORS, OverflowError):  # read by CocoFile, for its result or error
            raise Irregular from None
        finally:
            self._images.close()
            for f in self._parts.values():
                f.close()

    def _read(self) -> None:
        seen: set[str] = set()
        categories: Any = None
        for key, values, piece in iter_members(self.path, ("images", "annotations"), drop=DROP):
            if key == "images":
                if not piece or "annotations" in seen:
                    raise Irregular
                rows = []
                for im in values:
                    iid = im["id"]
                    if type(iid) is not int:  # a float or bool id equals an int one: in memory
                        raise Irregular
                    self.ids.append(iid)
                    rows.append((im.get("file_name"), im.get("width"), im.get("height")))
                self._images.write(orjson.dumps(rows) + b"\n")
            elif key == "annotations":
                if not piece or "images" not in seen:
                    raise Irregular
                self._annotations(values)
            elif key == "categories":
                categories = values
            seen.add(key)
        if not {"images", "annotations"} <= seen:
            raise Irregular
        self.categories = {c["id"]: c["name"] for c in categories or [] if isinstance(c, dict)}

    def _lookup(self) -> tuple[Any, Any]:
        """The image ids sorted, and each one's place in the file (made once the images are read)."""
        import numpy as np

        if self._index is None:
            ids = np.frombuffer(self.ids, dtype=np.int64)
            order = np.argsort(ids, kind="stable")
            ordered = ids[order]
            if len(ordered) > 1 and bool((ordered[1:] == ordered[:-1]).any()):
                raise Irregular  # a repeated id: in memory its first place takes its last values
            self._index = (ordered, order)
            n = len(ids)
            self._shift = max(SPILL_MIN_IMAGES.bit_length() - 1,
                              max(n - 1, 0).bit_length() - (SPILL_PARTS.bit_length() - 1))
        return self._index

    def _annotations(self, anns: list) -> None:
        import numpy as np

        ordered, order = self._lookup()
        iids = [a.get("image_id") for a in anns]
        at, wanted = [], []  # the annotations naming an integer id, and those ids
        for k, iid in enumerate(iids):
            if type(iid) is int:
                if -(1 << 63) <= iid < 1 << 63:
                    at.append(k)
                    wanted.append(iid)
            elif not (iid is None or type(iid) is str):  # may equal an int id, or not hash
                raise Irregular
        place = [-1] * len(anns)
        if wanted and len(ordered):
            q = np.asarray(wanted, dtype=np.int64)
            j = np.minimum(np.searchsorted(ordered, q), len(ordered) - 1)
            found = np.where(ordered[j] == q, order[j], -1)
            for k, pos in zip(at, found.tolist(), strict=True):
                place[k] = pos
        caption, shift = self.captions, self._shift
        parts: dict[int, list] = {}
        for a, pos in zip(anns, place, strict=True):
            if pos < 0:
                self.unknown += 1
                if len(self.examples) < EXAMPLES:
                    self.examples.append({"file": self.path.name, "annotation": a.get("id"),
                                          "image_id": a.get("image_id")})
                continue
            kept = a.get("caption") if caption else a
            part = parts.get(pos >> shift)
            if part is None:
                parts[pos >> shift] = [(pos, kept)]
            else:
                part.append((pos, kept))
        for k, items in parts.items():
            f = self._parts.get(k)
            if f is None:
                f = self._parts[k] = open(self.dir / f"part-{k}", "wb")  # noqa: SIM115 (closed in __init__)
            f.write(orjson.dumps(items) + b"\n")

    def report(self, issues: Issues) -> None:
        """The annotations naming no listed image, as :class:`CocoFile` counts them."""
        for example in self.examples:
            issues.add("annotation_unknown_image", example)
        if self.unknown > len(self.examples):
            issues.ctx.count("annotation_unknown_image", self.unknown - len(self.examples))

    def groups(self) -> Iterator[tuple[int, tuple[Any, Any, Any], list | None]]:
        """Each image in the file's order: its id, ``(file_name, width, height)`` and its
        annotations in the file's order (``None``: it has none)."""
        n, size = len(self.ids), 1 << self._shift
        with open(self.dir / "images", "rb") as fi:
            images = itertools.chain.from_iterable(orjson.loads(line) for line in fi)
            for lo in range(0, n, size):
                grouped: list[list | None] = [None] * min(size, n - lo)
                part = self.dir / f"part-{lo >> self._shift}"
                if part.exists():
                    with open(part, "rb") as fp:
                        for line in fp:
                            for pos, kept in orjson.loads(line):
                                g = grouped[pos - lo]
                                if g is None:
                                    grouped[pos - lo] = [kept]
                                else:
                                    g.append(kept)
                for k, g in enumerate(grouped):
                    name, width, height = next(images)
                    yield self.ids[lo + k], (name, width, height), g


def coco_objects(anns: list[dict], cats: dict[Any, str], width: Any, height: Any,
                 issues: Issues, crowd: bool = True) -> list[dict]:
    """COCO instance annotations as record objects with canonical pixel boxes."""
    out = []
    for a in anns:
        name = cats.get(a.get("category_id"))
        if name is None:
            issues.add("unknown_category", {"annotation": a.get("id"),
                                            "category_id": a.get("category_id")})
            continue
        iscrowd = bool(a.get("iscrowd", 0))
        if iscrowd and not crowd:
            continue
        bb = a.get("bbox")
        try:
            x, y, w, h = bb  # type: ignore[misc]
            x, y = float(x), float(y)
            box = [x, y, round(x + w, 2), round(y + h, 2)]
        except (TypeError, ValueError):
            box = None
        # the common case (a box inside its image) without a call; the rest through fit_box
        if box is None or not (0 <= x < box[2] <= (width or box[2]) and
                               0 <= y < box[3] <= (height or box[3])):
            box = fit_box(box and [float(v) for v in box], width, height, issues,
                          {"annotation": a.get("id"), "bbox": bb})
            if box is None:
                continue
        out.append({"id": a.get("id"), "category": name, "bbox": box, "attributes": [],
                    "iscrowd": iscrowd})
    return out


@register("source", "coco")
class CocoSource(AnnotationSource):
    """Load a COCO-format dataset: captions and/or instances files, one record per image.

    Records carry ``captions`` and ``objects`` (category name, ``[x1, y1, x2, y2]`` pixel box,
    crowd flag); the record id is the image id. Segmentation polygons are never kept.
    """

    version = 1
    file_params = ("captions", "instances")
    writes = ("id", "image", "captions", "objects")
    builds_apart = True  # the categories travel with the entries (pack)
    params_schema = schema(
        {
            "captions": FILE | {"description": "COCO captions file (captions_*.json)"},
            "instances": FILE | {"description": "COCO instances file (instances_*.json)"},
            "crowd": {"type": "boolean", "default": True,
                      "description": "keep crowd (iscrowd) regions as objects"},
            "keep_empty": {"type": "boolean", "default": True,
                           "description": "yield images that have no captions and no objects"},
            **IMAGES,
            **SAMPLING,
        },
        any_of=("captions", "instances"),
    )

    def entries(self, ctx: OpContext, issues: Issues) -> list[Entry]:
        caps = CocoFile(self.path(ctx, "captions"), issues, captions=True) if "captions" in self.params else None
        inst = CocoFile(self.path(ctx, "instances"), issues) if "instances" in self.params else None
        images = dict(caps.images) if caps else {}
        if inst:
            images.update(inst.images)
        self.categories = inst.categories if inst else {}
        keep_empty = self.params["keep_empty"]
        out = []
        for iid, im in images.items():
            c = caps.by_image.get(iid) if caps else None
            o = inst.by_image.get(iid) if inst else None
            if not (c or o or keep_empty):
                continue
            out.append(Entry(str(iid), im[0], im[1], im[2], (c, o)))
        return out

    def stream_entries(self, ctx: OpContext, issues: Issues) -> Iterator[Entry] | None:
        """A large file read alone (a captions or an instances file: :data:`SPILL_MIN_BYTES`)
        is grouped on disk as it is read (:class:`SpilledCocoFile`), in bounded memory; the
        entries are those :meth:`entries` gives, in the same order."""
        params = [k for k in self.file_params if k in self.params]
        if len(params) != 1:
            return None
        path = self.path(ctx, params[0])
        try:
            if path.stat().st_size < SPILL_MIN_BYTES:
                return None
        except OSError:  # entries() says what is wrong with it
            return None
        return self._spilled(path, params[0] == "captions", ctx, issues)

    def _spilled(self, path: Path, captions: bool, ctx: OpContext, issues: Issues) -> Iterator[Entry]:
        with tempfile.TemporaryDirectory(prefix="coco-", dir=ctx.scratch) as tmp:
            try:
                spilled = SpilledCocoFile(path, Path(tmp), captions=captions)
            except Irregular:  # read in memory, as entries() reads it
                yield from self.entries(ctx, issues)
                return
            spilled.report(issues)
            self.categories = {} if captions else spilled.categories
            keep_empty = self.params["keep_empty"]
            for iid, (name, width, height), group in spilled.groups():
                if group or keep_empty:
                    yield Entry(str(iid), name, width, height, (group, None) if captions else (None, group))

    def pack(self, entries: list[Entry]) -> Any:
        """Entries travel as plain tuples (pickled faster), with the categories their objects
        are named by."""
        return self.categories, [tuple(e) for e in entries]

    def unpack(self, packed: Any) -> list[Entry]:
        self.categories, entries = packed
        return [Entry(*e) for e in entries]

    def layers(self, data: Any, width: Any, height: Any, issues: Issues) -> dict:
        caps, anns = data
        out: dict[str, Any] = {}
        if "captions" in self.params:
            out["captions"] = [c.strip() for c in caps or () if isinstance(c, str)]
        if "instances" in self.params:
            out["objects"] = coco_objects(anns or [], self.categories, width, height, issues,
                                          self.params["crowd"])
        return out
