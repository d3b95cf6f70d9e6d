"""VQA tasks: short-answer questions and multiple choice with dataset or distractor choices.

Multiple choice takes the question's own ``choices`` when the dataset has them; otherwise it
draws distractors from the answer vocabulary of the same answer type (read in a first pass over
the source), never one of the question's acceptable answers.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator

from vlitc import formats as fmt
from vlitc.ops.base import OpContext
from vlitc.ops.registry import register
from vlitc.ops.tasks.base import (
    AdaptTask,
    Item,
    fitting_response,
    rng_for,
    task_schema,
)
from vlitc.ops.tasks.template import qa_answer
from vlitc.records import Record

QA_VARS = frozenset({"question", "answer_type"})


def acceptable(qa: dict) -> set[str]:
    """Every answer a question accepts (normalised), so no distractor is secretly right."""
    out = {str(a.get("answer", a) if isinstance(a, dict) else a).strip().lower()
           for a in qa.get("answers") or []}
    if qa.get("answer"):
        out.add(str(qa["answer"]).strip().lower())
    return out


_ANSWER_TYPES = {"type": "array", "items": {"type": "string"}, "minItems": 1}


class _QATask(AdaptTask):
    provides = QA_VARS
    required = (frozenset({"question"}),)
    reads = ("image", "qas")

    def questions(self, rec: Record) -> Iterator[tuple[str, dict, str]]:
        """``(key, qa, answer)`` for each usable question of the record."""
        types = self.params.get("answer_types")
        for i, qa in enumerate(rec.get("qas") or []):
            answer = qa_answer(qa)
            if not qa.get("question") or answer is None:
                continue
            if types and qa.get("answer_type") not in types:
                continue
            yield str(qa.get("id", i)), qa, answer


@register("task", "vqa")
class ShortAnswerVQA(_QATask):
    """Short-answer VQA: the question, LLaVA-1.5's short-answer prompt, the (majority) answer."""

    version = 1
    default_pool = "vqa_short"
    params_schema = task_schema(["short", "free", "yes_no"], "short", answer_types=_ANSWER_TYPES)

    def items(self, rec: Record, base: dict, ctx: OpContext) -> Iterator[Item]:
        form = self.format
        for key, qa, answer in self.questions(rec):
            out = fitting_response(form, answer, ctx)
            if out is not None:
                yield Item(key, {"question": qa["question"],
                                 "answer_type": qa.get("answer_type", "")}, out)


@register("task", "vqa_mc")
class MultipleChoiceVQA(_QATask):
    """Multiple-choice VQA: lettered options, the answer is the correct option's letter."""

    version = 1
    default_pool = "vqa_multiple_choice"
    provides = QA_VARS | {"options"}
    params_schema = task_schema(
        ["multiple_choice"], "multiple_choice", answer_types=_ANSWER_TYPES,
        choices={"enum": ["dataset", "distractors", "auto"], "default": "auto"},
        n_choices={"type": "integer", "minimum": 2, "maximum": 26, "default": 4},
        vocabulary={"type": "integer", "minimum": 10, "default": 300},
    )

    def setup(self, ctx: OpContext) -> None:
        """Read the answer vocabulary per answer type (most frequent first) in a first pass."""
        self._vocab: dict[str, list[str]] = {}
        if self.params["choices"] == "dataset":
            return
        counts: dict[str, Counter] = defaultdict(Counter)
        for rec in ctx.input(f"source:{self.params['source']}"):
            for _, qa, answer in self.questions(rec):
                counts[qa.get("answer_type", "")][answer.strip()] += 1
        top = int(self.params["vocabulary"])
        self._vocab = {t: [a for a, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]
                       for t, c in counts.items()}

    def choices_for(self, key: str, rec: Record, qa: dict, answer: str, ctx: OpContext) -> list[str] | None:
        mode = self.params["choices"]
        if qa.get("choices") and mode in ("dataset", "auto"):
            return list(qa["choices"]) if answer in qa["choices"] else None
        if mode == "dataset":
            return None
        n = int(self.params["n_choices"])
        bad = acceptable(qa)
        pool = [a for a in self._vocab.get(qa.get("answer_type", ""), []) if a.lower() not in bad]
        if not pool:
            return None
        rng = rng_for(ctx, self.label, rec["id"], key)
        out = rng.sample(pool, min(n - 1, len(pool))) + [answer]
        rng.shuffle(out)
        return out

    def items(self, rec: Record, base: dict, ctx: OpContext) -> Iterator[Item]:
        for key, qa, answer in self.questions(rec):
            choices = self.choices_for(key, rec, qa, answer, ctx)
            if not choices:
                ctx.count("skipped_no_choices")
                continue
            idx = choices.index(answer)
            yield Item(key, {"question": qa["question"], "answer_type": qa.get("answer_type", ""),
                             "options": fmt.MultipleChoice.options(choices)},
                       fmt.LETTERS[idx], {"choices": choices, "answer_index": idx})

    def instruct(self, text: str, item: Item, form: fmt.ResponseFormat) -> str:
        if item.vars["options"] not in text:
            text = f"{text}\n{item.vars['options']}"
        return form.instruct(text)
