"""What item-level planning costs: ``vlitc plan`` of a recipe whose generating step is stale
(one in-context example edited) on cached inputs, with the per-item counts (every request
rendered and looked up in the response cache) against the same plan without them.

    python benchmarks/bench_plan.py [--images 4000] [--repeat 3]

Side by side in one run, in one process: ``plan_status(items=False)`` (the step statuses, the
baseline) and ``plan_status()`` (the same plus new/changed/cached per item), on a generated COCO
caption set with a ``generate`` task on the mock generator, built once beforehand.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_core import brief_recipe, make  # noqa: E402

REST = """\
  conv: {kind: generate, source: coco, generator: m, prompt: packs/conv, examples: 2}
generators:
  m: {provider: mock, model: mock, template: "Question:\\nWhat is it?\\n===\\nAnswer:\\nA shape."}
outputs:
  - {format: llava, path: train.json}
report:
  indicators: {response: false}
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from vlitc import api
    from vlitc.llm.context import TEMPLATES_ROOT

    root = Path(tempfile.mkdtemp(prefix="bench-plan-"))
    try:
        recipe = make(root, args.images * 5)
        recipe.write_text(brief_recipe("bench", REST))
        shutil.copytree(TEMPLATES_ROOT / "llava" / "conversation", root / "packs" / "conv")
        cache = root / "cache"
        t0 = time.perf_counter()
        api.build(recipe, out_dir=root / "out", cache_dir=cache)
        print(f"first build of {args.images} generated items: {time.perf_counter() - t0:.1f} s")
        example = root / "packs" / "conv" / "examples" / "003_response.txt"
        example.write_text(example.read_text() + "\nAnswer:\nIt is a sunny day.\n")
        times: dict[str, list[float]] = {"statuses only": [], "with items": []}
        items = None
        for _ in range(args.repeat):
            for name, flag in (("statuses only", False), ("with items", True)):
                t0 = time.perf_counter()
                _r, _p, rows = api.plan_status(recipe, cache, items=flag)
                times[name].append(time.perf_counter() - t0)
                if flag:
                    items = next(r for r in rows if r["id"] == "task:conv")["items"]
        base = statistics.median(times["statuses only"])
        full = statistics.median(times["with items"])
        print(f"items of task:conv: {items}")
        print(f"plan, statuses only (baseline): {base:.3f} s")
        print(f"plan, with item counts:         {full:.3f} s  ({full / base:.2f}x the baseline, "
              f"{(full - base) / args.images * 1e6:.0f} us per item)")
        print(f"load average: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
