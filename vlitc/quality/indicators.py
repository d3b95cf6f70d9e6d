"""Quality indicators of a VLIT dataset, after the review paper's §4.2 and Table 4.

* task diversity: the number of task types;
* instruction diversity: per task, the number of clusters of its instructions, found by
  Ego-Splitting (overlapping communities; connected components as both the local and the global
  partition) on the co-occurrence graph of content words after stop-word removal;
* response diversity: the log of the number of DBSCAN clusters of response embeddings
  (all-MiniLM-L6-v2 by default, cosine distance);
* object/granularity complexity: the mean number of distinct annotated objects a sample refers to;
* instruction complexity: an offline proxy, the mean number of distinct content elements per
  instruction (and the mean LLM score from 1 to 10 when a filter recorded one as ``complexity``);
* balance: the variance of per-task counts (lower is better) and their normalised entropy;
* single-sample quality, when those filters ran: mean matching degree (``clip_match`` score),
  correctness rate (``judge`` verdict: the majority of its ``votes``) and hallucination rate
  (``hallucination`` CHAIR ``rate``).

An indicator that a set is too small to measure (fewer responses than DBSCAN's ``min_samples``,
no instruction text) is ``None`` with a ``too_few`` note, never a 0 that reads as a measurement.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from fractions import Fraction
from itertools import combinations
from statistics import fmean, pvariance

from vlitc.records import IMAGE_TOKEN, Sample, assistant_text

Embed = Callable[[list[str]], "Sequence[Sequence[float]]"]

#: English function words (a compact list, fixed here so indicators never drift with a library)
STOP_WORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each either else etc ever every
few for from further get give given had has have having he her here hers herself him himself his
how i if in into is it its itself just let like may me might more most much must my myself no nor
not now of off on once only or other our ours ourselves out over own please provide same shall she
should so some such tell than that the their theirs them themselves then there these they this
those through to too under until up upon us very via was we were what when where which while who
whom whose why will with within without would you your yours yourself yourselves
""".split())

WORD = re.compile(r"[a-z][a-z0-9'-]*")
VERDICT_TRUE = frozenset({"correct", "yes", "pass", "true", "right", "accept", "keep"})
VERDICT_FALSE = frozenset({"incorrect", "no", "fail", "false", "wrong", "reject", "drop"})
#: the filter types whose stats feed the single-sample indicators, and the stats each may hold
SCORE_STATS = {"clip_match": ("score",), "judge": ("verdict", "votes"),
               "hallucination": ("rate", "chair")}
#: what a row says for an indicator the set is too small to measure
TOO_FEW = "too few samples"


def content_words(text: str) -> list[str]:
    """Lower-cased words of ``text`` without stop words, the image placeholder or 1-letter words."""
    words = WORD.findall(text.replace(IMAGE_TOKEN, " ").lower())
    return [w.strip("'-") for w in words if len(w) > 1 and w not in STOP_WORDS]


def instructions(s: Sample) -> list[str]:
    """Every user turn of a sample (each is one instruction)."""
    return [t["content"] for t in s.get("turns", []) if t.get("role") == "user"]


# -- diversity -------------------------------------------------------------------------------
def cooccurrence_graph(texts: Iterable[str]):
    """Words as nodes, an edge between two content words that occur in the same instruction."""
    graph = WordGraph()
    for text in texts:
        graph.add(text)
    return graph.graph()


class WordGraph:
    """:func:`cooccurrence_graph` built one instruction at a time: its words and word pairs
    (memory grows with the vocabulary, not with the instructions; an instruction seen lately
    is not split into words again)."""

    RECENT = 4096  # instructions remembered as seen (templates repeat)

    def __init__(self) -> None:
        self.words: set[str] = set()
        self.pairs: set[tuple[str, str]] = set()
        self._seen: dict[str, int] = {}

    def add(self, text: str) -> int:
        """Add one instruction; how many distinct content words it has."""
        known = self._seen.get(text)
        if known is not None:
            return known
        if len(self._seen) >= self.RECENT:
            self._seen.clear()
        words = sorted(set(content_words(text)))
        self.words.update(words)
        self.pairs.update(combinations(words, 2))
        self._seen[text] = len(words)
        return len(words)

    def graph(self):
        import networkx as nx

        g = nx.Graph()
        g.add_nodes_from(sorted(self.words))
        g.add_edges_from(sorted(self.pairs))
        return g


def ego_splitting_clusters(g) -> list[frozenset[str]]:
    """Overlapping clusters by Ego-Splitting (Epasto et al., 2017), connected components both in
    each ego-net (to split a node into personas) and in the persona graph (the clusters)."""
    import networkx as nx

    persona_of: dict[tuple[str, str], tuple[str, int]] = {}
    personas = nx.Graph()
    for node in sorted(g.nodes):
        ego = g.subgraph(set(g.neighbors(node)))
        parts = sorted(sorted(c) for c in nx.connected_components(ego)) or [[]]
        for i, part in enumerate(parts):
            personas.add_node((node, i))
            for nb in part:
                persona_of[(node, nb)] = (node, i)
    for u, v in g.edges:
        personas.add_edge(persona_of[(u, v)], persona_of[(v, u)])
    clusters = {frozenset(n for n, _ in comp) for comp in nx.connected_components(personas)}
    return sorted(clusters, key=lambda c: sorted(c))


def instruction_diversity(samples: Iterable[Sample]) -> dict:
    """Clusters of each task's instructions in its word co-occurrence graph, and their mean."""
    return _scan(samples).instruction_diversity()


def response_diversity(
    samples: Sequence[Sample], embed: Embed, *, eps: float = 0.2, min_samples: int = 3,
    max_samples: int = 2000, seed: int = 0,
) -> dict:
    """``log`` of the number of DBSCAN clusters of the response embeddings (cosine distance
    ``eps``); noise points form no cluster. Over ``max_samples`` responses, a seeded subset
    (see :class:`IndicatorScan`)."""
    scan = _scan(samples, max_samples=max_samples, seed=seed)
    return cluster_responses(scan.responses(), embed, eps=eps, min_samples=min_samples)


def cluster_responses(texts: list[str], embed: Embed, *, eps: float = 0.2, min_samples: int = 3) -> dict:
    """:func:`response_diversity` of the responses chosen for it."""
    import numpy as np
    from sklearn.cluster import DBSCAN

    if len(texts) < min_samples:  # DBSCAN cannot form one cluster: nothing measured
        return {"value": None, "clusters": None, "noise": None, "n": len(texts), "eps": eps,
                "min_samples": min_samples, "too_few": True}
    x = np.asarray(embed(texts), dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    # on unit vectors, cosine distance d equals squared euclidean distance / 2
    labels = DBSCAN(eps=math.sqrt(2 * eps), min_samples=min_samples).fit(x).labels_
    k = len(set(labels.tolist()) - {-1})
    return {"value": math.log(k) if k else 0.0, "clusters": k, "noise": int((labels == -1).sum()),
            "n": len(texts), "eps": eps, "min_samples": min_samples}


# -- complexity ------------------------------------------------------------------------------
def referred_objects(s: Sample) -> set[str]:
    """The distinct annotated object categories that the sample's text mentions."""
    objects = ((s.get("meta") or {}).get("annotations") or {}).get("objects") or []
    text = " ".join(t["content"] for t in s.get("turns", [])).lower()
    out = set()
    for cat in {str(o.get("category", "")).lower() for o in objects} - {""}:
        if re.search(rf"\b{re.escape(cat)}(s|es)?\b", text):
            out.add(cat)
    return out


def object_complexity(samples: Iterable[Sample]) -> dict:
    """Mean distinct annotated objects referred to (and annotated), over samples with objects."""
    return _scan(samples).object_complexity()


def instruction_complexity(samples: Iterable[Sample]) -> dict:
    """Mean distinct content elements per instruction, and the mean LLM complexity score (1-10)
    from any filter stats that carry a numeric ``complexity``."""
    return _scan(samples).instruction_complexity()


# -- balance ---------------------------------------------------------------------------------
def balance(samples: Iterable[Sample]) -> dict:
    """Per-task counts, their variance (the paper's balance index) and normalised entropy."""
    return _scan(samples).balance()


# -- single-sample quality -------------------------------------------------------------------
def filter_types_from_recipe(recipe: Mapping) -> dict[str, str]:
    """Map each filter's stats label (its ``name``, else its ``type``) to its type."""
    out = {}
    for f in recipe.get("filters") or []:
        if isinstance(f, dict) and f.get("type"):
            out[str(f.get("name") or f["type"])] = str(f["type"])
    return out


def verdict_value(v) -> float | None:
    """A judge verdict as 1 (correct) or 0 (incorrect); ``None`` when it cannot be read. A list
    is the judge's ``votes``: the majority of the readable ones decides (a tie reads as ``None``)."""
    if isinstance(v, list):
        read = [x for x in (verdict_value(x) for x in v if not isinstance(x, list)) if x is not None]
        yes, no = read.count(1.0), read.count(0.0)
        return 1.0 if yes > no else 0.0 if no > yes else None
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return 1.0 if v >= 0.5 else 0.0
    word = str(v).strip().lower()
    return 1.0 if word in VERDICT_TRUE else 0.0 if word in VERDICT_FALSE else None


def single_sample_quality(samples: Iterable[Sample], filter_types: Mapping[str, str]) -> dict:
    """Mean matching degree, correctness rate, hallucination rate (share of samples with CHAIR
    above 0) and mean CHAIR, from the stats of the filters that ran; ``None`` where none did."""
    return _scan(samples, filter_types).quality()


#: what response diversity needs beyond the core install (the ``quality`` extra)
RESPONSE_PACKAGES = ("sentence_transformers", "sklearn")


def missing_packages(modules: Sequence[str]) -> list[str]:
    """The modules of ``modules`` that are not installed (found without importing them)."""
    import importlib.util

    return [m for m in modules if importlib.util.find_spec(m) is None]


def default_embed(texts: list[str]):
    """Embed texts with all-MiniLM-L6-v2, offline (see :mod:`vlitc.quality.embeddings`)."""
    from vlitc.quality.embeddings import embed

    try:  # no model-loading progress bars in build output
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - sentence-transformers depends on transformers
        pass
    return embed(texts)


def compute(
    samples: Iterable[Sample], *, embed: Embed | None = None, response: bool = True,
    filter_types: Mapping[str, str] | None = None, eps: float = 0.2, min_samples: int = 3,
    max_samples: int = 2000, seed: int = 0,
) -> dict:
    """Every indicator for ``samples`` (seen once, as they stream past: see
    :class:`IndicatorScan`); ``response=False`` skips the embedding model."""
    return _scan(samples, filter_types, max_samples=max_samples, seed=seed).result(embed=embed, response=response, eps=eps, min_samples=min_samples)


def _scan(samples: Iterable[Sample], filter_types: Mapping[str, str] | None = None, *,
          max_samples: int = 2000, seed: int = 0) -> IndicatorScan:
    scan = IndicatorScan(filter_types, max_samples=max_samples, seed=seed)
    for s in samples:
        scan.add(s)
    return scan


class IndicatorScan:
    """Every indicator folded over the samples one at a time, in bounded memory: running counts
    and sums (exact, so that a mean is the one :func:`statistics.fmean` gives over the whole
    list), each task's instruction word graph (:class:`WordGraph`), and a seeded reservoir of
    ``max_samples`` responses for the response diversity: every response when there are no
    more, else those of the lowest seeded ranks (a hash of the seed and the sample's id), by
    sample id. No figure depends on the order the samples come in."""

    def __init__(self, filter_types: Mapping[str, str] | None = None, *, max_samples: int = 2000,
                 seed: int = 0):
        self.filter_types = filter_types or {}
        self.max_samples, self.seed = max_samples, seed
        self.n = 0
        self.tasks: Counter[str] = Counter()
        self.graphs: dict[str, WordGraph] = {}
        self.objects = [0, 0, 0]  # samples with annotated objects, objects referred to, annotated
        self.elements = [0, 0]  # content elements of all instructions, instructions
        self.llm_scores: list = [Fraction(0), 0]
        self.scores: dict[str, list] = {}  # filter type -> [exact sum, count]
        self.chair_above = 0
        self._responses: list[tuple[int, str, str]] = []  # (-rank, id, text): a bottom-k heap

    def add(self, s: Sample) -> None:
        self.n += 1
        task = s.get("task", "")
        self.tasks[task] += 1
        texts = instructions(s)
        if texts:
            graph = self.graphs.get(task)
            if graph is None:
                graph = self.graphs[task] = WordGraph()
            for text in texts:
                self.elements[0] += graph.add(text)
            self.elements[1] += len(texts)
        meta = s.get("meta") or {}
        objects = (meta.get("annotations") or {}).get("objects")
        if objects:
            self.objects[0] += 1
            self.objects[1] += len(referred_objects(s))
            self.objects[2] += len({o["category"] for o in objects})
        for label, st in (meta.get("stats") or {}).items():
            if not isinstance(st, dict):
                continue
            if isinstance(st.get("complexity"), (int, float)):
                self.llm_scores[0] += Fraction(st["complexity"])
                self.llm_scores[1] += 1
            self._score(label, st)
        text = assistant_text(s)
        if text.strip():
            self._response(str(s.get("id", self.n)), text)

    def _score(self, label: str, st: dict) -> None:
        ftype = self.filter_types.get(label, label)
        if ftype not in SCORE_STATS:
            return
        key = next((k for k in SCORE_STATS[ftype] if st.get(k) is not None), None)
        if key is None:
            return
        v = verdict_value(st[key]) if ftype == "judge" else st[key]
        if isinstance(v, (int, float)):
            acc = self.scores.setdefault(ftype, [Fraction(0), 0])
            acc[0] += Fraction(float(v))
            acc[1] += 1
            if ftype == "hallucination" and float(v) > 0:
                self.chair_above += 1

    def _response(self, sample_id: str, text: str) -> None:
        h = hashlib.blake2b(f"{self.seed}:response_diversity:{sample_id}".encode(), digest_size=8)
        entry = (-int.from_bytes(h.digest(), "big"), sample_id, text)
        if len(self._responses) < self.max_samples:
            heapq.heappush(self._responses, entry)
        elif entry[:2] > self._responses[0][:2]:  # a lower rank than the highest kept
            heapq.heapreplace(self._responses, entry)

    def responses(self) -> list[str]:
        """The responses the response diversity clusters, by sample id."""
        return [text for _r, _id, text in sorted(self._responses, key=lambda e: e[1])]

    def instruction_diversity(self) -> dict:
        per_task = {t: len(ego_splitting_clusters(g.graph())) for t, g in sorted(self.graphs.items())}
        return {"per_task": per_task, "mean": fmean(per_task.values()) if per_task else None}

    def object_complexity(self) -> dict:
        n, referred, annotated = self.objects
        if not n:
            return {"mean_referred": None, "mean_annotated": None, "n": 0}
        return {"mean_referred": referred / n, "mean_annotated": annotated / n, "n": n}

    def instruction_complexity(self) -> dict:
        total, n = self.elements
        score, k = self.llm_scores
        return {"mean_elements": total / n if n else None, "llm_score": float(score) / k if k else None}

    def balance(self) -> dict:
        counts, n, k = self.tasks, self.n, len(self.tasks)
        ent = -sum(c / n * math.log(c / n) for c in counts.values()) if n else 0.0
        return {"counts": dict(sorted(counts.items())),
                "variance": pvariance(counts.values()) if k else 0.0,
                "normalised_entropy": ent / math.log(k) if k > 1 else None}

    def quality(self) -> dict:
        def mean(ftype: str) -> float | None:
            total, n = self.scores.get(ftype, (0, 0))
            return float(total) / n if n else None

        chair = self.scores.get("hallucination")
        return {"matching_degree": mean("clip_match"), "correctness_rate": mean("judge"),
                "hallucination_rate": self.chair_above / chair[1] if chair else None,
                "mean_chair": mean("hallucination")}

    def result(self, *, embed: Embed | None = None, response: bool = True, eps: float = 0.2,
               min_samples: int = 3) -> dict:
        out = {
            "n_samples": self.n,
            "task_diversity": len(self.tasks),
            "instruction_diversity": self.instruction_diversity(),
            "response_diversity": None,
            "object_complexity": self.object_complexity(),
            "instruction_complexity": self.instruction_complexity(),
            "balance": self.balance(),
            "quality": self.quality(),
        }
        missing = missing_packages(RESPONSE_PACKAGES[1:] if embed else RESPONSE_PACKAGES) if response else []
        if missing:  # the core install: say so, compute everything else
            out["response_diversity"] = {"skipped": f"needs {', '.join(missing)}: "
                                                    "pip install 'vlitc[quality]'"}
        elif response:
            out["response_diversity"] = cluster_responses(self.responses(), embed or default_embed,
                                                          eps=eps, min_samples=min_samples)
        return out
