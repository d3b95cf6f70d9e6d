"""Generic sources: JSON / JSON Lines / CSV rows with a column mapping, and a plain image folder."""

from __future__ import annotations

import csv
import os
from pathlib import Path, PurePosixPath
from typing import Any

from vlitc.errors import InputError, Location
from vlitc.ops.base import OpContext
from vlitc.ops.registry import register
from vlitc.ops.sources._common import (
    FILE,
    IMAGES,
    SAMPLING,
    SPLIT,
    AnnotationSource,
    Entry,
    Issues,
    coco_id,
    read_items,
    read_parquet,
    schema,
)
from vlitc.ops.sources.text import dialogue, strip_placeholder
from vlitc.ops.sources.vqa import group

COLUMN_FIELDS = ("id", "image", "split", "width", "height", "caption", "question", "answer",
                 "answers", "choices", "prompt", "response")
IMAGE_EXTENSIONS = [".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"]


def read_csv(path: Path) -> list[tuple[int, dict]]:
    """Rows of a CSV file with a header, as ``(line, row)``; a ragged row is a located error."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = []
            for row in reader:
                if None in row:
                    raise InputError(f"row has {len(reader.fieldnames or []) + len(row[None])} "
                                     f"fields, the header has {len(reader.fieldnames or [])}",
                                     Location(str(path), reader.line_num, 1))
                rows.append((reader.line_num, row))
            return rows
    except csv.Error as e:
        raise InputError(f"malformed CSV: {e}", Location(str(path), reader.line_num, 1)) from None
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text: {e.reason}", Location(str(path))) from None


def _listify(v: Any) -> list:
    if v is None or v == "":
        return []
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _text(v: Any) -> str | None:
    if v is None:
        return None
    return v.strip() if isinstance(v, str) else str(v)


@register("source", "generic")
class GenericSource(AnnotationSource):
    """Load rows of a JSON, JSON Lines, CSV or Parquet file through a column mapping: captions,
    question-answers (with answers and choices), and prompt/response conversations (e.g.
    MultiInstruct's ``prompt``/``target``: ``{prompt: prompt, response: target}``; each row one
    entry of ``conversations`` with its row number and unmapped plain fields). Rows with the
    same id merge into one record (their layers concatenated).
    """

    version = 2
    file_params = ("file",)
    writes = ("id", "image", "captions", "qas", "conversations")
    params_schema = schema(
        {
            "file": FILE | {"description": "JSON array, JSON Lines, CSV with a header, or Parquet"},
            "format": {"enum": ["json", "jsonl", "csv", "parquet"],
                       "description": "file format (default: from the extension)"},
            "columns": {
                "type": "object",
                "properties": {k: {"type": "string", "minLength": 1} for k in COLUMN_FIELDS},
                "additionalProperties": False,
                "description": "record field -> column name",
            },
            "id_from": {"enum": ["column", "image", "row"],
                        "description": "record id: the id column, the image (COCO id when the "
                                       "file name has one, else its stem), or the row number"},
            **IMAGES,
            **SAMPLING,
            **SPLIT,
        },
        required=("file", "columns"),
    )

    def entries(self, ctx: OpContext, issues: Issues) -> list[Entry]:
        path = self.path(ctx, "file")
        rows = self._rows(path)
        cols = self.params["columns"]
        self._check_columns(cols, rows, path)
        id_from = self.params.get("id_from") or ("column" if "id" in cols else "row")
        split = self.params.get("split")
        wanted = ({split} if isinstance(split, str) else set(split)) if split else None
        pairs = []
        for i, (line, row) in enumerate(rows):
            if not isinstance(row, dict):
                issues.add("bad_row", f"{path.name}:{line or i}")
                continue
            if wanted is not None and _text(row.get(cols.get("split", ""))) not in wanted:
                continue  # rows, not records, carry the split here
            image = _text(row.get(cols["image"])) if "image" in cols else None
            if image and image.startswith("./"):
                image = image[2:]
            rid = self._rid(id_from, row, cols, image, i)
            pairs.append(((rid, image), (i, row, line or i + 1)))
        out = []
        for (rid, image), items in group(pairs).items():
            first = items[0][1]
            out.append(Entry(rid, image or None, _int(first.get(cols.get("width", ""))),
                             _int(first.get(cols.get("height", ""))), (rid, items),
                             _text(first.get(cols["split"])) if "split" in cols else None))
        return out

    def _rows(self, path: Path) -> list[tuple[int, Any]]:
        suffix = path.suffix.lower()
        fmt = self.params.get("format") or {".csv": "csv", ".parquet": "parquet"}.get(suffix, "json")
        if fmt == "csv":
            return read_csv(path)
        if fmt == "parquet":
            return read_parquet(path)
        return read_items(path)

    @staticmethod
    def _check_columns(cols: dict, rows: list, path: Path) -> None:
        seen: set[str] = set()
        for _, row in rows:
            if isinstance(row, dict):
                seen.update(row)
        missing = sorted({c for c in cols.values() if c not in seen})
        if rows and missing:
            raise InputError(f"columns not in any row: {', '.join(missing)}", Location(str(path)),
                             hint=f"the file's columns are: {', '.join(sorted(seen)[:30])}")

    @staticmethod
    def _rid(id_from: str, row: dict, cols: dict, image: str | None, i: int) -> str:
        if id_from == "column" and "id" in cols and row.get(cols["id"]) is not None:
            return str(row[cols["id"]])
        if id_from == "image" and image:
            name = PurePosixPath(image).name
            return coco_id(name) or PurePosixPath(name).stem
        return str(i)

    @property
    def _file(self) -> str:
        return Path(self.params["file"]).name

    def layers(self, data: Any, width: Any, height: Any, issues: Issues) -> dict:
        rid, items = data
        cols = self.params["columns"]
        out: dict[str, list] = {}
        for i, row, line in items:
            get = {k: row.get(c) for k, c in cols.items()}
            if get.get("caption") is not None:
                out.setdefault("captions", []).extend(_text(c) for c in _listify(get["caption"]))
            if get.get("question") is not None:
                answers = [_text(a) for a in _listify(get.get("answers"))]
                answer = _text(get.get("answer"))
                out.setdefault("qas", []).append({
                    "id": f"{rid}/{i}", "question": _text(get["question"]),
                    "answers": answers or ([answer] if answer is not None else []),
                    "answer": answer if answer is not None else (answers[0] if answers else None),
                    "choices": [_text(c) for c in _listify(get.get("choices"))],
                    "answer_type": None})
            if get.get("prompt") is not None and get.get("response") is not None:
                out.setdefault("conversations", []).append(dialogue(
                    f"{rid}/{i}" if len(items) > 1 else rid,
                    [{"role": "user", "content": strip_placeholder(_text(get["prompt"]) or "")[0]},
                     {"role": "assistant", "content": _text(get["response"])}],
                    f"{self._file}:{line}", meta=_plain(row, cols)))
        return out


def _plain(row: dict, cols: dict) -> dict:
    """A row's plain fields that the mapping does not read (kept with the conversation)."""
    used = set(cols.values())
    return {k: v for k, v in row.items()
            if k not in used and isinstance(v, (str, int, float, bool))}


def _int(v: Any) -> int | None:
    try:
        return int(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


@register("source", "image_folder")
class ImageFolderSource(AnnotationSource):
    """Load a plain folder of images (no annotations): one record per image file, for tasks that
    generate everything (self-instruct) or for joining with annotation sources by id.
    """

    version = 1
    writes = ("id", "image")
    params_schema = schema(
        {
            **IMAGES,
            "recursive": {"type": "boolean", "default": True},
            "extensions": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                           "default": IMAGE_EXTENSIONS},
            "id_from": {"enum": ["stem", "path", "coco"], "default": "stem",
                        "description": "record id: file stem, relative path, or COCO image id"},
            **SAMPLING,
        },
        required=("images",),
    )

    def entries(self, ctx: OpContext, issues: Issues) -> list[Entry]:
        root = self.image_root(ctx)
        assert root is not None
        exts = {e.lower() for e in self.params["extensions"]}
        rels = sorted(_walk(root, self.params["recursive"], exts))
        id_from = self.params["id_from"]
        out = []
        for rel in rels:
            p = PurePosixPath(rel)
            rid = rel if id_from == "path" else (coco_id(p.name) if id_from == "coco" else None)
            out.append(Entry(rid or p.stem, rel, None, None, None))
        return out

    def layers(self, data: Any, width: Any, height: Any, issues: Issues) -> dict:
        return {}


def _walk(root: Path, recursive: bool, exts: set[str]) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames:
            if os.path.splitext(name)[1].lower() in exts:
                out.append(name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/"))
        if not recursive:
            break
    return out
