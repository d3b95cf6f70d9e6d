"""Compute step keys and staleness reasons, without running anything."""

from __future__ import annotations

from pathlib import Path

from vlitc.ops.base import OpContext
from vlitc.plan import Step
from vlitc.recipe import Recipe
from vlitc.run.fingerprint import FileState, digest, step_key


def step_files(step: Step, recipe: Recipe, files: FileState, ctx: OpContext) -> dict[str, str]:
    """Hashes of the files a step's op reads, by path relative to the recipe (or absolute)."""
    out: dict[str, str] = {}
    if step.op is None or step.kind in ("filter",):
        return out
    for p in step.op.files(ctx):
        p = Path(p)
        out[_display(p, recipe.dir)] = files.sha256(p) if p.is_file() else files.dir_signature(p)
    folder = step.op.image_folder()
    if folder is not None:
        root = ctx.resolve(folder)
        if root.is_dir():
            out[_display(root, recipe.dir) + "/"] = files.dir_signature(root)
    return out


#: vlitc's own files (its package, and the prompt templates it ships: package data in a wheel,
#: a folder beside the package in a checkout) are shown under this name, not where vlitc
#: happens to be installed: a step that reads a built-in pool has the same key, and a release
#: the same lock, on every machine and from a wheel as from a checkout
OWN = "<vlitc>/"
_PACKAGE = Path(__file__).resolve().parents[1]
_OWN_ROOTS = ((_PACKAGE / "data" / "prompt_templates", "prompt_templates"),
              (_PACKAGE.parent / "prompt_templates", "prompt_templates"),
              (_PACKAGE, "vlitc"))


def _display(p: Path, base: Path) -> str:
    real = p.resolve()
    try:
        return str(real.relative_to(base))
    except ValueError:
        pass
    for root, name in _OWN_ROOTS:
        for q in (p.absolute(), real):
            if q.is_relative_to(root):
                return f"{OWN}{name}/{q.relative_to(root).as_posix()}"
    return str(real)


def shown_path(shown: str, base: Path) -> Path:
    """The file a step's ``file_hashes`` name (as :func:`step_files` shows it) stands for."""
    shown = shown.rstrip("/")
    if shown.startswith(OWN):
        name, _, rest = shown[len(OWN):].partition("/")
        found = [root / rest for root, n in _OWN_ROOTS if n == name]
        return next((f for f in found if f.exists()), found[0] if found else Path(shown))
    p = Path(shown)
    return p if p.is_absolute() else base / p


def components(step: Step, recipe: Recipe, file_hashes: dict[str, str], upstream: dict[str, str]) -> dict:
    return {
        "op": step.op_name,
        "version": step.version,
        "params": step.params,
        "files": file_hashes,
        "upstream": upstream,
        "seed": recipe.seed,
    }


def key_of(comp: dict) -> str:
    return step_key(comp)


def reasons(prev: dict | None, comp: dict) -> list[str]:
    """Why a step with components ``comp`` differs from the last build of it (``prev``)."""
    if prev is None:
        return ["new"]
    out: list[str] = []
    if prev.get("op") != comp["op"] or prev.get("version") != comp["version"]:
        out.append("op_version_changed")
    # a balance top-up's extra items are decided during the build, never a reason of their own
    old = {k: v for k, v in prev.get("params", {}).items() if k != "topup_items"}
    new = {k: v for k, v in comp["params"].items() if k != "topup_items"}
    changed = sorted(k for k in set(old) | set(new) if digest(old.get(k)) != digest(new.get(k)))
    out += [f"params_changed: {k}" for k in changed]
    oldf, newf = prev.get("files", {}), comp["files"]
    out += [f"file_changed: {k}" for k in sorted(set(oldf) | set(newf)) if oldf.get(k) != newf.get(k)]
    oldu, newu = prev.get("upstream", {}), comp["upstream"]
    out += [f"upstream_changed: {k}" for k in sorted(set(oldu) | set(newu)) if oldu.get(k) != newu.get(k)]
    if prev.get("seed") != comp["seed"]:
        out.append("seed_changed")
    return out or ["cache_missing"]
