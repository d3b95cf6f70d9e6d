"""Execution engines: where the shard functions of map steps run.

A map step (a record-by-record task, an item-scope filter measure) cuts its input into chunks of
encoded records and hands each chunk to a pure, importable shard function
(:func:`vlitc.run.shards.run_chunk`); the engine runs the chunks and yields their results **in
chunk order**, with a bounded number in flight, so the step's output (and so every key after it)
is the same bytes whatever the engine and the worker count.

* ``local`` (the default): a process pool on this machine, ``workers: auto`` = every core; with
  one worker (or a step smaller than one chunk) the step runs in the build's own process.
* ``ray``: the same shard function as Ray tasks on a Ray cluster (``address: auto`` joins the
  cluster this machine belongs to; ``ray://host:10001`` goes through Ray Client; no address starts
  a local one). Workers read the recipe's files and the cache directory by path, so on a cluster
  of several machines those must be on a shared filesystem.

The engine is never part of a step key (``execution`` is left out of keys and of the release).
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from vlitc.errors import ConfigurationError
from vlitc.run.heap import end_step, trim_heap

#: records per map task unless the recipe says otherwise (one cache shard's worth)
DEFAULT_CHUNK = 20_000
#: the smallest task a build cuts a map step into on its own (a recipe's ``chunk`` may be smaller)
MIN_CHUNK = 1_000

ENGINES = ("local", "ray")

EXECUTION_SCHEMA: dict = {
    "type": "object",
    "additionalProperties": False,
    "description": "where map steps run; never part of a step key or of the release",
    "properties": {
        "engine": {"enum": list(ENGINES), "default": "local",
                   "description": "local: a process pool on this machine; ray: a Ray cluster"},
        "workers": {"anyOf": [{"const": "auto"}, {"type": "integer", "minimum": 1}],
                    "default": "auto",
                    "description": "processes (local) or CPUs (ray) to use; auto: every core"},
        "address": {"type": "string", "minLength": 1,
                    "description": "ray: the cluster to join (auto, host:port or ray://host:port); "
                                   "absent: start a local Ray"},
        "chunk": {"type": "integer", "minimum": 1, "default": DEFAULT_CHUNK,
                  "description": "records per map task (outputs do not depend on it)"},
    },
}


@dataclass(frozen=True)
class Execution:
    """The execution settings of a build (recipe ``execution`` overridden by the command line)."""

    engine: str = "local"
    workers: int | str = "auto"
    address: str | None = None
    chunk: int = DEFAULT_CHUNK

    @classmethod
    def of(cls, recipe_data: dict, engine: str | None = None, workers: int | str | None = None,
           address: str | None = None) -> Execution:
        spec = recipe_data.get("execution") or {}
        out = cls(engine=engine or spec.get("engine", "local"),
                  workers=workers if workers is not None else spec.get("workers", "auto"),
                  address=address or spec.get("address"), chunk=int(spec.get("chunk", DEFAULT_CHUNK)))
        if out.engine not in ENGINES:
            raise ConfigurationError(f"unknown execution engine {out.engine!r}; use one of {', '.join(ENGINES)}")
        if out.workers != "auto" and (not isinstance(out.workers, int) or out.workers < 1):
            raise ConfigurationError(f"execution workers must be 'auto' or a positive integer, not {out.workers!r}")
        return out

    def n_workers(self) -> int:
        return (os.cpu_count() or 1) if self.workers == "auto" else int(self.workers)


class Engine:
    """Runs shard functions; :meth:`map` yields results in input order."""

    name = ""

    def __init__(self, execution: Execution):
        self.execution = execution
        self.workers = execution.n_workers()

    @property
    def parallel(self) -> bool:
        """Whether chunks leave the build's process (else a map step runs inline)."""
        return True

    def map(self, fn: Callable[[Any, Any], Any], job: Any, chunks: Iterable[Any]) -> Iterator[Any]:
        raise NotImplementedError

    def warm(self) -> None:
        """Start the workers in the background as a build begins: a map step then finds them
        ready (a no-op for engines that start fast, and for the local pool, which most builds
        never need)."""

    def close(self) -> None:
        """Let go of the workers (the engine starts them again if it is used again)."""


def _ordered(submit: Callable[[Any], Any], result: Callable[[Any], Any], chunks: Iterable[Any],
             window: int) -> Iterator[Any]:
    """Submit chunks keeping at most ``window`` in flight; yield their results in order."""
    pending: deque = deque()
    it = iter(chunks)
    try:
        for chunk in it:
            pending.append(submit(chunk))
            if len(pending) >= window:
                yield result(pending.popleft())
        while pending:
            yield result(pending.popleft())
    finally:
        for fut in pending:  # a failed or abandoned step: cancel what has not started
            cancel = getattr(fut, "cancel", None)
            if cancel is not None:
                cancel()


#: chunks a worker runs of one step between two trims of its heap (each trim hands the freed
#: pages back, and the next chunk takes them again: a trim after every chunk cost a 1M-sample
#: build a tenth of its time)
TRIM_EVERY = 8
_worker_trim: dict[str, Any] = {"step": None, "chunks": 0}  # this worker's step and its chunks


def in_worker(fn: Callable[[Any, Any], Any], job: Any, chunk: Any) -> Any:
    """``fn(job, chunk)`` in a worker of the pool or in a Ray task, then, after every
    :data:`TRIM_EVERY` chunks of a step and before the first chunk of another, the memory the
    chunks freed handed back (:func:`vlitc.run.heap.trim_heap`; before another step's, the
    last step's caches emptied first, :func:`vlitc.run.heap.step_cache`): a worker runs chunk after
    chunk of every map step, and would otherwise carry their freed heap, more fragmented with
    every chunk, into the next ones, so that it grew with the build (measured, 10M samples:
    400 MiB in the task step and 500 MiB when the dedup's band join began; 270 MiB in the task
    step with a trim after every chunk)."""
    step = (getattr(fn, "__name__", ""), getattr(job, "key", None))
    if step != _worker_trim["step"]:
        if _worker_trim["step"] is not None:
            end_step()  # the last step's caches go, and what they held
        _worker_trim.update(step=step, chunks=0)
    try:
        return fn(job, chunk)
    finally:
        _worker_trim["chunks"] += 1
        if _worker_trim["chunks"] % TRIM_EVERY == 0:
            trim_heap()


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def limit_threads(n: int) -> None:
    """A pool worker's share of the cores for the libraries that start thread pools of their
    own (torch, BLAS: an embedding model in each of two workers on two cores would otherwise
    run four threads per core); a setting the user made is kept."""
    for var in THREAD_VARS:
        os.environ.setdefault(var, str(n))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


class LocalEngine(Engine):
    """A pool of worker processes on this machine (forkserver on Linux, so a worker never
    inherits the build's threads or open databases)."""

    name = "local"

    def __init__(self, execution: Execution):
        super().__init__(execution)
        self._pool: Any = None

    @property
    def parallel(self) -> bool:
        return self.workers > 1

    def mp_context(self) -> Any:
        """The multiprocessing context of the workers (and of the services they share)."""
        if sys.platform.startswith("linux"):
            mp = multiprocessing.get_context("forkserver")
            # the server imports the shard functions and the ops (:mod:`vlitc.run.preload`),
            # never the caller's ``__main__`` (a script without a main guard would build again
            # in every worker)
            mp.set_forkserver_preload(["vlitc.run.preload"])
            return mp
        return multiprocessing.get_context("spawn")

    def warm(self) -> None:
        """Start the server the workers are forked from, in the background: it imports what
        they run (:mod:`vlitc.run.preload`) while the build's first step is keyed, and a
        worker then starts in a few milliseconds. The workers start when a step first needs
        them (a build may need none)."""
        if self.parallel and sys.platform.startswith("linux"):
            from multiprocessing import forkserver

            self.mp_context()
            forkserver.ensure_running()

    def _get_pool(self) -> Any:
        if self._pool is None:
            from concurrent.futures import ProcessPoolExecutor

            threads = max(1, (os.cpu_count() or 1) // self.workers)
            self._pool = ProcessPoolExecutor(self.workers, mp_context=self.mp_context(),
                                             initializer=limit_threads, initargs=(threads,))
        return self._pool

    def map(self, fn: Callable[[Any, Any], Any], job: Any, chunks: Iterable[Any]) -> Iterator[Any]:
        pool = self._get_pool()
        return _ordered(lambda c: pool.submit(in_worker, fn, job, c), lambda f: f.result(), chunks,
                        2 * self.workers)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayEngine(Engine):
    """Ray tasks on a Ray cluster: the job goes into the object store once per step, each chunk
    is one task, and at most twice the cluster's CPUs are in flight.

    Starting a local Ray takes seconds, so :meth:`warm` starts it on a thread of its own while
    the build's first steps are keyed and run; that thread lives until :meth:`close`, as the processes Ray
    starts end with the thread that started them (they are bound to it by Linux's
    parent-death signal)."""

    name = "ray"

    def __init__(self, execution: Execution):
        super().__init__(execution)
        self._ray: Any = None
        self._started = False
        self._remote: dict[Any, Any] = {}
        self._starter: threading.Thread | None = None
        self._ready = threading.Event()
        self._release = threading.Event()
        self._failure: BaseException | None = None

    def ray(self) -> Any:
        """The ``ray`` module, connected to the cluster (for the actors a build shares)."""
        return self._init()

    def warm(self) -> None:
        if self._ray is not None or self._starter is not None:
            return
        self._ready.clear()
        self._release.clear()
        self._failure = None
        self._starter = threading.Thread(target=self._start_and_hold, name="vlitc-ray-start", daemon=True)
        self._starter.start()

    def _start_and_hold(self) -> None:
        import logging

        # Ray sets its SIGTERM handler only from the main thread, and says so; the build's own
        # handling of signals stays as it is
        quiet = logging.getLogger("ray._private.worker")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            self._connect()
        except BaseException as e:  # handed to the first step that needs the cluster
            self._failure = e
        finally:
            quiet.setLevel(level)
            self._ready.set()
        self._release.wait()

    def _init(self) -> Any:
        if self._ray is not None:
            return self._ray
        if self._starter is not None:
            self._ready.wait()
            if self._failure is not None:
                failure, self._failure = self._failure, None
                self._stop_starter()
                raise failure
            return self._ray
        self._connect()
        return self._ray

    def _connect(self) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigurationError("the ray engine needs Ray: pip install 'vlitc[ray]'") from None
        started = False
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False}
            address = self.execution.address
            kw["address"] = address or "local"  # never joins a cluster nobody named
            # workers import vlitc from where this process does, and see its hub setting: a
            # cluster's workers through a runtime environment; a local Ray's inherit the
            # environment of the processes ray.init starts (a runtime environment would cost
            # each new worker seconds)
            path = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
            if address:
                hub = {k: os.environ[k] for k in ("HF_HUB_OFFLINE",) if k in os.environ}
                kw["runtime_env"] = {"env_vars": {**path, **hub}}
            else:
                if self.execution.workers != "auto":
                    kw["num_cpus"] = self.execution.n_workers()
                kw["_node_ip_address"] = "127.0.0.1"
            try:
                with _environ({} if address else path):
                    ray.init(**kw)
            except ConnectionError as e:
                raise ConfigurationError(f"cannot reach the Ray cluster at {address}: {e}") from None
            started = True
        if self.execution.workers == "auto":
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._ray, self._started = ray, started

    def map(self, fn: Callable[[Any, Any], Any], job: Any, chunks: Iterable[Any]) -> Iterator[Any]:
        if self._ray is None and self._starter is not None and not self._ready.is_set() \
                and getattr(job, "llm", None) is None:
            return self._map_meanwhile(fn, job, chunks)
        return self._map(fn, job, chunks)

    def _map_meanwhile(self, fn: Callable[[Any, Any], Any], job: Any, chunks: Iterable[Any]) -> Iterator[Any]:
        """While Ray is still starting, the chunks run in the build's own process, one after
        another (the same pure shard function: the same results, in the same order); once it
        is up, the rest go to the cluster. A step that calls a model never runs here: its
        senders share a governor that lives on the cluster."""
        it = iter(chunks)
        for chunk in it:
            if self._ready.is_set():
                yield from self._map(fn, job, itertools.chain([chunk], it))
                return
            yield fn(job, chunk)

    def _map(self, fn: Callable[[Any, Any], Any], job: Any, chunks: Iterable[Any]) -> Iterator[Any]:
        ray = self._init()
        remote = self._remote.get(in_worker)
        if remote is None:
            remote = self._remote[in_worker] = ray.remote(num_cpus=1, max_retries=3)(in_worker)
        job_ref = ray.put(job)
        return _ordered(lambda c: remote.remote(fn, job_ref, c), ray.get, chunks, 2 * self.workers)

    def close(self) -> None:
        if self._starter is not None:
            self._ready.wait()  # a build that failed while Ray was starting still stops it
        if self._ray is not None and self._started:
            _stop_monitor(self._ray)
            self._ray.shutdown()
        self._stop_starter()
        self._ray, self._started, self._remote = None, False, {}

    def _stop_starter(self) -> None:
        if self._starter is not None:
            self._release.set()
            self._starter.join()
            self._starter = None


def _stop_monitor(ray: Any) -> None:
    """Stop the autoscaler monitor of a local Ray this build started, before ``ray.shutdown``.

    Shutdown stops Ray's processes one after another, the GCS before the monitor, and gives
    each a second to exit on SIGTERM: the monitor's handler first reports to the GCS, which is
    gone by then, so every build would wait out that second. A one-node cluster's monitor
    has nothing to save, so it is killed first; where a Ray release lays its processes out
    otherwise, nothing is done here and shutdown stops it as before."""
    node = getattr(getattr(getattr(ray, "_private", None), "worker", None), "_global_node", None)
    infos = getattr(node, "all_processes", {}).get("monitor") or []
    for info in infos:
        process = getattr(info, "process", None)
        if process is None or process.poll() is not None:
            continue
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait(timeout=5)


class _environ:
    """Variables set in ``os.environ`` for the time of a block (values it had are put back)."""

    def __init__(self, values: dict[str, str]):
        self.values = values
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for k, v in self.values.items():
            self.saved[k] = os.environ.get(k)
            os.environ[k] = v

    def __exit__(self, *exc: object) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def make_engine(execution: Execution) -> Engine:
    return RayEngine(execution) if execution.engine == "ray" else LocalEngine(execution)
