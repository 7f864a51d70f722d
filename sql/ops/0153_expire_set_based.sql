-- expire_rides without paying the seat-sync trigger once per booking.
--
-- The platform's trigger recomputes a ride's available_seats after every
-- booking change: closing 27k bookings meant 27k updates of their rides. The
-- ops layer's copy of the trigger function skips that work when the
-- transaction-local setting carpool.seat_sync_deferred is 'on' AND the
-- statement runs as the owner of the ops layer (inside its SECURITY DEFINER
-- jobs), so an app session cannot switch it off for itself. The job then sets
-- the seats of the rides it touched in one set-based UPDATE and switches the
-- setting back before it returns. For everyone else the trigger does exactly
-- what the platform's did.

CREATE OR REPLACE FUNCTION sync_ride_available_seats() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    affected uuid[];
BEGIN
    IF current_setting('carpool.seat_sync_deferred', true) = 'on'
       AND current_user = (SELECT pg_get_userbyid(p.proowner)
                             FROM pg_proc p
                            WHERE p.oid = to_regprocedure('ops_expire_rides_work()'))
    THEN
        RETURN NULL;  -- the ops job recomputes these rides' seats itself
    END IF;
    IF TG_OP = 'DELETE' THEN
        affected := ARRAY[OLD.ride_id];
    ELSIF TG_OP = 'UPDATE' AND OLD.ride_id <> NEW.ride_id THEN
        affected := ARRAY[OLD.ride_id, NEW.ride_id];
    ELSE
        affected := ARRAY[NEW.ride_id];
    END IF;
    UPDATE rides r
       SET available_seats = GREATEST(0, r.total_seats - COALESCE((
               SELECT sum(b.seats_requested)
                 FROM ride_bookings b
                WHERE b.ride_id = r.id AND b.status IN ('pending', 'confirmed')
           ), 0)),
           updated_at = now()
     WHERE r.id = ANY (affected);
    RETURN NULL;
END
$$;

-- What the trigger would have done for these rides, in one statement: the
-- seats they hold after their bookings changed, floored at 0.
CREATE OR REPLACE FUNCTION ops_resync_seats(p_ride_ids uuid[])
RETURNS void
LANGUAGE sql
SET search_path = public, pg_temp
AS $$
    UPDATE rides r
       SET available_seats = GREATEST(0, r.total_seats - COALESCE(h.seats, 0)),
           updated_at = now()
      FROM (SELECT x.id, (SELECT sum(b.seats_requested)
                            FROM ride_bookings b
                           WHERE b.ride_id = x.id
                             AND b.status IN ('pending', 'confirmed')) AS seats
              FROM unnest(p_ride_ids) AS x(id)) h
     WHERE r.id = h.id
$$;

-- The job writes each ride it expires once.
--
-- A ride's status and its seats are both in indexed columns (status in the
-- partial indexes' predicates, available_seats in rides_ops_open_seats_idx and
-- rides_ops_anomaly_idx), so every UPDATE of them writes a new row version
-- with an entry in every index of rides. One UPDATE sets the status and the
-- seats the trigger would have left, and only the orphans' rides (which keep
-- their status) go through ops_resync_seats. The UPDATE also tests the status,
-- so the planner finds the rides through the open rides' partial index rather
-- than a scan of all rides.
--
-- Locking: rides first, then their bookings, both SKIP LOCKED; a ride with a
-- booking locked elsewhere waits whole for the next run.

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
    -- Rides due now, locked (read through rides_ops_open_expiry_idx: the cost
    -- follows the open rides, not the size of rides).
    WITH due AS (
        SELECT id
          FROM rides
         WHERE status IN ('active', 'in-progress')
           AND COALESCE(available_until, departure_time) < now()
    ), held AS (
        SELECT r.id
          FROM rides r
         WHERE r.id IN (SELECT id FROM due)
           AND r.status IN ('active', 'in-progress')
           AND COALESCE(r.available_until, r.departure_time) < now()
         ORDER BY r.id
           FOR UPDATE SKIP LOCKED
    )
    SELECT (SELECT count(*) FROM due), COALESCE((SELECT array_agg(id) FROM held), '{}')
      INTO v_due, v_rides;

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

    SELECT COALESCE(array_agg(DISTINCT ride_id), '{}') INTO v_blocked
      FROM ride_bookings
     WHERE ride_id = ANY (v_rides)
       AND status IN ('pending', 'confirmed')
       AND NOT (id = ANY (v_bookings));

    IF cardinality(v_blocked) > 0 THEN
        v_rides := ARRAY(SELECT unnest(v_rides) EXCEPT SELECT unnest(v_blocked));
        v_bookings := ARRAY(SELECT b.id
                              FROM ride_bookings b
                             WHERE b.id = ANY (v_bookings)
                               AND NOT (b.ride_id = ANY (v_blocked)));
    END IF;

    -- INV-STATE-001: open bookings on rides that already ended. Only the open
    -- bookings whose ride is not open are looked at (an anti-join of two small
    -- partial indexes); the ride is locked first here too.
    SELECT COALESCE(array_agg(id), '{}') INTO v_orphan_rides
      FROM (SELECT r.id
              FROM rides r
             WHERE r.id = ANY (ARRAY(
                       SELECT DISTINCT b.ride_id
                         FROM ride_bookings b
                        WHERE b.status IN ('pending', 'confirmed')
                          AND NOT EXISTS (
                              SELECT 1 FROM rides o
                               WHERE o.id = b.ride_id
                                 AND o.status IN ('active', 'in-progress'))))
               AND r.status IN ('completed', 'cancelled')
             ORDER BY r.id
               FOR UPDATE OF r SKIP LOCKED) ended;

    SELECT COALESCE(array_agg(id), '{}') INTO v_orphans
      FROM (SELECT id
              FROM ride_bookings
             WHERE ride_id = ANY (v_orphan_rides)
               AND status IN ('pending', 'confirmed')
             ORDER BY id
               FOR UPDATE SKIP LOCKED) stranded;

    -- Every ride whose bookings change below is locked by this job, so the
    -- per-booking seat trigger may stand aside while the job sets the seats.
    PERFORM set_config('carpool.seat_sync_deferred', 'on', true);

    SELECT c.bookings_closed, c.notifications_created
      INTO v_completed, v_notified
      FROM ops_close_bookings(v_bookings, 'completed') c;

    -- Status and seats in one new row version: the seats are what the trigger
    -- would have left (total minus the seats still pending or confirmed,
    -- floored at 0), read after the bookings above were closed. The status
    -- test lets the rows be found through the open rides' partial index
    -- instead of a scan of all rides.
    UPDATE rides r
       SET status = 'completed',
           available_seats = GREATEST(0, r.total_seats - COALESCE((
               SELECT sum(b.seats_requested)
                 FROM ride_bookings b
                WHERE b.ride_id = r.id
                  AND b.status IN ('pending', 'confirmed')), 0)),
           updated_at = now()
     WHERE r.id = ANY (v_rides)
       AND r.status IN ('active', 'in-progress');
    GET DIAGNOSTICS v_expired = ROW_COUNT;

    -- Each orphan ends the way its ride ended.
    SELECT COALESCE(sum(c.bookings_closed), 0), COALESCE(sum(c.notifications_created), 0)
      INTO v_orphans_done, v_orphans_noted
      FROM (SELECT r.status AS outcome, array_agg(b.id) AS ids
              FROM ride_bookings b
              JOIN rides r ON r.id = b.ride_id
             WHERE b.id = ANY (v_orphans)
             GROUP BY r.status) o
     CROSS JOIN LATERAL ops_close_bookings(o.ids, o.outcome) c;

    PERFORM set_config('carpool.seat_sync_deferred', 'off', true);
    IF cardinality(v_orphan_rides) > 0 THEN
        PERFORM ops_resync_seats(v_orphan_rides);
    END IF;
    PERFORM ops_compact_row_counts();

    RETURN jsonb_build_object(
        'rides_expired', v_expired,
        'bookings_completed', v_completed,
        'notifications_created', v_notified + v_orphans_noted,
        'orphan_bookings_closed', v_orphans_done,
        'rides_skipped_locked', GREATEST(0, v_due - v_expired),
        'records_processed', v_expired + v_orphans_done);
END
$$;

-- The job's statements are cheap per row but look expensive to the planner;
-- compiling them (jit) would cost more than running them.
CREATE OR REPLACE FUNCTION expire_rides()
RETURNS jsonb
LANGUAGE sql
SECURITY DEFINER
SET search_path = public, pg_temp
SET lock_timeout = '5s'
SET jit = off
AS $$ SELECT ops_run_job('expire_rides', 'ops_expire_rides_work') $$;
