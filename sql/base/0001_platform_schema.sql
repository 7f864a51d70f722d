-- The carpool platform's tables as deployed, for creating fresh demo, test and
-- benchmark databases. A production database already has these; `migrate`
-- applies this group only when asked to with --base.

-- Supabase-style API roles with default execute grants on new functions:
-- revoking from PUBLIC alone leaves these grants in place.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN;
    END IF;
EXCEPTION WHEN unique_violation OR duplicate_object THEN
    NULL;  -- another database on this server created it at the same moment
END
$$;

ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT EXECUTE ON FUNCTIONS TO anon, authenticated;
GRANT USAGE ON SCHEMA public TO anon, authenticated;

CREATE TYPE admin_role AS ENUM ('super_admin', 'admin', 'moderator', 'analyst');

CREATE TABLE profiles (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email       text NOT NULL UNIQUE,
    full_name   text,
    is_admin    boolean NOT NULL DEFAULT false,
    admin_role  admin_role,
    is_demo     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE vehicles (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id    uuid NOT NULL REFERENCES profiles (id),
    make        text,
    model       text,
    capacity    integer NOT NULL DEFAULT 4,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rides (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    driver_id        uuid NOT NULL REFERENCES profiles (id),
    vehicle_id       uuid REFERENCES vehicles (id),
    origin           text NOT NULL,
    destination      text NOT NULL,
    departure_time   timestamptz NOT NULL,
    available_until  timestamptz,
    available_seats  integer NOT NULL,
    total_seats      integer NOT NULL,
    status           text NOT NULL DEFAULT 'active',
    ride_type        text NOT NULL DEFAULT 'one_time',
    is_demo          boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT rides_available_seats_check CHECK (available_seats >= 0),
    CONSTRAINT rides_status_check
        CHECK (status IN ('active', 'in-progress', 'completed', 'cancelled'))
);
CREATE INDEX rides_driver_id_idx ON rides (driver_id);
CREATE INDEX rides_departure_time_idx ON rides (departure_time);

CREATE TABLE ride_bookings (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    ride_id              uuid NOT NULL REFERENCES rides (id),
    passenger_id         uuid NOT NULL REFERENCES profiles (id),
    seats_requested      integer NOT NULL DEFAULT 1,
    status               text NOT NULL DEFAULT 'pending',
    cancellation_reason  text,
    cancelled_at         timestamptz,
    is_demo              boolean NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ride_bookings_status_check
        CHECK (status IN ('pending', 'confirmed', 'completed', 'cancelled'))
);
CREATE UNIQUE INDEX ride_bookings_one_active_per_passenger
    ON ride_bookings (ride_id, passenger_id) WHERE status <> 'cancelled';
CREATE INDEX ride_bookings_ride_id_idx ON ride_bookings (ride_id);
CREATE INDEX ride_bookings_passenger_id_idx ON ride_bookings (passenger_id);

-- Keeps rides.available_seats equal to total minus pending and confirmed seats,
-- floored at 0, after every booking change.
CREATE FUNCTION sync_ride_available_seats() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    affected uuid[];
BEGIN
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

CREATE TRIGGER ride_bookings_sync_seats
    AFTER INSERT OR UPDATE OR DELETE ON ride_bookings
    FOR EACH ROW EXECUTE FUNCTION sync_ride_available_seats();

CREATE TABLE notifications (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL REFERENCES profiles (id),
    type        text NOT NULL,
    category    text NOT NULL DEFAULT 'system',
    data        jsonb NOT NULL DEFAULT '{}'::jsonb,
    read_at     timestamptz,
    priority    text NOT NULL DEFAULT 'normal',
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT notifications_type_check CHECK (type IN (
        'NEW_MESSAGE', 'FRIEND_REQUEST', 'FRIEND_REQUEST_ACCEPTED',
        'FORUM_REPLY', 'FORUM_MENTION', 'RIDE_MATCH', 'BOOKING_REQUEST',
        'BOOKING_CONFIRMED', 'BOOKING_CANCELLED', 'REVIEW', 'SAFETY_ALERT',
        'SYSTEM')),
    -- The strictest deployments check category against the same values, so
    -- every insert must set category = type.
    CONSTRAINT notifications_category_check CHECK (category IN (
        'NEW_MESSAGE', 'FRIEND_REQUEST', 'FRIEND_REQUEST_ACCEPTED',
        'FORUM_REPLY', 'FORUM_MENTION', 'RIDE_MATCH', 'BOOKING_REQUEST',
        'BOOKING_CONFIRMED', 'BOOKING_CANCELLED', 'REVIEW', 'SAFETY_ALERT',
        'SYSTEM'))
);

CREATE TABLE admin_audit_log (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    admin_id     uuid REFERENCES profiles (id),
    admin_role   admin_role NOT NULL,
    action       text NOT NULL,
    target_type  text,
    target_id    uuid,
    details      jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);
