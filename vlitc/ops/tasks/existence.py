"""Object existence (POPE): yes/no questions about annotated objects and sampled absent ones.

Positives name categories annotated in the image (non-crowd). Negatives are sampled as POPE
defines them: ``random`` (uniform over the dataset's categories), ``popular`` (the most frequent
categories) or ``adversarial`` (the categories that co-occur most with the image's objects).
A negative never names a category annotated in the image, crowd regions included.
"""

from __future__ import annotations

from collections.abc import Iterator

from vlitc.ops.base import OpContext
from vlitc.ops.registry import register
from vlitc.ops.tasks.base import AdaptTask, Item, rng_for, task_schema
from vlitc.ops.tasks.objects import CategoryStats, article, present
from vlitc.records import Record


@register("task", "existence")
class ObjectExistence(AdaptTask):
    """POPE-style yes/no object-existence questions with random, popular or adversarial negatives."""

    version = 1
    default_pool = "existence"
    provides = frozenset({"category", "article"})
    required = (frozenset({"category"}),)
    reads = ("image", "objects")
    params_schema = task_schema(
        ["yes_no", "short"], "yes_no",
        negatives={"enum": ["random", "popular", "adversarial"], "default": "random"},
        per_image={"type": "integer", "minimum": 1, "default": 3},
        categories={"type": "array", "items": {"type": "string"}, "minItems": 1},
    )

    def setup(self, ctx: OpContext) -> None:
        self._stats = CategoryStats(ctx.input(f"source:{self.params['source']}"))
        self._vocab = sorted(set(self.params.get("categories") or self._stats.vocabulary()))

    def negatives(self, rec: Record, k: int, ctx: OpContext) -> list[str]:
        """``k`` absent categories by the configured strategy (never an annotated category)."""
        have = present(rec)
        strategy = self.params["negatives"]
        vocab = set(self._vocab)
        if strategy == "random":
            cands = [c for c in self._vocab if c not in have]
            rng = rng_for(ctx, self.label, "neg", rec["id"])
            return rng.sample(cands, min(k, len(cands)))
        ranked = (self._stats.popular() if strategy == "popular"
                  else self._stats.cooccurring(have) + self._stats.popular())
        out: list[str] = []
        for c in ranked:
            if c not in have and c in vocab and c not in out:
                out.append(c)
            if len(out) == k:
                break
        return out

    def items(self, rec: Record, base: dict, ctx: OpContext) -> Iterator[Item]:
        k = int(self.params["per_image"])
        positives = sorted({o["category"] for o in rec.get("objects") or [] if not o.get("iscrowd")})
        if not positives:
            return
        rng = rng_for(ctx, self.label, "pos", rec["id"])
        positives = rng.sample(positives, min(k, len(positives)))
        negatives = self.negatives(rec, len(positives), ctx)
        strategy = self.params["negatives"]
        yes, no = self.format.answer("yes"), self.format.answer("no")
        for cat in positives:
            yield Item(f"yes-{cat}", {"category": cat, "article": article(cat)}, yes,
                       {"pope": {"label": "yes", "category": cat, "negatives": strategy}})
        for cat in negatives:
            yield Item(f"no-{cat}", {"category": cat, "article": article(cat)}, no,
                       {"pope": {"label": "no", "category": cat, "negatives": strategy}})
