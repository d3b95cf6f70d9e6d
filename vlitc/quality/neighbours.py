"""Earliest near neighbours without comparing all pairs: MinHash LSH over word shingles
(datasketch's signatures, computed for whole batches with numpy) and cosine search over
normalised embeddings (an inverted-file index: spherical k-means lists, each query probing its
two nearest lists, blockwise matrix products).

Both answer the same question for every item ``j``: the smallest ``i < j`` in the same group
whose similarity reaches the threshold, or ``-1``. Items are indices into the caller's arrays;
groups are lists of indices in ascending order (a scope: one image, one task, everything).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import mmap
import os
import re
from collections.abc import Callable, Iterator

import numpy as np

WORD = re.compile(r"\w+")
SMALL_GROUP = 32  # pairwise below this size (MinHash)
SMALL_RUN = 64  # LSH buckets up to this size compare all pairs at once
MH_BLOCK = 256  # blockwise scan of a larger bucket
PAIR_CHUNK = 65_536
BAND_READ = 1 << 20  # rows of a memory-mapped band-key file read before its pages are let go
JOIN_PART = 1 << 21  # items of a band joined at once: a larger band is joined in parts by key
MIX = np.uint64(0x9E3779B97F4A7C15)
EXACT_LIMIT = 20_000  # exhaustive blockwise search below this size (embeddings)
BLOCK = 2048
CHUNK = 4096


# --- MinHash LSH ---------------------------------------------------------------------------
#
# Signatures are datasketch's ``MinHash`` (its default ``affine32`` scheme), computed for a whole
# batch of texts at once with numpy instead of one ``MinHash`` object per text:
#
# * shingles: the text's words (``\w+`` of the lower-cased text, or the words the caller gives:
#   dedup gives those of its folded text), each hashed to 32 bits (the
#   first four bytes of its SHA-1, little-endian: datasketch's ``sha1_hash32``), folded into
#   word ``ngram``-grams as ``h = ((h * 1000003) ^ next) & 0xFFFFFFFF`` (a text shorter than
#   ``ngram`` words is one shingle of all its words);
# * permutations: ``num_perm`` affine maps ``x -> a * fmix32(x) + b mod 2^32`` with odd ``a``,
#   drawn from ``numpy.random.RandomState(seed)`` as datasketch draws them (``fmix32``: the
#   MurmurHash3 finaliser); a signature value is the minimum of a map over the text's shingles;
# * bands: ``b`` bands of ``r`` rows minimising the sum of false-positive and false-negative
#   probability mass at the threshold (datasketch ``MinHashLSH``'s choice, weights 0.5/0.5);
#   two texts are candidates when all ``r`` values of some band agree, and a candidate is a
#   duplicate when its estimated Jaccard (share of equal values) reaches the threshold.
#
# The signatures are the same numbers datasketch computes (tests compare them), so the results
# do not depend on how texts are batched, on the worker count or on the engine.

SIG_ROWS = 2048  # texts per block: a (2048, num_perm) uint32 minimum at a time


def _token_hash(token: str) -> int:
    return int.from_bytes(hashlib.sha1(token.encode()).digest()[:4], "little")


class Shingler:
    """Word n-gram shingles of a batch of texts as one flat uint32 array (token hashes cached)."""

    def __init__(self, n: int):
        self.n = n
        self._vocab: dict[str, int] = {}

    def __call__(self, texts: list[str], words: list[list[str]] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The shingles of every text, one after another, and how many each text has
        (``words``: each text's words when the caller has them, else ``\\w+`` of the text
        lower-cased)."""
        vocab = self._vocab
        toks = words if words is not None else [WORD.findall(t.lower()) for t in texts]
        lengths = np.fromiter((len(t) for t in toks), dtype=np.int64, count=len(toks))
        total = int(lengths.sum())
        flat = list(itertools.chain.from_iterable(toks))
        for w in set(flat).difference(vocab):
            vocab[w] = _token_hash(w)
        ids = np.fromiter(map(vocab.__getitem__, flat), dtype=np.uint64, count=total)
        n_t = np.minimum(lengths, self.n)  # words per shingle, per text
        counts = np.where(lengths > 0, lengths - n_t + 1, 0)
        starts = np.cumsum(lengths) - lengths
        first = np.cumsum(counts) - counts
        pos = np.repeat(starts, counts) + (np.arange(int(counts.sum())) - np.repeat(first, counts))
        width = np.repeat(n_t, counts)  # words in each shingle
        h = ids[pos]
        for k in range(1, self.n):
            more = k < width
            nxt = ids[np.minimum(pos + k, max(total - 1, 0))]
            h = np.where(more, ((h * np.uint64(1_000_003)) ^ nxt) & np.uint64(0xFFFFFFFF), h)
        return h.astype(np.uint32), counts


def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The ``(a, b)`` uint32 vectors of datasketch's ``affine32`` scheme for ``seed``."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def fmix32(h: np.ndarray) -> np.ndarray:
    """The MurmurHash3 32-bit finaliser (a bijection), elementwise; wraps modulo 2^32."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def minhash_signatures(texts: list[str], num_perm: int, ngram: int, seed: int = 1,
                       words: list[list[str]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The MinHash signatures of ``texts`` as one ``(n, num_perm)`` uint32 matrix, and which
    texts have words at all (a row without words is zeros). ``words``: each text's words, when
    the caller has split them already (see :class:`Shingler`)."""
    shingles, counts = Shingler(ngram)(texts, words)
    has = counts > 0
    hv = np.zeros((len(texts), num_perm), dtype=np.uint32)
    if not len(shingles):
        return hv, has
    a, b = permutations(num_perm, seed)
    x = fmix32(shingles)
    starts = np.cumsum(counts) - counts
    rows = np.flatnonzero(has)
    rows = rows[np.argsort(-counts[rows], kind="stable")]  # longest first: a prefix stays active
    acc = np.empty((SIG_ROWS, num_perm), dtype=np.uint32)
    tmp = np.empty_like(acc)
    for r0 in range(0, len(rows), SIG_ROWS):
        block = rows[r0 : r0 + SIG_ROWS]
        st, ct = starts[block], counts[block]
        m = len(block)
        np.multiply(x[st][:, None], a[None, :], out=acc[:m])
        acc[:m] += b
        for k in range(1, int(ct[0])):  # the k-th shingle of every text that has one
            mk = int(np.searchsorted(-ct, -k, side="left"))  # texts with more than k shingles
            np.multiply(x[st[:mk] + k][:, None], a[None, :], out=tmp[:mk])
            tmp[:mk] += b
            np.minimum(acc[:mk], tmp[:mk], out=acc[:mk])
        hv[block] = acc[:m]
    return hv, has


def _lsh_error(threshold: float, num_perm: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every ``(b, r)`` with ``b * r <= num_perm`` (b, then r ascending) and the false-positive
    plus false-negative probability mass of each, integrated exactly (Gauss-Legendre nodes
    enough for the polynomial ``1 - (1 - s^r)^b`` of degree ``b * r <= num_perm``)."""
    bs = np.concatenate([np.full(num_perm // b, b) for b in range(1, num_perm + 1)])
    rs = np.concatenate([np.arange(1, num_perm // b + 1) for b in range(1, num_perm + 1)])
    x, w = np.polynomial.legendre.leggauss(num_perm // 2 + 2)

    def mass(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
        s = (hi - lo) / 2 * x + (hi + lo) / 2
        p = 1 - (1 - s[None, :] ** rs[:, None].astype(float)) ** bs[:, None].astype(float)
        return p, (hi - lo) / 2 * w

    p_lo, w_lo = mass(0.0, threshold)
    p_hi, w_hi = mass(threshold, 1.0)
    return bs, rs, 0.5 * (p_lo @ w_lo) + 0.5 * ((1 - p_hi) @ w_hi)


def lsh_bands(threshold: float, num_perm: int) -> list[tuple[int, int]]:
    """The column ranges of the LSH bands datasketch's ``MinHashLSH`` picks for this threshold
    (``b`` bands of ``r`` rows minimising false positives plus false negatives)."""
    bs, rs, err = _lsh_error(threshold, num_perm)
    k = int(np.argmin(err))
    b, r = int(bs[k]), int(rs[k])
    return [(i * r, (i + 1) * r) for i in range(b)]


def _band_hash(cols: np.ndarray) -> np.ndarray:
    """A 64-bit key per row of a band. A collision only adds a candidate, which is verified."""
    h = np.zeros(len(cols), dtype=np.uint64)
    for c in range(cols.shape[1]):
        h = (h ^ cols[:, c].astype(np.uint64)) * MIX
        h ^= h >> np.uint64(31)
    return h


def _pair_sims(hv: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Estimated Jaccard (share of equal signature values) of each pair ``(i[k], j[k])``."""
    out = np.empty(len(i), dtype=np.float64)
    for c in range(0, len(i), PAIR_CHUNK):
        ic, jc = i[c : c + PAIR_CHUNK], j[c : c + PAIR_CHUNK]
        rows = take_rows(hv, np.concatenate((ic, jc)))
        out[c : c + PAIR_CHUNK] = np.count_nonzero(rows[: len(ic)] == rows[len(ic) :], axis=1)
    return out / hv.shape[1]


def take_rows(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``a[idx]``. A memory-mapped file (a whole ``np.memmap``) is read with positional reads
    of the distinct rows asked for, not through its mapping: a fault on a mapped file can map
    the whole large folio around the row (kernels that cache files in large folios do), so a
    few thousand scattered rows would grow the process by most of a multi-gigabyte signature
    file; read this way, only the rows taken are held."""
    if not (isinstance(a, np.memmap) and isinstance(a.base, mmap.mmap) and a.flags.c_contiguous
            and a.filename and len(idx) and a.ndim > 1):
        return a[idx]
    import os

    idx = np.asarray(idx)
    if idx.min() < 0 or idx.max() >= len(a):
        raise IndexError(f"row {int(idx.max() if idx.max() >= len(a) else idx.min())} of {len(a)}")
    want, back = np.unique(idx, return_inverse=True)
    out = np.empty((len(want), *a.shape[1:]), dtype=a.dtype)
    size = out[0].nbytes
    view = memoryview(out.reshape(-1).view(np.uint8))
    fd = os.open(a.filename, os.O_RDONLY)
    try:
        for k, at in enumerate((a.offset + want.astype(np.int64) * size).tolist()):
            if os.preadv(fd, [view[k * size : (k + 1) * size]], at) != size:
                raise OSError(f"{a.filename}: short read at byte {at}")
    finally:
        os.close(fd)
    return out[back.reshape(-1)]


def release_pages(a: np.ndarray) -> None:
    """Let go of the pages a memory-mapped array (``np.memmap``, or an array over an ``mmap``)
    has read into this process: they stay in the system's page cache, so reading them again
    costs no disk, but a scan of scattered rows of a large signature file no longer grows the
    process by the whole file. Anything else is left as it is."""
    base: object = a
    while base is not None and not isinstance(base, mmap.mmap):
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    if isinstance(base, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        base.madvise(mmap.MADV_DONTNEED)


#: items from which a column over every item (dedup's copies and similarities) is a file in the
#: build's scratch folder, memory-mapped, rather than memory of the build's process
OUT_OF_CORE = 1 << 21


def column(n: int, dtype: type | str, fill: object, scratch: object = None) -> np.ndarray:
    """``n`` items of ``dtype`` set to ``fill``: in memory, or, from :data:`OUT_OF_CORE` items
    and with a ``scratch`` folder, a memory-mapped file there (unlinked at once: it lives as
    long as the array), written a block at a time with its pages let go after each
    (:func:`release_pages`: they stay in the page cache, which may write them back and reclaim
    them, so the column takes the process's memory only while its pages are in use)."""
    if scratch is None or n < OUT_OF_CORE:
        return np.full(n, fill, dtype=dtype)
    import tempfile

    fd, path = tempfile.mkstemp(dir=str(scratch), prefix="column-")
    try:
        os.ftruncate(fd, n * np.dtype(dtype).itemsize)
        out = np.memmap(path, dtype=dtype, mode="r+", shape=(n,))
    finally:
        os.close(fd)
        os.unlink(path)
    if fill:  # a new file reads as zeros
        for lo in range(0, n, BAND_READ):
            out[lo:lo + BAND_READ] = fill
            release_pages(out)
    return out


def nonzero_where(a: np.ndarray, test: Callable[[np.ndarray], np.ndarray], index: type) -> np.ndarray:
    """The places in ``a`` where ``test`` (of a block of it, its mask) holds, as ``index``
    integers, tested a block at a time: no mask over every item is made."""
    parts = [np.flatnonzero(test(a[lo:lo + BAND_READ])).astype(index) + index(lo)
             for lo in range(0, len(a), BAND_READ)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=index)


def _take_earliest(first: np.ndarray, sim: np.ndarray, i: np.ndarray, j: np.ndarray,
                   s: np.ndarray) -> None:
    """Improve ``first``/``sim`` with the hits ``i -> j`` (similarity ``s``): lowest ``i`` wins."""
    if not len(j):
        return
    order = np.lexsort((i, j))
    i, j, s = i[order], j[order], s[order]
    lead = np.r_[True, j[1:] != j[:-1]]
    i, j, s = i[lead], j[lead], s[lead]
    better = (first[j] < 0) | (i < first[j])
    first[j[better]], sim[j[better]] = i[better], s[better]


def _earliest_in_runs(hv: np.ndarray, members: np.ndarray, run: np.ndarray,
                      threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """For each member, by its place in ``members``: the earliest earlier member of its run
    with estimated Jaccard >= ``threshold`` (``-1`` if none) and that estimate. ``members``
    (signature rows of ``hv``) are ascending within each run and runs are contiguous (``run``
    labels them). Runs up to ``SMALL_RUN`` long compare all pairs, vectorised by offset;
    longer ones scan blockwise and stop each query at its first hit."""
    earliest = np.full(len(members), -1, dtype=members.dtype)
    sim = np.zeros(len(members), dtype=np.float32)
    start = np.flatnonzero(np.r_[True, run[1:] != run[:-1]])
    length = np.diff(np.r_[start, len(run)])
    for s0, n in zip(start[length > SMALL_RUN].tolist(), length[length > SMALL_RUN].tolist(),
                     strict=True):
        m = members[s0 : s0 + n]
        rows = take_rows(hv, m)  # the run's signatures, read once for all its blocks
        local, f, fs = np.arange(n), np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.float32)
        _scan(functools.partial(_block_sims, rows), local, local, threshold, f, fs,
              block=MH_BLOCK, chunk=MH_BLOCK)
        found = np.flatnonzero(f >= 0)
        earliest[s0 + found], sim[s0 + found] = m[f[found]], fs[found]
    small = (length >= 2) & (length <= SMALL_RUN)
    if not small.any():
        return earliest, sim
    st, ln = start[small], length[small]
    idx = np.int32 if len(run) < 2**31 else np.int64  # one array of these per member at a time
    pos: np.ndarray = np.arange(int(ln.sum()), dtype=idx)  # each member's place: its run's
    pos += np.repeat((st - (np.cumsum(ln) - ln)).astype(idx), ln)  # start + its offset in it
    left = np.repeat((st + ln - 1).astype(idx), ln)  # members after this one in its run
    left -= pos
    for d in range(1, int(ln.max())):
        pos, left = pos[left >= d], left[left >= d]
        i, j = members[pos], pos + d
        s = _pair_sims(hv, i, members[j])
        hit = s >= threshold
        _take_earliest(earliest, sim, i[hit], j[hit], s[hit].astype(np.float32))
    return earliest, sim


def _block_sims(hv: np.ndarray, q: np.ndarray, m: np.ndarray) -> np.ndarray:
    return (hv[q][:, None, :] == hv[m][None, :, :]).sum(axis=2) / hv.shape[1]


def minhash_neighbours(
    texts: list[str], groups: list[list[int]], threshold: float, num_perm: int = 128,
    ngram: int = 3, seed: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Earliest earlier item with estimated Jaccard >= threshold, per item, and that estimate.

    Signatures are datasketch's ``MinHash`` values (:func:`minhash_signatures`). Groups up
    to ``SMALL_GROUP`` items compare all pairs; larger ones use LSH banding with the bands
    datasketch's ``MinHashLSH`` would use: items sharing a band are candidates, found by
    sorting each band's keys (no table per band), and a candidate counts when its estimated
    Jaccard reaches the threshold. Items without words match nothing."""
    hv, has = minhash_signatures(texts, num_perm, ngram, seed)
    gid = np.full(len(texts), -1, dtype=np.int64)
    for g, group in enumerate(groups):
        gid[np.asarray(group, dtype=np.int64)] = g
    bands = band_keys(hv, lsh_bands(threshold, num_perm))
    return banded_neighbours(hv, has & (gid >= 0), gid, bands, threshold)


def band_keys(hv: np.ndarray, bands: list[tuple[int, int]]) -> np.ndarray:
    """The ``(n, len(bands))`` uint64 LSH keys of each signature row (see :func:`lsh_bands`):
    computed where the signatures are, so the search needs only these and a verification read
    of the candidates' signatures."""
    out = np.empty((len(hv), len(bands)), dtype=np.uint64)
    for b, (lo, hi) in enumerate(bands):
        out[:, b] = _band_hash(np.asarray(hv[:, lo:hi]))
    return out


#: eligible items (of groups over :data:`SMALL_GROUP`) from which the bands are joined on the
#: build's engine, one band a task, when the signatures and band keys are files
BAND_MAP_MIN = 50_000


def banded_neighbours(hv: np.ndarray, eligible: np.ndarray, gid: np.ndarray, bands: np.ndarray,
                      threshold: float, map: Callable | None = None,
                      out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`minhash_neighbours` over precomputed signatures ``hv`` (which may be a
    memory-mapped file: only candidates' rows are read), the items that take part
    (``eligible``), their group ids and their band keys (:func:`band_keys`). ``map``: the
    build's engine (``ctx.map_chunks``); when the signatures and band keys are memory-mapped
    files and enough items take part, each band is joined in a task of its own
    (:func:`band_hits`) and the earliest of every band's hits is kept: the same answer.
    ``out``: the ``first`` and ``sim`` arrays to fill (``-1`` and ``0`` at every eligible item;
    the others are left as they are), instead of new ones: a caller with answers of its own for
    the other items (dedup's exact copies) holds one pair of arrays over every item, not two."""
    n = len(gid)
    index = np.int32 if n < 2**31 else np.int64  # half the memory of int64 for a 10M-item join
    if out is not None:
        first, sim = out
    else:
        first, sim = np.full(n, -1, dtype=index), np.zeros(n, dtype=np.float32)
    # each eligible item's group size, a block at a time (the gathers and bincount's 64-bit
    # copy of every item's group were 200 MB at 10M items)
    n_groups = int(gid.max(initial=0)) + 1
    sizes = np.zeros(n_groups, dtype=np.int64)
    for lo in range(0, n, BAND_READ):
        sizes += np.bincount(gid[lo:lo + BAND_READ][eligible[lo:lo + BAND_READ]], minlength=n_groups)
    big = sizes > SMALL_GROUP
    large = np.zeros(n, dtype=bool)
    for lo in range(0, n, BAND_READ):
        large[lo:lo + BAND_READ] = eligible[lo:lo + BAND_READ] & big[gid[lo:lo + BAND_READ]]
    del sizes, big
    small_items = np.flatnonzero(eligible & ~large)  # ascending: runs are groups
    order = np.argsort(gid[small_items], kind="stable")
    members = small_items[order]
    earliest, esim = _earliest_in_runs(hv, members, gid[members], threshold)
    hit = earliest >= 0
    _take_earliest(first, sim, earliest[hit], members[hit], esim[hit])
    del small_items, order, members, earliest, esim, hit
    items = _nonzero(eligible & large, index)
    if len(items) < 2:
        return first, sim
    if map is not None and isinstance(hv, np.memmap) and isinstance(bands, np.memmap) and \
            bands.shape[1] > 1 and len(items) >= BAND_MAP_MIN:
        path = _item_table(hv, items, gid)
        del items, large  # in the file now: not held here while the workers join the bands
        try:
            _bands_on(map, hv, bands, path, threshold, first, sim)
        finally:
            os.unlink(path)
        return first, sim
    for b in range(bands.shape[1]):
        for j, i, s in _join_band(hv, bands, b, items, gid[items], threshold):
            _take_earliest(first, sim, i, j, s)
        release_pages(first)
        release_pages(sim)
    return first, sim


def _nonzero(mask: np.ndarray, index: type) -> np.ndarray:
    """``np.flatnonzero(mask)`` as ``index`` integers, found a block at a time (no 64-bit
    array of every index on the way: 80 MB at 10M items)."""
    return nonzero_where(mask, lambda block: block, index)


def _join_band(hv: np.ndarray, bands: np.ndarray, b: int, items: np.ndarray, groups: np.ndarray,
               threshold: float) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Band ``b``'s candidates: ``items`` (ascending, of groups ``groups``; arrays, or the rows
    of a memory-mapped file) that share its key in their group. Yields, part by part, the
    items that found an earlier similar candidate, that candidate and the similarity (an item
    is in one part only). Above ``JOIN_PART`` items the band is joined in parts by key (equal
    keys fall in one part), each part's items read in blocks from ``items``: the join holds
    one part, not the band, whatever the number of items."""
    parts = max(1, -(-len(items) // JOIN_PART))
    for p in range(parts):
        mine, groups_p, key = [], [], []
        for lo in range(0, len(items), BAND_READ):  # each band's column lies across the whole
            it = np.asarray(items[lo:lo + BAND_READ])  # file: read, then let go, a block of
            k = bands[it, b]                           # its rows at a time
            release_pages(bands)
            keep = k % np.uint64(parts) == p if parts > 1 else slice(None)
            mine.append(it[keep])
            groups_p.append(np.asarray(groups[lo:lo + BAND_READ])[keep])
            key.append(k[keep])
            release_pages(items)
            release_pages(groups)
        part, kg = np.concatenate(mine), np.concatenate(groups_p)
        k = np.concatenate(key)
        del mine, groups_p, key
        order = np.lexsort((part, k, kg)).astype(part.dtype, copy=False)
        k, kg = k[order], kg[order]
        run = np.cumsum(np.r_[True, (k[1:] != k[:-1]) | (kg[1:] != kg[:-1])], dtype=part.dtype)
        del k, kg
        members = part[order]
        del order, part  # a 2M-item part: each of these arrays is 8-16 MB, gone before the pairs
        earliest, sim = _earliest_in_runs(hv, members, run, threshold)
        hit = earliest >= 0
        yield members[hit], earliest[hit], sim[hit]


def _mapped(a: np.memmap) -> tuple:
    return str(a.filename), a.offset, a.dtype.str, a.shape


def _item_table(hv: np.memmap, items: np.ndarray, gid: np.ndarray) -> str:
    """A file beside the signatures holding ``items`` and their groups (a ``(2, n)`` .npy):
    what np.save of the two stacked writes, without a stacked copy, and written a block at a
    time from the arrays, not through a mapping of the file (whose written pages would count
    in this process's memory: 80 MB at 10M items)."""
    import tempfile

    fd, path = tempfile.mkstemp(dir=os.path.dirname(str(hv.filename)), prefix="band-items-", suffix=".npy")
    try:
        dtype = np.result_type(items, gid)
        with os.fdopen(fd, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                     "fortran_order": False, "shape": (2, len(items))})
            for lo in range(0, len(items), BAND_READ):
                np.ascontiguousarray(items[lo:lo + BAND_READ], dtype=dtype).tofile(f)
            for lo in range(0, len(items), BAND_READ):
                np.ascontiguousarray(gid[items[lo:lo + BAND_READ]], dtype=dtype).tofile(f)
    except BaseException:
        os.unlink(path)
        raise
    return path


def _bands_on(map: Callable, hv: np.memmap, bands: np.memmap, path: str, threshold: float,
              first: np.ndarray, sim: np.ndarray) -> None:
    """Every band joined in a task (:func:`band_hits`), the items and their groups in the file
    ``path`` (:func:`_item_table`); each task's hits improve ``first``/``sim`` (the earliest
    wins, so the order they come in makes no difference)."""
    job = (_mapped(hv), _mapped(bands), path, len(first), float(threshold))
    for j, i, s in map(band_hits, job, range(bands.shape[1])):
        _take_earliest(first, sim, i, j, s)
        release_pages(first)  # scattered writes: a column in a file lets its pages go
        release_pages(sim)


def band_hits(job: tuple, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One band's join, in a worker of the build's engine (:func:`_bands_on`): the items that
    found an earlier similar candidate in it, that candidate and the similarity. The items and
    their groups are read from their file a block at a time, as the band's parts need them."""
    (hv_file, hv_off, hv_type, hv_shape), (bd_file, bd_off, bd_type, bd_shape), path, _n, threshold = job
    hv = np.memmap(hv_file, dtype=np.dtype(hv_type), mode="r", offset=hv_off, shape=hv_shape)
    bands = np.memmap(bd_file, dtype=np.dtype(bd_type), mode="r", offset=bd_off, shape=bd_shape)
    table = np.load(path, mmap_mode="r")
    hits = list(_join_band(hv, bands, b, table[0], table[1], threshold))
    del table
    return (np.concatenate([h[0] for h in hits]), np.concatenate([h[1] for h in hits]),
            np.concatenate([h[2] for h in hits]))


# --- cosine search over embeddings ----------------------------------------------------------

def _scan(pair_sims: Callable[[np.ndarray, np.ndarray], np.ndarray], queries: np.ndarray,
          members: np.ndarray, threshold: float, first: np.ndarray, sim: np.ndarray,
          block: int = BLOCK, chunk: int = CHUNK) -> None:
    """For each query index, the earliest member index below it with similarity >= threshold
    (``pair_sims(q, m)``: the similarity matrix of query and member indices).

    ``queries`` and ``members`` are ascending index arrays; results improve ``first``/``sim``.
    Members are scanned in ascending chunks and a query stops at its first hit."""
    for q0 in range(0, len(queries), block):
        q = queries[q0 : q0 + block]
        active = np.ones(len(q), dtype=bool)
        for m0 in range(0, len(members), chunk):
            m = members[m0 : m0 + chunk]
            if m[0] >= q[-1] or not active.any():
                break
            qa = q[active]
            s = pair_sims(qa, m)
            hit = (s >= threshold) & (m[None, :] < qa[:, None])
            found = hit.any(axis=1)
            if not found.any():
                continue
            pos = hit.argmax(axis=1)[found]
            rows, idx = qa[found], m[pos]
            better = (first[rows] < 0) | (idx < first[rows])
            first[rows[better]] = idx[better]
            sim[rows[better]] = s[np.flatnonzero(found)[better], pos[better]]
            act = np.flatnonzero(active)
            active[act[found]] = False


def _kmeans(emb: np.ndarray, k: int, seed: int, iters: int = 6, sample: int = 32_768) -> np.ndarray:
    """Spherical k-means centroids trained on a seeded sample."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(emb), size=min(sample, len(emb)), replace=False)
    x = emb[np.sort(pick)]
    cent = x[rng.choice(len(x), size=k, replace=False)].copy()
    for _ in range(iters):
        lab = np.concatenate([(x[i : i + 16384] @ cent.T).argmax(1) for i in range(0, len(x), 16384)])
        sums = np.zeros_like(cent)
        np.add.at(sums, lab, x)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        cent = np.where(norms > 0, sums / np.maximum(norms, 1e-12), cent)
    return cent


def _top2(emb: np.ndarray, idx: np.ndarray, cent: np.ndarray) -> np.ndarray:
    out = np.empty((len(idx), 2), dtype=np.int64)
    for i in range(0, len(idx), 16384):
        s = emb[idx[i : i + 16384]] @ cent.T
        top = np.argpartition(-s, 1, axis=1)[:, :2]
        order = np.take_along_axis(s, top, 1).argsort(axis=1)[:, ::-1]
        out[i : i + 16384] = np.take_along_axis(top, order, 1)
    return out


def _split(idx: np.ndarray, label: np.ndarray, k: int) -> list[np.ndarray]:
    """Indices per label, each ascending (one stable sort, not one scan per label)."""
    order = np.lexsort((idx, label))
    bounds = np.searchsorted(label[order], np.arange(k + 1))
    return [idx[order[bounds[c] : bounds[c + 1]]] for c in range(k)]


def cosine_neighbours(
    emb: np.ndarray, groups: list[list[int]], threshold: float, seed: int = 1, probes: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Earliest earlier item with cosine >= threshold, per item (``emb`` rows L2-normalised).

    Groups up to :data:`EXACT_LIMIT` items are searched exhaustively; larger ones through an
    inverted-file index (about ``1.4 * sqrt(n)`` lists, ``probes`` lists per query), which finds
    near-duplicates (cosine well above the lists' spread) without comparing all pairs."""
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    first = np.full(len(emb), -1, dtype=np.int64)
    sim = np.zeros(len(emb), dtype=np.float32)

    def dots(q: np.ndarray, m: np.ndarray) -> np.ndarray:
        return emb[q] @ emb[m].T

    for group in groups:
        idx = np.asarray(group, dtype=np.int64)
        if len(idx) < 2:
            continue
        if len(idx) <= EXACT_LIMIT:
            _scan(dots, idx, idx, threshold, first, sim)
            continue
        k = int(min(4096, max(16, 1.4 * np.sqrt(len(idx)))))  # balances assignment and scans
        cent = _kmeans(emb[idx] if len(idx) < len(emb) else emb, k, seed)
        top = _top2(emb, idx, cent)
        lists = _split(idx, top[:, 0], k)
        probe_of = _split(np.tile(idx, probes), top[:, :probes].T.ravel(), k)
        for c in range(k):
            if len(lists[c]) and len(probe_of[c]):
                _scan(dots, probe_of[c], lists[c], threshold, first, sim)
    return first, sim
