"""Read a recipe file into plain data while keeping where every key and value came from.

PyYAML composes the document into nodes that carry marks (line, column); we construct the data
with the safe constructor and walk the node tree beside it to build a map from key paths to
locations, so every later error (schema, references, files, cycles) can point at file:line:col.
"""

from __future__ import annotations

import math
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
        text = self.lines[line - 1].rstrip() if 0 < line <= len(self.lines) else ""
        return text if len(text) <= 160 else text[:157] + "..."

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


#: how deep mappings and lists may nest in a recipe
MAX_DEPTH = 64
#: how many values a recipe may hold once its YAML aliases are expanded (an alias bomb stops here)
MAX_VALUES = 100_000
#: integers a recipe may hold (they go into JSON keys and seeds: signed 64 bits)
INT_RANGE = (-(2**63), 2**63 - 1)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Loader(yaml.SafeLoader):
    """The safe loader with nesting bounded while composing (deep input is a located error, not
    a RecursionError) and the place of every alias kept."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self.aliases: list[tuple[Any, Any]] = []

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            self.aliases.append((node, event.start_mark))
            return node
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"values nested more than {MAX_DEPTH} levels deep", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError, TypeError) as e:  # e.g. ``!!int abc``
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value: {e}", node.start_mark) from None


def compose(text: str) -> yaml.Node | None:
    """The node tree of one YAML document with nesting bounded (deep input is a
    :class:`yaml.MarkedYAMLError` at its place, not a RecursionError): for the other YAML files
    a recipe names, such as pool lists."""
    loader = _Loader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


# dates stay text: a recipe's ``version: 2024-01-01`` means the string
_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _expanded_sizes(root: yaml.Node) -> dict[int, int] | None:
    """How many values each node stands for with aliases expanded (by node id), computed once per
    distinct node; ``None`` when an alias refers to a node that contains it (a recursive alias)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        kids = _children(node)
        if done:
            on_path.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(k)] for k in kids)
            continue
        if id(node) in on_path:
            return None
        on_path.add(id(node))
        stack.append((node, True))
        for k in kids:
            if id(k) in on_path:
                return None
            if id(k) not in sizes:
                stack.append((k, False))
    return sizes


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for kv in node.value for n in kv]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _alias_problem(root: yaml.Node, aliases: list[tuple[Any, Any]], pos: Positions) -> Problem | None:
    if not aliases:
        return None
    sizes = _expanded_sizes(root)
    if sizes is None:
        target, mark = next(((n, m) for n, m in aliases if _contains(n, m)), aliases[0])
        line, col = mark.line + 1, mark.column + 1
        return Problem(Location(pos.file, line, col), "", "an alias refers to a value that contains it",
                       "YAML aliases (*name) must not point back into their own anchor",
                       pos.excerpt(line))
    if sizes[id(root)] <= MAX_VALUES:
        return None
    node, mark = max(aliases, key=lambda a: sizes[id(a[0])])
    line, col = mark.line + 1, mark.column + 1
    return Problem(Location(pos.file, line, col), "",
                   f"YAML aliases expand this recipe to {sizes[id(root)]:,} values "
                   f"(at most {MAX_VALUES:,}); an alias bomb?",
                   "write the values out, or use fewer nested aliases", pos.excerpt(line))


def _contains(node: yaml.Node, mark: yaml.Mark) -> bool:
    return node.start_mark.index <= mark.index <= node.end_mark.index


def _walk(node: yaml.Node, path: KeyPath, pos: Positions, problems: list[Problem],
          seen_nodes: set[int]) -> None:
    pos.values[path] = _mark(node)
    if id(node) in seen_nodes:  # an alias: its positions are those of its anchor, walked once
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, yaml.Node] = {}
        for knode, vnode in node.value:
            key = knode.value
            if not isinstance(key, str) or not isinstance(knode, yaml.ScalarNode):
                continue  # a complex key: the data check reports it
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
            _walk(vnode, path + (key,), pos, problems, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), pos, problems, seen_nodes)


def _bad_text(text: str) -> str | None:
    if "\x00" in text:
        return "a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"a lone surrogate \\u{ord(text[e.start]):04x} (not a character)"
    return None


def data_problems(data: Any, pos: Positions) -> list[Problem]:
    """Values no recipe can mean: keys that are not text, text with NUL or lone surrogates,
    integers beyond 64 bits, infinite or NaN numbers; each located."""
    out: list[Problem] = []
    stack: list[tuple[Any, KeyPath]] = [(data, ())]
    while stack:
        obj, path = stack.pop()
        if isinstance(obj, dict):
            for k, v in obj.items():
                if not isinstance(k, str):
                    out.append(pos.problem(path, f"key {k!r} is not text",
                                           "quote the key (YAML reads yes/no/on/off/1 as "
                                           "booleans and numbers)"))
                    continue
                bad = _bad_text(k)
                if bad:
                    out.append(pos.problem(path + (k,), f"a key holds {bad}", at_key=True))
                    continue
                stack.append((v, path + (k,)))
        elif isinstance(obj, list):
            stack += [(v, path + (i,)) for i, v in enumerate(obj)]
        elif isinstance(obj, str):
            bad = _bad_text(obj)
            if bad:
                out.append(pos.problem(path, f"the text holds {bad}",
                                       "remove the \\0 or \\u escape from the string"))
        elif isinstance(obj, bool):
            continue
        elif isinstance(obj, int) and not INT_RANGE[0] <= obj <= INT_RANGE[1]:
            out.append(pos.problem(path, f"{obj} is beyond the 64-bit integer range",
                                   f"integers are between {INT_RANGE[0]} and {INT_RANGE[1]}"))
        elif isinstance(obj, float) and not math.isfinite(obj):
            out.append(pos.problem(path, f"{obj} is not a finite number"))
        elif not isinstance(obj, (int, float, type(None))):
            out.append(pos.problem(path, f"a {type(obj).__name__} value is not allowed here",
                                   "recipes hold text, numbers, booleans, lists and mappings; "
                                   "quote dates and other special values"))
    return out


def _syntax_problem(e: yaml.MarkedYAMLError, pos: Positions, text: str) -> Problem:
    """A YAML syntax error at the place that explains it: where an unclosed bracket or quote
    opened (PyYAML's context mark) rather than where the parser gave up."""
    problem, context = e.problem_mark, e.context_mark
    opened = context is not None and e.context and (
        "flow" in e.context or "quoted" in e.context
        or problem is None or problem.index >= len(text.rstrip()))
    if opened and context is not None:
        line, col = context.line + 1, context.column + 1
        where = f" at line {problem.line + 1}, column {problem.column + 1}" if problem else ""
        what = (e.context or "").removeprefix("while parsing ").removeprefix("while scanning ")
        msg = f"YAML syntax error: {what} that starts here is not closed: {e.problem}{where}"
        hint = "close the bracket or quote that opens here"
    elif isinstance(e, yaml.constructor.ConstructorError):
        mark = problem or context
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        msg = f"YAML value not allowed: {e.problem or e.context}"
        hint = "recipes hold plain text, numbers, booleans, lists and mappings (no tags)"
    else:
        mark = problem or context
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        msg = f"YAML syntax error: {e.problem or e.context}"
        hint = "check indentation and quoting on this line or the one before it"
    return Problem(Location(pos.file, line, col), "", msg, hint, pos.excerpt(line))


def _position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def load_yaml(path: Path, display: str | None = None) -> tuple[Any, Positions]:
    """Parse a YAML file; syntax errors, duplicate keys, aliases that expand too far, nesting too
    deep and values no recipe can mean become a located :class:`RecipeError`."""
    name = display or str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError([Problem(Location(name), "", "recipe file not found")]) from None
    except IsADirectoryError:
        raise RecipeError([Problem(Location(name), "", "the recipe is a folder, not a file")]) from None
    except OSError as e:
        raise RecipeError([Problem(Location(name), "", f"cannot read recipe: {e.strerror or e}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise RecipeError([Problem(Location(name, line, col), "",
                                   f"the recipe is not UTF-8 text: {e.reason} at byte {e.start}",
                                   "save the file as UTF-8")]) from None
    text = text.removeprefix("\ufeff")
    pos = Positions(name, text.splitlines())
    loader = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            raise RecipeError([Problem(Location(name, 1, 1), "", "recipe is empty",
                                       "start from recipes/demo.yaml")])
        bomb = _alias_problem(node, loader.aliases, pos)
        if bomb is not None:
            raise RecipeError([bomb])
        problems: list[Problem] = []
        _walk(node, (), pos, problems, set())
        if problems:
            raise RecipeError(problems)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        raise RecipeError([_syntax_problem(e, pos, text)]) from None
    except yaml.reader.ReaderError as e:
        line, col = _position(text, e.position)
        what = "a NUL character" if e.character == 0 else f"the character {e.character!r}"
        raise RecipeError([Problem(Location(name, line, col), "", f"{what} is not allowed in YAML",
                                   "remove it (control characters are not text)",
                                   pos.excerpt(line))]) from None
    except yaml.YAMLError as e:
        raise RecipeError([Problem(Location(name, 1, 1), "", f"YAML error: {e}")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    problems = data_problems(data, pos)
    if problems:
        raise RecipeError(problems)
    return data, pos
