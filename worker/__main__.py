"""``python -m worker`` is the same as the ``callwatch`` command."""

from worker.cli import main

raise SystemExit(main())
