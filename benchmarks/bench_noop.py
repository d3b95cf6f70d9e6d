"""Benchmark: a no-op rebuild, `vlitc build` against `dvc repro`, on the same 3-stage pipeline
over 100,000 generated caption samples (load COCO captions -> template samples -> LLaVA JSON).

    python benchmarks/bench_noop.py [--samples 100000] [--repeat 7] [--dvc /tmp/dvc/bin/dvc]

DVC is not a dependency of vlitc: install it into a separate virtual environment for the run
(``python -m venv /tmp/dvc && /tmp/dvc/bin/pip install dvc``) and pass its ``dvc``. Both tools
build once, then each no-op rebuild runs as a whole process, interleaved; both check the same
inputs (the captions file and the image folder) by size and mtime, and imports from Python's
bytecode caches as an installed tool does. Goal: vlitc >= 10x faster.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import brief_recipe, make  # noqa: E402  (the same generated data and recipe shape)

RECIPE = brief_recipe("bench", """\
outputs:
  - {format: llava, path: train.json}
report: false
""")

# the same three stages as plain scripts for DVC
STAGES = {
    "load.py": """\
import json, os
d = json.load(open("captions.json"))
names = {i["id"]: i["file_name"] for i in d["images"]}
assert all(os.path.exists(os.path.join("images", n)) for n in names.values())
recs = [{"id": a["id"], "image": names[a["image_id"]], "caption": a["caption"]} for a in d["annotations"]]
json.dump(recs, open("records.json", "w"))
""",
    "render.py": """\
import json
recs = json.load(open("records.json"))
t = ["Describe the image briefly.", "Give a short caption.", "What is shown here?"]
out = [{"id": str(r["id"]), "image": r["image"], "conversations": [
    {"from": "human", "value": "<image>\\n" + t[hash(str(r["id"])) % 3]},
    {"from": "gpt", "value": r["caption"]}]} for r in recs]
json.dump(out, open("samples.json", "w"))
""",
    "export.py": """\
import json
json.dump(json.load(open("samples.json")), open("train.json", "w"), indent=1)
""",
}

DVC_YAML = """\
stages:
  load:
    cmd: python load.py
    deps: [load.py, captions.json, images]
    outs: [records.json]
  render:
    cmd: python render.py
    deps: [render.py, records.json]
    outs: [samples.json]
  export:
    cmd: python export.py
    deps: [export.py, samples.json]
    outs: [train.json]
"""


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--dvc", default=shutil.which("dvc") or "/tmp/dvc/bin/dvc")
    args = ap.parse_args()
    if not Path(args.dvc).exists():
        raise SystemExit(f"no dvc at {args.dvc}: python -m venv /tmp/dvc && /tmp/dvc/bin/pip install dvc")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        vroot, droot = root / "vlitc", root / "dvc"
        recipe = make(vroot, args.samples)
        recipe.write_text(RECIPE)
        make(droot, args.samples)
        for name, text in STAGES.items():
            (droot / name).write_text(text)
        (droot / "dvc.yaml").write_text(DVC_YAML)
        # both tools import from bytecode caches, as installed tools do (pip writes them): a
        # checkout run with PYTHONDONTWRITEBYTECODE would compile vlitc's modules every time
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["DVC_NO_ANALYTICS"] = "1"
        dvc_env = {**env, "PATH": f"{Path(args.dvc).parent}{os.pathsep}{env.get('PATH', '')}"}
        for cmd in (["git", "init", "-q"], [args.dvc, "init", "-q"], [args.dvc, "config", "core.autostage", "false"]):
            timed(cmd, droot, dvc_env)
        build = [sys.executable, "-m", "vlitc.cli.main", "build", str(recipe), "--quiet", "--out", "out",
                 "--cache-dir", "cache"]
        first_v = timed(build, vroot, env)
        first_d = timed([args.dvc, "repro", "-q"], droot, dvc_env)
        rows: dict[str, list[float]] = {"python -c pass": [], "vlitc build (no-op)": [], "dvc repro (no-op)": []}
        for _ in range(args.repeat):  # interleaved: machine noise hits every row alike
            rows["python -c pass"].append(timed([sys.executable, "-c", "pass"], vroot, env))
            rows["vlitc build (no-op)"].append(timed(build, vroot, env))
            rows["dvc repro (no-op)"].append(timed([args.dvc, "repro", "-q"], droot, dvc_env))
        steps = {s["status"] for s in json.loads((vroot / "out" / "manifest.json").read_text())["steps"]}
        n = json.loads((vroot / "out" / "manifest.json").read_text())["outputs"][0]["records"]
    print(f"{n} samples; first builds: vlitc {first_v:.1f}s, dvc {first_d:.1f}s; vlitc steps after: {sorted(steps)}")
    print(f"{'command':<24}{'min s':>8}{'median s':>10}")
    for name, vals in rows.items():
        print(f"{name:<24}{min(vals):>8.3f}{statistics.median(vals):>10.3f}")
    v, d = statistics.median(rows["vlitc build (no-op)"]), statistics.median(rows["dvc repro (no-op)"])
    print(f"no-op rebuild: vlitc is {d / v:.1f}x faster than dvc repro (goal >= 10x)")


if __name__ == "__main__":
    main()
