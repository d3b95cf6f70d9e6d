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

import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    import networkx as nx

    g = nx.Graph()
    for text in texts:
        words = sorted(set(content_words(text)))
        g.add_nodes_from(words)
        g.add_edges_from(combinations(words, 2))
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


def instruction_diversity(samples: Sequence[Sample]) -> dict:
    """Clusters of each task's instructions in its word co-occurrence graph, and their mean."""
    by_task: dict[str, list[str]] = defaultdict(list)
    for s in samples:
        by_task[s.get("task", "")].extend(instructions(s))
    per_task = {t: len(ego_splitting_clusters(cooccurrence_graph(texts)))
                for t, texts in sorted(by_task.items()) if texts}
    return {"per_task": per_task, "mean": fmean(per_task.values()) if per_task else None}


def response_diversity(
    samples: Sequence[Sample], embed: Embed, *, eps: float = 0.2, min_samples: int = 3,
    max_samples: int = 2000, seed: int = 0,
) -> dict:
    """``log`` of the number of DBSCAN clusters of the response embeddings (cosine distance
    ``eps``); noise points form no cluster. Over ``max_samples`` responses, a seeded subset."""
    import numpy as np
    from sklearn.cluster import DBSCAN

    texts = [assistant_text(s) for s in samples if assistant_text(s).strip()]
    if len(texts) > max_samples:
        texts = random.Random(f"{seed}:response_diversity").sample(texts, max_samples)
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


def object_complexity(samples: Sequence[Sample]) -> dict:
    """Mean distinct annotated objects referred to (and annotated), over samples with objects."""
    with_objects = [s for s in samples
                    if ((s.get("meta") or {}).get("annotations") or {}).get("objects")]
    if not with_objects:
        return {"mean_referred": None, "mean_annotated": None, "n": 0}
    annotated = [len({o["category"] for o in s["meta"]["annotations"]["objects"]})
                 for s in with_objects]
    return {"mean_referred": fmean(len(referred_objects(s)) for s in with_objects),
            "mean_annotated": fmean(annotated), "n": len(with_objects)}


def instruction_complexity(samples: Sequence[Sample]) -> dict:
    """Mean distinct content elements per instruction, and the mean LLM complexity score (1-10)
    from any filter stats that carry a numeric ``complexity``."""
    sizes = [len(set(content_words(text))) for s in samples for text in instructions(s)]
    scores = [v["complexity"] for s in samples
              for v in ((s.get("meta") or {}).get("stats") or {}).values()
              if isinstance(v, dict) and isinstance(v.get("complexity"), (int, float))]
    return {"mean_elements": fmean(sizes) if sizes else None,
            "llm_score": fmean(scores) if scores else None}


# -- balance ---------------------------------------------------------------------------------
def balance(samples: Sequence[Sample]) -> dict:
    """Per-task counts, their variance (the paper's balance index) and normalised entropy."""
    counts = Counter(s.get("task", "") for s in samples)
    n, k = sum(counts.values()), len(counts)
    ent = -sum(c / n * math.log(c / n) for c in counts.values()) if n else 0.0
    return {"counts": dict(sorted(counts.items())),
            "variance": pvariance(counts.values()) if k else 0.0,
            "normalised_entropy": ent / math.log(k) if k > 1 else None}


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


def single_sample_quality(samples: Sequence[Sample], filter_types: Mapping[str, str]) -> dict:
    """Mean matching degree, correctness rate, hallucination rate (share of samples with CHAIR
    above 0) and mean CHAIR, from the stats of the filters that ran; ``None`` where none did."""
    values: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        for label, st in ((s.get("meta") or {}).get("stats") or {}).items():
            ftype = filter_types.get(label, label)
            if ftype not in SCORE_STATS or not isinstance(st, dict):
                continue
            key = next((k for k in SCORE_STATS[ftype] if st.get(k) is not None), None)
            if key is None:
                continue
            v = verdict_value(st[key]) if ftype == "judge" else st[key]
            if isinstance(v, (int, float)):
                values[ftype].append(float(v))
    chair = values.get("hallucination")
    return {
        "matching_degree": fmean(values["clip_match"]) if values.get("clip_match") else None,
        "correctness_rate": fmean(values["judge"]) if values.get("judge") else None,
        "hallucination_rate": fmean(c > 0 for c in chair) if chair else None,
        "mean_chair": fmean(chair) if chair else None,
    }


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
    samples: Sequence[Sample], *, embed: Embed | None = None, response: bool = True,
    filter_types: Mapping[str, str] | None = None, eps: float = 0.2, min_samples: int = 3,
    max_samples: int = 2000, seed: int = 0,
) -> dict:
    """Every indicator for ``samples``; ``response=False`` skips the embedding model."""
    samples = list(samples)
    out = {
        "n_samples": len(samples),
        "task_diversity": len({s.get("task", "") for s in samples}),
        "instruction_diversity": instruction_diversity(samples),
        "response_diversity": None,
        "object_complexity": object_complexity(samples),
        "instruction_complexity": instruction_complexity(samples),
        "balance": balance(samples),
        "quality": single_sample_quality(samples, filter_types or {}),
    }
    missing = missing_packages(RESPONSE_PACKAGES[1:] if embed else RESPONSE_PACKAGES) if response else []
    if missing:  # the core install: say so, compute everything else
        out["response_diversity"] = {"skipped": f"needs {', '.join(missing)}: "
                                                "pip install 'vlitc[quality]'"}
    elif response:
        out["response_diversity"] = response_diversity(
            samples, embed or default_embed, eps=eps, min_samples=min_samples,
            max_samples=max_samples, seed=seed)
    return out
