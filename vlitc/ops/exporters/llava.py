"""LLaVA JSON export: a JSON array of ``{"id", "image", "conversations"}`` records."""

from __future__ import annotations

import json
from pathlib import Path

from vlitc.ops.exporters.common import FileExporter, exporter_schema, image_ref
from vlitc.ops.registry import register
from vlitc.records import Sample

FROM = {"user": "human", "assistant": "gpt"}


def llava_record(s: Sample) -> dict:
    """One sample as LLaVA's trainer reads it; text-only samples carry no ``image`` key."""
    rec: dict = {"id": s["id"]}
    if s.get("image"):
        rec["image"] = image_ref(s["image"])
    rec["conversations"] = [{"from": FROM[t["role"]], "value": t["content"]} for t in s["turns"]]
    return rec


def dump_json_array(records: list[dict], path: Path) -> None:
    """A JSON array with one record per line: sorted keys, UTF-8, no trailing spaces."""
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("[\n")
        fh.write(",\n".join(json.dumps(r, sort_keys=True, ensure_ascii=False) for r in records))
        fh.write("\n]\n" if records else "]\n")


@register("exporter", "llava")
class LlavaExporter(FileExporter):
    """Write LLaVA JSON: ``[{"id", "image", "conversations": [{"from": "human"|"gpt", "value"}]}]``.

    ``<image>\\n`` starts the first human turn; ``image`` is ``<source>/<path>`` under the image
    folder (``images: copy|link`` puts the files under ``image_dir``). Validated before writing.
    """

    version = 1
    params_schema = exporter_schema()
    writes = ("files",)

    def record(self, s: Sample) -> dict:
        return llava_record(s)

    def write(self, records: list[dict], path: Path) -> None:
        dump_json_array(records, path)
