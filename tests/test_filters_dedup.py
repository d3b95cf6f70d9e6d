"""Deduplication and the per-image cap: literal samples in, keep decisions out."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from _filters_util import caching_ctx, ctx, qa, run

from vlitc.ops.filters.cap import PerImageCapFilter
from vlitc.ops.filters.dedup import DedupFilter, normalise
from vlitc.quality import neighbours as nb
from vlitc.quality.neighbours import SMALL_GROUP, cosine_neighbours, minhash_neighbours

IMG1 = {"root": "coco", "path": "1.jpg", "sha256": "aa"}
IMG2 = {"root": "coco", "path": "2.jpg", "sha256": "bb"}


@pytest.mark.exercises("filter.dedup")
def test_exact_dedup_folds_case_punctuation_and_spacing_and_names_the_kept_sample():
    s = [qa("What is it?", "A cat.", sid="a"), qa("what is it", "a  CAT!", sid="b"),
         qa("What is it?", "A dog.", sid="c")]
    stats, keep = run(DedupFilter({"method": "exact"}), s)
    assert keep == [None, "duplicate of a (same text)", None]
    assert stats[1] == {"dup_of": "a", "method": "exact", "similarity": 1.0}
    assert normalise("A  cat!") == "a cat"


def test_scope_image_compares_only_within_one_image():
    s = [qa("Q", "A cat.", sid="a", image=IMG1), qa("Q", "A cat.", sid="b", image=IMG2),
         qa("Q", "A cat.", sid="c", image=IMG1)]
    assert run(DedupFilter({"scope": "image"}), s)[1] == [None, None, "duplicate of a (same text)"]
    assert run(DedupFilter({"scope": "global"}), s)[1] == [
        None, "duplicate of a (same text)", "duplicate of a (same text)"]
    # each sample's scope reaches the build's process as a 64-bit number, not its string: the
    # same in every chunk, so chunks gathered in any order agree on the groups
    first, later = (DedupFilter({"scope": "image"}).features(part, ctx()) for part in (s[:2], s[2:]))
    assert first["scope"].dtype == np.uint64 and later["scope"][0] == first["scope"][0] != first["scope"][1]


def test_scope_task_and_answer_field():
    s = [qa("Q1", "Two cats.", sid="a", task="x"), qa("Q2", "Two cats.", sid="b", task="x"),
         qa("Q3", "Two cats.", sid="c", task="y")]
    f = DedupFilter({"scope": "task", "field": "assistant"})
    assert run(f, s)[1] == [None, "duplicate of a (same text)", None]


LONG = ("A brown dog runs across a grassy park chasing a red frisbee while two children watch "
        "from a wooden bench near the old oak tree on a sunny afternoon")


def test_minhash_drops_near_duplicates_and_keeps_different_texts():
    near = LONG.replace("sunny", "bright")
    other = "A plate of pasta with tomato sauce and basil sits on a kitchen table next to a glass."
    s = [qa("Q", LONG, sid="a"), qa("Q", other, sid="b"), qa("Q", near, sid="c")]
    stats, keep = run(DedupFilter({"method": "minhash", "threshold": 0.7}), s)
    assert keep[:2] == [None, None]
    assert keep[2].startswith("duplicate of a (minhash: estimated Jaccard 0.")
    assert 0.7 <= stats[2]["similarity"] < 1.0


def test_minhash_lsh_path_on_a_large_group_matches_the_pairwise_path():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(500)]
    base = [" ".join(rng.choice(vocab, 30)) for _ in range(60)]
    texts = base + [t + " extra" for t in base[:10]]
    first, sim = minhash_neighbours(texts, [list(range(len(texts)))], 0.7)
    assert first[:60].tolist() == [-1] * 60
    assert first[60:].tolist() == list(range(10)) and (sim[60:] >= 0.7).all()


def datasketch_minhashes(texts: list[str], num_perm: int = 128, ngram: int = 3) -> list:
    """datasketch's own ``MinHash`` of each text's word n-gram shingles (``None`` without
    words), one object and one ``update`` per text: the reference the numpy signatures match."""
    pytest.importorskip("datasketch", reason="the dev extra (datasketch, the reference)")
    from datasketch import MinHash
    from datasketch.hashfunc import sha1_hash32

    out = []
    for t in texts:
        ids = [sha1_hash32(w.encode()) for w in re.findall(r"\w+", t.lower())]
        if not ids:
            out.append(None)
            continue
        n = min(ngram, len(ids))
        shingles = set()
        for p in range(len(ids) - n + 1):
            h = ids[p]
            for k in range(1, n):
                h = ((h * 1_000_003) ^ ids[p + k]) & 0xFFFFFFFF
            shingles.add(h)
        m = MinHash(num_perm=num_perm, seed=1, hashfunc=lambda x: x)
        for h in sorted(shingles):
            m.update(h)
        out.append(m)
    return out


def edited_texts(n: int, seed: int, vocab_size: int = 300) -> list[str]:
    """Random word texts of 0-40 words, a third of them one-word edits of an earlier one."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(vocab_size)]
    texts: list[str] = []
    for k in range(n):
        if k > 10 and rng.random() < 0.3:
            words = texts[int(rng.integers(0, k))].split() or ["w1"]
            words[int(rng.integers(0, len(words)))] = str(rng.choice(vocab))
            texts.append(" ".join(words))
        else:
            texts.append(" ".join(rng.choice(vocab, int(rng.integers(0, 40)))))
    return texts


@pytest.mark.parametrize(("num_perm", "ngram"), [(128, 3), (64, 1), (16, 5)])
def test_numpy_minhash_signatures_are_datasketchs(num_perm, ngram):
    texts = ["A brown dog runs.", "", "!!", "one", "two words", "Ünïcode wörds, the quick brown fox"]
    texts += edited_texts(400, seed=3)
    hv, has = nb.minhash_signatures(texts, num_perm, ngram)
    ref = datasketch_minhashes(texts, num_perm, ngram)
    assert has.tolist() == [m is not None for m in ref]
    for j, m in enumerate(ref):
        if m is not None:
            assert hv[j].tolist() == m.hashvalues.tolist(), texts[j]


def test_minhash_signatures_do_not_depend_on_the_batching():
    texts = edited_texts(3000, seed=4) + ["a very long text " * 300]
    whole, has = nb.minhash_signatures(texts, 128, 3)
    parts = [nb.minhash_signatures(texts[i : i + 700], 128, 3) for i in range(0, len(texts), 700)]
    assert (np.concatenate([p[0] for p in parts]) == whole).all()
    assert (np.concatenate([p[1] for p in parts]) == has).all()


def test_lsh_bands_are_the_ones_datasketch_minhash_lsh_picks():
    pytest.importorskip("datasketch", reason="the dev extra (datasketch, the reference)")
    from datasketch import MinHashLSH

    for num_perm in (16, 64, 128, 256):
        for threshold in np.round(np.arange(0.1, 1.0, 0.05), 2).tolist():
            try:
                expected = MinHashLSH(threshold=threshold, num_perm=num_perm).hashranges
            except ValueError:  # datasketch refuses a single band; ours takes it
                continue
            assert nb.lsh_bands(threshold, num_perm) == expected, (num_perm, threshold)


def lsh_reference(texts: list[str], groups: list[list[int]], threshold: float):
    """The earliest similar earlier item found through datasketch's own ``MinHashLSH`` index
    (query, then insert), and all pairs in small groups."""
    pytest.importorskip("datasketch", reason="the dev extra (datasketch, the reference)")
    from datasketch import MinHashLSH

    ms = datasketch_minhashes(texts)
    first, sim = np.full(len(texts), -1), np.zeros(len(texts), dtype=np.float32)
    for group in groups:
        lsh = MinHashLSH(threshold=threshold, num_perm=128) if len(group) > SMALL_GROUP else None
        for j, x in enumerate(group):
            if ms[x] is None:
                continue
            for i in sorted(lsh.query(ms[x])) if lsh is not None else group[:j]:
                if ms[i] is not None and ms[i].jaccard(ms[x]) >= threshold:
                    first[x], sim[x] = i, ms[i].jaccard(ms[x])
                    break
            if lsh is not None:
                lsh.insert(x, ms[x])
    return first, sim


def _edited_texts() -> tuple[list[str], list[list[int]]]:
    """700 texts, some edits of earlier ones (chains included), in groups of every size."""
    rng = np.random.default_rng(2)
    vocab = [f"w{i}" for i in range(300)]
    texts: list[str] = []
    for k in range(700):
        if k > 10 and rng.random() < 0.3:  # an edit of an earlier text (chains included)
            words = texts[int(rng.integers(0, k))].split() or ["w1"]
            words[int(rng.integers(0, len(words)))] = str(rng.choice(vocab))
            texts.append(" ".join(words))
        else:
            texts.append(" ".join(rng.choice(vocab, int(rng.integers(20, 40)))))
    for k in range(0, 700, 5):  # a bucket larger than a pairwise run, and texts without words
        texts[k] = "!" if k % 2 else "yes"
    groups = [list(range(0, 700, 2)), list(range(1, 400, 2))]
    groups += [list(range(k, min(k + 20, 700), 2)) for k in range(401, 700, 20)]
    return texts, groups


@pytest.mark.parametrize("threshold", [0.5, 0.8])
def test_minhash_banding_finds_what_datasketch_minhash_lsh_finds(threshold):
    texts, groups = _edited_texts()
    first, sim = minhash_neighbours(texts, groups, threshold)
    ref_first, ref_sim = lsh_reference(texts, groups, threshold)
    assert first.tolist() == ref_first.tolist() and sim.tolist() == ref_sim.tolist()
    assert (first >= 0).sum() > 80 and (first < np.arange(700)).all()
    assert first[10:700:10].tolist() == [0] * 69 and (first[5:700:10] == -1).all()


def test_bands_joined_one_a_task_on_two_workers_find_what_one_process_finds(tmp_path, monkeypatch):
    """Signatures and band keys in memory-mapped files: each band joined in a worker process
    of its own, the earliest of every band's hits kept, is the answer of one process."""
    from vlitc.run.engine import Execution, make_engine

    texts, groups = _edited_texts()
    hv, has = nb.minhash_signatures(texts, 128, 3, seed=1)
    gid = np.full(len(texts), -1, dtype=np.int64)
    for g, group in enumerate(groups):
        gid[np.asarray(group, dtype=np.int64)] = g
    bands = nb.band_keys(hv, nb.lsh_bands(0.5, 128))
    assert bands.shape[1] > 2
    mapped = {}
    for name, a in (("sig", hv), ("bands", bands)):
        m = np.memmap(tmp_path / f"{name}.bin", dtype=a.dtype, mode="w+", shape=a.shape)
        m[:] = a
        m.flush()
        mapped[name] = np.memmap(tmp_path / f"{name}.bin", dtype=a.dtype, mode="r", shape=a.shape)
    alone = nb.banded_neighbours(hv, has & (gid >= 0), gid, bands, 0.5)
    monkeypatch.setattr(nb, "BAND_READ", 7)  # a band's keys read from the file in blocks of 7 rows
    in_blocks = nb.banded_neighbours(mapped["sig"], has & (gid >= 0), gid, mapped["bands"], 0.5)
    assert in_blocks[0].tolist() == alone[0].tolist() and in_blocks[1].tolist() == alone[1].tolist()
    monkeypatch.setattr(nb, "BAND_MAP_MIN", 10)
    monkeypatch.setattr(nb, "JOIN_PART", 50)  # each band joined in parts by key
    large = int((np.bincount(gid[gid >= 0])[gid[gid >= 0]] > nb.SMALL_GROUP).sum())
    assert large > 3 * 50
    in_parts = nb.banded_neighbours(mapped["sig"], has & (gid >= 0), gid, mapped["bands"], 0.5)
    assert in_parts[0].tolist() == alone[0].tolist() and in_parts[1].tolist() == alone[1].tolist()
    inline = nb.banded_neighbours(mapped["sig"], has & (gid >= 0), gid, mapped["bands"], 0.5,
                                  map=lambda fn, job, chunks: (fn(job, c) for c in chunks))
    assert inline[0].tolist() == alone[0].tolist() and inline[1].tolist() == alone[1].tolist()
    # into arrays of the caller's: the eligible items' answers, the others' left as they were
    eligible = has & (gid >= 0)
    first_in, sim_in = np.where(eligible, -1, 7).astype(np.int32), np.where(eligible, 0, 0.5).astype(np.float32)
    got = nb.banded_neighbours(mapped["sig"], eligible, gid, mapped["bands"], 0.5, out=(first_in, sim_in))
    assert got[0] is first_in and got[1] is sim_in
    assert first_in.tolist() == np.where(eligible, alone[0], 7).tolist()
    assert sim_in.tolist() == np.where(eligible, alone[1], np.float32(0.5)).tolist()
    monkeypatch.setattr(nb, "JOIN_PART", 1 << 21)
    tasks: list[int] = []
    engine = make_engine(Execution.of({}, workers=2))
    try:
        def spread(fn, job, chunks):
            chunks = list(chunks)
            tasks.extend(chunks)
            return engine.map(fn, job, chunks)

        first, sim = nb.banded_neighbours(mapped["sig"], has & (gid >= 0), gid, mapped["bands"], 0.5,
                                          map=spread)
    finally:
        engine.close()
    assert tasks == list(range(bands.shape[1]))
    assert first.tolist() == alone[0].tolist() and sim.tolist() == alone[1].tolist()
    assert (first >= 0).sum() > 80
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bands.bin", "sig.bin"]  # the items' file went


def test_cosine_neighbours_exhaustive_and_inverted_index_agree_on_planted_duplicates(monkeypatch):
    from vlitc.quality import neighbours as nb

    rng = np.random.default_rng(1)
    emb = rng.normal(size=(3000, 64)).astype(np.float32)
    dup_src = rng.choice(2000, 200, replace=False)
    emb[2000:2200] = emb[dup_src] + 0.05 * rng.normal(size=(200, 64))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    exact, _ = cosine_neighbours(emb, [list(range(3000))], 0.95)
    monkeypatch.setattr(nb, "EXACT_LIMIT", 100)
    ivf, sim = cosine_neighbours(emb, [list(range(3000))], 0.95)
    assert exact[2000:2200].tolist() == dup_src.tolist()
    assert (exact[:2000] == -1).all() and (exact[2200:] == -1).all()
    assert (ivf == exact).mean() > 0.99 and (sim[ivf >= 0] >= 0.95).all()


@pytest.mark.slow
def test_semantic_dedup_with_minilm_drops_paraphrases_and_caches_embeddings(tmp_path):
    s = [qa("Q", "A cat is sleeping on the sofa.", sid="a"),
         qa("Q", "A dog plays in the snow.", sid="b"),
         qa("Q", "A cat sleeps on the sofa.", sid="c")]
    context, caches = caching_ctx(tmp_path)
    f = DedupFilter({"method": "semantic", "threshold": 0.9, "field": "assistant"})
    stats, keep = run(f, s, context)
    assert keep[:2] == [None, None] and keep[2].startswith("duplicate of a (semantic: cosine 0.9")
    assert caches["minilm-embedding"].sets == 3
    run(f, s, context)
    assert caches["minilm-embedding"].sets == 3 and context.counters["embedding_cache_hits"] == 3


@pytest.mark.exercises("filter.per_image_cap")
def test_per_image_cap_keeps_the_first_n_per_image_and_task():
    s = [qa("Q", "A", sid=f"s{i}", image=IMG1 if i != 2 else IMG2, task="t" if i < 4 else "u")
         for i in range(6)]
    s.append(qa("Q", "text only", sid="txt"))
    stats, keep = run(PerImageCapFilter({"max": 2}), s)
    assert keep == [None, None, None,
                    "per-image cap: sample 3 of image aa in task 't' (max 2)", None, None, None]
    assert PerImageCapFilter({"max": 2}).measure_params() == {}


def test_folding_ascii_text_by_table_gives_what_the_expression_gives():
    import random

    from vlitc.ops.filters.dedup import NON_WORD, fold

    rng = random.Random(3)
    alphabet = [chr(c) for c in range(128)] + ["é", "ß", "İ", "中", "_", " ", "\u00a0"]
    texts = ["A  cat!", "snake_case and\tTabs\n", "\x1c\x1d x \x1f", "", "   ", "__", "Ünïcode Ça va?"]
    texts += ["".join(rng.choices(alphabet[:128], k=rng.randint(0, 40))) for _ in range(500)]
    texts += ["".join(rng.choices(alphabet, k=rng.randint(0, 40))) for _ in range(500)]
    for t in texts:
        want = NON_WORD.sub(" ", t.lower()).strip()
        assert fold(t) == (want, want.split()), repr(t)


def test_a_memory_mapped_signature_file_lets_go_of_its_pages_and_reads_the_same(tmp_path):
    import mmap

    import numpy as np

    from vlitc.quality.neighbours import release_pages

    values = np.arange(4096 * 64, dtype=np.uint32).reshape(-1, 64)
    values.tofile(tmp_path / "sig.bin")
    mapped = np.memmap(tmp_path / "sig.bin", dtype=np.uint32, mode="r", shape=values.shape)
    assert int(mapped[::97].sum()) == int(values[::97].sum())
    release_pages(np.asarray(mapped))  # a view of it finds its mapping too
    assert np.array_equal(mapped, values)

    released = []

    class Mapping(mmap.mmap):
        def madvise(self, *args):
            released.append(args)
            return super().madvise(*args)

    with open(tmp_path / "sig.bin", "rb") as fh:
        m = Mapping(fh.fileno(), 0, access=mmap.ACCESS_READ)
        rows = np.frombuffer(m, dtype=np.uint32).reshape(-1, 64)
        release_pages(rows[10:20])
        assert released == [(mmap.MADV_DONTNEED,)] and int(rows[10, 0]) == 640
        del rows
        m.close()
    plain = values.copy()
    release_pages(plain)  # not mapped: left alone
    assert np.array_equal(plain, values)


def _mapped_file_kib() -> int | None:
    """This process's resident pages of mapped files (``RssFile``), or None off Linux."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    line = next((x for x in status.splitlines() if x.startswith("RssFile:")), None)
    return int(line.split()[1]) if line else None


def test_scattered_signature_rows_are_read_not_mapped(tmp_path):
    import numpy as np

    from vlitc.quality.neighbours import band_keys, banded_neighbours, lsh_bands, take_rows

    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**32, size=(1 << 17, 128), dtype=np.uint32)  # 64 MiB
    values.tofile(tmp_path / "sig.bin")
    mapped = np.memmap(tmp_path / "sig.bin", dtype=np.uint32, mode="r", shape=values.shape)
    rows = rng.integers(0, len(values), size=4096)
    rows[:3] = (7, 7, len(values) - 1)  # repeats and the last row
    before = _mapped_file_kib()
    got = take_rows(mapped, rows)
    after = _mapped_file_kib()
    assert got.shape == (4096, 128) and np.array_equal(got, values[rows])
    if before is not None:  # through the mapping these rows are at least 4096 pages (16 MiB)
        assert after - before < 4096, (before, after)
    assert np.array_equal(take_rows(mapped[5:], rows[rows < 1000]), values[5:][rows[rows < 1000]])
    assert np.array_equal(take_rows(values, rows), values[rows])  # in memory: plain indexing
    with pytest.raises(IndexError):
        take_rows(mapped, np.array([len(values)]))
    # the band join over the mapped file finds what it finds over the array
    near = values[:5000].copy()
    near[2500:] = near[:2500]
    near[2500:, :40] += 1  # the copies agree on 88 of 128 values: estimated Jaccard 0.6875
    gid = np.zeros(len(near), dtype=np.int64)
    near[4800:] = rng.integers(0, 2**32, size=128, dtype=np.uint32)
    near[4800:, -8:] = rng.integers(0, 2**32, size=(200, 8), dtype=np.uint32)  # one long run
    gid[:60] = 1 + np.arange(60) % 3  # small groups too (all pairs, not bands)
    near.tofile(tmp_path / "near.bin")
    hv = np.memmap(tmp_path / "near.bin", dtype=np.uint32, mode="r", shape=near.shape)
    bands = band_keys(near, lsh_bands(0.6, 128))
    eligible = np.ones(len(near), dtype=bool)
    want = banded_neighbours(near, eligible, gid, bands, 0.6)
    first, sim = banded_neighbours(hv, eligible, gid, bands, 0.6)
    assert np.array_equal(first, want[0]) and np.array_equal(sim, want[1])
    assert (first[2500:4800] == np.arange(2300)).sum() > 2000  # the copies are found
    assert (first[4801:] == 4800).all()  # and the long run's


def test_exact_copies_found_in_buckets_are_those_one_sort_finds(monkeypatch):
    """Above ``EXACT_RUN`` samples the exact pass sorts buckets of the hashes' top bits one at a
    time: each sample's first earlier copy (same scope group and hash) is the one a single
    stable sort of all of them gives, hashes in every bucket and equal ones far apart."""
    import numpy as np

    from vlitc.ops.filters import dedup

    rng = np.random.default_rng(3)
    n = 5000
    exact = rng.integers(0, 2**64, 700, dtype=np.uint64, endpoint=False)[rng.integers(0, 700, n)]
    gid = rng.integers(0, 3, n).astype(np.int32)

    seen: dict[tuple[int, int], int] = {}  # (group, hash) -> its first sample
    expected = []
    for i, key in enumerate(zip(gid.tolist(), exact.tolist(), strict=True)):
        expected.append(seen.get(key, -1))
        seen.setdefault(key, i)
    assert dedup.exact_firsts(gid, exact, np.int32).tolist() == expected
    monkeypatch.setattr(dedup, "EXACT_RUN", 256)  # 5000 samples: 64 buckets
    bucketed = dedup.exact_firsts(gid, exact, np.int32)
    assert bucketed.tolist() == expected and (bucketed >= 0).sum() > n // 2
    assert len(set((exact >> np.uint64(58)).tolist())) == 64  # every bucket has hashes


def test_stats_called_out_of_order_are_those_given_in_order():
    """Dedup keeps the duplicates alone once it has found them and gives each sample's stats
    by walking them as the samples come; a caller that goes back or skips gets the same."""
    import random

    rng = random.Random(2)
    texts = ["a cat", "a dog", "two birds", "a cat sits", "red bus"]
    s = [qa("What is it?", rng.choice(texts), sid=f"s{i}") for i in range(60)]
    op = DedupFilter({"method": "minhash", "threshold": 0.5})
    c = ctx()
    feats = op.features(s, c)
    in_order = op.measure_features(feats, c)
    want = [dict(in_order(i, x["id"])) for i, x in enumerate(s)]
    assert sum(w["dup_of"] is not None for w in want) > 10
    jumbled = op.measure_features(feats, c)
    for i, x in enumerate(s):  # in order once: every kept sample's name is known
        assert jumbled(i, x["id"]) == want[i]
    order = list(range(len(s)))
    rng.shuffle(order)
    assert {i: dict(jumbled(i, s[i]["id"])) for i in order} == dict(enumerate(want))


@pytest.mark.parametrize("method", ["exact", "minhash"])
def test_columns_in_scratch_files_give_the_stats_held_in_memory(method, tmp_path, monkeypatch):
    """From :data:`~vlitc.quality.neighbours.OUT_OF_CORE` samples dedup's columns over every
    sample (copies, similarities, which samples take part) are memory-mapped files in the
    scratch folder, written a block at a time: the same stats, and no file left behind."""
    import random

    rng = random.Random(6)
    texts = [f"a {w} sits on the {v} by the window in the morning sun" for w in ("cat", "dog", "bird")
             for v in ("mat", "sofa", "bed")]
    s = [qa("What is it?", rng.choice(texts) + rng.choice(["", " today", "!"]), sid=f"s{i}") for i in range(300)]
    op = DedupFilter({"method": method, "threshold": 0.6})
    plain = ctx()
    feats = op.features(s, plain)
    stat = op.measure_features(feats, plain)
    want = [dict(stat(i, x["id"])) for i, x in enumerate(s)]
    assert {w["method"] for w in want} == {"exact", None, *([method] if method != "exact" else [])}
    monkeypatch.setattr(nb, "OUT_OF_CORE", 50)
    monkeypatch.setattr(nb, "BAND_READ", 37)
    filed = ctx(scratch=tmp_path)
    stat = op.measure_features(feats, filed)
    assert [dict(stat(i, x["id"])) for i, x in enumerate(s)] == want
    assert filed.counters["duplicates"] == plain.counters["duplicates"] > 0
    assert list(tmp_path.iterdir()) == []
    column = nb.column(120, np.int32, -1, tmp_path)
    assert isinstance(column, np.memmap) and column.tolist() == [-1] * 120
