"""The models read what both a legacy and an ops-layer database return."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pydantic

from carpool_tui.db.errors import SettingsInvalid, translate
from carpool_tui.models import (
    JOBS,
    Capabilities,
    HealthSummary,
    JobLogEntry,
    JobResult,
    Refusal,
    SeatFixPreview,
    Snapshot,
    Violation,
)

LEGACY_HEALTH = {
    "timestamp": "2026-12-04T16:14:17.185942+00:00",
    "total_rides": 200,
    "active_rides": 100,
    "total_bookings": 400,
    "seat_mismatches": 2,
    "pending_bookings": 0,
    "in_progress_rides": 0,
    "recent_job_status": None,
    "confirmed_bookings": 200,
    "expired_active_rides": 0,
    "unresolved_violations": 0,
    "environment": "production",
}

LEGACY_VIOLATION = {
    "id": "e3efd9aa-7769-4a9f-b14c-858276ee0c01",
    "check_name": "system_invariant_check",
    "severity": "critical",
    "violation_count": 2,
    "sample_data": [
        {
            "name": "seat_mismatch",
            "check": "INV-SEAT-001",
            "current": 1,
            "ride_id": "0030c029-2d68-4c6a-a385-18a376eb5daa",
            "expected": 2,
            "severity": "critical",
        },
        {
            "name": "expired_active_ride",
            "check": "INV-TIME-001",
            "ride_id": "05feb4b2-a493-4172-9091-f815fe5b7ab6",
            "severity": "warning",
        },
    ],
    "detected_at": "2026-12-04T16:14:17.190662+00:00",
    "resolved_at": None,
    "auto_resolved": False,
    "notes": None,
}


def test_legacy_health_null_recent_jobs_is_an_empty_list() -> None:
    health = HealthSummary.model_validate(LEGACY_HEALTH)
    assert health.recent_job_status == []
    assert health.seat_mismatches == 2
    assert health.failed_jobs_24h is None
    assert health.model_extra == {"environment": "production"}


def test_ops_health_with_recent_jobs() -> None:
    data = {
        **LEGACY_HEALTH,
        "recent_job_status": [
            {
                "job_name": "expire_rides",
                "status": "failed",
                "started_at": "2026-12-04T16:14:17+00:00",
                "completed_at": None,
                "records_processed": 0,
                "duration_ms": 12,
                "error_message": "lock timeout",
            }
        ],
        "failed_jobs_24h": 1,
        "ops_layer_version": "1.0.0",
    }
    health = HealthSummary.model_validate(data)
    assert health.recent_job_status[0].status == "failed"
    assert health.ops_layer_version == "1.0.0"


def test_legacy_violation_row_lists_its_checks_and_seat_rides() -> None:
    violation = Violation.model_validate(LEGACY_VIOLATION)
    assert violation.legacy
    assert violation.checks == ["expired_active_ride", "seat_mismatch"]
    assert violation.seat_ride_ids == ["0030c029-2d68-4c6a-a385-18a376eb5daa"]
    assert violation.sample_data[0].expected == 2


def test_ops_violation_row_is_one_check() -> None:
    violation = Violation.model_validate(
        {
            **LEGACY_VIOLATION,
            "check_name": "seat_overflow",
            "check_id": "INV-SEAT-003",
            "sample_data": {"ride_id": "x", "current": 7, "total_seats": 4},
        }
    )
    assert not violation.legacy
    assert violation.checks == ["seat_overflow"]
    assert violation.seat_ride_ids == ["x"]
    assert violation.sample_data[0].fields()["total_seats"] == 4


def test_job_log_rows_with_and_without_ops_columns() -> None:
    started = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
    legacy = JobLogEntry.model_validate(
        {
            "id": "c2e75ff4-1320-4dc2-806d-f558810f4858",
            "job_name": "repair_missing_notifications",
            "started_at": started,
            "completed_at": started + timedelta(seconds=2),
            "status": "completed",
            "records_processed": 5,
            "errors_encountered": 0,
            "details": {"total_notifications_created": 5},
            "error_message": None,
        }
    )
    assert legacy.duration == timedelta(seconds=2)
    assert legacy.error_sqlstate is None
    failed = legacy.model_copy(
        update={"status": "failed", "details": {"sqlstate": "55P03"}}
    )
    assert failed.failed
    assert failed.error_sqlstate == "55P03"


def test_job_results_in_words() -> None:
    result = JobResult.model_validate(
        {
            "success": True,
            "rides_expired": 5,
            "bookings_completed": 12,
            "notifications_created": 12,
        }
    )
    assert result.describe("expire_rides") == (
        "Expired 5 rides, completed 12 bookings, created 12 notifications."
    )
    failed = JobResult.model_validate(
        {"success": False, "error": "lock timeout", "sqlstate": "55P03"}
    )
    assert failed.describe("expire_rides") == "Failed: lock timeout (SQLSTATE 55P03)"
    check = JobResult.model_validate(
        {"success": True, "healthy": False, "total_violations": 3, "violations": []}
    )
    assert (
        check.describe("check_system_invariants") == "Violations found, 3 violations."
    )


RESULT_KEYS = {
    "expire_rides": (
        "rides_expired",
        "bookings_completed",
        "notifications_created",
        "orphan_bookings_closed",
        "rides_skipped_locked",
    ),
    "reconcile_seat_counts": (
        "mismatches_found",
        "mismatches_fixed",
        "rides_skipped_locked",
    ),
    "repair_missing_notifications": (
        "booking_requests_created",
        "confirmations_created",
        "cancellations_created",
        "total_notifications_created",
    ),
    "check_system_invariants": (
        "total_violations",
        "violations_opened",
        "violations_auto_resolved",
    ),
}
"""Every count each job reports, as the ops layer's functions name them."""


def counts_of(job: str, n: int) -> JobResult:
    """A successful run of `job` with `n` for every count it reports, `n`
    overbooked rides for reconciliation and `n` failing checks for the check."""
    data: dict[str, object] = {"success": True, **dict.fromkeys(RESULT_KEYS[job], n)}
    if job == "reconcile_seat_counts":
        data["overbooked_rides"] = [f"ride-{i}" for i in range(n)]
    if job == "check_system_invariants":
        data["healthy"] = n == 0
        data["checks"] = [{"name": f"check_{i}", "count": 1} for i in range(n)]
    return JobResult.model_validate(data)


def test_job_results_say_one_in_the_singular_and_other_counts_in_the_plural() -> None:
    expected = {
        1: {
            "expire_rides": "Expired 1 ride, completed 1 booking, created 1"
            " notification, closed 1 orphan booking, skipped 1 ride"
            " locked by another session.",
            "reconcile_seat_counts": "Found 1 mismatch, fixed 1 mismatch,"
            " skipped 1 ride locked by another session, 1 overbooked ride reported.",
            "repair_missing_notifications": "Created 1 booking request,"
            " 1 confirmation, 1 cancellation, 1 notification in total.",
            "check_system_invariants": "Violations found, 1 violation in 1 check,"
            " 1 opened, 1 auto-resolved.",
        },
        2: {
            "expire_rides": "Expired 2 rides, completed 2 bookings, created 2"
            " notifications, closed 2 orphan bookings, skipped 2 rides"
            " locked by another session.",
            "reconcile_seat_counts": "Found 2 mismatches, fixed 2 mismatches,"
            " skipped 2 rides locked by another session, 2 overbooked rides"
            " reported.",
            "repair_missing_notifications": "Created 2 booking requests,"
            " 2 confirmations, 2 cancellations, 2 notifications in total.",
            "check_system_invariants": "Violations found, 2 violations in 2 checks,"
            " 2 opened, 2 auto-resolved.",
        },
        0: {
            "expire_rides": "Expired 0 rides, completed 0 bookings, created 0"
            " notifications, closed 0 orphan bookings, skipped 0 rides"
            " locked by another session.",
            "reconcile_seat_counts": "Found 0 mismatches, fixed 0 mismatches,"
            " skipped 0 rides locked by another session.",
            "repair_missing_notifications": "Created 0 booking requests,"
            " 0 confirmations, 0 cancellations, 0 notifications in total.",
            "check_system_invariants": "Healthy, 0 violations, 0 opened,"
            " 0 auto-resolved.",
        },
    }
    for n, by_job in expected.items():
        assert {job: counts_of(job, n).describe(job) for job in RESULT_KEYS} == by_job


def test_a_stale_preview_refusal_carries_the_fresh_preview() -> None:
    refusal = Refusal.model_validate(
        {
            "success": False,
            "code": "stale_preview",
            "error": "changed",
            "preview": {
                "ride_id": "r",
                "total_seats": 4,
                "current": 1,
                "computed": 3,
                "needs_fix": True,
                "bookings": [],
            },
        }
    )
    assert isinstance(refusal.preview, SeatFixPreview)
    assert refusal.preview.computed == 3
    plain = Refusal.model_validate({"code": "not_found", "error": "no ride"})
    assert plain.preview is None


def test_jobs_as_data_match_the_manual() -> None:
    assert [j.name for j in JOBS] == [
        "expire_rides",
        "reconcile_seat_counts",
        "repair_missing_notifications",
        "check_system_invariants",
    ]
    assert [j.frequency for j in JOBS] == [
        timedelta(minutes=5),
        timedelta(days=1),
        timedelta(days=1),
        timedelta(minutes=15),
    ]


def test_snapshot_falls_back_to_the_health_summary_for_latest_runs() -> None:
    health = HealthSummary.model_validate(
        {"recent_job_status": [{"job_name": "expire_rides", "status": "completed"}]}
    )
    snap = Snapshot(
        fetched_at=datetime(2026, 1, 1, tzinfo=UTC),
        capabilities=Capabilities(),
        health=health,
    )
    run = snap.latest_run("expire_rides")
    assert run is not None and run.status == "completed"
    assert snap.latest_run("reconcile_seat_counts") is None
    assert not snap.capabilities.ops_layer


def test_the_invariant_check_counts_the_checks_that_failed() -> None:
    checks = [
        {"check": "INV-SEAT-001", "name": "seat_mismatch", "count": 4},
        {"check": "INV-SEAT-002", "name": "negative_seats", "count": 0},
        {"check": "INV-RIDE-003", "name": "expired_active_ride", "count": 1},
        {"check": "INV-BOOK-001", "name": "duplicate_active_bookings", "count": 1},
    ]
    result = JobResult.model_validate(
        {
            "success": True,
            "healthy": False,
            "total_violations": 6,
            "checks": checks,
            "violations_opened": 3,
        }
    )
    assert result.describe("check_system_invariants") == (
        "Violations found, 6 violations in 3 checks, 3 opened."
    )
    legacy = JobResult.model_validate(
        {
            "success": True,
            "healthy": False,
            "total_violations": 2,
            "violations": [{"name": "seat_mismatch"}, {"name": "seat_mismatch"}],
        }
    )
    assert legacy.describe("check_system_invariants") == (
        "Violations found, 2 violations in 1 check."
    )


def test_a_row_the_models_cannot_read_is_not_called_a_settings_problem() -> None:
    try:
        JobLogEntry.model_validate({"id": 1, "job_name": "x", "status": None})
    except pydantic.ValidationError as exc:
        err = translate(exc, doing="Reading the job log")
    else:
        raise AssertionError("the row should not validate")
    assert not isinstance(err, SettingsInvalid)
    assert "a row has a shape this version cannot read" in err.message
    assert err.retryable


def test_sample_values_of_any_json_type_are_read_as_text() -> None:
    violation = Violation.model_validate(
        {
            **LEGACY_VIOLATION,
            "check_name": "hand_written",
            "sample_data": [
                {"ride_id": 12345, "check": 5, "name": True},
                {"status": {"b": 1, "a": "é"}, "booking_id": [1, 2.5], "severity": 1.5},
            ],
        }
    )
    first, second = violation.sample_data
    assert (first.ride_id, first.check, first.name) == ("12345", "5", "true")
    assert second.status == '{"a": "é", "b": 1}'
    assert (second.booking_id, second.severity) == ("[1, 2.5]", "1.5")
    assert violation.checks == ["hand_written"]
    assert first.fields() == {"check": "5", "name": "true", "ride_id": "12345"}


def test_a_row_that_cannot_be_read_keeps_its_check_severity_and_count() -> None:
    row = {
        **LEGACY_VIOLATION,
        "check_name": "hand_written",
        "sample_data": [{"ride_id": "r1"}, {"current": "many"}],
        "check_id": 7,
    }
    violation = Violation.from_row(row)
    assert (violation.check_name, violation.severity) == ("hand_written", "critical")
    assert violation.violation_count == 2
    assert violation.sample_data == [] and violation.check_id is None
    assert violation.unreadable == (
        "check_id, samples could not be read (sample_data.1.current: Input should"
        " be a valid integer, unable to parse string as an integer; check_id:"
        " Input should be a valid string)"
    )
    assert violation.detected_at is not None
    readable = Violation.from_row({**row, "sample_data": [], "check_id": "C-7"})
    assert readable.unreadable is None and readable.check_id == "C-7"


def test_infinite_stamps_from_json_are_read_and_written_back_as_such() -> None:
    """A health summary's run stamped 'infinity' in JSON is read, compared with
    aware times, and dumped to JSON as PostgreSQL wrote it."""
    health = HealthSummary.model_validate(
        {
            "recent_job_status": [
                {
                    "job_name": "expire_rides",
                    "status": "failed",
                    "started_at": "-infinity",
                    "completed_at": "infinity",
                }
            ]
        }
    )
    (run,) = health.recent_job_status
    assert run.started_at is not None and run.started_at < datetime.now(UTC)
    dumped = health.model_dump(mode="json")["recent_job_status"][0]
    assert (dumped["started_at"], dumped["completed_at"]) == ("-infinity", "infinity")
