"""What every file exporter shares: params, split selection, validation, sharding, images, and
atomic writes (validate everything, write temp files, then rename; nothing half-written)."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Protocol

from vlitc.errors import ConfigurationError
from vlitc.ops.base import Exporter, OpContext, cycle_collector_off
from vlitc.ops.exporters.validate import (
    ExportValidationError,
    SampleChecker,
    TokenCounter,
    tokenizer_files,
)
from vlitc.paths import plain_relative, relative_problem
from vlitc.records import Sample, images_of

COMMON_PROPERTIES: dict[str, dict] = {
    "path": {"type": "string", "minLength": 1},
    "images": {"enum": ["reference", "copy", "link"], "default": "reference"},
    "image_dir": {"type": "string", "minLength": 1, "default": "images"},
    "split": {"enum": ["train", "validation", "all"], "default": "all"},
    "shard_size": {"type": "integer", "minimum": 1},
    "max_tokens": {"type": "integer", "minimum": 1},
    "tokens_per_word": {"type": "number", "exclusiveMinimum": 0, "default": 1.3},
    "image_tokens": {"type": "integer", "minimum": 0, "default": 0},
    "tokenizer": {"type": "string", "minLength": 1,
                  "description": "the trainer's tokenizer (a local tokenizer.json or folder, "
                                 "loaded offline): max_tokens counts its tokens instead of the "
                                 "word estimate"},
}


def exporter_schema(**extra: dict) -> dict:
    """The strict params schema of a file exporter: the common params plus ``extra``."""
    return {"type": "object", "properties": {**COMMON_PROPERTIES, **extra},
            "required": ["path"], "additionalProperties": False}


#: source name -> the folder prefix its images get in a release (set for the length of an export)
_PREFIXES: ContextVar[dict[str, str] | None] = ContextVar("image_prefixes", default=None)


def image_prefixes(image_roots: dict[str, Path], derived: str = "derived") -> dict[str, str]:
    """Where each source's images sit under one image folder: sources that share a folder share
    a name (nothing, when every source reads the same folder); otherwise each folder's path
    relative to the folders' common parent. So one file always has one name in a release.
    Derived images (boxes drawn, written into the release) sit under ``derived``."""
    from vlitc.llm.vision import DERIVED_ROOT

    real = {name: os.path.realpath(folder) for name, folder in image_roots.items()
            if name != DERIVED_ROOT}
    if DERIVED_ROOT in image_roots:
        return {**image_prefixes({k: v for k, v in image_roots.items() if k != DERIVED_ROOT}),
                DERIVED_ROOT: derived}
    distinct = sorted(set(real.values()))
    if len(distinct) <= 1:
        return {name: "" for name in real}
    base = os.path.commonpath(distinct)
    out = {}
    for name, folder in real.items():
        rel = os.path.relpath(folder, base).replace(os.sep, "/")
        out[name] = "" if rel == "." else rel
    return out


def _outside_name(path: str) -> str:
    """The release name of an image a recipe allowed from outside its images folder (an absolute
    or ``..`` path): ``_outside/<hash of the path>/<file name>``, never the path as it is."""
    import hashlib

    digest = hashlib.sha256(path.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    name = PurePosixPath(path.replace("\\", "/")).name or "image"
    return f"_outside/{digest}/{name}"


def image_ref(image: dict) -> str:
    """How a release names an image: its path under the release's image folder (see
    :func:`image_prefixes`); ``<source>/<path>`` outside an export. A path that would lead out
    of the image folder (absolute, ``..``) is named by :func:`_outside_name` instead."""
    global _LAST_REF
    root, path = image["root"], image["path"]
    prefixes = _PREFIXES.get()
    last = _LAST_REF
    if last[0] is prefixes and type(path) is str and last[2] == path and last[1] == root:
        return last[3]  # the samples of one image follow each other: named once
    ref = _image_ref(root, path, prefixes)
    _LAST_REF = (prefixes, root, path, ref)
    return ref


#: the last image :func:`image_ref` named: (prefixes, root, path, its name)
_LAST_REF: tuple = (None, None, None, None)


def _image_ref(root: Any, path: Any, prefixes: dict[str, str] | None) -> str:
    if not plain_relative(path) and relative_problem(str(PurePosixPath(path))) is not None:
        path = _outside_name(path)
    if prefixes is not None and root in prefixes:
        root = prefixes[root]
        if not root:
            return path if plain_relative(path) else str(PurePosixPath(path))
    if plain_relative(root) and plain_relative(path):  # the usual case, joined without a Path object
        return f"{root}/{path}"
    return str(PurePosixPath(root) / path)


def out_dir(ctx: OpContext) -> Path:
    """The folder an export writes into (set by the run for export steps)."""
    if ctx.out_dir is None:
        raise RuntimeError("exporters need ctx.out_dir")
    return ctx.out_dir


def safe_relpath(path: str, what: str) -> PurePosixPath:
    """A path inside the release folder; absolute paths and ``..`` are configuration errors
    (``vlitc validate`` reports them first, with the same check)."""
    why = relative_problem(path)
    if why is not None:
        raise ConfigurationError(f"{what}: {path!r} {why}; it must be a relative path inside "
                                 "the release folder")
    return PurePosixPath(path)


def shard_names(rel: PurePosixPath, n_shards: int) -> list[PurePosixPath]:
    """``train.json`` -> ``train-00000-of-00003.json`` ... (one name, unchanged, when unsharded)."""
    if n_shards <= 1:
        return [rel]
    suffix, stem = rel.suffix, rel.stem
    return [rel.with_name(f"{stem}-{i:05d}-of-{n_shards:05d}{suffix}") for i in range(n_shards)]


@dataclass
class ExportPart:
    """One run of an export's samples, selected, validated and encoded (:meth:`FileExporter.
    prepare`, wherever it ran): what the shard files get (each sample's line for a text format,
    the samples themselves for others), the problems found by sample id, and the images it
    names that go into the release (``ref -> image``)."""

    items: list
    problems: dict[str, list[str]]
    images: dict[str, dict]


class FileExporter(Exporter):
    """Base of the file exporters: subclasses give ``record(sample)`` (one sample in the format's
    shape) and either ``line(sample)`` (its text: one line of a JSON-lines or JSON-array file,
    ``text = True``) or ``write(samples, path)`` (one shard of validated samples to one file),
    or, to write as the samples stream by, ``open_shard(path)``.

    Samples stream through once: split selection, validation and encoding (:meth:`prepare`,
    which for a text format depends on each sample alone, so runs of samples may be prepared in
    the build's worker processes) and writing to temp files (:meth:`write_parts`), so a large
    export never holds all its samples. Nothing is renamed into place until every sample has
    passed validation; on failure the temp files are removed."""

    reads = ("id", "task", "source", "image", "turns", "meta.split?")
    #: shards are the samples' lines joined (:class:`JoinedTextShard`), each from ``line``
    text: ClassVar[bool] = False

    def record(self, s: Sample) -> dict:
        raise NotImplementedError

    def line(self, s: Sample) -> str:
        raise NotImplementedError

    def write(self, samples: list[Sample], path: Path) -> None:
        raise NotImplementedError

    def open_shard(self, path: Path) -> ShardWriter:
        """A writer for one shard file; by default it gathers the shard and calls ``write``."""
        return GatheredShard(self.write, path)

    def shardable(self) -> bool:
        return self.text

    def begin(self, ctx: OpContext) -> None:
        """Set what encoding a sample needs from the context (where paths resolve from)."""
        self._ctx = ctx
        self._rel = safe_relpath(self.params["path"], f"outputs.{self.name}.path")

    @contextlib.contextmanager
    def encoding(self, ctx: OpContext) -> Iterator[None]:
        """Samples are prepared inside: the context is set and images are named as the release
        names them (see :func:`image_prefixes`)."""
        self.begin(ctx)
        derived = "derived"
        if self.params["images"] == "reference":  # named from the release folder
            derived = f"{safe_relpath(self.params['image_dir'], 'image_dir')}/derived"
        token = _PREFIXES.set(image_prefixes(ctx.image_roots, derived))
        try:
            yield
        finally:
            _PREFIXES.reset(token)

    def prepare(self, samples: Iterable[Sample], ctx: OpContext) -> ExportPart:
        """Select (``split``), validate and encode a run of samples (inside :meth:`encoding`).
        After the first problem nothing more is encoded, but every sample is still checked, so
        the error lists them all."""
        from vlitc.llm.vision import DERIVED_ROOT  # derived images go into the release always

        checker = SampleChecker(ctx, **self.budget(ctx))
        want = self.params["split"]
        gather = self.params["images"] != "reference"
        items: list = []
        images: dict[str, dict] = {}
        for s in samples:
            if want != "all" and (s.get("meta") or {}).get("split", "train") != want:
                continue
            if checker.check(s) and not checker.problems:
                items.append(self.line(s) if self.text else s)
                image = s.get("image")
                if image is None or not gather and type(image) is dict and image["root"] != DERIVED_ROOT:
                    continue  # the usual case: one image, referenced where it is
                for img in images_of(s):
                    if gather or img["root"] == DERIVED_ROOT:
                        images.setdefault(image_ref(img), img)
        return ExportPart(items, checker.problems, images)

    def export(self, samples: Iterable[Sample], ctx: OpContext) -> list[str]:
        it = iter(samples)
        return self.write_parts(
            (self.prepare(run, ctx) for run in iter(lambda: list(itertools.islice(it, CHUNK)), [])), ctx)

    def write_parts(self, parts: Iterable[ExportPart], ctx: OpContext) -> list[str]:
        """Write prepared runs of samples, in order, into the export's shard files; raise
        :class:`ExportValidationError` (nothing written) if any sample had problems."""
        root = out_dir(ctx)  # no folder to write into: fail before reading any sample
        rel = safe_relpath(self.params["path"], f"outputs.{self.name}.path")
        problems: dict[str, list[str]] = {}
        images: dict[str, dict] = {}
        with self.encoding(ctx), cycle_collector_off(), Shards(self, root, rel) as shards:
            for part in parts:
                if not problems and not part.problems:
                    shards.add_all(part.items)
                problems.update(part.problems)
                for ref, img in part.images.items():
                    images.setdefault(ref, img)
            if problems:
                raise ExportValidationError(f"{self.name} export {rel}", problems)
            written = shards.commit()
            ctx.file_records.update(zip(written, shards.per_file, strict=True))
        ctx.count("exported", shards.count)
        return written + self.place_images(images, ctx)

    def budget(self, ctx: OpContext | None = None) -> dict[str, Any]:
        tokenizer = None
        if self.params.get("tokenizer") and self.params.get("max_tokens") and ctx is not None:
            tokenizer = TokenCounter(ctx.resolve(self.params["tokenizer"]),
                                     self.params["image_tokens"])
        return {"max_tokens": self.params.get("max_tokens"),
                "tokens_per_word": self.params["tokens_per_word"],
                "image_tokens": self.params["image_tokens"], "tokenizer": tokenizer}

    def files(self, ctx: OpContext) -> list[Path]:
        """The tokenizer's files belong in the key: another tokenizer counts differently."""
        out = super().files(ctx)
        if self.params.get("tokenizer"):
            path = ctx.resolve(self.params["tokenizer"])
            out += tokenizer_files(path) if path.exists() else []  # the export says it is missing
        return out

    def place_images(self, images: dict[str, dict], ctx: OpContext) -> list[str]:
        """Copy or hard-link the images (``ref -> image``) into ``image_dir``; with
        ``reference`` only the derived images (boxes drawn), which exist nowhere else and are
        named from the release folder."""
        from vlitc.llm.vision import DERIVED_ROOT

        mode = self.params["images"]
        base = safe_relpath(self.params["image_dir"], f"outputs.{self.name}.image_dir")
        out: list[str] = []
        for ref in sorted(images):
            image = images[ref]
            if mode == "reference" and image["root"] != DERIVED_ROOT:
                continue
            rel = safe_relpath(ref if mode == "reference" else str(base / ref),
                               f"outputs.{self.name}: image")
            put_file(ctx.image_path(image), out_dir(ctx) / rel, "copy" if mode == "reference"
                     else mode, ctx)
            out.append(str(rel))
        return out


class ShardWriter(Protocol):
    """Writes one shard file: ``add`` takes prepared items in order (validated samples, or
    their lines for a text format), ``close`` finishes,
    ``discard`` lets go of an export that failed (its temp file is then removed)."""

    def add(self, items: list) -> None: ...

    def close(self) -> None: ...

    def discard(self) -> None: ...


class GatheredShard:
    """A shard written in one call of ``write(samples, path)`` (e.g. one Parquet table)."""

    def __init__(self, write: Callable[[list[Sample], Path], None], path: Path):
        self.write, self.path = write, path
        self.samples: list[Sample] = []

    def add(self, samples: list[Sample]) -> None:
        self.samples.extend(samples)

    def close(self) -> None:
        self.write(self.samples, self.path)

    def discard(self) -> None:
        self.samples = []


#: samples encoded and written per chunk, so a large export never builds one giant string
CHUNK = 8192


class JoinedTextShard:
    """``start + sep.join(lines) + end`` as UTF-8, written as the lines come (``add`` takes
    the samples' encoded lines); ``end_empty`` ends a shard that got no samples."""

    def __init__(self, path: Path, *, sep: str, start: str = "", end: str = "",
                 end_empty: str | None = None):
        self.fh = open(path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115 (closed in close)
        self.sep, self.end = sep, end
        self.end_empty = end if end_empty is None else end_empty
        self.empty = True
        self.fh.write(start)

    def add(self, lines: list[str]) -> None:
        if lines:
            text = self.sep.join(lines)
            self.fh.write(text if self.empty else self.sep + text)
            self.empty = False

    def close(self) -> None:
        with self.fh:
            self.fh.write(self.end_empty if self.empty else self.end)

    def discard(self) -> None:
        self.fh.close()


class Shards:
    """The shard files of one export: samples go to temp files in the release folder as they
    come (``shard_size`` per file, in chunks of :data:`CHUNK`); ``commit`` names and renames them
    once the count is known; leaving without a commit removes them."""

    def __init__(self, exporter: FileExporter, root: Path, rel: PurePosixPath):
        self.exporter, self.root, self.rel = exporter, root, rel
        self.size = exporter.params.get("shard_size") or 0
        self.temps: list[str] = []
        self.writer: ShardWriter | None = None
        self.pending: list[Sample] = []
        self.count = self.in_shard = 0
        self.per_file: list[int] = []  # samples in each shard file

    def __enter__(self) -> Shards:
        return self

    def add_all(self, items: list) -> None:
        """Queue prepared items (lines or samples: what the exporter's shard writer takes)."""
        i = 0
        while i < len(items):
            if self.writer is None or (self.size and self.in_shard == self.size):
                self._next()
            room = self.size - self.in_shard if self.size else CHUNK
            run = items[i:i + min(room, CHUNK - len(self.pending))]
            self.pending.extend(run)
            self.count += len(run)
            self.in_shard += len(run)
            self.per_file[-1] += len(run)
            i += len(run)
            if len(self.pending) == CHUNK:
                self._flush()

    def _flush(self) -> None:
        if self.pending:
            assert self.writer is not None, "add() opens a shard before it queues samples"
            self.writer.add(self.pending)
            self.pending = []

    def _next(self) -> None:
        if self.writer is not None:
            self._flush()
            self.writer.close()
        fd, tmp = tempfile.mkstemp(prefix=f".{self.rel.name}.", dir=self.root)
        os.close(fd)
        self.temps.append(tmp)
        self.writer, self.in_shard = self.exporter.open_shard(Path(tmp)), 0
        self.per_file.append(0)

    def commit(self) -> list[str]:
        if self.writer is None:
            self._next()  # an empty export still writes its (empty) file
        self._flush()
        writer, self.writer = self.writer, None
        assert writer is not None, "_next() opened a shard"
        writer.close()
        names = shard_names(self.rel, len(self.temps))
        for tmp, rel in zip(self.temps, names, strict=True):
            target = self.root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        return [str(rel) for rel in names]

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            with contextlib.suppress(OSError):
                self.writer.discard()
        for tmp in self.temps:
            if os.path.exists(tmp):
                os.unlink(tmp)


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
