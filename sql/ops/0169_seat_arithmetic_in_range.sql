-- One absurd seat count no longer stops the seat checks.
--
-- A ride whose total_seats is near the integer limit (-2147483648, say, from a
-- bad import) made "total minus the booked seats" overflow: the invariant
-- check failed before running its other checks, reconciliation failed, and the
-- seat-fix preview of that ride failed. The value is now computed in bigint
-- and held to the integer range (less one at the bottom, so that negating it
-- stays in range): a ride that far out of range is reported as overbooked or
-- mismatched like any other, and every other check still runs. Otherwise the
-- view and the functions are 0105's, 0154's and 0109's unchanged.

CREATE OR REPLACE FUNCTION ops_seats_left(p_total integer, p_counted bigint)
RETURNS integer
LANGUAGE sql IMMUTABLE
AS $$
    SELECT GREATEST(LEAST(p_total::bigint - COALESCE(p_counted, 0), 2147483647),
                    -2147483647)::integer
$$;

CREATE OR REPLACE VIEW ops_open_ride_seats AS
SELECT r.id,
       r.driver_id,
       r.status,
       r.total_seats,
       r.available_seats,
       ops_seats_left(r.total_seats,
                      (SELECT sum(b.seats_requested)
                         FROM ride_bookings b
                        WHERE b.ride_id = r.id
                          AND b.status IN ('pending', 'confirmed'))) AS expected_seats
  FROM rides r
 WHERE r.status IN ('active', 'in-progress');

CREATE OR REPLACE FUNCTION ops_seat_mismatches()
RETURNS TABLE (id uuid, available_seats integer, expected_seats integer,
               total_seats integer)
LANGUAGE sql STABLE
SET search_path = public, pg_temp
AS $$
    SELECT r.id, r.available_seats,
           ops_seats_left(r.total_seats, b.seats),
           r.total_seats
      FROM rides r
      LEFT JOIN (SELECT ride_id, sum(seats_requested) AS seats
                   FROM ride_bookings
                  WHERE status IN ('pending', 'confirmed')
                  GROUP BY ride_id) b ON b.ride_id = r.id
     WHERE r.status IN ('active', 'in-progress')
       AND r.available_seats <> r.total_seats - COALESCE(b.seats, 0)
$$;

CREATE OR REPLACE FUNCTION ops_preview_seat_fix(p_ride_id uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_ride      rides%ROWTYPE;
    v_counted   bigint;
    v_computed  integer;
    v_bookings  jsonb;
BEGIN
    SELECT * INTO v_ride FROM rides WHERE id = p_ride_id;
    IF NOT FOUND THEN
        RETURN ops_refusal('not_found', format('No ride has the id %s.', p_ride_id));
    END IF;
    SELECT COALESCE(sum(b.seats_requested), 0) INTO v_counted
      FROM ride_bookings b
     WHERE b.ride_id = p_ride_id AND b.status IN ('pending', 'confirmed');
    v_computed := ops_seats_left(v_ride.total_seats, v_counted);
    v_bookings := ops_open_bookings_json(p_ride_id);
    RETURN jsonb_build_object(
        'success', true,
        'ride_id', v_ride.id,
        'status', v_ride.status,
        'total_seats', v_ride.total_seats,
        'current', v_ride.available_seats,
        'computed', v_computed,
        'counted_seats', v_counted,
        'needs_fix', v_ride.available_seats <> v_computed,
        'overbooked', v_computed < 0,
        'bookings', v_bookings);
END
$$;

-- Reconciliation's clamp to [0, total] takes 0 where total is below 0: there
-- the range is empty, and the stored value it wrote broke the rides check
-- (available_seats >= 0), failing the whole job. Such a ride is still found
-- by INV-SEAT-003 (more seats available than it has).
CREATE OR REPLACE FUNCTION ops_reconcile_seat_counts_work()
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    v_candidates  uuid[];
    v_locked      uuid[];
    v_found       integer;
    v_fixed       integer;
    v_overbooked  jsonb;
    v_operator    text := ops_operator();
BEGIN
    -- Candidates, read without locks: open rides that look wrong (one merge
    -- of the open indexes; clamping only matters for these few).
    SELECT COALESCE(array_agg(m.id), '{}') INTO v_candidates
      FROM ops_seat_mismatches() m
     WHERE m.available_seats <> GREATEST(0, LEAST(m.total_seats, m.expected_seats))
        OR m.expected_seats < 0;

    SELECT COALESCE(array_agg(id), '{}') INTO v_locked
      FROM (SELECT id
              FROM rides
             WHERE id = ANY (v_candidates)
               AND status IN ('active', 'in-progress')
             ORDER BY id
               FOR UPDATE SKIP LOCKED) held;

    -- A new statement, so a new snapshot: the counts include everything
    -- committed before the locks above were granted.
    WITH counted AS (
        SELECT r.id, r.driver_id, r.total_seats,
               r.available_seats AS previous,
               r.expected_seats AS expected,
               GREATEST(0, LEAST(r.total_seats, r.expected_seats)) AS target
          FROM ops_open_ride_seats r
         WHERE r.id = ANY (v_locked)
    ), fixed AS (
        UPDATE rides r
           SET available_seats = c.target, updated_at = now()
          FROM counted c
         WHERE r.id = c.id
           AND r.available_seats <> c.target
        RETURNING r.id, c.driver_id, c.total_seats, c.previous, c.target
    ), audited AS (
        INSERT INTO admin_audit_log (admin_id, admin_role, action, target_type,
                                     target_id, details, operator)
        SELECT NULL, 'super_admin', 'seat_reconciliation', 'ride', f.id,
               jsonb_build_object('driver_id', f.driver_id,
                                  'total_seats', f.total_seats,
                                  'reconciled_at', now(),
                                  'previous_available', f.previous,
                                  'calculated_available', f.target,
                                  'before', jsonb_build_object('available_seats', f.previous),
                                  'after', jsonb_build_object('available_seats', f.target)),
               v_operator
          FROM fixed f
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM counted WHERE previous <> target),
           (SELECT count(*) FROM audited),
           (SELECT COALESCE(jsonb_agg(id ORDER BY id), '[]'::jsonb)
              FROM counted WHERE expected < 0)
      INTO v_found, v_fixed, v_overbooked;

    RETURN jsonb_build_object(
        'mismatches_found', v_found,
        'mismatches_fixed', v_fixed,
        'overbooked_rides', v_overbooked,
        'rides_skipped_locked', cardinality(v_candidates) - cardinality(v_locked),
        'records_processed', v_fixed);
END
$$;

-- The same grants as every ops_ function: nothing for PUBLIC or the platform's
-- API roles. Both ops roles read the view, and a view's functions run with the
-- reader's privileges.
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
    EXECUTE format('REVOKE ALL ON FUNCTION ops_seats_left(integer, bigint) FROM %s',
                   api_roles);
END
$$;

GRANT EXECUTE ON FUNCTION ops_seats_left(integer, bigint)
   TO carpool_ops_viewer, carpool_ops_operator;
