"""No-op rebuild time and first-build peak memory of a generated 100,000-sample recipe.

    python benchmarks/bench_core.py [--samples 100000] [--repeat 5]

Side by side in one run: a bare interpreter start (``python -c pass``), ``python -c "import
vlitc.cli.main"``, and ``vlitc build`` of an unchanged recipe, each as a whole process; the
no-op rebuild cost is reported on top of interpreter start (goal: under 0.5 s).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: the generated COCO captions and one template task over them; the benchmarks add the rest
BRIEF_HEAD = """\
vlitc: 1
name: NAME
version: 0.0.1
seed: 7
sources:
  coco:
    type: coco
    images: images
    captions: captions.json
    check_images: false
tasks:
  brief:
    kind: template
    source: coco
    instruction:
      templates: ["Describe the image briefly.", "Give a short caption.", "What is shown here?"]
    response: "{{ caption }}"
    per: caption
"""


def brief_recipe(name: str, rest: str) -> str:
    """A recipe named ``name``: :data:`BRIEF_HEAD` followed by ``rest`` (filters, outputs...)."""
    return BRIEF_HEAD.replace("NAME", name) + rest


RECIPE = brief_recipe("bench", """\
filters:
  - {type: min_words, min: 2}
outputs:
  - {format: llava, path: train.json}
report:
  indicators: {response: false}  # measured separately: it loads an embedding model
""")


def make(root: Path, n_samples: int) -> Path:
    from PIL import Image

    n_images = max(1, n_samples // 5)
    (root / "images").mkdir(parents=True)
    first = root / "images" / "000000000001.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(first)
    images, anns = [], []
    for i in range(1, n_images + 1):
        name = f"{i:012d}.png"
        if i > 1:
            os.link(first, root / "images" / name)
        images.append({"id": i, "file_name": name, "width": 64, "height": 48})
        for k in range(5):
            anns.append({"id": len(anns) + 1, "image_id": i,
                         "caption": f"A red square number {i} seen from angle {k} on a table."})
    (root / "captions.json").write_text(json.dumps({"images": images, "annotations": anns}))
    (root / "recipe.yaml").write_text(RECIPE)
    return root / "recipe.yaml"


def timed(cmd: list[str], cwd: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    vlitc = [sys.executable, "-m", "vlitc.cli.main"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        recipe = make(root, args.samples)
        build = [*vlitc, "build", str(recipe), "--quiet", "--out", "out", "--cache-dir", "cache"]
        first, peak = timed(build, root)
        manifest = json.loads((root / "out" / "manifest.json").read_text())
        n = manifest["outputs"][0]["records"]
        rows: dict[str, list[float]] = {"python -c pass": [], "import vlitc.cli.main": [], "no-op build": []}
        for _ in range(args.repeat):  # interleaved, so machine noise hits all three alike
            rows["python -c pass"].append(timed([sys.executable, "-c", "pass"], root)[0])
            rows["import vlitc.cli.main"].append(timed([sys.executable, "-c", "import vlitc.cli.main"], root)[0])
            rows["no-op build"].append(timed(build, root)[0])
        statuses = {s["status"] for s in json.loads((root / "out" / "manifest.json").read_text())["steps"]}
    print(f"recipe: {n} samples exported; first build {first:.2f}s, peak RSS {peak} MiB")
    print(f"{'command':<24}{'min s':>8}{'median s':>10}")
    for name, vals in rows.items():
        print(f"{name:<24}{min(vals):>8.3f}{statistics.median(vals):>10.3f}")
    base = statistics.median(rows["python -c pass"])
    noop = statistics.median(rows["no-op build"])
    print(f"no-op rebuild on top of interpreter start: {noop - base:.3f}s (goal < 0.5s); "
          f"ratio to interpreter start: {noop / base:.1f}x; steps after rebuild: {sorted(statuses)}")


if __name__ == "__main__":
    main()
