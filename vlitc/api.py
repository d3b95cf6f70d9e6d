"""The library entry points the CLI and users call: validate, plan, build."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

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
) -> BuildResult:
    """Build a recipe: run what is stale, reuse what is cached, write exports and the manifest.

    ``engine``, ``workers`` and ``address`` override the recipe's ``execution`` settings (where
    map steps run: ``local`` process pool or ``ray``); they never change a key or a byte."""
    from vlitc.release import layout

    recipe = load_recipe(recipe_path)
    plan = build_plan(recipe)
    execution = Execution.of(recipe.data, engine, workers, address)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    out = Path(out_dir) if out_dir else default_out_dir(recipe)
    layout.check_out_dir(out, cache)  # before anything runs
    store = Store(cache)
    ex = Executor(recipe, plan, store, out, tuple(force), emit, frozen,
                  Path(llm_store) if llm_store else None, execution)
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


def plan_status(recipe_path: str | Path, cache_dir: str | Path | None = None) -> tuple[Recipe, Plan, list[dict]]:
    """Every step with ``cached``, ``stale`` or ``new`` and the reasons, without running anything."""
    recipe = load_recipe(recipe_path)
    plan = build_plan(recipe)
    store = Store(Path(cache_dir) if cache_dir else default_cache_dir())
    files = FileState(store.root / "files")
    try:
        rows = [st.row() for st in plan_statuses(recipe, plan, store, files)]
    finally:
        files.close()
        store.close()
    return recipe, plan, rows
