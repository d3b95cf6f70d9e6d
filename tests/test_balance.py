"""Balance: task mix, per-source shares, per-image cap, split by image, shortfall and top-up."""

from __future__ import annotations

from collections import Counter

import pytest

from vlitc.errors import ConfigurationError
from vlitc.ops.balance import MixBalance, largest_remainder, topup_plan
from vlitc.ops.base import OpContext
from vlitc.ops.registry import get
from vlitc.records import sample


def _s(task: str, i: int, img: str | None = None, source: str = "coco") -> dict:
    image = {"root": source, "path": img or f"{task}_{i}.jpg", "width": 10, "height": 10}
    return sample(f"{task}/{i}", task, [{"role": "user", "content": "q"},
                                        {"role": "assistant", "content": "a"}],
                  source=source, image=image)


def _run(params: dict, samples: list[dict], seed: int = 1, recipe: dict | None = None):
    ctx = OpContext(seed=seed, recipe_dir=".", recipe=recipe or {})
    out = list(MixBalance(params).run(samples, ctx))
    return out, ctx


def test_mix_is_registered_under_balance_family():
    assert get("balance", "mix") is MixBalance


@pytest.mark.exercises("balance.mix")
def test_mix_fractions_set_per_task_counts():
    pool = [_s("a", i) for i in range(50)] + [_s("b", i) for i in range(50)]
    out, ctx = _run({"total": 20, "mix": {"a": 0.75, "b": 0.25}}, pool)
    assert Counter(s["task"] for s in out) == {"a": 15, "b": 5}
    assert ctx.notes["targets"] == {"a": 15, "b": 5}
    assert "shortfall" not in ctx.notes


def test_same_seed_same_selection_in_input_order_other_seed_differs():
    pool = [_s("a", i) for i in range(100)]
    one, _ = _run({"total": 10}, pool, seed=3)
    two, _ = _run({"total": 10}, list(reversed(pool)), seed=3)
    other, _ = _run({"total": 10}, pool, seed=4)
    assert [s["id"] for s in one] == [s["id"] for s in reversed(two)]  # the same, each in its input's order
    at = {s["id"]: k for k, s in enumerate(pool)}
    assert [at[s["id"]] for s in one] == sorted(at[s["id"]] for s in one)
    assert {s["id"] for s in one} != {s["id"] for s in other}


def test_more_samples_keep_the_chosen_ones_that_still_rank_first():
    """A sample's rank is its own: a group given more samples keeps every sample it chose
    before that still ranks among its target's first, and takes new ones only in the place
    of those a new sample outranks."""
    pool = [_s("a", i) for i in range(200)]
    more = pool + [_s("a", i) for i in range(200, 260)]
    before = {s["id"] for s in _run({"total": 50}, pool)[0]}
    after = {s["id"] for s in _run({"total": 50}, more)[0]}
    new = after - before
    assert new and all(int(i.split("/")[1]) >= 200 for i in new)  # only new samples came in
    assert len(before - after) == len(new) < 50


def test_task_absent_from_mix_is_left_out_and_noted():
    pool = [_s("a", i) for i in range(5)] + [_s("c", i) for i in range(5)]
    out, ctx = _run({"mix": {"a": 1.0}}, pool)
    assert {s["task"] for s in out} == {"a"}
    assert ctx.notes["left_out_tasks"] == ["c"]


def test_without_total_size_is_largest_meeting_every_share():
    pool = [_s("a", i) for i in range(30)] + [_s("b", i) for i in range(4)]
    out, _ = _run({"mix": {"a": 0.5, "b": 0.5}}, pool)
    assert Counter(s["task"] for s in out) == {"a": 4, "b": 4}


def test_shortfall_is_noted_with_target_available_and_missing():
    pool = [_s("a", i) for i in range(50)] + [_s("b", i) for i in range(3)]
    out, ctx = _run({"total": 20, "mix": {"a": 0.5, "b": 0.5}}, pool)
    assert Counter(s["task"] for s in out) == {"a": 10, "b": 3}
    assert ctx.notes["shortfall"] == {
        "b": {"target": 10, "available": 3, "selected": 3, "missing": 7}}
    assert any("shortfall" in w for w in ctx.warnings)


def test_by_source_splits_a_task_share_across_sources():
    pool = [_s("a", i, source="coco") for i in range(40)] + \
        [_s("a", 100 + i, source="vg") for i in range(40)]
    out, ctx = _run({"total": 10, "mix": {"a": 1.0}, "by_source": {"a": {"coco": 0.8, "vg": 0.2}}},
                    pool)
    assert Counter(s["source"] for s in out) == {"coco": 8, "vg": 2}
    assert ctx.notes["targets"] == {"a/coco": 8, "a/vg": 2}


def test_per_image_cap_limits_samples_per_image():
    pool = [_s("a", i, img=f"img{i % 3}.jpg") for i in range(30)]
    out, ctx = _run({"per_image_cap": 2}, pool)
    assert len(out) == 6
    assert max(Counter(s["image"]["path"] for s in out).values()) == 2
    assert ctx.counters["over_image_cap"] == 24


def test_split_by_image_never_puts_one_image_in_both():
    pool = [_s(t, i, img=f"img{i % 20}.jpg") for t in ("a", "b") for i in range(40)]
    out, ctx = _run({"split": {"validation": 0.2}}, pool)
    splits: dict[str, set[str]] = {}
    for s in out:
        splits.setdefault(s["image"]["path"], set()).add(s["meta"]["split"])
    assert all(len(v) == 1 for v in splits.values())
    val_images = [k for k, v in splits.items() if v == {"validation"}]
    assert len(val_images) == 4
    assert ctx.notes["split"] == {"train": 64, "validation": 16, "validation_images": 4}


def test_without_split_every_sample_is_train_and_input_is_not_mutated():
    pool = [_s("a", i) for i in range(3)]
    out, _ = _run({}, pool)
    assert [s["meta"]["split"] for s in out] == ["train"] * 3
    assert "split" not in pool[0]["meta"]


def test_zero_sum_mix_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="sum to 0"):
        _run({"mix": {"a": 0.0}}, [_s("a", 0)])


def test_largest_remainder_sums_to_total_and_breaks_ties_by_name():
    assert largest_remainder(10, {"a": 1, "b": 1, "c": 1}) == {"a": 4, "b": 3, "c": 3}
    assert sum(largest_remainder(7, {"x": 0.33, "y": 0.33, "z": 0.34}).values()) == 7


def test_topup_plan_divides_missing_by_pass_rate():
    plan = topup_plan({"conv": 40, "detail": 90, "caption": 10},
                      {"conv": 0.5, "detail": 0.9, "caption": 0.25},
                      {"conv": 100, "detail": 90, "caption": 11})
    assert plan == {"conv": 120, "caption": 4}


def test_topup_plan_skips_unknown_or_zero_pass_rates():
    assert topup_plan({"a": 0, "b": 0}, {"a": None, "b": 0.0}, {"a": 5, "b": 5}) == {}
    assert topup_plan({"a": 1}, {"a": 1.0}, {"a": 4}) == {"a": 3}


def test_shortfall_of_generated_task_notes_topup_from_observed_pass_rate():
    pool = [_s("conv", i) for i in range(6)] + [_s("cap", i) for i in range(50)]
    steps = [{"id": "task:conv", "n_out": 12}, {"id": "task:cap", "n_out": 50}]
    dropped = [{"task": "conv"}] * 6
    ctx = OpContext(seed=1, recipe_dir=".",
                    recipe={"tasks": {"conv": {"kind": "conversation", "generator": "gpt"},
                                      "cap": {"kind": "template"}}},
                    _inputs=lambda ref: iter({"steps": steps, "dropped": dropped}[ref]))
    list(MixBalance({"total": 20, "mix": {"conv": 0.5, "cap": 0.5}}).run(pool, ctx))
    # 6 kept of 12 generated: pass rate 0.5, 4 missing -> 8 more
    assert ctx.notes["topup"] == {"conv": 8}


def test_without_a_cap_the_selection_is_the_one_a_cap_that_never_binds_makes():
    # without per_image_cap each group takes its first ranks at once; a cap no image reaches
    # goes through the rounds that take the groups in turn: the same samples, in the same order
    pool = [_s("a", i, img=f"{i % 40}.jpg") for i in range(300)] + \
        [_s("b", i, img=f"{i % 40}.jpg", source=("x", "y")[i % 2]) for i in range(200)] + \
        [_s("c", i) for i in range(5)]
    params = {"total": 150, "mix": {"a": 0.5, "b": 0.3, "c": 0.2}, "by_source": {"b": {"x": 1, "y": 2}},
              "split": {"validation": 0.1}}
    free, ctx = _run(params, pool)
    capped, ctx_capped = _run({**params, "per_image_cap": 1_000}, pool)
    assert [s["id"] for s in free] == [s["id"] for s in capped] and free == capped
    assert ctx.notes["shortfall"] == ctx_capped.notes["shortfall"]  # c has 5 for its 30


def _reference_selection(params: dict, pool: list[dict], seed: int) -> list[tuple[str, str]]:
    """The selection written out plainly (each sample's rank hashed alone, every sample in
    one sorted list by priority, taken one by one under the targets and the per-image cap,
    whole images to validation by their ranks): what the op's bucketed, spilled selection
    must give, as ``(id, split)`` in release order (the input's)."""
    import hashlib

    from vlitc.ops.balance import image_key

    op = MixBalance(params)
    groups = [op._group(s) for s in pool]
    number = {g: k for k, g in enumerate(dict.fromkeys(groups))}  # in the order groups appear
    sizes = Counter(groups)
    targets = op._targets(dict(sizes), OpContext(seed=seed, recipe_dir=".", recipe={}))

    def rank(i: int) -> int:
        g = groups[i]
        text = f"{seed}:balance:{g[0]}:{g[1]}:{pool[i]['id']}".encode()
        return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")

    def image(i: int) -> int:
        return int.from_bytes(hashlib.sha256(f"{seed}:split:{image_key(pool[i])}".encode()).digest()[:8], "big")

    def priority(i: int) -> tuple:
        g = groups[i]
        return ((rank(i) + 0.5) * 2.0 ** -64 * (sizes[g] / targets[g]), number[g], rank(i), i)

    cap = params.get("per_image_cap")
    taken, per_image, chosen = Counter(), Counter(), []
    for i in sorted((i for i in range(len(pool)) if targets.get(groups[i], 0) > 0), key=priority):
        g = groups[i]
        if taken[g] < targets[g] and (cap is None or per_image[image(i)] < cap):
            taken[g] += 1
            per_image[image(i)] += 1
            chosen.append(i)
    chosen.sort()
    frac = (params.get("split") or {}).get("validation", 0.0)
    uniq = sorted({image(i) for i in chosen})
    n_val = max(int(round(frac * len(uniq))), 1 if frac and uniq else 0)
    val = set(uniq[:n_val])
    return [(pool[i]["id"], "validation" if image(i) in val else "train") for i in chosen]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("bucketed", [False, True])
def test_the_spilled_selection_selects_what_the_plain_algorithm_selects(seed, bucketed, monkeypatch, tmp_path):
    import random

    from vlitc.ops import balance

    if bucketed:  # buckets and parts of a few rows, read back in blocks, over many ranges of priority
        monkeypatch.setattr(balance, "BUCKET_ROWS", 23)
        monkeypatch.setattr(balance, "READ_ROWS", 17)
        monkeypatch.setattr(balance, "FIRST_RANGE", 0.25)
        monkeypatch.setattr(balance, "KEYS_CHUNK", 41)

    rng = random.Random(seed)
    pool = [_s(rng.choice(("a", "b", "c")), i, img=f"{rng.randrange(60)}.jpg",
               source=rng.choice(("x", "y"))) for i in range(900)]
    for s in pool:
        s["id"] = f"{s['task']}/{rng.randrange(10_000)}"  # equal ids too: their input order decides
    pool += [_s("c", i) for i in range(3)]  # text-like: images of their own
    for params in ({"total": 300, "mix": {"a": 0.5, "b": 0.3, "c": 0.2}},
                   {"total": 400, "mix": {"a": 0.4, "b": 0.6}, "by_source": {"b": {"x": 1, "y": 3}},
                    "per_image_cap": 4, "split": {"validation": 0.1}},
                   {"split": {"validation": 0.2}, "per_image_cap": 9},
                   {"total": 500, "mix": {"a": 0.2, "b": 0.8}, "per_image_cap": 2}):
        ctx = OpContext(seed=seed, recipe_dir=".", recipe={}, scratch=tmp_path)
        out = list(MixBalance(params).run(pool, ctx))
        assert [(s["id"], s["meta"]["split"]) for s in out] == _reference_selection(params, pool, seed)
        assert list(tmp_path.iterdir()) == []  # its spilled files were unlinked from the start


def test_a_choice_holds_arrays_and_gives_its_pairs_positions_and_codes():
    """What a balance chooses is kept as two arrays (an object per chosen sample would be
    millions in a large release); it iterates as ``(input index, tag)`` pairs, in order, over
    more than one block of them."""
    import numpy as np

    from vlitc.ops.base import Chosen

    pairs = [(i * 3 % 7001, "validation" if i % 5 == 0 else "train") for i in range(7001)]
    chosen = Chosen.of(pairs)
    chosen.BLOCK = 1000  # several blocks
    assert chosen.index.dtype == np.int64 and chosen.code.dtype == np.int16
    assert len(chosen) == len(pairs) and list(chosen) == pairs
    position = chosen.positions(7001)
    assert all(position[i] == pos for pos, (i, _t) in enumerate(pairs))
    codes = chosen.codes(7001, ["train", "validation"])
    assert all(codes[i] == (1 if t == "validation" else 0) for i, t in pairs)
    only_train = Chosen([4, 1], [0, 0], ["train", "validation"])  # no sample got validation
    assert only_train.codes(5, ["train"]).tolist() == [0, 0, 0, 0, 0]
    assert list(Chosen.of([])) == [] and Chosen.of([]).positions(3).tolist() == [-1, -1, -1]
    with pytest.raises(ValueError):
        Chosen([1, 2], [0], ["train"])


def test_a_selection_comes_in_parts_per_chunk_in_release_order(monkeypatch):
    """The choice is given back a first-pass chunk at a time, each chunk's chosen rows
    relative to its start, ascending, with their tags: iterated whole it is the op's output."""
    from vlitc.ops import balance

    monkeypatch.setattr(balance, "KEYS_CHUNK", 13)
    pool = [_s("a", i) for i in range(50)] + [_s("b", i) for i in range(50)]
    ctx = OpContext(seed=3, recipe_dir=".", recipe={})
    params = {"total": 40, "mix": {"a": 0.5, "b": 0.5}, "split": {"validation": 0.2}}
    chosen = MixBalance(params).select(iter(pool), ctx)
    parts = list(chosen.parts())
    assert [(lo, hi) for lo, hi, _r, _c in parts] == [(lo, min(lo + 13, 100)) for lo in range(0, 100, 13)]
    assert all(r.dtype.kind == "i" and list(r) == sorted(r) and (r < hi - lo).all() for lo, hi, r, _c in parts)
    assert len(chosen) == 40 == sum(len(r) for _lo, _hi, r, _c in parts)
    out, _ctx = _run(params, pool, seed=3)
    assert [(pool[i]["id"], t) for i, t in chosen] == [(s["id"], s["meta"]["split"]) for s in out]
    whole = chosen.chosen()
    assert list(whole) == list(chosen)
    chosen.close()


def test_validation_images_are_those_whose_seeded_rank_sorts_first():
    """The validation images are the ``round(fraction * n)`` (at least one) with the smallest
    sha256 of ``seed:split:key``, as hex strings sort: the ranks, that digest's first 8 bytes
    as a number, order the keys as their hex digests do (distinct digests differ there)."""
    import hashlib
    import random

    import numpy as np

    from vlitc.ops.balance import image_ranks, validation_count

    rng = random.Random(3)
    for _ in range(100):
        keys = list(dict.fromkeys(f"/r/{rng.randrange(10**6)}.jpg" for _ in range(rng.randrange(0, 300))))
        fraction, seed = rng.choice([0, 0.001, 0.05, 0.3, 0.5]), rng.randrange(100)
        n_val = max(int(round(fraction * len(keys))), 1 if fraction and keys else 0)
        ranked = sorted(keys, key=lambda k: hashlib.sha256(f"{seed}:split:{k}".encode()).hexdigest())
        assert validation_count(len(keys), fraction) == n_val
        ranks = image_ranks(keys, seed)
        assert ranks.dtype == np.uint64
        picked = np.argsort(ranks, kind="stable")[:n_val]
        assert {keys[i] for i in picked.tolist()} == set(ranked[:n_val])


def test_images_cut_across_chunks_are_one_image_and_no_name_leaves_its_chunk(monkeypatch):
    """The first pass in many small chunks (one image's samples in several): an image is told
    apart by its seeded rank alone, so the cap and the split see it once, and what a chunk
    hands on holds no image name and no id."""
    import random

    import numpy as np

    from vlitc.ops import balance

    rng = random.Random(5)
    pool = [_s(rng.choice(("a", "b")), i, img=f"{rng.randrange(40)}.jpg") for i in range(700)]
    params = {"total": 300, "mix": {"a": 0.5, "b": 0.5}, "per_image_cap": 6, "split": {"validation": 0.15}}
    keys = MixBalance(params).keys(pool[:50], OpContext(seed=4, recipe_dir=".", recipe={}))
    assert keys["image"].dtype == np.uint64 and keys["rank"].dtype == np.uint64
    assert set(keys) == {"group", "groups", "rank", "image"} and sorted(keys["groups"]) == [("a", "*"), ("b", "*")]
    monkeypatch.setattr(balance, "KEYS_CHUNK", 37)
    out, _ctx = _run(params, pool, seed=4)
    assert [(s["id"], s["meta"]["split"]) for s in out] == _reference_selection(params, pool, 4)
    assert max(Counter(s["image"]["path"] for s in out).values()) <= 6


def test_a_cap_that_binds_counts_the_samples_it_passed_over():
    pool = [_s("a", i, img=f"{i % 10}.jpg") for i in range(100)]
    out, ctx = _run({"total": 30, "per_image_cap": 3}, pool)
    assert len(out) == 30 and Counter(s["image"]["path"] for s in out) == {f"{k}.jpg": 3 for k in range(10)}
    assert ctx.counters["over_image_cap"] > 0
    short, ctx_short = _run({"total": 40, "per_image_cap": 3}, pool)
    assert len(short) == 30 and ctx_short.notes["shortfall"]["a"]["missing"] == 10
