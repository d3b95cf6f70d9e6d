"""Benchmark: `vlitc build` of template + MinHash dedup + balance + LLaVA export over generated
COCO-format captions, side by side for 1 and 2 local workers and Ray on 2 CPUs.

    python benchmarks/bench_scale.py [--samples 100000 1000000] [--large] [--configs w1 w2 ray]

Each build is a whole ``vlitc build`` process with a fresh cache. Reported per sample count and
configuration: wall seconds, the seconds of each step (from the manifest), peak RSS of the largest
process and the peak sum over the build's process tree (sampled every 50 ms: the pool's workers,
or Ray's processes, count), the cache size, the release size and the 1-minute load average when
the build ended (the machine may be shared: compare the ratios of one run). ``--large`` adds 10M samples.
First, the ceiling the machine puts on 2 workers: a chunk's work (orjson, zstd, sha256, without
vlitc) alone and in two processes at once.
Goals (issue 14): peak RSS < 1 GB at 1M; cache <= 2x release; 2 workers >= 1.7x on the
CPU-bound steps; Ray within 1.3x of the local pool; 1M in < 60 s with 2 workers.
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

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import brief_recipe  # noqa: E402  (the same source and template task)

REST = """\
filters:
  - {{type: dedup, method: minhash, scope: global, threshold: 0.8}}
balance:
  total: {total}
  mix: {{brief: 1.0}}
  split: {{validation: 0.05}}
outputs:
  - {{format: llava, path: train.json, split: train}}
report: false
"""

WORDS = ("a man woman dog cat two people sitting standing on in the of with near street table "
         "pizza bus train red blue large small plate kitchen field grass skateboard young old "
         "white black green yellow bench tree car truck sign building window wall water boat "
         "beach sky cloud snow ski bike horse sheep cow bird bear zebra giraffe elephant").split()

CONFIGS = {"w1": ["--workers", "1"], "w2": ["--workers", "2"], "ray": ["--engine", "ray", "--workers", "2"]}


def make(root: Path, n_samples: int) -> Path:
    """``n_samples`` captions over ``n_samples / 5`` images (hard links of one PNG); about 3%
    of captions are near-copies of an earlier one (a word changed), for the dedup to find."""
    from PIL import Image

    rng = random.Random(0)
    n_images = max(1, n_samples // 5)
    (root / "images").mkdir(parents=True)
    first = root / "images" / "000000000001.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(first)
    images, anns = [], []
    recent: list[str] = []
    base = first
    for i in range(1, n_images + 1):
        name = f"{i:012d}.png"
        if i > 1:  # hard links (at most 60,000 to one file: filesystems cap them)
            if (i - 1) % 60_000 == 0:
                shutil.copyfile(first, root / "images" / name)
                base = root / "images" / name
            else:
                os.link(base, root / "images" / name)
        images.append({"id": i, "file_name": name, "width": 64, "height": 48})
        for _ in range(5):
            if recent and rng.random() < 0.03:
                words = rng.choice(recent).split()
                words[rng.randrange(len(words))] = rng.choice(WORDS)
                cap = " ".join(words)
            else:
                cap = " ".join(rng.choices(WORDS, k=rng.randint(9, 16)))
                recent = (recent + [cap])[-1000:]
            anns.append({"id": len(anns) + 1, "image_id": i, "caption": cap})
    (root / "captions.json").write_bytes(orjson.dumps({"images": images, "annotations": anns}))
    (root / "recipe.yaml").write_text(brief_recipe("scale", REST.format(total=int(n_samples * 0.9))))
    return root / "recipe.yaml"


#: the work of a map step's chunk, without vlitc: 200k samples' JSON lines encoded, compressed,
#: hashed, decompressed and decoded, three times
CEILING = """\
import hashlib, random, time, orjson, zstandard
r = random.Random(0)
w = "a man woman dog cat two people sitting standing on in the of with near street".split()
d = [{"id": f"brief/{i}", "turns": [{"role": "user", "content": " ".join(r.choices(w, k=12))},
      {"role": "assistant", "content": " ".join(r.choices(w, k=14))}],
      "meta": {"annotations": {"captions": [" ".join(r.choices(w, k=12)) for _ in range(5)]}}}
     for i in range(200_000)]
t = time.perf_counter()
for _ in range(3):
    data = b"".join([orjson.dumps(x) + b"\\n" for x in d])
    packed = zstandard.ZstdCompressor(level=3).compress(data)
    hashlib.sha256(data).hexdigest()
    [orjson.loads(x) for x in zstandard.ZstdDecompressor().decompress(packed).splitlines()]
print(time.perf_counter() - t)
"""


def two_process_ceiling() -> tuple[float, float]:
    """The seconds of :data:`CEILING` alone, and of each of two copies run at once: how much
    faster two workers can be on this machine than one (two processes share its caches and
    memory bandwidth)."""
    def run(n: int) -> float:
        procs = [subprocess.Popen([sys.executable, "-c", CEILING], stdout=subprocess.PIPE, text=True)
                 for _ in range(n)]
        return max(float(p.communicate()[0]) for p in procs)

    return run(1), run(2)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def run_build(cmd: list[str], cwd: Path, env: dict) -> dict:
    """Wall time, peak RSS of the largest process and of the process tree (sampled)."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = psutil.Process(proc.pid)
    peak_tree = peak_one = 0
    cpu: dict[tuple[int, float], float] = {}  # (pid, start time) -> CPU seconds last seen
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            rss = []
            for p in procs:
                try:
                    with p.oneshot():
                        rss.append(p.memory_info().rss)
                        t = p.cpu_times()
                        cpu[(p.pid, p.create_time())] = t.user + t.system
                except psutil.Error:
                    pass
            peak_tree, peak_one = max(peak_tree, sum(rss)), max(peak_one, max(rss, default=0))
        except psutil.Error:
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"wall": wall, "rss_one": peak_one / 2**20, "rss_tree": peak_tree / 2**20,
            "cpu": sum(cpu.values()), "load": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--large", action="store_true", help="add 10M samples")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = ap.parse_args()
    sizes = args.samples + ([10_000_000] if args.large else [])
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    print(f"machine: {os.cpu_count()} CPUs; vlitc build end to end, fresh cache per run")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min)")
    print(f"{'samples':>9} {'config':>6} {'wall s':>8} {'cpu s':>7} {'rss MiB':>8} {'tree MiB':>9} "
          f"{'cache MB':>9} {'release MB':>11} {'load':>5}  steps (s)")
    if "w1" in args.configs and "w2" in args.configs:
        alone, two = two_process_ceiling()
        print(f"this machine: a chunk's work (orjson, zstd, sha256 over 200k samples) takes {alone:.2f}s "
              f"alone, {two:.2f}s in each of two processes at once: 2 workers can be at most "
              f"{2 * alone / two:.2f}x faster than 1 here")
    results: dict = {}
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="vb-", dir="/tmp") as tmp:
            root = Path(tmp)
            recipe = make(root, n)
            env["RAY_TMPDIR"] = str(root / "ray")
            (root / "ray").mkdir()
            for name in args.configs:
                cache, out = root / f"cache-{name}", root / f"out-{name}"
                cmd = [sys.executable, "-m", "vlitc.cli.main", "build", str(recipe), "--quiet",
                       "--out", str(out), "--cache-dir", str(cache), *CONFIGS[name]]
                r = run_build(cmd, root, env)
                manifest = json.loads((out / "manifest.json").read_text())
                steps = {s["id"]: s["seconds"] for s in manifest["steps"]}
                r.update(cache=du(cache) / 1e6, release=du(out) / 1e6, steps=steps,
                         outputs=[o["sha256"] for o in manifest["outputs"]],
                         keys=[s["key"] for s in manifest["steps"]])
                results[(n, name)] = r
                short = " ".join(f"{k.split(':')[0]}={v:.1f}" for k, v in steps.items() if v >= 0.05)
                print(f"{n:>9} {name:>6} {r['wall']:>8.1f} {r['cpu']:>7.1f} {r['rss_one']:>8.0f} {r['rss_tree']:>9.0f} "
                      f"{r['cache']:>9.1f} {r['release']:>11.1f} {r['load']:>5.2f}  {short}", flush=True)
            base = results.get((n, args.configs[0]))
            for name in args.configs[1:]:
                r = results[(n, name)]
                same = r["outputs"] == base["outputs"] and r["keys"] == base["keys"]
                cpu = [k for k in base["steps"] if k.startswith(("task:", "measure:", "balance"))]
                b_cpu = sum(base["steps"][k] for k in cpu)
                r_cpu = sum(r["steps"][k] for k in cpu)
                print(f"{'':>9} {name:>6} vs {args.configs[0]}: wall {base['wall'] / r['wall']:.2f}x, "
                      f"map steps ({'+'.join(c.split(':')[0] for c in cpu)}) {b_cpu / max(r_cpu, 1e-9):.2f}x, "
                      f"same keys and bytes: {same}")
            if "w2" in args.configs and "ray" in args.configs:
                print(f"{'':>9} ray / w2 wall: {results[(n, 'ray')]['wall'] / results[(n, 'w2')]['wall']:.2f}x")
            r0 = results[(n, args.configs[0])]
            print(f"{'':>9} cache / release: {r0['cache'] / max(r0['release'], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
