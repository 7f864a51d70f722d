-- The seat-sync trigger stands aside for the ops jobs without being called.
--
-- 0153 lets the trigger function return at once inside the ops layer's own
-- jobs, but every row still queued the trigger and ran the function: about
-- 150 ms when expire_rides closes 21k bookings. The same test in the
-- trigger's WHEN clause is evaluated by the executor as each row changes, so
-- a row the job changes queues nothing. The owner of the ops layer is written
-- into the clause as a literal (a WHEN clause cannot hold a subquery), so an
-- app session that sets carpool.seat_sync_deferred still fires the trigger.
-- The function keeps its own test for a trigger created without the clause.
--
-- Replacing the trigger takes a brief lock on ride_bookings; lock_timeout
-- makes the migration fail rather than queue bookings behind it. A trigger an
-- operator had disabled stays disabled.
DO $$
DECLARE
    v_owner    name;
    v_enabled  "char";
BEGIN
    PERFORM set_config('lock_timeout', '5s', true);
    SELECT pg_get_userbyid(p.proowner) INTO v_owner
      FROM pg_proc p
     WHERE p.oid = 'ops_expire_rides_work()'::regprocedure;
    SELECT t.tgenabled INTO v_enabled
      FROM pg_trigger t
     WHERE t.tgrelid = 'ride_bookings'::regclass
       AND t.tgname = 'ride_bookings_sync_seats';

    DROP TRIGGER IF EXISTS ride_bookings_sync_seats ON ride_bookings;
    EXECUTE format($sql$
        CREATE TRIGGER ride_bookings_sync_seats
            AFTER INSERT OR UPDATE OR DELETE ON ride_bookings
            FOR EACH ROW
            WHEN (current_setting('carpool.seat_sync_deferred', true)
                      IS DISTINCT FROM 'on'
                  OR current_user <> %L)
            EXECUTE FUNCTION sync_ride_available_seats()
    $sql$, v_owner);

    IF v_enabled = 'D' THEN
        ALTER TABLE ride_bookings DISABLE TRIGGER ride_bookings_sync_seats;
    END IF;
END
$$;
