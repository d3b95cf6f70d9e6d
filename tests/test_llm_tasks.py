"""The generate and rewrite tasks, generator op schemas, the cost estimate, and end-to-end builds
of the two self-instruct recipes against a loopback OpenAI-compatible server."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests._llm_util import RECORD, demo_recipe
from vlitc.errors import GenerationError
from vlitc.llm import session
from vlitc.llm.estimate import estimate
from vlitc.llm.fakeserver import FakeServer
from vlitc.ops.base import OpContext
from vlitc.ops.registry import get

GOOD = "Question:\nHow many cats?\n===\nAnswer:\nThere are two cats #{{ index }}."
# answers in the wrong format first, and correctly when asked to repair
REPAIRABLE = ("{% if 'could not be read' in last_user %}Question:\nHow many cats?\n===\nAnswer:\nTwo."
              "{% else %}Two cats, I think.{% endif %}")


def _run(tmp_path, params: dict, gen: dict, records=(RECORD,), label: str = "conv"):
    gens = {"m": {"provider": "mock", "retry_backoff": 0.0, **gen}}
    with session({"generators": gens}, tmp_path) as s:
        ctx = OpContext(seed=1, recipe_dir=tmp_path, step_id=f"task:{label}", generators=gens,
                        _client=s.client)
        op = get("task", "generate")({"source": "coco", "generator": "m",
                                      "prompt": "llava/conversation", **params}, label=label)
        return list(op.run(list(records), ctx)), ctx, s.usage()


def _not_tally(counters: dict) -> dict:
    """The counters besides the requests and tokens every generating step records."""
    return {k: v for k, v in counters.items()
            if k not in ("llm_requests", "prompt_tokens", "completion_tokens")}


def test_generate_writes_turns_and_the_meta_filters_need(tmp_path):
    out, ctx, _ = _run(tmp_path, {"n": 2}, {"template": GOOD})
    assert [s["id"] for s in out] == ["conv/39769/0", "conv/39769/1"]
    s = out[1]
    assert s["turns"] == [{"role": "user", "content": "<image>\nHow many cats?"},
                          {"role": "assistant", "content": "There are two cats #1."}]
    m = s["meta"]
    assert m["context"].startswith("Two cats sleep on a pink couch.\nA pair of cats lying next to remotes.\n\ncat: [")
    assert m["generator"] == {"name": "m", "provider": "mock", "model": "mock"}
    assert m["raw"] == "Question:\nHow many cats?\n===\nAnswer:\nThere are two cats #1."
    assert m["annotations"]["objects"][0] == {"category": "cat", "bbox": [12.0, 52.0, 316.0, 470.0],
                                              "iscrowd": False}
    assert m["record_id"] == "39769" and len(m["requests"]) == 1 and len(m["examples"]) == 2
    assert _not_tally(ctx.counters) == {"samples": 2}
    assert ctx.counters["llm_requests"] == 1 and ctx.counters["completion_tokens"] > 0


def test_unparsed_response_is_kept_with_its_raw_text_and_reason(tmp_path):
    out, ctx, _ = _run(tmp_path, {}, {"responses": ["Sure! Two cats."]})
    assert out[0]["turns"] == []
    assert out[0]["meta"]["raw"] == "Sure! Two cats."
    assert out[0]["meta"]["parse_error"] == "no 'Question:' / 'Answer:' blocks"
    assert _not_tally(ctx.counters) == {"parse_error": 1}


def test_repair_asks_once_and_keeps_the_first_raw_text(tmp_path):
    out, ctx, usage = _run(tmp_path, {"repair": True}, {"template": REPAIRABLE})
    m = out[0]["meta"]
    assert out[0]["turns"][1] == {"role": "assistant", "content": "Two."}
    assert m["repair"] == {"raw": "Two cats, I think.", "error": "no 'Question:' / 'Answer:' blocks"}
    assert len(m["requests"]) == 2 and "parse_error" not in m
    assert ctx.counters["repaired"] == 1 and usage["total"]["calls"] == 2


def test_failed_item_is_skipped_and_counted_when_on_error_is_skip(tmp_path):
    recs = [dict(RECORD, id=str(i)) for i in range(6)]
    gen = {"template": GOOD, "fail": {"rate": 0.5, "status": 503, "attempts": 0}, "max_retries": 0,
           "on_error": "skip"}
    out, ctx, _ = _run(tmp_path, {}, gen, recs)
    assert 0 < ctx.counters["llm_failed"] < 6 and len(out) == 6 - ctx.counters["llm_failed"]
    assert ctx.notes["llm_failed"][0]["error"].startswith("generator m (mock mock): sample 0: HTTP 503")


def test_failed_item_stops_the_build_by_default(tmp_path):
    gen = {"template": GOOD, "fail": {"rate": 1.0, "status": 503, "attempts": 0}, "max_retries": 0}
    with pytest.raises(GenerationError, match="item 39769; set on_error: skip"):
        _run(tmp_path, {}, gen)


def test_answer_parse_pairs_responses_with_seeded_instructions(tmp_path):
    params = {"prompt": "llava/detail", "parse": "answer", "instructions": ["Describe it.", "Tell me."]}
    out, _, _ = _run(tmp_path, params, {"responses": ["Two cats sleep on a couch."]})
    again, _, _ = _run(tmp_path, params, {"responses": ["Two cats sleep on a couch."]})
    assert out == again
    assert out[0]["turns"][0]["content"] in ("<image>\nDescribe it.", "<image>\nTell me.")


def test_region_context_marks_a_seeded_object(tmp_path):
    params = {"prompt": "review/region", "context": "region", "parse": "json_dialog",
              "mark": "text"}
    out, _, _ = _run(tmp_path, params, {"responses": ['{"User": "What is boxed?", "AI": "A cat."}']})
    m = out[0]["meta"]
    assert m["focus"]["label"] in ("cat", "remote")
    assert "A square box marks " + m["focus"]["label"] in m["context"]
    # the question about "the box" says where the box is (no box is drawn on this image)
    assert out[0]["turns"][0]["content"].startswith("<image>\nConsider the region [0.")


@pytest.mark.exercises("task.rewrite")
def test_rewrite_keeps_both_versions(tmp_path):
    src, _, _ = _run(tmp_path, {}, {"template": GOOD})
    gens = {"fix": {"provider": "mock", "template": "{{ last_user | replace('two', ' two') }}"}}
    with session({"generators": gens}, tmp_path / "c2") as s:
        ctx = OpContext(seed=1, recipe_dir=tmp_path, step_id="task:tight", generators=gens,
                        _client=s.client, _inputs=lambda ref: iter(src if ref == "task:conv" else []))
        op = get("task", "rewrite")({"task": ["conv"], "generator": "fix"}, label="tight")
        assert op.references() == {"task": ["conv"], "generator": ["fix"]}
        assert op.inputs() == ["task:conv"]
        out = list(op.run(ctx.input("task:conv"), ctx))
    assert out[0]["id"] == "tight/conv/39769/0" and out[0]["task"] == "tight"
    assert out[0]["turns"][1]["content"] == "There are  two cats #0."
    assert out[0]["meta"]["rewrite"]["original"] == src[0]["turns"]
    assert out[0]["meta"]["context"] == src[0]["meta"]["context"]


@pytest.mark.parametrize("name", ["openai", "anthropic", "mock"])
def test_generator_schemas_reject_typos(name):
    schema = get("generator", name).params_schema
    jsonschema.validate({"model": "x", "temperature": 0.8, "rpm": 60}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"model": "x", "temprature": 0.8}, schema)


@pytest.mark.exercises("generator.anthropic")
def test_an_anthropic_generator_keys_on_model_and_sampling_not_on_secrets_or_limits():
    op = get("generator", "anthropic")({"model": "claude-3-5-haiku", "temperature": 0.2, "rpm": 50,
                                        "api_key_env": "K", "timeout": 30})
    assert op.key_params() == {"model": "claude-3-5-haiku", "temperature": 0.2}
    assert op.config()["provider"] == "anthropic" and op.config()["model"] == "claude-3-5-haiku"


@pytest.mark.exercises("generator.openai")
def test_only_response_changing_generator_params_enter_keys():
    op = get("generator", "openai")({"model": "gpt-4o-mini", "temperature": 0.8, "rpm": 60,
                                     "base_url": "https://api.openai.com/v1/", "api_key_env": "K",
                                     "timeout": 9})
    assert op.key_params() == {"model": "gpt-4o-mini", "temperature": 0.8}
    # another server with the same model name answers differently: its endpoint is in the key,
    # unless a model_revision names the weights instead
    other = get("generator", "openai")({"model": "gpt-4o-mini", "base_url": "http://x/v1"})
    assert other.key_params() == {"model": "gpt-4o-mini", "base_url": "http://x/v1"}
    pinned = get("generator", "openai")({"model": "m", "base_url": "http://x/v1",
                                         "model_revision": "m@3f2a"})
    assert pinned.key_params() == {"model": "m", "model_revision": "m@3f2a"}


def test_estimate_counts_calls_tokens_and_cost():
    params = {"prompt": "llava/conversation", "examples": 2, "n": 5}
    oa = estimate(params, {"provider": "openai", "model": "gpt-4o-mini"}, 100)
    an = estimate(params, {"provider": "anthropic", "model": "claude-3-5-haiku"}, 100)
    assert oa["calls"] == 100 and an["calls"] == 500  # OpenAI returns n samples in one call
    assert oa["completion_tokens"] == an["completion_tokens"] > 0
    assert 0 < oa["usd"] < an["usd"] and oa["priced"]
    assert estimate(params, {"provider": "openai", "model": "local", "max_tokens": 10}, 10)[
        "completion_tokens"] == 10 * 5 * 10
    assert not estimate({"task": ["x"]}, {"provider": "openai", "model": "local"}, 10)["priced"]
    unknown = estimate(params, {"provider": "openai", "model": "gpt-4o-mini"}, -1)
    assert unknown["per_item"] and unknown["calls"] == 1 and not oa["per_item"]


@pytest.fixture(scope="module")
def server():
    return FakeServer().start_in_thread()


@pytest.mark.slow
@pytest.mark.parametrize("name,tasks", [("llava-instruct", 3), ("review-paper", 4)])
def test_recipe_builds_end_to_end_and_rebuilds_with_zero_calls(tmp_path, server, name, tasks, monkeypatch):
    from vlitc import api

    monkeypatch.setenv("VLITC_TEST_KEY", "sk-test-secret-123")
    recipe = demo_recipe(name, tmp_path, server.base_url, sample=3)
    before = len(server.log)
    first = api.build(recipe, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    llm = first.manifest["llm"]["total"]
    n = 5 if name == "review-paper" else 1
    assert llm["samples"] == 3 * tasks * n and llm["failed"] == 0
    assert len(server.log) - before == llm["calls"] == 3 * tasks
    data = json.loads(next((tmp_path / "out").glob("*_*.json")).read_text())
    assert len(data) == 3 * tasks * n  # every generated sample parsed and kept
    again = api.build(recipe, out_dir=tmp_path / "out2", cache_dir=tmp_path / "cache")
    assert len(server.log) - before == llm["calls"]
    assert all(e["status"] == "cached" for e in again.events if e.get("event") == "step")
    for f in (tmp_path / "cache").rglob("*"):
        assert not f.is_file() or b"sk-test-secret-123" not in f.read_bytes()
    assert "sk-test-secret-123" not in json.dumps(first.manifest)


@pytest.mark.exercises("task.generate")
def test_generate_reads_llava_own_prompt_folder(tmp_path, fixtures_dir):
    folder = fixtures_dir / "LLaVA/playground/data/prompts/conversation"
    gen = {"template": "Question:\n{{ system[:39] }}|{{ messages|length }}\n===\nAnswer:\nTwo."}
    out, _, _ = _run(tmp_path, {"prompt": str(folder)}, gen)
    # the system message and LLaVA's one example pair reach the request, then the item
    assert out[0]["turns"][0]["content"] == "<image>\nYou are an AI visual assistant, and you|4"
    assert out[0]["meta"]["examples"] == [0]


def test_answers_cut_at_max_tokens_carry_length_and_the_truncated_filter_drops_them(
        tmp_path, server, monkeypatch):
    """generate records each text's finish reason (meta.finish_reasons); the loopback server
    stops answers at max_tokens with ``length``, as a model does, and the truncated filter's
    finish-reason rule drops exactly those."""
    import yaml

    from vlitc import api

    monkeypatch.setenv("VLITC_TEST_KEY", "sk-test")
    recipe = demo_recipe("llava-instruct", tmp_path, server.base_url, sample=3)
    data = yaml.safe_load(recipe.read_text())
    data["tasks"] = {"detail": {**data["tasks"]["detail"], "max_tokens": 6},
                     "conversation": data["tasks"]["conversation"]}
    data["filters"] = [{"type": "truncated", "text": False}]
    data["report"] = {"type": "release", "indicators": {"response": False}}
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    built = api.build(recipe, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    steps = {s["id"]: s for s in built.manifest["steps"]}
    assert steps["task:detail"]["n_out"] == 3 and steps["filter:truncated"]["n_dropped"] == 3
    kept = json.loads((tmp_path / "out" / "llava_instruct.json").read_text())
    assert len(kept) == 3 and all(s["id"].startswith("conversation/") for s in kept)
    from vlitc.run.store import Store

    store = Store(tmp_path / "cache")
    try:
        entry = store.get_entry(steps["task:detail"]["key"])
        made = list(store.read(entry["outputs"]["main"]))
        entry = store.get_entry(steps["task:conversation"]["key"])
        conv = list(store.read(entry["outputs"]["main"]))
    finally:
        store.close()
    assert [s["meta"]["finish_reasons"] for s in made] == [["length"]] * 3
    assert all(len(s["meta"]["raw"]) == 24 for s in made)  # 6 tokens of 4 characters
    assert [s["meta"]["finish_reasons"] for s in conv] == [["stop"]] * 3
