"""Benchmark: the three exporters on COCO-train2017-scale brief-caption samples, side by side
with bare encoders of the same samples (no validation, no image checks).

    python benchmarks/bench_exports.py [--images 118287] [--captions-per-image 5]

Samples come from the real ``brief_caption`` task over synthetic records (built once, not
timed); every referenced image file exists, so validation passes. CPU seconds are reported
next to wall seconds (the machine may be shared).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import orjson

from vlitc.ops.base import OpContext
from vlitc.ops.registry import get

sys.path.insert(0, str(Path(__file__).parent))
from bench_tasks import make_records  # noqa: E402


def timed(fn) -> tuple[float, float]:
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def bare(samples: list[dict], exporter, how: str, out: Path):
    """The format's records through a bare encoder (``orjson``, ``json``, or for Parquet
    ``pyarrow`` from rows), no checks; with the cycle collector off, as the exporters run."""
    def run():
        gc.disable()
        try:
            records = [exporter.record(s) for s in samples]
            if how == "orjson":
                orjson.dumps(records, option=orjson.OPT_SORT_KEYS)
            elif how == "json":
                ",\n".join(json.dumps(r, sort_keys=True, ensure_ascii=False) for r in records)
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                from vlitc.ops.exporters.parquet import arrow_schema
                pq.write_table(pa.Table.from_pylist(records, schema=arrow_schema()), out,
                               compression="zstd", row_group_size=10000)
        finally:
            gc.enable()
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=118_287)
    ap.add_argument("--captions-per-image", type=int, default=5)
    args = ap.parse_args()
    records = make_records(args.images, args.captions_per_image)
    gc.freeze()
    task = get("task", "brief_caption")({"source": "coco", "selection": "random"}, "brief_caption")
    samples = list(task.run(records, OpContext(seed=1, recipe_dir=Path("."))))
    gc.freeze()
    print(f"{len(samples):,} samples over {len(records):,} images (built, not timed)")
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        for r in records:
            (images / r["image"]["path"]).touch()
        ctx = OpContext(seed=1, recipe_dir=Path(tmp), out_dir=Path(tmp),
                        image_roots={"coco": images})
        for fmt, path in (("llava", "train.json"), ("sharegpt", "train.jsonl"),
                          ("parquet", "train.parquet")):
            exporter = get("exporter", fmt)({"path": path}, fmt)
            wall, cpu = timed(lambda e=exporter: e.export(samples, ctx))
            print(f"{fmt:8} export (validated, written): {wall:6.2f} s wall {cpu:6.2f} s CPU  "
                  f"{len(samples) / cpu:>10,.0f} samples/CPU-s")
            for how in ("rows",) if fmt == "parquet" else ("orjson", "json"):
                bw, bc = timed(bare(samples, exporter, how, Path(tmp) / "bare.parquet"))
                print(f"         records + bare {how:6}:  {bw:6.2f} s wall {bc:6.2f} s CPU  "
                      f"export/bare x{cpu / bc:.2f} (CPU)")


if __name__ == "__main__":
    main()
