"""carpool-tui: a terminal dashboard for a carpool platform's PostgreSQL health."""

__version__ = "0.1.0"
