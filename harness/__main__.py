"""``python -m harness`` is the ``llmbench`` command."""

from harness.cli import main

raise SystemExit(main())
