"""Deduplication: exact (normalised text hash), near-duplicate (MinHash LSH) and semantic
(all-MiniLM-L6-v2 cosine), within one image, one task, or the whole build."""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Callable
from typing import Any, ClassVar

from vlitc.ops.base import Filter, OpContext
from vlitc.ops.registry import register
from vlitc.records import IMAGE_TOKEN, Sample, assistant_text, image_refs_key, images_of

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
    return fold(text)[0]


#: ASCII bytes lower-cased, and those that are not letters or digits (``[\W_]`` of ASCII)
#: mapped to a space
_ASCII_FOLD = bytes(ord(chr(c).lower()) if chr(c).isalnum() else 32 for c in range(128)) + bytes(range(128, 256))


def fold(text: str) -> tuple[str, list[str]]:
    """:func:`normalise`'s folded text and its words. ASCII text (the usual case) is folded
    with a byte translation table, which gives what the regular expression gives, several
    times faster."""
    if text.isascii():
        words = text.encode("ascii").translate(_ASCII_FOLD).decode("ascii").split()
        return " ".join(words), words
    norm = NON_WORD.sub(" ", text.lower()).strip()
    return norm, norm.split()


def scope_key(s: Sample, scope: str) -> str:
    if scope == "global":
        return ""
    if scope == "task":
        return str(s.get("task", ""))
    key = image_refs_key(s)
    return key or f"id:{s.get('id')}"  # a text-only sample is its own scope


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _numbered(scope: Any, index: Any) -> Any:
    """Each sample's scope (a 64-bit hash) as a group number, ``index`` wide: all in one
    group without a sort when there is one scope."""
    import numpy as np

    if not len(scope) or (scope == scope[0]).all():
        return np.zeros(len(scope), dtype=index)
    return np.unique(scope, return_inverse=True)[1].astype(index).reshape(-1)


#: samples whose exact copies are found in one sort; more are sorted in buckets of their text
#: hashes' top bits, one at a time (:func:`exact_firsts`)
EXACT_RUN = 1 << 20


def exact_firsts(gid: Any, exact: Any, index: Any, scratch: Any = None) -> Any:
    """Each sample's exact copy before it: the first sample (in input order) of the same scope
    group (``gid``) with the same text hash (``exact``), or ``-1``; ``index`` wide. Above
    :data:`EXACT_RUN` samples the hashes are sorted in buckets of their top bits (equal hashes
    share one), each sorted alone: a 10M-sample pass holds a bucket's permutation and sorted
    copies, not a 64-bit permutation and sorted copies of all of them (200 MB)."""
    import numpy as np

    from vlitc.quality.neighbours import column, release_pages

    n = len(exact)
    first = column(n, index, -1, scratch)  # a file in ``scratch`` when large
    bits = min(8, (n // EXACT_RUN).bit_length() + 1) if n > EXACT_RUN else 0
    top = np.empty(n if bits else 0, dtype=np.uint8)
    for lo in range(0, len(top), EXACT_RUN):  # each sample's bucket, a block at a time (no
        top[lo:lo + EXACT_RUN] = exact[lo:lo + EXACT_RUN] >> np.uint64(64 - bits)  # 64-bit temporary)
    for b in range(1 << bits):
        at = np.flatnonzero(top == b).astype(index) if bits else np.arange(n, dtype=index)
        if not len(at):
            continue
        e, g = exact[at], gid[at]
        order = np.lexsort((e, g)).astype(index)  # stable: equal keys keep their input order
        g, e = g[order], e[order]
        starts = np.r_[True, (g[1:] != g[:-1]) | (e[1:] != e[:-1])]
        del g, e
        order = at[order]
        head = order[starts][np.cumsum(starts, dtype=index) - 1]
        first[order[~starts]] = head[~starts]
        release_pages(first)
        del order, starts, head, at
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
        # kept at the precision the cache keeps, so a cold and a warm cache give the same values
        fresh = np.asarray(embed([texts[i] for i in missing], batch_size=batch_size)).astype(np.float16)
        out[missing] = fresh
        if cache is not None:
            with _batch(cache):  # one transaction, not one commit per text
                for i, row in zip(missing, fresh, strict=True):
                    cache.set(keys[i], row.tobytes())
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


#: the similarity a pair must reach to count as duplicates, per method, when no threshold is set
METHOD_THRESHOLDS = {"exact": 1.0, "minhash": 0.8, "semantic": 0.95, "image": 1.0}


@register("filter", "dedup")
class DedupFilter(Filter):
    """Drop duplicates, keeping the first occurrence in input order: ``exact`` (same text after
    folding case, punctuation and spacing), ``minhash`` (estimated Jaccard of the folded
    text's word ``ngram`` shingles at least ``threshold``: datasketch's MinHash with
    ``num_perm`` permutations, computed with numpy, and the LSH bands MinHashLSH picks for the
    threshold) or ``semantic`` (all-MiniLM-L6-v2 cosine at least ``threshold``),
    compared within ``scope``: one image, one task, or the whole build; or ``image``:
    near-duplicate images (perceptual hash within ``max_distance`` bits, ``imagehash``) of
    different files, in the build or per task.

    A sample is dropped when an earlier sample in its scope is that similar; the reason names the
    earliest such sample. Exact copies are found first, so near-duplicate search sees each text
    once. Embeddings are cached per text. Reads: id, turns, image, task. Writes: stats.dup_of.
    """

    version = 2  # 2: MinHash words are those of the folded text (underscores split words)
    scope = "dataset"
    reads = ("id", "turns", "image", "task")
    projected = True  # its features (and which samples are in its scope) look at these alone
    writes = ("meta.stats",)
    params_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "method": {"enum": ["exact", "minhash", "semantic", "image"], "default": "exact"},
            "scope": {"enum": ["image", "task", "global"], "default": "global"},
            "field": {"enum": ["conversation", "assistant"], "default": "conversation"},
            "threshold": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "num_perm": {"type": "integer", "minimum": 16, "maximum": 1024, "default": 128},
            "ngram": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3},
            "batch_size": {"type": "integer", "minimum": 1, "default": 64},
            "max_distance": {"type": "integer", "minimum": 0, "maximum": 32, "default": 4,
                             "description": "method image: perceptual-hash bits that may differ"},
        },
        "additionalProperties": False,
    }

    def packages(self) -> tuple[str, ...]:
        return {"semantic": ("sentence_transformers",)}.get(self.params["method"], ())

    def threshold(self) -> float:
        given = self.params.get("threshold")
        return float(given if given is not None else METHOD_THRESHOLDS[self.params["method"]])

    streams = True

    def measure(self, samples: list[Sample], ctx: OpContext) -> list[dict]:
        stat = self.measure_features(self.features(samples, ctx), ctx)
        return [dict(stat(i, s["id"])) for i, s in enumerate(samples)]  # each its own

    def features(self, samples: list[Sample], ctx: OpContext) -> dict[str, Any]:
        """Per sample: a 64-bit hash of its scope, a 64-bit hash of its folded text (exact copies), whether that
        text is empty, and its MinHash signature with its LSH band keys (``minhash``) or its
        embedding (``semantic``)."""
        import numpy as np

        if self.params["method"] == "image":
            return self._image_features(samples, ctx)
        texts = [sample_text(s, self.params["field"]) for s in samples]
        folded = [fold(t) for t in texts]
        norm = [n for n, _w in folded]
        scope = self.params["scope"]
        out: dict[str, Any] = {
            # a number, not a string, per sample: a million image scopes are not a million
            # strings in the build's process (the numbering of the scopes changes no answer)
            "scope": np.zeros(len(samples), dtype=np.uint64) if scope == "global" else
            np.fromiter((_hash64(scope_key(s, scope)) for s in samples), dtype=np.uint64, count=len(samples)),
            "exact": np.fromiter((_hash64(t) for t in norm), dtype=np.uint64, count=len(norm)),
            "empty": np.fromiter((not t for t in norm), dtype=bool, count=len(norm)),
        }
        method = self.params["method"]
        if method == "minhash":
            from vlitc.quality import neighbours as nb

            hv, has = nb.minhash_signatures(texts, self.params["num_perm"], self.params["ngram"], seed=1,
                                            words=[w for _n, w in folded])
            out.update(sig=hv, has=has,
                       bands=nb.band_keys(hv, nb.lsh_bands(self.threshold(), self.params["num_perm"])))
        elif method == "semantic":
            out["emb"] = cached_embeddings(texts, ctx, self.params["batch_size"]).astype(np.float32)
        return out

    def measure_features(self, features: dict[str, Any], ctx: OpContext) -> Callable[[int, str], dict]:
        if self.params["method"] == "image":
            return self._image_stats(features, ctx)
        import numpy as np

        exact, empty = np.asarray(features["exact"]), np.asarray(features["empty"])
        n = len(exact)
        # sample and group numbers in 32 bits: half the memory of a 10M-sample build's arrays
        index: Any = np.int32 if n < 2**31 else np.int64
        from vlitc.quality import neighbours as nb
        from vlitc.quality.neighbours import column, nonzero_where, release_pages

        scope = np.asarray(features["scope"])
        gid = _numbered(scope, index)
        release_pages(scope)  # gathered features are memory-mapped files: read once, let go
        # exact copies: the first of each run of equal (scope, text hash), in input order; the
        # columns over every sample are files in the scratch folder when there are millions
        first = exact_firsts(gid, exact, index, ctx.scratch)
        release_pages(exact)
        exact_at = nonzero_where(first, lambda block: block >= 0, index)
        sim = column(n, np.float32, 0, ctx.scratch)
        sim[exact_at] = 1.0
        release_pages(sim)
        method = self.params["method"]
        if method != "exact" and n:
            eligible = column(n, bool, False, ctx.scratch)  # no exact copy before it, some text
            step = nb.BAND_READ
            for lo in range(0, n, step):
                eligible[lo:lo + step] = (first[lo:lo + step] < 0) & ~empty[lo:lo + step]
                release_pages(eligible)
            self._near(method, features, gid, eligible, ctx, first, sim)
            del eligible
        # the duplicates alone from here (their copies, methods and similarities): the
        # columns over every sample are let go before the stats are given
        dups = nonzero_where(first, lambda block: block >= 0, index)
        how = np.where(np.isin(dups, exact_at, assume_unique=True), 1, 2).tolist()  # 1 exact, 2 near
        copy_of, sim = first[dups].tolist(), sim[dups].tolist()
        del first, exact_at
        ctx.count("duplicates", len(dups))
        needed = set(copy_of)
        names: dict[int, str] = {}
        labels = (None, "exact", method)
        ahead = [0]  # the next duplicate's place in ``dups``: the samples come in order
        at = dups.tolist()
        del dups

        unique = {"dup_of": None, "method": None, "similarity": None}  # one dict for them all

        def stat(i: int, sample_id: str) -> dict:
            if i in needed:
                names[i] = sample_id
            k = ahead[0]  # the first duplicate at or after i, while the calls come in order
            if not ((k == 0 or at[k - 1] < i) and (k == len(at) or at[k] >= i)):
                k = bisect.bisect_left(at, i)  # not called in order: found again
            if k < len(at) and at[k] == i:
                ahead[0] = k + 1
                return {"dup_of": names[copy_of[k]], "method": labels[how[k]], "similarity": round(sim[k], 4)}
            ahead[0] = k
            return unique

        return stat

    def _near(self, method: str, features: dict[str, Any], gid: Any, eligible: Any, ctx: OpContext,
              first: Any, sim: Any) -> None:
        """Each sample ``eligible`` for a near copy (no exact copy before it, some text): its
        earliest near copy (index into all samples) and the similarity, written into ``first``
        and ``sim`` where it has one (they hold ``-1`` and ``0`` at every eligible sample)."""
        import numpy as np

        from vlitc.quality import neighbours as nb

        if method == "minhash":
            has = np.asarray(features["has"])
            bands = features["bands"]  # a memory-mapped file stays one: it may be joined on the engine
            nb.banded_neighbours(features["sig"], has & eligible, gid,
                                 bands if isinstance(bands, np.ndarray) else np.asarray(bands),
                                 self.threshold(), map=ctx.map_chunks if ctx.parallel else None,
                                 out=(first, sim))
            return
        uniq = np.flatnonzero(eligible)
        groups: dict[int, list[int]] = {}
        for j, g in enumerate(gid[uniq].tolist()):
            groups.setdefault(g, []).append(j)
        near, nsim = nb.cosine_neighbours(np.asarray(features["emb"][uniq]), list(groups.values()),
                                          self.threshold(), seed=ctx.seed)
        hit = np.asarray(near) >= 0
        first[uniq[hit]] = uniq[np.asarray(near)[hit]]
        sim[uniq[hit]] = np.asarray(nsim)[hit]

    def _image_features(self, samples: list[Sample], ctx: OpContext) -> dict[str, Any]:
        """Method ``image``, per sample: its scope group, its image files and their perceptual
        hashes (``""`` for an unreadable image), each list joined by newlines."""
        from vlitc.quality.imagefacts import FACTS_NS, facts_of_file, need_imagehash

        need_imagehash()
        try:
            cache = ctx.item_cache(FACTS_NS)
        except RuntimeError:
            cache = None
        task_scope = self.params["scope"] == "task"
        groups, refs, hashes = [], [], []
        for s in samples:
            groups.append(str(s.get("task", "")) if task_scope else "")
            names, phs = [], []
            for img in images_of(s):
                try:
                    facts = facts_of_file(ctx.image_path(img), True, cache, img.get("sha256"))
                except KeyError:
                    facts = None
                if facts is None:
                    ctx.count("unreadable_image")
                names.append(f"{img.get('root')}/{img.get('path')}")
                phs.append(facts["phash"] if facts else "")
            refs.append("\n".join(names))
            hashes.append("\n".join(phs))
        return {"image_group": groups, "image_refs": refs, "image_hashes": hashes}

    def _image_stats(self, features: dict[str, Any], ctx: OpContext) -> Callable[[int, str], dict]:
        """Near-duplicate images: a sample whose image is within ``max_distance`` perceptual-hash
        bits of an earlier sample's *different* image file (in its scope) is a duplicate; samples
        on one file are not (several questions about one image are the norm)."""
        from vlitc.quality.imagefacts import HashIndex

        limit = self.params["max_distance"]
        indexes: dict[str, HashIndex] = {}
        owner: dict[str, int] = {}  # image file -> index of the first sample on it
        dup_file: dict[str, tuple[str, int]] = {}  # image file -> (earlier file, distance)
        found: dict[int, dict] = {}
        for i, (group, refs, hashes) in enumerate(zip(
                features["image_group"], features["image_refs"], features["image_hashes"],
                strict=True)):
            index = indexes.setdefault(group, HashIndex())
            for name, ph in zip(*((refs.split("\n"), hashes.split("\n")) if refs else ([], [])),
                                strict=True):
                ref = f"{group}\0{name}"
                if ref not in owner and ref not in dup_file:
                    near = index.nearest(ph, limit) if ph else None
                    if near is not None:
                        dup_file[ref] = near
                    else:
                        if ph:
                            index.add(ph, ref)
                        owner[ref] = i
                if ref in dup_file and i not in found:
                    earlier, dist = dup_file[ref]
                    found[i] = {"of": owner[earlier], "distance": dist,
                                "image": name.split("/", 1)[-1], "of_image": earlier.split("\0", 1)[1]}
        ctx.count("duplicates", len(found))
        needed = {f["of"] for f in found.values()}
        names: dict[int, str] = {}

        def stat(i: int, sample_id: str) -> dict:
            if i in needed:
                names[i] = sample_id
            f = found.get(i)
            if f is None:
                return {"dup_of": None, "method": None, "similarity": None}
            return {"dup_of": names[f["of"]], "method": "image", "similarity": None,
                    "distance": f["distance"], "image": f["image"], "of_image": f["of_image"]}

        return stat

    def keep(self, stats: dict) -> str | None:
        if stats["dup_of"] is None:
            return None
        if stats["method"] == "image":
            return (f"near-duplicate image {stats['image']} of {stats['of_image']} (sample "
                    f"{stats['dup_of']}; perceptual hash distance {stats['distance']} <= "
                    f"{self.params['max_distance']})")
        if stats["method"] == "exact":
            return f"duplicate of {stats['dup_of']} (same text)"
        what = "estimated Jaccard" if stats["method"] == "minhash" else "cosine"
        return (f"duplicate of {stats['dup_of']} ({stats['method']}: {what} "
                f"{stats['similarity']:.2f} >= {self.threshold():.2f})")
