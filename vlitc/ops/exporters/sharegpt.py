"""ShareGPT / messages JSONL export: one ``{"id", "messages", "images"}`` object per line."""

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
from vlitc.records import Sample, images_of


def sharegpt_record(s: Sample) -> dict:
    """One sample as chat messages (roles ``user``/``assistant``) plus its list of images."""
    return {
        "id": s["id"],
        "messages": [{"role": t["role"], "content": t["content"]} for t in s["turns"]],
        "images": [image_ref(i) for i in images_of(s)],
    }


def sharegpt_line(s: Sample) -> str:
    """``json.dumps(sharegpt_record(s), sort_keys=True, ensure_ascii=False)``, written out
    directly: the same text, without building the record (anything but strings takes the long way)."""
    try:
        messages = ", ".join([f'{{"content": {quote(t["content"])}, "role": {quote(t["role"])}}}'
                              for t in s["turns"]])
        images = ", ".join([quote(image_ref(i)) for i in images_of(s)])
        return f'{{"id": {quote(s["id"])}, "images": [{images}], "messages": [{messages}]}}'
    except TypeError:
        return json.dumps(sharegpt_record(s), sort_keys=True, ensure_ascii=False)


#: one JSON object per line, each line ended by a newline
LINES = {"sep": "\n", "end": "\n", "end_empty": ""}


@register("exporter", "sharegpt")
class ShareGptExporter(FileExporter):
    """Write messages JSONL: ``{"id", "messages": [{"role", "content"}], "images": [...]}``.

    The ``<image>`` placeholders stay in the user messages, one per entry of ``images``
    (the layout LLaMA-Factory's ``sharegpt`` format with OpenAI-style tags reads).
    """

    projected = True  # it looks at the fields FileExporter.reads names, and no other
    version = 1
    params_schema = exporter_schema()
    writes = ("files",)

    text = True

    def record(self, s: Sample) -> dict:
        return sharegpt_record(s)

    def line(self, s: Sample) -> str:
        return sharegpt_line(s)

    def open_shard(self, path: Path) -> JoinedTextShard:
        return JoinedTextShard(path, **LINES)
