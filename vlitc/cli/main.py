"""The ``vlitc`` command: thin commands that call the library and format its errors.

Exit codes: 0 success, 2 a user error (recipe, input, configuration), 1 an internal error.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
from pathlib import Path

from vlitc.errors import RecipeError, UserError, VlitcError


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def cmd_validate(args: argparse.Namespace) -> int:
    from vlitc.api import validate
    from vlitc.plan import build_plan

    recipe = validate(args.recipe)
    plan = build_plan(recipe)
    print(f"{args.recipe}: ok ({recipe.name} {recipe.version}, {len(plan.order)} steps)")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from vlitc.api import plan_status

    _recipe, _plan, rows = plan_status(args.recipe, args.cache_dir)
    estimates = _estimates(_recipe, _plan, rows)
    if args.json:
        for r in rows:
            if r["id"] in estimates:
                r["estimate"] = estimates[r["id"]]
        print(json.dumps({"steps": rows}, indent=2))
        return 0
    from rich.table import Table

    table = Table(title=f"plan: {args.recipe}")
    for col in ("step", "status", "reasons"):
        table.add_column(col)
    colours = {"cached": "green", "stale": "yellow", "new": "cyan"}
    for r in rows:
        why = ", ".join(r["reasons"])
        if r["id"] in estimates:
            e = estimates[r["id"]]
            per = " per input" if e.get("per_item") else ""
            tokens = e.get("prompt_tokens", 0) + e.get("completion_tokens", 0)
            why += f" [est. {e.get('calls', 0)} calls, {tokens} tokens, ${e.get('usd', 0):.4f}{per}]"
        from rich.markup import escape

        table.add_row(r["id"], f"[{colours[r['status']]}]{r['status']}[/]", escape(why))
    _console().print(table)
    return 0


def _estimates(recipe, plan, rows) -> dict:
    """Cost estimates for stale steps that call generators (when the generator layer offers it)."""
    try:
        from vlitc.llm import estimate
    except ImportError:
        return {}
    out = {}
    counts = {r["id"]: r.get("n_out", -1) for r in rows}
    for r in rows:
        step = plan.steps[r["id"]]
        if r["status"] == "cached" or step.kind != "task":
            continue
        gens = step.op.references().get("generator", [])
        if not gens:
            continue
        gen = recipe.ops.get(("generators", gens[0]))
        ins = [counts.get(d, -1) for d in step.deps if not d.startswith("pool:")]
        n = sum(ins) if ins and min(ins) >= 0 else -1
        out[r["id"]] = estimate(step.op.params, {"provider": gen.name, **gen.params}, n,
                                recipe_dir=recipe.dir)
    return out


def cmd_build(args: argparse.Namespace) -> int:
    from vlitc.api import build
    from vlitc.ui.progress import JsonReporter, reporter_for

    reporter = JsonReporter() if args.json else (None if args.quiet else reporter_for(_console(stderr=True)))
    diffs: list[str] | None = None
    try:
        if args.frozen_release is not None:
            from vlitc.api import frozen_rebuild

            result, diffs = frozen_rebuild(args.recipe, args.frozen_release, out_dir=args.out,
                                           cache_dir=args.cache_dir, emit=reporter)
        else:
            result = build(args.recipe, out_dir=args.out, cache_dir=args.cache_dir,
                           force=args.force or (), emit=reporter, frozen=args.frozen,
                           llm_store=args.llm_store, engine=args.engine, workers=args.workers,
                           address=args.address)
    finally:
        if reporter is not None:
            reporter.close()
    if diffs:
        err = _console(stderr=True)
        err.print(f"frozen rebuild differs from the release {args.frozen_release}:", markup=False)
        for d in diffs:
            err.print(f"  {d}", markup=False)
        return 2
    m = result.manifest
    ran = sum(1 for s in m["steps"] if s["status"] == "ran")
    if args.json:
        print(json.dumps({"event": "done", "out_dir": str(result.out_dir), "ran": ran,
                          "cached": len(m["steps"]) - ran}))
    elif not args.quiet:
        _console(stderr=True).print(
            f"[bold green]built[/] {m['name']} {m['version']} -> {result.out_dir} "
            f"({ran} ran, {len(m['steps']) - ran} cached, {m['seconds']:.2f}s)")
    return 0


def _workers(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number or auto")
    return n


def cmd_graph(args: argparse.Namespace) -> int:
    from vlitc.api import plan_status
    from vlitc.plan import draw

    _recipe, plan, rows = plan_status(args.recipe, args.cache_dir)
    sys.stdout.write(draw(plan, args.format, {r["id"]: r["status"] for r in rows}))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from vlitc.recipe import build_schema

    print(json.dumps(build_schema(), indent=2))
    return 0


def cmd_cache_gc(args: argparse.Namespace) -> int:
    from vlitc.run.executor import default_cache_dir
    from vlitc.run.gc import collect

    freed = collect(Path(args.cache_dir) if args.cache_dir else default_cache_dir(), everything=args.all)
    print(f"removed {freed['entries']} step entries, {freed['objects']} objects and "
          f"{freed['temp']} temp files ({freed['bytes'] / 1e6:.1f} MB)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from vlitc import __version__

    p = argparse.ArgumentParser(prog="vlitc", description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--version", action="version", version=f"vlitc {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def recipe_cmd(name: str, help_: str, func) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("recipe", help="recipe YAML file")
        sp.add_argument("--cache-dir", default=None, help="cache folder (default .vlitc or $VLITC_CACHE_DIR)")
        sp.set_defaults(func=func)
        return sp

    recipe_cmd("validate", "check a recipe against the schema, its references and files", cmd_validate)
    sp = recipe_cmd("plan", "show every step as cached, stale or new, with the reasons", cmd_plan)
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp = recipe_cmd("build", "run what is stale and write the release", cmd_build)
    sp.add_argument("--out", default=None, help="output folder (default build/<name>)")
    sp.add_argument("--force", action="append", metavar="STEP", help="re-run STEP (e.g. task:brief, all)")
    sp.add_argument("--json", action="store_true", help="print events as JSON lines")
    sp.add_argument("--quiet", action="store_true", help="no progress display")
    sp.add_argument("--frozen", action="store_true", help="make no LLM call: use stored responses only")
    sp.add_argument("--llm-store", default=None, help="response store (llm_responses.jsonl) to read")
    sp.add_argument("--frozen-from", dest="frozen_release", default=None, metavar="RELEASE",
                    help="rebuild RELEASE with no LLM call, from the responses it carries, and "
                         "say exactly what differs (exit 2 if anything does)")
    sp.add_argument("--engine", choices=("local", "ray"), default=None,
                    help="where map steps run (default: the recipe's execution.engine, else local)")
    sp.add_argument("--workers", type=_workers, default=None,
                    help="worker processes (local) or CPUs (ray): a number or auto")
    sp.add_argument("--ray-address", dest="address", default=None, metavar="ADDRESS",
                    help="the Ray cluster to join (auto, host:port, ray://host:port)")
    sp = recipe_cmd("graph", "draw the step graph", cmd_graph)
    sp.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    sub.add_parser("schema", help="print the recipe JSON Schema").set_defaults(func=cmd_schema)
    cache = sub.add_parser("cache", help="manage the cache")
    csub = cache.add_subparsers(dest="cache_command", required=True)
    gc = csub.add_parser("gc", help="remove entries no recipe's last build uses")
    gc.add_argument("--cache-dir", default=None)
    gc.add_argument("--all", action="store_true", help="remove every entry and object")
    gc.set_defaults(func=cmd_cache_gc)

    import vlitc.cli.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        mod = importlib.import_module(f"vlitc.cli.commands.{info.name}")
        mod.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader that left (``| head``) is noticed here, not at exit
        return code
    except BrokenPipeError:
        return _reader_left()
    except RecipeError as e:
        err = _console(stderr=True)
        for problem in e.problems:
            err.print(problem.format(), markup=False)
        n = len(e.problems)
        err.print(f"{n} problem{'s' if n != 1 else ''} found", style="bold red")
        return e.exit_code
    except UserError as e:
        err = _console(stderr=True)
        err.print(f"error: {e}", markup=False)
        return e.exit_code
    except VlitcError as e:
        err = _console(stderr=True)
        err.print(f"internal error: {e}", markup=False)
        return e.exit_code
    except ModuleNotFoundError as e:
        from vlitc.errors import install_hint

        hint = install_hint(e.name or "")
        err = _console(stderr=True)
        err.print(f"error: this recipe needs the package {e.name!r}, which is not installed\n"
                  f"hint: {hint}", markup=False)
        return 2
    except KeyboardInterrupt:
        err = _console(stderr=True)
        err.print("interrupted; finished work is cached")
        return 130
    except Exception as e:  # an internal bug: say so, keep the traceback behind a switch
        if os.environ.get("VLITC_DEBUG"):
            raise
        err = _console(stderr=True)
        err.print(f"internal error: {type(e).__name__}: {e}\n(set VLITC_DEBUG=1 for the traceback)",
                  markup=False)
        return 1


#: the exit status of a command whose reader closed the pipe, as a shell reports SIGPIPE
EXIT_PIPE = 141


def _reader_left() -> int:
    """The reader of stdout went away (``vlitc plan --json | head``): stop quietly. Stdout is
    pointed at the null device so that the interpreter's last flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_PIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
