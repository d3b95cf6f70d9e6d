"""Op base classes and the context the executor hands to them.

An op is one class with four declared things: a registered name (``@register``), a JSON-schema
fragment for its params (``additionalProperties: false``), the fields it reads and writes, and a
``version`` to bump when its behaviour changes. Ops are pure functions over streams of records:
they never import the executor or the CLI, and everything they need from the run (seed, paths,
per-item caches, generators, upstream inputs) comes through :class:`OpContext`.

Families and what they implement:

* ``source``    ``load(ctx) -> Iterator[Record]``                   image records
* ``pool``      ``templates(ctx) -> list[str]``                      instruction templates
* ``task``      ``run(records, ctx) -> Iterator[Sample]``            samples from records
* ``generator`` ``config()`` (a resource, not a step: an LLM endpoint)
* ``filter``    ``measure(samples, ctx) -> list[dict]`` + ``keep(stats) -> reason | None``
* ``balance``   ``run(samples, ctx) -> Iterator[Sample]``
* ``exporter``  ``export(samples, ctx) -> list[str]``                files written in ``ctx.out_dir``
* ``report``    ``write(ctx) -> list[str]``                          card, report, indicators
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from vlitc.errors import VlitcError

if TYPE_CHECKING:
    from vlitc.rows import Rows
from vlitc.paths import recipe_path
from vlitc.records import Record, Sample

#: Params that never affect a step's key, in every op: descriptions, worker counts, batch sizes.
NEVER_IN_KEY = frozenset({"description", "workers", "batch_size", "max_concurrency", "progress"})


class ItemCache(Protocol):
    """A persistent per-item store (diskcache underneath). Keys are strings (hashes)."""

    def get(self, key: str, default: Any = None) -> Any: ...
    def set(self, key: str, value: Any) -> None: ...
    def __contains__(self, key: str) -> bool: ...


@dataclass
class OpContext:
    """What an op may know about the run. Filled by the executor; ops only read it."""

    seed: int
    recipe_dir: Path
    step_id: str = ""
    out_dir: Path | None = None  # exporters and reports write here (a staging folder)
    image_roots: dict[str, Path] = field(default_factory=dict)  # source name -> images folder
    generators: dict[str, dict] = field(default_factory=dict)  # name -> validated config
    recipe: dict = field(default_factory=dict)  # the whole validated recipe, read-only
    extra_items: int = 0  # records a generated task takes beyond its limit (balance top-up)
    #: a folder for an op's temporary files: the cache's ``tmp`` folder in a build (on the
    #: cache's disk, swept by ``vlitc cache gc`` after a build that was killed); ``None``: the
    #: system's temporary folder
    scratch: Path | None = None
    _item_cache: Callable[[str], ItemCache] | None = None
    _row_store: Callable[[str], Any] | None = None
    _inputs: Callable[[str], Iterator[dict]] | None = None
    _client: Callable[[str], Any] | None = None
    _emit: Callable[[dict], None] | None = None
    _locate: Callable[[str], Any] | None = None
    _map: Callable[[Callable[[Any, Any], Any], Any, Iterable[Any]], Iterator[Any]] | None = None
    _file_hashes: Callable[[Path], Rows] | None = None
    counters: dict[str, int] = field(default_factory=dict)
    #: records in each file an op wrote, by relative path, when the op knows them (exporters):
    #: the run then reads no file back to count them
    file_records: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def resolve(self, path: str | Path) -> Path:
        """A path from the recipe, resolved against the recipe's folder."""
        return recipe_path(self.recipe_dir, path)

    def image_path(self, image: dict) -> Path:
        """Absolute path of an image reference ``{"root": source, "path": rel}``."""
        return self.image_roots[image["root"]] / image["path"]

    def item_cache(self, namespace: str) -> ItemCache:
        """A persistent per-item cache shared across builds (e.g. CLIP image embeddings)."""
        if self._item_cache is None:
            raise RuntimeError("this context has no item cache")
        return self._item_cache(namespace)

    def row_store(self, namespace: str) -> Any:
        """A persistent store of per-file tables shared across builds (:class:`vlitc.rows.
        RowStore`: ``table(key)`` gives a table read and written a batch of rows at a time)."""
        if self._row_store is None:
            raise RuntimeError("this context has no row store")
        return self._row_store(namespace)

    def input(self, ref: str) -> Iterator[dict]:
        """Stream the records of an upstream step, by step id (``source:coco``, ``pool:brief``)."""
        if self._inputs is None:
            raise RuntimeError("this context has no inputs")
        return self._inputs(ref)

    def client(self, generator: str) -> Any:
        """The LLM client for a generator named in the recipe (see :mod:`vlitc.llm`)."""
        if self._client is None:
            raise RuntimeError("this context has no generators")
        return self._client(generator)

    def locate_value(self, value: str) -> Any:
        """Where a string written in the recipe sits (a :class:`vlitc.errors.Location`), or None:
        lets an op point an error at an inline template's line and column."""
        return self._locate(value) if self._locate is not None else None

    def known_file_hashes(self, folder: Path) -> Rows:
        """The sha256 of files under ``folder`` the run has just computed (for the step key: a
        folder's signature hashes its files), by relative path: a table (:class:`vlitc.rows.
        Rows`) of ``path -> [size, mtime_ns, sha256]``; empty when it has none. A file whose
        size and mtime still match has those bytes' hash, so an op need not read it again for
        its hash."""
        from vlitc.rows import MemoryRows

        return self._file_hashes(folder) if self._file_hashes is not None else MemoryRows()

    @property
    def parallel(self) -> bool:
        """Whether :meth:`map_chunks` spreads chunks over other processes."""
        return self._map is not None

    def map_chunks(self, fn: Callable[[Any, Any], Any], job: Any, chunks: Iterable[Any]) -> Iterator[Any]:
        """``fn(job, chunk)`` for each chunk, in order, on the build's engine (worker processes
        or Ray tasks) when it spreads work, else here. ``fn`` is a module-level function and
        ``job`` and the chunks plain picklable data: it may run in another process."""
        if self._map is None:
            return (fn(job, c) for c in chunks)
        return self._map(fn, job, chunks)

    def count(self, name: str, n: int = 1) -> None:
        """Add to a named counter, reported in the manifest (e.g. ``missing_image``)."""
        self.counters[name] = self.counters.get(name, 0) + n

    def note(self, key: str, value: Any) -> None:
        """Record a JSON-able fact for the manifest and the report (e.g. a skipped-image list)."""
        self.notes[key] = value

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.emit({"event": "warning", "step": self.step_id, "message": message})

    def emit(self, event: dict) -> None:
        """Send a progress event (``{"event": "progress", "done": n, "total": m}``) to the UI."""
        if self._emit is not None:
            self._emit(event)

    @contextmanager
    def progress_from(self, start: int, total: int) -> Iterator[None]:
        """Inside: progress an op counts from its own first record is told from the step's,
        ``start`` records before it (an op run over one run of the step's input at a time)."""
        emit = self._emit
        if emit is None:
            yield
            return

        def shifted(event: dict) -> None:
            if event.get("event") == "progress" and isinstance(event.get("done"), int):
                event = {**event, "done": event["done"] + start, "total": total}
            emit(event)

        self._emit = shifted
        try:
            yield
        finally:
            self._emit = emit


@contextmanager
def cycle_collector_off() -> Iterator[None]:
    """Hold the cycle collector while an op streams millions of records or samples: they are
    acyclic containers, and every collection the allocations trigger would walk the ones alive
    again (a quarter of the time of reading a conversation file). The state before is restored
    at the end, so nested and interleaved uses leave it as they found it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Op:
    """Base of every op. Subclasses set the class attributes and implement their family's method."""

    family: ClassVar[str] = ""
    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    params_schema: ClassVar[dict] = {"type": "object", "properties": {}, "additionalProperties": False}
    #: fields each input item must carry: ``"a|b"`` needs one of them, ``"a?"`` is used when
    #: present; checked against what the op's sources or tasks write before a build
    #: (:mod:`vlitc.recipe.fields`)
    reads: ClassVar[tuple[str, ...]] = ()
    #: ``reads`` names every field the op's per-item work looks at (an export's encoding,
    #: balance's keys, a dataset-wide filter's features): its input is decoded into those
    #: fields alone (:mod:`vlitc.run.projection`), skipping the rest of each item (most of a
    #: sample's bytes are its ``meta``)
    projected: ClassVar[bool] = False
    #: fields the op adds to its output items
    writes: ClassVar[tuple[str, ...]] = ()
    #: output items keep the fields of the input items (a join, a rewrite)
    keeps_input_fields: ClassVar[bool] = False
    #: extra param names that never affect the step key (beyond :data:`NEVER_IN_KEY`)
    key_exclude: ClassVar[tuple[str, ...]] = ()
    #: param names whose values are paths to files whose contents are part of the key
    file_params: ClassVar[tuple[str, ...]] = ()
    #: the param naming a folder of images (the core checks it exists, signs its listing into
    #: the step key and resolves image references against it); None: the op has none
    image_folder_param: ClassVar[str | None] = None
    #: modules the op imports beyond the core install (an extra); ``vlitc validate`` checks them
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: dict, label: str = ""):
        self.params = self.with_defaults(params)
        self.label = label or self.name

    @classmethod
    def with_defaults(cls, params: dict) -> dict:
        """``params`` plus a copy of each top-level default of :attr:`params_schema` it lacks.

        The one place defaults come from: the recipe loader fills them into the recipe with
        this, and every op fills them again when built (also when a test builds one directly),
        so op code reads ``self.params["key"]`` and never states a default of its own."""
        props = cls.params_schema.get("properties", {})
        missing = {k: copy.deepcopy(sub["default"]) for k, sub in props.items()
                   if isinstance(sub, dict) and "default" in sub and k not in params}
        return {**params, **missing} if missing else dict(params)

    def references(self) -> dict[str, list[str]]:
        """Names this op refers to, by kind (``source``, ``pool``, ``generator``, ``task``)."""
        return {}

    def check(self, ctx: OpContext) -> None:
        """Checks that need more than the schema, run by ``vlitc validate`` before anything is
        built (e.g. that templates read only variables the task provides). Raise a located
        :class:`vlitc.errors.InputError`; ``ctx.input`` serves only hand-written pools here."""

    def packages(self) -> tuple[str, ...]:
        """Modules this op, with these params, needs beyond the core install (default:
        :attr:`requires`); validation reports a missing one before anything runs."""
        return self.requires

    def files(self, ctx: OpContext) -> list[Path]:
        """Files whose contents belong in the step key (default: the ``file_params`` values)."""
        out: list[Path] = []
        for key in self.file_params:
            val = self.params.get(key)
            vals = val if isinstance(val, list) else [val]
            out += [ctx.resolve(v) for v in vals if isinstance(v, str)]
        return out

    def image_folder(self) -> str | None:
        """The image folder as the recipe writes it (see :attr:`image_folder_param`), or None."""
        value = self.params.get(self.image_folder_param) if self.image_folder_param else None
        return value if isinstance(value, str) else None

    def key_params(self) -> dict:
        """The params that belong in the step key."""
        skip = NEVER_IN_KEY | set(self.key_exclude)
        return {k: v for k, v in self.params.items() if k not in skip}


#: records a source encodes per block of :meth:`Source.load_lines`
LINES_BLOCK = 5_000


class Source(Op):
    """Reads a dataset in its published format and yields image records."""

    def load(self, ctx: OpContext) -> Iterator[Record]:
        raise NotImplementedError

    def load_lines(self, ctx: OpContext) -> Iterator[tuple[bytes, int]]:
        """The records of :meth:`load` as the cache stores them: blocks of JSON lines
        (``orjson.dumps(record) + b"\\n"`` each) and how many records each holds."""
        return self.load_lines_of(self.load(ctx))

    @staticmethod
    def load_lines_of(records: Iterator[Record]) -> Iterator[tuple[bytes, int]]:
        """Records encoded as the cache stores them, in blocks of :data:`LINES_BLOCK`."""
        import orjson

        while block := [orjson.dumps(r) + b"\n" for r in islice(records, LINES_BLOCK)]:
            yield b"".join(block), len(block)

    def count(self, ctx: OpContext, inputs: list[int]) -> int | None:
        """How many records ``load`` would yield at most, found cheaply (annotation files read,
        no image opened), for ``vlitc plan``; ``inputs`` are the counts of the sources this one
        reads. ``None`` when that is not known without loading."""
        return None


class Pool(Op):
    """An instruction pool: a list of Jinja2 templates."""

    #: its templates come from a model during the build: unknown when a recipe is validated,
    #: and written into the release (``pools/<name>.json``) for review and freezing
    expands_with_model: ClassVar[bool] = False

    def templates(self, ctx: OpContext) -> list[str]:
        raise NotImplementedError


class Task(Op):
    """Turns image records into samples. ``params["source"]`` names the source it reads."""

    def references(self) -> dict[str, list[str]]:
        refs: dict[str, list[str]] = {}
        if self.params.get("source"):
            refs["source"] = [self.params["source"]]
        return refs

    def run(self, records: Iterable[Record], ctx: OpContext) -> Iterator[Sample]:
        raise NotImplementedError

    @classmethod
    def template_variables(cls) -> dict[str, frozenset[str]]:
        """The variables this kind's templates may read, by what the templates are (e.g.
        ``{"instruction": {...}}``); shown by ``vlitc ops`` and in ``docs/ops.md``."""
        return {}

    def shardable(self) -> bool:
        """Whether each record's samples depend on that record alone (and on inputs the op reads
        whole through ``ctx.input``), so that ``run`` may see the records in chunks, in any
        process, and give the same samples: then the task is a map step the engine spreads."""
        return False

    def inputs(self) -> list[str]:
        """The step inputs whose records ``run`` is given, one after another (its source's);
        the engine cuts them into chunks when the task is :meth:`shardable`."""
        src = self.params.get("source")
        return [f"source:{src}"] if isinstance(src, str) else []


class Generator(Op):
    """An LLM endpoint declared in the recipe: a resource that tasks and judges refer to."""


@dataclass
class Measuring:
    """One sample on its way through an item-scope measurement: ``todo`` when it needs
    measuring (``stats`` is then filled in), else it passes through (cached, or out of scope)."""

    sample: Sample
    stats: dict | None = None
    todo: bool = True
    key: str = ""  # its per-item cache key


#: samples per ``measure`` call of an item-scope filter (inline and in workers alike)
MEASURE_CHUNK = 512


class Filter(Op):
    """Measures samples (expensive, cached per item) and keeps or drops them (cheap).

    ``scope = "item"``: ``measure`` sees samples in shards and must be per-sample pure, so the
    executor caches each sample's stats. ``scope = "dataset"``: ``measure`` sees every sample at
    once (deduplication, top-fraction thresholds). An item-scope filter may override
    ``measure_stream`` to measure as samples arrive instead of in chunks (the filters that call
    a model do, see :mod:`vlitc.ops.model`).
    """

    #: params that only the keep decision reads; changing them re-runs no measurement
    keep_params: ClassVar[tuple[str, ...]] = ()
    scope: ClassVar[str] = "item"
    #: cache each sample's stats across builds; off for rules cheaper than a cache lookup
    #: (the measure step's output is cached as a whole either way)
    cache_items: ClassVar[bool] = True

    #: a dataset-scope filter that measures in two streaming passes instead of holding every
    #: sample: :meth:`features` of each chunk of samples (per-sample pure: a map step the engine
    #: spreads; arrays are gathered on disk), then :meth:`measure_features` over all of them
    streams: ClassVar[bool] = False

    def features(self, samples: list[Sample], ctx: OpContext) -> dict[str, Any]:
        """Per-sample features of a chunk: numpy arrays with one row per sample, or lists."""
        raise NotImplementedError

    def measure_features(self, features: dict[str, Any], ctx: OpContext) -> Callable[[int, str], dict]:
        """From every sample's features (arrays may be memory-mapped), the function that gives
        sample ``i``'s stats; it is called once per sample, in order, with the sample's id. It
        may give one dict for many samples (never changed afterwards): it is encoded once."""
        raise NotImplementedError

    def measure_params(self) -> dict:
        skip = set(self.keep_params)
        return {k: v for k, v in self.key_params().items() if k not in skip}

    def measure(self, samples: list[Sample], ctx: OpContext) -> list[dict]:
        raise NotImplementedError

    def shardable(self) -> bool:
        """Whether an item-scope measurement may run over chunks in any process (the engine's
        workers; a filter that calls a model sends from them, under the build's one governor of
        rate limits and budget and its one response store: :mod:`vlitc.llm.fanout`)."""
        return self.scope == "item"

    def measure_stream(self, items: Iterable[Measuring], ctx: OpContext) -> Iterator[Measuring]:
        """Every item in order, with ``stats`` set on those ``todo`` (default: ``measure`` on
        chunks of :data:`MEASURE_CHUNK` items)."""
        it = iter(items)
        while chunk := list(islice(it, MEASURE_CHUNK)):
            todo = [m for m in chunk if m.todo]
            stats = self.measure([m.sample for m in todo], ctx) if todo else []
            if len(stats) != len(todo):
                raise VlitcError(f"filter {self.label} returned {len(stats)} stats for {len(todo)} samples")
            for m, st in zip(todo, stats, strict=True):
                m.stats = st
            yield from chunk

    def keep(self, stats: dict) -> str | None:
        """``None`` keeps the sample; a string drops it, with that reason."""
        raise NotImplementedError

    def decide(self, stats: list[dict]) -> list[str | None]:
        """Keep decisions for all samples; override for dataset-wide rules (top fraction)."""
        return [self.keep(s) for s in stats]


class Chosen:
    """The samples a balance takes, in output order: their input indices (``index``: int32 as
    a balance numbers them, else int64) and the tag each gets (``code``: a number into
    ``tags``), as arrays, without an object per sample (a 10M-sample release chooses
    millions). Iterating gives ``(input index, tag)``."""

    #: the pairs made at a time while iterating
    BLOCK = 1 << 16

    def __init__(self, index: Any, code: Any, tags: Sequence[str]):
        import numpy as np

        index = np.asarray(index)
        self.index = index if index.dtype == np.int32 else index.astype(np.int64)
        self.code = np.asarray(code, dtype=np.int16)
        self.tags = list(tags)
        if self.index.shape != self.code.shape or self.index.ndim != 1:
            raise ValueError("a choice needs one tag code per index")

    @classmethod
    def of(cls, pairs: Iterable[tuple[int, str]]) -> Chosen:
        """From ``(input index, tag)`` pairs, in output order."""
        pairs = list(pairs)
        tags = sorted({t for _i, t in pairs})
        code = {t: k for k, t in enumerate(tags)}
        return cls([i for i, _t in pairs], [code[t] for _i, t in pairs], tags)

    def __len__(self) -> int:
        return len(self.index)

    def __iter__(self) -> Iterator[tuple[int, str]]:
        tags = self.tags
        for lo in range(0, len(self.index), self.BLOCK):
            hi = lo + self.BLOCK
            yield from zip(self.index[lo:hi].tolist(), [tags[c] for c in self.code[lo:hi].tolist()], strict=True)

    def positions(self, n: int) -> Any:
        """Each of ``n`` input samples' place in the output, ``-1`` for one not chosen."""
        import numpy as np

        index = np.int32 if n < 2**31 else np.int64  # 40 MB, not 80, over 10M samples
        position = np.full(n, -1, dtype=index)
        position[self.index] = np.arange(len(self.index), dtype=index)
        return position

    def codes(self, n: int, tags: Sequence[str]) -> Any:
        """Each of ``n`` input samples' tag as a number into ``tags`` (0 for one not chosen)."""
        import numpy as np

        where = {t: k for k, t in enumerate(tags)}  # a tag nobody got may be missing from tags
        into = np.asarray([where.get(t, 0) for t in self.tags] or [0], dtype=np.int16)
        out = np.zeros(n, dtype=np.int16)
        out[self.index] = into[self.code]
        return out


class ChosenParts:
    """The samples a balance takes when the output keeps their input order, held on disk a
    run of input chunks at a time: :meth:`parts` gives, for each chunk of the first pass
    (``(lo, hi)`` input ranges, in order), its chosen rows (relative to ``lo``, ascending)
    and their tag codes into ``tags``, reading one part into memory at a time, so that the
    choice of a 10M-sample release is never held whole. ``parts`` is a callable that makes
    that iterator afresh; ``count`` the samples chosen."""

    def __init__(self, parts: Callable[[], Iterator[tuple[int, int, Any, Any]]], count: int,
                 tags: Sequence[str], close: Callable[[], None] | None = None):
        self._parts, self.count, self.tags = parts, count, list(tags)
        self._close = close

    def __len__(self) -> int:
        return self.count

    def parts(self) -> Iterator[tuple[int, int, Any, Any]]:
        """``(lo, hi, rows, codes)`` per chunk, in input order."""
        return self._parts()

    def __iter__(self) -> Iterator[tuple[int, str]]:
        tags = self.tags
        for lo, _hi, rows, codes in self.parts():
            yield from zip((rows + lo).tolist(), [tags[c] for c in codes.tolist()], strict=True)

    def chosen(self) -> Chosen:
        """The same choice as one :class:`Chosen` (its arrays in memory)."""
        import numpy as np

        index, code = [], []
        for lo, _hi, rows, codes in self.parts():
            index.append(rows.astype(np.int64) + lo)
            code.append(codes)
        if not index:
            return Chosen(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int16), self.tags)
        return Chosen(np.concatenate(index), np.concatenate(code), self.tags)

    def close(self) -> None:
        """Let go of the files the parts are read from."""
        if self._close is not None:
            self._close()
            self._close = None


class Balance(Op):
    """Samples the filtered pool down to the release's mix and size."""

    #: selects in two streaming passes: :meth:`select` sees every sample once and keeps only
    #: what it decides by; the executor then reads the chosen samples again (:meth:`finish`)
    streams: ClassVar[bool] = False

    def run(self, samples: Iterable[Sample], ctx: OpContext) -> Iterator[Sample]:
        raise NotImplementedError

    def select(self, samples: Iterator[Sample], ctx: OpContext) -> Chosen | ChosenParts:
        """The chosen samples (input index and tag), in output order (a :class:`ChosenParts`
        when the output keeps the input's order)."""
        raise NotImplementedError

    def keys(self, samples: list[Sample], ctx: OpContext) -> dict[str, Any]:
        """The first pass over one chunk: per sample, what :meth:`select_keys` decides by
        (plain data: lists and arrays, with one item per sample); it may run in a worker
        process (``ctx``: the step's, there as here: its seed, its scratch folder)."""
        raise NotImplementedError

    def select_keys(self, chunks: Iterable[dict[str, Any]], ctx: OpContext) -> Chosen | ChosenParts:
        """:meth:`select` from the :meth:`keys` of every chunk, in input order."""
        raise NotImplementedError

    def finish(self, sample: Sample, tag: str) -> Sample:
        """A chosen sample as the output has it."""
        raise NotImplementedError

    #: the tag most chosen samples get, when finishing again with another tag gives what
    #: finishing with that tag alone gives (``finish(finish(s, staged_tag), t) == finish(s, t)``,
    #: key order included): the first pass then stages every sample finished with it, and only
    #: the samples chosen with another tag are read again (``None``: the second pass reads
    #: every chosen sample)
    staged_tag: ClassVar[str | None] = None


class Exporter(Op):
    """Writes samples in one format into ``ctx.out_dir``; returns the relative paths written."""

    def export(self, samples: Iterable[Sample], ctx: OpContext) -> list[str]:
        raise NotImplementedError

    def side_entry(self, recipe_name: str) -> tuple[str, str] | None:
        """The shared registry file (release path) this export adds an entry to, and the
        entry's name (LLaMA-Factory's ``dataset_info.json``); ``None``: it writes none."""
        return None


class Report(Op):
    """Writes the dataset card, report and indicators into ``ctx.out_dir``."""

    def write(self, ctx: OpContext) -> list[str]:
        raise NotImplementedError
