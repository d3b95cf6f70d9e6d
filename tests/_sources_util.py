"""Helpers for the source tests: a context, loading a source by name, writing small files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlitc.ops import registry
from vlitc.ops.base import OpContext
from vlitc.rows import MemoryRows

FIXTURE_IMAGE_DIR = "optimum-graphcore/tests/fixtures/tests_samples/COCO"
FIXTURE_IMAGE = "000000039769.png"
FIXTURE_IMAGE_SHA256_16 = "cf6f3c4befa14873"  # from the fixtures' SOURCES.md
COCO_SAMPLES = "awesome-dataset-annotations/coco/annotations_trainval2014/annotations"


class DictStore(dict):
    """An item cache backed by a dict (the executor hands a diskcache store)."""

    def set(self, key: str, value: Any) -> None:
        self[key] = value

    def table(self, key: str) -> MemoryRows:
        """A per-file table (the executor hands a :class:`vlitc.rows.RowStore`)."""
        return self.setdefault(key, MemoryRows())


def make_ctx(recipe_dir: Path, seed: int = 1, store: DictStore | None = None,
             inputs: dict[str, list] | None = None) -> OpContext:
    return OpContext(
        seed=seed, recipe_dir=recipe_dir,
        _item_cache=(lambda ns: store) if store is not None else None,
        _row_store=(lambda ns: store) if store is not None else None,
        _inputs=(lambda ref: iter(inputs[ref])) if inputs is not None else None,
    )


def load(kind: str, params: dict, ctx: OpContext, label: str = "") -> list[dict]:
    """Validate params against the op's schema, then run the source's ``load``."""
    import jsonschema

    cls = registry.get("source", kind)
    jsonschema.validate(params, cls.params_schema)
    return list(cls(params, label or kind).load(ctx))


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_image(path: Path, size: tuple[int, int] = (64, 48), color: str = "red") -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


#: LLaVA's 90 GPT-4 answers about 30 COCO images, and the captions and boxes of those images
GPT4_QA = "LLaVA/playground/data/coco2014_val_gpt4_qa_30x3.jsonl"
GPT4_CAPS_BOXES = "LLaVA/llava/eval/table/caps_boxes_coco2014_val_80.jsonl"


def gpt4_answers_joined(fixtures_dir: Path) -> list[dict]:
    """The GPT-4 answers (a ``generic`` source) joined by COCO id with the captions and boxes
    (a ``llava`` source): one record per image, three conversations each."""
    qa = load("generic", {"file": GPT4_QA, "columns": {"image": "image", "prompt": "instruction",
                                                       "response": "output"}, "id_from": "image"},
              make_ctx(fixtures_dir), "qa")
    boxes = load("llava", {"file": GPT4_CAPS_BOXES, "id": "image", "assume_size": [640, 480]},
                 make_ctx(fixtures_dir), "boxes")
    return load("join", {"sources": ["qa", "boxes"]},
                make_ctx(fixtures_dir, inputs={"source:qa": qa, "source:boxes": boxes}), "coco")
