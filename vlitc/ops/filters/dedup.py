"""Deduplication: exact (normalised text hash), near-duplicate (MinHash LSH) and semantic
(all-MiniLM-L6-v2 cosine), within one image, one task, or the whole build."""

from __future__ import annotations

import hashlib
import re
from typing import Any, ClassVar

from vlitc.ops.base import Filter, OpContext
from vlitc.ops.registry import register
from vlitc.records import IMAGE_TOKEN, Sample, assistant_text

NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
EMBED_NS = "minilm-embedding"
EMBED_MODEL = "all-MiniLM-L6-v2"


def sample_text(s: Sample, field: str) -> str:
    """The text compared: the answers only, or every turn."""
    if field == "assistant":
        return assistant_text(s)
    return "\n".join(str(t.get("content", "")).replace(IMAGE_TOKEN, "") for t in s.get("turns") or [])


def normalise(text: str) -> str:
    """Lower case, punctuation and spacing folded: "A cat!" and "a  cat" are the same text."""
    return NON_WORD.sub(" ", text.lower()).strip()


def scope_key(s: Sample, scope: str) -> str:
    if scope == "global":
        return ""
    if scope == "task":
        return str(s.get("task", ""))
    img = s.get("image") or {}
    if not img:
        return f"id:{s.get('id')}"  # a text-only sample is its own scope
    return img.get("sha256") or f"{img.get('root')}/{img.get('path')}"


def groups_of(samples: list[Sample], scope: str, among: list[int] | None = None) -> list[list[int]]:
    """Indices grouped by scope, each group in input order (``among`` restricts the indices)."""
    out: dict[str, list[int]] = {}
    for i in range(len(samples)) if among is None else among:
        out.setdefault(scope_key(samples[i], scope), []).append(i)
    return list(out.values())


def exact_firsts(norm: list[str], groups: list[list[int]]) -> list[int]:
    """For each index, the first index in its group with the same normalised text, or -1."""
    first = [-1] * len(norm)
    for group in groups:
        seen: dict[str, int] = {}
        for i in group:
            h = hashlib.sha1(norm[i].encode()).hexdigest()
            if h in seen:
                first[i] = seen[h]
            else:
                seen[h] = i
    return first


def _batch(cache: Any):
    """A single transaction on a diskcache store (a no-op for other stores)."""
    import contextlib

    return cache.transact() if hasattr(cache, "transact") else contextlib.nullcontext()


def cached_embeddings(texts: list[str], ctx: OpContext, batch_size: int) -> Any:
    """Embeddings of ``texts``, read from and written to the item cache (one entry per text)."""
    import numpy as np

    from vlitc.quality.embeddings import embed

    try:
        cache = ctx.item_cache(EMBED_NS)
    except RuntimeError:
        cache = None
    keys = [hashlib.sha1(f"{EMBED_MODEL}\0{t}".encode()).hexdigest() for t in texts]
    out = np.zeros((len(texts), 384), dtype=np.float32)
    missing = []
    with _batch(cache):
        hits = [cache.get(k) if cache is not None else None for k in keys]
    for i, hit in enumerate(hits):
        if hit is None:
            missing.append(i)
        else:
            out[i] = np.frombuffer(hit, dtype=np.float16)
    ctx.count("embedding_cache_hits", len(texts) - len(missing))
    if missing:
        fresh = embed([texts[i] for i in missing], batch_size=batch_size)
        out[missing] = fresh
        if cache is not None:
            with _batch(cache):  # one transaction, not one commit per text
                for i, row in zip(missing, fresh, strict=True):
                    cache.set(keys[i], row.astype(np.float16).tobytes())
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


#: the similarity a pair must reach to count as duplicates, per method, when no threshold is set
METHOD_THRESHOLDS = {"exact": 1.0, "minhash": 0.8, "semantic": 0.95}


@register("filter", "dedup")
class DedupFilter(Filter):
    """Drop duplicates, keeping the first occurrence in input order: ``exact`` (same text after
    folding case, punctuation and spacing), ``minhash`` (estimated word-shingle Jaccard at least
    ``threshold``, MinHash LSH) or ``semantic`` (all-MiniLM-L6-v2 cosine at least ``threshold``),
    compared within ``scope``: one image, one task, or the whole build.

    A sample is dropped when an earlier sample in its scope is that similar; the reason names the
    earliest such sample. Exact copies are found first, so near-duplicate search sees each text
    once. Embeddings are cached per text. Reads: turns, image, task. Writes: stats.dup_of.
    """

    version = 1
    scope = "dataset"
    reads = ("turns", "image", "task")
    writes = ("meta.stats",)
    params_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "method": {"enum": ["exact", "minhash", "semantic"], "default": "exact"},
            "scope": {"enum": ["image", "task", "global"], "default": "global"},
            "field": {"enum": ["conversation", "assistant"], "default": "conversation"},
            "threshold": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "num_perm": {"type": "integer", "minimum": 16, "maximum": 1024, "default": 128},
            "ngram": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3},
            "batch_size": {"type": "integer", "minimum": 1, "default": 64},
        },
        "additionalProperties": False,
    }

    def packages(self) -> tuple[str, ...]:
        return {"minhash": ("datasketch",), "semantic": ("sentence_transformers",)}.get(
            self.params["method"], ())

    def threshold(self) -> float:
        given = self.params.get("threshold")
        return float(given if given is not None else METHOD_THRESHOLDS[self.params["method"]])

    def measure(self, samples: list[Sample], ctx: OpContext) -> list[dict]:
        import numpy as np

        method = self.params["method"]
        texts = [sample_text(s, self.params["field"]) for s in samples]
        norm = [normalise(t) for t in texts]
        groups = groups_of(samples, self.params["scope"])
        first = np.asarray(exact_firsts(norm, groups), dtype=np.int64)
        sim = np.where(first >= 0, 1.0, 0.0).astype(np.float32)
        how = ["exact" if f >= 0 else "" for f in first]
        if method != "exact":
            uniq = [i for i in range(len(samples)) if first[i] < 0 and norm[i]]
            near, nsim = self._near(method, texts, uniq, samples, ctx)
            for i, j in enumerate(uniq):
                if near[i] >= 0:
                    first[j], sim[j], how[j] = uniq[near[i]], nsim[i], method
        ctx.count("duplicates", int((first >= 0).sum()))
        return [
            {"dup_of": samples[f]["id"] if f >= 0 else None, "method": how[i] or None,
             "similarity": round(float(sim[i]), 4) if f >= 0 else None}
            for i, f in enumerate(first.tolist())
        ]

    def _near(self, method: str, texts: list[str], uniq: list[int], samples: list[Sample],
              ctx: OpContext):
        from vlitc.quality import neighbours as nb

        sub = [samples[i] for i in uniq]
        groups = groups_of(sub, self.params["scope"])
        sub_texts = [texts[i] for i in uniq]
        if method == "minhash":
            return nb.minhash_neighbours(
                sub_texts, groups, self.threshold(), self.params["num_perm"],
                self.params["ngram"], seed=1)
        emb = cached_embeddings(sub_texts, ctx, self.params["batch_size"])
        return nb.cosine_neighbours(emb, groups, self.threshold(), seed=ctx.seed)

    def keep(self, stats: dict) -> str | None:
        if stats["dup_of"] is None:
            return None
        if stats["method"] == "exact":
            return f"duplicate of {stats['dup_of']} (same text)"
        what = "estimated Jaccard" if stats["method"] == "minhash" else "cosine"
        return (f"duplicate of {stats['dup_of']} ({stats['method']}: {what} "
                f"{stats['similarity']:.2f} >= {self.threshold():.2f})")
