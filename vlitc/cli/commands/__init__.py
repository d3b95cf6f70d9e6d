"""Extra CLI commands: every module here exposes ``add_parser(subparsers)`` and is found by
:func:`vlitc.cli.main.build_parser`; its parser sets ``func`` to a ``run(args) -> int``."""
