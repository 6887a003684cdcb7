"""``python -m taskforge`` is the ``taskforge`` command."""

from taskforge.cli import main

raise SystemExit(main())
