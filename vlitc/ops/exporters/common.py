"""What every file exporter shares: params, split selection, validation, sharding, images, and
atomic writes (validate everything, write temp files, then rename; nothing half-written)."""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from vlitc.errors import ConfigurationError
from vlitc.ops.base import Exporter, OpContext
from vlitc.ops.exporters.validate import check_samples
from vlitc.records import Sample

COMMON_PROPERTIES: dict[str, dict] = {
    "path": {"type": "string", "minLength": 1},
    "images": {"enum": ["reference", "copy", "link"], "default": "reference"},
    "image_dir": {"type": "string", "minLength": 1, "default": "images"},
    "split": {"enum": ["train", "validation", "all"], "default": "all"},
    "shard_size": {"type": "integer", "minimum": 1},
    "max_tokens": {"type": "integer", "minimum": 1},
    "tokens_per_word": {"type": "number", "exclusiveMinimum": 0, "default": 1.3},
    "image_tokens": {"type": "integer", "minimum": 0, "default": 0},
}


def exporter_schema(**extra: dict) -> dict:
    """The strict params schema of a file exporter: the common params plus ``extra``."""
    return {"type": "object", "properties": {**COMMON_PROPERTIES, **extra},
            "required": ["path"], "additionalProperties": False}


def _plain(part: object) -> bool:
    """A relative POSIX path that :class:`PurePosixPath` keeps as written: no empty, ``.`` or
    ``..`` segment, no leading or trailing slash."""
    return (type(part) is str and part != "" and part[0] != "/" and part[-1] not in "/."
            and "//" not in part and "./" not in part)


def image_ref(image: dict) -> str:
    """How a release names an image: ``<source root>/<path>``, relative to the image folder."""
    root, path = image["root"], image["path"]
    if _plain(root) and _plain(path):  # the usual case, joined without a Path object
        return f"{root}/{path}"
    return str(PurePosixPath(root) / path)


def safe_relpath(path: str, what: str) -> PurePosixPath:
    """A path inside the release folder; absolute paths and ``..`` are configuration errors."""
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts:
        raise ConfigurationError(
            f"{what}: {path!r} must be a relative path inside the release folder")
    return p


def shard_names(rel: PurePosixPath, n_shards: int) -> list[PurePosixPath]:
    """``train.json`` -> ``train-00000-of-00003.json`` ... (one name, unchanged, when unsharded)."""
    if n_shards <= 1:
        return [rel]
    suffix, stem = rel.suffix, rel.stem
    return [rel.with_name(f"{stem}-{i:05d}-of-{n_shards:05d}{suffix}") for i in range(n_shards)]


@contextmanager
def cycle_collector_off() -> Iterator[None]:
    """Hold the cycle collector while an export gathers, checks and writes its samples: they are
    millions of acyclic containers, and every full collection would walk all of them again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class FileExporter(Exporter):
    """Base of the file exporters: subclasses give ``record(sample)`` (one sample in the format's
    shape) and ``write(samples, path)`` (one shard of validated samples to one file)."""

    reads = ("id", "task", "source", "image", "turns", "meta.split")

    def record(self, s: Sample) -> dict:
        raise NotImplementedError

    def write(self, samples: list[Sample], path: Path) -> None:
        raise NotImplementedError

    def export(self, samples: Iterable[Sample], ctx: OpContext) -> list[str]:
        if ctx.out_dir is None:
            raise RuntimeError("exporters need ctx.out_dir")
        rel = safe_relpath(self.params["path"], f"outputs.{self.name}.path")
        with cycle_collector_off():
            chosen = self.select(samples)
            check_samples(chosen, ctx, what=f"{self.name} export {rel}", **self.budget())
            size = self.params.get("shard_size") or max(len(chosen), 1)
            shards = [chosen[i:i + size] for i in range(0, len(chosen), size)] or [[]]
            names = shard_names(rel, len(shards))
            written = self.write_atomically(ctx.out_dir, list(zip(names, shards, strict=True)))
        ctx.count("exported", len(chosen))
        return written + self.place_images(chosen, ctx)

    def select(self, samples: Iterable[Sample]) -> list[Sample]:
        want = self.params.get("split", "all")
        if want == "all":
            return list(samples)
        return [s for s in samples if (s.get("meta") or {}).get("split", "train") == want]

    def budget(self) -> dict[str, Any]:
        return {"max_tokens": self.params.get("max_tokens"),
                "tokens_per_word": self.params.get("tokens_per_word", 1.3),
                "image_tokens": self.params.get("image_tokens", 0)}

    def write_atomically(self, root: Path, parts: list[tuple[PurePosixPath, list[Sample]]]) -> list[str]:
        """Write every part to a temp file beside its target, then rename them all."""
        temps: list[tuple[str, Path]] = []
        try:
            for rel, shard in parts:
                target = root / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
                os.close(fd)
                temps.append((tmp, target))
                self.write(shard, Path(tmp))
            for tmp, target in temps:
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
        finally:
            for tmp, _ in temps:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return [str(rel) for rel, _ in parts]

    def place_images(self, samples: list[Sample], ctx: OpContext) -> list[str]:
        """Copy or hard-link the images into ``image_dir`` (nothing to do for ``reference``)."""
        mode = self.params.get("images", "reference")
        if mode == "reference":
            return []
        base = safe_relpath(self.params.get("image_dir", "images"), f"outputs.{self.name}.image_dir")
        out: list[str] = []
        images = {image_ref(s["image"]): s["image"] for s in samples if s.get("image")}
        for ref in sorted(images):
            rel = base / ref
            put_file(ctx.image_path(images[ref]), ctx.out_dir / rel, mode, ctx)
            out.append(str(rel))
        return out


#: samples encoded and written per chunk, so a large export never builds one giant string
CHUNK = 8192


def write_joined(path: Path, samples: list[Sample], encode: Callable[[Sample], str], *,
                 sep: str, start: str = "", end: str = "") -> None:
    """Write ``start + sep.join(encode(s) for s in samples) + end`` as UTF-8, chunk by chunk."""
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(start)
        for i in range(0, len(samples), CHUNK):
            text = sep.join([encode(s) for s in samples[i:i + CHUNK]])
            fh.write(sep + text if i else text)
        fh.write(end)


def put_file(src: Path, dst: Path, mode: str, ctx: OpContext) -> None:
    """Copy or hard-link ``src`` to ``dst`` through a temp name; links fall back to copies across
    filesystems (counted as ``link_fallback_copy``)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    if tmp.exists():
        tmp.unlink()
    try:
        if mode == "link":
            try:
                os.link(src, tmp)
            except OSError:
                ctx.count("link_fallback_copy")
                shutil.copyfile(src, tmp)
        else:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
