"""Exports that a trainer reads as they are, with the file its data loading needs beside them.

* ``llamafactory``: LLaMA-Factory's ``sharegpt`` formatting with OpenAI-style tags (messages
  JSONL) and the ``dataset_info.json`` that registers it (formatting, columns, tags);
* ``internvl``: InternVL's chat fine-tuning JSONL and the meta file its ``--meta_path`` reads
  (root, annotation, data_augment, repeat_time, length);
* ``messages``: the Hugging Face / TRL chat format, each message's content a list of parts
  (``{"type": "image"}``, ``{"type": "text", "text": ...}``) and an ``images`` list; no literal
  ``<image>`` is left in any text (TRL's vision SFT and axolotl's chat_template datasets).

Image paths are written so that the trainer finds the files from the release: with ``images:
copy`` or ``link``, relative to the folder of the data file (LLaMA-Factory's ``media_dir``
default) or under the meta file's ``root``; with ``reference``, the source image's absolute path.
A sample with several images lists them all, in the order of its placeholders.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from vlitc.ops.base import OpContext
from vlitc.ops.exporters.common import (
    FileExporter,
    JoinedTextShard,
    exporter_schema,
    image_ref,
    out_dir,
)
from vlitc.ops.exporters.llava import FROM
from vlitc.ops.registry import register
from vlitc.records import IMAGE_TOKEN, Sample, images_of
from vlitc.release import layout

#: the side files, each written beside its export's data file
DATASET_INFO = layout.register("dataset_info.json", "export", "LLaMA-Factory's dataset registry "
                               "(llamafactory export, beside its data file)", shared=True)
INTERNVL_META = layout.register("internvl_meta.json", "export", "InternVL's --meta_path file "
                                "(internvl export, beside its data file)", shared=True)

#: one JSON object per line, each line ended by a newline
LINES = {"sep": "\n", "end": "\n", "end_empty": ""}


def dumps(rec: Any) -> str:
    return json.dumps(rec, sort_keys=True, ensure_ascii=False)


class TrainerExporter(FileExporter):
    """A JSON-lines export whose image paths resolve from the release, plus one side file (what
    the trainer reads to find the data), written after the data passed validation."""

    writes = ("files",)
    #: the side file's name (registered in the release layout)
    side_name: ClassVar[str] = ""

    text = True
    projected = True  # each looks at the fields FileExporter.reads names, and no other

    def write_parts(self, parts, ctx: OpContext) -> list:
        written = super().write_parts(parts, ctx)
        data = [w for w in written if PurePosixPath(w).suffix == self._rel.suffix
                and PurePosixPath(w).parent == self._rel.parent]
        side = self.side_path()
        target = out_dir(ctx) / side
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(layout.registry_bytes(self.side_file(data, ctx.counters.get("exported", 0))))
        os.replace(tmp, target)
        return [*written, {"path": str(side), "records": None}]

    def side_path(self) -> PurePosixPath:
        return self._rel.parent / self.side_name

    def side_entry(self, recipe_name: str) -> tuple[str, str] | None:
        """The side file this export writes its entry into and the entry's name: exports in one
        folder share the file (the release holds one, with every entry), so their names must
        differ."""
        rel = PurePosixPath(str(self.params["path"]))
        return str(rel.parent / self.side_name), self.dataset_name(recipe_name)

    def side_file(self, data_files: list[str], n: int) -> dict:
        raise NotImplementedError

    def image_path(self, image: dict, base: PurePosixPath) -> str:
        """Where the trainer finds ``image``: under the release's image folder, relative to
        ``base`` (a folder of the release), when the export copies or links the images;
        otherwise the source file's absolute path."""
        if self.params["images"] == "reference":
            return str(self._ctx.image_path(image).absolute())
        inside = PurePosixPath(self.params["image_dir"]) / image_ref(image)
        return os.path.relpath(inside, base).replace(os.sep, "/") if str(base) else str(inside)

    def line(self, s: Sample) -> str:
        return dumps(self.record(s))

    def open_shard(self, path: Path) -> JoinedTextShard:
        return JoinedTextShard(path, **LINES)

    def dataset_name(self, recipe_name: str | None = None) -> str:
        split = self.params["split"]
        if recipe_name is None:
            recipe_name = str((self._ctx.recipe or {}).get("name") or "vlitc")
        name = self.params.get("name") or recipe_name
        return name if split == "all" or self.params.get("name") else f"{name}_{split}"


NAME = {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$",
        "description": "the dataset's name in the side file (default: the recipe name, plus "
                       "_train or _validation for one split)"}


@register("exporter", "llamafactory")
class LlamaFactoryExporter(TrainerExporter):
    """Write LLaMA-Factory's multimodal sharegpt JSONL and its ``dataset_info.json``.

    Each line is ``{"id", "messages": [{"role", "content"}], "images": [...]}`` with one
    ``<image>`` per entry of ``images``; ``dataset_info.json`` (beside the data file, where
    LLaMA-Factory's ``dataset_dir`` points) registers it with ``formatting: sharegpt``, the
    ``messages``/``images`` columns and the role/content tags. Image paths are relative to that
    folder (``images: copy`` or ``link``) or absolute (``reference``). Train with
    ``dataset_dir: <release folder>`` and ``dataset: <name>``. Several exports in one folder (a
    ``train`` and a ``validation`` split, for ``dataset`` and ``eval_dataset``) share one
    ``dataset_info.json`` holding all their entries; their names must differ (``name:``).
    """

    version = 1
    params_schema = exporter_schema(name=NAME)
    side_name = DATASET_INFO

    def record(self, s: Sample) -> dict:
        base = self._rel.parent
        return {"id": s["id"],
                "messages": [{"role": t["role"], "content": t["content"]} for t in s["turns"]],
                "images": [self.image_path(i, base) for i in images_of(s)]}

    def side_file(self, data_files: list[str], n: int) -> dict:
        base = self._rel.parent
        names = [str(PurePosixPath(f).relative_to(base)) for f in data_files]
        return {self.dataset_name(): {
            "file_name": names[0] if len(names) == 1 else names,
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                     "assistant_tag": "assistant", "system_tag": "system"},
        }}


@register("exporter", "internvl")
class InternVLExporter(TrainerExporter):
    """Write InternVL's chat fine-tuning JSONL and the meta file its ``--meta_path`` reads.

    Each line is ``{"id", "image", "width", "height", "conversations": [{"from": "human" |
    "gpt", "value"}]}`` (``image`` a list for several images, absent for text only); the meta
    file ``internvl_meta.json`` (beside the data file) holds one entry with ``root`` (the folder image
    paths are under), ``annotation`` (the data file), ``data_augment: false``, ``repeat_time``
    and ``length``. Its paths are relative to the release folder: run training from there.
    Several exports in one folder share one meta file holding all their entries.
    """

    version = 1
    params_schema = exporter_schema(
        name=NAME,
        repeat_time={"type": "number", "exclusiveMinimum": 0, "default": 1},
        max_dynamic_patch={"type": "integer", "minimum": 1})
    side_name = INTERNVL_META

    def record(self, s: Sample) -> dict:
        rec: dict = {"id": s["id"]}
        images = images_of(s)
        if images:
            paths = [self.image_path(i, PurePosixPath(self.root())) for i in images]
            rec["image"] = paths[0] if len(paths) == 1 else paths
            if len(images) == 1 and images[0].get("width") and images[0].get("height"):
                rec["width"], rec["height"] = images[0]["width"], images[0]["height"]
        rec["conversations"] = [{"from": FROM[t["role"]], "value": t["content"]}
                                for t in s["turns"]]
        return rec

    def root(self) -> str:
        """The meta file's ``root``: the release's image folder, or nothing (absolute paths)."""
        if self.params["images"] == "reference":
            return ""
        return str(PurePosixPath(self.params["image_dir"])) + "/"

    def side_file(self, data_files: list[str], n: int) -> dict:
        entry: dict[str, Any] = {
            "root": self.root(),
            "annotation": data_files[0] if len(data_files) == 1 else data_files,
            "data_augment": False,
            "repeat_time": self.params["repeat_time"],
            "length": n,
        }
        if self.params.get("max_dynamic_patch"):
            entry["max_dynamic_patch"] = self.params["max_dynamic_patch"]
        return {self.dataset_name(): entry}


def content_parts(text: str) -> list[dict]:
    """A message's text as content parts: each ``<image>`` placeholder becomes an image part in
    place, the text around it text parts (the newline that set a placeholder apart dropped)."""
    parts: list[dict] = []
    pieces = text.split(IMAGE_TOKEN)
    for i, piece in enumerate(pieces):
        if i:
            parts.append({"type": "image"})
            piece = piece[1:] if piece.startswith("\n") else piece
        if i < len(pieces) - 1 and piece.endswith("\n"):
            piece = piece[:-1]
        if piece.strip():
            parts.append({"type": "text", "text": piece})
    return parts


@register("exporter", "messages")
class MessagesExporter(TrainerExporter):
    """Write the Hugging Face / TRL chat format: ``{"id", "messages": [{"role", "content":
    [parts]}], "images": [...]}`` per line.

    Every ``<image>`` placeholder becomes a ``{"type": "image"}`` part where it stood, text
    becomes ``{"type": "text", "text": ...}`` parts, and ``images`` lists the image paths in the
    same order (relative to the data file's folder, or absolute with ``images: reference``):
    what TRL's vision SFT and axolotl's ``chat_template`` datasets read, with no ``<image>``
    left in any text. Writes no side file.
    """

    version = 1
    params_schema = exporter_schema()

    def side_entry(self, recipe_name: str) -> None:
        return None

    def write_parts(self, parts, ctx: OpContext) -> list:
        return FileExporter.write_parts(self, parts, ctx)

    def record(self, s: Sample) -> dict:
        return {"id": s["id"],
                "messages": [{"role": t["role"], "content": content_parts(t["content"])}
                             for t in s["turns"]],
                "images": [self.image_path(i, self._rel.parent) for i in images_of(s)]}
