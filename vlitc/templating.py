"""The one template engine of vlitc: sandboxed Jinja2, bounded, compiled once, failing located.

Every template vlitc renders goes through :data:`ENV` (instruction and response templates, pool
templates, context templates ``context: file.j2``, the mock provider's ``template``): an
:class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` with :class:`~jinja2.StrictUndefined`, so a
template cannot reach unsafe attributes (``os.popen`` tricks fail), mutate its inputs or read a
variable the task does not provide. On top of the sandbox, each render is bounded:

* output and every string or list a template builds: :data:`MAX_OUTPUT` characters (items);
  ``'x' * 2000000000``, ``'%999999999d'``, ``center(10**9)`` and friends are refused before they
  allocate anything;
* loop iterations, all ``for`` loops of a render together: :data:`MAX_ITERATIONS`;
* nested calls (macros, recursive loops): :data:`MAX_DEPTH`.

Any failure at render time (a limit, ``1 // 0``, ``caption + 5``, an undefined variable, an
unsafe call) raises :class:`TemplateProblem` with the template line, which callers turn into a
located :class:`~vlitc.errors.InputError` (exit 2), never a crash.

Rendering is on the hot path (one call per sample, millions of samples), so :func:`compile`
caches compiled templates and returns a :class:`Renderer` that skips Jinja entirely for the two
common shapes: a constant (no template syntax at all) and a single variable (``{{ caption }}``).
"""

from __future__ import annotations

import difflib
import functools
import re
import string
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.visitor import NodeTransformer

from vlitc.errors import InputError, Location

#: characters a render may produce, and the size of any string or list a template builds
MAX_OUTPUT = 1_000_000
#: iterations of all ``for`` loops of one render together
MAX_ITERATIONS = 1_000_000
#: nested calls (macros calling macros, recursive loops)
MAX_DEPTH = 64
#: bits of an integer ``**`` may produce
MAX_POWER_BITS = 100_000


class LimitExceeded(SecurityError):
    """A template went past one of the render limits."""


#: characters captured into block buffers (macros, ``{% set %}`` and ``{% filter %}`` blocks)
MAX_CAPTURED = 10 * MAX_OUTPUT


class _Budget:
    __slots__ = ("iterations", "depth", "captured")

    def __init__(self) -> None:
        self.iterations = 0
        self.depth = 0
        self.captured = 0


class _BoundedBuffer(list):
    """The output buffer of a macro or block: what it captures counts against the render."""

    __slots__ = ()

    def _count(self, n: int) -> None:
        budget = _budget()
        budget.captured += n
        if budget.captured > MAX_CAPTURED:
            raise LimitExceeded(f"more than {MAX_CAPTURED:,} characters built in one render")

    def append(self, item: Any) -> None:
        self._count(len(item) if isinstance(item, str) else 1)
        super().append(item)

    def extend(self, items: Iterable[Any]) -> None:
        items = list(items)
        self._count(sum(len(i) if isinstance(i, str) else 1 for i in items))
        super().extend(items)


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator with block buffers that count what they capture."""

    def buffer(self, frame: Any) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.bounded_buffer()")


class _Guards(NodeTransformer):
    """Every ``for`` loop iterates through ``loop_guard``; every ``~`` joins through
    ``concat_guard`` (both count against the render's limits)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Call(nodes.EnvironmentAttribute("loop_guard"), [node.iter], [], None,
                               None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Call(nodes.EnvironmentAttribute("concat_guard"),
                          [nodes.List(list(node.nodes), lineno=node.lineno)], [], None, None,
                          lineno=node.lineno)


_BUDGET: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


def _budget() -> _Budget:
    b = _BUDGET.get()
    if b is None:  # a render outside render(): give it a budget of its own
        b = _Budget()
        _BUDGET.set(b)
    return b


def _sized(value: Any) -> Any:
    if isinstance(value, (str, list, tuple, bytes)) and len(value) > MAX_OUTPUT:
        raise LimitExceeded(f"a value of {len(value):,} characters or items is more than a "
                            f"template may build ({MAX_OUTPUT:,})")
    return value


def _check_int(value: Any) -> None:
    if type(value) is int and abs(value) > MAX_OUTPUT:
        raise LimitExceeded(f"the number {value} is too large for a width, count or size "
                            f"(at most {MAX_OUTPUT:,})")


def _check_args(args: Iterable[Any], kwargs: Mapping[str, Any]) -> None:
    for a in args:
        _check_int(a)
    for a in kwargs.values():
        _check_int(a)


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\d*)(?:\.(\d*))?")


def _check_format(fmt: str, percent: bool) -> None:
    """Refuse a format string whose widths or precisions ask for more than :data:`MAX_OUTPUT`."""
    numbers: list[str] = []
    if percent:
        for m in _PERCENT_SPEC.finditer(fmt):
            numbers += [g for g in m.groups() if g]
    else:
        try:
            specs = [spec for _, field, spec, _ in string.Formatter().parse(fmt) if field is not None]
        except ValueError:
            return  # str.format raises its own error
        numbers = [n for spec in specs if spec for n in re.findall(r"\d+", spec)]
    for n in numbers:
        _check_int(int(n))


def _estimate(name: str, self_: Any, args: tuple, kwargs: dict) -> int:
    """What a string-growing call would produce, computed before it runs (0 when unknown)."""
    if name == "replace" and isinstance(self_, str) and len(args) >= 2 \
            and isinstance(args[0], str) and isinstance(args[1], str):
        count = self_.count(args[0]) if args[0] else len(self_) + 1
        return len(self_) + count * max(0, len(args[1]) - len(args[0]))
    if name == "join" and isinstance(args[0] if args else None, (list, tuple)):
        items = args[0]
        sep = len(self_) if isinstance(self_, str) else 0
        return sum(len(x) if isinstance(x, str) else 20 for x in items) + sep * len(items)
    if name == "indent" and isinstance(self_, str):
        width = args[0] if args else kwargs.get("width", 4)
        width = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        return len(self_) + (self_.count("\n") + 1) * width
    return 0


def _guard_filter(name: str, func: Any) -> Any:
    """A built-in filter with its numbers, its estimated size and its result bounded."""

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _check_args(args, kwargs)
        plain = [a for a in args if not isinstance(a, (jinja2.runtime.Context, jinja2.Environment,
                                                       jinja2.nodes.EvalContext))]
        if name == "format" and plain and isinstance(plain[0], str):
            _check_format(plain[0], percent=True)
        if name in ("replace", "indent") and plain:
            est = _estimate(name, plain[0], tuple(plain[1:]), kwargs)
        elif name == "join" and plain:
            items = list(plain[0]) if not isinstance(plain[0], (str, list, tuple)) else plain[0]
            sep = plain[1] if len(plain) > 1 else kwargs.get("d", "")
            est = _estimate("join", sep, (list(items),), {})
            args = tuple(items if a is plain[0] else a for a in args)
        else:
            est = 0
        if est > MAX_OUTPUT:
            raise LimitExceeded(f"filter {name!r} would build {est:,} characters "
                                f"(at most {MAX_OUTPUT:,})")
        return _sized(func(*args, **kwargs))

    return guarded


class SafeEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox plus the render limits (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _CodeGenerator
    bounded_buffer = _BoundedBuffer

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        for unused in ("lipsum", "cycler", "joiner"):
            self.globals.pop(unused, None)
        self.globals["range"] = self._range
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}

    # -- limits ---------------------------------------------------------------------------
    @staticmethod
    def _range(*args: int) -> range:
        _check_args(args, {})
        rng = range(*args)
        if len(rng) > MAX_ITERATIONS:
            raise LimitExceeded(f"range of {len(rng):,} items (at most {MAX_ITERATIONS:,})")
        return rng

    def loop_guard(self, iterable: Any) -> Iterator[Any]:
        """Every ``for`` loop iterates through here (see :meth:`_generate`): counted."""
        budget = _budget()
        for item in iterable:
            budget.iterations += 1
            if budget.iterations > MAX_ITERATIONS:
                raise LimitExceeded(f"more than {MAX_ITERATIONS:,} loop iterations in one render")
            yield item

    @staticmethod
    def concat_guard(items: list[Any]) -> str:
        """``a ~ b ~ c``: the pieces as text, joined only when the result fits."""
        texts = [x if isinstance(x, str) else str(x) for x in items]
        size = sum(map(len, texts))
        if size > MAX_OUTPUT:
            raise LimitExceeded(f"joining {size:,} characters with '~' is more than a template "
                                f"may build ({MAX_OUTPUT:,})")
        return "".join(texts)

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        if op == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) \
                        and len(seq) * n > MAX_OUTPUT:
                    raise LimitExceeded(f"repeating {len(seq):,} characters or items {n:,} times "
                                        f"is more than a template may build ({MAX_OUTPUT:,})")
        elif op == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 \
                and right * abs(left).bit_length() > MAX_POWER_BITS:
            raise LimitExceeded(f"{left} ** {right} is too large a number")
        elif op == "%" and isinstance(left, str):
            _check_format(left, percent=True)
            if isinstance(right, tuple):
                _check_args(right, {})
            else:
                _check_int(right)
        return _sized(self.binop_table[op](left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _check_args(args, kwargs)
        name = getattr(__obj, "__name__", "")
        owner = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
        if isinstance(owner, str) and name in ("format", "format_map"):
            _check_format(owner, percent=False)
        est = _estimate(name, owner, args, kwargs) if owner is not None else 0
        if est > MAX_OUTPUT:
            raise LimitExceeded(f"{name}() would build {est:,} characters (at most {MAX_OUTPUT:,})")
        if isinstance(__obj, LoopContext) and args:  # a recursive loop's next level
            args = (__self.loop_guard(args[0]),) + args[1:]
        budget = _budget()
        budget.depth += 1
        try:
            if budget.depth > MAX_DEPTH:
                raise LimitExceeded(f"calls nested more than {MAX_DEPTH} deep (a recursive macro?)")
            return _sized(super().call(__context, __obj, *args, **kwargs))
        finally:
            budget.depth -= 1

    def _generate(self, source: Any, name: Any, filename: Any, defer_init: bool = False) -> str:
        """Compile with the loop and concatenation guards in place (see :class:`_Guards`)."""
        if isinstance(source, nodes.Template):
            source = _Guards().visit(source)
        return super()._generate(source, name, filename, defer_init=defer_init)


ENV = SafeEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                      keep_trailing_newline=False)
#: the same environment for template files (context templates): block tags take their newline
FILE_ENV = ENV.overlay(trim_blocks=True, lstrip_blocks=True)
#: the same environment keeping a final newline (the mock provider's scripted answers)
RAW_ENV = ENV.overlay(keep_trailing_newline=True)

_SYNTAX = re.compile(r"\{\{|\{%|\{#")
_SINGLE_VAR = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")


class TemplateProblem(Exception):
    """A template could not compile or render; the caller turns it into a located InputError."""

    def __init__(self, text: str, message: str, line: int | None = None):
        self.text, self.message, self.line = text, message, line
        super().__init__(f"template {text!r}: {message}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, jinja2.UndefinedError):
        return f"undefined variable: {exc.message}"
    if isinstance(exc, LimitExceeded):
        return f"over a template limit: {exc}"
    if isinstance(exc, SecurityError):
        return f"not allowed in a template: {exc}"
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"syntax error: {exc.message}"
    if isinstance(exc, RecursionError):
        return "over a template limit: recursion too deep"
    if isinstance(exc, MemoryError):
        return "over a template limit: out of memory"
    return f"{type(exc).__name__}: {exc}"


def _template_line(exc: BaseException, filename: str | None) -> int | None:
    """The template line of the innermost template frame in ``exc``'s traceback."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename in ("<template>", filename):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def parse(text: str, env: jinja2.Environment = ENV, name: str = "") -> nodes.Template:
    """The AST of a template; a syntax error, or a filter or test the sandbox does not have
    (even one Jinja would only look up when a condition reaches it), is a
    :class:`TemplateProblem` at its line."""
    try:
        ast = env.parse(text)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateProblem(name or text, f"syntax error: {e.message}", line=e.lineno) from None
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        arg = getattr(node, "arg", None)
        attr = node.attr if isinstance(node, nodes.Getattr) else (
            arg.value if isinstance(arg, nodes.Const) else None)
        if isinstance(attr, str) and attr.startswith("_"):
            raise TemplateProblem(name or text, f"not allowed in a template: the attribute "
                                                f"{attr!r} (names starting with '_' are private)",
                                  line=node.lineno)
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        known = env.filters if isinstance(node, nodes.Filter) else env.tests
        if node.name not in known:
            kind = "filter" if isinstance(node, nodes.Filter) else "test"
            close = difflib.get_close_matches(node.name, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TemplateProblem(name or text, f"syntax error: no {kind} named {node.name!r}{hint}",
                                  line=node.lineno)
    return ast


def undeclared(ast: nodes.Template, name: str) -> set[str]:
    """The variables a parsed template reads from its context (an unknown filter or test is a
    :class:`TemplateProblem` at its line)."""
    try:
        return set(jinja2.meta.find_undeclared_variables(ast))
    except jinja2.TemplateSyntaxError as e:
        raise TemplateProblem(name, f"syntax error: {e.message}", line=e.lineno) from None


def template(text: str, env: jinja2.Environment = ENV, name: str = "") -> jinja2.Template:
    """A compiled template of the sandbox; a syntax error (or an unknown filter or test) is a
    :class:`TemplateProblem` at its line."""
    parse(text, env, name)
    try:
        return env.from_string(text)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateProblem(name or text, f"syntax error: {e.message}", line=e.lineno) from None
    except jinja2.TemplateError as e:
        raise TemplateProblem(name or text, _describe(e)) from None


def render(tpl: jinja2.Template, context: Mapping[str, Any], text: str = "") -> str:
    """Render ``tpl`` within the limits; any failure is a :class:`TemplateProblem` (with the
    template line where the traceback has one)."""
    token = _BUDGET.set(_Budget())
    try:
        try:
            out: list[str] = []
            size = 0
            for chunk in tpl.root_render_func(tpl.new_context(dict(context))):
                size += len(chunk)
                if size > MAX_OUTPUT:
                    raise LimitExceeded(f"output longer than {MAX_OUTPUT:,} characters")
                out.append(chunk)
            return "".join(out)
        except Exception:  # noqa: BLE001 - rewrite the traceback to template lines, then describe
            tpl.environment.handle_exception()
    except Exception as e:  # noqa: BLE001 - jinja and the template's own operations raise anything
        raise TemplateProblem(text or (tpl.filename or "<template>"), _describe(e),
                              line=_template_line(e, tpl.filename)) from None
    finally:
        _BUDGET.reset(token)
    raise AssertionError("unreachable")  # pragma: no cover


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
        self.variables = frozenset(undeclared(parse(text), text))
        self._tpl = template(text)

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
        return render(self._tpl, context, self.text)


@lru_cache(maxsize=4096)
def compile(text: str) -> Renderer:  # noqa: A001 - the natural name for a template compiler
    """The compiled :class:`Renderer` for a template text (cached)."""
    return Renderer(text)


def variables(text: str) -> frozenset[str]:
    """The undeclared (input) variables a template reads, found with :mod:`jinja2.meta`."""
    return compile(text).variables


def first_lines(ast: nodes.Template, name: str) -> dict[str, int]:
    """The variables a template reads from its context, each with the line it is first read on."""
    names = undeclared(ast, name)
    out: dict[str, int] = {}
    for node in ast.find_all(nodes.Name):
        if node.name in names and node.ctx == "load":
            out[node.name] = min(out.get(node.name, node.lineno), node.lineno)
    return {n: out.get(n, 0) for n in sorted(names)}


@lru_cache(maxsize=64)
def _file_template(path: str, mtime_ns: int) -> tuple[jinja2.Template, dict[str, int]]:
    env = FILE_ENV
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"template file is not UTF-8 text: {e.reason} at byte {e.start}",
                         Location(path)) from None
    except OSError as e:
        raise InputError(f"cannot read template file: {e.strerror or e}", Location(path)) from None
    try:
        ast = parse(text, env, path)
        tpl = template(text, env, path)
        reads = first_lines(ast, path)
    except TemplateProblem as e:
        raise InputError(f"template {e.message}", Location(path, e.line or 0, 1 if e.line else 0)) from None
    tpl.filename = path
    return tpl, reads


def file_template(path: Path) -> tuple[jinja2.Template, dict[str, int]]:
    """A template file compiled in the sandbox (cached by path and mtime) and the variables it
    reads (each with its first line); an unreadable file or a syntax error is a located
    :class:`InputError`."""
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as e:
        raise InputError(f"cannot read template file: {e.strerror or e}", Location(str(path))) from None
    return _file_template(str(path), mtime)


def render_file(path: Path, context: Mapping[str, Any], what: str = "") -> str:
    """Render a template file; any failure is an :class:`InputError` at the file's line."""
    tpl, _ = file_template(path)
    try:
        return render(tpl, context, str(path))
    except TemplateProblem as e:
        head = f"{what}: " if what else ""
        raise InputError(f"{head}template {e.message}",
                         Location(str(path), e.line or 0, 1 if e.line else 0)) from None


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


__all__ = ["ENV", "FILE_ENV", "MAX_DEPTH", "MAX_ITERATIONS", "MAX_OUTPUT", "RAW_ENV", "Renderer",
           "TemplateProblem", "check_variables", "compile", "file_template", "located_error",
           "parse", "render", "render_file", "template", "variables"]
