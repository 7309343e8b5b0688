"""``python -m elemta_smtp`` is the ``elemta`` command."""

from elemta_smtp.cli import main

raise SystemExit(main())
