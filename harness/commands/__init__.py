"""One module per ``llmbench`` subcommand: ``add_parser(subparsers)`` and ``run(args) -> int``.

Only ``harness.cli`` imports these, and they never import each other; what two
commands share lives one floor down (``harness.options``, ``harness.runner``,
``harness.views``, ...). Parsers import no torch, so ``llmbench --help`` is fast:
each ``run`` imports what it needs.
"""
