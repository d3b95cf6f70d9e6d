"""Throughput of the generator layer against a loopback OpenAI-compatible server with a fixed
250 ms latency, side by side with the bare ``openai`` async client behind a semaphore.

For max_concurrency 16, 64 and 256 it prints requests/second, that rate as a fraction of the
ideal max_concurrency / latency, and vlitc's rate as a ratio to the bare client's in the same
run. vlitc runs with everything on: the request store (a fresh diskcache per run, every
response committed), rpm/tpm limits (set high enough not to bind), retries and cost accounting.

    python benchmarks/bench_llm.py [--latency 0.25] [--per-slot 8] [--rounds 3]
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


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "vlitc.llm.fakeserver", "--latency", str(latency)],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split("listening on ", 1)[1].strip()


def messages(tag: str, i: int) -> list[dict]:
    return [{"role": "system", "content": "You are a visual assistant."},
            {"role": "user", "content": f"Describe scene {tag}-{i}: two cats on a couch."}]


async def bare(url: str, conc: int, n: int, tag: str) -> float:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key="bench", max_retries=0)
    sem = asyncio.Semaphore(conc)

    async def one(i: int) -> None:
        async with sem:
            r = await client.chat.completions.create(model="fake", messages=messages(tag, i),
                                                     max_tokens=256)
            assert r.choices[0].message.content

    t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    dt = time.perf_counter() - t
    await client.close()
    return n / dt


def ours(url: str, conc: int, n: int, tag: str) -> float:
    from vlitc.llm import Request, session

    gens = {"g": {"provider": "openai", "model": "fake", "base_url": url, "max_concurrency": conc,
                  "rpm": 10_000_000, "tpm": 10_000_000_000, "max_tokens": 256,
                  "prices": {"input": 0.15, "output": 0.6}}}
    reqs = [Request(messages=messages(tag, i)) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp, session({"generators": gens}, Path(tmp)) as s:
        client = s.client("g")
        client.run([Request(messages=messages(tag + "-warm", 0))], step="warm")  # build the SDK
        t = time.perf_counter()
        out = client.run(reqs, step="bench")
        dt = time.perf_counter() - t
        assert all(r.error is None and not r.cached for r in out)
        assert s.usage()["steps"]["bench"]["calls"] == n
    return n / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.25)
    ap.add_argument("--per-slot", type=int, default=8, help="requests per concurrency slot")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    proc, url = start_server(args.latency)
    try:
        asyncio.run(bare(url, 4, 8, "warmup"))
        print(f"loopback server {url}, latency {args.latency * 1000:.0f} ms, "
              f"{args.per_slot} requests per slot, median of {args.rounds} rounds")
        print(f"{'conc':>5} {'ideal/s':>8} {'bare/s':>8} {'bare%':>6} {'vlitc/s':>8} {'vlitc%':>7} {'vlitc/bare':>10}")
        for conc in LEVELS:
            n = conc * args.per_slot
            b, o = [], []
            for r in range(args.rounds):  # interleaved, alternating which goes first
                if r % 2:
                    o.append(ours(url, conc, n, f"o{conc}.{r}"))
                b.append(asyncio.run(bare(url, conc, n, f"b{conc}.{r}")))
                if not r % 2:
                    o.append(ours(url, conc, n, f"o{conc}.{r}"))
            ideal = conc / args.latency
            bm, om = statistics.median(b), statistics.median(o)
            print(f"{conc:>5} {ideal:>8.0f} {bm:>8.1f} {bm / ideal:>6.2f} {om:>8.1f} {om / ideal:>7.2f} "
                  f"{om / bm:>10.2f}", flush=True)
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
