"""Structured output: the JSON dialog parser's requests ask for JSON the way each provider takes
it (OpenAI ``response_format``, Anthropic forced tool use, structured outputs or a prefilled
``{``), through the real SDKs against the loopback server; request keys that tell the ways apart;
a repair hint that holds nothing to copy, and copied hints or examples that do not parse; the
parser's own reasons in the report, per sample."""

from __future__ import annotations

import html
import json

import pytest
from _release_util import one_task_recipe

from tests._llm_util import RECORD
from vlitc.api import build
from vlitc.errors import GenerationError
from vlitc.llm import Request, session
from vlitc.llm.fakeserver import FakeServer
from vlitc.llm.parse import DIALOG_SCHEMA, HINTS, parse, repair_message, response_format
from vlitc.llm.types import base_request, sample_key, with_mode
from vlitc.ops.base import OpContext
from vlitc.ops.registry import get

PACK = "review/knowledge"


@pytest.fixture(scope="module")
def server():
    return FakeServer(keep_bodies=True).start_in_thread()


def _generate(gens: dict, cache, n_records: int = 2):
    with session({"generators": gens}, cache) as s:
        ctx = OpContext(seed=3, recipe_dir=cache, step_id="task:k", generators=gens,
                        _client=s.client)
        op = get("task", "generate")({"source": "coco", "generator": next(iter(gens)),
                                      "prompt": PACK, "context": "review", "parse": "json_dialog",
                                      "examples": 1}, label="k")
        return list(op.run([dict(RECORD, id=str(i)) for i in range(n_records)], ctx))


def _bodies(server, since: int) -> list[dict]:
    return [r["body"] for r in server.log[since:]]


# the parser --------------------------------------------------------------------------------
def test_the_structured_form_parses_and_placeholders_do_not():
    text = json.dumps({"dialog": [{"User": "What is on the couch?", "AI": "Two cats."},
                                  {"User": "Are they awake?", "AI": "No, both sleep."}]})
    assert [t["content"] for t in parse(text, "json_dialog").turns] == [
        "What is on the couch?", "Two cats.", "Are they awake?", "No, both sleep."]
    # yesterday's hint, copied back: a parse failure that says so
    got = parse('{"User": "Question?", "AI": "Answer."}', "json_dialog")
    assert got.turns is None and "repeats the format example" in got.error
    got = parse("Question:\n<question>\n===\nAnswer:\n<answer>", "llava_qa")
    assert got.turns is None and "placeholder '<question>'" in got.error
    assert response_format("llava_qa") is None
    assert response_format("json_dialog")["json_schema"]["schema"] == DIALOG_SCHEMA


def test_the_repair_hint_holds_nothing_to_copy():
    for fmt in ("llava_qa", "json_dialog"):
        msg = repair_message(fmt, "invalid JSON: Expecting value at character 0")
        assert "invalid JSON: Expecting value at character 0" in msg
        assert "{" not in HINTS[fmt] and "<" not in HINTS[fmt]
        assert "Question?" not in msg and "Answer." not in msg
        # sent back verbatim, the hint itself is no conversation either
        assert parse(HINTS[fmt], fmt).turns is None


# OpenAI ------------------------------------------------------------------------------------
OPENAI_WIRE = {
    "json_schema": {"type": "json_schema", "json_schema": {"name": "dialog", "schema": DIALOG_SCHEMA,
                                                           "strict": True}},
    "json_object": {"type": "json_object"},
    "json_object_schema": {"type": "json_object", "schema": DIALOG_SCHEMA},
    "none": None,
}


@pytest.mark.parametrize("mode", list(OPENAI_WIRE))
def test_openai_response_format_choices_reach_the_server(tmp_path, server, mode):
    gens = {"g": {"provider": "openai", "model": "gpt-4o-mini", "base_url": server.base_url,
                  "response_format": mode}}
    if mode == "json_schema":
        gens["g"].pop("response_format")  # the default
    before = len(server.log)
    out = _generate(gens, tmp_path)
    bodies = _bodies(server, before)
    assert len(bodies) == 2
    assert all(b.get("response_format") == OPENAI_WIRE[mode] for b in bodies)
    assert all(s["turns"] and "parse_error" not in s["meta"] for s in out)
    if mode != "none":  # the server followed the schema's shape
        assert all(json.loads(s["meta"]["raw"]).keys() == ({"dialog"} if "schema" in mode
                                                           else {"User", "AI"}) for s in out)


# Anthropic ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["tool", "json_schema", "prefill", "none"])
def test_anthropic_ways_of_asking_for_json_reach_the_server(tmp_path, server, monkeypatch, mode):
    monkeypatch.setenv("VLITC_TEST_KEY", "k")
    gens = {"c": {"provider": "anthropic", "model": "claude-sonnet-4-5",
                  "api_key_env": "VLITC_TEST_KEY", "base_url": f"http://127.0.0.1:{server.port}",
                  "response_format": mode}}
    before = len(server.log)
    out = _generate(gens, tmp_path)
    bodies = _bodies(server, before)
    assert len(bodies) == 2 and all(s["turns"] for s in out)
    raws = [json.loads(s["meta"]["raw"]) for s in out]
    for b, raw in zip(bodies, raws, strict=True):
        last = b["messages"][-1]
        if mode == "tool":
            assert b["tools"] == [{"name": "dialog", "input_schema": DIALOG_SCHEMA,
                                   "description": "Give your reply as this tool's input."}]
            assert b["tool_choice"] == {"type": "tool", "name": "dialog"}
            assert list(raw) == ["dialog"]  # the tool call's input is the reply
        elif mode == "json_schema":
            assert b["output_config"] == {"format": {"type": "json_schema",
                                                     "schema": DIALOG_SCHEMA}}
            assert "tools" not in b and list(raw) == ["dialog"]
        elif mode == "prefill":
            assert last == {"role": "assistant", "content": "{"}
            assert "tools" not in b and "output_config" not in b
        else:
            assert last["role"] == "user" and "tools" not in b and "output_config" not in b


def test_each_way_of_asking_has_its_own_request_key_and_none_is_not_asking():
    req = Request(messages=[{"role": "user", "content": "Write JSON."}],
                  response_format=response_format("json_dialog"))
    plain = Request(messages=req.messages)

    def key(r: Request) -> str:
        return sample_key(base_request("openai", "m", r, {}), 0)

    keys = {mode: key(with_mode(req, mode)) for mode in OPENAI_WIRE}
    assert len(set(keys.values())) == 4
    assert keys["none"] == key(plain)
    # the provider's default way leaves the generator's step key as it was
    gen = get("generator", "openai")
    assert gen({"model": "m"}, "g").key_params() == gen({"model": "m",
                                                        "response_format": "json_schema"},
                                                       "g").key_params()
    assert "response_format" in gen({"model": "m", "response_format": "none"}, "g").key_params()


def test_a_server_that_refuses_the_format_names_the_option(tmp_path, server):
    gens = {"g": {"provider": "openai", "model": "m", "base_url": server.base_url,
                  "response_format": "json_object"}}
    req = Request(messages=[{"role": "user", "content": "Talk about the picture."}],
                  response_format=response_format("json_dialog"))
    with session({"generators": gens}, tmp_path) as s, pytest.raises(
            GenerationError, match="must contain the word 'json'.*response_format 'json_object'"):
        s.client("g").run([req], step="task:t")


# repairs and the report ----------------------------------------------------------------------
#: choice 0 parses; choice 1 is not JSON and its repair sends the old hint back; a record whose
#: context mentions "remote" copies the pack's first example
TEMPLATE = ("{% if 'could not be read' in last_user %}{\"User\": \"Question?\", \"AI\": "
            "\"Answer.\"}{% elif index % 2 %}Not JSON #{{ index }}{% else %}"
            "{\"dialog\": [{\"User\": \"What is shown?\", \"AI\": \"Shapes.\"}]}{% endif %}")


def test_a_parroted_repair_is_a_parse_failure_and_the_report_shows_each_reason(tmp_path, repo_root):
    path = one_task_recipe(
        tmp_path, repo_root, {"provider": "mock", "model": "mock", "template": TEMPLATE},
        {"k": {"kind": "generate", "source": "coco", "generator": "llm", "prompt": PACK,
               "context": "review", "parse": "json_dialog", "n": 2, "repair": True}})
    result = build(path, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    counters = next(s for s in result.manifest["steps"] if s["id"] == "task:k")["counters"]
    assert counters["repair_requests"] == 3 and "repaired" not in counters
    assert counters["parse_error"] == 3
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count('<div class="failure">') == 3
    # each failure with the parser's own reasons, for the first answer and for the repair
    first = parse("Not JSON #1", "json_dialog").error
    again = parse('{"User": "Question?", "AI": "Answer."}', "json_dialog").error
    assert page.count(f'<span class="reason">{html.escape(first)}</span>') == 3
    assert page.count(f'repair: <span class="reason">{html.escape(again)}</span>') == 3
    assert "repeats the format example" in again


def test_a_reply_that_copies_an_in_context_example_does_not_parse(tmp_path):
    from vlitc.llm.prompts import load_pack

    example = load_pack(PACK).examples[0][1]
    gens = {"m": {"provider": "mock", "responses": [example]}}
    with session({"generators": gens}, tmp_path) as s:
        ctx = OpContext(seed=3, recipe_dir=tmp_path, step_id="task:k", generators=gens,
                        _client=s.client)
        op = get("task", "generate")({"source": "coco", "generator": "m", "prompt": PACK,
                                      "context": "review", "parse": "json_dialog",
                                      "examples": 20}, label="k")
        [out] = list(op.run([RECORD], ctx))
    assert parse(example, "json_dialog").turns  # the example itself parses
    assert out["meta"]["parse_error"].startswith("the reply copies in-context example")
