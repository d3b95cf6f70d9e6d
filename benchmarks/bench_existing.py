"""Existing instruction data at LLaVA-1.5 scale, side by side in one run.

Generates a LLaVA-format JSON file the size of LLaVA-1.5's mix (665,298 conversations, 2-10
turns, on a pool of image files that they share, as the mix's images are shared) in a temporary
folder, then measures, each in a fresh subprocess, seconds and peak resident memory of

* ``bare``: ``json.load`` of the file and ``json.dump`` of what was read (the least any re-export
  does);
* ``reexport``: ``vlitc build`` of a recipe that reads the file (``llava`` source, images checked
  to exist), passes every conversation through (``conversations`` task) and writes it back as
  LLaVA JSON (validated, byte-identical to the input);
* ``qc``: ``vlitc build`` of the default QC (structure, leakage, truncated, repetition,
  hallucination, exact dedup) over the first 100,000 conversations.

Goal: ``reexport`` within 2x the time of ``bare``. ``qc`` is reported (time, peak memory).

    python benchmarks/bench_existing.py                 # full size (about 0.4 GB of JSON)
    python benchmarks/bench_existing.py --scale 0.05
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
FULL = 665_298
QC_N = 100_000
IMAGES = 2_000
WORDS = ("a man woman dog cat sitting standing on the in of with next to street table red blue "
         "white large small two people riding playing holding front field grass water bus car "
         "kitchen pizza umbrella beach").split()
QUESTIONS = ["What is the man holding?", "How many people are in the picture?",
             "What color is the bus?", "Describe the image in detail.",
             "What might the dog be doing here?", "Where is the umbrella?"]


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def generate(folder: Path, n: int) -> Path:
    """The LLaVA JSON file, as vlitc writes it (one record per line, sorted keys), and the
    image files it names (tiny PNGs: the re-export checks each exists)."""
    from PIL import Image

    rng = random.Random(0)
    images = folder / "images"
    images.mkdir()
    Image.new("RGB", (8, 8), "white").save(images / "000000000000.png")
    png = (images / "000000000000.png").read_bytes()
    for i in range(1, IMAGES):
        (images / f"{i:012d}.png").write_bytes(png)
    lines = []
    for i in range(n):
        turns = []
        for k in range(rng.choice((1, 1, 2, 3, 5))):
            q = rng.choice(QUESTIONS)
            turns.append({"from": "human", "value": ("<image>\n" if k == 0 else "") + q})
            turns.append({"from": "gpt", "value": " ".join(_sentence(rng, rng.randint(6, 16))
                                                           for _ in range(rng.randint(1, 4)))})
        rec = {"id": f"{i:07d}", "image": f"{i % IMAGES:012d}.png", "conversations": turns}
        lines.append(json.dumps(rec, sort_keys=True, ensure_ascii=False))
    path = folder / "llava_mix.json"
    path.write_text("[\n" + ",\n".join(lines) + "\n]\n", encoding="utf-8")
    qc = folder / "llava_100k.json"
    qc.write_text("[\n" + ",\n".join(lines[:QC_N]) + "\n]\n", encoding="utf-8")
    return path


def recipe(folder: Path, data: Path, qc: bool) -> Path:
    import yaml

    r = {"vlitc": 1, "name": "qc" if qc else "reexport", "version": "0.1.0", "seed": 1,
         "sources": {"mix": {"type": "llava", "file": str(data), "images": str(folder / "images"),
                             "check_images": False, "hash_images": False}},
         "tasks": {"mix": {"kind": "conversations", "source": "mix"}},
         "outputs": [{"format": "llava", "path": "out.json"}], "report": False}
    if qc:
        r["filters"] = [{"type": "structure"}, {"type": "leakage"}, {"type": "truncated"},
                        {"type": "repetition"}, {"type": "hallucination"},
                        {"type": "dedup", "method": "exact"}]
    path = folder / f"{r['name']}.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


CHILD = r"""
import json, resource, sys, time
mode, a, b = sys.argv[1:4]
t0 = time.perf_counter()
if mode == "bare":
    with open(a, encoding="utf-8") as f:
        data = json.load(f)
    with open(b, "w", encoding="utf-8") as f:
        json.dump(data, f)
else:
    from vlitc.api import build
    build(a, out_dir=b + "/out", cache_dir=b + "/cache")
print(json.dumps({"seconds": time.perf_counter() - t0,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def child(mode: str, a: Path, b: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(a), str(b)], check=True,
                         capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args()
    n = max(100, int(FULL * args.scale))
    with tempfile.TemporaryDirectory(prefix="vlitc-bench-existing-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        data = generate(folder, n)
        print(f"generated {n} conversations ({data.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - t0:.1f}s")
        bare = child("bare", data, folder / "bare.json")
        (folder / "run1").mkdir()
        re_ = child("build", recipe(folder, data, qc=False), folder / "run1")
        same = (folder / "run1" / "out" / "out.json").read_bytes() == data.read_bytes()
        (folder / "run2").mkdir()
        qc = child("build", recipe(folder, folder / "llava_100k.json", qc=True), folder / "run2")
        kept = len(json.loads((folder / "run2" / "out" / "out.json").read_text()))
    print(f"{'':28s}{'seconds':>10s}{'peak MB':>10s}")
    print(f"{'bare json.load + json.dump':28s}{bare['seconds']:10.2f}{bare['peak_mb']:10.0f}")
    print(f"{'vlitc re-ingest + re-export':28s}{re_['seconds']:10.2f}{re_['peak_mb']:10.0f}")
    print(f"ratio {re_['seconds'] / bare['seconds']:.2f}x (goal <= 2x); re-export byte-identical: {same}")
    print(f"{'vlitc default QC, ' + str(min(n, QC_N)) + ' samples':28s}{qc['seconds']:10.2f}"
          f"{qc['peak_mb']:10.0f}   kept {kept}")


if __name__ == "__main__":
    main()
