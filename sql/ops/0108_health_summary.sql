-- get_system_health_summary (manual 3.1): the dashboard polls it every few
-- seconds from several screens at once, so it reads only small index ranges
-- (open rides, pending/confirmed bookings, unresolved violations, the last
-- day of job runs). The two table totals are exact up to 100 000 rows and the
-- planner's estimate above that (named in `estimated_counts`): an exact
-- count of millions of rows per poll per viewer is what the dashboard must
-- not cost.

-- A table's row count: exact when small, else the statistics' estimate.
CREATE OR REPLACE FUNCTION ops_table_rows(p_table regclass, OUT total bigint,
                                          OUT estimated boolean)
LANGUAGE plpgsql STABLE
SET search_path = public, pg_temp
AS $$
DECLARE
    v_estimate real;
BEGIN
    SELECT c.reltuples INTO v_estimate FROM pg_class c WHERE c.oid = p_table;
    IF v_estimate IS NULL OR v_estimate < 100000 THEN
        EXECUTE format('SELECT count(*) FROM %s', p_table) INTO total;
        estimated := false;
    ELSE
        total := v_estimate::bigint;
        estimated := true;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION get_system_health_summary()
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_rides     record;
    v_bookings  record;
    v_open      record;
    v_active    record;
    v_jobs      jsonb;
    v_failed    integer;
BEGIN
    SELECT * INTO v_rides FROM ops_table_rows('rides');
    SELECT * INTO v_bookings FROM ops_table_rows('ride_bookings');

    SELECT count(*) FILTER (WHERE status = 'active') AS active,
           count(*) FILTER (WHERE status = 'in-progress') AS in_progress,
           count(*) FILTER (WHERE COALESCE(available_until, departure_time)
                                  < now() - ops_expiry_grace()) AS expired
      INTO v_open
      FROM rides
     WHERE status IN ('active', 'in-progress');

    SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
           count(*) FILTER (WHERE status = 'confirmed') AS confirmed
      INTO v_active
      FROM ride_bookings
     WHERE status IN ('pending', 'confirmed');

    -- The latest run of each job in the last 24 hours, failed ones included.
    SELECT COALESCE(jsonb_agg(jsonb_build_object(
               'job_name', j.job_name,
               'status', j.status,
               'started_at', j.started_at,
               'completed_at', j.completed_at,
               'records_processed', j.records_processed,
               'duration_ms', round(extract(epoch FROM j.completed_at - j.started_at)
                                    * 1000),
               'error_message', j.error_message)
             ORDER BY j.started_at DESC), '[]'::jsonb)
      INTO v_jobs
      FROM (SELECT DISTINCT ON (l.job_name) l.*
              FROM system_job_log l
             WHERE l.started_at > now() - interval '24 hours'
             ORDER BY l.job_name, l.started_at DESC) j;

    SELECT count(*) INTO v_failed
      FROM system_job_log
     WHERE started_at > now() - interval '24 hours' AND status = 'failed';

    RETURN jsonb_build_object(
        'timestamp', now(),
        'total_rides', v_rides.total,
        'active_rides', v_open.active,
        'in_progress_rides', v_open.in_progress,
        'total_bookings', v_bookings.total,
        'pending_bookings', v_active.pending,
        'confirmed_bookings', v_active.confirmed,
        'expired_active_rides', v_open.expired,
        'seat_mismatches', (ops_run_check('INV-SEAT-001') ->> 'count')::integer,
        'unresolved_violations', (SELECT count(*) FROM invariant_violations
                                   WHERE resolved_at IS NULL),
        'recent_job_status', v_jobs,
        'failed_jobs_24h', v_failed,
        'estimated_counts', to_jsonb(ARRAY_REMOVE(ARRAY[
            CASE WHEN v_rides.estimated THEN 'total_rides' END,
            CASE WHEN v_bookings.estimated THEN 'total_bookings' END], NULL)),
        'ops_layer_version', ops_layer_version());
END
$$;
