"""What every file exporter shares: params, split selection, validation, sharding, images, and
atomic writes (validate everything, write temp files, then rename; nothing half-written)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
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


def image_ref(image: dict) -> str:
    """How a release names an image: ``<source root>/<path>``, relative to the image folder."""
    return str(PurePosixPath(image["root"]) / image["path"])


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


class FileExporter(Exporter):
    """Base of the file exporters: subclasses give ``record(sample)`` and ``write(records, path)``."""

    reads = ("id", "task", "source", "image", "turns", "meta.split")

    def record(self, s: Sample) -> dict:
        raise NotImplementedError

    def write(self, records: list[dict], path: Path) -> None:
        raise NotImplementedError

    def export(self, samples: Iterable[Sample], ctx: OpContext) -> list[str]:
        if ctx.out_dir is None:
            raise RuntimeError("exporters need ctx.out_dir")
        rel = safe_relpath(self.params["path"], f"outputs.{self.name}.path")
        chosen = self.select(samples)
        check_samples(chosen, ctx, what=f"{self.name} export {rel}", **self.budget())
        records = [self.record(s) for s in chosen]
        size = self.params.get("shard_size") or max(len(records), 1)
        shards = [records[i:i + size] for i in range(0, len(records), size)] or [[]]
        names = shard_names(rel, len(shards))
        written = self.write_atomically(ctx.out_dir, list(zip(names, shards, strict=True)))
        ctx.count("exported", len(records))
        return written + self.place_images(chosen, ctx)

    def select(self, samples: Iterable[Sample]) -> list[Sample]:
        want = self.params.get("split", "all")
        return [s for s in samples
                if want == "all" or (s.get("meta") or {}).get("split", "train") == want]

    def budget(self) -> dict[str, Any]:
        return {"max_tokens": self.params.get("max_tokens"),
                "tokens_per_word": self.params.get("tokens_per_word", 1.3),
                "image_tokens": self.params.get("image_tokens", 0)}

    def write_atomically(self, root: Path, parts: list[tuple[PurePosixPath, list[dict]]]) -> list[str]:
        """Write every part to a temp file beside its target, then rename them all."""
        temps: list[tuple[str, Path]] = []
        try:
            for rel, recs in parts:
                target = root / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
                os.close(fd)
                temps.append((tmp, target))
                self.write(recs, Path(tmp))
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
