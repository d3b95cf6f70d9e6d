"""Run a plan: each step whose key is not in the cache runs; the rest are read from it.

The executor emits events (``step_start``, ``step``, ``progress``, ``warning``) to subscribers and
never draws anything itself; the CLI's progress display and the tests listen to the same events.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlitc.errors import CacheError, UserError, VlitcError
from vlitc.ops.base import OpContext, Pool, Task, cycle_collector_off
from vlitc.ops.model import FAILED, ModelOp
from vlitc.plan import Plan, Step
from vlitc.recipe import Recipe
from vlitc.release import layout
from vlitc.run.engine import Execution, make_engine
from vlitc.run.fingerprint import FileState
from vlitc.run.heap import end_step, trim_heap
from vlitc.run.keys import shown_path
from vlitc.run.runners import RUNNERS, Runner, op_of
from vlitc.run.shards import Job, forget_prepared
from vlitc.run.status import StepStatus, output_hash, step_status
from vlitc.run.store import CorruptObject, Store, entry_objects

Emit = Callable[[dict], None]
#: corrupt cache objects one build repairs (removes and rebuilds) before it gives up
MAX_REPAIRS = 16


@dataclass
class BuildResult:
    manifest: dict
    events: list[dict]
    out_dir: Path


@dataclass
class _Done:
    entry: dict
    status: str
    key: str


@dataclass
class Executor:
    recipe: Recipe
    plan: Plan
    store: Store
    out_dir: Path
    force: tuple[str, ...] = ()
    emit: Emit | None = None
    frozen: bool = False
    llm_store: Path | None = None
    execution: Execution = field(default_factory=Execution)
    events: list[dict] = field(default_factory=list)
    strict: bool = False  # a step that outputs nothing, or an empty release, is an error

    def __post_init__(self) -> None:
        self.files = FileState(self.store.root / "files")
        self._lock = threading.Lock()
        self.done: dict[str, _Done] = {}
        self.extra: dict[str, int] = {}  # task step -> records taken beyond its limit (top-up)
        self._llm: Any = None
        self._share: Any = None  # (share, stop) of the governor once an LLM step fans out
        self._repairs = 0
        self._extra_files: list[dict] = []
        self.runners: dict[str, Runner] = {kind: cls(self) for kind, cls in RUNNERS.items()}
        self.engine = make_engine(self.execution)
        if self.engine.parallel:  # a large images folder is hashed for its signature there
            self.files.map = self.engine.map
        # where steps run is no part of what they make: ops (and so the release) never see it
        self.recipe_data = {k: v for k, v in self.recipe.data.items() if k != "execution"}
        self.image_roots = {
            path[1]: self._ctx_base().resolve(folder)
            for path, op in self.recipe.ops_in("sources") if (folder := op.image_folder()) is not None
        }
        from vlitc.llm.vision import DERIVED_ROOT

        self.image_roots[DERIVED_ROOT] = self.store.root / "images" / "derived"  # boxes drawn

    # events -------------------------------------------------------------------------------
    def _emit(self, event: dict) -> None:
        # generators report progress from their own event-loop thread
        with self._lock:
            self.events.append(event)
            if self.emit is not None:
                self.emit(event)

    # contexts -----------------------------------------------------------------------------
    def _ctx_base(self) -> OpContext:
        return OpContext(seed=self.recipe.seed, recipe_dir=self.recipe.dir, recipe=self.recipe_data)

    def _ctx(self, step: Step, out_dir: Path | None = None) -> OpContext:
        gens = {p[1]: {"provider": op.name, **op.params} for p, op in self.recipe.ops_in("generators")}
        return OpContext(
            seed=self.recipe.seed, recipe_dir=self.recipe.dir, step_id=step.id, out_dir=out_dir,
            image_roots=self.image_roots, generators=gens, recipe=self.recipe_data,
            extra_items=self.extra.get(step.id, 0), scratch=self.store.tmp,
            _item_cache=self.store.item_cache, _row_store=self.store.row_store, _inputs=lambda ref: self.input(step, ref),
            _client=self._client, _emit=self._emit, _locate=self._locate_value,
            _map=self.engine.map if self.engine.parallel else None,
            _file_hashes=self.files.known_hashes,
        )

    def _locate_value(self, value: str) -> Any:
        return self.recipe.locate_value(value)

    def _client(self, name: str) -> Any:
        return self._session().client(name)

    def _session(self) -> Any:
        if self._llm is None:
            try:
                from vlitc import llm
            except ImportError as e:  # pragma: no cover - the llm package ships with vlitc
                raise UserError(f"the generator layer is not available: {e}") from None
            self._llm = llm.session(self.recipe.data, self.store.root / "llm", self._emit,
                                    frozen=self.frozen, store=self.llm_store)
        return self._llm

    def _llm_job(self, op: Any) -> Any:
        """What the workers of a map step that calls a model need (None for other ops): the
        build's governor is started on first use (:mod:`vlitc.llm.fanout`)."""
        from vlitc.ops.model import ModelOp

        if not isinstance(op, ModelOp):
            return None
        from vlitc.llm import fanout

        session = self._session()
        if self._share is None:
            self._share = fanout.serve(self.engine, session)
        return fanout.LLMJob(self._share[0], dict(session.generators), dict(session.accounting.budget),
                             str(session.cache.directory), self.engine.workers, self.frozen,
                             str(self.llm_store) if self.llm_store else None)

    def merge_llm(self, got: dict) -> None:
        """Add what a worker's LLM session counted and used to the build's session."""
        from vlitc.llm import fanout

        fanout.merge(self._session(), got)

    def input(self, step: Step, ref: str) -> Iterator[dict]:
        """The records a step reads by reference: a dep's step id, ``steps`` (the summaries),
        ``dropped`` (every filter's dropped samples), ``filtered`` (what passed every filter),
        ``balance``/``final`` (the first dep)."""
        if ref == "steps":
            return iter(self._summaries())
        if ref == "dropped":
            outs = [self.done[s].entry["outputs"].get("dropped") for s in self.plan.order
                    if self.plan.steps[s].kind == "filter" and s in self.done]
            return itertools.chain.from_iterable(self.store.read(o) for o in outs if o)
        return self.store.read(self.output_of(step, ref))

    def output_of(self, step: Step, ref: str) -> dict:
        """The main output (shard list) of the step ``ref`` names, one of ``step``'s inputs."""
        if ref == "filtered":  # what passed every filter (before balance)
            filters = [s for s in self.plan.order if self.plan.steps[s].kind == "filter"]
            ref = filters[-1] if filters else "merge"
        if ref in ("balance", "final"):
            ref = step.deps[0]
        if ref not in self.done:
            raise VlitcError(f"step {step.id} read {ref!r}, which is not one of its inputs")
        return self.done[ref].entry["outputs"]["main"]

    # engine -------------------------------------------------------------------------------
    def maps(self, source: dict) -> bool:
        """Whether a map step over ``source`` goes through the engine (more than one chunk and
        an engine that runs chunks elsewhere), rather than inline."""
        return self.engine.parallel and source["count"] > self.chunk_size(source)

    def chunk_size(self, source: dict) -> int:
        """Records per map task over ``source``: at most the recipe's ``chunk``, cut so that
        every worker gets as many chunks as the others (at least two each, each at least
        :data:`~vlitc.run.engine.MIN_CHUNK` records), so none is left alone with the last one.
        Outputs do not depend on it."""
        from vlitc.run.engine import MIN_CHUNK

        n, workers = source["count"], self.engine.workers
        pieces = max(-(-n // self.execution.chunk), 2 * workers)
        pieces = -(-pieces // workers) * workers  # a multiple of the workers
        return min(self.execution.chunk, max(-(-n // pieces), MIN_CHUNK))

    def chunks(self, source: dict) -> list[tuple[int, int]]:
        """The record ranges of ``source`` a map step over it is cut into: runs of its stored
        shards when it has them (a chunk that straddles two shards makes two workers
        decompress and check both), so long as that keeps the workers' shares even (a
        multiple of the workers, or at least four chunks each); else even ranges."""
        size, n = self.chunk_size(source), source["count"]
        shards = [] if "view" in source else source.get("shards") or []
        aligned = _shard_runs(shards, size, self.execution.chunk)
        workers = self.engine.workers
        if aligned and len(aligned) >= 2 * workers and (len(aligned) % workers == 0 or
                                                         len(aligned) >= 4 * workers):
            return aligned
        return [(lo, min(lo + size, n)) for lo in range(0, n, size)]

    def job(self, step: Step, ctx: OpContext, kind: str, measure_fp: str | None = None,
            sources: list[dict] | None = None) -> Job:
        """The step as plain data for the shard function (see :mod:`vlitc.run.shards`)."""
        from vlitc.run.fingerprint import digest

        op = step.op
        assert op is not None, "map steps have ops"
        inputs = {d: self.done[d].entry["outputs"]["main"] for d in step.deps}
        locations = {v: loc for v in set(_strings(op.params)) if (loc := self.recipe.locate_value(v)) is not None}
        return Job(kind=kind, key=digest([step.id, kind, op.params, inputs, ctx.extra_items]),
                   family=op.family, op=op.name, params=op.params, label=op.label,
                   seed=ctx.seed, recipe_dir=str(ctx.recipe_dir), step_id=step.id,
                   store=str(self.store.root.resolve()), recipe=ctx.recipe,
                   image_roots={k: str(v) for k, v in ctx.image_roots.items()},
                   generators=ctx.generators, inputs=inputs, locations=locations,
                   extra_items=ctx.extra_items, measure_fp=measure_fp, llm=self._llm_job(op),
                   sources=sources or [])

    def _summaries(self) -> list[dict]:
        out = []
        for sid in self.plan.order:
            if sid not in self.done or self.plan.steps[sid].kind == "report":
                continue
            d, step = self.done[sid], self.plan.steps[sid]
            out.append({"id": sid, "kind": step.kind, "op": step.op_name, "key": d.key,
                        "n_in": d.entry.get("n_in", 0), "n_out": d.entry["outputs"]["main"]["count"],
                        "n_dropped": d.entry["outputs"].get("dropped", {}).get("count", 0),
                        "counters": d.entry.get("counters", {}), "notes": d.entry.get("notes", {}),
                        "files": d.entry.get("file_hashes", {})})
        return out

    # status -----------------------------------------------------------------------------
    def _status(self, step: Step) -> StepStatus:
        digest_of_steps = None
        if step.kind == "report":
            from vlitc.run.fingerprint import digest

            digest_of_steps = digest(self._summaries())
        upstream: dict[str, str | None] = {d: output_hash(self.done[d].entry) for d in step.deps}
        return step_status(step, self.recipe, self.store, self.files, self._ctx(step), upstream,
                           steps_digest=digest_of_steps, extra_items=self.extra.get(step.id, 0),
                           forced=self._forced(step))

    def _forced(self, step: Step) -> bool:
        return any(f in ("all", step.id) or step.id.startswith(f + ":") for f in self.force)

    # running ------------------------------------------------------------------------------
    def run(self) -> BuildResult:
        started = time.time()
        self.engine.warm()  # an engine slow to start starts while the first steps are planned and run
        try:
            trim_heap()  # what planning held (the listing of an images folder) goes first
            for sid in self.plan.order:
                self._run_step(self.plan.steps[sid])
                end_step()  # what the step kept here for its own (step caches) goes, and the heap
            self._topup()
            manifest = self._publish(started)
            self._record_up_to_date(manifest)
        finally:
            if self._share is not None:
                self._share[1]()
            self.engine.close()
            forget_prepared()  # chunks this process ran itself (while Ray started)
            if self._llm is not None:
                self._llm.close()
            self.files.close()
            self.store.close()
        for w in self.store.warnings:
            self._emit({"event": "warning", "step": "", "message": w})
        return BuildResult(manifest, self.events, self.out_dir)

    def _record_up_to_date(self, manifest: dict) -> None:
        """What a later ``vlitc build`` checks to answer a no-op rebuild without building
        (:mod:`vlitc.run.noop`): every file the steps read, the entries, the release files."""
        from vlitc.run import noop

        inputs = set()
        for d in self.done.values():
            for shown in d.entry.get("file_hashes", {}):
                inputs.add(shown_path(shown, self.recipe.dir).resolve())
        noop.write(self.store.root, Path(self.recipe.path), self.out_dir, sorted(inputs),
                   [d.key for d in self.done.values()], [o["path"] for o in manifest["outputs"]],
                   listed=self.files.listed)

    def _run_step(self, step: Step) -> None:
        st = self._status(step)
        if st.comp is None or st.key is None:  # every dep has run by now
            raise VlitcError(f"step {step.id} ran before its inputs: {', '.join(st.reasons)}")
        comp, key = st.comp, st.key
        if st.entry is not None:
            entry = st.entry
            self.done[step.id] = _Done(entry, "cached", key)
            self.files.drop_known()  # a folder signed for its key: nothing will check its files
            self._emit({"event": "step", "step": step.id, "status": "cached", "key": key,
                        "reasons": [], "seconds": 0.0, "n_in": entry.get("n_in", 0),
                        "n_out": entry["outputs"]["main"]["count"]})
            self.store.put_state(self.recipe.name, step.id, comp)
            return
        why = st.reasons
        self._emit({"event": "step_start", "step": step.id, "reasons": why,
                    "index": self.plan.order.index(step.id) + 1, "of": len(self.plan.order)})
        t0 = time.perf_counter()
        ctx = self._ctx(step)
        saved_used = None
        if self._llm is not None:  # collect the responses this step uses, even those used before
            saved_used, self._llm.used = self._llm.used, set()
        try:
            runner = self.runners[step.kind]
            with cycle_collector_off() if runner.acyclic and not isinstance(step.op, ModelOp) \
                    else contextlib.nullcontext():
                entry = runner.run(step, ctx)
        except CorruptObject as e:  # an input was damaged on disk: rebuild it, then run again
            if self._llm is not None:
                self._llm.used = (saved_used or set()) | self._llm.used
            self._repair(e)
            return self._run_step(step)
        except VlitcError as e:
            self._emit({"event": "step", "step": step.id, "status": "failed", "key": key,
                        "reasons": why, "error": str(e), "seconds": time.perf_counter() - t0})
            raise
        entry.update(n_in=self._n_in(step), counters=ctx.counters, notes=ctx.notes,
                     warnings=ctx.warnings, file_hashes=comp["files"])
        if self._llm is not None:
            entry["llm_requests"] = sorted(self._llm.used)
            self._llm.used = (saved_used or set()) | self._llm.used
        failed = ctx.counters.get(FAILED, 0)
        if failed:  # kept so the build can go on; the next build retries only those items
            entry["incomplete"] = failed
            self._emit({"event": "warning", "step": step.id,
                        "message": f"{failed} item(s) left out after failed model calls "
                                   f"(on_error: skip): {_listed(ctx.notes.get(FAILED))}; "
                                   "the next build retries them"})
        self.store.put_entry(key, entry)
        self.store.put_state(self.recipe.name, step.id, comp)
        self.done[step.id] = _Done(entry, "ran", key)
        seconds = time.perf_counter() - t0
        self._emit({"event": "step", "step": step.id, "status": "ran", "key": key, "reasons": why,
                    "seconds": round(seconds, 4), "n_in": entry["n_in"],
                    "n_out": entry["outputs"]["main"]["count"],
                    "n_dropped": entry["outputs"].get("dropped", {}).get("count", 0)})
        self.done[step.id].entry["seconds"] = seconds

    def _repair(self, e: CorruptObject) -> None:
        """Remove a corrupt object and run again every step of this build that produced it
        (their outputs replace it); a corrupt object nothing here produced is an error."""
        producers = [sid for sid in self.plan.order
                     if sid in self.done and e.path.name in entry_objects(self.done[sid].entry, own=True)]
        self._repairs += 1
        if not producers or self._repairs > MAX_REPAIRS:
            why = (f"{MAX_REPAIRS} corrupt objects were repaired in this build and more keep "
                   "appearing: the disk that holds the cache may be failing" if producers
                   else "no step of this build produces it, so it cannot be rebuilt")
            raise CacheError(f"{e} at {e.path}; {why}\nhint: delete the cache folder "
                             f"{self.store.root} (paid LLM responses live in its llm/ folder: "
                             "move that aside first) or build with another --cache-dir") from e
        self.store.discard(e.path.name)
        self._emit({"event": "warning", "step": producers[0],
                    "message": f"{e}: removed; {', '.join(producers)} run again"})
        for sid in producers:
            self.store.drop_entry(self.done.pop(sid).key)
        for sid in producers:
            self._run_step(self.plan.steps[sid])

    def _publish(self, started: float) -> dict:
        """Stage the release and swap it in whole; a release file whose cached bytes turn out
        corrupt is rebuilt by the step that wrote it, and the release staged again."""
        while True:
            self._extra_files = self._build_files()
            manifest = self._manifest(time.time() - started)
            self._check_empty(manifest)
            try:
                layout.publish(self._out_files(), self.out_dir, manifest, self.store.object_path,
                               self.store.root / "materialized.json")
                return manifest
            except CorruptObject as e:
                self._repair(e)

    def _topup(self) -> None:
        """Balance top-up: when a generated task with a record ``limit`` falls short of its share
        after filtering, give it as many more records as its observed pass rate says it needs and
        run again; every step whose inputs did not change is a cache hit, and only the new items
        make LLM calls."""
        bal = self.plan.steps.get("balance")
        rounds = bal.op.params.get("topup", 0) if bal is not None and bal.op is not None else 0
        for _ in range(rounds):
            want = self.done["balance"].entry.get("notes", {}).get("topup") or {}
            grow = {f"task:{t}": n for t, n in want.items()
                    if f"task:{t}" in self.plan.steps and op_of(self.plan.steps[f"task:{t}"], Task).params.get("limit")}
            if not grow:
                return
            for sid, n in grow.items():
                self.extra[sid] = self.extra.get(sid, 0) + int(n)
            self._emit({"event": "topup", "step": "balance", "items": grow})
            for sid in self.plan.order:
                self._run_step(self.plan.steps[sid])
                end_step()

    def _n_in(self, step: Step) -> int:
        return sum(self.done[d].entry["outputs"]["main"]["count"] for d in step.deps if d in self.done)

    def write(self, records: Iterator[dict]) -> dict:
        """Write records into content-addressed shards; the step output that lists them."""
        with self.store.writer() as w:
            w.write_all(records)
        return w.close()

    # release response store -------------------------------------------------------------------
    def release_file(self, path: str, data: bytes, records: int | None, step: str) -> dict:
        """A file the build itself adds to the release (``path`` registered in
        :mod:`vlitc.release.layout`): its bytes go into the cache, like an export's, and the
        release is staged from there."""
        sha, size = self.store.put_bytes(data)
        return {"path": path, "sha256": sha, "size": size, "records": records, "step": step}

    def _build_files(self) -> list[dict]:
        """The release files the build writes besides the steps' own (see ``release_file``)."""
        return self._export_responses() + self._export_pools()

    def _export_responses(self) -> list[dict]:
        """Put every LLM response this build's steps used into the release, so that a frozen
        rebuild (``vlitc build --frozen``) makes no call at all."""
        used = sorted({k for d in self.done.values() for k in d.entry.get("llm_requests", [])})
        if not used:
            return []
        from vlitc.llm.cache import ResponseCache, load_store

        store = load_store(self.llm_store) if self.llm_store else None
        cache = self._llm.cache if self._llm is not None else ResponseCache(self.store.root / "llm", store)
        staging = Path(tempfile.mkdtemp(dir=self.store.tmp, prefix="llm-"))
        try:
            data = cache.export(used, staging / layout.RESPONSES).read_bytes()
        finally:
            if self._llm is None:
                cache.close()
            shutil.rmtree(staging, ignore_errors=True)
        return [self.release_file(layout.RESPONSES, data, len(used), "llm")]

    def _export_pools(self) -> list[dict]:
        """Write every pool an LLM expanded into the release (``pools/<name>.json``), so that it
        can be reviewed and frozen: ``pools: {name: {file: pools/name.json}}``."""
        out = []
        for sid in self.plan.order:
            step = self.plan.steps[sid]
            if not isinstance(step.op, Pool) or not step.op.expands_with_model:
                continue
            templates = [r["template"] for r in self.store.read(self.done[sid].entry["outputs"]["main"])]
            data = (json.dumps(templates, indent=2, ensure_ascii=False) + "\n").encode()
            out.append(self.release_file(layout.pool_path(sid.split(":", 1)[1]), data,
                                         len(templates), sid))
        return out

    def _check_empty(self, manifest: dict) -> None:
        """Warn (``--strict``: fail, before anything is written) for steps that output nothing
        and an empty release, naming the counters that explain them."""
        from collections import Counter

        from vlitc.run.empty import empty_warnings

        reasons: dict[str, Counter] = {}
        for row in manifest["steps"]:
            sid = row["id"]
            if sid.startswith("filter:") and row["n_in"] and not row["n_out"]:
                out = self.done[sid].entry["outputs"].get("dropped")
                drops = itertools.islice(self.store.read(out), 1000) if out else iter(())
                reasons[sid.split(":", 1)[1]] = Counter(
                    str((d.get("meta") or {}).get("drop", {}).get("reason", "")).split(":")[0]
                    for d in drops)
        final = "balance" if "balance" in self.done else "merge" if "merge" in self.done else None
        released = self.done[final].entry["outputs"]["main"]["count"] if final else None
        warnings = empty_warnings(manifest["steps"], reasons, released)
        if warnings:
            manifest["warnings"] = warnings
        for w in warnings:
            self._emit({"event": "warning", "step": "", "message": w})
        if warnings and self.strict:
            raise UserError("strict build: " + "; ".join(warnings)
                            + "\nhint: the counters named say why; without --strict this is a warning")

    # manifest -----------------------------------------------------------------------------
    def _out_files(self) -> list[dict]:
        out = list(self._extra_files)
        for sid in self.plan.order:
            for f in self.done[sid].entry.get("files", []):
                out.append({**f, "step": sid})
        # a path several exports write: one file (the same bytes, or a shared registry merged)
        return layout.combine(out, lambda sha: self.store.object_path(sha).read_bytes(),
                              self.store.put_bytes)

    def _manifest(self, seconds: float) -> dict:
        from vlitc import __version__

        steps = []
        for sid in self.plan.order:
            d, s = self.done[sid], self.plan.steps[sid]
            steps.append({"id": sid, "op": s.op_name, "key": d.key, "status": d.status,
                          "seconds": round(d.entry.get("seconds", 0.0) if d.status == "ran" else 0.0, 4),
                          "n_in": d.entry.get("n_in", 0), "n_out": d.entry["outputs"]["main"]["count"],
                          "n_dropped": d.entry["outputs"].get("dropped", {}).get("count", 0),
                          "counters": d.entry.get("counters", {})})
            if d.entry.get("incomplete"):
                steps[-1]["failed"] = {"count": d.entry["incomplete"],
                                       "items": d.entry.get("notes", {}).get(FAILED, [])}
        head = {"vlitc": __version__, "name": self.recipe.name, "version": self.recipe.version,
                "recipe": str(self.recipe.path), "recipe_sha256": self.recipe.sha256,
                "seed": self.recipe.seed, "seconds": round(seconds, 3)}
        return layout.manifest(head, steps, self._out_files(),
                               self._llm.usage() if self._llm is not None else None)


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def _listed(items: list[dict] | None, show: int = 5) -> str:
    items = items or []
    head = ", ".join(str(i.get("item")) for i in items[:show])
    return head + (f" and {len(items) - show} more" if len(items) > show else "")


def default_cache_dir() -> Path:
    return Path(os.environ.get("VLITC_CACHE_DIR") or ".vlitc")


def _shard_runs(shards: list[dict], size: int, most: int) -> list[tuple[int, int]]:
    """Record ranges of runs of whole shards, each run as long as it stays within ``size``
    records (a shard longer than that alone); none when a shard is longer than ``most``."""
    out: list[tuple[int, int]] = []
    start = lo = 0
    for shard in shards:
        count = shard["count"]
        if count > most:
            return []
        if lo > start and lo + count - start > size:
            out.append((start, lo))
            start = lo
        lo += count
    if lo > start:
        out.append((start, lo))
    return out


