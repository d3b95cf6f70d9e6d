"""Benchmark: MinHash signatures of generated captions, vlitc's numpy batch against datasketch's
``MinHash`` object per text (the path dedup took before), side by side in one process.

    python benchmarks/bench_minhash.py [--texts 100000] [--num-perm 128] [--ngram 3]

Both get the same word n-gram shingles (hashed once, outside the timing) and must give the same
signatures (checked). Reported: CPU seconds of this process (robust to a loaded machine) and wall
seconds of each, their ratio, and the load average.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vlitc.quality import neighbours as nb  # noqa: E402

WORDS = ("a man woman dog cat two people sitting standing on in the of with near street table "
         "pizza bus train red blue large small plate kitchen field grass skateboard young old "
         "white black green yellow bench tree car truck sign building window wall water boat").split()


def datasketch_signatures(shingles: np.ndarray, counts: np.ndarray, num_perm: int) -> np.ndarray:
    """One datasketch ``MinHash`` per text over its shingles (identity hash: already hashed)."""
    from datasketch import MinHash

    proto = MinHash(num_perm=num_perm, seed=1)
    out = np.zeros((len(counts), num_perm), dtype=np.uint32)
    start = 0
    for j, n in enumerate(counts.tolist()):
        if n:
            m = MinHash(num_perm=num_perm, seed=1, hashfunc=lambda x: x,
                        permutations=proto.permutations, scheme=proto.scheme)
            m.update_batch(shingles[start:start + n].tolist())
            out[j] = m.hashvalues
        start += n
    return out


def numpy_signatures(shingles: np.ndarray, counts: np.ndarray, num_perm: int, texts: list[str],
                     ngram: int) -> np.ndarray:
    return nb.minhash_signatures(texts, num_perm, ngram)[0]


def timed(fn, *args) -> tuple[object, float, float]:
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.process_time() - c0, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=100_000)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--ngram", type=int, default=3)
    args = ap.parse_args()
    rng = random.Random(0)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(9, 16))) for _ in range(args.texts)]
    shingles, counts = nb.Shingler(args.ngram)(texts)
    print(f"{args.texts} captions, {len(shingles)} shingles, num_perm {args.num_perm}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ref, ds_cpu, ds_wall = timed(datasketch_signatures, shingles, counts, args.num_perm)
    ours, np_cpu, np_wall = timed(numpy_signatures, shingles, counts, args.num_perm, texts, args.ngram)
    same = bool((np.asarray(ref) == np.asarray(ours)).all())
    print(f"datasketch MinHash per text: {ds_cpu:.2f} CPU s, {ds_wall:.2f} s wall")
    print(f"vlitc numpy batch (shingling included): {np_cpu:.2f} CPU s, {np_wall:.2f} s wall")
    print(f"speed-up: {ds_cpu / np_cpu:.1f}x CPU, {ds_wall / np_wall:.1f}x wall; same signatures: {same}; "
          f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
