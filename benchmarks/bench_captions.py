"""Benchmark: a COCO-scale brief-caption `vlitc build` end to end (590k captions over 118k
images -> brief-caption samples -> LLaVA JSON), against the bare baseline of the same work:
``json.load`` of the captions, a loop that builds the LLaVA records, an ``orjson`` dump.

    python benchmarks/bench_captions.py [--images 118287] [--workers 1 2]

Both run as whole processes in the same run on the same generated file (COCO's layout and
sizes, synthetic captions). Goal (issue 14): vlitc within 2x of the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPE = """\
vlitc: 1
name: captions
version: 0.0.1
seed: 7
sources:
  coco:
    type: coco
    images: images
    captions: captions.json
    check_images: false
tasks:
  brief_caption:
    kind: brief_caption
    source: coco
outputs:
  - {format: llava, path: train.json}
report: false
"""

BASELINE = """\
import json, sys, orjson
d = json.load(open("captions.json"))
names = {i["id"]: i["file_name"] for i in d["images"]}
t = ["Describe the image briefly.", "Give a short caption.", "What is shown here?"]
out = [{"id": f"brief_caption/{a['image_id']}/{a['id']}", "image": names[a["image_id"]],
        "conversations": [{"from": "human", "value": "<image>\\n" + t[a["id"] % 3]},
                          {"from": "gpt", "value": a["caption"]}]} for a in d["annotations"]]
open("baseline.json", "wb").write(orjson.dumps(out))
"""

WORDS = ("a man woman dog cat two people sitting standing on in the of with near street table "
         "pizza bus train red blue large small plate kitchen field grass skateboard").split()


def make(root: Path, n_images: int) -> None:
    from PIL import Image

    rng = random.Random(0)
    (root / "images").mkdir()
    first = root / "images" / f"{1:012d}.jpg"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(first, format="JPEG")
    images, anns = [], []
    base = first
    for i in range(1, n_images + 1):
        if i > 1:  # hard links (at most 60,000 to one file: filesystems cap them)
            path = root / "images" / f"{i:012d}.jpg"
            if (i - 1) % 60_000 == 0:
                shutil.copyfile(first, path)
                base = path
            else:
                os.link(base, path)
        images.append({"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480})
        for _ in range(5):
            anns.append({"id": len(anns) + 1, "image_id": i,
                         "caption": " ".join(rng.choices(WORDS, k=rng.randint(8, 14)))})
    (root / "captions.json").write_text(json.dumps({"images": images, "annotations": anns}))
    (root / "recipe.yaml").write_text(RECIPE)
    (root / "baseline.py").write_text(BASELINE)


def timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=os.environ)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=118_287)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make(root, args.images)
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min)")
        base = timed([sys.executable, "baseline.py"], root)
        base_load = os.getloadavg()[0]
        rows = []
        for w in args.workers:
            cmd = [sys.executable, "-m", "vlitc.cli.main", "build", "recipe.yaml", "--quiet", "--out", f"out{w}",
                   "--cache-dir", f"cache{w}", "--workers", str(w)]
            rows.append((w, timed(cmd, root), os.getloadavg()[0]))
        again = timed([sys.executable, "baseline.py"], root)  # the baseline again, after: load drifts
        base = min(base, again)
        n = json.loads((root / f"out{args.workers[0]}" / "manifest.json").read_text())["outputs"][0]["records"]
    print(f"{n} samples from {args.images * 5} captions; baseline json.load + loop + orjson: {base:.2f}s "
          f"(the faster of a run before and one after; load {base_load:.2f})")
    for w, t, load in rows:
        print(f"vlitc build, {w} worker(s): {t:.2f}s = {t / base:.2f}x the baseline (goal <= 2x; "
              f"load {load:.2f})")


if __name__ == "__main__":
    main()
