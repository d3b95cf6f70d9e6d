"""Throughput of LLM fan-out against a loopback OpenAI-compatible server with a fixed latency,
side by side with the bare ``openai`` async client sending the same requests behind a semaphore.

For max_concurrency 16, 64 and 256, without and with 1% slow answers (5 s instead of the fixed
latency; the same requests are slow for every client: the server picks them by a hash of the
user message), it times:

* ``step``: what a user runs, a ``generate`` step (LLaVA conversation pack, llava context) over
  synthetic COCO-like records through vlitc: requests built from the records, streamed through
  the session (store committed per answer, leases, budget reservations, retries, accounting),
  answers parsed into samples;
* ``client``: the session's client alone (``Client.run`` over the same requests);
* ``bare`` (the baseline): the openai SDK's ``AsyncOpenAI`` built as vlitc builds it (no SDK
  retries, 120 s timeout, the SDK's default connection pool: the same limits on both sides)
  sending exactly those requests with ``chat.completions.create`` behind an
  ``asyncio.Semaphore`` of the same size, to the same server;
* with ``--fanout N``, ``fanN``: the same generate step fanned out over N local worker
  processes (the records in N chunks, as ``execution: {workers: N, chunk: ...}`` cuts them),
  sharing one governor (limits, budget) and one store; ``max_concurrency`` is divided between
  the workers, so the same number of requests is in flight. Worker start-up (imports) is done
  before the clock starts.

Each vlitc run starts on a fresh cache, so every request is sent. Rounds of the three are
interleaved (the order rotates per round); the table shows the median rate of each and the
median per-round ratio to the bare client (goal: at least 0.9 everywhere), and client CPU
milliseconds per request (client and server share the CPUs).

    python benchmarks/bench_llm.py [--latency 0.25] [--per-slot 8] [--rounds 3] [--levels 16 64]
                                   [--fanout 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LEVELS = (16, 64, 256)
SLOW = (0.0, 0.01)
MODEL = "fake"
MAX_TOKENS = 256


def start_server(latency: float, slow_rate: float, slow_latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlitc.llm.fakeserver", "--latency", str(latency),
         "--slow-rate", str(slow_rate), "--slow-latency", str(slow_latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split("listening on ", 1)[1].strip()


def records(tag: str, n: int) -> list[dict]:
    """COCO-like records, each with its own captions and boxes (so each request differs)."""
    return [{
        "id": f"{tag}-{i}", "source": "coco",
        "image": {"root": "coco", "path": f"{i:012d}.jpg", "width": 640, "height": 480},
        "captions": [f"Scene {tag}-{i}: two cats sleep on a pink couch.",
                     "A pair of cats lying next to remotes."],
        "objects": [{"id": 1, "category": "cat", "bbox": [12.0, 52.0, 316.0, 470.0]},
                    {"id": 2, "category": "remote", "bbox": [40.0, 72.0, 176.0, 118.0]}],
    } for i in range(n)]


def generator(url: str, conc: int) -> dict:
    return {"provider": "openai", "model": MODEL, "base_url": url, "api_key_env": "BENCH_KEY",
            "max_concurrency": conc, "rpm": 10_000_000, "tpm": 10_000_000_000,
            "max_tokens": MAX_TOKENS, "prices": {"input": 0.15, "output": 0.6}}


def step_op():
    from vlitc.ops.registry import get

    return get("task", "generate")({"source": "coco", "generator": "g",
                                    "prompt": "llava/conversation"}, label="conv")


def context(s, gens: dict):
    from vlitc.ops.base import OpContext

    root = Path(__file__).resolve().parents[1]
    return OpContext(seed=7, recipe_dir=root, step_id="task:conv", generators=gens,
                     _client=s.client)


def the_requests(recs: list[dict]) -> list:
    """The requests the generate step sends for ``recs`` (its own format_request)."""
    from vlitc.llm.prompts import load_pack
    from vlitc.ops.base import OpContext

    op = step_op()
    ctx = OpContext(seed=7, recipe_dir=Path(__file__).resolve().parents[1], step_id="task:conv")
    pack = load_pack("llava/conversation", ctx.recipe_dir)
    return [op.format_request(r, ctx, pack)[1] for r in recs]


async def bare(url: str, conc: int, reqs: list) -> tuple[float, float]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key="bench", max_retries=0, timeout=120.0)  # as vlitc
    sem = asyncio.Semaphore(conc)

    async def one(req) -> None:
        kwargs = {"model": MODEL, "messages": req.messages, "max_tokens": req.max_tokens or MAX_TOKENS}
        for k in ("temperature", "top_p"):
            if getattr(req, k) is not None:
                kwargs[k] = getattr(req, k)
        async with sem:
            r = await client.chat.completions.create(**kwargs)
            assert r.choices[0].message.content

    await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "warm"}])
    t, c = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(r) for r in reqs))
    dt, dc = time.perf_counter() - t, time.process_time() - c
    await client.close()
    return len(reqs) / dt, 1000 * dc / len(reqs)


def ours(url: str, conc: int, recs: list[dict], reqs: list, mode: str) -> tuple[float, float]:
    from vlitc.llm import Request, session

    gens = {"g": generator(url, conc)}
    with tempfile.TemporaryDirectory() as tmp, session({"generators": gens}, Path(tmp)) as s:
        client = s.client("g")
        client.run([Request(messages=[{"role": "user", "content": "warm"}])], step="warm")
        t, c = time.perf_counter(), time.process_time()
        if mode == "step":
            out = list(step_op().run(recs, context(s, gens)))
            assert len(out) == len(recs) and all(x["turns"] for x in out)
        else:
            resp = client.run(reqs, step="task:conv")
            assert all(r.error is None and not r.cached for r in resp)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        assert s.usage()["steps"]["task:conv"]["calls"] == len(reqs)
    return len(reqs) / dt, 1000 * dc / len(reqs)


def fanned(url: str, conc: int, recs: list[dict], workers: int) -> tuple[float, float]:
    """The generate step over ``workers`` local processes, as a build's map step runs it;
    client CPU is the build process's alone (the workers' is not counted)."""
    from vlitc.llm import fanout, session
    from vlitc.run.engine import Execution, LocalEngine
    from vlitc.run.shards import Job, encode, run_chunk

    gens = {"g": generator(url, conc)}
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp, session({"generators": gens}, Path(tmp) / "llm") as s:
        engine = LocalEngine(Execution(workers=workers))
        share, stop = fanout.serve(engine, s)
        try:
            def job(key: str) -> Job:
                llm = fanout.LLMJob(share, gens, {}, str(Path(tmp) / "llm"), workers)
                return Job(kind="task", key=key, family="task", op="generate",
                           params=step_op().params, label="conv", seed=7, recipe_dir=str(root),
                           step_id="task:conv", store=tmp, generators=gens, llm=llm)

            warm = [encode([r])[0] for r in records(f"warm{time.time()}", workers)]
            list(engine.map(run_chunk, job("warm"), warm))  # start and import in every worker
            size = -(-len(recs) // workers)
            chunks = [encode(recs[i:i + size])[0] for i in range(0, len(recs), size)]
            t, c = time.perf_counter(), time.process_time()
            out = list(engine.map(run_chunk, job("run"), chunks))
            dt, dc = time.perf_counter() - t, time.process_time() - c
        finally:
            stop()
            engine.close()
    assert all(r.error is None for r in out) and sum(r.count for r in out) == len(recs)
    assert sum(r.llm["accounting"]["steps"]["task:conv"]["calls"] for r in out) == len(recs)
    return len(recs) / dt, 1000 * dc / len(recs)


def level(url: str, conc: int, n: int, rounds: int, tag: str,
          fan: int = 0) -> dict[str, dict[str, float]]:
    """Interleaved rounds of bare, client and step (and the fanned-out step) at one concurrency
    (the order rotates); medians of the rates, of the per-round ratios to bare and of client
    CPU per request."""
    order = ["bare", "client", "step"] + ([f"fan{fan}"] if fan else [])
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in order}
    for r in range(rounds):
        recs = records(f"{tag}.{r}", n)
        reqs = the_requests(recs)  # the same requests for all of them (hence the same slow ones)
        k = r % len(order)
        for kind in order[k:] + order[:k]:
            if kind == "bare":
                runs[kind].append(asyncio.run(bare(url, conc, reqs)))
            elif kind.startswith("fan"):
                runs[kind].append(fanned(url, conc, recs, fan))
            else:
                runs[kind].append(ours(url, conc, recs, reqs, kind))
    med = statistics.median
    out = {}
    for kind, xs in runs.items():
        out[kind] = {"rate": med(x[0] for x in xs), "cpu": med(x[1] for x in xs),
                     "ratio": med(x[0] / b[0] for x, b in zip(xs, runs["bare"], strict=True))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.25)
    ap.add_argument("--slow-latency", type=float, default=5.0)
    ap.add_argument("--per-slot", type=int, default=8, help="requests per concurrency slot")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--levels", type=int, nargs="+", default=list(LEVELS))
    ap.add_argument("--slow", type=float, nargs="+", default=list(SLOW),
                    help="shares of slow answers to run (default: 0 and 0.01)")
    ap.add_argument("--fanout", type=int, default=0, metavar="N",
                    help="also run the step fanned out over N local worker processes")
    args = ap.parse_args()
    import os

    os.environ.setdefault("BENCH_KEY", "bench")
    print(f"loopback server, latency {args.latency * 1000:.0f} ms (slow answers "
          f"{args.slow_latency:.0f} s), {args.per_slot} requests per slot, median of "
          f"{args.rounds} interleaved rounds; ratio = vlitc rate / bare openai client rate")
    fan = f"fan{args.fanout}"
    extra = f" {fan + '/s':>8} {fan + ' ratio':>10}" if args.fanout else ""
    print(f"{'slow':>5} {'conc':>5} {'reqs':>5} {'bare/s':>8} {'client/s':>9} {'step/s':>8} "
          f"{'client ratio':>12} {'step ratio':>10} {'CPU ms/req bare / client / step':>32}"
          f"{extra}  load")
    for slow in args.slow:
        proc, url = start_server(args.latency, slow, args.slow_latency)
        try:
            for conc in args.levels:
                n = conc * args.per_slot
                m = level(url, conc, n, args.rounds, f"s{slow}c{conc}", args.fanout)
                extra = (f" {m[fan]['rate']:>8.1f} {m[fan]['ratio']:>10.2f}"
                         if args.fanout else "")
                print(f"{slow * 100:>4.0f}% {conc:>5} {n:>5} {m['bare']['rate']:>8.1f} "
                      f"{m['client']['rate']:>9.1f} {m['step']['rate']:>8.1f} "
                      f"{m['client']['ratio']:>12.2f} {m['step']['ratio']:>10.2f} "
                      f"{m['bare']['cpu']:>14.2f} / {m['client']['cpu']:.2f} / {m['step']['cpu']:.2f}"
                      f"{extra}  {os.getloadavg()[0]:.1f}", flush=True)
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
