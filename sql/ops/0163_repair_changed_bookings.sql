-- migrate: no-transaction (CREATE INDEX CONCURRENTLY cannot run in a transaction)
--
-- repair_missing_notifications finds the day's changed bookings by index.
--
-- A run since the last one needs the bookings created, updated or cancelled
-- since then: a day's worth, but found by reading all of ride_bookings (about
-- a second at 3M bookings). One index on the latest of the three times finds
-- them directly. It costs one more index entry per booking written; most
-- booking updates change status, which already writes a new entry in every
-- index of the table.
--
-- Each changed booking was also expanded into its three possible events by a
-- VALUES list per row. The changed bookings are now read once into a
-- materialized set and each kind of event is a plain filter over it.
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
           AND c.relname = 'ride_bookings_ops_changed_idx'
    LOOP
        EXECUTE format('DROP INDEX public.%I', leftover.relname);
    END LOOP;
END
$$;
-- statement

-- The last time each booking changed (GREATEST ignores the NULLs, so it is the
-- latest of the three that are set).
CREATE INDEX CONCURRENTLY IF NOT EXISTS ride_bookings_ops_changed_idx
    ON ride_bookings (GREATEST(created_at, updated_at, cancelled_at));
-- statement

-- 0162's work, with the changed bookings read through the index above.
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
    v_window         timestamptz := now() - interval '30 days';
    v_progress       ops_repair_progress%ROWTYPE;
    v_full           boolean;
    v_since          timestamptz;
    v_booked_from    timestamptz;
    v_noted_from     timestamptz;
    v_recheck        uuid[];
    v_oldest         timestamptz;
    v_requests       integer;
    v_confirmations  integer;
    v_cancellations  integer;
BEGIN
    PERFORM pg_advisory_xact_lock(ops_job_lock_key('repair_missing_notifications'));

    SELECT * INTO v_progress FROM ops_repair_progress;
    v_full := NOT FOUND
              OR v_progress.full_check_at < now() - interval '7 days'
              OR v_progress.checked_before < v_window
              OR COALESCE(current_setting('carpool.repair_scope', true), '') = 'full';
    v_since := CASE WHEN v_full THEN v_window ELSE v_progress.checked_before END;
    -- Bookings made from an hour before v_since on are checked against the
    -- notifications from an hour earlier still (a notification stamped by a
    -- clock up to an hour behind its booking's counts); older bookings with an
    -- event since v_since are looked up one by one against all notifications.
    v_booked_from := v_since - interval '1 hour';
    v_noted_from := v_since - interval '2 hours';

    -- The bookings noted for a recheck (an id that is not a uuid names no
    -- booking and is dropped).
    WITH taken AS (
        DELETE FROM ops_repair_recheck RETURNING booking_id
    )
    SELECT COALESCE(array_agg(DISTINCT booking_id::uuid), '{}') INTO v_recheck
      FROM taken
     WHERE booking_id ~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$';

    WITH changed AS MATERIALIZED (
        SELECT b.id, b.ride_id, b.passenger_id, b.cancellation_reason, b.status,
               b.created_at, b.updated_at, b.cancelled_at,
               b.id = ANY (v_recheck) AS recheck
          FROM ride_bookings b
         WHERE GREATEST(b.created_at, b.updated_at, b.cancelled_at) >= v_since
            OR b.id = ANY (v_recheck)
    ), events AS (
        SELECT c.id, c.ride_id, c.passenger_id, c.cancellation_reason, c.recheck,
               c.created_at AS booked, 'BOOKING_REQUEST' AS kind,
               c.created_at AS happened
          FROM changed c
         WHERE c.created_at >= v_window
           AND (c.created_at >= v_since OR c.recheck)
        UNION ALL
        SELECT c.id, c.ride_id, c.passenger_id, c.cancellation_reason, c.recheck,
               c.created_at, 'BOOKING_CONFIRMED', c.updated_at
          FROM changed c
         WHERE c.status IN ('confirmed', 'completed')
           AND c.updated_at >= v_window
           AND (c.updated_at >= v_since OR c.recheck)
        UNION ALL
        SELECT c.id, c.ride_id, c.passenger_id, c.cancellation_reason, c.recheck,
               c.created_at, 'BOOKING_CANCELLED', c.cancelled_at
          FROM changed c
         WHERE c.status = 'cancelled'
           AND c.cancelled_at >= v_window
           AND (c.cancelled_at >= v_since OR c.recheck)
    ), noted AS NOT MATERIALIZED (
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
           AND ((ev.booked >= v_booked_from AND NOT ev.recheck)
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

    -- The next run starts an hour before this one, or where the oldest
    -- transaction still open began if that is earlier.
    SELECT min(a.xact_start) INTO v_oldest
      FROM pg_stat_activity a
     WHERE a.pid <> pg_backend_pid()
       AND a.xact_start IS NOT NULL
       AND (a.backend_xid IS NOT NULL OR a.backend_xmin IS NOT NULL);
    INSERT INTO ops_repair_progress AS p (id, checked_before, full_check_at)
    VALUES (true, LEAST(now(), COALESCE(v_oldest, now())) - interval '1 hour',
            CASE WHEN v_full THEN now() ELSE v_progress.full_check_at END)
    ON CONFLICT (id) DO UPDATE
        SET checked_before = EXCLUDED.checked_before,
            full_check_at = EXCLUDED.full_check_at;

    RETURN jsonb_build_object(
        'booking_requests_created', v_requests,
        'confirmations_created', v_confirmations,
        'cancellations_created', v_cancellations,
        'total_notifications_created', v_requests + v_confirmations + v_cancellations,
        'scope', CASE WHEN v_full THEN 'full' ELSE 'since_last_run' END,
        'checked_from', v_since,
        'records_processed', v_requests + v_confirmations + v_cancellations);
END
$$;
