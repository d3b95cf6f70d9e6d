"""Sandboxed Jinja2 templates for instructions and responses: compile once, render fast, fail located.

Every instruction and response template in a recipe renders here, in an
:class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` with :class:`~jinja2.StrictUndefined`:
a template cannot call unsafe attributes or mutate its inputs, and a variable the task does not
provide is an error, never an empty string.

Rendering is on the hot path (one call per sample, millions of samples), so :func:`compile`
caches compiled templates and returns a :class:`Renderer` that skips Jinja entirely for the two
common shapes: a constant (no template syntax at all) and a single variable (``{{ caption }}``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from vlitc.errors import InputError, Location

ENV = ImmutableSandboxedEnvironment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=False,
)

_SYNTAX = re.compile(r"\{\{|\{%|\{#")
_SINGLE_VAR = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")


class Renderer:
    """A compiled template: ``render(context) -> str``; ``variables`` it reads, ``text`` it came from."""

    __slots__ = ("text", "variables", "_const", "_var", "_tpl")

    @property
    def constant(self) -> str | None:
        """The text itself when the template has no Jinja syntax (renders to itself), else None."""
        return self._const

    def __init__(self, text: str):
        self.text = text
        self._const: str | None = None
        self._var: str | None = None
        self._tpl: jinja2.Template | None = None
        if not _SYNTAX.search(text):
            self._const = text
            self.variables: frozenset[str] = frozenset()
            return
        m = _SINGLE_VAR.match(text.strip())
        if m:
            self._var = m.group(1)
            self.variables = frozenset({self._var})
            return
        try:
            ast = ENV.parse(text)
        except jinja2.TemplateSyntaxError as e:
            raise TemplateProblem(text, f"syntax error: {e.message}", line=e.lineno) from None
        self.variables = frozenset(jinja2.meta.find_undeclared_variables(ast))
        self._tpl = ENV.from_string(text)

    def render(self, context: Mapping[str, Any]) -> str:
        if self._const is not None:
            return self._const
        if self._var is not None:
            try:
                value = context[self._var]
            except KeyError:
                raise TemplateProblem(self.text, f"undefined variable {self._var!r}") from None
            return value if isinstance(value, str) else str(value)
        assert self._tpl is not None
        try:
            return self._tpl.render(context)
        except jinja2.UndefinedError as e:
            raise TemplateProblem(self.text, f"undefined variable: {e.message}") from None
        except jinja2.exceptions.SecurityError as e:
            raise TemplateProblem(self.text, f"not allowed in a template: {e}") from None


class TemplateProblem(Exception):
    """A template could not compile or render; the caller turns it into a located InputError."""

    def __init__(self, text: str, message: str, line: int | None = None):
        self.text, self.message, self.line = text, message, line
        super().__init__(f"template {text!r}: {message}")


@lru_cache(maxsize=4096)
def compile(text: str) -> Renderer:  # noqa: A001 - the natural name for a template compiler
    """The compiled :class:`Renderer` for a template text (cached)."""
    return Renderer(text)


def variables(text: str) -> frozenset[str]:
    """The undeclared (input) variables a template reads, found with :mod:`jinja2.meta`."""
    return compile(text).variables


def check_variables(
    templates: Iterable[str],
    provided: Iterable[str],
    where: str,
    locate: Any = None,
) -> list[Renderer]:
    """Compile templates and check each reads only ``provided`` variables.

    Raises a located :class:`InputError` naming the template and the variable. ``locate`` maps a
    template text to a :class:`Location` (e.g. its line in a pool file) or ``None``.
    """
    allowed = set(provided)
    out: list[Renderer] = []
    for text in templates:
        try:
            r = compile(text)
        except TemplateProblem as e:
            raise located_error(e, where, locate) from None
        missing = sorted(r.variables - allowed)
        if missing:
            problem = TemplateProblem(text, f"undefined variable {missing[0]!r}")
            raise located_error(problem, where, locate, hint=_hint(missing[0], allowed)) from None
        out.append(r)
    return out


def located_error(
    problem: TemplateProblem, where: str, locate: Any = None, hint: str = ""
) -> InputError:
    """An :class:`InputError` for a template problem, at the template's file line when known."""
    loc = locate(problem.text) if locate else None
    if loc is not None and problem.line and loc.line:
        loc = Location(loc.file, loc.line + problem.line - 1, loc.column)
    return InputError(f"{where}: template {problem.text!r}: {problem.message}", loc, hint)


def _hint(name: str, allowed: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(allowed), n=1)
    head = f"did you mean {close[0]!r}? " if close else ""
    return head + "variables available here: " + ", ".join(sorted(allowed))
