-- A run refused its job's lock by an earlier run is not the job's state.
--
-- A run that cannot take its job's lock fails with 55P03 and, since 0165,
-- a message naming the lock of the job as held by another session. When an
-- earlier run of the same job was under way as it started (running, or
-- finished after that moment), the refused run is what lost the race, not
-- how the job is doing: as the newest row it showed the job failed until the
-- next run, though the run holding the lock went on to complete. The health
-- summary's recent_job_status now passes over such a run in favour of the
-- earlier one. The refused run stays in the log and in failed_jobs_24h (it
-- did fail); when it is the only run of its job in the 24 hours, nothing
-- earlier explains it and it is shown as it is. The SQLSTATE is read from
-- the row as JSON, so a log without the sqlstate or details column still
-- yields a summary. Everything else is 0166's computation unchanged.

CREATE OR REPLACE FUNCTION ops_health_compute()
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = public, pg_temp
AS $$
DECLARE
    v_rides      bigint := ops_counted_rows('rides');
    v_bookings   bigint := ops_counted_rows('ride_bookings');
    v_open       record;
    v_jobs       jsonb;
    v_failed     integer;
BEGIN
    -- Without the counters (a half-applied upgrade) count, exactly.
    IF v_rides IS NULL THEN
        SELECT count(*) INTO v_rides FROM rides;
    END IF;
    IF v_bookings IS NULL THEN
        SELECT count(*) INTO v_bookings FROM ride_bookings;
    END IF;

    WITH b AS (
        SELECT ride_id,
               sum(seats_requested) AS seats,
               count(*) FILTER (WHERE status = 'pending') AS pending,
               count(*) FILTER (WHERE status = 'confirmed') AS confirmed
          FROM ride_bookings
         WHERE status IN ('pending', 'confirmed')
         GROUP BY ride_id
    ), r AS (
        SELECT id, available_seats, total_seats, status,
               COALESCE(available_until, departure_time) AS expires_at
          FROM rides
         WHERE status IN ('active', 'in-progress')
    )
    SELECT count(r.id) FILTER (WHERE r.status = 'active') AS active,
           count(r.id) FILTER (WHERE r.status = 'in-progress') AS in_progress,
           count(r.id) FILTER (WHERE r.expires_at < now() - ops_expiry_grace())
               AS expired,
           COALESCE(sum(b.pending), 0) AS pending,
           COALESCE(sum(b.confirmed), 0) AS confirmed,
           count(r.id) FILTER (WHERE r.available_seats
                                     <> r.total_seats - COALESCE(b.seats, 0))
               AS mismatches
      INTO v_open
      FROM b FULL JOIN r ON r.id = b.ride_id;

    -- The latest run of each job in the last 24 hours, failed ones included,
    -- but not a run refused the job's lock while an earlier run of the job
    -- (in the same 24 hours) was under way: that one is the job's state.
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
               AND l.started_at <= now() + interval '5 minutes'
               AND (l.status = 'failed'
                    AND COALESCE(to_jsonb(l) ->> 'sqlstate',
                                 to_jsonb(l) -> 'details' ->> 'sqlstate') = '55P03'
                    AND strpos(l.error_message, 'the lock of ' || l.job_name
                               || ' is held by another session') > 0
                    AND EXISTS (
                        SELECT 1
                          FROM system_job_log o
                         WHERE o.job_name = l.job_name
                           AND o.id <> l.id
                           AND o.started_at > now() - interval '24 hours'
                           AND o.started_at < l.started_at
                           AND (o.completed_at IS NULL
                                OR o.completed_at > l.started_at))) IS NOT TRUE
             ORDER BY l.job_name, l.started_at DESC) j;

    SELECT count(*) INTO v_failed
      FROM system_job_log
     WHERE started_at > now() - interval '24 hours'
       AND started_at <= now() + interval '5 minutes'
       AND status = 'failed';

    RETURN jsonb_build_object(
        'timestamp', now(),
        'total_rides', v_rides,
        'active_rides', v_open.active,
        'in_progress_rides', v_open.in_progress,
        'total_bookings', v_bookings,
        'pending_bookings', v_open.pending,
        'confirmed_bookings', v_open.confirmed,
        'expired_active_rides', v_open.expired,
        'seat_mismatches', v_open.mismatches,
        'unresolved_violations', (SELECT count(*) FROM invariant_violations
                                   WHERE resolved_at IS NULL),
        'recent_job_status', v_jobs,
        'failed_jobs_24h', v_failed,
        'estimated_counts', '[]'::jsonb,
        'ops_layer_version', ops_layer_version());
END
$$;

