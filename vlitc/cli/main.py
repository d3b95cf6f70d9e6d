"""The ``vlitc`` command: finds the commands (one module each in :mod:`vlitc.cli.commands`, a
thin call of a library function) and formats their errors.

Exit codes: 0 success, 2 a user error (recipe, input, configuration), 1 an internal error.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys
import threading

from vlitc.cli.common import console
from vlitc.errors import CacheError, RecipeError, UserError, VlitcError


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of ``command`` alone when it names one (its module is
    the only one imported: a no-op ``vlitc build`` answers before the others load)."""
    import vlitc

    p = argparse.ArgumentParser(prog="vlitc", description=(vlitc.__doc__ or "").strip())
    p.add_argument("--version", action="version", version=f"vlitc {vlitc.__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    import vlitc.cli.commands as commands

    folder = os.path.dirname(commands.__file__ or "")
    if command and command.isidentifier() and not command.startswith("_") \
            and os.path.isfile(os.path.join(folder, f"{command}.py")):
        names = [command]  # without listing the package (pkgutil imports inspect: milliseconds)
    else:
        import pkgutil

        names = sorted(info.name for info in pkgutil.iter_modules(commands.__path__))
    for name in names:
        mod = importlib.import_module(f"vlitc.cli.commands.{name}")
        mod.add_parser(sub)
    return p


def _command(argv: list[str]) -> str | None:
    """The command ``argv`` names, when it starts with one (no option before it)."""
    return argv[0] if argv and not argv[0].startswith("-") else None


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C is, so that both stop a build the same way:
    requests in flight are cancelled, finished answers stay cached, the next build resumes."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_command(argv))
    args = parser.parse_args(argv)
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main else None
    try:
        return _run(args)
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader that left (``| head``) is noticed here, not at exit
        return code
    except BrokenPipeError:
        return _reader_left()
    except RecipeError as e:
        err = console(stderr=True)
        for problem in e.problems:
            err.print(problem.format(), markup=False)
        n = len(e.problems)
        err.print(f"{n} problem{'s' if n != 1 else ''} found", style="bold red")
        return e.exit_code
    except UserError as e:
        err = console(stderr=True)
        err.print(f"error: {e}", markup=False)
        return e.exit_code
    except CacheError as e:
        console(stderr=True).print(f"error: {e}", markup=False)
        return e.exit_code
    except VlitcError as e:
        err = console(stderr=True)
        err.print(f"internal error: {e}", markup=False)
        return e.exit_code
    except ModuleNotFoundError as e:
        from vlitc.errors import install_hint

        hint = install_hint(e.name or "")
        err = console(stderr=True)
        err.print(f"error: this recipe needs the package {e.name!r}, which is not installed\n"
                  f"hint: {hint}", markup=False)
        return 2
    except _database_error() as e:  # a cache database damaged on disk (or not one at all)
        from vlitc.run.executor import default_cache_dir

        cache = getattr(args, "cache_dir", None) or default_cache_dir()
        console(stderr=True).print(
            f"error: {cache}: a cache database is damaged: {e}\nhint: delete the cache folder "
            "(or the damaged cache.db in it) or build with another --cache-dir", markup=False)
        return 2
    except OSError as e:
        if e.filename is None and e.errno not in _USER_ERRNOS:
            return _internal(e)
        # the machine or a file is at fault, not vlitc: a full disk, a read-only or missing
        # folder, a dangling link; say which file
        where = f"{e.filename}: " if e.filename is not None else ""
        console(stderr=True).print(f"error: {where}{e.strerror or e}", markup=False)
        return 2
    except KeyboardInterrupt as e:
        what, code = ("terminated", 143) if isinstance(e, Terminated) else ("interrupted", 130)
        console(stderr=True).print(f"{what}; finished work is cached, the next build resumes",
                                   markup=False)
        return code
    except Exception as e:  # an internal bug: say so, keep the traceback behind a switch
        return _internal(e)


class _NoDatabaseError(Exception):
    """Raised by nothing: stands for sqlite3's errors before anything has imported sqlite3."""


def _database_error() -> type[Exception]:
    """``sqlite3.DatabaseError`` once sqlite3 is imported (only then can it be raised); a no-op
    build answers without it."""
    db = sys.modules.get("_sqlite3")  # where sqlite3's error classes live
    return db.DatabaseError if db is not None else _NoDatabaseError


#: errors of the machine the user fixes (disk full, quota, read-only, permission)
_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _internal(e: BaseException) -> int:
    if os.environ.get("VLITC_DEBUG"):
        raise e
    console(stderr=True).print(
        f"internal error: {type(e).__name__}: {e}\n(set VLITC_DEBUG=1 for the traceback)",
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
