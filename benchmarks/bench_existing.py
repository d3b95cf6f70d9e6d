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

Goal: ``reexport`` within 2x the time of ``bare``, in memory that does not grow with the file
(the source reads it element by element). ``qc`` is reported (time, peak memory). Peak memory is
each run's own resident peak and, for builds, the largest of its worker processes; the load
average is printed with every figure (the machine may be shared).

    python benchmarks/bench_existing.py                 # full size (about 0.4 GB of JSON)
    python benchmarks/bench_existing.py --scale 0.05    # a quick look
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
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
    path, qc = folder / "llava_mix.json", folder / "llava_100k.json"
    with open(path, "w", encoding="utf-8") as full, open(qc, "w", encoding="utf-8") as part:
        for i in range(n):  # written as generated: the file is never held in memory
            turns = []
            for k in range(rng.choice((1, 1, 2, 3, 5))):
                q = rng.choice(QUESTIONS)
                turns.append({"from": "human", "value": ("<image>\n" if k == 0 else "") + q})
                turns.append({"from": "gpt", "value": " ".join(_sentence(rng, rng.randint(6, 16))
                                                               for _ in range(rng.randint(1, 4)))})
            rec = {"id": f"{i:07d}", "image": f"{i % IMAGES:012d}.png", "conversations": turns}
            line = ("[\n" if i == 0 else ",\n") + json.dumps(rec, sort_keys=True, ensure_ascii=False)
            full.write(line)
            if i < QC_N:
                part.write(line)
        full.write("\n]\n")
        part.write("\n]\n")
    return path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


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
t0, c0 = time.perf_counter(), time.process_time()
if mode == "bare":
    with open(a, encoding="utf-8") as f:
        data = json.load(f)
    with open(b, "w", encoding="utf-8") as f:
        json.dump(data, f)
else:
    from vlitc.api import build
    build(a, out_dir=b + "/out", cache_dir=b + "/cache")
seconds = time.perf_counter() - t0
# the pool's workers are the forkserver's children: stop it so that their usage is counted
from multiprocessing import forkserver
stop = getattr(getattr(forkserver, "_forkserver", None), "_stop", None)
if stop is not None:
    stop()
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"seconds": seconds, "cpu": time.process_time() - c0 + kids.ru_utime + kids.ru_stime,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "workers_peak_mb": kids.ru_maxrss / 1024}))
"""


def child(mode: str, a: Path, b: Path) -> dict:
    """One measured run in a fresh process, with the load average before and after it."""
    before = os.getloadavg()[0]
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(a), str(b)], check=True,
                         capture_output=True, text=True, cwd=ROOT)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["load"] = f"{before:.1f}->{os.getloadavg()[0]:.1f}"
    return res


def row(name: str, res: dict, extra: str = "") -> str:
    workers = f"{res['workers_peak_mb']:11.0f}" if res.get("workers_peak_mb") else f"{'-':>11s}"
    return (f"{name:30s}{res['seconds']:10.2f}{res['cpu']:10.2f}{res['peak_mb']:10.0f}{workers}"
            f"{res['load']:>12s}{extra}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0,
                    help="share of the 665,298 conversations to generate (default: all)")
    ap.add_argument("--no-qc", action="store_true", help="skip the default-QC run")
    args = ap.parse_args()
    n = max(100, int(FULL * args.scale))
    with tempfile.TemporaryDirectory(prefix="vlitc-bench-existing-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        data = generate(folder, n)
        print(f"generated {n} conversations ({data.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - t0:.1f}s; {os.cpu_count()} cores", flush=True)
        print(f"{'':30s}{'seconds':>10s}{'cpu s':>10s}{'peak MB':>10s}{'workers MB':>11s}"
              f"{'load avg':>12s}", flush=True)
        bare = child("bare", data, folder / "bare.json")
        print(row("bare json.load + json.dump", bare), flush=True)
        (folder / "bare.json").unlink()
        (folder / "run1").mkdir()
        re_ = child("build", recipe(folder, data, qc=False), folder / "run1")
        same = sha256(folder / "run1" / "out" / "out.json") == sha256(data)
        print(row("vlitc re-ingest + re-export", re_), flush=True)
        print(f"ratio {re_['seconds'] / bare['seconds']:.2f}x against bare json.load + json.dump "
              f"(goal <= 2x; cpu seconds {re_['cpu'] / bare['cpu']:.2f}x); "
              f"re-export byte-identical: {same}", flush=True)
        shutil.rmtree(folder / "run1")
        if not args.no_qc:
            (folder / "run2").mkdir()
            qc = child("build", recipe(folder, folder / "llava_100k.json", qc=True), folder / "run2")
            with open(folder / "run2" / "out" / "out.json", "rb") as f:
                kept = sum(1 for line in f if line.startswith(b"{"))
            print(row(f"vlitc default QC, {min(n, QC_N)} samples", qc, f"   kept {kept}"))

if __name__ == "__main__":
    main()
