-- expire_rides (manual 1.1): rides past their expiry become `completed`, their
-- pending and confirmed bookings `completed`, and each booking it completed
-- gets exactly one BOOKING_CONFIRMED notification. It also closes bookings
-- still active on rides that are already completed or cancelled
-- (INV-STATE-001, manual 4.2).
--
-- Locking: rides first, then their bookings (the order of the seat-sync
-- trigger and the booking functions), both with SKIP LOCKED, so the job never
-- waits on live traffic or on another run of itself: what it cannot lock now
-- it leaves for the next run.

-- Closes the given bookings that are still pending or confirmed, as
-- `completed` (their ride ended) or `cancelled` (their ride was cancelled),
-- and notifies each passenger from the rows the UPDATE returned: never by
-- time window, so only bookings this call closed are notified. Completed
-- bookings get BOOKING_CONFIRMED with data.auto_completed, as the deployed job
-- sent. The caller holds the locks on their rides and bookings.
CREATE OR REPLACE FUNCTION ops_close_bookings(p_booking_ids uuid[], p_outcome text)
RETURNS TABLE (bookings_closed integer, notifications_created integer)
LANGUAGE sql
SET search_path = public, pg_temp
AS $$
    WITH done AS (
        UPDATE ride_bookings
           SET status = p_outcome,
               cancellation_reason = CASE WHEN p_outcome = 'cancelled'
                   THEN COALESCE(cancellation_reason, 'ride cancelled')
                   ELSE cancellation_reason END,
               cancelled_at = CASE WHEN p_outcome = 'cancelled'
                   THEN now() ELSE cancelled_at END,
               updated_at = now()
         WHERE id = ANY (p_booking_ids)
           AND status IN ('pending', 'confirmed')
           AND p_outcome IN ('completed', 'cancelled')
        RETURNING id, ride_id, passenger_id, cancellation_reason
    ), sent AS (
        INSERT INTO notifications (user_id, type, category, data)
        SELECT passenger_id, kind, kind,
               CASE WHEN p_outcome = 'completed'
                    THEN jsonb_build_object('booking_id', id, 'ride_id', ride_id,
                                            'auto_completed', true)
                    ELSE jsonb_build_object('booking_id', id, 'ride_id', ride_id,
                                            'reason', cancellation_reason,
                                            'auto_cancelled', true)
               END
          FROM done
         CROSS JOIN (SELECT CASE WHEN p_outcome = 'completed' THEN 'BOOKING_CONFIRMED'
                                 ELSE 'BOOKING_CANCELLED' END AS kind) k
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM done)::integer,
           (SELECT count(*) FROM sent)::integer
$$;

CREATE OR REPLACE FUNCTION ops_expire_rides_work()
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    v_due            integer;
    v_rides          uuid[];
    v_bookings       uuid[];
    v_blocked        uuid[];
    v_expired        integer;
    v_completed      integer;
    v_notified       integer;
    v_orphan_rides   uuid[];
    v_orphans        uuid[];
    v_orphans_done   integer;
    v_orphans_noted  integer;
BEGIN
    -- Rides due now (read through rides_ops_open_expiry_idx, so the cost
    -- follows the number of open rides, not the size of rides).
    SELECT count(*) INTO v_due
      FROM rides
     WHERE status IN ('active', 'in-progress')
       AND COALESCE(available_until, departure_time) < now();

    SELECT COALESCE(array_agg(id), '{}') INTO v_rides
      FROM (SELECT id
              FROM rides
             WHERE status IN ('active', 'in-progress')
               AND COALESCE(available_until, departure_time) < now()
             ORDER BY id
               FOR UPDATE SKIP LOCKED) due;

    -- Their open bookings. A booking locked elsewhere (a transaction that
    -- changes it without holding the ride) keeps its whole ride for the next
    -- run: a ride is never completed with a booking left open.
    SELECT COALESCE(array_agg(id), '{}') INTO v_bookings
      FROM (SELECT id
              FROM ride_bookings
             WHERE ride_id = ANY (v_rides)
               AND status IN ('pending', 'confirmed')
             ORDER BY id
               FOR UPDATE SKIP LOCKED) open_bookings;

    SELECT COALESCE(array_agg(DISTINCT b.ride_id), '{}') INTO v_blocked
      FROM ride_bookings b
      LEFT JOIN unnest(v_bookings) AS held(id) ON held.id = b.id
     WHERE b.ride_id = ANY (v_rides)
       AND b.status IN ('pending', 'confirmed')
       AND held.id IS NULL;

    IF cardinality(v_blocked) > 0 THEN
        v_rides := ARRAY(SELECT unnest(v_rides) EXCEPT SELECT unnest(v_blocked));
        v_bookings := ARRAY(SELECT b.id
                              FROM ride_bookings b
                             WHERE b.id = ANY (v_bookings)
                               AND b.ride_id <> ALL (v_blocked));
    END IF;

    SELECT c.bookings_closed, c.notifications_created
      INTO v_completed, v_notified
      FROM ops_close_bookings(v_bookings, 'completed') c;

    UPDATE rides
       SET status = 'completed', updated_at = now()
     WHERE id = ANY (v_rides);
    GET DIAGNOSTICS v_expired = ROW_COUNT;

    -- INV-STATE-001: open bookings on rides that already ended. The ride is
    -- locked first here too; bookings locked elsewhere wait for the next run.
    SELECT COALESCE(array_agg(id), '{}') INTO v_orphan_rides
      FROM (SELECT r.id
              FROM rides r
             WHERE r.status IN ('completed', 'cancelled')
               AND r.id IN (SELECT b.ride_id
                              FROM ride_bookings b
                             WHERE b.status IN ('pending', 'confirmed'))
             ORDER BY r.id
               FOR UPDATE OF r SKIP LOCKED) ended;

    SELECT COALESCE(array_agg(id), '{}') INTO v_orphans
      FROM (SELECT id
              FROM ride_bookings
             WHERE ride_id = ANY (v_orphan_rides)
               AND status IN ('pending', 'confirmed')
             ORDER BY id
               FOR UPDATE SKIP LOCKED) stranded;

    -- Each orphan ends the way its ride ended.
    SELECT COALESCE(sum(c.bookings_closed), 0), COALESCE(sum(c.notifications_created), 0)
      INTO v_orphans_done, v_orphans_noted
      FROM (SELECT r.status AS outcome, array_agg(b.id) AS ids
              FROM ride_bookings b
              JOIN rides r ON r.id = b.ride_id
             WHERE b.id = ANY (v_orphans)
             GROUP BY r.status) o
     CROSS JOIN LATERAL ops_close_bookings(o.ids, o.outcome) c;

    RETURN jsonb_build_object(
        'rides_expired', v_expired,
        'bookings_completed', v_completed,
        'notifications_created', v_notified + v_orphans_noted,
        'orphan_bookings_closed', v_orphans_done,
        'rides_skipped_locked', GREATEST(0, v_due - v_expired),
        'records_processed', v_expired + v_orphans_done);
END
$$;

CREATE OR REPLACE FUNCTION expire_rides()
RETURNS jsonb
LANGUAGE sql
SECURITY DEFINER
SET search_path = public, pg_temp
SET lock_timeout = '5s'
AS $$ SELECT ops_run_job('expire_rides', 'ops_expire_rides_work') $$;
