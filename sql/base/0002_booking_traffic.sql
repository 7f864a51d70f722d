-- Booking paths for simulating live traffic in demos, tests and soaks. Each
-- locks the ride row first and the booking second, the same order the jobs
-- use, so traffic and jobs never deadlock.

CREATE FUNCTION request_booking(p_ride_id uuid, p_passenger_id uuid,
                                p_seats integer DEFAULT 1)
RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    v_ride rides%ROWTYPE;
    v_booking_id uuid;
BEGIN
    SELECT * INTO v_ride FROM rides WHERE id = p_ride_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'ride % does not exist', p_ride_id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF v_ride.status NOT IN ('active', 'in-progress') THEN
        RAISE EXCEPTION 'ride % is %, not bookable', p_ride_id, v_ride.status
            USING ERRCODE = 'check_violation';
    END IF;
    IF v_ride.available_seats < p_seats THEN
        RAISE EXCEPTION 'ride % has % seats left, % requested',
            p_ride_id, v_ride.available_seats, p_seats
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO ride_bookings (ride_id, passenger_id, seats_requested, status)
    VALUES (p_ride_id, p_passenger_id, p_seats, 'pending')
    RETURNING id INTO v_booking_id;
    INSERT INTO notifications (user_id, type, category, data)
    VALUES (v_ride.driver_id, 'BOOKING_REQUEST', 'BOOKING_REQUEST',
            jsonb_build_object('booking_id', v_booking_id, 'ride_id', p_ride_id));
    RETURN v_booking_id;
END
$$;

CREATE FUNCTION confirm_booking(p_booking_id uuid)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_ride_id uuid;
    v_passenger uuid;
BEGIN
    SELECT ride_id INTO v_ride_id FROM ride_bookings WHERE id = p_booking_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM 1 FROM rides WHERE id = v_ride_id FOR UPDATE;
    UPDATE ride_bookings
       SET status = 'confirmed', updated_at = now()
     WHERE id = p_booking_id AND status = 'pending'
    RETURNING passenger_id INTO v_passenger;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO notifications (user_id, type, category, data)
    VALUES (v_passenger, 'BOOKING_CONFIRMED', 'BOOKING_CONFIRMED',
            jsonb_build_object('booking_id', p_booking_id, 'ride_id', v_ride_id));
    RETURN true;
END
$$;

CREATE FUNCTION cancel_booking(p_booking_id uuid, p_reason text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_ride_id uuid;
    v_passenger uuid;
BEGIN
    SELECT ride_id INTO v_ride_id FROM ride_bookings WHERE id = p_booking_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM 1 FROM rides WHERE id = v_ride_id FOR UPDATE;
    UPDATE ride_bookings
       SET status = 'cancelled', cancellation_reason = p_reason,
           cancelled_at = now(), updated_at = now()
     WHERE id = p_booking_id AND status IN ('pending', 'confirmed')
    RETURNING passenger_id INTO v_passenger;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO notifications (user_id, type, category, data)
    VALUES (v_passenger, 'BOOKING_CANCELLED', 'BOOKING_CANCELLED',
            jsonb_build_object('booking_id', p_booking_id, 'ride_id', v_ride_id,
                               'reason', p_reason));
    RETURN true;
END
$$;
