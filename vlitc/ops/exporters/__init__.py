"""Exporters: write the release's samples in the formats trainers read (one module per format).

``llava`` (JSON array), ``sharegpt`` (messages JSONL), ``parquet`` (loadable with ``datasets``).
All share :class:`~vlitc.ops.exporters.common.FileExporter`: split selection, validation before
writing, sharding, image reference/copy/link, and temp-then-rename writes.
"""
