"""The library entry points the CLI and users call: validate, plan, build."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from vlitc.ops.base import OpContext
from vlitc.plan import Plan, build_plan
from vlitc.recipe import Recipe, load_recipe
from vlitc.run import keys
from vlitc.run.executor import BuildResult, Executor, default_cache_dir
from vlitc.run.fingerprint import FileState
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
) -> BuildResult:
    """Build a recipe: run what is stale, reuse what is cached, write exports and the manifest."""
    recipe = load_recipe(recipe_path)
    plan = build_plan(recipe)
    store = Store(Path(cache_dir) if cache_dir else default_cache_dir())
    out = Path(out_dir) if out_dir else default_out_dir(recipe)
    ex = Executor(recipe, plan, store, out, tuple(force), emit, frozen,
                  Path(llm_store) if llm_store else None)
    return ex.run()


def plan_status(recipe_path: str | Path, cache_dir: str | Path | None = None) -> tuple[Recipe, Plan, list[dict]]:
    """Every step with ``cached``, ``stale`` or ``new`` and the reasons, without running anything."""
    recipe = load_recipe(recipe_path)
    plan = build_plan(recipe)
    store = Store(Path(cache_dir) if cache_dir else default_cache_dir())
    files = FileState(store.root / "files")
    hashes: dict[str, str | None] = {}
    rows = []
    try:
        for sid in plan.order:
            step = plan.steps[sid]
            ctx = OpContext(seed=recipe.seed, recipe_dir=recipe.dir, recipe=recipe.data)
            upstream_stale = [d for d in step.deps if hashes.get(d) is None]
            prev = store.get_state(recipe.name, sid)
            if upstream_stale:
                status = "new" if prev is None else "stale"
                why = ["new"] if prev is None else [f"upstream_stale: {d}" for d in upstream_stale]
                hashes[sid] = None
                rows.append({"id": sid, "status": status, "reasons": why, "key": None})
                continue
            upstream = {d: hashes[d] for d in step.deps}
            if step.kind == "report":
                upstream["steps"] = (prev or {}).get("upstream", {}).get("steps", "")
            comp = keys.components(step, recipe, keys.step_files(step, recipe, files, ctx), upstream)
            key = keys.key_of(comp)
            entry = store.get_entry(key)
            if entry is not None:
                outs = entry["outputs"]
                hashes[sid] = "+".join(outs[k]["hash"] for k in sorted(outs))
                rows.append({"id": sid, "status": "cached", "reasons": [], "key": key})
            else:
                hashes[sid] = None
                status = "new" if prev is None else "stale"
                rows.append({"id": sid, "status": status, "reasons": keys.reasons(prev, comp), "key": key})
    finally:
        files.close()
        store.close()
    return recipe, plan, rows
