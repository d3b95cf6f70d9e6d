"""What checking every object and swapping releases whole costs, against bare baselines.

    python benchmarks/bench_release.py [--samples 200000] [--files 2000] [--repeat 5]

Side by side in one run, medians of ``--repeat`` rounds:

* reading a step output: ``Store.read`` (each shard checked against its sha256 before any record
  is given out) against the same shards decompressed and parsed line by line with no check;
* publishing a release of ``--files`` files: first publish (staged, every file copied from the
  cache and checked), a rebuild with one file changed (unchanged files hard-linked, one copied,
  folder swapped) and a rebuild with none changed (manifest only), against ``shutil.copytree``
  of the same files (the bare cost of writing the folder).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import orjson

from vlitc.release import layout
from vlitc.run.store import ZST, Store


def _sample(i: int) -> dict:
    return {"id": f"caption/{i}", "task": "caption", "source": "coco",
            "image": {"root": "coco", "path": f"{i:012d}.jpg", "width": 640, "height": 480},
            "turns": [{"role": "user", "content": "Describe the image briefly."},
                      {"role": "assistant", "content": f"A red square number {i} on a table."}],
            "meta": {"split": "train"}}


def _unchecked(store: Store, output: dict) -> int:
    import zstandard

    n = 0
    for shard in output["shards"]:
        packed = store.object_path(shard["sha256"] + ZST).read_bytes()
        for line in zstandard.ZstdDecompressor().decompressobj().decompress(packed).splitlines():
            orjson.loads(line)
            n += 1
    return n


def _count(records) -> int:
    return sum(1 for _ in records)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200_000)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = Store(root / "cache")
        w = store.writer()
        w.write_all(_sample(i) for i in range(args.samples))
        output = w.close()
        files = []
        for i in range(args.files):
            sha, size = store.put_bytes(orjson.dumps([_sample(i * 10 + k) for k in range(10)]))
            files.append({"path": f"data/part-{i:05d}.json", "sha256": sha, "size": size,
                          "records": 10, "step": "export:0"})
        plain = root / "plain"
        plain.mkdir()
        for f in files:
            (plain / f["path"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(store.object_path(f["sha256"]), plain / f["path"])
        rows: dict[str, list[float]] = {k: [] for k in (
            "read, unchecked (baseline)", "read, checked", "copytree (baseline)",
            "publish, first", "publish, one file changed", "publish, nothing changed")}
        for r in range(args.repeat):  # interleaved, so machine noise hits all alike
            rows["read, unchecked (baseline)"].append(_timed(partial(_unchecked, store, output)))
            rows["read, checked"].append(_timed(partial(_count, store.read(output))))
            rows["copytree (baseline)"].append(_timed(partial(shutil.copytree, plain, root / f"copy{r}")))
            out, state = root / f"rel{r}", root / f"state{r}.json"
            sha, size = store.put_bytes(orjson.dumps({"round": r}))
            changed = [*files[1:], {**files[0], "sha256": sha, "size": size}]
            for name, release in (("publish, first", files), ("publish, one file changed", changed),
                                  ("publish, nothing changed", changed)):
                rows[name].append(_timed(partial(layout.publish, release, out,
                                                 {"vlitc": "b", "outputs": release},
                                                 store.object_path, state)))
            assert not layout.verify(out)
        store.close()
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"{args.samples} records in {len(output['shards'])} shards; a release of {args.files} files")
    print(f"{'operation':<30}{'median s':>10}{'ratio':>8}")
    for name, v in med.items():
        base = med["read, unchecked (baseline)"] if name.startswith("read") else med["copytree (baseline)"]
        print(f"{name:<30}{v:>10.3f}{v / base:>8.2f}")
    print(f"(ratios: reads against the unchecked read, publishes against copytree; pid {os.getpid()})")


if __name__ == "__main__":
    main()
