-- reconcile_seat_counts (manual 1.2): open rides whose available_seats does
-- not equal total_seats minus their pending and confirmed seats are set to
-- that value (kept within [0, total_seats]), one audit row per fix.
--
-- Each ride is locked before its bookings are counted, and counted in a later
-- statement than the lock, so the count sees every booking committed before
-- the lock was granted and no booking can change while the fix is written
-- (the booking functions lock the ride first). Rides locked elsewhere are
-- skipped and reconciled by the next run.
--
-- An overbooked ride (bookings exceed total_seats) has no correct stored
-- value: it is set to 0 once, then only reported in `overbooked_rides`, so a
-- second run finds nothing to fix and writes no audit row.

-- Open rides with the value their available_seats should hold, unclamped:
-- negative means overbooked. The sum reads the small index of pending and
-- confirmed bookings, one ride at a time, so a filter on id stays cheap.
-- Shared by reconciliation, the seat_mismatch check and the health summary.
CREATE OR REPLACE VIEW ops_open_ride_seats AS
SELECT r.id,
       r.driver_id,
       r.status,
       r.total_seats,
       r.available_seats,
       r.total_seats - COALESCE((SELECT sum(b.seats_requested)
                                   FROM ride_bookings b
                                  WHERE b.ride_id = r.id
                                    AND b.status IN ('pending', 'confirmed')),
                                0)::integer AS expected_seats
  FROM rides r
 WHERE r.status IN ('active', 'in-progress');

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
    -- Candidates, read without locks: open rides that look wrong.
    SELECT COALESCE(array_agg(r.id), '{}') INTO v_candidates
      FROM ops_open_ride_seats r
     WHERE r.available_seats <> LEAST(r.total_seats, GREATEST(0, r.expected_seats))
        OR r.expected_seats < 0;

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

CREATE OR REPLACE FUNCTION reconcile_seat_counts()
RETURNS jsonb
LANGUAGE sql
SECURITY DEFINER
SET search_path = public, pg_temp
SET lock_timeout = '5s'
AS $$ SELECT ops_run_job('reconcile_seat_counts', 'ops_reconcile_seat_counts_work') $$;
