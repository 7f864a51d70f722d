"""The eight invariant checks of manual section 3.3, as plain data.

Seed data, runbooks, models and the screen all name the checks; this module is
their one list, with no database or Textual import so any layer may use it.
The SQL function ops_invariant_checks() holds the same rows for the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["critical", "warning"]


@dataclass(frozen=True)
class CheckSpec:
    """One invariant check: its name, its id and how serious a failure is."""

    name: str
    check_id: str
    severity: Severity


CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("seat_mismatch", "INV-SEAT-001", "critical"),
    CheckSpec("negative_seats", "INV-SEAT-002", "critical"),
    CheckSpec("seat_overflow", "INV-SEAT-003", "critical"),
    CheckSpec("active_booking_on_terminal_ride", "INV-STATE-001", "critical"),
    CheckSpec("invalid_ride_status", "INV-STATE-002", "critical"),
    CheckSpec("invalid_booking_status", "INV-STATE-003", "critical"),
    CheckSpec("duplicate_active_bookings", "INV-UNIQUE-001", "critical"),
    CheckSpec("expired_active_ride", "INV-TIME-001", "warning"),
)
"""In the manual's order, which is also the order the checks run in."""

CHECK_NAMES: tuple[str, ...] = tuple(check.name for check in CHECKS)
CHECKS_BY_NAME: dict[str, CheckSpec] = {check.name: check for check in CHECKS}
SEAT_CHECKS: tuple[str, ...] = tuple(
    check.name for check in CHECKS if check.check_id.startswith("INV-SEAT-")
)
"""Checks whose failing ride a seat fix (manual 4.4) can repair."""
EXPIRE_CHECKS: tuple[str, ...] = (
    "expired_active_ride",
    "active_booking_on_terminal_ride",
)
"""Checks whose failing ride expiring by hand (manual 4.3) can finish."""
