-- Manual expiry refuses a stale preview, as the seat fix does.
--
-- The operator confirms an expiry after seeing which open bookings it will
-- complete (and whose passengers it will notify). A booking made or cancelled
-- between that preview and the confirmation changed what the expiry does, so
-- the five-argument form takes the booking ids the operator saw and, with the
-- ride and its bookings locked, refuses with a fresh preview when they differ.
-- Otherwise it is the four-argument form (0109), which it calls: that one
-- takes the same locks again (already held) and refuses what it refuses.

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
    v_open  uuid[];
    v_seen  uuid[];
BEGIN
    IF p_seen_bookings IS NOT NULL
       AND ops_refuse_unsigned(p_operator, p_note) IS NULL THEN
        PERFORM ops_apply_lock_timeout();
        -- Only a ride the four-argument form would expire is compared; for the
        -- others its refusal (not found, finished, not due) comes first.
        PERFORM 1
           FROM rides
          WHERE id = p_ride_id
            AND status NOT IN ('completed', 'cancelled')
            AND (COALESCE(available_until, departure_time) < now()
                 OR COALESCE(p_allow_not_due, false))
            FOR UPDATE;
        IF FOUND THEN
            SELECT COALESCE(array_agg(id), '{}') INTO v_open
              FROM (SELECT id FROM ride_bookings
                     WHERE ride_id = p_ride_id AND status IN ('pending', 'confirmed')
                     ORDER BY id
                       FOR UPDATE) open_bookings;
            SELECT COALESCE(array_agg(DISTINCT s ORDER BY s), '{}') INTO v_seen
              FROM unnest(p_seen_bookings) s;
            IF v_seen IS DISTINCT FROM v_open THEN
                RETURN ops_refusal('stale_preview', format(
                           'The ride''s open bookings changed since the preview '
                           '(now %s, you saw %s). Check the new preview and expire '
                           'again.', cardinality(v_open), cardinality(v_seen)))
                       || jsonb_build_object('preview',
                                             ops_preview_expire_ride(p_ride_id));
            END IF;
        END IF;
    END IF;
    RETURN ops_expire_ride(p_ride_id, p_operator, p_note, p_allow_not_due);
END
$$;

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
