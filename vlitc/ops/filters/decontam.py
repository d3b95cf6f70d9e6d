"""Decontamination: drop samples whose image or question appears in an evaluation set.

    filters:
      - type: decontaminate
        evals:
          pope: {kind: pope, file: ../shared/fixtures/POPE/output/coco/coco_pope_random.json}
          karpathy: {kind: karpathy, file: data/dataset_coco.json}        # test split ids
          vqa_test: {kind: vqa_v2, file: v2_OpenEnded_mscoco_test2015_questions.json}
          mmbench: {kind: mmbench, file: mmbench_dev_en.tsv}               # base64 images
          seed: {kind: seed_bench, file: SEED-Bench.json, images: seed_images}
          mine: {kind: file, file: eval.jsonl, columns: {image: img, question: q}}

An image matches by COCO image id (from COCO-style file names, both sides), by sha256 of its
bytes, or by perceptual hash within ``max_distance`` bits (``imagehash``'s pHash; needs the
eval images: an ``images`` folder, or the base64 images MMBench ships). A question matches when
enough of its normalised word n-grams (``ngram`` words, all of a shorter question) appear in a
sample's user turns. The reason names the evaluation set and what matched.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import re
import sys
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from vlitc.errors import InputError, Location
from vlitc.ops.base import Filter, OpContext
from vlitc.ops.registry import register
from vlitc.records import Sample, images_of, user_text

EVAL_KINDS = ("pope", "karpathy", "vqa_v2", "mmbench", "seed_bench", "file")
#: COCO file names: ``COCO_val2014_000000391895.jpg`` or ``000000391895.jpg``
COCO_NAME = re.compile(r"^(?:COCO_[a-z]+\d{4}_)?(\d{12})\.\w+$", re.I)
NON_WORD = re.compile(r"[^\w]+", re.UNICODE)
#: columns of a ``kind: file`` evaluation set
COLUMNS = ("id", "image", "question")


def coco_name_id(name: str) -> str | None:
    m = COCO_NAME.match(PurePosixPath(str(name)).name)
    return str(int(m.group(1))) if m else None


def norm_words(text: str) -> list[str]:
    """Lower-cased words without punctuation, the image placeholder removed."""
    return [w for w in NON_WORD.sub(" ", text.replace("<image>", " ").lower()).split() if w]


def grams(toks: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)}


class EvalSet:
    """What one evaluation set holds: image ids, image hashes and questions (as n-grams)."""

    def __init__(self, name: str, ngram: int):
        self.name, self.ngram = name, ngram
        self.image_ids: set[str] = set()
        self.sha256: dict[str, str] = {}
        self.phash: Any = None  # HashIndex, built when eval images are available
        self.questions: list[tuple[str, int]] = []  # (text, number of its n-grams)
        self.index: dict[tuple[str, ...], list[int]] = {}
        self.sizes: set[int] = set()

    def add_question(self, text: str, min_words: int) -> None:
        toks = norm_words(text)
        if len(toks) < min_words:
            return
        n = min(self.ngram, len(toks))
        gs = grams(toks, n)
        qi = len(self.questions)
        self.questions.append((text.strip(), len(gs)))
        self.sizes.add(n)
        for g in gs:
            self.index.setdefault(g, []).append(qi)

    def add_image_name(self, name: str) -> None:
        cid = coco_name_id(name)
        if cid is not None:
            self.image_ids.add(cid)

    def add_image_facts(self, facts: dict | None, label: str) -> None:
        from vlitc.quality.imagefacts import HashIndex

        if facts is None:
            return
        self.sha256.setdefault(facts["sha256"], label)
        if facts.get("phash"):
            if self.phash is None:
                self.phash = HashIndex()
            self.phash.add(facts["phash"], label)

    def question_match(self, toks: list[str], min_overlap: float) -> tuple[str, float] | None:
        """The evaluation question most covered by a text's n-grams, if at least ``min_overlap``."""
        hits: dict[int, int] = {}
        for n in self.sizes:
            for g in grams(toks, n):
                for qi in self.index.get(g, ()):  # a key's length is its question's n
                    hits[qi] = hits.get(qi, 0) + 1
        best = None
        for qi, h in hits.items():
            share = h / self.questions[qi][1]
            if share >= min_overlap and (best is None or share > best[1]):
                best = (self.questions[qi][0], share)
        return best


def _rows_json(path: Path, keys: tuple[str, ...]) -> list[dict]:
    from vlitc.ops.sources._common import read_items

    return [r for _, r in read_items(path, keys) if isinstance(r, dict)]


def _tsv_rows(path: Path) -> list[dict]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # MMBench cells hold whole base64 images
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh, delimiter="\t"))
    except (csv.Error, UnicodeDecodeError) as e:
        raise InputError(f"malformed TSV: {e}", Location(str(path))) from None


def load_eval(name: str, spec: dict, ctx: OpContext, params: dict) -> EvalSet:
    """Read one evaluation set as its ``kind`` publishes it."""
    from vlitc.ops.sources._common import resolve_file

    kind = spec["kind"]
    files = spec["file"] if isinstance(spec["file"], list) else [spec["file"]]
    ev = EvalSet(name, params["ngram"])
    min_words = params["min_question_words"]
    phash = params["phash"]
    images = ctx.resolve(spec["images"]) if spec.get("images") else None
    if images is not None and not images.is_dir():
        raise InputError(f"evals.{name}.images: folder not found", Location(str(images)))
    cols = {"image": "image", "question": "question", **(spec.get("columns") or {})}
    splits = set(spec.get("splits") or ["test"])
    for f in files:
        path = resolve_file(ctx, f, f"evals.{name}.file")
        if kind == "mmbench" or path.suffix.lower() == ".tsv":
            rows = _tsv_rows(path)
        elif kind in ("vqa_v2", "seed_bench"):
            rows = _rows_json(path, ("questions",))
        elif kind == "karpathy":
            rows = [r for r in _rows_json(path, ("images",)) if r.get("split") in splits]
        else:
            rows = _rows_json(path, ("data", "questions", "annotations"))
        for r in rows:
            _add_row(ev, kind, r, cols, min_words, images, phash, ctx)
    return ev


def _add_row(ev: EvalSet, kind: str, r: dict, cols: dict, min_words: int, images: Path | None,
             phash: bool, ctx: OpContext) -> None:
    from vlitc.quality.imagefacts import facts_of_bytes, facts_of_file

    if kind == "pope":
        question, image = r.get("text"), r.get("image")
    elif kind == "karpathy":
        question, image = None, r.get("filename")
        if r.get("cocoid") is not None:
            ev.image_ids.add(str(int(r["cocoid"])))
    elif kind == "vqa_v2":
        question, image = r.get("question"), None
        if r.get("image_id") is not None:
            ev.image_ids.add(str(int(r["image_id"])))
    elif kind == "seed_bench":
        question, image = r.get("question"), r.get("data_id")
    elif kind == "mmbench":
        question, image = r.get("question"), None
        if r.get("image") and len(r["image"]) > 64:  # a base64 image, not a path
            try:
                data = base64.b64decode(r["image"], validate=False)
            except ValueError:
                data = b""
            ev.add_image_facts(facts_of_bytes(data, phash), f"row {r.get('index', '?')}")
    else:
        question, image = r.get(cols["question"]), r.get(cols["image"])
    if isinstance(question, str):
        ev.add_question(question, min_words)
    if isinstance(image, str) and image:
        ev.add_image_name(image)
        if images is not None:
            ev.add_image_facts(facts_of_file(images / image, phash, _cache(ctx)), image)


def _cache(ctx: OpContext) -> Any:
    from vlitc.quality.imagefacts import FACTS_NS

    try:
        return ctx.item_cache(FACTS_NS)
    except RuntimeError:
        return None


#: evaluation sets read in this process, by what they were read from (files' size and mtime)
_LOADED: dict[str, EvalSet] = {}


EVAL_SCHEMA = {
    "type": "object",
    "properties": {
        "kind": {"enum": list(EVAL_KINDS)},
        "file": {"oneOf": [{"type": "string", "minLength": 1},
                           {"type": "array", "items": {"type": "string", "minLength": 1},
                            "minItems": 1}]},
        "images": {"type": "string", "minLength": 1,
                   "description": "folder of the set's images (for sha256 and perceptual hashes)"},
        "columns": {"type": "object",
                    "properties": {k: {"type": "string", "minLength": 1} for k in COLUMNS},
                    "additionalProperties": False,
                    "description": "kind: file: which columns hold the image and the question"},
        "splits": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                   "description": "kind: karpathy: the splits held out (default [test])"},
    },
    "required": ["kind", "file"],
    "additionalProperties": False,
}


@register("filter", "decontaminate")
class DecontaminateFilter(Filter):
    """Drop samples whose image or question appears in an evaluation set the recipe names:
    POPE files, COCO Karpathy splits (test ids), VQA v2 questions, MMBench TSV (base64 images),
    SEED-Bench JSON, or any file through a column mapping (``kind: file``).

    Images match by COCO image id (COCO-style file names on both sides), by sha256, or by
    perceptual hash within ``max_distance`` bits (``imagehash`` pHash; needs the set's images:
    an ``images`` folder or MMBench's embedded ones). Questions match when at least
    ``min_overlap`` of an evaluation question's normalised word ``ngram``-grams (all its words
    when shorter) appear in the sample's user turns; questions under ``min_question_words``
    words are not compared. ``check`` chooses image, question or both. The report and the card
    list the removals per evaluation set (the reason names the set and what matched).
    Reads: image, turns (user). Writes: stats.contaminated.
    """

    version = 1
    reads = ("image", "turns")
    writes = ("meta.stats",)
    params_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "evals": {"type": "object", "minProperties": 1, "additionalProperties": EVAL_SCHEMA},
            "check": {"type": "array", "items": {"enum": ["image", "question"]}, "minItems": 1,
                      "uniqueItems": True, "default": ["image", "question"]},
            "ngram": {"type": "integer", "minimum": 2, "maximum": 20, "default": 8},
            "min_overlap": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.8},
            "min_question_words": {"type": "integer", "minimum": 1, "default": 4},
            "phash": {"type": "boolean", "default": True},
            "max_distance": {"type": "integer", "minimum": 0, "maximum": 32, "default": 4},
        },
        "required": ["evals"],
        "additionalProperties": False,
    }

    def files(self, ctx: OpContext) -> list[Path]:
        out = []
        for spec in self.params["evals"].values():
            out += [ctx.resolve(f) for f in (spec["file"] if isinstance(spec["file"], list)
                                             else [spec["file"]])]
        return out

    def eval_sets(self, ctx: OpContext) -> list[EvalSet]:
        """The evaluation sets, each read once per process (again when its files change)."""
        out = []
        for name, spec in sorted(self.params["evals"].items()):
            digest = hashlib.sha256(json.dumps(
                [name, spec, str(ctx.recipe_dir),
                 {k: self.params.get(k) for k in ("ngram", "min_question_words", "phash")}],
                sort_keys=True).encode())
            for f in self.files(ctx):
                if f.is_file():
                    st = f.stat()
                    digest.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
            key = digest.hexdigest()
            if key not in _LOADED:
                _LOADED[key] = load_eval(name, spec, ctx, self.params)
            out.append(_LOADED[key])
        return out

    def measure(self, samples: list[Sample], ctx: OpContext) -> list[dict]:
        evs = self.eval_sets(ctx)
        check = set(self.params["check"])
        want_phash = self.params["phash"] and any(e.phash for e in evs)
        cache = _cache(ctx)
        out = []
        for s in samples:
            found: list[dict] = []
            if "image" in check:
                found += self._image_matches(s, evs, want_phash, cache, ctx)
            if "question" in check:
                toks = norm_words(user_text(s))
                for ev in evs:
                    m = ev.question_match(toks, self.params["min_overlap"])
                    if m is not None:
                        found.append({"eval": ev.name, "by": "question", "match": m[0],
                                      "overlap": round(m[1], 3)})
            out.append({"contaminated": found})
        return out

    def _image_matches(self, s: Sample, evs: list[EvalSet], want_phash: bool, cache: Any,
                       ctx: OpContext) -> list[dict]:
        from vlitc.quality.imagefacts import facts_of_file

        out: list[dict] = []
        named = (s.get("meta") or {}).get("image_file")  # imported without reading the image
        for name in ([] if images_of(s) else named if isinstance(named, list) else [named] if named else []):
            cid = coco_name_id(str(name))
            out += [{"eval": ev.name, "by": "image id", "match": cid}
                    for ev in evs if cid is not None and cid in ev.image_ids]
        for img in images_of(s):
            cid = coco_name_id(str(img.get("path", "")))
            facts = None
            if want_phash or (img.get("sha256") is None and any(e.sha256 for e in evs)):
                try:
                    facts = facts_of_file(ctx.image_path(img), want_phash, cache, img.get("sha256"))
                except KeyError:
                    facts = None
            sha = img.get("sha256") or (facts or {}).get("sha256")
            for ev in evs:
                if cid is not None and cid in ev.image_ids:
                    out.append({"eval": ev.name, "by": "image id", "match": cid})
                elif sha and sha in ev.sha256:
                    out.append({"eval": ev.name, "by": "sha256", "match": ev.sha256[sha]})
                elif facts and facts.get("phash") and ev.phash is not None:
                    near = ev.phash.nearest(facts["phash"], self.params["max_distance"])
                    if near is not None:
                        out.append({"eval": ev.name, "by": "perceptual hash",
                                    "match": near[0], "distance": near[1]})
        return out

    def keep(self, stats: dict) -> str | None:
        found = stats.get("contaminated") or []
        if not found:
            return None
        parts = []
        for f in found:
            what = f"{f['by']} {f['match']!r}"
            if "overlap" in f:
                what += f" ({f['overlap']:.0%} of its {self.params['ngram']}-grams)"
            if "distance" in f:
                what += f" (distance {f['distance']})"
            parts.append(f"{f['eval']}: {what}")
        return "in evaluation set " + "; ".join(parts)
