-- check_system_invariants (manual 1.4): the eight checks, each with its real
-- count and up to 10 samples, and one open invariant_violations row per
-- failing check, kept up to date while the fault lasts and auto-resolved when
-- the check passes again. Rows written by the deployed function
-- (check_name = 'system_invariant_check', no check_id) are never touched.

-- The eight checks of manual 1.4, in the manual's order.
CREATE OR REPLACE FUNCTION ops_invariant_checks()
RETURNS TABLE (check_id text, name text, severity text, ordinal integer)
LANGUAGE sql IMMUTABLE
AS $$
    VALUES ('INV-SEAT-001',   'seat_mismatch',                  'critical', 1),
           ('INV-SEAT-002',   'negative_seats',                 'critical', 2),
           ('INV-SEAT-003',   'seat_overflow',                  'critical', 3),
           ('INV-STATE-001',  'active_booking_on_terminal_ride', 'critical', 4),
           ('INV-STATE-002',  'invalid_ride_status',            'critical', 5),
           ('INV-STATE-003',  'invalid_booking_status',         'critical', 6),
           ('INV-UNIQUE-001', 'duplicate_active_bookings',      'critical', 7),
           ('INV-TIME-001',   'expired_active_ride',            'warning',  8)
$$;

-- Every finding of one check, as the sample object the manual shows (without
-- check/name/severity, which ops_run_check adds). Each query is served by an
-- ops index, so a healthy database answers from nearly empty index ranges.
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
          FROM ops_open_ride_seats s
         WHERE s.available_seats <> s.expected_seats
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
        RETURN QUERY
        SELECT jsonb_build_object('booking_id', b.id, 'ride_id', b.ride_id,
                                  'passenger_id', b.passenger_id,
                                  'status', b.status, 'ride_status', r.status)
          FROM ride_bookings b
          JOIN rides r ON r.id = b.ride_id
         WHERE b.status IN ('pending', 'confirmed')
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
        -- Same passenger, same ride, more than one pending/confirmed booking.
        RETURN QUERY
        SELECT jsonb_build_object('ride_id', b.ride_id,
                                  'passenger_id', b.passenger_id,
                                  'active_bookings', count(*),
                                  'booking_ids', jsonb_agg(b.id ORDER BY b.id))
          FROM ride_bookings b
         WHERE b.status IN ('pending', 'confirmed')
         GROUP BY b.ride_id, b.passenger_id
        HAVING count(*) > 1
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

-- One check run now: {check, name, severity, count, samples}; count is the
-- real number of findings, samples the first 10 with check/name/severity.
CREATE OR REPLACE FUNCTION ops_run_check(p_check_id text)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = public, pg_temp
AS $$
    SELECT jsonb_build_object(
               'check', c.check_id, 'name', c.name, 'severity', c.severity,
               'count', f.found,
               'samples', f.samples)
      FROM ops_invariant_checks() c
     CROSS JOIN LATERAL (
           SELECT count(*)::integer AS found,
                  COALESCE(jsonb_agg(jsonb_build_object('check', c.check_id,
                                                        'name', c.name,
                                                        'severity', c.severity)
                                     || s.finding ORDER BY s.n)
                               FILTER (WHERE s.n <= 10),
                           '[]'::jsonb) AS samples
             FROM ops_check_findings(c.check_id) WITH ORDINALITY AS s(finding, n)
           ) f
     WHERE c.check_id = p_check_id
$$;

CREATE OR REPLACE FUNCTION ops_check_system_invariants_work()
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    v_check       record;
    v_result      jsonb;
    v_count       integer;
    v_total       integer := 0;
    v_checks      jsonb := '[]'::jsonb;
    v_violations  jsonb := '[]'::jsonb;
    v_opened      integer := 0;
    v_resolved    integer := 0;
    v_n           integer;
BEGIN
    -- One run at a time, so two runs never race to open the same row.
    PERFORM pg_advisory_xact_lock(ops_job_lock_key('check_system_invariants'));

    FOR v_check IN SELECT * FROM ops_invariant_checks() ORDER BY ordinal LOOP
        v_result := ops_run_check(v_check.check_id);
        v_count := (v_result ->> 'count')::integer;
        v_total := v_total + v_count;
        v_checks := v_checks || jsonb_build_array(jsonb_build_object(
            'check', v_check.check_id, 'name', v_check.name,
            'severity', v_check.severity, 'count', v_count));

        IF v_count > 0 THEN
            v_violations := v_violations || (v_result -> 'samples');
            UPDATE invariant_violations
               SET violation_count = v_count,
                   sample_data = v_result -> 'samples',
                   severity = v_check.severity,
                   last_seen_at = now()
             WHERE check_name = v_check.name
               AND check_id IS NOT NULL
               AND resolved_at IS NULL;
            IF NOT FOUND THEN
                INSERT INTO invariant_violations (check_name, check_id, severity,
                                                  violation_count, sample_data,
                                                  detected_at, last_seen_at,
                                                  auto_resolved)
                VALUES (v_check.name, v_check.check_id, v_check.severity, v_count,
                        v_result -> 'samples', now(), now(), false);
                v_opened := v_opened + 1;
            END IF;
        ELSE
            UPDATE invariant_violations
               SET resolved_at = now(),
                   auto_resolved = true,
                   resolved_by = 'check_system_invariants'
             WHERE check_name = v_check.name
               AND check_id IS NOT NULL
               AND resolved_at IS NULL;
            GET DIAGNOSTICS v_n = ROW_COUNT;
            v_resolved := v_resolved + v_n;
        END IF;
    END LOOP;

    RETURN jsonb_build_object(
        'healthy', v_total = 0,
        'total_violations', v_total,
        'violations', v_violations,
        'checks', v_checks,
        'violations_opened', v_opened,
        'violations_auto_resolved', v_resolved,
        'records_processed', v_total);
END
$$;

CREATE OR REPLACE FUNCTION check_system_invariants()
RETURNS jsonb
LANGUAGE sql
SECURITY DEFINER
SET search_path = public, pg_temp
SET lock_timeout = '5s'
AS $$ SELECT ops_run_job('check_system_invariants', 'ops_check_system_invariants_work') $$;
