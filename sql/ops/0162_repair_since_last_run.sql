-- repair_missing_notifications checks what changed since its last run.
--
-- Checking all 30 days means hashing about a million events against a million
-- notifications at 1M rides (seconds), and the daily run repeats almost all of
-- yesterday's work. A run now records how far it has checked
-- (ops_repair_progress.checked_before); the next run checks only events from
-- there on, plus the bookings whose notifications were deleted or changed
-- since (ops_repair_recheck, written by triggers on notifications). It adds
-- nothing to inserting notifications or bookings.
--
-- What "checked" covers: every event dated before checked_before that the run
-- could see. An event that commits later can carry an earlier date (its
-- transaction started earlier), so checked_before is set at least an hour
-- before the run started, and earlier still when a transaction that is still
-- open started before that (as far as pg_stat_activity shows it).
--
-- A run checks the whole 30 days when no run has recorded progress, when the
-- last whole check is a week old, after notifications were truncated, or when
-- the session sets carpool.repair_scope = 'full'. The weekly whole check also
-- catches an event whose booking changed without its timestamps moving (an
-- UPDATE of status that leaves updated_at and cancelled_at alone).

CREATE TABLE IF NOT EXISTS ops_repair_progress (
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    checked_before  timestamptz NOT NULL,
    full_check_at   timestamptz NOT NULL
);

-- Bookings to check again on the next run, whatever their dates.
CREATE TABLE IF NOT EXISTS ops_repair_recheck (
    booking_id  text NOT NULL,
    noted_at    timestamptz NOT NULL DEFAULT now()
);

-- Deleted booking notifications: their bookings may be missing one now. Only
-- notifications that can belong to an event of the window are noted (the
-- platform's purge of old notifications notes nothing).
CREATE OR REPLACE FUNCTION ops_note_repair_recheck()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM ops_repair_progress;
    ELSIF TG_LEVEL = 'STATEMENT' THEN
        INSERT INTO ops_repair_recheck (booking_id)
        SELECT DISTINCT o.data ->> 'booking_id'
          FROM ops_gone_notifications o
         WHERE o.type IN ('BOOKING_REQUEST', 'BOOKING_CONFIRMED', 'BOOKING_CANCELLED')
           AND o.created_at >= now() - interval '32 days'
           AND o.data ->> 'booking_id' IS NOT NULL;
    ELSIF OLD.data ->> 'booking_id' IS NOT NULL THEN
        INSERT INTO ops_repair_recheck (booking_id) VALUES (OLD.data ->> 'booking_id');
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS ops_repair_recheck_delete ON notifications;
CREATE TRIGGER ops_repair_recheck_delete
    AFTER DELETE ON notifications
    REFERENCING OLD TABLE AS ops_gone_notifications
    FOR EACH STATEMENT EXECUTE FUNCTION ops_note_repair_recheck();

-- An UPDATE that changes which booking event a notification answers (its type
-- or its booking): marking one read does not fire it.
DROP TRIGGER IF EXISTS ops_repair_recheck_update ON notifications;
CREATE TRIGGER ops_repair_recheck_update
    AFTER UPDATE ON notifications
    FOR EACH ROW
    WHEN (OLD.type IN ('BOOKING_REQUEST', 'BOOKING_CONFIRMED', 'BOOKING_CANCELLED')
          AND (OLD.type IS DISTINCT FROM NEW.type
               OR (OLD.data ->> 'booking_id') IS DISTINCT FROM
                  (NEW.data ->> 'booking_id')))
    EXECUTE FUNCTION ops_note_repair_recheck();

DROP TRIGGER IF EXISTS ops_repair_recheck_truncate ON notifications;
CREATE TRIGGER ops_repair_recheck_truncate
    AFTER TRUNCATE ON notifications
    FOR EACH STATEMENT EXECUTE FUNCTION ops_note_repair_recheck();

-- The work: 0160's single pass, from checked_before (or the window's start)
-- instead of always the window's start. Bookings to recheck join the pass
-- whatever their dates and are looked up against all notifications.
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

    WITH events AS (
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
                OR b.cancelled_at >= v_since OR b.id = ANY (v_recheck))
           AND e.happened >= v_window
           AND (e.happened >= v_since OR b.id = ANY (v_recheck))
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
           AND ((ev.booked >= v_booked_from AND NOT (ev.id = ANY (v_recheck)))
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

-- The same grants as every ops_ function and table: nothing for PUBLIC or the
-- platform's API roles; the viewer may read how far the job has checked.
DO $$
DECLARE
    api_roles  text := 'PUBLIC';
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        api_roles := api_roles || ', anon';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        api_roles := api_roles || ', authenticated';
    END IF;
    EXECUTE format('REVOKE ALL ON FUNCTION ops_note_repair_recheck() FROM %s',
                   api_roles);
    EXECUTE format('REVOKE ALL ON ops_repair_progress, ops_repair_recheck FROM %s',
                   api_roles);
END
$$;

GRANT SELECT ON ops_repair_progress TO carpool_ops_viewer, carpool_ops_operator;
