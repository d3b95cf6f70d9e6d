"""Image content facts for the image filters: sha256, perceptual hash (``imagehash``), size and
how blank an image is, computed once per image and remembered by content hash in the run's item
cache (``image-facts``)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vlitc.errors import ConfigurationError

FACTS_NS = "image-facts"
#: bump when what :func:`facts` computes changes (cached entries carry it)
FACTS_VERSION = 1


def need_imagehash() -> Any:
    """The ``imagehash`` module, or a configuration error naming the extra that installs it."""
    try:
        import imagehash
    except ImportError:
        raise ConfigurationError(
            "perceptual image hashes need the imagehash package\n"
            "hint: pip install 'vlitc[images]' (or set phash: false)") from None
    return imagehash


def facts_of_image(im: Any, sha256: str, phash: bool = True) -> dict:
    """Size, sha256, 64-bit perceptual hash (hex) and blankness (grey-level standard deviation
    and the share of the most common grey level) of a decoded Pillow image."""
    import numpy as np

    grey = np.asarray(im.convert("L").resize((64, 64)), dtype=np.float32)
    hist = np.bincount(grey.astype(np.uint8).ravel() // 8, minlength=32)
    out = {"v": FACTS_VERSION, "width": im.width, "height": im.height, "sha256": sha256,
           "std": round(float(grey.std()), 3),
           "dominant": round(float(hist.max() / hist.sum()), 4)}
    if phash:
        out["phash"] = str(need_imagehash().phash(im))
    return out


def facts_of_bytes(data: bytes, phash: bool = True) -> dict | None:
    """:func:`facts_of_image` of encoded image bytes (``None`` when they do not decode)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return facts_of_image(im, hashlib.sha256(data).hexdigest(), phash)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None


def facts_of_file(path: Path, phash: bool = True, cache: Any = None,
                  sha256: str | None = None) -> dict | None:
    """:func:`facts_of_bytes` of a file, remembered in ``cache`` by content hash."""
    key = f"{sha256}:{int(phash)}" if sha256 else None
    if key and cache is not None:
        hit = cache.get(key)
        if isinstance(hit, dict) and hit.get("v") == FACTS_VERSION:
            return hit
    try:
        data = path.read_bytes()
    except OSError:
        return None
    out = facts_of_bytes(data, phash)
    if out is not None and cache is not None:
        cache.set(f"{out['sha256']}:{int(phash)}", out)
    return out


def hamming(a: str, b: str) -> int:
    """Bits that differ between two hex hashes of one length."""
    return bin(int(a, 16) ^ int(b, 16)).count("1")


class HashIndex:
    """Perceptual hashes searched for the nearest within a Hamming distance: exact buckets on
    each of four 16-bit bands (pigeonhole: within distance 3 one band is equal), then a full
    scan of the few candidates; distances above 3 fall back to a vectorised scan."""

    def __init__(self) -> None:
        self.keys: list[Any] = []
        self.values: list[int] = []
        self.bands: list[dict[int, list[int]]] = [{}, {}, {}, {}]

    def add(self, phash: str, key: Any) -> None:
        v = int(phash, 16)
        i = len(self.values)
        self.values.append(v)
        self.keys.append(key)
        for b in range(4):
            self.bands[b].setdefault((v >> (16 * b)) & 0xFFFF, []).append(i)

    def __len__(self) -> int:
        return len(self.values)

    def nearest(self, phash: str, max_distance: int) -> tuple[Any, int] | None:
        """The key of the closest hash within ``max_distance`` (first added wins ties)."""
        if not self.values:
            return None
        v = int(phash, 16)
        cands: Iterable[int] = range(len(self.values))
        if max_distance <= 3:
            cands = sorted({i for b in range(4)
                            for i in self.bands[b].get((v >> (16 * b)) & 0xFFFF, [])})
        best: tuple[int, int] | None = None
        for i in cands:
            d = bin(self.values[i] ^ v).count("1")
            if d <= max_distance and (best is None or d < best[1]):
                best = (i, d)
        return (self.keys[best[0]], best[1]) if best else None
