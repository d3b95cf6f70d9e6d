"""The CLI commands, one module each: ``add_parser(subparsers)`` adds the command (found by
:func:`vlitc.cli.main.build_parser`) and ``run(args) -> int`` calls one library function that
:mod:`vlitc` exports and prints its result; errors are formatted by :func:`vlitc.cli.main.main`."""
