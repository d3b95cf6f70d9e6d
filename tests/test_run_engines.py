"""Engines: the same step keys and the same release bytes whatever runs the map steps (inline,
a local process pool of 2, Ray in this process, a Ray cluster joined by address), and a Ray
build killed with SIGKILL resumes to the same bytes without sending a completed request again."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import pytest
from _core_util import ROOT, demo_copy
from _llm_util import demo_recipe
from _sources_util import make_image

from vlitc.api import build
from vlitc.llm.fakeserver import FakeServer
from vlitc.run.engine import Execution
from vlitc.run.shards import Job, run_chunk

#: records per map task in these tests: small, so that the demo's steps span many chunks
CHUNK = "\nexecution: {chunk: 5}\n"


def _release(result) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    steps = [(s["id"], s["key"]) for s in result.manifest["steps"]]
    files = [(o["path"], o["sha256"]) for o in result.manifest["outputs"]]
    return steps, files


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def _demo(tmp_path: Path) -> Path:
    recipe = demo_copy(tmp_path)
    recipe.write_text(recipe.read_text() + CHUNK)
    return recipe


def _build_as(recipe: Path, tmp_path: Path, name: str, **kw):
    return build(recipe, out_dir=tmp_path / name, cache_dir=tmp_path / f"cache-{name}", **kw)


def _same_at_one_and_two_workers(recipe: Path, tmp_path: Path):
    """Builds at 1 and 2 local workers: the same keys and the same release bytes."""
    one = _build_as(recipe, tmp_path, "one", workers=1)
    two = _build_as(recipe, tmp_path, "two", workers=2)
    assert _release(one) == _release(two)
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    return one, two


def test_demo_at_one_and_two_local_workers_gives_the_same_keys_and_bytes(tmp_path):
    one, two = _same_at_one_and_two_workers(_demo(tmp_path), tmp_path)
    # the pool did run chunks: the task's counters add up over them
    counters = {s["id"]: s["counters"] for s in two.manifest["steps"]}
    assert counters["task:object_box"]["records"] == 24


def test_outputs_of_many_shards_are_the_same_bytes_at_one_and_two_workers(tmp_path, monkeypatch):
    """Shards of 7 records: the workers' task and staged balance outputs are cut into several
    shards, as the build's own writer cuts them (a task's at the end of each of its input's
    shards as well)."""
    from vlitc.run import runners, store

    monkeypatch.setattr(store, "SHARD_SIZE", 7)
    monkeypatch.setattr(runners, "SHARD_SIZE", 7)
    one, _two = _same_at_one_and_two_workers(_demo(tmp_path), tmp_path)
    cache = tmp_path / "cache-two"
    entries = {s["id"]: orjson.loads((cache / "steps" / f"{s['key']}.json").read_bytes())
               for s in one.manifest["steps"]}
    shards = entries["balance"]["outputs"]["main"]["shards"]
    assert len(shards) > 2 and all(sh["count"] == 7 for sh in shards[:-1])
    shards = entries["task:object_box"]["outputs"]["main"]["shards"]
    assert len(shards) > 2 and all(0 < sh["count"] <= 7 for sh in shards)


MINHASH_RECIPE = """\
vlitc: 1
name: near
version: 0.0.1
seed: 3
sources:
  coco: {type: coco, images: images, captions: captions.json, check_images: false}
tasks:
  brief:
    kind: template
    source: coco
    instruction: {templates: ["Describe the image briefly."]}
    response: "{{ caption }}"
    per: caption
filters:
  - {type: dedup, method: minhash, scope: global, threshold: 0.7}
outputs:
  - {format: llava, path: train.json}
report: false
execution: {chunk: 7}
"""


def _near_duplicate_captions(root: Path) -> Path:
    """40 images with two captions of 40 words each; every fourth image's second caption is its first with
    one word changed (a near-duplicate), the rest are unrelated word salads."""
    import json
    import random

    from PIL import Image

    rng = random.Random(5)
    words = [f"word{i}" for i in range(200)]
    (root / "images").mkdir()
    Image.new("RGB", (8, 8)).save(root / "images" / "1.png")
    images, anns = [], []
    for i in range(1, 41):
        images.append({"id": i, "file_name": "1.png", "width": 8, "height": 8})
        first = rng.choices(words, k=40)
        second = list(first) if i % 4 == 0 else rng.choices(words, k=40)
        if i % 4 == 0:
            second[20] = "changed"
        for cap in (first, second):
            anns.append({"id": len(anns) + 1, "image_id": i, "caption": " ".join(cap)})
    (root / "captions.json").write_text(json.dumps({"images": images, "annotations": anns}))
    (root / "near.yaml").write_text(MINHASH_RECIPE)
    return root / "near.yaml"


def test_minhash_dedup_drops_the_same_near_duplicates_at_one_and_two_workers(tmp_path):
    import json

    _same_at_one_and_two_workers(_near_duplicate_captions(tmp_path), tmp_path)
    kept = json.loads((tmp_path / "one" / "train.json").read_text())
    assert len(kept) == 70  # the 10 near-duplicates dropped, the 70 distinct texts kept
    assert not any("changed" in c["conversations"][1]["value"] for c in kept)


def test_dedup_of_one_task_leaves_the_others_samples_out_of_its_scope(tmp_path):
    """A dataset-wide filter limited to one task: its stats go to that task's samples alone,
    at 1 and 2 workers alike, and the other task keeps its near-duplicates."""
    import json

    recipe = _near_duplicate_captions(tmp_path)
    text = recipe.read_text().replace("    per: caption\n", "    per: caption\n  again:\n    kind: template\n"
                                      "    source: coco\n    instruction: {templates: [\"Say what it shows.\"]}\n"
                                      "    response: \"{{ caption }}\"\n    per: caption\n")
    recipe.write_text(text.replace("threshold: 0.7}", "threshold: 0.7, tasks: [brief]}"))
    one, _two = _same_at_one_and_two_workers(recipe, tmp_path)
    kept = json.loads((tmp_path / "one" / "train.json").read_text())
    asks = [c["conversations"][0]["value"] for c in kept]
    assert sum("briefly" in a for a in asks) == 70 and sum("shows" in a for a in asks) == 80
    counters = {s["id"]: s["counters"] for s in one.manifest["steps"]}
    assert counters["measure:dedup"]["duplicates"] == 10


SEGMENTED_RECIPE = """\
vlitc: 1
name: runs
version: 0.0.1
seed: 3
sources:
  coco: {type: coco, images: images, captions: captions.json, check_images: false}
tasks:
  brief: {kind: brief_caption, source: coco, min_words: 3}
outputs:
  - {format: llava, path: train.json}
report: false
"""


@pytest.mark.parametrize("chunk", [10, 7, 3])
def test_a_task_ends_a_shard_where_each_shard_of_its_input_ends(tmp_path, monkeypatch, chunk):
    """A task's samples of each shard of its input fill shards of their own (the last one
    partial): the same shards inline and at two workers, whether a chunk holds whole input
    shards (stored by the worker) or parts of one (staged, and cut into shards after)."""
    import json

    from PIL import Image

    from vlitc.run import runners, store

    monkeypatch.setattr(store, "SHARD_SIZE", 5)
    monkeypatch.setattr(runners, "SHARD_SIZE", 5)
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "1.png")
    images, anns = [], []
    for i in range(1, 28):  # 0 to 3 captions of three words or more per image
        images.append({"id": i, "file_name": "1.png", "width": 8, "height": 8})
        for k in range(i % 4 + 1):
            words = "a b" if (i + k) % 3 == 0 else f"caption {i} number {k}"
            anns.append({"id": len(anns) + 1, "image_id": i, "caption": words})
    (tmp_path / "captions.json").write_text(json.dumps({"images": images, "annotations": anns}))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(SEGMENTED_RECIPE + f"execution: {{chunk: {chunk}}}\n")
    one, two = _same_at_one_and_two_workers(recipe, tmp_path)
    entries = {s["id"]: orjson.loads((tmp_path / "cache-two" / "steps" / f"{s['key']}.json").read_bytes())
               for s in two.manifest["steps"]}
    from vlitc.run.store import Store

    cache = Store(tmp_path / "cache-two")
    source = entries["source:coco"]["outputs"]["main"]
    shard_of = {}
    for k, sh in enumerate(source["shards"]):
        for line in cache.plain(sh["sha256"]).splitlines():
            shard_of[orjson.loads(line)["id"]] = k
    per_run = [0] * len(source["shards"])
    task = entries["task:brief"]["outputs"]["main"]
    for sh in task["shards"]:
        for line in cache.plain(sh["sha256"]).splitlines():
            per_run[shard_of[orjson.loads(line)["meta"]["record_id"]]] += 1
    expected = [c for n in per_run for c in [5] * (n // 5) + [n % 5] * (n % 5 > 0)]
    assert len(source["shards"]) == 6 and sum(per_run) == task["count"] > 0
    assert [sh["count"] for sh in task["shards"]] == expected and expected != sorted(expected, reverse=True)


#: every text export, sharded, with a split and with copied images: prepared in the workers
TEXT_EXPORTS = """
outputs:
  - {format: llava, path: llava/train.json, split: train, shard_size: 4}
  - {format: llava, path: llava/validation.json, split: validation}
  - {format: sharegpt, path: sg/train.jsonl, images: copy, image_dir: sg/images}
  - {format: llamafactory, path: lf/train.jsonl, images: copy, image_dir: lf/images, shard_size: 7}
  - {format: internvl, path: ivl/train.jsonl, images: link, image_dir: ivl/images}
  - {format: messages, path: chat/train.jsonl}
"""


def _with_outputs(recipe: Path, outputs: str) -> Path:
    text = recipe.read_text()
    head, _, tail = text.partition("\noutputs:\n")
    rest = tail[tail.index("\nreport:"):]
    recipe.write_text(head + outputs + rest)
    return recipe


def test_every_text_export_is_the_same_bytes_prepared_in_workers(tmp_path):
    recipe = _with_outputs(_demo(tmp_path), TEXT_EXPORTS)
    one, two = _same_at_one_and_two_workers(recipe, tmp_path)
    steps = {s["id"]: s for s in two.manifest["steps"]}
    exported = sum(steps[f"export:{i}"]["counters"]["exported"] for i in (0, 1))
    assert exported == steps["balance"]["n_out"] > 5  # both splits, in more chunks than one
    assert len(list((tmp_path / "two" / "llava").glob("train-*-of-*.json"))) > 1
    assert list((tmp_path / "two" / "sg" / "images").rglob("*.png"))


def test_a_sample_that_fails_export_validation_in_a_worker_fails_the_build(tmp_path):
    from vlitc.errors import UserError

    recipe = _with_outputs(_demo(tmp_path), "\noutputs:\n  - {format: llava, path: t.json, max_tokens: 30}\n")
    for workers in (1, 2):
        with pytest.raises(UserError, match="fail export validation") as got:
            _build_as(recipe, tmp_path, f"w{workers}", workers=workers)
        assert "over the budget of 30" in str(got.value)
        assert not (tmp_path / f"w{workers}" / "t.json").exists()


def test_the_engine_and_its_settings_are_no_part_of_any_key(tmp_path):
    plain = demo_copy(tmp_path)
    first = _build_as(plain, tmp_path, "plain")
    plain.write_text(plain.read_text() + "\nexecution: {engine: local, workers: 2, chunk: 7}\n")
    again = build(plain, out_dir=tmp_path / "again", cache_dir=tmp_path / "cache-plain")
    assert _release(first) == _release(again)
    assert all(s["status"] == "cached" for s in again.manifest["steps"])
    assert _files(tmp_path / "plain") == _files(tmp_path / "again")


def _source(cache: Path, records: list[dict], shard_size: int = 3) -> dict:
    """A source output in the cache, in shards of ``shard_size`` records."""
    from vlitc.run.store import Store

    store = Store(cache)
    try:
        w = store.writer()
        w.shard_size = shard_size
        w.write_all(records)
        return w.close()
    finally:
        store.close()


def test_a_chunk_reads_its_range_of_records_and_gives_the_lines_the_cache_writer_would(tmp_path):
    cache = tmp_path / "c"
    records = [{"id": str(i), "source": "s", "image": {"root": "s", "path": f"{i}.jpg"},
                "captions": [f"a cat {i}"]} for i in range(7)]
    job = Job(kind="task", key="k", family="task", op="template",
              params={"source": "s", "instruction": {"templates": ["Say {{ caption }}."]},
                      "response": "{{ caption }}", "per": "caption"},
              label="t", seed=1, recipe_dir=str(tmp_path), step_id="task:t", store=str(cache),
              sources=[_source(cache, records[:4]), _source(cache, records[4:])])
    res = run_chunk(job, (2, 5))  # across two shards of the first source and into the second
    assert res.error is None and res.count == 3 and res.counters["samples"] == 3
    assert res.lines.count(b"\n") == 3
    assert [b"Say a cat %d." % i in res.lines for i in range(7)] == [False, False, True, True, True, False, False]


def test_a_failing_chunk_raises_the_op_error_text_in_the_build(tmp_path):
    cache = tmp_path / "c"
    job = Job(kind="task", key="k2", family="task", op="template",
              params={"source": "s", "instruction": {"pool": "missing"}, "response": "x"},
              label="t", seed=1, recipe_dir=str(tmp_path), step_id="task:t", store=str(cache),
              sources=[_source(cache, [{"id": "1", "source": "s", "captions": []}])])
    res = run_chunk(job, (0, 1))
    assert res.error is not None and res.count == 0


def test_unknown_engine_and_bad_worker_counts_are_configuration_errors():
    from vlitc.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        Execution.of({}, engine="spark")
    with pytest.raises(ConfigurationError):
        Execution.of({"execution": {"workers": 0}})
    assert Execution.of({"execution": {"workers": "auto"}}).n_workers() == (os.cpu_count() or 1)


# Ray ---------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_tmp():
    """A short private Ray temp folder (Ray's socket paths must stay under 108 bytes)."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'vlitc[ray]')")
    path = tempfile.mkdtemp(prefix="vr-", dir="/tmp")
    # a loopback test cluster: no auth token written into the home folder
    env = {"RAY_TMPDIR": path, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield path
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster(ray_tmp):
    """A Ray head on 127.0.0.1 with 2 CPUs, started for these tests and stopped by its own
    process group (never ``ray stop``, which would stop every Ray on the machine)."""
    port = _free_port()
    ray_bin = Path(sys.executable).with_name("ray")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    proc = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={ray_tmp}",
         "--disable-usage-stats"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        ok = subprocess.run([str(ray_bin), "status", f"--address={address}"], env=env,
                            capture_output=True).returncode == 0
        if ok:
            break
        assert proc.poll() is None, "ray start --head exited"
        time.sleep(1)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the Ray head did not come up")
    yield address
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    try:  # whatever of the head's process group is left
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def server():
    return FakeServer().start_in_thread()


def _generate_recipe(tmp_path: Path, base_url: str, sample: int = 6) -> Path:
    """The llava-instruct recipe on the demo scenes against ``base_url`` (no embedding model:
    the response-diversity indicator is off), in small chunks."""
    recipe = demo_recipe("llava-instruct", tmp_path, base_url, sample=sample)
    recipe.write_text(recipe.read_text() + "\nreport: {indicators: {response: false}}" + CHUNK)
    return recipe


@pytest.mark.slow
def test_ray_in_process_and_by_address_match_the_local_pool(tmp_path, ray_tmp, ray_cluster, server,
                                                            monkeypatch):
    import ray

    monkeypatch.setenv("VLITC_TEST_KEY", "k")
    demo = _demo(tmp_path)
    gen = _generate_recipe(tmp_path, server.base_url)
    sent: dict[str, list[str]] = {}  # the requests each build of the generate recipe sent

    def counted(name: str, r: Path, **kw):
        before = len(server.log)
        res = _build_as(r, tmp_path, name, **kw)
        if r == gen:
            sent[name] = sorted(x["body_sha256"] for x in server.log[before:])
        return res

    local = {name: (counted(f"{name}-1", r, workers=1), counted(f"{name}-2", r, workers=2))
             for name, r in (("demo", demo), ("gen", gen))}
    for name, (one, two) in local.items():
        assert _release(one) == _release(two)
        assert _files(tmp_path / f"{name}-1") == _files(tmp_path / f"{name}-2")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=ray_tmp)
    try:
        for name, r in (("demo", demo), ("gen", gen)):
            res = counted(f"{name}-ray", r, engine="ray")
            assert _release(res) == _release(local[name][0])
            assert _files(tmp_path / f"{name}-ray") == _files(tmp_path / f"{name}-1")
    finally:
        ray.shutdown()
    for name, r in (("demo", demo), ("gen", gen)):
        res = counted(f"{name}-addr", r, engine="ray", address=ray_cluster)
        assert _release(res) == _release(local[name][0])
        assert _files(tmp_path / f"{name}-addr") == _files(tmp_path / f"{name}-1")
    # the generate steps fan out (chunks of 5 of 6 records): every engine sent the same requests,
    # each once, and the workers' usage is the build's
    assert len(sent) == 4 and all(v == sent["gen-1"] for v in sent.values())
    assert len(sent["gen-1"]) == len(set(sent["gen-1"])) == res.manifest["llm"]["total"]["calls"]


@pytest.mark.slow
def test_sigkill_during_a_ray_build_then_resume_gives_the_same_bytes_and_resends_nothing(
        tmp_path, ray_cluster):
    """The generate steps are fanned out over Ray tasks (12 records, chunks of 5): their
    answers are committed by the workers, so the resumed build sends only what never came back."""
    srv = FakeServer(latency=0.02, hold_after=8).start_in_thread()
    recipe = _generate_recipe(tmp_path, srv.base_url, sample=12)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLITC_TEST_KEY": "k"}
    cmd = [sys.executable, "-m", "vlitc.cli.main", "build", str(recipe), "--quiet", "--engine", "ray",
           "--ray-address", ray_cluster, "--cache-dir", str(tmp_path / "cache"), "--out"]
    proc = subprocess.Popen([*cmd, str(tmp_path / "out")], env=env)
    deadline = time.monotonic() + 120
    while srv._ok < 8 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(1.0)  # the answers that arrived are committed; the rest hang on the server
    assert proc.poll() is None, "the build ended before it was killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = srv.completed()
    assert 8 <= len(first)
    srv.hold_after = None
    subprocess.run([*cmd, str(tmp_path / "out")], env=env, check=True, timeout=300)
    resumed = srv.completed()
    assert len(resumed) == len(set(resumed))  # no completed request was sent again
    fresh = [sys.executable, "-m", "vlitc.cli.main", "build", str(recipe), "--quiet", "--workers", "1",
             "--cache-dir", str(tmp_path / "fresh"), "--out", str(tmp_path / "uninterrupted")]
    subprocess.run(fresh, env=env, check=True, timeout=300)
    assert _files(tmp_path / "out") == _files(tmp_path / "uninterrupted")


def test_pool_workers_take_their_share_of_the_cores_for_thread_pools(monkeypatch):
    from vlitc.run import engine as eng

    for var in eng.THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    eng.limit_threads(1)
    assert all(os.environ[var] == "1" for var in eng.THREAD_VARS)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    eng.limit_threads(1)
    assert os.environ["OMP_NUM_THREADS"] == "3"  # the user's setting stays
    pool = eng.LocalEngine(Execution(workers=2))
    try:
        seen = list(pool.map(os.getenv, "OMP_NUM_THREADS", [None, None]))
    finally:
        pool.close()
    assert all(v is not None and int(v) >= 1 for v in seen)


def test_a_step_of_one_default_chunk_is_cut_so_that_every_worker_has_work():
    from types import SimpleNamespace

    from vlitc.run.engine import DEFAULT_CHUNK, MIN_CHUNK
    from vlitc.run.executor import Executor

    def size(count: int, workers: int = 2, chunk: int = DEFAULT_CHUNK) -> int:
        ex = SimpleNamespace(engine=SimpleNamespace(workers=workers), execution=Execution(chunk=chunk))
        return Executor.chunk_size(ex, {"count": count})  # type: ignore[arg-type]

    assert size(20_000) == 5_000  # four chunks for two workers, not one
    assert size(1_000_000) == DEFAULT_CHUNK
    assert size(100_000) == 16_667  # six chunks, three a worker (not five: one left alone)
    assert size(130_000, workers=3) == 14_445  # nine chunks of three a worker, not seven
    assert size(1_500) == MIN_CHUNK  # small steps are not cut finer than MIN_CHUNK
    assert size(100, chunk=5) == 5  # a recipe's smaller chunk is kept


def test_a_step_over_stored_shards_is_cut_at_their_ends_when_the_workers_stay_even():
    from types import SimpleNamespace

    from vlitc.run.engine import DEFAULT_CHUNK
    from vlitc.run.executor import Executor

    def chunks(counts: list[int], workers: int = 2, chunk: int = DEFAULT_CHUNK) -> list[tuple[int, int]]:
        ex = SimpleNamespace(engine=SimpleNamespace(workers=workers), execution=Execution(chunk=chunk))
        ex.chunk_size = lambda source: Executor.chunk_size(ex, source)  # type: ignore[arg-type]
        source = {"count": sum(counts), "shards": [{"count": c} for c in counts]}
        return Executor.chunks(ex, source)  # type: ignore[arg-type]

    assert chunks([20_000] * 29 + [11_435]) == [(i * 20_000, min(i * 20_000 + 20_000, 591_435))
                                                for i in range(30)]
    assert chunks([20_000] * 5 + [18_287])[-1] == (100_000, 118_287)  # six: three a worker
    assert len(chunks([20_000] * 5)) == 6  # five would leave one alone: even ranges
    assert chunks([20_000] * 11)[-1] == (200_000, 220_000)  # eleven: more than four a worker
    assert chunks([1_000] * 200)[:2] == [(0, 20_000), (20_000, 40_000)]  # small shards in runs
    assert chunks([20_000] * 8, chunk=5_000)[:2] == [(0, 5_000), (5_000, 10_000)]  # a smaller chunk
    assert chunks([20_000] * 8, workers=1) == [(0, 20_000)] + [(i * 20_000, i * 20_000 + 20_000)
                                                               for i in range(1, 8)]


def _existing_data(root: Path, outside: bool = False) -> Path:
    """A LLaVA file of 14 items with what a re-ingest counts: a repeated id, a turn without
    text, a missing image, a wrong placeholder count, two images, text only; and a recipe that
    passes it through and exports it."""
    import json

    from PIL import Image

    (root / "images").mkdir()
    for i in range(4):
        Image.new("RGB", (8 + i, 8)).save(root / "images" / f"{i}.png")
    items = []
    for i in range(14):
        turns = [{"from": "human", "value": f"<image>\nQuestion {i}?"}, {"from": "gpt", "value": f"Answer {i}."}]
        items.append({"id": f"q{i % 11}", "image": f"{i % 4}.png", "conversations": turns})
    items[3]["conversations"][1]["value"] = None  # a turn without text
    items[5]["image"] = "absent.png"
    items[6]["conversations"][0]["value"] += " <image>"  # two placeholders, one image
    items[8]["image"] = ["1.png", "2.png"]
    items[8]["conversations"][0]["value"] = "<image>\n<image>\nCompare them."
    del items[9]["image"]
    items[9]["conversations"][0]["value"] = "A question about no image."
    if outside:
        items[12]["image"] = "../secret.png"
    (root / "data.json").write_text("[\n" + ",\n".join(json.dumps(x) for x in items) + "\n]\n")
    (root / "r.yaml").write_text("""\
vlitc: 1
name: existing
version: 0.0.1
seed: 1
sources:
  mix: {type: llava, file: data.json, images: images}
tasks:
  mix: {kind: conversations, source: mix}
outputs:
  - {format: llava, path: out.json}
report: false
""")
    return root / "r.yaml"


def test_existing_records_built_in_workers_match_the_build_in_one_process(tmp_path, monkeypatch):
    from vlitc.ops.sources import _common

    monkeypatch.setattr(_common, "BUILD_RUN", 3)  # the source's records built in runs of 3
    one, two = _same_at_one_and_two_workers(_existing_data(tmp_path), tmp_path)

    def counted(result, name: str) -> dict:  # each step's counters and noted examples
        import json

        return {s["id"]: (s["counters"], json.loads((tmp_path / f"cache-{name}" / "steps" /
                                                      f"{s['key']}.json").read_text()).get("notes"))
                for s in result.manifest["steps"]}

    assert counted(one, "one") == counted(two, "two")
    got, notes = counted(one, "one")["source:mix"]
    assert got["duplicate_id"] == 3 and got["bad_conversation"] == 1 and got["missing_image"] == 1
    assert notes["duplicate_id"]["examples"] == ["q0", "q1", "q2"]
    assert notes["skipped_images"] == ["absent.png"]
    assert got["image_placeholder_count"] == 1


@pytest.mark.parametrize("decode", [True, False])
def test_coco_records_built_in_workers_match_the_build_in_one_process(tmp_path, monkeypatch, decode):
    """COCO captions and instances (categories travel with the entries to the workers, which
    check their images): the same records, counters and noted examples at 1 and 2 workers,
    whether images are decoded or only their headers read."""
    import json

    from PIL import Image

    from vlitc.ops.sources import _common

    monkeypatch.setattr(_common, "BUILD_RUN", 3)
    (tmp_path / "images").mkdir()
    images = []
    for i in range(1, 12):
        if i != 5:  # 5 is missing
            Image.new("RGB", (16 + i, 12 + (i == 3))).save(tmp_path / "images" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": 16 + i, "height": 12})
    (tmp_path / "images" / "6.png").write_bytes(b"not an image")  # 6 is corrupt; 3 not 12 high
    caps = [{"id": k, "image_id": 1 + k % 13, "caption": f"a red square number {k} here"}
            for k in range(40)]
    inst = [{"id": k, "image_id": 1 + k % 11, "category_id": 1 + k % 3, "bbox": [1, 1, 5 + k, 4],
             "iscrowd": 0} for k in range(30)]
    (tmp_path / "captions.json").write_text(json.dumps({"images": images, "annotations": caps}))
    (tmp_path / "instances.json").write_text(json.dumps({
        "images": images, "annotations": inst, "categories": [{"id": 1, "name": "cat"},
                                                              {"id": 2, "name": "dog"}]}))
    (tmp_path / "r.yaml").write_text("""\
vlitc: 1
name: coco
version: 0.0.1
seed: 1
sources:
  coco: {type: coco, images: images, captions: captions.json, instances: instances.json}
tasks:
  cap: {kind: brief_caption, source: coco}
  box: {kind: counting, source: coco}
outputs:
  - {format: llava, path: out.json}
report: false
""".replace("instances.json}", f"instances.json, check_images: {str(decode).lower()}}}"))
    one, two = _same_at_one_and_two_workers(tmp_path / "r.yaml", tmp_path)

    def counted(result, name: str) -> tuple:
        step = next(s for s in result.manifest["steps"] if s["id"] == "source:coco")
        notes = json.loads((tmp_path / f"cache-{name}" / "steps" / f"{step['key']}.json").read_text())
        return step["counters"], notes.get("notes")

    assert counted(one, "one") == counted(two, "two")
    got, notes = counted(two, "two")
    assert got["unknown_category"] == 8 and got["box_outside_image"] > 0  # (not of images skipped)
    assert got["annotation_unknown_image"] == 6 and notes["skipped_images"] == ["5.png", "6.png"]
    assert got["images_hashed"] == 10 and got["images_remembered"] == 0
    assert got["image_size_mismatch"] == 1 and got["corrupt_image"] == 1
    # the images checked in the workers went into the table: a source that runs again reads none
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe.read_text().replace("instances: instances.json,",
                                                 "instances: instances.json, keep_empty: false,"))
    for name, workers in (("one", 1), ("two", 2)):
        again = _build_as(recipe, tmp_path, name, workers=workers)
        got, _ = counted(again, name)
        assert (got["images_hashed"], got["images_remembered"]) == (0, 10)


def test_an_image_outside_its_folder_is_the_same_located_error_from_a_worker(tmp_path, monkeypatch):
    from vlitc.errors import UserError
    from vlitc.ops.sources import _common

    monkeypatch.setattr(_common, "BUILD_RUN", 3)
    recipe = _existing_data(tmp_path, outside=True)
    messages = []
    for workers in (1, 2):
        with pytest.raises(UserError) as got:
            _build_as(recipe, tmp_path, f"w{workers}", workers=workers)
        messages.append(str(got.value))
    assert messages[0] == messages[1]
    assert "data.json" in messages[0] and "../secret.png" in messages[0]


def test_steps_of_plain_records_hold_the_cycle_collector_and_give_it_back(tmp_path, monkeypatch):
    import gc

    from vlitc.run import runners

    seen: dict[str, set[bool]] = {}
    for cls in (runners.SourceRunner, runners.TaskRunner, runners.MeasureRunner,
                runners.FilterRunner, runners.BalanceRunner, runners.ExportRunner):
        def run(self, step, ctx, _orig=cls.run):
            seen.setdefault(step.kind, set()).add(gc.isenabled())
            return _orig(self, step, ctx)

        monkeypatch.setattr(cls, "run", run)
    assert gc.isenabled()
    _build_as(demo_copy(tmp_path), tmp_path, "one", workers=1)
    assert gc.isenabled()  # given back after each step
    assert seen["task"] == seen["measure"] == seen["filter"] == seen["balance"] == {False}
    assert seen["source"] == seen["export"] == {True}  # (sources may catch an error per record)


def test_balance_staging_its_samples_in_the_first_pass_gives_the_bytes_of_two_reads(tmp_path, monkeypatch):
    """Balance's first pass stages every sample finished as ``train`` (at 2 workers in its keys
    chunks, at 1 as it reads them) and only the validation ones are finished again; with that
    off (``staged_tag = None``) the second pass reads every chosen sample: the same keys and
    bytes either way, both splits present."""
    from vlitc.ops.balance import MixBalance

    recipe = _with_outputs(_demo(tmp_path), TEXT_EXPORTS)
    staged = {w: _build_as(recipe, tmp_path, f"staged{w}", workers=w) for w in (1, 2)}
    monkeypatch.setattr(MixBalance, "staged_tag", None)
    read = {w: _build_as(recipe, tmp_path, f"read{w}", workers=w) for w in (1, 2)}
    for w in (1, 2):
        assert _release(staged[w]) == _release(read[w]) == _release(read[1])
        assert _files(tmp_path / f"staged{w}") == _files(tmp_path / f"read{w}") == _files(tmp_path / "read1")
    staged = staged[2]
    records = {o["path"]: o["records"] for o in staged.manifest["outputs"]}
    assert sum(n for p, n in records.items() if p.startswith("llava/train")) > 0
    assert records["llava/validation.json"] > 0


def _where(job: object, chunk: int) -> tuple[int, int]:
    """A shard function that says where it ran (a slow chunk: Ray is seen starting)."""
    time.sleep(0.25)
    return os.getpid(), chunk


@pytest.mark.slow
def test_chunks_run_in_the_build_process_while_ray_starts_then_on_ray(ray_tmp):
    from vlitc.run.engine import RayEngine

    engine = RayEngine(Execution(engine="ray", workers=2))
    engine.warm()
    try:
        got = list(engine.map(_where, None, range(80)))
    finally:
        engine.close()
    assert [c for _pid, c in got] == list(range(80))  # in order, each once
    here = [c for pid, c in got if pid == os.getpid()]
    assert here and here == list(range(len(here)))  # the first ones, here
    assert len(here) < 80 and {pid for pid, _c in got[len(here):]}.isdisjoint({os.getpid()})


@pytest.mark.slow
def test_closing_a_local_ray_stops_its_monitor_first_and_leaves_none_of_its_processes(ray_tmp, monkeypatch):
    """Ray's shutdown would stop the GCS before the autoscaler monitor and wait out a second of
    the monitor's SIGTERM handler; the engine kills the monitor first (the layout of the Ray
    the project installs: a Ray that laid it out otherwise would fail this test)."""
    import psutil
    import ray

    from vlitc.run.engine import RayEngine

    before = {p.pid for p in psutil.Process().children(recursive=True)}  # other tests' servers
    engine = RayEngine(Execution(engine="ray", workers=2))
    assert [c for _pid, c in engine._map(_where, None, range(2))] == [0, 1]
    monitor = [info.process for info in ray._private.worker._global_node.all_processes["monitor"]]
    started = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert monitor and started
    at_shutdown: list = []
    shutdown = ray.shutdown

    def recorded() -> None:
        at_shutdown.extend(p.poll() for p in monitor)
        shutdown()

    monkeypatch.setattr(ray, "shutdown", recorded)
    engine.close()
    assert at_shutdown == [-signal.SIGKILL]  # gone before Ray's shutdown began
    assert not ray.is_initialized()
    psutil.wait_procs(started, timeout=10)
    assert not [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


_KEPT: list[bytes] = []


def _resident_after(job: object, chunk: str) -> int:
    """A chunk run in a pool worker: this worker's resident MiB at its end; the ``free`` chunk
    first allocates and frees 300 MB of malloc'd blocks (the last one kept: the top of the
    heap stays in use, so glibc cannot shrink it by itself)."""
    if chunk == "free":
        blocks = [bytes(1000) + bytes([i % 256]) for i in range(300_000)]
        _KEPT.append(blocks[-1])
        del blocks
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim, /proc")
def test_a_pool_worker_hands_back_what_its_chunks_freed_every_few_chunks_and_between_steps():
    from types import SimpleNamespace

    from vlitc.run import engine as eng

    pool = eng.LocalEngine(Execution(workers=1))
    step = SimpleNamespace(key="one")
    try:
        # one worker: the chunks run in order, each reporting before its own trim, if any
        rss = list(pool.map(_resident_after, step, ["free"] + ["keep"] * (eng.TRIM_EVERY - 1) + ["after"]))
        freed = list(pool.map(_resident_after, step, ["free"]))
        next_step = list(pool.map(_resident_after, SimpleNamespace(key="two"), ["after"]))
    finally:
        pool.close()
    assert abs(rss[1] - rss[0]) < 50  # the chunks of a step reuse what the last one freed
    assert rss[eng.TRIM_EVERY - 1] - rss[eng.TRIM_EVERY] > 200, rss  # handed back after a few
    assert freed[0] - next_step[0] > 200, (freed, next_step)  # and before another step's chunks


_IMPORTED_AT_START = """
import sys
from vlitc.run import engine as eng
from vlitc.run.engine import Execution

def imported(_job, name):
    return name in sys.modules

if __name__ == "__main__":
    pool = eng.LocalEngine(Execution(workers=2))
    try:
        pool.warm()
        names = ["vlitc.ops.tasks.caption", "vlitc.ops.exporters.llava", "vlitc.ops.sources.coco",
                 "imagesize", "zstandard", "PIL.Image"]
        print(all(pool.map(imported, None, names)))
    finally:
        pool.close()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the local pool forks from a server on Linux")
def test_a_pool_worker_starts_with_every_op_imported(tmp_path):
    """The local pool's workers are forked from a server that has imported the ops and the
    libraries their chunks use (started as the build begins): a worker's first chunk imports
    nothing. (In a process of its own: a process has one such server, started once.)"""
    script = tmp_path / "imported.py"
    script.write_text(_IMPORTED_AT_START)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def _checkers_held(spec: object, chunk: str) -> int:
    """A chunk run in a pool worker: with ``check``, the images ``spec`` names checked as a
    source's worker checks them (its checker kept for the step's next runs); the checkers the
    worker then holds."""
    from vlitc import images

    if chunk == "check":
        found, _rows = images.check_rows(spec)
        assert found["1.jpg"].ok
    return len(images._WORKER_CHECKERS)


def test_a_pool_worker_lets_go_of_a_steps_image_checkers_when_another_step_begins(tmp_path):
    """A worker keeps a source step's image checker (with its folder's listing: 200 MB for 2M
    images) for that step's runs only, not for the rest of the build."""
    from types import SimpleNamespace

    from vlitc.images import ImageChecker
    from vlitc.run import engine as eng

    make_image(tmp_path / "img" / "1.jpg")
    pool = eng.LocalEngine(Execution(workers=1))
    try:
        spec = ImageChecker(tmp_path / "img").rows(["1.jpg"])  # one source's checker, as plain data
        source = list(pool.map(_checkers_held, spec, ["check", "check", "look"]))
        task = list(pool.map(_checkers_held, SimpleNamespace(key="task"), ["look"]))
    finally:
        pool.close()
    assert source == [1, 1, 1] and task == [0]


def test_a_staged_output_in_release_positions_is_put_in_their_order():
    """The order of staged lines given their release positions: for a permutation, its inverse
    (no sort); with a repeated or missing position, the stable sort's order."""
    import numpy as np

    from vlitc.run.runners import _inverse

    rng = np.random.default_rng(1)
    perm = rng.permutation(1000).astype(np.int32)
    assert _inverse(perm).tolist() == np.argsort(perm, kind="stable").tolist()
    assert _inverse(perm).dtype == np.int32
    for odd in (np.array([2, 0, 2, 1]), np.array([3, 0, 5]), np.array([1, -1, 0])):
        assert _inverse(odd).tolist() == np.argsort(odd, kind="stable").tolist()
    assert len(_inverse(np.zeros(0, dtype=np.int32))) == 0


def test_a_task_run_over_one_run_of_its_input_tells_progress_from_the_steps_start(tmp_path):
    from vlitc.ops.base import OpContext

    seen: list[dict] = []
    ctx = OpContext(seed=0, recipe_dir=tmp_path, recipe={}, _emit=seen.append)
    with ctx.progress_from(20_000, 50_000):
        ctx.emit({"event": "progress", "step": "task:t", "done": 10_000})
        ctx.emit({"event": "warning", "step": "task:t", "message": "m"})
    ctx.emit({"event": "progress", "step": "task:t", "done": 5})
    assert seen == [{"event": "progress", "step": "task:t", "done": 30_000, "total": 50_000},
                    {"event": "warning", "step": "task:t", "message": "m"},
                    {"event": "progress", "step": "task:t", "done": 5}]
