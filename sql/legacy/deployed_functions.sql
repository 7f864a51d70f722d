-- The platform's deployed background-job functions and their tables, as
-- production runs them today. Used to build "legacy" databases for tests and
-- benchmarks; `migrate` never applies it. Its known faults are kept on
-- purpose (see docs/sql-api.md and the ops contract): a failed run leaves no
-- log row, expire_rides waits on locked bookings and notifies by time window,
-- reconcile_seat_counts counts without locks and re-"fixes" overbooked rides
-- forever, invariant findings are capped and never resolved, and every
-- function is executable by the app's API roles.

CREATE TABLE IF NOT EXISTS system_job_log (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_name            text NOT NULL,
    started_at          timestamptz NOT NULL DEFAULT now(),
    completed_at        timestamptz,
    status              text NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'completed', 'failed')),
    records_processed   integer DEFAULT 0,
    errors_encountered  integer DEFAULT 0,
    details             jsonb DEFAULT '{}'::jsonb,
    error_message       text
);

CREATE TABLE IF NOT EXISTS invariant_violations (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    check_name       text NOT NULL,
    severity         text NOT NULL
        CHECK (severity IN ('critical', 'warning', 'info')),
    violation_count  integer NOT NULL DEFAULT 0,
    sample_data      jsonb,
    detected_at      timestamptz NOT NULL DEFAULT now(),
    resolved_at      timestamptz,
    auto_resolved    boolean DEFAULT false,
    notes            text
);

-- Ride expiry: every 5 minutes.
CREATE OR REPLACE FUNCTION expire_rides()
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
AS $$
DECLARE
    v_log_id uuid;
    v_started timestamptz := now();
    v_ride_ids uuid[];
    v_rides integer := 0;
    v_bookings integer := 0;
    v_notifications integer := 0;
    v_result jsonb;
BEGIN
    INSERT INTO system_job_log (job_name, started_at, status)
    VALUES ('expire_rides', v_started, 'running')
    RETURNING id INTO v_log_id;

    BEGIN
        WITH due AS (
            SELECT id
              FROM rides
             WHERE status IN ('active', 'in-progress')
               AND CASE WHEN available_until IS NOT NULL
                        THEN available_until < now()
                        ELSE departure_time < now() END
               FOR UPDATE SKIP LOCKED
        )
        SELECT coalesce(array_agg(id), '{}') INTO v_ride_ids FROM due;

        UPDATE ride_bookings
           SET status = 'completed', updated_at = now()
         WHERE ride_id = ANY (v_ride_ids)
           AND status IN ('pending', 'confirmed');
        GET DIAGNOSTICS v_bookings = ROW_COUNT;

        UPDATE rides
           SET status = 'completed', updated_at = now()
         WHERE id = ANY (v_ride_ids);
        GET DIAGNOSTICS v_rides = ROW_COUNT;

        -- Passengers of the bookings completed just now.
        INSERT INTO notifications (user_id, type, category, data, created_at)
        SELECT b.passenger_id, 'BOOKING_CONFIRMED', 'BOOKING_CONFIRMED',
               jsonb_build_object('booking_id', b.id, 'ride_id', b.ride_id,
                                  'auto_completed', true),
               now()
          FROM ride_bookings b
         WHERE b.status = 'completed'
           AND b.updated_at >= now() - interval '5 seconds';
        GET DIAGNOSTICS v_notifications = ROW_COUNT;

        v_result := jsonb_build_object(
            'success', true,
            'rides_expired', v_rides,
            'bookings_completed', v_bookings,
            'notifications_created', v_notifications);

        UPDATE system_job_log
           SET status = 'completed', completed_at = now(),
               records_processed = v_rides,
               details = jsonb_build_object('started_at', v_started)
                         || (v_result - 'success')
         WHERE id = v_log_id;
        RETURN v_result;
    EXCEPTION WHEN OTHERS THEN
        UPDATE system_job_log
           SET status = 'failed', completed_at = now(), error_message = SQLERRM,
               errors_encountered = 1
         WHERE id = v_log_id;
        RAISE;
    END;
END
$$;

-- Seat reconciliation: daily at 03:00.
CREATE OR REPLACE FUNCTION reconcile_seat_counts()
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
AS $$
DECLARE
    v_log_id uuid;
    v_started timestamptz := now();
    v_found integer := 0;
    v_fixed integer := 0;
    v_new integer;
    r record;
    v_result jsonb;
BEGIN
    INSERT INTO system_job_log (job_name, started_at, status)
    VALUES ('reconcile_seat_counts', v_started, 'running')
    RETURNING id INTO v_log_id;

    BEGIN
        FOR r IN
            SELECT rd.id, rd.driver_id, rd.total_seats, rd.available_seats,
                   rd.total_seats - coalesce(sum(b.seats_requested)
                       FILTER (WHERE b.status IN ('pending', 'confirmed')), 0)
                       AS expected
              FROM rides rd
              LEFT JOIN ride_bookings b ON b.ride_id = rd.id
             WHERE rd.status IN ('active', 'in-progress')
             GROUP BY rd.id
            HAVING rd.available_seats <> rd.total_seats - coalesce(
                       sum(b.seats_requested)
                       FILTER (WHERE b.status IN ('pending', 'confirmed')), 0)
        LOOP
            v_found := v_found + 1;
            v_new := greatest(0, least(r.total_seats, r.expected));
            UPDATE rides
               SET available_seats = v_new, updated_at = now()
             WHERE id = r.id;
            INSERT INTO admin_audit_log (admin_id, admin_role, action,
                                         target_type, target_id, details)
            VALUES (NULL, 'super_admin', 'seat_reconciliation', 'ride', r.id,
                    jsonb_build_object(
                        'driver_id', r.driver_id,
                        'total_seats', r.total_seats,
                        'previous_available', r.available_seats,
                        'calculated_available', v_new,
                        'reconciled_at', now()));
            v_fixed := v_fixed + 1;
        END LOOP;

        v_result := jsonb_build_object(
            'success', true,
            'mismatches_found', v_found,
            'mismatches_fixed', v_fixed);

        UPDATE system_job_log
           SET status = 'completed', completed_at = now(),
               records_processed = v_fixed,
               details = jsonb_build_object('started_at', v_started)
                         || (v_result - 'success')
         WHERE id = v_log_id;
        RETURN v_result;
    EXCEPTION WHEN OTHERS THEN
        UPDATE system_job_log
           SET status = 'failed', completed_at = now(), error_message = SQLERRM,
               errors_encountered = 1
         WHERE id = v_log_id;
        RAISE;
    END;
END
$$;

-- Notification repair: daily at 04:00, last 30 days only.
CREATE OR REPLACE FUNCTION repair_missing_notifications()
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
AS $$
DECLARE
    v_log_id uuid;
    v_started timestamptz := now();
    v_requests integer := 0;
    v_confirmations integer := 0;
    v_cancellations integer := 0;
    v_result jsonb;
BEGIN
    INSERT INTO system_job_log (job_name, started_at, status)
    VALUES ('repair_missing_notifications', v_started, 'running')
    RETURNING id INTO v_log_id;

    BEGIN
        INSERT INTO notifications (user_id, type, category, data, created_at)
        SELECT rd.driver_id, 'BOOKING_REQUEST', 'BOOKING_REQUEST',
               jsonb_build_object('booking_id', b.id, 'ride_id', b.ride_id,
                                  'repaired', true),
               b.created_at
          FROM ride_bookings b
          JOIN rides rd ON rd.id = b.ride_id
         WHERE b.created_at > now() - interval '30 days'
           AND NOT EXISTS (
               SELECT 1 FROM notifications n
                WHERE n.type = 'BOOKING_REQUEST'
                  AND n.data->>'booking_id' = b.id::text);
        GET DIAGNOSTICS v_requests = ROW_COUNT;

        INSERT INTO notifications (user_id, type, category, data, created_at)
        SELECT b.passenger_id, 'BOOKING_CONFIRMED', 'BOOKING_CONFIRMED',
               jsonb_build_object('booking_id', b.id, 'ride_id', b.ride_id,
                                  'repaired', true),
               b.updated_at
          FROM ride_bookings b
         WHERE b.status IN ('confirmed', 'completed')
           AND b.updated_at > now() - interval '30 days'
           AND NOT EXISTS (
               SELECT 1 FROM notifications n
                WHERE n.type = 'BOOKING_CONFIRMED'
                  AND n.data->>'booking_id' = b.id::text);
        GET DIAGNOSTICS v_confirmations = ROW_COUNT;

        INSERT INTO notifications (user_id, type, category, data, created_at)
        SELECT b.passenger_id, 'BOOKING_CANCELLED', 'BOOKING_CANCELLED',
               jsonb_build_object('booking_id', b.id, 'ride_id', b.ride_id,
                                  'reason', b.cancellation_reason,
                                  'repaired', true),
               b.cancelled_at
          FROM ride_bookings b
         WHERE b.status = 'cancelled'
           AND b.cancelled_at > now() - interval '30 days'
           AND NOT EXISTS (
               SELECT 1 FROM notifications n
                WHERE n.type = 'BOOKING_CANCELLED'
                  AND n.data->>'booking_id' = b.id::text);
        GET DIAGNOSTICS v_cancellations = ROW_COUNT;

        v_result := jsonb_build_object(
            'success', true,
            'booking_requests_created', v_requests,
            'confirmations_created', v_confirmations,
            'cancellations_created', v_cancellations,
            'total_notifications_created',
                v_requests + v_confirmations + v_cancellations);

        UPDATE system_job_log
           SET status = 'completed', completed_at = now(),
               records_processed = v_requests + v_confirmations + v_cancellations,
               details = jsonb_build_object('started_at', v_started)
                         || (v_result - 'success')
         WHERE id = v_log_id;
        RETURN v_result;
    EXCEPTION WHEN OTHERS THEN
        UPDATE system_job_log
           SET status = 'failed', completed_at = now(), error_message = SQLERRM,
               errors_encountered = 1
         WHERE id = v_log_id;
        RAISE;
    END;
END
$$;

-- Invariant check: every 15 minutes; at most 10 samples per check.
CREATE OR REPLACE FUNCTION check_system_invariants()
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
AS $$
DECLARE
    v_log_id uuid;
    v_started timestamptz := now();
    v_violations jsonb := '[]'::jsonb;
    v_part jsonb;
    v_total integer;
    v_severity text;
    v_result jsonb;
BEGIN
    INSERT INTO system_job_log (job_name, started_at, status)
    VALUES ('check_system_invariants', v_started, 'running')
    RETURNING id INTO v_log_id;

    BEGIN
        -- INV-SEAT-001
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'check', 'INV-SEAT-001', 'name', 'seat_mismatch',
                   'severity', 'critical', 'ride_id', s.id,
                   'current', s.available_seats, 'expected', s.expected)), '[]')
          INTO v_part
          FROM (SELECT rd.id, rd.available_seats,
                       rd.total_seats - coalesce(sum(b.seats_requested)
                           FILTER (WHERE b.status IN ('pending', 'confirmed')), 0)
                           AS expected
                  FROM rides rd
                  LEFT JOIN ride_bookings b ON b.ride_id = rd.id
                 WHERE rd.status IN ('active', 'in-progress')
                 GROUP BY rd.id
                HAVING rd.available_seats <> rd.total_seats - coalesce(
                           sum(b.seats_requested)
                           FILTER (WHERE b.status IN ('pending', 'confirmed')), 0)
                 LIMIT 10) s;
        v_violations := v_violations || v_part;

        -- INV-SEAT-002
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'check', 'INV-SEAT-002', 'name', 'negative_seats',
                   'severity', 'critical', 'ride_id', s.id,
                   'current', s.available_seats)), '[]')
          INTO v_part
          FROM (SELECT id, available_seats FROM rides
                 WHERE available_seats < 0 LIMIT 10) s;
        v_violations := v_violations || v_part;

        -- INV-SEAT-003
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'check', 'INV-SEAT-003', 'name', 'seat_overflow',
                   'severity', 'critical', 'ride_id', s.id,
                   'current', s.available_seats,
                   'total_seats', s.total_seats)), '[]')
          INTO v_part
          FROM (SELECT id, available_seats, total_seats FROM rides
                 WHERE available_seats > total_seats LIMIT 10) s;
        v_violations := v_violations || v_part;

        -- INV-STATE-001
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'check', 'INV-STATE-001',
                   'name', 'active_booking_on_terminal_ride',
                   'severity', 'critical', 'booking_id', s.booking_id,
                   'ride_id', s.ride_id, 'booking_status', s.booking_status,
                   'ride_status', s.ride_status)), '[]')
          INTO v_part
          FROM (SELECT b.id AS booking_id, b.ride_id, b.status AS booking_status,
                       rd.status AS ride_status
                  FROM ride_bookings b
                  JOIN rides rd ON rd.id = b.ride_id
                 WHERE b.status IN ('pending', 'confirmed')
                   AND rd.status IN ('completed', 'cancelled')
                 LIMIT 10) s;
        v_violations := v_violations || v_part;

        -- INV-STATE-002
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'check', 'INV-STATE-002', 'name', 'invalid_ride_status',
                   'severity', 'critical', 'ride_id', s.id,
                   'status', s.status)), '[]')
          INTO v_part
          FROM (SELECT id, status FROM rides
                 WHERE status NOT IN ('active', 'in-progress', 'completed',
                                      'cancelled')
                 LIMIT 10) s;
        v_violations := v_violations || v_part;

        -- INV-STATE-003
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'check', 'INV-STATE-003', 'name', 'invalid_booking_status',
                   'severity', 'critical', 'booking_id', s.id,
                   'ride_id', s.ride_id, 'status', s.status)), '[]')
          INTO v_part
          FROM (SELECT id, ride_id, status FROM ride_bookings
                 WHERE status NOT IN ('pending', 'confirmed', 'completed',
                                      'cancelled')
                 LIMIT 10) s;
        v_violations := v_violations || v_part;

        -- INV-UNIQUE-001
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'check', 'INV-UNIQUE-001', 'name', 'duplicate_active_bookings',
                   'severity', 'critical', 'ride_id', s.ride_id,
                   'passenger_id', s.passenger_id,
                   'booking_count', s.n)), '[]')
          INTO v_part
          FROM (SELECT ride_id, passenger_id, count(*) AS n
                  FROM ride_bookings
                 WHERE status IN ('pending', 'confirmed')
                 GROUP BY ride_id, passenger_id
                HAVING count(*) > 1
                 LIMIT 10) s;
        v_violations := v_violations || v_part;

        -- INV-TIME-001
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'check', 'INV-TIME-001', 'name', 'expired_active_ride',
                   'severity', 'warning', 'ride_id', s.id,
                   'status', s.status, 'expired_at', s.expired_at)), '[]')
          INTO v_part
          FROM (SELECT id, status,
                       coalesce(available_until, departure_time) AS expired_at
                  FROM rides
                 WHERE status IN ('active', 'in-progress')
                   AND coalesce(available_until, departure_time) < now()
                 LIMIT 10) s;
        v_violations := v_violations || v_part;

        v_total := jsonb_array_length(v_violations);

        IF v_total > 0 THEN
            SELECT CASE WHEN bool_or(v->>'severity' = 'critical')
                        THEN 'critical' ELSE 'warning' END
              INTO v_severity
              FROM jsonb_array_elements(v_violations) v;
            INSERT INTO invariant_violations (check_name, severity,
                                              violation_count, sample_data,
                                              detected_at)
            VALUES ('system_invariant_check', v_severity, v_total, v_violations,
                    now());
        END IF;

        v_result := jsonb_build_object(
            'success', true,
            'healthy', v_total = 0,
            'total_violations', v_total,
            'violations', v_violations);

        UPDATE system_job_log
           SET status = 'completed', completed_at = now(),
               records_processed = v_total,
               details = jsonb_build_object('started_at', v_started)
                         || (v_result - 'success')
         WHERE id = v_log_id;
        RETURN v_result;
    EXCEPTION WHEN OTHERS THEN
        UPDATE system_job_log
           SET status = 'failed', completed_at = now(), error_message = SQLERRM,
               errors_encountered = 1
         WHERE id = v_log_id;
        RAISE;
    END;
END
$$;

-- Quick health check for dashboards and alerting.
CREATE OR REPLACE FUNCTION get_system_health_summary()
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
AS $$
DECLARE
    v_result jsonb;
BEGIN
    SELECT jsonb_build_object(
        'timestamp', now(),
        'total_rides', (SELECT count(*) FROM rides),
        'active_rides', (SELECT count(*) FROM rides WHERE status = 'active'),
        'in_progress_rides',
            (SELECT count(*) FROM rides WHERE status = 'in-progress'),
        'total_bookings', (SELECT count(*) FROM ride_bookings),
        'pending_bookings',
            (SELECT count(*) FROM ride_bookings WHERE status = 'pending'),
        'confirmed_bookings',
            (SELECT count(*) FROM ride_bookings WHERE status = 'confirmed'),
        'expired_active_rides',
            (SELECT count(*) FROM rides
              WHERE status IN ('active', 'in-progress')
                AND coalesce(available_until, departure_time) < now()),
        'seat_mismatches',
            (SELECT count(*) FROM (
                SELECT rd.id
                  FROM rides rd
                  LEFT JOIN ride_bookings b ON b.ride_id = rd.id
                 WHERE rd.status IN ('active', 'in-progress')
                 GROUP BY rd.id
                HAVING rd.available_seats <> rd.total_seats - coalesce(
                           sum(b.seats_requested)
                           FILTER (WHERE b.status IN ('pending', 'confirmed')), 0)
             ) m),
        'unresolved_violations',
            (SELECT count(*) FROM invariant_violations WHERE resolved_at IS NULL),
        'recent_job_status',
            (SELECT jsonb_agg(jsonb_build_object(
                        'job_name', j.job_name,
                        'status', j.status,
                        'completed_at', j.completed_at,
                        'records_processed', j.records_processed)
                    ORDER BY j.completed_at DESC)
               FROM (SELECT DISTINCT ON (job_name)
                            job_name, status, completed_at, records_processed
                       FROM system_job_log
                      WHERE started_at > now() - interval '24 hours'
                        AND status = 'completed'
                      ORDER BY job_name, started_at DESC) j)
    ) INTO v_result;
    RETURN v_result;
END
$$;

REVOKE ALL ON FUNCTION expire_rides() FROM PUBLIC;
REVOKE ALL ON FUNCTION reconcile_seat_counts() FROM PUBLIC;
REVOKE ALL ON FUNCTION repair_missing_notifications() FROM PUBLIC;
REVOKE ALL ON FUNCTION check_system_invariants() FROM PUBLIC;
REVOKE ALL ON FUNCTION get_system_health_summary() FROM PUBLIC;

GRANT EXECUTE ON FUNCTION expire_rides() TO authenticated, anon;
GRANT EXECUTE ON FUNCTION reconcile_seat_counts() TO authenticated, anon;
GRANT EXECUTE ON FUNCTION repair_missing_notifications() TO authenticated, anon;
GRANT EXECUTE ON FUNCTION check_system_invariants() TO authenticated, anon;
GRANT EXECUTE ON FUNCTION get_system_health_summary() TO authenticated, anon;
