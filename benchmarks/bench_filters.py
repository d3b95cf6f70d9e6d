"""Filter throughput and scale, measured side by side in one run.

    python benchmarks/bench_filters.py [--images 64] [--texts 2000] [--sizes 100000,1000000]

1. clip_match scoring vs bare open_clip batch encoding of the same images and texts
   (a randomly initialised ViT-B-32 loaded from a local checkpoint; goal: ratio >= 0.8).
2. semantic-dedup embedding (through the per-text cache) vs bare SentenceTransformer.encode of
   the same texts (goal: ratio >= 0.9).
3. at each size, time and peak memory of MinHash near-duplicate detection and of the semantic
   neighbour search given embeddings (goal: each within 5 minutes and 4 GB at 1M). Each scale
   measurement runs in its own process so that its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = ("a the man woman dog cat red blue small large table street car bus tree sky park "
         "sits stands holds next to near on in with two three bright dark wooden green old young "
         "window kitchen plate food grass snow water beach road building sign light people").split()


def responses(n: int, seed: int = 0) -> list[str]:
    """``n`` generated-looking responses, 5% of them light edits of an earlier one."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab = np.array(WORDS + [f"w{i}" for i in range(5000)])
    out: list[str] = []
    for i in range(n):
        if i > 20 and rng.random() < 0.05:
            src = out[int(rng.integers(0, i))].split()
            src[int(rng.integers(0, len(src)))] = str(rng.choice(vocab))
            out.append(" ".join(src))
        else:
            out.append(" ".join(rng.choice(vocab, int(rng.integers(25, 60)))))
    return out


def embeddings(n: int, seed: int = 0):
    """Clustered unit vectors (topics plus noise), 5% of them near copies of an earlier one."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(1000, 384)).astype(np.float32)
    emb = np.empty((n, 384), dtype=np.float32)
    for i in range(0, n, 65536):  # in chunks, so generation does not dominate peak memory
        m = min(n, i + 65536) - i
        emb[i : i + m] = centres[rng.integers(0, 1000, m)]
        emb[i : i + m] += 1.2 * rng.standard_normal((m, 384), dtype=np.float32)
    dup = np.flatnonzero(rng.random(n) < 0.05)
    dup = dup[dup > 0]
    emb[dup] = emb[rng.integers(0, dup)] + 0.1 * rng.normal(size=(len(dup), 384)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb


def peak_rss_gb() -> float:
    """This process's peak resident set (VmHWM; unlike ru_maxrss it does not survive exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024 / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def one(kind: str, n: int) -> dict:
    """One scale measurement in this process: seconds and peak RSS."""
    from vlitc.quality.neighbours import cosine_neighbours, minhash_neighbours

    if kind == "minhash":
        data = responses(n)
        before = peak_rss_gb()
        t = time.perf_counter()
        first, _ = minhash_neighbours(data, [list(range(n))], 0.8)
    else:
        data = embeddings(n)
        before = peak_rss_gb()
        t = time.perf_counter()
        first, _ = cosine_neighbours(data, [list(range(n))], 0.9)
    secs = time.perf_counter() - t
    peak = peak_rss_gb()
    return {"kind": kind, "n": n, "seconds": round(secs, 1), "peak_gb": round(peak, 2),
            "data_gb": round(before, 2),
            "duplicates": int((first >= 0).sum())}


def bench_clip(n_images: int) -> None:
    import numpy as np
    import open_clip
    import torch
    from PIL import Image

    from vlitc.ops.base import OpContext
    from vlitc.ops.filters.clip import ClipMatchFilter, load_model
    from vlitc.records import sample

    tmp = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    for i in range(n_images):
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(tmp / f"{i}.jpg")
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    torch.save(model.state_dict(), tmp / "vitb32.pt")
    texts = [f"What is in the picture? A photo number {i} with a dog on a bench." for i in range(n_images)]
    samples = [sample(str(i), "t", [{"role": "user", "content": texts[i].split("?")[0] + "?"},
                                    {"role": "assistant", "content": texts[i].split("? ")[1]}],
                      image={"root": "b", "path": f"{i}.jpg", "sha256": f"img{i}"})
               for i in range(n_images)]
    params = {"model": "ViT-B-32", "pretrained": str(tmp / "vitb32.pt"), "batch_size": 32,
              "long_text": "turns_mean"}
    caches: dict = {}

    class Mem(dict):
        def set(self, k, v):
            self[k] = v

    ctx = OpContext(seed=1, recipe_dir=tmp, image_roots={"b": tmp},
                    _item_cache=lambda ns: caches.setdefault(ns, Mem()))
    clip = load_model(params, ctx)  # load once, outside both timings
    bare_prompts = ["This is a picture about this conversation: " + t for t in texts]

    def bare() -> None:
        with torch.no_grad():
            for i in range(0, n_images, 32):
                ims = [clip.preprocess(Image.open(tmp / f"{j}.jpg").convert("RGB"))
                       for j in range(i, min(i + 32, n_images))]
                clip.model.encode_image(torch.stack(ims).to(clip.device))
                clip.model.encode_text(clip.tokenizer(bare_prompts[i : i + 32]).to(clip.device))

    t = time.perf_counter()
    bare()
    t_bare = time.perf_counter() - t
    t = time.perf_counter()
    ClipMatchFilter(params).measure(samples, ctx)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    ClipMatchFilter(params).measure(samples, ctx)
    t_cached = time.perf_counter() - t
    print(f"clip_match ({clip.device}, {n_images} images, ViT-B-32): bare open_clip "
          f"{n_images / t_bare:.1f} img/s, clip_match {n_images / t_ours:.1f} img/s, "
          f"ratio {t_bare / t_ours:.2f} (goal >= 0.8); rebuild with cached image embeddings "
          f"{n_images / t_cached:.1f} img/s")


def bench_embed(n_texts: int) -> None:
    import diskcache

    from vlitc.ops.base import OpContext
    from vlitc.ops.filters.dedup import cached_embeddings
    from vlitc.quality.embeddings import load_minilm

    texts = responses(n_texts, seed=1)
    model = load_minilm()
    model.encode(texts[:64], batch_size=64)  # warm up
    t = time.perf_counter()
    model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    t_bare = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as d:
        cache = diskcache.Cache(d)
        ctx = OpContext(seed=1, recipe_dir=Path(d), _item_cache=lambda ns: cache)
        t = time.perf_counter()
        cached_embeddings(texts, ctx, 64)
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        cached_embeddings(texts, ctx, 64)
        t_hit = time.perf_counter() - t
        cache.close()
    print(f"semantic dedup embedding ({n_texts} texts, {model.device}): bare encode "
          f"{n_texts / t_bare:.0f} texts/s, ours (diskcache writes included) "
          f"{n_texts / t_ours:.0f} texts/s, ratio {t_bare / t_ours:.2f} (goal >= 0.9); "
          f"rebuild from cache {n_texts / t_hit:.0f} texts/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--skip", default="", help="comma list of clip,embed,scale")
    ap.add_argument("--one", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]))))
        return
    skip = set(args.skip.split(","))
    if "clip" not in skip:
        bench_clip(args.images)
    if "embed" not in skip:
        bench_embed(args.texts)
    if "scale" in skip:
        return
    for n in [int(s) for s in args.sizes.split(",") if s]:
        for kind in ("minhash", "semantic"):
            proc = subprocess.run([sys.executable, __file__, "--one", kind, str(n)],
                                  capture_output=True, text=True)
            if proc.returncode:
                print(f"{kind} at {n}: failed\n{proc.stderr[-2000:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            ok = r["seconds"] <= 300 and r["peak_gb"] <= 4
            print(f"{kind} neighbours at {n}: {r['seconds']} s, peak RSS {r['peak_gb']} GB "
                  f"(of which {r['data_gb']} GB before the search: interpreter and the data), "
                  f"{r['duplicates']} duplicates found "
                  f"[{'within' if ok else 'OVER'} 5 min / 4 GB]")


if __name__ == "__main__":
    main()
