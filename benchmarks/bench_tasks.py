"""Benchmark: COCO-train2017-scale captions (590k over 118k images) -> brief-caption samples ->
LLaVA JSON, timed stage by stage, with the rendering fast paths measured side by side.

    python benchmarks/bench_tasks.py [--images 118287] [--captions-per-image 5]

Records are built in memory (synthetic captions, COCO-like ids and sizes); the task is the real
``brief_caption`` kind with its default pool and the real ``llava`` exporter.
"""

from __future__ import annotations

import argparse
import gc
import random
import tempfile
import time
from pathlib import Path

from vlitc.ops.base import OpContext
from vlitc.ops.registry import get
from vlitc.records import image_record

WORDS = ("a man woman dog cat two people sitting standing on in the of with near street table "
         "pizza bus train red blue large small plate kitchen field grass skateboard").split()


def make_records(n_images: int, per_image: int) -> list[dict]:
    rng = random.Random(0)
    out = []
    for i in range(n_images):
        img = {"root": "coco", "path": f"{i:012d}.jpg", "width": 640, "height": 480}
        caps = [" ".join(rng.choices(WORDS, k=rng.randint(8, 14))) for _ in range(per_image)]
        objs = [{"id": i * 10 + k, "category": rng.choice(WORDS), "iscrowd": False,
                 "bbox": [10.0 * k, 20.0, 10.0 * k + 50, 90.0]} for k in range(rng.randint(0, 4))]
        out.append(image_record(str(i), "coco", img, captions=caps, objects=objs))
    return out


def timed(fn):
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def render_ratio(n: int = 200_000) -> None:
    """Side by side: our compiled renderer's fast paths vs plain Jinja2 sandbox rendering."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from vlitc.templating import compile as compile_template

    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    ctxv = {"caption": "a cat on a mat", "id": "1"}
    for text in ("Describe the image briefly.", "{{ caption }}"):
        jt = env.from_string(text)
        r = compile_template(text)
        _, tj = timed(lambda jt=jt: [jt.render(ctxv) for _ in range(n)])
        _, tr = timed(lambda r=r: [r.render(ctxv) for _ in range(n)])
        print(f"  render {text!r:32} jinja2 {n / tj:>12,.0f}/s   vlitc {n / tr:>12,.0f}/s   "
              f"x{tj / tr:.1f}")
    text = "Q: {{ caption }} ({{ id }})"
    _, recompile = timed(lambda: [env.from_string(text).render(ctxv) for _ in range(n // 20)])
    r = compile_template(text)
    _, cached = timed(lambda: [r.render(ctxv) for _ in range(n // 20)])
    print(f"  general template: compile per sample {n / 20 / recompile:,.0f}/s, compiled once "
          f"{n / 20 / cached:,.0f}/s  x{recompile / cached:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=118_287)
    ap.add_argument("--captions-per-image", type=int, default=5)
    args = ap.parse_args()

    records, t_build = timed(lambda: make_records(args.images, args.captions_per_image))
    n_caps = sum(len(r["captions"]) for r in records)
    print(f"records: {len(records):,} images, {n_caps:,} captions (built in {t_build:.1f} s, not counted)")

    gc.freeze()  # the records are long-lived input: keep the cycle collector off them

    def make_task():
        return get("task", "brief_caption")({"source": "coco", "selection": "random"}, "brief_caption")

    ctx = OpContext(seed=1, recipe_dir=Path("."))
    n, t_task = timed(lambda: sum(1 for _ in make_task().run(records, ctx)))
    print(f"task    : {n:,} samples in {t_task:.2f} s = {n / t_task:,.0f} samples/s (streamed)")

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "images").mkdir()
        for r in records:  # the exporter checks every referenced image exists (not timed)
            (Path(tmp) / "images" / r["image"]["path"]).touch()
        exporter = get("exporter", "llava")({"path": "train.json"}, "llava")
        ectx = OpContext(seed=1, recipe_dir=Path(tmp), out_dir=Path(tmp),
                         image_roots={"coco": Path(tmp) / "images"})
        cpu0 = time.process_time()
        files, total = timed(lambda: exporter.export(make_task().run(records, ctx), ectx))
        cpu = time.process_time() - cpu0
        size = sum((Path(tmp) / f).stat().st_size for f in files)
    print(f"task+export: {n:,} samples -> {size / 1e6:.0f} MB LLaVA JSON in {total:.2f} s wall "
          f"({cpu:.2f} s CPU) = {n / total:,.0f} samples/s; export alone ~{total - t_task:.2f} s")
    print(f"goal: under 10 s -> {'OK' if total < 10 else 'OVER'}")
    print("rendering, side by side:")
    render_ratio()


if __name__ == "__main__":
    main()
