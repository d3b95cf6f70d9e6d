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

    def write(self, samples: list[Sample], path: Path) -> None:
        import pyarrow.parquet as pq

        pq.write_table(arrow_table(samples), path, compression="zstd",
                       row_group_size=self.params["row_group_size"])


def arrow_table(samples: list[Sample]):
    """The rows of :meth:`ParquetExporter.record`, built column by column (one Python list per
    column and one for all turns, no dict per row or per turn)."""
    import pyarrow as pa

    schema = arrow_schema()
    offsets, froms, values = [0], [], []
    for s in samples:
        turns = s["turns"]
        froms.extend([FROM[t["role"]] for t in turns])
        values.extend([t["content"] for t in turns])
        offsets.append(len(values))
    turn_type = schema.field("conversations").type.value_type
    turns = pa.StructArray.from_arrays(
        [pa.array(froms, pa.string()), pa.array(values, pa.string())], fields=list(turn_type))
    columns = {
        "id": [s["id"] for s in samples],
        "image": [image_ref(s["image"]) if s.get("image") else None for s in samples],
        "conversations": pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), turns),
        "task": [s.get("task", "") for s in samples],
        "source": [s.get("source", "") for s in samples],
        "split": [(s.get("meta") or {}).get("split", "train") for s in samples],
    }
    return pa.Table.from_arrays(
        [c if isinstance(c, pa.Array) else pa.array(c, schema.field(n).type)
         for n, c in columns.items()], schema=schema)
