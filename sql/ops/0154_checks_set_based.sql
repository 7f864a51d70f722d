-- The invariant check and seat reconciliation in the shapes the health
-- summary uses (sql/ops/0152): seat sums by one merge of the open-rides and
-- open-bookings indexes instead of one lookup per open ride, orphans from the
-- open bookings whose ride is not open, duplicate pairs from the index alone.
-- The checks' statements are cheap but look expensive to the planner, which
-- then starts parallel workers and compiles (jit) for a handful of rows: both
-- jobs run without either.

-- Open rides whose available_seats is not total_seats minus their pending
-- and confirmed seats, with that value (unclamped: negative = overbooked).
CREATE OR REPLACE FUNCTION ops_seat_mismatches()
RETURNS TABLE (id uuid, available_seats integer, expected_seats integer,
               total_seats integer)
LANGUAGE sql STABLE
SET search_path = public, pg_temp
AS $$
    SELECT r.id, r.available_seats,
           (r.total_seats - COALESCE(b.seats, 0))::integer,
           r.total_seats
      FROM rides r
      LEFT JOIN (SELECT ride_id, sum(seats_requested) AS seats
                   FROM ride_bookings
                  WHERE status IN ('pending', 'confirmed')
                  GROUP BY ride_id) b ON b.ride_id = r.id
     WHERE r.status IN ('active', 'in-progress')
       AND r.available_seats <> r.total_seats - COALESCE(b.seats, 0)
$$;

CREATE OR REPLACE FUNCTION ops_check_findings(p_check_id text)
RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE
SET search_path = public, pg_temp
AS $$
BEGIN
    CASE p_check_id
    WHEN 'INV-SEAT-001' THEN
        -- Open rides only: reconcile_seat_counts fixes those (manual 7).
        RETURN QUERY
        SELECT jsonb_build_object('ride_id', s.id, 'current', s.available_seats,
                                  'expected', s.expected_seats,
                                  'total_seats', s.total_seats)
          FROM ops_seat_mismatches() s
         ORDER BY s.id;
    WHEN 'INV-SEAT-002' THEN
        RETURN QUERY
        SELECT jsonb_build_object('ride_id', r.id, 'current', r.available_seats,
                                  'total_seats', r.total_seats)
          FROM rides r
         WHERE r.available_seats < 0
         ORDER BY r.id;
    WHEN 'INV-SEAT-003' THEN
        RETURN QUERY
        SELECT jsonb_build_object('ride_id', r.id, 'current', r.available_seats,
                                  'total_seats', r.total_seats)
          FROM rides r
         WHERE r.available_seats > r.total_seats
         ORDER BY r.id;
    WHEN 'INV-STATE-001' THEN
        -- Open bookings whose ride is not open (an anti-join of the two small
        -- open indexes), then their rides by key.
        RETURN QUERY
        SELECT jsonb_build_object('booking_id', b.id, 'ride_id', b.ride_id,
                                  'passenger_id', b.passenger_id,
                                  'status', b.status, 'ride_status', r.status)
          FROM ride_bookings b
          JOIN rides r ON r.id = b.ride_id
         WHERE b.ride_id = ANY (ARRAY(
                   SELECT DISTINCT o.ride_id
                     FROM ride_bookings o
                    WHERE o.status IN ('pending', 'confirmed')
                      AND NOT EXISTS (SELECT 1 FROM rides a
                                       WHERE a.id = o.ride_id
                                         AND a.status IN ('active', 'in-progress'))))
           AND b.status IN ('pending', 'confirmed')
           AND r.status IN ('completed', 'cancelled')
         ORDER BY b.id;
    WHEN 'INV-STATE-002' THEN
        RETURN QUERY
        SELECT jsonb_build_object('ride_id', r.id, 'status', r.status)
          FROM rides r
         WHERE r.status NOT IN ('active', 'in-progress', 'completed', 'cancelled')
         ORDER BY r.id;
    WHEN 'INV-STATE-003' THEN
        RETURN QUERY
        SELECT jsonb_build_object('booking_id', b.id, 'ride_id', b.ride_id,
                                  'status', b.status)
          FROM ride_bookings b
         WHERE b.status NOT IN ('pending', 'confirmed', 'completed', 'cancelled')
         ORDER BY b.id;
    WHEN 'INV-UNIQUE-001' THEN
        -- Same passenger, same ride, more than one pending/confirmed booking:
        -- the pairs come from the open-bookings index alone, the booking ids
        -- only for the pairs found.
        RETURN QUERY
        SELECT jsonb_build_object('ride_id', b.ride_id,
                                  'passenger_id', b.passenger_id,
                                  'active_bookings', count(*),
                                  'booking_ids', jsonb_agg(b.id ORDER BY b.id))
          FROM (SELECT d.ride_id, d.passenger_id
                  FROM ride_bookings d
                 WHERE d.status IN ('pending', 'confirmed')
                 GROUP BY d.ride_id, d.passenger_id
                HAVING count(*) > 1) pair
          JOIN ride_bookings b
            ON b.ride_id = pair.ride_id AND b.passenger_id = pair.passenger_id
         WHERE b.status IN ('pending', 'confirmed')
         GROUP BY b.ride_id, b.passenger_id
         ORDER BY b.ride_id, b.passenger_id;
    WHEN 'INV-TIME-001' THEN
        RETURN QUERY
        SELECT jsonb_build_object('ride_id', r.id, 'status', r.status,
                                  'expires_at',
                                  COALESCE(r.available_until, r.departure_time))
          FROM rides r
         WHERE r.status IN ('active', 'in-progress')
           AND COALESCE(r.available_until, r.departure_time) < now() - ops_expiry_grace()
         ORDER BY r.id;
    ELSE
        RAISE EXCEPTION 'unknown invariant check %', p_check_id
            USING ERRCODE = 'invalid_parameter_value';
    END CASE;
END
$$;

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
     WHERE m.available_seats <> LEAST(m.total_seats, GREATEST(0, m.expected_seats))
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
               LEAST(r.total_seats, GREATEST(0, r.expected_seats)) AS target
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


CREATE OR REPLACE FUNCTION check_system_invariants()
RETURNS jsonb
LANGUAGE sql
SECURITY DEFINER
SET search_path = public, pg_temp
SET lock_timeout = '5s'
SET jit = off
SET max_parallel_workers_per_gather = 0
AS $$ SELECT ops_run_job('check_system_invariants', 'ops_check_system_invariants_work') $$;

CREATE OR REPLACE FUNCTION reconcile_seat_counts()
RETURNS jsonb
LANGUAGE sql
SECURITY DEFINER
SET search_path = public, pg_temp
SET lock_timeout = '5s'
SET jit = off
SET max_parallel_workers_per_gather = 0
AS $$ SELECT ops_run_job('reconcile_seat_counts', 'ops_reconcile_seat_counts_work') $$;
