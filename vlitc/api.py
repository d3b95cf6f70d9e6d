"""The library entry points the CLI and users call: validate, plan, build."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from vlitc.paths import check_writable
from vlitc.plan import Plan, build_plan
from vlitc.recipe import Recipe, load_recipe
from vlitc.run.engine import Execution
from vlitc.run.executor import BuildResult, Executor, default_cache_dir
from vlitc.run.fingerprint import FileState
from vlitc.run.status import plan_statuses
from vlitc.run.store import Store


def validate(recipe_path: str | Path) -> Recipe:
    """Load and validate a recipe; raises :class:`vlitc.errors.RecipeError` on any problem."""
    return load_recipe(recipe_path)


def default_out_dir(recipe: Recipe) -> Path:
    return Path("build") / recipe.name


def build(
    recipe_path: str | Path,
    out_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    force: Iterable[str] = (),
    emit: Callable[[dict], None] | None = None,
    frozen: bool = False,
    llm_store: str | Path | None = None,
    engine: str | None = None,
    workers: int | str | None = None,
    address: str | None = None,
    strict: bool = False,
) -> BuildResult:
    """Build a recipe: run what is stale, reuse what is cached, write exports and the manifest.

    ``engine``, ``workers`` and ``address`` override the recipe's ``execution`` settings (where
    map steps run: ``local`` process pool or ``ray``); they never change a key or a byte.
    ``strict``: a step that outputs nothing, or a release with no samples, is an error (a
    :class:`~vlitc.errors.UserError` naming the counters that explain it) instead of a warning."""
    from vlitc.release import layout

    recipe = load_recipe(recipe_path)
    plan = build_plan(recipe)
    execution = Execution.of(recipe.data, engine, workers, address)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    out = Path(out_dir) if out_dir else default_out_dir(recipe)
    layout.check_out_dir(out, cache)  # before anything runs
    check_writable(out.parent, "output folder")
    check_writable(cache, "cache folder")
    store = Store(cache)
    ex = Executor(recipe, plan, store, out, tuple(force), emit, frozen,
                  Path(llm_store) if llm_store else None, execution, strict=strict)
    return ex.run()


def frozen_rebuild(
    recipe_path: str | Path,
    release: str | Path,
    out_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    emit: Callable[[dict], None] | None = None,
) -> tuple[BuildResult, list[str]]:
    """Rebuild a release with no LLM call, from the responses the release carries, and say
    exactly what differs from it: lock entries (inputs, models, packages, step keys) and files.

    Returns the build and the list of differences (empty: the same bytes). A release whose
    files no longer match its own manifest says so too."""
    from vlitc.release import layout
    from vlitc.release.lock import read, verify

    release = Path(release)
    lock = release / layout.LOCK
    old_lock = read(lock) if lock.exists() else None
    old_manifest = layout.read_manifest(release)
    damaged = layout.verify(release) if old_manifest else []
    store = release / layout.RESPONSES
    result = build(recipe_path, out_dir=out_dir, cache_dir=cache_dir, emit=emit, frozen=True,
                   llm_store=store if store.exists() else None)
    diffs = [f"{d} (in the release)" for d in damaged]
    new_lock_path = result.out_dir / layout.LOCK
    if old_lock is not None and new_lock_path.exists():
        diffs += [f"{layout.LOCK}: {d}" for d in verify(old_lock, read(new_lock_path))]
    old_files = layout.file_hashes(old_manifest)
    new_files = layout.file_hashes(result.manifest)
    for path in sorted(set(old_files) | set(new_files)):
        if old_files.get(path) != new_files.get(path):
            what = ("missing from the rebuild" if path not in new_files else
                    "not in the release" if path not in old_files else "bytes differ")
            diffs.append(f"{path}: {what}")
    return result, diffs


def _image_sizes(store: Store, entry: dict, limit: int = 256) -> list[list[int]]:
    """Width and height of the first ``limit`` images a cached source step yielded."""
    import itertools

    out = []
    for rec in itertools.islice(store.read(entry["outputs"]["main"]), limit):
        img = rec.get("image") or {}
        if img.get("width") and img.get("height"):
            out.append([int(img["width"]), int(img["height"])])
    return out


def plan_status(recipe_path: str | Path, cache_dir: str | Path | None = None,
                items: bool = True) -> tuple[Recipe, Plan, list[dict]]:
    """Every step with ``cached``, ``stale`` or ``new`` and the reasons, without running anything.

    With ``items``, a step that would run and whose inputs are cached also gets ``items``: how
    many of its items are ``new``, ``changed`` or ``cached`` (see :mod:`vlitc.run.items`)."""
    from vlitc.run.items import item_tallies

    recipe = load_recipe(recipe_path)
    plan = build_plan(recipe)
    store = Store(Path(cache_dir) if cache_dir else default_cache_dir())
    files = FileState(store.root / "files")
    try:
        rows = []
        statuses = plan_statuses(recipe, plan, store, files)
        tallies = item_tallies(recipe, plan, store, files, statuses) if items else {}
        for st in statuses:
            row = st.row()
            if st.entry is not None and plan.steps[st.id].kind == "source":
                row["image_sizes"] = _image_sizes(store, st.entry)  # for image-token estimates
            tally = tallies.get(st.id)
            if tally is not None and tally.unknown:
                row["items_unknown"] = tally.unknown
            elif tally is not None:
                row["items"] = tally.counts()
                row["requests_todo"] = tally.todo  # what the uncached items would send
            rows.append(row)
    finally:
        files.close()
        store.close()
    return recipe, plan, rows


def estimates(recipe: Recipe, plan: Plan, rows: list[dict]) -> dict[str, dict]:
    """Cost estimates of the stale steps that call generators, by step id (from
    :func:`plan_status` rows), and ``totals`` per generator and for the whole build.

    Input counts come from cached steps, else from a cheap count of what a source will yield
    (its annotation files read, no image opened; see :meth:`vlitc.ops.base.Source.count`); a step
    whose inputs cannot be counted is estimated per input and left out of the sums.

    A step whose items are known (``items`` in its row) counts only what the response cache
    does not hold: the calls and prompt tokens of the requests its new and changed items would
    send, each from its own rendered request."""
    todo_by = {r["id"]: r.pop("requests_todo") for r in rows if "requests_todo" in r}
    sizes_by = {r["id"]: r.pop("image_sizes", None) for r in rows}  # of cached sources
    from vlitc.llm.estimate import (
        estimate,
        estimate_todo,
        estimate_votes,
        sample_completion,
        stable_prefix,
        totals,
        vote_completion,
    )

    out: dict[str, dict] = {}
    gen_of: dict[str, str] = {}
    counts = record_counts(recipe, plan, rows)
    for r in rows:
        step = plan.steps[r["id"]]
        if r["status"] == "cached" or step.op is None or step.kind not in ("task", "measure"):
            continue
        gens = step.op.references().get("generator", [])
        gen = recipe.ops.get(("generators", gens[0])) if gens else None
        if gen is None:
            continue
        config = {"provider": gen.name, **gen.params}
        ins = [counts.get(d, -1) for d in step.deps if not d.startswith("pool:")]
        n = sum(ins) if ins and min(ins) >= 0 else -1
        sizes = [s for d in _ancestors(plan, step.id) for s in (sizes_by.get(d) or [])] or None
        if r["id"] in todo_by:
            task = step.kind == "task"
            per = sample_completion(step.op.params, config, recipe.dir) if task \
                else vote_completion(config)
            prefix = stable_prefix(step.op.params, config, recipe.dir) if task else None
            out[r["id"]] = estimate_todo(todo_by[r["id"]], config, per, prefix)
        elif step.kind == "task":
            out[r["id"]] = estimate(step.op.params, config, n, recipe_dir=recipe.dir,
                                    image_sizes=sizes)
        else:
            votes = int(step.op.params.get("votes") or 1)
            out[r["id"]] = estimate_votes(votes, config, n, bool(step.op.params.get("image")),
                                          sizes)
        gen_of[r["id"]] = gens[0]
    if out:
        out["totals"] = totals(out, gen_of)
    return out


def record_counts(recipe: Recipe, plan: Plan, rows: list[dict]) -> dict[str, int]:
    """Records each step yields, by step id: exact for cached steps, a cheap upper bound for a
    source not built yet, the count of a one-record-per-input step's inputs (a generating task,
    the merge, a measure), and ``-1`` where it is not known before the step runs."""
    from vlitc.ops.base import OpContext, Source

    counts = {r["id"]: r["n_out"] for r in rows if "n_out" in r}
    ctx = OpContext(seed=recipe.seed, recipe_dir=recipe.dir, recipe=recipe.data)
    for sid in plan.order:
        if sid in counts:
            continue
        step = plan.steps[sid]
        ins = [counts.get(d, -1) for d in step.deps if not d.startswith("pool:")]
        known = bool(ins) and min(ins) >= 0
        if step.kind == "source" and isinstance(step.op, Source):
            counts[sid] = _source_count(step.op, ctx, ins)
        elif step.kind in ("merge", "measure") and known:
            counts[sid] = sum(ins)
        elif step.kind == "task" and step.op is not None and known and \
                step.op.references().get("generator"):
            limit = step.op.params.get("limit")
            counts[sid] = min(sum(ins), int(limit)) if limit else sum(ins)
        else:
            counts[sid] = -1
    return counts


def _source_count(op, ctx, ins: list[int]) -> int:
    if ins and min(ins) < 0:
        return -1
    try:
        n = op.count(ctx, ins)
    except Exception:  # a source that cannot be counted now is counted by its build
        return -1
    return -1 if n is None else int(n)


def _ancestors(plan: Plan, sid: str) -> list[str]:
    seen: list[str] = []
    todo = list(plan.steps[sid].deps)
    while todo:
        d = todo.pop()
        if d not in seen:
            seen.append(d)
            todo += plan.steps[d].deps
    return seen


def graph(recipe_path: str | Path, fmt: str = "mermaid", cache_dir: str | Path | None = None) -> str:
    """The step graph as Mermaid or Graphviz dot text, each step marked cached, stale or new."""
    from vlitc.plan import draw

    _recipe, plan, rows = plan_status(recipe_path, cache_dir, items=False)
    return draw(plan, fmt, {r["id"]: r["status"] for r in rows})


def schema() -> dict:
    """The recipe JSON Schema for the ops registered now."""
    from vlitc.recipe import build_schema

    return build_schema()


def ops_reference(family: str | None = None, name: str | None = None, *, markdown: bool = False) -> str:
    """The registered ops from their docstrings and schemas: one line each (``name``: that op in
    full), or with ``markdown`` the reference ``docs/ops.md`` holds."""
    from vlitc.recipe import reference

    return reference.markdown(family) if markdown else reference.listing(family, name)


def diff(old: str | Path, new: str | Path) -> dict:
    """Compare two releases (folders or exported files): counts per task and source, indicator
    shifts, samples added and removed (see :mod:`vlitc.release.diff`)."""
    from vlitc.release.diff import diff_releases

    return diff_releases(old, new)


def report(path: str | Path, *, recompute: bool = False, response: bool = True, eps: float = 0.2,
           min_samples: int = 3) -> dict:
    """The quality indicators of a release folder (its ``indicators.json``), or computed from the
    exported samples of a folder or file (``recompute``, or when the folder has none)."""
    import json

    stored = Path(path) / "indicators.json"
    if stored.is_file() and not recompute:
        return json.loads(stored.read_text(encoding="utf-8"))["indicators"]
    from vlitc.quality.indicators import compute
    from vlitc.release.read import read_release

    return compute(read_release(path), response=response, eps=eps, min_samples=min_samples)


def lint_pools(paths: Iterable[str | Path] = ()) -> list:
    """Lint findings (``file:line: message``) for recipes, pool files or folders; without paths,
    the shipped default pools. A path that does not exist is an :class:`InputError`."""
    from vlitc.errors import InputError, Location
    from vlitc.lint import lint_paths
    from vlitc.ops.pools import builtin_pool_path

    todo = [Path(p) for p in paths] or [builtin_pool_path("brief_caption").parent]
    for p in todo:
        if not p.exists():
            raise InputError("no such file or folder", Location(str(p)))
    return lint_paths(todo)


def cache_gc(cache_dir: str | Path | None = None, everything: bool = False) -> dict:
    """Remove cache entries no recipe's last build uses (``everything``: all of them); returns
    what was freed (``entries``, ``objects``, ``temp``, ``bytes``)."""
    from vlitc.run.gc import collect

    return collect(Path(cache_dir) if cache_dir else default_cache_dir(), everything=everything)
