"""Decoding only the fields a reader looks at.

A sample's JSON line holds much that a later step never looks at: an export writes a sample's
id, image and turns, while most of its bytes are its ``meta`` (the annotations a task copies
for the filters that check answers against them). An op that declares every field it reads
(:attr:`vlitc.ops.base.Op.reads`, in its grammar: ``"a|b"``, ``"a?"``, ``"meta.split"``) gets
its input decoded into those fields alone: ``msgspec`` parses the whole line and skips the
values of every other field without making an object of them, in half the time of a full
decode. A line whose fields are not of the shape the projection expects (a ``meta`` that is not
an object) is decoded in full: a reader gets what it reads either way, and may get more.

The cache's lines are all written by ``orjson``; both libraries parse them to the same values.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, TypedDict

import orjson

__all__ = ["Projection", "paths_of", "projection", "top_fields"]


def paths_of(reads: Iterable[str]) -> list[tuple[str, ...]]:
    """The field paths a ``reads`` declaration names (each alternative of ``"a|b"``, an
    optional ``"a?"`` as ``a``), each as its keys: ``"meta.split?"`` is ``("meta", "split")``."""
    out = []
    for spec in reads:  # as :mod:`vlitc.recipe.fields` reads them
        for alt in spec.removesuffix("?").split("|"):
            if alt:
                out.append(tuple(alt.split(".")))
    return out


def top_fields(reads: Iterable[str]) -> set[str]:
    """The top-level fields of a ``reads`` declaration."""
    return {path[0] for path in paths_of(reads)}


class Projection:
    """A decoder of JSON lines into the fields ``reads`` names (see the module's text)."""

    def __init__(self, reads: Iterable[str]):
        import msgspec

        tree: dict[str, Any] = {}
        for path in sorted(set(paths_of(reads)), key=len):  # a whole field takes in its parts
            node = tree
            for i, key in enumerate(path):
                if key in node and node[key] is None:
                    break
                if i == len(path) - 1:
                    node[key] = None
                else:
                    node = node.setdefault(key, {})
        self.fields = frozenset(tree)
        self._decoder = msgspec.json.Decoder(_typed(tree, "Projected"))
        self._errors = msgspec.DecodeError

    def loads(self, line: bytes) -> Any:
        """The line's fields this projection reads, as a dict in the line's order (the whole
        record where they are not of its shape)."""
        try:
            return self._decoder.decode(line)
        except self._errors:
            return orjson.loads(line)


def _typed(tree: dict[str, Any], name: str) -> Any:
    """A ``TypedDict`` of the keys of ``tree``, none of them required (``msgspec`` decodes the
    keys it declares and skips the others): a key's value is any JSON value, or for a key with
    keys of its own under it, an object decoded the same way."""
    return TypedDict(name, {key: Any if sub is None else _typed(sub, f"{name}_{i}")  # type: ignore[operator]
                            for i, (key, sub) in enumerate(tree.items())}, total=False)


@functools.lru_cache(maxsize=64)
def projection(reads: tuple[str, ...]) -> Projection:
    """The :class:`Projection` of ``reads`` (made once per process)."""
    return Projection(reads)
