"""The report's view of the dropped samples is folded as they stream past (``summary.Drops``):
whatever order they arrive in, it says what the samples sorted by id say."""

from __future__ import annotations

import json
import random
from collections import Counter

from tests._release_util import conv
from vlitc.release import summary as sm


def _dropped(n: int) -> list[dict]:
    out = []
    for i in range(n):
        f = ("dedup", "decontaminate", "judge")[i % 3]
        meta = {"drop": {"filter": f, "reason": f"r{(i * 7) % 4}"}}
        if f == "decontaminate":
            meta["stats"] = {f: {"contaminated": [{"eval": f"pope-{i % 2}", "by": "image", "match": f"m{i}"}]}}
        if i % 5 == 0:
            meta["parse_error"] = f"bad json {i}"
            meta["raw"] = "{"
        out.append(conv(f"t{i % 2}/{i:04d}", f"t{i % 2}", "q", f"a {i}", **meta))
    return out


def _scan(samples: list[dict]) -> sm.Drops:
    scan = sm.Drops(parse_limit=4, examples=2)
    for d in samples:
        scan.add(d)
    return scan


def test_drops_say_the_same_whatever_order_the_samples_come_in(tmp_path):
    samples = _dropped(97)
    shuffled = samples[:]
    random.Random(5).shuffle(shuffled)
    a, b = _scan(samples), _scan(shuffled)
    for attr in ("drop_reasons", "task_drop_reasons", "parse_failures", "decontamination"):
        assert getattr(a, attr)() == getattr(b, attr)(), attr
    assert a.task_filter == b.task_filter and a.pass_keys == b.pass_keys
    a.write_log(tmp_path / "a.jsonl")
    b.write_log(tmp_path / "b.jsonl")
    log = (tmp_path / "b.jsonl").read_bytes()
    assert log == (tmp_path / "a.jsonl").read_bytes()
    rows = [json.loads(line) for line in log.splitlines()]
    assert [r["id"] for r in rows] == sorted(s["id"] for s in samples)


def test_drop_reasons_rank_ties_as_counting_the_samples_sorted_by_id_does():
    samples = _dropped(60)
    shuffled = samples[::-1]
    in_order = sorted(samples, key=lambda s: s["id"])
    want: dict[str, Counter] = {}
    for d in in_order:
        drop = d["meta"]["drop"]
        want.setdefault(drop["filter"], Counter())[drop["reason"]] += 1
    assert _scan(shuffled).drop_reasons(top=3) == {f: c.most_common(3) for f, c in sorted(want.items())}
    parsed = [d["id"] for d in in_order if d["meta"].get("parse_error")][:4]
    assert [r["id"] for r in _scan(shuffled).parse_failures()] == parsed
    decon = {r["eval"]: r for r in _scan(shuffled).decontamination()}
    first = [d["id"] for d in in_order if d["meta"]["drop"]["filter"] == "decontaminate"
             and d["meta"]["stats"]["decontaminate"]["contaminated"][0]["eval"] == "pope-0"][:2]
    assert [e.split(" ")[0] for e in decon["pope-0"]["examples"]] == first
    assert decon["pope-0"]["samples"] + decon["pope-1"]["samples"] == 20
