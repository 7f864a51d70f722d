"""The SQL migrations shipped with carpool-tui, as package data."""
