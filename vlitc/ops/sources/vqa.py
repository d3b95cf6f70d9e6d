"""Visual question answering sources: VQA v2, OK-VQA, A-OKVQA and GQA, one record per image."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vlitc.errors import InputError, Location
from vlitc.ops.base import OpContext
from vlitc.ops.registry import register
from vlitc.ops.sources._common import (
    FILE,
    FILES,
    IMAGES,
    SAMPLING,
    SPLIT,
    AnnotationSource,
    Entry,
    Issues,
    file_list,
    fit_box,
    need,
    read_items,
    read_json,
    resolve_file,
    schema,
)
from vlitc.ops.sources._vqa_eval import consensus

PATTERN = {"type": "string", "minLength": 1,
           "description": "image file name from the image id, e.g. 'COCO_val2014_{id:012d}.jpg'"}
FALLBACK_PATTERNS = ("{id:012d}.jpg", "COCO_train2014_{id:012d}.jpg", "COCO_val2014_{id:012d}.jpg",
                     "{id}.jpg", "{id:012d}.png", "{id}.png")
_SUBTYPE = re.compile(r"^(train|val|test)(-dev)?(20\d\d)$")


def image_name(pattern: str, image_id: Any, path: Path) -> str:
    """An image file name from a ``str.format`` pattern with ``{id}``; a bad pattern is located."""
    try:
        try:
            return pattern.format(id=image_id)
        except ValueError:  # an integer format ('{id:012d}') for an id given as a string
            return pattern.format(id=int(image_id))
    except (KeyError, IndexError, ValueError) as e:
        raise InputError(f"image_pattern {pattern!r} cannot format image id {image_id!r}: {e}",
                         Location(str(path)), hint="use '{id}' or '{id:012d}'") from None


def group(pairs: list[tuple[Any, Any]]) -> dict[Any, list]:
    """Group ``(image id, item)`` pairs by image id, keeping first-appearance order."""
    out: dict[Any, list] = {}
    for iid, item in pairs:
        lst = out.get(iid)
        if lst is None:
            out[iid] = [item]
        else:
            lst.append(item)
    return out


@register("source", "vqa_v2")
class VqaV2Source(AnnotationSource):
    """Load VQA v2 questions and annotations: question-answers per image, with all ten human
    answers and the consensus answer as the official evaluation scores it.
    """

    version = 1
    file_params = ("questions", "annotations")
    writes = ("id", "image", "qas")
    params_schema = schema(
        {
            "questions": FILE | {"description": "questions file (v2_OpenEnded_mscoco_*_questions.json)"},
            "annotations": FILE | {"description": "annotations file (v2_mscoco_*_annotations.json)"},
            "image_pattern": PATTERN,
            **IMAGES,
            **SAMPLING,
        },
        any_of=("questions", "annotations"),
    )

    def entries(self, ctx: OpContext, issues: Issues) -> list[Entry]:
        questions, qpath, subtype = self._questions(ctx)
        anns: dict[Any, dict] = {}
        if "annotations" in self.params:
            apath = self.path(ctx, "annotations")
            adoc = read_json(apath)
            anns = {a.get("question_id"): a for a in need(adoc, "annotations", apath)}
            subtype = subtype or adoc.get("data_subtype")
        pairs = []
        for q in questions:
            pairs.append((q.get("image_id"), (q, anns.pop(q.get("question_id"), None))))
        for a in anns.values():
            if questions:
                issues.add("annotation_without_question", a.get("question_id"))
            pairs.append((a.get("image_id"), (None, a)))
        where = qpath or self.path(ctx, "annotations")
        by_image = group(pairs)
        pattern = self.params.get("image_pattern") or self._pattern(ctx, subtype, by_image, where)
        return [Entry(str(iid), image_name(pattern, iid, where), None, None, items)
                for iid, items in by_image.items()]

    def _pattern(self, ctx: OpContext, subtype: str | None, by_image: dict, where: Path) -> str:
        """The dataset's naming (from ``data_subtype``), or, when the images folder holds files
        named otherwise, the first common COCO naming that finds the first images."""
        default = _default_pattern(subtype)
        root = self.image_root(ctx)
        if root is None or not by_image:
            return default
        probe = list(by_image)[:20]
        for pattern in dict.fromkeys([default, *FALLBACK_PATTERNS]):
            if any((root / image_name(pattern, iid, where)).is_file() for iid in probe):
                if pattern != default:
                    ctx.note("image_pattern", pattern)
                return pattern
        return default

    def _questions(self, ctx: OpContext) -> tuple[list, Path | None, str | None]:
        if "questions" not in self.params:
            return [], None, None
        qpath = self.path(ctx, "questions")
        qdoc = read_json(qpath)
        return need(qdoc, "questions", qpath), qpath, qdoc.get("data_subtype")

    def layers(self, data: Any, width: Any, height: Any, issues: Issues) -> dict:
        return {"qas": [self.qa(q, a, issues) for q, a in data]}

    def qa(self, q: dict | None, a: dict | None, issues: Issues) -> dict:
        out: dict[str, Any] = {"id": str((q or a or {}).get("question_id")),
                               "question": (q or {}).get("question")}
        if out["question"] is None:
            issues.add("question_missing", out["id"])
        if a is None:
            out.update(answers=[], answer=None, answer_type=None)
            return out
        answers = [x.get("answer", "") for x in a.get("answers") or ()]
        mc = a.get("multiple_choice_answer")
        best, agreement = consensus(answers, mc)
        out.update(answers=answers, answer=best, agreement=agreement, mc_answer=mc,
                   answer_type=a.get("answer_type"), question_type=a.get("question_type"))
        return out


def _default_pattern(subtype: str | None) -> str:
    """VQA v2 names COCO 2014/2015 images ``COCO_<subtype>_<12-digit id>.jpg``."""
    m = _SUBTYPE.match(subtype or "")
    if m:
        return f"COCO_{m.group(1)}{m.group(3)}_{{id:012d}}.jpg"
    return "{id:012d}.jpg"


@register("source", "okvqa")
class OkVqaSource(VqaV2Source):
    """Load OK-VQA (published in the VQA v2 file format): questions and ten answers per question."""


@register("source", "aokvqa")
class AOkVqaSource(AnnotationSource):
    """Load A-OKVQA: questions with choices, the correct choice, ten direct answers and rationales."""

    version = 1
    file_params = ("annotations",)
    writes = ("id", "image", "qas")
    params_schema = schema(
        {
            "annotations": FILE | {"description": "aokvqa_v1p0_<split>.json"},
            "image_pattern": PATTERN | {"default": "{id:012d}.jpg"},
            **IMAGES,
            **SAMPLING,
            **SPLIT,
        },
        required=("annotations",),
    )

    def entries(self, ctx: OpContext, issues: Issues) -> list[Entry]:
        path = self.path(ctx, "annotations")
        items = [x for _, x in read_items(path)]
        pattern = self.params["image_pattern"]
        out = []
        for iid, qs in group([(q.get("image_id"), q) for q in items]).items():
            out.append(Entry(str(iid), image_name(pattern, iid, path), None, None, qs,
                             qs[0].get("split")))
        return out

    def layers(self, data: Any, width: Any, height: Any, issues: Issues) -> dict:
        qas = []
        for q in data:
            choices = q.get("choices") or []
            idx = q.get("correct_choice_idx")
            direct = list(q.get("direct_answers") or [])
            if isinstance(idx, int) and 0 <= idx < len(choices):
                answer = choices[idx]
            else:
                answer = consensus(direct)[0] if direct else None
            qas.append({"id": str(q.get("question_id")), "question": q.get("question"),
                        "answers": direct, "answer": answer, "choices": choices,
                        "correct_choice": idx, "rationales": list(q.get("rationales") or []),
                        "difficult": bool(q.get("difficult_direct_answer", False)),
                        "answer_type": "multiple_choice" if choices else None})
        return {"qas": qas}


@register("source", "gqa")
class GqaSource(AnnotationSource):
    """Load GQA: balanced or all questions per image, and scene graphs (objects with attributes,
    relations) when given.
    """

    version = 1
    file_params = ("questions", "scene_graphs")
    writes = ("id", "image", "qas", "objects", "relations")
    params_schema = schema(
        {
            "questions": FILES | {"description": "GQA questions file(s) ({qid: {...}})"},
            "scene_graphs": FILE | {"description": "GQA scene graphs file ({imageId: {...}})"},
            "image_pattern": PATTERN | {"default": "{id}.jpg"},
            **IMAGES,
            **SAMPLING,
        },
        any_of=("questions", "scene_graphs"),
    )

    def entries(self, ctx: OpContext, issues: Issues) -> list[Entry]:
        pairs = []
        for f in file_list(self.params.get("questions") or []):
            path = resolve_file(ctx, f, "questions")
            doc = read_json(path)
            if not isinstance(doc, dict):
                raise InputError("expected an object of questions by id", Location(str(path), 1, 1))
            pairs += [(q.get("imageId"), (qid, q)) for qid, q in doc.items()]
        graphs: dict = {}
        if "scene_graphs" in self.params:
            graphs = read_json(self.path(ctx, "scene_graphs"))
        by_image = group(pairs)
        for iid in graphs:
            by_image.setdefault(iid, [])
        pattern = self.params["image_pattern"]
        where = Path(self.params.get("scene_graphs") or file_list(self.params["questions"])[0])
        out = []
        for iid, qs in by_image.items():
            g = graphs.get(iid) or {}
            out.append(Entry(str(iid), image_name(pattern, iid, where), g.get("width"),
                             g.get("height"), (qs, g)))
        return out

    def layers(self, data: Any, width: Any, height: Any, issues: Issues) -> dict:
        qs, graph = data
        out: dict[str, Any] = {}
        if "questions" in self.params:
            out["qas"] = [{"id": str(qid), "question": q.get("question"),
                           "answers": [q.get("answer")], "answer": q.get("answer"),
                           "full_answer": q.get("fullAnswer"),
                           "answer_type": (q.get("types") or {}).get("structural"),
                           "question_type": (q.get("types") or {}).get("detailed")}
                          for qid, q in qs]
        if "scene_graphs" in self.params:
            out["objects"], out["relations"] = graph_layers(graph, width, height, issues)
        return out


def graph_layers(graph: dict, width: Any, height: Any, issues: Issues) -> tuple[list, list]:
    """GQA scene-graph objects (``x, y, w, h`` pixels) and relations as record layers."""
    objects: list[dict] = []
    index: dict[Any, int] = {}
    rels: list[dict] = []
    for oid, o in (graph.get("objects") or {}).items():
        box = fit_box([o.get("x", 0), o.get("y", 0), o.get("x", 0) + o.get("w", 0),
                       o.get("y", 0) + o.get("h", 0)], width, height, issues, oid)
        if box is None:
            continue
        index[oid] = len(objects)
        objects.append({"id": oid, "category": o.get("name"), "bbox": box,
                        "attributes": list(o.get("attributes") or []), "iscrowd": False})
    for oid, o in (graph.get("objects") or {}).items():
        for r in o.get("relations") or []:
            if oid in index and r.get("object") in index:
                rels.append({"subject": index[oid], "predicate": r.get("name"),
                             "object": index[r["object"]]})
    return objects, rels
