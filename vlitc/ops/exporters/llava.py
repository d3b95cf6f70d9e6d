"""LLaVA JSON export: a JSON array of ``{"id", "image", "conversations"}`` records."""

from __future__ import annotations

import json
from json.encoder import encode_basestring as quote
from pathlib import Path

from vlitc.ops.exporters.common import (
    FileExporter,
    JoinedTextShard,
    exporter_schema,
    image_ref,
)
from vlitc.ops.registry import register
from vlitc.records import Sample

FROM = {"user": "human", "assistant": "gpt"}
#: the start of one encoded turn, per role (keys sorted, ``json.dumps`` separators)
TURN = {role: f'{{"from": {quote(name)}, "value": ' for role, name in FROM.items()}


def llava_record(s: Sample) -> dict:
    """One sample as LLaVA's trainer reads it; text-only samples carry no ``image`` key."""
    rec: dict = {"id": s["id"]}
    image = s.get("image")
    if isinstance(image, list):
        rec["image"] = [image_ref(i) for i in image]
    elif image:
        rec["image"] = image_ref(image)
    rec["conversations"] = [{"from": FROM[t["role"]], "value": t["content"]} for t in s["turns"]]
    return rec


def llava_line(s: Sample) -> str:
    """``json.dumps(llava_record(s), sort_keys=True, ensure_ascii=False)``, written out directly:
    the same text, without building the record (anything but strings takes the long way)."""
    try:
        conv = ", ".join([f'{TURN[t["role"]]}{quote(t["content"])}}}' for t in s["turns"]])
        head = f'{{"conversations": [{conv}], "id": {quote(s["id"])}'
        image = s.get("image")
        if not image:
            return head + "}"
        if type(image) is list:
            refs = ", ".join([quote(image_ref(i)) for i in image])
            return f'{head}, "image": [{refs}]}}'
        return f'{head}, "image": {quote(image_ref(image))}}}'
    except TypeError:
        return json.dumps(llava_record(s), sort_keys=True, ensure_ascii=False)


#: a JSON array with one record per line: sorted keys, UTF-8, no trailing spaces
ARRAY = {"sep": ",\n", "start": "[\n", "end": "\n]\n", "end_empty": "]\n"}


@register("exporter", "llava")
class LlavaExporter(FileExporter):
    """Write LLaVA JSON: ``[{"id", "image", "conversations": [{"from": "human"|"gpt", "value"}]}]``.

    ``<image>\\n`` starts the first human turn; ``image`` is the file's path under the sources'
    image folder (a list of paths for a sample with several images, one ``<image>`` each, the
    LLaVA-OneVision form) (their common parent when they read several; ``images: copy|link`` puts the
    files under ``image_dir``). Validated before writing.
    """

    projected = True  # it looks at the fields FileExporter.reads names, and no other
    version = 1
    params_schema = exporter_schema()
    writes = ("files",)

    text = True

    def record(self, s: Sample) -> dict:
        return llava_record(s)

    def line(self, s: Sample) -> str:
        return llava_line(s)

    def open_shard(self, path: Path) -> JoinedTextShard:
        return JoinedTextShard(path, **ARRAY)
