-- repair_missing_notifications (manual 1.3): for bookings of the last 30 days,
-- creates the BOOKING_REQUEST (to the driver), BOOKING_CONFIRMED and
-- BOOKING_CANCELLED (to the passenger) notifications that are missing, dated
-- when the event happened and marked data.repaired = true.
--
-- Never a duplicate: runs take one advisory lock per job, so a second run
-- waits (at most lock_timeout) for the first to commit, and the insert is a
-- later statement than the lock, whose snapshot includes the first run's rows.
-- A booking and its notification are written in one transaction by the
-- booking functions, so live traffic never looks "missing" half-way.
-- "Is there one already?" is an index lookup (notifications_ops_booking_idx).

CREATE OR REPLACE FUNCTION ops_repair_missing_notifications_work()
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    v_since          timestamptz := now() - interval '30 days';
    v_requests       integer;
    v_confirmations  integer;
    v_cancellations  integer;
BEGIN
    PERFORM pg_advisory_xact_lock(ops_job_lock_key('repair_missing_notifications'));

    -- The notification each recent booking should have, per event.
    WITH wanted AS (
        SELECT b.id, 'BOOKING_REQUEST' AS kind, r.driver_id AS recipient,
               b.created_at AS happened,
               jsonb_build_object('booking_id', b.id, 'ride_id', b.ride_id) AS data
          FROM ride_bookings b
          JOIN rides r ON r.id = b.ride_id
         WHERE b.created_at >= v_since
        UNION ALL
        SELECT b.id, 'BOOKING_CONFIRMED', b.passenger_id, b.updated_at,
               jsonb_build_object('booking_id', b.id, 'ride_id', b.ride_id)
          FROM ride_bookings b
         WHERE b.status IN ('confirmed', 'completed')
           AND b.updated_at >= v_since
        UNION ALL
        SELECT b.id, 'BOOKING_CANCELLED', b.passenger_id, b.cancelled_at,
               jsonb_build_object('booking_id', b.id, 'ride_id', b.ride_id,
                                  'reason', b.cancellation_reason)
          FROM ride_bookings b
         WHERE b.status = 'cancelled'
           AND b.cancelled_at >= v_since
    ), made AS (
        INSERT INTO notifications (user_id, type, category, data, created_at)
        SELECT w.recipient, w.kind, w.kind,
               w.data || jsonb_build_object('repaired', true), w.happened
          FROM wanted w
         WHERE NOT EXISTS (SELECT 1
                             FROM notifications n
                            WHERE n.data ->> 'booking_id' = w.id::text
                              AND n.type = w.kind)
        RETURNING type
    )
    SELECT count(*) FILTER (WHERE type = 'BOOKING_REQUEST'),
           count(*) FILTER (WHERE type = 'BOOKING_CONFIRMED'),
           count(*) FILTER (WHERE type = 'BOOKING_CANCELLED')
      INTO v_requests, v_confirmations, v_cancellations
      FROM made;

    RETURN jsonb_build_object(
        'booking_requests_created', v_requests,
        'confirmations_created', v_confirmations,
        'cancellations_created', v_cancellations,
        'total_notifications_created', v_requests + v_confirmations + v_cancellations,
        'records_processed', v_requests + v_confirmations + v_cancellations);
END
$$;

CREATE OR REPLACE FUNCTION repair_missing_notifications()
RETURNS jsonb
LANGUAGE sql
SECURITY DEFINER
SET search_path = public, pg_temp
SET lock_timeout = '5s'
AS $$
    SELECT ops_run_job('repair_missing_notifications',
                       'ops_repair_missing_notifications_work')
$$;
