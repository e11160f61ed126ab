"""llmbench's harness: the command line, the one measuring loop, records, ceilings, reports and sweeps.

``cli.py`` registers the subcommands of ``commands/``; they share ``options.py``,
``runner.py`` (timing), ``views.py`` (rows) and ``roofline.py`` (rates). Depends on
``workloads`` (and through it on ``kernels``); nothing depends on it.
"""
