"""Literal records and a context factory shared by the task and pool tests."""

from __future__ import annotations

from pathlib import Path

from vlitc.ops.base import OpContext
from vlitc.ops.registry import get
from vlitc.records import image_record

IMG = {"root": "coco", "path": "000000000001.jpg", "width": 640, "height": 480}


def ctx(tmp_path: Path | None = None, seed: int = 1, pools: dict | None = None,
        inputs: dict | None = None, recipe: dict | None = None, client=None) -> OpContext:
    """An OpContext whose ``input(ref)`` serves ``inputs[ref]`` and pool records from ``pools``."""
    data = dict(inputs or {})
    for name, templates in (pools or {}).items():
        data[f"pool:{name}"] = [{"template": t} for t in templates]
    return OpContext(
        seed=seed, recipe_dir=tmp_path or Path("."), recipe=recipe or {},
        _inputs=lambda ref: iter(data[ref]),
        _client=(lambda name: client) if client is not None else None,
    )


def task(kind: str, label: str = "t", **params):
    params.setdefault("source", "coco")
    return get("task", kind)(params, label)


def cats_record(rid: str = "1") -> dict:
    return image_record(
        rid, "coco", dict(IMG),
        captions=["two cats sleep on a couch", "a pair of cats resting", "cats on a pink sofa"],
        objects=[
            {"id": 1, "category": "cat", "bbox": [10.0, 20.0, 210.0, 220.0], "iscrowd": False},
            {"id": 2, "category": "cat", "bbox": [300.0, 40.0, 500.0, 300.0], "iscrowd": False},
            {"id": 3, "category": "couch", "bbox": [0.0, 100.0, 640.0, 480.0], "iscrowd": False},
            {"id": 4, "category": "person", "bbox": [600.0, 0.0, 640.0, 50.0], "iscrowd": True},
        ],
        qas=[{"id": "q1", "question": "How many cats are there?", "answers": ["2", "2", "two"],
              "answer": "2", "answer_type": "number"},
             {"id": "q2", "question": "What color is the couch?", "answers": ["pink", "red", "pink"],
              "answer_type": "other"}],
    )
