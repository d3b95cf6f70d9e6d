"""Benchmark: a COCO-scale brief-caption `vlitc build` end to end (590k captions over 118k
images -> brief-caption samples -> LLaVA JSON), against the bare baseline of the same work:
``json.load`` of the captions, a loop that builds the LLaVA records, an ``orjson`` dump.

    python benchmarks/bench_captions.py [--images 118287] [--workers 1 2]

Both run as whole processes in the same run on the same generated file (COCO's layout and
sizes, synthetic captions). Goal (issue 14): vlitc within 2x of the baseline. Each line gives
wall time, the CPU seconds of the process tree (workers included: on a shared machine they
move less than wall time) and the load average; each build also its steps' seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
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


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _subreaper() -> None:
    """Adopt the build's orphans (pool workers forked by a forkserver that exits unwaited), so
    that their CPU seconds count: Linux only; elsewhere a worker's CPU may go uncounted."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds (the command's process tree) of one run."""
    t0, c0 = time.perf_counter(), _cpu()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=os.environ)
    wall = time.perf_counter() - t0
    while True:  # wait for the adopted orphans: their CPU then counts as ours
        try:
            os.wait()
        except ChildProcessError:
            break
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return wall, _cpu() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=118_287)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    _subreaper()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make(root, args.images)
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min)")
        base, base_cpu = timed([sys.executable, "baseline.py"], root)
        base_load = os.getloadavg()[0]
        rows = []
        for w in args.workers:
            cmd = [sys.executable, "-m", "vlitc.cli.main", "build", "recipe.yaml", "--quiet", "--out", f"out{w}",
                   "--cache-dir", f"cache{w}", "--workers", str(w)]
            t, cpu = timed(cmd, root)
            steps = json.loads((root / f"out{w}" / "manifest.json").read_text())["steps"]
            rows.append((w, t, cpu, os.getloadavg()[0], {s["id"]: s["seconds"] for s in steps}))
        again = timed([sys.executable, "baseline.py"], root)  # the baseline again, after: load drifts
        base, base_cpu = min((base, base_cpu), again)
        n = json.loads((root / f"out{args.workers[0]}" / "manifest.json").read_text())["outputs"][0]["records"]
    print(f"{n} samples from {args.images * 5} captions; baseline json.load + loop + orjson: {base:.2f}s, "
          f"{base_cpu:.2f} CPU s (the faster of a run before and one after; load {base_load:.2f})")
    for w, t, cpu, load, steps in rows:
        print(f"vlitc build, {w} worker(s): {t:.2f}s = {t / base:.2f}x the baseline (goal <= 2x), "
              f"{cpu:.2f} CPU s = {cpu / base_cpu:.2f}x; load {load:.2f}")
        print("    steps: " + ", ".join(f"{k} {v:.2f}s" for k, v in steps.items()))


if __name__ == "__main__":
    main()
