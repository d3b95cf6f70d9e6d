"""The public API: ``vlitc.__all__`` is exactly the package's public names, sorted, and every
CLI command is a thin call of one of them."""

import ast
from pathlib import Path
from types import ModuleType

import vlitc

COMMANDS = Path(vlitc.__file__).parent / "cli" / "commands"


def test_all_is_sorted_and_equals_the_public_names():
    assert vlitc.__all__ == sorted(vlitc.__all__)
    public = {n for n, v in vars(vlitc).items() if not n.startswith("_") and not isinstance(v, ModuleType)}
    public |= set(vlitc._LAZY)  # the library functions and types, loaded on first use
    assert set(vlitc.__all__) - {"__version__"} == public
    assert all(getattr(vlitc, n) is not None for n in vlitc._LAZY)
    for name in ("frozen_rebuild", "Recipe", "Plan", "BuildResult"):
        assert name in vlitc.__all__


def test_every_command_calls_a_function_vlitc_exports():
    """Each command module imports what it runs from ``vlitc`` (the library), not from inside it."""
    for path in sorted(COMMANDS.glob("*.py")):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        used = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "vlitc"
                for a in n.names}
        assert used, f"{path.name} calls no function that vlitc exports"
        assert used <= set(vlitc.__all__), (path.name, used - set(vlitc.__all__))


def test_no_command_is_defined_in_main():
    from vlitc.cli import main

    assert not [n for n in vars(main) if n.startswith("cmd_")]
    parser = main.build_parser()
    choices = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"validate", "plan", "build", "graph", "schema", "cache", "diff", "lint", "ops", "report"} <= set(choices)


def test_no_exported_name_is_shadowed_by_a_submodule():
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(vlitc.__path__):
        importlib.import_module(f"vlitc.{info.name}")
    for name in vlitc.__all__:
        assert not isinstance(getattr(vlitc, name), ModuleType), name
