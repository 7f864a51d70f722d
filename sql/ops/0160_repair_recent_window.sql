-- migrate: no-transaction (CREATE INDEX CONCURRENTLY cannot run in a transaction)
--
-- repair_missing_notifications in time linear in the recent data.
--
-- The job repairs events of the last 30 days. Every notification about a
-- booking is created no earlier than the booking itself: the booking
-- functions write both in one transaction, and a repaired one is dated at
-- its event, which comes after the booking. So for a booking made inside the
-- window, "has it a notification of this type?" only needs the booking-type
-- notifications of the window (plus a margin for clocks): one pass over that
-- recent set, hashed, instead of one index probe (and heap visit) per event.
-- Bookings made before the window (an old booking confirmed or cancelled
-- lately) are few; they keep the per-event probe over all notifications.
--
-- A failed concurrent build leaves an INVALID index that IF NOT EXISTS would
-- take for done; the first statement drops such a leftover.
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
           AND c.relname = 'notifications_ops_booking_recent_idx'
    LOOP
        EXECUTE format('DROP INDEX public.%I', leftover.relname);
    END LOOP;
END
$$;
-- statement

-- The booking notifications in creation order: the job reads the recent end.
CREATE INDEX CONCURRENTLY IF NOT EXISTS notifications_ops_booking_recent_idx
    ON notifications (created_at)
    WHERE type IN ('BOOKING_REQUEST', 'BOOKING_CONFIRMED', 'BOOKING_CANCELLED');
-- statement

-- Never a duplicate: runs take one advisory lock per job, so a second run
-- waits (at most lock_timeout) for the first to commit, and the insert is a
-- later statement than the lock, whose snapshot includes the first run's rows.
-- The hash of recent keys is held in memory (work_mem) instead of spilling;
-- merge and nested-loop joins are ruled out because the planner, misled by the
-- jsonb expression's estimates, would sort both sides by text or probe the
-- index per event. The driver is looked up only for the rows being written.
CREATE OR REPLACE FUNCTION ops_repair_missing_notifications_work()
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET work_mem = '256MB'
SET jit = off
SET enable_mergejoin = off
SET enable_nestloop = off
AS $$
DECLARE
    v_since          timestamptz := now() - interval '30 days';
    -- Bookings made from here on are checked against the recent notifications
    -- only; those notifications are read from a day earlier still, so a
    -- notification stamped by a clock up to a day behind the booking's counts.
    v_booked_from    timestamptz := now() - interval '31 days';
    v_noted_from     timestamptz := now() - interval '32 days';
    v_requests       integer;
    v_confirmations  integer;
    v_cancellations  integer;
BEGIN
    PERFORM pg_advisory_xact_lock(ops_job_lock_key('repair_missing_notifications'));

    WITH events AS (
        -- One pass over bookings: each recent event the manual names.
        SELECT b.id, b.ride_id, b.passenger_id, b.cancellation_reason,
               b.created_at AS booked, e.kind, e.happened
          FROM ride_bookings b
         CROSS JOIN LATERAL (VALUES
                   ('BOOKING_REQUEST', b.created_at),
                   ('BOOKING_CONFIRMED',
                    CASE WHEN b.status IN ('confirmed', 'completed')
                         THEN b.updated_at END),
                   ('BOOKING_CANCELLED',
                    CASE WHEN b.status = 'cancelled' THEN b.cancelled_at END)
               ) AS e(kind, happened)
         WHERE (b.created_at >= v_since OR b.updated_at >= v_since
                OR b.cancelled_at >= v_since)
           AND e.happened >= v_since
    ), noted AS NOT MATERIALIZED (
        -- The booking notifications of the window, as (booking, type) keys.
        SELECT n.data ->> 'booking_id' AS booking_id, n.type
          FROM notifications n
         WHERE n.created_at >= v_noted_from
           AND n.type IN ('BOOKING_REQUEST', 'BOOKING_CONFIRMED',
                          'BOOKING_CANCELLED')
    ), missing AS (
        SELECT ev.*
          FROM events ev
         WHERE NOT EXISTS (SELECT 1
                             FROM noted n
                            WHERE n.booking_id = ev.id::text
                              AND n.type = ev.kind)
           AND (ev.booked >= v_booked_from
                OR NOT EXISTS (SELECT 1
                                 FROM notifications n
                                WHERE n.data ->> 'booking_id' = ev.id::text
                                  AND n.type = ev.kind))
    ), made AS (
        INSERT INTO notifications (user_id, type, category, data, created_at)
        SELECT CASE WHEN m.kind = 'BOOKING_REQUEST'
                    THEN (SELECT r.driver_id FROM rides r WHERE r.id = m.ride_id)
                    ELSE m.passenger_id END,
               m.kind, m.kind,
               CASE WHEN m.kind = 'BOOKING_CANCELLED'
                    THEN jsonb_build_object('booking_id', m.id, 'ride_id', m.ride_id,
                                            'reason', m.cancellation_reason,
                                            'repaired', true)
                    ELSE jsonb_build_object('booking_id', m.id, 'ride_id', m.ride_id,
                                            'repaired', true)
               END,
               m.happened
          FROM missing m
        RETURNING type
    )
    SELECT count(*) FILTER (WHERE type = 'BOOKING_REQUEST'),
           count(*) FILTER (WHERE type = 'BOOKING_CONFIRMED'),
           count(*) FILTER (WHERE type = 'BOOKING_CANCELLED')
      INTO v_requests, v_confirmations, v_cancellations
      FROM made;

    RETURN jsonb_build_object(
        'booking_requests_created', v_requests,
        'confirmations_created', v_confirmations,
        'cancellations_created', v_cancellations,
        'total_notifications_created', v_requests + v_confirmations + v_cancellations,
        'records_processed', v_requests + v_confirmations + v_cancellations);
END
$$;
