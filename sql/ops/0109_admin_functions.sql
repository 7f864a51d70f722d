-- The dashboard's writes (docs/sql-api.md, "Admin functions"): a preview that
-- writes nothing, then an apply that locks what it changes, re-checks what the
-- operator saw, and records operator, note, before and after in
-- admin_audit_log. A refusal is a result ({"success": false, "code", "error"}),
-- not an exception, so the dashboard can show it as it is.

CREATE OR REPLACE FUNCTION ops_refusal(p_code text, p_error text)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
AS $$ SELECT jsonb_build_object('success', false, 'code', p_code, 'error', p_error) $$;

-- The refusal for a missing operator or note, or NULL when both are given.
CREATE OR REPLACE FUNCTION ops_refuse_unsigned(p_operator text, p_note text)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE
        WHEN NULLIF(btrim(p_operator), '') IS NULL THEN
            ops_refusal('operator_required', 'Say who you are: the operator name is empty.')
        WHEN NULLIF(btrim(p_note), '') IS NULL THEN
            ops_refusal('note_required', 'Write a note saying why: it goes into the audit log.')
    END
$$;

CREATE OR REPLACE FUNCTION ops_audit(p_action text, p_target_type text,
                                     p_target_id uuid, p_operator text,
                                     p_note text, p_details jsonb)
RETURNS uuid
LANGUAGE sql
SET search_path = public, pg_temp
AS $$
    INSERT INTO admin_audit_log (admin_id, admin_role, action, target_type,
                                 target_id, details, operator, note)
    VALUES (NULL, 'admin', p_action, p_target_type, p_target_id,
            p_details || jsonb_build_object('source', 'carpool-tui'),
            btrim(p_operator), btrim(p_note))
    RETURNING id
$$;

-- A ride's pending and confirmed bookings, as both previews list them.
CREATE OR REPLACE FUNCTION ops_open_bookings_json(p_ride_id uuid)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = public, pg_temp
AS $$
    SELECT COALESCE(jsonb_agg(jsonb_build_object(
                        'booking_id', b.id, 'passenger_id', b.passenger_id,
                        'status', b.status, 'seats_requested', b.seats_requested,
                        'created_at', b.created_at) ORDER BY b.created_at, b.id),
                    '[]'::jsonb)
      FROM ride_bookings b
     WHERE b.ride_id = p_ride_id AND b.status IN ('pending', 'confirmed')
$$;

-- Seat fix (manual 4.4) -----------------------------------------------------

CREATE OR REPLACE FUNCTION ops_preview_seat_fix(p_ride_id uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_ride      rides%ROWTYPE;
    v_counted   integer;
    v_bookings  jsonb;
BEGIN
    SELECT * INTO v_ride FROM rides WHERE id = p_ride_id;
    IF NOT FOUND THEN
        RETURN ops_refusal('not_found', format('No ride has the id %s.', p_ride_id));
    END IF;
    SELECT COALESCE(sum(b.seats_requested), 0)::integer INTO v_counted
      FROM ride_bookings b
     WHERE b.ride_id = p_ride_id AND b.status IN ('pending', 'confirmed');
    v_bookings := ops_open_bookings_json(p_ride_id);
    RETURN jsonb_build_object(
        'success', true,
        'ride_id', v_ride.id,
        'status', v_ride.status,
        'total_seats', v_ride.total_seats,
        'current', v_ride.available_seats,
        'computed', v_ride.total_seats - v_counted,
        'counted_seats', v_counted,
        'needs_fix', v_ride.available_seats <> v_ride.total_seats - v_counted,
        'overbooked', v_ride.total_seats - v_counted < 0,
        'bookings', v_bookings);
END
$$;

CREATE OR REPLACE FUNCTION ops_apply_seat_fix(p_ride_id uuid, p_seen_current integer,
                                              p_seen_computed integer,
                                              p_operator text, p_note text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
SET lock_timeout = '5s'
AS $$
DECLARE
    v_refusal  jsonb := ops_refuse_unsigned(p_operator, p_note);
    v_preview  jsonb;
    v_current  integer;
    v_computed integer;
    v_audit    uuid;
BEGIN
    IF v_refusal IS NOT NULL THEN
        RETURN v_refusal;
    END IF;
    PERFORM ops_apply_lock_timeout();
    PERFORM 1 FROM rides WHERE id = p_ride_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN ops_refusal('not_found', format('No ride has the id %s.', p_ride_id));
    END IF;
    -- Counted after the lock, in a statement of its own: nothing can change
    -- the bookings of this ride until the fix is written.
    v_preview := ops_preview_seat_fix(p_ride_id);
    v_current := (v_preview ->> 'current')::integer;
    v_computed := (v_preview ->> 'computed')::integer;
    IF v_current IS DISTINCT FROM p_seen_current
       OR v_computed IS DISTINCT FROM p_seen_computed THEN
        RETURN ops_refusal('stale_preview', format(
                   'The ride changed since the preview (now %s stored, %s computed; '
                   'you saw %s and %s). Check the new preview and apply again.',
                   v_current, v_computed, p_seen_current, p_seen_computed))
               || jsonb_build_object('preview', v_preview);
    END IF;
    IF v_computed = v_current THEN
        RETURN ops_refusal('nothing_to_fix', format(
                   'The stored value (%s) is already right; nothing was written.',
                   v_current))
               || jsonb_build_object('preview', v_preview);
    END IF;
    IF v_computed < 0 THEN
        RETURN ops_refusal('overbooked', format(
                   'The ride is overbooked by %s seat(s): cancel bookings first; '
                   'no stored value would be right.', -v_computed))
               || jsonb_build_object('preview', v_preview);
    END IF;

    UPDATE rides SET available_seats = v_computed, updated_at = now()
     WHERE id = p_ride_id;
    v_audit := ops_audit('seat_fix', 'ride', p_ride_id, p_operator, p_note,
                         jsonb_build_object(
                             'before', jsonb_build_object('available_seats', v_current),
                             'after', jsonb_build_object('available_seats', v_computed),
                             'total_seats', v_preview -> 'total_seats',
                             'counted_seats', v_preview -> 'counted_seats'));
    RETURN jsonb_build_object('success', true, 'ride_id', p_ride_id,
                              'before', v_current, 'after', v_computed,
                              'audit_id', v_audit);
END
$$;

-- Single-ride expiry (manual 4.3) ------------------------------------------

CREATE OR REPLACE FUNCTION ops_preview_expire_ride(p_ride_id uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_ride      rides%ROWTYPE;
    v_bookings  jsonb;
BEGIN
    SELECT * INTO v_ride FROM rides WHERE id = p_ride_id;
    IF NOT FOUND THEN
        RETURN ops_refusal('not_found', format('No ride has the id %s.', p_ride_id));
    END IF;
    v_bookings := ops_open_bookings_json(p_ride_id);
    RETURN jsonb_build_object(
        'success', true,
        'ride_id', v_ride.id,
        'status', v_ride.status,
        'departure_time', v_ride.departure_time,
        'available_until', v_ride.available_until,
        'expires_at', COALESCE(v_ride.available_until, v_ride.departure_time),
        'due', COALESCE(v_ride.available_until, v_ride.departure_time) < now(),
        'terminal', v_ride.status IN ('completed', 'cancelled'),
        'bookings', v_bookings);
END
$$;

CREATE OR REPLACE FUNCTION ops_expire_ride(p_ride_id uuid, p_operator text,
                                           p_note text,
                                           p_allow_not_due boolean DEFAULT false)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
SET lock_timeout = '5s'
AS $$
DECLARE
    v_refusal   jsonb := ops_refuse_unsigned(p_operator, p_note);
    v_ride      rides%ROWTYPE;
    v_bookings  uuid[];
    v_done      integer;
    v_noted     integer;
    v_audit     uuid;
BEGIN
    IF v_refusal IS NOT NULL THEN
        RETURN v_refusal;
    END IF;
    PERFORM ops_apply_lock_timeout();
    SELECT * INTO v_ride FROM rides WHERE id = p_ride_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN ops_refusal('not_found', format('No ride has the id %s.', p_ride_id));
    END IF;
    IF v_ride.status IN ('completed', 'cancelled') THEN
        RETURN ops_refusal('already_terminal',
                           format('The ride is already %s.', v_ride.status));
    END IF;
    IF COALESCE(v_ride.available_until, v_ride.departure_time) >= now()
       AND NOT COALESCE(p_allow_not_due, false) THEN
        RETURN ops_refusal('not_due', format(
                   'The ride does not expire until %s; confirm to end it early.',
                   COALESCE(v_ride.available_until, v_ride.departure_time)));
    END IF;

    -- Ride locked above, bookings now (waiting at most lock_timeout).
    SELECT COALESCE(array_agg(id), '{}') INTO v_bookings
      FROM (SELECT id FROM ride_bookings
             WHERE ride_id = p_ride_id AND status IN ('pending', 'confirmed')
             ORDER BY id
               FOR UPDATE) open_bookings;
    SELECT c.bookings_closed, c.notifications_created INTO v_done, v_noted
      FROM ops_close_bookings(v_bookings, 'completed') c;
    UPDATE rides SET status = 'completed', updated_at = now() WHERE id = p_ride_id;

    v_audit := ops_audit('ride_expired_manually', 'ride', p_ride_id, p_operator,
                         p_note,
                         jsonb_build_object(
                             'before', jsonb_build_object(
                                 'status', v_ride.status,
                                 'open_bookings', to_jsonb(v_bookings)),
                             'after', jsonb_build_object(
                                 'status', 'completed',
                                 'bookings_completed', v_done),
                             'expires_at',
                             COALESCE(v_ride.available_until, v_ride.departure_time)));
    RETURN jsonb_build_object('success', true, 'ride_id', p_ride_id,
                              'bookings_completed', v_done,
                              'notifications_created', v_noted,
                              'audit_id', v_audit);
END
$$;

-- Violation resolution (manual 3.4) ----------------------------------------

-- How many findings the checks behind a violation row have right now: the
-- row's own check for an ops-layer row; for a deployed row, every check named
-- in its samples. NULL when the row names no check this version knows, so
-- nobody is told an unknown check "passes".
CREATE OR REPLACE FUNCTION ops_violation_current_count(p_violation invariant_violations)
RETURNS integer
LANGUAGE sql STABLE
SET search_path = public, pg_temp
AS $$
    SELECT CASE WHEN count(*) = 0 THEN NULL
                ELSE sum((ops_run_check(c.check_id) ->> 'count')::integer)::integer
           END
      FROM ops_invariant_checks() c
     WHERE c.check_id = p_violation.check_id
        OR (p_violation.check_id IS NULL
            AND jsonb_typeof(p_violation.sample_data) = 'array'
            AND c.check_id IN (SELECT s ->> 'check'
                                 FROM jsonb_array_elements(p_violation.sample_data) s))
$$;

CREATE OR REPLACE FUNCTION ops_violation_json(p_violation invariant_violations)
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT jsonb_build_object(
        'id', p_violation.id, 'check_name', p_violation.check_name,
        'check_id', p_violation.check_id, 'severity', p_violation.severity,
        'violation_count', p_violation.violation_count,
        'detected_at', p_violation.detected_at,
        'last_seen_at', p_violation.last_seen_at,
        'resolved_at', p_violation.resolved_at,
        'notes', p_violation.notes)
$$;

CREATE OR REPLACE FUNCTION ops_preview_resolve_violation(p_violation_id uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_row    invariant_violations%ROWTYPE;
    v_count  integer;
BEGIN
    SELECT * INTO v_row FROM invariant_violations WHERE id = p_violation_id;
    IF NOT FOUND THEN
        RETURN ops_refusal('not_found',
                           format('No violation has the id %s.', p_violation_id));
    END IF;
    v_count := ops_violation_current_count(v_row);
    RETURN jsonb_build_object('success', true,
                              'violation', ops_violation_json(v_row),
                              'still_failing', v_count > 0,
                              'current_count', v_count);
END
$$;

CREATE OR REPLACE FUNCTION ops_resolve_violation(p_violation_id uuid,
                                                 p_operator text, p_note text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
SET lock_timeout = '5s'
AS $$
DECLARE
    v_refusal  jsonb := ops_refuse_unsigned(p_operator, p_note);
    v_row      invariant_violations%ROWTYPE;
    v_after    invariant_violations%ROWTYPE;
    v_count    integer;
    v_audit    uuid;
BEGIN
    IF v_refusal IS NOT NULL THEN
        RETURN v_refusal;
    END IF;
    PERFORM ops_apply_lock_timeout();
    SELECT * INTO v_row FROM invariant_violations WHERE id = p_violation_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN ops_refusal('not_found',
                           format('No violation has the id %s.', p_violation_id));
    END IF;
    IF v_row.resolved_at IS NOT NULL THEN
        RETURN ops_refusal('already_resolved', format(
                   'The violation was already resolved at %s by %s.',
                   v_row.resolved_at, COALESCE(v_row.resolved_by, 'an unknown operator')));
    END IF;
    v_count := ops_violation_current_count(v_row);

    UPDATE invariant_violations
       SET resolved_at = now(), notes = btrim(p_note), resolved_by = btrim(p_operator)
     WHERE id = p_violation_id
    RETURNING * INTO v_after;

    v_audit := ops_audit('violation_resolved', 'invariant_violation', p_violation_id,
                         p_operator, p_note,
                         jsonb_build_object(
                             'before', ops_violation_json(v_row),
                             'after', ops_violation_json(v_after),
                             'still_failing', v_count > 0,
                             'current_count', v_count));
    RETURN jsonb_build_object('success', true, 'violation_id', p_violation_id,
                              'still_failing', v_count > 0, 'audit_id', v_audit);
END
$$;
