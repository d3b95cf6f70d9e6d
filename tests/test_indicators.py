"""Quality indicators on constructed data whose true values are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests._core_util import needs
from tests._release_util import conv, img
from vlitc.quality import indicators as ind
from vlitc.records import sample


def _task_samples(task: str, n: int) -> list[dict]:
    return [conv(f"{task}/{i}", task, "Describe it.", f"answer {i}") for i in range(n)]


def _cluster_embed(centers: dict[str, np.ndarray]):
    """Embeds 'c<k> ...' responses near centre k (well separated unit vectors)."""
    def embed(texts):
        rng = np.random.default_rng(0)
        return np.stack([centers[t.split()[0]] + 0.01 * rng.standard_normal(16) for t in texts])
    return embed


@pytest.mark.parametrize("k", [1, 3, 5])
def test_k_well_separated_response_clusters_give_log_k(k):
    centers = {f"c{j}": np.eye(16)[j] for j in range(k)}
    samples = [conv(f"s{j}/{i}", "t", "q", f"c{j} reply {i}") for j in range(k) for i in range(6)]
    out = ind.response_diversity(samples, _cluster_embed(centers), eps=0.1, min_samples=3)
    assert out["clusters"] == k and out["noise"] == 0
    assert out["value"] == pytest.approx(math.log(k))


def test_isolated_responses_are_noise_not_clusters():
    centers = {"c0": np.eye(16)[0], **{f"x{j}": np.eye(16)[j + 1] for j in range(4)}}
    samples = [conv(f"a{i}", "t", "q", f"c0 r{i}") for i in range(5)] + \
        [conv(f"x{j}", "t", "q", f"x{j} lone") for j in range(4)]
    out = ind.response_diversity(samples, _cluster_embed(centers), eps=0.1, min_samples=3)
    assert (out["clusters"], out["noise"], out["value"]) == (1, 4, 0.0)


def test_uniform_task_mix_has_entropy_one_and_variance_zero():
    samples = _task_samples("a", 5) + _task_samples("b", 5) + _task_samples("c", 5)
    b = ind.balance(samples)
    assert b["normalised_entropy"] == pytest.approx(1.0)
    assert b["variance"] == 0 and b["counts"] == {"a": 5, "b": 5, "c": 5}


def test_skewed_mix_variance_and_entropy_are_exact():
    b = ind.balance(_task_samples("a", 9) + _task_samples("b", 1))
    assert b["variance"] == pytest.approx(16.0)
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert b["normalised_entropy"] == pytest.approx(h / math.log(2))


def test_task_diversity_counts_task_types():
    out = ind.compute(_task_samples("a", 2) + _task_samples("b", 1), response=False)
    assert out["task_diversity"] == 2 and out["response_diversity"] is None


def test_disjoint_instruction_vocabularies_form_separate_clusters():
    qs = ["Describe the scene briefly.", "Summarise the scene briefly.",
          "Count the red apples.", "How many red apples?"]
    samples = [conv(f"t/{i}", "t", q, "a") for i, q in enumerate(qs)]
    assert ind.instruction_diversity(samples)["per_task"] == {"t": 2}


def test_ego_splitting_separates_groups_joined_by_one_bridge_word():
    # 'describe' joins two otherwise unrelated word groups: connected components would give 1
    qs = ["describe scene briefly", "describe objects carefully"]
    g = ind.cooccurrence_graph(qs)
    clusters = ind.ego_splitting_clusters(g)
    assert {frozenset(c) for c in clusters} == {
        frozenset({"describe", "scene", "briefly"}), frozenset({"describe", "objects", "carefully"})}


def test_instruction_diversity_is_per_task_with_mean():
    samples = [conv("a/0", "a", "Describe the scene.", "x"), conv("a/1", "a", "Count dogs.", "x"),
               conv("b/0", "b", "Read the sign.", "x")]
    out = ind.instruction_diversity(samples)
    assert out == {"per_task": {"a": 2, "b": 1}, "mean": 1.5}


def test_content_words_drop_stop_words_and_image_placeholder():
    assert ind.content_words("<image>\nWhat is the man holding in his hand?") == \
        ["man", "holding", "hand"]


def test_object_complexity_counts_distinct_annotated_objects_referred_to():
    objs = [{"category": "dog", "bbox": [0, 0, 1, 1]}, {"category": "dog", "bbox": [1, 1, 2, 2]},
            {"category": "frisbee", "bbox": [0, 0, 1, 1]}, {"category": "car", "bbox": [0, 0, 1, 1]}]
    s1 = conv("1", "t", "What are the dogs doing?", "Two dogs chase a frisbee.", img("a.png"),
              annotations={"objects": objs})
    s2 = conv("2", "t", "Describe.", "A park.", img("a.png"), annotations={"objects": objs})
    s3 = conv("3", "t", "No annotations.", "dog", None)
    out = ind.object_complexity([s1, s2, s3])
    assert out == {"mean_referred": 1.0, "mean_annotated": 3.0, "n": 2}


def test_instruction_complexity_counts_content_elements_and_llm_scores():
    s = sample("1", "t", [{"role": "user", "content": "Where is the red car parked?"},
                          {"role": "assistant", "content": "street"},
                          {"role": "user", "content": "Why?"},
                          {"role": "assistant", "content": "x"}],
               meta={"stats": {"cx": {"complexity": 6}, "other": {"complexity": 8}}})
    out = ind.instruction_complexity([s])
    assert out == {"mean_elements": 1.5, "llm_score": 7.0}  # (3 + 0) / 2


def test_single_sample_quality_reads_filter_stats_by_label_and_type():
    stats = [
        {"match": {"score": 0.30}, "judge": {"verdict": "correct"}, "hallucination": {"rate": 0.0}},
        {"match": {"score": 0.20}, "judge": {"verdict": "incorrect"}, "hallucination": {"rate": 0.5}},
        {"match": {"score": 0.25}, "judge": {"verdict": True}},
        {},
    ]
    samples = [conv(str(i), "t", "q", "a", stats=st) for i, st in enumerate(stats)]
    types = ind.filter_types_from_recipe({"filters": [
        {"type": "clip_match", "name": "match"}, {"type": "judge"}, {"type": "hallucination"}]})
    q = ind.single_sample_quality(samples, types)
    assert q["matching_degree"] == pytest.approx(0.25)
    assert q["correctness_rate"] == pytest.approx(2 / 3)
    assert q["hallucination_rate"] == 0.5 and q["mean_chair"] == 0.25


def test_single_sample_quality_is_none_when_no_filter_ran():
    q = ind.single_sample_quality(_task_samples("a", 3), {})
    assert q == {"matching_degree": None, "correctness_rate": None,
                 "hallucination_rate": None, "mean_chair": None}


@pytest.mark.slow
def test_minilm_embeddings_cluster_paraphrases_apart_from_other_topics():
    pytest.importorskip("sentence_transformers")
    cats = ["A cat sleeps on the sofa.", "A cat is sleeping on a couch.", "The cat naps on the sofa."]
    cars = ["The stock market fell sharply today.", "Shares dropped steeply on the market today.",
            "Stock prices fell sharply today."]
    samples = [conv(str(i), "t", "q", a) for i, a in enumerate(cats + cars)]
    out = ind.response_diversity(samples, ind.default_embed, eps=0.35, min_samples=2)
    assert out["clusters"] == 2


def test_correctness_rate_reads_the_judge_votes_majority():
    stats = [{"judge": {"votes": ["correct", "correct", "incorrect"]}},
             {"judge": {"votes": ["incorrect", "unparsed", "incorrect"]}},
             {"judge": {"votes": ["correct", "incorrect"]}},  # a tie reads as no verdict
             {"judge": {"votes": ["error"], "error": "HTTP 500"}}]
    samples = [conv(str(i), "t", "q", "a", stats=st) for i, st in enumerate(stats)]
    q = ind.single_sample_quality(samples, {"judge": "judge"})
    assert q["correctness_rate"] == 0.5


def test_tiny_sets_say_too_few_samples_instead_of_zero():
    needs("sklearn")
    from vlitc.release.summary import indicator_rows

    samples = [conv("1", "t", "q", "An answer.")]
    out = ind.compute(samples, embed=lambda texts: [[1.0, 0.0]] * len(texts))
    assert out["response_diversity"]["value"] is None and out["response_diversity"]["too_few"]
    rows = dict(indicator_rows(out))
    assert rows["response diversity (log DBSCAN clusters)"] == (
        "too few samples (1 responses; DBSCAN needs 3)")
    empty = dict(indicator_rows(ind.compute([], response=False)))
    assert empty["instruction diversity (mean clusters per task)"] == ind.TOO_FEW
    assert empty["instruction complexity (content elements)"] == ind.TOO_FEW


def test_a_build_that_runs_a_judge_reports_its_correctness_rate(tmp_path, repo_root):
    import json

    import yaml
    from _release_util import demo_recipe_data

    from vlitc.api import build

    r = demo_recipe_data(repo_root)
    r["tasks"] = {"brief_caption": r["tasks"]["brief_caption"]}
    r.pop("balance", None)
    # two votes of three say correct: every sample is kept, and judged correct
    r["generators"] = {"judge": {"provider": "mock", "model": "mock", "template":
                                 "VERDICT: {{ 'incorrect' if index == 2 else 'correct' }}"}}
    r["filters"] = [{"type": "judge", "generator": "judge", "votes": 3}]
    r["report"] = {"type": "release", "indicators": {"response": False}}
    path = tmp_path / "judge.yaml"
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    build(path, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    got = json.loads((tmp_path / "out" / "indicators.json").read_text())
    assert got["indicators"]["quality"]["correctness_rate"] == 1.0
    assert "| correctness rate | 1.000 |" in (tmp_path / "out" / "README.md").read_text()


def _scored(n: int) -> list[dict]:
    """Samples of two tasks with every stat the indicators read: match scores, judge votes,
    CHAIR rates, LLM complexity, annotated objects."""
    out = []
    for i in range(n):
        objects = [{"category": c} for c in ("dog", "cat", "bus")[: i % 3 + 1]]
        stats = {"clip_match": {"score": 0.1 * (i % 7) + 0.013}, "judge": {"votes": ["yes", "no", "yes"][: i % 3 + 1]},
                 "hallucination": {"rate": (i % 4) / 3}, "complexity": {"complexity": 1 + (i % 9) / 7}}
        out.append(conv(f"{'ab'[i % 2]}/{i:03d}", "ab"[i % 2], f"Is there a dog or a cat number {i % 5}?",
                        f"c{i % 3} a dog and a bus {i}", img(f"{i}.jpg"), stats=stats,
                        annotations={"objects": objects}))
    return out


def test_indicators_are_the_same_whatever_order_the_samples_come_in():
    import random

    samples = _scored(60)
    centers = {f"c{j}": np.eye(16)[j] for j in range(3)}
    types = {"clip_match": "clip_match", "judge": "judge", "hallucination": "hallucination"}
    want = ind.compute(samples, embed=_cluster_embed(centers), filter_types=types, max_samples=25, seed=3)
    shuffled = samples[:]
    random.Random(1).shuffle(shuffled)
    assert ind.compute(iter(shuffled), embed=_cluster_embed(centers), filter_types=types, max_samples=25,
                       seed=3) == want
    assert want["response_diversity"]["n"] == 25 and want["response_diversity"]["clusters"] == 3


def test_running_means_are_the_means_of_the_whole_list():
    from statistics import fmean

    samples = _scored(40)
    q = ind.single_sample_quality(samples, {})
    assert q["matching_degree"] == fmean(s["meta"]["stats"]["clip_match"]["score"] for s in samples)
    assert q["mean_chair"] == fmean(s["meta"]["stats"]["hallucination"]["rate"] for s in samples)
    assert q["hallucination_rate"] == fmean(s["meta"]["stats"]["hallucination"]["rate"] > 0 for s in samples)
    votes = [ind.verdict_value(s["meta"]["stats"]["judge"]["votes"]) for s in samples]
    assert q["correctness_rate"] == fmean(v for v in votes if v is not None)
    c = ind.instruction_complexity(samples)
    assert c["llm_score"] == fmean(s["meta"]["stats"]["complexity"]["complexity"] for s in samples)
    assert c["mean_elements"] == fmean(len(set(ind.content_words(s["turns"][0]["content"]))) for s in samples)


def test_the_response_reservoir_holds_max_samples_chosen_by_seed_and_id():
    samples = _scored(50)
    scan = ind.IndicatorScan(max_samples=10, seed=3)
    for s in reversed(samples):
        scan.add(s)
    picked = scan.responses()
    assert len(picked) == 10 == len(set(picked))
    again = ind.IndicatorScan(max_samples=10, seed=3)
    for s in samples:
        again.add(s)
    assert again.responses() == picked  # by id, not by arrival
    other = ind.IndicatorScan(max_samples=10, seed=4)
    for s in samples:
        other.add(s)
    assert other.responses() != picked
    few = ind.IndicatorScan(max_samples=100, seed=3)  # no more than the reservoir: all, by id
    for s in reversed(samples):
        few.add(s)
    assert few.responses() == [s["turns"][1]["content"] for s in sorted(samples, key=lambda s: s["id"])]
