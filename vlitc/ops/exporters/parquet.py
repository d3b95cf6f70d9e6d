"""Parquet export with pyarrow: one row per sample, loadable with ``datasets``."""

from __future__ import annotations

from pathlib import Path

from vlitc.ops.exporters.common import FileExporter, exporter_schema, image_ref
from vlitc.ops.exporters.llava import FROM
from vlitc.ops.registry import register
from vlitc.records import Sample


def arrow_schema():
    """Columns: id, image (null for text-only), conversations (LLaVA shape), task, source, split."""
    import pyarrow as pa

    turn = pa.struct([("from", pa.string()), ("value", pa.string())])
    return pa.schema([
        ("id", pa.string()), ("image", pa.string()), ("conversations", pa.list_(turn)),
        ("task", pa.string()), ("source", pa.string()), ("split", pa.string()),
    ])


@register("exporter", "parquet")
class ParquetExporter(FileExporter):
    """Write Parquet (zstd): id, image, conversations [{from, value}], task, source, split.

    Loads with ``datasets.load_dataset("parquet", data_files=...)``; the bytes depend only on the
    samples and the pyarrow version (no timestamps).
    """

    version = 1
    params_schema = exporter_schema(
        row_group_size={"type": "integer", "minimum": 1, "default": 10000})
    writes = ("files",)

    def record(self, s: Sample) -> dict:
        return {
            "id": s["id"],
            "image": image_ref(s["image"]) if s.get("image") else None,
            "conversations": [{"from": FROM[t["role"]], "value": t["content"]} for t in s["turns"]],
            "task": s.get("task", ""),
            "source": s.get("source", ""),
            "split": (s.get("meta") or {}).get("split", "train"),
        }

    def write(self, records: list[dict], path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(records, schema=arrow_schema())
        pq.write_table(table, path, compression="zstd",
                       row_group_size=self.params.get("row_group_size", 10000))
