"""The Recipe: validated data, where it came from, and the op instances it declares."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from vlitc.errors import Location, RecipeError
from vlitc.ops import registry
from vlitc.ops.base import Op, Pool
from vlitc.recipe import validate as v
from vlitc.recipe.fields import field_problems
from vlitc.recipe.load import KeyPath, Positions, format_path, load_yaml
from vlitc.recipe.schema import SECTIONS


@dataclass
class Recipe:
    path: Path
    data: dict
    positions: Positions
    sha256: str
    ops: dict[KeyPath, Op] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return self.path.parent

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def version(self) -> str:
        return str(self.data.get("version", "0.0.0"))

    @property
    def seed(self) -> int:
        return int(self.data.get("seed", 0))

    def ops_in(self, key: str) -> list[tuple[KeyPath, Op]]:
        return [(p, op) for p, op in self.ops.items() if p[0] == key]

    def locate_value(self, value: str) -> Location | None:
        """Where a string value is written in the recipe (its first occurrence), or None."""
        return _locate_value(self.data, self.positions, value)


def _locate_value(data: dict, positions: Positions, value: str) -> Location | None:
    found = v.find_value(data, value)
    return positions.locate(found) if found is not None else None


class _NotAtValidation(LookupError):
    """An input that only a build can produce (an LLM-expanded pool, a source's records)."""


def _check_problems(data: dict, ops: dict[KeyPath, Op], pos: Positions, recipe_dir: Path,
                    skip: set[KeyPath]) -> list:
    """Each op's files and ``check`` (templates against the variables a task provides, prompt
    packs, context templates), for the ops whose own entry and references are sound."""
    from vlitc.errors import InputError, Problem, UserError
    from vlitc.ops.base import OpContext

    def inputs(ref: str):
        op = ops.get(("pools", ref.split(":", 1)[1])) if ref.startswith("pool:") else None
        if not isinstance(op, Pool) or op.expands_with_model:
            raise _NotAtValidation(ref)
        return iter([{"template": t} for t in op.templates(ctx)])

    ctx = OpContext(seed=int(data.get("seed", 0)) if isinstance(data.get("seed"), int) else 0,
                    recipe_dir=recipe_dir, recipe=data,
                    _inputs=inputs, _locate=lambda v: _locate_value(data, pos, v))
    out = []
    for path, op in ops.items():
        if path in skip:
            continue
        try:
            op.files(ctx)
            op.check(ctx)
        except _NotAtValidation:
            continue
        except InputError as e:
            loc = e.location
            message = e.message
            if loc is None or (loc.file != pos.file and not Path(loc.file).exists()):
                # about a file that is not there: point at the recipe entry that names it
                message = f"{message}: {loc.file}" if loc is not None else message
                loc = pos.locate(path)
            excerpt = pos.excerpt(loc.line) if loc.file == pos.file else ""
            out.append(Problem(loc, "", message,
                               e.hint, excerpt))
        except UserError as e:
            out.append(pos.problem(path, str(e)))
    return out


def _instantiate(data: dict, pos: Positions | None = None,
                 skip: set[KeyPath] = frozenset()) -> tuple[dict[KeyPath, Op], list]:  # type: ignore[assignment]
    """The op of every entry (except those in ``skip``); an entry whose op refuses its params
    is a located problem."""
    from vlitc.errors import InputError, UserError

    ops: dict[KeyPath, Op] = {}
    problems = []
    for path, family, params in v.section_entries(data):
        if path in skip:
            continue
        section = next(s for s in SECTIONS if s.family == family)
        try:
            cls = registry.get(family, params[section.dispatch])
        except (KeyError, TypeError):
            continue  # the schema reports an unknown or missing op name
        label = str(path[1]) if len(path) > 1 and section.shape == "map" else ""
        if section.shape == "list":
            label = params.get("name") or params[section.dispatch]
        op_params = {k: val for k, val in params.items() if k != section.dispatch}
        try:
            ops[path] = cls(op_params, label=label or cls.name)
        except (UserError, ValueError) as e:
            if pos is None:
                raise
            msg = e.message if isinstance(e, InputError) else str(e)
            problems.append(pos.problem(path, msg))
    return ops, problems


def _sound(entries: list[tuple[KeyPath, Op]], data: dict, bad: set[KeyPath]) -> set[KeyPath]:
    """Entries whose references all name entries that exist and passed the schema."""
    out = set()
    for path, op in entries:
        ok = True
        for kind, names in op.references().items():
            section = v.REF_SECTIONS.get(kind)
            if section is None:
                continue
            sec = data.get(section)
            have: dict = sec if isinstance(sec, dict) else {}
            ok = ok and all(n in have and (section, n) not in bad for n in names)
        if ok:
            out.add(path)
    return out


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe; raises :class:`RecipeError` listing every problem found:
    schema, references, files, paths, packages, cycles, templates and prompt packs, in one pass
    (an entry with a schema problem is left out of the later checks, the rest go on)."""
    path = Path(path)
    display = str(path)
    data, pos = load_yaml(path, display)
    if not isinstance(data, dict):
        raise RecipeError([pos.problem((), "a recipe is a mapping of keys (vlitc, name, sources, ...)",
                                       "start from recipes/demo.yaml")])
    v.fill_defaults(data)
    bad: set[KeyPath] = set()
    problems = v.schema_problems(data, pos, bad)
    ops, more = _instantiate(data, pos, bad)
    problems += more
    entries = list(ops.items())
    recipe_dir = path.resolve().parent
    problems += v.reference_problems(entries, data, pos)
    problems += v.file_problems(entries, recipe_dir, pos)
    problems += v.path_problems(entries, recipe_dir, pos)
    problems += _label_problems(entries, pos)
    problems += _side_entry_problems(entries, pos, str(data.get("name") or "vlitc"))
    problems += v.package_problems(entries, pos, data)
    problems += v.cycle_problems(entries, pos)
    sound = _sound(entries, data, bad)
    problems += field_problems({p: op for p, op in ops.items() if p in sound}, pos)
    problems += _check_problems(data, ops, pos, recipe_dir, {p for p, _ in entries} - sound)
    if problems:
        raise RecipeError(_unique_sorted(problems))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return Recipe(path=path.resolve(), data=data, positions=pos, sha256=sha, ops=ops)


def _release_name_problems(entries: list[tuple[KeyPath, Op]], pos: Positions) -> list:
    """An output path (or the image folder it copies into) that names a file every release
    holds (``manifest.json``, ``README.md``, ...): it would overwrite that file."""
    from vlitc.release import layout

    out = []
    reserved = ", ".join(f.path for f in layout.registered())
    for path, op in entries:
        if path[0] != "outputs":
            continue
        keys = ["path"] + (["image_dir"] if op.params.get("images", "reference") != "reference" else [])
        for key in keys:
            value = op.params.get(key)
            clash = layout.collision(value) if isinstance(value, str) else None
            if clash is not None:
                out.append(pos.problem(
                    path + (key,), f"{value!r} would overwrite the release's {clash.path} ({clash.about})",
                    f"choose another name; every release holds {reserved}"))
    return out


def _side_entry_problems(entries: list[tuple[KeyPath, Op]], pos: Positions, name: str) -> list:
    """Exports in one folder share its registry file (one ``dataset_info.json`` holding each
    llamafactory export's dataset): two that would register the same dataset name there."""
    from vlitc.ops.base import Exporter

    out = []
    seen: dict[tuple[str, str], KeyPath] = {}
    for path, op in entries:
        if path[0] != "outputs" or not isinstance(op, Exporter):
            continue
        got = op.side_entry(name)
        if got is None:
            continue
        if got in seen:
            out.append(pos.problem(
                path + ("path",), f"dataset {got[1]!r} is already registered in {got[0]} by "
                      f"{format_path(seen[got])}; exports in one folder share that file",
                "give one of them a distinct `name:` (or another `split:` or folder)"))
        else:
            seen[got] = path
    return out


def _unique_sorted(problems: list) -> list:
    seen, out = set(), []
    for p in sorted(problems, key=lambda p: (p.location.line, p.location.column)):
        key = (str(p.location), p.path, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _label_problems(entries: list[tuple[KeyPath, Op]], pos: Positions) -> list:
    out = []
    for key in ("filters", "outputs"):
        seen: dict[str, KeyPath] = {}
        for path, op in entries:
            if path[0] != key:
                continue
            label = op.label if key == "filters" else str(op.params.get("path", ""))
            if label in seen:
                what = "filter name" if key == "filters" else "output path"
                hint = ("give one of them a distinct 'name:'" if key == "filters"
                        else "each output needs its own path")
                out.append(pos.problem(path, f"duplicate {what} {label!r} (also at {format_path(seen[label])})", hint))
            else:
                seen[label] = path
    out += _release_name_problems(entries, pos)
    for path, op in entries:
        if path[0] == "filters":
            tasks = [p[1] for p, _ in entries if p[0] == "tasks"]
            for i, t in enumerate(op.params.get("tasks") or []):
                if t not in tasks:
                    out.append(pos.problem(path + ("tasks", i), f"task {t!r} is not defined in 'tasks'",
                                           "defined tasks: " + ", ".join(tasks)))
    return out
