"""Throughput of the generator layer against a loopback OpenAI-compatible server with a fixed
250 ms latency, side by side with the bare ``openai`` async client behind a semaphore.

For max_concurrency 16, 64 and 256 it prints requests/second, that rate as a fraction of the
ideal max_concurrency / latency, and vlitc's rate as a ratio to the bare client's in the same
run. vlitc runs with everything on: the request store (a fresh diskcache per run, every
response committed), rpm/tpm limits (set high enough not to bind), retries and cost accounting.

Rounds of bare and vlitc are interleaved (alternating which goes first); the table shows medians
over rounds, the ratio of the median rates and the median of the per-round ratios, and the client
process's CPU milliseconds per request (client and server share the CPU, so every extra CPU
millisecond in the client lowers throughput; this column is steadier than the rates).

    python benchmarks/bench_llm.py [--latency 0.25] [--per-slot 8] [--rounds 3] [--levels 16 64]
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
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlitc.llm.fakeserver", "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split("listening on ", 1)[1].strip()


def messages(tag: str, i: int) -> list[dict]:
    return [
        {"role": "system", "content": "You are a visual assistant."},
        {"role": "user", "content": f"Describe scene {tag}-{i}: two cats on a couch."},
    ]


async def bare(url: str, conc: int, n: int, tag: str) -> tuple[float, float]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key="bench", max_retries=0)
    sem = asyncio.Semaphore(conc)

    async def one(i: int) -> None:
        async with sem:
            r = await client.chat.completions.create(
                model="fake", messages=messages(tag, i), max_tokens=256
            )
            assert r.choices[0].message.content

    t, c = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(i) for i in range(n)))
    dt, dc = time.perf_counter() - t, time.process_time() - c
    await client.close()
    return n / dt, 1000 * dc / n


def ours(url: str, conc: int, n: int, tag: str) -> tuple[float, float]:
    from vlitc.llm import Request, session

    gens = {
        "g": {
            "provider": "openai",
            "model": "fake",
            "base_url": url,
            "max_concurrency": conc,
            "rpm": 10_000_000,
            "tpm": 10_000_000_000,
            "max_tokens": 256,
            "prices": {"input": 0.15, "output": 0.6},
        }
    }
    reqs = [Request(messages=messages(tag, i)) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp, session({"generators": gens}, Path(tmp)) as s:
        client = s.client("g")
        client.run([Request(messages=messages(tag + "-warm", 0))], step="warm")  # build the SDK
        t, c = time.perf_counter(), time.process_time()
        out = client.run(reqs, step="bench")
        dt, dc = time.perf_counter() - t, time.process_time() - c
        assert all(r.error is None and not r.cached for r in out)
        assert s.usage()["steps"]["bench"]["calls"] == n
    return n / dt, 1000 * dc / n


def level(url: str, conc: int, n: int, rounds: int) -> dict[str, float]:
    """Interleaved rounds of bare and vlitc at one concurrency (alternating which goes first);
    medians of the rates, of the per-round ratios and of the client CPU per request."""
    b, o = [], []
    for r in range(rounds):
        if r % 2:
            o.append(ours(url, conc, n, f"o{conc}.{r}"))
        b.append(asyncio.run(bare(url, conc, n, f"b{conc}.{r}")))
        if not r % 2:
            o.append(ours(url, conc, n, f"o{conc}.{r}"))
    med = statistics.median
    return {
        "bare": med(x[0] for x in b),
        "ours": med(x[0] for x in o),
        "ratio": med(y[0] / x[0] for x, y in zip(b, o, strict=True)),
        "bare_cpu": med(x[1] for x in b),
        "ours_cpu": med(x[1] for x in o),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.25)
    ap.add_argument("--per-slot", type=int, default=8, help="requests per concurrency slot")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--levels", type=int, nargs="+", default=list(LEVELS))
    args = ap.parse_args()
    proc, url = start_server(args.latency)
    try:
        asyncio.run(bare(url, 4, 8, "warmup"))
        print(
            f"loopback server {url}, latency {args.latency * 1000:.0f} ms, "
            f"{args.per_slot} requests per slot, median of {args.rounds} interleaved rounds"
        )
        print(
            f"{'conc':>5} {'ideal/s':>8} {'bare/s':>8} {'bare%':>6} {'vlitc/s':>8} {'vlitc%':>7} "
            f"{'ratio of medians':>16} {'median ratio':>12} {'client CPU ms/req bare / vlitc':>31}"
        )
        for conc in args.levels:
            m = level(url, conc, conc * args.per_slot, args.rounds)
            ideal = conc / args.latency
            print(
                f"{conc:>5} {ideal:>8.0f} {m['bare']:>8.1f} {m['bare'] / ideal:>6.2f} "
                f"{m['ours']:>8.1f} {m['ours'] / ideal:>7.2f} {m['ours'] / m['bare']:>16.2f} "
                f"{m['ratio']:>12.2f} {m['bare_cpu']:>20.2f} / {m['ours_cpu']:.2f}",
                flush=True,
            )
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
