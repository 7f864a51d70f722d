-- A run refused its job's lock is not the job's state while the lock is held.
--
-- 0167 passes over a refused run when an earlier run of the job was under
-- way as it started. It found that run by its log row, but ops_run_job
-- writes the row inside the run's own transaction: no other session sees it
-- until the run ends. So while the run holding the lock was still going,
-- which is when an operator looks, the refused run was the job's latest and
-- showed the job failed (and `check` critical) until the holder finished.
-- The refusal is now also passed over while the job's lock is held: whoever
-- holds it is under way, and when it ends its row explains the refusal (a
-- run of the job) or, the lock released, nothing does and the refusal is
-- the job's state as any failure is. Everything else is 0167's computation
-- unchanged.

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
    -- (in the same 24 hours) was under way, or while the lock is still held:
    -- the run holding it is the job's state.
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
                    AND (EXISTS (
                        SELECT 1
                          FROM system_job_log o
                         WHERE o.job_name = l.job_name
                           AND o.id <> l.id
                           AND o.started_at > now() - interval '24 hours'
                           AND o.started_at < l.started_at
                           AND (o.completed_at IS NULL
                                OR o.completed_at > l.started_at))
                         OR EXISTS (
                        SELECT 1
                          FROM pg_locks k
                         WHERE k.locktype = 'advisory'
                           AND k.granted
                           AND k.database = (SELECT oid FROM pg_database
                                              WHERE datname = current_database())
                           AND k.classid
                               = ((ops_job_lock_key(l.job_name) >> 32)
                                  & 4294967295)::oid
                           AND k.objid
                               = (ops_job_lock_key(l.job_name) & 4294967295)::oid
                           AND k.objsubid = 1))) IS NOT TRUE
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
