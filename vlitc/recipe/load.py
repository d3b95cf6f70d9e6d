"""Read a recipe file into plain data while keeping where every key and value came from.

PyYAML composes the document into nodes that carry marks (line, column); we construct the data
with the safe constructor and walk the node tree beside it to build a map from key paths to
locations, so every later error (schema, references, files, cycles) can point at file:line:col.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vlitc.errors import Location, Problem, RecipeError

KeyPath = tuple[Any, ...]


@dataclass
class Positions:
    """Where each key path sits in the file: the key's mark and the value's mark (1-based)."""

    file: str
    lines: list[str]
    keys: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    values: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: KeyPath, at_key: bool = False) -> Location:
        """The closest known location of ``path`` (walking up to a parent when needed)."""
        path = tuple(path)
        while True:
            table = self.keys if at_key and path in self.keys else self.values
            if path in table:
                line, col = table[path]
                return Location(self.file, line, col)
            if not path:
                return Location(self.file, 1, 1)
            path = path[:-1]
            at_key = False

    def excerpt(self, line: int) -> str:
        return self.lines[line - 1].rstrip() if 0 < line <= len(self.lines) else ""

    def problem(self, path: KeyPath, message: str, hint: str = "", at_key: bool = False) -> Problem:
        loc = self.locate(path, at_key=at_key)
        return Problem(loc, format_path(path), message, hint, self.excerpt(loc.line))


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _walk(node: yaml.Node, path: KeyPath, pos: Positions, problems: list[Problem]) -> None:
    pos.values[path] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, yaml.Node] = {}
        for knode, vnode in node.value:
            key = knode.value
            if key in seen:
                line, col = _mark(knode)
                first = _mark(seen[key])[0]
                problems.append(Problem(
                    Location(pos.file, line, col), format_path(path + (key,)),
                    f"duplicate key {key!r} (first defined on line {first})",
                    "a key may appear once in a mapping; merge the two entries",
                    pos.excerpt(line)))
                continue
            seen[key] = knode
            pos.keys[path + (key,)] = _mark(knode)
            _walk(vnode, path + (key,), pos, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), pos, problems)


def load_yaml(path: Path, display: str | None = None) -> tuple[Any, Positions]:
    """Parse a YAML file; syntax errors and duplicate keys become a located :class:`RecipeError`."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError([Problem(Location(name), "", "recipe file not found")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError([Problem(Location(name), "", f"cannot read recipe: {e}")]) from None
    pos = Positions(name, text.splitlines())
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise RecipeError([Problem(Location(name, 1, 1), "", "recipe is empty",
                                       "start from recipes/demo.yaml")])
        problems: list[Problem] = []
        _walk(node, (), pos, problems)
        if problems:
            raise RecipeError(problems)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        msg = f"YAML syntax error: {e.problem or e.context}"
        hint = "check indentation and quoting on this line or the one before it"
        raise RecipeError([Problem(Location(name, line, col), "", msg, hint, pos.excerpt(line))]) from None
    except yaml.YAMLError as e:
        raise RecipeError([Problem(Location(name), "", f"YAML error: {e}")]) from None
    finally:
        loader.dispose()
    return data, pos
