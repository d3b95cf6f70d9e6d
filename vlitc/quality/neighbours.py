"""Earliest near neighbours without comparing all pairs: MinHash LSH over word shingles
(datasketch) and cosine search over normalised embeddings (an inverted-file index: spherical
k-means lists, each query probing its two nearest lists, blockwise matrix products).

Both answer the same question for every item ``j``: the smallest ``i < j`` in the same group
whose similarity reaches the threshold, or ``-1``. Items are indices into the caller's arrays;
groups are lists of indices in ascending order (a scope: one image, one task, everything).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np

WORD = re.compile(r"\w+")
SMALL_GROUP = 32  # pairwise below this size (MinHash)
EXACT_LIMIT = 20_000  # exhaustive blockwise search below this size (embeddings)
BLOCK = 2048
CHUNK = 4096


# --- MinHash LSH ---------------------------------------------------------------------------

def _identity(x: int) -> int:
    return x


def _band_key(band: bytes) -> bytes:
    """An 8-byte key per LSH band (instead of the band's raw bytes): a smaller index."""
    return hashlib.blake2b(band, digest_size=8).digest()


class Shingler:
    """Word n-gram shingles as 32-bit ints (token hashes from datasketch's sha1_hash32, cached)."""

    def __init__(self, n: int):
        from datasketch.hashfunc import sha1_hash32

        self.n, self._hash = n, sha1_hash32
        self._vocab: dict[str, int] = {}

    def __call__(self, text: str) -> np.ndarray:
        toks = WORD.findall(text.lower())
        if not toks:
            return np.zeros(0, dtype=np.uint64)
        vocab = self._vocab
        ids = np.fromiter(
            (vocab[t] if t in vocab else vocab.setdefault(t, self._hash(t.encode())) for t in toks),
            dtype=np.uint64, count=len(toks))
        n = min(self.n, len(ids))
        h = ids[: len(ids) - n + 1].copy()
        for k in range(1, n):
            h = ((h * np.uint64(1_000_003)) ^ ids[k : len(ids) - n + 1 + k]) & np.uint64(0xFFFFFFFF)
        return np.unique(h)


def minhashes(texts: list[str], num_perm: int, ngram: int, seed: int = 1) -> Any:
    """One datasketch ``MinHash`` per text (``None`` for a text without words), lazily."""
    from datasketch import MinHash

    proto = MinHash(num_perm=num_perm, seed=seed)
    perms, scheme = proto.permutations, proto.scheme
    shingle = Shingler(ngram)
    for t in texts:
        sh = shingle(t)
        if not len(sh):
            yield None
            continue
        m = MinHash(num_perm=num_perm, seed=seed, hashfunc=_identity, permutations=perms,
                    scheme=scheme)
        m.update_batch(sh.tolist())
        yield m


def minhash_neighbours(
    texts: list[str], groups: list[list[int]], threshold: float, num_perm: int = 128,
    ngram: int = 3, seed: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Earliest earlier item with estimated Jaccard >= threshold, per item, and that estimate.

    Signatures are kept as one uint32 matrix per group (not as MinHash objects), and each item
    is queried against the LSH index of the items before it, then inserted."""
    from datasketch import MinHashLSH

    first = np.full(len(texts), -1, dtype=np.int64)
    sim = np.zeros(len(texts), dtype=np.float32)
    for group in groups:
        hv = np.zeros((len(group), num_perm), dtype=np.uint32)
        has = np.zeros(len(group), dtype=bool)
        lsh = None if len(group) <= SMALL_GROUP else MinHashLSH(
            threshold=threshold, num_perm=num_perm, hashfunc=_band_key)
        for j, m in enumerate(minhashes([texts[i] for i in group], num_perm, ngram, seed)):
            if m is None:
                continue
            hv[j], has[j] = m.hashvalues, True
            cands = sorted(lsh.query(m)) if lsh is not None else range(j)
            for i in cands:
                if not has[i]:
                    continue
                s = float(np.count_nonzero(hv[i] == hv[j])) / num_perm
                if s >= threshold:
                    first[group[j]], sim[group[j]] = group[i], s
                    break
            if lsh is not None:
                lsh.insert(j, m, check_duplication=False)
    return first, sim


# --- cosine search over embeddings ----------------------------------------------------------

def _scan(emb: np.ndarray, queries: np.ndarray, members: np.ndarray, threshold: float,
          first: np.ndarray, sim: np.ndarray) -> None:
    """For each query index, the earliest member index below it with cosine >= threshold.

    ``queries`` and ``members`` are ascending index arrays; results improve ``first``/``sim``.
    Members are scanned in ascending chunks and a query stops at its first hit."""
    for q0 in range(0, len(queries), BLOCK):
        q = queries[q0 : q0 + BLOCK]
        active = np.ones(len(q), dtype=bool)
        for m0 in range(0, len(members), CHUNK):
            m = members[m0 : m0 + CHUNK]
            if m[0] >= q[-1] or not active.any():
                break
            qa = q[active]
            s = emb[qa] @ emb[m].T
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
    for group in groups:
        idx = np.asarray(group, dtype=np.int64)
        if len(idx) < 2:
            continue
        if len(idx) <= EXACT_LIMIT:
            _scan(emb, idx, idx, threshold, first, sim)
            continue
        k = int(min(4096, max(16, 1.4 * np.sqrt(len(idx)))))  # balances assignment and scans
        cent = _kmeans(emb[idx] if len(idx) < len(emb) else emb, k, seed)
        top = _top2(emb, idx, cent)
        lists = _split(idx, top[:, 0], k)
        probe_of = _split(np.tile(idx, probes), top[:, :probes].T.ravel(), k)
        for c in range(k):
            if len(lists[c]) and len(probe_of[c]):
                _scan(emb, probe_of[c], lists[c], threshold, first, sim)
    return first, sim
