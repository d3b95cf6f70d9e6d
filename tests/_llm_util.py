"""Helpers for the generator-layer tests: recipe copies pointed at the demo data and a loopback
server, and a generation runner usable in a subprocess (for the kill-and-resume test)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "recipes" / "data" / "demo"

RECORD = {
    "id": "39769", "source": "coco",
    "image": {"root": "coco", "path": "000000039769.jpg", "width": 640, "height": 480},
    "captions": ["Two cats sleep on a pink couch.", "A pair of cats lying next to remotes."],
    "objects": [{"id": 1, "category": "cat", "bbox": [12.0, 52.0, 316.0, 470.0]},
                {"id": 2, "category": "cat", "bbox": [344.0, 24.0, 640.0, 372.0]},
                {"id": 3, "category": "remote", "bbox": [40.0, 72.0, 176.0, 118.0]}],
    "qas": [{"id": "q1", "question": "How many cats are there?", "answers": ["2"], "answer": "2"}],
    "ocr": [{"text": "SONY", "bbox": [40.0, 72.0, 80.0, 90.0]}],
    "meta": {},
}


def demo_recipe(name: str, tmp: Path, base_url: str, sample: int = 6, **generator) -> Path:
    """A copy of ``recipes/<name>.yaml`` reading the demo scenes and calling ``base_url``."""
    data = yaml.safe_load((ROOT / "recipes" / f"{name}.yaml").read_text())
    ann = DEMO / "annotations"
    for src in data["sources"].values():
        if src["type"] == "coco":
            src.update(images=str(DEMO / "images"), captions=str(ann / "captions_demo.json"),
                       instances=str(ann / "instances_demo.json"), sample=sample)
        elif src["type"] == "vqa_v2":
            src.update(questions=str(ann / "vqa_questions_demo.json"),
                       annotations=str(ann / "vqa_annotations_demo.json"))
    gen = data["generators"]["llm"]
    gen.update(base_url=base_url, api_key_env="VLITC_TEST_KEY", retry_backoff=0.01, **generator)
    gen.pop("rpm", None)
    gen.pop("tpm", None)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_generation(base_url: str, cache: Path, out: Path, items: int) -> None:
    """Generate ``items`` conversations through the openai provider; write the samples as JSON."""
    from vlitc.llm import session
    from vlitc.ops.base import OpContext
    from vlitc.ops.registry import get

    gens = {"llm": {"provider": "openai", "model": "fake", "base_url": base_url,
                    "max_concurrency": 8, "retry_backoff": 0.01, "timeout": 5}}
    records = [dict(RECORD, id=str(i), captions=[f"Scene number {i}.", *RECORD["captions"]])
               for i in range(items)]
    with session({"generators": gens}, cache) as s:
        ctx = OpContext(seed=7, recipe_dir=ROOT, step_id="task:conv", generators=gens,
                        _client=s.client)
        op = get("task", "generate")({"source": "coco", "generator": "llm",
                                      "prompt": "llava/conversation", "n": 2}, label="conv")
        samples = list(op.run(records, ctx))
    out.write_text(json.dumps(samples, sort_keys=True))


if __name__ == "__main__":
    run_generation(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
