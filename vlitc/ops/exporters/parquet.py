"""Parquet export with pyarrow: one row per sample, loadable with ``datasets``.

The file carries its ``datasets`` features in the schema metadata (the ``huggingface`` key that
``datasets`` writes and reads), so the Hub viewer and ``load_dataset`` see the columns' types;
with ``images: embed`` the ``image`` column is a ``datasets.Image`` (``{bytes, path}``) holding
the picture's bytes and ``images`` a list of them (every picture of a sample with several), so a
pushed release carries its pictures.
"""

from __future__ import annotations

import json
from pathlib import Path

from vlitc.ops.base import OpContext
from vlitc.ops.exporters.common import COMMON_PROPERTIES, FileExporter, exporter_schema, image_ref
from vlitc.ops.exporters.llava import FROM
from vlitc.ops.registry import register
from vlitc.records import Sample, images_of


def single_ref(s: Sample) -> str | None:
    """The ``image`` column: the path of a sample's only image (null for none or several)."""
    image = s.get("image")
    return image_ref(image) if isinstance(image, dict) else None


def arrow_schema():
    """Columns: id, image (the one image; null for text-only and several images), images (every
    image, in placeholder order), conversations (LLaVA shape), task, source, split."""
    import pyarrow as pa

    turn = pa.struct([("from", pa.string()), ("value", pa.string())])
    return pa.schema([
        ("id", pa.string()), ("image", pa.string()), ("images", pa.list_(pa.string())),
        ("conversations", pa.list_(turn)),
        ("task", pa.string()), ("source", pa.string()), ("split", pa.string()),
    ])


@register("exporter", "parquet")
class ParquetExporter(FileExporter):
    """Write Parquet (zstd): id, image, images, conversations [{from, value}], task, source, split.

    ``image`` holds the path of a single-image sample; ``images`` lists every image (one entry
    per ``<image>`` placeholder, so multi-image samples keep all of theirs).

    Loads with ``datasets.load_dataset("parquet", data_files=...)``; the bytes depend only on the
    samples and the pyarrow version (no timestamps). ``images: embed`` stores each image's bytes
    as ``datasets.Image`` values: ``image`` the single image, ``images`` a list of every image of
    the sample (the Hub viewer shows the pictures); otherwise both hold paths, as in the JSON
    exports.
    """

    projected = True  # it looks at the fields FileExporter.reads names, and no other
    version = 3
    requires = ("pyarrow",)
    params_schema = exporter_schema(
        row_group_size={"type": "integer", "minimum": 1, "default": 10000},
        images={**COMMON_PROPERTIES["images"],
                "enum": [*COMMON_PROPERTIES["images"]["enum"], "embed"],
                "description": "embed: the image bytes go into the file (datasets.Image)"})
    writes = ("files",)

    def place_images(self, images: dict[str, dict], ctx: OpContext) -> list[str]:
        return [] if self.params["images"] == "embed" else super().place_images(images, ctx)

    def record(self, s: Sample) -> dict:
        return {
            "id": s["id"],
            "image": single_ref(s),
            "images": [image_ref(i) for i in images_of(s)],
            "conversations": [{"from": FROM[t["role"]], "value": t["content"]} for t in s["turns"]],
            "task": s.get("task", ""),
            "source": s.get("source", ""),
            "split": (s.get("meta") or {}).get("split", "train"),
        }

    def write(self, samples: list[Sample], path: Path) -> None:
        import pyarrow.parquet as pq

        table = arrow_table(samples)
        if self.params["images"] == "embed":
            table = embed_images(table, samples, self._ctx)
        table = table.replace_schema_metadata(
            {"huggingface": json.dumps({"info": {"features": hf_features(table.schema)}})})
        pq.write_table(table, path, compression="zstd",
                       row_group_size=self.params["row_group_size"])


#: the Arrow type of a ``datasets.Image`` value
def image_type():
    import pyarrow as pa

    return pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def embed_images(table, samples: list[Sample], ctx: OpContext):
    """``table`` with its ``image`` column (the single image) and its ``images`` column (every
    image, in placeholder order) as ``datasets.Image`` values: each file's bytes and its path in
    the release (each file read once per shard)."""
    import pyarrow as pa

    cache: dict[str, bytes] = {}

    def value(img: dict) -> dict:
        ref = image_ref(img)
        if ref not in cache:
            cache[ref] = ctx.image_path(img).read_bytes()
        return {"bytes": cache[ref], "path": ref}

    single = [value(img) if isinstance(img := s.get("image"), dict) else None for s in samples]
    every = [[value(img) for img in images_of(s)] for s in samples]
    table = table.set_column(table.schema.get_field_index("image"), "image",
                             pa.array(single, image_type()))
    return table.set_column(table.schema.get_field_index("images"), "images",
                            pa.array(every, pa.list_(image_type())))


def hf_features(schema) -> dict:
    """The ``datasets`` features of an Arrow schema (JSON, as ``datasets`` writes them):
    strings and numbers as ``Value``, lists as ``[feature]`` (the form every ``datasets``
    version reads), structs as dicts, ``{bytes, path}`` as ``Image``."""
    return {f.name: _feature(f.type) for f in schema}


def _feature(t) -> dict | list:
    import pyarrow as pa

    if t == image_type():
        return {"_type": "Image"}
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return [_feature(t.value_type)]
    if pa.types.is_struct(t):
        return {t.field(i).name: _feature(t.field(i).type) for i in range(t.num_fields)}
    return {"dtype": "string" if pa.types.is_string(t) else str(t), "_type": "Value"}


def card_features(features: dict) -> list[dict]:
    """The same features as a dataset card writes them (``dataset_info.features``)."""
    def one(name: str, feat: dict | list) -> dict:
        if isinstance(feat, list):
            inner = feat[0]
            if isinstance(inner, dict) and inner.get("_type") is None:  # a list of structs
                return {"name": name, "list": [one(k, v) for k, v in inner.items()]}
            return {"name": name, "sequence": one(name, inner).get("dtype", "string")}
        kind = feat.get("_type")
        if kind == "Image":
            return {"name": name, "dtype": "image"}
        if kind == "Value":
            return {"name": name, "dtype": feat["dtype"]}
        return {"name": name, "struct": [one(k, v) for k, v in feat.items()]}

    return [one(n, f) for n, f in features.items()]


def release_features(images: str = "reference") -> list[dict]:
    """The card features of this exporter's files for an ``images`` mode."""
    import pyarrow as pa

    schema = arrow_schema()
    if images == "embed":
        schema = schema.set(schema.get_field_index("image"), pa.field("image", image_type()))
        schema = schema.set(schema.get_field_index("images"),
                            pa.field("images", pa.list_(image_type())))
    return card_features(hf_features(schema))


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
        "image": [single_ref(s) for s in samples],
        "images": [[image_ref(i) for i in images_of(s)] for s in samples],
        "conversations": pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), turns),
        "task": [s.get("task", "") for s in samples],
        "source": [s.get("source", "") for s in samples],
        "split": [(s.get("meta") or {}).get("split", "train") for s in samples],
    }
    return pa.Table.from_arrays(
        [c if isinstance(c, pa.Array) else pa.array(c, schema.field(n).type)
         for n, c in columns.items()], schema=schema)
