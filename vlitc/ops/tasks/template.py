"""The generic ``template`` task: instruction and response templates over one annotation layer.

    tasks:
      brief:
        kind: template
        source: coco
        instruction: {pool: brief}          # or {templates: ["Describe the image briefly."]}
        response: "{{ caption }}"
        per: caption                        # image | caption | qa | object | region | ocr
        selection: balanced                 # random (default) | balanced
        format: one_sentence                # a response format (vlitc.formats)

``per`` says what one sample is about and which variables the templates may read:

* ``image``   one sample per image; ``caption`` is a seeded pick among its captions
* ``caption`` one per caption: ``caption``, ``caption_index``
* ``qa``      one per question: ``question``, ``answer``, ``answers``, ``answer_type``,
  ``choices``, ``options`` (lettered choices), ``answer_letter``, ``qa``
* ``object``  one per non-crowd object: ``category``, ``bbox`` (in the box format), ``object``
* ``region``  one per region: ``phrase``, ``bbox``, ``region``
* ``ocr``     one per OCR token: ``text``, ``bbox``

Every template may also read the record-level variables (``id``, ``width``, ``height``,
``captions``, ``objects``, ``qas``, ``ocr``, ``regions``, ``categories``). A record that lacks a
variable a chosen template needs is skipped and counted (``skipped_missing_<var>``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from vlitc import formats as fmt
from vlitc.ops.base import OpContext
from vlitc.ops.registry import register
from vlitc.ops.tasks.base import (
    BASE_VARS,
    AdaptTask,
    Item,
    fitting_response,
    stable_index,
    task_schema,
)
from vlitc.records import Record, one_image
from vlitc.templating import TemplateProblem, check_variables, located_error

PER_VARS = {
    "image": frozenset({"caption"}),
    "caption": frozenset({"caption", "caption_index"}),
    "qa": frozenset({"question", "answer", "answers", "answer_type", "choices", "options",
                     "answer_letter", "qa"}),
    "object": frozenset({"category", "bbox", "object"}),
    "region": frozenset({"phrase", "bbox", "region"}),
    "ocr": frozenset({"text", "bbox"}),
}


def qa_answer(qa: dict) -> str | None:
    """The answer of a question: its ``answer`` field, else the most common of ``answers``."""
    if qa.get("answer"):
        return str(qa["answer"])
    answers = [str(a.get("answer", a) if isinstance(a, dict) else a) for a in qa.get("answers") or []]
    if not answers:
        return None
    counts = Counter(answers)
    best = max(counts.values())
    return next(a for a in answers if counts[a] == best)


def box_format(form: fmt.ResponseFormat) -> fmt.BoxFormat:
    """The box encoding a task writes: its format when that is a box format, else LLaVA-1.5's."""
    return form if isinstance(form, fmt.BoxFormat) else fmt.FORMATS["bbox"]  # type: ignore[return-value]


def qa_vars(qa: dict) -> dict | None:
    answer = qa_answer(qa)
    if answer is None or not qa.get("question"):
        return None
    choices = list(qa.get("choices") or [])
    out = {"question": qa["question"], "answer": answer, "answers": qa.get("answers") or [],
           "answer_type": qa.get("answer_type", ""), "choices": choices, "qa": qa}
    if choices:
        out["options"] = fmt.MultipleChoice.options(choices)
        if answer in choices:
            out["answer_letter"] = fmt.LETTERS[choices.index(answer)]
    return out


def layer_items(per: str, rec: Record, form: fmt.ResponseFormat, seed_key: str) -> Iterator[tuple[str, dict]]:
    """``(key, variables)`` for each item of the ``per`` layer of a record."""
    if per == "image":
        caps = rec.get("captions") or []
        yield "0", ({"caption": caps[stable_index(f"{seed_key}:{rec['id']}", len(caps))]} if caps else {})
    elif per == "caption":
        for i, c in enumerate(rec.get("captions") or []):
            yield str(i), {"caption": c, "caption_index": i}
    elif per == "qa":
        for i, qa in enumerate(rec.get("qas") or []):
            v = qa_vars(qa)
            if v is not None:
                yield str(qa.get("id", i)), v
    else:
        yield from _box_items(per, rec, box_format(form))


def _box_items(per: str, rec: Record, bf: fmt.BoxFormat) -> Iterator[tuple[str, dict]]:
    img = one_image(rec)
    w, h = img.get("width"), img.get("height")
    layer = {"object": "objects", "region": "regions", "ocr": "ocr"}[per]
    for i, it in enumerate(rec.get(layer) or []):
        if per == "object" and it.get("iscrowd"):
            continue
        v: dict = {}
        if it.get("bbox") is not None and w and h:
            v["bbox"] = bf.encode(it["bbox"], w, h)
        if per == "object":
            v.update(category=it["category"], object=it)
        elif per == "region":
            v.update(phrase=it.get("phrase", ""), region=it)
        else:
            v["text"] = it.get("text", "")
        yield str(i), v


@register("task", "template")
class TemplateTask(AdaptTask):
    """Render an instruction template and a response template per record or per layer item."""

    version = 1
    params_schema = task_schema(
        sorted(fmt.FORMATS), "free", required=("instruction", "response"),
        response={"type": "string", "minLength": 1},
        per={"enum": sorted(PER_VARS), "default": "image"},
    )
    reads = ("image|captions|qas|objects|regions|ocr",)

    def variables(self) -> frozenset[str]:
        return super().variables() | PER_VARS[self.params["per"]]

    @classmethod
    def template_variables(cls) -> dict[str, frozenset[str]]:
        base = BASE_VARS | cls.provides
        return {f"instruction and response, per: {per}": base | PER_VARS[per]
                for per in sorted(PER_VARS)}

    def check(self, ctx: OpContext) -> None:
        super().check(ctx)
        check_variables([self.params["response"]], self.variables(), f"task {self.label!r} response",
                        ctx.locate_value)

    def setup(self, ctx: OpContext) -> None:
        where = f"task {self.label!r} response"
        self._response = check_variables([self.params["response"]], self.variables(), where,
                                         ctx.locate_value)[0]
        self._per = self.params["per"]
        self._seed_key = f"{ctx.seed}:{self.label}:caption"

    def items(self, rec: Record, base: dict, ctx: OpContext) -> Iterator[Item]:
        form = self.format
        resp = self._response
        for key, v in layer_items(self._per, rec, form, self._seed_key):
            if not resp.variables <= (v.keys() | base.keys()):
                ctx.count("skipped_missing_" + sorted(resp.variables - v.keys() - base.keys())[0])
                continue
            try:
                text = resp.render({**base, **v} if resp.variables - v.keys() else v)
            except TemplateProblem as e:
                raise located_error(e, f"task {self.label!r} response", ctx.locate_value) from None
            out = fitting_response(form, text, ctx)
            if out is not None:
                yield Item(key, v, out)

