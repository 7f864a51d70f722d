-- migrate: no-transaction (CREATE INDEX CONCURRENTLY cannot run in a transaction)
--
-- The indexes the jobs and the health summary rely on. On a large live
-- database a plain CREATE INDEX would block every booking write for as long as
-- the build takes, so each is built CONCURRENTLY, one statement at a time.
--
-- A concurrent build that fails (a deadlock, a cancel) leaves an INVALID index
-- behind, which IF NOT EXISTS would then take for done. The first statement
-- drops such leftovers of ours so a re-run builds them again.
DO $$
DECLARE
    leftover record;
BEGIN
    PERFORM set_config('lock_timeout', '5s', true);
    FOR leftover IN
        SELECT c.relname
          FROM pg_index i
          JOIN pg_class c ON c.oid = i.indexrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public'
           AND NOT i.indisvalid
           AND c.relname IN (
               'rides_ops_open_expiry_idx', 'rides_ops_anomaly_idx',
               'ride_bookings_ops_active_idx', 'ride_bookings_ops_anomaly_idx',
               'notifications_ops_booking_idx',
               'system_job_log_ops_job_started_idx',
               'system_job_log_ops_started_idx',
               'invariant_violations_ops_open_idx',
               'invariant_violations_ops_unresolved_idx')
    LOOP
        EXECUTE format('DROP INDEX public.%I', leftover.relname);
    END LOOP;
END
$$;
-- statement

-- Rides that are still open, keyed by when they expire (available_until
-- overrides departure_time when set). expire_rides, the expiry check and the
-- health counts read only this small part of rides, never the whole table.
CREATE INDEX CONCURRENTLY IF NOT EXISTS rides_ops_open_expiry_idx
    ON rides ((COALESCE(available_until, departure_time)))
    INCLUDE (status)
    WHERE status IN ('active', 'in-progress');
-- statement

-- Rides in a state the constraints normally forbid. Empty on a healthy
-- database, so it costs nothing, and it lets the invariant checks find such
-- rows without scanning all rides.
CREATE INDEX CONCURRENTLY IF NOT EXISTS rides_ops_anomaly_idx
    ON rides (id)
    WHERE status NOT IN ('active', 'in-progress', 'completed', 'cancelled')
       OR available_seats < 0
       OR available_seats > total_seats;
-- statement

-- Bookings that hold seats (pending, confirmed): seat sums, duplicate and
-- orphan checks, and the pending/confirmed counts read only these.
CREATE INDEX CONCURRENTLY IF NOT EXISTS ride_bookings_ops_active_idx
    ON ride_bookings (ride_id, passenger_id)
    INCLUDE (status, seats_requested)
    WHERE status IN ('pending', 'confirmed');
-- statement

CREATE INDEX CONCURRENTLY IF NOT EXISTS ride_bookings_ops_anomaly_idx
    ON ride_bookings (id)
    WHERE status NOT IN ('pending', 'confirmed', 'completed', 'cancelled');
-- statement

-- repair_missing_notifications asks "does booking X have a notification of
-- type T?" for every recent booking; without this it scans all notifications.
CREATE INDEX CONCURRENTLY IF NOT EXISTS notifications_ops_booking_idx
    ON notifications ((data ->> 'booking_id'), type);
-- statement

-- Latest run per job, and runs of the last 24 hours.
CREATE INDEX CONCURRENTLY IF NOT EXISTS system_job_log_ops_job_started_idx
    ON system_job_log (job_name, started_at DESC);
-- statement

CREATE INDEX CONCURRENTLY IF NOT EXISTS system_job_log_ops_started_idx
    ON system_job_log (started_at);
-- statement

-- One open ops-layer row per check. Deployed rows have no check_id and are
-- left out, so their duplicates do not stop the build.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS invariant_violations_ops_open_idx
    ON invariant_violations (check_name)
    WHERE resolved_at IS NULL AND check_id IS NOT NULL;
-- statement

CREATE INDEX CONCURRENTLY IF NOT EXISTS invariant_violations_ops_unresolved_idx
    ON invariant_violations (detected_at)
    WHERE resolved_at IS NULL;
