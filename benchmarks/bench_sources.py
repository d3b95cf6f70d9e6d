"""Source loaders against a bare ``json.load`` of the same files, at COCO train2017 scale.

Generates a COCO-format annotation set the size of train2017 (118,287 images, 591,753 captions,
860,001 instances with segmentation polygons) and VQA v2 train-sized files (443,757 questions,
ten answers each) in a temporary folder, then measures, each in a fresh subprocess, the seconds
and the peak resident memory of

* ``bare``: ``json.load`` of the source's files, all kept (what any loader must at least do);
* ``loader``: the vlitc source's ``load`` streamed to the end (records built and dropped one by
  one, as the executor streams them to shards).

Goals: loader time within 2x of the bare parse; loader peak memory within 2x of the bare parse's.

    python benchmarks/bench_sources.py            # full size (about 1 GB of JSON; ~8 GB RAM)
    python benchmarks/bench_sources.py --scale 0.1
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FULL = {"images": 118_287, "captions": 591_753, "instances": 860_001, "questions": 443_757}
CATS = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
        "cat", "dog", "horse", "couch", "bed", "remote", "cup", "bottle", "chair", "book", "clock"]
WORDS = ("a man woman dog cat sitting standing on the in of with next to street table red blue "
         "white large small two people riding playing holding front field grass water").split()
ANSWERS = ["yes", "no", "2", "1", "3", "white", "red", "blue", "black", "dog", "cat", "tennis",
           "baseball", "frisbee", "kitchen", "pizza", "none", "4", "green", "brown"]


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def _polygon(rng: random.Random, x: float, y: float, w: float, h: float) -> list:
    k = rng.randint(8, 30)  # COCO polygons: ~20 points on average
    return [[round(x + rng.random() * w, 2) if i % 2 == 0 else round(y + rng.random() * h, 2)
             for i in range(2 * k)]]


def generate(out: Path, scale: float) -> dict[str, Path]:
    """Write captions, instances, questions and annotations files; returns their paths."""
    import orjson

    rng = random.Random(0)
    n = {k: max(1, int(v * scale)) for k, v in FULL.items()}
    images = [{"license": 1, "file_name": f"{i:012d}.jpg", "coco_url": "", "height": 480,
               "width": 640, "date_captured": "2013-11-14 11:18:45", "flickr_url": "", "id": i}
              for i in range(1, n["images"] + 1)]
    ids = [im["id"] for im in images]
    caps = [{"image_id": ids[j % len(ids)], "id": j, "caption": _sentence(rng, rng.randint(8, 14))}
            for j in range(n["captions"])]
    anns = []
    for j in range(n["instances"]):
        x, y = rng.random() * 500, rng.random() * 380
        w, h = 1 + rng.random() * 139, 1 + rng.random() * 99
        anns.append({"segmentation": _polygon(rng, x, y, w, h), "area": round(w * h, 3),
                     "iscrowd": 0, "image_id": rng.choice(ids),
                     "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                     "category_id": rng.randint(1, len(CATS)), "id": j + 1})
    cats = [{"supercategory": "thing", "id": i + 1, "name": c} for i, c in enumerate(CATS)]
    questions, vqa = [], []
    for j in range(n["questions"]):
        iid = ids[j % len(ids)]
        qid = iid * 1000 + j // len(ids)
        questions.append({"image_id": iid, "question": _sentence(rng, 6)[:-1] + "?",
                          "question_id": qid})
        top = rng.choice(ANSWERS)
        answers = [{"answer": top if rng.random() < 0.7 else rng.choice(ANSWERS),
                    "answer_confidence": "yes", "answer_id": k + 1} for k in range(10)]
        vqa.append({"question_type": "what is", "multiple_choice_answer": top,
                    "answers": answers, "image_id": iid, "answer_type": "other",
                    "question_id": qid})
    files = {
        "captions": {"info": {}, "licenses": [], "images": images, "annotations": caps},
        "instances": {"info": {}, "licenses": [], "images": images, "annotations": anns,
                      "categories": cats},
        "questions": {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco",
                      "data_subtype": "train2014", "license": {}, "questions": questions},
        "annotations": {"info": {}, "license": {}, "data_subtype": "train2014",
                        "annotations": vqa},
    }
    paths = {}
    for name, doc in files.items():
        paths[name] = out / f"{name}.json"
        paths[name].write_bytes(orjson.dumps(doc))
    return paths


CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
mode, kind, files = sys.argv[1], sys.argv[2], sys.argv[3:]
from pathlib import Path
from vlitc.ops import registry
from vlitc.ops.base import OpContext
def hwm():
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
base = hwm()
t = time.perf_counter()
if mode == "bare":
    docs = [json.load(open(f)) for f in files]
    n = sum(len(d.get("annotations") or d.get("questions")) for d in docs)
else:
    params = dict(zip(["captions", "instances"] if kind == "coco" else ["questions", "annotations"],
                      files))
    ctx = OpContext(seed=1, recipe_dir=Path("."))
    n = sum(1 for _ in registry.get("source", kind)(params, kind).load(ctx))
secs = time.perf_counter() - t
peak = hwm()
print(json.dumps({{"secs": secs, "peak_mb": (peak - base) / 1024, "n": n}}))
"""


def measure(mode: str, kind: str, files: list[Path], repeat: int) -> dict:
    """Best of ``repeat`` fresh-process runs (time and peak memory separately)."""
    code = CHILD.format(root=str(ROOT))
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", code, mode, kind, *map(str, files)],
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"secs": min(r["secs"] for r in runs), "peak_mb": min(r["peak_mb"] for r in runs),
            "n": runs[0]["n"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of train2017 size")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (best is kept)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vlitc-bench-sources-") as tmp:
        t = time.perf_counter()
        paths = generate(Path(tmp), args.scale)
        sizes = {k: p.stat().st_size / 2**20 for k, p in paths.items()}
        print(f"generated in {time.perf_counter() - t:.1f}s (scale {args.scale}): "
              + ", ".join(f"{k} {v:.0f} MiB" for k, v in sizes.items()))
        print(f"{'source':8} {'bare s':>8} {'loader s':>9} {'time x':>7} "
              f"{'bare MiB':>9} {'loader MiB':>11} {'mem x':>6} {'records':>8}")
        for kind, names in (("coco", ["captions", "instances"]),
                            ("vqa_v2", ["questions", "annotations"])):
            files = [paths[n] for n in names]
            bare = measure("bare", kind, files, args.repeat)
            load = measure("loader", kind, files, args.repeat)
            print(f"{kind:8} {bare['secs']:8.2f} {load['secs']:9.2f} "
                  f"{load['secs'] / bare['secs']:7.2f} {bare['peak_mb']:9.0f} "
                  f"{load['peak_mb']:11.0f} {load['peak_mb'] / max(bare['peak_mb'], 1):6.2f} "
                  f"{load['n']:8d}")


if __name__ == "__main__":
    main()
