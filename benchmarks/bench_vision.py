"""Vision requests: fan-out throughput of the generator layer against a loopback server with a
fixed latency, side by side with the bare ``openai`` async client sending the same prepared
images, and the cost of image preparation on a first build and on a rebuild.

Throughput: for 16, 64 and 256 requests in flight, every request carries one image (distinct
images, so no two requests share a key). vlitc's images are prepared and cached beforehand (a
warm-up build), as on any build after the first; each request still reads its prepared image
(memory or disk), attaches it as base64 and goes through the store, limits, retries and the
accounting. The bare client sends the same prepared bytes as data URIs it built in advance.
The server looks at each distinct image once (a warm-up round), so that it measures clients,
not its own decoding. Rounds are interleaved; the table gives medians and vlitc / bare.

Preparation: a build of a ``generate`` step with ``image: true`` over N images on a fresh
cache (every image decoded, oriented, resized and encoded once), then a rebuild of the same step
forced to run on the warm cache: ms per image spent preparing, and how many were prepared.

    python benchmarks/bench_vision.py [--latency 0.25] [--per-slot 4] [--rounds 3] [--images 256]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LEVELS = (16, 64, 256)
SIZE = (640, 480)


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "vlitc.llm.fakeserver", "--latency",
                             str(latency)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split("listening on ", 1)[1].strip()


def make_images(folder: Path, n: int) -> list[Path]:
    """``n`` distinct photos-like JPEGs (noise and a coloured square) of :data:`SIZE`."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        px = rng.integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
        px[100:300, 100 + i % 200:300 + i % 200] = (220, 40, 40)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(px).save(path, quality=90)
        out.append(path)
    return out


def sources(paths: list[Path]):
    from vlitc.llm.vision import ImageSource

    return [ImageSource(hashlib.sha256(p.read_bytes()).hexdigest(), str(p)) for p in paths]


def requests(srcs, tag: str):
    from vlitc.llm import Request
    from vlitc.llm.vision import image_part, text_part

    return [Request(messages=[{"role": "system", "content": "You describe images."},
                              {"role": "user", "content": [image_part(s), text_part(
                                  f"Describe image {tag}-{i}.")]}], max_tokens=64)
            for i, s in enumerate(srcs)]


def _gens(url: str, conc: int) -> dict:
    return {"g": {"provider": "openai", "model": "gpt-4o", "base_url": url, "vision": True,
                  "image": {"max_side": 512, "detail": "low"}, "max_concurrency": conc,
                  "rpm": 10_000_000, "tpm": 10_000_000_000, "prices": {"input": 2.5, "output": 10}}}


def ours(url: str, conc: int, srcs, cache: Path, tag: str) -> float:
    from vlitc.llm import session

    reqs = requests(srcs, tag)
    with session({"generators": _gens(url, conc)}, cache) as s:
        client = s.client("g")
        t = time.perf_counter()
        out = client.run(reqs, step="bench")
        dt = time.perf_counter() - t
        assert all(r.error is None and not r.cached for r in out)
        assert s.images.prepared_count == 0  # prepared by the warm-up build
    return len(reqs) / dt


async def bare(url: str, conc: int, uris: list[str], tag: str) -> float:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key="bench", max_retries=0)
    sem = asyncio.Semaphore(conc)

    async def one(i: int, uri: str) -> None:
        async with sem:
            r = await client.chat.completions.create(model="gpt-4o", max_tokens=64, messages=[
                {"role": "system", "content": "You describe images."},
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": uri, "detail": "low"}},
                    {"type": "text", "text": f"Describe image {tag}-{i}."}]}])
            assert r.choices[0].message.content

    t = time.perf_counter()
    await asyncio.gather(*(one(i, u) for i, u in enumerate(uris)))
    dt = time.perf_counter() - t
    await client.close()
    return len(uris) / dt


def throughput(args, url: str, root: Path) -> None:
    from vlitc.llm import session

    print(f"\nfan-out: loopback latency {args.latency * 1000:.0f} ms, one {SIZE[0]}x{SIZE[1]} "
          f"JPEG per request prepared to 512 px (detail low), {args.per_slot} requests per slot, "
          f"median of {args.rounds} interleaved rounds")
    print(f"{'in flight':>9} {'ideal/s':>8} {'bare/s':>8} {'vlitc/s':>8} {'vlitc / bare':>12}")
    for conc in args.levels:
        n = conc * args.per_slot
        paths = make_images(root / f"img{conc}", n)
        srcs = sources(paths)
        cache = root / f"cache{conc}"
        with session({"generators": _gens(url, conc)}, cache) as s:  # prepare every image once
            client = s.client("g")
            prepared = [s.images.prepared(src, client.prep) for src in srcs]
        uris = [p.data_uri() for p in prepared]
        asyncio.run(bare(url, conc, uris, "warm"))  # the server decodes each image once
        b, o = [], []
        for r in range(args.rounds):
            if r % 2:
                o.append(ours(url, conc, srcs, cache, f"o{conc}.{r}"))
            b.append(asyncio.run(bare(url, conc, uris, f"b{conc}.{r}")))
            if not r % 2:
                o.append(ours(url, conc, srcs, cache, f"o{conc}.{r}"))
        med = statistics.median
        ratio = med(y / x for x, y in zip(b, o, strict=True))
        print(f"{conc:>9} {conc / args.latency:>8.0f} {med(b):>8.1f} {med(o):>8.1f} "
              f"{ratio:>12.2f}", flush=True)


def preparation(args, url: str, root: Path) -> None:
    import yaml

    from vlitc import api

    folder = root / "prep"
    make_images(folder, args.images)
    recipe = {
        "vlitc": 1, "name": "bench-vision", "version": "0.1.0", "seed": 1,
        "sources": {"images": {"type": "image_folder", "images": str(folder)}},
        "generators": {"v": {**_gens(url, 64)["g"], "image": {"max_side": 768, "detail": "high"},
                             "api_key_env": "BENCH_KEY"}},
        "tasks": {"caption": {"kind": "generate", "source": "images", "generator": "v",
                              "image": True, "prompt": "sharegpt4v/caption", "context": "none",
                              "parse": "answer", "instructions": ["Describe the image."]}},
        "outputs": [{"format": "llava", "path": "train.json"}],
        "report": {"indicators": {"response": False}},
    }
    path = root / "bench-vision.yaml"
    path.write_text(yaml.safe_dump(recipe))
    os.environ["BENCH_KEY"] = "k"
    print(f"\npreparation: {args.images} JPEGs {SIZE[0]}x{SIZE[1]} -> 768 px JPEG q90")
    print(f"{'build':>8} {'prepared':>9} {'prep ms/image':>14} {'build s':>8}")
    for label, force in (("first", ()), ("rebuild", ("task:caption",))):
        t = time.perf_counter()
        out = api.build(path, out_dir=root / f"rel-{label}", cache_dir=root / "cache-prep",
                        force=force)
        llm = out.manifest["llm"]
        seconds = llm.get("images_prepare_seconds", 0.0)
        print(f"{label:>8} {llm['images_prepared']:>9} "
              f"{1000 * seconds / args.images:>14.2f} {time.perf_counter() - t:>8.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.25)
    ap.add_argument("--per-slot", type=int, default=4, help="requests per slot in flight")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--levels", type=int, nargs="+", default=list(LEVELS))
    ap.add_argument("--images", type=int, default=256, help="images in the preparation build")
    args = ap.parse_args()
    proc, url = start_server(args.latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            throughput(args, url, Path(tmp))
            preparation(args, url, Path(tmp))
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
