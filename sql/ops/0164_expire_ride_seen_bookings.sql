-- Manual expiry refuses a stale preview, as the seat fix does.
--
-- The operator confirms an expiry after seeing which open bookings it will
-- complete (and whose passengers it will notify). A booking made or cancelled
-- between that preview and the confirmation changed what the expiry does, so
-- the five-argument form takes the booking ids the operator saw and, with the
-- ride and its bookings locked, refuses with a fresh preview when they differ.
-- The four-argument form (no ids seen) keeps its behaviour for other callers.

CREATE OR REPLACE FUNCTION ops_expire_ride(p_ride_id uuid, p_operator text,
                                           p_note text,
                                           p_allow_not_due boolean,
                                           p_seen_bookings uuid[])
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
    v_seen      uuid[];
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
    IF p_seen_bookings IS NOT NULL THEN
        SELECT COALESCE(array_agg(DISTINCT s ORDER BY s), '{}') INTO v_seen
          FROM unnest(p_seen_bookings) s;
        IF v_seen IS DISTINCT FROM v_bookings THEN
            RETURN ops_refusal('stale_preview', format(
                       'The ride''s open bookings changed since the preview (now '
                       '%s, you saw %s). Check the new preview and expire again.',
                       cardinality(v_bookings), cardinality(v_seen)))
                   || jsonb_build_object('preview', ops_preview_expire_ride(p_ride_id));
        END IF;
    END IF;
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

-- The earlier form, for callers that saw no preview: the same, unchecked.
CREATE OR REPLACE FUNCTION ops_expire_ride(p_ride_id uuid, p_operator text,
                                           p_note text,
                                           p_allow_not_due boolean DEFAULT false)
RETURNS jsonb
LANGUAGE sql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$ SELECT ops_expire_ride(p_ride_id, p_operator, p_note, p_allow_not_due, NULL) $$;

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
    EXECUTE format('REVOKE ALL ON FUNCTION'
                   ' ops_expire_ride(uuid, text, text, boolean, uuid[]) FROM %s',
                   api_roles);
END
$$;

GRANT EXECUTE ON FUNCTION ops_expire_ride(uuid, text, text, boolean, uuid[])
   TO carpool_ops_operator;
