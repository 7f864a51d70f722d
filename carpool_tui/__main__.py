"""Allows ``python -m carpool_tui``."""

from carpool_tui.cli import main

raise SystemExit(main())
