"""ShareGPT / messages JSONL export: one ``{"id", "messages", "images"}`` object per line."""

from __future__ import annotations

import json
from pathlib import Path

from vlitc.ops.exporters.common import FileExporter, exporter_schema, image_ref
from vlitc.ops.registry import register
from vlitc.records import Sample


def sharegpt_record(s: Sample) -> dict:
    """One sample as chat messages (roles ``user``/``assistant``) plus its list of images."""
    return {
        "id": s["id"],
        "messages": [{"role": t["role"], "content": t["content"]} for t in s["turns"]],
        "images": [image_ref(s["image"])] if s.get("image") else [],
    }


@register("exporter", "sharegpt")
class ShareGptExporter(FileExporter):
    """Write messages JSONL: ``{"id", "messages": [{"role", "content"}], "images": [...]}``.

    The ``<image>`` placeholder stays in the first user message, one per entry of ``images``
    (the layout LLaMA-Factory's ``sharegpt`` format with OpenAI-style tags reads).
    """

    version = 1
    params_schema = exporter_schema()
    writes = ("files",)

    def record(self, s: Sample) -> dict:
        return sharegpt_record(s)

    def write(self, records: list[dict], path: Path) -> None:
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            for r in records:
                fh.write(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n")
